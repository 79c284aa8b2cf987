"""The evaluation loop: cached and per-episode features agree; the interval formula."""

import numpy as np
import paddle

from data.samplers import EpisodeSampler
from frn.engine import evaluate
from utils.stats import mean_and_interval
from methods import METHODS, options_for
from network import build_backbone


class RandomImages(paddle.io.Dataset):
    def __init__(self, n_classes=6, per_class=5):
        rng = np.random.RandomState(0)
        self.labels = np.repeat(np.arange(n_classes), per_class)
        self.images = (rng.rand(len(self.labels), 3, 32, 32) + self.labels[:, None, None, None] * 0.3)
        self.images = self.images.astype("float32")

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def test_feature_cache_gives_the_same_accuracies_as_per_episode_passes():
    paddle.seed(0)
    model = METHODS["meta_frn"](build_backbone("Conv4", width=8), options_for("meta_frn", model="Conv4", image_size=32))
    data = RandomImages()
    episodes = list(EpisodeSampler(data.labels, 4, 2, 3, n_episodes=8, seed=1))
    cached, loss_c = evaluate(model, data, episodes, 4, 2, 3, use_cache=True)
    direct, loss_d = evaluate(model, data, episodes, 4, 2, 3, use_cache=False)
    np.testing.assert_array_equal(cached, direct)
    np.testing.assert_allclose(loss_c, loss_d, rtol=1e-5)
    assert cached.shape == (8,) and cached.mean() > 25  # clearly learnable toy data


def test_feature_cache_in_a_file_gives_the_same_numbers_bit_for_bit():
    paddle.seed(0)
    model = METHODS["meta_frn"](build_backbone("Conv4", width=8), options_for("meta_frn", model="Conv4", image_size=32))
    data = RandomImages()
    episodes = list(EpisodeSampler(data.labels, 4, 2, 3, n_episodes=8, seed=2))
    in_ram, loss_ram = evaluate(model, data, episodes, 4, 2, 3, cache_ram_gb=1.0)
    in_file, loss_file = evaluate(model, data, episodes, 4, 2, 3, cache_ram_gb=0.0)
    direct, _ = evaluate(model, data, episodes, 4, 2, 3, use_cache=False)
    np.testing.assert_array_equal(in_file, in_ram)
    np.testing.assert_array_equal(in_file, direct)
    assert loss_file == loss_ram  # the same feature bits, the same scoring: no tolerance


class SyntheticMaps(paddle.nn.Layer):
    """A stand-in for a frozen backbone and head with ResNet-12-sized features: image i (its
    index and label) gives a 25 x 640 map; prototypes of the pooled maps score the queries.
    Counts the images it extracts."""
    features_are_frozen_at_test = True
    eval_episode_batch = 2

    def __init__(self):
        super().__init__()
        self.extracted = []

    def extract(self, images):
        self.extracted += images[:, 0].astype("int64").tolist()
        ramp = paddle.arange(25 * 640, dtype="float32").reshape([1, 25, 640]) / 16000
        return paddle.sin(ramp * (images[:, 1:2, None] + 1)) + 1e-4 * images[:, 0:1, None]

    def episode_scores_batch(self, support, query, way, shot):
        prototypes = support.mean(axis=2).reshape([support.shape[0], way, shot, -1]).mean(axis=2)
        return -((query.mean(axis=2).unsqueeze(2) - prototypes.unsqueeze(1)) ** 2).sum(-1)


class IndexImages(paddle.io.Dataset):
    def __init__(self, n_classes=8, per_class=50):
        self.labels = np.repeat(np.arange(n_classes), per_class)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return np.array([i, self.labels[i]], dtype="float32"), self.labels[i]


def test_feature_cache_memory_is_bounded_and_each_image_extracted_once():
    """400 images of 64 KB (25.6 MB of features): with the cache in a file, neither Paddle's
    allocator (the device here) nor NumPy ever holds more than an extraction batch (64 images,
    4.1 MB) plus a group of episodes (2 x 12 images); the old device cache held all 25.6 MB."""
    import tracemalloc
    from paddle.base import core
    data = IndexImages()
    episodes = list(EpisodeSampler(data.labels, 3, 1, 3, n_episodes=60, seed=0))
    needed = {i for e in episodes for i in e}
    row = 25 * 640 * 4
    assert len(needed) * row > 20e6  # the episodes touch most of the split
    results = {}
    for ram_gb in (1.0, 0.0):
        model = SyntheticMaps()
        paddle_before = core.host_memory_stat_current_value("Allocated", 0)
        core.host_memory_stat_reset_peak_value("Allocated", 0)
        tracemalloc.start()
        results[ram_gb] = evaluate(model, data, episodes, 3, 1, 3, cache_ram_gb=ram_gb)
        numpy_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        paddle_peak = core.host_memory_stat_peak_value("Allocated", 0) - paddle_before
        assert sorted(model.extracted) == sorted(needed)  # one backbone pass per distinct image
        # extraction batch: input, sin's operands and output (~3 x 4.1 MB); a group: 2 x 12 rows
        assert paddle_peak < 16e6, paddle_peak
        if ram_gb == 0.0:
            assert numpy_peak < 8e6, numpy_peak  # a batch's host copy, a group's gather buffer
        else:
            assert numpy_peak >= len(needed) * row  # in RAM: the whole cache
    np.testing.assert_array_equal(results[0.0][0], results[1.0][0])
    assert results[0.0][0].mean() > 50  # the toy classes are separable


def test_host_features_round_trip_in_ram_and_in_a_file():
    from frn.feature_store import HostFeatures
    rng = np.random.RandomState(0)
    for dtype in ("float32", "float16", "float64"):
        rows = rng.randn(37, 3, 5).astype(dtype)
        wanted = np.array([5, 0, 36, 5, 12])  # any order, repeats allowed
        for ram_bytes in (rows.nbytes, rows.nbytes - 1, 0):  # fits exactly; one byte short: a file
            store = HostFeatures(len(rows), ram_bytes)
            for start in range(0, len(rows), 8):
                store.append(rows[start:start + 8])
            store.finish()
            assert store.in_ram == (ram_bytes >= rows.nbytes)
            got = store.gather(wanted)
            assert got.dtype == rows.dtype and got.shape == (5, 3, 5)
            np.testing.assert_array_equal(got, rows[wanted])
            store.close()


def test_host_features_refuse_a_short_or_long_write():
    import pytest
    from frn.feature_store import HostFeatures
    store = HostFeatures(4, 0)
    store.append(np.zeros((3, 2), "float32"))
    with pytest.raises(ValueError, match="3 rows written"):
        store.finish()
    with pytest.raises(ValueError, match="more than"):
        store.append(np.zeros((2, 2), "float32"))
    with pytest.raises(ValueError, match="float64"):
        store.append(np.zeros((1, 2), "float64"))
    store.close()


def test_mean_and_interval_uses_population_variance():
    accs = [50.0, 60.0, 70.0, 80.0]
    mean, interval = mean_and_interval(accs)
    assert mean == 65.0
    np.testing.assert_allclose(interval, 1.96 * np.sqrt(np.var(accs) / 4))


def test_validation_runs_after_every_nth_epoch_counted_from_one_and_after_the_last():
    """The official FRN trainer validates when (e + 1) % val_epoch == 0, as mmfewshot's hook."""
    from frn.engine import validation_epoch
    assert [e for e in range(12) if validation_epoch(e, 5, 12)] == [4, 9, 11]
    assert [e for e in range(3) if validation_epoch(e, 1, 3)] == [0, 1, 2]

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

"""DeepEMD's image pipelines without fixtures: shapes, randomness, constants, grid arithmetic."""
import random

import numpy as np
import pytest
from PIL import Image

from data.deepemd_transforms import (
    CIFAR_STATS,
    DEEPEMD_STATS,
    dataset_stats,
    deepemd_transform,
    grid_boxes,
    grid_intervals,
    sample_crop_params,
    sampling_patch,
)
from utils.errors import UserError


def make_image(width: int = 120, height: int = 100, seed: int = 0) -> Image.Image:
    """A small random RGB image, not square, so the axes cannot be confused."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


@pytest.mark.parametrize("variant,shape", [("fcn", (3, 84, 84)), ("grid", (13, 3, 84, 84)),
                                           ("sampling", (9, 3, 84, 84))])
@pytest.mark.parametrize("training", [False, True])
def test_shapes_and_dtype(variant, shape, training):
    out = deepemd_transform("mini_imagenet", variant, training)(make_image())
    assert out.shape == shape and out.dtype == np.float32


@pytest.mark.parametrize("variant", ["fcn", "grid", "sampling"])
def test_other_image_sizes_and_patch_counts(variant):
    random.seed(0)
    out = deepemd_transform("demo", variant, False, image_size=32, patch_list=(1, 2), num_patch=5)(make_image())
    assert out.shape == {"fcn": (3, 32, 32), "grid": (5, 3, 32, 32), "sampling": (5, 3, 32, 32)}[variant]


def test_grid_test_patches_are_deterministic():
    transform = deepemd_transform("cub", "grid", training=False)
    image = make_image()
    assert np.array_equal(transform(image), transform(image))


@pytest.mark.parametrize("dataset", ["mini_imagenet", "cifar_fs"])
def test_sampling_is_random_but_reproducible_after_reseeding(dataset):
    transform = deepemd_transform(dataset, "sampling", training=False)  # random at test time too
    image = make_image()
    random.seed(3)
    first, second = transform(image), transform(image)
    assert not np.array_equal(first, second)
    random.seed(3)
    assert np.array_equal(transform(image), first)


def test_grid_train_ratio_is_drawn_per_level_from_python_random():
    transform = deepemd_transform("mini_imagenet", "grid", training=True)
    image = make_image()
    random.seed(5)
    first = transform(image)
    random.seed(5)
    assert np.array_equal(transform(image), first)
    assert not np.array_equal(transform(image), first)


def test_cifar_fs_constants_for_fcn_and_grid_imagenet_style_for_sampling():
    assert dataset_stats("cifar_fs", "fcn") == CIFAR_STATS
    assert dataset_stats("cifar_fs", "grid") == CIFAR_STATS
    assert dataset_stats("cifar_fs", "sampling") == DEEPEMD_STATS
    for dataset in ("mini_imagenet", "tiered_imagenet", "cub", "fc100", "omniglot"):
        assert all(dataset_stats(dataset, v) == DEEPEMD_STATS for v in ("fcn", "grid", "sampling"))
    # a uniform grey image normalises to (v/255 - mean) / std with the chosen constants
    grey = Image.new("RGB", (40, 40), (128, 128, 128))
    for variant, stats in (("fcn", CIFAR_STATS), ("grid", CIFAR_STATS), ("sampling", DEEPEMD_STATS)):
        out = deepemd_transform("cifar_fs", variant, training=False)(grey)
        expected = (128 / 255 - np.array(stats[0])) / np.array(stats[1])
        np.testing.assert_allclose(out.reshape(-1, 3, 84 * 84).astype(np.float64).mean(axis=(0, 2)), expected,
                                   atol=1e-5)


def test_fcn_test_transform_is_resize_then_centre_crop():
    image = make_image()
    out = deepemd_transform("omniglot", "fcn", training=False)(image)
    resized = np.asarray(image.resize((92, 92), Image.BILINEAR), dtype=np.float32)[4:88, 4:88] / 255
    expected = (resized - np.float32(DEEPEMD_STATS[0])) / np.float32(DEEPEMD_STATS[1])
    np.testing.assert_allclose(out, expected.transpose(2, 0, 1), atol=1e-6)


def test_grid_boxes_of_the_spec_example():
    # 120 x 100, level 2, ratio 2: width cells raw = 60, big = 120, centres 30, 90 -> (0, 90), (30, 120);
    # height raw = 50, big = 100, centres 25, 75 -> (0, 75), (25, 100)
    assert grid_boxes(120, 100, [2], [2.0]) == [(0, 0, 90, 75), (30, 0, 120, 75),
                                                (0, 25, 90, 100), (30, 25, 120, 100)]


def test_grid_intervals_truncate_like_the_reference():
    # 100 / 3 = 33.33 -> raw 33; big = int(33.33 * 2) = 66; centres 16, 49, 82
    assert grid_intervals(100, 3, 2.0) == [(0, 49), (16, 82), (49, 100)]
    # 10 / 3: raw = big = 3, centres 1, 4, 7, half-width 3 // 2 = 1: an odd cell loses a pixel
    # and the last pixels of an uneven length are never covered
    assert grid_intervals(10, 3, 1.0) == [(0, 2), (3, 5), (6, 8)]
    assert len(grid_boxes(120, 100, [2, 3], [2.0, 1.5])) == 13
    with pytest.raises(ValueError):
        grid_boxes(120, 100, [2, 3], [2.0])


def test_sampling_patch_replays_given_crop_and_flip():
    image = make_image()
    plain = sampling_patch(image, (10, 20, 50, 60), False, 84)
    flipped = sampling_patch(image, (10, 20, 50, 60), True, 84)
    np.testing.assert_array_equal(flipped, plain[:, :, ::-1])


def test_crop_params_stay_inside_the_image():
    random.seed(1)
    for _ in range(200):
        i, j, h, w = sample_crop_params(120, 100)
        assert 0 < h and 0 < w and 0 <= i <= 100 - h and 0 <= j <= 120 - w
    # on a 1000 x 3 strip every try is too tall, so the fallback takes the full height at the
    # widest allowed aspect ratio (4/3), centred: w = round(3 * 4/3) = 4, j = (1000 - 4) // 2
    assert sample_crop_params(1000, 3) == (0, 498, 3, 4)


def test_unknown_names_are_one_line_errors():
    with pytest.raises(UserError):
        deepemd_transform("imagenet21k", "fcn", False)
    with pytest.raises(UserError):
        deepemd_transform("mini_imagenet", "pyramid", False)

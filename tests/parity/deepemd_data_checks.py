"""Parity checker for DeepEMD's image pipelines (fixture `patches_grid_sampling.npz`, spec §9).

Boxes are compared exactly; pixels at the manifest tolerance. Sampling is random, so the
reference's recorded RandomResizedCrop parameters and flips are replayed rather than drawn.
"""
import numpy as np
from PIL import Image

from data.deepemd_transforms import (DEEPEMD_STATS, deepemd_transform, grid_boxes, sampling_patch)
from tests.parity.checkers import Entry, register

#: every DeepEMD loader produces 84 x 84 inputs (spec §9)
REFERENCE_SIZE = 84


def train_box_key(ratio: float) -> str:
    """Fixture key of the train boxes for `ratio`: 1.5 -> grid_train_boxes_ratio_1p5."""
    return "grid_train_boxes_ratio_" + format(ratio, "g").replace(".", "p")


def _close(entry: Entry, key: str, actual) -> None:
    """Compare a float32 pixel array with the fixture at the manifest tolerance."""
    got = np.asarray(actual)
    assert got.dtype == np.float32, f"{entry.file}: {key}: dtype {got.dtype}, expected float32"
    entry.check(key, got)


@register("deepemd/patches")
def check_patches(entry: Entry) -> None:
    cfg = entry.config
    image = Image.fromarray(entry.use("image"), mode="RGB")
    width, height = image.size
    assert [width, height] == list(cfg["image_wh"]), f"{entry.file}: image is {width}x{height}"
    patch_list, ratio = tuple(cfg["patch_list"]), float(cfg["patch_ratio"])
    # the fixture's constants are the DeepEMD loaders' own (mini-ImageNet pipeline)
    np.testing.assert_allclose(DEEPEMD_STATS[0], cfg["normalize_mean"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(DEEPEMD_STATS[1], cfg["normalize_std"], rtol=0, atol=1e-12)

    _close(entry, "fcn_test", deepemd_transform("mini_imagenet", "fcn", training=False,
                                                      image_size=REFERENCE_SIZE)(image))

    grid = deepemd_transform("mini_imagenet", "grid", training=False, image_size=REFERENCE_SIZE,
                             patch_list=patch_list, patch_ratio=ratio)
    _close(entry, "grid_test_patches", grid(image))
    entry.exact("grid_test_boxes", np.asarray(grid_boxes(width, height, patch_list, [ratio] * len(patch_list))))

    # training draws a ratio per level; the fixture stores the boxes of given ratios
    for r in cfg["train_ratios_boxes"]:
        boxes = grid_boxes(width, height, patch_list, [float(r)] * len(patch_list))
        entry.exact(train_box_key(float(r)), np.asarray(boxes))

    params, flips = entry.use("sampling_params_ijhw"), entry.use("sampling_flips")
    assert len(params) == cfg["num_patch"], f"{entry.file}: {len(params)} sampling patches"
    patches = [sampling_patch(image, tuple(p), bool(f), REFERENCE_SIZE, DEEPEMD_STATS) for p, f in zip(params, flips)]
    _close(entry, "sampling_patches", np.stack(patches))

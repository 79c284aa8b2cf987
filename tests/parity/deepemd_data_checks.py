"""Parity checker for DeepEMD's image pipelines (kind `deepemd/patches`, spec §9).

The pipelines an entry holds are read from its array names, never from a list kept here:
`[<dataset>_]<pipeline>` where the optional prefix names a dataset (the reference's spelling,
e.g. `miniimagenet`, or ours, e.g. `cifar_fs`; unprefixed arrays are the entry's default
dataset, `config["dataset"]` or mini-ImageNet, whose loaders the shared entry records) and
`<pipeline>` is one of

    fcn_test                      FCN val/test transform of the image
    grid_test_patches / _boxes    Grid val/test patches (pixels) and crop boxes
    grid_train_boxes_ratio_<r>    Grid training boxes for the level ratio r (1p5 = 1.5)
    sampling_patches              Sampling patches, replaying `sampling_params_ijhw` and
                                  `sampling_flips` (the dataset's own, else the default's)

with the inputs `image`, `sampling_params_ijhw`, `sampling_flips` (a dataset may have its own
`<dataset>_image`). Each is computed by `deepemd_transform(dataset, variant, ...)`, so a dataset
whose loader differs (CIFAR-FS: its own patch transform and constants) is checked with its own
pipeline. Settings (patch_list, patch_ratio, num_patch, normalize_mean/std) come from the
config, per dataset where the config has `<dataset>_<setting>` or a `<dataset>` section.
An array matching no pipeline is left uncompared, which fails the entry (tests/parity/test_parity.py).
Boxes are compared exactly, pixels at the manifest tolerance; Sampling is random, so the
reference's recorded RandomResizedCrop parameters and flips are replayed rather than drawn.
"""
import re
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from data.deepemd_transforms import dataset_stats, deepemd_transform, grid_boxes, sampling_patch
from data.transforms import DATASET_TRANSFORMS
from tests.parity.checkers import Entry, register

#: every DeepEMD loader produces 84 x 84 inputs (spec §9)
REFERENCE_SIZE = 84
#: the reference's dataset names (its -dataset choices) where ours differ
REFERENCE_DATASETS = {"miniimagenet": "mini_imagenet", "tieredimagenet": "tiered_imagenet"}
#: the dataset of unprefixed arrays when the config names none (the mini-ImageNet loaders)
DEFAULT_DATASET = "mini_imagenet"
#: arrays that are inputs of the pipelines, not outputs
INPUTS = ("image", "sampling_params_ijhw", "sampling_flips")
TRAIN_BOXES = re.compile(r"grid_train_boxes_ratio_(\d+(?:p\d+)?)$")


def train_box_ratio(suffix: str) -> float:
    """The ratio of a `grid_train_boxes_ratio_<suffix>` array: 1p5 -> 1.5, 1 -> 1.0."""
    return float(suffix.replace("p", "."))


def split_dataset(name: str, default: str) -> Tuple[str, str]:
    """(our dataset name, pipeline) of an array name: the longest dataset prefix, else `default`."""
    names = {**{d: d for d in DATASET_TRANSFORMS}, **REFERENCE_DATASETS}
    for prefix in sorted(names, key=len, reverse=True):
        if name.startswith(prefix + "_"):
            return names[prefix], name[len(prefix) + 1:]
    return default, name


def setting(config: dict, dataset: str, key: str, own: bool = False):
    """A config value for `dataset`: its `<dataset>` section, `<dataset>_<key>`, else (unless
    `own`) the entry-wide `key`."""
    section = config.get(dataset)
    if isinstance(section, dict) and key in section:
        return section[key]
    return config.get(f"{dataset}_{key}", None if own else config.get(key))


def _close(entry: Entry, key: str, actual) -> None:
    """Compare a float32 pixel array with the fixture at the manifest tolerance."""
    got = np.asarray(actual)
    assert got.dtype == np.float32, f"{entry.file}: {key}: dtype {got.dtype}, expected float32"
    entry.check(key, got)


@register("deepemd/patches")
def check_patches(entry: Entry) -> None:
    cfg = entry.config
    default = REFERENCE_DATASETS.get(cfg.get("dataset"), cfg.get("dataset")) or DEFAULT_DATASET
    groups: Dict[str, Dict[str, str]] = {}
    for name in entry.outputs():
        dataset, pipeline = split_dataset(name, default)
        groups.setdefault(dataset, {})[pipeline] = name
    assert "image" in groups.get(default, {}), f"{entry.file}: no input image"
    for dataset, arrays in groups.items():
        check_dataset(entry, dataset, arrays, groups[default])


def check_dataset(entry: Entry, dataset: str, arrays: Dict[str, str], defaults: Dict[str, str]) -> None:
    """Every pipeline array of one dataset (`arrays`: pipeline -> array name)."""
    cfg = entry.config
    source = lambda key: arrays.get(key, defaults.get(key))       # the dataset's own input, else the default's
    image = Image.fromarray(entry.use(source("image")), mode="RGB")
    width, height = image.size
    # entry-wide image size and constants describe the default dataset; others only their own
    own = arrays is not defaults
    wh = setting(cfg, dataset, "image_wh", own)
    if wh is not None and ("image" in arrays or not own):
        assert [width, height] == list(wh), f"{entry.file}: {dataset} image is {width}x{height}"
    for key, index in (("normalize_mean", 0), ("normalize_std", 1)):
        recorded = setting(cfg, dataset, key, own)
        for variant in ("fcn", "grid", "sampling"):
            if recorded is not None and any(p.startswith(variant) for p in arrays):
                # the loaders' own constants, as the fixture records them
                np.testing.assert_allclose(dataset_stats(dataset, variant)[index], recorded, rtol=0, atol=1e-12,
                                           err_msg=f"{entry.file}: {dataset} {variant} {key}")
    patch_list = tuple(int(n) for n in setting(cfg, dataset, "patch_list"))
    ratio = float(setting(cfg, dataset, "patch_ratio"))
    transform = lambda variant: deepemd_transform(dataset, variant, training=False, image_size=REFERENCE_SIZE,
                                                  patch_list=patch_list, patch_ratio=ratio)
    for pipeline, name in arrays.items():
        if pipeline == "fcn_test":
            _close(entry, name, transform("fcn")(image))
        elif pipeline == "grid_test_patches":
            _close(entry, name, transform("grid")(image))
        elif pipeline == "grid_test_boxes":
            entry.exact(name, np.asarray(grid_boxes(width, height, patch_list, [ratio] * len(patch_list))))
        elif TRAIN_BOXES.match(pipeline):
            # training draws a ratio per level; the fixture stores the boxes of given ratios
            r = train_box_ratio(TRAIN_BOXES.match(pipeline).group(1))
            entry.exact(name, np.asarray(grid_boxes(width, height, patch_list, [r] * len(patch_list))))
        elif pipeline == "sampling_patches":
            check_sampling(entry, dataset, name, image, source("sampling_params_ijhw"), source("sampling_flips"))


def check_sampling(entry: Entry, dataset: str, name: str, image: Image.Image, params_key: Optional[str],
                   flips_key: Optional[str]) -> None:
    """Sampling patches of `dataset` replaying the recorded crop parameters and flips."""
    assert params_key and flips_key, f"{entry.file}: {name} without recorded crop parameters and flips"
    params, flips = entry.use(params_key), entry.use(flips_key)
    num_patch = setting(entry.config, dataset, "num_patch")
    assert num_patch is None or len(params) == int(num_patch), f"{entry.file}: {len(params)} sampling patches"
    stats = dataset_stats(dataset, "sampling")
    patches = [sampling_patch(image, tuple(p), bool(f), REFERENCE_SIZE, stats) for p, f in zip(params, flips)]
    _close(entry, name, np.stack(patches))

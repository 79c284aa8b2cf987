"""DeepEMD's image pipelines: FCN images, Grid patches and Sampling patches, as the official
`dataloader/` transforms.

Every pipeline takes a PIL RGB image and returns float32 arrays:
  fcn       [3, S, S]     one image;
  grid      [P, 3, S, S]  P = sum(n * n for n in patch_list) crops of a pyramid of grids;
  sampling  [P, 3, S, S]  P = num_patch RandomResizedCrops, random at test time too (as the official loader).

Resizing is PIL bilinear on PIL images, as torchvision does on the reference's PIL input, so the
pixels match the reference to float32 rounding; a cv2 or tensor resize would differ by ~0.05
after normalisation. All randomness (grid ratio, crop parameters, flips) comes from Python's
global `random`, which the repo seeds per epoch and Paddle re-seeds per DataLoader worker.
"""
import math
import random
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import numpy as np
from PIL import Image

from data.transforms import DATASET_TRANSFORMS, resize_size
from utils.errors import UserError

#: (left, upper, right, lower): a PIL crop box
Box = Tuple[int, int, int, int]
# Pillow >= 9.1 names these constants in enums (the spelling its type hints know); older Pillow
# has only the module-level names, which newer releases keep as aliases
BILINEAR = getattr(Image, "Resampling", Image).BILINEAR
FLIP_LEFT_RIGHT = getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT
#: (top i, left j, height h, width w): torchvision's RandomResizedCrop parameters
CropParams = Tuple[int, int, int, int]
Stats = Tuple[Tuple[float, float, float], Tuple[float, float, float]]

#: the normalisation every DeepEMD loader uses unless stated below (not torchvision's ImageNet statistics)
DEEPEMD_STATS: Stats = ((125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0),
                        (63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0))
#: CIFAR-FS's FCN and Grid loaders use CIFAR-100 statistics instead (its Sampling loader does not)
CIFAR_STATS: Stats = ((0.5071, 0.4866, 0.4409), (0.2009, 0.1984, 0.2023))

VARIANTS = ("fcn", "grid", "sampling")
RRC_SCALE = (0.08, 1.0)            # torchvision RandomResizedCrop defaults, used by DeepEMD
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
#: datasets whose DeepEMD loaders differ from mini-ImageNet's (only CIFAR-FS)
CIFAR_STYLE = {"cifar_fs"}


# ----- pixel helpers ----------------------------------------------------------------------
def to_normalized_array(img: Image.Image, stats: Stats) -> np.ndarray:
    """ToTensor + Normalize in float32 arithmetic, as torchvision computes them."""
    x = np.asarray(img, dtype=np.uint8).astype(np.float32).transpose(2, 0, 1) / np.float32(255.0)
    mean = np.asarray(stats[0], dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(stats[1], dtype=np.float32).reshape(3, 1, 1)
    return (x - mean) / std


def resize_square(img: Image.Image, size: int) -> Image.Image:
    """Resize([size, size]): the aspect ratio is not kept."""
    return img.resize((size, size), BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """CenterCrop(size) with torchvision's offsets (Python's round, i.e. half to even)."""
    width, height = img.size
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def maybe_flip(img: Image.Image, flip: bool) -> Image.Image:
    return img.transpose(FLIP_LEFT_RIGHT) if flip else img


def draw_flip() -> bool:
    """RandomHorizontalFlip's decision (p = 0.5)."""
    return random.random() < 0.5


# ----- RandomResizedCrop --------------------------------------------------------------------
def sample_crop_params(width: int, height: int, scale: Tuple[float, float] = RRC_SCALE,
                       ratio: Tuple[float, float] = RRC_RATIO) -> CropParams:
    """torchvision's RandomResizedCrop.get_params, drawing from Python's `random`:
    up to 10 tries of area fraction and log-uniform aspect, else a centred fallback crop."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target_area = area * random.uniform(scale[0], scale[1])
        aspect = math.exp(random.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    return _fallback_crop(width, height, ratio)


def _fallback_crop(width: int, height: int, ratio: Tuple[float, float]) -> CropParams:
    """The whole image, cut to the nearest allowed aspect ratio, centred."""
    in_ratio = width / height
    w, h = width, height
    if in_ratio < min(ratio):
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        w = int(round(h * max(ratio)))
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(img: Image.Image, params: CropParams, size: int) -> Image.Image:
    """Crop the (i, j, h, w) window and resize it to size x size (bilinear)."""
    i, j, h, w = (int(v) for v in params)
    return resize_square(img.crop((j, i, j + w, i + h)), size)


def sampling_patch(img: Image.Image, params: CropParams, flip: bool, size: int,
                   stats: Stats = DEEPEMD_STATS) -> np.ndarray:
    """One Sampling patch for given crop parameters and flip: replayable by the parity check."""
    return to_normalized_array(maybe_flip(resized_crop(img, params, size), flip), stats)


# ----- Grid geometry --------------------------------------------------------------------------
def grid_intervals(length: int, n: int, ratio: float) -> List[Tuple[int, int]]:
    """The n (start, end) intervals along one axis: cells of int(L/n) whose centres are kept,
    enlarged to int(L/n * ratio) and clipped to [0, L]. The truncations are the reference's."""
    raw = int(length / n)
    big = int(length / n * ratio)  # the reference's float expression, truncated towards zero
    centres = [raw // 2 + k * raw for k in range(n)]
    return [(max(0, c - big // 2), min(length, c + big // 2)) for c in centres]


def level_boxes(width: int, height: int, n: int, ratio: float) -> List[Box]:
    """The n x n boxes of one pyramid level, rows (top to bottom) outer, columns inner."""
    cols, rows = grid_intervals(width, n, ratio), grid_intervals(height, n, ratio)
    return [(left, upper, right, lower) for upper, lower in rows for left, right in cols]


def grid_boxes(width: int, height: int, patch_list: Sequence[int], ratios: Sequence[float]) -> List[Box]:
    """The boxes of every level of `patch_list`, in order; `ratios[k]` is level k's ratio."""
    if len(ratios) != len(patch_list):
        raise ValueError(f"one ratio per level expected, got {len(ratios)} for {len(patch_list)} levels")
    boxes: List[Box] = []
    for n, ratio in zip(patch_list, ratios):
        boxes.extend(level_boxes(width, height, n, ratio))
    return boxes


def draw_train_ratio() -> float:
    """Training ratio of one level of one image: 1 + 2 * U[0, 1), so patches vary in extent."""
    return 1.0 + 2.0 * random.random()


# ----- pipelines --------------------------------------------------------------------------
@dataclass
class FCNTransform:
    """One image: RandomResizedCrop + flip for training, Resize(92/84 S) square + CenterCrop S else."""
    image_size: int
    training: bool
    stats: Stats

    def __call__(self, img: Image.Image) -> np.ndarray:
        if self.training:
            params = sample_crop_params(*img.size)
            return sampling_patch(img, params, draw_flip(), self.image_size, self.stats)
        out = center_crop(resize_square(img, resize_size(self.image_size)), self.image_size)
        return to_normalized_array(out, self.stats)

    def describe(self) -> List[dict]:
        """The evaluation pipeline as data (data/preprocess.py); training crops are random."""
        if self.training:
            raise ValueError("DeepEMD's training pipeline is random and has no data description")
        big, size = resize_size(self.image_size), self.image_size
        return [{"op": "resize", "size": [big, big], "interpolation": "bilinear"},
                {"op": "center_crop", "size": [size, size]}, {"op": "to_float", "divide": 255.0},
                {"op": "normalize", "mean": list(self.stats[0]), "std": list(self.stats[1])}, {"op": "to_chw"}]


@dataclass
class GridTransform:
    """Pyramid of grid crops on the original image; `cifar` selects CIFAR-FS's patch transform."""
    image_size: int
    training: bool
    stats: Stats
    patch_list: Tuple[int, ...]
    patch_ratio: float
    cifar: bool = False

    def __call__(self, img: Image.Image) -> np.ndarray:
        width, height = img.size
        patches = []
        # level by level, so the random draws come in the reference's order: the level's ratio,
        # then the per-patch crop parameters / flips
        for n in self.patch_list:
            ratio = draw_train_ratio() if self.training else self.patch_ratio
            for box in grid_boxes(width, height, [n], [ratio]):
                patches.append(self.patch(img.crop(box)))
        return np.stack(patches)

    def patch(self, crop: Image.Image) -> np.ndarray:
        """One cropped cell to [3, S, S]."""
        size = self.image_size
        if self.cifar and self.training:
            return sampling_patch(crop, sample_crop_params(*crop.size), draw_flip(), size, self.stats)
        if self.cifar:
            return to_normalized_array(center_crop(resize_square(crop, resize_size(size)), size), self.stats)
        out = resize_square(crop, size)
        if self.training:
            out = maybe_flip(out, draw_flip())
        return to_normalized_array(out, self.stats)


@dataclass
class SamplingTransform:
    """num_patch independent RandomResizedCrop + flip patches, in training and evaluation alike."""
    image_size: int
    stats: Stats
    num_patch: int

    def __call__(self, img: Image.Image) -> np.ndarray:
        return np.stack([sampling_patch(img, sample_crop_params(*img.size), draw_flip(),
                                        self.image_size, self.stats) for _ in range(self.num_patch)])


def dataset_stats(dataset: str, variant: str) -> Stats:
    """Normalisation of `dataset` under `variant`: CIFAR-FS uses CIFAR constants except for Sampling."""
    return CIFAR_STATS if dataset in CIFAR_STYLE and variant != "sampling" else DEEPEMD_STATS


def deepemd_transform(dataset: str, variant: str, training: bool, image_size: int = 84,
                      patch_list: Sequence[int] = (2, 3), patch_ratio: float = 2.0,
                      num_patch: int = 9) -> Callable[[Image.Image], np.ndarray]:
    """The DeepEMD pipeline of `dataset` (a key of DATASET_TRANSFORMS) for `variant`.

    mini/tiered-ImageNet, CUB and FC100 share one pipeline in the reference, CIFAR-FS has its own;
    datasets DeepEMD does not cover use the mini-ImageNet pipeline at `image_size`.
    """
    if dataset not in DATASET_TRANSFORMS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASET_TRANSFORMS)}")
    if variant not in VARIANTS:
        raise UserError(f"unknown DeepEMD variant {variant!r}; choose one of {list(VARIANTS)}")
    stats = dataset_stats(dataset, variant)
    if variant == "fcn":
        return FCNTransform(image_size, training, stats)
    if variant == "grid":
        return GridTransform(image_size, training, stats, tuple(int(n) for n in patch_list),
                             float(patch_ratio), cifar=dataset in CIFAR_STYLE)
    return SamplingTransform(image_size, stats, int(num_patch))

"""Image transforms per dataset, as the official FRN code (`datasets/transform_manager.py`).

Training augmentation (`transform_type`):
  type 0: RandomResizedCrop(size) on the original image;
  type 1: RandomCrop(size, padding=8) for images that are already size x size;
  then ColorJitter(0.4, 0.4, 0.4), RandomHorizontalFlip, to-tensor, ImageNet normalisation.
Evaluation, applied on the fly instead of FRN's pre-resized folders:
  type 0: resize the shorter side to 92/84 * size, centre-crop size;
  type 1: resize to (92/84 * size) squared (aspect not kept), centre-crop size;
  type 2: images are already size x size, only normalise.
"""
from typing import Callable, Dict, Tuple

import paddle.vision.transforms as T

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]

# dataset name -> (train type, eval type). Rows marked "ours" are datasets the FRN repository
# does not cover; they use the type that fits their image format.
DATASET_TRANSFORMS: Dict[str, Tuple[int, int]] = {
    "mini_imagenet": (0, 0),
    "tiered_imagenet": (1, 2),
    "tiered_imagenet_deepemd": (0, 0),
    "cub": (0, 0),            # raw images
    "cub_cropped": (0, 1),    # bounding-box crops
    "aircraft": (0, 1),
    "meta_inat": (1, 2),      # iNat2017 images squashed to 84 x 84 (FRN's init_meta_iNat.py)
    "tiered_meta_inat": (1, 2),
    "cars": (0, 1),           # ours: cropped like Aircraft
    "webvision": (0, 0),      # ours: ImageNet/WebVision photos (SimTrans uses its own transforms)
    "cifar_fs": (0, 1),       # ours: 32x32 originals, squashed to size
    "fc100": (0, 1),          # ours
    "omniglot": (0, 1),       # ours
    "demo": (1, 2),           # the embedded demo dataset: rendered at the target size
    "custom": (0, 0),         # ours: your own photos (any size), as mini-ImageNet at --image_size
}


def resize_size(image_size: int) -> int:
    """FRN resizes to 92 before centre-cropping 84; keep that ratio at other sizes."""
    return round(image_size * 92 / 84)


def _tail() -> list:
    return [T.ToTensor(), T.Normalize(mean=MEAN, std=STD)]


def train_transform(dataset: str, image_size: int) -> Callable:
    """The augmenting transform for training images of `dataset`."""
    train_type, _ = DATASET_TRANSFORMS[dataset]
    crop = (T.RandomResizedCrop(image_size) if train_type == 0
            else T.RandomCrop(image_size, padding=8))
    return T.Compose([crop, T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
                      T.RandomHorizontalFlip(), *_tail()])


def eval_transform(dataset: str, image_size: int) -> Callable:
    """The deterministic transform for validation/test images of `dataset`."""
    _, eval_type = DATASET_TRANSFORMS[dataset]
    big = resize_size(image_size)
    if eval_type == 0:
        head = [T.Resize(big), T.CenterCrop(image_size)]
    elif eval_type == 1:
        head = [T.Resize((big, big)), T.CenterCrop(image_size)]
    else:
        head = [T.Resize((image_size, image_size))]  # a no-op on images of the right size
    return T.Compose([*head, *_tail()])

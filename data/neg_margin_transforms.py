"""Image pipelines of the two Negative-Margin protocols (bl0's and mmfewshot's pre-training and meta-test configs).

Training, both: RandomResizedCrop(size) (scale 0.08-1), ColorJitter(0.4, 0.4, 0.4), horizontal
flip, normalise.
Test: mmfs resizes the short side to int(1.15 * size) (aspect kept), bl0 the whole image to a
square int(1.15 * size); both then centre-crop `size`.
Normalisation: mmfs ImageNet statistics; bl0 CIFAR-like statistics (its `lib/dataset.py`).
"""
from typing import Callable

import paddle.vision.transforms as T

from data.transforms import MEAN as IMAGENET_MEAN
from data.transforms import STD as IMAGENET_STD

BL0_MEAN = [0.507, 0.487, 0.441]
BL0_STD = [0.267, 0.257, 0.276]
TEST_ZOOM = 1.15


def neg_margin_transform(protocol: str, image_size: int, training: bool) -> Callable:
    """The `protocol`'s ('mmfs' or 'bl0') transform of a PIL image for training or test."""
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if protocol == "mmfs" else (BL0_MEAN, BL0_STD)
    tail = [T.ToTensor(), T.Normalize(mean=mean, std=std)]
    if training:
        return T.Compose([T.RandomResizedCrop(image_size), T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4),
                          T.RandomHorizontalFlip(), *tail])
    big = int(TEST_ZOOM * image_size)
    resize = T.Resize(big) if protocol == "mmfs" else T.Resize((big, big))
    return T.Compose([resize, T.CenterCrop(image_size), *tail])

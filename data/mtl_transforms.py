"""The image pipeline of the official MTL code (`pytorch/dataloader/dataset_loader.py`):

    Resize(92) -> [RandomResizedCrop(88)] -> CenterCrop(80) -> [RandomHorizontalFlip]
    -> ToTensor -> Normalize(mean [125.3, 123.0, 113.9] / 255, std [63.0, 62.1, 66.7] / 255)

The bracketed steps only in pre-training; the meta phases use no augmentation. The same
pipeline serves every dataset (FC100's 32x32 images are up-sampled to 92). At another
--image_size every size is scaled by image_size / 80 (ours; the reference runs 80 only).
"""
from typing import Callable, List

import paddle.vision.transforms as T

from data.deepemd_transforms import DEEPEMD_STATS

#: the normalisation the MTL, FEAT and DeepEMD loaders share
MTL_STATS = DEEPEMD_STATS
REFERENCE_SIZE = 80


def mtl_transform(image_size: int = REFERENCE_SIZE, augment: bool = False) -> Callable:
    """The MTL pipeline producing image_size x image_size tensors (augmented for pre-training)."""
    def scaled(size: int) -> int:
        return round(size * image_size / REFERENCE_SIZE)

    steps: List[Callable] = [T.Resize(scaled(92))]
    if augment:
        steps.append(T.RandomResizedCrop(scaled(88)))
    steps.append(T.CenterCrop(image_size))
    if augment:
        steps.append(T.RandomHorizontalFlip())
    mean, std = MTL_STATS
    return T.Compose([*steps, T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))])

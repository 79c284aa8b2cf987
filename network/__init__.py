"""Backbones by `--model` name. Each returns a dense feature map [N, C, h, w]."""
import utils  # noqa: F401  (first: its warning filters apply before Paddle is imported)

# isort: split
from typing import Callable, Dict

import paddle.nn as nn

from network.conv4 import Conv4
from network.resnet12 import ResNet12
from network.resnet18 import ResNet10, ResNet18
from network.resnet25 import ResNet25
from network.resnet50 import ResNet50

BACKBONES: Dict[str, Callable[..., nn.Layer]] = {
    "Conv4": Conv4,
    "ResNet12": ResNet12,
    "ResNet10": ResNet10,   # CloserLookFewShot / Negative-Margin code, 224x224 inputs
    "ResNet18": ResNet18,
    "ResNet25": ResNet25,   # the MTL code's encoder (methods/mtl.py)
    "ResNet50": ResNet50,  # paddle.vision.models, torchvision key names (SimTrans)
}


def build_backbone(name: str, **kwargs) -> nn.Layer:
    """Instantiate the backbone registered as `name` (keyword arguments go to its constructor)."""
    if name not in BACKBONES:
        raise KeyError(name)
    return BACKBONES[name](**kwargs)

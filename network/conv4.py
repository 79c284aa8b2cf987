"""Conv-4 backbone exactly as the official FRN code (`models/backbones/Conv_4.py`).

Four blocks of Conv3x3(bias) -> BatchNorm -> ReLU -> MaxPool2; an 84x84 image gives a
[64, 5, 5] map. The module tree mirrors the reference (`layers.{0,3,6,9}.layers.{0,1}`) so
official state dicts map key for key.
"""
import paddle.nn as nn

from network.common import batch_norm, torch_default_conv_init


class ConvBlock(nn.Layer):
    """Conv3x3 (with bias) followed by BatchNorm; the reference keeps them in `layers`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        conv = nn.Conv2D(in_channels, out_channels, 3, padding=1)
        torch_default_conv_init(conv)
        self.layers = nn.Sequential(conv, batch_norm(out_channels))

    def forward(self, x):
        return self.layers(x)


class Conv4(nn.Layer):
    """Four conv blocks, `width` channels each; output [N, width, H/16, W/16]."""

    def __init__(self, width: int = 64, in_channels: int = 3):
        super().__init__()
        blocks = []
        for i in range(4):
            blocks += [ConvBlock(in_channels if i == 0 else width, width), nn.ReLU(), nn.MaxPool2D(2, 2)]
        self.layers = nn.Sequential(*blocks)
        self.out_channels = width

    def forward(self, x):
        return self.layers(x)

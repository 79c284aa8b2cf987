"""ResNet-12 exactly as the official FRN code (`models/backbones/ResNet.py`, `resnet12()`).

Four stages of one BasicBlock each: three 3x3 convs (LeakyReLU 0.1 between them), a 1x1
stride-1 conv + BN shortcut in every stage, LeakyReLU after the sum, then MaxPool2. No dropout
or DropBlock: the released FRN models never used them (spec §2.2). `widths` defaults to the
paper's (64, 160, 320, 640); the reduced-width parity fixtures use other values.
"""
from typing import Sequence

import paddle.nn as nn

from network.common import batch_norm, kaiming_fan_out_conv


class BasicBlock(nn.Layer):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = kaiming_fan_out_conv(in_channels, out_channels, 3, padding=1)
        self.bn1 = batch_norm(out_channels)
        self.conv2 = kaiming_fan_out_conv(out_channels, out_channels, 3, padding=1)
        self.bn2 = batch_norm(out_channels)
        self.conv3 = kaiming_fan_out_conv(out_channels, out_channels, 3, padding=1)
        self.bn3 = batch_norm(out_channels)
        self.downsample = nn.Sequential(kaiming_fan_out_conv(in_channels, out_channels, 1),
                                        batch_norm(out_channels))
        self.relu = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2D(2, 2)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.relu(out + self.downsample(x)))


class ResNet12(nn.Layer):
    """Output [N, widths[-1], H/16, W/16] (640 x 5 x 5 for 84x84 images)."""

    def __init__(self, widths: Sequence[int] = (64, 160, 320, 640), in_channels: int = 3):
        super().__init__()
        channels = [in_channels, *widths]
        # Named layer1..layer4 with one block at index 0, like the reference's Sequential stages.
        for stage in range(4):
            setattr(self, f"layer{stage + 1}", nn.Sequential(BasicBlock(channels[stage], channels[stage + 1])))
        self.out_channels = widths[-1]

    def forward(self, x):
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

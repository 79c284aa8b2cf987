"""ResNet-12 exactly as the official FRN code (`models/backbones/ResNet.py`, `resnet12()`), which is
also the MetaOptNet-style ResNet-12 of the Negative-Margin code (bl0) and of mmfewshot.

Four stages of one BasicBlock each: three 3x3 convs (LeakyReLU 0.1 between them), a 1x1
stride-1 conv + BN shortcut in every stage, LeakyReLU after the sum, then MaxPool2. `widths`
defaults to the paper's (64, 160, 320, 640); the reduced-width parity fixtures use other values.

Regularisation (off by default: the released FRN models and mmfewshot's configs never use it):
with `drop_rate > 0`, as the Negative-Margin code, stages 1-2 apply dropout after the block and
stages 3-4 DropBlock with `dropblock_size` and the reference's keep-rate ramp (network/dropblock.py).
"""
from typing import Sequence

import paddle.nn as nn

from network.common import batch_norm, kaiming_fan_out_conv
from network.dropblock import StepCounter, regularize

#: key names of the references, per layer: Negative-Margin code (bl0) and mmfewshot -> ours
REFERENCE_NAMES = {"C1": "conv1", "C2": "conv2", "C3": "conv3", "BN1": "bn1", "BN2": "bn2", "BN3": "bn3",
                   "norm1": "bn1", "norm2": "bn2", "norm3": "bn3"}


class BasicBlock(nn.Layer):
    def __init__(self, in_channels: int, out_channels: int, drop_rate: float = 0.0, use_dropblock: bool = False,
                 dropblock_size: int = 5):
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
        self.drop_rate, self.use_dropblock, self.dropblock_size = drop_rate, use_dropblock, dropblock_size
        self.step = 0  # training passes before this one; set by the backbone (DropBlock schedule)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.pool(self.relu(out + self.downsample(x)))
        return regularize(out, self.drop_rate, self.use_dropblock, self.dropblock_size, self.step, self.training)


class ResNet12(nn.Layer):
    """Output [N, widths[-1], H/16, W/16] (640 x 5 x 5 for 84x84 images)."""

    def __init__(self, widths: Sequence[int] = (64, 160, 320, 640), in_channels: int = 3, drop_rate: float = 0.0,
                 dropblock_size: int = 5):
        super().__init__()
        channels = [in_channels, *widths]
        # Named layer1..layer4 with one block at index 0, like the reference's Sequential stages.
        for stage in range(4):
            block = BasicBlock(channels[stage], channels[stage + 1], drop_rate, use_dropblock=stage >= 2,
                               dropblock_size=dropblock_size)
            setattr(self, f"layer{stage + 1}", nn.Sequential(block))
        self.out_channels = widths[-1]
        self.drop_rate = drop_rate
        if drop_rate > 0:
            self.dropblock_step = StepCounter()

    def forward(self, x):
        if self.training and self.drop_rate > 0:
            self.dropblock_step.tick(getattr(self, f"layer{stage}")[0] for stage in range(1, 5))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    @staticmethod
    def from_reference_key(key: str, layout: str = "") -> str:
        """Our name of a backbone key of the Negative-Margin code (`layer1.0.C1.weight`,
        `.BN1.`) or of mmfewshot (`.conv1.`, `.norm1.`); FRN/FEAT names are ours already."""
        parts = key.split(".")
        return ".".join(REFERENCE_NAMES.get(p, p) for p in parts)

"""ResNet-10 and ResNet-18 of CloserLookFewShot, as the Negative-Margin code (bl0) uses them
(`lib/backbone/resnet18.py`), for 224x224 inputs.

Stem: conv7x7/2 (3 -> 64) - BN - ReLU - MaxPool3x3/2. Four stages of `SimpleBlock`s
(two each for ResNet-18, one for ResNet-10), widths 64-128-256-512; the first block of stages
2-4 halves the resolution (stride-2 first conv), and a block whose width changes has a 1x1
conv + BN shortcut (stride 2 when halving), else the identity:
    out = ReLU(BN2(C2(ReLU(BN1(C1(x))))) + shortcut(x))
224 -> 112 -> 56 -> 56 -> 28 -> 14 -> 7; the method averages the 7x7 map (AvgPool2d(7)).
Conv weights N(0, 2 / (k*k*out_channels)) (bl0 `init_layer`), BN 1/0. With `drop_rate > 0`,
as in bl0, stages 1-2 apply dropout after each block and stages 3-4 DropBlock.
bl0 ships ResNet-18 only; ResNet-10 is the same family with one block per stage (CloserLook).
"""
import re
from typing import Sequence

import paddle.nn as nn

from network.common import batch_norm, kaiming_fan_out_conv
from network.dropblock import StepCounter, regularize

_RENAMES = {"C1": "conv1", "BN1": "bn1", "C2": "conv2", "BN2": "bn2"}
_SHORTCUT_KEY = re.compile(r"^(layer\d\.\d+)\.(shortcut|BNshortcut)\.(.+)$")


class SimpleBlock(nn.Layer):
    def __init__(self, in_channels: int, out_channels: int, half_res: bool, drop_rate: float = 0.0,
                 use_dropblock: bool = False, dropblock_size: int = 5):
        super().__init__()
        stride = 2 if half_res else 1
        self.conv1 = kaiming_fan_out_conv(in_channels, out_channels, 3, padding=1, stride=stride)
        self.bn1 = batch_norm(out_channels)
        self.conv2 = kaiming_fan_out_conv(out_channels, out_channels, 3, padding=1)
        self.bn2 = batch_norm(out_channels)
        self.shortcut = None
        # the reference has a projection when the widths differ; a halving block needs one too
        # (same widths, stride 2), which only reduced-width models meet
        if in_channels != out_channels or half_res:
            self.shortcut = nn.Sequential(kaiming_fan_out_conv(in_channels, out_channels, 1, stride=stride),
                                          batch_norm(out_channels))
        self.relu = nn.ReLU()
        self.drop_rate, self.use_dropblock, self.dropblock_size = drop_rate, use_dropblock, dropblock_size
        self.step = 0  # training passes before this one; set by the backbone (DropBlock schedule)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out = self.relu(out + (x if self.shortcut is None else self.shortcut(x)))
        return regularize(out, self.drop_rate, self.use_dropblock, self.dropblock_size, self.step, self.training)


class CloserLookResNet(nn.Layer):
    """Output [N, widths[-1], H/32, W/32] (512 x 7 x 7 for 224x224 images)."""

    def __init__(self, blocks: Sequence[int], widths: Sequence[int] = (64, 128, 256, 512), in_channels: int = 3,
                 drop_rate: float = 0.0, dropblock_size: int = 5):
        super().__init__()
        self.trunk = nn.Sequential(kaiming_fan_out_conv(in_channels, 64, 7, padding=3, stride=2), batch_norm(64),
                                   nn.ReLU(), nn.MaxPool2D(3, stride=2, padding=1))
        channels = [64, *widths]
        for stage in range(4):
            layers = [SimpleBlock(channels[stage] if b == 0 else channels[stage + 1], channels[stage + 1],
                                  half_res=stage > 0 and b == 0, drop_rate=drop_rate, use_dropblock=stage >= 2,
                                  dropblock_size=dropblock_size) for b in range(blocks[stage])]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.out_channels = widths[-1]
        self.drop_rate = drop_rate
        if drop_rate > 0:
            self.dropblock_step = StepCounter()

    def forward(self, x):
        if self.training and self.drop_rate > 0:
            self.dropblock_step.tick(block for stage in range(1, 5) for block in getattr(self, f"layer{stage}"))
        x = self.trunk(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    @staticmethod
    def from_reference_key(key: str, layout: str = "") -> str:
        """Our name of a bl0 key: `layerS.B.C1/BN1/C2/BN2.*` -> `conv1/bn1/conv2/bn2`,
        `layerS.B.shortcut.*` / `.BNshortcut.*` -> `layerS.B.shortcut.0.*` / `.shortcut.1.*`;
        the stem `trunk.0/1.*` is ours already."""
        match = _SHORTCUT_KEY.match(key)
        if match:
            return f"{match.group(1)}.shortcut.{0 if match.group(2) == 'shortcut' else 1}.{match.group(3)}"
        return ".".join(_RENAMES.get(p, p) for p in key.split("."))


def ResNet18(widths: Sequence[int] = (64, 128, 256, 512), **kwargs) -> CloserLookResNet:
    """Two SimpleBlocks per stage (bl0 `resnet18`)."""
    return CloserLookResNet((2, 2, 2, 2), widths, **kwargs)


def ResNet10(widths: Sequence[int] = (64, 128, 256, 512), **kwargs) -> CloserLookResNet:
    """One SimpleBlock per stage (CloserLookFewShot's ResNet10)."""
    return CloserLookResNet((1, 1, 1, 1), widths, **kwargs)

"""The encoder of the official Meta-Transfer Learning code (`pytorch/models/resnet_mtl.py`,
`ResNetMtl`), called "ResNet-25" by its authors. It is not the paper's ResNet-12:

    stem    conv3x3(3 -> widths[0]/2, stride 1, WITH bias) -> BN -> ReLU       (no pooling)
    layer1  `blocks` BasicBlocks of widths[0] channels, the first with stride 2
    layer2  `blocks` BasicBlocks of widths[1] channels, the first with stride 2
    layer3  `blocks` BasicBlocks of widths[2] channels, the first with stride 2

BasicBlock: relu(bn2(conv2(relu(bn1(conv1_stride_s(x))))) + shortcut(x)), the shortcut a
conv1x1(stride s, no bias) + BN in the first block of each layer. 1 + 3 * 4 * 2 = 25 3x3
convolutions. An 80x80 image gives a [640, 10, 10] map; the reference then applies
AvgPool2d(10), which `methods/mtl.py` does (as a global average, equal at 80x80).

With `mtl=True` every convolution is a scaling-and-shifting convolution (`Conv2DMtl`): the
pre-trained weight W (and bias b) are frozen, and y = conv(x, W * mtl_weight, b + mtl_bias) with
a trainable scale per (output, input) channel pair, broadcast over the kernel window, and (for
the stem only, the one conv with a bias) a trainable shift per output channel. With `mtl=False`
the same tree holds plain convolutions (the pre-training encoder); the state-dict keys are the
reference's in both cases, without `mtl_*` in the plain one.

Numerics: the meta stage normalises every task's 5-80 images with their own batch statistics,
and its parity fixture compares gradients at 1e-3 relative; the BatchNorms are
`PreciseBatchNorm2D` (network/batchnorm.py: float32 results at least as close to float64 as
PyTorch's, where Paddle's stock kernel is ~2x further; 1.3-1.7x the step time on CPU) and the
stem's bias gradient is an accurate sum.
"""
import math
from typing import Optional, Sequence

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from network.batchnorm import add_channel_bias
from network.common import batch_norm

#: the official widths: stem 80, stages 160-320-640, four blocks per stage
WIDTHS = (160, 320, 640)


class Conv2DMtl(nn.Layer):
    """A convolution with frozen weights and trainable scaling/shifting (`mtl=True`), or a
    plain trainable convolution (`mtl=False`), under the reference's parameter names."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
                 bias: bool = False, mtl: bool = True):
        super().__init__()
        self.stride, self.padding, self.mtl = stride, padding, mtl
        fan_out = out_channels * kernel * kernel  # kaiming_normal_(mode='fan_out', relu)
        self.weight = self.create_parameter(
            [out_channels, in_channels, kernel, kernel],
            default_initializer=nn.initializer.Normal(0.0, math.sqrt(2.0 / fan_out)))
        self.bias: Optional[paddle.Tensor] = None
        if bias:  # PyTorch's default conv bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(in_channels * kernel * kernel)
            self.bias = self.create_parameter([out_channels], is_bias=True,
                                              default_initializer=nn.initializer.Uniform(-bound, bound))
        if mtl:
            self.weight.stop_gradient = True
            self.mtl_weight = self.create_parameter([out_channels, in_channels, 1, 1],
                                                    default_initializer=nn.initializer.Constant(1.0))
            if self.bias is not None:  # the conv was built with a bias
                self.bias.stop_gradient = True
                self.mtl_bias = self.create_parameter([out_channels], is_bias=True,
                                                      default_initializer=nn.initializer.Constant(0.0))

    def effective_weight(self) -> paddle.Tensor:
        """W * mtl_weight (the [out, in, 1, 1] scale broadcast over the kernel), or W."""
        return self.weight * self.mtl_weight if self.mtl else self.weight

    def effective_bias(self) -> Optional[paddle.Tensor]:
        """b + mtl_bias, or b (None without a bias)."""
        if self.bias is None or not self.mtl:
            return self.bias
        return self.bias + self.mtl_bias

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = F.conv2d(x, self.effective_weight(), stride=self.stride, padding=self.padding)
        bias = self.effective_bias()
        # the stem's bias feeds a train-mode BatchNorm: its exact gradient is 0, and Paddle's own
        # reduction (conv2d's bias) leaves ~5e-7 of float32 noise, which Adam turns into +-lr moves
        return y if bias is None else add_channel_bias(y, bias)


class BasicBlock(nn.Layer):
    def __init__(self, in_channels: int, out_channels: int, stride: int, mtl: bool):
        super().__init__()
        self.conv1 = Conv2DMtl(in_channels, out_channels, 3, stride=stride, padding=1, mtl=mtl)
        self.bn1 = batch_norm(out_channels, precise=True)
        self.conv2 = Conv2DMtl(out_channels, out_channels, 3, padding=1, mtl=mtl)
        self.bn2 = batch_norm(out_channels, precise=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(Conv2DMtl(in_channels, out_channels, 1, stride=stride, mtl=mtl),
                                            batch_norm(out_channels, precise=True))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet25(nn.Layer):
    """Output [N, widths[-1], H/8, W/8]; `mtl` chooses scaling-and-shifting convolutions."""

    def __init__(self, widths: Sequence[int] = WIDTHS, blocks: int = 4, mtl: bool = False, in_channels: int = 3):
        super().__init__()
        stem = widths[0] // 2
        self.conv1 = Conv2DMtl(in_channels, stem, 3, padding=1, bias=True, mtl=mtl)
        self.bn1 = batch_norm(stem, precise=True)
        channels = [stem, *widths]
        for stage in range(3):
            layers = [BasicBlock(channels[stage] if b == 0 else channels[stage + 1], channels[stage + 1],
                                 stride=2 if b == 0 else 1, mtl=mtl) for b in range(blocks)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.out_channels = widths[-1]
        self.mtl = mtl

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

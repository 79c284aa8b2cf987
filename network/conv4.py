"""Conv-4 backbone exactly as the official FRN code (`models/backbones/Conv_4.py`), which is also
the Conv-4 of the Negative-Margin code (bl0 `ConvNet(4)`) and of mmfewshot.

Four blocks of Conv3x3(bias) -> BatchNorm -> ReLU -> MaxPool2 (run as MaxPool2 -> ReLU, the same
values and gradients); an 84x84 image gives a [64, 5, 5] map. The module tree mirrors the FRN
reference (`layers.{0,3,6,9}.layers.{0,1}`) so its state dicts map key for key; `from_reference_key`
maps the other two layouts.
Initialisation: PyTorch's default (FRN), or with `init="kaiming"` the conv weights drawn
N(0, 2 / (9 * out_channels)) as bl0's `init_layer` and mmfewshot's kaiming fan-out.
"""
import math
import re
from typing import Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.autograd import PyLayer

from network.common import batch_norm, torch_default_conv_init

INITS = ("torch", "kaiming")
_BL0_KEY = re.compile(r"^trunk\.(\d)\.(C|BN)\.(.+)$")
_BL0_ALIAS = re.compile(r"^trunk\.\d\.trunk\.[01]\.")  # the same tensors again, in bl0's `trunk` Sequential
_MMFS_KEY = re.compile(r"^layers\.(\d)\.layers\.([01])\.(.+)$")


class _BiasCancelled(PyLayer):
    """Identity on the conv output; the conv bias, which a batch-statistics BatchNorm cancels,
    gets its exact gradient 0 (a tensor, so that weight decay and momentum act on the bias as
    in the reference, whose bias gradient is float32 noise around 0)."""

    @staticmethod
    def forward(ctx, x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
        ctx.bias_shape, ctx.bias_dtype, ctx.frozen = bias.shape, bias.dtype, bias.stop_gradient
        return x.reshape(x.shape)  # a view: no copy of the largest tensor of the network

    @staticmethod
    def backward(ctx, dy: paddle.Tensor):
        return dy, None if ctx.frozen else paddle.zeros(ctx.bias_shape, ctx.bias_dtype)


def add_channel_bias_rows(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """x [N, C, H, W] + bias [C] as a row broadcast over [N * C, H * W]: the same float32 sums
    as `x + bias[None, :, None, None]` (bit-identical), 2-3x faster on Paddle's CPU kernels.
    Forward only (its bias gradient would be summed in another order than Paddle's)."""
    n, c = x.shape[0], x.shape[1]
    return (x.reshape([n * c, -1]) + bias.tile([n]).reshape([-1, 1])).reshape(x.shape)


class MaxPool2x2(nn.MaxPool2D):
    """`nn.MaxPool2D(2, 2)` whose backward scatters through the argmax recorded in the forward
    (Paddle's max_pool2d_with_index) instead of searching every window again: the same gradient
    (each window's first maximum), about 20% less CPU time for forward + backward. Without
    gradients it is Paddle's plain kernel."""

    def __init__(self):
        super().__init__(2, 2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if paddle.is_grad_enabled() and not x.stop_gradient:
            return F.max_pool2d(x, self.ksize, self.stride, self.padding, return_mask=True)[0]
        return nn.MaxPool2D.forward(self, x)  # explicit: Paddle 2.6's dy2static loses super()'s cell


class ConvBlock(nn.Layer):
    """Conv3x3 (with bias) followed by BatchNorm; the reference keeps them in `layers`."""

    def __init__(self, in_channels: int, out_channels: int, init: str = "torch"):
        super().__init__()
        conv = nn.Conv2D(in_channels, out_channels, 3, padding=1)
        torch_default_conv_init(conv)
        if init == "kaiming":
            std = math.sqrt(2.0 / (9 * out_channels))
            conv.weight.set_value(paddle.normal(0.0, std, conv.weight.shape))
        self.layers = nn.Sequential(conv, batch_norm(out_channels))

    def forward(self, x):
        conv, bn = self.layers[0], self.layers[1]
        batch_statistics = bn.training and not bn._use_global_stats
        if conv.bias is None or (not batch_statistics and paddle.is_grad_enabled()):
            return self.layers(x)  # the plain sequence: its bias gradient flows as Paddle sums it
        out = F.conv2d(x, conv.weight, None, stride=conv._stride, padding=conv._padding,
                       dilation=conv._dilation, groups=conv._groups, data_format=conv._data_format)
        if batch_statistics:
            return self._batch_statistics(out, conv.bias, bn)
        return bn(add_channel_bias_rows(out, conv.bias))  # evaluation: the plain values, faster

    @staticmethod
    def _batch_statistics(out: paddle.Tensor, bias: paddle.Tensor, bn: nn.Layer) -> paddle.Tensor:
        """BN(conv(x) + b) on batch statistics, computed as BN(conv(x)) with the running mean
        corrected by b. BatchNorm subtracts each channel's batch mean, which cancels the bias
        exactly, so its true gradient is 0 (the reference's float32 noise of that cancellation,
        ~1e-5, would be acted upon by weight decay and Adam's sign-like steps). Leaving it out
        of the largest tensor also saves the broadcast add and its reduction (about a quarter
        of a Conv-4 training step on the CPU, docs/performance.md); the normalised values are
        the same up to float32 rounding, with a smaller channel mean to cancel."""
        y = bn(_BiasCancelled.apply(out, bias))
        with paddle.no_grad():  # the running mean tracks the batch mean of conv(x) + b
            keep = float(bn._momentum)  # Paddle's convention: running = keep * running + (1 - keep) * batch
            bn._mean.set_value(bn._mean + (1.0 - keep) * bias.astype(bn._mean.dtype))
        return y


class Conv4(nn.Layer):
    """Four conv blocks, `width` channels each; output [N, width, H/16, W/16]."""

    def __init__(self, width: int = 64, in_channels: int = 3, init: str = "torch"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, not {init!r}")
        blocks = []
        for i in range(4):
            # max-pool before ReLU: relu(max(window)) = max(relu(window)) exactly, values and
            # gradients (both ops are exact and the same element wins every window), and the
            # ReLU then runs on a quarter of the elements (docs/performance.md)
            blocks += [ConvBlock(in_channels if i == 0 else width, width, init), MaxPool2x2(), nn.ReLU()]
        self.layers = nn.Sequential(*blocks)
        self.out_channels = width

    def forward(self, x):
        return self.layers(x)

    @staticmethod
    def from_reference_key(key: str, layout: str = "") -> Optional[str]:
        """Our name of a Conv-4 key of the Negative-Margin code (`trunk.i.C.*`, `trunk.i.BN.*`;
        their aliases `trunk.i.trunk.0/1.*` -> None, dropped) or, with `layout="mmfewshot"`, of
        mmfewshot (`layers.i.layers.0/1.*`, i = 0..3). Block i is our `layers.{3i}` (ReLU and
        pooling sit between the blocks). mmfewshot's names must be asked for: they look like
        FRN's, which are ours already (`layers.3` is block 1 there, block 3 in mmfewshot)."""
        if _BL0_ALIAS.match(key):
            return None
        match = _BL0_KEY.match(key)
        if match:
            return f"layers.{3 * int(match.group(1))}.layers.{0 if match.group(2) == 'C' else 1}.{match.group(3)}"
        match = _MMFS_KEY.match(key) if layout == "mmfewshot" else None
        if match:
            return f"layers.{3 * int(match.group(1))}.layers.{match.group(2)}.{match.group(3)}"
        return key

"""Layer settings shared by the backbones, chosen to reproduce PyTorch numerics."""
import math

import paddle
import paddle.nn as nn

from network.batchnorm import PreciseBatchNorm2D


def batch_norm(channels: int, precise: bool = False) -> nn.BatchNorm2D:
    """BatchNorm with PyTorch's defaults (PyTorch momentum 0.1 is Paddle momentum 0.9); with
    `precise`, the train-mode BatchNorm with accurate sums (network/batchnorm.py: 1.3-1.7x the
    training step time on CPU, float32 results at least as close to float64 as PyTorch's)."""
    if precise:
        return PreciseBatchNorm2D(channels, momentum=0.9, epsilon=1e-5)
    return nn.BatchNorm2D(channels, momentum=0.9, epsilon=1e-5)


def torch_default_conv_init(conv: nn.Conv2D) -> None:
    """PyTorch's default Conv2d init: weight and bias uniform in +-1/sqrt(fan_in)."""
    fan_in = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
    bound = 1.0 / math.sqrt(fan_in)
    conv.weight.set_value(paddle.uniform(conv.weight.shape, min=-bound, max=bound))
    if conv.bias is not None:
        conv.bias.set_value(paddle.uniform(conv.bias.shape, min=-bound, max=bound))


def kaiming_fan_out_conv(in_channels: int, out_channels: int, kernel: int, padding: int = 0,
                         stride: int = 1) -> nn.Conv2D:
    """Bias-free conv initialised N(0, 2/fan_out), as the reference ResNets do."""
    std = math.sqrt(2.0 / (out_channels * kernel * kernel))
    return nn.Conv2D(in_channels, out_channels, kernel, stride=stride, padding=padding, bias_attr=False,
                     weight_attr=nn.initializer.Normal(0.0, std))

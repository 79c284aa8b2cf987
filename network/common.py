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
    bound = torch_uniform_bound(conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3])
    conv.weight.set_value(paddle.uniform(conv.weight.shape, min=-bound, max=bound))
    if conv.bias is not None:
        conv.bias.set_value(paddle.uniform(conv.bias.shape, min=-bound, max=bound))


def kaiming_fan_out_conv(in_channels: int, out_channels: int, kernel: int, padding: int = 0,
                         stride: int = 1) -> nn.Conv2D:
    """Bias-free conv initialised N(0, 2/fan_out), as the reference ResNets do."""
    std = math.sqrt(2.0 / (out_channels * kernel * kernel))
    return nn.Conv2D(in_channels, out_channels, kernel, stride=stride, padding=padding, bias_attr=False,
                     weight_attr=nn.initializer.Normal(0.0, std))


def torch_uniform_bound(fan_in: int) -> float:
    """1/sqrt(fan_in): the bound of PyTorch's default Linear/Conv init (kaiming_uniform_ with
    a = sqrt(5) on the weight, and the same bound on the bias)."""
    return 1.0 / math.sqrt(fan_in)


def torch_linear(n_in: int, n_out: int) -> nn.Linear:
    """nn.Linear with PyTorch's default init: weight and bias uniform in +-1/sqrt(n_in)."""
    bound = torch_uniform_bound(n_in)
    init = nn.initializer.Uniform(-bound, bound)
    return nn.Linear(n_in, n_out, weight_attr=paddle.ParamAttr(initializer=init),
                     bias_attr=paddle.ParamAttr(initializer=init))

"""Train-mode BatchNorm with accurate per-channel sums, and a channel bias with an accurate gradient.

Why: a network that normalises with batch statistics amplifies rounding from layer to layer
(small batches, channels whose batch variance is small next to their mean), so the reference's
float32 results are only as good as its float32 arithmetic, and ours must be no worse. Paddle
3.3's CPU kernels are worse: their reductions over (N, H, W) accumulate in float32 with errors of
14-67 eps * sum|x| (numpy's and PyTorch's pairwise/cascade sums: ~1), and the train-mode forward
normalises in the fused form x * (w / std) + (b - mean * w / std), which cancels when
|mean| >> std. Measured on the SimTrans ResNet-50 fixture (each layer fed the float64
activations, train mode, RMS error against float64 summed over the 53 BatchNorm layers): Paddle
6.3e-6, PyTorch 3.3e-6, this module 2.7e-6. In the MTL meta-iteration fixture, the per-channel
sum of Paddle's dL/dx (exactly 0) is 3-6e-7, and the gradient of the stem's conv bias (which
feeds a train-mode BatchNorm, so its exact gradient is 0) 5e-7 where the reference's is 2.7e-7
and ours, with this module, 5e-8; of the 87 gradients, 41 were further from float64 than the
reference's, 15 are now.

`channel_sum` sums over (N, H, W) as float32 rows of W values, then in float64 (0.03-0.5
eps * sum|x|, and no slower than Paddle's own reduction over those axes). `PreciseBatchNorm2D`
is `paddle.nn.BatchNorm2D` (same parameters, buffers, state-dict names, running-statistics
convention: Paddle's biased batch variance, momentum 0.9) whose train-mode forward and backward
use those sums, float64 per-channel coefficients, and float32 element-wise work in centred form
(x - mean32) * scale + shift, the float32 rounding of the mean folded into the shift; values and
gradients equal Paddle's up to rounding; eval mode is Paddle's kernel. `add_channel_bias` adds a
per-channel bias whose gradient is a `channel_sum`.

Cost: built from Paddle operations (no fused kernel), one layer's forward + backward takes 3-6x
Paddle's on CPU, and a whole training step (forward + backward) of ResNet-25 (20 images of
80 px) or ResNet-50 (8 of 224 px) 1.3-1.7x (interleaved runs on a shared 2-core CPU). Only the
backbones whose parity fixtures depend on it use it (ResNet-25, ResNet-50), and only on the CPU:
on a GPU the layer is Paddle's (cuDNN) kernel, as the reference's is. Precision:
tests/network/test_batchnorm_precision.py.
"""
import math
from typing import Optional, Tuple

import paddle
import paddle.nn as nn
from paddle.autograd import PyLayer


def channel_sum(t: paddle.Tensor) -> paddle.Tensor:
    """Sum of an [N, C, H, W] tensor over (N, H, W), float64 [C]: rows of W values summed in
    t's dtype, the N * H partial sums in float64."""
    return t.sum(axis=3).astype("float64").sum(axis=[0, 2])


def _rows(t: paddle.Tensor) -> paddle.Tensor:
    """[N, C, H, W] as [N * C, H * W]: per-channel coefficients become row broadcasts, which
    Paddle's CPU kernels run several times faster than a broadcast over [1, C, 1, 1]."""
    return t.reshape([t.shape[0] * t.shape[1], -1])


def _per_row(v: paddle.Tensor, like: paddle.Tensor) -> paddle.Tensor:
    """A per-channel vector [C] (any float dtype) as the [N * C, 1] column matching _rows(like)."""
    return v.astype(like.dtype).tile([like.shape[0]]).reshape([-1, 1])


class _TrainModeBatchNorm(PyLayer):
    """y = (x - mean) / sqrt(var + eps) * weight + bias with the batch's biased statistics; also
    returns (mean, var), float64 [C], without gradient."""

    @staticmethod
    def forward(ctx, x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, epsilon: float
                ) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        count = math.prod(x.shape) // x.shape[1]
        rough_mean = channel_sum(x) / count
        centred = (_rows(x) - _per_row(rough_mean, x)).reshape(x.shape)  # ~ std in size: little rounding
        shift = channel_sum(centred) / count  # mean - rough_mean (rounded to x's dtype), in float64
        var = channel_sum(centred * centred) / count - shift * shift  # corrected two-pass variance
        inv_std = 1.0 / paddle.sqrt(var + epsilon)
        scale = weight.astype("float64") * inv_std
        y = _rows(centred) * _per_row(scale, x) + _per_row(bias.astype("float64") - shift * scale, x)
        y = y.reshape(x.shape)
        mean = rough_mean.astype(x.dtype).astype("float64") + shift
        ctx.save_for_backward(centred, weight, shift, inv_std)
        ctx.frozen = (x.stop_gradient, weight.stop_gradient, bias.stop_gradient)  # Paddle wants None there
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    # None for an input that needs no gradient, as Paddle's PyLayer docs allow (its type hints omit None)
    @staticmethod
    def backward(ctx, dy: paddle.Tensor, *unused) -> Tuple[Optional[paddle.Tensor], ...]:  # type: ignore[override]
        """dx = w / std * (dy - mean(dy) - xhat * mean(dy * xhat)), dw = sum(dy * xhat),
        db = sum(dy), with xhat = (centred - shift) / std; the sums by `channel_sum`."""
        centred, weight, shift, inv_std = ctx.saved_tensor()
        count = math.prod(dy.shape) // dy.shape[1]
        grad_bias = channel_sum(dy)
        grad_weight = (channel_sum(dy * centred) - shift * grad_bias) * inv_std
        scale = weight.astype("float64") * inv_std
        slope = -scale * inv_std * grad_weight / count  # dx = dy * scale + xhat-term + constant
        offset = -scale * grad_bias / count - shift * slope
        dx = _rows(dy) * _per_row(scale, dy) + (_rows(centred) * _per_row(slope, dy) + _per_row(offset, dy))
        dx = dx.reshape(dy.shape)
        grads = (dx, grad_weight.astype(weight.dtype), grad_bias.astype(weight.dtype))
        return tuple(None if frozen else g for g, frozen in zip(grads, ctx.frozen))


class PreciseBatchNorm2D(nn.BatchNorm2D):
    """`nn.BatchNorm2D` (NCHW) whose train-mode forward and backward use accurate per-channel
    sums (module docstring); eval mode and one value per channel use Paddle's kernel."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        # On a GPU the fused kernel is cuDNN's, as in the reference; the accurate sums fix Paddle's CPU kernel.
        if (not self.training or self._use_global_stats or math.prod(x.shape) == x.shape[1]
                or not x.place.is_cpu_place()):
            return nn.BatchNorm2D.forward(self, x)  # explicit: Paddle 2.6's dy2static loses super()'s cell
        if self._data_format != "NCHW" or x.ndim != 4:
            raise ValueError(f"PreciseBatchNorm2D takes NCHW maps, got {self._data_format} {x.shape}")
        y, mean, var = _TrainModeBatchNorm.apply(x, self.weight, self.bias, float(self._epsilon))
        keep = float(self._momentum)
        with paddle.no_grad():  # Paddle's convention: biased batch variance, running = keep * running + ...
            for running, batch in ((self._mean, mean), (self._variance, var)):
                running.set_value((keep * running.astype("float64") + (1.0 - keep) * batch).astype(running.dtype))
        return y


class _ChannelBias(PyLayer):
    @staticmethod
    def forward(ctx, x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
        ctx.frozen = (x.stop_gradient, bias.stop_gradient)
        return (_rows(x) + _per_row(bias, x)).reshape(x.shape)

    # None for an input that needs no gradient, as Paddle's PyLayer docs allow (its type hints omit None)
    @staticmethod
    def backward(ctx, dy: paddle.Tensor) -> Tuple[Optional[paddle.Tensor], ...]:  # type: ignore[override]
        grads = (dy, channel_sum(dy).astype(dy.dtype))
        return tuple(None if frozen else g for g, frozen in zip(grads, ctx.frozen))


def add_channel_bias(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """x [N, C, H, W] + bias [C], the bias gradient summed by `channel_sum`."""
    return _ChannelBias.apply(x, bias)


def use_precise_batch_norm(model: nn.Layer) -> nn.Layer:
    """Replace every plain `nn.BatchNorm2D` sublayer of `model` (e.g. of a `paddle.vision`
    model) by a `PreciseBatchNorm2D` with the same settings, parameters and buffers; returns model."""
    for parent in [model, *model.sublayers()]:
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2D:
                twin = PreciseBatchNorm2D(child._num_features, momentum=child._momentum, epsilon=child._epsilon,
                                          data_format=child._data_format, use_global_stats=child._use_global_stats)
                twin.set_state_dict(child.state_dict())
                setattr(parent, name, twin)
    return model

"""DropBlock (Ghiasi et al., 2018) as the Negative-Margin code's ResNets use it (spec
neg_margin.md §3.5), with the same keep-rate schedule.

A seed drawn at position (i, j) of the (S - b + 1)^2 grid zeroes rows i..i+b-1 and columns
j..j+b-1 of the S x S map (the seed is the block's top-left corner); the kept activations are
rescaled by numel / number kept.
"""
from typing import Iterable, Optional

import paddle
import paddle.nn.functional as F

#: iterations over which the keep rate falls from 1 to 1 - drop_rate (the reference's 20 * 2000)
RAMP_ITERATIONS = 20 * 2000


def keep_rate(drop_rate: float, step: int) -> float:
    """max(1 - drop_rate * step / 40000, 1 - drop_rate): the linear ramp of the reference."""
    return max(1.0 - drop_rate / RAMP_ITERATIONS * step, 1.0 - drop_rate)


def seed_probability(drop_rate: float, step: int, block_size: int, feat_size: int) -> float:
    """gamma = (1 - keep) / b^2 * S^2 / (S - b + 1)^2: the Bernoulli rate of block seeds."""
    grid = feat_size - block_size + 1
    return (1.0 - keep_rate(drop_rate, step)) / block_size ** 2 * feat_size ** 2 / grid ** 2


def block_mask(seeds: paddle.Tensor, block_size: int) -> paddle.Tensor:
    """[N, C, S-b+1, S-b+1] seeds (0/1) -> [N, C, S, S] mask that is 0 inside every seed's b x b
    block (seed at its top-left corner) and 1 elsewhere."""
    pad = block_size - 1
    covered = F.max_pool2d(F.pad(seeds, [pad, pad, pad, pad]), kernel_size=block_size, stride=1)
    return 1.0 - covered


def drop_block(x: paddle.Tensor, block_size: int, gamma: float,
               seeds: Optional[paddle.Tensor] = None) -> paddle.Tensor:
    """Apply DropBlock to x [N, C, S, S]: draw Bernoulli(gamma) seeds (or take `seeds`, e.g.
    recorded ones), zero their blocks, rescale the rest. A block larger than the map is clipped
    to the map (the reference would fail there; it only meets 10x10 and 5x5 maps)."""
    size = x.shape[2]
    block_size = min(block_size, size)
    if seeds is None:
        if gamma <= 0:
            return x  # no seed can be drawn: the mask would keep everything
        grid = size - block_size + 1
        seeds = paddle.bernoulli(paddle.full([x.shape[0], x.shape[1], grid, grid], gamma, dtype=x.dtype))
    mask = block_mask(seeds, block_size)
    return mask * x * (float(mask.size) / mask.sum())


def regularize(x: paddle.Tensor, drop_rate: float, use_dropblock: bool, block_size: int, step: int,
               training: bool) -> paddle.Tensor:
    """The reference ResNet blocks' output regularisation in training mode: DropBlock with the
    scheduled seed rate (stages 3-4) or plain dropout (stages 1-2); identity otherwise."""
    if not training or drop_rate <= 0:
        return x
    if not use_dropblock:
        return F.dropout(x, p=drop_rate, training=True)
    block_size = min(block_size, x.shape[2])
    return drop_block(x, block_size, seed_probability(drop_rate, step, block_size, x.shape[2]))


class StepCounter(paddle.nn.Layer):
    """Training forward passes so far (the reference reads them from a block's first BatchNorm,
    `num_batches_tracked`, before its forward). A persistable buffer, so a resumed run continues
    the DropBlock schedule where it stopped."""

    def __init__(self):
        super().__init__()
        self.register_buffer("count", paddle.zeros([1], dtype="int64"))

    def tick(self, blocks: Iterable[paddle.nn.Layer]) -> None:
        """Count one training pass and give every block the number of passes before it (`step`)."""
        step = int(self.count.item())
        with paddle.no_grad():
            self.count.set_value(self.count + 1)
        for block in blocks:
            block.step = step

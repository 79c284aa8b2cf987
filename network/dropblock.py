"""DropBlock (Ghiasi et al., 2018) as the Negative-Margin code's ResNets use it (bl0
`lib/dropblock.py`), with the same keep-rate schedule.

Seeds are drawn on the (S - b + 1)^2 grid of an S x S map; a seed at grid position (i, j) stands
for the b x b block of rows i..i+b-1 and columns j..j+b-1 (the seed is the block's top-left
corner); the kept activations are rescaled by numel / number kept.

The reference's quirk, reproduced because the published models were trained with it: bl0 pairs
seeds with block offsets by tiling two lists against each other. With the N seeds of the WHOLE
call (every sample and channel) ranked in row-major order s = 0..N-1 and the b^2 offsets ranked
o = 0..b^2-1 (o = row * b + column), it writes rows k = 0..N*b^2-1 of "seed k mod N + offset
k mod b^2", so seed s only receives the offsets o = s (mod g), g = gcd(N, b^2) (Chinese remainder
theorem). When N and b^2 are coprime every seed gets its full block (the documented behaviour);
otherwise blocks are partial (e.g. b = 5, N = 40: g = 5 and a seed zeroes one column of its
block). The reference also keeps the seed grid itself, padded by (b-1)//2 before and b//2 after,
in the mask: the cell (i + (b-1)//2, j + (b-1)//2) is dropped as well (inside the block when the
block is full). `block_mask` builds the b^2/g cells of every seed at once (tensor ops, no loop
over seeds) and scatters them into the padded seed grid.
"""
import math
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
    """[N, C, S-b+1, S-b+1] seeds (0/1) -> [N, C, S, S] mask in the seeds' dtype: 0 on every cell
    the reference drops for these seeds (module docstring: the offsets o = s mod gcd(#seeds, b^2)
    of seed s, and the seed cell shifted by (b-1)//2), 1 elsewhere. One scatter of 0/1 values."""
    b = block_size
    dtype = seeds.dtype if seeds.is_floating_point() else paddle.float32
    seeds = (seeds != 0).astype(dtype)
    lead, trail = (b - 1) // 2, b // 2
    dropped = F.pad(seeds, [lead, trail, lead, trail])  # the padded seed grid stays in the mask
    where = paddle.nonzero(seeds)  # [n, 4], row-major: the seeds' ranks s = 0..n-1
    n = where.shape[0]
    if n == 0:
        return 1.0 - dropped
    classes = math.gcd(n, b * b)
    # seed s receives the offsets o = s mod classes + classes * t, t = 0..b^2/classes - 1
    offsets = (paddle.arange(n, dtype="int64") % classes).unsqueeze(1) + classes * paddle.arange(
        b * b // classes, dtype="int64").unsqueeze(0)
    rows, cols = where[:, 2:3] + offsets // b, where[:, 3:4] + offsets % b
    size = dropped.shape[2]
    flat = ((where[:, 0:1] * seeds.shape[1] + where[:, 1:2]) * size + rows) * size + cols
    dropped = paddle.scatter(dropped.flatten(), flat.flatten(), paddle.ones([flat.size], dtype=dtype))
    return (1.0 - dropped).reshape([seeds.shape[0], seeds.shape[1], size, size])


def drop_block(x: paddle.Tensor, block_size: int, gamma: float,
               seeds: Optional[paddle.Tensor] = None) -> paddle.Tensor:
    """Apply DropBlock to x [N, C, S, S]: draw Bernoulli(gamma) seeds (or take `seeds`, e.g.
    recorded ones), zero their blocks (`block_mask`), rescale the rest. A block larger than the
    map is clipped to the map (the reference fails there: its seed grid would be empty)."""
    size = x.shape[2]
    block_size = min(block_size, size)
    if seeds is None:
        if gamma <= 0:
            return x  # no seed can be drawn: the mask would keep everything
        grid = size - block_size + 1
        seeds = paddle.bernoulli(paddle.full([x.shape[0], x.shape[1], grid, grid], gamma, dtype=x.dtype))
    mask = block_mask(seeds, block_size).astype(x.dtype)
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

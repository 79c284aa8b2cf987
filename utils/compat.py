"""What differs between the Paddle releases the code supports (2.6 to the pinned 3.x), in one
place: each helper does on every release what the newer API does."""
import paddle


def swapaxes(x: paddle.Tensor, axis0: int, axis1: int) -> paddle.Tensor:
    """`x` with two axes exchanged (`paddle.swapaxes`, which Paddle 2.6 does not have)."""
    perm = list(range(x.ndim))
    perm[axis0], perm[axis1] = perm[axis1], perm[axis0]
    return paddle.transpose(x, perm)

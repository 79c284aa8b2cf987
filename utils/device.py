"""Device choice and seeding."""
import random
from typing import Tuple

import numpy as np
import paddle


def select_device(want_gpu: bool) -> str:
    """Use the GPU when asked for and Paddle has CUDA; otherwise the CPU, saying so once."""
    if want_gpu and paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return paddle.set_device("gpu")
    if want_gpu:
        print("note: --gpu given but this Paddle build has no usable CUDA device; running on CPU")
    return paddle.set_device("cpu")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one training epoch: everything random in it (batch order, episodes,
    augmentation, Paddle RNG) derives from this, which is what makes resuming exact."""
    return seed * 100003 + epoch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and Paddle (augmentation uses Python's `random`)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    paddle.seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of one rank's random streams (augmentation, dropout, loader workers) in a
    multi-process run: rank 0 keeps `seed`, so a single-process run is unchanged, and the other
    ranks draw different numbers. The offset is a prime far above any epoch count, so
    (epoch, rank) pairs of a seed never share a stream."""
    return seed + rank * 1_000_003


_parallel_env_ready = False


def rank_and_world() -> Tuple[int, int]:
    """(rank, world size) under `paddle.distributed.launch`, (0, 1) otherwise.

    The first call in a multi-process run initialises the process group: call it before the
    device is chosen and the model built (on a CUDA build `init_parallel_env` sets this rank's
    GPU as the default place). Later calls return the same answer without initialising again."""
    global _parallel_env_ready
    world = paddle.distributed.get_world_size()
    if world > 1 and not _parallel_env_ready:
        paddle.distributed.init_parallel_env()
        _parallel_env_ready = True
    return paddle.distributed.get_rank(), world

"""Device choice and seeding."""
import random

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


def rank_and_world() -> tuple:
    """(rank, world size) under `paddle.distributed.launch`, (0, 1) otherwise."""
    world = paddle.distributed.get_world_size()
    if world > 1:
        paddle.distributed.init_parallel_env()
    return paddle.distributed.get_rank(), world

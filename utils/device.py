"""Device choice, CPU threads and seeding."""
import os
import random
from typing import Mapping, Optional, Tuple

import numpy as np
import paddle

import utils


def select_device(want_gpu: bool, threads: int = 0) -> str:
    """Use the GPU when asked for and Paddle has CUDA; otherwise the CPU, saying so once.
    Either way Paddle's CPU math gets `set_cpu_threads(threads)` threads."""
    set_cpu_threads(threads)
    if want_gpu and paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return paddle.set_device("gpu")
    if want_gpu:
        print("note: --gpu given but this Paddle build has no usable CUDA device; running on CPU")
    return paddle.set_device("cpu")


# ----------------------------------------------------------------------------------------
# CPU threads
# ----------------------------------------------------------------------------------------
_configured: Optional[Tuple[int, str]] = None  # (threads, where the number came from)


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cpusets), capped by a
    cgroup CPU quota (a container's --cpus), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, quota) if quota else cores)


def _cgroup_cpu_quota() -> int:
    """Whole CPUs of the cgroup's CPU quota (v2 cpu.max "200000 100000", v1 cfs_quota_us /
    cfs_period_us), rounded up (1.5 CPUs keep 2 threads busy); 0 when unlimited or unknown."""
    v2 = _read("/sys/fs/cgroup/cpu.max").split()
    if v2:
        quota, period = (v2 + [""])[:2]
    else:
        quota, period = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    quota, period = _positive_int(quota), _positive_int(period)  # "max" and -1: unlimited
    return -(-quota // period) if quota and period else 0


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _positive_int(text: Optional[str]) -> Optional[int]:
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if value > 0 else None


def _environ_at_process_start() -> Optional[Mapping[str, str]]:
    """The environment the process was started with (Linux /proc/self/environ: later changes,
    such as Paddle's OMP_NUM_THREADS=1, are not in it); None where it cannot be read."""
    try:
        with open("/proc/self/environ", "rb") as f:
            entries = f.read().split(b"\0")
    except OSError:
        return None
    pairs = (e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)
    return {name: value for name, value in pairs}


def user_thread_setting(before_paddle: Optional[Mapping[str, str]] = None,
                        at_start: Optional[Mapping[str, str]] = None) -> Optional[Tuple[int, str]]:
    """(threads, variable) of the first of OMP_NUM_THREADS, MKL_NUM_THREADS the user set to a
    positive number, else None. Paddle's import sets OMP_NUM_THREADS=1 when it is unset, so the
    value after it cannot tell the user's 1 from Paddle's default: read the environment as it
    was before Paddle's import (`utils.THREAD_ENV_BEFORE_PADDLE`, taken when this package is
    imported first, as the entry scripts do), else as the process started (/proc/self/environ),
    else the current one, where OMP_NUM_THREADS=1 counts as Paddle's default."""
    environ, paddle_default_possible = before_paddle, False
    if environ is None:
        environ = at_start
    if environ is None:
        environ, paddle_default_possible = os.environ, True
    for name in utils.THREAD_VARIABLES:
        value = _positive_int(environ.get(name))
        if value is None or (paddle_default_possible and name == "OMP_NUM_THREADS" and value == 1):
            continue
        return value, name
    return None


def resolve_threads(requested: int = 0, user: Optional[Tuple[int, str]] = None, cores: int = 1,
                    processes_here: int = 1) -> Tuple[int, str]:
    """(threads, where from): `--threads N` when given (> 0), else the user's environment
    variable, else the available cores shared by the training processes on this machine
    (`paddle.distributed.launch` starts `processes_here` of them)."""
    if requested > 0:
        return requested, "--threads"
    if user is not None:
        return user
    return max(1, cores // max(1, processes_here)), "all cores"


def set_cpu_threads(requested: int = 0) -> int:
    """Give Paddle's CPU math (MKL and OpenMP kernels) `resolve_threads` threads; returns the
    number. Paddle alone would use one thread (its import sets OMP_NUM_THREADS=1)."""
    global _configured
    before = utils.THREAD_ENV_BEFORE_PADDLE
    user = user_thread_setting(before, _environ_at_process_start() if before is None else None)
    local = _positive_int(os.environ.get("PADDLE_LOCAL_SIZE")) or 1
    threads, source = resolve_threads(requested, user, available_cores(), local)
    paddle.base.core.set_num_threads(threads)
    _configured = (threads, source)
    return threads


def cpu_threads() -> Optional[Tuple[int, str]]:
    """(threads, where from) as `set_cpu_threads` last set them; None before."""
    return _configured


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

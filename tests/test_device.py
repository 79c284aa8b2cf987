"""CPU threads (utils/device.py): --threads, then the user's OMP_NUM_THREADS / MKL_NUM_THREADS as
they were before Paddle's import, then every available core."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from utils import device
from utils.device import resolve_threads, user_thread_setting

REPO = Path(__file__).resolve().parents[1]


def test_flag_wins_over_environment_and_cores():
    assert resolve_threads(3, user=(5, "OMP_NUM_THREADS"), cores=8) == (3, "--threads")


def test_environment_wins_over_cores():
    assert resolve_threads(0, user=(5, "OMP_NUM_THREADS"), cores=8) == (5, "OMP_NUM_THREADS")


def test_default_is_every_core_shared_by_the_processes_of_this_machine():
    assert resolve_threads(0, None, cores=8) == (8, "all cores")
    assert resolve_threads(0, None, cores=8, processes_here=2) == (4, "all cores")
    assert resolve_threads(0, None, cores=1, processes_here=4) == (1, "all cores")


def test_user_setting_before_paddle_counts_even_when_it_is_one():
    assert user_thread_setting({"OMP_NUM_THREADS": "1"}) == (1, "OMP_NUM_THREADS")
    assert user_thread_setting({"MKL_NUM_THREADS": "3"}) == (3, "MKL_NUM_THREADS")
    assert user_thread_setting({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "3"}) == (2, "OMP_NUM_THREADS")
    assert user_thread_setting({}) is None
    assert user_thread_setting({"OMP_NUM_THREADS": "many"}) is None  # not a number: ignored
    assert user_thread_setting({"OMP_NUM_THREADS": "0"}) is None


def test_process_start_environment_is_used_when_paddle_came_first():
    assert user_thread_setting(None, {"OMP_NUM_THREADS": "1"}) == (1, "OMP_NUM_THREADS")
    assert user_thread_setting(None, {}) is None


def test_current_environment_one_is_taken_for_paddles_default(monkeypatch):
    """Without the environment before Paddle's import, OMP_NUM_THREADS=1 is what Paddle's import
    sets when it is unset: not the user's choice."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert user_thread_setting(None, None) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert user_thread_setting(None, None) == (2, "OMP_NUM_THREADS")


def test_available_cores_is_at_least_one_and_at_most_the_affinity():
    cores = device.available_cores()
    assert 1 <= cores <= (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


def _threads_in_fresh_process(env_update: dict, argv: str = "0") -> str:
    """`set_cpu_threads(argv)` in a new interpreter that imports the project first (as the entry
    scripts do), with the environment changed by `env_update` (None: removed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update({k: v for k, v in env_update.items() if v is not None})
    code = ("import utils, paddle, os\nfrom utils.device import set_cpu_threads, cpu_threads\n"
            f"set_cpu_threads({argv})\nprint(cpu_threads(), os.environ.get('OMP_NUM_THREADS'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("env, argv, expected", [
    ({}, "0", f"({device.available_cores()}, 'all cores') 1"),   # Paddle's import set OMP_NUM_THREADS=1
    ({"OMP_NUM_THREADS": "1"}, "0", "(1, 'OMP_NUM_THREADS') 1"),  # the user's 1 is kept
    ({"MKL_NUM_THREADS": "1"}, "0", "(1, 'MKL_NUM_THREADS') 1"),
    ({"OMP_NUM_THREADS": "1"}, "2", "(2, '--threads') 1"),
])
def test_entry_script_order_tells_the_users_setting_from_paddles(env, argv, expected):
    assert _threads_in_fresh_process(env, argv) == expected


def test_paddle_imported_first_reads_the_process_start_environment():
    """A notebook that imported Paddle before the project: /proc/self/environ still has the
    user's variables (Linux)."""
    if not os.path.exists("/proc/self/environ"):
        pytest.skip("no /proc/self/environ on this system")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    code = ("import paddle, utils\nfrom utils.device import set_cpu_threads, cpu_threads\n"
            "set_cpu_threads(0)\nprint(cpu_threads())")
    for extra, expected in (({}, f"({device.available_cores()}, 'all cores')"),
                            ({"OMP_NUM_THREADS": "1"}, "(1, 'OMP_NUM_THREADS')")):
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, **extra}, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == expected

"""Two ranks on the CPU (gloo) through paddle.distributed.launch.

Every run is small (Conv-4 at 32 px, a few steps per epoch) and under a timeout: a hang (a rank
waiting in an all-reduce its partner never joins) fails the test and the launcher and both ranks
are killed. The runs go through tests/e2e/dist_entry.py, which records each rank's state after
every epoch, so the tests check that both ranks took the same number of steps, ended every epoch
with equal weights (parameters and buffers), and drew different random streams.
"""
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from tests.conftest import ROOT, simtrans_flags, tiny_flags
from utils.device import epoch_seed

ENTRY = Path(__file__).with_name("dist_entry.py")
#: seconds one 2-rank run may take: these runs take 15-40 s on a loaded 2-core CPU (two Paddle
#: imports, the gloo rendezvous, a few steps); a hang never ends, so the margin costs nothing
TIMEOUT = 240


def descendants(pid: int) -> List[int]:
    """Every process below `pid` (the launcher puts each rank in a session of its own, so a
    process-group kill would miss them): read from /proc."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def worker_logs(log_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(log_dir.glob("workerlog.*")))


def launch(tmp_path: Path, script: str, flags: list, fake_val: bool = False) -> Path:
    """Run `script` on 2 CPU ranks; returns the folder of the per-rank dumps. Fails (after
    killing every process of the run) when the run does not end within TIMEOUT."""
    dumps, log_dir = tmp_path / "dumps", tmp_path / "log"
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(log_dir),
               str(ENTRY), str(dumps), *(["--fake_val"] if fake_val else []), str(ROOT / script), *map(str, flags)]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        for pid in descendants(proc.pid) + [proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.communicate()
        pytest.fail(f"2-rank {script} did not finish within {TIMEOUT} s (a hang)\n{worker_logs(log_dir)}")
    assert proc.returncode == 0, out[-3000:] + worker_logs(log_dir)
    return dumps


def rank_epochs(dumps: Path, rank: int) -> List[dict]:
    files = sorted((dumps / f"rank{rank}").glob("epoch*.npz"), key=lambda p: int(p.stem[5:]))
    return [dict(np.load(p)) for p in files]


def check_ranks_agree(dumps: Path, epochs: int, steps: List[int]) -> None:
    """Both ranks initialised the process group before choosing the device and building the
    model, ran `epochs` epochs of `steps[e]` steps, ended each with the same weights, and drew
    different random streams, rank 0's being a single-process run's (seed 0)."""
    for rank in range(2):  # the process group first: on a CUDA build it picks the rank's GPU
        order = (dumps / f"rank{rank}" / "order.txt").read_text().split()
        assert order[0] == "init_parallel_env" and order.count("init_parallel_env") == 1, order
        assert "select_device" in order and "build_model" in order, order
    ranks = [rank_epochs(dumps, r) for r in range(2)]
    assert [len(r) for r in ranks] == [epochs, epochs]
    for epoch, (zero, one) in enumerate(zip(*ranks)):
        assert int(zero["steps"]) == int(one["steps"]) == steps[epoch], epoch
        keys = sorted(k for k in zero if k.startswith("state/"))
        assert keys and keys == sorted(k for k in one if k.startswith("state/"))
        for key in keys:  # one all-reduced gradient, one optimiser step: bitwise equal
            np.testing.assert_array_equal(zero[key], one[key], err_msg=f"epoch {epoch} {key}")
        assert str(zero["seed_print"]) != str(one["seed_print"]), epoch
        random.seed(epoch_seed(0, epoch))
        np.random.seed(epoch_seed(0, epoch) % 2 ** 32)
        from tests.e2e.dist_entry import fingerprint
        assert str(zero["seed_print"]) == fingerprint(), epoch


def test_pretraining_with_an_odd_number_of_batches(tiny_data, tmp_path):
    # 8 base classes x 12 images = 96 = 3 batches of 32: padded to 4, two steps per rank
    flags = tiny_flags(tiny_data, tmp_path / "ckpt", "--method", "protonet", "--epoch", "2", "--batch_size", "32",
                       "--val_n_episode", "3")
    dumps = launch(tmp_path, "pretrain.py", flags)
    check_ranks_agree(dumps, epochs=2, steps=[2, 2])
    run = tmp_path / "ckpt" / "demo" / "Conv4_protonet_pretrain"
    assert (run / "best_model.pdparams").is_file() and (run / "resume.pdstate").is_file()
    assert "Epoch 0 | Batch 0/2 |" in (run / "output.log").read_text()
    assert len(json.loads((run / "history.json").read_text())) == 2
    assert (run / "rank1" / "output.log").is_file() and not list((run / "rank1").glob("*.pdparams"))
    check_sharded_validation(flags, rank_epochs(dumps, 0), json.loads((run / "history.json").read_text()))


def check_sharded_validation(flags: list, states: List[dict], history: List[dict]) -> None:
    """The 2-rank validation (each rank scores half the episodes, then they are gathered) gives
    a single process's accuracy on the same weights, bit for bit (the same per-episode values,
    averaged in the same order); the loss is a count-weighted mean of the halves' means, equal
    up to float64 rounding of that re-association (~1e-16 relative)."""
    import paddle
    from data.datasets import ImageList, filelist_path
    from frn.args import parse, pretrain_parser
    from frn.runs import build_model, episode_validator
    args = parse(pretrain_parser(), [str(f) for f in flags])
    model = build_model(args.options, ImageList(filelist_path(args.data_path, "base")).num_classes)
    validate = episode_validator(args, model)
    for state, epoch in zip(states, history):
        model.set_state_dict({k[len("state/"):]: paddle.to_tensor(v) for k, v in state.items()
                              if k.startswith("state/")})
        acc, loss = validate()
        assert acc == epoch["val_acc"]
        np.testing.assert_allclose(loss, epoch["val_loss"], rtol=1e-12)


def test_meta_training_with_an_odd_number_of_episodes(tiny_data, tmp_path):
    flags = tiny_flags(tiny_data, tmp_path / "ckpt", "--method", "meta_frn", "--train_n_way", "5", "--n_shot", "1",
                       "--n_query", "2", "--train_n_episode", "3", "--epoch", "2", "--val_n_episode", "3")
    check_ranks_agree(launch(tmp_path, "meta_train.py", flags), epochs=2, steps=[2, 2])


def test_meta_training_on_the_official_pool_epoch_is_sharded(tiny_data, tmp_path):
    from data.datasets import ImageList, filelist_path
    from data.samplers import PoolEpisodeSampler
    flags = tiny_flags(tiny_data, tmp_path / "ckpt", "--method", "meta_frn", "--train_n_way", "5", "--n_shot", "1",
                       "--n_query", "2", "--train_n_episode", "0", "--epoch", "2", "--val_n_episode", "3")
    labels = ImageList(filelist_path(str(tiny_data), "base")).labels
    pool = PoolEpisodeSampler(labels, 5, 1, 2, seed=0)
    whole = []
    for epoch in range(2):
        pool.set_epoch(epoch)
        whole.append(len(list(pool)))
    # each rank takes half of every epoch (rounded up), not the whole epoch
    check_ranks_agree(launch(tmp_path, "meta_train.py", flags), epochs=2, steps=[-(-n // 2) for n in whole])


def weak_shot_folder(tiny_data: Path, tmp_path: Path) -> Tuple[Path, int]:
    """A weak-shot benchmark made from the tiny data, and its number of web (training) images."""
    from data.weakshot import build_benchmark, load_weakshot
    bench = tmp_path / "bench"
    build_benchmark(str(tiny_data), str(bench), 0.25, 0.5, 4, 2, seed=0)
    return bench, len(load_weakshot(str(bench)).web["image_labels"])


@pytest.mark.parametrize("workflow", ["few_shot", "weak_shot"])
def test_early_stop_is_decided_once_for_every_rank(workflow, tiny_data, tmp_path):
    # validation falls on rank 0 and rises on rank 1 (dist_entry --fake_val): the ranks must
    # agree (the few-shot workflow shards its episodes and gathers them, the weak-shot one takes
    # rank 0's scores) and both stop after 2 epochs (--stop_th 2) of the 5
    if workflow == "few_shot":
        flags = tiny_flags(tiny_data, tmp_path / "ckpt", "--method", "protonet", "--batch_size", "32",
                           "--val_n_episode", "3")
        run, steps = tmp_path / "ckpt" / "demo" / "Conv4_protonet_pretrain", 2
    else:
        bench, web = weak_shot_folder(tiny_data, tmp_path)
        flags = simtrans_flags(bench, tmp_path / "ckpt", "--method", "simtrans_naive", "--batch_size", "8",
                               "--backbone", "conv4")
        run, steps = tmp_path / "ckpt" / "demo" / "Conv4_simtrans_naive", -(-(-(-web // 8)) // 2)
    dumps = launch(tmp_path, "pretrain.py", [*flags, "--epoch", "5", "--stop_th", "2"], fake_val=True)
    check_ranks_agree(dumps, epochs=2, steps=[steps, steps])
    history = json.loads((run / "history.json").read_text())
    assert [h["val_acc"] for h in history] == [49.0, 48.0]


def test_weak_shot_training_with_an_odd_number_of_batches(tiny_data, tmp_path):
    bench, web = weak_shot_folder(tiny_data, tmp_path)
    batches = -(-web // 8)
    assert batches % 2 == 1, batches  # the case this test is for
    flags = simtrans_flags(bench, tmp_path / "ckpt", "--method", "simtrans_naive", "--num_epoch", "2",
                           "--batch_size", "8", "--backbone", "conv4")
    check_ranks_agree(launch(tmp_path, "pretrain.py", flags), epochs=2, steps=[-(-batches // 2)] * 2)

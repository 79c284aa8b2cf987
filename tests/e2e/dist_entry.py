"""Test-only entry for the multi-process tests: runs an entry script (pretrain.py, meta_train.py)
as `paddle.distributed.launch` would, after hooking the training loop so that every rank
records what the tests compare. The product is unchanged; only this process is instrumented.

usage: python -m paddle.distributed.launch --nproc_per_node 2 tests/e2e/dist_entry.py DUMP_DIR
       [--fake_val] SCRIPT [script flags ...]

Each rank writes DUMP_DIR/rank<r>/order.txt (when the process group is initialised, the device
chosen and a model built, in order) and DUMP_DIR/rank<r>/epoch<k>.npz after each of its epochs: its full state dict
(parameters and buffers) as training leaves it, the number of steps it took in the epoch, and a
fingerprint of its Python/NumPy random state at the epoch's start. The state after epoch k is
read at the start of epoch k + 1 (after the epoch's end-of-epoch work and validation) and when
the training loop returns.

--fake_val: validation scores that fall on rank 0 and rise on rank 1 (`fake_validation`): a
rank that decided early stopping on its own scores would stop while the other waits in an
all-reduce (the run then fails or times out).
"""
import hashlib
import os
import random
import runpy
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import PIL.Image  # noqa: E402,F401  (before Paddle, as the entry scripts do)
import paddle  # noqa: E402

import frn.engine as engine  # noqa: E402
import frn.runs as runs  # noqa: E402


def fingerprint() -> str:
    """A digest of the Python and NumPy global random states (read without drawing)."""
    state = repr(random.getstate()) + repr(np.random.get_state()[1].tolist())
    return hashlib.sha256(state.encode()).hexdigest()[:16]


class Recorder:
    """Dumps one rank's state after every epoch of the training loop."""

    def __init__(self, folder: str):
        self.folder = os.path.join(folder, f"rank{paddle.distributed.get_rank()}")
        os.makedirs(self.folder, exist_ok=True)
        self.model = None
        self.epochs = 0
        self.steps = 0
        self.seed_print = ""

    def dump(self) -> None:
        if self.model is None:
            return
        state = {f"state/{k}": np.asarray(v) for k, v in engine.unwrap(self.model).state_dict().items()}
        np.savez(os.path.join(self.folder, f"epoch{self.epochs}.npz"), steps=self.steps,
                 seed_print=self.seed_print, **state)
        self.epochs += 1
        self.model = None

    def counted(self, batches):
        for batch in batches:
            self.steps += 1
            yield batch


def record_order(folder: str) -> None:
    """Append to <rank folder>/order.txt when the process group is initialised, the device
    chosen and a model built, in the order they happen."""
    import frn.weakshot as weakshot
    import utils.device as device
    path = os.path.join(folder, "order.txt")

    def noted(name, function):
        def call(*args, **kw):
            with open(path, "a") as f:
                f.write(name + "\n")
            return function(*args, **kw)
        return call

    paddle.distributed.init_parallel_env = noted("init_parallel_env", paddle.distributed.init_parallel_env)
    for module in (runs, weakshot):
        module.select_device = noted("select_device", device.select_device)
    runs.build_model = noted("build_model", runs.build_model)
    weakshot.build_model = runs.build_model


def install(folder: str, fake_val: bool) -> None:
    recorder = Recorder(folder)
    record_order(recorder.folder)
    train_one_epoch, train = engine.train_one_epoch, runs.train

    def recorded_epoch(model, batches, *rest, **kw):
        recorder.dump()  # the previous epoch's state, after its validation and buffer sync
        recorder.model, recorder.steps, recorder.seed_print = model, 0, fingerprint()
        return train_one_epoch(model, recorder.counted(batches), *rest, **kw)

    def recorded_train(*args, **kw):
        state = train(*args, **kw)
        recorder.dump()
        return state

    engine.train_one_epoch = recorded_epoch
    runs.train = recorded_train
    if fake_val:
        fake_validation()


def fake_validation() -> None:
    """Validation scores that differ between the ranks: at the n-th call the episodic
    evaluation returns 50 - 3n on rank 0 and 50 + n on rank 1 (mean over both: 50 - n), the
    whole-split classification 50 - n on rank 0 and 50 + n on rank 1. Together (sharded
    episodes) or by rank 0 (the others), validation falls; rank 1 alone sees it rise."""
    import frn.weakshot as weakshot
    calls = {"n": 0}
    rank_0 = paddle.distributed.get_rank() == 0

    def fake_evaluate(*args, **kw):
        calls["n"] += 1
        return np.full(4, 50.0 + (-3 if rank_0 else 1) * calls["n"]), 1.0

    def fake_classify(*args, **kw):
        calls["n"] += 1
        return 50.0 + (-1 if rank_0 else 1) * calls["n"], 1.0, np.ones(4)
    runs.evaluate = fake_evaluate
    weakshot.classify_split = fake_classify


def main() -> None:
    folder, rest = sys.argv[1], sys.argv[2:]
    fake_val = rest[0] == "--fake_val"
    if fake_val:
        rest = rest[1:]
    install(folder, fake_val)
    script = rest[0]
    sys.argv = [script, *rest[1:]]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()

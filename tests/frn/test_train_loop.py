"""The training loop's per-step work (frn/engine.py `train_one_epoch`, `loader`): the logged lines
and epoch means are those of per-step reads, while the device is read only at logged steps."""
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from frn import engine
from frn.engine import allow_shared_memory, loader, shared_memory_fits, train_one_epoch


class Tiny(paddle.nn.Layer):
    """A linear classifier: `model(images, labels)` -> (loss, logits), as whole-class methods."""

    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(6, 3)

    def forward(self, images, labels):
        logits = self.fc(images)
        return F.cross_entropy(logits, labels), logits


def _batches(n: int = 7):
    rng = np.random.default_rng(0)
    return [[paddle.to_tensor(rng.standard_normal((5, 6)).astype("float32")),
             paddle.to_tensor(rng.integers(0, 3, 5).astype("int64"))] for _ in range(n)]


def _per_step_reads(batches, print_freq: int):
    """The loop as it was: float(loss) and the accuracy read at every step."""
    paddle.seed(0)
    model = Tiny()
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    lines, losses, accs = [], [], []
    for step, (images, labels) in enumerate(batches):
        loss, logits = model(images, labels)
        opt.clear_grad()
        loss.backward()
        opt.step()
        if step % print_freq == 0:
            lines.append(f"Epoch 0 | Batch {step}/{len(batches)} | Loss {float(loss):.6f}")
        losses.append(float(loss))
        accs.append(float((logits.argmax(axis=1) == labels).astype("float32").mean()) * 100)
    return lines, sum(losses) / len(losses), sum(accs) / len(accs)


def test_logged_lines_and_means_match_per_step_reads(monkeypatch):
    batches = _batches()
    expected_lines, expected_loss, expected_acc = _per_step_reads(batches, print_freq=3)
    paddle.seed(0)
    model = Tiny()
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    reads = []  # the loop's own reads of the device (Paddle 2.6's cross_entropy reads one itself)
    original_numpy, original_float = paddle.Tensor.numpy, paddle.Tensor.__float__

    def counted(original):
        def read(tensor, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename == engine.__file__:
                reads.append(sys._getframe(1).f_lineno)
            return original(tensor, *args, **kwargs)
        return read
    monkeypatch.setattr(paddle.Tensor, "numpy", counted(original_numpy))
    monkeypatch.setattr(paddle.Tensor, "__float__", counted(original_float))
    lines = []
    loss, acc = train_one_epoch(model, batches, len(batches), opt, 0, engine.whole_class_step, lines.append,
                                print_freq=3)
    monkeypatch.undo()
    assert lines == expected_lines
    assert loss == expected_loss and acc == expected_acc  # the same float64 sums, in the same order
    # logged steps 0, 3, 6: the batch's values and the running means; then the epoch's sums
    assert len(reads) == 3 * 2 + 1, reads


def test_empty_epoch_means_zero():
    model = Tiny()
    opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
    assert train_one_epoch(model, [], 0, opt, 0, engine.whole_class_step, lambda line: None) == (0.0, 0.0)


class Numbers(paddle.io.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return np.full((2,), i, dtype="float32"), np.int64(i)


def test_shared_memory_needs_room(tmp_path):
    assert shared_memory_fits(0, str(tmp_path))
    assert not shared_memory_fits(10 ** 9, str(tmp_path))  # 10^9 workers' batches fit nowhere
    assert not shared_memory_fits(1, str(tmp_path / "missing"))


def test_loader_uses_shared_memory_unless_turned_off(monkeypatch):
    monkeypatch.setattr(engine, "shared_memory_fits", lambda workers, folder="/dev/shm": True)
    batches = [[0, 1], [2, 3]]
    try:
        assert loader(Numbers(), batches, 1).use_shared_memory
        allow_shared_memory(False)
        assert not loader(Numbers(), batches, 1).use_shared_memory
    finally:
        allow_shared_memory(True)
    monkeypatch.setattr(engine, "shared_memory_fits", lambda workers, folder="/dev/shm": False)
    assert not loader(Numbers(), batches, 1).use_shared_memory


@pytest.mark.parametrize("shared", [True, False])
def test_worker_batches_arrive_either_way(shared, monkeypatch):
    """Two worker processes, batches in shared memory or through the pipe: the same tensors."""
    if shared and not shared_memory_fits(2):
        pytest.skip("/dev/shm has no room on this machine")
    allow_shared_memory(shared)
    try:
        got = [(images.numpy()[:, 0].tolist(), labels.numpy().tolist())
               for images, labels in loader(Numbers(), [[0, 1], [2, 3], [4, 5]], 2)]
    finally:
        allow_shared_memory(True)
    assert got == [([0.0, 1.0], [0, 1]), ([2.0, 3.0], [2, 3]), ([4.0, 5.0], [4, 5])]

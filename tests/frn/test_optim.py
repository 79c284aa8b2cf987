"""Per-iteration schedules (warm-up, cosine, lag) and the dampened SGD step of frn/optim.py."""
import math

import numpy as np
import paddle

from frn.engine import train_one_epoch, whole_class_step
from utils.optim import IterationSchedule, build_scheduler, sgd_dampened_step


def values(scheduler, n):
    out = []
    for _ in range(n):
        out.append(scheduler.last_lr)
        scheduler.step()
    return out


def test_epoch_schedules_stay_per_epoch():
    scheduler = build_scheduler(0.1, 0.1, milestones=[2])
    assert not getattr(scheduler, "per_iteration", False)


def test_mmcv_linear_warmup_times_step_decay():
    """mmfewshot's lr_config: warm-up ratio 0.25 over W iterations, x0.1 at epoch milestones."""
    lr, per_epoch, warmup = 0.05, 10, 30
    scheduler = build_scheduler(lr, 0.1, milestones=[6, 8], iters_per_epoch=per_epoch, epochs=10,
                                warmup_iters=warmup, warmup_start=0.25)
    got = values(scheduler, 100)
    for i, value in enumerate(got):
        regular = lr * 0.1 ** sum(i // per_epoch >= m for m in (6, 8))
        expected = regular * (1 - (1 - i / warmup) * (1 - 0.25)) if i < warmup else regular
        assert math.isclose(value, expected, rel_tol=1e-12), i


def test_cosine_after_warmup_reaches_eta_min():
    scheduler = IterationSchedule(0.1, iters_per_epoch=5, epochs=4, warmup_iters=5, warmup_start=0.5,
                                  cosine=True, eta_min=1e-3)
    got = values(scheduler, 21)
    assert math.isclose(got[0], 0.05) and math.isclose(got[5], 0.1)
    assert math.isclose(got[20], 1e-3) and all(a >= b for a, b in zip(got[5:], got[6:]))


def test_lag_repeats_the_first_value():
    plain = values(IterationSchedule(1.0, 1, 10, warmup_iters=4, warmup_start=0.25, cosine=True), 10)
    lagged = values(IterationSchedule(1.0, 1, 10, warmup_iters=4, warmup_start=0.25, cosine=True, lag=1), 10)
    assert lagged == [plain[0]] + plain[:-1]


def test_training_loop_steps_a_per_iteration_schedule_after_each_step():
    layer = paddle.nn.Linear(3, 2)
    scheduler = build_scheduler(0.1, 0.1, iters_per_epoch=4, epochs=2, warmup_iters=4, warmup_start=0.5)
    optimizer = paddle.optimizer.SGD(learning_rate=scheduler, parameters=layer.parameters())
    seen = []

    class Model(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, images, labels):
            seen.append(optimizer.get_lr())
            logits = self.layer(images)
            return paddle.nn.functional.cross_entropy(logits, labels), logits

    batches = [(paddle.randn([2, 3]), paddle.to_tensor([0, 1])) for _ in range(4)]
    train_one_epoch(Model(), batches, 4, optimizer, 0, whole_class_step, lambda line: None, scheduler=scheduler)
    np.testing.assert_allclose(seen, [0.05, 0.0625, 0.075, 0.0875])
    assert scheduler.last_epoch == 4


def test_dampened_sgd_matches_the_pytorch_rule():
    w, g1, g2 = paddle.to_tensor([1.0, -2.0]), paddle.to_tensor([0.5, 0.5]), paddle.to_tensor([1.0, 0.0])
    w1, buf = sgd_dampened_step(w, g1, None, lr=0.1, weight_decay=0.01)
    np.testing.assert_allclose(buf.numpy(), [0.51, 0.48], rtol=1e-6)       # first buffer: the raw gradient
    w2, buf = sgd_dampened_step(w1, g2, buf, lr=0.1, weight_decay=0.01)
    expected_buf = 0.9 * np.array([0.51, 0.48]) + 0.1 * (np.array([1.0, 0.0]) + 0.01 * w1.numpy())
    np.testing.assert_allclose(buf.numpy(), expected_buf, rtol=1e-6)
    np.testing.assert_allclose(w2.numpy(), w1.numpy() - 0.1 * expected_buf, rtol=1e-6)

"""The float64 judge of end-to-end checks (tests/parity/judge.py), on synthetic entries: a flip
at a float32 tie passes, a flip that is no tie fails, a miss where the reference is farther from
float64 is an xfail with both distances, a miss where ours is farther fails."""
from pathlib import Path

import numpy as np
import paddle
import pytest

from tests.parity.checkers import Entry
from tests.parity.judge import BranchPin, first_flips, judge

REFERENCE = np.array([1.0, 2.0, 3.0], dtype=np.float32)
TOLERANCE = {"rtol": 0.0, "atol": 1e-3}


def entry() -> Entry:
    made = Entry(Path("."), {"name": "synthetic", "file": "synthetic.npz", "kind": "test/judge",
                             "tolerance": {"grad": TOLERANCE}})
    made._arrays = {"grad": REFERENCE}
    return made


def record(pin: BranchPin, x: float) -> None:
    """One ReLU call on a single input x."""
    tensor = paddle.to_tensor([x], dtype="float64")
    pin.decisions.append(tensor > 0)
    pin.inputs.append(tensor.numpy())
    pin.kinds.append("relu")


def fake_run(values: dict, inputs: dict):
    """A run whose recorded `grad` and ReLU input depend on (dtype, pinned)."""
    def run(recording, dtype, pin, replay):
        kind = "pinned" if replay else dtype
        if pin is not None and not replay:
            record(pin, inputs[kind])
        elif pin is not None:
            pin.replayed_inputs.append(np.asarray([inputs[kind]]))
        recording.check("grad", np.asarray(values[kind], dtype=np.float32))
    return run


def test_a_flip_at_a_float32_tie_passes():
    e = entry()
    # float32 input -2e-7 vs float64 +1e-7: the rounding (3e-7) exceeds the margin (1e-7): a tie
    judge(e, fake_run({"float32": [1.0, 2.5, 3.0], "float64": [1.0, 2.0, 3.0], "pinned": [1.0, 2.0, 3.0]},
                      {"float32": -2e-7, "float64": 1e-7, "pinned": -2e-7}))
    assert "grad" in e.checked and not e.noise_issues


def test_a_flip_that_is_no_tie_fails():
    e = entry()
    with pytest.raises(AssertionError):   # rounding 1e-7 < margin 0.5: no tie, a real difference
        judge(e, fake_run({"float32": [1.0, 2.5, 3.0], "float64": [1.0, 2.0, 3.0], "pinned": [1.0, 2.0, 3.0]},
                          {"float32": -0.5, "float64": 0.5 + 1e-7, "pinned": 0.5}))


def test_the_reference_farther_from_float64_is_an_xfail_with_both_distances():
    e = entry()
    judge(e, fake_run({"float32": [1.0, 2.1, 3.0], "float64": [1.0, 2.1005, 3.0], "pinned": [1.0, 2.1, 3.0]},
                      {"float32": 1.0, "float64": 1.0, "pinned": 1.0}))
    assert "grad" in e.checked and len(e.noise_issues) == 1
    assert "reference 0.1" in e.noise_issues[0] and "ours 0.0005" in e.noise_issues[0]


def test_ours_farther_from_float64_fails():
    e = entry()
    with pytest.raises(AssertionError):
        judge(e, fake_run({"float32": [1.0, 2.1, 3.0], "float64": [1.0, 2.0002, 3.0], "pinned": [1.0, 2.1, 3.0]},
                          {"float32": 1.0, "float64": 1.0, "pinned": 1.0}))


def test_matching_arrays_are_checked_once_without_a_second_run():
    e, calls = entry(), []

    def run(recording, dtype, pin, replay):
        calls.append(dtype)
        recording.check("grad", REFERENCE + 1e-4)
    judge(e, run)
    assert calls == ["float32"] and "grad" in e.checked


def test_first_flips_of_pooling_compare_the_two_candidates():
    ours, exact = BranchPin(), BranchPin()
    for pin, values in ((ours, [0.5, 0.5000001]), (exact, [0.50000006, 0.5])):
        x = paddle.to_tensor(np.asarray(values, dtype=np.float64).reshape(1, 1, 1, 2))
        pin.decisions.append(paddle.nn.functional.max_pool2d(x, (1, 2), (1, 2), return_mask=True)[1])
        pin.inputs.append(x.numpy())
        pin.kinds.append("pool")
    exact.replayed_inputs.append(ours.inputs[0])
    call, flips, ties = first_flips(ours, exact)
    assert (call, flips, ties) == (0, 1, True)


def test_functional_relu_pin_records_replays_and_restores():
    """The pin for networks calling F.relu (MTL's ResNet-25): recording keeps the decisions and
    inputs, replaying applies the recorded decisions (not the new input's signs), and detaching
    puts the real function back."""
    from types import SimpleNamespace

    from tests.parity.judge import FunctionalReluPin
    real = paddle.nn.functional.relu
    module = SimpleNamespace(F=SimpleNamespace(relu=real))
    pin = FunctionalReluPin(module)
    pin.attach(paddle.nn.Layer())
    out = module.F.relu(paddle.to_tensor([-1.0, 2.0]))
    pin.detach()
    assert module.F.relu is real and out.numpy().tolist() == [0.0, 2.0]
    assert pin.kinds == ["relu"] and pin.decisions[0].numpy().tolist() == [False, True]
    pin.attach(paddle.nn.Layer(), replay=True)
    replayed = module.F.relu(paddle.to_tensor([3.0, 4.0]))  # both positive: the pin still drops the first
    pin.detach()
    assert replayed.numpy().tolist() == [0.0, 4.0] and pin.replayed_inputs[0].tolist() == [3.0, 4.0]

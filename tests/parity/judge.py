"""Float64 as the judge of an end-to-end training-step comparison that misses the reference.

A training step's arrays are compared with the reference at the manifest's tolerance. When one
misses, the run is repeated twice more — in float64, and in float32 with every ReLU and
max-pool decision pinned to the float64 run's — and each missing array is judged:

1. *A branch decided below float32 resolution.* A ReLU input (or two pooled values) within
   float32 rounding of a tie can fall on either side in float32; the gradient is discontinuous
   there, so a flip moves whole gradient rows. If, with float64's branches, our float32 run
   matches the reference at the manifest's tolerance everywhere, and every flip of our float32
   run (at its first flipping layer) lies within the float32 rounding of that very input, the
   array passes: both implementations compute the same thing on the same branches. The check
   still fails on a wrong computation (the pinned run would miss) or on a flip that is not a
   tie (its margin would exceed the rounding).
2. *The reference is the farther side.* Otherwise, at the elements that miss, float64 decides:
   if the reference is farther from the float64 result than ours, the entry is an xfail whose
   message prints both distances (`Entry.noise_issues`); if ours is farther, the test fails.
Tolerances are the manifest's throughout.
"""
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import paddle

from tests.parity.checkers import Entry


class RecordingEntry:
    """An Entry whose `check` records (actual, expected, tolerance key) instead of asserting;
    everything else is the wrapped entry's."""

    def __init__(self, entry: Entry):
        self._entry = entry
        self.records: Dict[str, Tuple[np.ndarray, Optional[np.ndarray], Optional[str]]] = {}

    def check(self, key: str, actual, expected=None, tol_key: Optional[str] = None) -> None:
        self.records[key] = (np.asarray(actual), None if expected is None else np.asarray(expected), tol_key)

    def __getattr__(self, name: str):
        return getattr(self._entry, name)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._entry[key]

    def __contains__(self, key: str) -> bool:
        return key in self._entry


class BranchPin:
    """Forward hooks on a network's ReLU and max-pool layers. Recording stores each call's
    decision (ReLU mask, pooling argmax) and input; replaying makes a run pass on exactly the
    recorded decisions (input * mask, input gathered at the argmax), in call order, and keeps
    that run's inputs in `replayed_inputs`."""

    def __init__(self):
        self.decisions: List[paddle.Tensor] = []
        self.inputs: List[np.ndarray] = []
        self.replayed_inputs: List[np.ndarray] = []
        self.kinds: List[str] = []
        self._handles: list = []
        self._next = 0

    def _hook(self, replay: bool) -> Callable:
        def hook(layer, inputs, output):
            x = inputs[0]
            relu = isinstance(layer, paddle.nn.ReLU)
            if not replay:
                decision = (x > 0) if relu else paddle.nn.functional.max_pool2d(
                    x, layer.ksize, layer.stride, layer.padding, return_mask=True)[1]
                self.decisions.append(decision)
                self.inputs.append(x.numpy())
                self.kinds.append("relu" if relu else "pool")
                return None
            decision = self.decisions[self._next]
            self._next += 1
            self.replayed_inputs.append(x.numpy())
            if relu:
                return x * decision.astype(x.dtype)
            n, c = x.shape[0], x.shape[1]
            picked = paddle.take_along_axis(x.reshape([n, c, -1]), decision.reshape([n, c, -1]).astype("int64"), 2)
            return picked.reshape(decision.shape)
        return hook

    def attach(self, network: paddle.nn.Layer, replay: bool = False) -> "BranchPin":
        self._next = 0
        layers = [m for m in network.sublayers() if isinstance(m, (paddle.nn.ReLU, paddle.nn.MaxPool2D))]
        self._handles = [m.register_forward_post_hook(self._hook(replay)) for m in layers]
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()


class FunctionalReluPin(BranchPin):
    """A BranchPin for networks that call `module.F.relu` (MTL's ResNet-25) instead of ReLU
    layers: attaching patches that function for the run, with the same record / replay rules."""

    def __init__(self, module):
        super().__init__()
        self.module = module
        self._real = None

    def attach(self, network: paddle.nn.Layer, replay: bool = False) -> "FunctionalReluPin":
        self._next = 0
        real = self._real = self.module.F.relu

        def relu(x, *args, **kwargs):
            if not replay:
                self.decisions.append(x > 0)
                self.inputs.append(x.numpy())
                self.kinds.append("relu")
                return real(x, *args, **kwargs)
            decision = self.decisions[self._next]
            self._next += 1
            self.replayed_inputs.append(x.numpy())
            return x * decision.astype(x.dtype)

        self.module.F.relu = relu
        return self

    def detach(self) -> None:
        if self._real is not None:
            self.module.F.relu, self._real = self._real, None


def first_flips(ours: BranchPin, exact: BranchPin) -> Tuple[int, int, bool]:
    """(call index, number of flipped decisions, all within float32 rounding) at the first call
    where our float32 run decided differently from float64. `exact` has recorded the float64
    run and replayed its decisions in a float32 run: that run's input at the call is float32
    arithmetic on float64's branches (the unpinned run's input there too, since both took the
    same branches before), so its distance from the float64 input is float32 rounding. Within
    rounding: a ReLU input whose rounding is at least its float64 distance from 0; two pooled
    values whose rounding adds up to at least their float64 difference."""
    for call, (kind, d32, d64) in enumerate(zip(ours.kinds, ours.decisions, exact.decisions)):
        flipped = (d32.numpy() != d64.numpy())
        if not flipped.any():
            continue
        x32, x64 = exact.replayed_inputs[call].astype(np.float64), exact.inputs[call]
        if kind == "relu":
            ties = np.abs(x32 - x64)[flipped] >= np.abs(x64)[flipped]
        else:
            n, c = x64.shape[:2]
            flat32, flat64 = x32.reshape(n, c, -1), x64.reshape(n, c, -1)
            i32 = d32.numpy().reshape(n, c, -1)[flipped.reshape(n, c, -1)]
            i64 = d64.numpy().reshape(n, c, -1)[flipped.reshape(n, c, -1)]
            where = np.argwhere(flipped.reshape(n, c, -1))
            a64, b64 = flat64[where[:, 0], where[:, 1], i32], flat64[where[:, 0], where[:, 1], i64]
            a32, b32 = flat32[where[:, 0], where[:, 1], i32], flat32[where[:, 0], where[:, 1], i64]
            ties = np.abs(a32 - a64) + np.abs(b32 - b64) >= np.abs(a64 - b64)
        return call, int(flipped.sum()), bool(np.all(ties))
    return -1, 0, True


def misses(entry: Entry, key: str, actual: np.ndarray, expected: Optional[np.ndarray],
           tol_key: Optional[str]) -> np.ndarray:
    """Boolean mask of the elements of `actual` outside the manifest's tolerance."""
    ref = (entry[key] if expected is None else expected).astype(np.float64)
    rtol, atol = entry.tolerance(tol_key or key)
    return np.abs(actual.astype(np.float64) - ref) > atol + rtol * np.abs(ref)


def judge(entry: Entry, run: Callable[[RecordingEntry, str, Optional[BranchPin], bool], None],
          make_pin: Callable[[], BranchPin] = BranchPin) -> None:
    """Run `run(recording entry, dtype, pin, replay)` — one end-to-end check that calls `check`
    on the entry it is given — in float32; compare as usual; judge misses by float64 (module
    docstring). `make_pin` makes the branch recorder (ReLU / max-pool layers by default)."""
    ours, pin32 = RecordingEntry(entry), make_pin()
    run(ours, "float32", pin32, False)
    missed = {k: r for k, r in ours.records.items() if misses(entry, k, *r).any()}
    for key, (actual, expected, tol_key) in ours.records.items():
        if key not in missed:
            entry.check(key, actual, expected, tol_key)
    if not missed:
        return
    exact, pin64 = RecordingEntry(entry), make_pin()
    run(exact, "float64", pin64, False)
    pinned = RecordingEntry(entry)
    run(pinned, "float32", pin64, True)
    call, flips, ties = first_flips(pin32, pin64)
    pinned_matches = all(not misses(entry, k, *pinned.records[k]).any() for k in missed)
    if flips and ties and pinned_matches:
        for key in missed:
            entry.checked.add(key)
        return
    for key, (actual, expected, tol_key) in missed.items():
        bad = misses(entry, key, actual, expected, tol_key)
        truth = exact.records[key][0].astype(np.float64)
        ref = (entry[key] if expected is None else expected).astype(np.float64)
        ours_off = float(np.abs(actual.astype(np.float64) - truth)[bad].max())
        ref_off = float(np.abs(ref - truth)[bad].max())
        if ref_off <= ours_off:
            entry.check(key, actual, expected, tol_key)  # ours is the farther side: fail, complete message
        entry.noise_issues.append(
            f"{key}: {int(bad.sum())}/{bad.size} element(s) miss the reference; float64 judges them: "
            f"reference {ref_off:.3g} from float64, ours {ours_off:.3g}"
            + (f" (our float32 run flipped {flips} branch(es) at call {call})" if flips else ""))
        entry.checked.add(key)

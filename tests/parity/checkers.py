"""Parity core: the official implementations' numbers (shared/fixtures) against this port.

Contract (shared/fixtures/README.md): fixtures are read only through `<method>/manifest.json`;
every entry is dispatched on its `kind` to the checker registered in `CHECKERS`; shapes and
settings come from the entry's `config` and arrays (no fixture file is named here); tolerances
come from the entry and are never loosened. A kind without a checker is a failure.

Checkers live in one module per fixture folder (`tests/parity/<method>_checks.py`). To cover
another folder: write that module, register a checker per kind with
`@register("<method>/<kind>")`, and add the folder's name to `PARITY_METHODS` in
tests/parity/test_parity.py (which imports `<method>_checks`).

Manifests come in three shapes: a list of entries with `name`/`file`/`outputs` (FRN), a list
of entries with `file`/`arrays` (MTL), or a dict {file name: entry} (DeepEMD); `arrays` are all
to be accounted for. `manifest_specs` turns all into the list form (name = file when absent).

`Entry` records every array a checker compared (or consumed as an input of a computation), and
the generic test fails when an output of the entry was left unchecked, so a checker cannot
silently skip part of a fixture.
"""
import json
import math
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

CHECKERS: Dict[str, Callable[["Entry"], None]] = {}


def register(*kinds: str):
    """Decorator: the function checks the manifest entries of these kinds."""
    def decorate(fn):
        for kind in kinds:
            if kind in CHECKERS:
                raise ValueError(f"two checkers for kind {kind!r}")
            CHECKERS[kind] = fn
        return fn
    return decorate


def manifest_specs(folder: Path) -> Optional[List[dict]]:
    """The entries of `<folder>/manifest.json`, or None when the folder has no manifest."""
    manifest = Path(folder) / "manifest.json"
    if not manifest.is_file():
        return None
    with open(manifest) as f:
        fixtures = json.load(f)["fixtures"]
    if isinstance(fixtures, dict):  # {file: entry}: every array is an output or a consumed input
        fixtures = [{"name": name, "file": name, **spec} for name, spec in fixtures.items()]
    return [{"name": spec["file"], **spec} if "name" not in spec else spec for spec in fixtures]


class Entry:
    """One manifest entry: lazy access to its arrays and tolerance-aware comparisons."""

    def __init__(self, folder: Path, spec: dict):
        self.folder, self.spec = Path(folder), spec
        self.name, self.file, self.kind = spec["name"], spec["file"], spec["kind"]
        self.config = spec.get("config")
        self._arrays: Optional[Dict[str, np.ndarray]] = None
        self.checked: set = set()
        self.ignored: Dict[str, str] = {}
        #: mismatches shown to come from the reference's own float32 noise (see the checkers)
        self.noise_issues: List[str] = []

    @property
    def path(self) -> Path:
        return self.folder / self.file

    def json(self):
        with open(self.path) as f:
            return json.load(f)

    @property
    def arrays(self) -> Dict[str, np.ndarray]:
        if self._arrays is None:
            with np.load(self.path, allow_pickle=False) as z:
                self._arrays = {k: z[k] for k in z.files}
        return self._arrays

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    def use(self, key: str) -> np.ndarray:
        """An output array consumed as the input of a computation (e.g. eval_ci's acc_list)."""
        self.checked.add(key)
        return self.arrays[key]

    def with_prefix(self, prefix: str) -> Dict[str, np.ndarray]:
        """{key without prefix: array} for the arrays named `<prefix><key>`."""
        return {k[len(prefix):]: v for k, v in self.arrays.items() if k.startswith(prefix)}

    def outputs(self) -> List[str]:
        """Arrays a checker must compare or consume: the entry's `outputs`, else all its `arrays`."""
        return list(self.spec.get("outputs") or self.spec.get("arrays") or {})

    # ----- comparisons -----------------------------------------------------------------
    def tolerance(self, key: str) -> Tuple[float, float]:
        """(rtol, atol) of `key`: the per-array entry `tolerance[key]`, else a top-level
        {rtol, atol} (either may be absent) that applies to every array of the entry (bookkeeping fixtures)."""
        tol = self.spec.get("tolerance") or {}
        if isinstance(tol.get(key), dict):
            return float(tol[key].get("rtol", 0.0)), float(tol[key].get("atol", 0.0))
        if any(k in tol and not isinstance(tol[k], dict) for k in ("rtol", "atol")):
            return float(tol.get("rtol", 0.0)), float(tol.get("atol", 0.0))
        raise AssertionError(f"{self.file}: the manifest gives no tolerance for {key!r}")

    def check(self, key: str, actual, expected=None, tol_key: Optional[str] = None) -> None:
        """Compare `actual` with the fixture array `key` (or with `expected`, derived from the
        fixture, e.g. the Paddle-convention BN variance) at the tolerance of `tol_key or key`."""
        ref = np.asarray(self.arrays[key] if expected is None else expected)
        got = np.asarray(actual)
        assert got.shape == ref.shape, f"{self.file}: {key}: shape {got.shape} != reference {ref.shape}"
        if ref.dtype.kind in "iub":
            np.testing.assert_array_equal(got, ref, err_msg=f"{self.file}: {key} (exact)")
        else:
            rtol, atol = self.tolerance(tol_key or key)
            np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=atol,
                                       err_msg=f"{self.file}: {key} (rtol={rtol}, atol={atol})")
        self.checked.add(key)

    def exact(self, key: str, actual) -> None:
        ref = self.arrays[key]
        got = np.asarray(actual)
        assert got.shape == ref.shape, f"{self.file}: {key}: shape {got.shape} != reference {ref.shape}"
        np.testing.assert_array_equal(got, ref, err_msg=f"{self.file}: {key} (exact)")
        self.checked.add(key)

    def ignore(self, key: str, why: str) -> None:
        self.ignored[key] = why

    def assert_all_outputs_checked(self) -> None:
        left = [k for k in self.outputs() if k not in self.checked and k not in self.ignored]
        assert not left, f"{self.file}: {len(left)} outputs were not compared, e.g. {left[:3]}"


def check_or_reference_farther(entry: Entry, key: str, actual: np.ndarray, exact: Callable[[], np.ndarray],
                               tol_key: Optional[str] = None, note: Union[str, Callable[[], str]] = "",
                               judged: Optional[Callable[[], np.ndarray]] = None) -> None:
    """`entry.check(key, actual)` at the manifest's tolerance, with one diagnosed exception judged
    by float64: `exact()` gives the float64 value of the same computation (the same float32
    weights and inputs, our port in float64). If the reference's own float32 array misses it
    beyond the tolerance and ours is no further from it (max |.| over the array), the mismatch
    is the reference's float32 imprecision: recorded in `Entry.noise_issues` (an xfail) with
    both distances and `note` (a string, or a function called only then). Otherwise the
    complete assertion is raised. `judged` gives the float32 result float64 judges instead of
    `actual` (our computation with its machine-dependent rounding taken out, e.g. convolutions
    rounded once from float64); both of ours are printed."""
    try:
        entry.check(key, actual, tol_key=tol_key)
        return
    except AssertionError:
        pass
    truth = np.asarray(exact(), dtype=np.float64)
    rtol, atol = entry.tolerance(tol_key or key)
    reference = entry[key].astype(np.float64)
    reference_off = np.abs(reference - truth) > atol + rtol * np.abs(truth)
    reference_error = float(np.abs(reference - truth).max())
    machine_error = float(np.abs(np.asarray(actual, dtype=np.float64) - truth).max())
    our_error = machine_error if judged is None else float(np.abs(np.asarray(judged(), np.float64) - truth).max())
    if not (reference_off.any() and our_error <= reference_error):
        entry.check(key, actual, tol_key=tol_key)  # not the reference's imprecision: the full assertion
    note = note() if callable(note) else note
    if judged is not None:
        note = (note + "; " if note else "") + f"ours with this machine's rounding: {machine_error:.3g}"
    entry.noise_issues.append(
        f"{key}: the reference misses the float64 value of its own computation beyond the tolerance in "
        f"{int(reference_off.sum())}/{reference_off.size} elements; max |reference - float64| = {reference_error:.3g} "
        f">= max |ours - float64| = {our_error:.3g}" + (f" ({note})" if note else ""))
    entry.checked.add(key)


def consume_state(entry: Entry, prefix: str = "param/") -> Dict[str, np.ndarray]:
    """The reference state dict stored under `prefix` (every array marked as consumed)."""
    state = entry.with_prefix(prefix)
    for key in state:
        entry.use(prefix + key)
    return state


def formula_weights(keys: Sequence[str], shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, np.ndarray]:
    """The manifests' deterministic weights (MTL, SimTrans, Negative-Margin fixtures), rebuilt
    from each reference key name and its tensor's shape (float64, then float32;
    num_batches_tracked: int64 zeros), in the order of `keys`."""
    out = {}
    for key in keys:
        shape = shapes[key]
        leaf = key.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[key] = np.zeros(shape, dtype=np.int64)
            continue
        n = int(np.prod(shape))
        phase = 2 * math.pi * (zlib.crc32(key.encode("utf-8")) % 10007) / 10007
        u = np.sin(0.7071 * np.arange(n, dtype=np.float64) + phase).reshape(shape)
        if leaf == "running_var":
            w = 1 + 0.25 * (u + 1)
        elif leaf in ("running_mean", "mtl_bias"):
            w = 0.05 * u
        elif leaf == "mtl_weight":
            w = 1 + 0.1 * u
        elif len(shape) == 1 and leaf == "weight":
            w = 1 + 0.1 * u
        elif len(shape) == 1 and leaf == "bias":
            w = 0.05 * u
        else:
            w = u * math.sqrt(2.0 / int(np.prod(shape[1:])))
        out[key] = w.astype(np.float32)
    return out


def _t(array, grad: bool = False):
    """A Paddle tensor of a fixture array (a leaf that records gradients with `grad`)."""
    import paddle
    return paddle.to_tensor(np.asarray(array), stop_gradient=not grad)


def _np(tensor) -> np.ndarray:
    return np.asarray(tensor.numpy())

"""The exact batched EMD solver (methods/emd_exact.py): same optimum as cv2.EMD, valid duals,
exact gradients, degenerate problems, the numpy fallback and a missing compiler."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from methods.emd_exact import EMDSolution, backend, solve_emd, solve_one_numpy

cv2 = pytest.importorskip("cv2")
ROOT = Path(__file__).resolve().parents[2]


def deepemd_like(rng: np.random.Generator, batch: int, n: int, m: int, channels: int = 32):
    """Costs 1 - cos of channel-centred random nodes and positive weights normalised to the node
    count in float32, as DeepEMD hands them to the solver (values near 1, totals equal up to
    float32 rounding)."""
    def unit(x):
        x = x - x.mean(-1, keepdims=True)
        return x / np.linalg.norm(x, axis=-1, keepdims=True)
    cost = 1 - np.einsum("bnc,bmc->bnm", unit(rng.standard_normal((batch, n, channels))),
                         unit(rng.standard_normal((batch, m, channels))))
    w1 = np.maximum(rng.standard_normal((batch, n)) + 0.3, 0) + 1e-5
    w2 = np.maximum(rng.standard_normal((batch, m)) + 0.3, 0) + 1e-5
    return (cost.astype(np.float32), (w1 * n / w1.sum(1, keepdims=True)).astype(np.float32),
            (w2 * m / w2.sum(1, keepdims=True)).astype(np.float32))


def cv2_objective(cost, w1, w2) -> np.ndarray:
    """Σ flow·cost of cv2.EMD on every problem (float32 inputs, as the reference calls it)."""
    out = np.empty(len(cost))
    single = [a.astype(np.float32) for a in (cost, w1, w2)]
    for k in range(len(cost)):
        flow = cv2.EMD(single[1][k][:, None], single[2][k][:, None], cv2.DIST_USER, single[0][k])[2]
        out[k] = (flow.astype(np.float64) * cost[k]).sum()
    return out


def test_same_objective_as_opencv_on_10000_random_problems():
    """10,000 problems of DeepEMD's sizes (Sampling 9, Grid 13, FCN 25, pyramid 38, 50) and some
    rectangular ones: the exact objective equals cv2's within 1e-5 relative, and is never
    above it by more than that (cv2 works in float32, so it may only be slightly worse)."""
    rng = np.random.default_rng(0)
    shapes = [(9, 9, 3000), (13, 13, 3000), (25, 25, 2500), (38, 38, 600), (50, 50, 400), (7, 12, 250),
              (20, 6, 250)]
    assert sum(s[2] for s in shapes) == 10000
    for n, m, batch in shapes:
        cost, w1, w2 = deepemd_like(rng, batch, n, m)
        exact = solve_emd(cost, w1, w2).cost_value
        reference = cv2_objective(cost, w1, w2)
        np.testing.assert_allclose(exact, reference, rtol=1e-5, atol=0, err_msg=f"{n}x{m}")


def exactly_balanced(w1: np.ndarray, w2: np.ndarray, bits: int = 40):
    """Float64 weights on a 2^-bits grid with exactly equal totals (no quantisation gap, so no
    dummy node): w2's last entry absorbs the difference."""
    grid = 2.0 ** bits
    w1 = np.round(w1.astype(np.float64) * grid) / grid
    w2 = np.round(w2.astype(np.float64) * grid) / grid
    w2[:, -1] += w1.sum(1) - w2.sum(1)
    assert (w2 > 0).all() and (w1.sum(1) == w2.sum(1)).all()
    return w1, w2


def check_optimality(cost, w1, w2, sol, tol=1e-9) -> None:
    """Primal feasibility, dual feasibility, complementary slackness and strong duality."""
    flow, u, v = sol.flow, sol.u, sol.v
    assert (flow >= 0).all()
    np.testing.assert_allclose(flow.sum(2), w1, atol=1e-9)
    np.testing.assert_allclose(flow.sum(1), w2, atol=1e-9)
    reduced = cost - u[:, :, None] - v[:, None, :]
    assert reduced.min() > -tol, reduced.min()
    assert np.abs(reduced[flow > 0]).max() < tol
    np.testing.assert_allclose((w1 * u).sum(1) + (w2 * v).sum(1), sol.cost_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((flow * cost).sum((1, 2)), sol.cost_value, rtol=1e-12, atol=1e-12)


def test_flows_and_duals_are_optimal_and_sides_carry_equal_dual_mass():
    rng = np.random.default_rng(1)
    cost, w1, w2 = deepemd_like(rng, 300, 25, 25)
    w1, w2 = exactly_balanced(w1, w2)
    sol = solve_emd(cost, w1, w2)
    check_optimality(cost, w1, w2, sol)
    np.testing.assert_allclose((w1 * sol.u).sum(1), (w2 * sol.v).sum(1), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n, m", [(31, 31), (31, 32), (32, 32), (32, 33), (63, 1), (1, 64), (40, 90)])
def test_trees_at_the_subtree_bitset_word_boundaries(n, m):
    """The tree keeps each node's subtree as a bitset of 64-bit words: trees of 62-66 nodes (plus
    a dummy node when the totals differ) straddle one word, 40 + 90 nodes need two or three.
    Optimal (certificate) with equal totals; with totals n and m (a dummy node takes the
    difference) never above cv2's objective by more than 1e-5 relative (cv2 works in float32
    and, moving min(n, m) of max(n, m), may land slightly above the optimum: 1.3e-5 at 1 x 64)."""
    rng = np.random.default_rng(n * 100 + m)
    cost, w1, w2 = deepemd_like(rng, 40, n, m)
    balanced = exactly_balanced(w1, w2 * (n / m))
    check_optimality(cost, *balanced, solve_emd(cost, *balanced))
    exact, reference = solve_emd(cost, w1, w2).cost_value, cv2_objective(cost, w1, w2)
    assert (exact <= reference * (1 + 1e-5)).all(), np.max(exact / reference - 1)


@pytest.mark.parametrize("case", ["equal_weights", "integer_costs", "constant_cost", "permutation",
                                  "zero_weights", "one_node"])
def test_degenerate_problems(case):
    """Ties and degenerate bases (where a simplex without an anti-cycling rule can loop)."""
    rng = np.random.default_rng(2)
    n = 12
    cost = rng.random((50, n, n))
    w1, w2 = np.ones((50, n)), np.ones((50, n))
    if case == "integer_costs":
        cost = rng.integers(0, 3, (50, n, n)).astype(float)
    elif case == "constant_cost":
        cost = np.full((50, n, n), 0.7)
    elif case == "permutation":
        cost = np.ones((50, n, n))
        for k in range(50):
            cost[k, np.arange(n), rng.permutation(n)] = 0.0
    elif case == "zero_weights":
        w1[:, :3] = 0.0
        w2[:, -4:] = 0.0
        w1 *= w2.sum(1, keepdims=True) / w1.sum(1, keepdims=True)
    elif case == "one_node":
        cost, w1, w2 = cost[:, :1, :], np.full((50, 1), float(n)), w2
    sol = solve_emd(cost, w1, w2)
    check_optimality(cost, w1, w2, sol)
    if case == "permutation":
        assert np.allclose(sol.cost_value, 0.0)


def test_unequal_totals_transport_the_smaller_total_like_opencv():
    rng = np.random.default_rng(3)
    cost, w1, w2 = (a.astype(np.float64) for a in deepemd_like(rng, 200, 10, 10))
    w1 = w1 * 1.1                                                     # rows carry 10% more
    sol = solve_emd(cost, w1, w2)
    np.testing.assert_allclose(sol.flow.sum((1, 2)), w2.astype(np.float64).sum(1), rtol=1e-12)
    assert (sol.flow.sum(2) <= w1 + 1e-9).all()
    np.testing.assert_allclose(sol.cost_value, cv2_objective(cost, w1, w2), rtol=1e-5)
    assert (sol.u <= 1e-12).all()  # the larger side's duals: a row that keeps mass has dual 0


def test_duals_are_the_gradient_of_the_objective_wrt_the_weights():
    """Moving mass δ from row a' to row a changes the optimum by δ(u_a - u_a') where the optimum
    and the duals are unique (random costs, continuous weights); checked by central differences."""
    rng = np.random.default_rng(4)
    cost, _, _ = deepemd_like(rng, 40, 9, 9)
    # continuous weights: no ties between partial sums, hence no degenerate basis and unique duals
    w1, w2 = rng.random((2, 40, 9)) + 0.5
    w1, w2 = exactly_balanced(w1 * 9 / w1.sum(1, keepdims=True), w2 * 9 / w2.sum(1, keepdims=True))
    sol = solve_emd(cost, w1, w2)
    delta = 2.0 ** -20                                                 # on the grid: totals stay equal
    for a, a2 in ((0, 1), (3, 7)):
        shift = np.zeros_like(w1)
        shift[:, a], shift[:, a2] = delta, -delta
        up = solve_emd(cost, w1 + shift, w2).cost_value
        down = solve_emd(cost, w1 - shift, w2).cost_value
        np.testing.assert_allclose((up - down) / (2 * delta), sol.u[:, a] - sol.u[:, a2], rtol=1e-6, atol=1e-9)


def test_numpy_fallback_gives_the_same_solution_as_c():
    if backend() != "c":
        pytest.skip("the C solver is not available here")
    rng = np.random.default_rng(5)
    cost, w1, w2 = deepemd_like(rng, 6, 9, 9)
    sol = solve_emd(cost, w1, w2)
    for k in range(len(cost)):
        flow, u, v, value = solve_one_numpy(cost[k], w1[k], w2[k])
        np.testing.assert_allclose(value, sol.cost_value[k], rtol=1e-12)
        np.testing.assert_allclose(flow, sol.flow[k], atol=1e-12)
        np.testing.assert_allclose(u, sol.u[k], atol=1e-9)
        np.testing.assert_allclose(v, sol.v[k], atol=1e-9)


@pytest.fixture(params=["c", "python"])
def each_backend(request, monkeypatch) -> str:
    """The test once with the C solver and once with the numpy fallback (FSL_EMD_BACKEND)."""
    if request.param == "c" and backend() != "c":
        pytest.skip("the C solver is not available here")
    if request.param == "python":
        monkeypatch.setenv("FSL_EMD_BACKEND", "python")
    return request.param


def test_payoff_is_the_total_under_the_flow_with_or_without_dense_flows(each_backend):
    """payoff_value = sum(flow * payoff) summed by the solver over the optimal basis in float64;
    flows=False returns the same duals and totals without a dense flow; cost=None solves the
    costs 1 - payoff. Against the float32
    flows: each cell's flow is rounded by at most 2^-24 relative, so the totals may differ by
    2^-24 * sum|flow * payoff| (bound 2^-23 for the float64 sums' own rounding)."""
    rng = np.random.default_rng(6)
    cost, w1, w2 = deepemd_like(rng, 200 if each_backend == "c" else 6, 9, 9)
    similarity = 1 - cost                                  # signed: totals may be near zero
    full = solve_emd(cost, w1, w2, payoff=similarity)
    lean = solve_emd(cost, w1, w2, flows=False, payoff=similarity)
    assert lean.flow is None and solve_emd(cost, w1, w2).payoff_value is None
    for field in ("u", "v", "cost_value", "payoff_value"):
        np.testing.assert_array_equal(getattr(lean, field), getattr(full, field))
    flow, payoff = full.flow.astype(np.float64), similarity.astype(np.float64)
    dense = np.einsum("bij,bij->b", flow, payoff)
    bound = 2.0 ** -23 * np.einsum("bij,bij->b", flow, np.abs(payoff))
    assert (np.abs(full.payoff_value - dense) <= bound).all(), np.max(np.abs(full.payoff_value - dense) / bound)
    # cost=None: the costs are 1 - payoff subtracted in float32, the same problem bit for bit
    implicit = solve_emd(None, w1, w2, flows=False, payoff=similarity)
    explicit = solve_emd(np.subtract(1, similarity), w1, w2, payoff=similarity)
    for field in ("u", "v", "cost_value", "payoff_value"):
        np.testing.assert_array_equal(getattr(implicit, field), getattr(explicit, field))
    with pytest.raises(ValueError, match="payoff shape"):
        solve_emd(cost, w1, w2, payoff=similarity[:, :-1])
    with pytest.raises(ValueError, match="needs a cost"):
        solve_emd(None, w1, w2)


def test_strided_views_are_solved_in_place_like_their_copies(each_backend):
    """A [E, Q, W, n, m] view with its query and class axes swapped (DeepEMD's similarity), read
    in place, gives the solution of its contiguous [B, n, m] copy bit for bit, with explicit
    costs and with costs 1 - payoff; views the solver cannot read (columns not contiguous) are
    copied first."""
    rng = np.random.default_rng(7)
    e, q, w, n = 2, 3, 4, 9
    base = rng.random((e, q, n, w, n)).astype(np.float32)           # [E, Q, n, W, m], contiguous
    view = base.swapaxes(2, 3)                                      # [E, Q, W, n, m], strided
    _, w1, w2 = deepemd_like(rng, e * q * w, n, n)
    copy = np.ascontiguousarray(view).reshape(-1, n, n)
    for kwargs, reference in (({"cost": view}, {"cost": copy}),
                              ({"cost": None, "payoff": view}, {"cost": None, "payoff": copy}),
                              ({"cost": view, "payoff": 1 - view}, {"cost": copy, "payoff": 1 - copy}),
                              ({"cost": view.swapaxes(-1, -2)}, {"cost": copy.swapaxes(-1, -2)})):
        got = solve_emd(weight1=w1, weight2=w2, **kwargs)
        want = solve_emd(weight1=w1, weight2=w2, **reference)
        for field in EMDSolution._fields:
            if getattr(want, field) is not None:
                np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


def test_float32_problems_are_solved_in_float64_and_return_float32_flows():
    """DeepEMD's float32 problems: no widened copy of the batch, the same optimum, flows rounded."""
    rng = np.random.default_rng(7)
    cost, w1, w2 = deepemd_like(rng, 300, 13, 13)
    single = solve_emd(cost, w1, w2)
    double = solve_emd(cost.astype(np.float64), w1.astype(np.float64), w2.astype(np.float64))
    assert single.flow.dtype == np.float32 and double.flow.dtype == np.float64
    np.testing.assert_array_equal(single.flow, double.flow.astype(np.float32))
    np.testing.assert_array_equal(single.u, double.u)
    np.testing.assert_array_equal(single.cost_value, double.cost_value)


def test_single_and_multi_threaded_runs_agree():
    rng = np.random.default_rng(6)
    cost, w1, w2 = deepemd_like(rng, 400, 13, 13)
    one, two = solve_emd(cost, w1, w2, threads=1), solve_emd(cost, w1, w2, threads=2)
    np.testing.assert_array_equal(one.flow, two.flow)
    np.testing.assert_array_equal(one.u, two.u)


def test_without_a_compiler_it_warns_once_and_falls_back_to_numpy(tmp_path):
    code = ("import warnings, numpy as np\n"
            "from methods.emd_exact import solve_emd, backend\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    print(backend())\n"
            "    s = solve_emd(np.array([[[0., 1.], [1., 0.]]]), np.ones((1, 2)), np.ones((1, 2)))\n"
            "    print(len(w), float(s.cost_value[0]))\n")
    env = dict(os.environ, CC=str(tmp_path / "no-compiler"), FSL_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["python", "1", "0.0"], out.stdout


@pytest.mark.parametrize("bad", ["shape", "negative", "nan"])
def test_bad_inputs_are_rejected(bad):
    cost, w1, w2 = np.zeros((2, 3, 3)), np.ones((2, 3)), np.ones((2, 3))
    if bad == "shape":
        w2 = np.ones((2, 4))
    elif bad == "negative":
        w1[0, 0] = -1
    else:
        cost[1, 1, 1] = np.nan
    with pytest.raises(ValueError):
        solve_emd(cost, w1, w2)

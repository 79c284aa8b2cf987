"""Exact batched EMD: many small balanced transportation problems solved at once, with duals.

DeepEMD solves, per episode, thousands of problems of n <= 50 nodes per side. The reference calls
`cv2.EMD` once per problem from Python; `solve_emd` takes the whole batch and solves it in C
(`emd_exact.c`, compiled on first use with the system compiler and loaded with ctypes):

    min  sum_ab flow_ab cost_ab   s.t.  sum_b flow_ab = w1_a,  sum_a flow_ab = w2_b,  flow >= 0.

Algorithm (the same in C and in the numpy fallback, whose greedy start sorts the cells exactly
where C buckets them): primal network simplex on the bipartite graph
rows -> columns, started from a greedy least-cost basis, with strongly feasible spanning trees
(Cunningham's leaving-arc rule), which cannot cycle on degenerate problems. Masses are quantised
to 2^-50 of the larger total so that flows are exact integers and "zero flow" is exact.

Unequal totals: when the quantised totals differ (e.g. float32 rounding of a normalisation to
sum n), a dummy node with zero costs on the smaller side absorbs the gap, so the smaller total is
transported (as cv2.EMD does) and the gap's flow is dropped.

Duals (u, v): u_a + v_b <= c_ab, equality on flow > 0, sum w1.u + sum w2.v = cost_value. Their
free constant is fixed as follows:
- totals differ: the dummy's potential is 0, so the larger side's duals are <= 0 (the duals of
  "transport the smaller total"; a node that keeps some mass has dual 0);
- totals equal: u + t, v - t with t chosen so that sum w1.u = sum w2.v (symmetric in the sides).
Zero-weight nodes get the largest dual keeping all reduced costs >= 0 (one-sided derivative).
Where the optimum is unique these are the gradient of the objective w.r.t. the weights (on
weight changes that keep the totals equal, any normalisation works).

Backends: `backend()` says "c" or "python"; env FSL_EMD_BACKEND=python forces the numpy
fallback, which is also used (with one warning) when no compiler works. The compiled library is
cached in $FSL_CACHE_DIR (default ~/.cache/fsl_paddle), keyed by a hash of the source and flags,
and written to a temporary name then renamed, so concurrent processes never load half a file.
"""
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

SOURCE = Path(__file__).with_name("emd_exact.c")
#: finite-math flags let the compiler vectorise the pricing minimum (inputs are checked finite)
CFLAGS = ("-O3", "-ffinite-math-only", "-fno-signed-zeros", "-fno-trapping-math", "-shared", "-fPIC", "-pthread")
MASS_BITS = 50            # quantum = 2^-MASS_BITS of the larger total (same as the C code)
MIN_PER_THREAD = 64       # problems per extra thread below which threads do not pay off


class EMDSolution(NamedTuple):
    """Optimal flow [B, n, m] (None when not asked for), duals u [B, n] and v [B, m], objective
    sum(flow * cost) [B], and sum(flow * payoff) [B] when a payoff was given (else None)."""
    flow: Optional[np.ndarray]
    u: np.ndarray
    v: np.ndarray
    cost_value: np.ndarray
    payoff_value: Optional[np.ndarray] = None


# ----------------------------------------------------------------------------------------
# compiling and loading the C solver
# ----------------------------------------------------------------------------------------
_LIB: Optional[ctypes.CDLL] = None
_LOAD_TRIED = False


def cache_dir() -> Path:
    """Folder of the compiled library: $FSL_CACHE_DIR or ~/.cache/fsl_paddle."""
    return Path(os.environ.get("FSL_CACHE_DIR") or Path.home() / ".cache" / "fsl_paddle")


def _compiler() -> Optional[str]:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _library_path(compiler: str) -> Path:
    """Cache file name keyed by the source, flags, compiler and machine (a stale or foreign
    build is never picked up)."""
    key = hashlib.sha256(SOURCE.read_bytes())
    key.update(" ".join((compiler, *CFLAGS, platform.machine(), platform.system())).encode())
    return cache_dir() / f"emd_exact_{key.hexdigest()[:16]}.so"


def _compile(compiler: str, target: Path) -> None:
    """Build into a temporary file of the cache folder, then rename it over the target: a
    rename is atomic, so another process sees either no library or a complete one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".emd_exact_", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([compiler, *CFLAGS, "-o", tmp, str(SOURCE), "-lm"], check=True,
                       capture_output=True, text=True, timeout=300)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    dbl, i32, anything = ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_int), ctypes.c_void_p
    lib.emd_solve_batch.restype = ctypes.c_long
    lib.emd_solve_batch.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_int, anything, anything, anything,
                                    anything, dbl, dbl, dbl, i32, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                    anything, dbl, anything, ctypes.c_long]
    return lib


def _load() -> Optional[ctypes.CDLL]:
    """The compiled solver, or None (after one warning) when it cannot be built or loaded."""
    global _LIB, _LOAD_TRIED
    if _LOAD_TRIED:
        return _LIB
    _LOAD_TRIED = True
    compiler = _compiler()
    try:
        if compiler is None:
            raise RuntimeError("no C compiler found (set CC or install cc)")
        target = _library_path(compiler)
        if not target.exists():
            _compile(compiler, target)
        _LIB = _bind(ctypes.CDLL(str(target)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", None) or error
        warnings.warn(f"emd_exact: C solver unavailable ({detail}); using the slow numpy "
                      "fallback", RuntimeWarning, stacklevel=3)
        _LIB = None
    return _LIB


def backend() -> str:
    """'c' when the compiled solver is used, 'python' for the numpy fallback."""
    if os.environ.get("FSL_EMD_BACKEND", "").lower() == "python":
        return "python"
    return "c" if _load() is not None else "python"


def default_threads(batch: int) -> int:
    """Threads for threads=0: $FSL_EMD_THREADS, else the CPU threads the entry script set
    (--threads, utils/device.py), else the usable cores, with at least MIN_PER_THREAD problems
    per thread."""
    from utils.device import cpu_threads
    env = os.environ.get("FSL_EMD_THREADS")
    cores = int(env) if env else (cpu_threads() or (_usable_cores(),))[0]
    return max(1, min(cores, batch // MIN_PER_THREAD))


@functools.lru_cache(maxsize=1)
def _usable_cores() -> int:
    """utils.device.available_cores, read once: it reads cgroup files, and evaluation calls the
    solver hundreds of times a second."""
    from utils.device import available_cores
    return available_cores()


# ----------------------------------------------------------------------------------------
# the public entry point
# ----------------------------------------------------------------------------------------
def _check_inputs(cost, weight1, weight2) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 arrays when all three are float32 (no widened copy: the C solver widens each
    problem itself), float64 otherwise; the weights contiguous, the costs too unless they are a
    view the solver can read in place (`_readable`); shapes and values checked."""
    single = all(np.asarray(a).dtype == np.float32 for a in (cost, weight1, weight2))
    dtype = np.float32 if single else np.float64
    cost = _readable(np.asarray(cost, dtype=dtype))
    weight1 = np.ascontiguousarray(weight1, dtype=dtype)
    weight2 = np.ascontiguousarray(weight2, dtype=dtype)
    batch = int(np.prod(cost.shape[:-2])) if cost.ndim >= 3 else -1
    if cost.ndim < 3 or weight1.shape != (batch, cost.shape[-2]) or weight2.shape != (batch, cost.shape[-1]):
        raise ValueError(f"expected cost [B,n,m] (or [...,n,m] holding B problems), weight1 [B,n], "
                         f"weight2 [B,m]; got {cost.shape}, {weight1.shape}, {weight2.shape}")
    if 0 in cost.shape[-2:]:
        raise ValueError(f"empty problems: cost shape {cost.shape}")
    if not (np.isfinite(cost).all() and np.isfinite(weight1).all() and np.isfinite(weight2).all()):
        raise ValueError("cost and weights must be finite")
    if (weight1 < 0).any() or (weight2 < 0).any():
        raise ValueError("weights must be non-negative")
    return cost, weight1, weight2


def _readable(a: np.ndarray) -> np.ndarray:
    """`a` itself when the solver can read it in place (rows contiguous, non-negative strides
    in whole elements, e.g. DeepEMD's similarity with its query and class axes swapped), else a
    contiguous copy."""
    item = a.itemsize
    if a.ndim >= 2 and a.strides[-1] == item and all(s >= 0 and s % item == 0 for s in a.strides):
        return a
    return np.ascontiguousarray(a)


def _layout(a: np.ndarray) -> Tuple[Optional[np.ndarray], int]:
    """(element offset of each problem [B], or None when `a` is contiguous; elements between a
    problem's rows) of `a` [..., n, m], its leading axes flattened in C order."""
    if a.flags["C_CONTIGUOUS"]:
        return None, a.shape[-1]
    offsets = np.zeros(a.shape[:-2], dtype=np.int64)
    for axis, (size, stride) in enumerate(zip(a.shape[:-2], a.strides[:-2])):
        step = np.arange(size, dtype=np.int64) * (stride // a.itemsize)
        offsets += step.reshape([-1 if k == axis else 1 for k in range(offsets.ndim)])
    return offsets.reshape(-1), a.strides[-2] // a.itemsize


def solve_emd(cost, weight1, weight2, threads: int = 0, flows: bool = True, payoff=None) -> EMDSolution:
    """Optimal transport of every problem of the batch.

    cost [B, n, m], weight1 [B, n] (row masses), weight2 [B, m] (column masses), any float dtype,
    weights non-negative. threads: 0 = automatic (see `default_threads`), 1 = calling thread.
    cost may hold the B problems in more leading axes ([..., n, m], flattened in C order), and a
    strided view of a larger array (rows contiguous) is read in place, without a copy.
    Every problem is solved in float64. Returns flow [B, n, m] (float32 when the three inputs
    are float32, else float64; None with flows=False), float64 u [B, n], v [B, m] and
    cost_value [B] = sum(flow * cost). payoff [B, n, m] (read in the costs' precision) adds
    payoff_value [B] = sum(flow * payoff) in float64, e.g. DeepEMD's score, the similarity under
    the flow: with flows=False no dense flow is written and read back (the optimal flow has at
    most n + m - 1 non-zero cells). cost=None with a payoff: the costs are 1 - payoff, subtracted
    in the payoff's precision as numpy's `1 - payoff` is (DeepEMD's 1 - cosine), with no cost array.
    """
    if cost is None and payoff is None:
        raise ValueError("solve_emd needs a cost, or a payoff whose costs are 1 - payoff")
    values, weight1, weight2 = _check_inputs(payoff if cost is None else cost, weight1, weight2)
    if cost is None:
        payoff = values
    else:
        cost = values
        if payoff is not None:
            payoff = _readable(np.asarray(payoff, dtype=cost.dtype))
            if payoff.shape != cost.shape:
                raise ValueError(f"payoff shape {payoff.shape} differs from the cost's {cost.shape}")
            if payoff.strides != cost.strides:                 # the solver reads both with one layout
                cost, payoff = np.ascontiguousarray(cost), np.ascontiguousarray(payoff)
    batch, (n, m) = len(weight1), values.shape[-2:]
    # every problem's flow is written in full (by the C solver or the numpy fallback), so the
    # array need not be zeroed first: fresh zero pages would be faulted in during the solve
    flow = np.empty((batch, n, m), dtype=values.dtype) if flows else None
    u, v, value = np.zeros((batch, n)), np.zeros((batch, m)), np.zeros(batch)
    gain = None if payoff is None else np.zeros(batch)
    if batch == 0:
        return EMDSolution(flow, u, v, value, gain)
    lib = _load() if backend() == "c" else None
    todo = np.arange(batch)
    if lib is not None:
        status = _solve_c(lib, cost, weight1, weight2, flow, u, v, value, threads, payoff=payoff, gain=gain)
        todo = np.flatnonzero(status)
        if len(todo):
            warnings.warn(f"emd_exact: C solver failed on {len(todo)} problem(s) (codes "
                          f"{sorted(set(status[todo].tolist()))}); solving them in numpy", RuntimeWarning,
                          stacklevel=2)
    if len(todo):           # the numpy fallback, one problem at a time
        costs = (1 - payoff if cost is None else cost).reshape(-1, n, m)
        payoffs = None if payoff is None else payoff.reshape(-1, n, m)
    for i in todo:          # widened as the C solver does, so that the quantised masses agree
        problem = (costs[i], weight1[i], weight2[i])
        one_flow, u[i], v[i], value[i] = solve_one_numpy(*(a.astype(np.float64) for a in problem))
        if flow is not None:
            flow[i] = one_flow
        if payoffs is not None and gain is not None:
            gain[i] = (one_flow * payoffs[i].astype(np.float64)).sum()
    return EMDSolution(flow, u, v, value, gain)


def _solve_c(lib: ctypes.CDLL, cost, weight1, weight2, flow, u, v, value, threads: int,
             block_rows: int = 0, payoff=None, gain=None) -> np.ndarray:
    """Run the C batch solver in place (flow, payoff and gain may be None, cost too when the costs
    are 1 - payoff); returns the per-problem status (0 = solved)."""
    values = payoff if cost is None else cost
    batch, (n, m) = len(weight1), values.shape[-2:]
    offsets, row_stride = _layout(values)
    status = np.zeros(batch, dtype=np.intc)
    threads = default_threads(batch) if threads <= 0 else threads

    def ptr(a, kind=ctypes.c_double):
        return a.ctypes.data_as(ctypes.POINTER(kind))
    def address(a):
        return None if a is None else a.ctypes.data
    lib.emd_solve_batch(batch, n, m, address(cost), weight1.ctypes.data, weight2.ctypes.data, address(flow),
                        ptr(u), ptr(v), ptr(value), ptr(status, ctypes.c_int), int(threads), int(block_rows),
                        int(values.dtype == np.float32), address(payoff), None if gain is None else ptr(gain),
                        address(offsets), row_stride)
    return status


# ----------------------------------------------------------------------------------------
# numpy fallback: the same network simplex, one problem at a time (slow, exact)
# ----------------------------------------------------------------------------------------
class _Tree:
    """Spanning tree of one problem: rows are nodes 0..ns-1, columns ns..ns+nd-1. Flows are
    Python ints (quantised masses), potentials floats."""

    def __init__(self, cost: np.ndarray, mass: List[int], ns: int):
        self.cost, self.mass, self.ns = cost, mass, ns
        self.n_nodes = len(mass)
        self.parent = [-1] * self.n_nodes
        self.flow = [0] * self.n_nodes
        self.depth = [0] * self.n_nodes
        self.pot = np.zeros(self.n_nodes)

    def arc_cost(self, x: int, p: int) -> float:
        return self.cost[x, p - self.ns] if x < self.ns else self.cost[p, x - self.ns]

    def refresh(self) -> None:
        """Depths and potentials of all nodes from the parent pointers (root potential 0)."""
        children: List[List[int]] = [[] for _ in range(self.n_nodes)]
        root = -1
        for x, p in enumerate(self.parent):
            if p < 0:
                root = x
            else:
                children[p].append(x)
        self.pot[root], self.depth[root] = 0.0, 0
        stack = list(children[root])
        while stack:
            x = stack.pop()
            p = self.parent[x]
            self.depth[x] = self.depth[p] + 1
            self.pot[x] = self.arc_cost(x, p) - self.pot[p]
            stack.extend(children[x])


def _quantise(weight1: np.ndarray, weight2: np.ndarray):
    """Integer masses of the active nodes plus the dummy (see the C function quantise)."""
    top = max(weight1.sum(), weight2.sum())
    if not top > 0:
        return None
    scale = 2.0 ** (MASS_BITS - np.frexp(top)[1])
    q1 = [int(x) for x in np.rint(weight1 * scale)]
    q2 = [int(x) for x in np.rint(weight2 * scale)]
    rows = [a for a, q in enumerate(q1) if q > 0]
    cols = [b for b, q in enumerate(q2) if q > 0]
    gap = sum(q1) - sum(q2)
    row_mass = [q1[a] for a in rows] + ([-gap] if gap < 0 else [])
    col_mass = [q2[b] for b in cols] + ([gap] if gap > 0 else [])
    dummy = 1 if gap < 0 else 2 if gap > 0 else 0
    return scale, rows, cols, row_mass, col_mass, dummy


def _initial_tree(tree: _Tree, nd: int) -> None:
    """Greedy least-cost allocation on the epsilon-perturbed problem (see initial_tree in C)."""
    ns, n_nodes = tree.ns, tree.n_nodes
    root = n_nodes - 1
    rem = list(tree.mass)
    eps = [1] * ns + [-1] * nd
    eps[root] = n_nodes - 1
    alive = [True] * n_nodes
    arcs = []
    for idx in np.argsort(tree.cost, axis=None, kind="stable"):
        a, b = divmod(int(idx), nd)
        b += ns
        if not (alive[a] and alive[b]):
            continue
        pair_a, pair_b = (rem[a], eps[a]), (rem[b], eps[b])     # lexicographic (mass, eps)
        cmp = (pair_a > pair_b) - (pair_a < pair_b)
        xv, xe = pair_a if cmp <= 0 else pair_b
        arcs.append((a, b, xv))
        rem[a], eps[a] = rem[a] - xv, eps[a] - xe
        rem[b], eps[b] = rem[b] - xv, eps[b] - xe
        alive[a] = alive[a] and cmp > 0
        alive[b] = alive[b] and cmp < 0
        if len(arcs) == n_nodes - 1:
            break
    adjacency: List[List[Tuple[int, int]]] = [[] for _ in range(n_nodes)]  # (neighbour, flow)
    for a, b, f in arcs:
        adjacency[a].append((b, f))
        adjacency[b].append((a, f))
    seen, stack = {root}, [root]
    while stack:
        x = stack.pop()
        for y, f in adjacency[x]:
            if y not in seen:
                seen.add(y)
                tree.parent[y], tree.flow[y] = x, f
                stack.append(y)
    if len(seen) != n_nodes or len(arcs) != n_nodes - 1:
        raise RuntimeError("emd_exact: initial basis is not a spanning tree")
    tree.refresh()


def _pivot(tree: _Tree, k: int, m: int) -> None:
    """Entering arc k -> m (the C code's k -> l); leaving arc by the strongly feasible rule (see pivot in C)."""
    par, dep, fl, ns = tree.parent, tree.depth, tree.flow, tree.ns
    a, b = k, m
    while dep[a] > dep[b]:
        a = par[a]
    while dep[b] > dep[a]:
        b = par[b]
    while a != b:
        a, b = par[a], par[b]
    apex, theta, q, side = a, None, -1, 0
    path_k, path_l = [], []
    y = k
    while y != apex:
        path_k.append(y)
        if y < ns and (theta is None or fl[y] < theta):
            theta, q, side = fl[y], y, 0
        y = par[y]
    x = m
    while x != apex:
        path_l.append(x)
        if x >= ns and (theta is None or fl[x] <= theta):
            theta, q, side = fl[x], x, 1
        x = par[x]
    if theta is None:  # unreachable: the entering arc's cycle always has an arc against its direction
        raise RuntimeError("emd_exact: no leaving arc on the pivot cycle")
    for y in path_k:
        fl[y] += -theta if y < ns else theta
    for x in path_l:
        fl[x] += -theta if x >= ns else theta
    cur, up = (m, k) if side else (k, m)
    carried = theta
    while True:
        nxt, nf = par[cur], fl[cur]
        par[cur], fl[cur] = up, carried
        if cur == q:
            break
        up, carried, cur = cur, nf, nxt
    tree.refresh()


def solve_one_numpy(cost: np.ndarray, weight1: np.ndarray, weight2: np.ndarray,
                    max_pivots: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One problem with the numpy network simplex: (flow [n,m], u [n], v [m], objective)."""
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    flow = np.zeros((n, m))
    quant = _quantise(np.asarray(weight1, np.float64), np.asarray(weight2, np.float64))
    if quant is None:                                      # nothing to transport
        return flow, cost.min(1), np.zeros(m), 0.0
    scale, rows, cols, row_mass, col_mass, dummy = quant
    ns, nd = len(row_mass), len(col_mass)
    local = np.zeros((ns, nd))
    local[:len(rows), :len(cols)] = cost[np.ix_(rows, cols)]
    tree = _Tree(local, row_mass + col_mass, ns)
    _initial_tree(tree, nd)
    tol = 1e-12 * max(1.0, np.abs(local).max())
    limit = max_pivots if max_pivots is not None else 1000 * (ns + nd) ** 2 + 100000
    while True:
        reduced = local - tree.pot[:ns, None] - tree.pot[None, ns:]
        k, j = divmod(int(np.argmin(reduced)), nd)            # Dantzig: most negative
        if reduced[k, j] >= -tol:
            break
        limit -= 1
        if limit < 0:
            raise RuntimeError("emd_exact: pivot limit reached")
        _pivot(tree, k, ns + j)
    return _finish(cost, np.asarray(weight1, np.float64), np.asarray(weight2, np.float64), tree, scale,
                   rows, cols, dummy, flow)


def _finish(cost, weight1, weight2, tree: _Tree, scale: float, rows, cols, dummy: int, flow):
    """Normalise the duals, fill the zero-weight nodes' duals, write flows and objective."""
    ns, n_nodes = tree.ns, tree.n_nodes
    pot, mass = tree.pot, np.array(tree.mass, dtype=np.float64)
    if dummy == 2:
        t = pot[-1]
    elif dummy == 1:
        t = -pot[ns - 1]
    else:
        t = (pot[ns:] @ mass[ns:] - pot[:ns] @ mass[:ns]) / mass.sum()
    pot = np.concatenate([pot[:ns] + t, pot[ns:] - t])
    n, m = cost.shape
    u, v = np.full(n, np.nan), np.full(m, np.nan)
    u[rows], v[cols] = pot[:len(rows)], pot[ns:ns + len(cols)]
    row_in, col_in = ~np.isnan(u), ~np.isnan(v)
    for b in np.flatnonzero(~col_in):
        bound = [0.0 - pot[ns - 1]] if dummy == 1 else []
        v[b] = min(list(cost[row_in, b] - u[row_in]) + bound) if row_in.any() or bound else 0.0
    for a in np.flatnonzero(~row_in):
        bound = [0.0 - pot[-1]] if dummy == 2 else []
        u[a] = min(list(cost[a] - v) + bound)
    for x in range(n_nodes):
        p = tree.parent[x]
        if p < 0 or tree.flow[x] == 0:
            continue
        i, j = (x, p - ns) if x < ns else (p, x - ns)
        if i < len(rows) and j < len(cols):
            flow[rows[i], cols[j]] = tree.flow[x] / scale
    return flow, u, v, float((flow * cost).sum())

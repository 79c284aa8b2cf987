"""A batched, differentiable quadratic-programming layer for DeepEMD's `qpth` solver.

DeepEMD (`emd_inference_qpth`) solves its transport problems with `qpth.qp.QPFunction` 0.0.18
(Amos & Kolter, OptNet, ICML 2017) in float64 with the default settings (eps 1e-12, at most 20
iterations, 3 non-improving iterations allowed). After 20 iterations the solver has not always
converged, so matching the reference numbers requires the *same iterates*, not merely another QP
solver: this module re-implements the same mathematics (written independently, see below).

Two modes: "qpth" (qpth's 20 iterations and stopping rules: the reference's iterates, converged
or not) and "converged" (the same steps until each problem's point carries a `Certificate`: a
dual witness (λ ≥ 0, ν) whose Lagrangian bound proves the objective within CERTIFIED_TOL of the
optimum, with feasibility and stationarity residuals below the same relative bound; at most
CONVERGED_ITERATIONS iterations). Why the reference stalls: DeepEMD's total is the float32 sum of
float32 weights, which can exceed their float64 sum, and then its QP has no feasible point at
all; `transport_data` uses the largest feasible total instead (the float64 sum). With it the interior point
reaches certified optima although the row/column inequalities are tight for every feasible flow
(no strictly feasible point): 3,000 random problems per size (9, 13, 25 nodes) and form take at
most 28 steps (tests/methods/test_qp_layer.py).

Problem, for every batch element:

    minimise ½ zᵀQz + pᵀz   subject to   G z ≤ h,   A z = b.

Forward: Mehrotra-style primal-dual interior point on (x, s, λ, ν) with slacks s = h − Gx:
  * start: the solution of the KKT system with the complementarity block replaced by identity
    scaling, then slacks and inequality duals shifted to be ≥ 1 when a row had a negative entry;
  * per iteration: residuals, μ = sᵀλ / m, a residual score ‖r_eq‖ + ‖r_ineq‖ + ‖r_dual‖ + m μ
    used to keep the best iterate per problem; stop after `not_improved_lim` iterations without
    improvement in any problem, when all scores < eps, or after `max_iter` iterations (the
    iterate produced by the last step is never scored, hence never returned);
  * affine (predictor) step, centring parameter σ = (gap after the affine step / gap)³, a
    centring-corrector step with the second-order term, and a 0.999 fraction-to-boundary step.
Every Newton system has the scaled-KKT form (d = λ / s)

    [ Q   0   Gᵀ  Aᵀ ] [dx]     [rx]
    [ 0   D   I   0  ] [ds] = − [rs]
    [ G   I   0   0  ] [dλ]     [rλ]
    [ A   0   0   0  ] [dν]     [rν]

Backward (implicit differentiation of the KKT conditions at the returned point): one solve of
the same system with d = max(λ, 1e-8) / max(s, 1e-8) and right-hand side (∂ℓ/∂z, 0, 0, 0), then
∂ℓ/∂Q = ½(dx zᵀ + z dxᵀ), ∂ℓ/∂p = dx, ∂ℓ/∂G = dλ zᵀ + λ dxᵀ, ∂ℓ/∂h = −dλ, ∂ℓ/∂A = dν zᵀ + ν dxᵀ,
∂ℓ/∂b = −dν.

Two Newton-system solvers implement the identical linear algebra:
  * `_DenseKKT` — general Q, G, A: eliminate dx and ds (Q⁻¹ once per problem), then the
    equality multiplier (its Schur complement), then an LU of the (m × m) inequality block
    R + D⁻¹ per iteration. This is the elimination order qpth uses, so rounding is close to it;
    like qpth it is not backward stable when Q is small (form L2 with 1e-6: backward errors up
    to ~1e6 u), so its late iterates depend on the BLAS.
  * `_TransportKKT` — the EMD problem only: Q = κI (+ ccᵀ), G = [−I; row sums; column sums],
    A = 1ᵀ. Eliminating ds, dλ and the flows leaves a (2n + 2)-dimensional system in the
    constraint space, built in O(n²) per problem instead of O((n²)³) for the dense one.
    Mathematically the same iterates; backward stable (within the residual's evaluation error,
    tests/methods/test_qp_layer.py), so it differs from the dense solver by rounding only.
"""
import warnings
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import paddle
import scipy.linalg as sla

Array = np.ndarray
#: an interior-point iterate (x, s, λ, ν); ν is None without equality constraints
Point = Tuple[Array, Array, Array, Optional[Array]]
#: its residuals (dual rx, primal-inequality rz, primal-equality ry; ry None without equalities)
Residuals = Tuple[Array, Array, Optional[Array]]

#: qpth clamps the multipliers and slacks at this value before the backward solve
_BACKWARD_CLAMP = 1e-8
#: fraction of the distance to the boundary taken by the combined step
_STEP_FRACTION = 0.999
FORMS = ("QP", "L2")
#: "qpth": qpth's iterations and stopping rules; "converged": iterate to a certified optimum
MODES = ("qpth", "converged")
#: qpth 0.0.18's maxIter
QPTH_ITERATIONS = 20
#: iteration budget of mode "converged": twice the most that DeepEMD-like random problems needed
#: to be certified and settled (3,000 per size and form: 19 steps at 9 nodes, 22 at 13, 28 at
#: 25; 100 per form at 38 and 50 nodes: 32); tests/methods/test_qp_layer.py checks 1,000 per
#: size and form
CONVERGED_ITERATIONS = 64
#: relative primal, dual and duality-gap bound of a certified optimum (`Certificate`); the float64
#: floor of the three measures is below 4e-11 on every one of 7,000 random problems
CERTIFIED_TOL = 1e-9
#: a certified problem keeps stepping while a step improves its measure this many times
_SETTLE_FACTOR = 10.0


# ----------------------------------------------------------------------------------------------
# batched small helpers
# ----------------------------------------------------------------------------------------------
def _given(v: Optional[Array], what: str) -> Array:
    """`v`, which the problem's shape guarantees (equality parts exist when it has equalities,
    factors after `factor`): an error names `what` if it is missing."""
    if v is None:
        raise RuntimeError(f"QP layer: {what} is missing")
    return v


def _mv(M: Array, v: Array) -> Array:
    """Batched matrix-vector product M[b] @ v[b]."""
    return np.matmul(M, v[..., None])[..., 0]


def _mtv(M: Array, v: Array) -> Array:
    """Batched transposed product M[b]ᵀ @ v[b]."""
    return np.matmul(v[:, None, :], M)[:, 0, :]


class _BatchLU:
    """LU factorisations (partial pivoting, LAPACK getrf as torch's CPU lu_factor) of a batch."""

    def __init__(self, mats: Array):
        self.factors = [sla.lu_factor(m, check_finite=False) for m in mats]

    def solve(self, rhs: Array) -> Array:
        """rhs [B, k] or [B, k, r] → the solutions, same shape."""
        return np.stack([sla.lu_solve(f, r, check_finite=False) for f, r in zip(self.factors, rhs)])


# ----------------------------------------------------------------------------------------------
# Newton-system solvers
# ----------------------------------------------------------------------------------------------
class _DenseKKT:
    """Products and Newton solves for general dense Q [B,k,k], G [B,m,k], A [B,e,k]."""

    def __init__(self, Q: Array, G: Array, A: Array):
        self.Q, self.G, self.A = Q, G, A
        self.neq = A.shape[1]
        self.q_lu = _BatchLU(Q)
        q_inv_gt = self.q_lu.solve(np.swapaxes(G, 1, 2))           # Q⁻¹Gᵀ  [B,k,m]
        self.schur_ineq = G @ q_inv_gt                             # GQ⁻¹Gᵀ [B,m,m]
        if self.neq:
            q_inv_at = self.q_lu.solve(np.swapaxes(A, 1, 2))       # Q⁻¹Aᵀ  [B,k,e]
            self.g_qi_at = G @ q_inv_at                            # GQ⁻¹Aᵀ [B,m,e]
            self.eq_lu = _BatchLU(A @ q_inv_at)                    # AQ⁻¹Aᵀ [B,e,e]
            # eliminating dν first leaves R = GQ⁻¹Gᵀ − GQ⁻¹Aᵀ (AQ⁻¹Aᵀ)⁻¹ AQ⁻¹Gᵀ
            self.schur_ineq = self.schur_ineq - self.g_qi_at @ self.eq_lu.solve(
                np.swapaxes(self.g_qi_at, 1, 2))
        self.d: Optional[Array] = None
        self.t_lu: Optional[_BatchLU] = None

    # products used by the residuals
    def hess(self, x: Array) -> Array:
        return _mv(self.Q, x)

    def hess_inv(self, r: Array) -> Array:
        return self.q_lu.solve(r)

    def ineq(self, x: Array) -> Array:
        return _mv(self.G, x)

    def ineq_t(self, lam: Array) -> Array:
        return _mtv(self.G, lam)

    def eq(self, x: Array) -> Array:
        return _mv(self.A, x)

    def eq_t(self, nu: Array) -> Array:
        return _mtv(self.A, nu)

    def factor(self, d: Array) -> None:
        """Factor the inequality block R + D⁻¹ for the scaling d = λ / s."""
        block = self.schur_ineq.copy()
        idx = np.arange(d.shape[1])
        block[:, idx, idx] += 1.0 / d
        self.d, self.t_lu = d, _BatchLU(block)

    def solve(self, rx: Array, rs: Array, rz: Array, ry: Optional[Array]) -> Point:
        """(dx, ds, dλ, dν) of the Newton system with right-hand side −(rx, rs, rz, ry)."""
        d, t_lu = _given(self.d, "the scaling"), self.t_lu
        if t_lu is None:
            raise RuntimeError("QP layer: solve before factor")
        q_inv_rx = self.q_lu.solve(rx)
        top = _mv(self.A, q_inv_rx) - _given(ry, "ry") if self.neq else None   # equality rows of the rhs
        bottom = _mv(self.G, q_inv_rx) + rs / d - rz                           # inequality rows
        dnu: Optional[Array] = None
        if top is not None:
            # forward elimination of dν: the inequality block sees −bottom + GQ⁻¹Aᵀ(AQ⁻¹Aᵀ)⁻¹ top
            eq_inv_top = self.eq_lu.solve(top)
            dlam = t_lu.solve(-bottom + _mv(self.g_qi_at, eq_inv_top))
            dnu = self.eq_lu.solve(-top - _mtv(self.g_qi_at, dlam))
        else:
            dlam = t_lu.solve(-bottom)
        g1 = -rx - self.ineq_t(dlam) - (self.eq_t(dnu) if dnu is not None else 0.0)
        dx = self.q_lu.solve(g1)
        ds = (-rs - dlam) / d
        return dx, ds, dlam, dnu


class _TransportKKT:
    """Newton solves for the EMD problem with Q = κI (+ ccᵀ in form QP), G = [−I; rows; cols],
    A = 1ᵀ, in the constraint space.

    The n² flow variables are x[a·n + b]; the inequalities are −x ≤ 0 (n² rows), the n row sums
    and the n column sums (B). With ds = −rλ − G dx and dλ = −rs − D ds the system reduces to
        (P + Bᵀ D_B B + ccᵀ) dx + Aᵀdν = r := −rx + Gᵀ(rs − D rλ),   A dx = −rν,
    with the diagonal P = κ + d_x. Naming y = D_B B dx and t = cᵀdx, and M = [B; A; cᵀ], this is
        P dx + Mᵀw = r,   (M P⁻¹ Mᵀ + E) w = M P⁻¹ r + (0, rν, 0),   E = diag(D_B⁻¹, 0, 1),
    a (2n + 1 [+ 1]) system per problem whose matrix is built from row and column sums of P⁻¹
    in O(n²). Every quantity stays bounded as the interior point converges (P⁻¹ ≤ 1/κ,
    D_B⁻¹ → 0), unlike a Woodbury update around diag(P), whose capacitance matrix grows with D_B.
    """

    def __init__(self, n: int, kappa: float, c: Optional[Array]):
        self.n, self.nz, self.kappa, self.c = n, n * n, kappa, c
        self.neq = 1
        self.d: Optional[Array] = None

    # products used by the residuals
    def hess(self, x: Array) -> Array:
        out = self.kappa * x
        if self.c is not None:
            out = out + self.c * np.sum(self.c * x, axis=1, keepdims=True)
        return out

    def hess_inv(self, r: Array) -> Array:
        """Q⁻¹r, with Sherman-Morrison for the rank-one term of form QP."""
        if self.c is None:
            return r / self.kappa
        along = np.sum(self.c * r, 1, keepdims=True) / (self.kappa + np.sum(self.c * self.c, 1, keepdims=True))
        return (r - self.c * along) / self.kappa

    def ineq(self, x: Array) -> Array:
        grid = x.reshape(-1, self.n, self.n)
        return np.concatenate([-x, grid.sum(2), grid.sum(1)], axis=1)

    def ineq_t(self, lam: Array) -> Array:
        return -lam[:, :self.nz] + self._sums_t(lam[:, self.nz:])

    def eq(self, x: Array) -> Array:
        return x.sum(1, keepdims=True)

    def eq_t(self, nu: Array) -> Array:
        return np.repeat(nu, self.nz, axis=1)

    # the constraint-space operator M = [B; A; cᵀ]
    def _sums_t(self, w: Array) -> Array:
        """Bᵀw for w = (row multipliers, column multipliers): [B, 2n] -> [B, n²]."""
        n = self.n
        return (w[:, :n, None] + w[:, None, n:2 * n]).reshape(-1, self.nz)

    def _m(self, v: Array) -> Array:
        """M v: row sums, column sums, total (and cᵀv) of each flattened flow v [B, n²]."""
        grid = v.reshape(-1, self.n, self.n)
        parts = [grid.sum(2), grid.sum(1), v.sum(1, keepdims=True)]
        if self.c is not None:
            parts.append(np.sum(self.c * v, axis=1, keepdims=True))
        return np.concatenate(parts, axis=1)

    def _m_t(self, w: Array) -> Array:
        """Mᵀw: [B, 2n + 1 (+1)] -> [B, n²]."""
        n = self.n
        out = self._sums_t(w) + w[:, 2 * n:2 * n + 1]
        if self.c is not None:
            out = out + self.c * w[:, 2 * n + 1:]
        return out

    def _null_basis(self, size: int) -> Tuple[Array, Array]:
        """(keep, N): the coordinates of w kept as unknowns, and the null space of Mᵀ.

        Mᵀ annihilates (1_rows, −1_cols, 0) (row and column sums both total the flow) and
        (1_rows, 0, −1) (the total is the sum of the row sums), whatever P is. They are
        parametrised by the last column multiplier and ν, whose own coordinates are dropped; the
        kept block of K is K itself minus two rows and columns, so its scaling is untouched."""
        n = self.n
        null = np.zeros((size, 2))
        null[:n, :] = 1.0
        null[n:2 * n, 0] = -1.0
        null[2 * n, 1] = -1.0
        keep = np.array([i for i in range(size) if i not in (2 * n - 1, 2 * n)])
        return keep, null

    def factor(self, d: Array) -> None:
        """Prepare the constraint-space solve for the scaling d = λ / s.

        K = M P⁻¹ Mᵀ + E is singular up to E in the two directions N that Mᵀ annihilates, and
        E → 0 as the row and column constraints become tight. Splitting w = U a + N β keeps the
        tiny E-block apart from the well-scaled range block UᵀKU (KN = EN exactly), so the flow
        step never subtracts the huge, equal and opposite multipliers that a direct solve of K
        would produce."""
        n, nz = self.n, self.nz
        self.d = d
        self.p_inv = 1.0 / (self.kappa + d[:, :nz])
        grid = self.p_inv.reshape(-1, n, n)
        size = 2 * n + 1 + (self.c is not None)
        K = np.zeros((d.shape[0], size, size))
        idx = np.arange(n)
        K[:, idx, idx] = grid.sum(2)                                      # B P⁻¹ Bᵀ
        K[:, n + idx, n + idx] = grid.sum(1)
        K[:, :n, n:2 * n] = grid
        K[:, n:2 * n, :n] = np.swapaxes(grid, 1, 2)
        K[:, 2 * n, :2 * n] = K[:, :2 * n, 2 * n] = np.concatenate([grid.sum(2), grid.sum(1)], axis=1)
        K[:, 2 * n, 2 * n] = self.p_inv.sum(1)
        if self.c is not None:                                            # the rank-one term of form QP
            K[:, 2 * n + 1, :] = K[:, :, 2 * n + 1] = self._m(self.c * self.p_inv)
        e = np.zeros((d.shape[0], size))
        e[:, :2 * n] = 1.0 / d[:, nz:]                                     # D_B⁻¹
        if self.c is not None:
            e[:, 2 * n + 1] = 1.0
        K[:, np.arange(size), np.arange(size)] += e
        keep, N = self._null_basis(size)
        self.keep, self.N = keep, N
        self.k_kk = K[:, keep[:, None], keep[None, :]]
        self.k_kn = (e[:, :, None] * N)[:, keep]                           # K N = E N exactly
        self.x_kn = np.linalg.solve(self.k_kk, self.k_kn)
        schur = N.T @ (e[:, :, None] * N) - np.swapaxes(self.k_kn, 1, 2) @ self.x_kn
        # E underflows to 0 once a problem has converged: its null-space step is then 0
        self.schur_inv = np.linalg.pinv(schur)

    def solve(self, rx: Array, rs: Array, rz: Array, ry: Array) -> Tuple[Array, ...]:
        """(dx, ds, dλ, dν) of the Newton system with right-hand side −(rx, rs, rz, ry).

        The unknowns of the row/column constraints are their multiplier steps dλ_B themselves:
        then D_B never multiplies a residual (D_B → ∞ on tight constraints), and
            P dx + Mᵀw = −rx_x − rs_x + D_x rz_x,   B dx − D_B⁻¹ dλ_B = −rz_B + D_B⁻¹ rs_B.
        """
        n, nz, d = self.n, self.nz, _given(self.d, "the scaling")
        d_x, d_b = d[:, :nz], d[:, nz:]
        r = -rx - rs[:, :nz] + d_x * rz[:, :nz]
        g = np.zeros((rx.shape[0], len(self.N)))
        g[:, :2 * n] = -rz[:, nz:] + rs[:, nz:] / d_b
        g[:, 2 * n] = -ry[:, 0]
        rhs = self._m(self.p_inv * r) - g
        rhs_n = -g @ self.N                                                # Nᵀ M P⁻¹ r = 0 exactly
        y0 = np.linalg.solve(self.k_kk, rhs[:, self.keep, None])[..., 0]
        beta = _mv(self.schur_inv, rhs_n - _mtv(self.k_kn, y0))
        w_range = np.zeros_like(rhs)
        w_range[:, self.keep] = y0 - _mv(self.x_kn, beta)
        w = w_range + beta @ self.N.T
        m_t_w = self._m_t(w_range)                                          # Mᵀ N β = 0
        dx = self.p_inv * (r - m_t_w)
        ds = -rz - self.ineq(dx)
        # multiplier steps without multiplying a rounded quantity by a large d: for the flow
        # bounds dλ = -rs + d·(rz - dx) with d·dx = (d / (κ + d))·(r - Mᵀw) expanded, and for
        # the row/column sums the constraint-space unknowns themselves
        ratio = d_x * self.p_inv
        dlam = np.concatenate([-rs[:, :nz] + self.kappa * ratio * rz[:, :nz]
                               + ratio * (rx + rs[:, :nz] + m_t_w), w[:, :2 * n]], axis=1)
        # on a tight constraint (large d) the slack step is tiny: take it from dλ, not from G dx
        tight = d > 1.0
        ds = np.where(tight, (-rs - dlam) / d, ds)
        return dx, ds, dlam, w[:, 2 * n:2 * n + 1]


# ----------------------------------------------------------------------------------------------
# the interior-point iteration
# ----------------------------------------------------------------------------------------------
def _max_step(v: Array, dv: Array) -> Array:
    """Per problem, the largest t with v + t·dv ≥ 0 over the decreasing entries.

    Entries with dv > 0 never block; qpth gives them max(1, largest ratio of the *whole batch*),
    which matters only when no entry of a problem decreases (then 0.999 × that value is used).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = -v / dv
    ratio[dv > 0] = max(1.0, ratio.max())
    return ratio.min(axis=1)


def _start_point(kkt, p: Array, h: Array, b: Optional[Array]) -> Point:
    """Initial iterate: the KKT solution with unit scaling, then s, λ shifted to be ≥ 1."""
    kkt.factor(np.ones_like(h))
    x, s, lam, nu = kkt.solve(p, np.zeros_like(h), -h, -_given(b, "b") if kkt.neq else None)
    for v in (s, lam):
        low = v.min(axis=1)
        neg = low < 0
        v[neg] += (1.0 - low[neg])[:, None]
    return x, s, lam, nu


class _Best:
    """Best iterate per problem by residual score, and the count of non-improving iterations."""

    def __init__(self) -> None:
        self.score: Optional[Array] = None
        self.stalled = 0
        self.iteration: Optional[Array] = None
        self.point: List[Optional[Array]] = []

    def update(self, score: Array, point: Sequence[Optional[Array]], iteration: int) -> None:
        if self.score is None or self.iteration is None:  # the first iterate (both set together)
            self.score, self.point = score.copy(), [None if v is None else v.copy() for v in point]
            self.iteration = np.zeros(len(score), dtype=np.int64)
            return
        better = score < self.score
        self.stalled = 0 if better.any() else self.stalled + 1
        self.score[better] = score[better]
        self.iteration[better] = iteration
        for kept, new in zip(self.point, point):
            if kept is not None and new is not None:  # (None together: ν without equalities)
                kept[better] = new[better]


def _residuals(kkt, x, s, lam, nu, p, h, b) -> Residuals:
    """Dual, primal-inequality and primal-equality residuals at (x, s, λ, ν)."""
    rx = kkt.hess(x) + kkt.ineq_t(lam) + p
    if kkt.neq:
        rx = kkt.eq_t(nu) + rx
    rz = kkt.ineq(x) + s - h
    ry = kkt.eq(x) - b if kkt.neq else None
    return rx, rz, ry


def _pdipm(kkt, p: Array, h: Array, b: Optional[Array], eps: float, max_iter: int,
           not_improved_lim: int) -> Tuple[List[Optional[Array]], Array]:
    """qpth's interior point; returns the best (x, s, λ, ν) per problem and the iteration it
    came from. Iterates past convergence may overflow (λ / s → ∞); they are never the best,
    so numpy's warnings about them are silenced."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        best = _pdipm_iterations(kkt, p, h, b, eps, max_iter, not_improved_lim)
    return best.point, _given(best.iteration, "the best iteration")  # max_iter >= 1: set


def _scaling(s: Array, lam: Array, score: Array) -> Tuple[Array, Array]:
    """(d = λ / s, live): a problem whose slack reached exactly 0 has no finite scaling; qpth
    carries it on as NaN, which is never the best iterate; here it is frozen at its iterate."""
    scaling = lam / s
    live = np.isfinite(scaling).all(1) & np.isfinite(score)
    scaling[~live] = 1.0
    return scaling, live


def _mehrotra_step(kkt, point: Point, residuals: Residuals, mu: Array, live: Array) -> Point:
    """One predictor-corrector step from `point` (kkt factored at its scaling); problems that
    are not `live` stay where they are."""
    x, s, lam, nu = point
    rx, rz, ry = residuals
    # predictor: the pure Newton (affine-scaling) direction
    dx_a, ds_a, dl_a, dn_a = kkt.solve(rx, lam, rz, ry)
    alpha = np.minimum(np.minimum(_max_step(lam, dl_a), _max_step(s, ds_a)), 1.0)
    gap_aff = ((s + alpha[:, None] * ds_a) * (lam + alpha[:, None] * dl_a)).sum(1)
    sigma = (gap_aff / (s * lam).sum(1)) ** 3
    # corrector: centring towards σμ plus Mehrotra's second-order term
    rs_c = (-(mu * sigma)[:, None] + ds_a * dl_a) / s
    zero_ry = np.zeros_like(_given(ry, "ry")) if kkt.neq else None
    dx_c, ds_c, dl_c, dn_c = kkt.solve(np.zeros_like(x), rs_c, np.zeros_like(s), zero_ry)
    dx, ds, dl = dx_a + dx_c, ds_a + ds_c, dl_a + dl_c
    alpha = np.minimum(_STEP_FRACTION * np.minimum(_max_step(lam, dl), _max_step(s, ds)), 1.0)
    alpha[~live] = 0.0
    x = x + alpha[:, None] * dx
    s = s + alpha[:, None] * ds
    lam = lam + alpha[:, None] * dl
    new_nu = _given(nu, "ν") + alpha[:, None] * (dn_a + dn_c) if kkt.neq else None
    return x, s, lam, new_nu


def _pdipm_iterations(kkt, p: Array, h: Array, b: Optional[Array], eps: float, max_iter: int,
                      not_improved_lim: int) -> _Best:
    x, s, lam, nu = _start_point(kkt, p, h, b)
    m = h.shape[1]
    best = _Best()
    for iteration in range(max_iter):
        rx, rz, ry = _residuals(kkt, x, s, lam, nu, p, h, b)
        mu = np.abs((s * lam).sum(1) / m)
        primal = np.linalg.norm(rz, axis=1) + (np.linalg.norm(_given(ry, "ry"), axis=1) if kkt.neq else 0.0)
        score = primal + np.linalg.norm(rx, axis=1) + m * mu
        scaling, live = _scaling(s, lam, score)
        score[~live] = np.nan
        kkt.factor(scaling)
        best.update(score, (x, s, lam, nu), iteration)
        if best.stalled == not_improved_lim or _given(best.score, "the best score").max() < eps or mu.min() > 1e32:
            break
        x, s, lam, nu = _mehrotra_step(kkt, (x, s, lam, nu), (rx, rz, ry), mu, live)
    return best


class Certificate(NamedTuple):
    """Optimality evidence per problem for a point x of the QP, with its witness (λ ≥ 0, ν).

    By weak duality every λ ≥ 0, ν give the lower bound g(λ, ν) = min_z L(z, λ, ν) ≤ f* on the
    optimum; for Q positive definite g = f(x) + λᵀ(Gx − h) + νᵀ(Ax − b) − ½ rᵀQ⁻¹r with
    r = Qx + p + Gᵀλ + Aᵀν. So f(x) − f* ≤ `gap` := f(x) − g(λ, ν) whatever the iterate, and a
    feasible x with a small gap is a certified optimum; no reference solution is needed."""
    objective: Array   # f(x) = ½xᵀQx + pᵀx
    primal: Array      # largest violation of Gx ≤ h and |Ax − b|, relative to 1 + ‖(h, b)‖∞
    dual: Array        # ‖r‖∞, relative to 1 + ‖p‖∞ + ‖Qx‖∞
    gap: Array         # f(x) − g(λ, ν), relative to 1 + |f(x)|
    iterations: Array  # Newton steps taken to this point
    lam: Array         # the witness: inequality multipliers λ [B, m] ...
    nu: Optional[Array]  # ... and equality multipliers ν [B, e] (None without equalities)

    def holds(self, tol: Optional[float] = None) -> Array:
        """Per problem: all three measures at most `tol` (default CERTIFIED_TOL)."""
        tol = CERTIFIED_TOL if tol is None else tol
        return (self.primal <= tol) & (self.dual <= tol) & (self.gap <= tol)

    def worst(self) -> str:
        return f"primal {self.primal.max():.1e}, dual {self.dual.max():.1e}, gap {self.gap.max():.1e}"

    def copy(self) -> "Certificate":
        """The same certificate in arrays of its own."""
        return Certificate(self.objective.copy(), self.primal.copy(), self.dual.copy(), self.gap.copy(),
                           self.iterations.copy(), self.lam.copy(), None if self.nu is None else self.nu.copy())


def _certificate(kkt, point: Sequence[Optional[Array]], p: Array, h: Array, b: Optional[Array],
                 iterations: Array) -> Certificate:
    """The `Certificate` of (x, λ, ν); the slack s of the interior point plays no part."""
    x, lam, nu = _given(point[0], "x"), _given(point[2], "λ"), point[3]
    qx = kkt.hess(x)
    objective = 0.5 * np.sum(x * qx, 1) + np.sum(p * x, 1)
    r = qx + p + kkt.ineq_t(lam)
    violation = kkt.ineq(x) - h
    slack_term = -np.sum(lam * violation, 1)
    scale = np.abs(h).max(1)
    primal = np.maximum(violation, 0.0).max(1)
    if kkt.neq:
        nu, b = _given(nu, "ν"), _given(b, "b")
        r = r + kkt.eq_t(nu)
        eq_violation = kkt.eq(x) - b
        slack_term = slack_term - np.sum(nu * eq_violation, 1)
        primal = np.maximum(primal, np.abs(eq_violation).max(1))
        scale = np.maximum(scale, np.abs(b).max(1))
    gap = slack_term + 0.5 * np.sum(r * kkt.hess_inv(r), 1)
    return Certificate(objective=objective, primal=primal / (1 + scale),
                       dual=np.abs(r).max(1) / (1 + np.abs(p).max(1) + np.abs(qx).max(1)),
                       gap=gap / (1 + np.abs(objective)), iterations=iterations, lam=lam, nu=nu)


def _pdipm_certified(kkt, p: Array, h: Array, b: Optional[Array], max_iter: int,
                     tol: float) -> Tuple[List[Optional[Array]], Certificate]:
    """qpth's steps until each problem's iterate is certified (`Certificate.holds(tol)`) and
    settled (its last step improved the certificate measure less than _SETTLE_FACTOR times: the
    float64 floor is reached); iterates 0 .. max_iter − 1 are examined, as in qpth's loop (so
    at most max_iter − 1 steps). A finished problem is frozen (later steps could only lose
    accuracy). Every problem returns its iterate of smallest certificate measure."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x, s, lam, nu = _start_point(kkt, p, h, b)
        m, batch = h.shape[1], h.shape[0]
        kept: Optional[List[Optional[Array]]] = None  # the best (x, s, λ, ν) ...
        kept_cert: Optional[Certificate] = None        # ... and its certificate
        kept_measure = np.full(batch, np.inf)
        done = np.zeros(batch, dtype=bool)
        for step in range(max_iter):
            point = (x, s, lam, nu)
            cert = _certificate(kkt, point, p, h, b, np.full(batch, step))
            measure = np.maximum(np.maximum(cert.primal, cert.dual), cert.gap)
            measure[~np.isfinite(measure) | done] = np.inf
            better = measure < kept_measure
            # still converging fast (superlinearly): one more step makes the flows more accurate
            # than the certificate requires (it bounds them only by √(2·gap / λmin(Q)))
            settling = measure < kept_measure / _SETTLE_FACTOR
            if kept is None or kept_cert is None:
                kept = [None if v is None else v.copy() for v in point]
                kept_cert = cert.copy()
            for store, new in zip(kept + list(kept_cert), list(point) + list(cert)):
                if store is not None and new is not None:  # (None together: ν without equalities)
                    store[better] = new[better]
            kept_measure[better] = measure[better]
            done |= (kept_measure <= tol) & ~settling
            if done.all() or step == max_iter - 1:
                break
            rx, rz, ry = _residuals(kkt, x, s, lam, nu, p, h, b)
            mu = np.abs((s * lam).sum(1) / m)
            scaling, live = _scaling(s, lam, mu)
            kkt.factor(scaling)
            x, s, lam, nu = _mehrotra_step(kkt, point, (rx, rz, ry), mu, live & ~done)
    if kept is None or kept_cert is None:  # max_iter >= 1: the first iterate is always kept
        raise RuntimeError("QP layer: no iterate examined")
    return kept, kept_cert._replace(lam=_given(kept[2], "λ"), nu=kept[3])


def _implicit_solve(kkt, lam: Array, s: Array, grad_x: Array) -> Tuple[Array, Array, Optional[Array]]:
    """(dx, dλ, dν): the backward Newton solve at the returned point (qpth's clamped scaling)."""
    d = np.maximum(lam, _BACKWARD_CLAMP) / np.maximum(s, _BACKWARD_CLAMP)
    kkt.factor(d)
    zeros = np.zeros_like(lam)
    ry = np.zeros((lam.shape[0], kkt.neq)) if kkt.neq else None
    dx, _, dlam, dnu = kkt.solve(grad_x, zeros, zeros, ry)
    return dx, dlam, dnu


# ----------------------------------------------------------------------------------------------
# the general layer
# ----------------------------------------------------------------------------------------------
def _outer(u: Array, v: Array) -> Array:
    return u[:, :, None] * v[:, None, :]


def _to_np(t: paddle.Tensor) -> Array:
    return np.asarray(t.detach().cast("float64").numpy())


class _Options(NamedTuple):
    """How the interior point runs and stops (see `qp_solve`)."""
    mode: str
    max_iter: int
    eps: float = 1e-12
    not_improved_lim: int = 3
    tol: float = CERTIFIED_TOL


def _options(mode: str, max_iter: Optional[int], eps: float = 1e-12, not_improved_lim: int = 3) -> _Options:
    if mode not in MODES:
        raise ValueError(f"unknown QP mode {mode!r}, expected one of {MODES}")
    if max_iter is None:
        max_iter = QPTH_ITERATIONS if mode == "qpth" else CONVERGED_ITERATIONS
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1 (got {max_iter})")
    return _Options(mode, int(max_iter), eps, not_improved_lim)


def _run(kkt, p: Array, h: Array, b: Optional[Array], opts: _Options) -> Tuple[List[Optional[Array]], Certificate]:
    """The interior point in `opts.mode`: the point (x, s, λ, ν) it returns and its certificate."""
    if opts.mode == "converged":
        point, cert = _pdipm_certified(kkt, p, h, b, opts.max_iter, opts.tol)
        missed = ~cert.holds(opts.tol)
        if missed.any():
            warnings.warn(f"QP layer: {missed.sum()} of {len(missed)} problems not certified optimal within "
                          f"{opts.max_iter} iterations ({cert.worst()}); raise the iteration budget",
                          RuntimeWarning, stacklevel=4)
        return point, cert
    point, iteration = _pdipm(kkt, p, h, b, opts.eps, opts.max_iter, opts.not_improved_lim)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return point, _certificate(kkt, point, p, h, b, iteration)


class _QPFunction(paddle.autograd.PyLayer):
    """Batched dense QP: forward by the interior point, backward by implicit differentiation."""

    @staticmethod
    def forward(ctx, Q, p, G, h, A, b, opts, sink):
        arrays = [_to_np(t) for t in (Q, p, G, h, A, b)]
        Qn, pn, Gn, hn, An, bn = arrays
        kkt = _DenseKKT(Qn, Gn, An)
        (x, s, lam, nu), cert = _run(kkt, pn, hn, bn if kkt.neq else None, opts)
        sink.append(cert)
        ctx.kkt, ctx.point = kkt, (x, s, lam, nu)
        ctx.needs = [not t.stop_gradient for t in (Q, p, G, h, A, b)]
        return paddle.to_tensor(x, dtype="float64")

    @staticmethod
    def backward(ctx, grad_x):
        x, s, lam, nu = ctx.point
        dx, dlam, dnu = _implicit_solve(ctx.kkt, lam, s, _to_np(grad_x))
        neq = ctx.kkt.neq
        grads = (
            0.5 * (_outer(dx, x) + _outer(x, dx)),                                 # Q
            dx,                                                                    # p
            _outer(dlam, x) + _outer(lam, dx),                                     # G
            -dlam,                                                                 # h
            _outer(dnu, x) + _outer(nu, dx) if neq else np.zeros_like(ctx.kkt.A),  # A
            -dnu if neq else np.zeros((x.shape[0], 0)),                            # b
        )
        return tuple(paddle.to_tensor(g, dtype="float64") if need else None
                     for g, need in zip(grads, ctx.needs))


def _check_batched(Q, p, G, h, A, b) -> None:
    dims = {"Q": (Q, 3), "p": (p, 2), "G": (G, 3), "h": (h, 2), "A": (A, 3), "b": (b, 2)}
    for name, (t, nd) in dims.items():
        if t.ndim != nd:
            raise ValueError(f"qp_solve: {name} must be batched with {nd} dims, got shape {t.shape}")
    if len({t.shape[0] for t, _ in dims.values()}) != 1:
        raise ValueError("qp_solve: all inputs need the same batch size")


def qp_solve(Q: paddle.Tensor, p: paddle.Tensor, G: paddle.Tensor, h: paddle.Tensor,
             A: paddle.Tensor, b: paddle.Tensor, max_iter: Optional[int] = None, eps: float = 1e-12,
             not_improved_lim: int = 3, mode: str = "qpth",
             return_certificate: bool = False):
    """Solve min ½zᵀQz + pᵀz s.t. Gz ≤ h, Az = b for a batch, as qpth 0.0.18's QPFunction.

    Args:
        Q: [B, k, k] symmetric positive definite; p: [B, k]; G: [B, m, k]; h: [B, m];
            A: [B, e, k] and b: [B, e] (e may be 0). Any float dtype; computed in float64.
        mode: "qpth" — qpth's iterations and stopping rules (maxIter = `max_iter`, default
            20; eps, notImprovedLim), hence qpth's iterates, converged or not; "converged" —
            the same steps until every problem's point is a certified optimum (`Certificate`,
            relative primal, dual and duality-gap bound CERTIFIED_TOL), at most `max_iter`
            iterations (default CONVERGED_ITERATIONS; a RuntimeWarning names the problems
            still uncertified then).
        return_certificate: also return the `Certificate` of the returned points.

    Returns:
        z [B, k] float64 (and its certificate). Differentiable w.r.t. every input with
        stop_gradient False (implicit differentiation of the KKT conditions at z, as qpth does).
    """
    _check_batched(Q, p, G, h, A, b)
    opts = _options(mode, max_iter, eps, not_improved_lim)
    try:
        np.linalg.cholesky(_to_np(Q))  # qpth's check_Q_spd
    except np.linalg.LinAlgError as err:
        raise ValueError("qp_solve: Q is not symmetric positive definite") from err
    sink: List[Certificate] = []
    z = _QPFunction.apply(Q, p, G, h, A, b, opts, sink)
    return (z, sink[0]) if return_certificate else z


# ----------------------------------------------------------------------------------------------
# DeepEMD's transport problem
# ----------------------------------------------------------------------------------------------
def _transport_constraints(n: int) -> Tuple[Array, Array]:
    """G = [−I; row-sum rows; column-sum rows] and A = 1ᵀ for the row-major flattened flow."""
    sums = np.concatenate([np.kron(np.eye(n), np.ones((1, n))), np.kron(np.ones((1, n)), np.eye(n))])
    return np.concatenate([-np.eye(n * n), sums]), np.ones((1, n * n))


def _rescale(weight: paddle.Tensor) -> paddle.Tensor:
    """Weights scaled to sum to the node count in the input dtype, as the reference: w·n / Σw.
    Σw is accumulated in float64 and rounded once to the input dtype: Paddle's float32 sum is
    less accurate than torch's (several ulp at 25 nodes), and that error scales every weight."""
    total = weight.cast("float64").sum(axis=1, keepdim=True).cast(weight.dtype)
    return weight * weight.shape[-1] / total


def transport_data(weight1: paddle.Tensor, weight2: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """(h, total) of the transport QP, float64, from the raw node weights [B, n].

    As the reference, the weights are rescaled to sum to n in their own dtype. The reference's
    total is min(Σweight1, Σweight2) of those, summed in float32: that rounding can put it above
    the float64 sum of the same float32 weights (on about half the problems), and then no flow
    meets the row sums (or column sums) and the total at once: the QP is infeasible and no
    interior point converges on it (qpth's 20 iterations stop wherever rounding leaves them).
    The total here is the smaller float64 sum: the largest feasible one, within the float32
    rounding of the sums (a few 1e-6) of the reference's.
    """
    batch = weight1.shape[0]
    w1, w2 = _rescale(weight1).cast("float64"), _rescale(weight2).cast("float64")
    total = paddle.minimum(w1.sum(axis=1), w2.sum(axis=1)).unsqueeze(1)
    n2 = weight1.shape[1] * weight2.shape[1]
    h = paddle.concat([paddle.zeros([batch, n2], "float64"), w1, w2], axis=1)
    return h, total


class _TransportQPFunction(paddle.autograd.PyLayer):
    """The EMD QP from (c, h, b) with the structured Newton solver; same iterates as qp_solve."""

    @staticmethod
    def forward(ctx, c, h, b, n, form, l2_strength, opts, sink):
        cn, hn, bn = (_to_np(t) for t in (c, h, b))
        kappa, c_term = (1e-4, cn) if form == "QP" else (l2_strength, None)
        kkt = _TransportKKT(n, kappa, c_term)
        p = np.zeros_like(cn) if form == "QP" else cn
        (x, s, lam, nu), cert = _run(kkt, p, hn, bn, opts)
        sink.append(cert)
        ctx.kkt, ctx.point, ctx.form, ctx.c = kkt, (x, s, lam, nu), form, cn
        ctx.needs = [not t.stop_gradient for t in (c, h, b)]
        return paddle.to_tensor(x, dtype="float64")

    @staticmethod
    def backward(ctx, grad_x):
        x, s, lam, nu = ctx.point
        dx, dlam, dnu = _implicit_solve(ctx.kkt, lam, s, _to_np(grad_x))
        if ctx.form == "QP":
            # dℓ/dQ = ½(dx xᵀ + x dxᵀ) and Q = ccᵀ + κI give dℓ/dc = (dℓ/dQ + dℓ/dQᵀ) c
            dc = dx * np.sum(x * ctx.c, 1, keepdims=True) + x * np.sum(dx * ctx.c, 1, keepdims=True)
        else:
            dc = dx  # p = c
        grads = (dc, -dlam, -dnu)
        return tuple(paddle.to_tensor(g, dtype="float64") if need else None
                     for g, need in zip(grads, ctx.needs))


def _dense_transport(c: paddle.Tensor, h: paddle.Tensor, b: paddle.Tensor, n: int, form: str,
                     l2_strength: float, opts: _Options, sink: List[Certificate]) -> paddle.Tensor:
    """The same QP through the general layer, with G, A, Q built densely as the reference."""
    batch = c.shape[0]
    G_np, A_np = _transport_constraints(n)
    G = paddle.to_tensor(np.broadcast_to(G_np, (batch,) + G_np.shape).copy())
    A = paddle.to_tensor(np.broadcast_to(A_np, (batch,) + A_np.shape).copy())
    eye = paddle.eye(n * n, dtype="float64").unsqueeze(0).expand([batch, n * n, n * n])
    if form == "QP":
        Q = c.unsqueeze(2) * c.unsqueeze(1) + 1e-4 * eye
        p = paddle.zeros([batch, n * n], "float64")
    else:
        Q, p = l2_strength * eye, c
    z, cert = qp_solve(Q, p, G, h, A, b, max_iter=opts.max_iter, mode=opts.mode, return_certificate=True)
    sink.append(cert)
    return z


def emd_flow_qp(cost: paddle.Tensor, weight1: paddle.Tensor, weight2: paddle.Tensor,
                form: str = "QP", l2_strength: float = 1e-4, solver: str = "structured",
                max_iter: Optional[int] = None, mode: str = "qpth", return_certificate: bool = False):
    """Optimal transport flows as DeepEMD's `emd_inference_qpth` computes them.

    Args:
        cost: [B, n, n] cost matrices (rows: supply nodes of weight1, columns: weight2).
        weight1, weight2: [B, n] positive node weights; rescaled here to sum to n.
        form: "QP" (Q = ccᵀ + 1e-4·I, p = 0) or "L2" (Q = l2_strength·I, p = c), c = cost
            flattened row-major.
        l2_strength: the identity weight of form "L2".
        solver: "structured" (Newton solves in the constraint space, fast) or "dense" (the
            general `qp_solve` on the dense matrices, qpth's elimination order). Same iterates
            up to rounding.
        mode, max_iter: "qpth" runs qpth's 20 iterations (`max_iter` overrides), converged or
            not, as the reference; "converged" iterates until every problem is a certified
            optimum (at most `max_iter`, default CONVERGED_ITERATIONS). See `qp_solve`.
        return_certificate: also return the `Certificate` of the flows (per problem).

    Returns:
        flow [B, n, n] float64 (and its certificate), differentiable w.r.t. cost, weight1 and
        weight2. Constraints: flow ≥ 0, row sums ≤ weight1, column sums ≤ weight2, total =
        min(Σweight1, Σweight2) (made feasible, see `transport_data`).
    """
    if form not in FORMS:
        raise ValueError(f"emd_flow_qp: unknown form {form!r}, expected one of {FORMS}")
    if solver not in ("structured", "dense"):
        raise ValueError(f"emd_flow_qp: unknown solver {solver!r}")
    opts = _options(mode, max_iter)
    batch, n = cost.shape[0], cost.shape[1]
    c = cost.reshape([batch, n * n]).cast("float64")
    h, total = transport_data(weight1, weight2)
    sink: List[Certificate] = []
    if solver == "dense":
        flat = _dense_transport(c, h, total, n, form, l2_strength, opts, sink)
    else:
        flat = _TransportQPFunction.apply(c, h, total, n, form, float(l2_strength), opts, sink)
    flow = flat.reshape([batch, n, n])
    return (flow, sink[0]) if return_certificate else flow

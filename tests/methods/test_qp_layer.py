"""The differentiable QP layer (methods/qp_layer.py): structured vs dense Newton solves, the
optimum, and implicit gradients against finite differences. Fixture parity is in
tests/parity/deepemd_qp_checks.py."""
import numpy as np
import paddle
import pytest

from methods.emd_exact import solve_emd
from methods.qp_layer import emd_flow_qp, qp_solve


def problems(seed: int, batch: int, n: int):
    rng = np.random.default_rng(seed)
    cost = rng.random((batch, n, n)) * 2
    w1, w2 = rng.random((2, batch, n)) + 0.2
    return cost, w1, w2


def flows(cost, w1, w2, grad: bool = False, **kw):
    tensors = [paddle.to_tensor(a, stop_gradient=not grad) for a in (cost, w1, w2)]
    return emd_flow_qp(*tensors, **kw), tensors


@pytest.mark.parametrize("form,strength", [("QP", 1e-4), ("L2", 1e-6), ("L2", 1e-2)])
def test_structured_and_dense_solvers_take_the_same_iterates(form, strength):
    cost, w1, w2 = problems(0, 6, 4)
    for iterations in (3, 8):
        a = flows(cost, w1, w2, form=form, l2_strength=strength, max_iter=iterations)[0].numpy()
        b = flows(cost, w1, w2, form=form, l2_strength=strength, max_iter=iterations, solver="dense")[0].numpy()
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_converged_flows_are_feasible_and_reach_the_transport_optimum():
    """Form L2 with a tiny quadratic term is the EMD LP: the converged flow meets the
    constraints and its cost equals the exact solver's optimum."""
    cost, w1, w2 = problems(1, 8, 6)
    flow = flows(cost, w1, w2, form="L2", l2_strength=1e-6, max_iter=60)[0].numpy()
    n = cost.shape[1]
    s1, s2 = w1 * n / w1.sum(1, keepdims=True), w2 * n / w2.sum(1, keepdims=True)
    assert flow.min() > -1e-8
    assert (flow.sum(2) <= s1 + 1e-6).all() and (flow.sum(1) <= s2 + 1e-6).all()
    np.testing.assert_allclose(flow.sum((1, 2)), n, atol=1e-6)
    lp = solve_emd(cost, s1, s2).cost_value
    np.testing.assert_allclose((flow * cost).sum((1, 2)), lp, atol=1e-4)


@pytest.mark.parametrize("solver", ["structured", "dense"])
@pytest.mark.parametrize("form,strength", [("L2", 0.05), ("QP", 1e-4)])
def test_implicit_gradients_match_finite_differences(solver, form, strength):
    """d Σ flow·(1 - cost) / d(cost, w1, w2) at the converged flow, by central differences."""
    cost, w1, w2 = problems(2, 2, 3)
    kw = dict(form=form, l2_strength=strength, max_iter=80, solver=solver)

    def score(c, a, b):
        flow = flows(c, a, b, **kw)[0].numpy()
        return (flow * (1 - c)).sum()

    flow, (tc, ta, tb) = flows(cost, w1, w2, grad=True, **kw)
    (flow * (1 - tc)).sum().backward()
    eps = 1e-6
    for tensor, array, index in ((tc, cost, (0, 1, 2)), (tc, cost, (1, 0, 0)), (ta, w1, (0, 1)), (tb, w2, (1, 2))):
        plus, minus = [a.copy() for a in (cost, w1, w2)], [a.copy() for a in (cost, w1, w2)]
        which = 0 if array is cost else 1 if array is w1 else 2
        plus[which][index] += eps
        minus[which][index] -= eps
        numeric = (score(*plus) - score(*minus)) / (2 * eps)
        np.testing.assert_allclose(tensor.grad.numpy()[index], numeric, rtol=2e-3, atol=2e-5)


def test_general_qp_layer_solves_and_differentiates_a_small_qp():
    """min ½‖z‖² − pᵀz s.t. z ≤ 1, Σz = 1: the projection of p onto {z ≤ 1, Σz = 1}."""
    p_np = np.array([[2.0, 0.3, -0.4], [0.2, 0.1, 0.0]])
    Q = paddle.to_tensor(np.tile(np.eye(3), (2, 1, 1)))
    p = paddle.to_tensor(-p_np, stop_gradient=False)
    G = paddle.to_tensor(np.tile(np.eye(3), (2, 1, 1)))
    h = paddle.to_tensor(np.ones((2, 3)), stop_gradient=False)
    A = paddle.to_tensor(np.ones((2, 1, 3)))
    b = paddle.to_tensor(np.ones((2, 1)))
    z = qp_solve(Q, p, G, h, A, b, max_iter=50)
    # row 0: z0 hits its bound 1, the rest share 0: z = (1, 0.35, -0.35); row 1: z = p + (1 - Σp)/3
    np.testing.assert_allclose(z.numpy()[0], [1.0, 0.35, -0.35], atol=1e-6)
    np.testing.assert_allclose(z.numpy()[1], p_np[1] + (1 - p_np[1].sum()) / 3, atol=1e-6)
    z[0, 1].backward()
    # z1 = p1 + (0 - p1 - p2)/2 on row 0 (z0 fixed at its bound): dz1/dp = -(0, 1/2, -1/2) for p = -p_np
    np.testing.assert_allclose(p.grad.numpy()[0], [0.0, -0.5, 0.5], atol=1e-5)
    np.testing.assert_allclose(h.grad.numpy()[0], [-0.5, 0.0, 0.0], atol=1e-5)


def test_rejects_a_q_that_is_not_positive_definite_and_unknown_forms():
    Q = paddle.to_tensor(-np.eye(2)[None])
    zeros = paddle.to_tensor(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="positive definite"):
        qp_solve(Q, zeros, paddle.to_tensor(np.eye(2)[None]), zeros, paddle.to_tensor(np.zeros((1, 0, 2))),
                 paddle.to_tensor(np.zeros((1, 0))))
    cost, w1, w2 = problems(3, 1, 2)
    with pytest.raises(ValueError, match="form"):
        flows(cost, w1, w2, form="L1")

"""Float64 as the judge of DeepEMD's float32 SFC (issue 12, item 2): on many random episodes our
float32 fit must stay as close to our float64 fit as float32 allows.

Yardstick S: how far the float64 fit moves when its support is perturbed by relative 2^-24
(one float32 rounding of the inputs), measured in float64 here, so it does not depend on the
BLAS. No float32 computation can promise less; rounding at every SGD step adds to it. Measured
on these episodes (13 nodes, 64 channels, 10 epochs at sfc_lr 100, 12 seeds each): ours
max 3.4 S (1-shot) and 10.3 S (5-shot); a float32 torch transcription of the reference's
computation order with exact LP flows max 3.4 S and 9.8 S; the reference itself, whose cv2.EMD
flows deviate from the LP optimum on a few problems per thousand, up to 76 S and 157,000 S.
The bound is 20 S for the worst seed (twice the worst of ours and of the reference's order)
and 10 S for the median (measured 2.6 S and 6.4 S).
"""
import numpy as np
import paddle
import pytest

from tests.parity.deepemd_checks import deepemd_model

WAY, NODES, CHANNELS, EPOCHS, SEEDS = 5, 13, 64, 10, 12
#: a relative perturbation of one float32 rounding
U32 = 2.0 ** -24
MAX_FACTOR, MEDIAN_FACTOR = 20.0, 10.0


def episode(seed: int, shot: int) -> np.ndarray:
    """A class-major support set [WAY·shot, C, NODES, 1]: a common map, a class signal of 0.2 and
    unit noise, as the fixtures' generator."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal((CHANNELS, NODES, 1))
    centres = rng.standard_normal((WAY, CHANNELS, NODES, 1))
    support = [common + 0.2 * centres[c] + rng.standard_normal((CHANNELS, NODES, 1))
               for c in range(WAY) for _ in range(shot)]
    return np.stack(support).astype(np.float32)


def fit(support: np.ndarray, shot: int, orders: np.ndarray) -> np.ndarray:
    """Our SFC (eval defaults: exact flows, sfc_lr 100, batches of 4) in the support's dtype."""
    model = deepemd_model(eval_solver="exact", sfc_lr=100.0, sfc_update_step=EPOCHS, sfc_bs=4)
    model.eval()
    with paddle.no_grad():
        sfc = model.sfc(paddle.to_tensor(support)[None], WAY, shot, permutations=orders[None])[0]
    return sfc.numpy().astype(np.float64)


@pytest.mark.parametrize("shot", [1, 5])
def test_float32_sfc_is_as_close_to_float64_as_float32_allows(shot):
    ratios = []
    for seed in range(SEEDS):
        support = episode(seed, shot)
        rng = np.random.default_rng(seed + 100)
        orders = np.stack([rng.permutation(WAY * shot) for _ in range(EPOCHS)])
        exact = fit(support.astype(np.float64), shot, orders)
        noise = np.random.default_rng(seed + 200).standard_normal(support.shape)
        moved = fit(support.astype(np.float64) * (1 + U32 * noise), shot, orders)
        yardstick = np.abs(moved - exact).max()
        assert yardstick > 0
        ratios.append(np.abs(fit(support, shot, orders) - exact).max() / yardstick)
    assert max(ratios) <= MAX_FACTOR, f"float32 SFC error / yardstick per seed: {np.round(ratios, 1)}"
    assert np.median(ratios) <= MEDIAN_FACTOR, f"float32 SFC error / yardstick per seed: {np.round(ratios, 1)}"

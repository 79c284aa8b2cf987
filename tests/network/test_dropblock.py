"""DropBlock against an independent numpy transcription of the reference's indexing rule
(bl0 `lib/dropblock.py`, spec neg_margin.md §3.5), for every (feature size, block size) pair the
backbones meet and for random odd/even sizes and seed counts, including seed counts N with
gcd(N, b^2) > 1 (partial blocks), plus the seed-rate schedule and the rescaling."""
import math

import numpy as np
import paddle
import pytest

import network.dropblock as dropblock
from network import build_backbone
from network.dropblock import block_mask, drop_block, regularize


def reference_mask(seeds: np.ndarray, b: int) -> np.ndarray:
    """The reference's rule, written row by row: the nonzero seed indices (row-major, all of
    the batch) are tiled b^2 times, the b^2 offsets (row-major over the b x b block) N times,
    row k adds offset k mod b^2 to seed k mod N, and those cells of the seed grid padded by
    (b-1)//2 before and b//2 after are set; the mask is 1 - that."""
    padded = np.pad(seeds.astype(np.float64), [(0, 0), (0, 0), ((b - 1) // 2, b // 2), ((b - 1) // 2, b // 2)])
    idx = np.argwhere(seeds != 0)
    n = len(idx)
    offsets = np.array([[0, 0, r, c] for r in range(b) for c in range(b)])
    if n:
        k = np.arange(n * b * b)
        cells = idx[k % n] + offsets[k % (b * b)]
        padded[cells[:, 0], cells[:, 1], cells[:, 2], cells[:, 3]] = 1.0
    return 1.0 - padded


def seeds_with_count(rng: np.random.RandomState, shape, n: int) -> np.ndarray:
    """0/1 seeds of `shape` with exactly n ones at random positions."""
    flat = np.zeros(int(np.prod(shape)), dtype=np.float32)
    flat[rng.choice(flat.size, size=n, replace=False)] = 1.0
    return flat.reshape(shape)


def counts_to_try(rng: np.random.RandomState, cells: int, b: int):
    """Seed counts N reaching every gcd(N, b^2): none, one, every seed, a random count, and a
    random multiple of each divisor d > 1 of b^2 (partial blocks unless the multiple happens to
    share more factors)."""
    wanted = {0, 1, cells, int(rng.randint(1, cells + 1))}
    for d in range(2, b * b + 1):
        if (b * b) % d == 0 and d <= cells:
            wanted.add(d * int(rng.randint(1, cells // d + 1)))
    return sorted(wanted)


def dropblock_pairs(name: str, image_size: int, dropblock_size: int) -> set:
    """(map size, block size) of every DropBlock call of the backbone at this image size."""
    # small widths that change at every stage (ResNet-18's halving blocks need a 1x1 shortcut)
    net = build_backbone(name, widths=(4, 8, 12, 16), drop_rate=0.1, dropblock_size=dropblock_size)
    seen = set()
    real = dropblock.drop_block

    def spy(x, block_size, gamma, seeds=None):
        seen.add((x.shape[2], block_size))
        return real(x, block_size, gamma, seeds)

    dropblock.drop_block = spy
    try:
        net.train()
        with paddle.no_grad():
            net(paddle.randn([1, 3, image_size, image_size]))
    finally:
        dropblock.drop_block = real
    return seen


#: the backbones' DropBlock calls: ResNet-12 at its 84 px (maps 10, 5) and other image sizes,
#: ResNet-18 at 224 px (maps 14, 7) with the published blocks 3 and 5, and at other sizes
BACKBONE_SETTINGS = [("ResNet12", 84, 5), ("ResNet12", 80, 5), ("ResNet12", 32, 5), ("ResNet12", 96, 3),
                     ("ResNet18", 224, 3), ("ResNet18", 224, 5), ("ResNet18", 84, 5), ("ResNet18", 160, 3)]


#: every stage's map size: ResNet-12 at 84 px (42/21/10/5, block 5), ResNet-18 at 224 px
#: (56/28/14/7, blocks 3 and 5)
STAGE_PAIRS = {(s, 5) for s in (42, 21, 10, 5)} | {(s, b) for s in (56, 28, 14, 7) for b in (3, 5)}


@pytest.fixture(scope="module")
def backbone_pairs():
    pairs = set(STAGE_PAIRS)
    for name, size, b in BACKBONE_SETTINGS:
        pairs |= dropblock_pairs(name, size, b)
    return pairs


def test_backbones_meet_the_expected_map_and_block_sizes():
    # 84 px ResNet-12: stages 3-4 at 10 and 5; 224 px ResNet-18: 14 and 7; at 32 px ResNet-12's
    # blocks are clipped to its 4 and 2 maps
    assert dropblock_pairs("ResNet12", 84, 5) == {(10, 5), (5, 5)}
    assert dropblock_pairs("ResNet18", 224, 3) == {(14, 3), (7, 3)}
    assert dropblock_pairs("ResNet12", 32, 5) == {(4, 4), (2, 2)}


def _check_pair(rng: np.random.RandomState, size: int, b: int, batch: int, channels: int) -> None:
    grid = size - b + 1
    shape = (batch, channels, grid, grid)
    for n in counts_to_try(rng, int(np.prod(shape)), b):
        seeds = seeds_with_count(rng, shape, n)
        expected = reference_mask(seeds, b)
        got = block_mask(paddle.to_tensor(seeds), b).numpy()
        assert got.shape == expected.shape
        mismatch = np.flatnonzero(got != expected)
        assert mismatch.size == 0, (f"S={size} b={b} N={n} gcd={math.gcd(n, b * b)}: {mismatch.size} mask cells "
                                    f"differ, first at {np.unravel_index(mismatch[0], got.shape)}")


def test_masks_match_the_reference_rule_at_the_backbones_sizes(backbone_pairs):
    rng = np.random.RandomState(0)
    for size, b in sorted(backbone_pairs):
        _check_pair(rng, size, b, batch=2, channels=3)


def test_masks_match_the_reference_rule_at_random_sizes():
    rng = np.random.RandomState(1)
    for _ in range(60):
        b = int(rng.randint(1, 8))
        size = int(rng.randint(b, 24))  # odd and even sizes, from a single cell grid up
        _check_pair(rng, size, b, batch=int(rng.randint(1, 4)), channels=int(rng.randint(1, 5)))


def test_partial_blocks_when_the_seed_count_shares_a_factor_with_b_squared():
    # b = 5 and N = 5 seeds: g = 5, so seed s only gets the offsets o = s (mod 5), i.e. column s
    # of its block (rows 0..4), plus its own cell shifted by (2, 2)
    seeds = np.zeros((1, 5, 6, 6), dtype=np.float32)
    seeds[0, :, 1, 1] = 1.0  # seed s = channel s
    mask = block_mask(paddle.to_tensor(seeds), 5).numpy()
    for s in range(5):
        dropped = set(zip(*np.nonzero(mask[0, s] == 0)))
        assert dropped == {(1 + r, 1 + s) for r in range(5)} | {(3, 3)}
    np.testing.assert_array_equal(mask, reference_mask(seeds, 5))


def test_drop_block_rescales_by_numel_over_kept():
    rng = np.random.RandomState(2)
    for size, b, n in ((21, 5, 40), (7, 3, 9), (10, 5, 21), (14, 3, 12)):
        grid = size - b + 1
        seeds = seeds_with_count(rng, (2, 4, grid, grid), n)
        x = rng.randn(2, 4, size, size).astype(np.float32)
        y = drop_block(paddle.to_tensor(x), b, gamma=0.1, seeds=paddle.to_tensor(seeds)).numpy()
        mask = reference_mask(seeds, b)
        # float32: mask * x * (numel / kept) rounds twice, so 2 ulp of |x| * numel / kept
        np.testing.assert_allclose(y, mask * x * (mask.size / mask.sum()), rtol=3e-7, atol=0)


def _drawn_rate(x: paddle.Tensor, drop_rate: float, b: int, step: int):
    """(grid shape, Bernoulli rate) that `regularize` draws its seeds with."""
    seen = {}
    real = paddle.bernoulli

    def spy(p):
        seen["shape"], seen["p"] = tuple(p.shape), float(p.flatten()[0])
        return real(p)

    paddle.bernoulli = spy
    try:
        regularize(x, drop_rate, True, b, step, training=True)
    finally:
        paddle.bernoulli = real
    return seen["shape"], seen["p"]


def test_seed_rate_schedule_at_the_backbones_sizes(backbone_pairs):
    # keep = max(1 - r t / 40000, 1 - r); gamma = (1 - keep) / b^2 * S^2 / (S - b + 1)^2 with the
    # block clipped to the map (where the reference's grid would be empty)
    for size, b in sorted(backbone_pairs):
        for rate, step in ((0.1, 0), (0.1, 1000), (0.2, 20000), (0.1, 10 ** 6)):
            x = paddle.ones([2, 3, size, size])
            if step == 0:
                assert regularize(x, rate, True, b, step, training=True) is x  # gamma 0: nothing drawn
                continue
            shape, p = _drawn_rate(x, rate, b, step)
            keep = max(1 - rate * step / 40000, 1 - rate)
            grid = size - b + 1
            assert shape == (2, 3, grid, grid)
            assert p == pytest.approx((1 - keep) / b ** 2 * size ** 2 / grid ** 2, rel=1e-6)


def test_the_parity_checker_takes_other_sizes_from_the_entry(tmp_path):
    """A fixture entry of kind neg_margin/dropblock with sizes the shared fixtures lack (21 with
    block 5, 7 with block 3, seed counts sharing a factor with b^2), written from the numpy
    rule above, is read and compared by the parity checker without any change."""
    from tests.parity.checkers import Entry
    from tests.parity.neg_margin_checks import check_dropblock
    rng = np.random.RandomState(6)
    arrays, cases = {}, []
    for b, size, n in ((5, 21, 40), (3, 7, 27), (5, 10, 21)):
        grid = size - b + 1
        seeds = seeds_with_count(rng, (2, 3, grid, grid), n)
        x = rng.randn(2, 3, size, size).astype(np.float32)
        mask = reference_mask(seeds, b).astype(np.float32)
        suffix = f"_b{b}_S{size}"
        arrays.update({"x" + suffix: x, "seed_mask" + suffix: seeds, "block_mask" + suffix: mask,
                       "y" + suffix: (mask * x * np.float32(mask.size / mask.sum())).astype(np.float32)})
        cases.append({"block_size": b, "feat_size": size, "seed_prob": 0.1})
    steps = np.array([0, 100, 20000, 50000])
    arrays["gamma_t"] = steps
    for rate, b, size in ((0.1, 5, 21), (0.2, 3, 7)):
        keep = np.maximum(1 - rate / 40000 * steps, 1 - rate)
        gamma = (1 - keep) / b ** 2 * size ** 2 / (size - b + 1) ** 2
        arrays[f"gamma_r{rate}_b{b}_S{size}"] = gamma.astype(np.float32)
    np.savez(tmp_path / "dropblock_other.npz", **arrays)
    spec = {"name": "dropblock_other.npz", "file": "dropblock_other.npz", "kind": "neg_margin/dropblock",
            "config": {"cases": cases}, "arrays": {k: {} for k in arrays},
            "tolerance": {"block_mask": "exact", "y": {"rtol": 1e-6, "atol": 1e-6}, "gamma": {"rtol": 1e-6, "atol": 0}}}
    entry = Entry(tmp_path, spec)
    check_dropblock(entry)
    entry.assert_all_outputs_checked()

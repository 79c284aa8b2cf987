"""Benchmark of DeepEMD's EMD solvers and evaluation paths on this machine (not a test).

    python bench/emd_solvers.py            # a few minutes
    python bench/emd_solvers.py --quick    # under a minute

Reports, in one run on the same problems:
1. problems per second at DeepEMD's sizes (25x25 FCN, 13x13 Grid, 9x9 Sampling) of
   - the reference's per-pair loop (`emd_inference_opencv` called for every (query, class) pair:
     tensor -> numpy, relu + 1e-5 and normalisation per pair, cv2.EMD, flow back into the
     similarity map), written with Paddle tensors as a line-by-line port would be;
   - cv2.EMD alone in a numpy loop (the solver without the loop's tensor traffic);
   - our `exact` solver (methods/emd_exact.py) on one thread, and in the evaluation's path (all
     problems of the group of episodes the evaluation loop scores together, all threads);
   each the best of 5 runs in a row (steady state: a call right after the second core idled
   pays about 0.3 ms to wake it, 10 % of a --quick group of 300 problems, 0.4 % of a real one);
2. the wall time of a 1-shot FCN test of N episodes (ResNet-12, 84x84, in-memory images; reduced
   width with --quick) with one backbone pass per episode vs the feature cache (each distinct
   image once);
3. the time per 5-shot SFC episode (eval.py defaults: 100 x 7 SGD steps) with each solver, one
   episode alone and the evaluation loop's group of episodes fitted together.
The last line reads `exact vs opencv per-pair: N.Nx` (25x25 problems).
"""
import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import paddle
import paddle.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from methods.deepemd import (  # noqa: E402
    OPENCV_FLOOR,
    DeepEMD,
    centred_cosine,
    cross_reference_weights,
    normalise_weights,
    transport_score,
)
from methods.emd_exact import backend, solve_emd  # noqa: E402
from utils.compat import swapaxes  # noqa: E402

TEMPERATURE = 12.5


def episode_features(rng: np.random.Generator, n_query: int, way: int, nodes: int, channels: int = 640):
    """Support and query node features [*, C, nodes, 1] with a class signal, as a trained
    backbone gives (positive activations after ReLU, correlated within a class)."""
    centres = rng.standard_normal((way, channels, 1, 1))
    proto = np.maximum(centres + rng.standard_normal((way, channels, nodes, 1)), 0)
    labels = np.arange(n_query) % way
    query = np.maximum(centres[labels] + rng.standard_normal((n_query, channels, nodes, 1)), 0)
    return paddle.to_tensor(proto.astype(np.float32)), paddle.to_tensor(query.astype(np.float32))


def reference_per_pair(sim: paddle.Tensor, weight_1: paddle.Tensor, weight_2: paddle.Tensor) -> paddle.Tensor:
    """The reference's `get_emd_distance(solver='opencv')` loop, pair by pair."""
    import cv2
    num_query, num_proto, n, _ = sim.shape
    sim = sim.clone()
    for i in range(num_query):
        for j in range(num_proto):
            cost = (1 - sim[i, j]).detach().numpy()
            w1 = F.relu(weight_1[i, j]) + OPENCV_FLOOR
            w1 = (w1 * n / float(w1.sum())).detach().numpy().reshape(-1, 1)
            w2 = F.relu(weight_2[j, i]) + OPENCV_FLOOR
            w2 = (w2 * n / float(w2.sum())).detach().numpy().reshape(-1, 1)
            flow = cv2.EMD(w1, w2, cv2.DIST_USER, cost)[2]
            sim[i, j] = sim[i, j] * paddle.to_tensor(flow)
    return sim.sum([-1, -2]) * (TEMPERATURE / n)


def batched(sim: paddle.Tensor, weight_1: paddle.Tensor, weight_2: paddle.Tensor, solver: str) -> paddle.Tensor:
    """Our path: every problem of the episodes (leading dimensions) in one call (`transport_score`)."""
    *batch, n, m = sim.shape
    supply = normalise_weights(weight_1.reshape([-1, n]))
    demand = normalise_weights(swapaxes(weight_2, -3, -2).reshape([-1, m]))
    score = transport_score(sim, supply, demand, solver)
    return (score * (TEMPERATURE / n)).reshape(batch)


def cv2_alone(cost: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> None:
    import cv2
    for k in range(len(cost)):
        cv2.EMD(w1[k][:, None], w2[k][:, None], cv2.DIST_USER, cost[k])


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best wall time of `repeat` runs one after another (the machine may be shared; a run of a
    few milliseconds can lose a scheduler tick)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_problems(quick: bool) -> Dict[int, float]:
    """Problems per second of each path at each size; returns {nodes: our rate / per-pair rate}.
    The per-pair loop and cv2.EMD alone solve one episode's problems; our path solves those of
    the group of episodes the evaluation loop scores together (`eval_episode_batch`)."""
    rng = np.random.default_rng(0)
    ratios = {}
    n_query, group = (15, 4) if quick else (75, DeepEMD.eval_episode_batch)
    print(f"exact solver backend: {backend()}, threads available: {len(os.sched_getaffinity(0))}; "
          f"{n_query} queries x 5 classes per episode, our path on {group} episodes at once")
    print(f"{'nodes':>5} | {'ref. per-pair loop':>18} {'cv2.EMD alone':>13} {'exact, 1 thread':>15} "
          f"{'exact, eval path':>16}   (problems per second)")
    for nodes, label in ((25, "FCN"), (13, "Grid"), (9, "Sampling")):
        features = [episode_features(rng, n_query, 5, nodes) for _ in range(group)]
        proto, query = (paddle.stack([f[k] for f in features]) for k in (0, 1))
        weight_1, weight_2 = cross_reference_weights(proto, query)
        sim = centred_cosine(proto, query)
        cost = (1 - sim).reshape([-1, nodes, nodes]).numpy()
        w1 = normalise_weights(weight_1.reshape([-1, nodes])).numpy()
        w2 = normalise_weights(swapaxes(weight_2, -3, -2).reshape([-1, nodes])).numpy()
        one_episode = n_query * 5
        with paddle.no_grad():
            # same scores from both paths; this first call of each is also the warm-up of its timing
            np.testing.assert_allclose(reference_per_pair(sim[0], weight_1[0], weight_2[0]).numpy(),
                                       batched(sim, weight_1, weight_2, "exact")[0].numpy(), atol=1e-4)
            # each lambda binds this iteration's arrays (defaults) and is timed before the next one
            per_pair = timed(lambda s=sim, a=weight_1, b=weight_2: reference_per_pair(s[0], a[0], b[0]))
            alone = timed(lambda c=cost, a=w1, b=w2, n=one_episode: cv2_alone(c[:n], a[:n], b[:n]))
            one = timed(lambda c=cost, a=w1, b=w2: solve_emd(c, a, b, threads=1))
            ours = timed(lambda s=sim, a=weight_1, b=weight_2: batched(s, a, b, "exact"))
        rates = (one_episode / per_pair, one_episode / alone, len(cost) / one, len(cost) / ours)
        print(f"{nodes:>5} | {rates[0]:>18,.0f} {rates[1]:>13,.0f} {rates[2]:>15,.0f} {rates[3]:>16,.0f}   "
              f"({label}: {rates[3] / rates[0]:.1f}x the per-pair loop, {rates[3] / rates[1]:.1f}x cv2.EMD alone)")
        ratios[nodes] = rates[3] / rates[0]
    return ratios


class RandomImages(paddle.io.Dataset):
    """Deterministic random 84x84 images (no decoding: the backbone is what is timed)."""

    def __init__(self, n_classes: int, per_class: int, size: int = 84):
        self.labels = [c for c in range(n_classes) for _ in range(per_class)]
        self.size = size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        rng = np.random.default_rng(index)
        return rng.standard_normal((3, self.size, self.size)).astype(np.float32), self.labels[index]


def deepemd_model(widths=None, **flags):
    """DeepEMD-FCN on ResNet-12 (full width unless `widths`) with eval.py's defaults."""
    from methods import options_for
    from network import build_backbone
    options = options_for("deepemd", **{"model": "ResNet12", "eval_solver": "exact", **flags})
    return DeepEMD(build_backbone("ResNet12", **({"widths": widths} if widths else {})), options)


def bench_evaluation(quick: bool) -> None:
    """1-shot FCN test: one backbone pass per episode vs the feature cache. Every episode uses
    all 80 images of a 5-class set in other roles, so the cache needs 80 passes in all."""
    from data.samplers import EpisodeSampler
    from frn.engine import evaluate
    episodes_n, widths = (4, (16, 40, 80, 160)) if quick else (10, None)
    data = RandomImages(n_classes=5, per_class=16)
    episodes = list(EpisodeSampler(data.labels, 5, 1, 15, episodes_n, seed=0, split="novel"))
    model = deepemd_model(widths)
    times, accs = {}, {}
    for name, cache in (("per-episode backbone", False), ("feature cache", True)):
        start = time.perf_counter()
        accs[name], _ = evaluate(model, data, episodes, 5, 1, 15, use_cache=cache)
        times[name] = time.perf_counter() - start
    np.testing.assert_allclose(*accs.values(), atol=1e-6)  # same episodes, same accuracies
    width = "reduced-width (16-40-80-160)" if widths else "full-width"
    print(f"1-shot FCN test, {episodes_n} episodes of 80 images, {width} ResNet-12 84x84: "
          + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
          + f" ({times['per-episode backbone'] / times['feature cache']:.1f}x)")


def bench_sfc(quick: bool) -> None:
    """5-shot SFC fits (eval.py defaults: 100 epochs x 7 mini-batches): one episode alone with
    each solver, and the evaluation loop's group of episodes fitted together."""
    rng = np.random.default_rng(1)
    steps = 10 if quick else 100
    group = DeepEMD.eval_episode_batch
    episodes = lambda count: paddle.concat([episode_features(rng, 1, 25, 25)[0].reshape([1, 25, 640, 5, 5])
                                           for _ in range(count)])
    for solver, count in (("opencv", 1), ("exact", 1), ("exact", group)):
        model = deepemd_model(eval_solver=solver, sfc_update_step=steps)
        model.eval()
        support = episodes(count)
        seconds = timed(lambda model=model, support=support: model.sfc(support, 5, 5), repeat=1) * 100 / steps / count
        print(f"5-shot SFC, {solver}, {count} episode(s) at once: {seconds:.2f} s per episode of 700 SGD steps"
              + (f" (measured {steps * 7} steps)" if steps != 100 else ""))
    print("   the official code on a 2-core Intel Xeon VM: 127-226 s per 5-shot episode (3 runs: 127, 147, 226 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer problems and episodes (under a minute)")
    args = parser.parse_args()
    paddle.set_device("cpu")
    ratios = bench_problems(args.quick)
    bench_evaluation(args.quick)
    bench_sfc(args.quick)
    print(f"exact vs opencv per-pair: {ratios[25]:.1f}x")


if __name__ == "__main__":
    main()

"""Episodes per second of Negative-Margin's meta-test fitting: one episode at a time vs batched.

Both paths score the same episodes from the same feature cache (each test image through the
backbone once) with the same random draws (numpy seeded identically before each path), and must
give the same per-episode accuracies; the script stops with an error otherwise.

    python results/bench_neg_margin_fit.py --dataset mini_imagenet --data_path DATA --model Conv4 \
        --image_size 42 --model_path RUN/best_model.pdparams --n_shot 1 --episodes 2000 --naive_episodes 200

Flags other than the script's own are test.py's (method flags included). Without --model_path
the backbone keeps its initial weights: the timing holds, the accuracies mean nothing.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.samplers import EpisodeSampler  # noqa: E402
from frn.args import parse, test_parser  # noqa: E402
from frn.checkpoint import load_weights  # noqa: E402
from utils.device import seed_everything, select_device  # noqa: E402
from frn.engine import FeatureCache, score_episodes  # noqa: E402
from frn.runs import build_model, image_list  # noqa: E402


def timed_scores(model, cache: FeatureCache, episodes, group: int, args) -> tuple:
    """(accuracies, seconds) of the episodes scored `group` at a time, from numpy seed args.seed."""
    np.random.seed(args.seed)
    start = time.perf_counter()
    accs, _ = score_episodes(model, cache.batches(episodes, group), -(-len(episodes) // group), args.test_n_way,
                             args.n_shot, args.n_query, desc=f"{group} at a time")
    return accs, time.perf_counter() - start


def main() -> None:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--episodes", type=int, default=2000, help="episodes of the batched path")
    own.add_argument("--naive_episodes", type=int, default=200, help="episodes of the one-at-a-time path")
    own.add_argument("--group", type=int, default=0, help="episodes fitted together (default: the method's)")
    mine, rest = own.parse_known_args()
    args = parse(test_parser(), ["--method", "neg_margin", *rest])
    select_device(args.gpu)
    seed_everything(args.seed)
    dataset = image_list(args, args.split, training=False)
    model = build_model(args.options)
    if args.model_path:
        load_weights(model, args.model_path)
    model.eval()
    episodes = list(EpisodeSampler(dataset.labels, args.test_n_way, args.n_shot, args.n_query, mine.episodes,
                                   seed=args.seed, split=args.split))
    start = time.perf_counter()
    cache = FeatureCache(model, dataset, episodes, args.num_workers)
    print(f"feature cache: {len(cache)} images, dim {cache.store.row_shape}, "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    steps = model.fit_steps(args.n_shot, args.test_n_way * args.n_shot)
    group = mine.group or model.eval_episode_batch
    naive, naive_s = timed_scores(model, cache, episodes[:mine.naive_episodes], 1, args)
    batched, batched_s = timed_scores(model, cache, episodes, group, args)
    same = np.array_equal(naive, batched[:len(naive)])
    print(f"{args.test_n_way}-way {args.n_shot}-shot, {steps} fitting steps per episode")
    print(f"one at a time: {len(naive)} episodes in {naive_s:.1f} s = {len(naive) / naive_s:.2f} episodes/s")
    print(f"batched ({group} at a time): {len(batched)} episodes in {batched_s:.1f} s = "
          f"{len(batched) / batched_s:.2f} episodes/s ({len(batched) / batched_s / (len(naive) / naive_s):.0f}x)")
    print(f"same accuracies on the first {len(naive)} episodes: {same}; "
          f"batched mean {batched.mean():.2f}% over {len(batched)} episodes")
    if not same:
        raise SystemExit("error: the batched and one-at-a-time fits disagree")


if __name__ == "__main__":
    main()

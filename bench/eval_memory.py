"""Memory and time of the evaluation feature cache at mini- and tiered-ImageNet scale (not a test).

    python bench/eval_memory.py             # the four cases below, 10,000 episodes each
    python bench/eval_memory.py --quick     # 1,000 episodes, splits of 12,000 and 50,000 images

A 5-way 5-shot 15-query evaluation (100 images per episode) on a synthetic split of ResNet-12's
feature size (640 x 5 x 5 float32 per image, 64 KB), without running a backbone: a stand-in
`extract` turns each image's index into its map (a per-class map plus an index term) and a
prototype head scores the episodes, so the numbers are the cache's own cost. Each case runs in
a fresh process, which reports

- peak RSS growth: the process's peak resident memory (VmHWM) minus its resident memory just
  before the evaluation (the dataset, the episodes and Paddle are already loaded then);
- Paddle's peak: the most bytes Paddle's CPU allocator held at once during the evaluation (the
  "device" memory on this CPU-only machine: every tensor);
- where the cache was (device tensor / host RAM / temporary file) and its size;
- wall time of the feature pass (extraction and storing), of the reads (each group of episodes'
  features gathered from the cache onto the device) and of the stand-in head with the accuracy
  bookkeeping, and the mean accuracy (equal across cases of one split: the same features).

Cases: `device` is the previous cache (every feature in one device tensor, as
`paddle.concat` of the batches); `default` and `file` are frn/engine.py's `FeatureCache` with
its default budget (--feature_cache_gb 2: in RAM up to 2 GB, else a file) or 0 (always a file).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHANNELS, POSITIONS = 640, 25     # ResNet-12 at 84 px: 640 x 5 x 5
WAY, SHOT, QUERY = 5, 5, 15
BATCH, GROUP = 64, 10             # extraction batch (engine default); episodes scored together


def status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class Timed:
    """Wraps an iterator and adds up the time spent producing its items (the cache's reads)."""

    def __init__(self, items):
        self.items, self.seconds = iter(items), 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.items)
        finally:
            self.seconds += time.perf_counter() - start


def run_case(images: int, mode: str, episodes: int) -> dict:
    """One case in this process; returns its measurements."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    import paddle
    from paddle.base import core

    from data.samplers import EpisodeSampler
    from frn.engine import FeatureCache, extract_features, score_episodes

    per_class = 600 if images <= 12000 else 1250          # mini: 20 x 600; tiered-like: 160 x 1,250
    labels = np.repeat(np.arange(images // per_class), per_class)

    class Split(paddle.io.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return np.array([i, labels[i]], dtype="float32"), labels[i]

    class Maps(paddle.nn.Layer):
        """Each image's 25 x 640 map: its class's map plus a small index term (no backbone)."""
        features_are_frozen_at_test = True
        eval_episode_batch = GROUP

        def __init__(self, n_classes: int):
            super().__init__()
            rng = np.random.RandomState(0)
            self.class_maps = paddle.to_tensor(rng.rand(n_classes, POSITIONS, CHANNELS).astype("float32"))

        def extract(self, batch):
            index, label = batch[:, 0], batch[:, 1].astype("int64")
            noise = paddle.sin(index[:, None, None] * paddle.arange(1, CHANNELS + 1, dtype="float32") / 997.0)
            return self.class_maps[label] + 2.0 * noise

        def episode_scores_batch(self, support, query, way, shot):
            protos = support.mean(axis=2).reshape([support.shape[0], way, shot, -1]).mean(axis=2)
            return -((query.mean(axis=2).unsqueeze(2) - protos.unsqueeze(1)) ** 2).sum(-1)

    data, model = Split(), Maps(len(set(labels.tolist())))
    drawn = list(EpisodeSampler(labels, WAY, SHOT, QUERY, episodes, seed=0, split="test"))
    distinct = len({i for e in drawn for i in e})
    rss_before = status_kb("VmRSS")
    paddle_before = core.host_memory_stat_current_value("Allocated", 0)
    core.host_memory_stat_reset_peak_value("Allocated", 0)
    start = time.perf_counter()
    if mode == "device":  # the previous FeatureCache: one device tensor of every needed image
        needed = sorted({i for e in drawn for i in e})
        features = extract_features(model, data, needed, batch_size=BATCH)
        row = {index: r for r, index in enumerate(needed)}

        def batches():
            for s in range(0, len(drawn), GROUP):
                chunk = drawn[s:s + GROUP]
                rows = paddle.to_tensor([row[i] for e in chunk for i in e])
                yield features[rows].reshape([len(chunk), len(chunk[0]), *features.shape[1:]])
        where, cache_bytes = "device", int(np.prod(features.shape)) * 4
        extracted = time.perf_counter()
        reads = Timed(batches())
        accs, _ = score_episodes(model, reads, -(-len(drawn) // GROUP), WAY, SHOT, QUERY)
    else:
        with FeatureCache(model, data, drawn, ram_gb=2.0 if mode == "default" else 0.0, batch_size=BATCH) as cache:
            where = "host RAM" if cache.store.in_ram else "temp file"
            cache_bytes = cache.store.nbytes
            extracted = time.perf_counter()
            reads = Timed(cache.batches(drawn, GROUP))
            accs, _ = score_episodes(model, reads, -(-len(drawn) // GROUP), WAY, SHOT, QUERY)
    done = time.perf_counter()
    return {"images": images, "mode": mode, "episodes": len(drawn), "distinct": distinct, "where": where,
            "cache_mb": cache_bytes / 2 ** 20,
            "rss_growth_mb": (status_kb("VmHWM") - rss_before) / 1024,
            "paddle_peak_mb": (core.host_memory_stat_peak_value("Allocated", 0) - paddle_before) / 2 ** 20,
            "extract_s": extracted - start, "read_s": reads.seconds, "score_s": done - extracted - reads.seconds,
            "acc": float(np.mean(accs)),
            "threads": os.environ.get("OMP_NUM_THREADS", "unset"), "paddle": paddle.__version__}


def spawn(images: int, mode: str, episodes: int) -> dict:
    """`run_case` in a fresh interpreter, so that each peak RSS is its own."""
    out = subprocess.run([sys.executable, __file__, "--case", str(images), mode, "--episodes", str(episodes)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 episodes; 12,000 and 50,000 images")
    parser.add_argument("--episodes", type=int, default=0, help="episodes per case (default 10,000)")
    parser.add_argument("--case", nargs=2, metavar=("IMAGES", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    episodes = args.episodes or (1000 if args.quick else 10000)
    if args.case:
        print(json.dumps(run_case(int(args.case[0]), args.case[1], episodes)))
        return
    big = 50000 if args.quick else 200000
    cases = [(12000, "device"), (12000, "default"), (12000, "file"), (big, "default")]
    row = POSITIONS * CHANNELS * 4
    print(f"{episodes} episodes of {WAY}-way {SHOT}-shot {QUERY}-query, features {CHANNELS}x5x5 float32 "
          f"({row // 1024} KB/image), groups of {GROUP} episodes, extraction batches of {BATCH}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, resource peak of this driver "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")
    print(f"{'images':>8} {'cache':>7} {'distinct':>8} {'where':>10} {'size MB':>8} {'peak RSS +MB':>12} "
          f"{'Paddle peak MB':>14} {'features s':>10} {'reads s':>7} {'head s':>6} {'acc %':>7}")
    results = []
    for images, mode in cases:
        r = spawn(images, mode, episodes)
        results.append(r)
        print(f"{r['images']:>8} {r['mode']:>7} {r['distinct']:>8} {r['where']:>10} {r['cache_mb']:>8.0f} "
              f"{r['rss_growth_mb']:>12.0f} {r['paddle_peak_mb']:>14.1f} {r['extract_s']:>10.1f} "
              f"{r['read_s']:>7.1f} {r['score_s']:>6.1f} {r['acc']:>7.3f}", flush=True)
    small = [r for r in results if r["images"] == 12000]
    print(f"same accuracy on 12,000 images in every cache: {len({r['acc'] for r in small}) == 1}")
    bound = 2 * 1024 + (BATCH + GROUP * WAY * (SHOT + QUERY)) * row / 2 ** 20
    print(f"stated bound on the cache's memory: --feature_cache_gb (2048 MB) in RAM + one extraction batch + "
          f"one group = {bound:.0f} MB, whatever the split; Paddle (device) side: batch + group = "
          f"{(BATCH + GROUP * WAY * (SHOT + QUERY)) * row / 2 ** 20:.0f} MB of features")
    print(f"Paddle {results[0]['paddle']}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

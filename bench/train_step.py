"""Training-step speed on this machine, side by side with PyTorch, and the loader that feeds it
(not a test).

    python bench/train_step.py                      # about 15 minutes on a 2-core CPU
    python bench/train_step.py --quick              # Conv-4 FRN only, 1 repeat (a few minutes)

1. The project's own episodic training step (frn/engine.py `train_one_epoch` with
   `episode_step`: forward, loss, backward, SGD with Nesterov momentum and weight decay, the
   loop's bookkeeping) on synthetic images, no loader:
   - frn_conv4:     Conv-4 FRN, 20-way 5-shot 15 queries, 84 px (the paper's Conv-4 recipe)
   - proto_conv4:   Conv-4 ProtoNet, the same episode
   - frn_resnet12:  ResNet-12 FRN, 5-way 5-shot 15 queries, 84 px
   and, in the same run, PyTorch's step of the same computation
   (bench/torch_step.py, or --torch_reference PATH; torch only there, the
   product never imports it). Every measurement is a fresh process; Paddle's and PyTorch's
   alternate, each repeated --repeats times, and the best of each is kept (the least disturbed
   by other work on the machine). Per model and thread count:
       paddle/torch step ratio: X.XX     (Paddle's steps/s over PyTorch's; > 1: Paddle faster)
2. images/s of the training loader (data/transforms.py train transform of mini_imagenet,
   frn/engine.py `loader`, --workers 0/1/2/4 worker processes) on synthetic JPEG files (or
   --data_path's base.json), against the images/s the step consumes.
The load average is printed with every measurement: numbers taken on a busy machine are
upper bounds of the time a quiet one needs.
"""
import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TORCH_REFERENCE = REPO / "bench" / "torch_step.py"


class Model(NamedTuple):
    method: str        # registry name
    backbone: str      # --model
    torch_method: str  # torch_step.py --method ("" = no baseline)
    way: int
    shot: int
    query: int
    size: int

    @property
    def images(self) -> int:
        return self.way * (self.shot + self.query)


MODELS: Dict[str, Model] = {
    "frn_conv4": Model("meta_frn", "Conv4", "frn", 20, 5, 15, 84),
    "proto_conv4": Model("protonet", "Conv4", "proto", 20, 5, 15, 84),
    "frn_resnet12": Model("meta_frn", "ResNet12", "frn", 5, 5, 15, 84),
}


# ----------------------------------------------------------------------------------------
# child processes: one measurement each
# ----------------------------------------------------------------------------------------
def paddle_step_rate(model: Model, threads: int, steps: int, warmup: int, profile: bool) -> float:
    """Steps per second of the project's training step (fresh model, one synthetic episode)."""
    sys.path.insert(0, str(REPO))
    import utils  # noqa: F401  (first: records the thread variables before Paddle's import)
    # isort: split
    import paddle

    from frn.engine import episode_step, train_one_epoch
    from frn.runs import build_model
    from methods import options_for
    from utils.device import set_cpu_threads
    from utils.optim import build_optimizer, build_scheduler
    set_cpu_threads(threads)
    paddle.seed(0)
    net = build_model(options_for(model.method, model=model.backbone, image_size=model.size, way=model.way,
                                  stage="meta_train"))
    optimizer = build_optimizer(net, build_scheduler(0.1, 0.1, milestones=[10 ** 6]), "sgd", 5e-4,
                                momentum=0.9, nesterov=True)
    step = episode_step(model.way, model.shot, model.query)
    batch = [paddle.randn([model.images, 3, model.size, model.size])]

    def run(n: int) -> None:
        train_one_epoch(net, [batch] * n, n, optimizer, 0, step, lambda line: None, print_freq=10 ** 9)
    run(warmup)
    if profile:
        print_profile(run)
    start = time.perf_counter()
    run(steps)
    return steps / (time.perf_counter() - start)


def print_profile(run) -> None:
    """Paddle's operator table of one step (where the time goes)."""
    import paddle.profiler as profiler
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU])
    prof.start()
    run(1)
    prof.step()
    prof.stop()
    prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False, time_unit="ms")


def loader_rate(workers: int, batches: int, batch_images: int, folder: str, shared: bool) -> Dict[str, float]:
    """Images per second of the training loader over `batches` batches (the first, which pays
    the workers' start, timed apart)."""
    sys.path.insert(0, str(REPO))
    import utils  # noqa: F401
    from data.datasets import ImageList, filelist_path
    from data.transforms import train_transform
    from frn.engine import allow_shared_memory, loader
    from utils.device import set_cpu_threads
    set_cpu_threads(1)
    allow_shared_memory(shared)
    dataset = ImageList(filelist_path(folder, "base"), train_transform("mini_imagenet", 84))
    n = len(dataset)
    order = [[(b * batch_images + i) % n for i in range(batch_images)] for b in range(batches + 1)]
    start = time.perf_counter()
    iterator = iter(loader(dataset, order, workers))
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in iterator:
        pass
    return {"images_per_s": batches * batch_images / (time.perf_counter() - start), "first_batch_s": first}


# ----------------------------------------------------------------------------------------
# the parent: interleaved measurements
# ----------------------------------------------------------------------------------------
def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def child(argv: Sequence[str], env: Optional[Dict[str, str]] = None, timeout: float = 3600) -> str:
    """Run a measurement in a fresh Python; its last output line."""
    run_env = {**os.environ, "TQDM_DISABLE": "1", **(env or {})}
    with tempfile.TemporaryDirectory() as scratch:  # where Paddle's profiler drops its trace files
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=run_env,
                             timeout=timeout, cwd=scratch)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{out.stderr[-2000:]}")
    if "--profile" in argv:
        print(out.stdout.rsplit("\n", 2)[0])
    return out.stdout.strip().splitlines()[-1]


def without_thread_variables() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def measure_paddle(name: str, threads: int, steps: int, warmup: int, profile: bool = False) -> float:
    argv = [str(Path(__file__).resolve()), "--child", "paddle", "--models", name, "--threads", str(threads),
            "--steps", str(steps), "--warmup", str(warmup)] + (["--profile"] if profile else [])
    return float(child(argv))


def measure_torch(reference: Path, model: Model, threads: int, steps: int, warmup: int) -> float:
    # --backbone only where it is not Conv-4, so that a Conv-4-only reference script still runs
    backbone = [] if model.backbone == "Conv4" else ["--backbone", model.backbone.lower()]
    argv = [str(reference), "--method", model.torch_method, *backbone, "--way", str(model.way), "--shot",
            str(model.shot), "--query", str(model.query), "--size", str(model.size), "--steps", str(steps),
            "--warmup", str(warmup)]
    line = child(argv, env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return float(line.split(":")[-1].split("steps/s")[0])  # "torch frn conv4 20w5s15q: 0.123 steps/s (2 threads)"


def compare(name: str, threads: int, args, reference: Optional[Path]) -> Optional[float]:
    """Best-of-N steps/s of Paddle (and PyTorch, alternating); prints them and the ratio."""
    model = MODELS[name]
    with_torch = reference is not None and bool(model.torch_method)
    paddle_rates, torch_rates, loads = [], [], []
    for repeat in range(args.repeats):
        loads.append(load_average())
        order = ["paddle", "torch"] if repeat % 2 == 0 else ["torch", "paddle"]
        for framework in order:
            if framework == "paddle":
                paddle_rates.append(measure_paddle(name, threads, args.steps, args.warmup))
            elif with_torch:
                torch_rates.append(measure_torch(reference, model, threads, args.steps, args.warmup))
        loads.append(load_average())
    best = max(paddle_rates)
    what = (f"{name} ({model.backbone} {model.method} {model.way}w{model.shot}s{model.query}q {model.size}px), "
            f"{threads} thread(s)")
    print(f"{what}: paddle best {1 / best:.2f} s/step ({best * model.images:.0f} images/s) of "
          f"{[round(1 / r, 2) for r in paddle_rates]}", end="")
    if torch_rates:
        print(f"; torch best {1 / max(torch_rates):.2f} s/step of {[round(1 / r, 2) for r in torch_rates]}", end="")
    print(f"; load average {min(loads):.2f}-{max(loads):.2f}")
    if torch_rates:
        print(f"paddle/torch step ratio: {best / max(torch_rates):.2f}   ({name}, {threads} thread(s))", flush=True)
    return best


def synthetic_jpegs(folder: str, count: int, pixels: int) -> None:
    """`count` JPEG photos-like images (smooth colour fields with noise) in `folder`, 10 classes,
    with the base.json filelist the loader reads."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    names, labels = [], []
    grid = np.linspace(0, 1, pixels)
    for i in range(count):
        field = np.stack([np.outer(np.sin(grid * rng.uniform(1, 8)), np.cos(grid * rng.uniform(1, 8)))
                          for _ in range(3)], -1)
        pixels_ = np.clip((field * 0.5 + 0.5) * 255 + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        path = os.path.join(folder, "images", f"{i:05d}.jpg")
        Image.fromarray(pixels_).save(path, quality=90)
        names.append(path)
        labels.append(i % 10)
    meta = {"label_names": [f"c{c}" for c in range(10)], "image_names": names, "image_labels": labels}
    with open(os.path.join(folder, "base.json"), "w") as f:
        json.dump(meta, f)


def compare_loader(args, step_images_per_s: Optional[float]) -> None:
    """images/s of the training loader for each worker count, against the step's."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data_path
        if not folder:
            folder = tmp
            synthetic_jpegs(folder, args.loader_images, args.loader_px)
        source = folder if args.data_path else f"{args.loader_images} synthetic {args.loader_px}px JPEGs"
        print(f"training loader (mini_imagenet train transform, batches of {args.loader_batch} images, {source}):")
        for workers in args.workers:
            for shared in ([True, False] if workers and args.both_transports else [True]):
                argv = [str(Path(__file__).resolve()), "--child", "loader", "--loader_workers", str(workers),
                        "--loader_batches", str(args.loader_batches), "--loader_batch", str(args.loader_batch),
                        "--data_path", folder]
                if not shared:
                    argv.append("--no_shared_memory")
                load = load_average()
                result = json.loads(child(argv, env=without_thread_variables()))
                transport = "" if not workers else (", shared memory" if shared else ", pipe")
                line = (f"  --num_workers {workers}{transport}: {result['images_per_s']:.0f} images/s "
                        f"(first batch {result['first_batch_s']:.2f} s), load average {load:.2f}")
                if step_images_per_s:
                    line += f"; the step takes {step_images_per_s:.0f} images/s"
                print(line, flush=True)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} usable cores"


def versions(reference: Optional[Path]) -> str:
    paddle_version = child(["-c", "import paddle; print(paddle.__version__)"])
    text = f"paddle {paddle_version}"
    if reference is not None:
        text += ", torch " + child(["-c", "import torch; print(torch.__version__)"])
    return text


def torch_reference(args) -> Optional[Path]:
    """The PyTorch baseline's path, or None (saying why) when it cannot run."""
    if importlib.util.find_spec("torch") is None:
        print("torch not installed: timing Paddle only (pip install torch==2.13.0 for the side-by-side)")
        return None
    path = Path(args.torch_reference)
    if not path.is_file():
        print(f"torch reference step not found at {path}: timing Paddle only (--torch_reference PATH)")
        return None
    return path


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="Conv-4 FRN only, 1 repeat, loader with 0 and 2 workers")
    add("--models", default="frn_conv4,proto_conv4,frn_resnet12", help=f"comma-separated, of {sorted(MODELS)}")
    add("--threads", default="1,2", help="comma-separated thread counts (Paddle's and PyTorch's alike)")
    add("--repeats", type=int, default=3, help="fresh processes per framework, model and thread count (best kept)")
    add("--steps", type=int, default=2, help="timed steps per process")
    add("--warmup", type=int, default=1, help="untimed steps first")
    add("--torch_reference", default=str(DEFAULT_TORCH_REFERENCE), help="PyTorch baseline script")
    add("--profile", action="store_true", help="print Paddle's operator table of one step per model")
    add("--no_loader", action="store_true", help="skip the loader measurement")
    add("--workers", default="0,1,2,4", help="comma-separated --num_workers values for the loader")
    add("--both_transports", action="store_true", help="time worker batches through a pipe as well")
    add("--data_path", default="", help="a dataset folder with base.json (default: synthetic JPEGs)")
    add("--loader_images", type=int, default=400, help="synthetic images")
    add("--loader_px", type=int, default=84, help="synthetic image side (mini-ImageNet's files are 84 px)")
    add("--loader_batch", type=int, default=400, help="images per batch (one 20-way 5-shot 15-query episode)")
    add("--loader_batches", type=int, default=4, help="timed batches per worker count")
    add("--child", choices=["paddle", "loader"], help=argparse.SUPPRESS)
    add("--loader_workers", type=int, default=0, help=argparse.SUPPRESS)
    add("--no_shared_memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "paddle":
        print(paddle_step_rate(MODELS[args.models], int(args.threads), args.steps, args.warmup, args.profile))
        return
    if args.child == "loader":
        print(json.dumps(loader_rate(args.loader_workers, args.loader_batches, args.loader_batch, args.data_path,
                                     not args.no_shared_memory)))
        return
    if args.quick:
        args.models, args.repeats, args.workers = "frn_conv4", 1, "0,2"
    args.workers = [int(w) for w in args.workers.split(",")]
    reference = torch_reference(args)
    print(f"machine: {machine()}; {versions(reference)}; load average {load_average():.2f}; "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
    step_rate = None
    for name in args.models.split(","):
        if args.profile:
            measure_paddle(name, int(args.threads.split(",")[-1]), 1, args.warmup, profile=True)
        for threads in (int(t) for t in args.threads.split(",")):
            best = compare(name, threads, args, reference)
            if name == "frn_conv4":
                step_rate = best * MODELS[name].images  # images/s at the last thread count
    if not args.no_loader:
        compare_loader(args, step_rate)


if __name__ == "__main__":
    main()

"""Speed of classifying a folder of images (not a test): predict.py against test.py's feature pass,
and infer.py (Paddle Inference) against predict.py, same backbone, same images, same threads.

    python bench/predict_speed.py                                  # Conv-4, 84x84, 600 images
    python bench/predict_speed.py --model ResNet12 --images 500    # the paper's backbone (slower)

Reports images per second of
1. test.py's feature pass: `frn.engine.extract_features` (the feature cache: every image of a
   filelist read with data/datasets.py, transformed, one backbone pass, batches of 64);
2. predict.py's query pass: `frn.predict.classify` (data/images.py decoding with EXIF handling,
   the same transform and backbone, plus the method's scores against the adapted support set);
   target: within 10 % of 1;
3. infer.py's pass: `ExportedModel.outputs` of infer.py on the model export.py wrote (PIL +
   numpy preprocessing from classes.json, Paddle Inference on the CPU, oneDNN off; and with
   `--onednn`);
per wall-clock second and per CPU second of this process (less disturbed by other jobs on a
shared machine), and the wall time of the whole `python predict.py ...` / `python infer.py ...`
commands (with interpreter start-up and model loading). Each in-process pass runs --repeat times and the best
run is kept (the first run warms caches; the three passes take turns in each round, so a change
in the machine's load hits them alike). Paddle's dynamic graph and Paddle Inference use
--threads CPU math threads each.

The folder is the embedded demo data rendered at --image_size (no download), or --folder.
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ notices while exporting (read when Paddle loads)

import paddle  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from data.datasets import ImageList  # noqa: E402
from data.demo import build_demo_dataset  # noqa: E402
from data.images import list_images  # noqa: E402
from frn.args import export_parser, parse, predict_parser  # noqa: E402
from frn.checkpoint import save_model  # noqa: E402
from frn.engine import extract_features  # noqa: E402
from frn.export import export  # noqa: E402
from frn.predict import classify, prepare  # noqa: E402
from frn.runs import build_model  # noqa: E402

CLASSES = 20
SUPPORT_CLASSES, SHOTS = 5, 5


def best_rates(passes: Dict[str, Callable[[], object]], n_images: int,
               repeat: int) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Images per second (wall clock) and per CPU second (this process's CPU time, all its
    threads) of the fastest of `repeat` runs of each pass. The passes take turns within each
    round, so a change in the machine's load hits them alike; CPU time is what another job on a
    shared machine disturbs least."""
    wall: Dict[str, List[float]] = {name: [] for name in passes}
    cpu: Dict[str, List[float]] = {name: [] for name in passes}
    for _ in range(repeat):
        for name, run in passes.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return ({name: n_images / min(t) for name, t in wall.items()},
            {name: n_images / min(t) for name, t in cpu.items()})


def command_seconds(argv: List[str], threads: int) -> float:
    """Wall time of one command in a fresh interpreter (start-up and model loading included)."""
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(argv[:1])} failed: {result.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def image_folder(args, work: Path) -> Path:
    """--folder, or the demo glyphs at --image_size: CLASSES classes, --images images in all."""
    if args.folder:
        return Path(args.folder)
    per_class = -(-args.images // CLASSES)
    return Path(build_demo_dataset(str(work / "glyphs"), n_classes=CLASSES, images_per_class=per_class,
                                   image_size=args.image_size, seed=0, splits=(CLASSES - 2, 1, 1))) / "images"


def support_folder(paths: List[str], work: Path) -> Path:
    """SUPPORT_CLASSES x SHOTS of the images as a class-folder support set (links, not copies)."""
    folder = work / "support"
    for c in range(SUPPORT_CLASSES):
        (folder / f"class{c}").mkdir(parents=True)
        for k, path in enumerate(paths[c * SHOTS:(c + 1) * SHOTS]):
            os.symlink(os.path.abspath(path), folder / f"class{c}" / f"{k}{Path(path).suffix}")
    return folder


def main() -> None:
    own = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    own.add_argument("--method", default="meta_frn")
    own.add_argument("--model", default="Conv4")
    own.add_argument("--image_size", type=int, default=84)
    own.add_argument("--dataset", default="mini_imagenet", help="picks the evaluation transform")
    own.add_argument("--model_path", default="", help="a checkpoint (default: untrained weights, same speed)")
    own.add_argument("--images", type=int, default=600, help="images of the demo folder (>= 500)")
    own.add_argument("--folder", default="", help="classify this folder instead of the demo images")
    own.add_argument("--batch_size", type=int, default=64)
    own.add_argument("--num_workers", type=int, default=0, help="DataLoader workers of both dynamic-graph passes")
    own.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="CPU math threads")
    own.add_argument("--repeat", type=int, default=3)
    args = own.parse_args()
    paddle.base.core.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="predict_speed_"))
    try:
        measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> None:
    """Build the folder, the model, its support set and its export in `work`; time and print."""
    paths = list_images([str(image_folder(args, work))], "--folder")
    common = ["--method", args.method, "--model", args.model, "--image_size", str(args.image_size),
              "--dataset", args.dataset, "--num_workers", str(args.num_workers), "--batch_size", str(args.batch_size)]
    model_path = args.model_path or str(work / "untrained.pdparams")
    if not args.model_path:
        paddle.seed(0)
        save_model(build_model(parse(predict_parser(), common).options), model_path)
    support = support_folder(paths, work)
    flags = [*common, "--model_path", model_path, "--support", str(support)]

    prepared = prepare(parse(predict_parser(), [*flags, "--query", *paths[:1]]))
    filelist = work / "all.json"  # test.py reads images through a filelist
    filelist.write_text(json.dumps({"label_names": ["all"], "image_names": [os.path.abspath(p) for p in paths],
                                    "image_labels": [0] * len(paths)}))
    dataset = ImageList(str(filelist), prepared.transform)
    n = len(paths)
    export(parse(export_parser(), [*flags, "--out_dir", str(work / "exported")]))
    spec = importlib.util.spec_from_file_location("infer_script", ROOT / "infer.py")
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    exported = infer.ExportedModel(str(work / "exported"), threads=args.threads)
    with_onednn = infer.ExportedModel(str(work / "exported"), threads=args.threads, onednn=True)
    rates, per_cpu = best_rates({
        "test": lambda: extract_features(prepared.model, dataset, list(range(n)), args.batch_size, args.num_workers),
        "predict": lambda: classify(prepared, paths, args.batch_size, args.num_workers),
        "infer": lambda: exported.outputs(paths, args.batch_size),
        "onednn": lambda: with_onednn.outputs(paths, args.batch_size)}, n, args.repeat)

    folder = str(Path(paths[0]).parent)
    predict_cmd = command_seconds(["predict.py", *flags, "--query", folder, "--out", str(work / "p.csv")], args.threads)
    infer_cmd = command_seconds(["infer.py", "--model_dir", str(work / "exported"), "--query", folder, "--out",
                                 str(work / "i.csv"), "--threads", str(args.threads)], args.threads)

    source = args.folder or "demo glyphs"
    print(f"{n} images of {args.image_size}x{args.image_size} px ({source}), "
          f"{args.method} on {args.model}, batch {args.batch_size}, {args.threads} threads, "
          f"{args.num_workers} loader workers, Paddle {paddle.__version__}, best of {args.repeat}")
    def row(label: str, name: str, versus: str, how) -> None:
        print(f"  {label:<26}{rates[name]:8.1f} images/s {how(rates[name], rates[versus]):>20}   "
              f"{per_cpu[name]:8.1f} per CPU-s {how(per_cpu[name], per_cpu[versus]):>20}")

    percent = lambda a, b: f"({100 * (a / b - 1):+.1f}% vs test.py)"  # noqa: E731
    times = lambda a, b: f"({a / b:.2f}x predict.py)"  # noqa: E731
    row("test.py feature pass", "test", "test", lambda a, b: "")
    row("predict.py query pass", "predict", "test", percent)
    row("infer.py (Paddle Infer.)", "infer", "predict", times)
    row("infer.py --onednn", "onednn", "predict", times)
    print(f"  whole commands: python predict.py {predict_cmd:.1f} s, python infer.py {infer_cmd:.1f} s "
          f"({n / predict_cmd:.1f} / {n / infer_cmd:.1f} images/s with start-up)")
    load = os.getloadavg()[0]
    print(f"  load average at the end: {load:.2f} on {os.cpu_count()} CPUs"
          + ("  (busy machine: the figures are not clean)" if load > 0.5 + args.threads else ""))


if __name__ == "__main__":
    main()

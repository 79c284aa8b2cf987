"""Classify images with a model written by export.py, on Paddle Inference, without this project.

    python infer.py --model_dir exported/ --query my_photos/ --out predictions.csv

`exported/` holds the static model (Paddle 3: model.json + model.pdiparams; Paddle 2:
model.pdmodel + model.pdiparams) and classes.json (class names, and the preprocessing as data:
decoding, resize, crop, mean/std, channel order). This file imports nothing of the project:
infer.py + exported/ is all a deployment needs (Python, numpy, Pillow, Paddle). It writes the CSV
predict.py writes: image,prediction,score,<probability per class> (the softmax of the model's
class scores), and prints the accuracy when query images sit in folders named after classes.

Paddle Inference on a CPU runs with oneDNN OFF by default: Paddle 3.3's oneDNN path fails on
some PIR (.json) programs (Paddle issue 77340, NotImplementedError from the oneDNN instruction
converter), and without it the predictor runs the same CPU kernels as the dynamic graph, so
its scores match predict.py's (tests/predict). `--onednn` turns it on (faster on many CPUs;
checked on this project's models with Paddle 3.3.1, see docs/predict.md).
"""
import argparse
import contextlib
import csv
import glob
import io
import json
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
FORMAT = "fsl-export"
INTERPOLATION = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                 "box": Image.BOX, "lanczos": Image.LANCZOS, "hamming": Image.HAMMING}


class InferError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


# ----------------------------------------------------------------------------------------
# decoding: the rules of data/images.py (tests/predict/test_images.py checks they agree)
# ----------------------------------------------------------------------------------------
def to_rgb(img: Image.Image, background: Tuple[int, int, int]) -> Image.Image:
    """An image of any PIL mode as 8-bit RGB, transparent pixels composited over `background`."""
    if img.mode == "RGB":
        return img
    if img.mode in ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, tuple(background) + (255,)), rgba).convert("RGB")
    if img.mode.startswith("I"):  # 16-bit (or 32-bit integer) greyscale
        values = np.asarray(img, dtype=np.float64)
        return Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        values = np.clip(np.round(np.asarray(img, dtype=np.float64)), 0, 255)
        return Image.fromarray(values.astype(np.uint8)).convert("RGB")
    return img.convert("RGB")


def load_image(path: str, background: Tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """The upright (EXIF orientation applied) RGB image of a file, or a one-line error."""
    try:
        with Image.open(path) as img:
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # a damaged EXIF block: keep the pixels as stored
                img = img.copy()
            return to_rgb(img, background)
    except FileNotFoundError:
        raise InferError(f"--query {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        why = str(err).split("\n")[0] or type(err).__name__
        raise InferError(f"--query {path} is not an image PIL can read ({why}); remove it or convert it to "
                         f"JPEG/PNG") from None


def images_below(folder: str) -> List[str]:
    """Image files in `folder` and below, sorted; hidden files and folders skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in files
                     if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


def list_images(specs: Sequence[str]) -> List[str]:
    """Files, folders (recursive) and glob patterns -> image paths, each once, in order."""
    paths: List[str] = []
    for spec in specs:
        if os.path.isdir(spec):
            found = images_below(spec)
            if not found:
                raise InferError(f"--query {spec} holds no images ({', '.join(IMAGE_EXTENSIONS[:6])}, ...) "
                                 f"in it or its sub-folders")
        elif os.path.isfile(spec):
            found = [spec]
        elif glob.has_magic(spec):
            found = [p for m in sorted(glob.glob(spec, recursive=True))
                     for p in (images_below(m) if os.path.isdir(m) else [m])]
            if not found:
                raise InferError(f"--query {spec} matches no image file")
        else:
            raise InferError(f"--query {spec} does not exist")
        paths.extend(found)
    return list(dict.fromkeys(paths))


# ----------------------------------------------------------------------------------------
# preprocessing from classes.json (the steps data/preprocess.py writes)
# ----------------------------------------------------------------------------------------
def resize(img: Image.Image, step: dict) -> Image.Image:
    """`resize` with a fixed [height, width], or the shorter side to a length (longer side
    truncated, no resize when the shorter side has that length already)."""
    method = INTERPOLATION[step.get("interpolation", "bilinear")]
    if "size" in step:
        height, width = step["size"]
        return img.resize((int(width), int(height)), method)
    side = int(step["shorter_side"])
    width, height = img.size
    if min(width, height) == side:
        return img
    if width < height:
        return img.resize((side, int(side * height / width)), method)
    return img.resize((int(side * width / height), side), method)


def center_crop(img: Image.Image, size: Sequence[int]) -> Image.Image:
    """The centred [height, width] window (offsets rounded with Python's round)."""
    height, width = int(size[0]), int(size[1])
    top = int(round((img.size[1] - height) / 2.0))
    left = int(round((img.size[0] - width) / 2.0))
    return img.crop((left, top, left + width, top + height))


def preprocess(img: Image.Image, steps: Sequence[dict]) -> np.ndarray:
    """An RGB PIL image through the described steps -> the model's float32 input [3, H, W]."""
    x = img
    for step in steps:
        op = step["op"]
        if op == "resize":
            x = resize(x, step)
        elif op == "center_crop":
            x = center_crop(x, step["size"])
        elif op == "to_float":
            x = np.asarray(x, dtype=np.uint8).astype(np.float32) / np.float32(step["divide"])
        elif op == "normalize":
            x = (x - np.asarray(step["mean"], np.float32)) / np.asarray(step["std"], np.float32)
        elif op == "to_chw":
            x = np.ascontiguousarray(x.transpose(2, 0, 1))
        else:
            raise InferError(f"classes.json has a preprocessing step {op!r} this infer.py does not know; "
                             f"use the infer.py of the export")
    return x


# ----------------------------------------------------------------------------------------
# the exported model
# ----------------------------------------------------------------------------------------
def read_export(model_dir: str) -> Tuple[dict, str, str]:
    """(classes.json content, model file, params file) of an export folder; one-line errors."""
    if not os.path.isdir(model_dir):
        raise InferError(f"--model_dir {model_dir} is not a folder; pass the --out_dir of export.py")
    meta_path = os.path.join(model_dir, "classes.json")
    if not os.path.isfile(meta_path):
        raise InferError(f"--model_dir {model_dir} has no classes.json: it holds no exported model; "
                         f"write one with export.py --out_dir {model_dir}")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise InferError(f"{meta_path} is not readable JSON ({type(err).__name__}); export the model again") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InferError(f"{meta_path} was not written by export.py (no format {FORMAT!r}); export the model again")
    model_file = os.path.join(model_dir, meta.get("model_file", ""))
    params_file = os.path.join(model_dir, meta.get("params_file", ""))
    for path in (model_file, params_file):
        if not os.path.isfile(path):
            raise InferError(f"--model_dir {model_dir} has no model file {os.path.basename(path) or '?'} "
                             f"(classes.json names it); export the model again")
    return meta, model_file, params_file


@contextlib.contextmanager
def native_stdout_to_stderr():
    """Send what Paddle's C++ code prints to stdout (file descriptor 1; e.g. a oneDNN pass's
    "ReduceMeanCheckIfOneDNNSupport") to stderr meanwhile: stdout carries the CSV with --out -."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def make_predictor(model_file: str, params_file: str, threads: int, gpu: bool, onednn: bool):
    """A Paddle Inference predictor: on the CPU with oneDNN off unless `onednn` (see the module
    docstring), `threads` math threads; on GPU 0 with `gpu` when Paddle has CUDA."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # Paddle's C++ INFO lines would bury the summary
    import warnings
    warnings.filterwarnings("ignore", message="No ccache found")  # printed by every Paddle import
    try:
        import paddle
        from paddle import inference
    except ImportError:
        raise InferError("Paddle is not installed: pip install paddlepaddle (CPU) or see docs/predict.md") from None
    pir = model_file.endswith(".json")
    if pir and int(paddle.__version__.split(".")[0]) < 3 and paddle.__version__ != "0.0.0":
        raise InferError(f"{model_file} is a Paddle 3 (PIR) program; this is Paddle {paddle.__version__}: "
                         f"install Paddle >= 3.0 or export again with Paddle 2.x")
    config = inference.Config(model_file, params_file)
    if gpu and paddle.device.is_compiled_with_cuda():
        config.enable_use_gpu(256, 0)
    else:
        if gpu:
            print("note: --gpu given but this Paddle build has no CUDA; running on CPU", file=sys.stderr)
        config.disable_gpu()
        if onednn:
            config.enable_mkldnn()
            # Paddle 3.3's fusion of a convolution with its activation crashes (SIGSEGV while building
            # the fused op's float attribute) on ResNet-12's LeakyReLU blocks: keep them apart
            config.delete_pass("conv_activation_onednn_fuse_pass")
        elif hasattr(config, "disable_mkldnn"):
            config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(max(1, threads))
    config.disable_glog_info()
    with native_stdout_to_stderr():
        return inference.create_predictor(config)


class ExportedModel:
    """An export folder, ready to turn images into class scores (or features)."""

    def __init__(self, model_dir: str, threads: int = 1, gpu: bool = False, onednn: bool = False):
        self.meta, model_file, params_file = read_export(model_dir)
        self.predictor = make_predictor(model_file, params_file, threads, gpu, onednn)
        self.steps = self.meta["preprocessing"]["steps"]
        self.background = tuple(self.meta["preprocessing"]["decode"].get("background", (255, 255, 255)))
        self.classes: List[str] = self.meta.get("classes", [])

    def load(self, path: str) -> np.ndarray:
        """One image file as the model's input [3, H, W]."""
        return preprocess(load_image(path, self.background), self.steps)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The model's output for a float32 batch [N, 3, H, W]."""
        handle = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
        handle.reshape(list(batch.shape))
        handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
        with native_stdout_to_stderr():
            self.predictor.run()
        return self.predictor.get_output_handle(self.predictor.get_output_names()[0]).copy_to_cpu()

    def outputs(self, paths: Sequence[str], batch_size: int) -> np.ndarray:
        """The model's output for every image, `batch_size` images per run, in order."""
        chunks = []
        for start in range(0, len(paths), batch_size):
            chunks.append(self.run(np.stack([self.load(p) for p in paths[start:start + batch_size]])))
        return np.concatenate(chunks)


# ----------------------------------------------------------------------------------------
# output: the CSV of predict.py
# ----------------------------------------------------------------------------------------
def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def prediction_rows(paths: Sequence[str], probabilities: np.ndarray, classes: Sequence[str],
                    top_k: int) -> Tuple[List[str], List[List[str]]]:
    """(header, rows): image, prediction, score (its probability), prediction_2, score_2, ...
    up to `top_k`, then one probability column per class."""
    k = min(top_k, len(classes))
    header = ["image", "prediction", "score"] + [f"{n}_{j}" for j in range(2, k + 1) for n in ("prediction", "score")]
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    rows = []
    for path, p, best in zip(paths, probabilities, order):
        ranked = [cell for c in best for cell in (classes[c], f"{p[c]:.6f}")]
        rows.append([path, *ranked, *(f"{v:.6f}" for v in p)])
    return header + list(classes), rows


def feature_rows(paths: Sequence[str], features: np.ndarray) -> Tuple[List[str], List[List[str]]]:
    """(header, rows) of a backbone-only export: image, feature_0, feature_1, ... (flattened)."""
    flat = features.reshape(len(paths), -1)
    return ["image"] + [f"feature_{i}" for i in range(flat.shape[1])], [[p, *(f"{v:.7g}" for v in row)]
                                                                       for p, row in zip(paths, flat)]


def csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def check_out(out: str) -> None:
    """Fail before any work when --out cannot be written."""
    if out == "-":
        return
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise InferError(f"--out {out}: folder {folder} does not exist; create it or choose another path")
    if os.path.isdir(out):
        raise InferError(f"--out {out} is a folder; give a file name such as {os.path.join(out, 'predictions.csv')}")


def write_text(out: str, text: str) -> None:
    """Write to stdout (`-`) or atomically to a file (a temp file renamed into place)."""
    if out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(out)), prefix=".tmp_", suffix=".csv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def folder_labels(paths: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """The class index of each image whose parent folder is named like a class, else -1."""
    index = {name: i for i, name in enumerate(classes)}
    return np.asarray([index.get(os.path.basename(os.path.dirname(os.path.abspath(p))), -1) for p in paths])


def accuracy_line(predicted: np.ndarray, truth: np.ndarray) -> Optional[str]:
    """'accuracy: a% (c/n images in class-named folders)', or None when no folder names a class."""
    known = truth >= 0
    if not known.any():
        return None
    correct = int((predicted[known] == truth[known]).sum())
    total = int(known.sum())
    return f"accuracy: {100.0 * correct / total:.2f}% ({correct}/{total} images in class-named folders)"


# ----------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------
def usable_cpus() -> int:
    """CPUs this process may run on (a container's limit, not the host's count, where Linux says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        print(f"error: {message} (see infer.py --help)", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="infer.py", description="Classify images with a model exported by export.py (Paddle Inference).")
    p.add_argument("--model_dir", required=True, help="the --out_dir of export.py")
    p.add_argument("--query", nargs="+", required=True, help="image files, folders (recursive) or glob patterns")
    p.add_argument("--out", default="predictions.csv", help="CSV file to write, or - for stdout")
    p.add_argument("--top_k", type=int, default=1, help="also list the 2nd..k-th classes and their probabilities")
    p.add_argument("--batch_size", type=int, default=64, help="images per predictor run")
    p.add_argument("--threads", type=int, default=usable_cpus(), help="CPU math threads (default: the usable CPUs)")
    p.add_argument("--gpu", action="store_true", help="use GPU 0 if Paddle has CUDA")
    p.add_argument("--onednn", action="store_true", help="CPU: enable oneDNN (off by default, see docs/predict.md)")
    return p


def run(argv: Optional[List[str]] = None) -> Dict[str, object]:
    """infer.py's work; returns what it computed (paths, outputs, probabilities) for tests."""
    args = parser().parse_args(argv)
    if args.top_k < 1 or args.batch_size < 1:
        raise InferError("--top_k and --batch_size must be at least 1")
    check_out(args.out)
    read_export(args.model_dir)  # a wrong folder is named before the images are listed
    paths = list_images(args.query)
    model = ExportedModel(args.model_dir, args.threads, args.gpu, args.onednn)
    start = time.perf_counter()
    outputs = model.outputs(paths, args.batch_size)
    seconds = time.perf_counter() - start
    info = sys.stderr if args.out == "-" else sys.stdout
    result: Dict[str, object] = {"paths": paths, "outputs": outputs}
    if model.meta.get("kind") == "features":
        write_text(args.out, csv_text(*feature_rows(paths, outputs)))
        print(f"{len(paths)} images -> {args.out}: features of {outputs.shape[1:]} per image, "
              f"{len(paths) / seconds:.1f} images/s (Paddle Inference)", file=info)
        return result
    probabilities = softmax(outputs)
    write_text(args.out, csv_text(*prediction_rows(paths, probabilities, model.classes, args.top_k)))
    result["probabilities"] = probabilities
    device = "GPU" if args.gpu else f"CPU, {args.threads} threads, oneDNN {'on' if args.onednn else 'off'}"
    print(f"{len(paths)} images -> {args.out}: {len(model.classes)} classes, {len(paths) / seconds:.1f} images/s "
          f"(Paddle Inference, {device})", file=info)
    line = accuracy_line(probabilities.argmax(axis=1), folder_labels(paths, model.classes))
    if line:
        print(line, file=info)
    return result


def main(argv: Optional[List[str]] = None) -> None:
    try:
        run(argv)
    except InferError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

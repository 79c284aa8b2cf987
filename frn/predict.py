"""predict.py's workflow: classify the user's own images against a support set of the user's own
classes, with any trained episodic method.

    support images --backbone--> features --method.adapt (once)--> adapted support set
    query images   --backbone--> features --method.adapted_scores--> scores --softmax--> CSV

Every image passes through the backbone once, in batches; the method's test-time adaptation
(prototypes, FRN's pools, Negative-Margin's classifier fit, MTL's inner loop, DeepEMD's SFC) runs
once per support set. The adapted support set can be saved (`--save_support F.pdsupport`) with
the class names and the identity (sha256) of the checkpoint that made it, and reused instead of
the support images; a file made by another checkpoint, method, backbone or settings is refused.

Images are decoded by data/images.py (any format and mode, EXIF orientation applied) and go
through the method's evaluation pipeline (or the dataset's, `--dataset`), exactly as test.py's.
Everything that can fail on user input is checked before anything is written, and outputs are
written at the very end through temporary files, so a failed run leaves no partial file.
"""
import argparse
import csv
import dataclasses
import hashlib
import io
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from data.images import ImageFiles, folder_labels, list_images
from data.support import LabelledImages, read_support
from frn.checkpoint import load_weights, read_checkpoint
from frn.engine import eval_loader, progress
from frn.runs import build_model, image_pipeline
from methods import METHODS
from methods.base import Adapted, FewShotMethod, MethodOptions, UnequalShots
from utils.device import seed_everything, select_device
from utils.errors import UserError
from utils.files import check_output_file, write_atomically
from utils.options import replace
from utils.stats import softmax

SUPPORT_SUFFIX = ".pdsupport"
SUPPORT_FORMAT = "fsl-support"
SUPPORT_VERSION = 1
#: options that describe the run rather than the adapted support set
RUN_FIELDS = ("stage", "way", "val_way")


# ----------------------------------------------------------------------------------------
# model, checkpoint identity, image pipeline
# ----------------------------------------------------------------------------------------
def test_transform(options: MethodOptions) -> Callable:
    """The evaluation pipeline test.py uses: the method's own, else the dataset's."""
    return image_pipeline(options, training=False)


def sha256_of(path: str) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_fingerprint(path: str, ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """What identifies the checkpoint a support set was adapted with: its sha256, its identity
    (family, backbone), its epoch and its file name."""
    identity = ckpt.get("identity")
    return {"file": os.path.basename(path), "sha256": sha256_of(path),
            "identity": dict(identity) if isinstance(identity, dict) else None, "epoch": ckpt.get("epoch")}


def check_method(options: MethodOptions) -> None:
    """Refuse a method without a support set (SimTrans's weak-shot stages) in one line."""
    if METHODS[options.method].workflow != "few_shot":
        raise UserError(f"--method {options.method} is weak-shot (SimTrans): its classes are fixed by training and "
                        f"it has no support set; evaluate it with test.py --method {options.method}")


def load_model(options: MethodOptions, model_path: str) -> Tuple[FewShotMethod, Dict[str, Any]]:
    """The method with its checkpoint loaded, in evaluation mode, and the checkpoint's fingerprint."""
    if not model_path:
        raise UserError("--model_path is required: the .pdparams checkpoint to classify with")
    ckpt = read_checkpoint(model_path)
    fixed = METHODS[options.method].checkpoint_rules.fixed_way(ckpt["state_dict"])
    if fixed is not None and fixed != options.way:
        raise UserError(f"--model_path {model_path} ({options.method}) classifies exactly {fixed} classes (its head "
                        f"was meta-trained for {fixed}-way tasks); the support set has {options.way}: give it {fixed}")
    model = build_model(options)
    ckpt = load_weights(model, model_path, ckpt=ckpt)
    model.eval()
    return model, checkpoint_fingerprint(model_path, ckpt)


def options_digest(options: MethodOptions) -> Dict[str, Any]:
    """The settings an adapted support set depends on: every option but the run's own."""
    return {k: v for k, v in dataclasses.asdict(options).items() if k not in RUN_FIELDS}


# ----------------------------------------------------------------------------------------
# the adapted support set
# ----------------------------------------------------------------------------------------
@dataclass
class AdaptedSupport:
    """A support set as the method keeps it, with the class names and where it came from."""
    class_names: List[str]
    adapted: Adapted
    counts: List[int]
    method: str
    options: Dict[str, Any]
    checkpoint: Dict[str, Any]


def extract_batches(model: FewShotMethod, paths: Sequence[str], transform: Callable, batch_size: int,
                    num_workers: int, desc: str, flag: str) -> Iterator[Tuple[np.ndarray, paddle.Tensor]]:
    """Yield (positions, features) of the images, `batch_size` at a time, one backbone pass each."""
    dataset = ImageFiles(paths, transform, flag)
    batches = [list(range(i, min(i + batch_size, len(paths)))) for i in range(0, len(paths), batch_size)]
    for images, positions in progress(eval_loader(dataset, batches, num_workers), desc, total=len(batches)):
        with paddle.no_grad():
            features = model.extract(images)
        yield positions.numpy().reshape(-1), features


def unequal_shots_error(method: str, counts: np.ndarray, class_names: Sequence[str]) -> UserError:
    """One line naming the smallest class, for a method that needs equal shots."""
    smallest = int(np.argmin(counts))
    return UserError(f"--method {method} needs the same number of support images in every class; class "
                     f"{class_names[smallest]!r} has {int(counts[smallest])}, others up to {int(counts.max())}: "
                     f"give every class {int(counts.max())} images, or use protonet, meta_frn, neg_margin or mtl")


def adapt_support(model: FewShotMethod, support: LabelledImages, transform: Callable, batch_size: int,
                  num_workers: int, seed: int, fingerprint: Dict[str, Any]) -> AdaptedSupport:
    """Extract the support images (each once) and adapt the method to them, once."""
    counts = support.counts()
    if not METHODS[model.options.method].supports_unequal_shots and counts.min() != counts.max():
        raise unequal_shots_error(model.options.method, counts, support.class_names)  # before any image is read
    chunks = [f for _, f in extract_batches(model, support.paths, transform, batch_size, num_workers,
                                            "support", "--support image")]
    features = paddle.concat(chunks)
    # the test-time fit (Negative-Margin, DeepEMD's SFC) draws from numpy's RNG: seeded here, as
    # test.py's evaluation is, and independent of the loader workers that consumed draws above
    seed_everything(seed)
    try:
        with paddle.no_grad():
            adapted = model.adapt(features, paddle.to_tensor(support.labels), len(support.class_names))
    except UnequalShots:
        raise unequal_shots_error(model.options.method, counts, support.class_names) from None
    return AdaptedSupport(list(support.class_names), adapted, [int(c) for c in counts], model.options.method,
                          options_digest(model.options), fingerprint)


def save_support(path: str, support: AdaptedSupport) -> None:
    """Write an adapted support set (a zip of .npy arrays plus meta.json; no pickle) atomically."""
    arrays = {k: v.numpy() for k, v in support.adapted.items() if isinstance(v, paddle.Tensor)}
    ints = {k: int(v) for k, v in support.adapted.items() if not isinstance(v, paddle.Tensor)}
    meta = {"format": SUPPORT_FORMAT, "version": SUPPORT_VERSION, "class_names": support.class_names,
            "counts": support.counts, "method": support.method, "options": support.options,
            "checkpoint": support.checkpoint, "ints": ints, "arrays": sorted(arrays)}
    entries: Dict[str, np.ndarray] = {f"adapted.{k}": v for k, v in arrays.items()}
    entries["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    # numpy's stub types **kwds like its allow_pickle flag
    np.savez(buffer, **entries)  # type: ignore[arg-type]
    write_atomically(path, buffer.getvalue())


def load_support(path: str) -> AdaptedSupport:
    """Read a .pdsupport file (one-line errors for anything else)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes().decode("utf-8"))
            arrays = {k: data[f"adapted.{k}"] for k in meta["arrays"]}
    except FileNotFoundError:
        raise UserError(f"--support {path} does not exist") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise UserError(f"--support {path} is not a support set written by predict.py --save_support "
                        f"({type(err).__name__})") from None
    if meta.get("format") != SUPPORT_FORMAT or meta.get("version") != SUPPORT_VERSION:
        raise UserError(f"--support {path} is not a version-{SUPPORT_VERSION} support set of predict.py; rebuild it "
                        f"with predict.py --save_support")
    adapted: Adapted = {k: paddle.to_tensor(v) for k, v in arrays.items()}
    adapted.update(meta["ints"])
    return AdaptedSupport(meta["class_names"], adapted, meta["counts"], meta["method"], meta["options"],
                          meta["checkpoint"])


def check_saved_support(saved: AdaptedSupport, path: str, options: MethodOptions) -> None:
    """Refuse, in one line, a saved support set of another method, backbone or settings."""
    rebuild = f"rebuild it with predict.py --support <image folder> --save_support {path}"
    if saved.method != options.method:
        raise UserError(f"--support {path} was adapted by --method {saved.method}, not {options.method}; pass "
                        f"--method {saved.method} or {rebuild}")
    wanted = options_digest(options)
    if saved.options.get("model") != wanted["model"]:
        raise UserError(f"--support {path} was adapted with backbone {saved.options.get('model')}, not "
                        f"{wanted['model']}; pass --model {saved.options.get('model')} or {rebuild}")
    for key, value in wanted.items():
        if saved.options.get(key) != value:
            raise UserError(f"--support {path} was adapted with --{key} {saved.options.get(key)}, this run has "
                            f"{value}; pass the same flags or {rebuild}")


def check_same_checkpoint(saved: AdaptedSupport, path: str, fingerprint: Dict[str, Any], model_path: str) -> None:
    """Refuse a saved support set made with another checkpoint (compared by sha256)."""
    if saved.checkpoint.get("sha256") != fingerprint["sha256"]:
        raise UserError(f"--support {path} was adapted with checkpoint {saved.checkpoint.get('file')} "
                        f"(sha256 {str(saved.checkpoint.get('sha256'))[:12]}), not --model_path {model_path} "
                        f"(sha256 {fingerprint['sha256'][:12]}); pass that checkpoint or rebuild the support set")


# ----------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------
def prediction_table(paths: Sequence[str], probabilities: np.ndarray, class_names: Sequence[str],
                     top_k: int) -> str:
    """The CSV text: image, prediction, score (its probability), prediction_2, score_2, ... up to
    `top_k`, then one probability column per class (headed by the class name). infer.py writes
    the same table."""
    k = min(top_k, len(class_names))
    header = ["image", "prediction", "score"] + [f"{n}_{j}" for j in range(2, k + 1) for n in ("prediction", "score")]
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header + list(class_names))
    for path, p, best in zip(paths, probabilities, order):
        ranked = [cell for c in best for cell in (class_names[c], f"{p[c]:.6f}")]
        writer.writerow([path, *ranked, *(f"{v:.6f}" for v in p)])
    return out.getvalue()


def accuracy_line(predicted: np.ndarray, truth: np.ndarray) -> Optional[str]:
    """'accuracy: a% (c/n images in class-named folders)', or None when no folder names a class."""
    known = truth >= 0
    if not known.any():
        return None
    correct = int((predicted[known] == truth[known]).sum())
    total = int(known.sum())
    return f"accuracy: {100.0 * correct / total:.2f}% ({correct}/{total} images in class-named folders)"


# ----------------------------------------------------------------------------------------
# the workflow
# ----------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A model with its checkpoint, its evaluation pipeline and an adapted support set."""
    model: FewShotMethod
    transform: Callable
    support: AdaptedSupport
    fingerprint: Dict[str, Any]
    #: the support images (none when the support set was read from a .pdsupport file)
    support_paths: List[str]


def is_saved_support(source: str) -> bool:
    return source.lower().endswith(SUPPORT_SUFFIX)


def prepare(args: argparse.Namespace) -> Prepared:
    """Shared by predict.py and export.py: read the support source (images or a .pdsupport),
    build and load the model, adapt the support set once (or check the saved one fits)."""
    check_method(args.options)
    if not args.support:
        raise UserError("--support is required: a folder with one sub-folder per class, a path,label CSV file "
                        "or a .pdsupport file")
    if is_saved_support(args.support):
        saved = load_support(args.support)
        options = replace(args.options, way=len(saved.class_names))
        check_saved_support(saved, args.support, options)
        model, fingerprint = load_model(options, args.model_path)
        check_same_checkpoint(saved, args.support, fingerprint, args.model_path)
        return Prepared(model, test_transform(options), saved, fingerprint, [])
    images = read_support(args.support)
    options = replace(args.options, way=len(images.class_names))
    model, fingerprint = load_model(options, args.model_path)
    transform = test_transform(options)
    support = adapt_support(model, images, transform, args.batch_size, args.num_workers, args.seed, fingerprint)
    return Prepared(model, transform, support, fingerprint, list(images.paths))


@paddle.no_grad()
def classify(prepared: Prepared, paths: Sequence[str], batch_size: int, num_workers: int) -> np.ndarray:
    """Test-time scores [n, way] of the query images against the adapted support set."""
    scores = np.zeros((len(paths), len(prepared.support.class_names)), dtype=np.float32)
    model = prepared.model
    for positions, features in extract_batches(model, paths, prepared.transform, batch_size, num_workers,
                                               "query", "--query"):
        scores[positions] = model.adapted_scores(prepared.support.adapted, features).numpy()
    return scores


def predict(args: argparse.Namespace) -> Dict[str, Any]:
    """predict.py: classify --query against --support, write --out (and --save_support); returns
    the paths, scores and probabilities (for tests and notebooks)."""
    select_device(args.gpu)
    seed_everything(args.seed)
    if args.top_k < 1:
        raise UserError(f"--top_k must be at least 1 (got {args.top_k})")
    if not args.query and not args.save_support:
        raise UserError("nothing to do: pass --query images to classify and/or --save_support F.pdsupport")
    if args.query:
        check_output_file(args.out)
    if args.save_support:
        if not is_saved_support(args.save_support):
            raise UserError(f"--save_support {args.save_support} must end with {SUPPORT_SUFFIX}")
        check_output_file(args.save_support, "--save_support")
    paths = list_images(args.query) if args.query else []
    start = time.perf_counter()
    prepared = prepare(args)
    adapted_at = time.perf_counter()
    scores = classify(prepared, paths, args.batch_size, args.num_workers) if paths else np.zeros((0, 0))
    seconds = time.perf_counter() - adapted_at
    # every input is read and every result computed: only now is anything written
    if args.save_support:
        save_support(args.save_support, prepared.support)
        print(f"support set of {len(prepared.support.class_names)} classes ({sum(prepared.support.counts)} images) "
              f"-> {args.save_support}", file=sys.stderr if args.out == "-" else sys.stdout)
    result: Dict[str, Any] = {"paths": paths, "scores": scores, "class_names": prepared.support.class_names}
    if not paths:
        return result
    names = prepared.support.class_names
    probabilities = softmax(scores)
    table = prediction_table(paths, probabilities, names, args.top_k)
    info = sys.stderr if args.out == "-" else sys.stdout
    if args.out == "-":
        sys.stdout.write(table)
        sys.stdout.flush()
    else:
        write_atomically(args.out, table.encode("utf-8"))
    source = "saved support set" if is_saved_support(args.support) else f"{sum(prepared.support.counts)} support images"
    print(f"{len(paths)} images -> {args.out}: {len(names)} classes ({source}), {args.method} on "
          f"{args.model}, {len(paths) / max(seconds, 1e-9):.1f} images/s (support {adapted_at - start:.1f} s)",
          file=info)
    line = accuracy_line(probabilities.argmax(axis=1), folder_labels(paths, names))
    if line:
        print(line, file=info)
    result["probabilities"] = probabilities
    return result

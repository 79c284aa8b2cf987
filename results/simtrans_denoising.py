"""How well SimTrans's sample weights find the injected outliers of a weak-shot benchmark.

    python results/simtrans_denoising.py --data_path WS --similarity SIMNET_RUN/similarity \
        [--naive NAIVE_RUN/best_model.pdparams --model Conv4 --image_size 84] [--json_out FILE]

Prints the ROC-AUC (clean web images ranked above injected ones) of the savg1 and avg1 weights
computed from step 2's similarity matrices: over all web images, per outlier source (images of
other novel classes, images of classes outside the split), and the mean over classes. With
--naive, the same weights computed from the cosine similarity of the step-0 model's features
(no similarity transfer) as a control. --json_out also writes the numbers to FILE (a dict: view ->
weight type -> {"all", "novel", "outside", "class_mean"}).
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.similarity_folder import read_similarity  # noqa: E402
from data.weakshot import injected_files, load_weakshot  # noqa: E402
from frn.weakshot import web_sample_weights  # noqa: E402
from utils.errors import UserError, exit_on_user_error  # noqa: E402
from utils.stats import roc_auc  # noqa: E402

WEIGHT_TYPES = ("savg1", "avg1")


def denoising_scores(weights: np.ndarray, labels: np.ndarray, sources: np.ndarray) -> Dict[str, float]:
    """ROC-AUC of `weights` for clean (source '') vs injected images: over all images, against each
    outlier source alone, and the mean over the classes that have both kinds."""
    clean = sources == ""
    scores = {"all": roc_auc(weights, clean)}
    for source in ("novel", "outside"):
        keep = clean | (sources == source)
        if (sources == source).any():
            scores[source] = roc_auc(weights[keep], clean[keep])
    per_class = [roc_auc(weights[labels == c], clean[labels == c]) for c in np.unique(labels)
                 if 0 < clean[labels == c].sum() < (labels == c).sum()]
    scores["class_mean"] = float(np.mean(per_class))
    return {k: float(v) for k, v in scores.items()}


def report(name: str, weights: np.ndarray, labels: np.ndarray, sources: np.ndarray) -> Dict[str, float]:
    """Prints one line of the ROC-AUC views of `weights` and returns them."""
    scores = denoising_scores(weights, labels, sources)
    parts = [f"all {scores['all']:.3f}"]
    for source in ("novel", "outside"):
        if source in scores:
            parts.append(f"{source} {scores[source]:.3f} ({int((sources == source).sum())})")
    n_classes = sum(1 for c in np.unique(labels) if 0 < (sources[labels == c] == "").sum() < (labels == c).sum())
    parts.append(f"class mean {scores['class_mean']:.3f} ({n_classes} classes)")
    print(f"{name}: ROC-AUC " + ", ".join(parts))
    return scores


def cosine_matrices(args, weakshot) -> list:
    """Per novel class, the cosine similarity of the step-0 model's pooled features."""
    from frn.args import parse, test_parser
    from frn.checkpoint import load_weights
    from frn.engine import extract_features
    from frn.runs import build_model, image_list
    flags = ["--method", "simtrans_naive", "--data_path", args.data_path, "--model", args.model,
             "--image_size", str(args.image_size), "--dataset", args.dataset, "--num_workers", "0"]
    run_args = parse(test_parser(), flags)
    web = image_list(run_args, "web", training=False)
    model = build_model(run_args.options, len(weakshot.novel_classes))
    load_weights(model, args.naive, "--naive")
    features = extract_features(model, web, range(len(web))).numpy()
    features /= np.linalg.norm(features, axis=1, keepdims=True) + 1e-12
    labels = np.asarray(weakshot.web["image_labels"])
    return [features[labels == c] @ features[labels == c].T for c in range(len(weakshot.novel_classes))]


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_path", required=True, help="the weak-shot folder (with injected.json)")
    parser.add_argument("--similarity", required=True, help="step 2's similarity folder")
    parser.add_argument("--naive", default="", help="step 0's model, for the feature-cosine control")
    parser.add_argument("--model", default="Conv4")
    parser.add_argument("--image_size", type=int, default=84)
    parser.add_argument("--dataset", default="cub_cropped")
    parser.add_argument("--json_out", default="", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    weakshot = load_weakshot(args.data_path)
    injected = injected_files(args.data_path)
    if injected is None:
        raise UserError(f"{args.data_path} has no injected.json: only benchmarks know their outliers")
    labels = np.asarray(weakshot.web["image_labels"])
    sources = np.asarray([injected[name]["source"] if name in injected else "" for name in weakshot.web["file_names"]])
    views = [("SimNet", read_similarity(args.similarity, weakshot, "--similarity"))]
    if args.naive:
        views.append(("step-0 feature cosine (control)", cosine_matrices(args, weakshot)))
    scores: Dict[str, Dict[str, Dict[str, float]]] = {}
    for view, matrices in views:
        for weight_type in WEIGHT_TYPES:
            scores.setdefault(view, {})[weight_type] = report(
                f"{view} {weight_type}", web_sample_weights(weakshot, matrices, weight_type, "one_mean"),
                labels, sources)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()

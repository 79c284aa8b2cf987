"""How well SimTrans's sample weights find the injected outliers of a weak-shot benchmark.

    python results/simtrans_denoising.py --data_path WS --similarity SIMNET_RUN/similarity \
        [--naive NAIVE_RUN/best_model.pdparams --model Conv4 --image_size 84]

Prints the ROC-AUC (clean web images ranked above injected ones) of the savg1 and avg1 weights
computed from step 2's similarity matrices: over all web images, per outlier source (images of
other novel classes, images of classes outside the split), and the mean over classes. With
--naive, the same weights computed from the cosine similarity of the step-0 model's features
(no similarity transfer) as a control.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.similarity_folder import read_similarity  # noqa: E402
from data.weakshot import injected_files, load_weakshot  # noqa: E402
from frn.weakshot import web_sample_weights  # noqa: E402
from utils.errors import UserError, exit_on_user_error  # noqa: E402
from utils.stats import roc_auc  # noqa: E402

WEIGHT_TYPES = ("savg1", "avg1")


def report(name: str, weights: np.ndarray, labels: np.ndarray, sources: np.ndarray) -> None:
    """One line per view of the ROC-AUC of `weights` for clean (source '') vs injected images."""
    clean = sources == ""
    parts = [f"all {roc_auc(weights, clean):.3f}"]
    for source in ("novel", "outside"):
        keep = clean | (sources == source)
        if (sources == source).any():
            parts.append(f"{source} {roc_auc(weights[keep], clean[keep]):.3f} ({int((sources == source).sum())})")
    per_class = [roc_auc(weights[labels == c], clean[labels == c]) for c in np.unique(labels)
                 if 0 < clean[labels == c].sum() < (labels == c).sum()]
    parts.append(f"class mean {np.mean(per_class):.3f} ({len(per_class)} classes)")
    print(f"{name}: ROC-AUC " + ", ".join(parts))


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
    for view, matrices in views:
        for weight_type in WEIGHT_TYPES:
            report(f"{view} {weight_type}", web_sample_weights(weakshot, matrices, weight_type, "one_mean"),
                   labels, sources)


if __name__ == "__main__":
    main()

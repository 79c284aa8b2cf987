"""Plotting helpers for the notebooks: episodes, training curves, FRN reconstructions, DeepEMD
weights and flows.

Every function builds a `matplotlib.figure.Figure` without touching pyplot's global state and
returns it; nothing is shown or saved here. In a notebook call `display(fig)` (or
`fig.savefig(path)`).
"""
import json
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import paddle
from matplotlib.figure import Figure
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from data.transforms import MEAN, STD

SUPPORT_COLOUR = "tab:blue"
QUERY_COLOUR = "tab:orange"
GOOD_COLOUR = "tab:green"
BAD_COLOUR = "tab:red"


# ----------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------
def to_numpy(x) -> np.ndarray:
    """A paddle Tensor, PIL image or array as a numpy array."""
    return x.numpy() if isinstance(x, paddle.Tensor) else np.asarray(x)


def denormalise(image, stats: Tuple[Sequence[float], Sequence[float]] = (MEAN, STD)) -> np.ndarray:
    """A normalised CHW image tensor (`stats` = (mean, std), by default those of
    data.transforms) as an HWC array in [0, 1]. An HWC uint8 image (no transform) is only
    rescaled."""
    mean, std = stats
    array = to_numpy(image).astype(np.float32)
    if array.ndim == 3 and array.shape[0] == 3:
        array = array * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
        array = array.transpose(1, 2, 0)
    elif array.max() > 1.0:
        array = array / 255.0
    return np.clip(array, 0.0, 1.0)


def tile(images: Sequence[np.ndarray]) -> np.ndarray:
    """HWC images in [0, 1] of one size tiled into a near-square grid (white where a cell is empty)."""
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    h, w, c = images[0].shape
    grid = np.ones((rows * h, cols * w, c), dtype=images[0].dtype)
    for i, image in enumerate(images):
        r, k = divmod(i, cols)
        grid[r * h:(r + 1) * h, k * w:(k + 1) * w] = image
    return grid


def stack_images(dataset, indices: Sequence[int]) -> paddle.Tensor:
    """The transformed images `dataset[indices]` as one [N, 3, H, W] tensor."""
    images = [dataset[int(i)][0] for i in indices]
    return paddle.stack([x if isinstance(x, paddle.Tensor) else paddle.to_tensor(x) for x in images])


def frame(ax: Axes, colour: str, linestyle: str = "-", width: float = 4.0) -> None:
    """Hide the ticks of `ax` and draw its border in `colour`."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)
        spine.set_linestyle(linestyle)


def class_name(dataset, label: int, width: int = 18) -> str:
    """The class name of `label` (shortened to `width` characters)."""
    names = getattr(dataset, "label_names", None)
    name = str(names[label]) if names is not None else f"class {label}"
    return name if len(name) <= width else name[:width - 1] + "…"


# ----------------------------------------------------------------------------------------
# episodes
# ----------------------------------------------------------------------------------------
def show_episode(dataset, episode: Sequence[int], way: int, shot: int, query: int,
                 max_query: Optional[int] = None, cell: float = 1.3,
                 stats: Tuple[Sequence[float], Sequence[float]] = (MEAN, STD)) -> Figure:
    """One row per class: its `shot` support images (solid blue frame), then its queries
    (dashed orange frame). `episode` is the flat index list of data/samplers.py (supports
    class-major, then queries class-major); `max_query` limits the queries drawn per class;
    `stats` are the (mean, std) the dataset's transform normalised with."""
    shown = query if max_query is None else min(query, max_query)
    cols = shot + shown
    fig = Figure(figsize=(cell * cols, cell * way + 0.6))
    axes = fig.subplots(way, cols, squeeze=False)
    for c in range(way):
        row = [episode[c * shot + s] for s in range(shot)]
        row += [episode[way * shot + c * query + q] for q in range(shown)]
        for k, index in enumerate(row):
            ax = axes[c, k]
            ax.imshow(denormalise(dataset[int(index)][0], stats))
            is_support = k < shot
            frame(ax, SUPPORT_COLOUR if is_support else QUERY_COLOUR, "-" if is_support else "--")
            if c == 0:
                ax.set_title(f"support {k + 1}" if is_support else f"query {k - shot + 1}", fontsize=8)
        label = int(dataset.labels[row[0]]) if hasattr(dataset, "labels") else c
        axes[c, 0].set_ylabel(class_name(dataset, label), fontsize=8)
    fig.suptitle(f"{way}-way {shot}-shot episode: blue = support, orange = query", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------
# training curves
# ----------------------------------------------------------------------------------------
def load_history(history: Union[str, List[Dict]]) -> List[Dict]:
    """A run's history: the list itself, a history.json path, or a run folder holding one."""
    if isinstance(history, (str, os.PathLike)):
        path = os.path.join(history, "history.json") if os.path.isdir(history) else history
        with open(path) as f:
            return json.load(f)
    return list(history)


def series(history: List[Dict], key: str) -> Tuple[List[int], List[float]]:
    """(epochs, values) of `key` over the epochs where it was recorded."""
    points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
    return ([e for e, _ in points], [v for _, v in points]) if points else ([], [])


def plot_history(history: Union[str, List[Dict]], title: str = "") -> Figure:
    """Loss and accuracy per epoch (train and validation) from a run's history.json list
    (frn/engine.py), with the best validation epoch marked."""
    history = load_history(history)
    fig = Figure(figsize=(9, 3.4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, ax in (("loss", ax_loss), ("acc", ax_acc)):
        for split in ("train", "val"):
            epochs, values = series(history, f"{split}_{key}")
            if epochs:
                ax.plot(epochs, values, marker="o", ms=3, label=split)
    epochs, accs = series(history, "val_acc")
    if accs:
        best = int(np.argmax(accs))
        ax_acc.axvline(epochs[best], color="grey", ls=":", lw=1)
        ax_acc.annotate(f"best val {accs[best]:.1f}%", (epochs[best], accs[best]), fontsize=8,
                        textcoords="offset points", xytext=(4, -12))
    return finish_epoch_figure(fig, ((ax_loss, "loss"), (ax_acc, "accuracy (%)")), title)


def finish_epoch_figure(fig: Figure, axes: Sequence[Tuple[Axes, str]], title: str = "") -> Figure:
    """Label per-epoch axes (x: integer epochs, y: `unit`), add grids, legends and the title."""
    for ax, unit in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------
# FRN reconstruction
# ----------------------------------------------------------------------------------------
@paddle.no_grad()
def position_features(model, images: paddle.Tensor) -> Tuple[paddle.Tensor, Tuple[int, int]]:
    """FRN position vectors [N, r, d] of `images` and the feature map's (h, w)."""
    fmap = model.feature_extractor(images)
    h, w = fmap.shape[-2:]
    return model.to_positions(fmap), (int(h), int(w))


@paddle.no_grad()
def reconstruct_query(model, support_images: paddle.Tensor, query_image: paddle.Tensor, way: int,
                      shot: int) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int]]:
    """(query features [r, d], their reconstructions [way, r, d] from each class's support
    features, feature map (h, w)) as FRN computes them at test time (methods/frn.py)."""
    from methods.frn import reconstruct

    model.eval()
    query_image = query_image if query_image.ndim == 4 else query_image.unsqueeze(0)
    features, hw = position_features(model, paddle.concat([support_images, query_image]))
    r, d = features.shape[1], features.shape[2]
    support = features[:way * shot].reshape([way, shot * r, d])
    query = features[way * shot]
    recon = reconstruct(query, support, model.r[0], model.r[1])
    return query.numpy(), recon.numpy(), hw


def pca_rgb(query: np.ndarray, others: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The first 3 principal components of the query's position vectors [r, d], applied to the
    query and to `others` [k, r, d], mapped to RGB with one scale for all: (query [r, 3],
    others [k, r, 3]) in [0, 1]. Signs are fixed so that the query's largest score is positive."""
    mean = query.mean(axis=0)
    _, _, vt = np.linalg.svd(query - mean, full_matrices=False)
    basis = np.zeros((3, query.shape[1]), dtype=np.float64)
    basis[:min(3, len(vt))] = vt[:3]
    project = lambda x: (x - mean) @ basis.T  # noqa: E731
    q, o = project(query), project(others)
    signs = np.sign(q[np.abs(q).argmax(axis=0), np.arange(3)])
    signs[signs == 0] = 1
    q, o = q * signs, o * signs
    both = np.concatenate([q[None], o])
    lo, hi = both.min(axis=(0, 1)), both.max(axis=(0, 1))
    scale = np.where(hi > lo, hi - lo, 1.0)
    return (q - lo) / scale, (o - lo) / scale


def show_reconstruction(model, support_images: paddle.Tensor, query_image: paddle.Tensor, way: int,
                        shot: int, class_names: Optional[Sequence[str]] = None,
                        query_label: Optional[int] = None, cell: float = 1.8) -> Figure:
    """How FRN classifies one query: column 0 is the query, column c+1 class c.

    Row 1: the query image and each class's support images. Row 2: the query's feature map and
    its reconstruction from each class's support features, drawn as the first 3 PCA components
    of the d-dim position vectors mapped to RGB (one colour scale for all panels). Row 3: each
    class's squared reconstruction error per position (one colour scale). Titles give each
    class's mean error (the score FRN ranks by) and its share of the query's mean |q|^2; the
    lowest error is the prediction (green if it is `query_label`, red otherwise).

    `support_images` [way*shot, 3, H, W] class-major and `query_image` [3, H, W], both
    normalised as by data.transforms.eval_transform; `model` an FRN (methods/frn.py).
    """
    query, recon, (h, w) = reconstruct_query(model, support_images, query_image, way, shot)
    errors_map = ((recon - query[None]) ** 2).sum(axis=2)            # [way, r]
    errors = errors_map.mean(axis=1)
    energy = float((query ** 2).sum(axis=1).mean())
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(way)]
    q_rgb, recon_rgb = pca_rgb(query, recon)
    vmax = float(errors_map.max())
    predicted = int(errors.argmin())

    fig = Figure(figsize=(cell * (way + 1), cell * 3 + 0.8), layout="constrained")
    axes = fig.subplots(3, way + 1, squeeze=False)
    support = [denormalise(x) for x in support_images]
    draw_column(axes[:2, 0], denormalise(query_image.squeeze()), q_rgb.reshape(h, w, 3), "query", QUERY_COLOUR)
    axes[2, 0].axis("off")
    axes[2, 0].text(0.5, 0.5, f"squared error\nper position\n\nquery mean |q|²\n= {energy:.3g}",
                    ha="center", va="center", fontsize=8, transform=axes[2, 0].transAxes)
    for c in range(way):
        colour = (GOOD_COLOUR if query_label in (None, c) else BAD_COLOUR) if c == predicted else "lightgrey"
        title = (f"{names[c]}{' (true)' if c == query_label else ''}\n"
                 f"error {errors[c]:.3g} ({100 * errors[c] / energy:.1f}%)")
        draw_column(axes[:2, c + 1], tile(support[c * shot:(c + 1) * shot]), recon_rgb[c].reshape(h, w, 3),
                    title, colour)
        heat = axes[2, c + 1].imshow(errors_map[c].reshape(h, w), cmap="magma", vmin=0.0, vmax=vmax,
                                     interpolation="nearest")
        frame(axes[2, c + 1], colour, width=3.0 if colour != "lightgrey" else 1.0)
    for row, label in enumerate(("images", "features (PCA→RGB)")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    fig.colorbar(heat, ax=axes[2, -1], fraction=0.08, pad=0.03)
    fig.suptitle(f"FRN reconstruction of one query ({h}x{w} positions): predicted {names[predicted]}",
                 fontsize=10)
    return fig


def draw_column(axes: Sequence[Axes], image: np.ndarray, rgb: np.ndarray, title: str, colour: str) -> None:
    """Image and PCA feature panels of one `show_reconstruction` column, framed in `colour`."""
    axes[0].imshow(image)
    axes[0].set_title(title, fontsize=8, color="black" if colour == "lightgrey" else colour)
    axes[1].imshow(rgb, interpolation="nearest")
    for ax in axes:
        frame(ax, colour, width=3.0 if colour != "lightgrey" else 1.0)


# ----------------------------------------------------------------------------------------
# DeepEMD: cross-reference weights and optimal flows
# ----------------------------------------------------------------------------------------
@paddle.no_grad()
def emd_pair(model, support_image: paddle.Tensor, query_image: paddle.Tensor) -> Dict[str, np.ndarray]:
    """DeepEMD's view of one (query, support) pair on the dense feature map (FCN nodes).

    Returns the node weights of both images as the solver sees them (cross-reference weights,
    relu + floor, rescaled to sum to the node count) as [h, w] maps, the similarity [n, n] of
    query nodes (rows) to support nodes, the optimal flow [n, n] (exact solver, the optimum of
    cv2.EMD), the pair's logit T/n·Σ flow·sim, and the grid (h, w). `model` is a DeepEMD
    (methods/deepemd.py); images are normalised [3, H, W] tensors.
    """
    from methods.deepemd import centred_cosine, cross_reference_weights, normalise_weights
    from methods.emd_exact import solve_emd
    model.eval()
    images = np.stack([to_numpy(support_image), to_numpy(query_image)]).astype(np.float32)
    fmap = model.feature_extractor(paddle.to_tensor(images))
    h, w = (int(s) for s in fmap.shape[-2:])
    proto, query = fmap[:1], fmap[1:]
    weight_1, weight_2 = cross_reference_weights(proto, query)
    query_weights = normalise_weights(weight_1[0]).numpy()        # [1, n]
    support_weights = normalise_weights(weight_2[0]).numpy()
    sim = centred_cosine(proto, query)[0, 0].numpy()
    flow = solve_emd((1 - sim)[None], query_weights, support_weights).flow[0]
    n = h * w
    return {"query_weights": query_weights[0].reshape(h, w), "support_weights": support_weights[0].reshape(h, w),
            "similarity": sim, "flow": flow, "logit": float(model.temperature / n * (flow * sim).sum()),
            "grid": np.array([h, w])}


def weight_overlay(ax: Axes, image: np.ndarray, weights: np.ndarray, vmax: float, title: str, colour: str):
    """An image with its node weights drawn over it as a translucent heat map."""
    ax.imshow(image)
    size = image.shape[0]
    heat = ax.imshow(weights, cmap="inferno", alpha=0.55, vmin=0.0, vmax=vmax, interpolation="nearest",
                     extent=(0, size, size, 0))
    ax.set_title(title, fontsize=8, color="black" if colour == "lightgrey" else colour)
    frame(ax, colour, width=3.0 if colour != "lightgrey" else 1.0)
    return heat


def show_emd_weights(model, support_images: paddle.Tensor, query_image: paddle.Tensor,
                     class_names: Optional[Sequence[str]] = None, query_label: Optional[int] = None,
                     stats: Tuple[Sequence[float], Sequence[float]] = (MEAN, STD), cell: float = 1.9) -> Figure:
    """DeepEMD's cross-reference weights in a 1-shot episode, one column per class.

    Top row: each class's support image with the weights of its nodes referenced to the query
    (which parts of the support image resemble the query as a whole). Bottom row: the query with
    the weights of its nodes referenced to that class. The EMD moves mass between heavy nodes;
    light nodes (background, clutter) hardly count. Titles give each class's logit; the largest
    is the prediction (green if it is `query_label`, red otherwise). `stats` are the images'
    (mean, std) normalisation.
    """
    way = len(support_images)
    pairs = [emd_pair(model, support_images[c], query_image) for c in range(way)]
    logits = np.array([p["logit"] for p in pairs])
    predicted = int(logits.argmax())
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(way)]
    vmax = max(max(p["query_weights"].max(), p["support_weights"].max()) for p in pairs)
    query = denormalise(query_image, stats)
    fig = Figure(figsize=(cell * way, cell * 2 + 0.9), layout="constrained")
    axes = fig.subplots(2, way, squeeze=False)
    for c, pair in enumerate(pairs):
        colour = (GOOD_COLOUR if query_label in (None, c) else BAD_COLOUR) if c == predicted else "lightgrey"
        title = f"{names[c]}{' (true)' if c == query_label else ''}\nlogit {logits[c]:.2f}"
        weight_overlay(axes[0, c], denormalise(support_images[c], stats), pair["support_weights"], vmax, title, colour)
        heat = weight_overlay(axes[1, c], query, pair["query_weights"], vmax, "query, weights for this class",
                              "lightgrey")
    axes[0, 0].set_ylabel("support (weights w.r.t. query)", fontsize=8)
    axes[1, 0].set_ylabel("query (weights w.r.t. class)", fontsize=8)
    fig.colorbar(heat, ax=axes[:, -1], fraction=0.08, pad=0.03, label="node weight (sums to n)")
    fig.suptitle(f"DeepEMD cross-reference weights ({int(pairs[0]['grid'][0])}x{int(pairs[0]['grid'][1])} nodes):"
                 f" predicted {names[predicted]}", fontsize=10)
    return fig


def show_emd_flow(model, support_image: paddle.Tensor, query_image: paddle.Tensor, title: str = "",
                  top: int = 40, stats: Tuple[Sequence[float], Sequence[float]] = (MEAN, STD),
                  cell: float = 3.0) -> Figure:
    """The optimal EMD flow between a query (left) and a support image (right): a line joins the
    centres of two nodes that exchange mass, its width the mass moved and its colour the
    nodes' cosine similarity; only the `top` largest flows are drawn (the caption says how much
    of the total they carry). Node weights are shaded on both images."""
    from matplotlib import cm, colors
    pair = emd_pair(model, support_image, query_image)
    h, w = (int(s) for s in pair["grid"])
    query, support = denormalise(query_image, stats), denormalise(support_image, stats)
    size, gap = query.shape[0], query.shape[0] // 8
    canvas = np.ones((size, 2 * size + gap, 3))
    canvas[:, :size], canvas[:, size + gap:] = query, support
    fig = Figure(figsize=(cell * 2.2, cell + 0.6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(canvas)
    vmax = max(pair["query_weights"].max(), pair["support_weights"].max())
    for weights, x0 in ((pair["query_weights"], 0), (pair["support_weights"], size + gap)):
        ax.imshow(weights, cmap="inferno", alpha=0.35, vmin=0, vmax=vmax, interpolation="nearest",
                  extent=(x0, x0 + size, size, 0))
    flow, sim = pair["flow"], pair["similarity"]
    order = np.argsort(flow, axis=None)[::-1][:top]
    norm = colors.Normalize(vmin=-1.0, vmax=1.0)
    centre = lambda node, x0: (x0 + (node % w + 0.5) * size / w, (node // w + 0.5) * size / h)  # noqa: E731
    for index in order:
        a, b = divmod(int(index), flow.shape[1])
        if flow[a, b] <= 0:
            break
        (xa, ya), (xb, yb) = centre(a, 0), centre(b, size + gap)
        ax.plot([xa, xb], [ya, yb], color=cm.coolwarm(norm(sim[a, b])), linewidth=0.5 + 4 * flow[a, b] / flow.max(),
                alpha=0.85)
    ax.set_xlim(0, canvas.shape[1])
    ax.set_ylim(size, 0)
    ax.axis("off")
    carried = flow.ravel()[order].sum() / flow.sum()
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap="coolwarm"), ax=ax, fraction=0.04, pad=0.02,
                 label="cosine similarity")
    ax.set_title(f"{title}{chr(10) if title else ''}logit {pair['logit']:.2f}; the {len(order)} largest flows "
                 f"carry {100 * carried:.0f}% of the mass", fontsize=9)
    return fig


# ----------------------------------------------------------------------------------------
# MTL inner loop
# ----------------------------------------------------------------------------------------
def plot_inner_loop(traces: Dict[str, np.ndarray], title: str = "") -> Figure:
    """Query accuracy against inner-loop steps: `traces` maps a label (e.g. "5-way 1-shot") to
    an [episodes, steps + 1] array of accuracies (%), step 0 being the initialisation. Draws
    the mean with its 95% interval band."""
    fig = Figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    for label, trace in traces.items():
        trace = np.asarray(trace, dtype=np.float64)
        mean = trace.mean(0)
        half = 1.96 * trace.std(0) / math.sqrt(len(trace))
        steps = np.arange(trace.shape[1])
        ax.plot(steps, mean, label=f"{label}: {mean[0]:.1f}% -> {mean[-1]:.1f}%")
        ax.fill_between(steps, mean - half, mean + half, alpha=0.2)
    return finish_single_axes(fig, ax, "inner-loop step (base learner updates on the support set)",
                              "query accuracy (%)", title)


# ----------------------------------------------------------------------------------------
# Negative-Margin: accuracy against the margin, several runs' curves
# ----------------------------------------------------------------------------------------
def plot_accuracy_vs_margin(results: Dict[int, Dict[float, Tuple[float, float]]], title: str = "") -> Figure:
    """Novel-class accuracy against the training margin: `results[shot][margin] = (mean %, 95%
    half-width)`, one line with error bars per shot; margin 0 (the plain cosine softmax) marked."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for shot, by_margin in sorted(results.items()):
        margins = sorted(by_margin)
        means = [by_margin[m][0] for m in margins]
        intervals = [by_margin[m][1] for m in margins]
        ax.errorbar(margins, means, yerr=intervals, marker="o", ms=4, capsize=3, label=f"5-way {shot}-shot")
    ax.axvline(0.0, color="grey", ls=":", lw=1)
    return finish_single_axes(fig, ax, "margin m of the base-training head (negative: looser)",
                              "novel-class accuracy (%)", title)


def finish_single_axes(fig: Figure, ax: Axes, xlabel: str, ylabel: str, title: str = "") -> Figure:
    """Axis labels, grid, legend and title of a one-panel figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_val_curves(runs: Dict[str, Union[str, List[Dict]]], title: str = "") -> Figure:
    """Validation accuracy per epoch of several runs (label -> history or run folder), with the
    training loss beside it: how the runs of a sweep learn."""
    fig = Figure(figsize=(9, 3.4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for label, history in runs.items():
        history = load_history(history)
        for key, ax in (("train_loss", ax_loss), ("val_acc", ax_acc)):
            epochs, values = series(history, key)
            if epochs:
                ax.plot(epochs, values, marker="o", ms=3, label=label)
    return finish_epoch_figure(fig, ((ax_loss, "training loss"), (ax_acc, "validation accuracy (%)")), title)


# ----------------------------------------------------------------------------------------
# SimTrans: sample weights and similarity matrices of web images
# ----------------------------------------------------------------------------------------
def show_sample_weights(dataset, indices: Sequence[int], weights: Sequence[float],
                        outliers: Optional[Sequence[bool]] = None, columns: int = 10, cell: float = 1.2,
                        title: str = "") -> Figure:
    """The images `dataset[indices]` of one class, sorted by their sample weight (highest first),
    each titled with its weight; with `outliers` (True for an injected image) clean images get a
    green frame and outliers a red one."""
    order = np.argsort(-np.asarray(weights, dtype=np.float64), kind="stable")
    rows = math.ceil(len(order) / columns)
    fig = Figure(figsize=(cell * columns, cell * rows + 0.7))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, i in enumerate(order):
        ax = axes[k // columns, k % columns]
        ax.axis("on")
        ax.imshow(denormalise(dataset[int(indices[i])][0]))
        colour = "lightgrey" if outliers is None else (BAD_COLOUR if outliers[i] else GOOD_COLOUR)
        frame(ax, colour, width=3.0)
        ax.set_title(f"{weights[i]:.2f}", fontsize=8)
    legend = "" if outliers is None else " (green: clean, red: injected outlier)"
    fig.suptitle(title or f"sample weights, highest first{legend}", fontsize=10)
    fig.tight_layout()
    return fig


def show_similarity(matrix: np.ndarray, weights: Optional[Sequence[float]] = None,
                    outliers: Optional[Sequence[bool]] = None, title: str = "") -> Figure:
    """A class's similarity matrix S[i, j] as a heat map, rows and columns ordered by decreasing
    sample weight when `weights` are given; injected outliers (if known) crossed in red on the
    diagonal."""
    matrix = np.asarray(matrix)
    order = (np.argsort(-np.asarray(weights, dtype=np.float64), kind="stable") if weights is not None
             else np.arange(len(matrix)))
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.subplots()
    heat = ax.imshow(matrix[np.ix_(order, order)], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(heat, ax=ax, fraction=0.046, pad=0.04, label="similarity")
    if outliers is not None:  # a red cross on the diagonal cell of every injected outlier
        marked = [k for k, i in enumerate(order) if outliers[i]]
        ax.scatter(marked, marked, marker="x", color=BAD_COLOUR, s=max(6.0, 600.0 / len(matrix)), linewidths=1.0)
    ax.set_xlabel("image j" + (" (by weight)" if weights is not None else ""))
    ax.set_ylabel("image i")
    ax.set_title((title or "S[i, j] = SimNet similarity of images i and j")
                 + ("\n(red x: injected outliers)" if outliers is not None else ""), fontsize=10)
    fig.tight_layout()
    return fig

"""Plotting helpers for the notebooks: episodes, training curves, FRN reconstructions.

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


def denormalise(image) -> np.ndarray:
    """A normalised CHW image tensor (MEAN/STD of data.transforms) as an HWC array in [0, 1].
    An HWC uint8 image (no transform) is only rescaled."""
    array = to_numpy(image).astype(np.float32)
    if array.ndim == 3 and array.shape[0] == 3:
        array = array * np.asarray(STD)[:, None, None] + np.asarray(MEAN)[:, None, None]
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
                 max_query: Optional[int] = None, cell: float = 1.3) -> Figure:
    """One row per class: its `shot` support images (solid blue frame), then its queries
    (dashed orange frame). `episode` is the flat index list of data/samplers.py (supports
    class-major, then queries class-major); `max_query` limits the queries drawn per class."""
    shown = query if max_query is None else min(query, max_query)
    cols = shot + shown
    fig = Figure(figsize=(cell * cols, cell * way + 0.6))
    axes = fig.subplots(way, cols, squeeze=False)
    for c in range(way):
        row = [episode[c * shot + s] for s in range(shot)]
        row += [episode[way * shot + c * query + q] for q in range(shown)]
        for k, index in enumerate(row):
            ax = axes[c, k]
            ax.imshow(denormalise(dataset[int(index)][0]))
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
# Negative-Margin
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
    ax.set_xlabel("margin m of the base-training head (negative: looser)")
    ax.set_ylabel("novel-class accuracy (%)")
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

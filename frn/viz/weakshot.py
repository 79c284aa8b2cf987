"""SimTrans: web images sorted by their sample weights, and similarity matrices."""
import math
from typing import Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from frn.viz.common import BAD_COLOUR, GOOD_COLOUR, denormalise, frame


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

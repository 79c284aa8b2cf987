"""Plotting helpers shared by the notebooks' figures: images and episodes.

Every function builds a `matplotlib.figure.Figure` without touching pyplot's global state and
returns it; nothing is shown or saved here. In a notebook call `display(fig)` (or
`fig.savefig(path)`).
"""
import math
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np
import paddle
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from data.transforms import MEAN, STD

if TYPE_CHECKING:
    from matplotlib.typing import LineStyleType  # matplotlib >= 3.8; only the type checker reads it

SUPPORT_COLOUR = "tab:blue"
QUERY_COLOUR = "tab:orange"
GOOD_COLOUR = "tab:green"
BAD_COLOUR = "tab:red"


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


def frame(ax: Axes, colour: str, linestyle: "LineStyleType" = "-", width: float = 4.0) -> None:
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

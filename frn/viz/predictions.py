"""predict.py's results as a picture: the query images in a grid, each titled with its predicted
class and probability (green when right, red when wrong, when its folder names the true class)
and the runner-up classes below."""
import csv
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from data.images import folder_labels, load_image
from frn.viz.common import BAD_COLOUR, GOOD_COLOUR, QUERY_COLOUR, frame

THUMBNAIL = 128  # pixels of the longer side of each drawn image


def read_predictions(path: str) -> Tuple[List[str], np.ndarray, List[str]]:
    """(image paths, probabilities [n, classes], class names) of a predict.py / infer.py CSV: the
    class columns follow image, prediction, score and the --top_k pairs prediction_j, score_j."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    first = 3
    while first + 1 < len(header) and header[first] == f"prediction_{(first - 1) // 2 + 1}":
        first += 2
    classes = header[first:]
    return [r[0] for r in rows], np.asarray([[float(v) for v in r[first:]] for r in rows]), classes


def short(name: str, width: int = 20) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def show_predictions(paths: Sequence[str], probabilities: np.ndarray, class_names: Sequence[str],
                     top_k: int = 3, max_images: int = 24, columns: Optional[int] = None,
                     cell: float = 1.9) -> Figure:
    """A grid of the first `max_images` query images (upright, as predict.py read them) with the
    `top_k` classes of each: the best as the title, the others below. `probabilities` [n, classes]
    are the CSV's probability columns (or predict's result)."""
    shown = list(paths[:max_images])
    columns = columns or min(6, max(1, math.ceil(math.sqrt(len(shown)))))
    rows = max(1, math.ceil(len(shown) / columns))
    truth = folder_labels(shown, class_names)
    fig = Figure(figsize=(cell * columns, (cell + 0.2 + 0.15 * top_k) * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= len(shown):
            ax.axis("off")
            continue
        image = load_image(shown[k])
        image.thumbnail((THUMBNAIL, THUMBNAIL))
        ax.imshow(np.asarray(image))
        p = probabilities[k]
        order = np.argsort(-p, kind="stable")[:top_k]
        best = int(order[0])
        colour = QUERY_COLOUR if truth[k] < 0 else (GOOD_COLOUR if best == truth[k] else BAD_COLOUR)
        frame(ax, colour, width=3.0)
        ax.set_title(f"{short(class_names[best])} {100 * p[best]:.0f}%", fontsize=8, color=colour)
        others = "\n".join(f"{short(class_names[c])} {100 * p[c]:.0f}%" for c in order[1:])
        if others:
            ax.set_xlabel(others, fontsize=6.5, color="dimgray")
    known = truth >= 0
    title = f"{len(shown)} of {len(paths)} images"
    if known.any():
        correct = int((probabilities[:len(shown)].argmax(1)[known] == truth[known]).sum())
        title += f": {correct}/{int(known.sum())} right (green) where the folder names the class"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig

"""FRN: how a query is reconstructed from each class's support positions."""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import paddle
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from frn.viz.common import (
    BAD_COLOUR,
    GOOD_COLOUR,
    QUERY_COLOUR,
    denormalise,
    frame,
    tile,
)


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


def draw_column(axes: Union[Sequence[Axes], np.ndarray], image: np.ndarray, rgb: np.ndarray, title: str,
                colour: str) -> None:
    """Image and PCA feature panels of one `show_reconstruction` column, framed in `colour`."""
    axes[0].imshow(image)
    axes[0].set_title(title, fontsize=8, color="black" if colour == "lightgrey" else colour)
    axes[1].imshow(rgb, interpolation="nearest")
    for ax in axes:
        frame(ax, colour, width=3.0 if colour != "lightgrey" else 1.0)

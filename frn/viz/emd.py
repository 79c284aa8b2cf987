"""DeepEMD: cross-reference weights and optimal flows between two images."""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import paddle
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from data.transforms import MEAN, STD
from frn.viz.common import (
    BAD_COLOUR,
    GOOD_COLOUR,
    denormalise,
    frame,
    to_numpy,
)


@paddle.no_grad()
def emd_pair(model, support_image: paddle.Tensor, query_image: paddle.Tensor) -> Dict[str, np.ndarray]:
    """DeepEMD's view of one (query, support) pair on the dense feature map (FCN nodes).

    Returns the node weights of both images as the solver sees them (cross-reference weights,
    relu + floor, rescaled to sum to the node count) as [h, w] maps, the similarity [n, n] of
    query nodes (rows) to support nodes, the optimal flow [n, n] (exact solver, the optimum of
    cv2.EMD), the pair's logit T/n·Σ flow·sim, and the grid (h, w). `model` is a DeepEMD
    (methods/deepemd.py); images are normalised [3, H, W] tensors.
    """
    from methods.deepemd import (
        centred_cosine,
        cross_reference_weights,
        normalise_weights,
    )
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
    flow = solve_emd((1 - sim)[None], query_weights, support_weights).flow
    assert flow is not None                                       # flows=True by default
    flow = flow[0]
    n = h * w
    return {"query_weights": query_weights[0].reshape(h, w), "support_weights": support_weights[0].reshape(h, w),
            "similarity": sim, "flow": flow, "logit": float(model.options.temperature / n * (flow * sim).sum()),
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

"""A deterministic image pipeline written down as data, so that a deployment reproduces it without
this project's code (export.py stores it in classes.json; infer.py applies it with PIL + numpy).

`describe_transform(t)` reads a `paddle.vision.transforms.Compose` of Resize, CenterCrop,
ToTensor and Normalize (the evaluation pipelines of data/transforms.py, data/mtl_transforms.py,
data/neg_margin_transforms.py, ...) or any transform with a `describe()` method of its own
(DeepEMD's FCN pipeline), and returns

    {"decode": {...how the file becomes an RGB image (data/images.py)...},
     "steps": [
        {"op": "resize", "shorter_side": 92, "interpolation": "bilinear"},
            # PIL resize; the longer side becomes int(92 * longer / shorter) (truncated);
            # no resize when the shorter side already is 92
        {"op": "resize", "size": [92, 92], "interpolation": "bilinear"},    # [height, width]
        {"op": "center_crop", "size": [84, 84]},
            # PIL crop at top = round((H - 84) / 2), left = round((W - 84) / 2), Python's round
        {"op": "to_float", "divide": 255.0},       # float32 H x W x 3, divided in float32
        {"op": "normalize", "mean": [...], "std": [...]},   # float32 (x - mean) / std per channel
        {"op": "to_chw"}],
     "channel_order": "RGB", "layout": "NCHW", "dtype": "float32", "input_shape": [3, 84, 84]}

A pipeline with a random step (training augmentation, DeepEMD's Sampling) or an unknown one
cannot be written down: `NotDescribable` names the step.
"""
from typing import Any, Dict, List, Sequence

import paddle.vision.transforms as T

from data.images import BACKGROUND

#: how data/images.py's `load_image` decodes a file (documentation for a deployment)
DECODE = {"library": "PIL", "exif_transpose": True, "mode": "RGB", "alpha": "composited over the background",
          "background": list(BACKGROUND), "16_bit": "round(value / 257)", "animated": "first frame"}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "lanczos", "hamming")


class NotDescribable(ValueError):
    """A transform step that has no data description (random, or unknown)."""


def pair(size: Any) -> List[int]:
    """[height, width] of a size given as an int or a (height, width) pair."""
    return [int(size), int(size)] if isinstance(size, (int, float)) else [int(size[0]), int(size[1])]


def to_float_steps(mean: Sequence[float], std: Sequence[float]) -> List[Dict[str, Any]]:
    """ToTensor + Normalize: the steps after the geometry."""
    return [{"op": "to_float", "divide": 255.0},
            {"op": "normalize", "mean": [float(m) for m in mean], "std": [float(s) for s in std]},
            {"op": "to_chw"}]


def describe_step(step: Any) -> List[Dict[str, Any]]:
    """The data description of one paddle.vision transform."""
    if isinstance(step, T.Resize):
        interpolation = step.interpolation
        if interpolation not in INTERPOLATIONS:
            raise NotDescribable(f"Resize with interpolation {interpolation!r}")
        if isinstance(step.size, int):
            return [{"op": "resize", "shorter_side": step.size, "interpolation": interpolation}]
        return [{"op": "resize", "size": pair(step.size), "interpolation": interpolation}]
    if isinstance(step, T.CenterCrop):
        return [{"op": "center_crop", "size": pair(step.size)}]
    if isinstance(step, T.ToTensor):
        if step.data_format != "CHW":
            raise NotDescribable(f"ToTensor(data_format={step.data_format!r})")
        return [{"op": "to_float", "divide": 255.0}]
    if isinstance(step, T.Normalize):
        if step.data_format != "CHW" or step.to_rgb:
            raise NotDescribable(f"Normalize(data_format={step.data_format!r}, to_rgb={step.to_rgb})")
        channels = lambda v: [float(x) for x in (v if isinstance(v, (list, tuple)) else [v] * 3)]  # noqa: E731
        return [{"op": "normalize", "mean": channels(step.mean), "std": channels(step.std)}, {"op": "to_chw"}]
    raise NotDescribable(type(step).__name__)


def describe_transform(transform: Any) -> Dict[str, Any]:
    """The evaluation pipeline `transform` as data (see the module docstring)."""
    if hasattr(transform, "describe"):
        try:
            steps = transform.describe()
        except ValueError as err:
            raise NotDescribable(str(err)) from None
    elif isinstance(transform, T.Compose):
        steps = [d for step in transform.transforms for d in describe_step(step)]
    else:
        raise NotDescribable(type(transform).__name__)
    if [s["op"] for s in steps][-3:] != ["to_float", "normalize", "to_chw"]:
        raise NotDescribable("a pipeline that does not end with ToTensor + Normalize")
    size = None  # the image size after each geometric step (None: depends on the image)
    for s in steps:
        if s["op"] in ("resize", "center_crop"):
            size = s.get("size")
    if size is None:
        raise NotDescribable("a pipeline whose output size depends on the image (no crop or fixed resize last)")
    return {"decode": dict(DECODE), "steps": steps, "channel_order": "RGB", "layout": "NCHW", "dtype": "float32",
            "input_shape": [3, *size]}

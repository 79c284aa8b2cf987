"""export.py's workflow: a static model for Paddle Inference with the adapted support set frozen
inside, plus classes.json (class names and the preprocessing as data), for infer.py.

    exported/model.json + model.pdiparams   (Paddle 3, PIR)   or   model.pdmodel + model.pdiparams (Paddle 2)
    exported/classes.json

The model's single input is a batch of preprocessed query images [N, 3, H, W] (float32, RGB,
normalised); its output is the method's test-time scores [N, way] (predict.py's softmax of them
are the probabilities). With `--backbone_only` the model is the feature extractor alone and
its output the dense feature map.

Nothing half-working is written: a method whose scoring cannot be a static graph (its
`export_blocker`, e.g. DeepEMD's EMD solvers) or whose evaluation pipeline cannot be written as
data is refused in one line; the model is saved into a temporary folder, loaded back with
Paddle Inference and checked against the dynamic graph's scores on the same input, and only
then moved to --out_dir.
"""
import argparse
import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import paddle
import paddle.nn as nn
from paddle.static import InputSpec

from data.images import load_image
from data.preprocess import NotDescribable, describe_transform
from frn.predict import Prepared, check_method, load_model, prepare, test_transform
from methods import METHODS
from methods.base import Adapted, FewShotMethod, MethodOptions
from utils.device import select_device
from utils.errors import UserError

EXPORT_FORMAT = "fsl-export"
EXPORT_VERSION = 1
MODEL_PREFIX = "model"
#: export.py's own check of the saved graph against the dynamic one (see `check_export`):
#: both run the same float32 CPU kernels (oneDNN off), so they differ by a few ulps of the
#: scores at most (measured below 1e-6 relative); 1e-5 relative + absolute leaves a wide margin
#: and still catches a wrong graph, whose scores differ in the first digits
CHECK_RTOL = CHECK_ATOL = 1e-5
#: probe images for that check when the support set comes from a .pdsupport file (no images)
PROBE_IMAGES = 4


class FrozenSupport(nn.Layer):
    """The method with an adapted support set frozen inside as persistable buffers: images ->
    test-time class scores."""

    def __init__(self, method: FewShotMethod, adapted: Adapted):
        super().__init__()
        self.method = method
        self.ints = {k: int(v) for k, v in adapted.items() if not isinstance(v, paddle.Tensor)}
        self.keys = sorted(k for k, v in adapted.items() if isinstance(v, paddle.Tensor))
        for key in self.keys:
            self.register_buffer(f"support_{key}", adapted[key].detach().clone(), persistable=True)

    def adapted(self) -> Adapted:
        return {**self.ints, **{k: getattr(self, f"support_{k}") for k in self.keys}}

    def forward(self, images: paddle.Tensor) -> paddle.Tensor:
        return self.method.adapted_scores(self.adapted(), self.method.extract(images))


class Backbone(nn.Layer):
    """The method's feature extractor alone: images -> dense feature map."""

    def __init__(self, method: FewShotMethod):
        super().__init__()
        self.feature_extractor = method.feature_extractor

    def forward(self, images: paddle.Tensor) -> paddle.Tensor:
        return self.feature_extractor(images)


def check_exportable(options: MethodOptions, backbone_only: bool) -> None:
    """Refuse, in one line, a method whose test-time scoring cannot be a static graph."""
    check_method(options)
    blocker = METHODS[options.method].export_blocker
    if blocker and not backbone_only:
        raise UserError(f"--method {options.method} cannot be exported as a static model: {blocker}; use "
                        f"predict.py for it, or export.py --backbone_only for its feature extractor")


def preprocessing(transform: Any, method: str) -> Dict[str, Any]:
    """The evaluation pipeline as data, or a one-line refusal."""
    try:
        return describe_transform(transform)
    except NotDescribable as err:
        raise UserError(f"--method {method}'s evaluation pipeline cannot be written as data for a deployment "
                        f"({err}); it cannot be exported") from None


def check_out_dir(out_dir: str) -> None:
    """--out_dir must be new, empty or an earlier export (which is replaced), in an existing folder."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        raise UserError(f"--out_dir {out_dir}: folder {parent} does not exist; create it or choose another path")
    if os.path.isfile(out_dir):
        raise UserError(f"--out_dir {out_dir} is a file; give a folder")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.isfile(os.path.join(out_dir, "classes.json")):
        raise UserError(f"--out_dir {out_dir} is a folder with other files in it; give a new or empty folder")


def saved_files(folder: str) -> Tuple[str, str]:
    """(model file, params file) that paddle.jit.save wrote: Paddle 3's PIR program is
    `model.json`, Paddle 2's (and Paddle 3 with FLAGS_enable_pir_api=0) `model.pdmodel`."""
    for suffix in (".json", ".pdmodel"):
        if os.path.isfile(os.path.join(folder, MODEL_PREFIX + suffix)):
            return MODEL_PREFIX + suffix, MODEL_PREFIX + ".pdiparams"
    raise RuntimeError(f"paddle.jit.save wrote neither {MODEL_PREFIX}.json nor {MODEL_PREFIX}.pdmodel in {folder}: "
                       f"{sorted(os.listdir(folder))}")


def inference_predictor(model_file: str, params_file: str):
    """A Paddle Inference predictor configured as infer.py's default: CPU, oneDNN off."""
    from paddle import inference
    config = inference.Config(model_file, params_file)
    config.disable_gpu()
    if hasattr(config, "disable_mkldnn"):
        config.disable_mkldnn()
    config.disable_glog_info()
    return inference.create_predictor(config)


def run_predictor(predictor, batch: np.ndarray) -> np.ndarray:
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(batch.shape))
    handle.copy_from_cpu(np.ascontiguousarray(batch, dtype=np.float32))
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def probe_batch(transform: Any, paths: List[str], shape: List[int]) -> np.ndarray:
    """A few preprocessed images to check the export with (random inputs when there are none)."""
    if paths:
        return np.stack([np.asarray(transform(load_image(p, "--support image")), dtype=np.float32)
                         for p in paths[:PROBE_IMAGES]])
    return np.random.RandomState(0).randn(PROBE_IMAGES, *shape).astype(np.float32)


def check_export(layer: nn.Layer, folder: str, model_file: str, params_file: str, batch: np.ndarray) -> float:
    """Run the saved model on Paddle Inference and the layer in dygraph on `batch`; raise when
    they disagree. Returns the largest difference."""
    with paddle.no_grad():
        expected = layer(paddle.to_tensor(batch)).numpy()
    got = run_predictor(inference_predictor(os.path.join(folder, model_file), os.path.join(folder, params_file)), batch)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=CHECK_RTOL, atol=CHECK_ATOL):
        raise RuntimeError(f"the exported graph does not reproduce the dynamic graph (shape {got.shape} vs "
                           f"{expected.shape}, largest difference {np.abs(got - expected).max():.3g}); nothing written")
    return float(np.abs(got - expected).max())


def save_static(layer: nn.Layer, folder: str, input_shape: List[int]) -> Tuple[str, str]:
    """paddle.jit.save `layer` (one input `images` [N, *input_shape]) into `folder`."""
    layer.eval()
    spec = [InputSpec([None, *input_shape], "float32", "images")]
    static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
    paddle.jit.save(static, os.path.join(folder, MODEL_PREFIX))
    return saved_files(folder)


def replace_folder(tmp: str, out_dir: str) -> None:
    """Move the finished export into place (an earlier export there is replaced)."""
    if os.path.isdir(out_dir):
        old = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out_dir)), prefix=".old_export_")
        os.rmdir(old)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def export(args: argparse.Namespace) -> Dict[str, Any]:
    """export.py: write --out_dir; returns classes.json's content."""
    select_device(args.gpu)
    check_exportable(args.options, args.backbone_only)
    check_out_dir(args.out_dir)
    if args.backbone_only:
        if args.support:
            raise UserError("--backbone_only exports the feature extractor alone: drop --support")
        model, fingerprint = load_model(args.options, args.model_path)
        transform, probe_paths = test_transform(args.options), []
        layer: nn.Layer = Backbone(model)
        classes: List[str] = []
        support_info: Optional[Dict[str, Any]] = None
    else:
        prepared: Prepared = prepare(args)
        model, transform, fingerprint = prepared.model, prepared.transform, prepared.fingerprint
        layer = FrozenSupport(model, prepared.support.adapted)
        classes = prepared.support.class_names
        support_info = {"counts": dict(zip(classes, prepared.support.counts))}
        probe_paths = prepared.support_paths
    prep = preprocessing(transform, args.method)
    parent = os.path.dirname(os.path.abspath(args.out_dir))
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp_export_")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; the export is an ordinary folder
    try:
        model_file, params_file = save_static(layer, tmp, prep["input_shape"])
        difference = check_export(layer, tmp, model_file, params_file, probe_batch(transform, probe_paths,
                                                                                   prep["input_shape"]))
        meta = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION,
                "kind": "features" if args.backbone_only else "classifier",
                "classes": classes, "method": args.method, "model": args.model,
                "model_file": model_file, "params_file": params_file, "paddle_version": paddle.__version__,
                "input": {"name": "images", "shape": [None, *prep["input_shape"]], "dtype": "float32"},
                "output": ("dense feature map [N, C, h, w] of the backbone" if args.backbone_only else
                           "test-time class scores [N, classes]; probabilities = softmax over classes"),
                "preprocessing": prep, "checkpoint": fingerprint, "support": support_info,
                "options": {k: v for k, v in vars(args.options).items() if k not in ("stage",)}}
        with open(os.path.join(tmp, "classes.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, ensure_ascii=False)
        replace_folder(tmp, args.out_dir)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    what = "feature extractor" if args.backbone_only else f"{len(classes)}-class classifier"
    print(f"exported the {what} ({args.method} on {args.model}) -> {args.out_dir}/{model_file} + {params_file} + "
          f"classes.json (Paddle {paddle.__version__}; Paddle Inference matches the dynamic graph to {difference:.1e})")
    return meta

"""Convert official PyTorch state dicts (Tsingularity/FRN and compatible) to Paddle checkpoints.

    python -m frn.convert --model ResNet12 --method meta_frn in.pth out.pdparams
    python -m frn.convert --model ResNet12 --method stl_frn --num_classes 64 in.pth out.pdparams
    python -m frn.convert --model ResNet50 --method simtrans_naive resnet50-19c8e357.pth resnet50_imagenet.pdparams
    python -m frn.convert --model ResNet50 --method simtrans_simnet simnet_state.pth simnet.pdparams

The module trees of this project mirror the reference, so keys map one to one except:
- a leading `module.` (nn.DataParallel) is stripped;
- BatchNorm `running_mean` / `running_var` become `_mean` / `_variance`; `num_batches_tracked`
  is dropped (Paddle keeps no counter);
- 2-D weights of `nn.Linear` layers are transposed ([out, in] in PyTorch, [in, out] in Paddle);
- a method whose module tree differs renames keys with its `from_reference_key` (DeepEMD:
  `encoder.` or bare `layerN.` keys -> `feature_extractor.`; MTL also drops the second names
  `base_learner.vars.N`; Negative-Margin maps the bl0 and mmfewshot layouts through the backbone's
  own `from_reference_key` and drops bl0's Conv-4 aliases `trunk.i.trunk.0/1`; SimTrans maps
  torchvision ResNet-50 keys, the `module.backbone.*` of its GCN wrapper and the
  `backbone.module.resnet.*` / `similarity_head.module.*` of its SimNet), and may read its
  settings from the state (`reference_settings`, e.g. MTL's encoder widths and whether the file is
  a pre-training or a meta-trained model, Negative-Margin's head size, SimTrans's class count
  and SimNet head).
The output holds exactly the converted tensors: entries the reference file lacks (optional
heads, say) are not invented.

`torch_state_to_paddle` is pure numpy. Only `read_pth` imports torch, and only when a `.pth`
file is converted: the rest of the project never needs it. A `.npz` whose arrays are named by
the PyTorch keys (optionally prefixed `param/`, as in the parity fixtures) is accepted too.
"""
import argparse
import os
from typing import Dict, Mapping, Optional, cast

import numpy as np

from frn.checkpoint import save_model, shape_of
from methods.base import CheckpointRules
from utils.errors import UserError, exit_on_user_error

PLAIN = CheckpointRules()
#: `reference_settings` asks for --num_classes (a whole-class model whose size the file does not tell)
REQUIRED = -1
_BN_BUFFERS = {"running_mean": "_mean", "running_var": "_variance"}
_DROPPED_SUFFIXES = ("num_batches_tracked",)
_NPZ_PREFIX = "param/"


def torch_key_to_paddle(key: str) -> Optional[str]:
    """The Paddle state-dict key of a PyTorch key, or None for entries Paddle has no slot for."""
    if key.startswith("module."):
        key = key[len("module."):]
    head, _, leaf = key.rpartition(".")
    if leaf in _DROPPED_SUFFIXES:
        return None
    if leaf in _BN_BUFFERS:
        leaf = _BN_BUFFERS[leaf]
    return f"{head}.{leaf}" if head else leaf


def _linear_weight_keys(model) -> set:
    import paddle.nn as nn
    return {f"{name}.weight" if name else "weight"
            for name, layer in model.named_sublayers(include_self=True) if isinstance(layer, nn.Linear)}


def torch_state_to_paddle(state: Mapping[str, np.ndarray], model) -> Dict[str, np.ndarray]:
    """Map a PyTorch state dict (numpy arrays under PyTorch keys) onto `model`'s Paddle keys.

    Returns {paddle key: array} with the dtype of the model's own entry. Raises `UserError`
    (one line, naming the first key that does not fit) for a key the model does not have, a
    shape that differs, or a model entry the state lacks. Keys the model declares optional
    (`optional_checkpoint_keys`, e.g. FRN's pre-training class matrix) may be absent on either
    side; an optional key the model does not have is dropped, as the reference's
    `load_state_dict(strict=False)` does when an episodic model loads a pre-trained one. A
    whole-class model (`num_classes` set) may lack its meta parameters (`is_meta_parameter`).
    """
    own = {k: v for k, v in model.state_dict().items()}
    rules = getattr(model, "checkpoint_rules", PLAIN)  # a bare backbone has no rules of its own
    linear = _linear_weight_keys(model)
    optional = set(rules.optional_keys)
    out: Dict[str, np.ndarray] = {}
    for key, value in state.items():
        pkey = torch_key_to_paddle(key)
        if pkey is None:
            continue
        pkey = rules.from_reference_key(pkey, model)
        if pkey is None:  # a second name of a tensor the state holds under its first name
            continue
        if pkey not in own:
            if pkey in optional:
                continue
            where = f"this model has no {pkey!r}" if pkey != key else "this model has no such entry"
            raise UserError(f"state dict key {key!r} does not fit: {where}; check --model/--method "
                            f"(and --num_classes)")
        array = np.asarray(value)
        want = shape_of(own[pkey])
        if pkey in linear and array.ndim == 2:
            array = array.T  # PyTorch Linear weight [out, in] -> Paddle [in, out]
        if tuple(array.shape) != want:
            raise UserError(f"state dict key {key!r} has shape {tuple(np.shape(value))} but this model's "
                            f"{pkey!r} has shape {want}; check --model/--method (and --num_classes)")
        if pkey in out:
            raise UserError(f"state dict key {key!r} maps to {pkey!r}, which another key already filled")
        dtype = np.dtype(str(own[pkey].dtype).replace("paddle.", ""))
        out[pkey] = np.ascontiguousarray(array, dtype=dtype)
    # a pre-training file lacks what only episodic training learns (MTL's base learner)
    pretraining = getattr(model, "num_classes", None) is not None
    missing = [k for k in own if k not in out and k not in optional
               and not (pretraining and rules.is_meta_parameter(k))]
    if missing:
        raise UserError(f"the state dict has no entry for this model's {missing[0]!r}; check "
                        f"--model/--method (and --num_classes)")
    return out


# ----- reading ------------------------------------------------------------------------------
def read_pth(path: str) -> Dict[str, np.ndarray]:
    """A PyTorch checkpoint as {key: numpy array}. The only place of the project importing torch."""
    try:
        import torch  # noqa: WPS433 (deliberately local: torch is needed for this command only)
    except ImportError:
        raise UserError("reading a .pth file needs PyTorch, for this command only: pip install torch "
                        "(or convert to .npz elsewhere)") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a foreign or damaged file
        raise UserError(f"{path} is not a readable PyTorch state dict ({type(err).__name__}); a pickled whole model "
                        f"(e.g. the released SimTrans files) loads only with its own code: in that repository run "
                        f"python -c \"import torch; torch.save(torch.load('{path}').state_dict(), 'state.pth')\" "
                        f"and convert state.pth") from None
    # FRN, mmfewshot ({'state_dict': ...}), DeepEMD ({'params': ...}), Negative-Margin code ({'state': ...})
    for wrapper in ("state_dict", "params", "state"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise UserError(f"{path} does not hold a state dict")
    state = {}
    for key, value in obj.items():
        if not torch.is_tensor(value):
            raise UserError(f"{path}: entry {key!r} is not a tensor; pass a model state dict")
        state[str(key)] = value.detach().cpu().numpy()
    return state


def read_npz(path: str) -> Dict[str, np.ndarray]:
    """An `.npz` of arrays named by PyTorch keys; a `param/` prefix (parity fixtures) is removed
    and arrays without it are ignored when any array has it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as err:
        raise UserError(f"{path} is not a readable .npz file ({type(err).__name__})") from None
    if any(k.startswith(_NPZ_PREFIX) for k in arrays):
        arrays = {k[len(_NPZ_PREFIX):]: v for k, v in arrays.items() if k.startswith(_NPZ_PREFIX)}
    return arrays


def read_state(path: str) -> Dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise UserError(f"input {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".pth", ".pt", ".tar", ".ckpt"):
        return read_pth(path)
    if ext == ".npz":
        return read_npz(path)
    raise UserError(f"input {path!r}: expected a PyTorch .pth or a .npz file")


# ----- command line ---------------------------------------------------------------------------
def build_model(model_name: str, method: str, num_classes: Optional[int], image_size: int, **settings):
    """The model the project's entry scripts build for these settings (`settings`: option values)."""
    from frn.runs import build_model as build
    from methods import METHODS
    options = METHODS[method].Options(method=method, model=model_name, image_size=image_size, **settings)
    options.check()
    return build(options, num_classes)


def parse_args(argv=None) -> argparse.Namespace:
    from methods import METHODS
    from network import BACKBONES
    p = argparse.ArgumentParser(prog="python -m frn.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=sorted(BACKBONES))
    p.add_argument("--method", required=True, choices=sorted(METHODS))
    p.add_argument("--num_classes", type=int, default=None,
                   help="base classes of a pre-training checkpoint (stl_frn: read from cat_mat if omitted)")
    p.add_argument("--image_size", type=int, default=84)
    p.add_argument("input", help="PyTorch state dict (.pth) or .npz of arrays named by PyTorch keys")
    p.add_argument("output", help="Paddle checkpoint to write (.pdparams)")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> None:
    args = parse_args(argv)
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num_classes must be >= 1 (got {args.num_classes})")
    if args.image_size < 16:
        raise UserError(f"--image_size must be >= 16 (got {args.image_size})")
    state = read_state(args.input)
    from methods import METHODS
    keys = {torch_key_to_paddle(k) or k: v for k, v in state.items()}
    settings = METHODS[args.method].checkpoint_rules.reference_settings(keys, args.method)
    implied = settings.pop("num_classes", None)
    # reference_settings gives num_classes as an int (REQUIRED: the user must) or None (no head)
    num_classes = args.num_classes if args.num_classes is not None else cast(Optional[int], implied)
    if num_classes == REQUIRED:
        raise UserError(f"--method {args.method} needs --num_classes (the input does not tell the class count)")
    model = build_model(args.model, args.method, num_classes, args.image_size, **settings)
    converted = torch_state_to_paddle(state, model)
    model.set_state_dict(converted)
    own = model.state_dict()

    save_model(model, args.output, extra={"converted_from": os.path.basename(args.input)},
               state_dict={k: own[k] for k in converted})
    print(f"wrote {args.output} ({len(converted)} tensors from {args.input})")


if __name__ == "__main__":
    main()

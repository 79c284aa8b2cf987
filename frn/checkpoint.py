"""Checkpoints: atomic writes, identity checks, resumable training state.

A model file (`best_model.pdparams`, `last_model.pdparams`, `<epoch>.pdparams`) holds
  {"state_dict": {...}, "identity": {"family": "FRN", "model": "ResNet12", ...}, "epoch": int}
A plain Paddle state dict (e.g. from another tool) loads too; its keys and shapes are checked.
`resume.pdstate` additionally holds optimizer, scheduler, epoch, RNG states and the history.
"""
import os
import tempfile
from typing import Any, Dict, Optional

import numpy as np
import paddle

from utils.errors import UserError


def atomic_save(obj: Any, path: str) -> None:
    """Write `obj` with paddle.save to a temp file in the same folder, then rename it into place,
    so a crash never leaves a half-written file under `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=os.path.basename(path))
    os.close(fd)
    try:
        paddle.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_model(model, path: str, epoch: int = -1, extra: Optional[Dict[str, Any]] = None,
               state_dict: Optional[Dict[str, Any]] = None) -> None:
    """Save a model file with its identity (what it may be loaded into); `state_dict` replaces
    the model's own (the converter saves exactly the tensors it converted)."""
    state = model.state_dict() if state_dict is None else state_dict
    payload = {"state_dict": state, "identity": model.checkpoint_identity(), "epoch": epoch}
    payload.update(extra or {})
    atomic_save(payload, path)


def read_checkpoint(path: str, flag: str = "--model_path") -> Dict[str, Any]:
    """Load a checkpoint file into a dict with at least "state_dict"."""
    if not path or not os.path.isfile(path):
        raise UserError(f"{flag} {path!r} does not exist; pass a .pdparams file written by this project")
    try:
        obj = paddle.load(path)
    except Exception as err:  # paddle raises many types for a foreign or damaged file
        raise UserError(f"{flag} {path} is not a Paddle checkpoint ({type(err).__name__}); convert "
                        f"PyTorch .pth files with python -m frn.convert") from None
    if not isinstance(obj, dict):
        raise UserError(f"{flag} {path} does not hold a state dict")
    if "state_dict" in obj or "optimizer" in obj:  # a model file or a resume state of ours
        return obj
    return {"state_dict": obj, "identity": None}  # a bare state dict


def shape_of(value) -> tuple:
    """The shape of a tensor or array as a tuple of ints."""
    return tuple(int(n) for n in (value.shape if hasattr(value, "shape") else np.shape(value)))


def load_weights(model, path: str, flag: str = "--model_path", pretrained: bool = False,
                 ckpt: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Load a checkpoint into `model` after checking it was written for the same kind of model.

    Keys the method's `checkpoint_rules` declare optional (e.g. FRN's pre-training class pools)
    may be missing or extra; everything else must match in name and shape. With `pretrained`
    (--pretrain_path) the checkpoint is a pre-training one: the model's meta parameters (`is_meta_parameter`,
    e.g. MTL's scaling/shifting) are neither expected nor taken from it and keep their initial
    values. `ckpt` is the checkpoint when the caller has already read it (`read_checkpoint(path,
    flag)`), so a large file is not read twice. Returns the checkpoint dict.
    """
    ckpt = read_checkpoint(path, flag) if ckpt is None else ckpt
    identity, wanted = ckpt.get("identity"), model.checkpoint_identity()
    if identity and (identity.get("family"), identity.get("model")) != (wanted["family"], wanted["model"]):
        raise UserError(f"{flag} {path} holds a {identity.get('model')} {identity.get('family')} model, "
                        f"but this run builds a {wanted['model']} {wanted['family']}; pass a matching "
                        f"checkpoint or change --model/--method")
    state = ckpt["state_dict"]
    rules = model.checkpoint_rules
    current = model.state_dict()  # a fresh dict each call: updating it below leaves the model as is
    own = current
    if pretrained:
        own = {k: v for k, v in current.items() if not rules.is_meta_parameter(k)}
        state = {k: v for k, v in state.items() if not rules.is_meta_parameter(k)}
    optional = set(rules.optional_keys)
    missing = [k for k in own if k not in state and k not in optional]
    if missing and all(rules.is_meta_parameter(k) for k in missing):
        raise UserError(f"{flag} {path} is a pre-training checkpoint (it has no {missing[0]!r}, which "
                        f"meta-training learns); meta-train it first (meta_train.py --pretrain_path {path}) "
                        f"or pass a meta-trained checkpoint")
    unexpected = [k for k in state if k not in own and k not in optional]
    wrong = [k for k in own if k in state and shape_of(state[k]) != shape_of(own[k])]
    if missing or unexpected or wrong:
        culprit = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}" if unexpected
                   else f"{wrong[0]!r} has shape {shape_of(state[wrong[0]])} instead of {shape_of(own[wrong[0]])}")
        raise UserError(f"{flag} {path} does not fit --model {wanted['model']} ({culprit}); pass a "
                        f"checkpoint of this backbone/method")
    # entries the checkpoint does not set keep their values (a full dict: Paddle warns per missing key)
    current.update({k: v for k, v in state.items() if k in own})
    model.set_state_dict(current)
    return ckpt

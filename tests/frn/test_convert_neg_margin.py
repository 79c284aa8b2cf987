"""Official Negative-Margin checkpoints of both references -> .pdparams with the reference's numbers.

The checkpoints are written with torch, laid out as each reference saves them (the converter reads
the head's size from them):
- bl0 (`main.py`): {'epoch', 'state', 'acc', 'best_acc', 'optimizer'}, model keys `feature.<backbone>`
  (Conv-4: every tensor twice, `trunk.i.C/BN` and the alias `trunk.i.trunk.0/1`) and
  `classifier.weight` [C, D];
- mmfewshot: {'meta', 'state_dict', 'optimizer'}, keys `backbone.<backbone>` (Conv-4 `layers.i.layers.j`,
  ResNet-12 `conv1/norm1`), `head.weight` and `meta_test_head.weight`.
The backbone tensors are the parity fixtures' (found through the manifest: the Conv-4 state dict and
the full-width ResNet-12 formula weights); the converted model must give the fixture's features,
both layouts the same checkpoint, and the base-class head the reference's logits. Skips without torch
or without the fixtures.
"""
import re

import numpy as np
import paddle
import pytest

from frn.checkpoint import load_weights
from frn.convert import main
from tests.conftest import FIXTURES

torch = pytest.importorskip("torch")
NUM_CLASSES, SCALE = 7, 10.0


def fixture_entry(kind: str):
    from tests.parity.checkers import Entry, manifest_specs
    specs = [s for s in (manifest_specs(FIXTURES / "neg_margin") or []) if s["kind"] == kind]
    if not specs:
        pytest.skip(f"no {kind} fixture under {FIXTURES / 'neg_margin'}")
    return Entry(FIXTURES / "neg_margin", specs[0])


def conv4_case():
    entry = fixture_entry("neg_margin/backbone_conv4")
    bl0 = entry.with_prefix("param/")
    mmfs = {re.sub(r"^trunk\.(\d)\.(C|BN)\.", lambda m: f"layers.{m.group(1)}.layers.{0 if m.group(2) == 'C' else 1}.",
                   k): v for k, v in bl0.items() if ".trunk." not in k}
    return "Conv4", bl0, mmfs, entry


def resnet12_case():
    from tests.parity.checkers import formula_weights
    from tests.parity.neg_margin_checks import neg_margin_model, reference_shapes
    entry = fixture_entry("neg_margin/backbone_resnet12_formula")
    keys = entry.config["state_dict_keys_in_order"]
    bl0 = formula_weights(keys, reference_shapes(neg_margin_model("ResNet12", 84), keys))
    mmfs = {re.sub(r"\.BN(\d)\.", r".norm\1.", re.sub(r"\.C(\d)\.", r".conv\1.", k)): v for k, v in bl0.items()}
    return "ResNet12", bl0, mmfs, entry


def tensors(state: dict) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def convert(tmp_path, name: str, model: str, checkpoint: dict):
    src, out = tmp_path / f"{name}.pth", tmp_path / f"{name}.pdparams"
    torch.save(checkpoint, src)
    main(["--model", model, "--method", "neg_margin", str(src), str(out)])  # the head's size is read from the file
    return out


@pytest.mark.parametrize("case", [conv4_case, resnet12_case], ids=["Conv4", "ResNet12"])
def test_both_official_layouts_convert_to_the_reference_numbers(tmp_path, case):
    from tests.parity.neg_margin_checks import neg_margin_model
    model_name, bl0, mmfs, entry = case()
    head = np.random.RandomState(0).randn(NUM_CLASSES, entry["y_eval"].shape[1]).astype(np.float32)
    bl0_file = convert(tmp_path, "bl0", model_name, {
        "epoch": 399, "acc": 61.5, "best_acc": 62.0, "optimizer": {},
        "state": tensors({**{f"feature.{k}": v for k, v in bl0.items()}, "classifier.weight": head})})
    mmfs_file = convert(tmp_path, "mmfs", model_name, {
        "meta": {"epoch": 200, "mmfewshot_version": "0.1.0"}, "optimizer": {},
        "state_dict": tensors({**{f"backbone.{k}": v for k, v in mmfs.items()}, "head.weight": head,
                               "meta_test_head.weight": head[:5]})})

    converted = [paddle.load(str(f))["state_dict"] for f in (bl0_file, mmfs_file)]
    assert converted[0].keys() == converted[1].keys()
    for key in converted[0]:  # one checkpoint, whichever layout it came from
        np.testing.assert_array_equal(converted[0][key].numpy(), converted[1][key].numpy(), err_msg=key)

    model = neg_margin_model(model_name, 84, num_classes=NUM_CLASSES, scale_factor=SCALE)
    load_weights(model, str(bl0_file))
    model.eval()
    with paddle.no_grad():
        features = model.extract(paddle.to_tensor(entry["x"]))
        logits = model.classifier(features).numpy()
    rtol, atol = entry.tolerance("y_eval")
    np.testing.assert_allclose(features.numpy(), entry["y_eval"], rtol=rtol, atol=atol)
    # the reference head on the reference features: s * cos(f, W_c)
    f = entry["y_eval"] / np.linalg.norm(entry["y_eval"], axis=1, keepdims=True)
    w = head / np.linalg.norm(head, axis=1, keepdims=True)
    np.testing.assert_allclose(logits, SCALE * f @ w.T, rtol=rtol, atol=atol * SCALE)


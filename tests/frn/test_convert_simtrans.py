"""`python -m frn.convert` for SimTrans: a torchvision ResNet-50 `.pth` (the fixture's formula
weights, written by torch) and a SimNet state dict in the released files' key layout convert to
Paddle checkpoints with identical outputs. torch is needed to write the `.pth` files (skipped
without it); the fixture for the ResNet-50 case (skipped without ../shared)."""

import numpy as np
import paddle
import pytest

from frn.checkpoint import load_weights
from frn.convert import main as convert
from methods import options_for
from methods.simtrans import SimNet
from network import build_backbone
from tests.conftest import FIXTURES


def resnet50_entry():
    from tests.parity.checkers import Entry, manifest_specs
    specs = [s for s in manifest_specs(FIXTURES / "simtrans") or []
             if s["kind"] == "simtrans/backbone_resnet50_formula"]
    if not specs:
        pytest.skip(f"{FIXTURES / 'simtrans'} has no ResNet-50 fixture")
    return Entry(FIXTURES / "simtrans", specs[0])


def test_torchvision_resnet50_pth_converts_with_identical_outputs(tmp_path):
    torch = pytest.importorskip("torch")
    from tests.parity.simtrans_checks import formula_state, resnet50_classifier
    entry = resnet50_entry()
    state = formula_state(entry, resnet50_classifier(entry.config["num_classes"]))
    pth = tmp_path / "resnet50.pth"
    # as the reference pickles classifiers: inside nn.DataParallel (keys module.*)
    torch.save({f"module.{k}": torch.from_numpy(v) for k, v in state.items()}, pth)
    out = tmp_path / "resnet50.pdparams"
    convert(["--model", "ResNet50", "--method", "simtrans_naive", str(pth), str(out)])  # classes from fc.weight
    model = resnet50_classifier(entry.config["num_classes"])
    load_weights(model, str(out))
    model.eval()
    with paddle.no_grad():
        features = model.extract(paddle.to_tensor(entry["x"]))
        entry.check("feature_eval", features.numpy())
        entry.check("logits_eval", model.fc(features).numpy())


def reference_naming(model: SimNet) -> dict:
    """A SimNet's state as the released GANSimilarityNet saves it (each part in nn.DataParallel)."""
    linear = {f"{n}.weight" for n, layer in model.named_sublayers() if isinstance(layer, paddle.nn.Linear)}
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("domain_classifier."):
            continue  # saved apart in the reference
        array = value.numpy().T if key in linear else value.numpy()
        key = key.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        key = key.replace("feature_extractor.", "backbone.module.resnet.").replace("similarity_head.",
                                                                                  "similarity_head.module.")
        state[key] = array
    return state


def test_released_simnet_layout_converts(tmp_path):
    torch = pytest.importorskip("torch")
    paddle.seed(4)
    model = SimNet(build_backbone("Conv4"), options_for("simtrans_simnet", model="Conv4", head_type="4"))
    model.train()
    with paddle.no_grad():  # move the BatchNorm statistics away from their initial values
        model.pair_logits(paddle.randn([6, 3, 32, 32]))
    model.eval()
    images = paddle.randn([5, 3, 32, 32])
    with paddle.no_grad():
        expected = model.pair_logits(images).numpy()
    pth = tmp_path / "simnet.pth"
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in reference_naming(model).items()}, pth)
    out = tmp_path / "simnet.pdparams"
    convert(["--model", "Conv4", "--method", "simtrans_simnet", str(pth), str(out)])  # head 4 read from the keys
    loaded = SimNet(build_backbone("Conv4"), options_for("simtrans_simnet", model="Conv4", head_type="4"))
    load_weights(loaded, str(out))
    loaded.eval()
    with paddle.no_grad():
        np.testing.assert_allclose(loaded.pair_logits(images).numpy(), expected, rtol=1e-5, atol=1e-6)

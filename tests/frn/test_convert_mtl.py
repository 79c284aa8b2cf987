"""`python -m frn.convert --model ResNet25 --method mtl`: official MTL checkpoints -> Paddle.

The official code saves `{'params': state_dict}`: a pre-training file holds the bare encoder
(`conv1.weight`, `layer1.0...`, no scaling/shifting), a meta-trained one the whole MtlLearner
(`encoder.*` with `mtl_weight`/`mtl_bias`, `base_learner.fc1_w` and its second name
`base_learner.vars.0`). Both are rebuilt here from the parity fixture `meta_iteration_reduced`
(found through the manifest), written with torch (skipped without it) or as .npz, converted by
the command line, loaded the way the entry scripts load them, and must give the reference's
logits.
"""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from frn.checkpoint import load_weights
from tests.conftest import FIXTURES, ROOT
from utils.errors import UserError


@pytest.fixture(scope="module")
def entry():
    from tests.parity.checkers import Entry, manifest_specs
    specs = [s for s in manifest_specs(FIXTURES / "mtl") or [] if s["kind"] == "mtl/meta_iteration"]
    if not specs:
        pytest.skip(f"{FIXTURES / 'mtl'}: no meta-iteration fixture")
    return Entry(FIXTURES / "mtl", specs[0])


def run_convert(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "frn.convert", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def write_official(state: dict, path, use_torch: bool) -> None:
    """Save `state` as the official code does ({'params': ...} with torch), or as .npz."""
    if use_torch:
        torch = pytest.importorskip("torch")
        torch.save({"params": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}}, path)
    else:
        np.savez(path, **state)


def model_for(entry, checkpoint, pretrained: bool = False):
    """The meta-stage model test.py / meta_train.py build for the fixture's settings, loaded."""
    from methods.mtl import encoder_shape
    from tests.parity.mtl_checks import mtl_model
    widths, blocks = encoder_shape(entry.with_prefix("param/"), "encoder.")
    cfg = entry.config
    model = mtl_model(widths, blocks, base_lr=float(cfg["base_lr"]), update_step=int(cfg["update_step"]))
    load_weights(model, str(checkpoint), "--pretrain_path" if pretrained else "--model_path", pretrained=pretrained)
    return model


def episode_logits(model, entry, train: bool) -> np.ndarray:
    way, shot = int(entry.config["way"]), int(entry.config["shot"])
    shot_images, query_images = paddle.to_tensor(entry["data_shot"]), paddle.to_tensor(entry["data_query"])
    if train:
        model.train()
        _, logits = model(paddle.concat([shot_images, query_images]), paddle.to_tensor(entry["label_query"]),
                          episode=(way, shot))
        return logits.numpy()
    model.eval()
    with paddle.no_grad():
        return model.episode_logits(model.extract(shot_images), model.extract(query_images), way, shot).numpy()


@pytest.mark.parametrize("use_torch", [True, False], ids=["pth", "npz"])
def test_meta_checkpoint_converts_with_the_reference_logits(entry, tmp_path, use_torch):
    src = tmp_path / ("meta.pth" if use_torch else "meta.npz")
    write_official(entry.with_prefix("after/"), src, use_torch)   # the model after the recorded step
    out = tmp_path / "meta.pdparams"
    result = run_convert("--model", "ResNet25", "--method", "mtl", src, out)
    assert result.returncode == 0, result.stderr
    rtol, atol = entry.tolerance("logits_eval_after_step")
    np.testing.assert_allclose(episode_logits(model_for(entry, out), entry, train=False),
                               entry["logits_eval_after_step"], rtol=rtol, atol=atol)


@pytest.mark.parametrize("use_torch", [True, False], ids=["pth", "npz"])
def test_pretraining_checkpoint_converts_and_starts_meta_training(entry, tmp_path, use_torch):
    """The fixture's model before the step has SS at 1/0: its encoder is a pre-trained one."""
    before = entry.with_prefix("param/")
    encoder = {k[len("encoder."):]: v for k, v in before.items()
               if k.startswith("encoder.") and ".mtl_" not in k}
    assert not any("mtl" in k for k in encoder) and all(np.all(before[k] == 1) for k in before
                                                       if k.endswith("mtl_weight"))
    src = tmp_path / ("pre.pth" if use_torch else "pre.npz")
    write_official(encoder, src, use_torch)
    out = tmp_path / "pre.pdparams"
    result = run_convert("--model", "ResNet25", "--method", "mtl", src, out)
    assert result.returncode == 0, result.stderr
    assert not any("mtl_" in k or k.startswith("base_learner") for k in paddle.load(str(out))["state_dict"])

    model = model_for(entry, out, pretrained=True)                # meta_train.py --pretrain_path
    assert all(np.all(p.numpy() == 1) for n, p in model.named_parameters() if n.endswith("mtl_weight"))
    with paddle.no_grad():                                        # the fixture's base-learner draw
        model.base_learner.fc1_w.set_value(paddle.to_tensor(before["base_learner.fc1_w"]))
        model.base_learner.fc1_b.set_value(paddle.to_tensor(before["base_learner.fc1_b"]))
    rtol, atol = entry.tolerance("logits_train")
    np.testing.assert_allclose(episode_logits(model, entry, train=True), entry["logits_train"], rtol=rtol, atol=atol)

    with pytest.raises(UserError, match="pre-training checkpoint"):   # test.py refuses it
        model_for(entry, out)


def test_reference_settings_read_the_stage_and_the_encoder_size():
    from methods.mtl import MTL
    meta = {"encoder.layer1.0.conv1.weight": np.zeros((8, 4, 3, 3)),
            "encoder.layer2.0.conv1.weight": np.zeros((16, 8, 3, 3)),
            "encoder.layer3.0.conv1.weight": np.zeros((32, 16, 3, 3)),
            "encoder.layer1.1.conv1.weight": np.zeros((8, 8, 3, 3)),
            "encoder.conv1.mtl_weight": np.zeros((4, 3, 1, 1)), "base_learner.fc1_w": np.zeros((5, 32))}
    assert MTL.checkpoint_rules.reference_settings(meta, "mtl") == {"widths": "8,16,32", "blocks": 2, "way": 5,
                                                                    "stage": "test", "num_classes": None}
    pre = {k[len("encoder."):]: v for k, v in meta.items() if "mtl" not in k and k.startswith("encoder.")}
    assert MTL.checkpoint_rules.reference_settings({**pre, "pre_fc.2.weight": np.zeros((64, 1000))},
                                                  "mtl")["num_classes"] == 64
    assert MTL.checkpoint_rules.reference_settings(pre, "mtl")["num_classes"] == 0
    with pytest.raises(UserError, match="not an MTL checkpoint"):
        MTL.checkpoint_rules.reference_settings({"scale": np.zeros(1)}, "mtl")


def test_official_keys_map_onto_ours():
    from methods.mtl import MTL
    assert MTL.checkpoint_rules.from_reference_key("encoder.layer1.0.downsample.0.mtl_weight", None) == \
        "feature_extractor.layer1.0.downsample.0.mtl_weight"
    assert (MTL.checkpoint_rules.from_reference_key("layer3.3.bn2._variance", None)
            == "feature_extractor.layer3.3.bn2._variance")
    assert MTL.checkpoint_rules.from_reference_key("conv1.weight", None) == "feature_extractor.conv1.weight"
    assert MTL.checkpoint_rules.from_reference_key("base_learner.vars.0", None) is None
    assert MTL.checkpoint_rules.from_reference_key("pre_fc.2.weight", None) == "pre_fc.2.weight"

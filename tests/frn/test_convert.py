"""`python -m frn.convert`: PyTorch state dicts -> Paddle checkpoints.

The round trips use the reference's own full-model forward fixture when the parity fixtures are
there (found through the manifest), else a synthetic model whose state is exported in PyTorch
naming. The `.pth` round trip needs torch and skips without it; nothing else does.
"""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest

from frn.checkpoint import load_weights
from frn.convert import torch_key_to_paddle, torch_state_to_paddle
from methods import METHODS, options_for
from methods.base import split_episode
from network import build_backbone
from tests.conftest import FIXTURES, ROOT
from utils.errors import UserError


def build(model: str = "Conv4", method: str = "meta_frn", num_classes=None, image_size: int = 84):
    return METHODS[method](build_backbone(model), options_for(method, model=model, image_size=image_size),
                           num_classes=num_classes)


def to_torch_naming(model) -> dict:
    """A Paddle model's state as the official PyTorch code would save it."""
    linear = {f"{n}.weight" for n, layer in model.named_sublayers() if isinstance(layer, paddle.nn.Linear)}
    state = {}
    for key, value in model.state_dict().items():
        array = value.numpy()
        if key.endswith("._mean"):
            state[key[:-len("_mean")] + "running_mean"] = array
        elif key.endswith("._variance"):
            state[key[:-len("_variance")] + "running_var"] = array
            state[key[:-len("_variance")] + "num_batches_tracked"] = np.array(7, dtype=np.int64)
        else:
            state[key] = array.T if key in linear else array
    return state


def run_convert(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "frn.convert", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def episode_logits(model, images: np.ndarray, way: int, shot: int) -> np.ndarray:
    model.eval()
    with paddle.no_grad():
        support, query = split_episode(model.extract(paddle.to_tensor(images)), way, shot)
        return model.episode_logits(support, query, way, shot).numpy()


@pytest.fixture(scope="module")
def case():
    """(torch-style state, images, way, shot, expected logits, rtol, atol, --model)."""
    from tests.parity.checkers import Entry, manifest_specs
    from tests.parity.frn_checks import reference_state
    specs = manifest_specs(FIXTURES / "frn") or []
    forwards = [s for s in specs if s["kind"] == "frn/model_forward"]
    # the cheapest one: no recipe (Conv-4) first
    forwards.sort(key=lambda s: ("conv_weight_recipe" in s, len(s.get("parameter_arrays", {}))))
    if forwards:
        entry = Entry(FIXTURES / "frn", forwards[0])
        state = reference_state(entry)
        model_name = "ResNet12" if any(".layer1." in k for k in state) else "Conv4"
        rtol, atol = entry.tolerance("logits")
        return (state, entry["images"], entry.config["way"], entry.config["shot"], entry["logits"],
                rtol, atol, model_name)
    paddle.seed(3)
    model = build("Conv4", image_size=32)
    with paddle.no_grad():
        model.r.set_value(paddle.to_tensor([0.2, -0.1]))
        model.scale.set_value(paddle.to_tensor([3.0]))
    images = np.random.RandomState(0).randn(15, 3, 32, 32).astype("float32")
    return to_torch_naming(model), images, 5, 1, episode_logits(model, images, 5, 1), 0.0, 0.0, "Conv4"


def check_checkpoint(path, case):
    state, images, way, shot, expected, rtol, atol, model_name = case
    model = build(model_name, image_size=images.shape[-1])
    load_weights(model, str(path))
    np.testing.assert_allclose(episode_logits(model, images, way, shot), expected, rtol=rtol, atol=atol)


def test_npz_round_trip_gives_the_reference_logits(tmp_path, case):
    state, model_name = case[0], case[-1]
    src = tmp_path / "official.npz"
    np.savez(src, **{f"param/{k}": v for k, v in state.items()})
    out = tmp_path / "converted.pdparams"
    result = run_convert("--model", model_name, "--method", "meta_frn", src, out)
    assert result.returncode == 0, result.stderr
    check_checkpoint(out, case)


def test_pth_round_trip_gives_the_reference_logits(tmp_path, case):
    torch = pytest.importorskip("torch")
    state, model_name = case[0], case[-1]
    src = tmp_path / "official.pth"
    # as saved from an nn.DataParallel model: every key under "module."
    torch.save({f"module.{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, src)
    out = tmp_path / "converted.pdparams"
    result = run_convert("--model", model_name, "--method", "meta_frn", src, out)
    assert result.returncode == 0, result.stderr
    check_checkpoint(out, case)


def test_wrong_backbone_is_a_one_line_error_and_keeps_the_output(tmp_path, case):
    state, model_name = case[0], case[-1]
    src = tmp_path / "official.npz"
    np.savez(src, **state)
    out = tmp_path / "existing.pdparams"
    out.write_bytes(b"keep me")
    other = "ResNet12" if model_name == "Conv4" else "Conv4"
    result = run_convert("--model", other, "--method", "meta_frn", src, out)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "feature_extractor." in lines[0] and "--model" in lines[0]
    assert out.read_bytes() == b"keep me"


def test_pth_without_torch_says_how_to_get_it(tmp_path):
    src = tmp_path / "official.pth"
    src.write_bytes(b"not read")
    code = ("import sys; sys.modules['torch'] = None; from frn.convert import main; "
            f"main(['--model', 'Conv4', '--method', 'meta_frn', {str(src)!r}, {str(tmp_path / 'o.pdparams')!r}])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install torch" in lines[0], result.stderr
    assert not (tmp_path / "o.pdparams").exists()


def test_key_mapping():
    assert torch_key_to_paddle("module.feature_extractor.layer1.0.bn1.running_mean") == \
        "feature_extractor.layer1.0.bn1._mean"
    assert torch_key_to_paddle("layers.0.layers.1.running_var") == "layers.0.layers.1._variance"
    assert torch_key_to_paddle("layers.0.layers.1.num_batches_tracked") is None
    assert torch_key_to_paddle("scale") == "scale"


def test_linear_weights_are_transposed_and_shapes_checked():
    model = build("Conv4", "protonet", num_classes=5, image_size=32)
    state = to_torch_naming(model)
    assert state["classifier.weight"].shape == (5, 64 * 2 * 2)  # PyTorch [out, in]
    converted = torch_state_to_paddle(state, model)
    np.testing.assert_array_equal(converted["classifier.weight"], model.classifier.weight.numpy())
    state["classifier.weight"] = state["classifier.weight"][:, :-1]
    with pytest.raises(UserError, match="classifier.weight"):
        torch_state_to_paddle(state, model)


def test_missing_and_unexpected_keys_are_named():
    model = build("Conv4", image_size=32)
    state = to_torch_naming(model)
    del state["r"]
    with pytest.raises(UserError, match="'r'"):
        torch_state_to_paddle(state, model)
    state = to_torch_naming(model)
    state["head.weight"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(UserError, match="head.weight"):
        torch_state_to_paddle(state, model)


def test_pretrained_class_matrix(tmp_path):
    """stl_frn reads num_classes from cat_mat; an episodic model drops it (strict=False hand-over)."""
    from frn.convert import main
    paddle.seed(4)
    pre = build("Conv4", "stl_frn", num_classes=3, image_size=32)
    state = to_torch_naming(pre)
    src = tmp_path / "pre.npz"
    np.savez(src, **state)
    out = tmp_path / "pre.pdparams"
    main(["--model", "Conv4", "--method", "stl_frn", "--image_size", "32", str(src), str(out)])
    again = build("Conv4", "stl_frn", num_classes=3, image_size=32)
    load_weights(again, str(out))
    np.testing.assert_array_equal(again.cat_mat.numpy(), pre.cat_mat.numpy())
    episodic = torch_state_to_paddle(state, build("Conv4", image_size=32))
    assert "cat_mat" not in episodic and "r" in episodic


@pytest.mark.parametrize("layout", ["pretrain", "meta"])
def test_official_deepemd_checkpoints_convert_with_identical_logits(tmp_path, layout):
    """DeepEMD's files are {'params': state}: bare encoder keys after pre-training, DataParallel
    keys `module.encoder.` after meta-training; both load with the same logits."""
    torch = pytest.importorskip("torch")
    args = options_for("deepemd", model="ResNet12", deepemd="fcn", solver="opencv", eval_solver="exact")
    widths = (8, 16, 24, 32)
    paddle.seed(5)
    model = METHODS["deepemd"](build_backbone("ResNet12", widths=widths), args)
    state = {k.replace("feature_extractor.", "module.encoder." if layout == "meta" else ""): v
             for k, v in to_torch_naming(model).items()}
    src = tmp_path / "max_acc.pth"
    torch.save({"params": {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}}, src)
    from frn.convert import read_state  # what `python -m frn.convert` does, on a reduced-width model
    again = METHODS["deepemd"](build_backbone("ResNet12", widths=widths), args)
    again.set_state_dict(torch_state_to_paddle(read_state(str(src)), again))
    images = np.random.RandomState(1).randn(10, 3, 84, 84).astype("float32")
    np.testing.assert_array_equal(episode_logits(again, images, 5, 1), episode_logits(model, images, 5, 1))

"""The method contract, for every registered method: it builds from its typed options, scores a
tiny episode with the right shapes (or, for a weak-shot stage, trains on a batch), adapts a
support set once and scores queries against it as the episode path does, saves and reloads,
and the checkpoint converter maps its own keys onto themselves."""
import numpy as np
import paddle
import pytest

from frn.checkpoint import load_weights, save_model
from frn.convert import torch_state_to_paddle
from frn.runs import build_model
from methods import METHODS, options_for
from methods.base import FewShotMethod, UnequalShots, query_labels
from tests.frn.test_convert import to_torch_naming

WAY, SHOT, QUERY, SIZE = 3, 2, 2, 32
#: the smallest backbone each method accepts (MTL scales and shifts its own ResNet-25)
SETTINGS = {"mtl": dict(model="ResNet25", widths="4,8,16", blocks=1, update_step=3)}


def tiny(method: str, num_classes=None, **values) -> FewShotMethod:
    paddle.seed(0)
    settings = {"model": "Conv4", "image_size": SIZE, "way": WAY, **SETTINGS.get(method, {}), **values}
    return build_model(options_for(method, **settings), num_classes)


def episode_images(n: int) -> paddle.Tensor:
    return paddle.to_tensor(np.random.RandomState(0).rand(n, 3, SIZE, SIZE).astype("float32"))


FEW_SHOT = sorted(m for m, cls in METHODS.items() if cls.workflow == "few_shot")
WEAK_SHOT = sorted(m for m, cls in METHODS.items() if cls.workflow == "weak_shot")


def test_every_method_declares_a_known_workflow():
    assert set(FEW_SHOT) | set(WEAK_SHOT) == set(METHODS)


@pytest.mark.parametrize("method", FEW_SHOT)
def test_episode_scores_have_one_row_per_query_and_one_column_per_class(method):
    model = tiny(method)
    model.eval()
    with paddle.no_grad():
        features = model.extract(episode_images(WAY * (SHOT + QUERY)))
        support, query = features[:WAY * SHOT], features[WAY * SHOT:]
        scores = model.episode_scores(support, query, WAY, SHOT)
        batch = model.episode_scores_batch(support.unsqueeze(0), query.unsqueeze(0), WAY, SHOT)
    assert scores.shape == [WAY * QUERY, WAY] and batch.shape == [1, WAY * QUERY, WAY]
    assert np.isfinite(scores.numpy()).all()


@pytest.mark.parametrize("method", FEW_SHOT)
def test_an_adapted_support_set_scores_as_the_episode_does(method):
    """adapt once, then score: the same predictions as episode_scores on the same episode (the
    random draws of a test-time fit are re-seeded alike)."""
    model = tiny(method)
    model.eval()
    with paddle.no_grad():
        features = model.extract(episode_images(WAY * (SHOT + QUERY)))
        support, query = features[:WAY * SHOT], features[WAY * SHOT:]
        np.random.seed(1)
        expected = model.episode_scores(support, query, WAY, SHOT).numpy()
        np.random.seed(1)
        got = model.adapted_scores(model.adapt(support, query_labels(WAY, SHOT), WAY), query).numpy()
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", FEW_SHOT)
def test_unequal_shots_are_accepted_or_refused_as_declared(method):
    model = tiny(method)
    model.eval()
    labels = paddle.to_tensor([0, 0, 0, 1, 2, 2], dtype="int64")
    with paddle.no_grad():
        features = model.extract(episode_images(6))
        if METHODS[method].supports_unequal_shots:
            scores = model.adapted_scores(model.adapt(features, labels, WAY), features)
            assert scores.shape == [6, WAY]
        else:
            with pytest.raises(UnequalShots):
                model.adapt(features, labels, WAY)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_training_gives_a_finite_loss_and_gradients(method):
    if method in WEAK_SHOT:
        model = tiny(method, num_classes=WAY, **({"head_type": "4"} if method == "simtrans_simnet" else {}))
        images, labels = episode_images(8), paddle.to_tensor([0, 1, 2, 0, 1, 2, 0, 1])
        model.train()
        loss, logits, scored_against = model(images, labels, None)
        assert logits.shape[0] == scored_against.shape[0]
    elif METHODS[method].trains_episodically:
        model = tiny(method)
        model.train()
        loss, logits = model(episode_images(WAY * (SHOT + QUERY)), query_labels(WAY, QUERY), episode=(WAY, SHOT))
        assert logits.shape == [WAY * QUERY, WAY]
    else:
        model = tiny(method, num_classes=5)
        model.train()
        loss, logits = model(episode_images(4), paddle.to_tensor([0, 1, 2, 3]))
        assert logits.shape == [4, 5]
    loss.backward()
    assert np.isfinite(float(loss))
    assert any(p.grad is not None for p in model.parameters() if not p.stop_gradient)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_save_and_reload(method, tmp_path):
    num_classes = WAY if method in WEAK_SHOT else None
    model = tiny(method, num_classes=num_classes)
    path = tmp_path / "model.pdparams"
    save_model(model, str(path))
    paddle.seed(123)
    again = build_model(model.options, num_classes)
    load_weights(again, str(path))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[key].numpy(), value.numpy(), err_msg=key)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_converter_maps_a_method_s_own_keys_onto_themselves(method):
    num_classes = WAY if method in WEAK_SHOT else None
    model = tiny(method, num_classes=num_classes)
    converted = torch_state_to_paddle(to_torch_naming(model), model)
    own = model.state_dict()
    assert set(converted) == set(own)
    for key, value in own.items():
        np.testing.assert_array_equal(converted[key], value.numpy(), err_msg=key)


def test_the_documented_example_method_runs(monkeypatch):
    """docs/architecture.md's "one file and one registry line" example, executed as written."""
    import re

    from tests.conftest import ROOT
    text = (ROOT / "docs" / "architecture.md").read_text()
    code = re.search(r"```python\n# methods/mynet.py\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "methods/mynet.py", "exec"), namespace)
    monkeypatch.setitem(METHODS, "mynet", namespace["MyNet"])
    model = tiny("mynet", temperature=5.0)
    features = model.extract(episode_images(WAY * (SHOT + QUERY)))
    scores = model.episode_scores(features[:WAY * SHOT], features[WAY * SHOT:], WAY, SHOT)
    assert scores.shape == [WAY * QUERY, WAY] and model.options.temperature == 5.0

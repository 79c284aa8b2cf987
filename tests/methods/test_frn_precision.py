"""Float32 precision of the FRN head, judged by float64 (issue 12, "what resolved means" 2).

For every output and gradient of the episodic head (neg_l2_dist, logits, loss, grad_r,
grad_scale, feature gradients), our float32 result must be at least as close to our own
float64 result as the reference's float32 is to float64, up to FACTOR:

    |ours_f32 - ours_f64| <= FACTOR * max(|reference_f32 - f64|, float32 floor).

The reference's float32 comes from two sources:
- random episodes shaped like the fixtures (Conv-4-like non-negative d = 64 maps; ResNet-12-like
  leaky d = 640 maps divided by sqrt(640) inside the head), run through `reference_head`, a
  numpy float32 transcription of models/FRN.py + auxrank + NLLLoss with the backward PyTorch's
  autograd runs, operation by operation (explicit inverse of G + lam I, then (G + lam I)^-1 G,
  Q_bar = (Q hat) * rho, error summed over d). Its float64 run must agree with ours to 1e-9 of
  each array's scale, which checks the transcription (a wrong one would make the yardstick
  huge and the test toothless).
- the fixture manifest's `f32_vs_f64_max_abs_err_in_reference` (the official code's own gap,
  measured with PyTorch), for every frn/head_episode and frn/head_pretrain entry (skipped
  without ../shared).

FACTOR = 2 is the "small factor" of the issue. The comparison is per episode: a fixture's
tolerance is 10x that episode's reference gap, and the reference's scalar results (loss,
grad_scale) are sometimes lucky (errors that cancel, 10-100x below their typical size), so the
port has to be precise per episode, not on average. Where the reference is that lucky, the
float32 floor below takes over: nothing computed in float32 can do better than rounding the
inputs of the last operation.

Machine independence: the bounds are not equalities of float32 results. Our float32 errors
sit 10-1000x below the reference's (the ridge algebra runs in float64, see
methods/frn.reconstruction_matrix) except at the float32 floor (ResNet-like 1-shot episodes,
where both are at rounding level), so BLAS or thread-count changes of the summation order --
which move an error by a small factor, not by orders of magnitude -- cannot flip a verdict.
The worst case measured here is our gap at 0.37 of its bound (median 0.01).

The Conv-4 training step (backbone in train mode + head) is checked the same way against the
manifest's step-0 gradient gaps, with the ReLU / max-pool branches of the float64 run pinned
to those of the float32 run (see `test_conv4_train_step_is_as_precise_as_the_reference`).
"""
import json
import math
from typing import Dict

import numpy as np
import paddle
import pytest

from methods import METHODS, options_for
from methods.base import split_episode
from tests.conftest import FIXTURES

#: our float32 gap may be at most this multiple of the reference's (or of the float32 floor)
FACTOR = 2.0
EPS32 = float(np.finfo(np.float32).eps)
KEYS = ("neg_l2_dist", "logits", "loss", "grad_r", "grad_scale", "grad_support_features",
        "grad_query_features")


class _Identity(paddle.nn.Layer):
    """Backbone stand-in: the head receives the feature maps themselves."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x):
        return x


# ----- inputs ---------------------------------------------------------------------------------
def random_episode(seed: int, way: int, shot: int, n_query: int, d: int, resnet: bool):
    """Feature maps [N, d, 5, 5] like the fixtures': Conv-4-like maps are ReLU outputs (about
    40% zeros, mean 0.6), ResNet-like maps leaky-ReLU outputs (slope 0.1, mean 0.9); each class
    shifts every channel by its own offset, so that episodes are neither trivial nor hopeless."""
    rng = np.random.default_rng(seed)
    separation = rng.uniform(0.08, 0.25)
    labels = np.concatenate([np.repeat(np.arange(way), shot), np.repeat(np.arange(way), n_query)])
    centers = rng.standard_normal((way, d, 1, 1))
    pre = 0.3 + separation * centers[labels] + 0.8 * rng.standard_normal((len(labels), d, 5, 5))
    if resnet:
        pre = 1.3 * pre + 0.4
        maps = np.where(pre > 0, pre, 0.1 * pre)
    else:
        maps = np.maximum(pre, 0.0)
    maps = maps.astype(np.float32)
    n_support = way * shot
    return maps[:n_support], maps[n_support:], np.repeat(np.arange(way), n_query).astype(np.int64)


# ----- the reference, transcribed -------------------------------------------------------------
def reference_head(support_maps: np.ndarray, query_maps: np.ndarray, target: np.ndarray, alpha: float,
                   beta: float, scale: float, resnet: bool, dtype) -> Dict[str, np.ndarray]:
    """The official FRN episode (get_feature_map, get_recon_dist with Woodbury=True,
    get_neg_l2_dist, forward, auxrank, NLLLoss) and its backward, every operation in `dtype`
    in the order PyTorch runs it. Returns the outputs and gradients named as in the fixtures."""
    f = np.dtype(dtype).type
    way, n_query = int(target.max()) + 1, len(query_maps) // (int(target.max()) + 1)
    shot, d = len(support_maps) // way, support_maps.shape[1]
    res = support_maps.shape[2] * support_maps.shape[3]
    x = np.concatenate([support_maps, query_maps]).astype(dtype)
    divisor = f(math.sqrt(640)) if resnet else f(1)
    positions = (x / divisor).reshape(len(x), d, res).transpose(0, 2, 1)
    S = positions[:way * shot].reshape(way, shot * res, d)
    Q = positions[way * shot:].reshape(-1, d)
    # r and scale are float32 parameters in both codes: round them first
    a, b, sc = (f(np.float32(v)) for v in (alpha, beta, scale))

    reg = f(S.shape[1] / d)
    lam = reg * np.exp(a) + f(1e-6)
    rho = np.exp(b)
    G = S.transpose(0, 2, 1) @ S
    Minv = np.linalg.inv(G + np.eye(d, dtype=dtype) * lam)
    hat = Minv @ G
    QH = Q[None] @ hat
    D = QH * rho - Q[None]
    dist = (D * D).sum(2).T                                              # [m, way]
    neg = -dist.reshape(way * n_query, res, way).mean(1)
    logits = neg * sc
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    n = len(target)
    frn_loss = -logp[np.arange(n), target].mean()
    norm = np.sqrt((S * S).sum())
    s = S / norm
    lower, upper = np.tril_indices(way, -1)
    pairs = s[lower] @ s[upper].transpose(0, 2, 1)
    loss = frn_loss + (pairs * pairs).sum() * f(0.03)

    # backward, node by node
    g_logp = np.zeros_like(logp)
    g_logp[np.arange(n), target] = f(-1) / f(n)
    g_logits = g_logp - np.exp(logp) * g_logp.sum(1, keepdims=True)
    g_scale = (g_logits * neg).sum()
    g_dist = np.repeat(-(g_logits * sc)[:, None, :] / f(res), res, axis=1).reshape(-1, way)
    g_D = f(2) * D * g_dist.T[:, :, None]
    g_Q = -g_D.sum(0)
    g_rho = (g_D * QH).sum()
    g_QH = g_D * rho
    g_Q = g_Q + (g_QH @ hat.transpose(0, 2, 1)).sum(0)
    g_hat = Q.T[None] @ g_QH
    g_G = Minv.transpose(0, 2, 1) @ g_hat
    g_M = -Minv.transpose(0, 2, 1) @ (g_hat @ G.transpose(0, 2, 1)) @ Minv.transpose(0, 2, 1)
    g_G = g_G + g_M
    g_alpha = np.trace(g_M, axis1=1, axis2=2).sum() * reg * np.exp(a)
    g_S = S @ g_G + S @ g_G.transpose(0, 2, 1)
    g_pairs = f(0.03) * f(2) * pairs
    g_s = np.zeros_like(s)
    np.add.at(g_s, lower, g_pairs @ s[upper])
    np.add.at(g_s, upper, g_pairs.transpose(0, 2, 1) @ s[lower])
    g_S = g_S + g_s / norm - S * ((g_s * S).sum() / norm ** 3)
    g_positions = np.concatenate([g_S.reshape(way * shot, res, d), g_Q.reshape(-1, res, d)])
    g_x = g_positions.transpose(0, 2, 1).reshape(x.shape) / divisor
    return {"neg_l2_dist": neg, "logits": logits, "loss": loss, "grad_r": np.stack([g_alpha, g_rho * rho]),
            "grad_scale": np.array([g_scale]), "grad_support_features": g_x[:way * shot],
            "grad_query_features": g_x[way * shot:]}


# ----- ours -----------------------------------------------------------------------------------
def our_head(support_maps: np.ndarray, query_maps: np.ndarray, target: np.ndarray, alpha: float, beta: float,
             scale: float, resnet: bool, dtype: str) -> Dict[str, np.ndarray]:
    """The same episode through methods/frn.py (meta_frn), built entirely in `dtype`."""
    way, d = int(target.max()) + 1, support_maps.shape[1]
    shot = len(support_maps) // way
    model = _head(d, resnet, dtype)
    model.r.set_value(np.array([alpha, beta], dtype=np.float32).astype(dtype))
    model.scale.set_value(np.array([scale], dtype=np.float32).astype(dtype))
    sf = paddle.to_tensor(support_maps.astype(dtype), stop_gradient=False)
    qf = paddle.to_tensor(query_maps.astype(dtype), stop_gradient=False)
    support, query = split_episode(model.to_positions(paddle.concat([sf, qf])), way, shot)
    loss, logits = model.episode_loss(support, query, way, shot, paddle.to_tensor(target))
    with paddle.no_grad():
        neg = model.neg_l2_dist(support, query, way, shot)
    loss.backward()
    out = {"neg_l2_dist": neg, "logits": logits, "loss": loss, "grad_r": model.r.grad,
           "grad_scale": model.scale.grad, "grad_support_features": sf.grad, "grad_query_features": qf.grad}
    return {k: v.numpy() for k, v in out.items()}


def _head(d: int, resnet: bool, dtype: str, num_classes=None, positions: int = 25):
    method = "meta_frn" if num_classes is None else "stl_frn"
    options = options_for(method, model="ResNet12" if resnet else "Conv4", image_size=16 * math.isqrt(positions))
    paddle.set_default_dtype(dtype)
    try:
        model = METHODS[method](_Identity(d), options, num_classes=num_classes)
    finally:
        paddle.set_default_dtype("float32")
    model.train()
    return model


# ----- the float32 floor ----------------------------------------------------------------------
def float32_floor(key: str, truth: Dict[str, np.ndarray], target: np.ndarray) -> float:
    """The error that rounding the inputs of the array's last operation to float32 alone causes
    (4 eps: the rounding of those inputs plus that of the operation itself, with room).

    - loss: log-softmax subtracts the largest logit, so its rounding is relative to max|logit|;
    - grad_scale = sum_ic dL/dlogit_ic * neg_ic: each neg_ic rounded to float32 moves it by up to
      eps * sum |dL/dlogit_ic * neg_ic| -- far above eps * |grad_scale| when the sum cancels;
    - every other array: a few units in the last place of its largest element.
    """
    if key == "loss":
        return 4 * EPS32 * (np.abs(truth["logits"]).max() + abs(float(truth["loss"])))
    if key == "grad_scale":
        logits = truth["logits"]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(target)), target] -= 1.0
        return 4 * EPS32 * float(np.abs(p / len(target) * truth["neg_l2_dist"]).sum())
    return 4 * EPS32 * float(np.abs(truth[key]).max())


def assert_as_precise_as_reference(ours32, ours64, reference_gaps: Dict[str, float], target, where: str):
    """|ours32 - ours64| <= FACTOR * max(reference gap, float32 floor), key by key."""
    report = []
    for key, ref_gap in reference_gaps.items():
        our_gap = float(np.abs(ours32[key].astype(np.float64) - ours64[key]).max())
        bound = FACTOR * max(ref_gap, float32_floor(key, ours64, target))
        report.append(f"{key}: ours {our_gap:.3g} reference {ref_gap:.3g} bound {bound:.3g}")
        assert our_gap <= bound, f"{where}: our float32 is less precise than the reference's:\n  " + "\n  ".join(report)


def assert_same_function(ref64: Dict[str, np.ndarray], ours64: Dict[str, np.ndarray]) -> None:
    """The float64 transcription and our float64 head compute the same outputs and gradients.

    Both run in float64, where rounding amplified by cond(G + lam I) (<= ~1e5 here) stays below
    ~1e-11 of each array's scale; 1e-9 of it leaves room and still catches any formula slip."""
    for key in KEYS:
        np.testing.assert_allclose(ref64[key], ours64[key], rtol=0, atol=1e-9 * np.abs(ours64[key]).max(),
                                   err_msg=f"float64 transcription of the reference: {key}")


# ----- tests ----------------------------------------------------------------------------------
#: (way, shot, queries per class, d, resnet, alpha, beta, scale, seeds): the fixtures' episode
#: shapes and settings, the held-out set's 5-way 1-shot 10-query case (alpha -0.3, beta 0.2,
#: scale 1.89), and a small-lambda case (alpha -1: condition numbers of G + lam I near 1e4)
CONFIGS = [
    (5, 1, 10, 64, False, -0.3, 0.2, 1.89, range(6)),
    (5, 1, 15, 64, False, 0.25, -0.15, 1.83, range(3)),
    (5, 1, 10, 64, False, -1.0, 0.5, 5.0, range(3)),
    (5, 5, 15, 64, False, 0.4, -0.1, 23.3, range(3)),
    # the real Conv-4 training support (20-way 5-shot); 3 queries per class keep it quick
    (20, 5, 3, 64, False, 0.1, -0.05, 38.5, range(1)),
    (5, 1, 2, 640, True, 0.0, 0.0, 1.0, range(1)),
    (5, 5, 2, 640, True, -0.5, 0.3, 12.0, range(1)),
]


@pytest.mark.parametrize("way,shot,n_query,d,resnet,alpha,beta,scale,seeds", CONFIGS,
                         ids=[f"{c[0]}w{c[1]}s{c[2]}q-d{c[3]}-a{c[5]}" for c in CONFIGS])
def test_head_float32_is_as_close_to_float64_as_the_reference(way, shot, n_query, d, resnet, alpha, beta, scale,
                                                              seeds):
    for seed in seeds:
        episode = random_episode(1000 * seed + 7 * way + shot + d, way, shot, n_query, d, resnet)
        args = (*episode, alpha, beta, scale, resnet)
        ours64 = our_head(*args, "float64")
        if seed == seeds[0]:
            assert_same_function(reference_head(*args, np.float64), ours64)
        ref32 = reference_head(*args, np.float32)
        ref_gaps = {k: float(np.abs(ref32[k].astype(np.float64) - ours64[k]).max()) for k in KEYS}
        assert_as_precise_as_reference(our_head(*args, "float32"), ours64, ref_gaps, episode[2], f"seed {seed}")


def test_head_float64_input_stays_float64():
    """dtype-generic: a float64 episode is computed in float64 end to end (no float32 detour)."""
    episode = random_episode(3, 5, 1, 2, 64, False)
    ours = our_head(*episode, -0.3, 0.2, 1.89, False, "float64")
    assert all(v.dtype == np.float64 for v in ours.values())
    assert_same_function(reference_head(*episode, -0.3, 0.2, 1.89, False, np.float64), ours)


# ----- the official code's own gaps (fixture manifest) -----------------------------------------
def _manifest_entries(kinds):
    manifest = FIXTURES / "frn" / "manifest.json"
    if not manifest.is_file():
        return [pytest.param(None, id="frn-fixtures-absent")]
    with open(manifest) as f:
        entries = [e for e in json.load(f)["fixtures"] if e.get("kind") in kinds]
    return [pytest.param(e, id=e["name"]) for e in entries]


def _reference_gaps(entry: dict, keys) -> Dict[str, float]:
    return {k: float(entry["tolerance"][k]["f32_vs_f64_max_abs_err_in_reference"]) for k in keys}


@pytest.mark.parametrize("entry", _manifest_entries({"frn/head_episode"}))
def test_head_on_fixture_inputs_is_as_precise_as_the_reference(entry):
    if entry is None:
        pytest.skip(f"{FIXTURES / 'frn'} not available")
    arrays = np.load(FIXTURES / "frn" / entry["file"])
    alpha, beta = (float(v) for v in arrays["init/r"])
    args = (arrays["support_features"], arrays["query_features"], arrays["target"], alpha, beta,
            float(arrays["init/scale"][0]), bool(entry["config"]["resnet"]))
    ours64 = our_head(*args, "float64")
    assert_as_precise_as_reference(our_head(*args, "float32"), ours64, _reference_gaps(entry, KEYS), args[2],
                                   entry["name"])


def _pretrain_head(arrays, resnet: bool, dtype: str):
    features, cat_mat = arrays["features"], arrays["init/cat_mat"]
    model = _head(features.shape[1], resnet, dtype, num_classes=cat_mat.shape[0],
                  positions=features.shape[2] * features.shape[3])
    model.cat_mat.set_value(cat_mat.astype(dtype))
    model.scale.set_value(arrays["init/scale"].astype(dtype))
    x = paddle.to_tensor(features.astype(dtype), stop_gradient=False)
    loss, logits = model.pretrain_loss(x, paddle.to_tensor(arrays["labels"]))
    loss.backward()
    log_prediction = paddle.nn.functional.log_softmax(logits, axis=1)
    out = {"log_prediction": log_prediction, "loss": loss, "logits": logits, "grad_cat_mat": model.cat_mat.grad,
           "grad_scale": model.scale.grad, "grad_features": x.grad,
           "neg_l2_dist": logits / model.scale}
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("entry", _manifest_entries({"frn/head_pretrain"}))
def test_pretraining_head_on_fixture_inputs_is_as_precise_as_the_reference(entry):
    if entry is None:
        pytest.skip(f"{FIXTURES / 'frn'} not available")
    arrays = np.load(FIXTURES / "frn" / entry["file"])
    resnet = bool(entry["config"].get("resnet"))
    ours64 = _pretrain_head(arrays, resnet, "float64")
    keys = [k for k in ("log_prediction", "loss", "grad_cat_mat", "grad_scale", "grad_features")
            if k in entry["tolerance"]]
    assert_as_precise_as_reference(_pretrain_head(arrays, resnet, "float32"), ours64, _reference_gaps(entry, keys),
                                   arrays["labels"], entry["name"])


# ----- the Conv-4 training step --------------------------------------------------------------
class RoutingPin:
    """Forward hooks on the ReLU and max-pool layers of a backbone: `record` stores which inputs
    each one passes on (ReLU mask, pooling argmax), `replay` makes a second run pass on exactly
    those (input * mask, input gathered at the argmax), so that both runs take the same branch
    of every non-differentiable decision and differ only by rounding."""

    def __init__(self):
        self.saved, self.handles, self.step = [], [], 0

    def _hook(self, replay: bool):
        def hook(layer, inputs, output):
            x = inputs[0]
            if not replay:
                if isinstance(layer, paddle.nn.ReLU):
                    self.saved.append(x > 0)
                else:
                    self.saved.append(paddle.nn.functional.max_pool2d(x, 2, 2, return_mask=True)[1])
                return None
            choice = self.saved[self.step]
            self.step += 1
            if isinstance(layer, paddle.nn.ReLU):
                return x * choice.astype(x.dtype)
            n, c = x.shape[0], x.shape[1]
            flat = paddle.take_along_axis(x.reshape([n, c, -1]), choice.reshape([n, c, -1]).astype("int64"), axis=2)
            return flat.reshape(choice.shape)
        return hook

    def attach(self, backbone: paddle.nn.Layer, replay: bool) -> None:
        self.step = 0
        layers = [m for m in backbone.sublayers() if isinstance(m, (paddle.nn.ReLU, paddle.nn.MaxPool2D))]
        self.handles = [m.register_forward_post_hook(self._hook(replay)) for m in layers]

    def detach(self) -> None:
        for h in self.handles:
            h.remove()


def _train_step_gradients(state: Dict[str, np.ndarray], images: np.ndarray, way: int, shot: int, dtype: str,
                          pin: RoutingPin = None, replay: bool = False) -> Dict[str, np.ndarray]:
    """Step-0 parameter gradients of the episodic loss (train mode) of a Conv-4 FRN loaded with
    the reference state dict `state`, built entirely in `dtype`."""

    from frn.convert import torch_state_to_paddle
    from network import build_backbone
    paddle.set_default_dtype(dtype)
    try:
        width = state["feature_extractor.layers.0.layers.0.weight"].shape[0]
        model = METHODS["meta_frn"](build_backbone("Conv4", width=width),
                                    options_for("meta_frn", model="Conv4", image_size=16 * 5))
    finally:
        paddle.set_default_dtype("float32")
    converted = torch_state_to_paddle(state, model)
    model.set_state_dict({k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in converted.items()})
    model.train()
    if pin is not None:
        pin.attach(model.feature_extractor, replay)
    try:
        n_query = (len(images) - way * shot) // way
        support, query = split_episode(model.extract(paddle.to_tensor(images.astype(dtype))), way, shot)
        labels = paddle.arange(way, dtype="int64").repeat_interleave(n_query)
        loss, _ = model.episode_loss(support, query, way, shot, labels)
    finally:
        if pin is not None:
            pin.detach()
    loss.backward()
    return {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("entry", _manifest_entries({"frn/train_step"}))
def test_conv4_train_step_is_as_precise_as_the_reference(entry):
    """The held-out symptom's episode shape (Conv-4, 4-way 1-shot, 4 queries, 84 px, train mode)
    from the entry's initial weights and its first 20 images; the yardstick is the entry's
    reference gap of each step-0 gradient (its own 5-way 2-shot episode on the same weights).

    Where a ReLU input or two pooled values lie within float32 noise of each other (about one
    such decision per episode), float32 and float64 can take different branches, which moves
    whole gradient rows (the reference does it too: measured in 10 of 60 random episodes). That
    is a discontinuity, not imprecision: the float64 run replays the float32 run's branches
    (RoutingPin), so that the comparison measures rounding only, on any machine."""
    if entry is None:
        pytest.skip(f"{FIXTURES / 'frn'} not available")
    arrays = np.load(FIXTURES / "frn" / entry["file"])
    state = {k[len("init/"):]: arrays[k] for k in arrays.files if k.startswith("init/")}
    images = arrays["images"][:4 * (1 + 4)]
    pin = RoutingPin()
    ours32 = _train_step_gradients(state, images, 4, 1, "float32", pin)
    ours64 = _train_step_gradients(state, images, 4, 1, "float64", pin, replay=True)
    prefix = next(p for p in ("sgd/", "adam/", "") if f"{p}step0/grad/scale" in entry["tolerance"])
    report = []
    for key, g32 in ours32.items():
        tol = entry["tolerance"][f"{prefix}step0/grad/{key}"]
        ref_gap = float(tol["f32_vs_f64_max_abs_err_in_reference"])
        our_gap = float(np.abs(g32.astype(np.float64) - ours64[key]).max())
        bound = FACTOR * max(ref_gap, 4 * EPS32 * float(np.abs(ours64[key]).max()))
        report.append(f"{key}: ours {our_gap:.3g} reference {ref_gap:.3g}")
        assert our_gap <= bound, "train step less precise than the reference's:\n  " + "\n  ".join(report)


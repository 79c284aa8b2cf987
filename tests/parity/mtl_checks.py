"""Parity checkers for shared/fixtures/mtl (reference yaoyao-liu/meta-transfer-learning, pytorch/).

Every array of an entry is compared or consumed as an input. `param/<key>` arrays (the
reference's state dicts) are loaded through the project's converter. Arrays without a
tolerance of their own are compared at the tolerance of the quantity they derive from (named
at each call). The fixtures lay episodes out class-fastest (label i % way): the inner-loop
checker feeds that order to the inner loop as it is, then runs the method on the episode
re-ordered class-major (this project's layout); the meta-iteration checker re-orders the
support set class-major and keeps the queries in the reference's order with its labels.
"""
from typing import Dict, List, Optional, Tuple
from unittest import mock

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from methods.mtl import encoder_shape
from tests.parity.checkers import Entry, _np, _t, check_or_reference_farther, consume_state, formula_weights, register
from tests.parity.frn_checks import (
    TORCH_BN_KEEP,
    BNRecorder,
    BNVarianceReplay,
    Identity,
    _is_torch_parameter,
    check_state_after_train_forward,
    load_reference,
    paddle_key,
)
from tests.parity.judge import BranchPin, FunctionalReluPin, judge


def mtl_model(widths, blocks: int = 4, num_classes: Optional[int] = None, backbone: Optional[nn.Layer] = None,
              **flags):
    """The MTL model the entry scripts build (meta stage unless `num_classes` is given); with
    `backbone` (e.g. an identity on given embeddings) instead of the ResNet-25."""
    from frn.runs import build_model
    from methods import options_for
    from methods.mtl import MTL
    values = dict(model="ResNet25", image_size=80, widths=",".join(map(str, widths)), blocks=blocks,
                  stage="meta_train", way=5, base_lr=0.01, update_step=50, meta_lr2=1e-3)
    values.update(flags)
    options = options_for("mtl", **values)
    if backbone is not None:
        return MTL(backbone, options, num_classes)
    return build_model(options, num_classes)


# ----- the scaling-and-shifting convolution ------------------------------------------------------
@register("mtl/ss_conv")
def check_ss_conv(entry: Entry) -> None:
    from network.resnet25 import Conv2DMtl
    cfg = entry.config
    conv = Conv2DMtl(int(cfg["in"]), int(cfg["out"]), int(cfg["kernel"]), stride=int(cfg["stride"]),
                     padding=int(cfg["padding"]), bias=bool(cfg["bias"]), mtl=True)
    load_reference(conv, consume_state(entry))
    x = _t(entry.use("x"), grad=True)
    y = conv(x)
    entry.check("y", _np(y))
    entry.check("effective_weight", _np(conv.effective_weight()), tol_key="y")
    if cfg["bias"]:
        entry.check("effective_bias", _np(conv.effective_bias()), tol_key="y")
    (y * _t(entry.use("upstream"))).sum().backward()
    entry.check("grad_x", _np(x.grad), tol_key="grads")
    entry.check("grad/mtl_weight", _np(conv.mtl_weight.grad), tol_key="grads")
    if cfg["bias"]:
        entry.check("grad/mtl_bias", _np(conv.mtl_bias.grad), tol_key="grads")
    frozen = [conv.weight] + ([conv.bias] if cfg["bias"] else [])
    assert all(p.stop_gradient and p.grad is None for p in frozen), "the pre-trained W and b must stay frozen"


# ----- the encoder -------------------------------------------------------------------------------
@register("mtl/backbone_reduced")
def check_backbone_reduced(entry: Entry) -> None:
    """Eval forward and the gradients of every trainable parameter, then a train-mode forward
    and the BatchNorm statistics after it, through the MTL method's pooled embedding."""
    state = consume_state(entry)
    widths, blocks = encoder_shape(state)
    assert blocks == int(entry.config["layers"][0]) and list(widths) == list(entry.config["widths"])
    model = mtl_model(widths, blocks)
    encoder = model.feature_extractor
    load_reference(encoder, state)
    x, upstream = entry.use("x"), entry.use("upstream")

    y, grads = eval_gradients(model, x, upstream)
    entry.check("y_eval", y)
    assert {paddle_key(k) for k in entry.with_prefix("grad/")} == set(grads), "trainable parameters differ"
    twins = {"float32": model, "float64": _float64_copy(state)}
    judge(entry, lambda recording, dtype, pin, replay: _gradients_run(recording, twins[dtype], x, upstream,
                                                                       pin, replay), _relu_pin)

    model.train()
    recorder = BNRecorder(encoder)
    with paddle.no_grad():
        entry.check("y_train", _np(model.extract(_t(x))))
    recorder.remove()
    replay = BNVarianceReplay({k: v for k, v in state.items() if k.endswith("running_var")})
    check_state_after_train_forward(entry, encoder, "after/", replay, recorder.m, tol_key="after")


def eval_gradients(model, x: np.ndarray, upstream: np.ndarray,
                   relu_inputs: Optional[List[np.ndarray]] = None) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Eval-mode embedding of `x` and d sum(embedding * upstream) / d every trainable parameter
    of the encoder, in the model's dtype; `relu_inputs` collects every ReLU input, in order."""
    from network import resnet25
    model.eval()
    dtype = model.feature_extractor.conv1.weight.dtype
    relu = resnet25.F.relu

    def recording_relu(t, *args, **kwargs):
        relu_inputs.append(_np(t).astype(np.float64))
        return relu(t, *args, **kwargs)

    with mock.patch.object(resnet25.F, "relu", recording_relu if relu_inputs is not None else relu):
        y = model.extract(_t(x).astype(dtype))
    model.clear_gradients()  # a repeated call must not accumulate
    (y * _t(upstream).astype(dtype)).sum().backward()
    grads = {n: _np(p.grad) for n, p in model.feature_extractor.named_parameters() if not p.stop_gradient}
    return _np(y), grads


def _float64_copy(state: Dict[str, np.ndarray]):
    twin = mtl_model(*encoder_shape(state))
    load_reference(twin.feature_extractor, state)
    twin.to(dtype="float64")
    return twin


def _relu_pin() -> BranchPin:
    from network import resnet25
    return FunctionalReluPin(resnet25)


def _gradients_run(recording, model, x: np.ndarray, upstream: np.ndarray, pin: Optional[BranchPin],
                   replay: bool) -> None:
    """One judged run (tests/parity/judge.py) of the eval-mode gradients: `model` in its dtype,
    its ReLU decisions recorded or replayed by `pin`; every `grad/<key>` goes to `recording`. A
    miss then passes only as a ReLU input within float32 rounding of 0 that our float32 run puts
    on the other side (the run pinned to float64's branches matches), or as an xfail where
    float64 finds the reference farther."""
    if pin is not None:
        pin.attach(model, replay)
    try:
        grads = eval_gradients(model, x, upstream)[1]
    finally:
        if pin is not None:
            pin.detach()
    for key in recording.with_prefix("grad/"):
        recording.check("grad/" + key, grads[paddle_key(key)], tol_key="grads")


def _torch_shapes(model) -> Dict[str, Tuple[int, ...]]:
    """Our model's state shapes under the reference's key names (num_batches_tracked: [])."""
    shapes = {}
    for key, value in model.state_dict().items():
        torch_key = key.replace("._mean", ".running_mean").replace("._variance", ".running_var")
        shapes[torch_key] = tuple(value.shape)
        if key.endswith("._mean"):
            shapes[key[:-len("_mean")] + "num_batches_tracked"] = ()
    return shapes


@register("mtl/backbone_formula")
def check_backbone_formula(entry: Entry) -> None:
    """The full-size encoder (80-160-320-640, 4 blocks) with formula weights: meta (SS) and
    pre-training (plain) variants, eval and train forwards, through the MTL model's stages.
    The checksums verify the rebuilt weights (and so the shapes) key by key."""
    x = _t(entry.use("x"))
    width = int(entry.config["output"][1])   # stages double their width: C/4, C/2, C
    for tag, num_classes in (("mtl", None), ("plain", 0)):
        keys = entry.config[f"state_dict_keys_{tag}"]
        blocks = sum(1 for k in keys if k.startswith("layer1.") and k.endswith(".conv1.weight"))
        model = mtl_model((width // 4, width // 2, width), blocks, num_classes=num_classes)
        assert model.feature_extractor.mtl == (tag == "mtl")
        weights = formula_weights(keys, _torch_shapes(model.feature_extractor))
        for key, w in weights.items():
            name = f"checksum_{tag}/{key}"
            if name in entry:
                w64 = w.astype(np.float64)
                entry.check(name, np.array([np.abs(w64).sum(), (w64 ** 2).sum()], dtype=np.float32),
                            tol_key="checksum")
        load_reference(model.feature_extractor, weights)
        model.eval()
        with paddle.no_grad():
            entry.check(f"y_eval_{tag}", _np(model.extract(x)), tol_key="y_eval")
            model.train()
            entry.check(f"y_train_{tag}", _np(model.extract(x)), tol_key="y_train")


# ----- the inner loop ----------------------------------------------------------------------------
@register("mtl/inner_loop")
def check_inner_loop(entry: Entry) -> None:
    """The base learner's adaptation and the meta-gradients on given embeddings (the
    reference's class-fastest episode), then the method on the same episode class-major."""
    from methods.mtl import adapt, linear_logits
    cfg = entry.config
    way, shot, steps, lr = int(cfg["way"]), int(cfg["shot"]), int(cfg["update_step"]), float(cfg["base_lr"])
    w0, b0 = _t(entry.use("fc1_w_init"), grad=True), _t(entry.use("fc1_b_init"), grad=True)
    emb_shot, emb_query = _t(entry.use("emb_shot"), grad=True), _t(entry.use("emb_query"), grad=True)
    label_shot, label_query = _t(entry.use("label_shot")), _t(entry.use("label_query"))
    assert (entry["label_shot"] == np.arange(len(entry["label_shot"])) % way).all(), "fixture layout"

    entry.check("logits_query_before", _np(linear_logits(emb_query, w0, b0)), tol_key="logits_query")
    losses, first = [], {}

    def on_step(step, loss, weights):
        losses.append(float(loss))
        if step == 1:  # the weights before update 2 = after the first step
            first["w"], first["b"] = _np(weights[0]), _np(weights[1])

    fast_w, fast_b = adapt(w0, b0, emb_shot, label_shot, lr, steps, on_step=on_step)
    entry.check("support_loss_per_step", np.asarray(losses, dtype=np.float32))
    if steps > 1:
        entry.check("fast_w_step1", first["w"], tol_key="fast_w_final")
        entry.check("fast_b_step1", first["b"], tol_key="fast_w_final")
    entry.check("fast_w_final", _np(fast_w))
    entry.check("fast_b_final", _np(fast_b), tol_key="fast_w_final")
    logits = linear_logits(emb_query, fast_w, fast_b)
    entry.check("logits_query", _np(logits))
    loss = F.cross_entropy(logits, label_query)
    entry.check("loss_query", _np(loss), tol_key="logits_query")
    loss.backward()
    entry.check("grad_fc1_w", _np(w0.grad), tol_key="grads")
    entry.check("grad_fc1_b", _np(b0.grad), tol_key="grads")
    entry.check("grad_emb_query", _np(emb_query.grad), tol_key="grads")
    shot_grad = np.zeros(emb_shot.shape, np.float32) if emb_shot.grad is None else _np(emb_shot.grad)
    entry.check("grad_emb_shot", shot_grad, tol_key="grads")

    # the method itself, on the episode in this project's class-major layout
    to_major_s = np.argsort(entry["label_shot"], kind="stable")
    to_major_q = np.argsort(entry["label_query"], kind="stable")
    model = mtl_model((160, 320, 640), backbone=Identity(int(cfg["z_dim"])), base_lr=lr, update_step=steps,
                      way=way)
    load_reference(model, {"base_learner.fc1_w": entry["fc1_w_init"], "base_learner.fc1_b": entry["fc1_b_init"]})
    model.eval()
    with paddle.no_grad():  # as in evaluation: the inner loop turns gradients on by itself
        ours = model.episode_logits(_t(entry["emb_shot"][to_major_s]), _t(entry["emb_query"][to_major_q]), way, shot)
    entry.check("logits_query", _np(ours), expected=entry["logits_query"][to_major_q])


# ----- one meta-training iteration ----------------------------------------------------------------
class BatchVarianceRecorder:
    """Every train-mode BatchNorm forward: (N*H*W, the biased batch variance per channel)."""

    def __init__(self, model):
        self.seen: Dict[str, List[Tuple[int, np.ndarray]]] = {}
        self.handles = [layer.register_forward_pre_hook(self._hook(name)) for name, layer in model.named_sublayers()
                        if isinstance(layer, nn.BatchNorm2D)]

    def _hook(self, name):
        def hook(layer, inputs):
            x = inputs[0]
            if layer.training:
                var = x.transpose([1, 0, 2, 3]).flatten(1).astype("float64").var(axis=1, unbiased=False)
                self.seen.setdefault(name, []).append((int(np.prod(x.shape)) // int(x.shape[1]), _np(var)))
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()

    def paddle_variance(self, name: str, reference_final: np.ndarray) -> np.ndarray:
        """The running variance Paddle must hold when the reference (unbiased batch variances)
        holds `reference_final` after the same forwards: Paddle adds the biased variance b_k
        where PyTorch adds b_k * m_k / (m_k - 1), so it lacks sum_k c_k * b_k / (m_k - 1),
        c_k = (1 - keep) * keep^(K - 1 - k)."""
        seen = self.seen[name]
        lack = sum((1 - TORCH_BN_KEEP) * TORCH_BN_KEEP ** (len(seen) - 1 - k) * var / (m - 1)
                   for k, (m, var) in enumerate(seen))
        return (reference_final.astype(np.float64) - lack).astype(np.float32)


def _meta_step(entry: Entry, state: Dict[str, np.ndarray], dtype: str = "float32",
               recorder: Optional[type] = None) -> dict:
    """One meta-training iteration of the MTL model in `dtype` from the reference's state: the
    episodic loss (support class-major, queries in the reference's order with its labels), its
    backward and one Adam step with the two groups. Returns the model, its parameters, loss,
    logits, {parameter: gradient} and the recorder (an instance of `recorder` hooked on the
    model during the step, if given)."""
    from utils.optim import build_optimizer
    cfg = entry.config
    way, shot = int(cfg["way"]), int(cfg["shot"])
    flags = dict(base_lr=float(cfg["base_lr"]), update_step=int(cfg["update_step"]),
                 meta_lr2=float(cfg["meta_lr2"]), way=way, val_way=way)
    model = mtl_model(*encoder_shape(state, "encoder."), **flags)
    load_reference(model, state)
    model.to(dtype=dtype)
    params = dict(model.named_parameters())
    groups = model.parameter_groups(float(cfg["meta_lr1"]))
    optimizer = build_optimizer(model, float(cfg["meta_lr1"]), "adam", weight_decay=0.0, groups=groups)
    to_class_major = np.argsort(entry["label_shot"], kind="stable")
    images = np.concatenate([entry["data_shot"][to_class_major], entry["data_query"]]).astype(dtype)
    model.train()
    hooks = recorder(model) if recorder is not None else None
    loss, logits = model(_t(images), _t(entry["label_query"]), episode=(way, shot))
    optimizer.clear_grad()
    loss.backward()
    grads = {n: _np(p.grad) for n, p in params.items() if p.grad is not None}
    optimizer.step()
    if hooks is not None:
        hooks.remove()
    return dict(model=model, params=params, loss=loss, logits=logits, grads=grads, recorder=hooks)


def _meta_gradients_run(recording, entry: Entry, state: Dict[str, np.ndarray], dtype: str,
                        pin: Optional[BranchPin], replay: bool) -> None:
    """One judged run of the meta-iteration's gradients (`_gradients_run`'s rules)."""
    if pin is not None:
        pin.attach(paddle.nn.Layer(), replay)  # the pin patches the encoder's F.relu, whatever the model
    try:
        grads = _meta_step(entry, state, dtype)["grads"]
    finally:
        if pin is not None:
            pin.detach()
    for key in recording.with_prefix("grad/"):
        recording.check("grad/" + key, grads[our_key(key)], tol_key="grads")


@register("mtl/meta_iteration")
def check_meta_iteration(entry: Entry) -> None:
    """model.train(); the episodic loss through the training entry (query batch, then support
    batch); backward; one Adam step with the two groups; every parameter and buffer after it;
    then the same task in evaluation mode. A parameter after the step that misses the reference
    is judged by float64 (the same step in float64, `check_or_reference_farther`): Adam's first
    step moves an element by lr * g / (|g| + 1e-8), so where the exact gradient is 0 (a conv
    bias before a train-mode BatchNorm) each float32 port moves it by up to lr, as far as its
    gradient's rounding noise exceeds 1e-8."""
    cfg = entry.config
    way, shot = int(cfg["way"]), int(cfg["shot"])
    state = consume_state(entry)
    assert list(encoder_shape(state, "encoder.")[0]) == list(cfg["encoder_widths"])
    for key in ("label_shot", "data_shot", "data_query", "label_query"):
        entry.use(key)
    run = _meta_step(entry, state, recorder=BatchVarianceRecorder)
    model, params = run["model"], run["params"]
    trainable = {n for n, p in params.items() if not p.stop_gradient}
    assert trainable == {our_key(k) for k in cfg["trainable"]}, "trainable parameters differ"
    entry.check("logits_train", _np(run["logits"]))
    entry.check("loss", _np(run["loss"]))
    judge(entry, lambda recording, dtype, pin, replay: _meta_gradients_run(recording, entry, state, dtype, pin,
                                                                            replay), _relu_pin)

    exact: Dict[str, dict] = {}  # the float64 step, run once if a parameter needs judging

    def float64_step() -> dict:
        if not exact:
            exact.update(_meta_step(entry, state, "float64"))
        return exact

    own = model.state_dict()
    for key in entry.with_prefix("after/"):
        full, pk = "after/" + key, our_key(key)
        if pk is None:
            entry.ignore(full, "num_batches_tracked: Paddle keeps no BN counter")
            continue
        actual = _np(own[pk])
        if key.endswith("running_var"):
            entry.check(full, actual, expected=run["recorder"].paddle_variance(pk.rsplit(".", 1)[0], entry[full]),
                        tol_key="after")
        elif _is_torch_parameter(key) and pk in trainable:
            def note(pk=pk, key=key) -> str:
                g64 = np.abs(float64_step()["grads"][pk]).max()
                g32, gref = np.abs(run["grads"][pk]).max(), np.abs(entry["grad/" + reference_key(key)]).max()
                return (f"Adam moves by lr * g / (|g| + 1e-8): max |gradient| float64 {g64:.2g}, ours {g32:.2g}, "
                        f"the reference's {gref:.2g}")
            check_or_reference_farther(entry, full, actual, lambda pk=pk: _np(float64_step()["model"].state_dict()[pk]),
                                       tol_key="after", note=note)
        else:
            entry.check(full, actual, tol_key="after")

    model.eval()
    with paddle.no_grad():
        to_class_major = np.argsort(entry["label_shot"], kind="stable")
        support = model.extract(_t(entry["data_shot"][to_class_major]))
        query = model.extract(_t(entry["data_query"]))
        entry.check("logits_eval_after_step", _np(model.episode_logits(support, query, way, shot)))


def reference_key(key: str) -> str:
    """The key under which the reference stored `key`'s gradient (aliases share fc1_w/fc1_b's)."""
    return key.replace("base_learner.vars.0", "base_learner.fc1_w").replace("base_learner.vars.1",
                                                                          "base_learner.fc1_b")


def our_key(key: str) -> Optional[str]:
    """Our state-dict name of a reference key of the whole MtlLearner (aliases included; None
    for num_batches_tracked)."""
    from methods.mtl import MTL
    pk = paddle_key(reference_key(key))
    return None if pk is None else MTL.checkpoint_rules.from_reference_key(pk, None)

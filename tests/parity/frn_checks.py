"""Parity checkers for shared/fixtures/frn (reference Tsingularity/FRN)."""
import math
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from tests.parity.checkers import Entry, _np, _t, register
from tests.parity.judge import BranchPin, judge

#: PyTorch BatchNorm's default momentum 0.1: running = 0.9 * running + 0.1 * batch statistic
#: (Paddle's `momentum` is this 0.9). Used to replay the reference BN updates in Paddle's
#: convention (fixture README, "Backbones").
TORCH_BN_KEEP = 0.9
FE = "feature_extractor."


class Identity(nn.Layer):
    """Backbone stand-in for the head fixtures: returns its input, has `out_channels`."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x):
        return x


def splitmix64_uniform(n: int, seed: int) -> np.ndarray:
    j = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (j + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0 ** 53


def recipe_conv_weight(shape, seed: int) -> np.ndarray:
    """The fixture README's bit-exact regeneration of a full-width ResNet-12 conv weight."""
    std = math.sqrt(2.0 / (shape[0] * shape[2] * shape[3]))
    u = splitmix64_uniform(int(np.prod(shape)), seed)
    return ((2.0 * u - 1.0) * math.sqrt(3.0) * std).astype(np.float32).reshape(shape)


def regenerate_recipe(entry: Entry, param_keys: Iterable[str]) -> Dict[str, np.ndarray]:
    """Conv weights of the entry's `conv_weight_recipe`, verified against its sum/sumsq/first4.

    Recipe keys are backbone keys; when the entry's parameters are those of a full model
    (`feature_extractor.*`), they are prefixed accordingly.
    """
    recipe = (entry.spec.get("conv_weight_recipe") or {}).get("per_key") or {}
    prefix = FE if any(k.startswith(FE) for k in param_keys) else ""
    out = {}
    for key, r in recipe.items():
        w = recipe_conv_weight(r["shape"], r["seed"])
        flat = w.reshape(-1)
        assert flat[:4].tolist() == r["first4"], f"{entry.file}: recipe {key}: first4 differ"
        w64 = flat.astype(np.float64)
        # float64 sums of the same float32 values: only the summation order can differ
        assert math.isclose(w64.sum(), r["sum_f64"], rel_tol=1e-12, abs_tol=1e-12), f"{entry.file}: recipe {key}: sum"
        assert math.isclose((w64 ** 2).sum(), r["sumsq_f64"], rel_tol=1e-12), f"{entry.file}: recipe {key}: sumsq"
        out[prefix + key] = w
    return out


def reference_state(entry: Entry, prefix: str = "param/") -> Dict[str, np.ndarray]:
    """The reference state dict (PyTorch keys) stored under `prefix`, plus recipe weights."""
    state = entry.with_prefix(prefix)
    state.update(regenerate_recipe(entry, state))
    return state


def backbone_spec(state_keys: Iterable[str], shapes: Dict[str, tuple], prefix: str = "") -> Tuple[str, dict]:
    """(`--model` name, constructor kwargs) of the backbone whose reference keys these are."""
    keys = set(state_keys)
    if f"{prefix}layer1.0.conv1.weight" in keys:
        widths = tuple(int(shapes[f"{prefix}layer{i}.0.conv1.weight"][0]) for i in range(1, 5))
        return "ResNet12", {"widths": widths, "in_channels": int(shapes[f"{prefix}layer1.0.conv1.weight"][1])}
    if f"{prefix}layers.0.layers.0.weight" in keys:
        shape = shapes[f"{prefix}layers.0.layers.0.weight"]
        return "Conv4", {"width": int(shape[0]), "in_channels": int(shape[1])}
    raise AssertionError(f"cannot tell the backbone from keys such as {sorted(keys)[:3]}")


def build_frn(state_shapes: Dict[str, tuple], positions: int = 25):
    """The FRN model the entry scripts build for a reference FRN state dict (keys -> shapes):
    `stl_frn` with num_classes when it has a class matrix, else `meta_frn`."""
    from methods import METHODS, options_for
    from network import build_backbone
    name, kwargs = backbone_spec(state_shapes, state_shapes, prefix=FE)
    num_classes = None
    if "cat_mat" in state_shapes:
        num_classes, positions = int(state_shapes["cat_mat"][0]), int(state_shapes["cat_mat"][1])
    method = "stl_frn" if num_classes is not None else "meta_frn"
    options = options_for(method, model=name, image_size=16 * math.isqrt(positions))
    return METHODS[method](build_backbone(name, **kwargs), options, num_classes=num_classes)


def build_head(d: int, resnet: bool, num_classes: Optional[int] = None, positions: int = 25):
    """FRN head on an identity backbone with d channels (ResNet-12 mode divides by sqrt(d))."""
    from methods import METHODS, options_for
    method = "stl_frn" if num_classes is not None else "meta_frn"
    options = options_for(method, model="ResNet12" if resnet else "Conv4", image_size=16 * math.isqrt(positions))
    return METHODS[method](Identity(d), options, num_classes=num_classes)


def load_reference(model, state: Dict[str, np.ndarray]) -> None:
    """Load a reference state dict through the converter the project ships."""
    from frn.convert import torch_state_to_paddle
    converted = torch_state_to_paddle(state, model)
    model.set_state_dict(converted)
    own = model.state_dict()
    for k, v in converted.items():  # set_state_dict only warns on trouble: make sure it landed
        assert np.array_equal(own[k].numpy(), v), f"{k} was not loaded"


def paddle_key(torch_key: str) -> str:
    from frn.convert import torch_key_to_paddle
    return torch_key_to_paddle(torch_key)


class BNRecorder:
    """Records N*H*W seen by every BatchNorm in each forward (train-mode variance bookkeeping)."""

    def __init__(self, model, prefix: str = ""):
        self.m: Dict[str, int] = {}
        self.handles = []
        for name, layer in model.named_sublayers():
            if isinstance(layer, (nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D)):
                self.handles.append(layer.register_forward_pre_hook(self._hook(prefix + name)))

    def _hook(self, name):
        def hook(layer, inputs):
            shape = inputs[0].shape
            self.m[name] = int(np.prod(shape)) // int(shape[1])
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


class BNVarianceReplay:
    """Paddle-convention running variances from the reference's (PyTorch) ones.

    PyTorch updates running_var with the unbiased batch variance; Paddle 3.3.1 with the biased
    one (verified empirically). With keep = 0.9 and m = N*H*W, after every train-mode forward k
        paddle_k = keep * paddle_{k-1} + (ref_k - keep * ref_{k-1}) * (1 - 1/m_k),
    starting from paddle_{-1} = ref_{-1} (the loaded value). For one forward this is the
    README's expected_paddle = rv_new - (rv_new - 0.9 * rv_old) / m.
    """

    def __init__(self, initial: Dict[str, np.ndarray]):
        self.ref = {k: v.astype(np.float64) for k, v in initial.items()}
        self.paddle = dict(self.ref)

    def step(self, ref_new: np.ndarray, key: str, m: int) -> np.ndarray:
        ref_old, pad_old = self.ref[key], self.paddle[key]
        ref_new = ref_new.astype(np.float64)
        expected = TORCH_BN_KEEP * pad_old + (ref_new - TORCH_BN_KEEP * ref_old) * (1.0 - 1.0 / m)
        self.ref[key], self.paddle[key] = ref_new, expected
        return expected


def _bn_layer_of(paddle_key_: str) -> str:
    return paddle_key_.rsplit(".", 1)[0]


def check_state_after_train_forward(entry: Entry, model, out_prefix: str, replay: BNVarianceReplay,
                                    m: Dict[str, int],
                                    check_param: Optional[Callable[[str, str, np.ndarray], None]] = None,
                                    tol_key: Optional[str] = None,
                                    rename: Callable[[str], str] = lambda key: key) -> None:
    """Compare the model's state with the `<out_prefix><torch key>` arrays after train-mode
    forwards: parameters (through `check_param(full key, torch key, actual)` when given) and
    running means directly, running variances through `replay` (at the tolerance of `tol_key`
    when the manifest gives one per kind of array). `rename` maps the converted (Paddle) key to
    the model's own name, for models whose module tree differs from the reference's (`m` is
    keyed by the model's BatchNorm names)."""
    own = model.state_dict()
    for key in [k[len(out_prefix):] for k in entry.outputs() if k.startswith(out_prefix)]:
        full = out_prefix + key
        pk = paddle_key(key)
        if pk is None:
            entry.ignore(full, "num_batches_tracked: Paddle keeps no BN counter")
            continue
        pk = rename(pk)
        actual = _np(own[pk])
        if key.endswith("running_var"):
            expected = replay.step(entry[full], key, m[_bn_layer_of(pk)])
            entry.check(full, actual, expected=expected.astype(np.float32), tol_key=tol_key)
        elif check_param is not None and _is_torch_parameter(key):
            check_param(full, key, actual)
        else:
            entry.check(full, actual, tol_key=tol_key)


# ----- backbones -----------------------------------------------------------------------------
@register("frn/backbone_conv4", "frn/backbone_resnet12", "frn/backbone_resnet12_recipe")
def check_backbone(entry: Entry) -> None:
    from network import build_backbone
    state = reference_state(entry)
    name, kwargs = backbone_spec(state, {k: v.shape for k, v in state.items()})
    model = build_backbone(name, **kwargs)
    x = _t(entry["x"])

    load_reference(model, state)
    model.eval()
    with paddle.no_grad():
        entry.check("out_eval", _np(model(x)))

    load_reference(model, state)
    model.train()
    recorder = BNRecorder(model)
    with paddle.no_grad():
        entry.check("out_train", _np(model(x)))
    recorder.remove()
    replay = BNVarianceReplay({k: v for k, v in state.items() if k.endswith("running_var")})
    check_state_after_train_forward(entry, model, "bn_after_train_forward/", replay, recorder.m)


# ----- FRN head --------------------------------------------------------------------------------
def nonwoodbury_neg_l2_dist(support, query, alpha, beta, positions: int):
    """Reference `Woodbury=False` distances: Q_bar = rho * Q S^T (S S^T + lam I_kr)^-1 S.
    support [way, kr, d], query [m, d] -> [m / positions, way]."""
    n, d = support.shape[1], support.shape[2]
    lam = n / d * paddle.exp(alpha) + 1e-6
    rho = paddle.exp(beta)
    sst = paddle.matmul(support, support, transpose_y=True)                     # [way, kr, kr]
    inv = paddle.linalg.inv(sst + lam * paddle.eye(n, dtype=support.dtype).unsqueeze(0))
    qst = paddle.matmul(query.unsqueeze(0), support, transpose_y=True)          # [way, m, kr]
    recon = paddle.matmul(paddle.matmul(qst, inv), support) * rho               # [way, m, d]
    dist = ((recon - query.unsqueeze(0)) ** 2).sum(axis=2).transpose([1, 0])   # [m, way]
    return -dist.reshape([-1, positions, dist.shape[1]]).mean(axis=1)


@register("frn/head_episode")
def check_head_episode(entry: Entry) -> None:
    from methods.base import split_episode
    from methods.frn import aux_loss, reconstruction_distance
    cfg = entry.config
    way, shot = int(cfg["way"]), int(cfg["shot"])
    sup_np, qry_np = entry["support_features"], entry["query_features"]
    d, positions = sup_np.shape[1], sup_np.shape[2] * sup_np.shape[3]
    model = build_head(d, bool(cfg["resnet"]), positions=positions)
    load_reference(model, entry.with_prefix("init/"))
    model.train()
    target = _t(entry["target"])

    sf, qf = _t(sup_np, grad=True), _t(qry_np, grad=True)
    support, query = split_episode(model.to_positions(paddle.concat([sf, qf])), way, shot)
    loss, logits = model.episode_loss(support, query, way, shot, target)
    log_prediction = F.log_softmax(logits, axis=1)
    neg = model.neg_l2_dist(support, query, way, shot)
    support_matrix = support.reshape([way, shot * positions, d])
    alpha, beta = model.r[0], model.r[1]

    entry.check("log_prediction", _np(log_prediction))
    entry.check("logits", _np(logits))
    entry.check("neg_l2_dist", _np(neg))
    entry.check("support_matrix", _np(support_matrix))
    entry.check("recon_dist", _np(reconstruction_distance(query.reshape([-1, d]), support_matrix, alpha, beta)))
    entry.check("neg_l2_dist_nonwoodbury",
                _np(nonwoodbury_neg_l2_dist(support_matrix, query.reshape([-1, d]), alpha, beta, positions)))
    entry.check("frn_loss", _np(F.nll_loss(log_prediction, target)))
    entry.check("aux_loss", _np(aux_loss(support_matrix)))
    entry.check("loss", _np(loss))
    lam = shot * positions / d * paddle.exp(alpha) + 1e-6
    entry.check("lam", _np(lam))
    with paddle.no_grad():
        entry.exact("pred", _np(model.episode_scores(support, query, way, shot).argmax(axis=1)))

    loss.backward()
    entry.check("grad_r", _np(model.r.grad))
    entry.check("grad_scale", _np(model.scale.grad))
    entry.check("grad_support_features", _np(sf.grad))
    entry.check("grad_query_features", _np(qf.grad))

    sf_aux = _t(sup_np, grad=True)
    aux = aux_loss(model.to_positions(sf_aux).reshape([way, shot * positions, d]))
    (grad_aux,) = paddle.grad([aux], [sf_aux])
    entry.check("grad_support_features_aux_only", _np(grad_aux))


@register("frn/head_pretrain")
def check_head_pretrain(entry: Entry) -> None:
    init = entry.with_prefix("init/")
    features = entry["features"]
    d, positions = features.shape[1], features.shape[2] * features.shape[3]
    num_classes = init["cat_mat"].shape[0]
    model = build_head(d, bool(entry.config["resnet"]), num_classes=num_classes, positions=positions)
    load_reference(model, init)
    model.train()
    x = _t(features, grad=True)
    loss, logits = model.pretrain_loss(x, _t(entry["labels"]))
    entry.check("log_prediction", _np(F.log_softmax(logits, axis=1)))
    entry.check("loss", _np(loss))
    loss.backward()
    entry.check("grad_cat_mat", _np(model.cat_mat.grad))
    entry.check("grad_scale", _np(model.scale.grad))
    entry.check("grad_features", _np(x.grad))
    assert model.r.stop_gradient and model.r.grad is None, "r must be frozen in pre-training"


# ----- full model ------------------------------------------------------------------------------
@register("frn/model_forward")
def check_model_forward(entry: Entry) -> None:
    from methods.base import split_episode
    state = reference_state(entry)
    model = build_frn({k: v.shape for k, v in state.items()})
    load_reference(model, state)
    model.eval()
    way, shot = int(entry.config["way"]), int(entry.config["shot"])
    with paddle.no_grad():
        fmap = model.feature_extractor(_t(entry["images"]))
        entry.check("backbone_out", _np(fmap))
        support, query = split_episode(model.to_positions(fmap), way, shot)
        logits = model.episode_logits(support, query, way, shot)
        entry.check("neg_l2_dist", _np(model.neg_l2_dist(support, query, way, shot)))
        entry.check("logits", _np(logits))
        entry.check("log_prediction", _np(F.log_softmax(logits, axis=1)))
        entry.exact("pred", _np(model.episode_scores(support, query, way, shot).argmax(axis=1)))


# ----- training steps -----------------------------------------------------------------------
def _optimizer_settings(entry: Entry) -> List[Tuple[str, str, dict]]:
    """(name, array prefix, settings) of every optimiser in the config; arrays are prefixed by
    the optimiser's name when the entry holds several (train step), by nothing otherwise."""
    out = []
    for name, settings in entry.config.items():
        if isinstance(settings, dict) and "lr" in settings:
            prefix = f"{name}/" if any(k.startswith(f"{name}/") for k in entry.arrays) else ""
            out.append((name, prefix, settings))
    assert out, f"{entry.file}: no optimiser settings in the config"
    return out


def _build_optimizer(model, name: str, settings: dict):
    from utils.optim import build_optimizer
    opt = build_optimizer(model, float(settings["lr"]), name=name, weight_decay=float(settings["weight_decay"]),
                          momentum=float(settings.get("momentum", 0.9)), nesterov=bool(settings.get("nesterov", False)))
    if name == "adam":  # build_optimizer fixes these: they must be the reference's
        b1, b2 = settings.get("betas", (0.9, 0.999))
        assert (opt._beta1, opt._beta2, opt._epsilon) == (b1, b2, settings.get("eps", 1e-8)), "Adam settings"
    if name == "sgd":
        assert float(opt._momentum) == float(settings["momentum"]), "SGD momentum"
        assert settings.get("dampening", 0) == 0
    return opt


def _n_steps(entry: Entry, prefix: str) -> int:
    steps = entry.config.get("n_steps")
    if steps is None:
        steps = 0
        while any(k.startswith(f"{prefix}after_step{steps}/") for k in entry.arrays):
            steps += 1
    return int(steps)


def _check_optimizer_only(entry: Entry, name: str, prefix: str, settings: dict) -> None:
    """Set every gradient to the reference's, step, compare the parameters (tight tolerance)."""
    init = entry.with_prefix("init/")
    tol = entry.spec["optimizer_only_check"]["tolerance"]
    model = build_frn({k: v.shape for k, v in init.items()})
    load_reference(model, init)
    opt = _build_optimizer(model, name, settings)
    params = dict(model.named_parameters())
    for k in range(_n_steps(entry, prefix)):
        grads = {paddle_key(key): g for key, g in entry.with_prefix(f"{prefix}step{k}/grad/").items()}
        trainable = {n for n, p in params.items() if not p.stop_gradient}
        assert set(grads) == trainable, (f"{entry.file}: the reference's trainable parameters "
                                         f"{sorted(set(grads) ^ trainable)[:3]} differ from ours")
        opt.clear_grad()
        # d/dp sum(p * g) = g exactly: every parameter's gradient becomes the reference's
        sum(((params[n] * _t(g)).sum() for n, g in grads.items())).backward()
        opt.step()
        for key, ref in entry.with_prefix(f"{prefix}after_step{k}/").items():
            pk = paddle_key(key)
            if pk is None or pk not in params or not _is_torch_parameter(key):
                continue
            np.testing.assert_allclose(_np(params[pk]), ref, rtol=tol["rtol"], atol=tol["atol"],
                                       err_msg=f"{entry.file}: {name} optimiser-only step {k}: {key}")


def _is_torch_parameter(key: str) -> bool:
    return key.rsplit(".", 1)[-1] not in ("running_mean", "running_var", "num_batches_tracked")


def _end_to_end(entry, name: str, prefix: str, settings: dict, episodic: bool, dtype: str = "float32",
                pin: Optional[BranchPin] = None, replay: bool = False) -> None:
    """The reference's training steps from its initial state, in `dtype` (model, data and
    optimiser), every output handed to `entry.check`; `pin` records (or with `replay` imposes)
    the ReLU and max-pool decisions of the backbone."""
    from methods.base import split_episode
    from methods.frn import aux_loss
    init = entry.with_prefix("init/")
    paddle.set_default_dtype(dtype)
    try:
        model = build_frn({k: v.shape for k, v in init.items()})
    finally:
        paddle.set_default_dtype("float32")
    load_reference(model, init)
    if dtype != "float32":
        model.to(dtype=dtype)
    frozen = {n: _np(p).copy() for n, p in model.named_parameters() if p.stop_gradient and
              not n.endswith(("_mean", "_variance"))}
    opt = _build_optimizer(model, name, settings)
    model.train()
    images = _t(entry["images"].astype(dtype))
    labels = _t(entry["target" if episodic else "labels"])
    recorder = BNRecorder(model)
    bn_replay = BNVarianceReplay({k: v for k, v in init.items() if k.endswith("running_var")})
    params = dict(model.named_parameters())
    if pin is not None:
        pin.attach(model.feature_extractor, replay)
    try:
        for k in range(_n_steps(entry, prefix)):
            step = f"{prefix}step{k}/"
            if episodic:
                way, shot = int(entry.config["way"]), int(entry.config["shot"])
                support, query = split_episode(model.extract(images), way, shot)
                loss, logits = model.episode_loss(support, query, way, shot, labels)
                aux = aux_loss(support.reshape([way, -1, support.shape[-1]]))
            else:
                loss, logits = model.pretrain_loss(images, labels)
                aux = paddle.zeros([], dtype=loss.dtype)  # no auxiliary loss in pre-training
            log_prediction = F.log_softmax(logits, axis=1)
            entry.check(step + "log_prediction", _np(log_prediction))
            entry.check(step + "frn_loss", _np(F.nll_loss(log_prediction, labels)))
            entry.check(step + "aux_loss", _np(aux))
            entry.check(step + "loss", _np(loss))
            opt.clear_grad()
            loss.backward()
            for key in entry.with_prefix(step + "grad/"):
                p = params[paddle_key(key)]
                assert p.grad is not None, f"{entry.file}: {key} got no gradient"
                entry.check(step + "grad/" + key, _np(p.grad))
            opt.step()
            check_state_after_train_forward(entry, model, f"{prefix}after_step{k}/", bn_replay, recorder.m)
            for n, value in frozen.items():
                assert np.array_equal(_np(params[n]), value), f"{entry.file}: frozen {n} changed at step {k}"
    finally:
        if pin is not None:
            pin.detach()
        recorder.remove()


def _check_end_to_end(entry: Entry, name: str, prefix: str, settings: dict, episodic: bool) -> None:
    """The training steps compared end to end; an array that misses is judged by float64 (a
    branch decided below float32 resolution, or the reference the farther side: judge.py)."""
    judge(entry, lambda recording, dtype, pin, replay: _end_to_end(recording, name, prefix, settings, episodic,
                                                                     dtype, pin, replay))


@register("frn/train_step", "frn/pretrain_step")
def check_train_step(entry: Entry) -> None:
    episodic = entry.kind == "frn/train_step"
    for name, prefix, settings in _optimizer_settings(entry):
        _check_optimizer_only(entry, name, prefix, settings)
        _check_end_to_end(entry, name, prefix, settings, episodic)


# ----- bookkeeping -----------------------------------------------------------------------------
@register("frn/samplers")
def check_samplers(entry: Entry) -> None:
    from data.samplers import EpisodeSampler, PoolEpisodeSampler
    cfg = entry.config
    counts = entry["class_counts"]
    labels = np.repeat(np.arange(len(counts)), counts).tolist()
    shot, query = (int(s) for s in cfg["shots"])
    rng = np.random.RandomState(int(cfg["seed_train"]))
    train = list(PoolEpisodeSampler(labels, int(cfg["way"]), shot, query, rng=rng))
    entry.exact("meta_train_episodes", np.asarray(train, dtype=np.int64).reshape(-1, int(cfg["way"]) * (shot + query)))
    entry.exact("rng_probe_after_train_epoch", np.asarray(rng.randint(0, 2 ** 31 - 1), dtype=np.int64))

    way, test_shot, trials = int(cfg["test_way"]), int(cfg["test_shot"]), int(cfg["trials"])
    ref = entry["meta_test_episodes"]
    n_query = (ref.shape[1] - way * test_shot) // way  # the reference always draws 16
    test = list(EpisodeSampler(labels, way, test_shot, n_query, trials, seed=int(cfg["seed_test"])))
    entry.exact("meta_test_episodes", np.asarray(test, dtype=np.int64))


@register("frn/lr_schedule")
def check_lr_schedule(entry: Entry) -> None:
    from utils.optim import build_scheduler
    for config_name, cfg in entry.config.items():
        if cfg.get("decay_epoch"):
            scheduler = build_scheduler(cfg["lr"], cfg["gamma"], milestones=cfg["decay_epoch"])
        else:
            scheduler = build_scheduler(cfg["lr"], cfg["gamma"], step_size=cfg["epoch"])
        lrs = []
        for _ in range(int(cfg["total_epochs"])):
            lrs.append(scheduler.get_lr())
            scheduler.step()
        entry.check(config_name, np.asarray(lrs, dtype=np.float64))


@register("frn/eval_ci")
def check_eval_ci(entry: Entry) -> None:
    from utils.stats import mean_and_interval
    mean, interval = mean_and_interval(entry.use("acc_list"))
    entry.check("mean", np.float64(mean))
    entry.check("interval", np.float64(interval))


@register("frn/state_dict_keys")
def check_state_dict_keys(entry: Entry) -> None:
    """Every listed reference variant maps, through the converter, onto exactly our model's
    state dict (names and shapes; num_batches_tracked has no Paddle slot)."""
    from frn.convert import torch_state_to_paddle
    variants = entry.json()
    assert variants, f"{entry.file}: no variants"
    for variant, info in variants.items():
        listed = info["state_dict"]
        shapes = {e["key"]: tuple(e["shape"]) for e in listed}
        model = build_frn(shapes)
        zeros = {e["key"]: np.zeros(e["shape"], dtype=e["dtype"]) for e in listed}
        converted = torch_state_to_paddle(zeros, model)
        own = model.state_dict()
        assert set(converted) == set(own), f"{variant}: keys differ: {sorted(set(converted) ^ set(own))[:5]}"
        for k, v in converted.items():
            assert tuple(v.shape) == tuple(own[k].shape), f"{variant}: {k} shape {own[k].shape} != {v.shape}"
        params = dict(model.named_parameters())
        for e in listed:
            pk = paddle_key(e["key"])
            if pk is None:
                continue
            trainable = e["kind"] == "parameter" and e["requires_grad"]
            assert (not params[pk].stop_gradient) == trainable, f"{variant}: {e['key']} trainable={trainable}"
        n_params = sum(int(np.prod(p.shape)) for n, p in params.items() if not n.endswith(("_mean", "_variance")))
        if "num_parameters_total" in info:
            assert n_params == info["num_parameters_total"], f"{variant}: {n_params} parameters"

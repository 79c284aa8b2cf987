"""Parity checkers for shared/fixtures/neg_margin (references: bl0/negative-margin.few-shot and
open-mmlab/mmfewshot; spec neg_margin.md §9).

Reference state dicts are loaded through the converter the project ships (`torch_state_to_paddle`
with the method's key map), so bl0's Conv-4 aliases and both key layouts are exercised. Random
draws the fixtures record (fine-tuning orders, DropBlock seeds) are replayed, never redrawn.
Arrays without a tolerance of their own are compared at the tolerance of the quantity they
derive from (named at each call); index and accuracy arrays exactly.
"""
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F

from methods.neg_margin import MMFS_METRICS
from tests.parity.checkers import Entry, _np, _t, consume_state, formula_weights, register
from tests.parity.frn_checks import BNRecorder, BNVarianceReplay, check_state_after_train_forward, load_reference

#: the metric of each bl0 head kind
BL0_METRIC = {"neg_margin/head_bl0_cosface": "cosineface", "neg_margin/head_bl0_negsoftmax": "neg-softmax",
              "neg_margin/head_bl0_cosine": "cosine"}


def neg_margin_model(model: str, image_size: int, backbone_options: Optional[dict] = None,
                     num_classes: Optional[int] = None, **flags):
    """A NegMargin model as the entry scripts build it (method defaults, `flags` overriding)."""
    from methods import options_for
    from methods.neg_margin import NegMargin
    from network import build_backbone
    options = options_for("neg_margin", model=model, image_size=image_size, **flags)
    kwargs = dict(NegMargin.backbone_options(options, num_classes), **(backbone_options or {}))
    return NegMargin(build_backbone(model, **kwargs), options, num_classes)


def our_key(model, pkey: str) -> Optional[str]:
    """The model's name of a converted reference key; bl0's Conv-4 aliases (`trunk.i.trunk.0/1`,
    dropped on conversion) name the tensors of `trunk.i.C/BN`."""
    rules = model.checkpoint_rules
    return rules.from_reference_key(pkey, model) or rules.from_reference_key(
        re.sub(r"\.trunk\.([01])\.", lambda m: ".C." if m.group(1) == "0" else ".BN.", pkey), model)


def reference_shapes(model, keys: Sequence[str]) -> Dict[str, Tuple[int, ...]]:
    """The shapes of the model's tensors under the reference's key names (`keys`, in order);
    () for the entries Paddle has no slot for (num_batches_tracked)."""
    from frn.convert import torch_key_to_paddle
    own = model.state_dict()
    shapes = {}
    for key in keys:
        pkey = torch_key_to_paddle(key)
        shapes[key] = () if pkey is None else tuple(own[model.checkpoint_rules.from_reference_key(pkey, model)].shape)
    return shapes


# ----- heads --------------------------------------------------------------------------------
def _check_head(entry: Entry, metric: str, scale: float, margin: float, probs_key: Optional[str]) -> None:
    from methods.neg_margin import MarginClassifier
    x_np, w_np = entry.use("x"), entry.use("weight")
    head = MarginClassifier(x_np.shape[1], w_np.shape[0], metric, scale, margin)
    head.weight.set_value(_t(w_np))
    labels = _t(entry.use("label"))
    x = _t(x_np, grad=True)
    logits = head(x, labels)
    loss = F.cross_entropy(logits, labels)
    entry.check("logits", _np(logits))
    entry.check("loss", _np(loss))
    loss.backward()
    entry.check("grad_x", _np(x.grad), tol_key="grads")
    entry.check("grad_weight", _np(head.weight.grad), tol_key="grads")
    with paddle.no_grad():
        plain = head(_t(x_np))
    if probs_key is None:
        entry.check("logits_nolabel", _np(plain), tol_key="logits")
    else:  # mmfewshot's forward_query: softmax of the margin-free scores (compared at the logits' tolerance)
        entry.check(probs_key, _np(F.softmax(plain, axis=1)), tol_key="logits")


@register(*BL0_METRIC)
def check_head_bl0(entry: Entry) -> None:
    cfg = entry.config
    margin = cfg.get("margin")
    _check_head(entry, BL0_METRIC[entry.kind], float(cfg["scale_factor"]), float(margin or 0.0), None)


@register("neg_margin/head_mmfs")
def check_head_mmfs(entry: Entry) -> None:
    cfg = entry.config
    _check_head(entry, MMFS_METRICS[cfg["metric_type"]], float(cfg["temperature"]), float(cfg["margin"]),
                "query_probs")


# ----- meta-test fine-tuning ------------------------------------------------------------------
class Replay:
    """Stands in for numpy's RNG in `support_batches`: returns recorded permutations in order."""

    def __init__(self, permutations: Sequence[np.ndarray]):
        self.permutations = list(permutations)

    def permutation(self, n: int) -> np.ndarray:
        order = np.asarray(self.permutations.pop(0))
        assert len(order) == n, f"recorded permutation of {len(order)} items, {n} asked for"
        return order


def _fit_episode(entry: Entry, metric: str, scale: float, margin: float, optim: dict, batch_size: int,
                 permutations: List[np.ndarray], steps: int, on_step=None):
    """Replay one reference fine-tuning: returns (our batches, final weight, query scores)."""
    from methods.neg_margin import FitSettings, fit_classifiers, head_logits, support_batches
    z_support, y_support = entry.use("z_support"), entry["y_support"]
    way = int(y_support.max()) + 1
    shot = len(y_support) // way
    # both references order the support class-major: label = index // shot
    entry.exact("y_support", np.arange(way).repeat(shot))
    settings = FitSettings(metric=metric, scale=scale, margin=margin, lr=float(optim["lr"]),
                           weight_decay=float(optim["weight_decay"]), batch_size=batch_size,
                           momentum=float(optim["momentum"]), dampening=float(optim["dampening"]))
    batches = support_batches(Replay(permutations), len(y_support), batch_size, steps)
    weight, _ = fit_classifiers(_t(z_support[None]), y_support, _t(entry.use("weight_init")[None]), None,
                                [b[None] for b in batches], settings, on_step)
    scores = head_logits(_t(entry.use("z_query")), weight[0], metric, scale)
    entry.check("weight_final", _np(weight[0]))
    return batches, scores


def _check_accuracy(entry: Entry, scores: paddle.Tensor) -> None:
    predictions = _np(scores.argmax(axis=1))
    acc = np.float32((predictions == entry.use("y_query")).mean())
    entry.exact("acc", acc)
    return predictions


@register("neg_margin/finetune_bl0")
def check_finetune_bl0(entry: Entry) -> None:
    """bl0's BaselineFinetune: `iter` epochs, each a recorded permutation walked in batches."""
    cfg = entry.config
    params, optim = cfg["metric_params_test"], cfg["finetune"]
    perms = entry.use("perms")
    batch_size = int(cfg["batch_size"])
    assert perms.shape[0] == int(optim["iter(epochs)"]), "one recorded permutation per epoch"
    steps = perms.shape[0] * -(-perms.shape[1] // batch_size)
    after_first = {}

    def keep_first(step, weight, bias, loss):
        if step == 0:
            after_first["weight"] = _np(weight[0])

    _, scores = _fit_episode(entry, cfg["metric_type"], float(params["scale_factor"]), float(params["margin"]),
                             optim, batch_size, list(perms), steps, keep_first)
    entry.check("weight_after_step1", after_first["weight"])
    entry.check("scores_query", _np(scores))
    predictions = _check_accuracy(entry, scores)
    assert np.array_equal(predictions, entry["scores_query"].argmax(axis=1)), "argmax(scores_query) must be exact"


def permutations_of(batches: np.ndarray, n: int) -> List[np.ndarray]:
    """The permutations a recorded step sequence walked: its batches (without the -1 padding)
    concatenated and cut every n indices; the last one may be cut short by the step count,
    and is completed with the missing indices (never read)."""
    flat = np.concatenate([b[b >= 0] for b in batches])
    perms = [flat[i:i + n] for i in range(0, len(flat), n)]
    last = perms[-1]
    perms[-1] = np.concatenate([last, np.setdiff1d(np.arange(n), last)])
    return perms


@register("neg_margin/finetune_mmfs")
def check_finetune_mmfs(entry: Entry) -> None:
    """mmfewshot's test_single_task: `num_steps` steps of a cycled, shuffled support loader."""
    cfg = entry.config
    head = cfg["meta_test_head"]
    recorded = entry["batches"]
    batch_size, steps = int(cfg["support_batch_size"]), int(cfg["num_steps"])
    n_support = len(entry["y_support"])
    losses = []
    batches, scores = _fit_episode(entry, MMFS_METRICS[head["metric_type"]], float(head["temperature"]),
                                   float(head["margin"]), cfg["optimizer"], batch_size,
                                   permutations_of(recorded, n_support), steps,
                                   lambda step, weight, bias, loss: losses.append(float(loss[0])))
    padded = np.full((steps, batch_size), -1, dtype=np.int64)
    for t, b in enumerate(batches):
        padded[t, :len(b)] = b
    # our step sequence (pass boundaries, short last batches, the stop) is the recorded one
    entry.exact("batches", padded)
    entry.check("support_loss", np.float32(losses[0]), expected=entry["support_loss"][0], tol_key="support_loss[0]")
    entry.check("query_probs", _np(F.softmax(scores, axis=1)))
    _check_accuracy(entry, scores)


# ----- backbones ------------------------------------------------------------------------------
def _backbone_kind(entry: Entry) -> str:
    return {"neg_margin/backbone_conv4": "Conv4", "neg_margin/backbone_resnet12": "ResNet12",
            "neg_margin/backbone_resnet18": "ResNet18", "neg_margin/backbone_resnet12_formula": "ResNet12",
            "neg_margin/backbone_resnet18_formula": "ResNet18"}[entry.kind]


def _widths(name: str, state: Dict[str, np.ndarray]) -> Optional[tuple]:
    """Stage widths of a reference state dict (reduced-width fixtures)."""
    if name in ("ResNet12", "ResNet18"):
        return tuple(int(state[f"layer{s}.0.C1.weight"].shape[0]) for s in range(1, 5))
    return None


def _run_backbone(entry: Entry, model, state: Dict[str, np.ndarray], train_tol: str = "y_train") -> None:
    x = _t(entry.use("x"))
    model.eval()
    with paddle.no_grad():
        entry.check("y_eval", _np(model.extract(x)))
    model.train()
    recorder = BNRecorder(model)
    with paddle.no_grad():
        entry.check("y_train", _np(model.extract(x)), tol_key=train_tol)
    recorder.remove()
    # Paddle's running variance uses the biased batch variance: replayed from the reference's
    replay = BNVarianceReplay({k: v for k, v in state.items() if k.endswith("running_var")})
    check_state_after_train_forward(entry, model, "after/", replay, recorder.m, tol_key="after",
                                    rename=lambda pkey: our_key(model, pkey))


@register("neg_margin/backbone_conv4", "neg_margin/backbone_resnet12", "neg_margin/backbone_resnet18")
def check_backbone(entry: Entry) -> None:
    """Eval and train forwards plus the running statistics after the train forward, from the
    bl0 state dict (with Conv-4's aliases); for ResNet-12 the mmfewshot key names too."""
    state = consume_state(entry)
    name = _backbone_kind(entry)
    widths = _widths(name, state)
    size = int(entry.config["input"][-1])
    model = neg_margin_model(name, size, {"widths": widths} if widths else None,
                             drop_rate=float(entry.config.get("drop_rate", 0.0)))
    load_reference(model, state)
    if name == "ResNet12":  # mmfewshot calls C1/BN1 conv1/norm1: the same model must come out
        mmfs = {re.sub(r"\.C(\d)\.", r".conv\1.", re.sub(r"\.BN(\d)\.", r".norm\1.", k)): v for k, v in state.items()}
        other = neg_margin_model(name, size, {"widths": widths})
        load_reference(other, mmfs)
        for k, v in other.state_dict().items():
            assert np.array_equal(v.numpy(), model.state_dict()[k].numpy()), f"mmfewshot keys: {k} differs"
    _run_backbone(entry, model, state)


@register("neg_margin/backbone_resnet12_formula", "neg_margin/backbone_resnet18_formula")
def check_backbone_formula(entry: Entry) -> None:
    """Full-width bl0 backbones with weights rebuilt from the key names (checksums first)."""
    name = _backbone_kind(entry)
    size = int(entry.config["input"][-1])
    model = neg_margin_model(name, size)
    keys = entry.config["state_dict_keys_in_order"]
    state = formula_weights(keys, reference_shapes(model, keys))
    for key, w in state.items():
        if f"checksum/{key}" in entry:
            w64 = w.astype(np.float64)
            entry.check(f"checksum/{key}", np.array([np.abs(w64).sum(), (w64 ** 2).sum()]), tol_key="checksum")
    load_reference(model, state)
    _run_backbone(entry, model, state)


# ----- DropBlock and the LR schedule ----------------------------------------------------------
@register("neg_margin/dropblock")
def check_dropblock(entry: Entry) -> None:
    """Block masks and outputs for recorded seed masks, and the seed-rate schedule."""
    from network.dropblock import block_mask, drop_block, seed_probability
    for case in entry.config["cases"]:
        b, size = int(case["block_size"]), int(case["feat_size"])
        suffix = f"_b{b}_S{size}"
        seeds = _t(entry.use("seed_mask" + suffix))
        entry.exact("block_mask" + suffix, _np(block_mask(seeds, b)))
        y = drop_block(_t(entry.use("x" + suffix)), b, gamma=float(case["seed_prob"]), seeds=seeds)
        entry.check("y" + suffix, _np(y), tol_key="y")
    steps = entry.use("gamma_t")
    pattern = re.compile(r"^gamma_r([\d.]+)_b(\d+)_S(\d+)$")
    for key in entry.outputs():
        match = pattern.match(key)
        if match:
            rate, b, size = float(match.group(1)), int(match.group(2)), int(match.group(3))
            gammas = [seed_probability(rate, int(t), b, size) for t in steps]
            entry.check(key, np.asarray(gammas, dtype=np.float32), tol_key="gamma")


@register("neg_margin/lr_warmup_cosine")
def check_lr_warmup_cosine(entry: Entry) -> None:
    """bl0's GradualWarmupScheduler + CosineAnnealingLR, stepped after each optimiser step."""
    from utils.optim import build_scheduler
    cfg = entry.config
    total = int(cfg["total_iters"])
    scheduler = build_scheduler(float(cfg["base_lr"]), gamma=1.0, iters_per_epoch=1, epochs=total,
                                warmup_iters=int(cfg["warmup_iters(W)"]), warmup_start=1.0 / float(cfg["multiplier"]),
                                cosine=True, eta_min=float(cfg["eta_min"]), lag=1)
    used = []
    for _ in range(total):
        used.append(scheduler.last_lr)  # what the optimiser reads during this iteration
        scheduler.step()
    entry.check("lr_used", np.asarray(used, dtype=np.float32))

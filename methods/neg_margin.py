"""Negative-Margin (Liu, Cao, Lin, Li, Zhang, Long & Hu, ECCV 2020): a backbone trained with a
margin classifier over all base classes, then a fresh classifier fitted on each test episode's
frozen support features.

Two reference protocols, chosen with `--protocol` (docs/neg_margin.md):
- `mmfs` (mmfewshot configs, the tables of mmfewshot's README): meta-test fitting counts optimiser steps
  (150 for 1-shot, 600 otherwise), ImageNet normalisation, short-side test resize;
- `bl0` (the official code): fitting counts epochs over the support set (100), CIFAR-like
  normalisation, square test resize; positive margins allowed.

Heads (bl0's names; mmfewshot's `cosine` is `cosineface`, its `softmax` is `neg-softmax`):
    cosineface   s * (cos(f, W_c) - m [c = y])
    neg-softmax  z = f W^T; z -= min_c z (per row, gradient to the arg-min); s * (z_c - m [c = y])
    cosine       s * cos(f, W_c)                 softmax   f W^T + b
The margin applies only when labels are given (training and support fitting).

Meta-test fitting (`fit_classifiers`): kaiming-uniform init, mini-batches of 4 support features
walked through fresh random orders of the support set (class-major in episodes; `adapt` fits
on explicit labels, so classes may differ in size), mean cross-entropy, PyTorch
SGD with momentum 0.9, dampening 0.9 and weight decay (utils.optim.sgd_dampened_step). Episodes
share their step sizes, so E episodes are fitted as one stack of E independent classifiers: the
same numbers as one at a time (`--episode_batch 1`), many times faster. Each episode's random
draws (initial weights, then its batch orders) come from numpy's global RNG in episode order,
so the grouping never changes a result.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, cast

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from methods.base import Adapted, CheckpointRules, FewShotMethod, MethodOptions
from network.common import torch_uniform_bound
from utils.errors import UserError
from utils.optim import sgd_dampened_step
from utils.options import check_positive, option

PROTOCOLS = ("mmfs", "bl0")
METRICS = ("cosineface", "neg-softmax", "cosine", "softmax")
MARGIN_METRICS = ("cosineface", "neg-softmax")
COSINE_METRICS = ("cosineface", "cosine")
DEFAULT_MARGIN = -0.01           # mmfewshot's CUB configs
MOMENTUM = DAMPENING = 0.9       # meta-test SGD of both references
#: meta-test fitting length: mmfewshot's `num_steps` (1-shot, other shots), bl0's epochs
MMFS_STEPS = (150, 600)
BL0_EPOCHS = 100
#: episodes fitted together by default: E * feature dim ~ FIT_GROUP_ELEMENTS keeps the stacked
#: [E, way, dim] weights and their updates in the CPU caches (measured: results/README.md)
FIT_GROUP_ELEMENTS = 2 ** 15
MAX_EPISODE_BATCH = 250
#: mmfewshot's spelling of the head's scale
ALIASES: Dict[str, Tuple[str, ...]] = {"--temperature": ("scale_factor",)}
#: mmfewshot's `metric_type` names -> bl0's
MMFS_METRICS = {"cosine": "cosineface", "softmax": "neg-softmax"}


# ----------------------------------------------------------------------------------------
# heads, as functions of (features, weights) so that one code path serves a single classifier
# ([N, D] x [C, D]) and a stack of per-episode classifiers ([E, N, D] x [E, C, D])
# ----------------------------------------------------------------------------------------
def unit(x: paddle.Tensor) -> paddle.Tensor:
    """Rows divided by max(norm, 1e-12), as PyTorch's F.normalize (Paddle's F.normalize computes
    the same, but its p-norm kernel makes the meta-test fitting 4x slower on a CPU)."""
    return x / paddle.clip(paddle.sqrt((x * x).sum(axis=-1, keepdim=True)), min=1e-12)


def similarity(x: paddle.Tensor, weight: paddle.Tensor, metric: str, bias: Optional[paddle.Tensor] = None,
               unit_x: bool = False) -> paddle.Tensor:
    """[..., N, C] similarity of features [..., N, D] to class weights [..., C, D] (`unit_x`:
    the features are normalised already)."""
    if metric in COSINE_METRICS:
        return paddle.matmul(x if unit_x else unit(x), unit(weight), transpose_y=True)
    z = paddle.matmul(x, weight, transpose_y=True)
    if metric == "softmax":
        if bias is None:
            raise ValueError("the softmax head needs its bias")
        return z + bias.unsqueeze(-2)
    # the reference's in-place z -= z.min(1): the gradient of the min goes to the arg-min column
    return z - paddle.take_along_axis(z, z.argmin(axis=-1, keepdim=True), axis=-1)


def head_logits(x: paddle.Tensor, weight: paddle.Tensor, metric: str, scale: float, margin: float = 0.0,
                labels: Optional[paddle.Tensor] = None, bias: Optional[paddle.Tensor] = None,
                unit_x: bool = False) -> paddle.Tensor:
    """Logits of a margin head; with `labels` the target logit of a margin metric is shifted
    by -margin (a negative margin raises it)."""
    sim = similarity(x, weight, metric, bias, unit_x)
    if metric == "softmax":
        return sim
    if labels is not None and metric in MARGIN_METRICS and margin:
        sim = sim - margin * F.one_hot(labels, sim.shape[-1]).astype(sim.dtype)
    return sim * scale


class MarginClassifier(nn.Layer):
    """The base-training head: weight [C, D] as the references store it (no transpose), plus a
    bias for the plain `softmax` metric (an nn.Linear in bl0)."""

    def __init__(self, dim: int, num_classes: int, metric: str, scale: float, margin: float):
        super().__init__()
        self.metric, self.scale, self.margin = metric, scale, margin
        bound = nn.initializer.Uniform(-torch_uniform_bound(dim), torch_uniform_bound(dim))
        self.weight = self.create_parameter([num_classes, dim], default_initializer=bound)
        self.bias = self.create_parameter([num_classes], default_initializer=bound) if metric == "softmax" else None

    def forward(self, x: paddle.Tensor, labels: Optional[paddle.Tensor] = None) -> paddle.Tensor:
        return head_logits(x, self.weight, self.metric, self.scale, self.margin, labels, self.bias)


# ----------------------------------------------------------------------------------------
# meta-test fitting
# ----------------------------------------------------------------------------------------
@dataclass
class FitSettings:
    """The meta-test classifier and its optimiser (both references: scale 5, margin 0,
    SGD lr 0.01, momentum 0.9, dampening 0.9, weight decay 1e-3, batches of 4)."""
    metric: str = "cosineface"
    scale: float = 5.0
    margin: float = 0.0
    lr: float = 0.01
    weight_decay: float = 1e-3
    batch_size: int = 4
    momentum: float = MOMENTUM
    dampening: float = DAMPENING


def support_batches(rng, n_support: int, batch_size: int, n_steps: int) -> List[np.ndarray]:
    """Index batches of `n_steps` optimiser steps: a fresh permutation of the support set
    whenever the previous one is used up, walked in chunks of `batch_size` (the last chunk of
    a pass may be shorter). bl0 runs whole passes (epochs); mmfewshot's cycled loader stops
    after its step count, possibly inside a pass."""
    batches: List[np.ndarray] = []
    while len(batches) < n_steps:
        order = rng.permutation(n_support)
        for start in range(0, n_support, batch_size):
            if len(batches) == n_steps:
                break
            batches.append(order[start:start + batch_size])
    return batches


def initial_head(rng, way: int, dim: int, with_bias: bool) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """A fresh classifier as the references draw it: weight [way, dim] (and bias [way])
    uniform in +-1/sqrt(dim)."""
    bound = torch_uniform_bound(dim)
    weight = rng.uniform(-bound, bound, (way, dim)).astype(np.float32)
    bias = rng.uniform(-bound, bound, (way,)).astype(np.float32) if with_bias else None
    return weight, bias


StepHook = Callable[[int, paddle.Tensor, Optional[paddle.Tensor], paddle.Tensor], None]


def fit_classifiers(support: paddle.Tensor, labels: np.ndarray, weight: paddle.Tensor, bias: Optional[paddle.Tensor],
                    batches: Sequence[np.ndarray], settings: FitSettings,
                    on_step: Optional[StepHook] = None) -> Tuple[paddle.Tensor, Optional[paddle.Tensor]]:
    """Fit E independent classifiers, one per episode, on frozen support features.

    support [E, n, D], labels [n] (shared by the episodes, e.g. class-major `index // shot`) or
    [E, n] the class of each support feature (any order, any number per class), weight
    [E, way, D] and bias [E, way] (or None) their initial values, batches[t] [E, b_t] the
    support indices of step t for each episode. The summed per-episode mean losses have
    per-episode gradients, so the stack is E separate fits. `on_step(t, weight, bias, loss[E])`
    sees each step's result. Gradients are on even when called under no_grad (evaluation).
    """
    n_episodes, n_support = support.shape[0], support.shape[1]
    support = support.detach().reshape([n_episodes * n_support, -1])
    cosine = settings.metric in COSINE_METRICS
    if cosine:  # the features are fixed: normalise them once, not at every step
        support = unit(support)
    offsets = np.arange(n_episodes)[:, None] * n_support
    labels = np.broadcast_to(np.asarray(labels, dtype=np.int64), (n_episodes, n_support))
    params = [weight.detach()] + ([bias.detach()] if bias is not None else [])
    buffers: List[Optional[paddle.Tensor]] = [None] * len(params)
    with paddle.set_grad_enabled(True):
        for step, batch in enumerate(batches):
            batch = np.asarray(batch)
            x = paddle.gather(support, paddle.to_tensor((batch + offsets).reshape(-1))).reshape([*batch.shape, -1])
            y = paddle.to_tensor(np.take_along_axis(labels, batch, axis=1))
            for p in params:
                p.stop_gradient = False
            logits = head_logits(x, params[0], settings.metric, settings.scale, settings.margin, y,
                                 params[1] if len(params) > 1 else None, unit_x=cosine)
            losses = F.cross_entropy(logits, y.unsqueeze(-1), reduction="none").reshape(batch.shape).mean(axis=1)
            grads = paddle.grad(losses.sum(), params)
            for i, (p, g) in enumerate(zip(params, grads)):
                params[i], buffers[i] = sgd_dampened_step(p.detach(), g, buffers[i], settings.lr, settings.momentum,
                                                          settings.dampening, settings.weight_decay)
            if on_step is not None:
                on_step(step, params[0], params[1] if len(params) > 1 else None, losses.detach())
    return params[0].detach(), (params[1].detach() if len(params) > 1 else None)


# ----------------------------------------------------------------------------------------
# the method
# ----------------------------------------------------------------------------------------
@dataclass
class NegMarginOptions(MethodOptions):
    protocol: str = option("mmfs", "reference protocol: mmfs (mmfewshot configs) or bl0 (the official code)",
                           choices=PROTOCOLS)
    metric: Optional[str] = option(None, "head (bl0's names): cosineface (cosine margin, the default), neg-softmax "
                                         "(dot-product margin), cosine, softmax (plain cosine / linear)",
                                   choices=METRICS)
    metric_type: Optional[str] = option(None, "mmfewshot's name of the head instead: cosine = cosineface, "
                                              "softmax = neg-softmax", choices=tuple(MMFS_METRICS))
    scale_factor: Optional[float] = option(None, "logit scale of the training head (alias --temperature); none: "
                                                 "mmfs 10, bl0 30 (cosine heads) or 5 (neg-softmax)")
    margin: Optional[float] = option(None, f"margin m of the training head (negative raises the target logit); "
                                           f"none: {DEFAULT_MARGIN} for the margin heads")
    test_scale_factor: float = option(FitSettings.scale, "scale of the meta-test classifier")
    test_margin: float = option(FitSettings.margin, "margin of the meta-test classifier")
    finetune_steps: Optional[int] = option(None, "meta-test optimiser steps (none: mmfs 150 for 1-shot, 600 otherwise)")
    finetune_epochs: Optional[int] = option(None, f"meta-test passes over the support set instead (bl0: {BL0_EPOCHS})")
    finetune_lr: float = option(FitSettings.lr, "meta-test SGD learning rate")
    finetune_wd: float = option(FitSettings.weight_decay, "meta-test SGD weight decay")
    finetune_batch_size: int = option(FitSettings.batch_size, "meta-test mini-batch of support features")
    episode_batch: Optional[int] = option(None, f"test episodes whose classifiers are fitted together (none: "
                                                f"{FIT_GROUP_ELEMENTS} // feature dim, at most {MAX_EPISODE_BATCH}; "
                                                f"1: one at a time; same results)")
    drop_rate: float = option(0.0, "ResNet dropout (stages 1-2) / DropBlock (stages 3-4) rate of base training (bl0)")
    dropblock_size: int = option(5, "DropBlock block size")

    @classmethod
    def aliases(cls, stage: str) -> Dict[str, Tuple[str, ...]]:
        return ALIASES

    def check(self) -> None:
        """One-line errors for values argparse cannot reject; resolves mmfewshot's metric names."""
        if self.metric_type is not None and self.metric is not None:
            raise UserError("give the head once: --metric (bl0's names) or --metric_type (mmfewshot's)")
        self.metric = self.head_metric()
        self.metric_type = None
        if self.margin is not None and self.metric not in MARGIN_METRICS and self.margin != 0:
            raise UserError(f"--margin {self.margin:g} has no effect with --metric {self.metric}; use "
                            f"cosineface or neg-softmax, or drop --margin")
        if self.protocol == "mmfs":
            for flag, value in (("--margin", self.training_margin()), ("--test_margin", self.test_margin)):
                if value > 0:
                    raise UserError(f"{flag} {value:g} is positive, which mmfewshot's NegMarginHead forbids "
                                    f"(margin <= 0); pass a margin <= 0 or --protocol bl0")
        if self.finetune_steps is not None and self.finetune_epochs is not None:
            raise UserError("give the meta-test length once: --finetune_steps or --finetune_epochs")
        check_positive(self, "finetune_steps", "finetune_epochs", "finetune_batch_size", "episode_batch",
                       "dropblock_size")
        if not 0 <= self.drop_rate < 1:
            raise UserError(f"--drop_rate must be in [0, 1) (got {self.drop_rate})")
        if self.finetune_lr <= 0 or self.finetune_wd < 0:
            raise UserError("--finetune_lr must be positive and --finetune_wd >= 0")

    def head_metric(self) -> str:
        """The head's metric (bl0's name): --metric, else mmfewshot's --metric_type, else cosineface."""
        return self.metric or (MMFS_METRICS[self.metric_type] if self.metric_type else "cosineface")

    def training_margin(self) -> float:
        """The training head's margin: --margin, else the default of the margin metrics."""
        if self.margin is None:
            return DEFAULT_MARGIN if self.head_metric() in MARGIN_METRICS else 0.0
        return self.margin

    def training_scale(self) -> float:
        """The training head's scale: --scale_factor, else the protocol's default."""
        if self.scale_factor is not None:
            return self.scale_factor
        if self.protocol == "mmfs":
            return 10.0
        return 5.0 if self.head_metric() == "neg-softmax" else 30.0

    def fit_settings(self) -> FitSettings:
        """The meta-test classifier and its optimiser."""
        return FitSettings(metric=self.head_metric(), scale=self.test_scale_factor, margin=self.test_margin,
                           lr=self.finetune_lr, weight_decay=self.finetune_wd, batch_size=self.finetune_batch_size)

    def run_name(self) -> str:
        """neg_margin_<protocol>_<metric>[_m<margin>]: runs of other margins never overwrite each other."""
        metric = self.head_metric()
        name = f"neg_margin_{self.protocol}_{metric}"
        return name + f"_m{self.training_margin():g}" if metric in MARGIN_METRICS else name


class NegMarginRules(CheckpointRules):
    # the base-training head is not needed at test time; mmfewshot also stores its meta-test
    # head (re-drawn for every episode); DropBlock's step counter only exists in models
    # trained with --drop_rate
    optional_keys = ("classifier.weight", "classifier.bias", "meta_test_head.weight",
                     "feature_extractor.dropblock_step.count")

    def from_reference_key(self, key: str, model: FewShotMethod) -> Optional[str]:
        """Official keys -> ours. bl0 (`state` of its .tar): `feature.<backbone>`, `classifier.*`;
        mmfewshot (`state_dict`): `backbone.<backbone>`, `head.weight`, `meta_test_head.weight`;
        bare backbone keys of either are accepted too (Conv-4's `layers.i.*` read as mmfewshot's).
        Backbone names go through the backbone's own map (None: an alias to drop)."""
        if key.startswith("head."):
            return "classifier." + key[len("head."):]
        if key.startswith(("classifier.", "meta_test_head.", "feature_extractor.")):
            return key  # heads, and keys that are ours already
        layout = "bl0" if key.startswith("feature.") else "mmfewshot"
        for prefix in ("feature.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        ours = model.feature_extractor.from_reference_key(key, layout)
        return None if ours is None else "feature_extractor." + ours

    def reference_settings(self, state: Mapping[str, np.ndarray], method: str) -> Dict[str, object]:
        """An official checkpoint's head: its rows (num_classes, so the converter keeps it) and
        bl0's plain `softmax` head (an nn.Linear: the only head with a bias)."""
        for key in ("classifier.weight", "head.weight", "module.classifier.weight"):
            if key in state and np.ndim(state[key]) == 2:
                settings: Dict[str, object] = {"num_classes": int(np.shape(state[key])[0])}
                if any(k.endswith("classifier.bias") for k in state):
                    settings["metric"] = "softmax"
                return settings
        return {}


class NegMargin(FewShotMethod):
    """Backbone + margin classifier (base training); a classifier fitted per episode (test)."""

    Options = NegMarginOptions
    options: NegMarginOptions
    checkpoint_rules = NegMarginRules()
    trains_episodically = False  # nothing is meta-learned: pretrain.py, then test.py
    supports_unequal_shots = True  # the support classifier is fitted on explicit labels

    def __init__(self, backbone: nn.Layer, options: NegMarginOptions, num_classes: Optional[int] = None):
        super().__init__(backbone, options, num_classes)
        self.metric = options.head_metric()
        self.flatten = options.model == "Conv4"   # Conv-4: the C,H,W-flattened map; ResNets: its average
        self.fit = options.fit_settings()
        self.eval_episode_batch = options.episode_batch or auto_episode_batch(self.feature_dim())
        if num_classes:
            self.classifier = MarginClassifier(self.feature_dim(), num_classes, self.metric,
                                               options.training_scale(), options.training_margin())

    def feature_dim(self) -> int:
        """Length of the feature vectors `extract` returns."""
        channels = self.feature_extractor.out_channels
        side = self.options.image_size // 16  # Conv-4: four 2x2 poolings
        return channels * side * side if self.flatten else channels

    @classmethod
    def image_transform(cls, options: MethodOptions, training: bool) -> Callable:
        """The protocol's pipeline: ImageNet (mmfs) or CIFAR-like (bl0) statistics, and its test resize."""
        from data.neg_margin_transforms import neg_margin_transform
        options = cast(NegMarginOptions, options)  # the method's own options (cls.Options)
        return neg_margin_transform(options.protocol, options.image_size, training)

    @classmethod
    def backbone_options(cls, options: MethodOptions, num_classes: Optional[int] = None) -> dict:
        """Conv-4 drawn as bl0/mmfewshot draw it; ResNets with bl0's dropout/DropBlock."""
        options = cast(NegMarginOptions, options)  # the method's own options (cls.Options)
        if options.model == "Conv4":
            return {"init": "kaiming"}
        if options.model in ("ResNet12", "ResNet10", "ResNet18"):
            return {"drop_rate": options.drop_rate, "dropblock_size": options.dropblock_size}
        return {}

    # ----- features ----------------------------------------------------------------------
    def extract(self, images: paddle.Tensor) -> paddle.Tensor:
        fmap = self.feature_extractor(images)
        return fmap.flatten(1) if self.flatten else fmap.mean(axis=[2, 3])

    # ----- whole-class training --------------------------------------------------------
    def pretrain_loss(self, images: paddle.Tensor, labels: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """Mean cross-entropy of the margin head over all `num_classes` rows (the margin applied)."""
        logits = self.classifier(self.extract(images), labels)
        return F.cross_entropy(logits, labels), logits

    # ----- episodes ----------------------------------------------------------------------
    def fit_steps(self, shot: int, n_support: int) -> int:
        """Optimiser steps of one meta-test fit under the protocol (or the flags)."""
        per_pass = -(-n_support // self.fit.batch_size)
        if self.options.finetune_steps is not None:
            return self.options.finetune_steps
        if self.options.finetune_epochs is not None:
            return self.options.finetune_epochs * per_pass
        if self.options.protocol == "bl0":
            return BL0_EPOCHS * per_pass
        return MMFS_STEPS[0] if shot == 1 else MMFS_STEPS[1]

    def episode_scores_batch(self, support: paddle.Tensor, query: paddle.Tensor, way: int,
                             shot: int) -> paddle.Tensor:
        """Fit a fresh classifier on each episode's support features, score its queries
        (margin-free logits; mmfewshot's probabilities are their softmax)."""
        n_episodes, n_support, dim = support.shape
        steps = self.fit_steps(shot, n_support)
        draws = [draw_episode(np.random, way, dim, n_support, self.fit, steps) for _ in range(n_episodes)]
        weight = paddle.to_tensor(np.stack([w for w, _, _ in draws]))
        # the softmax head draws a bias for every episode (draw_episode), the others none
        bias = (paddle.to_tensor(np.stack([cast(np.ndarray, b) for _, b, _ in draws])) if self.metric == "softmax"
                else None)
        batches = [np.stack([d[2][t] for d in draws]) for t in range(steps)]
        labels = np.arange(way).repeat(shot)  # class-major support
        weight, bias = fit_classifiers(support, labels, weight, bias, batches, self.fit)
        return head_logits(query, weight, self.metric, self.fit.scale, bias=bias)

    def adapt(self, support: paddle.Tensor, labels: paddle.Tensor, way: int) -> Adapted:
        """The fitted classifier of a support set of any order and any number of images per class.

        The random draws are those of one episode of `episode_scores_batch` (numpy's global RNG:
        the initial weights, then the batch orders), so a class-major support set gives the
        episode path's classifier exactly. The step count follows the protocol with the 1-shot
        schedule only when every class has a single image."""
        n_support, dim = support.shape
        counts = np.bincount(labels.numpy(), minlength=way)
        steps = self.fit_steps(1 if counts.max() == 1 else int(counts.max()), n_support)
        weight0, bias0, batches = draw_episode(np.random, way, dim, n_support, self.fit, steps)
        weight, bias = fit_classifiers(support.unsqueeze(0), labels.numpy(), paddle.to_tensor(weight0[None]),
                                       None if bias0 is None else paddle.to_tensor(bias0[None]),
                                       [b[None] for b in batches], self.fit)
        return {"weight": weight[0], **({} if bias is None else {"bias": bias[0]})}

    def adapted_scores(self, adapted: Adapted, query: paddle.Tensor) -> paddle.Tensor:
        """Margin-free logits of the fitted classifier, as `episode_scores_batch` scores queries."""
        return head_logits(query, adapted["weight"], self.metric, self.fit.scale, bias=adapted.get("bias"))

    def episode_logits(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> paddle.Tensor:
        """One episode's scores: `episode_scores_batch` on a stack of one (`episode_scores` calls this)."""
        return self.episode_scores_batch(support.unsqueeze(0), query.unsqueeze(0), way, shot)[0]


def auto_episode_batch(dim: int) -> int:
    """Default number of episodes fitted as one stack for features of `dim` values."""
    return max(1, min(MAX_EPISODE_BATCH, FIT_GROUP_ELEMENTS // dim))


def draw_episode(rng, way: int, dim: int, n_support: int, fit: FitSettings,
                 steps: int) -> Tuple[np.ndarray, Optional[np.ndarray], List[np.ndarray]]:
    """One episode's random draws, in the references' order: the initial classifier, then
    the support batches of every step."""
    weight, bias = initial_head(rng, way, dim, with_bias=fit.metric == "softmax")
    return weight, bias, support_batches(rng, n_support, fit.batch_size, steps)

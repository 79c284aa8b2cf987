"""Meta-Transfer Learning (Sun, Liu, Chua & Schiele, CVPR 2019), as the official PyTorch code
(`yaoyao-liu/meta-transfer-learning`, folder `pytorch/`).

Three phases, one class (`--method mtl` in all three entry points):
1. pretrain.py: the ResNet-25 encoder with plain convolutions plus a 2-layer MLP classifier
   (`pre_fc`) on all base classes; validated by 5-way episodes whose base learner starts from
   its fixed random initialisation and takes 100 steps of 0.01 (`preval_forward`).
2. meta_train.py: every pre-trained convolution frozen; learnt per task are the scaling and
   shifting parameters of each convolution (`mtl_weight`, `mtl_bias`), the BatchNorm affine
   parameters (Adam at --meta_lr1 = --lr) and the initialisation of the linear base learner
   (--meta_lr2). In each task the base learner takes --update_step plain gradient steps of
   --base_lr on the support cross-entropy; the loss is the query cross-entropy of the adapted
   learner. The inner loop is FIRST-ORDER (torch.autograd.grad without create_graph): the
   meta-gradient w.r.t. the initialisation is the gradient at the adapted weights, and no
   gradient reaches the support embeddings. The encoder sees the query batch first, then the
   support batch (two train-mode passes: BatchNorm statistics per batch, running statistics
   updated twice per task).
3. test.py: the same inner loop in evaluation mode, under autograd.

Episode layout: the reference orders episodes class-fastest (sample i has class i % way); this
project's samplers are class-major (sample i has class i // shot), and the labels below follow
the layout. Every loss here is a mean over samples and BatchNorm statistics ignore the order,
so both layouts give the same numbers on the same images (the parity tests feed the
reference's order; tests/methods/test_mtl.py checks the equivalence).
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, cast

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from methods.base import Adapted, CheckpointRules, FewShotMethod, MethodOptions, ParameterGroups, query_labels
from network.common import torch_linear
from network.resnet25 import WIDTHS
from utils.errors import UserError
from utils.flags import int_list
from utils.optim import trainable_parameters
from utils.options import check_positive, option

#: `preval_forward`: validation during pre-training ignores --base_lr and --update_step
PREVAL_LR, PREVAL_STEPS = 0.01, 100
PRE_FC_HIDDEN = 1000
PRE_FC_KEYS = ("pre_fc.0.weight", "pre_fc.0.bias", "pre_fc.2.weight", "pre_fc.2.bias")

#: the official defaults (`main.py`) of the shared flags, per entry point; run_pre.py and
#: run_meta.py change a few (configs/mtl/ passes those)
STAGE_DEFAULTS: Dict[str, dict] = {
    "pretrain": dict(model="ResNet25", image_size=80, optimizer="sgd", lr=0.1, momentum=0.9, wd=5e-4, gamma=0.2,
                     step_size=30, epoch=100, batch_size=128, val_n_way=5, n_shot=1, n_query=15, val_n_episode=600),
    "meta_train": dict(model="ResNet25", image_size=80, optimizer="adam", lr=1e-4, wd=0.0, gamma=0.5, step_size=10,
                       epoch=100, train_n_episode=100, train_n_way=5, val_n_way=5, n_shot=1, n_query=15,
                       val_n_episode=600),
    "test": dict(model="ResNet25", image_size=80, test_n_way=5, n_shot=1, n_query=15, test_n_episode=600),
}

#: the official flag names (main.py's argparse) per entry point -> the destinations they set
OFFICIAL_ALIASES: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "pretrain": {"--pre_max_epoch": ("epoch",), "--pre_batch_size": ("batch_size",), "--pre_lr": ("lr",),
                 "--pre_gamma": ("gamma",), "--pre_step_size": ("step_size",),
                 "--pre_custom_momentum": ("momentum",), "--pre_custom_weight_decay": ("wd",),
                 "--shot": ("n_shot",), "--way": ("val_n_way",), "--val_query": ("n_query",),
                 "--dataset_dir": ("data_path",)},
    "meta_train": {"--max_epoch": ("epoch",), "--num_batch": ("train_n_episode",), "--meta_lr1": ("lr",),
                   "--shot": ("n_shot",), "--way": ("train_n_way", "val_n_way"), "--train_query": ("n_query",),
                   "--val_query": ("val_n_query",), "--init_weights": ("pretrain_path",),
                   "--dataset_dir": ("data_path",)},
    "test": {"--shot": ("n_shot",), "--way": ("test_n_way",), "--val_query": ("n_query",),
             "--eval_weights": ("model_path",), "--dataset_dir": ("data_path",)},
}


# ----------------------------------------------------------------------------------------
# the base learner and its inner loop (used by the method and by the parity tests)
# ----------------------------------------------------------------------------------------
def linear_logits(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """x · weightᵀ + bias with the reference's [way, dim] weight layout (F.linear)."""
    return paddle.matmul(x, weight, transpose_y=True) + bias


class BaseLearner(nn.Layer):
    """The linear classifier adapted in every task: `fc1_w` [way, dim] ~ kaiming_normal_
    (fan-in, gain √2), `fc1_b` = 0 (the reference's `BaseLearner`)."""

    def __init__(self, way: int, dim: int):
        super().__init__()
        self.fc1_w = self.create_parameter([way, dim],
                                           default_initializer=nn.initializer.Normal(0.0, (2.0 / dim) ** 0.5))
        self.fc1_b = self.create_parameter([way], is_bias=True, default_initializer=nn.initializer.Constant(0.0))

    @property
    def way(self) -> int:
        return int(self.fc1_w.shape[0])

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return linear_logits(x, self.fc1_w, self.fc1_b)


def adapt(weight: paddle.Tensor, bias: paddle.Tensor, support: paddle.Tensor, labels: paddle.Tensor, lr: float,
          steps: int, on_step: Optional[Callable[[int, paddle.Tensor, List[paddle.Tensor]], None]] = None
          ) -> List[paddle.Tensor]:
    """The first-order inner loop: `steps` plain gradient steps of `lr` on the support
    cross-entropy, from (weight, bias). Returns the adapted [weight, bias].

    Each step's gradient is taken at a detached copy of the current weights, so it is a
    constant for the outer backward: the result depends on (weight, bias) through the identity
    (d result / d weight = I) and on the support not at all, as the reference's
    `torch.autograd.grad` without `create_graph`. Gradients are on even under `no_grad`
    (evaluation). `on_step(t, loss, weights)` sees the support loss at the weights before
    update t + 1.
    """
    support = support.detach()
    fast = [weight, bias]
    for step in range(steps):
        leaves = [p.detach() for p in fast]
        for leaf in leaves:
            leaf.stop_gradient = False
        with paddle.set_grad_enabled(True):
            loss = F.cross_entropy(linear_logits(support, *leaves), labels)
            grads = paddle.grad(loss, leaves)
        if on_step is not None:
            on_step(step, loss, fast)
        fast = [p - lr * g for p, g in zip(fast, grads)]
    return fast


# ----------------------------------------------------------------------------------------
# the method
# ----------------------------------------------------------------------------------------
@dataclass
class MTLOptions(MethodOptions):
    widths: str = option(",".join(map(str, WIDTHS)),
                         "ResNet-25 stage widths (stem = half the first); reduce for CPU runs, e.g. 32,64,128")
    blocks: int = option(4, "residual blocks per stage (official checkpoints from before March 2020 have 3)")
    model_type: str = option("ResNet", "accepted for the official commands", choices=("ResNet",))
    base_lr: float = option(0.01, "inner-loop learning rate of the base learner", stages=("meta_train", "test"))
    update_step: int = option(50, "inner-loop steps, in training and test (main.py 50, run_meta.py 100)",
                              stages=("meta_train", "test"))
    meta_lr2: float = option(1e-3, "learning rate of the base learner's initialisation (--lr / --meta_lr1: "
                                   "scaling/shifting and BatchNorm)", stages=("meta_train",))
    meta_label: str = option("", "accepted for the official commands (run folders are named by the settings)",
                             stages=("meta_train",))

    @classmethod
    def shared_defaults(cls, stage: str) -> Dict[str, object]:
        return STAGE_DEFAULTS.get(stage, {})

    @classmethod
    def aliases(cls, stage: str) -> Dict[str, Tuple[str, ...]]:
        return OFFICIAL_ALIASES.get(stage, {})

    def check(self) -> None:
        if self.model != "ResNet25":
            raise UserError(f"--method mtl scales and shifts the convolutions of its own encoder: use --model ResNet25 "
                            f"(got {self.model})")
        widths = self.encoder_widths()
        if len(widths) != 3 or widths[0] < 2:
            raise UserError(f"--widths {self.widths!r} must give the three stage widths, e.g. 160,320,640")
        check_positive(self, "blocks", "update_step")
        if self.base_lr <= 0 or self.meta_lr2 <= 0:
            raise UserError("--base_lr and --meta_lr2 must be positive")
        if self.stage == "meta_train" and self.val_way != self.way:
            raise UserError(f"--val_n_way {self.val_way} differs from --train_n_way {self.way}: MTL's base "
                            f"learner has one size; use the same way (the official --way)")

    def encoder_widths(self) -> Tuple[int, ...]:
        """The encoder's stage widths from --widths ("160,320,640")."""
        return int_list(self.widths, "--widths")


class MTLRules(CheckpointRules):
    optional_keys = PRE_FC_KEYS  # the pre-training classifier

    def is_meta_parameter(self, key: str) -> bool:
        """Learnt only by meta-training: the scaling/shifting parameters and the base learner."""
        return key.startswith("base_learner.") or key.rsplit(".", 1)[-1] in ("mtl_weight", "mtl_bias")

    def fixed_way(self, state: Mapping[str, Any]) -> Optional[int]:
        """The classes of the base learner whose initialisation meta-training learnt."""
        weight = state.get("base_learner.fc1_w")
        return None if weight is None else int(weight.shape[0])

    def from_reference_key(self, key: str, model: FewShotMethod) -> Optional[str]:
        """`encoder.X` (meta checkpoints) and bare encoder keys (pre-training checkpoints) ->
        `feature_extractor.X`; `base_learner.vars.N` are the reference's second names of
        fc1_w / fc1_b (dropped)."""
        if key.startswith("base_learner.vars."):
            return None
        if key.startswith("encoder."):
            return "feature_extractor." + key[len("encoder."):]
        if key.startswith(("conv1.", "bn1.", "layer")):
            return "feature_extractor." + key
        return key

    def reference_settings(self, state: Mapping[str, np.ndarray], method: str) -> Dict[str, object]:
        """Encoder size, stage and base-learner size of an official checkpoint."""
        keys = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        prefix = "encoder." if any(k.startswith("encoder.") for k in keys) else ""
        try:
            widths, blocks = encoder_shape(keys, prefix)
        except KeyError:
            raise UserError("the input is not an MTL checkpoint: it has no layer1/2/3 encoder weights") from None
        settings: Dict[str, object] = {"widths": ",".join(map(str, widths)), "blocks": blocks}
        if any(k.endswith(".mtl_weight") for k in keys):   # a meta-trained model
            if "base_learner.fc1_w" in keys:
                settings["way"] = int(np.shape(keys["base_learner.fc1_w"])[0])
                settings["stage"] = "test"
            settings["num_classes"] = None
        else:                                               # a pre-trained encoder (+ head)
            head = keys.get("pre_fc.2.weight")
            settings["num_classes"] = int(np.shape(head)[0]) if head is not None else 0
        return settings


def encoder_shape(state: Mapping[str, np.ndarray], prefix: str = "") -> Tuple[Tuple[int, ...], int]:
    """(stage widths, residual blocks per stage) of a ResNet-25 encoder state dict whose keys
    start with `prefix` (e.g. "encoder."); KeyError when a stage's first convolution is missing."""
    widths = tuple(int(np.shape(state[f"{prefix}layer{i}.0.conv1.weight"])[0]) for i in (1, 2, 3))
    blocks = sum(1 for k in state if k.startswith(f"{prefix}layer1.") and k.endswith(".conv1.weight"))
    return widths, blocks


class MTL(FewShotMethod):
    """Pre-training stage when built with `num_classes` (plain encoder, `pre_fc` head),
    meta stage otherwise (scaling/shifting encoder, trainable base-learner initialisation)."""

    Options = MTLOptions
    options: MTLOptions
    checkpoint_rules = MTLRules()
    supports_unequal_shots = True

    def __init__(self, backbone: nn.Layer, options: MTLOptions, num_classes: Optional[int] = None):
        super().__init__(backbone, options, num_classes)
        self.meta = num_classes is None
        dim = backbone.out_channels
        self.base_learner = BaseLearner(options.way, dim)
        if not self.meta:
            # pre-training optimises encoder + classifier; the base learner keeps its random
            # initialisation and only serves the validation episodes
            for p in self.base_learner.parameters():
                p.stop_gradient = True
            if num_classes:
                self.pre_fc = nn.Sequential(torch_linear(dim, PRE_FC_HIDDEN), nn.ReLU(),
                                            torch_linear(PRE_FC_HIDDEN, num_classes))

    @classmethod
    def backbone_options(cls, options: MethodOptions, num_classes: Optional[int]) -> dict:
        """Plain convolutions for pre-training, scaling/shifting ones for the meta stage."""
        options = cast(MTLOptions, options)  # the method's own options (cls.Options)
        return {"widths": options.encoder_widths(), "blocks": options.blocks, "mtl": num_classes is None}

    @classmethod
    def image_transform(cls, options: MethodOptions, training: bool) -> Callable:
        """Resize(92) -> [RandomResizedCrop(88)] -> CenterCrop(80) -> [flip], augmented only in
        pre-training (the meta phases use `train_aug=False`), sizes scaled to --image_size."""
        from data.mtl_transforms import mtl_transform
        options = cast(MTLOptions, options)  # the method's own options (cls.Options)
        return mtl_transform(options.image_size, augment=training and options.stage == "pretrain")

    # ----- features ----------------------------------------------------------------------
    def extract(self, images: paddle.Tensor) -> paddle.Tensor:
        """The pooled embedding [N, dim]: AvgPool2d(10) of the reference at 80x80, a global
        average at other sizes."""
        return self.feature_extractor(images).mean(axis=[2, 3])

    def extract_episode(self, images: paddle.Tensor, way: int, shot: int) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """Two passes, the queries first (in training, BatchNorm sees each batch on its own)."""
        n_support = way * shot
        query = self.extract(images[n_support:])
        support = self.extract(images[:n_support])
        return support, query

    # ----- episodes ----------------------------------------------------------------------
    def inner_loop_settings(self) -> Tuple[float, int]:
        """(learning rate, steps) of the base learner: `preval_forward`'s in pre-training."""
        return (self.options.base_lr, self.options.update_step) if self.meta else (PREVAL_LR, PREVAL_STEPS)

    def adapted_base_learner(self, support: paddle.Tensor, labels: paddle.Tensor) -> List[paddle.Tensor]:
        """The base learner's [weight, bias] after the inner loop on support features and labels."""
        lr, steps = self.inner_loop_settings()
        return adapt(self.base_learner.fc1_w, self.base_learner.fc1_b, support, labels, lr, steps)

    def check_way(self, way: int) -> None:
        if way != self.base_learner.way:
            raise UserError(f"this MTL model's base learner has {self.base_learner.way} classes, not {way}; use "
                            f"{self.base_learner.way}-way episodes")

    def episode_logits(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> paddle.Tensor:
        self.check_way(way)
        return linear_logits(query, *self.adapted_base_learner(support, query_labels(way, shot)))

    def adapt(self, support: paddle.Tensor, labels: paddle.Tensor, way: int) -> Adapted:
        """The base learner adapted on the support set (any number of images per class)."""
        self.check_way(way)
        weight, bias = self.adapted_base_learner(support, labels)
        return {"weight": weight, "bias": bias}

    def adapted_scores(self, adapted: Adapted, query: paddle.Tensor) -> paddle.Tensor:
        return linear_logits(query, adapted["weight"], adapted["bias"])

    def inner_loop_trace(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> np.ndarray:
        """Query accuracy (%) of the base learner at its initialisation and after each inner-loop
        step, [steps + 1], for class-major support and query features."""
        labels = query_labels(way, shot)
        targets = query_labels(way, query.shape[0] // way)
        trace = []

        def accuracy(weights) -> float:
            predictions = linear_logits(query, *weights).argmax(axis=1)
            return float((predictions == targets).astype("float32").mean()) * 100

        lr, steps = self.inner_loop_settings()
        final = adapt(self.base_learner.fc1_w, self.base_learner.fc1_b, support, labels, lr, steps,
                      on_step=lambda step, loss, weights: trace.append(accuracy(weights)))
        return np.asarray(trace + [accuracy(final)])

    # ----- whole-class training --------------------------------------------------------
    def pretrain_loss(self, images: paddle.Tensor, labels: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        logits = self.pre_fc(self.extract(images))
        return F.cross_entropy(logits, labels), logits

    # ----- optimisation ------------------------------------------------------------------
    def parameter_groups(self, lr: float) -> ParameterGroups:
        """Meta stage: the encoder's trainable parameters (SS, BatchNorm) at --lr, the base
        learner's initialisation at --meta_lr2 (two Adam groups, as trainer/meta.py); a group's
        rate is given relative to --lr."""
        if not self.meta:
            return super().parameter_groups(lr)
        return [(trainable_parameters(self.feature_extractor), 1.0),
                (list(self.base_learner.parameters()), self.options.meta_lr2 / lr)]

"""The contract every method implements: the maths of one method, nothing else.

A method is a `paddle.nn.Layer` that owns a backbone (`feature_extractor`) and answers
- `extract(images)`: backbone features in the form the method consumes;
- `episode_logits(support, query, way, shot)`: class scores [n_query, way] of the queries
  given the support features (support class-major: all shots of class 0, then class 1, ...);
- `pretrain_loss(images, labels)`: (loss, logits) over all base classes, if the method has a
  whole-class (pre-)training stage.
Optional, with defaults: `episode_loss` (episodic training: cross-entropy on `episode_logits`),
`episode_scores` (scores whose argmax is the test prediction), `episode_scores_batch` (E episodes
at once, for test-time adaptation that batches), `extract_episode` (support and query features
of a training episode), `adapt` / `adapted_scores` (the support set turned once into what the
method keeps of it — prototypes, a fitted classifier, ... — then any number of queries scored
against it: predict.py) and `parameter_groups` (learning-rate factors).

Each method also declares, as data:
- `Options`: a dataclass of its own flags (utils/options.py) — the one source of their
  defaults; the constructor takes an instance of it;
- `checkpoint_rules`: how official checkpoints map onto it (frn/checkpoint.py, frn/convert.py);
- `workflow`: "few_shot" (pretrain -> meta-train -> episodic test, frn/runs.py) or "weak_shot"
  (SimTrans's steps, frn/weakshot.py).
Adding a method is one file in this folder and one registry line in `methods/__init__.py`;
the engine never branches on a method's name.
"""
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple, Type

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from utils.optim import trainable_parameters
from utils.options import shared

#: a method's parameters grouped by learning-rate factor relative to --lr
ParameterGroups = List[Tuple[List[paddle.Tensor], float]]
#: what a method keeps of a labelled support set (see `FewShotMethod.adapt`): tensors and ints
Adapted = Dict[str, Any]


class UnequalShots(ValueError):
    """A method that needs equal shots got support classes of different sizes (`counts`)."""

    def __init__(self, counts: np.ndarray):
        super().__init__(f"support classes have {counts.min()} to {counts.max()} images; this method needs equal shots")
        self.counts = counts


@dataclass
class MethodOptions:
    """Settings every method may read; subclasses add the method's own flags with `option`.

    The fields below are not flags of the method: they come from the entry point's common
    flags (`stage` is the entry point: pretrain, meta_train, test or predict; `way` the number
    of classes of that stage's episodes)."""
    method: str = shared("", "registry name (--method)")
    model: str = shared("Conv4", "backbone (--model)")
    image_size: int = shared(84, "input size (--image_size)")
    dataset: str = shared("mini_imagenet", "dataset name (--dataset)")
    stage: str = shared("test", "entry point")
    way: int = shared(5, "classes per episode of this stage")
    val_way: int = shared(5, "classes per validation episode (training stages)")

    @classmethod
    def shared_defaults(cls, stage: str) -> Dict[str, object]:
        """The method's own defaults for common flags at an entry point (e.g. MTL's backbone)."""
        return {}

    @classmethod
    def aliases(cls, stage: str) -> Dict[str, Tuple[str, ...]]:
        """Other spellings of flags (an official codebase's): option -> destinations it sets."""
        return {}

    def check(self) -> None:
        """Reject impossible values with a one-line `UserError` (and resolve derived values)."""

    def run_name(self) -> str:
        """The method's part of run-folder names (settings that train differently differ)."""
        return self.method


class CheckpointRules:
    """How checkpoints map onto a method: keys that may be absent or extra, parameters only
    episodic training learns, and the official checkpoints' key names and implied settings.
    Used by frn/checkpoint.py and frn/convert.py only."""

    #: state-dict keys that may be absent from, or extra in, a compatible checkpoint
    optional_keys: Tuple[str, ...] = ()

    def is_meta_parameter(self, key: str) -> bool:
        """Whether `key` is learnt only by episodic training, so a pre-training checkpoint
        neither has nor sets it (MTL: scaling/shifting parameters and the base learner)."""
        return False

    def from_reference_key(self, key: str, model: "FewShotMethod") -> Optional[str]:
        """This model's name for a key of an official checkpoint (after `module.` is stripped);
        None for a key to drop (a second name of a tensor the checkpoint already holds)."""
        return key

    def fixed_way(self, state: Mapping[str, Any]) -> Optional[int]:
        """The number of classes a checkpoint's test-time head is built for, when it is fixed
        (MTL's meta-learned base learner); None: any number of support classes."""
        return None

    def reference_settings(self, state: Mapping[str, np.ndarray], method: str) -> Dict[str, object]:
        """Option values an official checkpoint implies for `--method method` (the converter
        builds the model with them; `state` has Paddle-style key names, `module.` stripped):
        "num_classes" gives the whole-class head's size (None: no head; -1: the user must give
        --num_classes)."""
        return {}


class FewShotMethod(nn.Layer):
    """Base class: a backbone plus the method's head (see the module docstring)."""

    Options: ClassVar[Type[MethodOptions]] = MethodOptions
    checkpoint_rules: ClassVar[CheckpointRules] = CheckpointRules()
    #: "few_shot" (frn/runs.py) or "weak_shot" (frn/weakshot.py)
    workflow: ClassVar[str] = "few_shot"
    #: meta_train.py may train it episodically (False: whole-class training only)
    trains_episodically: ClassVar[bool] = True
    #: evaluation may extract every image once and reuse the features across episodes
    features_are_frozen_at_test: bool = True
    #: the training loop zeroes NaN gradients before each step (the reference DeepEMD does)
    zero_nan_gradients: ClassVar[bool] = False
    #: episodes the evaluation loop hands to `episode_scores_batch` at once
    eval_episode_batch: int = 1
    #: `adapt` accepts support classes with different numbers of images
    supports_unequal_shots: ClassVar[bool] = False
    #: why `extract` + `adapted_scores` cannot run as a static graph (export.py refuses the
    #: method with this reason); empty: they are plain tensor operations
    export_blocker: ClassVar[str] = ""

    def __init__(self, backbone: nn.Layer, options: MethodOptions, num_classes: Optional[int] = None):
        super().__init__()
        self.feature_extractor = backbone
        self.options = options
        self.backbone_name = options.model
        self.num_classes = num_classes

    # ----- what the workflows ask of the class -------------------------------------------
    @classmethod
    def image_transform(cls, options: MethodOptions, training: bool) -> Optional[Callable]:
        """The method's own image pipeline, or None for the dataset's standard transforms."""
        return None

    @classmethod
    def backbone_options(cls, options: MethodOptions, num_classes: Optional[int]) -> dict:
        """Keyword arguments for the backbone's constructor (MTL: widths, plain or scaling /
        shifting convolutions by stage; Negative-Margin: dropout and initialisation)."""
        return {}

    def checkpoint_identity(self) -> dict:
        """What a checkpoint of this model must match to be loaded into it."""
        return {"family": type(self).__name__, "model": self.backbone_name}

    def forward(self, images: paddle.Tensor, labels: paddle.Tensor,
                episode: Optional[Tuple[int, int]] = None) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """Training entry (in `forward` so that `paddle.DataParallel` syncs gradients): the
        whole-class loss of a batch, or with `episode=(way, shot)` the loss of one episode."""
        if episode is None:
            return self.pretrain_loss(images, labels)
        way, shot = episode
        support, query = self.extract_episode(images, way, shot)
        return self.episode_loss(support, query, way, shot, labels)

    # ----- features ----------------------------------------------------------------------
    def extract(self, images: paddle.Tensor) -> paddle.Tensor:
        """Backbone features in the form `episode_logits` consumes (default: the dense map)."""
        return self.feature_extractor(images)

    def extract_episode(self, images: paddle.Tensor, way: int, shot: int) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """(support, query) features of one training episode batch (default: one backbone pass;
        MTL passes the queries and then the support through the backbone separately)."""
        return split_episode(self.extract(images), way, shot)

    # ----- episodes ----------------------------------------------------------------------
    def episode_logits(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> paddle.Tensor:
        """Class scores [n_query_images, way] of the queries given the support features."""
        raise NotImplementedError

    def episode_scores(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> paddle.Tensor:
        """Scores whose argmax is the test-time prediction (default: `episode_logits`)."""
        return self.episode_logits(support, query, way, shot)

    def episode_scores_batch(self, support: paddle.Tensor, query: paddle.Tensor, way: int,
                             shot: int) -> paddle.Tensor:
        """Test-time scores [E, n_query_images, way] of E episodes at once, from support
        [E, way*shot, ...] and query [E, n_query_images, ...]. The default scores one episode
        after the other; a method whose test-time adaptation batches overrides it (and raises
        `eval_episode_batch`), giving the same numbers."""
        return paddle.stack([self.episode_scores(support[e], query[e], way, shot) for e in range(support.shape[0])])

    def episode_loss(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int,
                     query_labels: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """Episodic training loss and logits (default: cross-entropy on `episode_logits`)."""
        logits = self.episode_logits(support, query, way, shot)
        return F.cross_entropy(logits, query_labels), logits

    # ----- a support set adapted once, queries scored any number of times ----------------
    def adapt(self, support: paddle.Tensor, labels: paddle.Tensor, way: int) -> Adapted:
        """What the method keeps of a labelled support set — features [n, ...], labels [n] in
        0..way-1 — computed once, test-time adaptation included (predict.py saves it). Default:
        the features in class-major order, scored later by `episode_scores`; this needs every
        class to have the same number of images (`supports_unequal_shots` False)."""
        counts = np.bincount(labels.numpy(), minlength=way)
        if counts.min() != counts.max():
            raise UnequalShots(counts)
        order = paddle.to_tensor(np.argsort(labels.numpy(), kind="stable"))  # Paddle 2.6's argsort has no stable=
        return {"support": paddle.gather(support, order), "way": way, "shot": int(counts[0])}

    def adapted_scores(self, adapted: Adapted, query: paddle.Tensor) -> paddle.Tensor:
        """Test-time scores [n_query, way] of query features against an adapted support set."""
        return self.episode_scores(adapted["support"], query, adapted["way"], adapted["shot"])

    # ----- whole-class training --------------------------------------------------------
    def pretrain_loss(self, images: paddle.Tensor, labels: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """Loss and logits over all `num_classes` base classes for a batch of images."""
        raise NotImplementedError(f"{type(self).__name__} has no whole-class (pre-)training stage")

    # ----- optimisation ------------------------------------------------------------------
    def parameter_groups(self, lr: float) -> ParameterGroups:
        """Trainable parameters grouped by learning-rate factor relative to `lr` (--lr).
        Default: one group of every parameter that records gradients."""
        return [(trainable_parameters(self), 1.0)]


def split_episode(features: paddle.Tensor, way: int, shot: int) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """Split the features of one episode batch into (support, query) along dimension 0."""
    n_support = way * shot
    return features[:n_support], features[n_support:]


def query_labels(way: int, n_query: int) -> paddle.Tensor:
    """Positional labels of class-major queries: [0]*n_query + [1]*n_query + ..."""
    return paddle.arange(way, dtype="int64").repeat_interleave(n_query)

"""The contract every few-shot method implements.

A method owns a backbone and answers four questions; the training and evaluation loops in
`frn/engine.py` only ever talk to this interface, so adding a method is one file here plus one
registry line in `methods/__init__.py`.

Episode layout everywhere: the support images come first, class-major (all shots of class 0,
then class 1, ...), then the queries, also class-major. Labels are positional: query `i`
belongs to class `i // n_query`.

Whole-class training (pretrain.py) asks the method for its data (`training_plan`: a dataset and
its batches per epoch; base.json in shuffled batches by default), lets it load what training
needs (`prepare_training`) and how to validate (`validator`; few-shot episodes by default).
Non-episodic methods (`episodic = False`, SimTrans's weak-shot stages) train on other splits,
may put per-sample fields after the label in a batch (passed on to `pretrain_loss`), validate
on a whole labelled split and are tested by `test_whole_split` instead of episodes.
"""
import argparse
from typing import Callable, List, Mapping, NamedTuple, Optional, Sized, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from data.datasets import ImageList, filelist_path
from data.samplers import ShuffledBatchSampler
from data.transforms import eval_transform, train_transform
from utils.errors import UserError
from utils.optim import trainable_parameters

#: a validation callable: () -> (score %, loss) or (score %, loss, {extra metric: value})
Validator = Callable[[], tuple]


class TrainingPlan(NamedTuple):
    """What whole-class training iterates over: `batches(epoch)` gives the batches of dataset
    indices of one epoch (a sized iterable, the same for the same epoch), and the model is built
    with `num_classes` outputs."""
    dataset: paddle.io.Dataset
    batches: Callable[[int], Sized]
    num_classes: int


class FewShotMethod(nn.Layer):
    """Base class: a backbone plus the method's head.

    Subclasses override `episode_logits` (always) and `pretrain_loss` (if the method supports
    whole-class training); everything else has a sensible default.
    """

    #: evaluation may extract every image once and reuse the features across episodes
    features_are_frozen_at_test: bool = True
    #: the training loop zeroes NaN gradients before each step (the reference DeepEMD does)
    zero_nan_gradients: bool = False
    #: episodes the evaluation loop hands to `episode_scores_batch` at once (from the feature cache)
    eval_episode_batch: int = 1
    #: meta_train.py may train it episodically (False: whole-class training only)
    trains_episodically: bool = True
    #: tested by few-shot episodes; False: trained and tested on whole labelled splits (weak-shot)
    episodic: bool = True
    #: every epoch starts with fresh optimizer state (momentum buffers), as in reference scripts
    #: that re-create their optimizer each epoch
    fresh_optimizer_each_epoch: bool = False

    def __init__(self, backbone: nn.Layer, args: argparse.Namespace, num_classes: Optional[int] = None):
        super().__init__()
        self.feature_extractor = backbone
        self.backbone_name = args.model
        self.num_classes = num_classes

    # ----- flags -------------------------------------------------------------------------
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add the method's own command-line flags (none by default)."""

    @staticmethod
    def check_arguments(args: argparse.Namespace) -> None:
        """Reject values of the method's own flags with one line (nothing to check by default)."""

    @staticmethod
    def run_name(args: argparse.Namespace) -> str:
        """The method's part of run folder names (variants that train differently differ)."""
        return args.method

    @staticmethod
    def image_transform(args: argparse.Namespace, training: bool) -> Optional[Callable]:
        """The method's own image pipeline, or None for the dataset's standard transforms."""
        return None

    @staticmethod
    def backbone_options(args: argparse.Namespace, num_classes: Optional[int]) -> dict:
        """Keyword arguments for the backbone's constructor (none by default; MTL chooses its
        encoder's widths and, by stage, plain or scaling/shifting convolutions)."""
        return {}

    def forward(self, images: paddle.Tensor, labels: paddle.Tensor, *extra: paddle.Tensor,
                episode: Optional[Tuple[int, int]] = None) -> tuple:
        """Training entry (kept in `forward` so `paddle.DataParallel` syncs gradients):
        whole-class loss (with the batch's per-sample fields `extra`, if any), or with
        `episode=(way, shot)` the episodic loss of one episode batch."""
        if episode is None:
            return self.pretrain_loss(images, labels, *extra)
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
        after the other; a method whose test-time adaptation can be batched overrides it (and
        raises `eval_episode_batch`), giving the same numbers."""
        return paddle.stack([self.episode_scores(support[e], query[e], way, shot) for e in range(support.shape[0])])

    def episode_loss(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int,
                     query_labels: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """Episodic training loss and logits (default: cross-entropy on `episode_logits`)."""
        logits = self.episode_logits(support, query, way, shot)
        return F.cross_entropy(logits, query_labels), logits

    # ----- whole-class training --------------------------------------------------------
    def pretrain_loss(self, images: paddle.Tensor, labels: paddle.Tensor, *extra: paddle.Tensor) -> tuple:
        """Loss and logits over all `num_classes` base classes for a batch of images.

        May return (loss, logits, targets) when the logits are scored against something else
        than the batch labels (e.g. SimTrans's image pairs); `extra` are the batch's per-sample
        fields after the label (e.g. SimTrans's sample weights)."""
        raise NotImplementedError(f"{type(self).__name__} has no whole-class (pre-)training stage")

    @classmethod
    def training_plan(cls, args: argparse.Namespace) -> TrainingPlan:
        """base.json in shuffled batches of --batch_size (each rank of a multi-process run takes
        every world-th batch); the model gets one output per base class."""
        base = cls.split_images(args, "base", training=True)
        if args.batch_size > len(base):
            raise UserError(f"--batch_size {args.batch_size} exceeds the {len(base)} base images; lower it")
        sampler = ShuffledBatchSampler(len(base), args.batch_size, seed=args.seed,
                                       rank=paddle.distributed.get_rank(), world=paddle.distributed.get_world_size())

        def batches(epoch: int) -> Sized:
            sampler.set_epoch(epoch)
            return sampler
        return TrainingPlan(base, batches, base.num_classes)

    @classmethod
    def split_images(cls, args: argparse.Namespace, split: str, training: bool) -> ImageList:
        """The images of `split` (a filelist of --data_path) with the method's image pipeline,
        else the dataset's standard one."""
        transform = cls.image_transform(args, training)
        if transform is None:
            transform = (train_transform if training else eval_transform)(args.dataset, args.image_size)
        return ImageList(filelist_path(args.data_path, split), transform)

    def prepare_training(self, args: argparse.Namespace) -> None:
        """Load what whole-class training needs besides the data (starting weights, helper
        networks), before anything is written. Default: nothing."""

    def validator(self, args: argparse.Namespace) -> Optional[Validator]:
        """How whole-class training is validated; None = few-shot episodes on val.json (--val)."""
        return None

    def start_epoch(self, epoch: int) -> None:
        """Called by the training loop before each epoch (e.g. to alternate between losses)."""

    @classmethod
    def test_whole_split(cls, args: argparse.Namespace) -> List[float]:
        """test.py for a non-episodic method: load --model_path, evaluate it on a whole split,
        print the result lines and return the scores."""
        raise NotImplementedError(f"{cls.__name__} is tested by episodes")

    # ----- optimisation ------------------------------------------------------------------
    def parameter_groups(self, args: argparse.Namespace) -> List[Tuple[List[paddle.Tensor], float]]:
        """Trainable parameters grouped by learning-rate factor (relative to --lr). Default: one
        group of every parameter that records gradients."""
        return [(trainable_parameters(self), 1.0)]

    # ----- checkpoints -------------------------------------------------------------------
    def checkpoint_identity(self) -> dict:
        """What a checkpoint of this model must match to be loaded into it."""
        return {"family": type(self).__name__, "model": self.backbone_name}

    @staticmethod
    def optional_checkpoint_keys() -> Tuple[str, ...]:
        """State-dict keys that may be absent from, or extra in, a compatible checkpoint
        (e.g. a pre-training head when an episodic model loads pretrained weights)."""
        return ()

    @staticmethod
    def is_meta_parameter(key: str) -> bool:
        """Whether state-dict entry `key` is learnt only by episodic training, so that a
        pre-training checkpoint neither has nor sets it (--pretrain_path leaves it at its
        initial value; MTL: scaling/shifting parameters and the base learner)."""
        return False

    @staticmethod
    def from_reference_key(key: str) -> Optional[str]:
        """This model's name for a key of the official checkpoints (after `module.` is
        stripped); the identity when the module trees already agree, None for an entry to
        drop (a second name of a tensor the checkpoint already holds)."""
        return key

    @staticmethod
    def reference_settings(state: Mapping[str, np.ndarray]) -> dict:
        """Flag values an official checkpoint implies (`python -m frn.convert` builds the model
        with them; "num_classes" selects the whole-class stage). None by default."""
        return {}


def split_episode(features: paddle.Tensor, way: int, shot: int) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """Split the features of one episode batch into (support, query) along dimension 0."""
    n_support = way * shot
    return features[:n_support], features[n_support:]


def query_labels(way: int, n_query: int) -> paddle.Tensor:
    """Positional labels of class-major queries: [0]*n_query + [1]*n_query + ..."""
    return paddle.arange(way, dtype="int64").repeat_interleave(n_query)

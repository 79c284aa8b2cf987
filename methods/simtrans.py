"""SimTrans (Chen, Niu, Liu & Zhang, NeurIPS 2021): weak-shot fine-grained classification by
similarity transfer.

Not episodic: base classes have clean labelled images, novel classes only noisy web images, and
the goal is an ordinary |novel|-way classifier tested on clean novel images. The stages of the
official pipeline, each a `--method` (its data, starting weights and evaluation are the weak-shot
workflow's, frn/weakshot.py; the maths is in methods/simtrans_parts.py):

  step 0  simtrans_naive      pretrain.py: classifier on the web images (the webly-supervised baseline)
  step 1  simtrans_simnet     pretrain.py: SimNet (backbone + pair head) on pairs of clean base
                              images, with the adversarial domain loss against pairs of web images
  step 2  simtrans_simnet     test.py: the SimNet's similarity matrix of each novel class's web
                              images, written to --save_dir (plus the denoising ROC-AUC on benchmarks)
  step 3a simtrans_main       pretrain.py: classifier with sample weights from the matrices
  step 3b simtrans_alternate  pretrain.py: continue 3a, alternating weighted cross-entropy epochs
                              with epochs adding the graph regularisation
  eval    any classifier      test.py: top-1 accuracy on the clean novel test images

Faithful to the reference where a port usually slips: pairs put the fast-varying image first;
the head's BatchNorm sees base and web pairs in one call; the adversarial term is a plain
`- beta * L_dom` (the discriminator is trained afterwards on detached features, here in the same
backward through detached discriminator weights); optimizers start fresh every epoch; weighted
cross-entropy is mean(w * CE); the graph term uses the relaxed similarity with mu = -4 and no
label mask (eye = 1); model selection and early stopping use the test accuracy, as the reference
does (flagged in the logs).
"""
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, Mapping, Optional, Tuple, Type

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from methods.base import CheckpointRules, FewShotMethod, MethodOptions, ParameterGroups
from methods.simtrans_parts import (
    HEADS,
    DomainClassifier,
    adversarial_objective,
    graph_loss_matrix,
    pair_enumeration,
    pair_targets,
    pooled,
    rectify,
    weighted_cross_entropy,
)
from utils.errors import UserError
from utils.optim import trainable_parameters
from utils.options import check_positive, internal, option

CLASSIFIER_FAMILY = "SimTransClassifier"  # naive, main and alternate share checkpoints
#: the official spellings of flags this project already has (official flag -> our destinations)
OFFICIAL_ALIASES: Dict[str, Tuple[str, ...]] = {
    "--num_epoch": ("epoch",), "--lr_interval": ("step_size",), "--lr_decay": ("gamma",),
    "--optim": ("optimizer",), "--backbone": ("model",),
    "--pretrained": ("imagenet_pretrained",)}  # (a shorter spelling of ours)
#: the reference base parser's values of this project's common flags (utils/parser.py)
REFERENCE_DEFAULTS = dict(model="ResNet50", image_size=224, lr=1e-2, wd=1e-4, gamma=0.5, step_size=20,
                          milestones=[], epoch=60, batch_size=64, no_nesterov=True, stop_th=10)


# ----------------------------------------------------------------------------------------
# options
# ----------------------------------------------------------------------------------------
@dataclass
class SimTransOptions(MethodOptions):
    """The reference's base parser: its defaults and spellings, and the flags every step has."""
    imagenet_pretrained: str = option("1", "backbone start: 1 = Paddle's ImageNet ResNet-50 weights (downloaded), "
                                           "0 = random, or a .pdparams with feature_extractor.* weights (e.g. a "
                                           "torchvision checkpoint converted by frn.convert)")
    exp_name: str = option("", "appended to the run folder name")
    weakshot: Optional[str] = internal(None, "fingerprint of the weak-shot dataset the model is trained on")

    @classmethod
    def shared_defaults(cls, stage: str) -> Dict[str, object]:
        return dict(REFERENCE_DEFAULTS)

    @classmethod
    def aliases(cls, stage: str) -> Dict[str, Tuple[str, ...]]:
        return OFFICIAL_ALIASES

    def suffix(self) -> str:
        """`_<--exp_name>` for run-folder names, or nothing."""
        return f"_{self.exp_name}" if self.exp_name else ""


#: (training splits, evaluation splits) of the naive step's --exp_type (naive/train.py): the web images of
#: the novel classes; the clean base images; or the clean oracle, every clean training image of the base and
#: novel classes (one classifier over both, base classes first) tested on both classes' test images
EXP_SPLITS: Dict[str, Tuple[Tuple[str, ...], Tuple[str, ...]]] = {
    "NoisyNovel": (("web",), ("novel",)),
    "CleanBase": (("base",), ("base_test",)),
    "CleanAll": (("base", "novel_train"), ("base_test", "novel")),
}
#: the SimNet's --source_set (the A images, whose pairs train the similarity) -> their weak-shot split
SOURCE_SPLITS = {"clean_base": "base", "noisy_base": "base_web", "noisy_novel": "web", "clean_novel": "novel_train"}


@dataclass
class WebClassifierOptions(SimTransOptions):
    exp_type: str = option("NoisyNovel", "NoisyNovel: train on the novel web images, test on the novel test images; "
                                         "CleanBase: the clean base images, tested on the base test images; CleanAll "
                                         "(the clean oracle): the clean training images of base and novel classes, "
                                         "tested on both classes' test images",
                           choices=tuple(EXP_SPLITS))

    def splits(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        """(training splits, evaluation splits) of --exp_type; several splits are joined, classes of
        the first split first (the reference's cat_datasets)."""
        return EXP_SPLITS[self.exp_type]

    def run_name(self) -> str:
        kind = "" if self.exp_type == "NoisyNovel" else f"_{self.exp_type}"
        return f"{self.method}{kind}{self.suffix()}"


@dataclass
class WeightedClassifierOptions(SimTransOptions):
    load_dir: str = option("", "the similarity folder of step 2")
    weight_type: str = option("savg1", "avgK, savgK, denT or none")
    weight_norm: str = option("one_mean", "one_mean or max_<scale>_<mu>")
    epoch_fraction: float = option(1.0, "share of each epoch's batches to train on")

    def check(self) -> None:
        if not 0 < self.epoch_fraction <= 1:
            raise UserError(f"--epoch_fraction must be in (0, 1] (got {self.epoch_fraction})")

    def splits(self) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
        return ("web",), ("novel",)

    def normalisation(self) -> str:
        """How a class's sample weights are normalised."""
        return self.weight_norm

    def batch_size(self, epoch: int, default: int) -> int:
        """The batch size of an epoch (--batch_size)."""
        return default

    def run_name(self) -> str:
        return f"{self.method}_{self.weight_type}{self.suffix()}"


@dataclass
class GraphOptions(WeightedClassifierOptions):
    weight_type: str = option("avg1", "avgK, savgK, denT or none")
    alpha: float = option(0.1, "weight of the graph regularisation")
    c0g1: int = option(1, "epochs with epoch % 2 == c0g1 use cross-entropy only", choices=(0, 1))
    cls: int = option(8, "batch size of the cross-entropy epochs")
    gcn: int = option(128, "batch size of the graph epochs")
    mu: float = option(-4.0, "relaxation of the similarities (0: none)")
    eye: float = option(1.0, "1: every pair in the graph; 0: same-label pairs only")
    reg: str = option("GCN", "squared distances (GCN), or cosine mimicking (COS)", choices=("GCN", "COS"))
    similarity_net: str = option("", "the SimNet of step 1 (best_model.pdparams)")

    def check(self) -> None:
        super().check()
        check_positive(self, "cls", "gcn")

    def normalisation(self) -> str:
        return "one_mean"  # alternate_with_GCN always divides by the mean

    def graph_epoch(self, epoch: int) -> bool:
        """Whether `epoch` adds the graph term (the others are cross-entropy only)."""
        return epoch % 2 != self.c0g1

    def batch_size(self, epoch: int, default: int) -> int:
        return self.gcn if self.graph_epoch(epoch) else self.cls

    def run_name(self) -> str:
        return f"{self.method}_{self.reg}_a{self.alpha:g}_{self.weight_type}{self.suffix()}"


@dataclass
class SimNetOptions(SimTransOptions):
    """ad_similarity/train_GAN_similarity.py and GAN_noise_detection.py flags."""
    batch_class_num: int = option(20, "classes per base-image batch")
    batch_class_num_B: int = option(1, "classes per web-image batch")
    target_domain: str = option("novel_train", "the B images: the novel web images, or (transductive) the novel "
                                               "test images", choices=("novel_train", "novel_test"))
    beta: float = option(0.0, "weight of the adversarial term -beta * L_domain")
    domain_lr: float = option(0.01, "the discriminator's learning rate")
    head_type: str = option("2", "SimNet head (the official scripts use 4)", choices=tuple(sorted(HEADS)))
    similarity_weighted: float = option(0.0, "cross-entropy weight of similar pairs (0: none; <0: --batch_class_num)")
    domain_bn: int = option(1, "LayerNorm in the discriminator", choices=(0, 1))
    source_set: str = option("clean_base", "the A images, whose pairs train the similarity: the clean base images "
                                           "(the method), or as ablations the web images of the base classes, the web "
                                           "images of the novel classes, their clean training images",
                             choices=tuple(SOURCE_SPLITS))
    target_set: str = option("noisy_novel", "evaluation target", choices=("noisy_novel",))
    noisy_frac: float = option(0.0, "noise fused into the pair batches: each epoch int(F x their number) extra batches "
                                    "of web images, one of each of --batch_size distinct novel classes (every pair "
                                    "but the self-pairs dissimilar), added to the A batches and to the B batches "
                                    "(0: off; F in [0, 1))")
    similarity_pretrained: str = option("", "backbone start: the step-0 run's best_model.pdparams, 'imagenet' "
                                            "or 'none'")
    f1_batches: int = option(10, "evaluation batches of 10 classes x 10 images")
    save_dir: str = option("", "step 2: the similarity folder (default: <SimNet run>/similarity)")

    @classmethod
    def shared_defaults(cls, stage: str) -> Dict[str, object]:
        return {**REFERENCE_DEFAULTS, "stop_th": 0}  # the SimNet script has no early stop

    @classmethod
    def aliases(cls, stage: str) -> Dict[str, Tuple[str, ...]]:
        return {**OFFICIAL_ALIASES, "--similarity_net": ("model_path",)}  # step 2's official name (test.py)

    def check(self) -> None:
        check_positive(self, "batch_class_num", "batch_class_num_B", "f1_batches")
        if self.domain_lr <= 0:
            raise UserError(f"--domain_lr must be positive (got {self.domain_lr})")
        if not 0.0 <= self.noisy_frac < 1.0:
            raise UserError(f"--noisy_frac must be in [0, 1) (got {self.noisy_frac}): the share of extra noisy batches")

    def source_split(self) -> str:
        """The weak-shot split of the A images (--source_set)."""
        return SOURCE_SPLITS[self.source_set]

    def similar_pair_weight(self) -> float:
        """Cross-entropy weight of "similar" pairs: 0 = unweighted, < 0 = --batch_class_num."""
        return self.similarity_weighted if self.similarity_weighted >= 0 else float(self.batch_class_num)

    def run_name(self) -> str:
        source = "" if self.source_set == "clean_base" else f"_{self.source_set}"
        noise = f"_nf{self.noisy_frac:g}" if self.noisy_frac else ""
        return f"simtrans_simnet_h{self.head_type}_b{self.beta:g}{source}{noise}{self.suffix()}"


# ----------------------------------------------------------------------------------------
# checkpoints of the reference
# ----------------------------------------------------------------------------------------
class ClassifierRules(CheckpointRules):
    def from_reference_key(self, key: str, model: FewShotMethod) -> Optional[str]:
        """Reference classifiers: `conv1.weight` (torchvision), `module.conv1.weight`
        (nn.DataParallel) or `module.backbone.conv1.weight` (the GCN wrapper); `fc.*` is the head."""
        key = ("." + key).replace(".module.", ".")[1:]
        if key.startswith("backbone."):
            key = key[len("backbone."):]
        return key if key.startswith(("fc.", "feature_extractor.")) else "feature_extractor." + key

    def reference_settings(self, state: Mapping[str, np.ndarray], method: str) -> Dict[str, object]:
        """A reference classifier's class count, from its `fc.weight` [classes, features]."""
        fc = next((v for k, v in state.items() if k.split("module.")[-1].split("backbone.")[-1] == "fc.weight"), None)
        return {} if fc is None else {"num_classes": int(np.shape(fc)[0])}


class SimNetRules(CheckpointRules):
    #: the released SimNet files carry no discriminator (it is saved apart)
    optional_keys = tuple(f"domain_classifier.{k}" for k in ("fc.weight", "fc.bias", "bn.weight", "bn.bias",
                                                             "fc2.weight", "fc2.bias"))

    def from_reference_key(self, key: str, model: FewShotMethod) -> Optional[str]:
        """`backbone.module.resnet.conv1.weight` -> `feature_extractor.conv1.weight`,
        `similarity_head.module.fc1.0.weight` -> `similarity_head.fc1.0.weight` (the two parts
        are wrapped in nn.DataParallel separately)."""
        key = ("." + key).replace(".module.", ".")[1:]
        for prefix in ("backbone.resnet.", "backbone."):
            if key.startswith(prefix):
                return "feature_extractor." + key[len(prefix):]
        return key

    def reference_settings(self, state: Mapping[str, np.ndarray], method: str) -> Dict[str, object]:
        """The head of a reference SimNet state: 4 with `fc1..fc4`, 2 with `fc`/`fc2`."""
        head = "4" if any(".fc4." in f".{k}" for k in state if "similarity_head" in k) else "2"
        return {"head_type": head, "domain_bn": 1}


# ----------------------------------------------------------------------------------------
# the stages
# ----------------------------------------------------------------------------------------
class SimTransStage(FewShotMethod):
    """What every SimTrans step shares: whole-split data and the weak-shot workflow, the
    reference's image pipelines, and the weak-shot dataset's fingerprint in its checkpoints.
    Its training forward takes a batch's per-image weights (or None) besides the labels and
    returns (loss, logits, the labels those logits are scored against)."""

    options: SimTransOptions
    workflow = "weak_shot"
    trains_episodically = False

    @classmethod
    def image_transform(cls, options: MethodOptions, training: bool) -> Callable:
        from data.simtrans_transforms import simtrans_transform
        return simtrans_transform(options.image_size, training)

    def checkpoint_identity(self) -> dict:
        return {**super().checkpoint_identity(), "weakshot": self.options.weakshot}

    def start_epoch(self, epoch: int) -> None:
        """Called by the weak-shot workflow before each epoch (the graph step alternates)."""

    def forward(self, images: paddle.Tensor, labels: paddle.Tensor,  # type: ignore[override]
                weights: Optional[paddle.Tensor] = None) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        raise NotImplementedError


class WebClassifier(SimTransStage):
    """Step 0, naive/train.py: a classifier of the novel classes trained on their web images."""

    Options: ClassVar[Type[SimTransOptions]] = WebClassifierOptions  # subclasses declare their own
    checkpoint_rules = ClassifierRules()

    def __init__(self, backbone: nn.Layer, options: SimTransOptions, num_classes: Optional[int] = None):
        super().__init__(backbone, options, num_classes)
        if num_classes:
            self.fc = nn.Linear(backbone.out_channels, num_classes)

    def checkpoint_identity(self) -> dict:
        return {**super().checkpoint_identity(), "family": CLASSIFIER_FAMILY}

    def extract(self, images: paddle.Tensor) -> paddle.Tensor:
        return pooled(self.feature_extractor, images)

    def classify(self, images: paddle.Tensor) -> paddle.Tensor:
        """Class logits of a batch of images."""
        return self.fc(self.extract(images))

    def forward(self, images: paddle.Tensor, labels: paddle.Tensor,  # type: ignore[override]
                weights: Optional[paddle.Tensor] = None) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        """Cross-entropy, weighted per image when the batch carries sample weights (step 3)."""
        logits = self.classify(images)
        return weighted_cross_entropy(logits, labels, weights), logits, labels


class WeightedClassifier(WebClassifier):
    """Step 3a, GCN_reg/train_main.py: the web classifier with per-image weights from the
    similarity matrices of step 2 (loss mean(w * CE))."""

    Options = WeightedClassifierOptions


class GraphRegularisedClassifier(WeightedClassifier):
    """Step 3b, GCN_reg/alternate_with_GCN.py: continue step 3a (--pretrain_path), odd epochs
    weighted cross-entropy in batches of --cls, even epochs (--c0g1 1) weighted cross-entropy plus
    alpha times the graph regularisation in batches of --gcn, with the SimNet's similarities of
    the batch (eval mode, same augmented images) as the graph."""

    Options = GraphOptions
    options: GraphOptions

    def __init__(self, backbone: nn.Layer, options: GraphOptions, num_classes: Optional[int] = None):
        super().__init__(backbone, options, num_classes)
        self.graph_epoch = False
        self.helpers: Dict[str, "SimNet"] = {}  # a plain dict, not a sublayer: neither trained nor saved

    def use_similarity_net(self, simnet: "SimNet") -> None:
        """The trained SimNet whose similarities form each batch's graph."""
        self.helpers["simnet"] = simnet

    def start_epoch(self, epoch: int) -> None:
        self.graph_epoch = self.options.graph_epoch(epoch)

    def graph_term(self, images: paddle.Tensor, labels: paddle.Tensor, features: paddle.Tensor) -> paddle.Tensor:
        """alpha-free graph loss of a batch: the SimNet's affinity of the same images, rectified."""
        simnet = self.helpers["simnet"]
        simnet.eval()
        with paddle.no_grad():
            affinity = F.softmax(simnet.pair_logits(images), axis=1)[:, 1].reshape([images.shape[0], -1])
        return graph_loss_matrix(features, rectify(affinity, labels, self.options.mu, self.options.eye),
                                 self.options.reg).mean()

    def forward(self, images: paddle.Tensor, labels: paddle.Tensor,  # type: ignore[override]
                weights: Optional[paddle.Tensor] = None) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        features = self.extract(images)
        logits = self.fc(features)
        loss = weighted_cross_entropy(logits, labels, weights)
        if self.graph_epoch:
            loss = loss + self.options.alpha * self.graph_term(images, labels, features)
        return loss, logits, labels


class SimNet(SimTransStage):
    """Step 1 (pretrain.py) and step 2 (test.py): the similarity net and its domain discriminator."""

    Options = SimNetOptions
    options: SimNetOptions
    checkpoint_rules = SimNetRules()

    def __init__(self, backbone: nn.Layer, options: SimNetOptions, num_classes: Optional[int] = None):
        super().__init__(backbone, options, num_classes)
        self.similarity_head = HEADS[options.head_type](backbone.out_channels)
        self.domain_classifier = DomainClassifier(self.similarity_head.diff_dim, options.domain_bn == 1)

    def checkpoint_identity(self) -> dict:
        return {**super().checkpoint_identity(), "head_type": self.options.head_type,
                "domain_bn": self.options.domain_bn}

    def parameter_groups(self, lr: float) -> ParameterGroups:
        """The SimNet at --lr, the discriminator at --domain_lr (the reference's two optimisers;
        both halve on the same schedule, so their ratio holds)."""
        discriminator = [p for p in self.domain_classifier.parameters() if not p.stop_gradient]
        simnet = [p for p in trainable_parameters(self) if all(p is not q for q in discriminator)]
        return [(simnet, 1.0), (discriminator, self.options.domain_lr / lr)]

    def extract(self, images: paddle.Tensor) -> paddle.Tensor:
        return pooled(self.feature_extractor, images)

    def pair_logits(self, images: paddle.Tensor) -> paddle.Tensor:
        """The reference's eval-mode `simnet(images)`: logits of all B*B ordered pairs."""
        return self.similarity_head(pair_enumeration(self.extract(images)))[0]

    def training_terms(self, images: paddle.Tensor, labels: paddle.Tensor) -> Dict[str, paddle.Tensor]:
        """One iteration of train_GAN_similarity.train on a batch of B base images then B web images:
        backbone and head each called once on both domains; classification of the base pairs; the
        discriminator's logits of all pairs' diff features once through detached weights (the SimNet
        update) and once on detached features (the discriminator update)."""
        b = images.shape[0] // 2
        features = self.extract(images)
        pairs = paddle.concat([pair_enumeration(features[:b]), pair_enumeration(features[b:])])
        logits, diff = self.similarity_head(pairs)
        n_pairs = b * b
        targets = pair_targets(labels[:b])
        similar = self.options.similar_pair_weight()
        weight = paddle.to_tensor([1.0, similar], dtype=logits.dtype) if similar else None
        domain_targets = paddle.concat([paddle.zeros([n_pairs], "int64"), paddle.ones([n_pairs], "int64")])
        generator_logits = self.domain_classifier(diff, frozen=True)
        discriminator_logits = self.domain_classifier(diff.detach())
        terms = {"features": features, "pairs": pairs, "logits": logits, "diff": diff, "targets": targets,
                 "domain_targets": domain_targets, "generator_logits": generator_logits,
                 "discriminator_logits": discriminator_logits,
                 "cls_loss": F.cross_entropy(logits[:n_pairs], targets, weight=weight),
                 "domain_loss_generator": F.cross_entropy(generator_logits, domain_targets),
                 "domain_loss_discriminator": F.cross_entropy(discriminator_logits, domain_targets)}
        terms["total_loss"] = terms["cls_loss"] - self.options.beta * terms["domain_loss_generator"]
        return terms

    def forward(self, images: paddle.Tensor, labels: paddle.Tensor,  # type: ignore[override]
                weights: Optional[paddle.Tensor] = None) -> Tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        """(objective, base-pair logits, their targets): see `adversarial_objective`."""
        terms = self.training_terms(images, labels)
        n_pairs = terms["targets"].shape[0]
        return adversarial_objective(terms), terms["logits"][:n_pairs], terms["targets"]

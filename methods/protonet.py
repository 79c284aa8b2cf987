"""Prototypical Networks (Snell, Swersky & Zemel, NeurIPS 2017) as the FRN repository's baseline
(`models/Proto.py`): this file is the whole method.

Embedding: the Conv-4 map flattened, or the ResNet map average-pooled. Prototype = mean support
embedding; logits = -squared distance / dim * scale, with `scale` learnable (init 1).
Whole-class pre-training (not in the FRN repository) uses a linear classifier on the same
embedding, as the DeepBDC/CloserLook family does.
"""
from typing import Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from methods.base import Adapted, CheckpointRules, FewShotMethod, MethodOptions


class ProtoNetRules(CheckpointRules):
    optional_keys = ("classifier.weight", "classifier.bias")  # the pre-training head


class ProtoNet(FewShotMethod):
    checkpoint_rules = ProtoNetRules()
    supports_unequal_shots = True

    def __init__(self, backbone: nn.Layer, options: MethodOptions, num_classes: Optional[int] = None):
        super().__init__(backbone, options, num_classes)
        self.flatten = options.model == "Conv4"
        self.scale = self.create_parameter([1], default_initializer=nn.initializer.Constant(1.0))
        if num_classes is not None:
            side = options.image_size // 16  # Conv-4: four 2x2 poolings
            dim = backbone.out_channels * (side * side if self.flatten else 1)
            self.classifier = nn.Linear(dim, num_classes)

    def extract(self, images: paddle.Tensor) -> paddle.Tensor:
        fmap = self.feature_extractor(images)
        return fmap.flatten(1) if self.flatten else fmap.mean(axis=[2, 3])

    def episode_logits(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> paddle.Tensor:
        prototypes = support.reshape([way, shot, -1]).mean(axis=1)
        return self.prototype_logits(prototypes, query)

    def prototype_logits(self, prototypes: paddle.Tensor, query: paddle.Tensor) -> paddle.Tensor:
        """-squared distance / dim * scale of every query [n, dim] to every prototype [way, dim]."""
        # paddle.square: correctly rounded (** 2 is not always), and faster forward and backward
        sq_dist = paddle.square(query.unsqueeze(1) - prototypes.unsqueeze(0)).sum(axis=2)
        return -sq_dist / query.shape[-1] * self.scale

    def adapt(self, support: paddle.Tensor, labels: paddle.Tensor, way: int) -> Adapted:
        """The prototypes: each class's mean support embedding (any number of shots)."""
        one_hot = F.one_hot(labels, way).astype(support.dtype)                  # [n, way]
        prototypes = paddle.matmul(one_hot, support, transpose_x=True) / one_hot.sum(0).unsqueeze(1)
        return {"prototypes": prototypes}

    def adapted_scores(self, adapted: Adapted, query: paddle.Tensor) -> paddle.Tensor:
        return self.prototype_logits(adapted["prototypes"], query)

    def pretrain_loss(self, images: paddle.Tensor, labels: paddle.Tensor):
        logits = self.classifier(self.extract(images))
        return F.cross_entropy(logits, labels), logits

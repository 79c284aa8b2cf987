"""Prototypical Networks as in the FRN repository's baseline (`models/Proto.py`).

Embedding: the Conv-4 map flattened, or the ResNet-12 map average-pooled. Prototype = mean
support embedding; logits = -squared distance / dim * scale, with `scale` learnable (init 1).
Whole-class pre-training (not in the FRN repo) uses a linear classifier on the same embedding,
as the DeepBDC/CloserLook family does.
"""
import paddle.nn as nn
import paddle.nn.functional as F

from methods.base import FewShotMethod


class ProtoNet(FewShotMethod):
    def __init__(self, backbone, args, num_classes=None):
        super().__init__(backbone, args, num_classes)
        self.flatten = args.model == "Conv4"
        self.scale = self.create_parameter([1], default_initializer=nn.initializer.Constant(1.0))
        if num_classes is not None:
            self.classifier = nn.Linear(self._embedding_dim(args), num_classes)

    def _embedding_dim(self, args) -> int:
        channels = self.feature_extractor.out_channels
        if not self.flatten:
            return channels
        side = args.image_size // 16  # four 2x2 poolings
        return channels * side * side

    def extract(self, images):
        fmap = self.feature_extractor(images)
        return fmap.flatten(1) if self.flatten else fmap.mean(axis=[2, 3])

    def episode_logits(self, support, query, way, shot):
        prototypes = support.reshape([way, shot, -1]).mean(axis=1)
        sq_dist = ((query.unsqueeze(1) - prototypes.unsqueeze(0)) ** 2).sum(axis=2)
        return -sq_dist / support.shape[-1] * self.scale

    def pretrain_loss(self, images, labels):
        logits = self.classifier(self.extract(images))
        return F.cross_entropy(logits, labels), logits

    @staticmethod
    def optional_checkpoint_keys():
        return ("classifier.weight", "classifier.bias")

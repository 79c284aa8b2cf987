"""Feature Map Reconstruction Networks (Wertheimer, Tang & Hariharan, CVPR 2021).

Port of the official `models/FRN.py` and `trainers/frn_train.py` (spec `frn.md` §3-5):
each query position is reconstructed from a class's support positions by ridge regression,
and the class whose reconstruction is closest wins.

One class, two stages:
- `stl_frn` (pretrain.py): every base class owns a learned pool `cat_mat[c]` of `r` feature
  vectors that plays the support set; alpha/beta are frozen at 0.
- `meta_frn` (meta_train.py/test.py): episodic, alpha/beta learned, plus the auxiliary loss
  that decorrelates the support sets of different classes.
"""
import math
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from methods.base import Adapted, CheckpointRules, FewShotMethod, MethodOptions

AUX_LOSS_WEIGHT = 0.03


def reconstruct(query: paddle.Tensor, support: paddle.Tensor, alpha: paddle.Tensor,
                beta: paddle.Tensor) -> paddle.Tensor:
    """Ridge-regression reconstruction of every query vector from every class's support.

    query [m, d] (one row per query position), support [way, n, d] (n = shot * r rows per class).
    Returns [way, m, d], using the reference's d x d form: Q_bar = rho * Q (G + lam I)^-1 G with
    G = S^T S, lam = n/d * exp(alpha) + 1e-6, rho = exp(beta).
    """
    n, d = support.shape[1], support.shape[2]
    lam = n / d * paddle.exp(alpha) + 1e-6
    rho = paddle.exp(beta)
    gram = paddle.matmul(support, support, transpose_x=True)             # [way, d, d]
    eye = paddle.eye(d, dtype=support.dtype).unsqueeze(0)
    # rho is folded into the small [way, d, d] matrix rather than multiplied onto the
    # [way, m, d] reconstruction: same value, but the gradient w.r.t. beta is then a sum over
    # way*d*d terms instead of way*m*d, which Paddle's float32 reduction gets right (the
    # unfolded form misses the 5-shot reference gradient by 4%).
    hat = paddle.matmul(paddle.linalg.inv(gram + lam * eye), gram) * rho  # [way, d, d]
    return paddle.matmul(query.unsqueeze(0), hat)                          # [way, m, d]


def reconstruction_distance(query: paddle.Tensor, support: paddle.Tensor, alpha: paddle.Tensor,
                            beta: paddle.Tensor) -> paddle.Tensor:
    """Squared reconstruction error [m, way] of every query vector under every class."""
    recon = reconstruct(query, support, alpha, beta)
    return ((recon - query.unsqueeze(0)) ** 2).sum(axis=2).transpose([1, 0])


def aux_loss(support: paddle.Tensor) -> paddle.Tensor:
    """Auxiliary loss: 0.03 * sum over class pairs i > j of ||S_i S_j^T||_F^2, S normalised by
    the Frobenius norm of the whole support tensor (one scalar, spec §3.5)."""
    way = support.shape[0]
    s = support / paddle.linalg.norm(support.flatten())
    pairs = paddle.einsum("ind,jmd->ijnm", s, s)
    sq_norms = (pairs ** 2).sum(axis=[2, 3])                              # [way, way]
    lower = paddle.tril(paddle.ones([way, way], dtype=s.dtype), diagonal=-1)
    return (sq_norms * lower).sum() * AUX_LOSS_WEIGHT


class FRNRules(CheckpointRules):
    optional_keys = ("cat_mat",)  # the pre-training class pools; episodic models have none

    def reference_settings(self, state: Mapping[str, np.ndarray], method: str) -> Dict[str, object]:
        """stl_frn: the number of base classes, read from the class pools `cat_mat` [C, r, d]."""
        if method != "stl_frn":
            return {}
        cat_mat = state.get("cat_mat")
        return {"num_classes": int(np.shape(cat_mat)[0]) if cat_mat is not None and np.ndim(cat_mat) == 3 else -1}


class FRN(FewShotMethod):
    checkpoint_rules = FRNRules()
    supports_unequal_shots = True

    def __init__(self, backbone: nn.Layer, options: MethodOptions, num_classes: Optional[int] = None):
        super().__init__(backbone, options, num_classes)
        channels = backbone.out_channels
        # The reference divides ResNet-12 features by sqrt(640) before the head; Conv-4 not.
        self.feature_divisor = math.sqrt(channels) if options.model == "ResNet12" else 1.0
        self.scale = self.create_parameter([1], default_initializer=nn.initializer.Constant(1.0))
        self.r = self.create_parameter([2], default_initializer=nn.initializer.Constant(0.0))
        if num_classes is not None:
            # Pre-training: alpha/beta stay 0 (no gradient, hence no weight decay either).
            self.r.stop_gradient = True
            side = options.image_size // 16
            self.cat_mat = self.create_parameter([num_classes, side * side, channels],
                                                 default_initializer=nn.initializer.Normal(0.0, 1.0))

    def extract(self, images: paddle.Tensor) -> paddle.Tensor:
        """Backbone map -> [N, r, d] position vectors (row-major over h, w)."""
        return self.to_positions(self.feature_extractor(images))

    def to_positions(self, fmap: paddle.Tensor) -> paddle.Tensor:
        """[N, d, h, w] backbone map -> [N, h*w, d], rescaled as the reference does."""
        fmap = fmap / self.feature_divisor
        return fmap.flatten(2).transpose([0, 2, 1])

    def neg_l2_dist(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> paddle.Tensor:
        """[n_query, way] minus the mean (over positions) squared reconstruction error."""
        r, d = query.shape[1], query.shape[2]
        support = support.reshape([way, shot * r, d])
        dist = reconstruction_distance(query.reshape([-1, d]), support, self.r[0], self.r[1])
        return -dist.reshape([-1, r, way]).mean(axis=1)

    def episode_logits(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> paddle.Tensor:
        return self.neg_l2_dist(support, query, way, shot) * self.scale

    def episode_scores(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> paddle.Tensor:
        # The reference's meta_test ranks classes by the distance alone: a learned scale
        # (even a negative one) never changes a test prediction.
        return self.neg_l2_dist(support, query, way, shot)

    def adapt(self, support: paddle.Tensor, labels: paddle.Tensor, way: int) -> Adapted:
        """Each class's pool of support positions [shots * r, d] (classes may differ in shots)."""
        d = support.shape[-1]
        labels = labels.numpy()
        pools = {f"pool{c}": support[paddle.to_tensor((labels == c).nonzero()[0])].reshape([-1, d])
                 for c in range(way)}
        return {**pools, "way": way}

    def adapted_scores(self, adapted: Adapted, query: paddle.Tensor) -> paddle.Tensor:
        """-mean squared reconstruction error of each query under each class's pool."""
        r, d = query.shape[1], query.shape[2]
        flat = query.reshape([-1, d])
        dist = [reconstruction_distance(flat, adapted[f"pool{c}"].unsqueeze(0), self.r[0], self.r[1])
                for c in range(adapted["way"])]
        return -paddle.concat(dist, axis=1).reshape([-1, r, adapted["way"]]).mean(axis=1)

    def episode_loss(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int,
                     query_labels: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        logits = self.episode_logits(support, query, way, shot)
        support_sets = support.reshape([way, -1, support.shape[-1]])
        return F.cross_entropy(logits, query_labels) + aux_loss(support_sets), logits

    def pretrain_loss(self, images: paddle.Tensor, labels: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        positions = self.extract(images)
        b, r, d = positions.shape
        dist = reconstruction_distance(positions.reshape([-1, d]), self.cat_mat, self.r[0], self.r[1])
        logits = -dist.reshape([b, r, -1]).mean(axis=1) * self.scale
        return F.cross_entropy(logits, labels), logits

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


#: dtype of the d x d (or n x n) ridge algebra, whatever the dtype of the features (see below)
RIDGE_DTYPE = "float64"


def reconstruction_matrix(support: paddle.Tensor, alpha: paddle.Tensor, beta: paddle.Tensor) -> paddle.Tensor:
    """rho * (G + lam I)^-1 G for every class, [way, d, d], in float64 (spec §3.3).

    support [way, n, d] (n = shot * r rows per class), G = S^T S, lam = n/d * exp(alpha) + 1e-6,
    rho = exp(beta). A query row q is reconstructed as q @ (this matrix).

    Why float64: G + lam I is badly conditioned for Conv-4 features (condition numbers in the
    thousands), and in float32 its inverse -- and (G + lam I)^-1 G, a product of entries of
    size ||G|| that cancel to O(1) -- carries a relative error of about eps32 * cond ~ 1e-4.
    That error dominates the reference's float32 results (and did ours). The matrix is small
    (way * d^2 entries) and its inputs are exact in float64, so computing it there costs
    little and leaves only ordinary float32 rounding in the large [queries x d] products; the
    gradients flow back through the same float64 algebra.

    The matrix is the same in exact arithmetic whichever side is inverted; with n < d (1-shot,
    ResNet-12's d = 640, pre-training's 25-row class matrices) the n x n kernel form
    S^T (S S^T + lam I_n)^-1 S is the cheaper one, otherwise the reference's d x d form. In
    float64 both are exact to far below float32 resolution (eps64 * cond ~ 1e-11).
    """
    n, d = support.shape[1], support.shape[2]
    s = support.astype(RIDGE_DTYPE)
    lam = n / d * paddle.exp(alpha.astype(RIDGE_DTYPE)) + 1e-6
    rho = paddle.exp(beta.astype(RIDGE_DTYPE))
    if n < d:
        kernel = paddle.matmul(s, s, transpose_y=True) + lam * paddle.eye(n, dtype=RIDGE_DTYPE)
        hat = paddle.matmul(s, paddle.linalg.solve(kernel, s), transpose_x=True)
    else:
        gram = paddle.matmul(s, s, transpose_x=True)
        hat = paddle.linalg.solve(gram + lam * paddle.eye(d, dtype=RIDGE_DTYPE), gram)
    return rho * hat


def _apply_per_class(query: paddle.Tensor, matrices: paddle.Tensor) -> paddle.Tensor:
    """query [m, d] times every class's d x d matrix: [m, way, d], as one [m, d] x [d, way*d] product."""
    way, d = matrices.shape[0], matrices.shape[1]
    stacked = matrices.astype(query.dtype).transpose([1, 0, 2]).reshape([d, way * d])
    return paddle.matmul(query, stacked).reshape([-1, way, d])


def reconstruct(query: paddle.Tensor, support: paddle.Tensor, alpha: paddle.Tensor,
                beta: paddle.Tensor) -> paddle.Tensor:
    """Ridge-regression reconstruction of every query vector from every class's support.

    query [m, d] (one row per query position), support [way, n, d]. Returns [way, m, d]:
    Q_bar = rho * Q (G + lam I)^-1 G (spec §3.3), in the dtype of the query.
    """
    return _apply_per_class(query, reconstruction_matrix(support, alpha, beta)).transpose([1, 0, 2])


def residual_maps(support: paddle.Tensor, alpha: paddle.Tensor, beta: paddle.Tensor) -> paddle.Tensor:
    """rho H - I of every class, [way, d, d], in float64: Q (rho H - I) = Q_bar - Q."""
    d = support.shape[2]
    return reconstruction_matrix(support, alpha, beta) - paddle.eye(d, dtype=RIDGE_DTYPE)


def distance_under(query: paddle.Tensor, maps: paddle.Tensor) -> paddle.Tensor:
    """Squared reconstruction error [m, way] of every query vector [m, d] under the classes'
    residual maps [way, d, d] (rounded once to the query's dtype)."""
    # paddle.square: same values as ** 2, several times faster forward and backward on CPU
    return paddle.square(_apply_per_class(query, maps)).sum(axis=2)


def reconstruction_distance(query: paddle.Tensor, support: paddle.Tensor, alpha: paddle.Tensor,
                            beta: paddle.Tensor) -> paddle.Tensor:
    """Squared reconstruction error [m, way] of every query vector under every class.

    The residual Q_bar - Q = Q (rho H - I) is formed with rho H - I taken in float64 and
    rounded once, so it carries no float32 cancellation between Q_bar and Q.
    """
    return distance_under(query, residual_maps(support, alpha, beta))


def aux_loss(support: paddle.Tensor) -> paddle.Tensor:
    """Auxiliary loss: 0.03 * sum over class pairs i > j of ||S_i S_j^T||_F^2, S normalised by
    the Frobenius norm of the whole support tensor (one scalar, spec §3.5)."""
    way = support.shape[0]
    s = support / paddle.linalg.norm(support.flatten())
    pairs = paddle.einsum("ind,jmd->ijnm", s, s)
    sq_norms = paddle.square(pairs).sum(axis=[2, 3])  # [way, way]; square: correctly rounded, faster than ** 2
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
        """Each class's residual map rho H - I [d, d], from its pool of support positions
        (shots * r rows; classes may differ in shots), computed once and rounded to the
        features' dtype exactly where the episode path rounds it: a query batch then costs one
        matrix product, no solve (ResNet-12, 5 classes, 64 queries: 0.09 instead of 0.16 CPU-s),
        and an exported graph holds no linear solver."""
        d = support.shape[-1]
        labels = labels.numpy()
        pools = [support[paddle.to_tensor((labels == c).nonzero()[0])].reshape([1, -1, d]) for c in range(way)]
        maps = paddle.concat([residual_maps(p, self.r[0], self.r[1]) for p in pools])
        return {"maps": maps.astype(support.dtype)}

    def adapted_scores(self, adapted: Adapted, query: paddle.Tensor) -> paddle.Tensor:
        """-mean squared reconstruction error of each query under each class's map."""
        r, d = query.shape[1], query.shape[2]
        dist = distance_under(query.reshape([-1, d]), adapted["maps"])
        return -dist.reshape([-1, r, adapted["maps"].shape[0]]).mean(axis=1)

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

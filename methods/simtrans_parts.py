"""The mathematics of SimTrans (methods/simtrans.py): image pairs, the SimNet's heads and domain
discriminator, similarity matrices and the sample weights drawn from them, and the graph
regularisation. Functions of tensors and arrays, used by the stages and the parity tests.
"""
import math
from typing import Dict, Optional, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from network.common import torch_linear
from utils.errors import UserError


# ----------------------------------------------------------------------------------------
# pairs (ad_modules.pair_enumeration / make_similarities, GAN_noise_detection.pair_feature)
# ----------------------------------------------------------------------------------------
def pair_enumeration(x: paddle.Tensor) -> paddle.Tensor:
    """[B, D] -> [B*B, 2D]: pair k is concat(x[k % B], x[k // B]) (first half varies fastest), so a
    per-pair score reshaped to (B, B) has [i, j] = score(concat(x[j], x[i]))."""
    b = x.shape[0]
    return paddle.concat([x.tile([b, 1]), x.repeat_interleave(b, axis=0)], axis=1)


def pair_targets(labels: paddle.Tensor) -> paddle.Tensor:
    """1 for the pairs of `pair_enumeration` whose two images share a label, else 0 (int64)."""
    pairs = pair_enumeration(labels.reshape([-1, 1]))
    return (pairs[:, 0] == pairs[:, 1]).astype("int64")


def pair_feature(p: paddle.Tensor, q: paddle.Tensor) -> paddle.Tensor:
    """concat(p, q[j]) for every row j of q: one row of a web class's similarity matrix."""
    return paddle.concat([p.reshape([1, -1]).expand([q.shape[0], p.shape[-1]]), q], axis=1)


# ----------------------------------------------------------------------------------------
# networks
# ----------------------------------------------------------------------------------------
#: the discriminator's LayerNorm epsilon (PyTorch's default)
LAYER_NORM_EPSILON = 1e-5


def linear_bn_relu(n_in: int, n_out: int) -> nn.Sequential:
    """Linear (PyTorch init) -> BatchNorm1D (PyTorch's momentum and epsilon) -> ReLU."""
    return nn.Sequential(torch_linear(n_in, n_out), nn.BatchNorm1D(n_out, momentum=0.9, epsilon=1e-5), nn.ReLU())


class SimilarityHead4(nn.Layer):
    """GANSimilarityHead4 on pairs of n-d features: 2n -> 2n -> n (= diff_feat) -> n -> 2 logits
    [dissimilar, similar], BatchNorm1D + ReLU after each hidden layer."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.fc1 = linear_bn_relu(2 * n_feat, 2 * n_feat)
        self.fc2 = linear_bn_relu(2 * n_feat, n_feat)
        self.fc3 = linear_bn_relu(n_feat, n_feat)
        self.fc4 = torch_linear(n_feat, 2)
        self.diff_dim = n_feat

    def forward(self, pairs: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        diff = self.fc2(self.fc1(pairs))
        return self.fc4(self.fc3(diff)), diff


class SimilarityHead2(nn.Layer):
    """GANSimilarityHead2: 2n -> 4n (BatchNorm1D, ReLU; = diff_feat) -> 2 logits."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.fc = torch_linear(2 * n_feat, 4 * n_feat)
        self.bn = nn.BatchNorm1D(4 * n_feat, momentum=0.9, epsilon=1e-5)
        self.fc2 = torch_linear(4 * n_feat, 2)
        self.diff_dim = 4 * n_feat

    def forward(self, pairs: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        diff = F.relu(self.bn(self.fc(pairs)))
        return self.fc2(diff), diff


HEADS = {"2": SimilarityHead2, "4": SimilarityHead4}


class DomainClassifier(nn.Layer):
    """The discriminator on diff features: Linear -> LayerNorm (domain_bn 1) -> ReLU -> Linear(2)."""

    def __init__(self, diff_dim: int, layer_norm: bool = True):
        super().__init__()
        self.fc = torch_linear(diff_dim, diff_dim)
        self.bn = nn.LayerNorm(diff_dim, epsilon=LAYER_NORM_EPSILON) if layer_norm else None
        self.fc2 = torch_linear(diff_dim, 2)

    def forward(self, x: paddle.Tensor, frozen: bool = False) -> paddle.Tensor:
        """Domain logits; `frozen` computes them through detached weights, so that a loss on them
        trains only what produced `x` (the SimNet's update ignores the discriminator's gradients)."""
        w = (lambda p: p.detach()) if frozen else (lambda p: p)  # noqa: E731
        x = F.linear(x, w(self.fc.weight), w(self.fc.bias))
        if self.bn is not None:
            x = layer_norm(x, w(self.bn.weight), w(self.bn.bias), LAYER_NORM_EPSILON)
        return F.linear(F.relu(x), w(self.fc2.weight), w(self.fc2.bias))


def layer_norm(x: paddle.Tensor, weight: paddle.Tensor, bias: paddle.Tensor, epsilon: float) -> paddle.Tensor:
    """LayerNorm over the last axis written out: Paddle 3.3.1's CPU layer_norm kernel leaves the
    scale out of the gradient w.r.t. its input (off by up to 40% against PyTorch and finite
    differences whenever the scale is not 1), which the adversarial term back-propagates through."""
    centred = x - x.mean(axis=-1, keepdim=True)
    variance = (centred ** 2).mean(axis=-1, keepdim=True)
    return centred / paddle.sqrt(variance + epsilon) * weight + bias


def pooled(backbone: nn.Layer, images: paddle.Tensor) -> paddle.Tensor:
    """The backbone's output as one vector per image (global average pool of a dense map)."""
    features = backbone(images)
    return features.mean(axis=[2, 3]) if features.ndim == 4 else features


# ----------------------------------------------------------------------------------------
# similarity matrices and sample weights (train_main / alternate_with_GCN get_weight_dict)
# ----------------------------------------------------------------------------------------
@paddle.no_grad()
def similarity_matrix(head: nn.Layer, features: paddle.Tensor, rows_per_call: int = 64) -> paddle.Tensor:
    """S[i, j] = softmax(head(concat(f_i, f_j)))[1] for every pair of a class's L web images
    (diagonal included; not symmetric). The head must be in eval mode (running BN statistics), so
    computing the rows in chunks gives the same values as the reference's row loop."""
    n = features.shape[0]
    rows = []
    for start in range(0, n, rows_per_call):
        block = range(start, min(start + rows_per_call, n))
        logits, _ = head(paddle.concat([pair_feature(features[i], features) for i in block]))
        rows.append(F.softmax(logits, axis=1)[:, 1].reshape([len(block), n]))
    return paddle.concat(rows)


def _top_k(weight_type: str, prefix: str, n: int) -> int:
    try:
        k = int(float(weight_type[len(prefix):]) * n)
    except ValueError:
        raise UserError(f"--weight_type {weight_type!r}: expected {prefix}<fraction>, e.g. {prefix}1") from None
    if k < 1:
        raise UserError(f"--weight_type {weight_type} keeps no similarity of a class with {n} web images; "
                        f"raise the fraction")
    return k


def raw_weights(matrix: np.ndarray, weight_type: str) -> np.ndarray:
    """Per-image weights of one class from its similarity matrix S (L x L), before normalisation:
    avgK = mean of the top int(K*L) entries of its row, savgK = half row + half column such mean,
    denT = number of entries of its row closer (1 - S) than the T-quantile of all L*L distances,
    minus one; none = 1."""
    n = len(matrix)
    if weight_type == "none":
        return np.ones(n, dtype=np.float32)
    if weight_type.startswith("savg"):
        k = _top_k(weight_type, "savg", n)
        return (np.sort(matrix, axis=1)[:, -k:].mean(1) + np.sort(matrix, axis=0)[-k:, :].mean(0)) / 2
    if weight_type.startswith("avg"):
        return np.sort(matrix, axis=1)[:, -_top_k(weight_type, "avg", n):].mean(1)
    if weight_type.startswith("den"):
        threshold = float(weight_type[3:]) if weight_type[3:].replace(".", "", 1).isdigit() else -1.0
        if not 0.0 <= threshold < 1.0:
            raise UserError(f"--weight_type {weight_type!r}: expected den<quantile in [0, 1)>, e.g. den0.6")
        distance = 1.0 - matrix
        cut = np.sort(distance.reshape(-1))[int(n * n * threshold)]
        return ((distance < cut).sum(1) - 1).astype(np.float32)
    raise UserError(f"--weight_type {weight_type!r} is not one of avgK, savgK, denT, none (e.g. savg1)")


def relax(x, mu: float, scale: float = 1.0):
    """(exp(mu x) - 1) / (exp(mu) - 1), times `scale`; x itself times `scale` when mu = 0. Works on
    numpy arrays and Paddle tensors."""
    if mu == 0:
        return x * scale
    exp = paddle.exp if isinstance(x, paddle.Tensor) else np.exp
    return scale / (math.exp(mu) - 1) * (exp(mu * x) - 1)


def sample_weights(matrix: np.ndarray, weight_type: str, weight_norm: str = "one_mean") -> np.ndarray:
    """Normalised weights of one class: `one_mean` divides by their mean, `max_<A>_<MU>` divides by
    their max and maps them through relax(mu=MU) scaled to A."""
    weights = raw_weights(np.asarray(matrix, dtype=np.float64), weight_type)
    if weight_norm == "one_mean":
        mean = weights.mean()
        if mean <= 0:
            raise UserError(f"--weight_type {weight_type} gives weights with mean {mean} for a class; "
                            f"pick another weight type")
        return (weights / mean).astype(np.float32)
    parts = weight_norm.split("_")
    if parts[0] == "max" and len(parts) == 3:
        try:
            scale, mu = float(parts[1]), float(parts[2])
        except ValueError:
            pass  # not numbers: the error below
        else:
            return relax(weights / weights.max(), mu, scale).astype(np.float32)
    raise UserError(f"--weight_norm {weight_norm!r} is not one_mean or max_<scale>_<mu> (e.g. max_2_-4)")


# ----------------------------------------------------------------------------------------
# graph regularisation (GCN_reg/graph_modules.py) and the losses
# ----------------------------------------------------------------------------------------
def rectify(affinity: paddle.Tensor, labels: paddle.Tensor, mu: float, eye: float) -> paddle.Tensor:
    """relax(A, mu) * max(C, eye) with C[i, j] = 1 for same-label pairs (eye = 1 keeps all pairs)."""
    same = (labels.reshape([1, -1]) == labels.reshape([-1, 1])).astype(affinity.dtype)
    return relax(affinity, mu) * paddle.clip(same, min=eye)


def graph_loss_matrix(features: paddle.Tensor, affinity: paddle.Tensor, reg: str = "GCN") -> paddle.Tensor:
    """GCN: ||f_i - f_j||^2 * A[i, j]; COS: (cos(f_i, f_j) - A[i, j])^2 (the loss is the mean)."""
    if reg == "GCN":
        return ((features.unsqueeze(1) - features.unsqueeze(0)) ** 2).sum(2) * affinity
    norm = (features ** 2).sum(1, keepdim=True).sqrt()
    cosine = paddle.matmul(features, features, transpose_y=True) / paddle.matmul(norm, norm, transpose_y=True)
    return (cosine - affinity) ** 2


def weighted_cross_entropy(logits: paddle.Tensor, labels: paddle.Tensor,
                           weights: Optional[paddle.Tensor] = None) -> paddle.Tensor:
    """mean_i(w_i * CE_i) (a plain mean, not normalised by the weights), or the mean CE."""
    ce = F.cross_entropy(logits, labels, reduction="none").reshape([-1])
    return ce.mean() if weights is None else (ce * weights.astype(ce.dtype)).mean()


def adversarial_objective(terms: Dict[str, paddle.Tensor]) -> paddle.Tensor:
    """The loss one optimizer step minimises for both reference updates of an iteration: its value
    is the SimNet's total loss L_sim - beta * L_dom (whose discriminator pass used detached
    weights, so it moves the SimNet only); a zero-valued term adds the gradient of the
    discriminator's own loss on the detached diff features (which moves the discriminator only)."""
    disc = terms["domain_loss_discriminator"]
    return terms["total_loss"] + (disc - disc.detach())

"""SimTrans (Chen, Niu, Liu & Zhang, NeurIPS 2021): weak-shot fine-grained classification by
similarity transfer.

Not episodic: base classes have clean labelled images, novel classes only noisy web images, and
the goal is an ordinary |novel|-way classifier tested on clean novel images. Port of the official
pipeline (spec `simtrans.md`; folders from data/weakshot.py):

  step 0  simtrans_naive      pretrain.py: classifier on the web images (the webly-supervised baseline)
  step 1  simtrans_simnet     pretrain.py: SimNet (backbone + pair head) on pairs of clean base
                              images, with the adversarial domain loss against pairs of web images
  step 2  simtrans_simnet     test.py: the SimNet's similarity matrix of each novel class's web
                              images, written to --save_dir (plus the denoising ROC-AUC on benchmarks)
  step 3a simtrans_main       pretrain.py: classifier with sample weights from the matrices
  step 3b simtrans_alternate  pretrain.py: continue 3a, alternating weighted cross-entropy epochs
                              with epochs adding the graph regularisation
  eval    any classifier      test.py: top-1 accuracy on the clean novel test images

Faithful to the reference where a port usually slips (spec §8): pairs put the fast-varying image
first; the head's BatchNorm sees base and web pairs in one call; the adversarial term is a plain
`- beta * L_dom` (the discriminator is trained afterwards on detached features, here in the same
backward through detached discriminator weights); optimizers start fresh every epoch; weighted
cross-entropy is mean(w * CE); the graph term uses the relaxed similarity with mu = -4 and no label
mask (eye = 1); model selection and early stopping use the test accuracy, as the reference does
(flagged in the logs).
"""
import argparse
import json
import math
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Sized, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import paddle.vision.transforms as T

from data.datasets import ImageList
from data.samplers import ShuffledBatchSampler, indices_by_class
from data.transforms import MEAN, STD
from data.weakshot import WeakShot, injected_files, load_weakshot
from frn.checkpoint import load_weights, read_checkpoint
from utils.errors import UserError
from utils.flags import add_aliases
from utils.optim import trainable_parameters
from utils.stats import mean_and_interval, roc_auc
from methods.base import FewShotMethod, TrainingPlan, Validator
from network import BACKBONES, build_backbone
from network.resnet50 import imagenet_state

TEST_RESIZE = 255 / 224          # Resize(255) before CenterCrop(224)
SIMILARITY_MANIFEST = "similarity.json"
F1_CLASSES, F1_IMAGES = 10, 10   # SimNet evaluation batches: 10 classes x 10 images
CLASSIFIER_FAMILY = "SimTransClassifier"  # naive, main and alternate share checkpoints
#: the official spellings of flags this project already has (official flag -> our destinations)
OFFICIAL_ALIASES = {"--num_epoch": ("epoch",), "--lr_interval": ("step_size",), "--lr_decay": ("gamma",),
                    "--optim": ("optimizer",), "--backbone": ("model",),
                    "--pretrained": ("imagenet_pretrained",)}  # (a shorter spelling of ours)


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
def torch_linear(n_in: int, n_out: int) -> nn.Linear:
    """nn.Linear with PyTorch's default init (weight and bias uniform in +-1/sqrt(n_in))."""
    bound = 1.0 / math.sqrt(n_in)
    init = nn.initializer.Uniform(-bound, bound)
    return nn.Linear(n_in, n_out, weight_attr=paddle.ParamAttr(initializer=init),
                     bias_attr=paddle.ParamAttr(initializer=init))


def linear_bn_relu(n_in: int, n_out: int) -> nn.Sequential:
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
        self.bn = nn.LayerNorm(diff_dim, epsilon=1e-5) if layer_norm else None
        self.fc2 = torch_linear(diff_dim, 2)

    def forward(self, x: paddle.Tensor, frozen: bool = False) -> paddle.Tensor:
        """Domain logits; `frozen` computes them through detached weights, so that a loss on them
        trains only what produced `x` (the SimNet's update ignores the discriminator's gradients)."""
        w = (lambda p: p.detach()) if frozen else (lambda p: p)  # noqa: E731
        x = F.linear(x, w(self.fc.weight), w(self.fc.bias))
        if self.bn is not None:
            x = layer_norm(x, w(self.bn.weight), w(self.bn.bias), self.bn._epsilon)
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


def simtrans_transform(image_size: int, training: bool) -> T.Compose:
    """The reference pipelines at `image_size` (224 in the paper): training RandomRotation(30),
    RandomResizedCrop(scale 0.5-1), flip; test Resize(255/224 * size) and CenterCrop."""
    head = ([T.RandomRotation(30), T.RandomResizedCrop(image_size, scale=(0.5, 1.0)), T.RandomHorizontalFlip()]
            if training else [T.Resize(round(image_size * TEST_RESIZE)), T.CenterCrop(image_size)])
    return T.Compose([*head, T.ToTensor(), T.Normalize(mean=MEAN, std=STD)])


# ----------------------------------------------------------------------------------------
# sample weights (train_main / alternate_with_GCN get_weight_dict)
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
            scale = mu = None
        if scale is not None:
            return relax(weights / weights.max(), mu, scale).astype(np.float32)
    raise UserError(f"--weight_norm {weight_norm!r} is not one_mean or max_<scale>_<mu> (e.g. max_2_-4)")


# ----------------------------------------------------------------------------------------
# graph regularisation (GCN_reg/graph_modules.py)
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


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
class WeightedImages(paddle.io.Dataset):
    """(image, label, sample weight) of a web filelist."""

    def __init__(self, images: ImageList, weights: np.ndarray):
        self.images, self.weights = images, np.asarray(weights, dtype=np.float32)
        self.labels, self.label_names = images.labels, images.label_names

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image, label = self.images[index]
        return image, label, self.weights[index]


def rand_pair_batches(labels: Sequence[int], batch_size: int, class_num: int,
                      rng: np.random.RandomState) -> List[List[int]]:
    """The reference's RandPairSet: len // batch_size batches, each drawn from at most `class_num`
    random classes that still have unused images: pick one of them, then one of its unused images,
    until the batch is full or the chosen classes are exhausted (each image once per epoch)."""
    pools = indices_by_class(labels)  # fresh lists, emptied by the draws below
    batches = []
    for _ in range(len(labels) // batch_size):
        remained = [c for c, pool in pools.items() if pool]
        if not remained:
            break
        chosen = rng.permutation(remained).tolist()[:class_num]
        batch = []
        while chosen and len(batch) < batch_size:
            pick = rng.randint(0, len(chosen))
            pool = pools[chosen[pick]]
            batch.append(pool.pop(rng.randint(len(pool))))
            if not pool:
                chosen.pop(pick)
        batches.append(batch)
    return batches


def pair_training_batches(labels_a: Sequence[int], labels_b: Sequence[int], offset_b: int, batch_size: int,
                          class_num_a: int, class_num_b: int, seed: int, epoch: int) -> List[List[int]]:
    """One SimNet epoch: RandPairSet batches of A (base) and of B (web) images, each list shuffled,
    zipped to the shorter one, a pair of batches of different lengths skipped; each batch is the A
    indices then the B indices (shifted by `offset_b` into the concatenated dataset)."""
    rng = np.random.RandomState([seed, epoch])
    a = rand_pair_batches(labels_a, batch_size, class_num_a, rng)
    b = rand_pair_batches(labels_b, batch_size, class_num_b, rng)
    a = [a[i] for i in rng.permutation(len(a))]
    b = [b[i] for i in rng.permutation(len(b))]
    return [x + [offset_b + i for i in y] for x, y in zip(a, b) if len(x) == len(y)]


def f1_batches(labels: Sequence[int], seed: int, n_batches: int) -> List[List[int]]:
    """The reference's SimNet evaluation batches (SequentialBalancedSampler2), drawn once: each of
    min(10, classes) random classes x 10 random images (with replacement if a class has fewer)."""
    rng = np.random.RandomState(seed)
    groups = indices_by_class(labels)
    classes = sorted(groups)
    batches = []
    for _ in range(n_batches):
        batch = []
        for c in rng.choice(len(classes), min(F1_CLASSES, len(classes)), replace=False):
            pool = groups[classes[c]]
            batch += rng.choice(pool, F1_IMAGES, replace=len(pool) < F1_IMAGES).tolist()
        batches.append(batch)
    return batches


def shuffled_batches(n_items: int, batch_size: int, seed: int, epoch: int, fraction: float = 1.0) -> List[List[int]]:
    """A reference DataLoader epoch (shuffle, last batch kept); with `fraction` < 1 only the first
    int(fraction * n) + 1 batches (the reference's --epoch_fraction)."""
    sampler = ShuffledBatchSampler(n_items, batch_size, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    return batches if fraction >= 1 else batches[:int(len(batches) * fraction) + 1]


def this_rank(batches: List[List[int]]) -> List[List[int]]:
    """Every world-th batch for this process of a multi-process run (all of them otherwise)."""
    return batches[paddle.distributed.get_rank()::paddle.distributed.get_world_size()]


# ----------------------------------------------------------------------------------------
# run folders, checkpoints and the similarity folder
# ----------------------------------------------------------------------------------------
def weakshot_of(args: argparse.Namespace) -> Optional[WeakShot]:
    """The weak-shot folder --data_path, checked, when it is one (None for other folders)."""
    data_path = getattr(args, "data_path", "")
    if not data_path or not os.path.isfile(os.path.join(data_path, "web.json")):
        return None
    return load_weakshot(data_path)


def need_weakshot(args: argparse.Namespace) -> WeakShot:
    weakshot = weakshot_of(args)
    if weakshot is None:
        raise UserError(f"--data_path {args.data_path!r} is not a weak-shot folder (no web.json); build one "
                        f"with python -m data.weakshot")
    return weakshot


def check_origin(identity: Optional[dict], flag: str, path: str, family: str, weakshot: WeakShot) -> None:
    """Refuse a checkpoint of another kind or made on another weak-shot dataset, in one line."""
    if not identity or identity.get("family") != family:
        found = f"a {identity.get('family')} model" if identity else "a model without identity"
        raise UserError(f"{flag} {path} holds {found}, not a {family}; pass the best_model.pdparams of "
                        f"the right SimTrans step")
    made_on = identity.get("weakshot")
    if made_on is not None and made_on != weakshot.fingerprint:
        raise UserError(f"{flag} {path} was made on another weak-shot dataset (fingerprint {made_on}, "
                        f"--data_path has {weakshot.fingerprint}); pass the run of this dataset")


def load_backbone_weights(model: FewShotMethod, source: str, flag: str,
                          ckpt: Optional[Dict[str, Any]] = None) -> None:
    """Initialise `model.feature_extractor`: `imagenet` (Paddle's ResNet-50 weights), `none`, or a
    .pdparams whose `feature_extractor.*` entries fit (e.g. a converted torchvision checkpoint).
    `ckpt` is that .pdparams when the caller has already read it (`read_checkpoint(source, flag)`)."""
    if source in ("none", "0", ""):
        return
    own = model.feature_extractor.state_dict()
    if source in ("imagenet", "1"):
        if model.backbone_name != "ResNet50":
            raise UserError(f"{flag} {source}: ImageNet weights exist for ResNet50 only, not {model.backbone_name}; "
                            f"pass 0/none to train from scratch")
        state = imagenet_state()
    else:
        ckpt = read_checkpoint(source, flag) if ckpt is None else ckpt
        prefix = "feature_extractor."
        state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    wrong = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise UserError(f"{flag} {source} has no backbone weights that fit --model {model.backbone_name} "
                        f"(first misfit: {wrong[0]!r})")
    model.feature_extractor.set_state_dict({k: state[k] for k in own})


def load_simnet(path: str, flag: str, weakshot: WeakShot) -> "SimNet":
    """A trained SimNet (step 1) in eval mode, built as its checkpoint describes."""
    ckpt = read_checkpoint(path, flag)
    identity = ckpt.get("identity")
    check_origin(identity, flag, path, "SimNet", weakshot)
    args = argparse.Namespace(model=identity["model"], head_type=identity.get("head_type", "4"),
                              domain_bn=identity.get("domain_bn", 1), data_path="")
    simnet = SimNet(build_backbone(identity["model"]), args)
    load_weights(simnet, path, flag, ckpt=ckpt)
    simnet.eval()
    return simnet


def write_similarity(save_dir: str, weakshot: WeakShot, simnet_path: str,
                     per_class: List[Tuple[List[str], np.ndarray, np.ndarray]]) -> None:
    """The similarity folder: similarity.json (dataset fingerprint, SimNet, classes) and one
    class_<label>.npz per novel class (file_names, features, matrix). Written in a temporary
    folder moved into place, so a failed run leaves an earlier folder intact."""
    parent = os.path.dirname(os.path.abspath(save_dir))
    os.makedirs(parent, exist_ok=True)
    temp = tempfile.mkdtemp(dir=parent, prefix=".tmp_similarity_")
    try:
        for label, (names, features, matrix) in enumerate(per_class):
            np.savez(os.path.join(temp, f"class_{label}.npz"), file_names=np.asarray(names),
                     features=features, matrix=matrix)
        with open(os.path.join(temp, SIMILARITY_MANIFEST), "w") as f:
            json.dump({"weakshot": weakshot.fingerprint, "data_path": weakshot.path,
                       "simnet": os.path.abspath(simnet_path), "classes": weakshot.novel_classes,
                       "images": [len(n) for n, _, _ in per_class]}, f, indent=1)
        if os.path.isdir(save_dir):
            shutil.rmtree(save_dir)
        os.replace(temp, save_dir)
    finally:
        if os.path.isdir(temp):
            shutil.rmtree(temp)


def read_similarity(load_dir: str, weakshot: WeakShot, flag: str = "--load_dir") -> List[np.ndarray]:
    """The similarity matrix of every novel class, rows in web.json order, after checking that the
    folder was computed for this weak-shot dataset."""
    manifest = os.path.join(load_dir or "", SIMILARITY_MANIFEST)
    if not load_dir or not os.path.isfile(manifest):
        raise UserError(f"{flag} {load_dir!r} is not a similarity folder (no {SIMILARITY_MANIFEST}); pass the "
                        f"--save_dir of step 2 (test.py --method simtrans_simnet)")
    with open(manifest) as f:
        info = json.load(f)
    if info.get("weakshot") != weakshot.fingerprint or info.get("classes") != weakshot.novel_classes:
        raise UserError(f"{flag} {load_dir} holds similarities of another weak-shot dataset (fingerprint "
                        f"{info.get('weakshot')}, --data_path has {weakshot.fingerprint}); rerun step 2 for "
                        f"this --data_path")
    web = weakshot.web
    matrices = []
    for label in range(len(weakshot.novel_classes)):
        path = os.path.join(load_dir, f"class_{label}.npz")
        if not os.path.isfile(path):
            raise UserError(f"{flag} {load_dir} has no {os.path.basename(path)}; rerun step 2 for this --data_path")
        with np.load(path) as z:
            names, matrix = z["file_names"].tolist(), z["matrix"]
        expected = [n for n, l in zip(web["file_names"], web["image_labels"]) if l == label]
        if names != expected:
            raise UserError(f"{flag} {load_dir}: the web images of class {weakshot.novel_classes[label]!r} differ "
                            f"from web.json's; rerun step 2 for this --data_path")
        matrices.append(matrix)
    return matrices


def web_sample_weights(weakshot: WeakShot, matrices: List[np.ndarray], weight_type: str,
                       weight_norm: str) -> np.ndarray:
    """One weight per web.json image (classes normalised separately)."""
    labels = np.asarray(weakshot.web["image_labels"])
    weights = np.ones(len(labels), dtype=np.float32)
    for label, matrix in enumerate(matrices):
        weights[labels == label] = sample_weights(matrix, weight_type, weight_norm)
    return weights


def exp_suffix(args: argparse.Namespace) -> str:
    """`_<--exp_name>` for run folder names, or nothing."""
    return f"_{args.exp_name}" if getattr(args, "exp_name", "") else ""


# ----------------------------------------------------------------------------------------
# the methods
# ----------------------------------------------------------------------------------------
class SimTransStage(FewShotMethod):
    """What every SimTrans step shares: whole-split data, the reference's image pipelines, its
    optimiser habits (fresh every epoch, lr halved every --lr_interval epochs) and flags."""

    episodic = False
    trains_episodically = False
    fresh_optimizer_each_epoch = True

    def __init__(self, backbone: nn.Layer, args: argparse.Namespace, num_classes: Optional[int] = None):
        super().__init__(backbone, args, num_classes)
        weakshot = weakshot_of(args)
        self.weakshot = weakshot.fingerprint if weakshot else None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The reference's base parser (utils/parser.py): its defaults, and its spellings of flags
        this project already has."""
        parser.set_defaults(model="ResNet50", image_size=224, lr=1e-2, wd=1e-4, gamma=0.5, step_size=20,
                            milestones=[], epoch=60, batch_size=64, no_nesterov=True, stop_th=10)
        add = parser.add_argument
        add("--imagenet_pretrained", default="1",
            help="backbone start: 1 = Paddle's ImageNet ResNet-50 weights (downloaded), 0 = random, or a .pdparams "
                 "with feature_extractor.* weights (e.g. a torchvision checkpoint converted by frn.convert)")
        add("--exp_name", default="", help="appended to the run folder name")
        add_aliases(parser, OFFICIAL_ALIASES)

    @staticmethod
    def check_arguments(args: argparse.Namespace) -> None:
        """The official spellings bypass the choices of --model/--optimizer: check them here."""
        names = {name.lower(): name for name in BACKBONES}
        if str(args.model).lower() not in names:
            raise UserError(f"--backbone/--model {args.model!r} is not one of {', '.join(sorted(BACKBONES))}")
        args.model = names[str(args.model).lower()]
        if getattr(args, "optimizer", "sgd") not in ("sgd", "adam"):
            raise UserError(f"--optim {args.optimizer!r} is not sgd or adam")

    @staticmethod
    def image_transform(args: argparse.Namespace, training: bool) -> T.Compose:
        return simtrans_transform(args.image_size, training)

    def checkpoint_identity(self) -> dict:
        return {**super().checkpoint_identity(), "weakshot": self.weakshot}


class SimNet(SimTransStage):
    """Step 1 (pretrain.py) and step 2 (test.py): the similarity net and its domain discriminator."""

    def __init__(self, backbone: nn.Layer, args: argparse.Namespace, num_classes: Optional[int] = None):
        super().__init__(backbone, args, num_classes)
        self.head_type = str(getattr(args, "head_type", "4"))
        self.domain_bn = int(getattr(args, "domain_bn", 1))
        self.beta = float(getattr(args, "beta", 0.0))
        # cross-entropy weight of "similar" pairs: 0 = unweighted, < 0 = --batch_class_num
        weighted = float(getattr(args, "similarity_weighted", 0))
        self.similar_weight = weighted if weighted >= 0 else float(getattr(args, "batch_class_num", 20))
        self.similarity_head = HEADS[self.head_type](backbone.out_channels)
        self.domain_classifier = DomainClassifier(self.similarity_head.diff_dim, self.domain_bn == 1)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """ad_similarity/train_GAN_similarity.py and GAN_noise_detection.py flags."""
        SimTransStage.add_arguments(parser)
        parser.set_defaults(stop_th=0)  # the SimNet script has no early stop
        add = parser.add_argument
        add("--batch_class_num", type=int, default=20, help="classes per base-image batch")
        add("--batch_class_num_B", type=int, default=1, help="classes per web-image batch")
        add("--target_domain", default="novel_train", choices=["novel_train", "novel_test"],
            help="the B images: the novel web images, or (transductive) the novel test images")
        add("--beta", type=float, default=0.0, help="weight of the adversarial term -beta * L_domain")
        add("--domain_lr", type=float, default=0.01, help="the discriminator's learning rate")
        add("--head_type", default="2", choices=sorted(HEADS), help="SimNet head (the scripts use 4)")
        add("--similarity_weighted", type=float, default=0,
            help="cross-entropy weight of similar pairs (0: none; <0: --batch_class_num)")
        add("--domain_bn", type=int, default=1, choices=[0, 1], help="LayerNorm in the discriminator")
        add("--source_set", default="clean_base", choices=["clean_base"], help="the A images")
        add("--target_set", default="noisy_novel", choices=["noisy_novel"], help="evaluation target")
        add("--noisy_frac", type=float, default=0.0, choices=[0.0], help="fused noisy pairs (0: off)")
        add("--similarity_pretrained", default="",
            help="backbone start: the step-0 run's best_model.pdparams, 'imagenet' or 'none'")
        add("--f1_batches", type=int, default=10, help="evaluation batches of 10 classes x 10 images")
        add("--save_dir", default="", help="step 2: the similarity folder (default: <SimNet run>/similarity)")
        add_aliases(parser, {"--similarity_net": ("model_path",)})  # step 2's official name (test.py)

    @staticmethod
    def check_arguments(args: argparse.Namespace) -> None:
        SimTransStage.check_arguments(args)
        if args.batch_class_num < 1 or args.batch_class_num_B < 1 or args.f1_batches < 1:
            raise UserError("--batch_class_num, --batch_class_num_B and --f1_batches must be at least 1")
        if getattr(args, "domain_lr", 1) <= 0:
            raise UserError(f"--domain_lr must be positive (got {args.domain_lr})")

    @staticmethod
    def run_name(args: argparse.Namespace) -> str:
        return f"simtrans_simnet_h{args.head_type}_b{args.beta:g}{exp_suffix(args)}"

    def checkpoint_identity(self) -> dict:
        return {**super().checkpoint_identity(), "head_type": self.head_type, "domain_bn": self.domain_bn}

    def parameter_groups(self, args: argparse.Namespace) -> List[Tuple[List[paddle.Tensor], float]]:
        """The SimNet at --lr, the discriminator at --domain_lr (the reference's two optimisers;
        both halve on the same schedule, so their ratio holds)."""
        discriminator = [p for p in self.domain_classifier.parameters() if not p.stop_gradient]
        simnet = [p for p in trainable_parameters(self) if all(p is not q for q in discriminator)]
        return [(simnet, 1.0), (discriminator, args.domain_lr / args.lr)]

    @staticmethod
    def reference_settings(state) -> dict:
        """The head of a reference SimNet state: 4 with `fc1..fc4`, 2 with `fc`/`fc2`."""
        head = "4" if any(".fc4." in f".{k}" for k in state if "similarity_head" in k) else "2"
        return {"head_type": head, "domain_bn": 1}

    @staticmethod
    def optional_checkpoint_keys() -> Tuple[str, ...]:
        """The released SimNet files carry no discriminator (it is saved apart)."""
        return tuple(f"domain_classifier.{k}" for k in ("fc.weight", "fc.bias", "bn.weight", "bn.bias",
                                                        "fc2.weight", "fc2.bias"))

    @staticmethod
    def from_reference_key(key: str) -> str:
        """`backbone.module.resnet.conv1.weight` -> `feature_extractor.conv1.weight`,
        `similarity_head.module.fc1.0.weight` -> `similarity_head.fc1.0.weight` (the two parts
        are wrapped in nn.DataParallel separately)."""
        key = ("." + key).replace(".module.", ".")[1:]
        for prefix in ("backbone.resnet.", "backbone."):
            if key.startswith(prefix):
                return "feature_extractor." + key[len(prefix):]
        return key

    # ----- forward ------------------------------------------------------------------------
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
        weight = paddle.to_tensor([1.0, self.similar_weight], dtype=logits.dtype) if self.similar_weight else None
        domain_targets = paddle.concat([paddle.zeros([n_pairs], "int64"), paddle.ones([n_pairs], "int64")])
        generator_logits = self.domain_classifier(diff, frozen=True)
        discriminator_logits = self.domain_classifier(diff.detach())
        terms = {"features": features, "pairs": pairs, "logits": logits, "diff": diff, "targets": targets,
                 "domain_targets": domain_targets, "generator_logits": generator_logits,
                 "discriminator_logits": discriminator_logits,
                 "cls_loss": F.cross_entropy(logits[:n_pairs], targets, weight=weight),
                 "domain_loss_generator": F.cross_entropy(generator_logits, domain_targets),
                 "domain_loss_discriminator": F.cross_entropy(discriminator_logits, domain_targets)}
        terms["total_loss"] = terms["cls_loss"] - self.beta * terms["domain_loss_generator"]
        return terms

    def pretrain_loss(self, images: paddle.Tensor, labels: paddle.Tensor, *extra: paddle.Tensor) -> tuple:
        """(objective, base-pair logits, their targets): see `adversarial_objective`."""
        terms = self.training_terms(images, labels)
        n_pairs = terms["targets"].shape[0]
        return adversarial_objective(terms), terms["logits"][:n_pairs], terms["targets"]

    # ----- pretrain.py --------------------------------------------------------------------
    @classmethod
    def training_plan(cls, args: argparse.Namespace) -> TrainingPlan:
        need_weakshot(args)
        base = cls.split_images(args, "base", training=True)
        target = cls.split_images(args, "web" if args.target_domain == "novel_train" else "novel", training=True)
        dataset = paddle.io.ConcatDataset([base, target])
        for name, part in (("base", base), ("web", target)):
            if args.batch_size > len(part):
                raise UserError(f"--batch_size {args.batch_size} exceeds the {len(part)} {name} images; lower it")

        def batches(epoch: int) -> Sized:
            return this_rank(pair_training_batches(base.labels, target.labels, len(base), args.batch_size,
                                                   args.batch_class_num, args.batch_class_num_B, args.seed, epoch))
        return TrainingPlan(dataset, batches, base.num_classes)

    def prepare_training(self, args: argparse.Namespace) -> None:
        """Start the backbone from --similarity_pretrained (the reference default: the step-0 model)."""
        weakshot = need_weakshot(args)
        source = args.similarity_pretrained
        if not source:
            raise UserError("--similarity_pretrained is required: the step-0 run's best_model.pdparams "
                            "(pretrain.py --method simtrans_naive), or 'imagenet' or 'none'")
        ckpt = None
        if source not in ("imagenet", "none"):
            ckpt = read_checkpoint(source, "--similarity_pretrained")
            check_origin(ckpt.get("identity"), "--similarity_pretrained", source, CLASSIFIER_FAMILY, weakshot)
        load_backbone_weights(self, source, "--similarity_pretrained", ckpt=ckpt)

    def validator(self, args: argparse.Namespace) -> Validator:
        """F1 of the 'similar' pairs on novel test batches (model selection, as the reference),
        and on base test batches (reported)."""
        novel = self.split_images(args, "novel", training=False)
        sets = [("novel", novel, f1_batches(novel.labels, args.seed, args.f1_batches))]
        if os.path.isfile(os.path.join(args.data_path, "base_test.json")):
            base = self.split_images(args, "base_test", training=False)
            sets.append(("base", base, f1_batches(base.labels, args.seed + 1, args.f1_batches)))

        def validate():
            scores = {name: pair_f1(self, data, batches, args.num_workers) for name, data, batches in sets}
            f1, loss = scores["novel"]
            return f1, loss, ({"base_f1": scores["base"][0]} if "base" in scores else {})
        return validate

    # ----- test.py: step 2 ----------------------------------------------------------------
    @classmethod
    def test_whole_split(cls, args: argparse.Namespace) -> List[float]:
        """GAN_noise_detection.py: the similarity matrix of each novel class's web images into
        --save_dir; then the pair F1 on novel test images and, on a benchmark, how well the
        default sample weights separate clean from injected web images (ROC-AUC)."""
        from frn.engine import extract_features  # (frn.engine imports methods: imported at use)
        weakshot = need_weakshot(args)
        simnet = load_simnet(args.model_path, "--similarity_net/--model_path", weakshot)
        args.model, args.head_type = simnet.backbone_name, simnet.head_type
        save_dir = args.save_dir or os.path.join(os.path.dirname(os.path.abspath(args.model_path)), "similarity")
        web = cls.split_images(args, "web", training=False)
        features = extract_features(simnet, web, range(len(web)), num_workers=args.num_workers)
        per_class = []
        for label in range(len(weakshot.novel_classes)):
            rows = np.flatnonzero(web.labels == label)
            class_features = features[paddle.to_tensor(rows)]
            matrix = similarity_matrix(simnet.similarity_head, class_features).numpy()
            per_class.append(([web.file_names[i] for i in rows], class_features.numpy(), matrix))
        write_similarity(save_dir, weakshot, args.model_path, per_class)
        print(f"similarity matrices of {len(web)} web images in {len(per_class)} novel classes written to {save_dir}")
        novel = cls.split_images(args, "novel", training=False)
        f1, _ = pair_f1(simnet, novel, f1_batches(novel.labels, args.seed, args.f1_batches), args.num_workers)
        print(f"{len(novel)} novel test images: pair F1 = {f1:.2f}%")
        scores = [f1]
        injected = injected_files(args.data_path)
        if injected is not None:
            clean = np.asarray([name not in injected for name in web.file_names])
            for weight_type in ("savg1", "avg1"):
                weights = web_sample_weights(weakshot, [m for _, _, m in per_class], weight_type, "one_mean")
                auc = roc_auc(weights, clean)
                print(f"denoising ROC-AUC of the {weight_type} weights (clean vs the {int((~clean).sum())} "
                      f"injected web images): {auc:.3f}")
                scores.append(auc)
        return scores


def adversarial_objective(terms: Dict[str, paddle.Tensor]) -> paddle.Tensor:
    """The loss one optimizer step minimises for both reference updates of an iteration: its value
    is the SimNet's total loss L_sim - beta * L_dom (whose discriminator pass used detached
    weights, so it moves the SimNet only); a zero-valued term adds the gradient of the
    discriminator's own loss on the detached diff features (which moves the discriminator only)."""
    disc = terms["domain_loss_discriminator"]
    return terms["total_loss"] + (disc - disc.detach())


@paddle.no_grad()
def pair_f1(simnet: SimNet, dataset, batches: List[List[int]], num_workers: int = 0) -> Tuple[float, float]:
    """F1 (%) of the 'similar' class over every ordered pair of every batch (diagonal included,
    counts pooled over the batches) and the mean pair cross-entropy, in eval mode."""
    from frn.engine import loader  # (frn.engine imports methods: imported at use)
    simnet.eval()
    tp = fp = fn = 0
    losses = []
    for images, labels in loader(dataset, batches, num_workers):
        logits = simnet.pair_logits(images)
        targets = pair_targets(labels)
        predicted = logits.argmax(axis=1)
        tp += int(((predicted == 1) & (targets == 1)).sum())
        fp += int(((predicted == 1) & (targets == 0)).sum())
        fn += int(((predicted == 0) & (targets == 1)).sum())
        losses.append(float(F.cross_entropy(logits, targets)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return 100.0 * f1, float(np.mean(losses))


class WebClassifier(SimTransStage):
    """Step 0, naive/train.py: a classifier of the novel classes trained on their web images."""

    def __init__(self, backbone: nn.Layer, args: argparse.Namespace, num_classes: Optional[int] = None):
        super().__init__(backbone, args, num_classes)
        if num_classes:
            self.fc = nn.Linear(backbone.out_channels, num_classes)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        SimTransStage.add_arguments(parser)
        parser.add_argument("--exp_type", default="NoisyNovel", choices=["NoisyNovel", "CleanBase"],
                            help="train on the novel web images (tested on novel test images) or on the clean "
                                 "base images (tested on base test images)")

    @staticmethod
    def run_name(args: argparse.Namespace) -> str:
        kind = "" if getattr(args, "exp_type", "NoisyNovel") == "NoisyNovel" else f"_{args.exp_type}"
        return f"{args.method}{kind}{exp_suffix(args)}"

    def checkpoint_identity(self) -> dict:
        return {**super().checkpoint_identity(), "family": CLASSIFIER_FAMILY}

    @staticmethod
    def reference_settings(state) -> dict:
        """A reference classifier's class count, from its `fc.weight` [classes, features]."""
        fc = next((v for k, v in state.items() if k.split("module.")[-1].split("backbone.")[-1] == "fc.weight"), None)
        return {} if fc is None else {"num_classes": int(fc.shape[0])}

    @staticmethod
    def from_reference_key(key: str) -> str:
        """Reference classifiers: `conv1.weight` (torchvision), `module.conv1.weight`
        (nn.DataParallel) or `module.backbone.conv1.weight` (the GCN wrapper); `fc.*` is the head."""
        key = ("." + key).replace(".module.", ".")[1:]
        if key.startswith("backbone."):
            key = key[len("backbone."):]
        return key if key.startswith("fc.") else "feature_extractor." + key

    def extract(self, images: paddle.Tensor) -> paddle.Tensor:
        return pooled(self.feature_extractor, images)

    def classify(self, images: paddle.Tensor) -> paddle.Tensor:
        return self.fc(self.extract(images))

    def pretrain_loss(self, images: paddle.Tensor, labels: paddle.Tensor, *extra: paddle.Tensor) -> tuple:
        """Cross-entropy, weighted per image when the batch carries sample weights (step 3)."""
        logits = self.classify(images)
        return weighted_cross_entropy(logits, labels, extra[0] if extra else None), logits

    # ----- data ---------------------------------------------------------------------------
    @staticmethod
    def splits(args: argparse.Namespace) -> Tuple[str, str]:
        """(training split, evaluation split) of --exp_type."""
        return ("base", "base_test") if getattr(args, "exp_type", "NoisyNovel") == "CleanBase" else ("web", "novel")

    @classmethod
    def training_set(cls, args: argparse.Namespace, weakshot: WeakShot) -> paddle.io.Dataset:
        return cls.split_images(args, cls.splits(args)[0], training=True)

    @staticmethod
    def batch_size(args: argparse.Namespace, epoch: int) -> int:
        return args.batch_size

    @classmethod
    def training_plan(cls, args: argparse.Namespace) -> TrainingPlan:
        weakshot = need_weakshot(args)
        dataset = cls.training_set(args, weakshot)
        fraction = getattr(args, "epoch_fraction", 1.0)

        def batches(epoch: int) -> Sized:
            return this_rank(shuffled_batches(len(dataset), cls.batch_size(args, epoch), args.seed, epoch, fraction))
        return TrainingPlan(dataset, batches, len(dataset.label_names))

    def prepare_training(self, args: argparse.Namespace) -> None:
        if not args.pretrain_path:  # else runs.pretrain loads it (the reference's --resume)
            load_backbone_weights(self, args.imagenet_pretrained, "--imagenet_pretrained")

    def validator(self, args: argparse.Namespace) -> Validator:
        """Top-1 accuracy on the clean test images: the reference selects its model (and stops
        early) on the test set, as reproduced here; there is no validation split."""
        from frn.engine import classify_split  # (frn.engine imports methods: imported at use)
        test = self.split_images(args, self.splits(args)[1], training=False)

        def validate():
            accuracy, loss, _ = classify_split(self, test, num_workers=args.num_workers, desc="test")
            return accuracy, loss
        return validate

    # ----- test.py ------------------------------------------------------------------------
    @classmethod
    def test_whole_split(cls, args: argparse.Namespace) -> List[float]:
        """eval_model.py: top-1 accuracy of --model_path on the clean test images (--split, default
        novel), printed as `N Test Acc = m% +- ci%` (ci: 1.96 * binomial standard error)."""
        from frn.engine import classify_split  # (frn.engine imports methods: imported at use)
        ckpt = read_checkpoint(args.model_path)
        split = {"novel": cls.splits(args)[1]}.get(args.split, args.split)
        test = cls.split_images(args, split, training=False)
        identity = ckpt.get("identity") or {}
        if identity.get("family") != CLASSIFIER_FAMILY or "fc.weight" not in ckpt["state_dict"]:
            raise UserError(f"--model_path {args.model_path} is not a SimTrans classifier (step 0 or 3); pass "
                            f"its best_model.pdparams, or convert a reference checkpoint with python -m frn.convert")
        made_on = identity.get("weakshot")
        if made_on is not None and made_on != need_weakshot(args).fingerprint:
            raise UserError(f"--model_path {args.model_path} was trained on another weak-shot dataset (fingerprint "
                            f"{made_on}); pass --data_path of that dataset")
        n_classes = int(ckpt["state_dict"]["fc.weight"].shape[1])
        if n_classes != test.num_classes:
            raise UserError(f"--model_path {args.model_path} classifies {n_classes} classes but the {split} split "
                            f"has {test.num_classes}; pass the matching --data_path")
        model = cls(build_backbone(args.model), args, n_classes)
        load_weights(model, args.model_path, ckpt=ckpt)  # refuses a checkpoint of another --model in one line
        accuracy, _, correct = classify_split(model, test, num_workers=args.num_workers, desc="test")
        mean, interval = mean_and_interval(100.0 * correct)
        print(f"{len(test)} Test Acc = {mean:.2f}% +- {interval:.2f}%", flush=True)
        return [accuracy]


class WeightedClassifier(WebClassifier):
    """Step 3a, GCN_reg/train_main.py: the web classifier with per-image weights from the
    similarity matrices of step 2 (loss mean(w * CE))."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        SimTransStage.add_arguments(parser)
        add = parser.add_argument
        add("--load_dir", default="", help="the similarity folder of step 2")
        add("--weight_type", default="savg1", help="avgK, savgK, denT or none")
        add("--weight_norm", default="one_mean", help="one_mean or max_<scale>_<mu>")
        add("--epoch_fraction", type=float, default=1.0, help="share of each epoch's batches to train on")

    @staticmethod
    def check_arguments(args: argparse.Namespace) -> None:
        SimTransStage.check_arguments(args)
        if not 0 < getattr(args, "epoch_fraction", 1.0) <= 1:
            raise UserError(f"--epoch_fraction must be in (0, 1] (got {args.epoch_fraction})")

    @staticmethod
    def run_name(args: argparse.Namespace) -> str:
        return f"{args.method}_{args.weight_type}{exp_suffix(args)}"

    @staticmethod
    def splits(args: argparse.Namespace) -> Tuple[str, str]:
        return "web", "novel"

    @staticmethod
    def weight_norm(args: argparse.Namespace) -> str:
        return args.weight_norm

    @classmethod
    def training_set(cls, args: argparse.Namespace, weakshot: WeakShot) -> paddle.io.Dataset:
        weights = web_sample_weights(weakshot, read_similarity(args.load_dir, weakshot), args.weight_type,
                                     cls.weight_norm(args))
        return WeightedImages(cls.split_images(args, "web", training=True), weights)


class GraphRegularisedClassifier(WeightedClassifier):
    """Step 3b, GCN_reg/alternate_with_GCN.py: continue step 3a (--pretrain_path), odd epochs
    weighted cross-entropy in batches of --cls, even epochs (--c0g1 1) weighted cross-entropy plus
    alpha times the graph regularisation in batches of --gcn, with the SimNet's similarities of
    the batch (eval mode, same augmented images) as the graph."""

    def __init__(self, backbone: nn.Layer, args: argparse.Namespace, num_classes: Optional[int] = None):
        super().__init__(backbone, args, num_classes)
        self.alpha, self.mu = getattr(args, "alpha", 0.1), getattr(args, "mu", -4.0)
        self.eye = getattr(args, "eye", 1.0)
        self.reg, self.c0g1 = getattr(args, "reg", "GCN"), getattr(args, "c0g1", 1)
        self.graph_epoch = False
        self._helpers: Dict[str, SimNet] = {}  # not a sublayer: neither trained nor saved

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        WeightedClassifier.add_arguments(parser)
        parser.set_defaults(weight_type="avg1")
        add = parser.add_argument
        add("--alpha", type=float, default=0.1, help="weight of the graph regularisation")
        add("--c0g1", type=int, default=1, choices=[0, 1], help="epochs with epoch %% 2 == c0g1 use cross-entropy only")
        add("--cls", type=int, default=8, help="batch size of the cross-entropy epochs")
        add("--gcn", type=int, default=128, help="batch size of the graph epochs")
        add("--mu", type=float, default=-4.0, help="relaxation of the similarities (0: none)")
        add("--eye", type=float, default=1.0, help="1: every pair in the graph; 0: same-label pairs only")
        add("--reg", default="GCN", choices=["GCN", "COS"], help="squared distances, or cosine mimicking")
        add("--similarity_net", default="", help="the SimNet of step 1 (best_model.pdparams)")

    @staticmethod
    def run_name(args: argparse.Namespace) -> str:
        return f"{args.method}_{args.reg}_a{args.alpha:g}_{args.weight_type}{exp_suffix(args)}"

    @staticmethod
    def weight_norm(args: argparse.Namespace) -> str:
        return "one_mean"  # alternate_with_GCN always divides by the mean

    @staticmethod
    def batch_size(args: argparse.Namespace, epoch: int) -> int:
        return args.cls if epoch % 2 == args.c0g1 else args.gcn

    def prepare_training(self, args: argparse.Namespace) -> None:
        weakshot = need_weakshot(args)
        if not args.pretrain_path:
            raise UserError("--pretrain_path is required: the step-3a run's best_model.pdparams "
                            "(the reference's --resume)")
        check_origin(read_checkpoint(args.pretrain_path, "--pretrain_path").get("identity"), "--pretrain_path",
                     args.pretrain_path, CLASSIFIER_FAMILY, weakshot)
        if not args.similarity_net:
            raise UserError("--similarity_net is required: the step-1 run's best_model.pdparams")
        self._helpers["simnet"] = load_simnet(args.similarity_net, "--similarity_net", weakshot)

    def start_epoch(self, epoch: int) -> None:
        self.graph_epoch = epoch % 2 != self.c0g1

    def graph_term(self, images: paddle.Tensor, labels: paddle.Tensor, features: paddle.Tensor) -> paddle.Tensor:
        """alpha-free graph loss of a batch: the SimNet's affinity of the same images, rectified."""
        simnet = self._helpers["simnet"]
        simnet.eval()
        with paddle.no_grad():
            affinity = F.softmax(simnet.pair_logits(images), axis=1)[:, 1].reshape([images.shape[0], -1])
        return graph_loss_matrix(features, rectify(affinity, labels, self.mu, self.eye), self.reg).mean()

    def pretrain_loss(self, images: paddle.Tensor, labels: paddle.Tensor, *extra: paddle.Tensor) -> tuple:
        features = self.extract(images)
        logits = self.fc(features)
        loss = weighted_cross_entropy(logits, labels, extra[0] if extra else None)
        if self.graph_epoch:
            loss = loss + self.alpha * self.graph_term(images, labels, features)
        return loss, logits

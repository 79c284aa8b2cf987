"""DeepEMD (Zhang, Cai, Lin & Shen, CVPR 2020; v2 TPAMI): few-shot classification by the Earth
Mover's Distance between dense image representations.

Port of the official `Models/models/Network.py` and `emd_utils.py` (representations, EMD head, solvers, SFC):
- every image is a set of nodes: the 5x5 positions of the ResNet-12 map (FCN, optionally with a
  feature pyramid), or one pooled vector per image patch (Grid, Sampling);
- node weights come from the cross-reference mechanism (a node's dot product with the other
  image's mean feature), the cost is 1 - cosine of channel-centred nodes;
- a class's logit is T/n times the flow-weighted similarity of the optimal transport;
- k-shot episodes learn a structured fully connected layer (SFC) on the support set first.

Solvers (`-solver` for training, `-eval_solver` for evaluation):
- `opencv`: cv2.EMD per problem, as the reference; flows and weights are constants, the
  gradient reaches the features only through the similarity.
- `qpth`: the reference's differentiable QP (forms QP and L2), in Paddle (methods/qp_layer.py).
- `exact` (ours, methods/emd_exact.py): the same LP solved exactly in batches with its dual
  potentials. The logits equal OpenCV's, and so does the gradient in evaluation (the SFC fit
  included): flows and weights are constants there, as with OpenCV. Training with
  `-solver exact` lets the gradient reach the features also through the node weights (the
  duals are the objective's gradient w.r.t. the weights), which OpenCV cannot.

Episodes use this project's class-major layout (methods/base.py); the reference's class-fastest
order only affects bookkeeping (SFC initial means, support labels), handled here.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple, cast

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from methods.base import Adapted, CheckpointRules, FewShotMethod, MethodOptions, query_labels
from utils.compat import swapaxes
from utils.errors import UserError
from utils.flags import int_list
from utils.optim import sgd_dampened_step
from utils.options import check_positive, option

VARIANTS = ("fcn", "grid", "sampling")
SOLVERS = ("opencv", "qpth", "exact")
EVAL_SOLVERS = ("exact", "opencv")
FORMS = ("QP", "L2")
QP_MODES = ("qpth", "converged")   # methods.qp_layer.MODES (not imported: it loads scipy)
WEIGHT_FLOOR = 1e-3     # added to the ReLU'd cross-reference weights (Network.get_weight_vector)
OPENCV_FLOOR = 1e-5     # added again before cv2.EMD (emd_inference_opencv)

#: the official scripts' single-dash spellings of generic flags (flag -> destinations it sets)
SEED_ALIASES = {
    "-shot": ("n_shot",), "-query": ("n_query",), "-way": ("train_n_way", "val_n_way", "test_n_way"),
    "-test_episode": ("test_n_episode",), "-val_episode": ("val_n_episode",), "-max_epoch": ("epoch",),
    "-lr": ("lr",), "-gamma": ("gamma",), "-step_size": ("step_size",), "-seed": ("seed",),
}


# ----------------------------------------------------------------------------------------
# the EMD head, as functions of feature maps (used by the method and the parity tests)
# ----------------------------------------------------------------------------------------
def nodes(features: paddle.Tensor) -> paddle.Tensor:
    """[..., C, h, w] -> [..., C, h*w]: every spatial position (or patch) is one node."""
    return features.flatten(-2)


def cross_reference_weights(proto: paddle.Tensor, query: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """Node weights of both sides on the raw features, before any centring (as `emd_forward_1shot`).

    Returns weight_1 [..., Q, W, n] (query nodes, referenced to each class's mean feature) and
    weight_2 [..., W, Q, n] (prototype nodes, referenced to each query's mean feature); leading
    dimensions (e.g. episodes) are batch dimensions.
    """
    p, q = nodes(proto), nodes(query)                                 # [..., N, C, n]
    # [..., 1, M, C] @ [..., N, C, n] -> [..., N, M, n]: one batched matrix product each (faster than einsum)
    weight_1 = paddle.matmul(p.mean(-1).unsqueeze(-3), q)
    weight_2 = paddle.matmul(q.mean(-1).unsqueeze(-3), p)
    return F.relu(weight_1) + WEIGHT_FLOOR, F.relu(weight_2) + WEIGHT_FLOOR


def centred_cosine(proto: paddle.Tensor, query: paddle.Tensor) -> paddle.Tensor:
    """sim[..., i, j, a, b] = cos(query i node a, prototype j node b) of channel-centred nodes,
    [..., Q, W, n, n] with query nodes on the rows. One matrix product of unit node vectors
    instead of the reference's [Q, W, n, n, C] repeat: same values, a fraction of the memory
    and time (values within about 2e-7 of the repeat's). Nodes are made rows first: Paddle's CPU
    reductions and products are several times faster over a contiguous channel axis."""
    def unit_rows(x):                                       # [..., N, C, n] -> [..., N, n, C]
        x = swapaxes(nodes(x), -1, -2)
        x = x - x.mean(-1, keepdim=True)
        # sqrt of a sum instead of paddle.linalg.norm, whose CPU kernel is several times slower
        return x / paddle.clip((x * x).sum(-1, keepdim=True).sqrt(), min=1e-8)
    q, p = unit_rows(query), unit_rows(proto)
    *batch, n_query, n, channels = q.shape
    way, m = p.shape[-3], p.shape[-2]
    sim = paddle.matmul(q.reshape([*batch, n_query * n, channels]), p.reshape([*batch, way * m, channels]),
                        transpose_y=True)
    return swapaxes(sim.reshape([*batch, n_query, n, way, m]), -3, -2)


def normalise_weights(weights: paddle.Tensor, floor: float = OPENCV_FLOOR) -> paddle.Tensor:
    """relu(w) + floor, rescaled so that each weight vector sums to its node count (as `emd_inference_opencv`)."""
    weights = F.relu(weights) + floor
    return weights * weights.shape[-1] / weights.sum(-1, keepdim=True)


def opencv_flows(cost: np.ndarray, supply: np.ndarray, demand: np.ndarray) -> np.ndarray:
    """cv2.EMD on every problem of a batch: cost [B, n, m], supply [B, n], demand [B, m]."""
    import cv2
    cost = np.ascontiguousarray(cost, dtype=np.float32)
    supply = np.ascontiguousarray(supply, dtype=np.float32)[..., None]
    demand = np.ascontiguousarray(demand, dtype=np.float32)[..., None]
    flows = np.empty_like(cost)
    for k in range(cost.shape[0]):
        flows[k] = cv2.EMD(supply[k], demand[k], cv2.DIST_USER, cost[k])[2]
    return flows


def emd_logits(proto: paddle.Tensor, query: paddle.Tensor, solver: str = "opencv", temperature: float = 12.5,
               form: str = "L2", l2_strength: float = 1e-6, weight_gradient: bool = False,
               qp_iterations: Optional[int] = None, qp_mode: str = "qpth") -> paddle.Tensor:
    """Class scores [..., Q, W] of the queries [..., Q, C, h, w] against the prototypes
    [..., W, C, h, w] (the official `emd_forward_1shot` with its solvers); leading dimensions are
    episodes solved in one batch.

    With `solver="exact"` and `weight_gradient` the node weights receive the gradient of the
    transport objective (its dual potentials); otherwise `exact` behaves as `opencv`: flows and
    weights are constants and the gradient flows through the similarity only. `qp_mode` and
    `qp_iterations` choose how the `qpth` solver runs (see methods.qp_layer.emd_flow_qp)."""
    weight_1, weight_2 = cross_reference_weights(proto, query)
    sim = centred_cosine(proto, query)
    *batch, n, m = sim.shape
    supply = weight_1.reshape([-1, n])                                  # row (query node) masses
    demand = swapaxes(weight_2, -3, -2).reshape([-1, m])        # column (prototype) masses
    if solver == "qpth":
        from methods.qp_layer import emd_flow_qp
        sim = sim.reshape([-1, n, m])
        flow = emd_flow_qp(1 - sim, supply, demand, form=form, l2_strength=l2_strength, max_iter=qp_iterations,
                           mode=qp_mode)
        score = (flow * sim.astype("float64")).sum([1, 2]).astype(sim.dtype)
    else:
        if not weight_gradient:
            supply, demand = supply.detach(), demand.detach()
        score = transport_score(sim, normalise_weights(supply), normalise_weights(demand), solver)
    return (score * (temperature / n)).reshape(batch)


def transport_score(sim: paddle.Tensor, supply: paddle.Tensor, demand: paddle.Tensor, solver: str) -> paddle.Tensor:
    """Σ flow·sim of each problem [B] of sim [..., n, m] (B problems), with flows from
    `opencv` or `exact` treated as constants.

    With `exact` the objective's gradient w.r.t. the masses is added: by LP duality
    Σ flow·cost = <u, supply> + <v, demand>, so Σ flow·sim = n - <u, supply> - <v, demand> has
    gradient -u, -v w.r.t. the masses. The added term is zero in value.
    """
    n, m = sim.shape[-2:]
    # in numpy: sim is a strided view here (query and class axes swapped), which the exact solver
    # reads in place; Paddle's CPU copy of such views is several times slower than numpy's
    values = sim.detach().numpy()
    masses = supply.detach().numpy(), demand.detach().numpy()
    flow: Optional[np.ndarray]           # dense [B, n, m], only where the gradient through sim needs it
    total: Optional[np.ndarray]          # Σ flow·sim [B], without a gradient
    if solver == "opencv":
        values = values.reshape(-1, n, m)
        solution, flow = None, opencv_flows(np.subtract(1, values, order="C"), *masses)
        total = np.einsum("bij,bij->b", flow, values) if sim.stop_gradient else None
    elif solver == "exact":
        from methods.emd_exact import solve_emd
        # cost 1 - sim taken by the solver from sim itself, which it also sums over the flow's
        # (at most n + m - 1) cells
        solution = solve_emd(None, *masses, flows=not sim.stop_gradient, payoff=values)
        flow, total = solution.flow, solution.payoff_value
    else:
        raise ValueError(f"unknown solver {solver!r}")
    if sim.stop_gradient and total is not None:
        score = paddle.to_tensor(total.astype(values.dtype))
    elif flow is not None:
        score = (paddle.to_tensor(flow).reshape(sim.shape) * sim).sum([-2, -1]).reshape([-1])
    else:
        raise AssertionError("the solver returned neither a flow nor a total")
    if solution is None or (supply.stop_gradient and demand.stop_gradient):
        return score
    dual = ((paddle.to_tensor(solution.u.astype(np.float32)) * supply).sum(1)
            + (paddle.to_tensor(solution.v.astype(np.float32)) * demand).sum(1))
    return score - (dual - dual.detach())


def feature_pyramid(features: paddle.Tensor, sizes: Sequence[int]) -> paddle.Tensor:
    """[N, C, h, w] -> [N, C, 1, Σs² + h·w]: adaptive average pools of each size, then the
    un-pooled map last (as the official `build_feature_pyramid`). Paddle's adaptive bins are
    PyTorch's (overlapping for 5->2)."""
    n, c = features.shape[:2]
    levels = [F.adaptive_avg_pool2d(features, s).reshape([n, c, 1, s * s]) for s in sizes]
    return paddle.concat(levels + [features.reshape([n, c, 1, -1])], axis=-1)


def sfc_orders(episodes: int, steps: int, size: int) -> np.ndarray:
    """[episodes, steps, size] random orders of each episode's support images from numpy's global
    RNG, drawn episode by episode: fitting E episodes at once consumes the stream exactly as E
    fits one after another, so batched and per-episode evaluation give the same numbers."""
    return np.stack([np.stack([np.random.permutation(size) for _ in range(steps)]) for _ in range(episodes)])


def fit_sfc(init: paddle.Tensor, support: paddle.Tensor, labels: paddle.Tensor,
            logits_fn: Callable[[paddle.Tensor, paddle.Tensor], paddle.Tensor], steps: int = 100,
            lr: float = 100.0, batch_size: int = 4, permutations: Optional[np.ndarray] = None,
            on_step: Optional[Callable[[paddle.Tensor, np.ndarray], None]] = None) -> paddle.Tensor:
    """The structured fully connected layer (the official `get_sfc`) of E episodes at once.

    Starts from the class means `init` [E, W, C, h, w]; for each of `steps` random orders of an
    episode's support images [E, S, C, h, w] (labels [S]) it takes one SGD step (momentum 0.9,
    dampening 0.9) per chunk of `batch_size` on the cross-entropy of the chunk classified against
    the SFC by `logits_fn(sfc, chunk)` -> [E, chunk, W]. Episodes do not interact: the loss is
    the sum of their mean cross-entropies. `permutations` [E, steps, S] replays given orders
    (parity tests), else `sfc_orders` draws them; `on_step(sfc, losses)` sees every SGD step.
    Gradients are on even when called under no_grad."""
    episodes, size = support.shape[:2]
    orders = np.asarray(permutations) if permutations is not None else sfc_orders(episodes, steps, size)
    flat_support = support.detach().reshape([episodes * size, *support.shape[2:]])
    offsets = (np.arange(episodes) * size)[:, None]
    sfc, buf = init.detach(), None
    with paddle.set_grad_enabled(True):
        for step in range(steps):
            for start in range(0, size, batch_size):
                chunk = orders[:, step, start:start + batch_size]                   # [E, b]
                images = flat_support[paddle.to_tensor((chunk + offsets).reshape(-1))]
                sfc.stop_gradient = False
                logits = logits_fn(sfc, images.reshape([episodes, chunk.shape[1], *images.shape[1:]]))
                losses = F.cross_entropy(logits.reshape([-1, logits.shape[-1]]),
                                         labels[paddle.to_tensor(chunk.reshape(-1))], reduction="none")
                losses = losses.reshape([episodes, -1]).mean(1)
                grad, = paddle.grad(losses.sum(), sfc)
                sfc, buf = sgd_dampened_step(sfc.detach(), grad, buf, lr)
                if on_step is not None:
                    on_step(sfc, losses.numpy())
    return sfc.detach()


# ----------------------------------------------------------------------------------------
# the method
# ----------------------------------------------------------------------------------------
@dataclass
class DeepEMDOptions(MethodOptions):
    """The official flags (train_meta.py / eval.py), each with the official single dash and with `--`."""
    deepemd: str = option("fcn", "dense representation: fcn, grid or sampling", choices=VARIANTS,
                          flags=("-deepemd", "--deepemd"))
    solver: str = option("opencv", "EMD solver during training", choices=SOLVERS, flags=("-solver", "--solver"))
    eval_solver: str = option("exact", "EMD solver for evaluation (ours: exact, the same optimum as opencv, faster)",
                              choices=EVAL_SOLVERS, flags=("-eval_solver", "--eval_solver"))
    form: str = option("L2", "qpth formulation", choices=FORMS, flags=("-form", "--form"))
    l2_strength: float = option(1e-6, "weight of the quadratic term of form L2",
                                flags=("-l2_strength", "--l2_strength"))
    qp_mode: str = option("qpth", "qpth solver (ours): 'qpth' runs qpth's 20 iterations as the reference, converged "
                                  "or not; 'converged' iterates until each problem's optimum is certified",
                          choices=QP_MODES, flags=("-qp_mode", "--qp_mode"))
    qp_iterations: Optional[int] = option(None, "qpth solver iteration budget (ours; none: 20 in mode qpth, 64 in "
                                                "mode converged)", flags=("-qp_iterations", "--qp_iterations"))
    temperature: float = option(12.5, "logit scale T (divided by the node count)",
                                flags=("-temperature", "--temperature"))
    metric: str = option("cosine", "node similarity (the reference allows cosine only)", choices=("cosine",),
                         flags=("-metric", "--metric"))
    norm: str = option("center", "node normalisation (channel centring)", choices=("center",),
                       flags=("-norm", "--norm"))
    feature_pyramid: str = option("", "FCN pyramid levels, e.g. 2,3 (empty: none)",
                                  flags=("-feature_pyramid", "--feature_pyramid"))
    patch_list: str = option("2,3", "Grid: grid sizes of the image pyramid", flags=("-patch_list", "--patch_list"))
    patch_ratio: float = option(2.0, "Grid: patch enlargement at test time", flags=("-patch_ratio", "--patch_ratio"))
    num_patch: int = option(9, "Sampling: random crops per image", flags=("-num_patch", "--num_patch"))
    sfc_lr: float = option(100.0, "SFC learning rate (eval.py 100; train_meta.py 0.1)", flags=("-sfc_lr", "--sfc_lr"))
    sfc_wd: float = option(0.0, "accepted for compatibility; unused, as in the reference",
                           flags=("-sfc_wd", "--sfc_wd"))
    sfc_update_step: int = option(100, "SFC epochs over the support set",
                                  flags=("-sfc_update_step", "--sfc_update_step"))
    sfc_bs: int = option(4, "SFC mini-batch size", flags=("-sfc_bs", "--sfc_bs"))

    @classmethod
    def aliases(cls, stage: str) -> Dict[str, Tuple[str, ...]]:
        return SEED_ALIASES

    def check(self) -> None:
        self.patches()
        self.pyramid()
        check_positive(self, "num_patch", "sfc_bs", "qp_iterations")
        if self.sfc_update_step < 0:
            raise UserError(f"-sfc_update_step must be >= 0 (got {self.sfc_update_step})")
        if self.l2_strength <= 0:
            raise UserError(f"-l2_strength must be positive (got {self.l2_strength})")

    def patches(self) -> Tuple[int, ...]:
        """The Grid pyramid's grid sizes."""
        return int_list(self.patch_list, "-patch_list")

    def pyramid(self) -> Tuple[int, ...]:
        """The FCN feature pyramid's pooled sizes (none by default)."""
        return int_list(self.feature_pyramid or "", "-feature_pyramid")

    def run_name(self) -> str:
        """deepemd_fcn, deepemd_grid, deepemd_sampling (+ _qpth / _exact when trained with that solver,
        + _converged for qpth solved to convergence: it trains differently, so it never shares a folder)."""
        solver = "" if self.solver == "opencv" else f"_{self.solver}"
        mode = f"_{self.qp_mode}" if self.solver == "qpth" and self.qp_mode != "qpth" else ""
        return f"deepemd_{self.deepemd}{solver}{mode}"


class DeepEMDRules(CheckpointRules):
    optional_keys = ("fc.weight", "fc.bias")  # the pre-training classifier

    def from_reference_key(self, key: str, model: FewShotMethod) -> Optional[str]:
        """Official keys -> ours: a pre-trained file has bare encoder keys (`layer1.0...`), a
        meta-trained one `module.encoder.layer1...` (`module.` is stripped before this)."""
        if key.startswith("encoder."):
            return "feature_extractor." + key[len("encoder."):]
        if key.startswith("layer"):
            return "feature_extractor." + key
        return key


class DeepEMD(FewShotMethod):
    """DeepEMD-FCN / Grid / Sampling on a dense backbone, with a linear head for pre-training."""

    Options = DeepEMDOptions
    options: DeepEMDOptions
    checkpoint_rules = DeepEMDRules()
    zero_nan_gradients = True  # train_meta.py's detect_grad_nan
    export_blocker = "its EMD solvers (OpenCV / the exact solver / qpth) run in numpy and C outside the Paddle graph"
    #: test episodes scored together: one EMD batch, one SFC fit for all of them (a few MB each)
    eval_episode_batch = 20

    def __init__(self, backbone: nn.Layer, options: DeepEMDOptions, num_classes: Optional[int] = None):
        super().__init__(backbone, options, num_classes)
        self.pyramid = options.pyramid()
        # Sampling draws fresh random crops whenever an image is read, at test time too
        self.features_are_frozen_at_test = options.deepemd != "sampling"
        if num_classes:
            self.fc = nn.Linear(backbone.out_channels, num_classes)

    @classmethod
    def image_transform(cls, options: MethodOptions, training: bool) -> Callable:
        """DeepEMD's own pipelines: FCN crops, Grid patches or Sampling crops."""
        from data.deepemd_transforms import deepemd_transform
        options = cast(DeepEMDOptions, options)  # the method's own options (cls.Options)
        return deepemd_transform(options.dataset, options.deepemd, training, image_size=options.image_size,
                                 patch_list=options.patches(), patch_ratio=options.patch_ratio,
                                 num_patch=options.num_patch)

    # ----- features ----------------------------------------------------------------------
    def extract(self, images: paddle.Tensor) -> paddle.Tensor:
        """FCN: the dense map [N, C, h, w] (or its pyramid [N, C, 1, nodes]); Grid/Sampling: one
        pooled vector per patch of [N, P, 3, S, S] inputs, as [N, C, P, 1]."""
        if images.ndim == 5:
            n, patches = images.shape[:2]
            pooled = self.feature_extractor(images.flatten(0, 1)).mean([2, 3])
            return pooled.reshape([n, patches, -1]).transpose([0, 2, 1]).unsqueeze(-1)
        features = self.feature_extractor(images)
        return feature_pyramid(features, self.pyramid) if self.pyramid else features

    # ----- episodes ----------------------------------------------------------------------
    def active_solver(self) -> str:
        """The reference uses its training solver only in training mode (OpenCV otherwise)."""
        return self.options.solver if self.training else self.options.eval_solver

    def logits_against(self, proto: paddle.Tensor, query: paddle.Tensor) -> paddle.Tensor:
        """EMD logits with the active solver; the node weights get a gradient only when training
        with `-solver exact` (evaluation, SFC included, keeps the reference's OpenCV gradient)."""
        weight_gradient = self.training and self.options.solver == "exact"
        return emd_logits(proto, query, self.active_solver(), self.options.temperature, self.options.form,
                          self.options.l2_strength, weight_gradient, self.options.qp_iterations, self.options.qp_mode)

    def episode_logits(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> paddle.Tensor:
        proto = support if shot == 1 else self.sfc(support[None], way, shot)[0]
        return self.logits_against(proto, query)

    def episode_scores_batch(self, support: paddle.Tensor, query: paddle.Tensor, way: int, shot: int) -> paddle.Tensor:
        """Scores [E, Q, W] of E episodes solved together: one EMD batch for all their problems,
        and in k-shot one SFC fit for all of them (same numbers as episode by episode)."""
        proto = support if shot == 1 else self.sfc(support, way, shot)
        return self.logits_against(proto, query)

    def adapt(self, support: paddle.Tensor, labels: paddle.Tensor, way: int) -> Adapted:
        """The prototypes: the support features in 1-shot, the fitted SFC in k-shot (which needs
        every class to have the same number of images)."""
        adapted = super().adapt(support, labels, way)
        shot, ordered = adapted["shot"], adapted["support"]
        return {"prototypes": ordered if shot == 1 else self.sfc(ordered.unsqueeze(0), way, shot)[0]}

    def adapted_scores(self, adapted: Adapted, query: paddle.Tensor) -> paddle.Tensor:
        return self.logits_against(adapted["prototypes"], query)

    def sfc(self, support: paddle.Tensor, way: int, shot: int, permutations: Optional[np.ndarray] = None,
            on_step: Optional[Callable[[paddle.Tensor, np.ndarray], None]] = None) -> paddle.Tensor:
        """The SFCs [E, W, C, h, w] of E class-major k-shot support sets [E, W·shot, C, h, w] (no
        gradient reaches the support)."""
        init = support.reshape([support.shape[0], way, shot, *support.shape[2:]]).mean(2)
        labels = query_labels(way, shot)  # class-major
        return fit_sfc(init, support, labels, self.logits_against, self.options.sfc_update_step, self.options.sfc_lr,
                       self.options.sfc_bs, permutations, on_step)

    # ----- whole-class training --------------------------------------------------------
    def pretrain_loss(self, images: paddle.Tensor, labels: paddle.Tensor) -> Tuple[paddle.Tensor, paddle.Tensor]:
        """Cross-entropy of a linear classifier on the globally pooled map (mode 'pre_train')."""
        if images.ndim != 4:
            raise UserError("DeepEMD pre-training reads whole images: pass -deepemd fcn to pretrain.py")
        logits = self.fc(self.feature_extractor(images).mean([2, 3]))
        return F.cross_entropy(logits, labels), logits

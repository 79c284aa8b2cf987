"""Optimisers and learning-rate schedules shared by every method.

Two kinds of schedule:
- per epoch (the FRN reference's `get_opt`): MultiStepDecay at `milestones`, or
  StepDecay every `step_size` epochs, stepped once at the end of each epoch;
- per iteration (`IterationSchedule`): a linear warm-up times step decay by epoch (mmfewshot's
  `lr_config` with `warmup='linear'`) or a cosine decay over the iterations after the warm-up
  (the Negative-Margin code's `GradualWarmupScheduler` + `CosineAnnealingLR`). The training loop
  steps it after every optimiser step (`per_iteration = True`).

`sgd_dampened_step` is PyTorch's SGD with momentum and dampening, which Paddle's Momentum lacks
(DeepEMD's SFC and Negative-Margin's meta-test classifier use it).
"""
import math
from typing import Any, List, Optional, Sequence, Tuple

import paddle


def build_scheduler(lr: float, gamma: float, milestones: Optional[Sequence[int]] = None,
                    step_size: Optional[int] = None, iters_per_epoch: int = 0, epochs: int = 0,
                    warmup_iters: int = 0, warmup_start: float = 1.0, cosine: bool = False,
                    eta_min: float = 0.0, lag: int = 0) -> paddle.optimizer.lr.LRScheduler:
    """The schedule of the flags: per iteration when a warm-up or a cosine decay is asked for
    (then `iters_per_epoch` and `epochs` must be given), else per epoch: MultiStepDecay at
    `milestones` (epochs), StepDecay every `step_size` epochs, or a constant rate.
    """
    if warmup_iters or cosine:
        return IterationSchedule(lr, iters_per_epoch, epochs, warmup_iters=warmup_iters, warmup_start=warmup_start,
                                 cosine=cosine, eta_min=eta_min, gamma=gamma, milestones=milestones or (),
                                 step_size=step_size or 0, lag=lag)
    if milestones:
        return paddle.optimizer.lr.MultiStepDecay(lr, milestones=list(milestones), gamma=gamma)
    if step_size:
        return paddle.optimizer.lr.StepDecay(lr, step_size=step_size, gamma=gamma)
    return paddle.optimizer.lr.MultiStepDecay(lr, milestones=[10 ** 9], gamma=gamma)  # constant


class IterationSchedule(paddle.optimizer.lr.LRScheduler):
    """Learning rate of iteration `s` (0-based, counted over the whole run):

        warm(s) = start + (1 - start) * s / W   for s < W, else 1         (linear warm-up)
        main(s) = lr * gamma ** (decays passed at epoch s // iters_per_epoch)     (step)
                = eta_min + (lr - eta_min) * (1 + cos(pi * (s - W) / (T - W))) / 2   (cosine, s >= W)
        lr(s)   = warm(s) * main(s)        (cosine: warm(s) * lr during the warm-up)

    with W = `warmup_iters` and T = `epochs * iters_per_epoch`. mmcv's linear warm-up
    (`lr * (1 - (1 - s/W) * (1 - ratio))`) and GradualWarmupScheduler's (`lr/m * ((m-1) s/W + 1)`)
    are both this line with start = ratio = 1/m. `lag` reproduces a reference that steps its
    scheduler after the optimiser: iteration s then uses the value of s - lag (at least 0).
    """

    per_iteration = True

    def __init__(self, lr: float, iters_per_epoch: int, epochs: int, warmup_iters: int = 0,
                 warmup_start: float = 1.0, cosine: bool = False, eta_min: float = 0.0, gamma: float = 0.1,
                 milestones: Sequence[int] = (), step_size: int = 0, lag: int = 0):
        if iters_per_epoch < 1 or epochs < 1:
            raise ValueError("a per-iteration schedule needs iters_per_epoch >= 1 and epochs >= 1")
        self.iters_per_epoch, self.total = iters_per_epoch, epochs * iters_per_epoch
        self.warmup_iters, self.warmup_start = warmup_iters, warmup_start
        self.cosine, self.eta_min, self.gamma = cosine, eta_min, gamma
        self.milestones, self.step_size, self.lag = sorted(milestones), step_size, lag
        super().__init__(learning_rate=lr)

    def value(self, s: int) -> float:
        """The schedule at iteration `s`, without the lag."""
        warm = 1.0
        if s < self.warmup_iters:
            warm = self.warmup_start + (1.0 - self.warmup_start) * s / self.warmup_iters
        if self.cosine:
            if s < self.warmup_iters:
                return warm * self.base_lr
            span = max(self.total - self.warmup_iters, 1)
            progress = min(s - self.warmup_iters, span) / span
            return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2
        epoch = s // self.iters_per_epoch
        decays = sum(epoch >= m for m in self.milestones) if self.milestones else (
            epoch // self.step_size if self.step_size else 0)
        return warm * self.base_lr * self.gamma ** decays

    def get_lr(self) -> float:
        return self.value(max(self.last_epoch - self.lag, 0))


def trainable_parameters(model: paddle.nn.Layer) -> List[paddle.Tensor]:
    """Parameters that receive gradients. Frozen ones (FRN's alpha/beta during pre-training,
    BatchNorm statistics) get no update and, as in the reference, no weight decay."""
    return [p for p in model.parameters() if not p.stop_gradient]


def build_optimizer(model: paddle.nn.Layer, scheduler, name: str = "sgd", weight_decay: float = 5e-4,
                    momentum: float = 0.9, nesterov: bool = True,
                    groups: Optional[List[Tuple[List[paddle.Tensor], float]]] = None) -> paddle.optimizer.Optimizer:
    """SGD with momentum/Nesterov and L2 weight decay on every parameter, or Adam with L2
    added to the gradient (torch's Adam `weight_decay`, not AdamW).

    `groups` ([(parameters, LR factor)], e.g. MTL's two Adam groups) become parameter groups
    whose learning rate is the schedule's times the factor; default: every trainable
    parameter at the schedule's rate.
    """
    # parameters, or parameter-group dicts (which Paddle types as a TypedDict per optimiser)
    params: List[Any]
    if groups is None or (len(groups) == 1 and groups[0][1] == 1.0):
        params = list(groups[0][0]) if groups else trainable_parameters(model)
    else:
        params = [{"params": list(ps), "learning_rate": float(factor)} for ps, factor in groups if ps]
    decay = paddle.regularizer.L2Decay(weight_decay) if weight_decay else None
    if name == "sgd":
        return paddle.optimizer.Momentum(learning_rate=scheduler, momentum=momentum, parameters=params,
                                         use_nesterov=nesterov, weight_decay=decay)
    if name == "adam":
        return paddle.optimizer.Adam(learning_rate=scheduler, beta1=0.9, beta2=0.999, epsilon=1e-8,
                                     parameters=params, weight_decay=decay)
    raise ValueError(f"unknown optimizer {name!r}")


def sgd_dampened_step(param: paddle.Tensor, grad: paddle.Tensor, buf: Optional[paddle.Tensor], lr: float,
                      momentum: float = 0.9, dampening: float = 0.9,
                      weight_decay: float = 0.0) -> Tuple[paddle.Tensor, paddle.Tensor]:
    """One step of PyTorch's SGD with momentum and dampening (Paddle's Momentum has no
    dampening): g = grad + weight_decay * param; the first step's buffer is g itself, later
    buf = momentum * buf + (1 - dampening) * g; param <- param - lr * buf. Returns (param, buf).
    Elementwise, so it updates a stack of independent parameters (one per episode) at once."""
    if weight_decay:
        grad = grad + weight_decay * param
    buf = grad if buf is None else momentum * buf + (1 - dampening) * grad
    return param - lr * buf, buf


def reset_optimizer_state(optimizer: paddle.optimizer.Optimizer) -> None:
    """Give `optimizer` the per-parameter state of a new one (zero momentum and Adam moments,
    Adam's beta powers back to beta), keeping its learning-rate schedule: what re-creating the
    optimizer every epoch does in the reference SimTrans scripts."""
    betas = {"beta1_pow_acc": getattr(optimizer, "_beta1", None), "beta2_pow_acc": getattr(optimizer, "_beta2", None)}
    for name, value in optimizer.state_dict().items():
        if not isinstance(value, paddle.Tensor):
            continue  # the LR scheduler's state
        beta = next((b for key, b in betas.items() if key in name), None)
        if beta is None:
            value.zero_()
        else:
            paddle.assign(paddle.full_like(value, float(beta)), output=value)

"""Optimiser and learning-rate schedule, as the reference's `get_opt` (spec §5)."""
from typing import List, Optional, Sequence, Tuple

import paddle


def build_scheduler(lr: float, gamma: float, milestones: Optional[Sequence[int]] = None,
                    step_size: Optional[int] = None) -> paddle.optimizer.lr.LRScheduler:
    """MultiStepDecay at `milestones` (epochs), or StepDecay every `step_size` epochs.

    Stepped once per epoch, so the LR in effect during epoch e is the reference's.
    """
    if milestones:
        return paddle.optimizer.lr.MultiStepDecay(lr, milestones=list(milestones), gamma=gamma)
    if step_size:
        return paddle.optimizer.lr.StepDecay(lr, step_size=step_size, gamma=gamma)
    return paddle.optimizer.lr.MultiStepDecay(lr, milestones=[10 ** 9], gamma=gamma)  # constant


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

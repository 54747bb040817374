"""Learning-rate schedules with linear warm-up (Detectron's ``WarmupMultiStepLR`` / ``WarmupCosineLR``)."""

from __future__ import annotations

import bisect
import math
from typing import Sequence

import torch

from orcnn_core.engine.config import SolverConfig


def lr_factor(iteration: int, *, max_iter: int, schedule: str, steps: Sequence[int] = (),
              gamma: float = 0.1, warmup_iters: int = 0, warmup_factor: float = 1e-3) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based)."""
    if schedule == "step":
        factor = gamma ** bisect.bisect_right(list(steps), iteration)
    elif schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * min(iteration, max_iter) / max_iter))
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    if iteration < warmup_iters:
        # Linear ramp from warmup_factor to 1 over the warm-up iterations.
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1.0 - alpha) + alpha
    return factor


class WarmupLRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Sets every group's lr to ``base_lr * lr_factor(iteration)``; call ``step()`` once per iteration.

    Its ``state_dict()`` holds only numbers and lists, so checkpoints can keep it as JSON.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, solver: SolverConfig, last_epoch: int = -1):
        self.max_iter = solver.max_iter
        self.schedule = solver.schedule
        self.steps = list(solver.steps)
        self.gamma = solver.gamma
        self.warmup_iters = solver.warmup_iters
        self.warmup_factor = solver.warmup_factor
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Learning rates of the parameter groups at the current iteration."""
        factor = lr_factor(self.last_epoch, max_iter=self.max_iter, schedule=self.schedule, steps=self.steps,
                           gamma=self.gamma, warmup_iters=self.warmup_iters,
                           warmup_factor=self.warmup_factor)
        return [base_lr * factor for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


def build_optimizer(model: torch.nn.Module, solver: SolverConfig) -> torch.optim.SGD:
    """SGD over the trainable parameters; no weight decay on normalisation weights and biases."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        # 1-d tensors are biases and norm scales: decaying them only hurts (Detectron's WEIGHT_DECAY_NORM=0).
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": solver.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=solver.base_lr, momentum=solver.momentum)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, solver: SolverConfig) -> WarmupLRScheduler:
    """The warm-up + step/cosine scheduler the solver config asks for."""
    return WarmupLRScheduler(optimizer, solver)

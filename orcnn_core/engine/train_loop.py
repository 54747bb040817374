"""The training loop (detectron2's ``train_loop.py``): ``Trainer`` runs SGD iterations and calls hooks.

The loop itself only does forward / backward / step, with exact resume (optimizer, scheduler, RNG and
data position are checkpointed); everything periodic is a hook (``engine/hooks.py``), the data comes
from ``engine/train_data.py``, and ``engine/trainer.py``'s ``train()`` wires them together.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from orcnn_core.engine import distributed as dist_utils
from orcnn_core.engine.checkpoint import Checkpointer, TrainingState, capture_rng_state, restore_rng_state
from orcnn_core.engine.config import TrainConfig
from orcnn_core.engine.hooks import CurvePlotter, EvalHook, HookBase, MetricsLogger, PeriodicCheckpointer
from orcnn_core.engine.schedule import build_lr_scheduler, build_optimizer
from orcnn_core.engine.train_data import TrainData, infinite_batches
from orcnn_core.errors import ConfigError, OrcnnError

logger = logging.getLogger(__name__)


class TrainingDivergedError(OrcnnError, FloatingPointError):
    """A loss became NaN or infinite; training stops and the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """SGD training of an ORCNN model with hooks; use ``train()`` unless you need the parts."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, data: TrainData, out_dir: Path,
                 context: dist_utils.DistributedContext, device: torch.device, show_progress: bool = True):
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.context = context
        self.device = device
        self.data = data
        self.model_without_ddp = model.to(device)
        self.model: nn.Module = self.model_without_ddp
        if context.enabled:
            # Every variant's losses reach every trainable parameter (a variant builds only the mask
            # heads it trains), so DDP need not search the graph for unused ones each step.
            self.model = nn.parallel.DistributedDataParallel(
                self.model_without_ddp, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=False)
        solver = cfg.solver
        self.optimizer = build_optimizer(self.model_without_ddp, solver)
        self.scheduler = build_lr_scheduler(self.optimizer, solver)
        self.max_iter = solver.max_iter
        self.start_iter = 0
        self.iteration = -1
        self.completed = False
        self.last_losses: dict[str, float] = {}
        self.sec_per_iter = float("nan")
        self.extra_state: dict[str, Any] = {}
        self.checkpointer = Checkpointer(self.out_dir, keep=cfg.train.keep_checkpoints)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(solver.amp)
        if device.type != "cuda":
            self.amp_dtype = None  # the CPU path is plain fp32
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        if context.world_size > 0 and solver.batch_size % context.world_size:
            raise ConfigError(f"solver.batch_size ({solver.batch_size}) must be divisible by the number of "
                              f"processes ({context.world_size})")
        self.batch_per_rank = solver.batch_size // context.world_size
        self.hooks: list[HookBase] = []
        if context.is_main:
            metrics = MetricsLogger(self.out_dir, cfg.train.log_period, show_progress)
            self.register_hooks([
                metrics,
                # Evaluation first, so that a checkpoint taken at the same iteration knows the best AP.
                EvalHook(self._evaluate, cfg.train.eval_period, self.out_dir, metrics_logger=metrics)
                if data.has_val else None,
                PeriodicCheckpointer(self.checkpointer, cfg.train.checkpoint_period),
                CurvePlotter(self.out_dir),
            ])

    def register_hooks(self, hooks: Sequence[Optional[HookBase]]) -> None:
        """Add hooks, run in order."""
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self.hooks.append(hook)

    # ----------------------------------------------------------------------------- state / resume
    def training_state(self) -> TrainingState:
        """Everything needed to continue exactly after the current iteration."""
        rng_tensors, rng_scalars = capture_rng_state()
        return TrainingState(
            iteration=self.iteration + 1, optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), rng_tensors=rng_tensors, rng_scalars=rng_scalars,
            grad_scaler=self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            extra={**self.extra_state, "data_position": (self.iteration + 1) * self.cfg.solver.batch_size,
                   "world_size": self.context.world_size})

    def save_checkpoint(self, name: str) -> None:
        """Write a checkpoint (main process only; callers are main-process hooks)."""
        self.checkpointer.save(name, self.model_without_ddp, self.cfg.model, self.training_state())

    def resume(self) -> bool:
        """Load the newest checkpoint of ``out_dir`` if there is one; True when training resumes."""
        prefix = self.checkpointer.last_checkpoint()
        if prefix is None:
            logger.info("no checkpoint in %s: starting from scratch", self.out_dir)
            return False
        state = self.checkpointer.load(prefix, self.model_without_ddp)
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        if self.grad_scaler is not None and state.grad_scaler:
            self.grad_scaler.load_state_dict(state.grad_scaler)
        restore_rng_state(state.rng_tensors, state.rng_scalars)
        self.extra_state = dict(state.extra)
        self.start_iter = state.iteration
        logger.info("resumed from %s at iteration %d", prefix, self.start_iter)
        return True

    # ---------------------------------------------------------------------------------------- loop
    def train(self) -> None:
        """Run iterations ``start_iter .. max_iter - 1`` and the hooks."""
        batches = infinite_batches(self.data, self.batch_per_rank, seed=self.cfg.train.seed,
                                   rank=self.context.rank, world_size=self.context.world_size,
                                   start_iter=self.start_iter, num_workers=self.cfg.train.num_workers)
        self.iteration = self.start_iter - 1
        self.model.train()
        for hook in self.hooks:
            hook.before_train()
        try:
            for iteration in range(self.start_iter, self.max_iter):
                self.iteration = iteration
                started = time.perf_counter()
                images, targets = next(batches)
                self.run_step(images, targets)
                self.sec_per_iter = time.perf_counter() - started
                for hook in self.hooks:
                    hook.after_step()
                # Hooks on rank 0 (evaluation) take time; keep the ranks in step.
                if self.context.enabled and self._hooks_ran_long():
                    dist_utils.barrier(self.context)
            self.completed = True
        finally:
            for hook in self.hooks:
                hook.after_train()

    def _hooks_ran_long(self) -> bool:
        done = self.iteration + 1
        period = self.cfg.train.eval_period
        return bool(period and done % period == 0)

    def run_step(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> None:
        """One forward / backward / optimizer step."""
        images = [image.to(self.device, non_blocking=True) for image in images]
        targets = [{k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                    for k, v in t.items()} for t in targets]
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else nullcontext())
        with autocast:
            loss_dict = self.model(images, targets)
        losses = sum(loss_dict.values())
        values = {k: float(v.detach()) for k, v in loss_dict.items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if dist_utils.broadcast_flag(bool(bad), self.context):
            last = self.checkpointer.last_checkpoint() if self.context.is_main else None
            raise TrainingDivergedError(
                f"loss became non-finite at iteration {self.iteration}: "
                + (", ".join(f"{k}={values[k]}" for k in bad) if bad else "on another process")
                + f"; last good checkpoint: {last if last else 'none yet'} "
                  "(lower solver.base_lr or raise solver.warmup_iters, then --resume)")
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.unscale_(self.optimizer)
        else:
            losses.backward()
        if self.cfg.solver.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model_without_ddp.parameters(), self.cfg.solver.grad_clip)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        values["total_loss"] = float(sum(values.values()))
        self.last_losses = dist_utils.reduce_mean(values, self.context)

    # ---------------------------------------------------------------------------------- evaluation
    def _evaluate(self, model: nn.Module) -> dict[str, Any]:
        """AP on the validation split with the project's evaluator."""
        was_training = model.training
        try:
            return evaluate_model(model, self.cfg.model, self.data, self.device)
        finally:
            model.train(was_training)


def evaluate_model(model: nn.Module, model_config: Any, data: TrainData, device: torch.device,
                   batch_size: int = 4) -> dict[str, Any]:
    """Predict the validation images of ``data`` and score them with ``AmodalEvaluator``."""
    from orcnn_core.engine.predictor import Predictor
    from orcnn_core.evaluation import AmodalEvaluator
    from orcnn_core.structures import prediction_to_results

    predictor = Predictor(model, model_config, device=str(device))
    results: list[dict[str, Any]] = []
    records = data.val_records
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        predictions = predictor.predict_batch([data.val_image(r) for r in chunk], batch_size=batch_size)
        for record, prediction in zip(chunk, predictions):
            results.extend(prediction_to_results(prediction, record.image_id, record.file_name))
    return AmodalEvaluator(records, data.val_categories).evaluate(results)

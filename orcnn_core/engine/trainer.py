"""The training loop: ``Trainer`` runs SGD iterations and calls hooks (checkpoints, evaluation, logs).

Layout follows detectron2's engine: the loop itself only does forward / backward / step; everything
periodic is a ``HookBase`` object. ``train(cfg, out_dir)`` is the one-call API behind ``orcnn train``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from orcnn_core.engine import distributed as dist_utils
from orcnn_core.engine.checkpoint import (
    Checkpointer,
    TrainingState,
    atomic_save_weights,
    atomic_write_text,
    capture_rng_state,
    restore_rng_state,
)
from orcnn_core.engine.config import TrainConfig, load_train_config, train_config_to_dict
from orcnn_core.engine.schedule import build_lr_scheduler, build_optimizer
from orcnn_core.errors import ConfigError, DatasetError, OrcnnError, WeightsError
from orcnn_core.structures import ImageRecord

logger = logging.getLogger(__name__)


class TrainingDivergedError(OrcnnError, FloatingPointError):
    """A loss became NaN or infinite; training stops and the last good checkpoint is kept."""


# --------------------------------------------------------------------------------------------- data
class TrainData:
    """The training dataset plus the validation split (records, categories and a way to get pixels)."""

    def __init__(self, train_dataset: torch.utils.data.Dataset, val_records: list[ImageRecord],
                 val_categories: list[dict[str, Any]], val_image_fn):
        self.train_dataset = train_dataset
        self.val_records = val_records
        self.val_categories = val_categories
        self._val_image_fn = val_image_fn

    @property
    def has_val(self) -> bool:
        return bool(self.val_records)

    def val_image(self, record: ImageRecord) -> np.ndarray:
        """HxWx3 uint8 RGB pixels of a validation record."""
        return self._val_image_fn(record)


def _train_transforms(cfg: TrainConfig):
    from orcnn_core.data.transforms import build_transforms

    # Resizing is the model's job (GeneralizedRCNNTransform); only flip/jitter here.
    transforms = build_transforms(cfg.data, train=True, resize=False)
    return transforms if transforms.transforms else None


def synthetic_records(count: int, seed: int, classes: int, size: Sequence[int], occlusion: str
                      ) -> tuple[list[ImageRecord], list[np.ndarray]]:
    """Scenes ``0..count-1`` of ``orcnn synth --seed SEED`` (same ids and file names), generated in memory."""
    from orcnn_core.data import synth

    records, images, next_ann_id = [], [], 1
    for index in range(count):
        scene = synth.generate_scene(np.random.default_rng([seed, index]), classes=classes, size=tuple(size),
                                     occlusion=occlusion)
        record = synth.scene_to_record(scene, index + 1, f"{index:06d}.png", next_ann_id)
        next_ann_id += len(record.annotations)
        records.append(record)
        images.append(scene.image)
    return records, images


def build_train_data(cfg: TrainConfig) -> TrainData:
    """Datasets the ``data:`` section describes; a missing file is a DatasetError naming it."""
    from orcnn_core.data import AmodalDataset, SyntheticAmodalDataset, load_annotations, synth
    from orcnn_core.data.images import read_image_rgb

    model_cfg = cfg.model
    transforms = _train_transforms(cfg)
    if cfg.data.synthetic is not None:
        spec = cfg.data.synthetic
        if spec.classes != model_cfg.num_classes:
            raise ConfigError(f"data.synthetic.classes ({spec.classes}) must equal model.num_classes "
                              f"({model_cfg.num_classes})")
        train_set = SyntheticAmodalDataset(spec.images, seed=spec.seed, classes=spec.classes, size=spec.size,
                                           occlusion=spec.occlusion, transforms=transforms)
        val_records, val_images = synthetic_records(spec.val_images, spec.val_seed, spec.classes, spec.size,
                                                    spec.occlusion)
        categories = synth.categories(spec.classes)
        by_id = {r.image_id: image for r, image in zip(val_records, val_images)}
        return TrainData(train_set, val_records, categories, lambda record: by_id[record.image_id])

    def load(split: str, spec) -> Any:
        path = Path(spec.annotations)
        if not path.exists():
            raise DatasetError(f"data.{split}.annotations: file not found: {path}")
        annotations = load_annotations(path, None if spec.format == "auto" else spec.format)
        if spec.image_root:
            root = Path(spec.image_root)
            if not root.is_dir():
                raise DatasetError(f"data.{split}.image_root: folder not found: {root}")
            annotations.image_root = root
        return annotations

    train_ann = load("train", cfg.data.train)
    known = {int(c["id"]) for c in train_ann.categories}
    missing = [c for c in model_cfg.category_ids if c not in known]
    if missing:
        raise ConfigError(f"model.category_ids {missing} are not categories of {cfg.data.train.annotations} "
                          f"(it has {sorted(known)})")
    train_set = AmodalDataset(train_ann, category_ids=model_cfg.category_ids, transforms=transforms)
    if cfg.data.val is None:
        return TrainData(train_set, [], [], lambda record: None)
    val_ann = load("val", cfg.data.val)
    categories = [c for c in val_ann.categories if int(c["id"]) in set(model_cfg.category_ids)]
    return TrainData(train_set, list(val_ann.images), categories,
                     lambda record: read_image_rgb(val_ann.image_path(record)))


class ResumableSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices, a fresh permutation per epoch, fixed by ``seed``.

    Position ``p`` of the global stream is a pure function of ``(seed, p)``; iteration ``i`` of rank
    ``r`` reads positions ``(i * world_size + r) * batch .. + batch``, so a run resumed at iteration
    ``i`` sees exactly the samples the uninterrupted run would have seen.
    """

    def __init__(self, size: int, batch_per_rank: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_iter: int = 0):
        if size < 1:
            raise DatasetError("the training dataset is empty")
        self.size, self.batch, self.seed = size, batch_per_rank, seed
        self.rank, self.world_size, self.start_iter = rank, world_size, start_iter
        self._epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=generator).tolist()
        return self._perm[offset]

    def __iter__(self) -> Iterator[int]:
        iteration = self.start_iter
        while True:
            first = (iteration * self.world_size + self.rank) * self.batch
            for position in range(first, first + self.batch):
                yield self._index(position)
            iteration += 1


def infinite_batches(data: TrainData, batch_per_rank: int, *, seed: int, rank: int, world_size: int,
                     start_iter: int, num_workers: int) -> Iterator[tuple[list, list]]:
    """Endless ``(images, targets)`` batches for this process starting at ``start_iter``."""
    from orcnn_core.data import collate

    sampler = ResumableSampler(len(data.train_dataset), batch_per_rank, seed, rank, world_size, start_iter)
    loader = torch.utils.data.DataLoader(
        data.train_dataset, batch_size=batch_per_rank, sampler=sampler, num_workers=num_workers,
        collate_fn=collate, persistent_workers=num_workers > 0,
        # Own generator: creating the loader must not draw from the global torch RNG (exact resume).
        generator=torch.Generator().manual_seed(seed * 7919 + rank))
    return iter(loader)


# ------------------------------------------------------------------------------------------- hooks
class HookBase:
    """Called by the Trainer around the loop; ``self.trainer`` is set on registration."""

    trainer: Trainer

    def before_train(self) -> None:
        """Once, before the first iteration."""

    def after_step(self) -> None:
        """After every iteration (``trainer.iteration`` is the iteration just run)."""

    def after_train(self) -> None:
        """Once, after the loop ends (also after an error; check ``trainer.completed``)."""


class MetricsLogger(HookBase):
    """Appends losses / learning rate to ``metrics.jsonl`` every ``period`` iterations, shows a tqdm bar."""

    def __init__(self, out_dir: Path, period: int, show_progress: bool = True):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.period = period
        self.show_progress = show_progress
        self._bar = None
        self._window: list[dict[str, float]] = []

    def before_train(self) -> None:
        if self.show_progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self.trainer.max_iter, initial=self.trainer.start_iter,
                             desc="train", dynamic_ncols=True)

    def after_step(self) -> None:
        trainer = self.trainer
        self._window.append(trainer.last_losses)
        if self._bar is not None:
            self._bar.update(1)
            shown = {k.replace("loss_", ""): f"{v:.3f}" for k, v in trainer.last_losses.items()}
            self._bar.set_postfix(shown, refresh=False)
        if (trainer.iteration + 1) % self.period == 0 or trainer.iteration + 1 == trainer.max_iter:
            keys = self._window[-1].keys()
            averaged = {k: float(np.median([w[k] for w in self._window if k in w])) for k in keys}
            self.write({"iteration": trainer.iteration + 1, "lr": trainer.optimizer.param_groups[0]["lr"],
                        "time": time.time(), "sec_per_iter": trainer.sec_per_iter, **averaged})
            self._window.clear()

    def write(self, record: dict[str, Any]) -> None:
        """Append one JSON line (main process only)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def after_train(self) -> None:
        if self._bar is not None:
            self._bar.close()


class PeriodicCheckpointer(HookBase):
    """Saves ``model_NNNNNNN`` every ``period`` iterations and ``model_final`` at the end."""

    def __init__(self, checkpointer: Checkpointer, period: int):
        self.checkpointer = checkpointer
        self.period = period

    def after_step(self) -> None:
        done = self.trainer.iteration + 1
        if done == self.trainer.max_iter:
            return  # after_train writes model_final
        if self.period and done % self.period == 0:
            self.trainer.save_checkpoint(f"model_{done:07d}")

    def after_train(self) -> None:
        if self.trainer.completed:
            self.trainer.save_checkpoint("model_final")


class EvalHook(HookBase):
    """Evaluates every ``period`` iterations and at the end; keeps ``best.safetensors`` by ``metric``."""

    def __init__(self, evaluate_fn, period: int, out_dir: Path, metric: str = "AP_AV",
                 metrics_logger: Optional[MetricsLogger] = None):
        self.evaluate_fn = evaluate_fn
        self.period = period
        self.out_dir = Path(out_dir)
        self.metric = metric
        self.metrics_logger = metrics_logger
        self.best: Optional[float] = None

    def before_train(self) -> None:
        self.best = self.trainer.extra_state.get("best_metric", self.best)

    def _run(self) -> None:
        trainer = self.trainer
        with preserved_rng():  # evaluation must not shift the training's random stream
            metrics = self.evaluate_fn(trainer.model_without_ddp)
        value = metrics.get("all", {}).get(self.metric)
        record = {"iteration": trainer.iteration + 1, "eval": _flat_metrics(metrics)}
        if self.metrics_logger is not None:
            self.metrics_logger.write(record)
        logger.info("iteration %d: %s = %s", trainer.iteration + 1, self.metric, value)
        if value is not None and (self.best is None or value > self.best):
            self.best = float(value)
            trainer.extra_state["best_metric"] = self.best
            atomic_save_weights(trainer.model_without_ddp, trainer.cfg.model,
                                self.out_dir / "best.safetensors")
            atomic_write_text(self.out_dir / "best_metrics.json",
                              json.dumps({"iteration": trainer.iteration + 1, "metric": self.metric,
                                          "value": self.best, "metrics": metrics}, indent=1))

    def after_step(self) -> None:
        done = self.trainer.iteration + 1
        if self.period and done % self.period == 0 and done != self.trainer.max_iter:
            self._run()

    def after_train(self) -> None:
        if self.trainer.completed:
            self._run()


class CurvePlotter(HookBase):
    """Draws ``loss_curve.png`` and ``ap_curve.png`` from ``metrics.jsonl`` at the end of training."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)

    def after_train(self) -> None:
        try:
            plot_metrics(self.out_dir / "metrics.jsonl", self.out_dir)
        except (OSError, ValueError) as exc:  # a plot never fails a finished training run
            logger.warning("could not draw curves: %s", exc)


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for group, values in metrics.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, (int, float)) or value is None:
                    flat[f"{group}/{key}"] = value
    return flat


def plot_metrics(jsonl_path: Path, out_dir: Path) -> list[Path]:
    """Loss and AP curves of a ``metrics.jsonl`` as PNGs (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses: dict[str, list[tuple[int, float]]] = {}
    aps: dict[str, list[tuple[int, float]]] = {}
    for line in Path(jsonl_path).read_text().splitlines():
        record = json.loads(line)
        if "eval" in record:
            for key, value in record["eval"].items():
                if key.startswith("all/AP") and value is not None:
                    aps.setdefault(key.split("/", 1)[1], []).append((record["iteration"], value))
        else:
            for key, value in record.items():
                if key.startswith("loss") or key == "total_loss":
                    losses.setdefault(key, []).append((record["iteration"], value))
    written = []
    for name, series, ylabel in (("loss_curve.png", losses, "loss"), ("ap_curve.png", aps, "AP (%)")):
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for key, points in sorted(series.items()):
            ax.plot([p[0] for p in points], [p[1] for p in points], label=key,
                    marker="." if len(points) < 30 else "")
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        if ylabel == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    return written


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without changing the python / numpy / torch random states seen afterwards."""
    tensors, scalars = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(tensors, scalars)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------ trainer
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


# ------------------------------------------------------------------------------------------ train()
def train(cfg: TrainConfig | str | Path, out_dir: str | Path, resume: bool = False,
          init_modal: Optional[str | Path] = None, show_progress: bool = True) -> nn.Module:
    """Train a model as ``cfg`` says, writing checkpoints / logs / curves to ``out_dir``; returns the model.

    Under ``torchrun`` every process calls this; rank 0 alone writes files.
    """
    from orcnn_core.model import build_model

    if not isinstance(cfg, TrainConfig):
        cfg = load_train_config(cfg)
    out_dir = Path(out_dir)
    context = dist_utils.context_from_env()
    device = dist_utils.resolve_device(cfg.train.device, context.local_rank, field="train.device")
    context = dist_utils.init_distributed(device, context=context)
    try:
        seed_everything(cfg.train.seed)
        data = build_train_data(cfg)  # before the model: a missing dataset fails fast
        model = build_model(cfg.model)
        if init_modal is not None:
            init_mask_heads(model, cfg, Path(init_modal))
        if context.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / "config.yaml", _yaml_dump(train_config_to_dict(cfg)))
        trainer = Trainer(cfg, model, data, out_dir, context, device, show_progress=show_progress)
        if resume:
            trainer.resume()
        elif context.is_main and (out_dir / "last_checkpoint").is_file():
            logger.warning("%s already holds checkpoints; starting over (use --resume to continue)", out_dir)
        trainer.train()
        dist_utils.barrier(context)  # rank 0 may still be evaluating / saving: leave together
        return trainer.model_without_ddp
    finally:
        dist_utils.shutdown(context)


def init_mask_heads(model: nn.Module, cfg: TrainConfig, path: Path) -> None:
    """Initialise both mask heads from a modal Mask R-CNN state dict; a class-count mismatch is an error."""
    from orcnn_core.model import init_mask_heads_from_modal

    if not path.is_file():
        raise WeightsError(f"--init-modal: file not found: {path}")
    try:
        init_mask_heads_from_modal(model, str(path))
    except WeightsError as exc:
        raise WeightsError(f"--init-modal {path}: {exc} (the config has model.num_classes = "
                           f"{cfg.model.num_classes})") from exc


def _yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)

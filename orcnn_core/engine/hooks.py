"""Hooks of the training loop (detectron2's ``hooks.py``): everything periodic around the SGD steps.

A hook is called before training, after every step and after training; ``self.trainer`` is the
``Trainer`` it was registered with. Metrics logging, periodic checkpoints, evaluation (keeping the
best weights) and the loss / AP curves are hooks; the loop itself only steps.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import numpy as np

from orcnn_core.engine.checkpoint import (
    Checkpointer,
    atomic_save_weights,
    capture_rng_state,
    restore_rng_state,
)
from orcnn_core.fileio import atomic_write_text

if TYPE_CHECKING:
    from orcnn_core.engine.train_loop import Trainer

logger = logging.getLogger(__name__)


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

"""``TrainConfig``: the sections of a training YAML (``model:``, ``data:``, ``solver:``, ``train:``).

Every section is a dataclass filled with ``orcnn_core.config.from_dict``, so an unknown key is a
``ConfigError`` naming it (``solver.lrr``). The ``model:`` section belongs to the model package
(``ModelConfig``); it is validated here too, so a bad config fails before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from orcnn_core.config import from_dict, load_yaml, to_dict
from orcnn_core.errors import ConfigError

SCHEDULES = ("step", "cosine")
AMP_MODES = ("none", "bf16", "fp16")


@dataclass
class DatasetSpec:
    """One annotated split on disk: an annotation file, its format and the folder of its images."""

    annotations: str = ""
    format: str = "auto"          # a format name of orcnn_core.data.load_annotations, or "auto"
    image_root: str = ""          # default: the annotation file's folder

    def validate(self) -> None:
        """Raise ConfigError on an empty annotation path."""
        if not self.annotations:
            raise ConfigError("data split: 'annotations' (path of the annotation file) is required")


@dataclass
class SyntheticSpec:
    """Scenes generated in memory by ``orcnn_core.data.synth`` (no files needed)."""

    images: int = 200             # training scenes
    val_images: int = 20          # validation scenes, generated with ``val_seed``
    seed: int = 0
    val_seed: int = 12345
    classes: int = 3
    size: list = field(default_factory=lambda: [320, 240])   # width, height
    occlusion: str = "mid"        # how strongly objects overlap: a level of orcnn_core.data.synth

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of range."""
        for name in ("images", "val_images", "classes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "val_images" else 1):
                raise ConfigError(f"data.synthetic.{name}: must be a positive integer (got {value!r})")
        if (not isinstance(self.size, (list, tuple)) or len(self.size) != 2
                or not all(isinstance(v, int) and v >= 16 for v in self.size)):
            raise ConfigError(f"data.synthetic.size: must be [width, height] >= 16 (got {self.size!r})")


@dataclass
class DataConfig:
    """Where training and validation images come from: files (``train``/``val``) or ``synthetic``."""

    train: Optional[DatasetSpec] = None
    val: Optional[DatasetSpec] = None
    synthetic: Optional[SyntheticSpec] = None
    flip_prob: float = 0.5          # probability of a left-right flip of a training image
    color_jitter: float = 0.0       # brightness / contrast / saturation jitter strength; 0 = off

    def check_sources(self) -> None:
        """Exactly one source of training data (called once the optional splits are filled in)."""
        if (self.train is None) == (self.synthetic is None):
            raise ConfigError("data: give either 'train' (+ optional 'val') or 'synthetic', not both/neither")
        if self.synthetic is not None and self.val is not None:
            raise ConfigError("data.val: not used with data.synthetic (set data.synthetic.val_images)")


@dataclass
class SolverConfig:
    """SGD with warm-up and a step or cosine schedule (Detectron's solver)."""

    base_lr: float = 0.02          # Detectron: 0.02 for a batch of 16 images
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 1000
    warmup_factor: float = 1.0 / 1000
    schedule: str = "step"         # step | cosine
    steps: list = field(default_factory=lambda: [60000, 80000])
    gamma: float = 0.1
    max_iter: int = 90000
    batch_size: int = 16           # images per iteration over all processes
    grad_clip: float = 0.0         # max global L2 norm of the gradients; 0 = off
    amp: str = "none"              # none | bf16 | fp16 (CUDA only; CPU always trains in fp32)

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of range."""
        def fail(name: str, why: str) -> None:
            raise ConfigError(f"solver.{name}: {why} (got {getattr(self, name)!r})")

        if not isinstance(self.base_lr, (int, float)) or self.base_lr <= 0:
            fail("base_lr", "must be > 0")
        if self.schedule not in SCHEDULES:
            fail("schedule", f"must be one of {', '.join(SCHEDULES)}")
        if self.amp not in AMP_MODES:
            fail("amp", f"must be one of {', '.join(AMP_MODES)}")
        for name in ("max_iter", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, "must be a positive integer")
        if not isinstance(self.warmup_iters, int) or self.warmup_iters < 0:
            fail("warmup_iters", "must be an integer >= 0")
        if not 0 < self.warmup_factor <= 1:
            fail("warmup_factor", "must be in (0, 1]")
        steps = list(self.steps)
        if not all(isinstance(s, int) and s > 0 for s in steps) or steps != sorted(steps):
            fail("steps", "must be increasing positive iteration numbers")
        if self.grad_clip < 0:
            fail("grad_clip", "must be >= 0")


@dataclass
class TrainLoopConfig:
    """Loop bookkeeping: seed, how often to evaluate, checkpoint and log, data workers, device."""

    seed: int = 0
    eval_period: int = 5000        # iterations; 0 = only at the end
    checkpoint_period: int = 5000  # iterations; the last iteration always writes one
    log_period: int = 20
    num_workers: int = 2
    device: str = "auto"           # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    keep_checkpoints: int = 2      # periodic checkpoints kept on disk (best/final always kept)

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of range."""
        for name in ("eval_period", "checkpoint_period", "num_workers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: must be an integer >= 0 (got {getattr(self, name)!r})")
        for name in ("log_period", "keep_checkpoints"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"train.{name}: must be an integer >= 1 (got {getattr(self, name)!r})")


@dataclass
class TrainConfig:
    """A whole training config. ``model`` is the ``ModelConfig`` of orcnn_core.model.config."""

    model: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)


_SECTIONS = ("model", "data", "solver", "train")


def train_config_from_dict(data: dict[str, Any], where: str = "") -> TrainConfig:
    """Build and validate a TrainConfig; an unknown key anywhere is a ConfigError naming it."""
    from orcnn_core.model.config import model_config_from_dict

    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of sections {', '.join(_SECTIONS)}")
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"{where + ': ' if where else ''}unknown config section '{unknown[0]}' "
                          f"(known: {', '.join(_SECTIONS)})")
    try:
        return TrainConfig(
            model=model_config_from_dict(data.get("model")),
            data=_data_config_from_dict(data.get("data")),
            solver=from_dict(SolverConfig, data.get("solver"), "solver"),
            train=from_dict(TrainLoopConfig, data.get("train"), "train"),
        )
    except ConfigError as exc:
        if where:
            raise ConfigError(f"{where}: {exc}") from exc
        raise


def _data_config_from_dict(data: dict[str, Any] | None) -> DataConfig:
    base = from_dict(DataConfig, data, "data")  # the Optional splits are dataclasses too
    base.check_sources()
    return base


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training YAML (all four sections)."""
    return train_config_from_dict(load_yaml(path), where=str(path))


def train_config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain-dict form (the ``config.yaml`` written next to the checkpoints)."""
    return {name: to_dict(getattr(cfg, name)) for name in _SECTIONS}

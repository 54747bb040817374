"""``train(cfg, out_dir)``: the one entry point behind ``orcnn train`` (detectron2's ``defaults.py``).

It builds the data (``train_data``), the model, the ``Trainer`` (``train_loop``) with its hooks
(``hooks``), resumes when asked, and runs the loop; under ``torchrun`` every process calls it and
rank 0 alone writes files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from torch import nn

from orcnn_core.engine import distributed as dist_utils
from orcnn_core.engine.config import TrainConfig, load_train_config, train_config_to_dict
from orcnn_core.engine.train_data import build_train_data
from orcnn_core.engine.train_loop import Trainer, TrainingDivergedError, seed_everything
from orcnn_core.errors import WeightsError
from orcnn_core.fileio import atomic_write_text

__all__ = ["Trainer", "TrainingDivergedError", "build_train_data", "train"]

logger = logging.getLogger(__name__)


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

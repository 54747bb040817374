"""Weights I/O: ``NAME.safetensors`` + ``NAME.json`` sidecar (format version and ModelConfig). No pickle.

Also reads local torchvision state dicts (``.safetensors``, or ``.pth`` through
``torch.load(weights_only=True)``) to initialise backbones and mask heads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from orcnn_core.config import to_dict
from orcnn_core.errors import ConfigError, WeightsError
from orcnn_core.model.config import ModelConfig, model_config_from_dict

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Fields that change the tensors in the file; a file made with other values cannot be loaded.
ARCHITECTURE_FIELDS = ("variant", "num_classes", "class_agnostic_masks", "backbone", "norm",
                       "backbone_width_mult", "fpn_channels", "box_representation_size",
                       "mask_head_channels", "anchor_sizes", "aspect_ratios")


def weight_paths(path: str | Path) -> tuple[Path, Path]:
    """(``NAME.safetensors``, ``NAME.json``) for ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local ``.safetensors`` or ``.pth``/``.pt`` state dict (never unpickles objects)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise several unrelated types for bad files
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    for wrapper in ("model", "state_dict"):  # training checkpoints nest the state dict
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a flat state dict of tensors")
    return state


def check_finite(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """WeightsError naming the file and the first tensor holding NaN or Inf."""
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise WeightsError(f"weights file {path}: tensor '{key}' holds NaN or Inf values")


def save_weights(model: nn.Module, config: ModelConfig, path: str | Path) -> Path:
    """Write ``NAME.safetensors`` and its ``NAME.json`` sidecar; returns the .safetensors path."""
    from safetensors.torch import save_file

    tensors_path, sidecar_path = weight_paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tensors_path), metadata={"format": "pt", "variant": config.variant})
    sidecar = {"format_version": FORMAT_VERSION, "model": to_dict(config)}
    sidecar_path.write_text(json.dumps(sidecar, indent=2) + "\n")
    return tensors_path


def read_sidecar(path: str | Path) -> ModelConfig:
    """The ModelConfig stored next to weights ``path``; WeightsError naming the file if bad."""
    _, sidecar_path = weight_paths(path)
    if not sidecar_path.is_file():
        raise WeightsError(f"weights sidecar not found: {sidecar_path} (expected next to the .safetensors)")
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"weights sidecar {sidecar_path} is not valid JSON: {exc}") from exc
    if not isinstance(sidecar, dict) or "model" not in sidecar:
        raise WeightsError(f"weights sidecar {sidecar_path} has no 'model' section")
    if sidecar.get("format_version") != FORMAT_VERSION:
        raise WeightsError(f"weights sidecar {sidecar_path}: format_version "
                           f"{sidecar.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
    try:
        return model_config_from_dict(sidecar["model"])
    except ConfigError as exc:
        raise WeightsError(f"weights sidecar {sidecar_path}: {exc}") from exc


def check_compatible(found: ModelConfig, expected: ModelConfig, path: str | Path) -> None:
    """WeightsError naming both values when the file was made for another architecture."""
    for name in ARCHITECTURE_FIELDS:
        if getattr(found, name) != getattr(expected, name):
            raise WeightsError(f"weights file {path} was made for {name}={getattr(found, name)!r}, "
                               f"but {name}={getattr(expected, name)!r} was expected")


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Strictly load ``state`` into ``model``: WeightsError on missing/unexpected keys or shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise WeightsError(f"weights file {path} does not fit the model: "
                           f"{len(missing)} missing keys {missing[:3]}, "
                           f"{len(unexpected)} unexpected keys {unexpected[:3]}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise WeightsError(f"weights file {path}: tensor '{key}' has shape {tuple(value.shape)}, "
                               f"the model expects {tuple(own[key].shape)}")
    model.load_state_dict(state, strict=True)


def load_weights(path: str | Path, expected: Optional[ModelConfig] = None) -> tuple[nn.Module, ModelConfig]:
    """Build the model described by the sidecar and load its tensors; returns (model in eval mode, config).

    With ``expected``, a file made for another variant, class count or architecture is a WeightsError.
    """
    from orcnn_core.model.builder import build_model

    tensors_path, _ = weight_paths(path)
    config = read_sidecar(path)
    if expected is not None:
        check_compatible(config, expected, tensors_path)
    state = load_state_dict_file(tensors_path)
    check_finite(state, tensors_path)
    # The file holds every tensor: do not read the ImageNet file the model was once started from.
    model = build_model(dataclasses.replace(config, backbone_weights=None))
    load_model_state(model, state, tensors_path)
    model.eval()
    return model, config


# --- mask-head initialisation from a modal torchvision Mask R-CNN ---------------------------------

MODAL_PREFIXES = {"roi_heads.mask_head.": "head.", "roi_heads.mask_predictor.": "predictor."}


def _modal_key(key: str) -> Optional[str]:
    """Branch-relative key of a torchvision mask-head key (old ``mask_fcnN`` names too), else None."""
    for prefix, target in MODAL_PREFIXES.items():
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if rest.startswith("mask_fcn") and rest[8:9].isdigit():  # torchvision < 0.13 layout
                index, _, kind = rest[8:].partition(".")
                rest = f"{int(index) - 1}.0.{kind}"
            return target + rest
    return None


def mask_branches(model: nn.Module) -> dict[str, nn.Module]:
    """Every mask branch of a model (both members of an ensemble), by qualified name."""
    branches = {}
    for name, module in model.named_modules():
        if name.endswith("mask_heads.branches"):
            for kind, branch in module.items():
                branches[f"{name}.{kind}"] = branch
    return branches


def init_mask_heads_from_modal(model: nn.Module, path: str | Path, *, skip_predictor: bool = False) -> dict:
    """Initialise every mask branch (amodal and visible) from ONE modal torchvision Mask R-CNN mask head.

    ``skip_predictor`` leaves the predictor (deconv + class logits) as it is, e.g. for another class
    count. Returns ``{"loaded": [...], "missing": [...], "skipped": [...]}`` of model keys.
    """
    state = load_state_dict_file(path)
    modal = {_modal_key(k): v for k, v in state.items() if _modal_key(k) is not None}
    if not modal:
        raise WeightsError(f"{path} holds no torchvision mask head "
                           f"(keys 'roi_heads.mask_head.*', 'roi_heads.mask_predictor.*')")
    check_finite(modal, path)
    report: dict[str, list] = {"loaded": [], "missing": [], "skipped": []}
    for branch_name, branch in mask_branches(model).items():
        own = branch.state_dict()
        update = {}
        for key, value in own.items():
            full = f"{branch_name}.{key}"
            if skip_predictor and key.startswith("predictor."):
                report["skipped"].append(full)
            elif key not in modal:
                report["missing"].append(full)
            elif modal[key].shape != value.shape:
                source = next(k for k in state if _modal_key(k) == key)
                raise WeightsError(f"{path}: '{source}' has shape {tuple(modal[key].shape)}, but "
                                   f"'{full}' needs {tuple(value.shape)} (another class count? "
                                   f"use skip_predictor)")
            else:
                update[key] = modal[key]
                report["loaded"].append(full)
        branch.load_state_dict(update, strict=False)
    logger.info("mask heads from %s: %d tensors loaded, %d missing, %d skipped", path,
                len(report["loaded"]), len(report["missing"]), len(report["skipped"]))
    if report["missing"]:
        logger.warning("mask-head keys not in %s: %s", path, ", ".join(report["missing"]))
    return report

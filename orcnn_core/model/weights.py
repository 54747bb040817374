"""Weights files at the bottom of the model package: ``NAME.safetensors`` + ``NAME.json`` sidecar.

This module only reads and writes files and checks tensors; it imports nothing else of the model
package but its config, so every other module (backbone, builder, modal_init) can use it without an
import circle. Building a model from a file is ``orcnn_core.model.builder.load_weights``.

Also reads local torchvision state dicts (``.safetensors``, or ``.pth`` through
``torch.load(weights_only=True)``) to initialise backbones and mask heads. Nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from orcnn_core.config import to_dict
from orcnn_core.errors import ConfigError, WeightsError
from orcnn_core.model.config import ModelConfig, model_config_from_dict

FORMAT_VERSION = 1
# Fields that change the tensors in the file; a file made with other values cannot be loaded.
ARCHITECTURE_FIELDS = ("variant", "num_classes", "class_agnostic_masks", "backbone", "norm",
                       "backbone_width_mult", "fpn_channels", "box_representation_size",
                       "mask_head_channels", "anchor_sizes", "aspect_ratios")
# No trained detector holds a weight or statistic this large: such a file was scaled, corrupted or
# written for another purpose, and would load silently and then detect nothing.
MAX_ABS_WEIGHT = 1e6
# Integer tensors a model state dict may hold (BatchNorm's step counter); every other tensor is float.
INTEGER_KEY_SUFFIXES = ("num_batches_tracked",)


def weight_paths(path: str | Path) -> tuple[Path, Path]:
    """(``NAME.safetensors``, ``NAME.json``) for ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (torch's pickle refusal is a paragraph of advice)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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
        if "weights_only" in str(exc):
            # torch's refusal advises weights_only=False, which would run code from the file.
            raise WeightsError(f"cannot read weights file {path}: it holds pickled Python objects, "
                               "which are never loaded (save a plain state dict, or .safetensors)") from exc
        raise WeightsError(f"cannot read weights file {path}: {_first_line(exc)}") from exc
    for wrapper in ("model", "state_dict"):  # training checkpoints nest the state dict
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a flat state dict of tensors")
    return state


def check_tensor_values(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """WeightsError naming the file and the first tensor that is non-finite or absurdly large."""
    for key, value in state.items():
        if not value.is_floating_point() or value.numel() == 0:
            continue
        if not torch.isfinite(value).all():
            raise WeightsError(f"weights file {path}: tensor '{key}' holds NaN or Inf values")
        largest = float(value.abs().max())
        if largest > MAX_ABS_WEIGHT:
            raise WeightsError(f"weights file {path}: tensor '{key}' holds a value of magnitude "
                               f"{largest:.3g} (> {MAX_ABS_WEIGHT:.0e}); the file is corrupt or scaled")


def check_tensor_dtypes(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                        path: str | Path) -> None:
    """WeightsError when a tensor's kind (float / integer) differs from the model's own tensor."""
    for key, value in state.items():
        own = expected.get(key)
        if own is not None and own.is_floating_point() != value.is_floating_point():
            raise WeightsError(f"weights file {path}: tensor '{key}' is {value.dtype}, the model "
                               f"expects {own.dtype}")


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
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise WeightsError(f"weights sidecar {sidecar_path} is not valid JSON: {_first_line(exc)}") from exc
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
    """Strictly load ``state`` into ``model``: WeightsError on missing/unexpected keys, shapes, dtypes
    or absurd values."""
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
    check_tensor_dtypes(state, own, path)
    check_tensor_values(state, path)
    model.load_state_dict(state, strict=True)

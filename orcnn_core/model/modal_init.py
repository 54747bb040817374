"""Initialising both mask branches from ONE modal torchvision Mask R-CNN mask head (paper sec. 4)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from torch import nn

from orcnn_core.errors import WeightsError
from orcnn_core.model.weights import check_tensor_values, load_state_dict_file

logger = logging.getLogger(__name__)

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
    check_tensor_values(modal, path)
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
            elif modal[key].is_floating_point() != value.is_floating_point():
                raise WeightsError(f"{path}: '{key}' is {modal[key].dtype}, '{full}' needs {value.dtype}")
            else:
                update[key] = modal[key]
                report["loaded"].append(full)
        branch.load_state_dict(update, strict=False)
    logger.info("mask heads from %s: %d tensors loaded, %d missing, %d skipped", path,
                len(report["loaded"]), len(report["missing"]), len(report["skipped"]))
    if report["missing"]:
        logger.warning("mask-head keys not in %s: %s", path, ", ".join(report["missing"]))
    return report

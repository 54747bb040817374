"""Amodal datasets: readers for every public format, the project's format, a torch Dataset,
synthetic scenes and amodal augmentation from modal labels.

``AmodalDataset``, ``collate`` and the transforms need torch and are imported on first use, so that
``orcnn --help`` and the annotation tools start without it.
"""

from __future__ import annotations

from typing import Any

from orcnn_core.data.formats import available_formats, detect_format, register_reader
from orcnn_core.data.io import load_annotations, write_annotations
from orcnn_core.data.records import AmodalAnnotations, build_annotation

_LAZY = {
    "AmodalDataset": "orcnn_core.data.dataset",
    "SyntheticAmodalDataset": "orcnn_core.data.dataset",
    "collate": "orcnn_core.data.dataset",
    "build_transforms": "orcnn_core.data.transforms",
}

__all__ = ["AmodalAnnotations", "load_annotations", "write_annotations", "build_annotation",
           "available_formats", "detect_format", "register_reader", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'orcnn_core.data' has no attribute '{name}'")

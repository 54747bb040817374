"""Registry of annotation readers keyed by format name, and format detection from file content.

A reader is ``read(data, path, *, no_stuff, repair) -> AmodalAnnotations`` where ``data`` is the parsed
JSON (or, for a directory of COCOA raw records, a list of ``(path, record)`` pairs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from orcnn_core.errors import DatasetError

READERS: dict = {}


def register_reader(name: str) -> Callable:
    """Decorator adding a reader function to ``READERS`` under ``name``."""
    def wrap(fn: Callable) -> Callable:
        READERS[name] = fn
        return fn
    return wrap


def get_reader(name: str) -> Callable:
    """The reader registered as ``name``; an unknown name raises DatasetError listing the known ones."""
    _load_builtin_readers()
    if name not in READERS:
        raise DatasetError(f"unknown annotation format '{name}' (known: {', '.join(sorted(READERS))})")
    return READERS[name]


def available_formats() -> list:
    """Names of all registered formats."""
    _load_builtin_readers()
    return sorted(READERS)


def _first_annotations(data: Any, limit: int = 20) -> list:
    if isinstance(data, dict):
        anns = data.get("annotations", [])
        return anns[:limit] if isinstance(anns, list) else []
    out: list = []
    for item in data[:limit]:
        if isinstance(item, dict) and isinstance(item.get("annotations"), list):
            out.extend(item["annotations"][:limit])
    return out


def _format_from_annotation_keys(anns: list) -> str | None:
    keys = set()
    for ann in anns:
        if isinstance(ann, dict):
            keys.update(ann)
    if "a_segm" in keys:
        return "kins2020"
    if "inmodal_seg" in keys:
        return "kins"
    if "occluded_mask" in keys:
        return "uoais"
    if "visible_mask" in keys or "invisible_mask" in keys:
        return "cocoa"
    return None


def detect_format(data: Any, path: Path) -> str:
    """Name of the format of parsed JSON ``data`` read from ``path``."""
    if isinstance(data, dict):
        if "regions" in data:
            return "cocoa_raw"
        if isinstance(data.get("info"), dict) and data["info"].get("format") == "orcnn":
            return "orcnn"
        if "annotations" in data and "images" in data:
            found = _format_from_annotation_keys(_first_annotations(data))
            if found:
                return found
            if not data["annotations"]:
                return "cocoa"  # no instances to tell formats apart; all readers agree on this
            raise DatasetError(f"{path}: COCO file without amodal fields (no visible_mask, inmodal_seg, "
                               "a_segm or occluded_mask); a modal COCO file is input to 'orcnn augment'")
    elif isinstance(data, list):
        if not data:
            return "cocoa_raw"
        first = data[0]
        if isinstance(first, dict) and "regions" in first:
            return "cocoa_raw"
        if isinstance(first, dict) and "annotations" in first:
            # detectron2-style list of image dicts, as UOAIS/OSD-Amodal tools write them
            return _format_from_annotation_keys(_first_annotations(data)) or "uoais"
    raise DatasetError(f"{path}: cannot detect the annotation format; pass format= "
                       f"(known: {', '.join(available_formats())})")


def _load_builtin_readers() -> None:
    # Imported late so that this module has no import cycle with the readers that register here.
    from orcnn_core.data.formats import cocoa_raw, flat_coco  # noqa: F401

"""Load any supported annotation file into ``AmodalAnnotations``; write the project's own format."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from orcnn_core import masks as mask_ops
from orcnn_core.data.formats import detect_format, get_reader
from orcnn_core.data.jsonfile import read_json_file
from orcnn_core.data.records import AmodalAnnotations
from orcnn_core.errors import DatasetError
from orcnn_core.fileio import atomic_write_text
from orcnn_core.structures import ImageRecord

PROJECT_FORMAT = "orcnn"
FORMAT_VERSION = 1
# Optional per-image keys written when a record has them: RGB-D scenes (orcnn_core/data/synth_depth.py).
IMAGE_EXTRA_KEYS = ("camera", "depth_file")
log = logging.getLogger(__name__)


def read_json(path: Path) -> Any:
    """Parsed JSON of a UTF-8 file; unreadable, non-UTF-8, too deeply nested or invalid files raise
    DatasetError naming it."""
    return read_json_file(path, DatasetError, "annotation file")


def _sort_key(path: Path) -> tuple:
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def load_annotations(path: Union[str, Path], format: Optional[str] = None, *, no_stuff: bool = False,
                     repair: bool = False) -> AmodalAnnotations:
    """Read an amodal annotation file (or a folder of COCOA raw records) of any supported format.

    ``format`` overrides detection (``cocoa_raw``, ``cocoa``, ``d2sa``, ``kins``, ``kins2020``, ``uoais``,
    ``orcnn``); ``no_stuff`` drops stuff regions; ``repair`` adds visible pixels lying outside the
    amodal mask to it instead of raising.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"annotation file not found: {path}")
    if path.is_dir():
        if (path / "annotations.json").is_file():  # an `orcnn synth` / `orcnn augment` output folder
            path = path / "annotations.json"
        else:
            files = sorted(path.glob("*.json"), key=_sort_key)
            if not files:
                raise DatasetError(f"{path}: folder holds no .json annotation files")
            if format not in (None, "cocoa_raw"):
                raise DatasetError(f"{path}: a folder of records is read as cocoa_raw, not {format}")
            return get_reader("cocoa_raw")([(f, read_json(f)) for f in files], path,
                                           no_stuff=no_stuff, repair=repair)
    data = read_json(path)
    reader = get_reader(format or detect_format(data, path))
    return reader(data, path, no_stuff=no_stuff, repair=repair)


def _finite_json(value: Any, depth: int = 0) -> bool:
    """True for values JSON can hold exactly: strings, bools, None, ints, finite floats, and lists of them."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list) and depth < 32:
        return all(_finite_json(v, depth + 1) for v in value)
    return False


def _json_safe(extra: dict, dropped: Optional[dict] = None) -> dict:
    """The entries of an annotation's ``extra`` that JSON can hold; others are counted in ``dropped``.

    Non-finite numbers (NaN, Infinity, also inside lists) are dropped, not written: JSON has no such
    values, and writing them as ``NaN`` literals makes files other tools refuse. Objects are dropped too
    (the format keeps ``extra`` flat).
    """
    safe = {}
    for key, value in extra.items():
        if _finite_json(value):
            safe[key] = value
        elif dropped is not None:
            dropped[key] = dropped.get(key, 0) + 1
    return safe


def annotation_to_json(ann: Any, image_id: Any, dropped: Optional[dict] = None) -> dict:
    """One canonical annotation as an entry of the project format (fixed key order); ``extra`` values
    JSON cannot hold are left out and counted per key in ``dropped``."""
    entry = {
        "id": int(ann.id),
        "image_id": image_id,
        "category_id": int(ann.category_id),
        "segmentation": mask_ops.compress(ann.amodal_rle),
        "visible_mask": mask_ops.compress(ann.visible_rle),
        "invisible_mask": mask_ops.compress(ann.invisible_rle),
        "bbox": mask_ops.xyxy_to_xywh(ann.amodal_box),
        "visible_bbox": mask_ops.xyxy_to_xywh(ann.visible_box),
        "area": mask_ops.area(ann.amodal_rle),
        "visible_area": mask_ops.area(ann.visible_rle),
        "occlude_rate": float(ann.occlusion_rate),
        "iscrowd": int(bool(ann.iscrowd)),
    }
    extra = _json_safe(ann.extra, dropped)
    if extra:
        entry["extra"] = extra
    return entry


def _image_entry(record: ImageRecord) -> dict:
    entry = {"id": record.image_id, "file_name": record.file_name, "height": int(record.height),
             "width": int(record.width)}
    entry.update({key: record.extra[key] for key in IMAGE_EXTRA_KEYS if key in record.extra})
    return entry


def write_annotations(annotations_or_records: Union[AmodalAnnotations, Sequence[ImageRecord]],
                      categories: Optional[Sequence[dict]], out_path: Union[str, Path], *,
                      image_root: Union[str, Path, None] = None) -> Path:
    """Write records in the project's format (flat COCO + amodal RLE fields); returns the path.

    ``categories`` may be ``None`` when an ``AmodalAnnotations`` is given. ``image_root`` (default:
    the annotations' own, else the output folder) is stored relative to the output file.
    """
    out_path = Path(out_path)
    if isinstance(annotations_or_records, AmodalAnnotations):
        records = annotations_or_records.images
        categories = annotations_or_records.categories if categories is None else categories
        image_root = annotations_or_records.image_root if image_root is None else image_root
    else:
        records = list(annotations_or_records)
    if categories is None:
        raise DatasetError(f"{out_path}: categories are required when writing plain records")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    root = Path(image_root) if image_root is not None else out_path.parent
    try:
        root_field = os.path.relpath(root.resolve(), out_path.parent.resolve())
    except ValueError:  # another drive on Windows
        root_field = str(root.resolve())
    dropped: dict = {}
    data = {
        "info": {"format": PROJECT_FORMAT, "version": FORMAT_VERSION,
                 "image_root": root_field.replace(os.sep, "/")},
        "images": [_image_entry(r) for r in records],
        "annotations": [annotation_to_json(a, r.image_id, dropped) for r in records for a in r.annotations],
        "categories": [{"id": int(c["id"]), "name": str(c["name"])} for c in categories],
    }
    if dropped:
        counts = ", ".join(f"{key} ({count}x)" for key, count in sorted(dropped.items()))
        log.warning("%s: left out 'extra' values JSON cannot hold (NaN, Infinity or objects): %s",
                    out_path, counts)
    # allow_nan=False: a non-finite number left anywhere is a bug, never a NaN literal in the file
    atomic_write_text(out_path, json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n")
    return out_path

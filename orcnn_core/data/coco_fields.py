"""Validated fields of COCO-style annotation files: ids, image entries, categories, flags, and
``Where``, the location every error message names (file, image id, annotation id).

Readers call these before anything is built, so that a bad value is one DatasetError naming where
it is, not a traceback from deeper down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from orcnn_core import masks as mask_ops
from orcnn_core.errors import DatasetError
from orcnn_core.mask_checks import short_repr
from orcnn_core.structures import ImageRecord


@dataclass(frozen=True)
class Where:
    """Location of a record in an input file, for error messages."""

    file: Any
    image_id: Any = None
    ann_id: Any = None

    def error(self, message: str) -> DatasetError:
        """A one-line DatasetError prefixed with file, image id and annotation id."""
        parts = [str(self.file)]
        if self.image_id is not None:
            parts.append(f"image {_id_text(self.image_id)}")
        if self.ann_id is not None:
            parts.append(f"annotation {_id_text(self.ann_id)}")
        return DatasetError(one_line(f"{', '.join(parts)}: {message}"))


def _id_text(value: Any) -> str:
    # ids are printed as they are when they are ids; anything else (a bad id) as a short repr
    return str(value) if isinstance(value, (int, str)) and len(str(value)) <= 80 and "\n" not in str(value) \
        else short_repr(value)


def one_line(text: str) -> str:
    """``text`` with line breaks escaped, so that an error message stays one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def check_unique_ids(records: Sequence[ImageRecord], file: Any) -> None:
    """Raise a DatasetError on a duplicate image id or annotation id."""
    seen_images: set = set()
    seen_anns: dict = {}
    for record in records:
        if record.image_id in seen_images:
            raise Where(file, record.image_id).error("duplicate image id")
        seen_images.add(record.image_id)
        for ann in record.annotations:
            if ann.id in seen_anns:
                raise Where(file, record.image_id, ann.id).error(
                    f"duplicate annotation id (also in image {seen_anns[ann.id]})")
            seen_anns[ann.id] = record.image_id


INT64_LIMIT = 2 ** 63  # ids and sizes must fit int64 (numpy, torch and pycocotools use it)


def parse_categories(raw: Any, file: Any) -> list:
    """Validated ``[{"id": int, "name": str}]`` from a COCO ``categories`` list."""
    if not isinstance(raw, list):
        raise Where(file).error("'categories' must be a list")
    categories, seen = [], set()
    for entry in raw:
        if not isinstance(entry, dict) or "id" not in entry:
            raise Where(file).error(f"category entry without 'id': {short_repr(entry)}")
        cid = as_int(entry["id"])
        if cid is None:
            raise Where(file).error(f"category id {short_repr(entry['id'])} is not an integer")
        if cid in seen:
            raise Where(file).error(f"duplicate category id {cid}")
        seen.add(cid)
        categories.append({"id": cid, "name": str(entry.get("name", f"category_{cid}"))})
    return categories


def as_int(value: Any) -> Optional[int]:
    """The integer of an int, an integral finite float (``3.0``) or a digit string (``"3"``) within
    int64; ``None`` for anything else (bools, ``1.5``, NaN, Infinity, lists, ...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if math.isfinite(value) and value.is_integer() else None
    elif isinstance(value, str):
        text = value.strip()
        value = int(text) if text.lstrip("+-").isdigit() and text.isascii() and len(text) <= 20 else None
    if not isinstance(value, int) or not -INT64_LIMIT <= value < INT64_LIMIT:
        return None
    return int(value)


def as_id(value: Any) -> Optional[int]:
    """An image or annotation id: a JSON integer within int64; ``None`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, int) or not -INT64_LIMIT <= value < INT64_LIMIT:
        return None
    return int(value)


def id_or_error(value: Any, where: Where, what: str) -> int:
    """``as_id(value)``, or a DatasetError naming ``what`` (e.g. "image id") when it is not an id."""
    result = as_id(value)
    if result is None:
        raise where.error(f"{what} {short_repr(value)} is not an integer")
    return result


def image_size_or_error(height: Any, width: Any, where: Where, what: str = "image size") -> tuple:
    """``(height, width)`` as positive ints within ``mask_checks.MAX_MASK_PIXELS``, else a DatasetError
    (``what`` names the field in it)."""
    prefix = "" if what == "image size" else f"{what}: "
    h, w = as_int(height), as_int(width)
    if h is None or w is None:
        raise where.error(f"{prefix}image size must be integers, got height {short_repr(height)}, "
                          f"width {short_repr(width)}")
    try:
        mask_ops.check_image_size(h, w)
    except mask_ops.MaskFormatError as exc:
        raise where.error(f"{prefix}{exc}") from exc
    return h, w


def file_name_or_error(value: Any, where: Where, what: str = "file_name") -> str:
    """An image ``file_name`` (or other name ``what``) as a string without NUL characters, else a
    DatasetError."""
    if not isinstance(value, str):
        raise where.error(f"{what} {short_repr(value)} is not a string")
    if "\x00" in value:
        raise where.error(f"{what} {short_repr(value)} contains a NUL character")
    return value


def is_file(path: Path) -> bool:
    """``path.is_file()`` that answers False for names the OS cannot take (too long, ...)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def parse_image_entries(raw: Any, file: Any) -> dict:
    """``{image_id: {"file_name", "height", "width"}}`` from a COCO ``images`` list, validated.

    Entries need an integer ``id`` and ``height`` and ``width`` (positive, at most
    ``mask_checks.MAX_MASK_PIXELS`` pixels); a duplicate id or a bad size or file name raises a
    DatasetError naming the file (and image).
    """
    if not isinstance(raw, list):
        raise Where(file).error("'images' must be a list")
    images: dict = {}
    for entry in raw:
        if not isinstance(entry, dict) or "id" not in entry:
            raise Where(file).error(f"image entry without 'id': {short_repr(entry)}")
        image_id = id_or_error(entry["id"], Where(file), "image id")
        where = Where(file, image_id)
        if image_id in images:
            raise where.error("duplicate image id")
        if "height" not in entry or "width" not in entry:
            raise where.error("image entry needs 'height' and 'width'")
        height, width = image_size_or_error(entry["height"], entry["width"], where)
        file_name = file_name_or_error(entry.get("file_name", ""), where)
        images[image_id] = {"file_name": file_name, "height": height, "width": width}
    return images


def check_annotation_refs(ann: Any, file: Any, image_ids: Any, known_categories: Any,
                          seen_ann_ids: dict) -> tuple:
    """Validate a COCO annotation's ``id``, ``image_id`` and ``category_id``; ``(where, category_id)``.

    Raises a DatasetError naming file, image and annotation for a non-dict annotation, a missing,
    non-integer or duplicate annotation id (``seen_ann_ids`` maps ids seen so far to their image and
    is updated), a non-integer image id or one not in ``image_ids``, or a category id that is not an
    integer in ``known_categories``.
    """
    image_id = ann.get("image_id") if isinstance(ann, dict) else None
    ann_id = ann.get("id") if isinstance(ann, dict) else None
    where = Where(file, image_id, ann_id)
    if not isinstance(ann, dict):
        raise where.error(f"annotation entry is not an object: {short_repr(ann)}")
    if ann_id is None:
        raise where.error("annotation without 'id'")
    id_or_error(ann_id, where, "annotation id")
    id_or_error(image_id, where, "image id")
    if ann_id in seen_ann_ids:
        raise where.error(f"duplicate annotation id (also in image {seen_ann_ids[ann_id]})")
    seen_ann_ids[ann_id] = image_id
    if image_id not in image_ids:
        raise where.error("annotation refers to an image id not in 'images'")
    raw_category = ann.get("category_id")
    category_id = as_int(raw_category)
    if category_id is None and raw_category is not None:
        raise where.error(f"category id {short_repr(raw_category)} is not an integer")
    if category_id is None or category_id not in known_categories:
        known = sorted(known_categories)
        listed = ", ".join(str(c) for c in known[:20]) + (", ..." if len(known) > 20 else "")
        raise where.error(f"unknown category id {raw_category} (categories: [{listed}])")
    return where, category_id


def iscrowd_or_error(value: Any, where: Where) -> bool:
    """A COCO ``iscrowd`` flag (0, 1, true, false; absent = 0), else a DatasetError."""
    if value is None or isinstance(value, bool) or (not isinstance(value, str) and as_int(value) in (0, 1)):
        return bool(value)
    raise where.error(f"iscrowd {short_repr(value)} is not 0 or 1")

"""The loaded-dataset container and the one builder that turns raw masks into ``AmodalAnnotation``.

Every reader goes through ``build_annotation`` so that the checks (visible inside amodal, sizes,
polygons) and the derived fields (invisible mask, boxes, occlusion rate) are computed one way.
Work stays on RLEs where the masks agree; full masks are decoded only to compute a difference.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.errors import DatasetError
from orcnn_core.structures import AmodalAnnotation, ImageRecord


@dataclass
class AmodalAnnotations:
    """A loaded dataset: canonical image records plus categories and where the files are."""

    images: list  # list[ImageRecord]
    categories: list  # list[{"id": int, "name": str}]
    format: str
    path: Path
    image_root: Optional[Path] = None
    extra: dict = field(default_factory=dict)

    def by_id(self) -> dict:
        """Image records keyed by image id."""
        return {record.image_id: record for record in self.images}

    def category_names(self) -> dict:
        """Category names keyed by category id."""
        return {int(c["id"]): str(c["name"]) for c in self.categories}

    def image_path(self, record: ImageRecord) -> Path:
        """Absolute path of a record's image file."""
        path = Path(record.file_name)
        if path.is_absolute() or self.image_root is None:
            return path
        return self.image_root / path

    @property
    def num_instances(self) -> int:
        return sum(len(r.annotations) for r in self.images)


@dataclass(frozen=True)
class Where:
    """Location of a record in an input file, for error messages."""

    file: Any
    image_id: Any = None
    ann_id: Any = None

    def error(self, message: str) -> DatasetError:
        """A DatasetError prefixed with file, image id and annotation id."""
        parts = [str(self.file)]
        if self.image_id is not None:
            parts.append(f"image {self.image_id}")
        if self.ann_id is not None:
            parts.append(f"annotation {self.ann_id}")
        return DatasetError(f"{', '.join(parts)}: {message}")


@lru_cache(maxsize=16)
def _empty_counts(height: int, width: int) -> str:
    return mask_ops.encode(np.zeros((height, width), dtype=bool))["counts"]


def empty_rle(height: int, width: int) -> dict:
    """Compressed RLE of an all-zero HxW mask."""
    return {"size": [height, width], "counts": _empty_counts(height, width)}


def to_rle(segm: Any, height: int, width: int, where: Where, what: str) -> dict:
    """Any segmentation value to compressed RLE; bad polygons or sizes become a DatasetError."""
    try:
        return mask_ops.segmentation_to_rle(segm, height, width)
    except mask_ops.MaskFormatError as exc:
        raise where.error(f"{what}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise where.error(f"{what}: cannot read segmentation ({exc})") from exc


def _box(rle: dict, area: int, given: Optional[Sequence[float]]) -> tuple:
    if area > 0:
        return mask_ops.rle_box(rle)
    if given is not None and len(given) == 4:
        return mask_ops.xywh_to_xyxy(given)
    return (0.0, 0.0, 0.0, 0.0)


def build_annotation(ann_id: int, category_id: int, height: int, width: int, amodal: Any,
                     visible: Any = None, invisible: Any = None, *, where: Where, repair: bool = False,
                     iscrowd: bool = False, amodal_bbox: Optional[Sequence[float]] = None,
                     visible_bbox: Optional[Sequence[float]] = None,
                     extra: Optional[dict] = None) -> AmodalAnnotation:
    """Canonical annotation from raw segmentations (polygons or RLE); ``None`` visible = unoccluded.

    A given invisible mask without a visible one yields visible = amodal - invisible. Visible pixels
    outside the amodal mask raise a DatasetError, or are added to the amodal mask when ``repair``.
    Boxes come from the masks; a given box is used only when its mask is empty.
    """
    amodal_rle = to_rle(amodal, height, width, where, "amodal mask")
    amodal_area = mask_ops.area(amodal_rle)
    invisible_rle = None
    if invisible is not None:
        invisible_rle = to_rle(invisible, height, width, where, "invisible mask")
    if visible is not None:
        visible_rle = to_rle(visible, height, width, where, "visible mask")
    elif invisible_rle is not None:
        visible_rle = mask_ops.difference(amodal_rle, invisible_rle)
    else:
        visible_rle = amodal_rle
    visible_area = mask_ops.area(visible_rle)

    if visible_rle is not amodal_rle:
        outside = visible_area - mask_ops.area(mask_ops.intersection([visible_rle, amodal_rle]))
        if outside > 0:
            if not repair:
                raise where.error(f"{outside} visible pixels lie outside the amodal mask "
                                  "(use repair=True / --repair to add them to the amodal mask)")
            amodal_rle = mask_ops.union([amodal_rle, visible_rle])
            amodal_area = mask_ops.area(amodal_rle)

    if visible_area == amodal_area:  # visible inside amodal with equal area: nothing is hidden
        invisible_rle = empty_rle(height, width)
    elif invisible_rle is None or not _is_exact_complement(invisible_rle, visible_rle, amodal_rle,
                                                           visible_area, amodal_area):
        invisible_rle = mask_ops.difference(amodal_rle, visible_rle)
    invisible_area = amodal_area - visible_area
    return AmodalAnnotation(
        id=int(ann_id), category_id=int(category_id),
        amodal_rle=amodal_rle, visible_rle=visible_rle, invisible_rle=invisible_rle,
        amodal_box=_box(amodal_rle, amodal_area, amodal_bbox),
        visible_box=_box(visible_rle, visible_area, visible_bbox),
        occlusion_rate=invisible_area / amodal_area if amodal_area else 0.0,
        iscrowd=bool(iscrowd), extra=dict(extra or {}),
    )


def _is_exact_complement(invisible: dict, visible: dict, amodal: dict, visible_area: int,
                         amodal_area: int) -> bool:
    """True when the given invisible mask is exactly amodal - visible (checked on RLEs)."""
    invisible_area = mask_ops.area(invisible)
    if invisible_area + visible_area != amodal_area:
        return False
    if mask_ops.area(mask_ops.intersection([invisible, visible])) != 0:
        return False
    return mask_ops.area(mask_ops.intersection([invisible, amodal])) == invisible_area


def _posix_name(file_name: Any) -> str:
    return str(file_name).replace("\\", "/")


def index_by_file_name(images: Sequence[ImageRecord]) -> tuple:
    """``(by_path, by_basename)`` maps of image records keyed by file name.

    ``by_path`` keys are the records' relative paths (``\\`` written as ``/``); ``by_basename``
    keys are the last path components, and a base name shared by several records maps to ``None``
    (ambiguous), so callers decide their own policy for it. Returns
    ``tuple[dict[str, ImageRecord], dict[str, ImageRecord | None]]``.
    """
    by_path: dict = {}
    by_basename: dict = {}
    for record in images:
        path = _posix_name(record.file_name)
        by_path[path] = record
        base = posixpath.basename(path)
        by_basename[base] = None if base in by_basename else record
    return by_path, by_basename


def annotations_from_masks(amodal: np.ndarray, visible: np.ndarray, category_ids: Sequence[int],
                           first_id: int = 1, extras: Optional[Sequence[dict]] = None,
                           invisible: Optional[np.ndarray] = None) -> list:
    """``AmodalAnnotation``s of NxHxW amodal and visible mask stacks (visible inside amodal).

    Each stack is RLE-encoded in one batched call; ids run from ``first_id``; ``invisible``
    (default amodal AND NOT visible) may be passed when already computed; boxes are the masks'
    tight boxes (zeros when empty), the occlusion rate is 1 - visible area / amodal area.
    """
    if invisible is None:
        invisible = amodal.astype(bool) & ~visible.astype(bool)
    amodal_rles = mask_ops.encode_many(amodal)
    visible_rles = mask_ops.encode_many(visible)
    invisible_rles = mask_ops.encode_many(invisible)
    annotations = []
    for k, category_id in enumerate(category_ids):
        amodal_area, visible_area = mask_ops.area(amodal_rles[k]), mask_ops.area(visible_rles[k])
        annotations.append(AmodalAnnotation(
            id=int(first_id) + k, category_id=int(category_id), amodal_rle=amodal_rles[k],
            visible_rle=visible_rles[k], invisible_rle=invisible_rles[k],
            amodal_box=mask_ops.rle_box(amodal_rles[k]), visible_box=mask_ops.rle_box(visible_rles[k]),
            occlusion_rate=(amodal_area - visible_area) / amodal_area if amodal_area else 0.0,
            extra=dict(extras[k]) if extras is not None else {}))
    return annotations


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


def parse_categories(raw: Any, file: Any) -> list:
    """Validated ``[{"id": int, "name": str}]`` from a COCO ``categories`` list."""
    if not isinstance(raw, list):
        raise Where(file).error("'categories' must be a list")
    categories, seen = [], set()
    for entry in raw:
        if not isinstance(entry, dict) or "id" not in entry:
            raise Where(file).error(f"category entry without 'id': {entry!r}")
        cid = as_int(entry["id"])
        if cid is None:
            raise Where(file).error(f"category id {entry['id']!r} is not an integer")
        if cid in seen:
            raise Where(file).error(f"duplicate category id {cid}")
        seen.add(cid)
        categories.append({"id": cid, "name": str(entry.get("name", f"category_{cid}"))})
    return categories


def as_int(value: Any) -> Optional[int]:
    """``int(value)`` for numbers and numeric strings; ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_image_entries(raw: Any, file: Any) -> dict:
    """``{image_id: {"file_name", "height", "width"}}`` from a COCO ``images`` list, validated.

    Entries need ``id``, ``height`` and ``width``; a duplicate id or a non-integer size raises a
    DatasetError naming the file (and image).
    """
    if not isinstance(raw, list):
        raise Where(file).error("'images' must be a list")
    images: dict = {}
    for entry in raw:
        if not isinstance(entry, dict) or "id" not in entry:
            raise Where(file).error(f"image entry without 'id': {str(entry)[:80]}")
        image_id = entry["id"]
        where = Where(file, image_id)
        if image_id in images:
            raise where.error("duplicate image id")
        if "height" not in entry or "width" not in entry:
            raise where.error("image entry needs 'height' and 'width'")
        height, width = as_int(entry["height"]), as_int(entry["width"])
        if height is None or width is None:
            raise where.error(f"image size must be integers, got height {entry['height']!r}, "
                              f"width {entry['width']!r}")
        images[image_id] = {"file_name": str(entry.get("file_name", "")), "height": height, "width": width}
    return images


def check_annotation_refs(ann: Any, file: Any, image_ids: Any, known_categories: Any,
                          seen_ann_ids: dict) -> tuple:
    """Validate a COCO annotation's ``id``, ``image_id`` and ``category_id``; ``(where, category_id)``.

    Raises a DatasetError naming file, image and annotation for a non-dict annotation, a missing or
    duplicate annotation id (``seen_ann_ids`` maps ids seen so far to their image and is updated),
    an image id not in ``image_ids``, or a category id that is not an integer in ``known_categories``.
    """
    image_id = ann.get("image_id") if isinstance(ann, dict) else None
    ann_id = ann.get("id") if isinstance(ann, dict) else None
    where = Where(file, image_id, ann_id)
    if not isinstance(ann, dict):
        raise where.error(f"annotation entry is not an object: {str(ann)[:80]}")
    if ann_id is None:
        raise where.error("annotation without 'id'")
    if ann_id in seen_ann_ids:
        raise where.error(f"duplicate annotation id (also in image {seen_ann_ids[ann_id]})")
    seen_ann_ids[ann_id] = image_id
    if image_id not in image_ids:
        raise where.error("annotation refers to an image id not in 'images'")
    raw_category = ann.get("category_id")
    category_id = as_int(raw_category)
    if category_id is None and raw_category is not None:
        raise where.error(f"category id {raw_category!r} is not an integer")
    if category_id is None or category_id not in known_categories:
        raise where.error(f"unknown category id {raw_category} (categories: {sorted(known_categories)})")
    return where, category_id

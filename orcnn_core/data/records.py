"""The loaded-dataset container and the one builder that turns raw masks into ``AmodalAnnotation``.

Every reader collects ``RawAnnotation``s and goes through ``build_annotations`` so that the checks
(every mask and box validated in one batch before pycocotools sees it, visible inside amodal, the
invisible mask exactly amodal AND NOT visible) and the derived fields (invisible mask, boxes,
occlusion rate) are computed one way. Work stays on RLEs where the masks agree; full masks are
decoded only to compute a difference. The field checks of COCO files live in ``coco_fields``.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from orcnn_core import masks as mask_ops

# Re-exported: readers outside this package import the field checks from here.
from orcnn_core.data.coco_fields import (  # noqa: F401
    Where,
    as_int,
    check_annotation_refs,
    check_unique_ids,
    parse_categories,
    parse_image_entries,
)
from orcnn_core.mask_checks import check_boxes
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


def empty_rle(height: int, width: int) -> dict:
    """Compressed RLE of an all-zero HxW mask (made from its one run; no mask is allocated)."""
    return mask_ops.from_counts([int(height) * int(width)], height, width)


def _box(rle: dict, area: int, given: Optional[tuple]) -> tuple:
    if area > 0:
        return mask_ops.rle_box(rle)
    return given if given is not None else (0.0, 0.0, 0.0, 0.0)


@dataclass
class RawAnnotation:
    """One annotation as a reader found it: raw segmentations and boxes, and the keys they came from.

    ``fields`` names the amodal, visible and invisible mask and ``box_fields`` the amodal and visible
    box in error messages (the file's own keys, e.g. ``'inmodal_seg'``).
    """

    ann_id: int
    category_id: int
    height: int
    width: int
    where: Where
    amodal: Any
    visible: Any = None
    invisible: Any = None
    iscrowd: bool = False
    amodal_bbox: Any = None
    visible_bbox: Any = None
    extra: dict = field(default_factory=dict)
    fields: tuple = ("amodal mask", "visible mask", "invisible mask")
    box_fields: tuple = ("amodal box", "visible box")


def build_annotation(ann_id: int, category_id: int, height: int, width: int, amodal: Any,
                     visible: Any = None, invisible: Any = None, *, where: Where, repair: bool = False,
                     iscrowd: bool = False, amodal_bbox: Optional[Sequence[float]] = None,
                     visible_bbox: Optional[Sequence[float]] = None,
                     extra: Optional[dict] = None) -> AmodalAnnotation:
    """Canonical annotation from raw segmentations (polygons or RLE); ``None`` visible = unoccluded.

    One annotation of ``build_annotations``, which says what is checked and derived.
    """
    raw = RawAnnotation(ann_id, category_id, height, width, where, amodal, visible, invisible,
                        iscrowd=iscrowd, amodal_bbox=amodal_bbox, visible_bbox=visible_bbox,
                        extra=dict(extra or {}))
    return build_annotations([raw], repair=repair)[0]


def build_annotations(raws: Sequence[RawAnnotation], *, repair: bool = False) -> list:
    """Canonical ``AmodalAnnotation``s of raw ones; the first bad annotation raises a DatasetError.

    Every mask is validated (one vectorised batch for all RLE strings) and every given box checked.
    A given invisible mask without a visible one yields visible = amodal - invisible. Visible pixels
    outside the amodal mask, and a given invisible mask that is not exactly amodal AND NOT visible,
    raise a DatasetError naming the annotation, or are repaired when ``repair`` (visible pixels added
    to the amodal mask; the invisible mask recomputed). Boxes come from the masks; a given box is
    used only when its mask is empty.
    """
    segms, sizes, owners = [], [], []
    for k, raw in enumerate(raws):
        for slot, segm in enumerate((raw.amodal, raw.visible, raw.invisible)):
            if slot == 0 or segm is not None:
                segms.append(segm)
                sizes.append((raw.height, raw.width))
                owners.append((k, slot))
    converted = mask_ops.segmentations_to_rles(segms, sizes)
    rles = [[None, None, None] for _ in raws]
    for (k, slot), rle in zip(owners, converted):
        rles[k][slot] = rle
    boxes, box_sizes, box_owners = [], [], []
    for k, raw in enumerate(raws):
        for slot, box in enumerate((raw.amodal_bbox, raw.visible_bbox)):
            if box is not None:
                boxes.append(box)
                box_sizes.append((raw.height, raw.width))
                box_owners.append((k, slot))
    checked_boxes = [[None, None] for _ in raws]
    for (k, slot), box in zip(box_owners, check_boxes(boxes, box_sizes)):
        checked_boxes[k][slot] = box
    annotations = []
    for raw, masks, ann_boxes in zip(raws, rles, checked_boxes):
        for slot, rle in enumerate(masks):
            if isinstance(rle, mask_ops.MaskFormatError):
                raise raw.where.error(f"{raw.fields[slot]}: {rle}")
        for slot, box in enumerate(ann_boxes):
            if isinstance(box, str):
                raise raw.where.error(f"{raw.box_fields[slot]}: {box}")
        annotations.append(_assemble(raw, *masks, *ann_boxes, repair=repair))
    return annotations


def _assemble(raw: RawAnnotation, amodal_rle: dict, visible_rle: Optional[dict],
              invisible_rle: Optional[dict], amodal_box: Optional[tuple], visible_box: Optional[tuple], *,
              repair: bool) -> AmodalAnnotation:
    """One annotation from validated RLEs: consistency checks (or repairs) and derived fields."""
    where, height, width = raw.where, raw.height, raw.width
    amodal_area = mask_ops.area(amodal_rle)
    if visible_rle is None:
        visible_rle = amodal_rle if invisible_rle is None else mask_ops.difference(amodal_rle, invisible_rle)
    if visible_rle["counts"] == amodal_rle["counts"]:  # same string, same mask (an unoccluded object)
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

    if invisible_rle is not None and not _is_exact_complement(invisible_rle, visible_rle, amodal_rle,
                                                              visible_area, amodal_area):
        if not repair:
            mismatch = _complement_mismatch(invisible_rle, visible_rle, amodal_rle)
            raise where.error(f"{raw.fields[2]}: {mismatch} (use repair=True / --repair to recompute it "
                              "as amodal AND NOT visible)")
        invisible_rle = None
    if invisible_rle is None:
        invisible_rle = empty_rle(height, width) if visible_area == amodal_area \
            else mask_ops.difference(amodal_rle, visible_rle)
    invisible_area = amodal_area - visible_area
    return AmodalAnnotation(
        id=int(raw.ann_id), category_id=int(raw.category_id),
        amodal_rle=amodal_rle, visible_rle=visible_rle, invisible_rle=invisible_rle,
        amodal_box=_box(amodal_rle, amodal_area, amodal_box),
        visible_box=_box(visible_rle, visible_area, visible_box),
        occlusion_rate=invisible_area / amodal_area if amodal_area else 0.0,
        iscrowd=bool(raw.iscrowd), extra=dict(raw.extra),
    )


def _is_exact_complement(invisible: dict, visible: dict, amodal: dict, visible_area: int,
                         amodal_area: int) -> bool:
    """True when the given invisible mask is exactly amodal - visible, visible lying inside amodal
    (checked on RLEs)."""
    invisible_area = mask_ops.area(invisible)
    if invisible_area + visible_area != amodal_area:
        return False
    if invisible_area == 0:
        return True  # visible inside amodal with equal area: nothing is hidden
    if mask_ops.area(mask_ops.intersection([invisible, visible])) != 0:
        return False
    return mask_ops.area(mask_ops.intersection([invisible, amodal])) == invisible_area


def _complement_mismatch(invisible: dict, visible: dict, amodal: dict) -> str:
    """How a given invisible mask differs from amodal AND NOT visible, in pixels."""
    expected = mask_ops.difference(amodal, visible)
    common = mask_ops.area(mask_ops.intersection([invisible, expected]))
    extra, missing = mask_ops.area(invisible) - common, mask_ops.area(expected) - common
    return (f"not exactly amodal AND NOT visible ({extra} pixels too many, {missing} missing)")


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

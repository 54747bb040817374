"""Flat COCO amodal formats, one reader parameterised by a key layout per format.

All of COCOA "detectron"/COCOA cls, D2S amodal, KINS (original and 2020), UOAIS/OSD-Amodal and the
project's own format are COCO files (``images``, ``annotations``, ``categories``) whose amodal,
visible and invisible masks sit under different keys. UOAIS tools also write a detectron2-style list
of image dicts (``file_name``, ``height``, ``width``, ``annotations``); that is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional

from orcnn_core.data.coco_fields import (
    Where,
    as_int,
    check_annotation_refs,
    check_unique_ids,
    id_or_error,
    is_file,
    iscrowd_or_error,
    parse_categories,
    parse_image_entries,
)
from orcnn_core.data.formats import register_reader
from orcnn_core.data.records import AmodalAnnotations, RawAnnotation, build_annotations
from orcnn_core.mask_checks import short_repr
from orcnn_core.structures import ImageRecord


@dataclass(frozen=True)
class FlatLayout:
    """Where one format keeps each field of an annotation (``None``: the format has no such key)."""

    amodal: str
    visible: Optional[str]
    invisible: Optional[str]
    amodal_bbox: Optional[str]
    visible_bbox: Optional[str]
    extra_keys: tuple = ()


LAYOUTS = {
    "cocoa": FlatLayout("segmentation", "visible_mask", "invisible_mask", "bbox", None,
                        ("occlude_rate", "name", "isStuff", "order")),
    "d2sa": FlatLayout("segmentation", "visible_mask", "invisible_mask", "bbox", None,
                       ("occlude_rate", "occluded_rate")),
    "kins": FlatLayout("segmentation", "inmodal_seg", None, "bbox", "inmodal_bbox", ("ico_id", "oco_id")),
    "kins2020": FlatLayout("a_segm", "i_segm", None, "a_bbox", "i_bbox", ("ico_id", "oco_id")),
    "uoais": FlatLayout("segmentation", "visible_mask", "occluded_mask", "bbox", "visible_bbox",
                        ("occluded_rate",)),
    "orcnn": FlatLayout("segmentation", "visible_mask", "invisible_mask", "bbox", "visible_bbox"),
}


def _list_to_coco(data: list, path: Path) -> dict:
    """A detectron2-style list of image dicts as a flat COCO dict (ids made up where missing)."""
    images, annotations, next_ann_id = [], [], 1
    for index, item in enumerate(data):
        if not isinstance(item, dict) or "annotations" not in item:
            raise Where(path).error(f"list entry {index} is not an image dict with 'annotations'")
        image_id = id_or_error(item.get("image_id", item.get("id", index + 1)), Where(path),
                               f"list entry {index}: image id")
        images.append({k: item[k] for k in ("file_name", "height", "width") if k in item} | {"id": image_id})
        if not isinstance(item["annotations"], list):
            raise Where(path, image_id).error("'annotations' must be a list")
        for ann in item["annotations"]:
            if not isinstance(ann, dict):
                raise Where(path, image_id).error(f"annotation entry is not an object: {short_repr(ann)}")
            ann = dict(ann)
            ann.setdefault("id", next_ann_id)
            ann.setdefault("category_id", 1)  # detectron2 lists may omit it: one class
            ann["image_id"] = image_id
            next_ann_id += 1
            annotations.append(ann)
    # Non-integer ids are left out here and rejected per annotation by read_flat, with their location.
    category_ids = sorted({c for c in (as_int(a["category_id"]) for a in annotations) if c is not None})
    return {"images": images, "annotations": annotations,
            "categories": [{"id": c, "name": f"class_{c}"} for c in category_ids]}


def _image_records(data: dict, path: Path) -> dict:
    return {image_id: ImageRecord(image_id=image_id, file_name=entry["file_name"], height=entry["height"],
                                  width=entry["width"])
            for image_id, entry in parse_image_entries(data.get("images", []), path).items()}


def read_flat(data: Any, path: Path, *, layout_name: str, no_stuff: bool = False,
              repair: bool = False) -> AmodalAnnotations:
    """Read a flat COCO amodal file (or detectron2 list) with the key layout ``layout_name``."""
    path = Path(path)
    layout = LAYOUTS[layout_name]
    if isinstance(data, list):
        data = _list_to_coco(data, path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise Where(path).error("expected a COCO file with 'images', 'annotations' and 'categories'")
    categories = parse_categories(data.get("categories", []), path)
    known_categories = {c["id"] for c in categories}
    records = _image_records(data, path)
    seen_ann_ids: dict = {}
    owners, raws = [], []
    fields = tuple(f"'{key}'" for key in (layout.amodal, layout.visible, layout.invisible))
    box_fields = tuple(f"'{key}'" for key in (layout.amodal_bbox, layout.visible_bbox))
    for ann in data["annotations"]:
        where, category_id = check_annotation_refs(ann, path, records, known_categories, seen_ann_ids)
        if no_stuff and ann.get("isStuff"):
            continue
        if layout.amodal not in ann:
            raise where.error(f"missing amodal mask key '{layout.amodal}' ({layout_name} layout)")
        record = records[ann["image_id"]]
        extra = {k: ann[k] for k in layout.extra_keys if k in ann}
        if isinstance(ann.get("extra"), dict):
            extra.update(ann["extra"])
        owners.append(record)
        raws.append(RawAnnotation(
            ann["id"], category_id, record.height, record.width, where, ann[layout.amodal],
            ann.get(layout.visible) if layout.visible else None,
            ann.get(layout.invisible) if layout.invisible else None,
            iscrowd=iscrowd_or_error(ann.get("iscrowd"), where),
            amodal_bbox=ann.get(layout.amodal_bbox) if layout.amodal_bbox else None,
            visible_bbox=ann.get(layout.visible_bbox) if layout.visible_bbox else None,
            extra=extra, fields=fields, box_fields=box_fields))
    for record, annotation in zip(owners, build_annotations(raws, repair=repair)):
        record.annotations.append(annotation)
    images = list(records.values())
    check_unique_ids(images, path)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    root = path.parent
    if layout_name == "orcnn" and info.get("image_root"):
        if not isinstance(info["image_root"], str) or "\x00" in info["image_root"]:
            raise Where(path).error(f"info.image_root {short_repr(info['image_root'])} is not a folder name")
        root = (path.parent / info["image_root"]).resolve()
    elif images and not is_file(root / images[0].file_name):
        if is_file(root / "images" / images[0].file_name):  # common layout: DIR/ann.json + DIR/images/
            root = root / "images"
    return AmodalAnnotations(images=images, categories=categories, format=layout_name, path=path,
                             image_root=root)


for _name in LAYOUTS:
    register_reader(_name)(partial(read_flat, layout_name=_name))

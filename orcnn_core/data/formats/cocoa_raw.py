"""COCOA in its raw per-image layout (Zhu et al. 2017).

A record: ``image_id``, ``id``, ``size`` (the number of regions, not the image size), ``url``, and
``regions``, each with ``segmentation`` (one flat amodal polygon), ``name``, ``area``, ``isStuff``,
``occlude_rate``, ``order`` (depth order) and, only on occluded regions, ``visible_mask`` and
``invisible_mask`` as compressed RLE. The image size comes from those RLEs or from the image header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from orcnn_core.data.formats import register_reader
from orcnn_core.data.images import IMAGE_EXTENSIONS, read_image_size
from orcnn_core.data.records import AmodalAnnotations, Where, build_annotation, check_unique_ids
from orcnn_core.structures import ImageRecord

CATEGORIES = [{"id": 1, "name": "object"}]
REGION_EXTRA_KEYS = ("name", "order", "isStuff", "occlude_rate")


def _image_candidates(record: dict, json_path: Optional[Path]) -> list:
    names = []
    if json_path is not None:  # deocclusion demo layout: N.json next to N.jpg
        names += [json_path.stem + ext for ext in IMAGE_EXTENSIONS]
    if record.get("file_name"):
        names.append(str(record["file_name"]))
    if record.get("url"):
        names.append(str(record["url"]).rstrip("/").rsplit("/", 1)[-1])
    names.append(f"COCO_val2014_{int(record['image_id']):012d}.jpg")
    return names


def _image_size(record: dict, root: Path, file_name: str, where: Where) -> tuple:
    for region in record.get("regions", []):
        for key in ("visible_mask", "invisible_mask"):
            rle = region.get(key)
            if isinstance(rle, dict) and "size" in rle:
                return int(rle["size"][0]), int(rle["size"][1])
    if "height" in record and "width" in record:
        return int(record["height"]), int(record["width"])
    path = root / file_name
    if not path.is_file():
        raise where.error(f"cannot tell the image size: no region has an RLE and the image {path} is missing")
    return read_image_size(path)


def _read_record(record: Any, json_path: Optional[Path], root: Path, source: Path, next_ann_id: int,
                 no_stuff: bool, repair: bool) -> ImageRecord:
    file = json_path or source
    if not isinstance(record, dict) or "image_id" not in record or "regions" not in record:
        raise Where(file).error("a COCOA raw record needs 'image_id' and 'regions'")
    image_id = int(record["image_id"])
    where = Where(file, image_id)
    candidates = _image_candidates(record, json_path)
    guess = candidates[len(IMAGE_EXTENSIONS) if json_path is not None else 0]  # file_name or url name
    file_name = next((n for n in candidates if (root / n).is_file()), guess)
    height, width = _image_size(record, root, file_name, where)
    annotations = []
    for index, region in enumerate(record["regions"]):
        ann_id = next_ann_id + index
        if not isinstance(region, dict) or "segmentation" not in region:
            raise Where(file, image_id, ann_id).error(f"region {index} has no 'segmentation'")
        if no_stuff and region.get("isStuff"):
            continue
        extra = {k: region[k] for k in REGION_EXTRA_KEYS if k in region}
        if isinstance(extra.get("name"), str):
            extra["name"] = extra["name"].strip()
        annotations.append(build_annotation(
            ann_id, 1, height, width, region["segmentation"],
            region.get("visible_mask"), region.get("invisible_mask"),
            where=Where(file, image_id, f"{ann_id} (region {index}, order {region.get('order')})"),
            repair=repair, extra=extra))
    return ImageRecord(image_id=image_id, file_name=file_name, height=height, width=width,
                       annotations=annotations, extra={"cocoa_id": record.get("id")})


@register_reader("cocoa_raw")
def read_cocoa_raw(data: Any, path: Path, *, no_stuff: bool = False,
                   repair: bool = False) -> AmodalAnnotations:
    """COCOA raw records: one record, a list of records, or ``[(json_path, record), ...]`` of a folder."""
    path = Path(path)
    root = path if path.is_dir() else path.parent
    if isinstance(data, dict):
        items = [(None, data)]
    elif isinstance(data, list):
        items = [item if isinstance(item, tuple) else (None, item) for item in data]
    else:
        raise Where(path).error("COCOA raw input must be a record or a list of records")
    records, next_ann_id = [], 1
    for json_path, record in items:
        image_record = _read_record(record, json_path, root, path, next_ann_id, no_stuff, repair)
        next_ann_id += len(record["regions"])
        records.append(image_record)
    check_unique_ids(records, path)
    return AmodalAnnotations(images=records, categories=[dict(c) for c in CATEGORIES], format="cocoa_raw",
                             path=path, image_root=root)

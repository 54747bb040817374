"""COCOA in its raw per-image layout (Zhu et al. 2017).

A record: ``image_id``, ``id``, ``size`` (the number of regions, not the image size), ``url``, and
``regions``, each with ``segmentation`` (one flat amodal polygon), ``name``, ``area``, ``isStuff``,
``occlude_rate``, ``order`` (depth order) and, only on occluded regions, ``visible_mask`` and
``invisible_mask`` as compressed RLE. The image size comes from those RLEs or from the image header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from orcnn_core import masks as mask_ops
from orcnn_core.data.coco_fields import (
    Where,
    check_unique_ids,
    file_name_or_error,
    id_or_error,
    image_size_or_error,
    is_file,
)
from orcnn_core.data.formats import register_reader
from orcnn_core.data.images import IMAGE_EXTENSIONS, read_image_size
from orcnn_core.data.records import AmodalAnnotations, RawAnnotation, build_annotations
from orcnn_core.mask_checks import short_repr
from orcnn_core.structures import ImageRecord

CATEGORIES = [{"id": 1, "name": "object"}]
REGION_EXTRA_KEYS = ("name", "order", "isStuff", "occlude_rate")


def _image_candidates(record: dict, json_path: Optional[Path], image_id: int, where: Where) -> list:
    names = []
    if json_path is not None:  # deocclusion demo layout: N.json next to N.jpg
        names += [json_path.stem + ext for ext in IMAGE_EXTENSIONS]
    if record.get("file_name"):
        names.append(file_name_or_error(record["file_name"], where))
    if record.get("url"):
        url = file_name_or_error(record["url"], where, "url")
        names.append(url.rstrip("/").rsplit("/", 1)[-1])
    names.append(f"COCO_val2014_{image_id:012d}.jpg")
    return names


def _image_size(record: dict, root: Path, file_name: str, where: Where) -> tuple:
    for index, region in enumerate(record["regions"]):
        for key in ("visible_mask", "invisible_mask"):
            rle = region.get(key)
            if isinstance(rle, dict) and "size" in rle:
                size, what = rle["size"], f"region {index} '{key}' size"
                if not isinstance(size, list) or len(size) != 2:
                    raise where.error(f"{what}: must be [height, width], got {short_repr(size)}")
                return image_size_or_error(size[0], size[1], where, what)
    if "height" in record and "width" in record:
        return image_size_or_error(record["height"], record["width"], where)
    path = root / file_name
    if not is_file(path):
        raise where.error(f"cannot tell the image size: no region has an RLE and the image {path} is missing")
    height, width = read_image_size(path)
    try:
        mask_ops.check_image_size(height, width)
    except mask_ops.MaskFormatError as exc:
        raise where.error(f"image {path}: {exc}") from exc
    return height, width


def _read_record(record: Any, json_path: Optional[Path], root: Path, source: Path, next_ann_id: int,
                 no_stuff: bool, repair: bool) -> ImageRecord:
    file = json_path or source
    if not isinstance(record, dict) or "image_id" not in record or "regions" not in record:
        raise Where(file).error("a COCOA raw record needs 'image_id' and 'regions'")
    image_id = id_or_error(record["image_id"], Where(file), "image_id")
    where = Where(file, image_id)
    if not isinstance(record["regions"], list):
        raise where.error(f"'regions' must be a list, got {short_repr(record['regions'])}")
    for index, region in enumerate(record["regions"]):
        if not isinstance(region, dict) or "segmentation" not in region:
            raise Where(file, image_id, next_ann_id + index).error(
                f"region {index} is not an object with a 'segmentation': {short_repr(region)}")
    candidates = _image_candidates(record, json_path, image_id, where)
    guess = candidates[len(IMAGE_EXTENSIONS) if json_path is not None else 0]  # file_name or url name
    file_name = next((n for n in candidates if is_file(root / n)), guess)
    height, width = _image_size(record, root, file_name, where)
    raws = []
    for index, region in enumerate(record["regions"]):
        ann_id = next_ann_id + index
        if no_stuff and region.get("isStuff"):
            continue
        extra = {k: region[k] for k in REGION_EXTRA_KEYS if k in region}
        if isinstance(extra.get("name"), str):
            extra["name"] = extra["name"].strip()
        order = region.get("order")
        order_text = order if isinstance(order, int) else short_repr(order, 20)
        raws.append(RawAnnotation(
            ann_id, 1, height, width, Where(file, image_id, f"{ann_id} (region {index}, order {order_text})"),
            region["segmentation"], region.get("visible_mask"), region.get("invisible_mask"), extra=extra,
            fields=("'segmentation'", "'visible_mask'", "'invisible_mask'")))
    annotations = build_annotations(raws, repair=repair)
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

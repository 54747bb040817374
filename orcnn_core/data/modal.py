"""Plain (modal) COCO instance files: input of the COCOA cls merge and of amodal augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from orcnn_core.data.io import read_json
from orcnn_core.data.records import Where, parse_categories, to_rle
from orcnn_core.errors import DatasetError


@dataclass
class ModalInstance:
    """One modal COCO annotation with its mask as compressed RLE."""

    id: int
    image_id: int
    category_id: int
    rle: dict
    iscrowd: bool


@dataclass
class ModalDataset:
    """A modal COCO file: image entries, instances grouped by image id, categories."""

    images: dict  # image id -> {"file_name", "height", "width"}
    instances: dict = field(default_factory=dict)  # image id -> list[ModalInstance]
    categories: list = field(default_factory=list)
    path: Optional[Path] = None


def load_modal_coco(path: Union[str, Path]) -> ModalDataset:
    """Read a COCO instances file; masks (polygons or RLE) become compressed RLE."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"COCO file not found: {path}")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DatasetError(f"{path}: expected a COCO file with 'images', 'annotations' and 'categories'")
    categories = parse_categories(data.get("categories", []), path)
    known = {c["id"] for c in categories}
    images = {}
    for entry in data.get("images", []):
        if "id" not in entry or "height" not in entry or "width" not in entry:
            raise Where(path).error(f"image entry needs 'id', 'height' and 'width': {str(entry)[:80]}")
        if entry["id"] in images:
            raise Where(path, entry["id"]).error("duplicate image id")
        images[entry["id"]] = {"file_name": str(entry.get("file_name", "")), "height": int(entry["height"]),
                               "width": int(entry["width"])}
    dataset = ModalDataset(images=images, categories=categories, path=path)
    seen: set = set()
    for ann in data["annotations"]:
        where = Where(path, ann.get("image_id"), ann.get("id"))
        if ann.get("id") in seen:
            raise where.error("duplicate annotation id")
        seen.add(ann.get("id"))
        if ann.get("image_id") not in images:
            raise where.error("annotation refers to an image id not in 'images'")
        if ann.get("category_id") not in known:
            raise where.error(f"unknown category id {ann.get('category_id')}")
        if "segmentation" not in ann:
            raise where.error("annotation has no 'segmentation'")
        image = images[ann["image_id"]]
        rle = to_rle(ann["segmentation"], image["height"], image["width"], where, "segmentation")
        dataset.instances.setdefault(ann["image_id"], []).append(ModalInstance(
            id=int(ann["id"]), image_id=ann["image_id"], category_id=int(ann["category_id"]), rle=rle,
            iscrowd=bool(ann.get("iscrowd", 0))))
    return dataset

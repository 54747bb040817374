"""Plain (modal) COCO instance files: input of the COCOA cls merge and of amodal augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

from orcnn_core import masks as mask_ops
from orcnn_core.data.coco_fields import (
    check_annotation_refs,
    iscrowd_or_error,
    parse_categories,
    parse_image_entries,
)
from orcnn_core.data.io import read_json
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
    images = parse_image_entries(data.get("images", []), path)
    dataset = ModalDataset(images=images, categories=categories, path=path)
    seen: dict = {}
    checked = []
    for ann in data["annotations"]:
        where, category_id = check_annotation_refs(ann, path, images, known, seen)
        if "segmentation" not in ann:
            raise where.error("annotation has no 'segmentation'")
        checked.append((ann, where, category_id, iscrowd_or_error(ann.get("iscrowd"), where)))
    # all masks validated and converted in one batch (fast for files of many annotations)
    rles = mask_ops.segmentations_to_rles(
        [ann["segmentation"] for ann, *_ in checked],
        [(images[ann["image_id"]]["height"], images[ann["image_id"]]["width"]) for ann, *_ in checked])
    for (ann, where, category_id, iscrowd), rle in zip(checked, rles):
        if isinstance(rle, mask_ops.MaskFormatError):
            raise where.error(f"'segmentation': {rle}")
        dataset.instances.setdefault(ann["image_id"], []).append(ModalInstance(
            id=int(ann["id"]), image_id=ann["image_id"], category_id=category_id, rle=rle, iscrowd=iscrowd))
    return dataset

"""Conversions into the project's format, including the COCOA cls merge of the paper (section 4.2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Union

import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.data.io import load_annotations, write_annotations
from orcnn_core.data.modal import load_modal_coco
from orcnn_core.data.records import AmodalAnnotations
from orcnn_core.structures import ImageRecord

COCOA_CLS_IOU = 0.75


def convert(input_path: Union[str, Path], out_path: Union[str, Path], format: Optional[str] = None, *,
            no_stuff: bool = False, repair: bool = False) -> AmodalAnnotations:
    """Read any supported file and write it in the project's format; returns what was read."""
    annotations = load_annotations(input_path, format, no_stuff=no_stuff, repair=repair)
    write_annotations(annotations, None, out_path)
    return annotations


def merge_cocoa_cls(cocoa: AmodalAnnotations, coco_path: Union[str, Path],
                    iou_threshold: float = COCOA_CLS_IOU) -> AmodalAnnotations:
    """COCOA cls: keep a COCOA region whose visible mask has IoU > ``iou_threshold`` with a non-crowd
    COCO annotation of the same image, labelled with that annotation's category.

    Stuff regions are dropped; images left without regions are dropped (as in the paper); each COCO
    annotation labels at most one region (the region with the highest IoU wins).
    """
    coco = load_modal_coco(coco_path)
    images = []
    for record in cocoa.images:
        candidates = [m for m in coco.instances.get(record.image_id, []) if not m.iscrowd]
        regions = [a for a in record.annotations if not a.extra.get("isStuff")]
        if not candidates or not regions:
            continue
        ious = mask_ops.iou_matrix([a.visible_rle for a in regions], [m.rle for m in candidates])
        kept, used_regions, used = [], set(), set()
        for flat in np.argsort(-ious, axis=None, kind="stable"):  # greedy, best pairs first
            r, c = divmod(int(flat), len(candidates))
            if ious[r, c] <= iou_threshold:
                break
            if c in used or r in used_regions:
                continue
            used.add(c)
            used_regions.add(r)
            kept.append((r, c))
        if not kept:
            continue
        annotations = []
        for r, c in sorted(kept):
            region = regions[r]
            extra = dict(region.extra, coco_annotation_id=candidates[c].id, coco_iou=float(ious[r, c]))
            category_id = candidates[c].category_id
            annotations.append(dataclasses.replace(region, category_id=category_id, extra=extra))
        images.append(ImageRecord(image_id=record.image_id, file_name=record.file_name, height=record.height,
                                  width=record.width, annotations=annotations, extra=dict(record.extra)))
    return AmodalAnnotations(images=images, categories=[dict(c) for c in coco.categories], format="cocoa_cls",
                             path=cocoa.path, image_root=cocoa.image_root)

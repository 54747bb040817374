"""The data types every part of the project exchanges.

* ``AmodalAnnotation`` / ``ImageRecord``: the one canonical ground-truth record that every dataset
  reader produces (DESIGN.md, "Data"). Masks are compressed RLE so that whole datasets fit in memory
  and pycocotools can use them directly; ``*_mask()`` methods decode on demand.
* ``Prediction``: what ``Predictor`` returns for one image (numpy, image-sized masks).
* ``prediction_to_results``: a ``Prediction`` as entries of the project's results JSON
  (a COCO results list, read by ``orcnn eval``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.errors import InputError

if TYPE_CHECKING:  # occlusion imports this module
    from orcnn_core.occlusion import OcclusionGraph

Box = tuple  # (x0, y0, x1, y1) floats, far edge exclusive


@dataclass
class AmodalAnnotation:
    """One ground-truth instance: amodal, visible and invisible masks of one object."""

    id: int
    category_id: int
    amodal_rle: dict
    visible_rle: dict
    invisible_rle: dict
    amodal_box: Box
    visible_box: Box
    occlusion_rate: float  # invisible area / amodal area, in [0, 1]
    iscrowd: bool = False
    extra: dict = field(default_factory=dict)  # format-specific fields kept for round trips

    @classmethod
    def from_masks(cls, id: int, category_id: int, amodal_mask: np.ndarray, visible_mask: np.ndarray,
                   iscrowd: bool = False, extra: Optional[dict] = None) -> AmodalAnnotation:
        """Build from full-image bool masks; invisible = amodal AND NOT visible."""
        amodal_mask = amodal_mask.astype(bool)
        visible_mask = visible_mask.astype(bool)
        invisible_mask = amodal_mask & ~visible_mask
        amodal_area = int(amodal_mask.sum())
        return cls(
            id=int(id), category_id=int(category_id),
            amodal_rle=mask_ops.encode(amodal_mask), visible_rle=mask_ops.encode(visible_mask),
            invisible_rle=mask_ops.encode(invisible_mask),
            amodal_box=mask_ops.mask_box(amodal_mask), visible_box=mask_ops.mask_box(visible_mask),
            occlusion_rate=float(invisible_mask.sum()) / amodal_area if amodal_area else 0.0,
            iscrowd=bool(iscrowd), extra=dict(extra or {}),
        )

    def amodal_mask(self) -> np.ndarray:
        """Decoded HxW bool amodal mask."""
        return mask_ops.decode(self.amodal_rle)

    def visible_mask(self) -> np.ndarray:
        """Decoded HxW bool visible mask."""
        return mask_ops.decode(self.visible_rle)

    def invisible_mask(self) -> np.ndarray:
        """Decoded HxW bool invisible (occluded) mask."""
        return mask_ops.decode(self.invisible_rle)

    @property
    def amodal_area(self) -> int:
        return mask_ops.area(self.amodal_rle)

    @property
    def visible_area(self) -> int:
        return mask_ops.area(self.visible_rle)

    @property
    def is_occluded(self) -> bool:
        return mask_ops.area(self.invisible_rle) > 0


@dataclass
class ImageRecord:
    """One image with its amodal instances, the canonical output of every dataset reader."""

    image_id: int
    file_name: str  # path relative to the dataset's image root, or absolute
    height: int
    width: int
    annotations: list = field(default_factory=list)  # list[AmodalAnnotation]
    extra: dict = field(default_factory=dict)


@dataclass
class Prediction:
    """Model output for one image. N instances; masks are at image size.

    ``labels`` are contiguous model labels 1..K; ``category_ids`` are the dataset's category ids for
    those labels (equal to ``labels`` unless the model's config maps them); ``class_names`` is one
    name per instance. Masks are bool, or float32 probabilities in [0, 1] when asked for.
    """

    amodal_boxes: np.ndarray      # (N, 4) float32, x0 y0 x1 y1
    visible_boxes: np.ndarray     # (N, 4) float32, tight box of the visible mask
    labels: np.ndarray            # (N,) int64
    category_ids: np.ndarray      # (N,) int64
    class_names: list             # N strings
    scores: np.ndarray            # (N,) float32
    amodal_masks: np.ndarray      # (N, H, W)
    visible_masks: np.ndarray     # (N, H, W)
    invisible_masks: np.ndarray   # (N, H, W)
    image_size: tuple = (0, 0)    # (height, width)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls, height: int, width: int) -> Prediction:
        """A prediction with no instances for an image of the given size."""
        no_masks = np.zeros((0, height, width), dtype=bool)
        return cls(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32), np.zeros(0, np.int64),
                   np.zeros(0, np.int64), [], np.zeros(0, np.float32), no_masks, no_masks.copy(),
                   no_masks.copy(), (height, width))

    def select(self, keep: Sequence[int] | np.ndarray) -> Prediction:
        """A new Prediction holding only the instances at indices (or bool mask) ``keep``."""
        idx = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, dtype=np.int64)
        return Prediction(self.amodal_boxes[idx], self.visible_boxes[idx], self.labels[idx],
                          self.category_ids[idx], [self.class_names[i] for i in idx], self.scores[idx],
                          self.amodal_masks[idx], self.visible_masks[idx], self.invisible_masks[idx],
                          self.image_size)


def prediction_to_results(prediction: Prediction, image_id: int, file_name: str = "",
                          threshold: float = 0.5,
                          occlusion: Optional[OcclusionGraph] = None) -> list[dict[str, Any]]:
    """Entries of the project's results JSON for one image (COCO results list + amodal fields).

    ``segmentation`` is the amodal mask, ``visible_mask`` and ``invisible_mask`` the others, all
    compressed RLE; ``bbox`` is the amodal box and ``visible_bbox`` the visible one, COCO xywh.
    Probability masks are binarised at ``threshold``.

    With ``occlusion`` (the graph published for this prediction), every entry also carries what a
    planner receives: ``instance_index`` (its position among this image's entries),
    ``occluder_indices`` (the ``instance_index`` of each occluder), ``layer`` (0 = nothing in front)
    and ``pick_rank`` (its position in the pick order, 0 = first). ``orcnn eval`` scores these
    relations as published instead of recomputing them from the masks.
    """
    amodal = mask_ops.encode_many(mask_ops.binarize(prediction.amodal_masks, threshold))
    visible = mask_ops.encode_many(mask_ops.binarize(prediction.visible_masks, threshold))
    invisible = mask_ops.encode_many(mask_ops.binarize(prediction.invisible_masks, threshold))
    n = len(prediction)
    if occlusion is not None and len(occlusion.occluder_ids) != n:
        raise InputError(f"occlusion graph has {len(occlusion.occluder_ids)} instances, prediction has {n}")
    pick_rank, layer = {}, None
    if occlusion is not None:
        pick_rank = {int(k): rank for rank, k in enumerate(occlusion.pick_order)}
        layer = occlusion.layer
        if len(layer) != n:
            raise InputError(f"occlusion graph has {len(layer)} layers for {n} instances (a graph built by "
                             "hand needs its layers: occlusion.layers_from_order)")
    results = []
    for i in range(n):
        entry = {
            "image_id": int(image_id),
            "file_name": file_name,
            "category_id": int(prediction.category_ids[i]),
            "score": float(prediction.scores[i]),
            "segmentation": amodal[i],
            "visible_mask": visible[i],
            "invisible_mask": invisible[i],
            "bbox": mask_ops.xyxy_to_xywh(prediction.amodal_boxes[i]),
            "visible_bbox": mask_ops.xyxy_to_xywh(prediction.visible_boxes[i]),
        }
        if occlusion is not None:
            entry["instance_index"] = i
            entry["occluder_indices"] = [int(j) for j in occlusion.occluder_ids[i]]
            entry["layer"] = int(layer[i])
            entry["pick_rank"] = pick_rank[i]
        results.append(entry)
    return results

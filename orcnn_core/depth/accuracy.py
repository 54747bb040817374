"""How far the measured 3D is from the exact truth of ``orcnn synth --depth`` scenes.

Predictions (entries of a results JSON written by ``orcnn predict --depth``, with ``geometry_3d``)
are matched to ground-truth objects per image: greedily by score, each to the unmatched object of
the same category with the highest visible-mask IoU, if above ``iou_threshold`` (the visible part is
what the centroid measures). For each match with 3D, the error is the distance between the
predicted ``visible_centroid`` and the truth's ``visible_centroid_3d``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.errors import DatasetError
from orcnn_core.structures import ImageRecord

TRUTH_KEY = "visible_centroid_3d"


@dataclass
class CentroidAccuracy:
    """Visible-centroid errors of matched predictions, and what could not be measured."""

    errors_m: np.ndarray       # (M,) metres, one per matched ground-truth object whose prediction has 3D
    ground_truth: int          # objects with 3D truth
    matched: int               # of them, matched by a prediction
    matched_without_3d: int    # matched predictions without 3D (too few valid depth pixels)

    def summary(self) -> dict[str, Any]:
        """Median, 90th percentile and mean error in millimetres, with the counts."""
        errors = self.errors_m * 1000.0
        stat = (lambda f: float(f(errors)) if errors.size else None)  # noqa: E731
        return {"median_mm": stat(np.median), "p90_mm": stat(lambda e: np.percentile(e, 90)),
                "mean_mm": stat(np.mean), "measured": int(errors.size), "matched": self.matched,
                "ground_truth": self.ground_truth, "matched_without_3d": self.matched_without_3d}


def centroid_accuracy(results: Sequence[dict], records: Sequence[ImageRecord],
                      iou_threshold: float = 0.5) -> CentroidAccuracy:
    """Match ``results`` to ``records`` (see the module docstring) and measure the centroid errors.

    A ground-truth file without 3D truth (not written by ``orcnn synth --depth``) is a DatasetError.
    """
    by_image = defaultdict(list)
    for entry in results:
        by_image[entry["image_id"]].append(entry)
    errors, ground_truth, matched, without_3d = [], 0, 0, 0
    for record in records:
        truths = [a for a in record.annotations if TRUTH_KEY in a.extra]
        if len(truths) != len(record.annotations):
            raise DatasetError(f"image {record.image_id}: annotations without '{TRUTH_KEY}' (ground truth "
                               "written by `orcnn synth --depth` is needed)")
        ground_truth += len(truths)
        predictions = sorted(by_image.get(record.image_id, []), key=lambda e: -float(e["score"]))
        if not predictions or not truths:
            continue
        for prediction in predictions:  # checked before pycocotools sees them
            rle = prediction.get("visible_mask")
            if not isinstance(rle, dict) or list(rle.get("size", ())) != [record.height, record.width]:
                raise DatasetError(f"image {record.image_id}: a prediction without a compressed-RLE "
                                   f"'visible_mask' of size {record.height}x{record.width}")
        ious = mask_ops.iou_matrix([p["visible_mask"] for p in predictions], [a.visible_rle for a in truths])
        free = np.ones(len(truths), bool)
        for k, prediction in enumerate(predictions):
            same_class = np.asarray([a.category_id == prediction["category_id"] for a in truths])
            candidates = np.where(free & same_class & (ious[k] > iou_threshold), ious[k], -1.0)
            best = int(np.argmax(candidates))
            if candidates[best] < 0:
                continue
            free[best] = False
            matched += 1
            geometry = prediction.get("geometry_3d") or {}
            if not geometry.get("has_3d"):
                without_3d += 1
                continue
            truth = np.asarray(truths[best].extra[TRUTH_KEY], np.float64)
            errors.append(float(np.linalg.norm(np.asarray(geometry["visible_centroid"], np.float64) - truth)))
    return CentroidAccuracy(np.asarray(errors, np.float64), ground_truth, matched, without_3d)

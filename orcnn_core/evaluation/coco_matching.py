"""COCOeval with ground truth, detections and IoU matrices supplied by the caller.

pycocotools' ``evaluateImg`` (greedy matching, crowd and ignore handling) and ``accumulate``
(101-point interpolated precision) run unchanged; only ``_prepare`` and ``computeIoU`` are replaced
so that one set of IoU matrices can be reused across several evaluations (amodal, visible, their
minimum for AV, with or without non-occluded ground truth ignored).
"""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pycocotools.cocoeval import COCOeval

MAX_DETECTIONS = 100
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
ALL_AREAS = [0.0, 1e5 ** 2]  # COCOeval's "all" area range


@dataclass
class MatchCell:
    """Input of one (image, category): COCOeval-style gt and dt dicts and the (D, G) IoU matrix.

    ``dts`` must be sorted by descending score (stable), at most ``MAX_DETECTIONS`` of them, with
    the rows of ``ious`` in that order; ``gts`` carry ``id`` (non-zero), ``ignore``, ``iscrowd``,
    ``area``. Ids must be non-zero because COCOeval uses 0 for "unmatched".
    """

    gts: list
    dts: list
    ious: np.ndarray


@dataclass
class MatchingSummary:
    """Accumulated COCOeval arrays for one evaluation, reduced to area 'all' and maxDets 100."""

    iou_thresholds: np.ndarray  # (T,)
    precision: np.ndarray       # (T, R, K); -1 where a category has no (non-ignored) ground truth
    recall: np.ndarray          # (T, K); -1 likewise

    def average_precision(self, iou: float | None = None, category_index: int | None = None):
        """Mean precision over recall thresholds, IoU thresholds and categories; None if undefined."""
        s = self.precision
        if iou is not None:
            s = s[np.isclose(self.iou_thresholds, iou)]
        if category_index is not None:
            s = s[:, :, category_index]
        return _mean_defined(s)

    def average_recall(self):
        """Mean recall over IoU thresholds and categories; None if undefined."""
        return _mean_defined(self.recall)


def _mean_defined(values: np.ndarray):
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else None


class PrecomputedCOCOeval(COCOeval):
    """COCOeval over caller-supplied cells; matching and accumulation are pycocotools' own."""

    def __init__(self, cells: dict, image_ids: Sequence[int], category_ids: Sequence[int],
                 iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS):
        super().__init__(cocoGt=None, cocoDt=None, iouType="segm")
        self._cells = cells
        p = self.params
        p.imgIds = sorted(int(i) for i in image_ids)
        p.catIds = sorted(int(c) for c in category_ids)
        p.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        p.maxDets = [MAX_DETECTIONS]
        p.areaRng = [ALL_AREAS]
        p.areaRngLbl = ["all"]

    def _prepare(self) -> None:
        self._gts = defaultdict(list)
        self._dts = defaultdict(list)
        for key, cell in self._cells.items():
            self._gts[key] = cell.gts
            self._dts[key] = cell.dts
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, imgId, catId):  # noqa: N802 (COCOeval's name)
        cell = self._cells.get((int(imgId), int(catId)))
        return [] if cell is None or (not cell.gts and not cell.dts) else cell.ious

    def run(self) -> MatchingSummary:
        """evaluate() + accumulate(), with COCOeval's progress prints silenced."""
        with contextlib.redirect_stdout(io.StringIO()):
            self.evaluate()
            self.accumulate()
        return MatchingSummary(iou_thresholds=self.params.iouThrs,
                               precision=self.eval["precision"][:, :, :, 0, 0],
                               recall=self.eval["recall"][:, :, 0, 0])

"""Amodal instance segmentation metrics of the ORCNN paper (sec. 3.3): AP_AV, AP_A, AP_V, AP_IV.

* AP_A / AP_V: COCO mask AP (IoU .50:.95, mean over categories, maxDets 100) on amodal / visible masks.
* AP_AV: a true positive needs the right class and IoU_A >= t and IoU_V >= t; COCOeval matches with
  the per-pair IoU min(IoU_A, IoU_V).
* "occluded": non-occluded ground truth is ignored (COCOeval's ignore flag).
* AP_IV@0.5 (and its ``diff`` variant): occluded ground truth only; a prediction takes part only if
  its best amodal match among the ground truth of its class is occluded with IoU > 0.5 (others are
  dropped, not false positives); AP of invisible masks at IoU 0.5.

IoU matrices are computed once per (image, category) with ``pycocotools.mask.iou`` and shared by all
COCOeval runs (see ``coco_matching.PrecomputedCOCOeval``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.data.records import parse_categories
from orcnn_core.errors import DatasetError
from orcnn_core.evaluation.agnostic import AGNOSTIC_CATEGORY, merge_ground_truth, merge_results
from orcnn_core.evaluation.coco_matching import (
    COCO_IOU_THRESHOLDS,
    MAX_DETECTIONS,
    MatchCell,
    MatchingSummary,
    PrecomputedCOCOeval,
)
from orcnn_core.evaluation.results import ParsedResults, load_results, parse_results
from orcnn_core.structures import ImageRecord

SUBSETS = ("all", "occluded")
MASK_KINDS = ("AV", "A", "V")
IV_IOU_THRESHOLD = 0.5
IV_AMODAL_IOU = 0.5  # a prediction takes part in AP_IV only if its amodal IoU exceeds this


@dataclass
class _GroundTruthCell:
    """Ground truth of one (image, category), in annotation order."""

    amodal: list = field(default_factory=list)
    visible: list = field(default_factory=list)
    invisible: list = field(default_factory=list)
    crowd: list = field(default_factory=list)
    occluded: list = field(default_factory=list)
    area: list = field(default_factory=list)


@dataclass
class AmodalEvaluation:
    """Everything one evaluation computed: the summary dict and the accumulated COCOeval arrays."""

    summary: dict
    matching: dict  # (subset, kind) -> MatchingSummary; kinds "AV", "A", "V", and ("occluded", "IV")
    category_names: list


def _percent(value: Optional[float]) -> Optional[float]:
    return None if value is None else 100.0 * value


def _same_rle(a: dict, b: dict) -> bool:
    return a is b or a == b


def _visible_ious(dt_visible: list, dt_amodal: list, gt_visible: list, gt_amodal: list, crowd: list,
                  iou_amodal: np.ndarray) -> np.ndarray:
    """Visible IoUs; where predictions carry no visible masks, the amodal IoUs are reused.

    When every visible prediction is its amodal mask, only the ground-truth columns whose visible
    mask differs from the amodal one need a new IoU (the values are those pycocotools gives).
    """
    if not all(_same_rle(v, a) for v, a in zip(dt_visible, dt_amodal)):
        return mask_ops.iou_matrix(dt_visible, gt_visible, crowd)
    columns = [j for j, (v, a) in enumerate(zip(gt_visible, gt_amodal)) if not _same_rle(v, a)]
    if not columns:
        return iou_amodal
    ious = iou_amodal.copy()
    ious[:, columns] = mask_ops.iou_matrix(dt_visible, [gt_visible[j] for j in columns],
                                           [crowd[j] for j in columns])
    return ious


def _row_max(ious: np.ndarray) -> np.ndarray:
    return ious.max(axis=1) if ious.shape[1] else np.zeros(ious.shape[0])


def _validate_categories(categories: list) -> tuple[list, list]:
    """Category ids (validated by ``records.parse_categories``) and names (the id where unnamed)."""
    ids = [c["id"] for c in parse_categories(categories, "ground truth")]
    return ids, [str(category.get("name", category["id"])) for category in categories]


class AmodalEvaluator:
    """Computes AP_AV, AP_A, AP_V (all and occluded ground truth) and AP_IV@0.5 against ground truth.

    With ``class_agnostic`` every category of the ground truth and of the results is merged into one
    (``agnostic.AGNOSTIC_CATEGORY``): the APs are then those of one "object" class.
    """

    def __init__(self, images: Sequence[ImageRecord], categories: list, *, class_agnostic: bool = False):
        self.class_agnostic = bool(class_agnostic)
        if self.class_agnostic:
            _validate_categories(categories)  # the file's categories must still be well-formed
            images, categories = merge_ground_truth(images), [dict(AGNOSTIC_CATEGORY)]
        self.images = list(images)
        self.category_ids, self.category_names = _validate_categories(categories)
        self.ground_truth_notes: list = []
        self._gt_cells = self._index_ground_truth()

    def _index_ground_truth(self) -> dict:
        known = set(self.category_ids)
        seen_images = set()
        cells: dict = {}
        without_visible = 0
        for image in self.images:
            if image.image_id in seen_images:
                raise DatasetError(f"ground truth: duplicate image_id {image.image_id}")
            seen_images.add(image.image_id)
            size = [int(image.height), int(image.width)]
            for ann in image.annotations:
                where = f"ground truth image {image.image_id} ({image.file_name!r}), annotation {ann.id}"
                if ann.category_id not in known:
                    raise DatasetError(f"{where}: category_id {ann.category_id} is not a listed category")
                amodal = ann.amodal_rle
                visible, invisible = ann.visible_rle, ann.invisible_rle
                if not isinstance(visible, dict):
                    # no visible annotation: amodal stands in, so the instance counts as not occluded
                    without_visible += 1
                    visible = amodal
                    invisible = mask_ops.encode(np.zeros(size, dtype=bool))
                elif not isinstance(invisible, dict):
                    invisible = mask_ops.difference(amodal, visible)
                for name, rle in (("amodal", amodal), ("visible", visible), ("invisible", invisible)):
                    if [int(s) for s in rle.get("size", ())] != size:
                        raise DatasetError(f"{where}: {name} mask size {rle.get('size')} disagrees with "
                                           f"image size {size}")
                cell = cells.setdefault((image.image_id, ann.category_id), _GroundTruthCell())
                cell.amodal.append(amodal)
                cell.visible.append(visible)
                cell.invisible.append(invisible)
                cell.crowd.append(int(bool(ann.iscrowd)))
                cell.occluded.append(mask_ops.area(invisible) > 0)
                cell.area.append(float(mask_ops.area(amodal)))
        if without_visible:
            self.ground_truth_notes.append(
                f"ground truth: {without_visible} annotations have no visible mask; amodal is used as "
                f"visible (they count as not occluded)")
        if not any(cell.occluded[j] and not cell.crowd[j] for cell in cells.values()
                   for j in range(len(cell.occluded))):
            self.ground_truth_notes.append(
                "ground truth: no occluded instance; the occluded columns and AP_IV are undefined (null)")
        return cells

    def evaluate(self, results: Union[list, ParsedResults], source: str = "results") -> dict:
        """Evaluate a results list; returns the summary dict (percent; null where undefined)."""
        return self.compute(results, source).summary

    def compute(self, results: Union[list, ParsedResults], source: str = "results") -> AmodalEvaluation:
        """Evaluate a results list and keep the accumulated precision/recall arrays (for plots)."""
        if self.class_agnostic and not isinstance(results, ParsedResults):
            results = merge_results(results)
        parsed = results if isinstance(results, ParsedResults) else \
            parse_results(results, self.images, self.category_ids, source)
        runs = self._build_cells(parsed)
        image_ids = [image.image_id for image in self.images]
        matching = {}
        for (subset, kind), cells in runs.items():
            thresholds = [IV_IOU_THRESHOLD] if kind.startswith("IV") else COCO_IOU_THRESHOLDS
            evaluator = PrecomputedCOCOeval(cells, image_ids, self.category_ids, thresholds)
            matching[subset, kind] = evaluator.run()
        notes = list(self.ground_truth_notes) + list(parsed.notes)
        summary = self._summarize(matching, parsed, notes)
        summary["results"] = parsed.source
        return AmodalEvaluation(summary=summary, matching=matching, category_names=list(self.category_names))

    def _build_cells(self, parsed: ParsedResults) -> dict:
        """Per COCOeval run, the MatchCells of every (image, category), sharing the IoU matrices."""
        runs = {(s, k): {} for s in SUBSETS for k in MASK_KINDS}
        runs["occluded", "IV"] = {}
        runs["occluded", "IV_diff"] = {}
        empty_gt = _GroundTruthCell()
        for key in set(self._gt_cells) | set(parsed.cells):
            gt = self._gt_cells.get(key, empty_gt)
            dt = parsed.cells.get(key)
            num_gt = len(gt.amodal)
            num_dt = 0 if dt is None else len(dt.scores)
            top = min(num_dt, MAX_DETECTIONS)
            iou_amodal_all = mask_ops.iou_matrix(dt.amodal, gt.amodal, gt.crowd) if num_dt \
                else np.zeros((0, num_gt))
            iou_amodal = iou_amodal_all[:top]
            iou_visible = _visible_ious(dt.visible[:top], dt.amodal[:top], gt.visible, gt.amodal, gt.crowd,
                                        iou_amodal) if top else iou_amodal
            ious = {"A": iou_amodal, "V": iou_visible, "AV": np.minimum(iou_amodal, iou_visible)}
            # COCOeval reads a dt's area only to filter by area range; we use the "all" range only.
            dts = [{"id": i + 1, "score": float(dt.scores[i]), "area": 0.0} for i in range(top)]
            for subset in SUBSETS:
                gts = [{"id": j + 1, "iscrowd": gt.crowd[j], "area": gt.area[j],
                        "ignore": bool(gt.crowd[j]) or (subset == "occluded" and not gt.occluded[j])}
                       for j in range(num_gt)]
                for kind in MASK_KINDS:
                    runs[subset, kind][key] = MatchCell(gts=gts, dts=dts, ious=ious[kind])
            self._add_invisible_cells(runs, key, gt, dt, iou_amodal_all)
        return runs

    def _add_invisible_cells(self, runs: dict, key: tuple, gt: _GroundTruthCell, dt, iou_amodal_all) -> None:
        """AP_IV cells: occluded gt only; predictions not amodally matching one (IoU > 0.5) are dropped."""
        occluded = [j for j in range(len(gt.amodal)) if gt.occluded[j]]
        if not occluded:
            return
        gts = [{"id": n + 1, "iscrowd": gt.crowd[j], "area": gt.area[j], "ignore": bool(gt.crowd[j])}
               for n, j in enumerate(occluded)]
        kept = []
        if dt is not None and len(dt.scores):
            # The prediction's best amodal match must be an occluded object (non-occluded gt are
            # ignored in these evaluations) with IoU > 0.5 (else its amodal mask is a false positive).
            regular = ~np.asarray(gt.crowd, dtype=bool)
            is_occluded = np.asarray(gt.occluded, dtype=bool)
            best_occluded = _row_max(iou_amodal_all[:, regular & is_occluded])
            best_other = _row_max(iou_amodal_all[:, regular & ~is_occluded])
            keep = (best_occluded > IV_AMODAL_IOU) & (best_occluded >= best_other)
            kept = np.flatnonzero(keep)[:MAX_DETECTIONS].tolist()
        dts = [{"id": n + 1, "score": float(dt.scores[i]), "area": 0.0} for n, i in enumerate(kept)]
        gt_invisible = [gt.invisible[j] for j in occluded]
        crowd = [gt.crowd[j] for j in occluded]
        diff = mask_ops.difference_many([dt.amodal[i] for i in kept], [dt.visible[i] for i in kept])
        predicted = [dt.invisible[i] if dt.invisible[i] is not None else diff[n] for n, i in enumerate(kept)]
        runs["occluded", "IV"][key] = MatchCell(gts=gts, dts=dts,
                                                ious=mask_ops.iou_matrix(predicted, gt_invisible, crowd))
        runs["occluded", "IV_diff"][key] = MatchCell(gts=gts, dts=dts,
                                                     ious=mask_ops.iou_matrix(diff, gt_invisible, crowd))

    def _summarize(self, matching: dict, parsed: ParsedResults, notes: list) -> dict:
        summary: dict = {}
        for subset in SUBSETS:
            row = {}
            for kind in MASK_KINDS:
                m: MatchingSummary = matching[subset, kind]
                row[f"AP_{kind}"] = _percent(m.average_precision())
                row[f"AP_{kind}50"] = _percent(m.average_precision(iou=0.5))
                row[f"AP_{kind}75"] = _percent(m.average_precision(iou=0.75))
                row[f"AR_{kind}"] = _percent(m.average_recall())
            summary[subset] = row
        if parsed.only_amodal:
            summary["AP_IV50"] = summary["AP_IV50_diff"] = None
        else:
            summary["AP_IV50"] = _percent(matching["occluded", "IV"].average_precision())
            summary["AP_IV50_diff"] = _percent(matching["occluded", "IV_diff"].average_precision())
        summary["per_category"] = {
            self._category_key(k): {
                f"AP_{kind}": _percent(matching["all", kind].average_precision(category_index=k))
                for kind in MASK_KINDS}
            for k in range(len(self.category_ids))}
        summary["notes"] = notes
        return summary

    def _category_key(self, index: int) -> str:
        name = self.category_names[index]
        if self.category_names.count(name) > 1:
            return f"{name} ({self.category_ids[index]})"
        return name


def evaluate_files(gt_path: Union[str, Path], results_paths: Sequence[Union[str, Path]],
                   format: Optional[str] = None, **options) -> list[dict]:
    """Evaluate results JSON files against a ground-truth annotation file; one summary per file
    (``options`` as for ``compute_files``)."""
    return [evaluation.summary for evaluation in compute_files(gt_path, results_paths, format, **options)]


def compute_files(gt_path: Union[str, Path], results_paths: Sequence[Union[str, Path]],
                  format: Optional[str] = None, *, class_agnostic: bool = False,
                  order_score_threshold: Optional[float] = None,
                  repair: bool = False) -> list[AmodalEvaluation]:
    """Like ``evaluate_files`` but returns the full ``AmodalEvaluation`` of each results file.

    ``repair`` repairs the ground truth as ``load_annotations`` does; ``class_agnostic`` merges all
    categories (AP and order metrics); with ``order_score_threshold``
    the occlusion-order metrics (``order_eval.OrderEvaluator``) are added under ``summary["order"]``.
    """
    from orcnn_core.data import load_annotations  # the data package is heavy; import on use
    from orcnn_core.evaluation.order_eval import OrderEvaluator

    dataset = load_annotations(gt_path, format=format, repair=repair)
    evaluator = AmodalEvaluator(dataset.images, dataset.categories, class_agnostic=class_agnostic)
    order = None if order_score_threshold is None else OrderEvaluator(
        dataset.images, dataset.categories, score_threshold=order_score_threshold,
        class_agnostic=class_agnostic)
    evaluations = []
    for path in results_paths:
        results = load_results(path)
        evaluation = evaluator.compute(results, source=str(path))
        if order is not None:
            evaluation.summary["order"] = order.evaluate_results(results, source=str(path))
        evaluations.append(evaluation)
    return evaluations

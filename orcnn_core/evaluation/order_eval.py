"""Occlusion-order evaluation: are the published occluder relations and the pick order right?

What a grasp planner takes from the node (``occluder_ids``, ``pick_order``) scored against the
ground truth, image by image (rules in docs/evaluation.md, "Occlusion order"):

* ground-truth relations from the ground-truth masks (``order_relations.ground_truth_occluders``);
* predictions at ``score_threshold`` (default 0.5, the node's) matched to ground truth greedily by
  score: each takes the free ground-truth object of its class (any class when class-agnostic) with
  the highest amodal IoU above 0.5;
* occluder-edge precision / recall / F1 over ordered pairs of matched predictions; occlusion-order
  accuracy (per image, share of matched pairs whose relation is right, mean over images); share of
  images whose predicted graph has a cycle; duplicate rate; first-pick safety and false all-clear
  rate, each beside the ground-truth oracle (the same measure with the ground truth as prediction).

``OrderEvaluator`` follows detectron2's DatasetEvaluator idiom: ``reset()``, ``process(image_id,
entries)`` per image (results entries of that image, e.g. converted from a node message), then
``evaluate()``; ``evaluate_results(results)`` does all three for a whole results list.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.data.records import parse_categories
from orcnn_core.evaluation.agnostic import AGNOSTIC_CATEGORY, merge_results
from orcnn_core.evaluation.order_relations import (
    GRAPH_KEYS,
    ImageRelations,
    ground_truth_relations,
    has_cycle,
    predicted_relations,
)
from orcnn_core.evaluation.results import ResultsError, parse_results
from orcnn_core.structures import ImageRecord

DEFAULT_ORDER_SCORE_THRESHOLD = 0.5  # the ROS node's default score threshold
MATCH_IOU = 0.5                      # amodal IoU a prediction must exceed to match a ground truth


def _percent(numerator: float, denominator: float) -> Optional[float]:
    return None if denominator == 0 else 100.0 * numerator / denominator


@dataclass
class _Counts:
    """Running totals over the processed images."""

    images: int = 0
    predictions: int = 0
    matched: int = 0
    duplicates: int = 0
    edge_tp: int = 0
    edge_fp: int = 0
    edge_fn: int = 0
    edge_fp_reversed: int = 0
    order_accuracy: list = field(default_factory=list)  # per image with >= 1 matched pair
    cycle_images: int = 0
    images_with_objects: int = 0
    images_with_pick: int = 0
    safe_first: int = 0
    false_all_clear: int = 0
    oracle_cycle_images: int = 0
    oracle_safe_first: int = 0
    oracle_false_all_clear: int = 0


def match_predictions(pred: ImageRelations, gt: ImageRelations) -> tuple[list, int]:
    """Greedy matching by score (``pred`` is sorted highest first): ``match[p]`` is the ground-truth
    index of prediction p or None; also the number of duplicates (unmatched predictions whose
    best same-class ground truth above the IoU was already taken by a higher-scored prediction)."""
    ious = mask_ops.iou_matrix(pred.amodal, gt.amodal)
    same = pred.labels[:, None] == gt.labels[None, :]
    candidate = same & (ious > MATCH_IOU)
    taken = np.zeros(len(gt), dtype=bool)
    match: list = [None] * len(pred)
    duplicates = 0
    for p in range(len(pred)):
        free = candidate[p] & ~taken
        if free.any():
            g = int(np.argmax(np.where(free, ious[p], -1.0)))
            match[p] = g
            taken[g] = True
        elif candidate[p].any():
            duplicates += 1
    return match, duplicates


def _first_pick(relations: ImageRelations, match: Sequence, gt: ImageRelations) -> tuple[bool, bool]:
    """(safe, false all-clear) of the first pick: safe when it is a real object nothing hides;
    false all-clear when nothing is listed in front of it but it is hidden or not an object."""
    k = relations.pick_order[0]
    listed_clear = not relations.occluded_by[k].any()
    g = match[k]
    hidden = g is not None and bool(gt.occluded_by[g].any())
    return g is not None and not hidden, listed_clear and (g is None or hidden)


class OrderEvaluator:
    """Occluder-edge precision / recall / F1, order accuracy, cycles, duplicates, first-pick safety."""

    def __init__(self, images: Sequence[ImageRecord], categories: list, *,
                 score_threshold: float = DEFAULT_ORDER_SCORE_THRESHOLD, class_agnostic: bool = False):
        if not 0.0 <= float(score_threshold) <= 1.0:
            raise ResultsError(f"order score threshold must be in [0, 1], got {score_threshold}")
        self.images = list(images)
        self.image_by_id = {image.image_id: image for image in self.images}
        self.category_ids = [c["id"] for c in parse_categories(categories, "ground truth")]
        self.score_threshold = float(score_threshold)
        self.class_agnostic = bool(class_agnostic)
        self._ground_truth: dict = {}
        self.reset()

    # -- detectron2-style interface ------------------------------------------------------------
    def reset(self) -> None:
        """Forget every processed image."""
        self._counts = _Counts()
        self._graph_sources: set = set()
        self.notes: list = []

    def process(self, image_id: int, entries: list, source: str = "results") -> None:
        """Score the results entries of one ground-truth image (their own image_id is ignored)."""
        image = self.image_by_id.get(int(image_id))
        if image is None:
            raise ResultsError(f"{source}: image_id {image_id} is not in the ground truth")
        entries = [dict(e, image_id=image.image_id) if isinstance(e, dict) else e for e in entries]
        parsed = parse_results(self._categories_of(entries), [image], self._category_ids(), source)
        self._add_image(image, entries, self._regroup(parsed).get(image.image_id, []), source)

    def evaluate(self) -> dict:
        """The order metrics of the processed images (percent; null where undefined)."""
        return self._summary()

    def evaluate_results(self, results: list, source: str = "results") -> dict:
        """reset + process every ground-truth image with its entries of ``results`` + evaluate."""
        self.reset()
        if not isinstance(results, list):
            raise ResultsError(f"{source}: results must be a list of entries, got {type(results).__name__}")
        parsed = parse_results(self._categories_of(results), self.images, self._category_ids(), source)
        per_image = self._regroup(parsed)
        for image in self.images:
            self._add_image(image, results, per_image.get(image.image_id, []), source)
        return self._summary()

    # -- internals -----------------------------------------------------------------------------
    def _category_ids(self) -> list:
        return [AGNOSTIC_CATEGORY["id"]] if self.class_agnostic else self.category_ids

    def _categories_of(self, entries: list) -> list:
        """Entries as they are, or with every category merged into one (class-agnostic)."""
        return merge_results(entries) if self.class_agnostic else entries

    @staticmethod
    def _regroup(parsed) -> dict:
        """image_id -> [(entry index, score, category id, amodal, visible, invisible)], by score."""
        per_image = defaultdict(list)
        for (image_id, category_id), cell in parsed.cells.items():
            for d in range(len(cell.scores)):
                per_image[image_id].append((int(cell.entry_index[d]), float(cell.scores[d]), category_id,
                                            cell.amodal[d], cell.visible[d], cell.invisible[d]))
        for items in per_image.values():
            items.sort(key=lambda item: (-item[1], item[0]))
        return per_image

    def _ground_truth_of(self, image: ImageRecord) -> ImageRelations:
        cached = self._ground_truth.get(image.image_id)
        if cached is None:
            anns = [a for a in image.annotations if not a.iscrowd]
            labels = np.array([AGNOSTIC_CATEGORY["id"] if self.class_agnostic else a.category_id
                               for a in anns], dtype=np.int64)
            # Without a visible annotation the object counts as not occluded (as in AmodalEvaluator).
            visible = [a.visible_rle if isinstance(a.visible_rle, dict) else a.amodal_rle for a in anns]
            invisible = [a.invisible_rle if isinstance(a.invisible_rle, dict) and v is a.visible_rle
                         else mask_ops.difference(a.amodal_rle, v) for a, v in zip(anns, visible)]
            cached = ground_truth_relations(labels, [a.amodal_rle for a in anns], visible, invisible,
                                            image.height, image.width)
            self._ground_truth[image.image_id] = cached
        return cached

    def _add_image(self, image: ImageRecord, entries: list, items: list, source: str) -> None:
        items = [item for item in items if item[1] >= self.score_threshold]
        kept = [item[0] for item in items]
        with_graph = [all(key in entries[k] for key in GRAPH_KEYS) for k in kept]
        if any(with_graph) and not all(with_graph):
            raise ResultsError(f"{source}: image {image.image_id}: some entries carry "
                               f"occluder_indices and instance_index, others do not")
        use_published = bool(kept) and all(with_graph)
        if kept:
            self._graph_sources.add("published" if use_published else "recomputed")
        pred = predicted_relations(
            entries, kept, np.array([item[1] for item in items], dtype=np.float64),
            np.array([item[2] for item in items], dtype=np.int64), [item[3] for item in items],
            [item[4] for item in items], [item[5] for item in items], image.height, image.width,
            use_published, f"{source}: image {image.image_id}")
        gt = self._ground_truth_of(image)
        self._accumulate(pred, gt)

    def _accumulate(self, pred: ImageRelations, gt: ImageRelations) -> None:
        c = self._counts
        c.images += 1
        c.predictions += len(pred)
        match, duplicates = match_predictions(pred, gt)
        c.duplicates += duplicates
        matched = [p for p in range(len(pred)) if match[p] is not None]
        c.matched += len(matched)
        if len(matched) >= 2:
            idx = np.array(matched)
            g = np.array([match[p] for p in matched])
            predicted = pred.occluded_by[np.ix_(idx, idx)]
            truth = gt.occluded_by[np.ix_(g, g)]
            off_diagonal = ~np.eye(len(idx), dtype=bool)
            c.edge_tp += int(np.sum(predicted & truth & off_diagonal))
            false_positive = predicted & ~truth & off_diagonal
            c.edge_fp += int(np.sum(false_positive))
            c.edge_fn += int(np.sum(~predicted & truth & off_diagonal))
            c.edge_fp_reversed += int(np.sum(false_positive & truth.T))
            upper = np.triu(off_diagonal)
            right = (predicted == truth) & (predicted.T == truth.T)
            c.order_accuracy.append(float(right[upper].mean()))
        c.cycle_images += has_cycle(pred.occluded_by)
        c.oracle_cycle_images += has_cycle(gt.occluded_by)
        if len(gt):
            c.images_with_objects += 1
            oracle_safe, oracle_false_clear = _first_pick(gt, list(range(len(gt))), gt)
            c.oracle_safe_first += oracle_safe
            c.oracle_false_all_clear += oracle_false_clear
        if len(pred):
            c.images_with_pick += 1
            safe, false_clear = _first_pick(pred, match, gt)
            c.safe_first += safe and len(gt) > 0
            c.false_all_clear += false_clear

    def _summary(self) -> dict:
        c = self._counts
        precision = _percent(c.edge_tp, c.edge_tp + c.edge_fp)
        recall = _percent(c.edge_tp, c.edge_tp + c.edge_fn)
        f1 = None if precision is None or recall is None or precision + recall == 0 \
            else 2 * precision * recall / (precision + recall)
        notes = list(self.notes)
        if len(self._graph_sources) > 1:
            notes.append("order: some images carry published graphs, others were recomputed from masks")
        return {
            "score_threshold": self.score_threshold,
            "class_agnostic": self.class_agnostic,
            "graph": "+".join(sorted(self._graph_sources)) or None,
            "images": c.images,
            "predictions": c.predictions,
            "matched": c.matched,
            "edge_precision": precision,
            "edge_recall": recall,
            "edge_f1": f1,
            "edges": {"true_positive": c.edge_tp, "false_positive": c.edge_fp, "false_negative": c.edge_fn,
                      "false_positive_reversed": c.edge_fp_reversed},
            "order_accuracy": None if not c.order_accuracy else 100.0 * float(np.mean(c.order_accuracy)),
            "cycle_images": _percent(c.cycle_images, c.images),
            "duplicate_rate": _percent(c.duplicates, c.predictions),
            "first_pick_safety": _percent(c.safe_first, c.images_with_objects),
            "false_all_clear": _percent(c.false_all_clear, c.images_with_pick),
            "oracle": {
                "cycle_images": _percent(c.oracle_cycle_images, c.images),
                "first_pick_safety": _percent(c.oracle_safe_first, c.images_with_objects),
                "false_all_clear": _percent(c.oracle_false_all_clear, c.images_with_objects),
            },
            "notes": notes,
        }


def evaluate_order(images: Sequence[ImageRecord], categories: list, results: Union[list, dict],
                   source: str = "results", **options) -> dict:
    """One-call form: ``OrderEvaluator(images, categories, **options).evaluate_results(results)``."""
    return OrderEvaluator(images, categories, **options).evaluate_results(results, source)

"""Occlusion-order evaluation: perfect on ground truth, hand-computed on perturbed predictions,
published graphs in results entries, class-agnostic AP against plain pycocotools."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from orcnn_core import masks as mask_ops
from orcnn_core.cli import main
from orcnn_core.data.synth import generate_scene, scene_to_record
from orcnn_core.evaluation import AmodalEvaluator
from orcnn_core.evaluation.order_eval import OrderEvaluator
from orcnn_core.evaluation.order_relations import ground_truth_occluders
from orcnn_core.evaluation.results import ResultsError
from orcnn_core.occlusion import OcclusionGraph, compute_occlusion_graph, pick_order
from orcnn_core.structures import AmodalAnnotation, ImageRecord, Prediction, prediction_to_results

H, W = 60, 80
CATEGORIES = [{"id": 1, "name": "box"}, {"id": 2, "name": "can"}]


def rect(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def chain_image() -> ImageRecord:
    """g0 under g1 under g2 (side by side, 200 px hidden each); g2 is class 2."""
    g0, g1, g2 = rect(10, 30, 5, 35), rect(10, 30, 25, 55), rect(10, 30, 45, 75)
    anns = [AmodalAnnotation.from_masks(1, 1, g0, g0 & ~g1), AmodalAnnotation.from_masks(2, 1, g1, g1 & ~g2),
            AmodalAnnotation.from_masks(3, 2, g2, g2)]
    return ImageRecord(1, "one.png", H, W, anns)


def apart_image() -> ImageRecord:
    g3, g4 = rect(5, 20, 5, 20), rect(30, 50, 40, 70)
    return ImageRecord(2, "two.png", H, W, [AmodalAnnotation.from_masks(4, 1, g3, g3),
                                            AmodalAnnotation.from_masks(5, 2, g4, g4)])


def lone_image() -> ImageRecord:
    g5 = rect(20, 40, 20, 40)
    return ImageRecord(3, "three.png", H, W, [AmodalAnnotation.from_masks(6, 1, g5, g5)])


def entry(image_id, category_id, score, amodal, visible, index=None, occluders=None, rank=None):
    out = {"image_id": image_id, "category_id": category_id, "score": score,
           "segmentation": mask_ops.encode(amodal), "visible_mask": mask_ops.encode(visible),
           "invisible_mask": mask_ops.encode(amodal & ~visible)}
    if index is not None:
        out.update(instance_index=index, occluder_indices=occluders, pick_rank=rank)
    return out


def gt_entries(images, with_graph: bool) -> list:
    """The ground truth as results; with its own relations as the published graph."""
    out = []
    for image in images:
        amodal = np.stack([a.amodal_mask() for a in image.annotations])
        visible = np.stack([a.visible_mask() for a in image.annotations])
        occluded_by = ground_truth_occluders(visible, amodal & ~visible)
        order = pick_order(occluded_by, np.ones(len(amodal)))
        for k, ann in enumerate(image.annotations):
            extra = (k, np.flatnonzero(occluded_by[k]).tolist(), order.index(k)) if with_graph else ()
            out.append(entry(image.image_id, ann.category_id, 1.0 - 0.01 * k, amodal[k], visible[k], *extra))
    return out


def synthetic_images(count: int = 4) -> list:
    rng = np.random.default_rng(7)
    return [scene_to_record(generate_scene(rng, size=(160, 120), occlusion="high"), 10 + k, f"s{k}.png",
                            100 * (k + 1)) for k in range(count)]


# ---------------------------------------------------------------- ground truth against itself

@pytest.mark.parametrize("with_graph", [True, False])
def test_ground_truth_scored_against_itself_is_perfect(with_graph):
    images = [chain_image(), apart_image(), lone_image()] + (synthetic_images() if with_graph else [])
    categories = CATEGORIES + [{"id": c, "name": f"s{c}"} for c in range(3, 11)]
    summary = OrderEvaluator(images, categories).evaluate_results(gt_entries(images, with_graph))
    assert summary["graph"] == ("published" if with_graph else "recomputed")
    assert summary["edge_precision"] == summary["edge_recall"] == summary["edge_f1"] == 100.0
    assert summary["edges"]["false_positive"] == summary["edges"]["false_negative"] == 0
    assert summary["edges"]["true_positive"] >= 2
    assert summary["order_accuracy"] == 100.0
    assert summary["cycle_images"] == 0.0 and summary["duplicate_rate"] == 0.0
    assert summary["first_pick_safety"] == summary["oracle"]["first_pick_safety"] == 100.0
    assert summary["false_all_clear"] == summary["oracle"]["false_all_clear"] == 0.0
    assert summary["matched"] == summary["predictions"] == sum(len(i.annotations) for i in images)


# ---------------------------------------------------------------- hand-perturbed predictions

def perturbed_entries() -> list:
    one, two = chain_image(), apart_image()
    g0, g1, g2 = (a.amodal_mask() for a in one.annotations)
    v0, v1, v2 = (a.visible_mask() for a in one.annotations)
    shifted = np.roll(g1, 2, axis=1)
    fp = rect(40, 55, 0, 10)
    return [
        # image 1: p0 = g2, p1 = g1, p2 = g0 (class-correct); published: p0 and p1 hide each other
        # (one true edge, one reversed), p2's occluder g1 is missing, and p2 is picked first.
        entry(1, 2, 0.9, g2, v2, 0, [1], 1),
        entry(1, 1, 0.8, g1, v1, 1, [0], 2),
        entry(1, 1, 0.7, g0, v0, 2, [], 0),
        entry(1, 1, 0.6, shifted, shifted, 3, [0], 3),   # a second detection of g1: duplicate
        entry(1, 1, 0.55, fp, fp, 4, [], 4),             # a false positive
        entry(1, 1, 0.3, g0, g0, 5, [2], 5),             # below the score threshold: ignored
        # image 2: both found, no relations, a safe first pick.
        entry(2, 1, 0.9, two.annotations[0].amodal_mask(), two.annotations[0].visible_mask(), 0, [], 0),
        entry(2, 2, 0.8, two.annotations[1].amodal_mask(), two.annotations[1].visible_mask(), 1, [], 1),
        # image 3: nothing predicted.
    ]


def test_perturbed_predictions_give_the_hand_computed_metrics():
    images = [chain_image(), apart_image(), lone_image()]
    summary = OrderEvaluator(images, CATEGORIES).evaluate_results(perturbed_entries())
    assert summary["predictions"] == 7 and summary["matched"] == 5
    # matched ordered pairs of image 1: predicted (p1 by p0) true, (p0 by p1) false and the reverse
    # of a true edge; the truth (p2 by p1) is missed.
    assert summary["edges"] == {"true_positive": 1, "false_positive": 1, "false_negative": 1,
                                "false_positive_reversed": 1}
    assert summary["edge_precision"] == summary["edge_recall"] == summary["edge_f1"] == 50.0
    # image 1: {p0, p1} wrong (both ways vs one), {p0, p2} right (none), {p1, p2} wrong; image 2 right.
    assert summary["order_accuracy"] == pytest.approx(100 * (1 / 3 + 1) / 2)
    assert summary["cycle_images"] == pytest.approx(100 / 3)
    assert summary["duplicate_rate"] == pytest.approx(100 / 7)
    # first picks: image 1 hidden (and listed clear), image 2 safe, image 3 none.
    assert summary["first_pick_safety"] == pytest.approx(100 / 3)
    assert summary["false_all_clear"] == pytest.approx(50.0)
    assert summary["oracle"] == {"cycle_images": 0.0, "first_pick_safety": 100.0, "false_all_clear": 0.0}


def test_threshold_class_agnostic_and_process_interface():
    images = [chain_image(), apart_image(), lone_image()]
    entries = perturbed_entries()
    high = OrderEvaluator(images, CATEGORIES, score_threshold=0.85).evaluate_results(entries)
    assert high["predictions"] == 2 and high["duplicate_rate"] == 0.0
    # p1 is dropped and its edges with it: image 1 keeps no pair and no cycle.
    assert high["cycle_images"] == 0.0 and high["edges"]["true_positive"] == 0
    # every entry labelled class 1: the two class-2 objects go unmatched unless class-agnostic.
    wrong_class = [dict(e, category_id=1) for e in entries]
    assert OrderEvaluator(images, CATEGORIES).evaluate_results(wrong_class)["matched"] == 3
    agnostic = OrderEvaluator(images, CATEGORIES, class_agnostic=True)
    assert agnostic.evaluate_results(wrong_class)["matched"] == 5
    evaluator = OrderEvaluator(images, CATEGORIES)
    for image in images:
        evaluator.process(image.image_id, [e for e in entries if e["image_id"] == image.image_id])
    assert evaluator.evaluate() == evaluator.evaluate_results(entries)
    evaluator.reset()
    assert evaluator.evaluate()["images"] == 0


def test_mixed_or_bad_graph_fields_raise_naming_the_entry():
    images = [chain_image()]
    entries = perturbed_entries()[:3]
    mixed = [entries[0], {k: v for k, v in entries[1].items() if k != "occluder_indices"}, entries[2]]
    with pytest.raises(ResultsError, match="some entries carry"):
        OrderEvaluator(images, CATEGORIES).evaluate_results(mixed)
    bad = [dict(entries[0], occluder_indices="1")] + entries[1:]
    with pytest.raises(ResultsError, match="occluder_indices must be a list"):
        OrderEvaluator(images, CATEGORIES).evaluate_results(bad)
    repeated = [entries[0], dict(entries[1], instance_index=0), entries[2]]
    with pytest.raises(ResultsError, match="instance_index 0 repeats"):
        OrderEvaluator(images, CATEGORIES).evaluate_results(repeated)


def test_prediction_to_results_writes_the_published_graph():
    g0, g1 = rect(10, 30, 5, 35), rect(10, 30, 25, 55)
    amodal = np.stack([g0, g1])
    visible = np.stack([g0 & ~g1, g1])
    boxes = np.zeros((2, 4), np.float32)
    labels, scores = np.array([1, 1]), np.array([0.4, 0.9], np.float32)
    pred = Prediction(boxes, boxes, labels, labels, ["a", "a"], scores, amodal, visible, amodal & ~visible,
                      (H, W))
    graph = compute_occlusion_graph(pred)
    entries = prediction_to_results(pred, 5, "x.png", occlusion=graph)
    assert [(e["instance_index"], e["occluder_indices"], e["layer"], e["pick_rank"]) for e in entries] == \
        [(0, [1], 1, 1), (1, [], 0, 0)]
    assert "occluder_indices" not in prediction_to_results(pred, 5, "x.png")[0]
    by_hand = OcclusionGraph(occluder_ids=[[1], []], pick_order=[1, 0])  # no layers given: refused
    with pytest.raises(ValueError, match="graph built by hand needs its layers"):
        prediction_to_results(pred, 5, occlusion=by_hand)
    with pytest.raises(ValueError, match="occlusion graph has 1 instances"):
        prediction_to_results(pred, 5, occlusion=OcclusionGraph(occluder_ids=[[]], pick_order=[0]))


# ---------------------------------------------------------------- class-agnostic AP and the CLI

def _pycocotools_ap(images, entries, mask_key):
    """AP (IoU .50:.95, maxDets 100, area all) of plain COCOeval with every category merged into one."""
    anns = []
    for image in images:
        for a in image.annotations:
            rle = a.amodal_rle if mask_key == "segmentation" else a.visible_rle
            anns.append({"id": a.id, "image_id": image.image_id, "category_id": 1, "iscrowd": 0,
                         "segmentation": rle, "area": float(mask_ops.area(rle)),
                         "bbox": list(mask_ops.xyxy_to_xywh(mask_ops.rle_box(rle)))})
    gt = COCO()
    gt.dataset = {"images": [{"id": i.image_id, "height": i.height, "width": i.width} for i in images],
                  "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([{"image_id": e["image_id"], "category_id": 1, "score": e["score"],
                          "segmentation": e[mask_key]} for e in entries])
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return 100.0 * ev.stats[0]


def test_class_agnostic_ap_equals_plain_cocoeval_with_merged_categories():
    images = synthetic_images(5)
    categories = [{"id": c, "name": f"s{c}"} for c in range(1, 11)]
    rng = np.random.default_rng(3)
    entries = []
    for image in images:
        for a in image.annotations:
            amodal, visible = (np.roll(m, int(rng.integers(-3, 4)), axis=1)
                               for m in (a.amodal_mask(), a.visible_mask()))
            entries.append({"image_id": image.image_id, "category_id": int(rng.integers(1, 11)),
                            "score": float(rng.random()), "segmentation": mask_ops.encode(amodal),
                            "visible_mask": mask_ops.encode(visible)})
    summary = AmodalEvaluator(images, categories, class_agnostic=True).evaluate(entries)
    assert summary["all"]["AP_A"] == pytest.approx(_pycocotools_ap(images, entries, "segmentation"))
    assert summary["all"]["AP_V"] == pytest.approx(_pycocotools_ap(images, entries, "visible_mask"))
    assert list(summary["per_category"]) == ["object"]
    specific = AmodalEvaluator(images, categories).evaluate(entries)
    assert specific["all"]["AP_A"] < summary["all"]["AP_A"]  # random classes hurt only class-specific


def _write_gt(path, images, categories):
    anns = [{"id": a.id, "image_id": im.image_id, "category_id": a.category_id, "segmentation": a.amodal_rle,
             "visible_mask": a.visible_rle, "invisible_mask": a.invisible_rle,
             "bbox": mask_ops.xyxy_to_xywh(a.amodal_box), "area": a.amodal_area, "iscrowd": 0}
            for im in images for a in im.annotations]
    path.write_text(json.dumps({
        "info": {"format": "orcnn", "version": 1, "image_root": "."},
        "images": [{"id": im.image_id, "file_name": im.file_name, "height": im.height, "width": im.width}
                   for im in images],
        "annotations": anns, "categories": categories}), encoding="utf-8")


def test_orcnn_eval_prints_the_order_table_and_evaluates_class_agnostic_ground_truth(tmp_path, capsys):
    images = [chain_image(), apart_image(), lone_image()]
    one_class = [ImageRecord(i.image_id, i.file_name, H, W,
                             [AmodalAnnotation.from_masks(a.id, 1, a.amodal_mask(), a.visible_mask())
                              for a in i.annotations]) for i in images]
    gt = tmp_path / "gt.json"
    _write_gt(gt, one_class, [{"id": 1, "name": "object"}])
    results = tmp_path / "model.json"
    results.write_text(json.dumps([dict(e, category_id=5) for e in perturbed_entries()]), encoding="utf-8")
    assert main(["eval", "--gt", str(gt), "--results", str(results)]) == 2
    assert "category_id 5 is not a ground-truth category" in capsys.readouterr().err
    out_json = tmp_path / "out.json"
    assert main(["eval", "--gt", str(gt), "--results", str(results), "--class-agnostic",
                 "--order-score-threshold", "0.5", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "safe 1st%" in out and "ground-truth oracle" in out
    order_row = [line for line in out.splitlines() if line.startswith("model")][-1]
    assert order_row.split("|")[1].split()[0] == "33.3"  # one image of three has a cycle
    payload = json.loads(out_json.read_text())
    assert payload["order"]["class_agnostic"] is True
    assert payload["order"]["matched"] == 5 and payload["order"]["score_threshold"] == 0.5
    assert main(["eval", "--gt", str(gt), "--results", str(results), "--order-score-threshold", "2"]) == 2

"""Amodal evaluation: AP_AV / AP_A / AP_V (all, occluded), AP_IV@0.5, results validation."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from orcnn_core import masks as mask_ops
from orcnn_core.errors import OrcnnError
from orcnn_core.evaluation import AmodalEvaluator, ResultsError, format_table, load_results
from orcnn_core.structures import AmodalAnnotation, ImageRecord

H, W = 24, 32
CATEGORIES = [{"id": 1, "name": "box"}, {"id": 2, "name": "can"}, {"id": 3, "name": "cup"}]


# ---------------------------------------------------------------- scenes and results

def _shape(rng: np.random.Generator) -> np.ndarray:
    """A random rectangle or ellipse mask."""
    mask = np.zeros((H, W), dtype=bool)
    h, w = rng.integers(6, 13), rng.integers(6, 15)
    y0, x0 = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
    if rng.random() < 0.5:
        mask[y0:y0 + h, x0:x0 + w] = True
    else:
        yy, xx = np.mgrid[:H, :W]
        mask[((yy - y0 - h / 2) / (h / 2)) ** 2 + ((xx - x0 - w / 2) / (w / 2)) ** 2 <= 1] = True
    return mask


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def make_image(rng: np.random.Generator, image_id: int, num_instances: int, first_ann_id: int) -> ImageRecord:
    """Z-ordered shapes (later on top): visible/invisible exact, every instance partly visible,
    same-category amodal masks overlapping little (IoU < 0.3)."""
    while True:
        amodal = [_shape(rng) for _ in range(num_instances)]
        cats = [int(rng.integers(1, 4)) for _ in range(num_instances)]
        visible = []
        for i, a in enumerate(amodal):
            above = np.zeros((H, W), dtype=bool)
            for b in amodal[i + 1:]:
                above |= b
            visible.append(a & ~above)
        ok = all(v.sum() >= 6 for v in visible) and all(
            _iou(amodal[i], amodal[j]) < 0.3 for i in range(num_instances)
            for j in range(i) if cats[i] == cats[j])
        if ok:
            break
    anns = [AmodalAnnotation.from_masks(first_ann_id + i, c, a, v)
            for i, (a, v, c) in enumerate(zip(amodal, visible, cats))]
    return ImageRecord(image_id, f"dir/img_{image_id}.png", H, W, anns)


def make_dataset(seed: int, num_images: int = 4, num_instances: int = 5) -> list:
    """A tiny dataset of z-ordered scenes."""
    rng = np.random.default_rng(seed)
    return [make_image(rng, 10 + i, num_instances, 100 * (i + 1)) for i in range(num_images)]


def entry(image: ImageRecord, category_id: int, score: float, amodal: np.ndarray,
          visible: np.ndarray | None = None, invisible: np.ndarray | None = None) -> dict:
    """One results entry from bool masks (visible/invisible omitted when None)."""
    out = {"image_id": image.image_id, "file_name": image.file_name, "category_id": category_id,
           "score": score, "segmentation": mask_ops.encode(amodal)}
    if visible is not None:
        out["visible_mask"] = mask_ops.encode(visible)
    if invisible is not None:
        out["invisible_mask"] = mask_ops.encode(invisible)
    return out


def gt_as_results(images: list, score: float = 0.9) -> list:
    """Every ground-truth instance as a perfect prediction."""
    return [entry(im, a.category_id, score, a.amodal_mask(), a.visible_mask(), a.invisible_mask())
            for im in images for a in im.annotations]


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(mask)
    ys, xs = slice(max(dy, 0), H + min(dy, 0)), slice(max(dx, 0), W + min(dx, 0))
    yd, xd = slice(max(-dy, 0), H + min(-dy, 0)), slice(max(-dx, 0), W + min(-dx, 0))
    out[ys, xs] = mask[yd, xd]
    return out


def _grow(mask: np.ndarray, steps: int) -> np.ndarray:
    """Dilate (steps > 0) or erode (steps < 0) by a 4-neighbourhood, |steps| times."""
    for _ in range(abs(steps)):
        shifted = [_shift(mask, 1, 0), _shift(mask, -1, 0), _shift(mask, 0, 1), _shift(mask, 0, -1)]
        combine = np.logical_or if steps > 0 else np.logical_and
        mask = combine.reduce([mask] + shifted)
    return mask


def _perturb(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    mask = _shift(mask, int(rng.integers(-2, 3)), int(rng.integers(-2, 3)))
    return _grow(mask, int(rng.integers(-1, 2)))


def perturbed_results(images: list, seed: int) -> list:
    """Perturbed predictions: shifted/dilated/eroded masks, some dropped, false positives, random scores,
    some with a wrong class; visible perturbed independently of amodal."""
    rng = np.random.default_rng(seed)
    results = []
    for im in images:
        for a in im.annotations:
            if rng.random() < 0.2:
                continue
            amodal = _perturb(rng, a.amodal_mask())
            visible = _perturb(rng, a.visible_mask()) & amodal
            category = a.category_id if rng.random() < 0.9 else int(rng.integers(1, 4))
            results.append(entry(im, category, float(rng.random()), amodal, visible, amodal & ~visible))
            if rng.random() < 0.2:  # a duplicate
                results.append(entry(im, category, float(rng.random()), _perturb(rng, amodal), visible))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            amodal = _shape(rng)
            results.append(entry(im, int(rng.integers(1, 4)), float(rng.random()), amodal, amodal))
    return results


# ---------------------------------------------------------------- independent references

def _coco(images: list, mask_attr: str) -> COCO:
    dataset = {"images": [{"id": im.image_id, "height": H, "width": W} for im in images],
               "categories": CATEGORIES, "annotations": []}
    for im in images:
        for a in im.annotations:
            rle = getattr(a, mask_attr)
            dataset["annotations"].append({
                "id": a.id, "image_id": im.image_id, "category_id": a.category_id, "segmentation": rle,
                "area": float(mask_utils.area(rle)), "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0})
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def reference_cocoeval(images: list, results: list, gt_attr: str, dt_key: str) -> COCOeval:
    """A plain pycocotools segm evaluation on one mask kind."""
    gt = _coco(images, gt_attr)
    dts = [{"image_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
            "segmentation": r.get(dt_key, r["segmentation"])} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dts)
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def brute_force_ap(images: list, results: list, kinds: tuple, ignore_gt=None) -> float:
    """Mean over categories and IoU .50:.95 of 101-point interpolated AP, greedy by score,
    a match needing every IoU in ``kinds`` ('amodal', 'visible') >= t."""
    masks = {"amodal": ("amodal_mask", "segmentation"), "visible": ("visible_mask", "visible_mask")}
    aps = []
    for cat in (c["id"] for c in CATEGORIES):
        gts = {im.image_id: [a for a in im.annotations if a.category_id == cat] for im in images}
        npos = sum(len(v) for v in gts.values())
        if npos == 0:
            continue
        per_t = []
        for t in np.linspace(0.5, 0.95, 10):
            scored = []  # (score, is_tp)
            for im in images:
                dets = [r for r in results if r["image_id"] == im.image_id and r["category_id"] == cat]
                dets.sort(key=lambda r: -r["score"])
                matched = set()
                for d in dets:
                    best, best_iou = None, -1.0
                    for j, g in enumerate(gts[im.image_id]):
                        if j in matched:
                            continue
                        ious = [_iou(mask_ops.decode(d.get(masks[k][1], d["segmentation"])),
                                     getattr(g, masks[k][0])()) for k in kinds]
                        if min(ious) >= t and min(ious) > best_iou:
                            best, best_iou = j, min(ious)
                    if best is not None:
                        matched.add(best)
                    scored.append((d["score"], best is not None))
            scored.sort(key=lambda s: -s[0])
            tp = np.cumsum([s[1] for s in scored], dtype=float)
            fp = np.cumsum([not s[1] for s in scored], dtype=float)
            recall = tp / npos
            precision = tp / np.maximum(tp + fp, 1e-12)
            envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
            q = []
            for r in np.linspace(0, 1, 101):
                idx = np.flatnonzero(recall >= r)
                q.append(envelope[idx[0]] if idx.size else 0.0)
            per_t.append(np.mean(q))
        aps.append(np.mean(per_t))
    return 100.0 * float(np.mean(aps))


def _max_eligible_gts_per_detection(images: list, results: list) -> int:
    """Largest number of same-class gt any detection reaches with amodal IoU >= 0.5."""
    by_id = {im.image_id: im for im in images}
    worst = 0
    for r in results:
        d = mask_ops.decode(r["segmentation"])
        n = sum(_iou(d, a.amodal_mask()) >= 0.5 for a in by_id[r["image_id"]].annotations
                if a.category_id == r["category_id"])
        worst = max(worst, n)
    return worst


# ---------------------------------------------------------------- tests

def test_ground_truth_as_results_scores_100_everywhere():
    images = make_dataset(seed=1)
    summary = AmodalEvaluator(images, CATEGORIES).evaluate(gt_as_results(images))
    assert any(a.is_occluded for im in images for a in im.annotations)
    for subset in ("all", "occluded"):
        for key, value in summary[subset].items():
            assert value == pytest.approx(100.0), (subset, key)
    assert summary["AP_IV50"] == pytest.approx(100.0)
    assert summary["AP_IV50_diff"] == pytest.approx(100.0)
    for per in summary["per_category"].values():
        assert per == pytest.approx({"AP_AV": 100.0, "AP_A": 100.0, "AP_V": 100.0})
    assert summary["notes"] == []


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ap_a_and_ap_v_equal_plain_cocoeval(seed):
    images = make_dataset(seed, num_images=5, num_instances=6)
    results = perturbed_results(images, seed=100 + seed)
    summary = AmodalEvaluator(images, CATEGORIES).evaluate(results)
    for kind, gt_attr, dt_key in (("A", "amodal_rle", "segmentation"), ("V", "visible_rle", "visible_mask")):
        ref = reference_cocoeval(images, results, gt_attr, dt_key)
        assert summary["all"][f"AP_{kind}"] == pytest.approx(100 * ref.stats[0], abs=1e-9)
        assert summary["all"][f"AP_{kind}50"] == pytest.approx(100 * ref.stats[1], abs=1e-9)
        assert summary["all"][f"AP_{kind}75"] == pytest.approx(100 * ref.stats[2], abs=1e-9)
        assert summary["all"][f"AR_{kind}"] == pytest.approx(100 * ref.stats[8], abs=1e-9)
        for k, cat in enumerate(CATEGORIES):
            p = ref.eval["precision"][:, :, k, 0, 2]
            value = summary["per_category"][cat["name"]][f"AP_{kind}"]
            if (p > -1).any():
                assert value == pytest.approx(100 * p[p > -1].mean(), abs=1e-9)
            else:
                assert value is None
    assert 0 < summary["all"]["AP_A"] < 100  # the perturbation makes the case non-trivial


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_av_matches_brute_force_and_is_below_a_and_v(seed):
    images = make_dataset(seed, num_images=3, num_instances=4)
    results = perturbed_results(images, seed=200 + seed)
    summary = AmodalEvaluator(images, CATEGORIES).evaluate(results)
    assert summary["all"]["AP_AV"] == pytest.approx(brute_force_ap(images, results, ("amodal", "visible")),
                                                    abs=1e-9)
    assert summary["all"]["AP_A"] == pytest.approx(brute_force_ap(images, results, ("amodal",)), abs=1e-9)
    # With each detection reaching at most one gt, the AV matches are a subset of the A and V ones.
    assert _max_eligible_gts_per_detection(images, results) <= 1
    for subset in ("all", "occluded"):
        row = summary[subset]
        assert row["AP_AV"] <= min(row["AP_A"], row["AP_V"]) + 1e-9
    assert summary["all"]["AP_AV"] < summary["all"]["AP_A"]  # visible perturbation bites


def test_ap_av_needs_both_ious_over_threshold():
    rect = np.zeros((H, W), dtype=bool)
    rect[2:12, 2:12] = True
    visible = rect.copy()
    visible[2:12, 8:12] = False
    top = np.zeros((H, W), dtype=bool)
    top[2:12, 8:20] = True
    image = ImageRecord(1, "a.png", H, W, [AmodalAnnotation.from_masks(1, 1, rect, visible),
                                           AmodalAnnotation.from_masks(2, 2, top, top)])
    evaluator = AmodalEvaluator([image], CATEGORIES[:2])
    wrong_visible = rect.copy()
    wrong_visible[2:12, 2:8] = False  # IoU_V = 0 with the true visible part
    summary = evaluator.evaluate([entry(image, 1, 0.9, rect, wrong_visible, rect & ~wrong_visible),
                                  entry(image, 2, 0.9, top, top)])
    assert summary["per_category"]["box"] == pytest.approx({"AP_AV": 0.0, "AP_A": 100.0, "AP_V": 0.0})
    assert summary["all"]["AP_AV"] == pytest.approx(50.0)  # mean over the two categories


def test_occluded_columns_ignore_non_occluded_ground_truth():
    images = make_dataset(seed=5, num_images=4, num_instances=5)
    evaluator = AmodalEvaluator(images, CATEGORIES)
    # Base predictions of occluded objects only, none reaching a non-occluded gt (else a perfect
    # prediction added later would take that gt away from it and turn it into a false positive).
    occluded_only = [ImageRecord(im.image_id, im.file_name, H, W,
                                 [a for a in im.annotations if a.is_occluded]) for im in images]
    unoccluded = {(im.image_id, a.category_id): [] for im in images for a in im.annotations}
    for im in images:
        for a in im.annotations:
            if not a.is_occluded:
                unoccluded[im.image_id, a.category_id].append(a.amodal_mask())
    base = [r for r in perturbed_results(occluded_only, seed=7)
            if all(_iou(mask_ops.decode(r["segmentation"]), g) < 0.5
                   for g in unoccluded.get((r["image_id"], r["category_id"]), []))]
    before = evaluator.evaluate(base)
    perfect_unoccluded = [entry(im, a.category_id, 0.99, a.amodal_mask(), a.visible_mask())
                          for im in images for a in im.annotations if not a.is_occluded]
    assert perfect_unoccluded
    after = evaluator.evaluate(base + perfect_unoccluded)
    assert after["occluded"] == pytest.approx(before["occluded"], abs=1e-9)
    assert after["all"]["AP_A"] > before["all"]["AP_A"]  # the same predictions do count in "all"

    # An unmatched wrong prediction with the top score is still a false positive there.
    far = np.zeros((H, W), dtype=bool)
    far[0:2, 0:2] = True
    occluded_cats = {a.category_id for im in images for a in im.annotations if a.is_occluded}
    wrong = [entry(images[0], c, 1.0, far, far) for c in occluded_cats]
    worse = evaluator.evaluate(base + perfect_unoccluded + wrong)
    for kind in ("AP_AV", "AP_A", "AP_V"):
        assert worse["occluded"][kind] < after["occluded"][kind]


def _iv_scene():
    """Box A (cat 1) under box B (cat 2): A is occluded in columns 6..11."""
    a = np.zeros((H, W), dtype=bool)
    a[2:10, 0:12] = True
    b = np.zeros((H, W), dtype=bool)
    b[0:14, 6:20] = True
    image = ImageRecord(1, "a.png", H, W, [AmodalAnnotation.from_masks(1, 1, a, a & ~b),
                                           AmodalAnnotation.from_masks(2, 2, b, b)])
    return image, a, a & ~b, a & b, AmodalEvaluator([image], CATEGORIES[:2])


def test_ap_iv_ignores_predictions_with_amodal_iou_at_most_half():
    image, amodal, visible, invisible, evaluator = _iv_scene()
    good = entry(image, 1, 0.5, amodal, visible, invisible)
    assert evaluator.evaluate([good])["AP_IV50"] == pytest.approx(100.0)
    half = np.zeros((H, W), dtype=bool)
    half[2:10, 4:16] = True  # IoU with A: 64 / 128 = 0.5 exactly
    assert _iou(half, amodal) == 0.5
    garbage = np.zeros((H, W), dtype=bool)
    garbage[20:24, 28:32] = True
    dropped = entry(image, 1, 0.9, half, half & ~garbage, garbage)
    summary = evaluator.evaluate([dropped, good])
    assert summary["AP_IV50"] == pytest.approx(100.0)  # not a false positive for AP_IV
    assert summary["occluded"]["AP_A50"] == pytest.approx(100.0)  # COCOeval matches at IoU >= 0.5
    assert summary["occluded"]["AP_A"] < 100.0  # above 0.5 the half-box is a false positive
    above = np.zeros((H, W), dtype=bool)
    above[2:10, 2:12] = True  # IoU with A: 80 / 96 > 0.5
    counted = entry(image, 1, 0.9, above, above & ~garbage, garbage)
    # counted FP first, then the TP: precision 1/2 at recall 1 for every recall threshold
    assert evaluator.evaluate([counted, good])["AP_IV50"] == pytest.approx(50.0)


def test_ap_iv_diff_uses_amodal_minus_visible():
    image, amodal, visible, invisible, evaluator = _iv_scene()
    empty = np.zeros((H, W), dtype=bool)
    summary = evaluator.evaluate([entry(image, 1, 0.9, amodal, visible, empty)])
    assert summary["AP_IV50"] == pytest.approx(0.0)
    assert summary["AP_IV50_diff"] == pytest.approx(100.0)
    wrong_visible = amodal.copy()  # predicts "not occluded": the difference is empty
    summary = evaluator.evaluate([entry(image, 1, 0.9, amodal, wrong_visible, invisible)])
    assert summary["AP_IV50"] == pytest.approx(100.0)
    assert summary["AP_IV50_diff"] == pytest.approx(0.0)


def test_ap_iv_without_invisible_masks_uses_the_difference_with_a_note():
    image, amodal, visible, _, evaluator = _iv_scene()
    summary = evaluator.evaluate([entry(image, 1, 0.9, amodal, visible)], source="r.json")
    assert summary["AP_IV50"] == pytest.approx(100.0)
    assert any("invisible_mask" in n and "r.json" in n for n in summary["notes"])


def test_ap_iv_drops_a_prediction_whose_best_amodal_match_is_not_occluded():
    lower = np.zeros((H, W), dtype=bool)
    lower[0:8, 0:8] = True
    upper = np.zeros((H, W), dtype=bool)
    upper[0:8, 2:10] = True  # same class, amodal IoU with `lower` 48 / 80 = 0.6
    image = ImageRecord(1, "a.png", H, W, [AmodalAnnotation.from_masks(1, 1, lower, lower & ~upper),
                                           AmodalAnnotation.from_masks(2, 1, upper, upper)])
    evaluator = AmodalEvaluator([image], CATEGORIES[:1])
    results = [entry(image, 1, 0.9, upper, upper, np.zeros((H, W), dtype=bool)),
               entry(image, 1, 0.8, lower, lower & ~upper, lower & upper)]
    summary = evaluator.evaluate(results)
    assert summary["AP_IV50"] == pytest.approx(100.0)
    assert summary["occluded"]["AP_A"] == pytest.approx(100.0)


def test_amodal_only_results_fall_back_with_notes():
    images = make_dataset(seed=3, num_images=2, num_instances=4)
    results = [{k: v for k, v in r.items() if k not in ("visible_mask", "invisible_mask")}
               for r in gt_as_results(images)]
    summary = AmodalEvaluator(images, CATEGORIES).evaluate(results, source="amodal.json")
    reference = reference_cocoeval(images, results, "visible_rle", "segmentation")  # amodal vs visible gt
    assert summary["all"]["AP_V"] == pytest.approx(100 * reference.stats[0], abs=1e-9)
    assert summary["all"]["AP_A"] == pytest.approx(100.0)
    assert summary["AP_IV50"] is None and summary["AP_IV50_diff"] is None
    assert any("visible_mask" in n and "amodal.json" in n for n in summary["notes"])
    assert "-" in format_table([("amodal", summary)]).splitlines()[-1]


def test_ground_truth_without_visible_masks_uses_amodal_with_note():
    images = make_dataset(seed=4, num_images=2, num_instances=3)
    for im in images:
        for a in im.annotations:
            a.visible_rle = None
            a.invisible_rle = None
    evaluator = AmodalEvaluator(images, CATEGORIES)
    results = [{k: v for k, v in r.items() if k not in ("visible_mask", "invisible_mask")}
               for r in gt_as_results(make_dataset(seed=4, num_images=2, num_instances=3))]
    summary = evaluator.evaluate(results)
    assert summary["all"]["AP_V"] == pytest.approx(100.0)
    assert summary["occluded"]["AP_A"] is None  # nothing is known to be occluded
    assert any("no visible mask" in n for n in summary["notes"])


def test_results_matched_by_file_name_when_ids_are_foreign():
    images = make_dataset(seed=6, num_images=3, num_instances=4)
    results = perturbed_results(images, seed=8)
    evaluator = AmodalEvaluator(images, CATEGORIES)
    by_id = evaluator.evaluate(results)
    foreign = [dict(r, image_id=r["image_id"] + 5000, file_name="other/root/" + r["file_name"].split("/")[-1])
               for r in results]
    by_name = evaluator.evaluate(foreign, source="foreign.json")
    assert by_name["all"] == pytest.approx(by_id["all"])
    assert any("file_name" in n for n in by_name["notes"])


def test_empty_results_give_zero_with_note():
    images = make_dataset(seed=2, num_images=2, num_instances=3)
    summary = AmodalEvaluator(images, CATEGORIES).evaluate([], source="empty.json")
    assert summary["all"]["AP_AV"] == 0.0 and summary["all"]["AR_A"] == 0.0
    assert summary["occluded"]["AP_V"] == 0.0
    assert any("empty.json" in n and "no predictions" in n for n in summary["notes"])


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(image_id=999, file_name="nope.png"), "image_id 999"),
    (lambda r: r.update(category_id=42), "category_id 42"),
    (lambda r: r.update(score=float("nan")), "score"),
    (lambda r: r.update(score=float("inf")), "score"),
    (lambda r: r.update(score="high"), "score"),
    (lambda r: r.pop("segmentation"), "'segmentation'"),
    (lambda r: r.pop("score"), "'score'"),
    (lambda r: r.pop("category_id"), "'category_id'"),
    (lambda r: r.update(segmentation=mask_ops.encode(np.zeros((H + 1, W), dtype=bool))), "size"),
    (lambda r: r.update(visible_mask=mask_ops.encode(np.zeros((H, W + 2), dtype=bool))), "visible_mask"),
    (lambda r: r.update(segmentation={"counts": "x"}), "segmentation"),
])
def test_bad_entries_raise_naming_file_and_entry(mutate, message):
    images = make_dataset(seed=0, num_images=2, num_instances=3)
    results = gt_as_results(images)
    mutate(results[2])
    with pytest.raises(ResultsError) as info:
        AmodalEvaluator(images, CATEGORIES).evaluate(results, source="bad.json")
    text = str(info.value)
    assert "bad.json" in text and "entry 2" in text and message in text
    assert isinstance(info.value, OrcnnError)


def test_load_results_rejects_malformed_files(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 1,', encoding="utf-8")
    with pytest.raises(ResultsError, match="broken.json.*malformed JSON"):
        load_results(broken)
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"annotations": []}), encoding="utf-8")
    with pytest.raises(ResultsError, match="mapping.json.*list"):
        load_results(mapping)
    with pytest.raises(ResultsError, match="missing.json"):
        load_results(tmp_path / "missing.json")
    empty = tmp_path / "empty.json"
    empty.write_text("[]", encoding="utf-8")
    assert load_results(empty) == []


def test_ground_truth_errors_name_the_annotation():
    images = make_dataset(seed=0, num_images=1, num_instances=2)
    images[0].annotations[1].category_id = 9
    with pytest.raises(OrcnnError, match="annotation 101.*category_id 9"):
        AmodalEvaluator(images, CATEGORIES)


def test_format_table_layout():
    summary = {"all": {"AP_AV": 58.94, "AP_A": 62.1, "AP_V": 66.24}, "occluded": {"AP_AV": 48.1, "AP_A": None,
               "AP_V": 58.9}, "AP_IV50": 8.7, "AP_IV50_diff": 8.9}
    lines = format_table([("orcnn_run", summary)]).splitlines()
    assert "all" in lines[0] and "occluded" in lines[0]
    assert lines[1].split() == ["model", "|", "AP_AV", "AP_A", "AP_V", "|", "AP_AV", "AP_A", "AP_V", "|",
                                "AP_IV@0.5", "|", "AP_IV@0.5", "diff"]
    assert lines[-1].split() == ["orcnn_run", "|", "58.9", "62.1", "66.2", "|", "48.1", "-", "58.9", "|",
                                 "8.7", "|", "8.9"]


@pytest.mark.parametrize("drop_every", [1, 2])
def test_ap_v_of_results_without_visible_masks_equals_plain_cocoeval(drop_every):
    """Entries without visible_mask reuse the amodal IoUs where the ground truth is unoccluded."""
    images = make_dataset(4, num_images=5, num_instances=6)
    results = perturbed_results(images, seed=104)
    results = [{k: v for k, v in r.items() if i % drop_every or k not in ("visible_mask", "invisible_mask")}
               for i, r in enumerate(results)]
    summary = AmodalEvaluator(images, CATEGORIES).evaluate(results)
    ref = reference_cocoeval(images, results, "visible_rle", "visible_mask")
    assert summary["all"]["AP_V"] == pytest.approx(100 * ref.stats[0], abs=1e-9)
    assert summary["all"]["AR_V"] == pytest.approx(100 * ref.stats[8], abs=1e-9)
    assert 0 < summary["all"]["AP_V"] < 100

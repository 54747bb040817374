"""Benchmark: the whole amodal evaluation against one plain pycocotools COCOeval segm run.

500 synthetic 320x240 images x 20 z-ordered rectangles/ellipses (visible/invisible exact), perturbed
predictions. Baseline: COCOeval(gt, dt, "segm").evaluate() + accumulate() on the amodal masks (COCO
objects built beforehand, not timed). Measured: AmodalEvaluator.evaluate(results), i.e. validation,
IoU matrices and every COCOeval run behind AP_AV/AP_A/AP_V (all, occluded), AP_IV@0.5 and its diff.
Best of ``--repeats`` runs each. Last line: ``eval_time_ratio: <evaluate / baseline>``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import cv2
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from orcnn_core import masks as mask_ops
from orcnn_core.data.synth import resolve_visibility
from orcnn_core.evaluation import AmodalEvaluator
from orcnn_core.structures import AmodalAnnotation, ImageRecord, Prediction, prediction_to_results

HEIGHT, WIDTH = 240, 320
NUM_CATEGORIES = 5
CATEGORIES = [{"id": c, "name": f"class_{c}"} for c in range(1, NUM_CATEGORIES + 1)]


def random_shape(rng: np.random.Generator) -> np.ndarray:
    """A filled rectangle or ellipse, uint8 0/1, HEIGHT x WIDTH."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    w, h = int(rng.integers(20, 90)), int(rng.integers(20, 90))
    x, y = int(rng.integers(0, WIDTH - w)), int(rng.integers(0, HEIGHT - h))
    if rng.random() < 0.5:
        mask[y:y + h, x:x + w] = 1
    else:
        angle = float(rng.integers(0, 180))
        cv2.ellipse(mask, (x + w // 2, y + h // 2), (w // 2, h // 2), angle, 0, 360, 1, -1)
    return mask


def make_images(rng: np.random.Generator, num_images: int, per_image: int) -> list:
    """Z-ordered scenes (later shapes on top); fully hidden shapes are dropped."""
    images, ann_id = [], 1
    for image_id in range(1, num_images + 1):
        amodal = np.stack([random_shape(rng) for _ in range(per_image)]).astype(bool)
        crops = [(y0, y1, x0, x1) for x0, y0, x1, y1 in mask_ops.mask_boxes(amodal).astype(int).tolist()]
        # Keep every shape with at least one visible pixel (any fraction > 0 below 1 / area does that).
        keep, visible = resolve_visibility(amodal, crops, 1e-9, 0)
        anns = []
        for k in np.flatnonzero(keep)[::-1]:  # top first
            anns.append(AmodalAnnotation.from_masks(ann_id, int(rng.integers(1, NUM_CATEGORIES + 1)),
                                                    amodal[k], visible[k]))
            ann_id += 1
        images.append(ImageRecord(image_id, f"img_{image_id:04d}.png", HEIGHT, WIDTH, anns[::-1]))
    return images


def perturb(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Shift by a few pixels, then dilate or erode."""
    dx, dy = (int(v) for v in rng.integers(-4, 5, size=2))
    moved = cv2.warpAffine(mask.astype(np.uint8), np.float32([[1, 0, dx], [0, 1, dy]]), (WIDTH, HEIGHT))
    k = int(rng.integers(0, 3))
    if k:
        kernel = np.ones((2 * k + 1, 2 * k + 1), np.uint8)
        moved = cv2.dilate(moved, kernel) if rng.random() < 0.5 else cv2.erode(moved, kernel)
    return moved.astype(bool)


def make_results(rng: np.random.Generator, images: list) -> list:
    """Perturbed predictions of 90% of the instances, 3 false positives per image, random scores."""
    results = []
    for image in images:
        amodal, visible, invisible, cats = [], [], [], []
        for ann in image.annotations:
            if rng.random() < 0.1:
                continue
            a = perturb(rng, ann.amodal_mask())
            amodal.append(a)
            visible.append(perturb(rng, ann.visible_mask()) & a)
            invisible.append(perturb(rng, ann.invisible_mask()) & a)  # the occlusion head's own guess
            cats.append(ann.category_id if rng.random() < 0.95 else int(rng.integers(1, NUM_CATEGORIES + 1)))
        for _ in range(3):
            fp = random_shape(rng).astype(bool)
            amodal.append(fp)
            visible.append(fp)
            invisible.append(np.zeros_like(fp))
            cats.append(int(rng.integers(1, NUM_CATEGORIES + 1)))
        amodal, visible = np.stack(amodal), np.stack(visible)
        cats = np.asarray(cats, dtype=np.int64)
        scores = np.asarray([rng.random() for _ in cats], dtype=np.float64)
        prediction = Prediction(mask_ops.mask_boxes(amodal), mask_ops.mask_boxes(visible), cats, cats,
                                [""] * len(cats), scores, amodal, visible, np.stack(invisible),
                                (HEIGHT, WIDTH))
        results.extend(prediction_to_results(prediction, image.image_id, image.file_name))
    return results


def coco_ground_truth(images: list) -> COCO:
    """A pycocotools COCO object of the amodal ground truth."""
    anns = [{"id": a.id, "image_id": im.image_id, "category_id": a.category_id, "segmentation": a.amodal_rle,
             "area": float(a.amodal_area), "bbox": mask_ops.xyxy_to_xywh(a.amodal_box), "iscrowd": 0}
            for im in images for a in im.annotations]
    coco = COCO()
    coco.dataset = {"images": [{"id": im.image_id, "height": im.height, "width": im.width} for im in images],
                    "annotations": anns, "categories": CATEGORIES}
    coco.createIndex()
    return coco


def time_baseline(gt: COCO, results: list) -> tuple[float, float]:
    """Seconds of COCOeval evaluate+accumulate on the amodal masks, and its AP."""
    keys = ("image_id", "category_id", "score", "segmentation")
    dt = gt.loadRes([{k: r[k] for k in keys} for r in results])
    coco_eval = COCOeval(gt, dt, "segm")
    start = time.perf_counter()
    coco_eval.evaluate()
    coco_eval.accumulate()
    elapsed = time.perf_counter() - start
    coco_eval.summarize()
    return elapsed, 100.0 * coco_eval.stats[0]


def main() -> None:
    """Run the benchmark and print its figures; the last line is the headline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    images = make_images(rng, args.images, args.instances)
    results = make_results(rng, images)
    num_gt = sum(len(im.annotations) for im in images)
    num_occluded = sum(a.is_occluded for im in images for a in im.annotations)
    print(f"data: {len(images)} images {WIDTH}x{HEIGHT}, {num_gt} gt ({num_occluded} occluded), "
          f"{len(results)} predictions, {NUM_CATEGORIES} categories "
          f"(generated in {time.perf_counter() - start:.1f} s)")

    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_ground_truth(images)
    baseline_times, ours_times, build_times = [], [], []
    for _ in range(args.repeats):
        with contextlib.redirect_stdout(io.StringIO()):
            elapsed, baseline_ap = time_baseline(gt, results)
        baseline_times.append(elapsed)
        start = time.perf_counter()
        evaluator = AmodalEvaluator(images, CATEGORIES)
        build_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        summary = evaluator.evaluate(results)
        ours_times.append(time.perf_counter() - start)

    baseline, ours, build = min(baseline_times), min(ours_times), min(build_times)
    assert abs(summary["all"]["AP_A"] - baseline_ap) < 1e-9, (summary["all"]["AP_A"], baseline_ap)
    print(f"AP_A {summary['all']['AP_A']:.2f} (pycocotools {baseline_ap:.2f}), "
          f"AP_V {summary['all']['AP_V']:.2f}, AP_AV {summary['all']['AP_AV']:.2f}, "
          f"occluded AP_AV {summary['occluded']['AP_AV']:.2f}, "
          f"AP_IV@0.5 {summary['AP_IV50']:.2f}, diff {summary['AP_IV50_diff']:.2f}")
    print(f"baseline COCOeval segm evaluate+accumulate (amodal): {baseline:.2f} s (best of {args.repeats})")
    print(f"AmodalEvaluator(...) construction: {build:.2f} s (ratio {build / baseline:.2f})")
    print(f"AmodalEvaluator.evaluate (8 COCOeval runs, all metrics): {ours:.2f} s")
    print(f"construction + evaluate ratio: {(build + ours) / baseline:.2f}")
    print(f"eval_time_ratio: {ours / baseline:.2f}")


if __name__ == "__main__":
    main()

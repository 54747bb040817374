"""Overlays of amodal predictions in the style of the paper's Figure 1.

Per instance, in its class colour: the visible region solid, the invisible (occluded) region light
and hatched, the amodal contour dashed, the visible contour solid; a label ``#id class score occ%``
with ``behind #j`` naming its occluders, and an arrow from each occluder to the part it hides.
"""

from __future__ import annotations

import colorsys
from typing import Optional

import cv2
import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.errors import InputError
from orcnn_core.occlusion import OcclusionGraph, compute_occlusion_graph
from orcnn_core.structures import Prediction

VISIBLE_ALPHA = 0.5
INVISIBLE_ALPHA = 0.22
HATCH_PERIOD = 8  # pixels between hatch lines of the invisible region
DASH = 5          # contour pixels per dash (and per gap) of the amodal outline


def class_color(key: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour for a class id (golden-ratio hue steps)."""
    hue = (int(key) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _binary(masks: np.ndarray, threshold: float) -> np.ndarray:
    return masks if masks.dtype == bool else masks >= threshold


def _blend(canvas: np.ndarray, region: np.ndarray, color: tuple, alpha: float, box: tuple) -> None:
    """Alpha-blend ``color`` into ``canvas`` where ``region``; work only inside ``box`` (speed)."""
    x0, y0, x1, y1 = box
    sub, inside = canvas[y0:y1, x0:x1], region[y0:y1, x0:x1]
    sub[inside] = sub[inside] * (1.0 - alpha) + np.asarray(color, np.float32) * alpha


def _contours(mask: np.ndarray) -> list:
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return found


def _draw_dashed(canvas: np.ndarray, mask: np.ndarray, color: tuple, thickness: int) -> None:
    for contour in _contours(mask):
        points = contour.reshape(-1, 2)
        for k in range(0, len(points) - 1):
            if (k // DASH) % 2 == 0:
                cv2.line(canvas, tuple(map(int, points[k])), tuple(map(int, points[k + 1])), color,
                         thickness, cv2.LINE_AA)


def _centroid(mask: np.ndarray, box: tuple) -> Optional[tuple[int, int]]:
    x0, y0, x1, y1 = box
    ys, xs = np.nonzero(mask[y0:y1, x0:x1])
    if xs.size == 0:
        return None
    return int(xs.mean()) + x0, int(ys.mean()) + y0


def _overlaps(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label(canvas: np.ndarray, lines: list[str], box: tuple, color: tuple, scale: float,
           taken: list) -> None:
    """Text lines on a filled box in the class colour, inside the image and clear of ``taken`` labels."""
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, int(round(scale * 2)))
    sizes = [cv2.getTextSize(t, font, scale, thick) for t in lines]
    line_h = max(s[0][1] + s[1] for s in sizes) + 4
    box_w = max(s[0][0] for s in sizes) + 6
    box_h = line_h * len(lines) + 2
    h, w = canvas.shape[:2]
    x = int(min(max(box[0], 0), max(w - box_w, 0)))
    # Preferred spots: above the box, at its top, below it; then slide down the image (bounded).
    tries = [box[1] - box_h, box[1], box[3]] + list(range(int(box[1]), h, max(box_h // 2, 1)))[:40]
    spots = [int(min(max(y, 0), max(h - box_h, 0))) for y in tries]
    y = next((s for s in spots if not any(_overlaps((x, s, x + box_w, s + box_h), t) for t in taken)),
             spots[0])
    taken.append((x, y, x + box_w, y + box_h))
    cv2.rectangle(canvas, (x, y), (x + box_w, y + box_h), color, -1)
    text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    for k, text in enumerate(lines):
        baseline_y = y + (k + 1) * line_h - 4
        cv2.putText(canvas, text, (x + 3, baseline_y), font, scale, text_color, thick, cv2.LINE_AA)


def draw_overlay(image_rgb: np.ndarray, prediction: Prediction,
                 occlusion: Optional[OcclusionGraph] = None, mask_threshold: float = 0.5,
                 arrows: bool = True) -> np.ndarray:
    """RGB uint8 overlay (same size as ``image_rgb``) of the amodal instances of ``prediction``."""
    if not (isinstance(image_rgb, np.ndarray) and image_rgb.ndim == 3 and image_rgb.shape[2] == 3
            and image_rgb.dtype == np.uint8):
        got = getattr(image_rgb, "shape", type(image_rgb).__name__)
        raise InputError(f"image_rgb must be an HxWx3 uint8 array, got {got}")
    h, w = image_rgb.shape[:2]
    n = len(prediction)
    if n and prediction.amodal_masks.shape[1:] != (h, w):
        raise InputError(f"prediction masks are {prediction.amodal_masks.shape[1:]} "
                         f"but the image is {(h, w)}")
    if occlusion is None:
        occlusion = compute_occlusion_graph(prediction, mask_threshold=mask_threshold)
    if len(occlusion.occluder_ids) != n:
        raise InputError(f"occlusion graph has {len(occlusion.occluder_ids)} instances, prediction {n}")
    amodal = _binary(prediction.amodal_masks, mask_threshold)
    visible = _binary(prediction.visible_masks, mask_threshold)
    invisible = _binary(prediction.invisible_masks, mask_threshold)

    canvas = image_rgb.astype(np.float32)
    yy, xx = np.indices((h, w), dtype=np.int32)
    hatch = ((xx + yy) % HATCH_PERIOD) < 2
    colors = [class_color(int(prediction.category_ids[i])) for i in range(n)]
    boxes = [tuple(int(v) for v in mask_ops.mask_box(amodal[i] | visible[i] | invisible[i]))
             for i in range(n)]
    for i in range(n):
        _blend(canvas, visible[i], colors[i], VISIBLE_ALPHA, boxes[i])
    # Hidden parts go on top, so one sees "through" the occluder: a light tint plus hatching.
    for i in range(n):
        _blend(canvas, invisible[i], (255, 255, 255), INVISIBLE_ALPHA, boxes[i])
        _blend(canvas, invisible[i], colors[i], INVISIBLE_ALPHA, boxes[i])
        _blend(canvas, invisible[i] & hatch, colors[i], 0.8, boxes[i])
    out = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)

    thickness = max(1, int(round(min(h, w) / 400)))
    for i in range(n):
        _draw_dashed(out, amodal[i], colors[i], thickness)
        cv2.drawContours(out, _contours(visible[i]), -1, colors[i], thickness, cv2.LINE_AA)
    if arrows:
        for i in range(n):
            target = _centroid(invisible[i], boxes[i])
            for j in occlusion.occluder_ids[i]:
                source = _centroid(visible[j], boxes[j])
                if target is None or source is None or source == target:
                    continue
                cv2.arrowedLine(out, source, target, (0, 0, 0), thickness + 2, cv2.LINE_AA, tipLength=0.08)
                cv2.arrowedLine(out, source, target, (255, 255, 255), thickness, cv2.LINE_AA,
                                tipLength=0.08)
    scale = max(0.35, min(h, w) / 1200.0)
    taken: list = []
    for i in range(n):
        box = tuple(int(v) for v in prediction.amodal_boxes[i])
        lines = [f"#{i} {prediction.class_names[i]} {float(prediction.scores[i]):.2f} "
                 f"occ {100.0 * float(occlusion.occlusion_rate[i]):.0f}%"]
        if occlusion.occluder_ids[i]:
            lines.append("behind " + ",".join(f"#{j}" for j in occlusion.occluder_ids[i]))
        _label(out, lines, box, colors[i], scale, taken)
    return out

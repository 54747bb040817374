"""Overlays of amodal predictions in the style of the paper's Figure 1.

Per instance, in its class colour: the visible region filled semi-transparently with a solid
outline; the invisible (occluded) region drawn on top of its occluder, lighter and hatched, so one
sees "through" the occluder; the amodal outline thin and dashed. A compact label sits next to the
amodal box (``#3 box .85 occ 27%``, the share only when there is one, and a smaller second line
``behind #0,#4`` naming the occluders), and a thin arrow goes from each occluder to the part it hides.

Small images are hard to annotate legibly at their own size: ``min_long_side`` renders the overlay
larger (``READABLE_LONG_SIDE`` is a good value for a person to look at); the default keeps the input
size, as a published ROS overlay needs.
"""

from __future__ import annotations

import colorsys
from typing import Optional

import cv2
import numpy as np

from orcnn_core.analysis import AnalysisConfig, FrameAnalysis, as_analysis
from orcnn_core.errors import InputError
from orcnn_core.masks import mask_boxes
from orcnn_core.occlusion import OcclusionGraph
from orcnn_core.structures import Prediction

READABLE_LONG_SIDE = 640  # ``min_long_side`` at which the labels of a small image read well
VISIBLE_ALPHA = 0.45      # class colour over the visible region
HIDDEN_VEIL = 0.35        # white veil over the hidden region (lighter than the visible fill) ...
HIDDEN_ALPHA = 0.30       # ... then the class colour ...
HATCH_ALPHA = 0.85        # ... and diagonal hatch lines in the class colour
LABEL_ALPHA = 0.72        # label background (class colour) opacity
ARROW_MIN_SHARE = 0.25    # arrows only for occluders hiding at least this share of the hidden part
DASH = 6                  # contour pixels per dash (and per gap) of the amodal outline


# Well separated colours (after Trubetskoy's 20 distinct colours), for class ids 1..12.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 220, 230),
           (255, 215, 0), (240, 50, 230), (170, 220, 40), (0, 128, 128), (170, 110, 40), (40, 40, 160))


def class_color(key: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour for a class id: a palette of well separated colours for ids
    1..12, then golden-ratio hue steps."""
    key = int(key)
    if 1 <= key <= len(PALETTE):
        return PALETTE[key - 1]
    hue = (key * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def instance_colors(category_ids) -> list[tuple[int, int, int]]:
    """Class colours of N instances; repeats of a class are shifted a little in hue to stay apart."""
    seen: dict[int, int] = {}
    colors = []
    for key in (int(k) for k in category_ids):
        repeat = seen.get(key, 0)
        seen[key] = repeat + 1
        base = class_color(key)
        if repeat == 0:
            colors.append(base)
            continue
        hue, sat, val = colorsys.rgb_to_hsv(*(c / 255.0 for c in base))
        hue += 0.06 * ((repeat + 1) // 2) * (1 if repeat % 2 else -1)
        val = min(1.0, val * (0.8 if repeat % 2 else 1.1))
        r, g, b = colorsys.hsv_to_rgb(hue % 1.0, sat, val)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


def _upscaled(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool masks at ``size`` = (width, height), upscaled smoothly (linear, then cut at 0.5)."""
    w, h = size
    out = np.zeros((masks.shape[0], h, w), dtype=bool)
    for k in range(masks.shape[0]):
        out[k] = cv2.resize(masks[k].astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
    return out


def _optional_boxes(boxes: np.ndarray) -> list[Optional[tuple[int, int, int, int]]]:
    """Tight ``(x0, y0, x1, y1)`` boxes as tuples; None for the all-zero box of an empty mask."""
    return [(x0, y0, x1, y1) if x1 > x0 else None for x0, y0, x1, y1 in boxes.astype(np.int64).tolist()]


def _stack_boxes(masks: np.ndarray) -> list[Optional[tuple[int, int, int, int]]]:
    """Tight ``(x0, y0, x1, y1)`` boxes (far edge exclusive) of an NxHxW bool stack; None when empty."""
    return _optional_boxes(mask_boxes(masks))


def _union_boxes(*per_stack: list) -> list[Optional[tuple[int, int, int, int]]]:
    """Per instance, the box holding its boxes in each of ``per_stack`` (lists from ``_stack_boxes``);
    None when all are None."""
    boxes = np.asarray([[b if b is not None else (0, 0, 0, 0) for b in stack] for stack in per_stack],
                       dtype=np.int64).reshape(len(per_stack), -1, 4)  # (S, N, 4)
    present = boxes[..., 2] > boxes[..., 0]
    big = np.iinfo(np.int64).max
    x0 = np.where(present, boxes[..., 0], big).min(0)
    y0 = np.where(present, boxes[..., 1], big).min(0)
    x1 = np.where(present, boxes[..., 2], -1).max(0)
    y1 = np.where(present, boxes[..., 3], -1).max(0)
    return [(int(x0[i]), int(y0[i]), int(x1[i]), int(y1[i])) if present[:, i].any() else None
            for i in range(boxes.shape[1])]


def _blend(canvas: np.ndarray, region: np.ndarray, color: tuple, alpha: float, box: tuple) -> None:
    """Alpha-blend ``color`` into ``canvas`` where ``region`` (a crop of the size of ``box``)."""
    x0, y0, x1, y1 = box
    sub = canvas[y0:y1, x0:x1]
    np.copyto(sub, sub * (1.0 - alpha) + np.asarray(color, np.float32) * alpha, where=region[..., None])


def _hatch(box: tuple, period: int) -> np.ndarray:
    """The diagonal hatch pattern ``((x + y) % period) < period // 4`` over ``box`` only."""
    x0, y0, x1, y1 = box
    diag = np.arange(y0, y1, dtype=np.int32)[:, None] + np.arange(x0, x1, dtype=np.int32)[None, :]
    return (diag % period) < max(1, period // 4)


def _contours(mask: np.ndarray, box: Optional[tuple] = None) -> list:
    """External contours of ``mask`` in image coordinates; with ``box`` (holding all of the mask)
    only a crop one pixel larger than it is searched, which finds the same contours."""
    if box is None:
        found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        return found
    h, w = mask.shape
    x0, y0 = max(box[0] - 1, 0), max(box[1] - 1, 0)
    x1, y1 = min(box[2] + 1, w), min(box[3] + 1, h)
    found, _ = cv2.findContours(mask[y0:y1, x0:x1].astype(np.uint8), cv2.RETR_EXTERNAL,
                                cv2.CHAIN_APPROX_NONE, offset=(x0, y0))
    return found


def _draw_dashed(canvas: np.ndarray, mask: np.ndarray, color: tuple, thickness: int, dash: int,
                 box: Optional[tuple] = None) -> None:
    for contour in _contours(mask, box):
        points = contour.reshape(-1, 2)
        for k in range(0, len(points) - 1, dash * 2):
            run = points[k:k + dash + 1].reshape(-1, 1, 2).astype(np.int32)
            if len(run) > 1:
                cv2.polylines(canvas, [run], False, color, thickness, cv2.LINE_AA)


def _centroid(mask: np.ndarray, origin: tuple[int, int] = (0, 0)) -> Optional[tuple[int, int]]:
    """Rounded mean pixel ``(x, y)`` of ``mask``, a crop whose top-left pixel is ``origin`` (x, y) of
    the image (the whole of the mask's foreground must lie in it), in image coordinates; None when
    empty. The sums are exact integers, so the result does not depend on the crop."""
    x0, y0 = origin
    cols, rows = np.count_nonzero(mask, axis=0), np.count_nonzero(mask, axis=1)
    count = int(cols.sum())
    if count == 0:
        return None
    sum_x = int(cols @ np.arange(x0, x0 + cols.size, dtype=np.int64))
    sum_y = int(rows @ np.arange(y0, y0 + rows.size, dtype=np.int64))
    return int(round(sum_x / count)), int(round(sum_y / count))


def _box_intersection(a: Optional[tuple], b: Optional[tuple]) -> Optional[tuple]:
    if a is None or b is None:
        return None
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[2] > box[0] and box[3] > box[1] else None


def _text_color(color: tuple) -> tuple[int, int, int]:
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _overlap_areas(rects: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """For each of ``rects`` (K, 4), its summed intersection area with ``placed`` (M, 4) (integers)."""
    if len(placed) == 0:
        return np.zeros(len(rects), dtype=np.int64)
    a, b = rects[:, None, :], placed[None, :, :]
    dx = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    dy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    return (dx * dy).sum(axis=1)


def layout_labels(sizes: list[tuple[int, int]], boxes: list[Optional[tuple]], image_size: tuple[int, int],
                  occupied: Optional[np.ndarray] = None, gap: int = 2) -> list[tuple[int, int, int, int]]:
    """Place label rectangles of ``sizes`` (w, h) next to ``boxes``; returns (x0, y0, x1, y1) each.

    Every rectangle lies inside ``image_size`` (height, width) as far as it fits. Spots around the
    box (above first, then below, beside, inside) are scored by the share of ``occupied`` pixels
    (e.g. the objects) they would cover and, far more, by their overlap with labels already placed.
    """
    h, w = image_size
    integral = None
    if occupied is not None:
        integral = cv2.integral(occupied.astype(np.uint8))
    placed: list[tuple[int, int, int, int]] = []
    for (lw, lh), box in zip(sizes, boxes):
        bx0, by0, bx1, by1 = box if box is not None else (0, 0, lw, lh)
        spots = [(bx0, by0 - lh - gap), (bx1 - lw, by0 - lh - gap), (bx0, by1 + gap), (bx1 - lw, by1 + gap),
                 (bx1 + gap, by0), (bx0 - lw - gap, by0), (bx0 + gap, by0 + gap)]
        spots += [(bx0, by0 - (k + 1) * (lh + gap)) for k in range(1, 4)]
        spots += [(bx0, by1 + gap + k * (lh + gap)) for k in range(1, 4)]
        rects = []
        for x, y in spots:
            cx = int(min(max(x, 0), max(w - lw, 0)))
            cy = int(min(max(y, 0), max(h - lh, 0)))
            rects.append((cx, cy, min(cx + lw, w), min(cy + lh, h)))
        overlaps = _overlap_areas(np.asarray(rects, dtype=np.int64).reshape(-1, 4),
                                  np.asarray(placed, dtype=np.int64).reshape(-1, 4)).tolist()
        best, best_cost = None, None
        for rank, ((x, y), rect, overlap) in enumerate(zip(spots, rects, overlaps)):
            cx, cy = rect[0], rect[1]
            area = max((rect[2] - rect[0]) * (rect[3] - rect[1]), 1)
            cost = 0.03 * rank + 0.5 * (abs(cx - x) + abs(cy - y)) / max(lh, 1)
            if integral is not None:
                x0, y0, x1, y1 = rect
                covered = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
                cost += float(covered) / area
            cost += 10.0 * overlap / area
            if best_cost is None or cost < best_cost:
                best, best_cost = rect, cost
        placed.append(best)
    return placed


def _put_label(canvas: np.ndarray, rect: tuple, lines: list[tuple[str, float]], color: tuple,
               pad: int, thickness: int) -> None:
    """Text lines (text, font scale) on a semi-transparent box in the class colour."""
    x0, y0, x1, y1 = rect
    sub = canvas[y0:y1, x0:x1].astype(np.float32)
    sub = sub * (1.0 - LABEL_ALPHA) + np.asarray(color, np.float32) * LABEL_ALPHA
    canvas[y0:y1, x0:x1] = np.clip(sub + 0.5, 0, 255).astype(np.uint8)
    ink = _text_color(color)
    y = y0 + pad
    for text, scale in lines:
        (_, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        y += th
        cv2.putText(canvas, text, (x0 + pad, y), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)
        y += base + pad


def label_lines(i: int, prediction: Prediction, occlusion: OcclusionGraph) -> tuple[str, Optional[str]]:
    """Label of instance ``i``: ``#3 box .85 occ 27%`` (no share when ~0) and ``behind #0,#4`` or None."""
    score = f"{float(prediction.scores[i]):.2f}"
    score = score[1:] if score.startswith("0") else score
    head = f"#{i} {prediction.class_names[i]} {score}"
    rate = 100.0 * float(occlusion.occlusion_rate[i])
    if rate >= 0.5:
        head += f" occ {rate:.0f}%"
    ids = occlusion.occluder_ids[i]
    return head, ("behind " + ",".join(f"#{j}" for j in ids)) if ids else None


def draw_overlay(image_rgb: np.ndarray, frame: Prediction | FrameAnalysis,
                 config: Optional[AnalysisConfig] = None, arrows: bool = True,
                 min_long_side: int = 0) -> np.ndarray:
    """RGB uint8 overlay of the amodal instances of ``frame`` on ``image_rgb``.

    ``frame`` is the frame's ``FrameAnalysis`` (masks, boxes and occlusion graph as published); a
    plain ``Prediction`` is analysed first with ``config``. The overlay has the input's size by
    default. With ``min_long_side`` > the image's longer side it is rendered LARGER, scaled so that
    its longer side is ``min_long_side`` (image linearly interpolated, masks resized smoothly then
    binarised), so that labels stay legible on small images; ``READABLE_LONG_SIDE`` (640) suits a
    person looking at the file. The occlusion graph is always that of the input resolution.
    """
    if not (isinstance(image_rgb, np.ndarray) and image_rgb.ndim == 3 and image_rgb.shape[2] == 3
            and image_rgb.dtype == np.uint8):
        got = getattr(image_rgb, "shape", type(image_rgb).__name__)
        raise InputError(f"image_rgb must be an HxWx3 uint8 array, got {got}")
    if int(min_long_side) < 0:
        raise InputError(f"min_long_side must be >= 0, got {min_long_side}")
    frame = as_analysis(frame, config)
    prediction, occlusion = frame.prediction, frame.graph
    h, w = image_rgb.shape[:2]
    n = len(frame)
    if n and frame.image_size != (h, w):
        raise InputError(f"prediction masks are {frame.image_size} but the image is {(h, w)}")

    scale = max(1.0, int(min_long_side) / max(h, w))
    out_w, out_h = int(round(w * scale)), int(round(h * scale))
    image = image_rgb if scale == 1.0 else cv2.resize(image_rgb, (out_w, out_h),
                                                      interpolation=cv2.INTER_LINEAR)
    if n == 0:
        return image.copy()
    if scale == 1.0:  # the analysis's own masks and boxes
        amodal, visible, invisible = frame.amodal_masks, frame.visible_masks, frame.invisible_masks
        amodal_boxes, visible_boxes, invisible_boxes = (
            _optional_boxes(b) for b in (frame.amodal_boxes, frame.visible_boxes, frame.invisible_boxes))
    else:
        size = (out_w, out_h)
        amodal, visible, invisible = (_upscaled(m, size) for m in
                                      (frame.amodal_masks, frame.visible_masks, frame.invisible_masks))
        amodal_boxes, visible_boxes, invisible_boxes = (_stack_boxes(m) for m in (amodal, visible, invisible))

    # Sizes of lines, hatching and text follow the output size (640 px: 2 px outlines, 0.42 text).
    long_side = max(out_h, out_w)
    line = max(1, int(round(long_side / 360)))
    thin = max(1, line // 2)
    hatch_period = max(6, int(round(long_side / 80)))
    font = min(1.6, max(0.3, 0.42 * long_side / 640))
    font_thickness = 1 if font < 0.75 else 2

    colors = instance_colors(prediction.category_ids)
    boxes = _union_boxes(amodal_boxes, visible_boxes, invisible_boxes)
    canvas = image.astype(np.float32)

    def crop(masks: np.ndarray, i: int, box: tuple) -> np.ndarray:
        x0, y0, x1, y1 = box
        return masks[i, y0:y1, x0:x1]

    # Each region is blended within its own box only (nothing outside it changes).
    for i in range(n):
        if visible_boxes[i] is not None:
            _blend(canvas, crop(visible, i, visible_boxes[i]), colors[i], VISIBLE_ALPHA, visible_boxes[i])
    # Hidden parts go on top, so one sees "through" the occluder: a light veil, tint and hatching.
    for i in range(n):
        box = invisible_boxes[i]
        if box is not None:
            hidden = crop(invisible, i, box)
            _blend(canvas, hidden, (255, 255, 255), HIDDEN_VEIL, box)
            _blend(canvas, hidden, colors[i], HIDDEN_ALPHA, box)
            _blend(canvas, hidden & _hatch(box, hatch_period), colors[i], HATCH_ALPHA, box)
    out = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)

    for i in range(n):
        if amodal_boxes[i] is not None:
            _draw_dashed(out, amodal[i], colors[i], thin, DASH * line, amodal_boxes[i])
        if visible_boxes[i] is not None:
            cv2.drawContours(out, _contours(visible[i], visible_boxes[i]), -1, colors[i], line, cv2.LINE_AA)
    if arrows:
        # Short arrows: from the occluder's centre towards the part it hides, cut to ``reach``.
        tip, reach = 4 * line + 3, 0.09 * long_side
        centres: dict = {}  # occluder -> centroid of its visible region (computed once)
        for i in range(n):
            for j, share in zip(occlusion.occluder_ids[i], occlusion.occluder_overlap[i]):
                if share < ARROW_MIN_SHARE:
                    continue
                if j not in centres:
                    box = visible_boxes[j]
                    centres[j] = None if box is None else _centroid(crop(visible, j, box), box[:2])
                start, both = centres[j], _box_intersection(invisible_boxes[i], visible_boxes[j])
                target = None
                if both is not None:
                    bx0, by0, bx1, by1 = both
                    target = _centroid(invisible[i, by0:by1, bx0:bx1] & visible[j, by0:by1, bx0:bx1],
                                       (bx0, by0))
                if start is None or target is None:
                    continue
                dx, dy = start[0] - target[0], start[1] - target[1]
                length = float(np.hypot(dx, dy))
                if length < 3 * tip:
                    continue  # the occluder's centre lies on what it hides: the label says it
                cut = min(1.0, reach / length)
                source = (int(round(target[0] + dx * cut)), int(round(target[1] + dy * cut)))
                length *= cut
                cv2.arrowedLine(out, source, target, (0, 0, 0), thin + 2, cv2.LINE_AA, tipLength=tip / length)
                cv2.arrowedLine(out, source, target, (255, 255, 255), thin, cv2.LINE_AA,
                                tipLength=tip / length)

    pad = max(2, int(round(3 * font / 0.42)))
    texts, sizes = [], []
    for i in range(n):
        head, behind = label_lines(i, prediction, occlusion)
        lines = [(head, font)] + ([(behind, 0.82 * font)] if behind else [])
        dims = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, s, font_thickness) for t, s in lines]
        sizes.append((max(d[0][0] for d in dims) + 2 * pad,
                      sum(d[0][1] + d[1] for d in dims) + pad * (len(lines) + 1)))
        texts.append(lines)
    occupied = amodal.any(axis=0)
    rects = layout_labels(sizes, boxes, (out_h, out_w), occupied=occupied)
    for i in range(n):
        _put_label(out, rects[i], texts[i], colors[i], pad, font_thickness)
    return out

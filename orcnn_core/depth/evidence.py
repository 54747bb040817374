"""Depth evidence of who is in front, for the scene layering: one pure function, no decisions.

Where two objects' visible parts meet, the nearer surface is the occluder. ``depth_order_evidence``
compares the depth on both sides of the boundary between visible masks i and j (a band of
``band_px`` pixels on each side) and says how strongly depth claims "i is in front of j", weighted by
how much valid depth there is; the layering combines it with its mask evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np


@dataclass(frozen=True)
class DepthOrderEvidence:
    """What depth says about the order of i and j along their shared boundary.

    ``score`` in [-1, 1]: > 0 means i is in front of j (nearer), < 0 that j is, 0 no evidence. It is
    ``weight * clip(gap_m / step_m, -1, 1)``, so a gap of ``step_m`` or more with plenty of valid depth
    on both sides gives +-1.
    """

    gap_m: float          # median depth of j's side minus i's side (> 0: i nearer); NaN without evidence
    pixels_i: int         # valid depth pixels on i's side of the boundary
    pixels_j: int         # ... on j's side
    valid_fraction: float  # share of the boundary band's pixels with a valid depth reading
    weight: float         # in [0, 1]: valid_fraction * min(1, min(pixels_i, pixels_j) / full_weight_pixels)
    score: float          # in [-1, 1], see above

    @property
    def i_in_front(self) -> Optional[bool]:
        """True / False when depth has any evidence, None when it has none."""
        return None if self.score == 0 else self.score > 0


NO_EVIDENCE = DepthOrderEvidence(float("nan"), 0, 0, 0.0, 0.0, 0.0)


def depth_order_evidence(depth_m: np.ndarray, visible_i: np.ndarray, visible_j: np.ndarray, band_px: int = 3,
                         step_m: float = 0.01, min_pixels: int = 10,
                         full_weight_pixels: int = 100) -> DepthOrderEvidence:
    """Depth evidence that object i is in front of object j, from their HxW bool visible masks and an
    aligned HxW depth image in metres (0 = no reading).

    The band: i's visible pixels within ``band_px`` pixels of j's visible mask, and j's within
    ``band_px`` of i's. Each side's depth is its median over valid readings (robust to flying pixels
    on the boundary itself and to noise). Without ``min_pixels`` valid readings on each side (no
    shared boundary, holes) there is no evidence (``NO_EVIDENCE``). ``step_m`` is the depth gap
    taken as certain (about 3 noise sigmas of a depth camera at 1 m).
    """
    if depth_m.shape != visible_i.shape or visible_i.shape != visible_j.shape:
        raise ValueError(f"depth {depth_m.shape} and masks {visible_i.shape}, {visible_j.shape} "
                         "differ in size")
    both = visible_i | visible_j
    rows, cols = np.any(both, axis=1), np.any(both, axis=0)
    if not rows.any():
        return NO_EVIDENCE
    y0, y1 = int(np.argmax(rows)), len(rows) - int(np.argmax(rows[::-1]))
    x0, x1 = int(np.argmax(cols)), len(cols) - int(np.argmax(cols[::-1]))
    crop = (slice(y0, y1), slice(x0, x1))
    mask_i = np.ascontiguousarray(visible_i[crop], dtype=np.uint8)
    mask_j = np.ascontiguousarray(visible_j[crop], dtype=np.uint8)
    kernel = np.ones((2 * band_px + 1, 2 * band_px + 1), np.uint8)
    side_i = (cv2.dilate(mask_j, kernel) > 0) & (mask_i > 0)
    side_j = (cv2.dilate(mask_i, kernel) > 0) & (mask_j > 0)
    depth = depth_m[crop]
    valid = depth > 0
    depth_i, depth_j = depth[side_i & valid], depth[side_j & valid]
    band = int(np.count_nonzero(side_i) + np.count_nonzero(side_j))
    if min(len(depth_i), len(depth_j)) < min_pixels:
        return NO_EVIDENCE
    gap = float(np.median(depth_j) - np.median(depth_i))
    valid_fraction = (len(depth_i) + len(depth_j)) / band
    weight = valid_fraction * min(1.0, min(len(depth_i), len(depth_j)) / full_weight_pixels)
    score = weight * max(-1.0, min(1.0, gap / step_m))
    if not math.isfinite(score):
        return NO_EVIDENCE
    return DepthOrderEvidence(gap, len(depth_i), len(depth_j), valid_fraction, weight, score)


def depth_term(depth_m: np.ndarray, band_px: int = 3, step_m: float = 0.01):
    """A layering evidence term (``orcnn_core.layering``, ``pair_evidence``): per pair, the depth
    evidence that its first instance is in front of its second along their shared boundary.

    It reads the pair's visible masks from the layering's crops (the model's masks, before the
    layering changes them) and the depth image inside the union of their boxes (plus ``band_px``),
    so a frame costs a crop per overlapping pair, not a full-image pass.
    """
    from orcnn_core.layering.crops import VISIBLE

    height, width = depth_m.shape

    def term(context) -> np.ndarray:
        crops, out = context.crops, np.zeros(len(context.pairs), dtype=np.float64)
        for m, (i, j) in enumerate(context.pairs.tolist()):
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = crops.boxes[i], crops.boxes[j]
            x0, y0 = max(min(ax0, bx0) - band_px, 0), max(min(ay0, by0) - band_px, 0)
            x1, y1 = min(max(ax1, bx1) + band_px, width), min(max(ay1, by1) + band_px, height)
            if x1 <= x0 or y1 <= y0:
                continue
            local = []
            for k, (kx0, ky0, kx1, ky1) in ((i, crops.boxes[i]), (j, crops.boxes[j])):
                mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
                mask[ky0 - y0:ky1 - y0, kx0 - x0:kx1 - x0] = (crops.codes[k] & VISIBLE) > 0
                local.append(mask)
            out[m] = depth_order_evidence(depth_m[y0:y1, x0:x1], local[0], local[1], band_px, step_m).score
        return out

    return term

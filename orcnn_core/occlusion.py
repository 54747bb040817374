"""Occluder graph, occlusion rate, truncation and pick order of amodal instances (numpy only).

Instance ``j`` occludes instance ``i`` when ``j``'s VISIBLE mask covers part of ``i``'s INVISIBLE
mask: at least ``min_overlap`` of ``i``'s invisible area and at least ``min_pixels`` pixels.
An invisible region smaller than ``min_invisible_fraction`` of the instance's amodal area is
mask noise (a few stray pixels along a contour), not an occlusion: such an instance gets no
occluders (its ``occlusion_rate`` still reports the measured share).

Pick order (which object a planner should remove first):

1. instances hidden by no one, by score (higher first), then index (lower first);
2. then the rest in topological order: an instance becomes pickable once all its occluders are
   picked; among pickable instances the higher score goes first, then the lower index;
3. when every remaining instance still waits for another one, the waits form cycles (A hides part
   of B and B hides part of A). The cycle is broken by picking, among the remaining instances that
   sit in a cycle no other remaining instance hides from outside (a source strongly connected
   component), the one with the highest score, then the lowest index; then step 2 goes on.

The scene layering (``orcnn_core.layering``) passes its own priority in place of the scores (see
docs/layering.md).

Layer (``OcclusionGraph.layer``): 0 for an instance nothing occludes, else one more than the
deepest of its occluders, i.e. its depth in the occluder graph, front to back. In a graph with a
cycle (raw outputs, layering off) only the occluders picked before an instance count, so the
members of a cycle get layers from the order in which the cycle was broken.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

from orcnn_core.errors import InputError
from orcnn_core.masks import binarize, mask_boxes
from orcnn_core.structures import Prediction

# The one source of these defaults: the ROS node's occluder_* parameters import them.
DEFAULT_MIN_OVERLAP = 0.05             # share of the hidden area an occluder must cover
DEFAULT_MIN_PIXELS = 20                # ... and this many pixels (as the evaluation's ground truth)
DEFAULT_MIN_INVISIBLE_FRACTION = 0.01  # hidden parts below this share of the amodal area are noise


@dataclass
class OcclusionGraph:
    """Who hides whom among N instances, plus per-instance areas and the suggested pick order."""

    occluder_ids: list = field(default_factory=list)      # per instance: sorted list[int]
    occluder_overlap: list = field(default_factory=list)  # per instance: list[float], same order
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))        # (N,) bool
    pick_order: list = field(default_factory=list)        # permutation of range(N)
    amodal_area: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # (N,)
    visible_area: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,)
    invisible_area: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,)
    occlusion_rate: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (N,)
    layer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (N,) 0 = nothing in front

    def __len__(self) -> int:
        return len(self.pick_order)

    def occluded_by(self) -> np.ndarray:
        """(N, N) bool matrix: ``[i, j]`` is True when ``j`` occludes ``i``."""
        n = len(self.occluder_ids)
        adjacency = np.zeros((n, n), dtype=bool)
        for i, ids in enumerate(self.occluder_ids):
            adjacency[i, ids] = True
        return adjacency


MaskInput = Union[Prediction, Sequence[np.ndarray]]


def _binary(masks: np.ndarray, threshold: float, name: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InputError(f"{name} must be (N, H, W), got shape {masks.shape}")
    return binarize(masks, threshold)


def _unpack(masks: MaskInput, scores: Optional[np.ndarray], threshold: float):
    if isinstance(masks, Prediction):
        amodal, visible, invisible = masks.amodal_masks, masks.visible_masks, masks.invisible_masks
        scores = masks.scores if scores is None else scores
    else:
        if len(masks) not in (2, 3):
            raise InputError("masks must be a Prediction or (amodal, visible[, invisible]) mask stacks")
        amodal, visible = masks[0], masks[1]
        invisible = masks[2] if len(masks) == 3 else None
    amodal = _binary(amodal, threshold, "amodal_masks")
    visible = _binary(visible, threshold, "visible_masks")
    if amodal.shape != visible.shape:
        raise InputError(f"mask stacks disagree in shape: amodal {amodal.shape}, visible {visible.shape}")
    invisible = amodal & ~visible if invisible is None else _binary(invisible, threshold, "invisible_masks")
    if invisible.shape != amodal.shape:
        raise InputError(f"mask stacks disagree in shape: amodal {amodal.shape}, visible {visible.shape}, "
                         f"invisible {invisible.shape}")
    n = amodal.shape[0]
    scores = np.ones(n, np.float32) if scores is None else np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise InputError(f"scores must have shape ({n},), got {scores.shape}")
    return amodal, visible, invisible, scores


def _boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) int boxes x0 y0 x1 y1 (far edge exclusive); empty masks get all zeros (so x1 <= x0,
    and no box ``b`` with ``b.x0 >= 0`` meets them: ``0 > b.x0`` never holds)."""
    return mask_boxes(masks).astype(np.int64)


def areas(masks: np.ndarray) -> np.ndarray:
    """(N,) int64 foreground pixel counts of an NxHxW bool stack."""
    return np.fromiter((np.count_nonzero(m) for m in masks), dtype=np.int64, count=masks.shape[0])


def overlap_counts(visible: np.ndarray, invisible: np.ndarray) -> np.ndarray:
    """(N, N) pixel counts: ``[i, j]`` = |visible_j AND invisible_i| (diagonal zero).

    Exact; work is limited to each invisible mask's box and the instances whose visible box meets it.
    """
    n = visible.shape[0]
    counts = np.zeros((n, n), dtype=np.int64)
    vis_boxes, inv_boxes = _boxes(visible), _boxes(invisible)
    for i in range(n):
        x0, y0, x1, y1 = inv_boxes[i]
        if x1 <= x0 or y1 <= y0:
            continue
        meets = ((vis_boxes[:, 0] < x1) & (vis_boxes[:, 2] > x0)
                 & (vis_boxes[:, 1] < y1) & (vis_boxes[:, 3] > y0))
        meets[i] = False
        candidates = np.flatnonzero(meets)
        if candidates.size == 0:
            continue
        hidden = invisible[i, y0:y1, x0:x1]
        covering = visible[candidates, y0:y1, x0:x1] & hidden
        counts[i, candidates] = areas(covering)
    return counts


def touches_border(masks: np.ndarray) -> np.ndarray:
    """(N,) bool: the mask has a pixel in the first/last row or column of the image."""
    if masks.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return (masks[:, 0, :].any(1) | masks[:, -1, :].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1))


def _reachability(adjacency: np.ndarray) -> np.ndarray:
    """Transitive closure (reflexive) of a bool adjacency matrix, by repeated squaring."""
    reach = adjacency | np.eye(adjacency.shape[0], dtype=bool)
    while True:
        nxt = (reach.astype(np.int32) @ reach.astype(np.int32)) > 0
        if np.array_equal(nxt, reach):
            return reach
        reach = nxt


def _cycle_breaker(occluded_by: np.ndarray, remaining: np.ndarray, scores: np.ndarray) -> int:
    """Instance to pick when all remaining ones wait: best-scored member of a source cycle."""
    idx = np.flatnonzero(remaining)
    # waits[a, b]: b must come before a (b occludes a), among remaining instances only.
    waits = occluded_by[np.ix_(idx, idx)]
    reach = _reachability(waits)  # reach[a, b]: a (transitively) waits for b
    # a is in a source component when everything it waits for also waits for it (same cycle).
    source = np.all(~reach | reach.T, axis=1)
    candidates = idx[source]
    return int(min(candidates, key=lambda k: (-scores[k], k)))


def pick_order(occluded_by: np.ndarray, scores: Sequence[float]) -> list[int]:
    """Removal order from an (N, N) bool matrix (``[i, j]``: j occludes i); see the module docstring.

    ``scores`` break ties (higher first, then lower index); pass any per-instance priority.
    """
    occluded_by = np.asarray(occluded_by, dtype=bool).copy()
    n = occluded_by.shape[0]
    if occluded_by.shape != (n, n):
        raise InputError(f"occluded_by must be square, got shape {occluded_by.shape}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise InputError(f"scores must have shape ({n},), got {scores.shape}")
    np.fill_diagonal(occluded_by, False)
    waiting_on = occluded_by.sum(axis=1)
    hidden = waiting_on > 0
    # Key (group, -score, index): group 0 = hidden by no one, so all of those come first.
    heap = [(0, -scores[k], k) for k in range(n) if not hidden[k]]
    heapq.heapify(heap)
    remaining = np.ones(n, dtype=bool)
    order: list[int] = []
    while len(order) < n:
        if not heap:
            k = _cycle_breaker(occluded_by, remaining, scores)
        else:
            k = heapq.heappop(heap)[2]
            if not remaining[k]:
                continue  # already picked as a cycle breaker
        remaining[k] = False
        order.append(k)
        for dependent in np.flatnonzero(occluded_by[:, k] & remaining):
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                heapq.heappush(heap, (1, -scores[dependent], int(dependent)))
    return order


def layers_from_order(occluded_by: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """(N,) int64 layer of each instance: 0 without occluders, else 1 + the deepest occluder listed
    before it in ``order`` (a pick order; occluders after it sit in a cycle with it and are ignored)."""
    occluded_by = np.asarray(occluded_by, dtype=bool)
    layer = np.zeros(occluded_by.shape[0], dtype=np.int64)
    done = np.zeros(occluded_by.shape[0], dtype=bool)
    for k in order:
        before = occluded_by[k] & done
        if before.any():
            layer[k] = int(layer[before].max()) + 1
        done[k] = True
    return layer


def compute_occlusion_graph(masks: MaskInput, scores: Optional[Sequence[float]] = None,
                            min_overlap: float = DEFAULT_MIN_OVERLAP,
                            min_pixels: int = DEFAULT_MIN_PIXELS,
                            mask_threshold: float = 0.5,
                            min_invisible_fraction: float = DEFAULT_MIN_INVISIBLE_FRACTION,
                            ) -> OcclusionGraph:
    """Occluder graph of a Prediction, or of ``(amodal, visible[, invisible])`` (N, H, W) stacks.

    Probability masks are binarised at ``mask_threshold``; without an invisible stack it is
    amodal AND NOT visible. ``scores`` default to the Prediction's (or all equal).

    ``j`` occludes ``i`` when ``j``'s visible mask covers at least ``min_overlap`` of ``i``'s
    invisible area and at least ``min_pixels`` pixels, and ``i``'s invisible area is at least
    ``min_invisible_fraction`` of its amodal area (smaller hidden parts are mask noise and would
    otherwise make spurious edges, even 2-cycles between touching objects). Pass
    ``min_pixels=1, min_invisible_fraction=0`` to count every hidden pixel.
    """
    if not 0.0 <= float(min_overlap) <= 1.0:
        raise InputError(f"min_overlap must be in [0, 1], got {min_overlap}")
    if not 0.0 <= float(min_invisible_fraction) <= 1.0:
        raise InputError(f"min_invisible_fraction must be in [0, 1], got {min_invisible_fraction}")
    if int(min_pixels) < 0:
        raise InputError(f"min_pixels must be >= 0, got {min_pixels}")
    amodal, visible, invisible, scores = _unpack(masks, scores, mask_threshold)
    n = amodal.shape[0]
    amodal_area, visible_area, invisible_area = areas(amodal), areas(visible), areas(invisible)
    counts = overlap_counts(visible, invisible)
    fraction = counts / np.maximum(invisible_area, 1)[:, None]
    hidden_enough = invisible_area >= float(min_invisible_fraction) * amodal_area
    edges = ((counts > 0) & (counts >= int(min_pixels)) & (fraction >= float(min_overlap))
             & hidden_enough[:, None])
    occluder_ids = [np.flatnonzero(edges[i]).tolist() for i in range(n)]
    occluder_overlap = [[float(fraction[i, j]) for j in ids] for i, ids in enumerate(occluder_ids)]
    rate = np.where(amodal_area > 0, invisible_area / np.maximum(amodal_area, 1), 0.0).astype(np.float32)
    order = pick_order(edges, scores)
    return OcclusionGraph(occluder_ids=occluder_ids, occluder_overlap=occluder_overlap,
                          truncated=touches_border(amodal), pick_order=order,
                          amodal_area=amodal_area, visible_area=visible_area,
                          invisible_area=invisible_area, occlusion_rate=rate,
                          layer=layers_from_order(edges, order))

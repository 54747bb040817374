"""The occlusion graph of a layered scene, and its pick order (docs/layering.md, "Pick order")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from orcnn_core.errors import InputError
from orcnn_core.layering.crops import AMODAL, INVISIBLE, VISIBLE
from orcnn_core.occlusion import OcclusionGraph, compute_occlusion_graph, layers_from_order, pick_order

if TYPE_CHECKING:  # scene imports this module
    from orcnn_core.layering.scene import SceneLayering


def _pick_priority(layering: SceneLayering, scores: np.ndarray) -> np.ndarray:
    """Tie-break key of the pick order, higher first (docs/layering.md, "Pick order").

    ``score``: the detection score. ``least_doubt``: fewest shared pixels whose front/behind
    decision could be wrong: all pixels shared with an instance decided in front of it, and those
    shared with an instance behind it, discounted as the decision's confidence approaches
    ``sure_confidence``; an instance overlapping nothing has no doubt. Score breaks ties.
    """
    if layering.config.pick_priority == "score":
        return scores
    config = layering.config
    behind = layering.front_of.T              # [i, j]: j is in front of i
    unsure = np.clip(1.0 - layering.confidence / config.sure_confidence, 0.0, 1.0)
    doubt = (layering.shared * behind).sum(axis=1) \
        + (layering.shared * unsure * layering.front_of).sum(axis=1) \
        + config.unexplained_doubt * layering.unexplained_hidden
    return -doubt + np.clip(scores, 0.0, 1.0) * 0.5


def layered_occlusion_graph(layering: SceneLayering, scores: Sequence[float]) -> OcclusionGraph:
    """``OcclusionGraph`` of the kept instances from the layered crops (edges front to back only)."""
    config = layering.config
    scores = np.asarray(scores, dtype=np.float64)
    k = len(layering)
    if scores.shape != (k,):
        raise InputError(f"scores must have shape ({k},), got {scores.shape}")
    if not config.enabled:
        crops = layering.crops
        masks = (crops.to_full(AMODAL), crops.to_full(VISIBLE), crops.to_full(INVISIBLE))
        return compute_occlusion_graph(masks, scores, min_overlap=config.min_overlap,
                                       min_pixels=config.min_pixels,
                                       min_invisible_fraction=config.min_invisible_fraction)
    crops = layering.crops
    amodal_area, visible_area, hidden_area = crops.areas(AMODAL), crops.areas(VISIBLE), crops.areas(INVISIBLE)
    counts = np.zeros((k, k), dtype=np.int64)   # [i, j] = |visible_j AND invisible_i|
    visible = [(code & VISIBLE) > 0 for code in crops.codes]
    hidden = [(code & INVISIBLE) > 0 for code in crops.codes]
    # Only decided pairs can hold a published edge; the front one of each is known.
    for front, back in np.argwhere(layering.front_of).tolist():
        if hidden_area[back] == 0:
            continue
        sf, sb = crops.overlap(front, back)
        counts[back, front] = np.count_nonzero(visible[front][sf] & hidden[back][sb])
    fraction = counts / np.maximum(hidden_area, 1)[:, None]
    hidden_enough = hidden_area >= config.min_invisible_fraction * amodal_area
    edges = ((counts > 0) & (counts >= config.min_pixels) & (fraction >= config.min_overlap)
             & hidden_enough[:, None])
    # A published occluder needs a decided pair with enough evidence behind it.
    edges &= layering.front_of.T & (layering.confidence >= config.min_edge_confidence)
    occluder_ids = [np.flatnonzero(edges[i]).tolist() for i in range(k)]
    order = pick_order(edges, _pick_priority(layering, scores))
    height, width = crops.image_size
    b = crops.boxes
    truncated = np.zeros(k, dtype=bool)
    for m in np.flatnonzero((b[:, 0] == 0) | (b[:, 1] == 0) | (b[:, 2] == width) | (b[:, 3] == height)):
        a = (crops.codes[m] & AMODAL) > 0
        if a.size == 0:  # an empty mask (a detection whose mask is nowhere above the threshold)
            continue
        truncated[m] = bool((b[m, 1] == 0 and a[0].any()) or (b[m, 3] == height and a[-1].any())
                            or (b[m, 0] == 0 and a[:, 0].any()) or (b[m, 2] == width and a[:, -1].any()))
    rate = np.where(amodal_area > 0, hidden_area / np.maximum(amodal_area, 1), 0.0).astype(np.float32)
    return OcclusionGraph(
        occluder_ids=occluder_ids,
        occluder_overlap=[[float(fraction[i, j]) for j in ids] for i, ids in enumerate(occluder_ids)],
        truncated=truncated, pick_order=order, amodal_area=amodal_area, visible_area=visible_area,
        invisible_area=hidden_area, occlusion_rate=rate, layer=layers_from_order(edges, order))

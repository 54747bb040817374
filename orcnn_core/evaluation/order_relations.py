"""Who hides whom in one image, for the occlusion-order evaluation: ground-truth relations from the
ground-truth masks, predicted relations from results entries (as published, or recomputed).

Ground-truth rule: ``j`` occludes ``i`` when ``j``'s visible mask covers at least
``max(GT_MIN_PIXELS, GT_MIN_FRACTION x |invisible_i|)`` pixels of ``i``'s invisible mask.

Predicted relations: when the entries carry ``occluder_indices`` (written by
``structures.prediction_to_results`` with a graph, i.e. what the node publishes), those are used as
they are, with ``pick_rank`` for the pick order (``occlusion.pick_order`` of the listed edges when
absent); otherwise the graph is recomputed from the entries' masks with the published rule and
defaults of ``occlusion.compute_occlusion_graph`` (what a node without layering publishes).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.evaluation.results import ResultsError
from orcnn_core.occlusion import areas, compute_occlusion_graph, overlap_counts, pick_order

GT_MIN_PIXELS = 20       # a ground-truth occluder covers at least this many hidden pixels ...
GT_MIN_FRACTION = 0.05   # ... and at least this share of the hidden area
GRAPH_KEYS = ("instance_index", "occluder_indices")


@dataclass
class ImageRelations:
    """Instances of one image with their occluder relation and (for predictions) pick order."""

    labels: np.ndarray          # (N,) category ids (all 1 when class-agnostic)
    amodal: list                # N compressed RLEs
    occluded_by: np.ndarray     # (N, N) bool, [i, j]: j occludes i
    scores: np.ndarray          # (N,) float64 (ground truth: ones)
    pick_order: list            # permutation of range(N)

    def __len__(self) -> int:
        return len(self.amodal)


def ground_truth_occluders(visible: np.ndarray, invisible: np.ndarray) -> np.ndarray:
    """(N, N) bool from (N, H, W) ground-truth masks: ``[i, j]`` when j occludes i (rule above)."""
    counts = overlap_counts(visible, invisible)
    needed = np.maximum(GT_MIN_PIXELS, GT_MIN_FRACTION * areas(invisible))
    return (counts > 0) & (counts >= needed[:, None])


def has_cycle(occluded_by: np.ndarray) -> bool:
    """True when the relation holds a directed cycle (Kahn's algorithm leaves nodes over)."""
    adjacency = np.asarray(occluded_by, dtype=bool).copy()
    np.fill_diagonal(adjacency, False)
    waiting = adjacency.sum(axis=1)
    ready = list(np.flatnonzero(waiting == 0))
    seen = 0
    while ready:
        k = ready.pop()
        seen += 1
        for dependent in np.flatnonzero(adjacency[:, k]):
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    return seen < adjacency.shape[0]


def _decode(rles: Sequence[dict], height: int, width: int) -> np.ndarray:
    if not rles:
        return np.zeros((0, height, width), dtype=bool)
    return np.stack([mask_ops.decode(r) for r in rles])


def ground_truth_relations(labels: np.ndarray, amodal: list, visible: list, invisible: list,
                           height: int, width: int) -> ImageRelations:
    """Relations of one image's ground truth; its oracle pick order follows the relations."""
    occluded_by = ground_truth_occluders(_decode(visible, height, width), _decode(invisible, height, width))
    ones = np.ones(len(amodal))
    return ImageRelations(labels=labels, amodal=list(amodal), occluded_by=occluded_by, scores=ones,
                          pick_order=pick_order(occluded_by, ones))


def _index_list(value, where: str, key: str) -> list:
    if not isinstance(value, list) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        raise ResultsError(f"{where}: {key} must be a list of integers, got {value!r}")
    return [int(v) for v in value]


def _published_graph(entries: list, kept: list, where: str) -> tuple[np.ndarray, Optional[list]]:
    """(occluded_by, pick order or None) over ``kept`` entries from their graph fields.

    Occluders or picks that refer to entries not kept (below the score threshold) are dropped.
    """
    position = {}
    for n, k in enumerate(kept):
        index = entries[k].get("instance_index")
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise ResultsError(f"{where}: entry {k}: instance_index must be an integer, got {index!r}")
        if int(index) in position:
            raise ResultsError(f"{where}: entry {k}: instance_index {index} repeats within its image")
        position[int(index)] = n
    occluded_by = np.zeros((len(kept), len(kept)), dtype=bool)
    for n, k in enumerate(kept):
        for j in _index_list(entries[k].get("occluder_indices"), f"{where}: entry {k}", "occluder_indices"):
            if j in position and position[j] != n:
                occluded_by[n, position[j]] = True
    ranks = [entries[k].get("pick_rank") for k in kept]
    if any(r is None for r in ranks):
        return occluded_by, None
    for k, rank in zip(kept, ranks):
        if isinstance(rank, bool) or not isinstance(rank, numbers.Real):
            raise ResultsError(f"{where}: entry {k}: pick_rank must be a number, got {rank!r}")
    return occluded_by, sorted(range(len(kept)), key=lambda n: (float(ranks[n]), n))


def predicted_relations(entries: list, kept: list, scores: np.ndarray, labels: np.ndarray, amodal: list,
                        visible: list, invisible: list, height: int, width: int,
                        use_published: bool, where: str) -> ImageRelations:
    """Relations of one image's predictions ``kept`` (indices into ``entries``, highest score first).

    ``amodal`` / ``visible`` / ``invisible`` are their RLEs (``invisible`` entries may be None:
    amodal AND NOT visible is used then).
    """
    if use_published:
        occluded_by, order = _published_graph(entries, kept, where)
        if order is None:
            order = pick_order(occluded_by, scores)
    else:
        amodal_masks = _decode(amodal, height, width)
        visible_masks = _decode(visible, height, width)
        invisible_masks = np.stack([mask_ops.decode(r) if r is not None else a & ~v
                                    for r, a, v in zip(invisible, amodal_masks, visible_masks)]) \
            if len(kept) else amodal_masks
        graph = compute_occlusion_graph((amodal_masks, visible_masks, invisible_masks), scores)
        occluded_by, order = graph.occluded_by(), list(graph.pick_order)
    return ImageRelations(labels=labels, amodal=list(amodal), occluded_by=occluded_by, scores=scores,
                          pick_order=order)

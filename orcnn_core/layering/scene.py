"""Scene layering: one consistent front-to-back order of a frame's instances, and masks that obey it.

Between the model's outputs and the occlusion graph (docs/layering.md):

1. duplicate suppression: two detections of one class (any class with ``class_agnostic``) whose
   visible masks overlap by IoU >= ``duplicate_visible_iou`` are one object seen twice; the
   lower-scored one goes;
2. one front/behind decision per pair whose supports share at least ``min_shared_pixels``: the
   sign of the weighted evidence terms (``evidence.py``), never both directions;
3. a global front-to-back order that overrules the least evidence (``order.py``), so it is acyclic
   by construction;
4. masks following that order, front to back: an instance's visible mask loses what the instances
   in front of it cover (their layered amodal masks, or only their visible masks with
   ``cut_visible_by="visible"``), so visible masks are pairwise disjoint; its hidden part is the
   rest of its support (amodal | visible); hidden pixels that no instance in front explains
   (farther than ``explain_margin`` pixels from them) and that are not connected to the image
   border are trimmed (``unexplained_hidden="trim"``) or kept and only counted (``"flag"``);
   amodal = visible | invisible;
5. the occlusion graph from the layered masks with the published rule of ``occlusion.py``, edges
   only from front to back, so it can hold no cycle; ``pick_order`` follows it (``graph.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

from orcnn_core.errors import InputError
from orcnn_core.layering.config import LayeringConfig
from orcnn_core.layering.crops import AMODAL, INVISIBLE, VISIBLE, InstanceCrops, count_pairs
from orcnn_core.layering.evidence import PairContext, covered_term, difference_term, hidden_term, visible_term
from orcnn_core.layering.graph import layered_occlusion_graph
from orcnn_core.layering.order import depth_layers, front_to_back
from orcnn_core.occlusion import OcclusionGraph
from orcnn_core.structures import Prediction


@dataclass
class SceneLayering:
    """The layering of one frame's N input instances; K of them kept, in input order."""

    keep: np.ndarray              # (K,) int64 indices into the input instances, ascending
    duplicate_of: np.ndarray      # (N,) int64: kept input index a dropped duplicate repeats; -1: kept
    order: np.ndarray             # (K,) front-to-back order (indices into the kept instances)
    layer: np.ndarray             # (K,) int64: 0 = nothing in front, else 1 + deepest in front
    front_of: np.ndarray          # (K, K) bool: [i, j] = i is in front of j (acyclic, no both-ways)
    confidence: np.ndarray        # (K, K) float, symmetric: |weighted evidence| of each pair's decision
    shared: np.ndarray            # (K, K) int64, symmetric: shared support pixels of each decided pair
    overruled: int                # decisions the global order reversed to break cycles
    unexplained_hidden: np.ndarray  # (K,) hidden pixels nothing in front explains (trimmed or flagged)
    crops: InstanceCrops          # layered masks as crops (bits AMODAL, VISIBLE, INVISIBLE)
    config: LayeringConfig = field(default_factory=LayeringConfig)
    _full: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.keep.shape[0])

    def _masks(self, bit: int) -> np.ndarray:
        if bit not in self._full:
            self._full[bit] = self.crops.to_full(bit)
        return self._full[bit]

    @property
    def amodal_masks(self) -> np.ndarray:
        """(K, H, W) bool layered amodal masks (= visible | invisible)."""
        return self._masks(AMODAL)

    @property
    def visible_masks(self) -> np.ndarray:
        """(K, H, W) bool layered visible masks, pairwise disjoint."""
        return self._masks(VISIBLE)

    @property
    def invisible_masks(self) -> np.ndarray:
        """(K, H, W) bool layered invisible (hidden) masks."""
        return self._masks(INVISIBLE)

    def occlusion_graph(self, scores: Sequence[float]) -> OcclusionGraph:
        """The occluder graph of the layered masks (``occlusion.py`` rule, front-to-back edges only)."""
        return layered_occlusion_graph(self, scores)


def _check_inputs(amodal, visible, invisible, scores, labels) -> tuple:
    amodal, visible = np.asarray(amodal), np.asarray(visible)
    if amodal.ndim != 3:
        raise InputError(f"amodal_masks must be (N, H, W), got shape {amodal.shape}")
    invisible = None if invisible is None else np.asarray(invisible)
    for name, stack in (("visible_masks", visible), ("invisible_masks", invisible)):
        if stack is not None and stack.shape != amodal.shape:
            raise InputError(f"{name} shape {stack.shape} differs from amodal_masks shape {amodal.shape}")
    n = amodal.shape[0]
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise InputError(f"scores must have shape ({n},), got {scores.shape}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise InputError(f"instance {int(bad[0])}: score is {scores[bad[0]]}, not a finite number")
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise InputError(f"labels must have shape ({n},), got {labels.shape}")
    return amodal, visible, invisible, scores, labels


def _suppress_duplicates(pairs: np.ndarray, histograms: np.ndarray, crops: InstanceCrops, scores: np.ndarray,
                         labels: np.ndarray, config: LayeringConfig) -> np.ndarray:
    """(N,) index of the kept instance each duplicate repeats, -1 for kept ones (greedy by score)."""
    duplicate_of = np.full(len(crops), -1, dtype=np.int64)
    if not len(pairs):
        return duplicate_of
    visible_area = crops.areas(VISIBLE)
    both = count_pairs(histograms, VISIBLE, VISIBLE)
    i, j = pairs[:, 0], pairs[:, 1]
    union = visible_area[i] + visible_area[j] - both
    iou = np.where(union > 0, both / np.maximum(union, 1), 0.0)
    same = np.ones(len(pairs), dtype=bool) if config.class_agnostic else labels[i] == labels[j]
    candidates = pairs[same & (iou >= config.duplicate_visible_iou) & (union > 0)]
    if not len(candidates):
        return duplicate_of
    rank = np.empty(len(crops), dtype=np.int64)
    rank[np.lexsort((np.arange(len(crops)), -scores))] = np.arange(len(crops))
    # Visit candidate pairs by the rank of their better member: a kept instance suppresses its
    # worse partners, an already suppressed one suppresses nothing (NMS).
    better = np.where(rank[candidates[:, 0]] < rank[candidates[:, 1]], candidates[:, 0], candidates[:, 1])
    worse = candidates[:, 0] + candidates[:, 1] - better
    for m in np.lexsort((rank[worse], rank[better])):
        if duplicate_of[better[m]] < 0 and duplicate_of[worse[m]] < 0:
            duplicate_of[worse[m]] = better[m]
    return duplicate_of


def _decide(context: PairContext, config: LayeringConfig, pair_evidence: Sequence) -> tuple:
    """(weights, confidence, shared), each (K, K): ``weights[i, j] > 0`` when the pair's evidence
    puts i in front of j (strength = |evidence| x shared pixels); the others symmetric."""
    k = len(context.crops)
    weights = np.zeros((k, k), dtype=np.float64)
    confidence = np.zeros((k, k), dtype=np.float64)
    shared = np.zeros((k, k), dtype=np.int64)
    decided = context.shared >= config.min_shared_pixels
    if not decided.any():
        return weights, confidence, shared
    total = np.zeros(len(context.pairs))
    for weight, term in ((config.visible_weight, visible_term), (config.hidden_weight, hidden_term),
                         (config.covered_weight, covered_term),
                         (config.difference_weight, difference_term), *pair_evidence):
        if weight:
            values = np.asarray(term(context), dtype=np.float64)
            if values.shape != total.shape or not np.all(np.isfinite(values)):
                raise InputError(f"pair evidence term {getattr(term, '__name__', term)!r} returned "
                                 f"{values.shape} values (need {total.shape}, all finite)")
            total += float(weight) * values
    i, j = context.pairs[decided, 0], context.pairs[decided, 1]
    total = total[decided]
    # No evidence either way: the higher-scored instance is taken to be in front (then lower index).
    tie_front = (context.scores[i] > context.scores[j]) | ((context.scores[i] == context.scores[j]) & (i < j))
    first_in_front = np.where(total != 0, total > 0, tie_front)
    strength = np.maximum(np.abs(total), 1e-6)
    # A detection below ``front_min_score`` never goes in front of one at or above it (low scores
    # are mostly partial or false detections, which must not cut a confident one's visible mask);
    # such a decision outweighs any evidence, so breaking cycles never reverses it.
    low_i, low_j = context.scores[i] < config.front_min_score, context.scores[j] < config.front_min_score
    forced = low_i != low_j
    first_in_front = np.where(forced, low_j, first_in_front)
    strength = np.where(forced, strength + 1000.0, strength)
    front, back = np.where(first_in_front, i, j), np.where(first_in_front, j, i)
    pixels = context.shared[decided]
    weights[front, back] = strength * pixels
    confidence[i, j] = confidence[j, i] = np.abs(total)
    shared[i, j] = shared[j, i] = pixels
    return weights, confidence, shared


def _border_components(unexplained: np.ndarray, box: np.ndarray, image_size: tuple) -> np.ndarray:
    """The parts of a crop's ``unexplained`` pixels connected to the image border."""
    x0, y0, x1, y1 = box
    height, width = image_size
    edge = np.zeros_like(unexplained)
    if y0 == 0:
        edge[0] = True
    if y1 == height:
        edge[-1] = True
    if x0 == 0:
        edge[:, 0] = True
    if x1 == width:
        edge[:, -1] = True
    if not (edge & unexplained).any():
        return np.zeros_like(unexplained)
    count, labels = cv2.connectedComponents(unexplained.view(np.uint8), connectivity=8)
    touching = np.unique(labels[edge & unexplained])
    return np.isin(labels, touching[touching > 0])


def _layer_masks(crops: InstanceCrops, order: Sequence[int], touching: np.ndarray,
                 config: LayeringConfig) -> tuple:
    """Layered crops front to back, and the unexplained hidden pixels of each instance.

    ``touching``: (M, 2) the pairs whose supports share at least one pixel (no other pair can
    change the other's masks).
    """
    k = len(crops)
    rank = np.empty(k, dtype=np.int64)
    rank[list(order)] = np.arange(k)
    supports = [(code & (AMODAL | VISIBLE)) > 0 for code in crops.codes]
    raw_visible = [(code & VISIBLE) > 0 for code in crops.codes]
    layered_amodal, layered_visible = [None] * k, [None] * k
    layered = [None] * k
    unexplained_count = np.zeros(k, dtype=np.int64)
    kernel = np.ones((2 * config.explain_margin + 1,) * 2, np.uint8) if config.explain_margin else None
    claim = config.claim_shared != "none"
    neighbours: list = [[] for _ in range(k)]
    for i, j in touching.tolist():
        neighbours[i].append(j)
        neighbours[j].append(i)
    for i in order:
        code = crops.codes[i]
        visible = raw_visible[i].copy()
        in_front = np.zeros(code.shape, dtype=bool)   # layered amodal of the instances in front
        cut = in_front if config.cut_visible_by == "amodal" else np.zeros(code.shape, dtype=bool)
        behind = np.zeros(code.shape, dtype=bool) if claim else None
        seen_behind = np.zeros(code.shape, dtype=bool) if config.claim_shared == "unclaimed" else None
        for j in neighbours[i]:
            si, sj = crops.overlap(i, j)
            if rank[j] < rank[i]:
                in_front[si] |= layered_amodal[j][sj]
                if cut is not in_front:
                    cut[si] |= layered_visible[j][sj]
            elif claim:
                behind[si] |= supports[j][sj]
                if seen_behind is not None:
                    seen_behind[si] |= raw_visible[j][sj]
        if claim:
            # In front of another instance, this one's amodal mask is what is seen there ("all"),
            # or only where no instance behind claims to be seen ("unclaimed").
            claimed = behind & ((code & AMODAL) > 0)
            visible |= claimed if seen_behind is None else claimed & ~seen_behind
        visible &= ~cut
        hidden = supports[i] & ~visible
        if hidden.any():
            explained = in_front if kernel is None else cv2.dilate(in_front.view(np.uint8), kernel).view(bool)
            unexplained = hidden & ~explained
            if unexplained.any():
                unexplained &= ~_border_components(unexplained, crops.boxes[i], crops.image_size)
                unexplained_count[i] = np.count_nonzero(unexplained)
                if config.unexplained_hidden == "trim":
                    hidden &= ~unexplained
        layered_visible[i], layered_amodal[i] = visible, visible | hidden
        layered[i] = layered_amodal[i].view(np.uint8) | (visible.view(np.uint8) << 1) \
            | (hidden.view(np.uint8) << 2)
    return InstanceCrops(crops.boxes, layered, crops.image_size, _overlaps=crops._overlaps), unexplained_count


def _empty_layering(n: int, image_size: tuple, config: LayeringConfig) -> SceneLayering:
    return SceneLayering(
        keep=np.zeros(0, np.int64), duplicate_of=np.full(n, -1, np.int64), order=np.zeros(0, np.int64),
        layer=np.zeros(0, np.int64), front_of=np.zeros((0, 0), bool), confidence=np.zeros((0, 0)),
        shared=np.zeros((0, 0), np.int64),
        overruled=0, unexplained_hidden=np.zeros(0, np.int64),
        crops=InstanceCrops(np.zeros((0, 4), np.int64), [], image_size),
        config=config)


def layer_instances(amodal: np.ndarray, visible: np.ndarray, scores: Sequence[float], labels: Sequence[int],
                    *, invisible: Optional[np.ndarray] = None, pair_evidence: Sequence[tuple] = (),
                    config: LayeringConfig = LayeringConfig()) -> SceneLayering:
    """Layer N instances given as (N, H, W) bool or probability masks (see the module docstring).

    ``invisible`` defaults to amodal AND NOT visible. ``pair_evidence`` adds ``(weight, term)``
    pairs to the built-in evidence (``evidence.PairContext``). Empty input gives an empty layering;
    NaN scores or stacks of different shapes raise ``InputError``. With ``config.enabled`` False
    every instance is kept with its masks as they are and no decision is made.
    """
    amodal, visible, invisible, scores, labels = _check_inputs(amodal, visible, invisible, scores, labels)
    n, height, width = amodal.shape
    threshold = config.mask_threshold
    if invisible is None:
        amodal_b = amodal if amodal.dtype == bool else amodal >= threshold
        visible_b = visible if visible.dtype == bool else visible >= threshold
        invisible = amodal_b & ~visible_b
    crops = InstanceCrops.from_masks(amodal, visible, invisible, threshold)
    if n == 0:
        return _empty_layering(0, (height, width), config)
    if not config.enabled:
        return SceneLayering(
            keep=np.arange(n), duplicate_of=np.full(n, -1, np.int64), order=np.arange(n),
            layer=np.zeros(n, np.int64), front_of=np.zeros((n, n), bool), confidence=np.zeros((n, n)),
            shared=np.zeros((n, n), np.int64),
            overruled=0, unexplained_hidden=np.zeros(n, np.int64), crops=crops,
            config=config)
    pairs = crops.meeting_pairs()
    histograms = crops.joint_histograms(pairs)
    duplicate_of = _suppress_duplicates(pairs, histograms, crops, scores, labels, config)
    keep = np.flatnonzero(duplicate_of < 0)
    position = np.full(n, -1, dtype=np.int64)
    position[keep] = np.arange(keep.size)
    both_kept = (position[pairs[:, 0]] >= 0) & (position[pairs[:, 1]] >= 0)
    kept_crops = crops.select(keep)
    context = PairContext.from_histograms(position[pairs[both_kept]].reshape(-1, 2),
                                          histograms[both_kept], kept_crops, scores[keep],
                                          config.min_shared_pixels)
    weights, confidence, shared = _decide(context, config, pair_evidence)
    order, _, overruled = front_to_back(weights, scores[keep], config.exact_order_limit)
    rank = np.empty(keep.size, dtype=np.int64)
    rank[order] = np.arange(keep.size)
    decided = (weights > 0) | (weights.T > 0)
    front_of = decided & (rank[:, None] < rank[None, :])
    layered, unexplained = _layer_masks(kept_crops, order, context.pairs[context.shared > 0], config)
    return SceneLayering(keep=keep, duplicate_of=duplicate_of, order=np.asarray(order, np.int64),
                         layer=depth_layers(front_of, order), front_of=front_of,
                         confidence=confidence, shared=shared,
                         overruled=overruled, unexplained_hidden=unexplained, crops=layered, config=config)


def layer_prediction(prediction: Prediction, config: LayeringConfig = LayeringConfig(),
                     pair_evidence: Sequence[tuple] = ()) -> tuple[Prediction, SceneLayering]:
    """The layered Prediction (kept instances, bool layered masks, visible boxes of the layered
    visible masks; amodal boxes, labels, scores as detected) and its ``SceneLayering``."""
    n = len(prediction)
    height, width = (int(v) for v in prediction.image_size)
    if n and prediction.amodal_masks.shape[1:] != (height, width):
        raise InputError(f"Prediction.image_size {(height, width)} disagrees with mask shape "
                         f"{prediction.amodal_masks.shape[1:]}")
    layering = layer_instances(prediction.amodal_masks, prediction.visible_masks, prediction.scores,
                               prediction.labels, invisible=prediction.invisible_masks,
                               pair_evidence=pair_evidence, config=config)
    if n == 0:
        return Prediction.empty(height, width), layering
    keep = layering.keep
    # Built field by field: ``Prediction.select`` would first copy the (N, H, W) input masks.
    kept = Prediction(prediction.amodal_boxes[keep], layering.crops.tight_boxes(VISIBLE),
                      prediction.labels[keep], prediction.category_ids[keep],
                      [prediction.class_names[k] for k in keep], prediction.scores[keep],
                      layering.amodal_masks, layering.visible_masks, layering.invisible_masks,
                      (height, width))
    return kept, layering

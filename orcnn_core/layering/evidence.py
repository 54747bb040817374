"""Pairwise front/behind evidence: a weighted sum of terms, each a signed share per pair.

For two instances whose supports (amodal | visible | invisible) overlap, the shared region S is
where exactly one of them can be in front. Each term returns, per pair (i, j), a value in [-1, 1]:
positive says i is in front of j, negative j in front of i. The decision is the sign of
``sum(weight * term)``; its strength, used to break cycles, is that sum times |S| (pixels that
vote). The built-in terms read joint pixel counts; more evidence (e.g. depth, issue 15) plugs in
as another ``(weight, term)`` in ``layer_instances(..., pair_evidence=...)``: a term gets the
``PairContext`` (pairs, counts, crops) and returns its (M,) values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from orcnn_core.layering.crops import AMODAL, INVISIBLE, VISIBLE, InstanceCrops, count_pairs


@dataclass(frozen=True)
class PairContext:
    """What evidence terms see: M pairs of (kept) instances whose supports overlap.

    Counts are pixels over the pair's shared box; ``first`` / ``second`` name the pair's members.
    """

    pairs: np.ndarray            # (M, 2) instance indices into ``crops``
    shared: np.ndarray           # (M,) |S|: pixels in the support of both
    visible_first: np.ndarray    # (M,) |visible_first AND S|
    visible_second: np.ndarray   # (M,) |visible_second AND S|
    hidden_first: np.ndarray     # (M,) |invisible_first AND S|
    hidden_second: np.ndarray    # (M,) |invisible_second AND S|
    covers_second: np.ndarray    # (M,) |visible_first AND invisible_second|
    covers_first: np.ndarray     # (M,) |visible_second AND invisible_first|
    only_amodal_first: np.ndarray   # (M,) |amodal_first AND NOT visible_first AND S|
    only_amodal_second: np.ndarray  # (M,) |amodal_second AND NOT visible_second AND S|
    crops: InstanceCrops         # per-instance boxes and code crops (bits AMODAL, VISIBLE, INVISIBLE)
    scores: np.ndarray           # (K,) detection scores of the instances
    # (M, 6) sums over S of the probabilities amodal, visible, invisible of first then second;
    # None when the masks were given as bool.
    probability_sums: Optional[np.ndarray] = None

    @classmethod
    def from_histograms(cls, pairs: np.ndarray, histograms: np.ndarray, crops: InstanceCrops,
                        scores: np.ndarray, min_shared: int = 1) -> PairContext:
        """Counts of every pair from its (8, 8) joint code histogram; probability sums (when the
        crops hold probabilities) for the pairs sharing at least ``min_shared`` pixels."""
        support = AMODAL | VISIBLE | INVISIBLE
        shared_pixels = count_pairs(histograms, support, support, first_any=True, second_any=True)

        def count(first: int, second: int, first_any: bool = False, second_any: bool = False):
            return count_pairs(histograms, first, second, first_any=first_any, second_any=second_any)

        return cls(pairs=pairs, shared=shared_pixels,
                   only_amodal_first=_only_amodal(histograms, first=True),
                   only_amodal_second=_only_amodal(histograms, first=False),
                   visible_first=count(VISIBLE, support, second_any=True),
                   visible_second=count(support, VISIBLE, first_any=True),
                   hidden_first=count(INVISIBLE, support, second_any=True),
                   hidden_second=count(support, INVISIBLE, first_any=True),
                   covers_second=count(VISIBLE, INVISIBLE), covers_first=count(INVISIBLE, VISIBLE),
                   crops=crops, scores=scores,
                   probability_sums=_probability_sums(pairs, shared_pixels >= min_shared, crops,
                                                      shared_pixels))


def _only_amodal(histograms: np.ndarray, first: bool) -> np.ndarray:
    """Pixels of S in one member's amodal but not its visible mask."""
    codes = np.arange(8)
    own = ((codes & AMODAL) > 0) & ((codes & VISIBLE) == 0)
    other = codes > 0
    a, b = (own, other) if first else (other, own)
    return np.einsum("mab,a,b->m", histograms, a.astype(np.int64), b.astype(np.int64))


SUBSAMPLE_ABOVE = 4096  # shared boxes larger than this estimate probability means on every 2nd row/column


def _probability_sums(pairs: np.ndarray, shared: np.ndarray, crops: InstanceCrops,
                      shared_pixels: np.ndarray) -> Optional[np.ndarray]:
    """(M, 6) probability sums over each pair's shared region (for the pairs where ``shared``), or
    None without probabilities. In a large shared box the means are estimated on a quarter of the
    pixels (every second row and column) and scaled to the exact shared pixel count."""
    if crops.probabilities is None:
        return None
    sums = np.zeros((len(pairs), 6), dtype=np.float64)
    for m in np.flatnonzero(shared):
        i, j = pairs[m]
        si, sj = crops.overlap(i, j)
        if (si[0].stop - si[0].start) * (si[1].stop - si[1].start) > SUBSAMPLE_ABOVE:
            si = (slice(si[0].start, si[0].stop, 2), slice(si[1].start, si[1].stop, 2))
            sj = (slice(sj[0].start, sj[0].stop, 2), slice(sj[1].start, sj[1].stop, 2))
        both = ((crops.codes[i][si] > 0) & (crops.codes[j][sj] > 0)).ravel().astype(np.float32)
        count = both.sum()
        if count == 0:
            continue
        stacked = np.concatenate([crops.probabilities[i][:, si[0], si[1]],
                                  crops.probabilities[j][:, sj[0], sj[1]]]).reshape(6, -1)
        sums[m] = (stacked @ both) * (shared_pixels[m] / count)
    return sums


EvidenceTerm = Callable[[PairContext], np.ndarray]


def _share(numerator: np.ndarray, context: PairContext) -> np.ndarray:
    return numerator / np.maximum(context.shared, 1)


def visible_term(context: PairContext) -> np.ndarray:
    """Who is seen in the shared region: mean over S of visible_i - visible_j (probabilities when
    given, else the bool masks)."""
    sums = context.probability_sums
    if sums is not None:
        return _share(sums[:, 1] - sums[:, 4], context)
    return _share(context.visible_first - context.visible_second, context)


def hidden_term(context: PairContext) -> np.ndarray:
    """Who is said hidden in the shared region: mean over S of invisible_j - invisible_i."""
    sums = context.probability_sums
    if sums is not None:
        return _share(sums[:, 5] - sums[:, 2], context)
    return _share(context.hidden_second - context.hidden_first, context)


def difference_term(context: PairContext) -> np.ndarray:
    """Who extends its amodal mask beyond its visible one there: mean over S of
    (amodal_j - visible_j) - (amodal_i - visible_i)."""
    sums = context.probability_sums
    if sums is not None:
        return _share((sums[:, 3] - sums[:, 4]) - (sums[:, 0] - sums[:, 1]), context)
    return _share(context.only_amodal_second - context.only_amodal_first, context)


def covered_term(context: PairContext) -> np.ndarray:
    """Whose visible part covers the other's hidden part: (|V_i & H_j| - |V_j & H_i|) / |S|."""
    return _share(context.covers_second - context.covers_first, context)

"""Instances as bounding-box crops: the layering never works on full frames after reading them once.

Each instance keeps one uint8 *code* crop over the tight box of all its masks: bit 0 amodal, bit 1
visible, bit 2 invisible. For two instances whose boxes meet, one ``np.bincount`` of
``8 * code_i + code_j`` over the shared box gives every joint pixel count the layering needs (an
8 x 8 histogram), so a pair costs a few array operations whatever it is asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from orcnn_core.masks import binarize

AMODAL, VISIBLE, INVISIBLE = 1, 2, 4
CODES = np.arange(8)


@dataclass
class InstanceCrops:
    """N instances of an (H, W) image as crops: ``boxes[k] = (x0, y0, x1, y1)``, far edge exclusive."""

    boxes: np.ndarray     # (N, 4) int64; an instance without any pixel has an empty box at (0, 0)
    codes: list           # N uint8 crops (y1 - y0, x1 - x0) with bits AMODAL | VISIBLE | INVISIBLE
    image_size: tuple     # (H, W)
    probabilities: Optional[list] = None  # N float32 (3, h, w) crops: amodal, visible, invisible
    _overlaps: Optional[dict] = field(default=None, repr=False)  # (i, j) -> slices, filled on use

    def __len__(self) -> int:
        return len(self.codes)

    @classmethod
    def from_masks(cls, amodal: np.ndarray, visible: np.ndarray, invisible: np.ndarray,
                   threshold: float = 0.5) -> InstanceCrops:
        """Crops of (N, H, W) bool or probability stacks (probabilities binarised at ``threshold``;
        when all three are probabilities, their crops are kept too)."""
        stacks = (amodal, visible, invisible)
        with_probabilities = all(m.dtype != bool for m in stacks)
        n, height, width = amodal.shape
        regions = _nonzero_boxes(stacks)
        boxes = np.zeros((n, 4), dtype=np.int64)
        codes, probabilities = [], []
        for k in range(n):
            x0, y0, x1, y1 = regions[k]
            crops = [binarize(m[k, y0:y1, x0:x1], threshold) for m in stacks]
            union = crops[0] | crops[1] | crops[2]
            rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
            if rows.size == 0:
                codes.append(np.zeros((0, 0), np.uint8))
                probabilities.append(np.zeros((3, 0, 0), np.float32))
                continue
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            boxes[k] = (x0 + c0, y0 + r0, x0 + c1, y0 + r1)
            code = crops[0][r0:r1, c0:c1].astype(np.uint8)
            code |= crops[1][r0:r1, c0:c1].view(np.uint8) << 1
            code |= crops[2][r0:r1, c0:c1].view(np.uint8) << 2
            codes.append(code)
            if with_probabilities:
                probabilities.append(np.stack([m[k, y0 + r0:y0 + r1, x0 + c0:x0 + c1] for m in stacks])
                                     .astype(np.float32, copy=False))
        return cls(boxes=boxes, codes=codes, image_size=(int(height), int(width)),
                   probabilities=probabilities if with_probabilities else None)

    def select(self, keep: np.ndarray) -> InstanceCrops:
        """The instances at indices ``keep``, in that order."""
        keep = np.asarray(keep, dtype=np.int64)
        probabilities = None if self.probabilities is None else [self.probabilities[k] for k in keep]
        overlaps = None
        if self._overlaps is not None:  # reuse the slices already computed, renumbered
            position = {int(k): n for n, k in enumerate(keep)}
            overlaps = {(position[i], position[j]): v for (i, j), v in self._overlaps.items()
                        if i in position and j in position}
        return InstanceCrops(self.boxes[keep], [self.codes[k] for k in keep], self.image_size, probabilities,
                             overlaps)

    def areas(self, bit: int) -> np.ndarray:
        """(N,) pixel count of one bit per instance."""
        return np.array([np.count_nonzero(c & bit) for c in self.codes], dtype=np.int64)

    def meeting_pairs(self) -> np.ndarray:
        """(M, 2) index pairs ``i < j`` whose boxes share at least one pixel."""
        b = self.boxes
        meets = ((b[:, None, 0] < b[None, :, 2]) & (b[None, :, 0] < b[:, None, 2])
                 & (b[:, None, 1] < b[None, :, 3]) & (b[None, :, 1] < b[:, None, 3]))
        return np.argwhere(np.triu(meets, k=1))

    def overlap(self, i: int, j: int) -> tuple:
        """Slices of crop i and crop j over their boxes' intersection (which must be non-empty)."""
        cache = self._overlaps
        if cache is None:
            cache = self._overlaps = self._all_overlaps()
        found = cache.get((i, j))
        if found is None:
            si, sj = cache[j, i]
            return sj, si
        return found

    def _all_overlaps(self) -> dict:
        """Slices of every meeting pair (i < j), computed in one vectorised pass."""
        pairs = self.meeting_pairs()
        if not len(pairs):
            return {}
        bi, bj = self.boxes[pairs[:, 0]], self.boxes[pairs[:, 1]]
        x0, y0 = np.maximum(bi[:, 0], bj[:, 0]), np.maximum(bi[:, 1], bj[:, 1])
        x1, y1 = np.minimum(bi[:, 2], bj[:, 2]), np.minimum(bi[:, 3], bj[:, 3])
        rows = np.stack([y0 - bi[:, 1], y1 - bi[:, 1], x0 - bi[:, 0], x1 - bi[:, 0],
                         y0 - bj[:, 1], y1 - bj[:, 1], x0 - bj[:, 0], x1 - bj[:, 0]], axis=1).tolist()
        return {(i, j): ((slice(a, b), slice(c, d)), (slice(e, f), slice(g, h)))
                for (i, j), (a, b, c, d, e, f, g, h) in zip(pairs.tolist(), rows)}

    def joint_histograms(self, pairs: np.ndarray) -> np.ndarray:
        """(M, 8, 8) int64: ``[m, a, b]`` pixels where pair m's first instance has code a and the
        second code b, over their boxes' intersection (pixels outside it are code 0 for one side)."""
        out = np.zeros((len(pairs), 64), dtype=np.int64)
        eight = np.uint8(8)
        for m, (i, j) in enumerate(pairs.tolist()):
            si, sj = self.overlap(i, j)
            joint = self.codes[i][si] * eight
            joint += self.codes[j][sj]
            out[m] = np.bincount(joint.ravel(), minlength=64)
        return out.reshape(-1, 8, 8)

    def to_full(self, bit: int) -> np.ndarray:
        """(N, H, W) bool full-frame masks of one bit."""
        height, width = self.image_size
        out = np.zeros((len(self), height, width), dtype=bool)
        for k, (x0, y0, x1, y1) in enumerate(self.boxes):
            out[k, y0:y1, x0:x1] = (self.codes[k] & bit) > 0
        return out

    def tight_boxes(self, bit: int) -> np.ndarray:
        """(N, 4) float32 tight boxes of one bit in image coordinates (zeros when empty)."""
        out = np.zeros((len(self), 4), dtype=np.float32)
        for k, code in enumerate(self.codes):
            m = (code & bit) > 0
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            if rows.size:
                x0, y0 = self.boxes[k, 0], self.boxes[k, 1]
                out[k] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
        return out


def _nonzero_boxes(stacks: tuple) -> np.ndarray:
    """(N, 4) boxes holding every non-zero value of instance k in any of the (N, H, W) stacks.

    The only full-frame work of the layering, one read of each stack: bool stacks by ``any`` over
    rows and over columns; other dtypes by OR-ing their rows as 64-bit words (the columns in use),
    then searching rows only in that band.
    """
    n, height, width = stacks[0].shape
    if all(m.dtype == bool for m in stacks):
        rows = stacks[0].any(axis=2) | stacks[1].any(axis=2) | stacks[2].any(axis=2)
        cols = stacks[0].any(axis=1) | stacks[1].any(axis=1) | stacks[2].any(axis=1)
        boxes = np.zeros((n, 4), dtype=np.int64)
        for k in np.flatnonzero(rows.any(axis=1)):
            used_rows, used_cols = np.flatnonzero(rows[k]), np.flatnonzero(cols[k])
            boxes[k] = (used_cols[0], used_rows[0], used_cols[-1] + 1, used_rows[-1] + 1)
        return boxes
    cols = np.zeros((n, width), dtype=bool)
    for m in stacks:
        if m.flags.c_contiguous and (width * m.itemsize) % 8 == 0 and m.itemsize <= 8 and n:
            words = np.bitwise_or.reduce(m.reshape(n, height, -1).view(np.uint64), axis=1)
            cols |= np.repeat(words != 0, 8 // m.itemsize, axis=1)
        else:
            cols |= (m != 0).any(axis=1)
    boxes = np.zeros((n, 4), dtype=np.int64)
    for k in np.flatnonzero(cols.any(axis=1)):
        used = np.flatnonzero(cols[k])
        x0, x1 = int(used[0]), int(used[-1]) + 1
        rows = np.zeros(height, dtype=bool)
        for m in stacks:
            rows |= (m[k, :, x0:x1] != 0).any(axis=1)
        used_rows = np.flatnonzero(rows)
        boxes[k] = (x0, used_rows[0], x1, used_rows[-1] + 1)
    return boxes


def count_pairs(histograms: np.ndarray, first: int, second: int, *, first_any: bool = False,
                second_any: bool = False) -> np.ndarray:
    """(M,) pixels where the first instance has bit ``first`` and the second bit ``second``;
    ``*_any`` means any of that instance's bits (its support) instead of one bit."""
    a = (CODES > 0) if first_any else (CODES & first) > 0
    b = (CODES > 0) if second_any else (CODES & second) > 0
    return np.einsum("mab,a,b->m", histograms, a.astype(np.int64), b.astype(np.int64))

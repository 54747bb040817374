"""Binary mask helpers: the one place that converts between masks, RLE, polygons and boxes.

RLE dicts follow pycocotools: ``{"size": [height, width], "counts": str}`` (compressed, counts
decoded to ``str`` so they serialise to JSON). Boxes are ``(x0, y0, x1, y1)`` in pixels, exclusive
of the far edge, unless a function says it returns COCO ``[x, y, w, h]``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

RLE = dict


class MaskFormatError(ValueError):
    """A mask, RLE or polygon that cannot be interpreted; the message names what was wrong."""


def encode(mask: np.ndarray) -> RLE:
    """Encode one HxW boolean/0-1 mask as compressed RLE with ``str`` counts."""
    if mask.ndim != 2:
        raise MaskFormatError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def encode_many(masks: np.ndarray) -> list[RLE]:
    """Encode an NxHxW stack of masks as a list of compressed RLEs."""
    if masks.ndim != 3:
        raise MaskFormatError(f"mask stack must be 3-D (N, H, W), got shape {masks.shape}")
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return list(rles)


def _to_pycoco(rle: RLE) -> dict:
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE
        h, w = rle["size"]
        return mask_utils.frPyObjects(rle, h, w)
    if isinstance(counts, str):
        return {"size": list(rle["size"]), "counts": counts.encode("ascii")}
    return rle


def decode(rle: RLE) -> np.ndarray:
    """Decode a compressed or uncompressed RLE to an HxW bool mask."""
    try:
        return mask_utils.decode(_to_pycoco(rle)).astype(bool)
    except (KeyError, TypeError, ValueError) as exc:
        raise MaskFormatError(f"cannot decode RLE: {exc}") from exc


def compress(rle: RLE) -> RLE:
    """Return the compressed, ``str``-counts form of any RLE (no-op when already compressed)."""
    out = _to_pycoco(rle)
    counts = out["counts"]
    return {"size": [int(s) for s in out["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> RLE:
    """Rasterise COCO polygons (a list of flat ``[x0, y0, x1, y1, ...]`` lists) to one RLE."""
    if len(polygons) == 0:
        return encode(np.zeros((height, width), dtype=bool))
    for poly in polygons:
        if len(poly) < 6 or len(poly) % 2:
            raise MaskFormatError(
                f"polygon needs at least 3 (x, y) points and an even length, got {len(poly)} numbers")
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return compress(mask_utils.merge(rles))


def segmentation_to_rle(segm: Any, height: int, width: int) -> RLE:
    """Turn any COCO ``segmentation`` value (polygons, flat polygon, RLE) into compressed RLE."""
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise MaskFormatError("RLE needs 'counts' and 'size'")
        size = [int(s) for s in segm["size"]]
        if size != [height, width]:
            raise MaskFormatError(f"RLE size {size} disagrees with image size [{height}, {width}]")
        return compress(segm)
    if isinstance(segm, list):
        if segm and isinstance(segm[0], (int, float)):
            segm = [segm]  # one flat polygon, as COCOA raw stores it
        return polygons_to_rle(segm, height, width)
    raise MaskFormatError(f"unsupported segmentation type {type(segm).__name__}")


def area(rle: RLE) -> int:
    """Number of foreground pixels of an RLE."""
    return int(mask_utils.area(_to_pycoco(rle)))


def union(rles: Sequence[RLE]) -> RLE:
    """Pixel-wise union of RLEs of one size."""
    return compress(mask_utils.merge([_to_pycoco(r) for r in rles], intersect=False))


def intersection(rles: Sequence[RLE]) -> RLE:
    """Pixel-wise intersection of RLEs of one size."""
    return compress(mask_utils.merge([_to_pycoco(r) for r in rles], intersect=True))


def iou_matrix(a: Sequence[RLE], b: Sequence[RLE], iscrowd: Optional[Sequence[int]] = None) -> np.ndarray:
    """IoU of each RLE of ``a`` with each of ``b`` (pycocotools; ``iscrowd`` per ``b``, default none)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    crowd = [0] * len(b) if iscrowd is None else [int(c) for c in iscrowd]
    return np.asarray(mask_utils.iou([_to_pycoco(r) for r in a], [_to_pycoco(r) for r in b], crowd),
                      dtype=np.float64)


def difference_many(minuends: Sequence[RLE], subtrahends: Sequence[RLE]) -> list[RLE]:
    """Pairwise ``minuend AND NOT subtrahend`` of same-size RLEs, in one batched decode/encode."""
    if len(minuends) != len(subtrahends):
        raise MaskFormatError(f"difference needs pairs, got {len(minuends)} and {len(subtrahends)} RLEs")
    if len(minuends) == 0:
        return []
    # pycocotools' Fortran (H, W, N) layout: no per-mask copies.
    stacked = mask_utils.decode([_to_pycoco(r) for r in list(minuends) + list(subtrahends)])
    n = len(minuends)
    rles = mask_utils.encode(np.asfortranarray(stacked[:, :, :n] & (1 - stacked[:, :, n:])))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return list(rles)


def difference(minuend: RLE, subtrahend: RLE) -> RLE:
    """``minuend AND NOT subtrahend`` of two same-size RLEs (e.g. invisible = amodal - visible)."""
    return difference_many([minuend], [subtrahend])[0]


def binarize(masks: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Bool masks as they are; probability masks as ``masks >= threshold``."""
    return masks if masks.dtype == bool else masks >= threshold


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight ``(x0, y0, x1, y1)`` box of a bool mask (far edge exclusive); zeros when empty."""
    if mask.ndim != 2:
        raise MaskFormatError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    return tuple(float(v) for v in mask_boxes(mask[None])[0])


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, 4) float32 tight ``(x0, y0, x1, y1)`` boxes of an NxHxW mask stack; zeros for empty masks."""
    if masks.ndim != 3:
        raise MaskFormatError(f"mask stack must be 3-D (N, H, W), got shape {masks.shape}")
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    height, width = masks.shape[1:]
    boxes = np.stack([cols.argmax(1), rows.argmax(1),
                      width - cols[:, ::-1].argmax(1), height - rows[:, ::-1].argmax(1)], axis=1)
    return (boxes * rows.any(1, keepdims=True)).astype(np.float32)


def rle_box(rle: RLE) -> tuple[float, float, float, float]:
    """Tight ``(x0, y0, x1, y1)`` box of an RLE; zeros when empty."""
    x, y, w, h = (float(v) for v in mask_utils.toBbox(_to_pycoco(rle)))
    return (x, y, x + w, y + h)


def xyxy_to_xywh(box: Sequence[float]) -> list[float]:
    """``(x0, y0, x1, y1)`` to COCO ``[x, y, w, h]``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def xywh_to_xyxy(box: Sequence[float]) -> tuple[float, float, float, float]:
    """COCO ``[x, y, w, h]`` to ``(x0, y0, x1, y1)``."""
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)

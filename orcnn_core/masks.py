"""Binary mask helpers: the one place that converts between masks, RLE, polygons and boxes.

RLE dicts follow pycocotools: ``{"size": [height, width], "counts": str}`` (compressed, counts
decoded to ``str`` so they serialise to JSON). Boxes are ``(x0, y0, x1, y1)`` in pixels, exclusive
of the far edge, unless a function says it returns COCO ``[x, y, w, h]``.

Segmentations from files enter through ``segmentation_to_rle`` / ``segmentations_to_rles`` and
``polygons_to_rle``, which validate them (``mask_checks``, ``rle_strings``) before pycocotools sees
them; RLEs made by this module are trusted by the other operations, which do not check again.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
from pycocotools import mask as mask_utils

from orcnn_core.mask_checks import (
    MAX_MASK_PIXELS,
    MaskFormatError,
    check_counts_list,
    check_image_size,
    check_polygon_sets,
    check_polygons,
    check_rle_size,
    short_repr,
)
from orcnn_core.rle_strings import check_counts_strings

RLE = dict
__all__ = ["MaskFormatError"]  # re-exported: callers catch masks.MaskFormatError


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


def from_counts(counts: Sequence[int], height: int, width: int) -> RLE:
    """Compressed RLE of valid run lengths (column-major, starting with zeros); no full mask is made."""
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": [int(c) for c in counts]}, height, width)
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def polygons_to_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> RLE:
    """Rasterise COCO polygons (a list of flat ``[x0, y0, x1, y1, ...]`` lists) to one RLE.

    The polygons and the size are validated first (``mask_checks.check_polygons``); bad ones raise
    MaskFormatError.
    """
    check_image_size(height, width)
    height, width = int(height), int(width)
    check_polygons(polygons, height, width)
    return _rasterise(polygons, height, width)


def _rasterise(polygons: Sequence[Sequence[float]], height: int, width: int) -> RLE:
    """RLE of validated polygons (pycocotools' rasteriser; none: an empty mask)."""
    if len(polygons) == 0:
        return from_counts([height * width], height, width)
    return compress(mask_utils.merge(mask_utils.frPyObjects(list(polygons), height, width)))


def segmentation_to_rle(segm: Any, height: int, width: int) -> RLE:
    """Turn any COCO ``segmentation`` value (polygons, flat polygon, RLE) into compressed RLE.

    The value is validated first; anything pycocotools could not safely read raises MaskFormatError.
    """
    result = segmentations_to_rles([segm], [(height, width)])[0]
    if isinstance(result, MaskFormatError):
        raise result
    return result


def segmentations_to_rles(segms: Sequence[Any],
                          sizes: Sequence[tuple[int, int]]) -> list[Union[RLE, MaskFormatError]]:
    """Validate and convert many untrusted segmentations; per item an RLE or the (unraised) error.

    ``sizes`` holds the ``(height, width)`` of each item's image. Compressed counts strings and
    polygon coordinates are checked in vectorised batches, so that validating a whole file costs
    little; only then does pycocotools see them.
    """
    results: list = [None] * len(segms)
    strings, string_items = [], []
    polygon_sets, polygon_items = [], []
    checked_sizes: set = set()
    for i, (segm, (height, width)) in enumerate(zip(segms, sizes)):
        if type(segm) is dict and type(segm.get("counts")) is str \
                and _is_size(segm.get("size"), height, width):
            strings.append(segm["counts"])  # the common case, its checks inlined: a counts string
            string_items.append(i)
            continue
        try:
            if not (type(height) is int and type(width) is int and (height, width) in checked_sizes):
                check_image_size(height, width)
                checked_sizes.add((int(height), int(width)))
            height, width = int(height), int(width)
            if isinstance(segm, dict):
                counts = _checked_rle_counts(segm, height, width)
                if isinstance(counts, str):
                    strings.append(counts)
                    string_items.append(i)
                else:
                    results[i] = counts
            elif isinstance(segm, list):
                if segm and not isinstance(segm[0], list):
                    segm = [segm]  # one flat polygon, as COCOA raw stores it
                polygon_sets.append((segm, height, width))
                polygon_items.append(i)
            else:
                raise MaskFormatError(f"unsupported segmentation type {type(segm).__name__} "
                                      f"({short_repr(segm)}): expected an RLE object or polygons")
        except MaskFormatError as exc:
            results[i] = exc
    for i, item, problem in zip(polygon_items, polygon_sets, check_polygon_sets(polygon_sets)):
        results[i] = MaskFormatError(problem) if problem is not None else _rasterise(*item)
    pixels = [int(sizes[i][0]) * int(sizes[i][1]) for i in string_items]
    for i, text, checked in zip(string_items, strings, check_counts_strings(strings, pixels)):
        height, width = int(sizes[i][0]), int(sizes[i][1])
        if checked is None:
            results[i] = {"size": [height, width], "counts": text}
        elif isinstance(checked, str):
            results[i] = MaskFormatError(checked)
        else:
            results[i] = from_counts(checked, height, width)
    return results


def _is_size(size: Any, height: Any, width: Any) -> bool:
    """True when ``size`` is exactly ``[height, width]`` of ints within the pixel limit (fast check)."""
    return type(size) is list and len(size) == 2 and type(size[0]) is int and type(size[1]) is int \
        and size[0] == height and size[1] == width and 0 < height and 0 < width \
        and height * width <= MAX_MASK_PIXELS


def _checked_rle_counts(segm: dict, height: int, width: int) -> Union[str, RLE]:
    """An RLE object's size checked; its counts string (checked later, in a batch) or the RLE of its list."""
    missing = [key for key in ("size", "counts") if key not in segm]
    if missing:
        raise MaskFormatError(f"RLE needs 'counts' and 'size' (missing "
                              f"{', '.join(repr(k) for k in missing)})")
    check_rle_size(segm["size"], height, width)
    counts = segm["counts"]
    if isinstance(counts, str):
        return counts
    if isinstance(counts, list):
        canonical = check_counts_list(counts, height * width)
        return from_counts(counts if canonical is None else canonical, height, width)
    raise MaskFormatError(f"counts must be a string or a list of run lengths, got {short_repr(counts)}")


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

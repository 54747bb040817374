"""Checks of untrusted RLEs, polygons and boxes, done before pycocotools sees them.

pycocotools trusts its input. RLE runs that do not add up to height x width make its merge and IoU
loops spin forever; an empty or truncated counts string is read past its end; a polygon coordinate
of 2**63 is cast to ``int`` and the rasteriser allocates memory in proportion to the coordinate
range. So every segmentation read from an annotation or results file is checked here first, in
pure Python/numpy, and masks made by ``masks.encode`` are trusted afterwards.

Limits (documented in docs/data.md, "Validation"):

* ``MAX_MASK_PIXELS``: an image, and so every mask, has at most 2**28 pixels (e.g. 16384 x 16384);
  larger sizes are refused before anything is allocated.
* Compressed counts strings are decoded and checked by ``rle_strings`` (at most 6 characters a run).
* Polygon and box coordinates lie within one image size around the image (-W <= x <= 2W,
  -H <= y <= 2H) and within +-``MAX_COORDINATE``; the polygons of one segmentation have a total
  Chebyshev perimeter of at most ``MAX_POLYGON_PERIMETER`` pixels (pycocotools rasterises with 5x
  upsampling, about 80 bytes per perimeter pixel: at most ~84 MB).
"""

from __future__ import annotations

import math
import numbers
from itertools import chain
from typing import Any, Optional, Sequence

import numpy as np

MAX_MASK_PIXELS = 2 ** 28
MAX_COORDINATE = 2 ** 28  # x 5 (pycocotools' upsampling) still fits a C int
MAX_POLYGON_PERIMETER = 2 ** 20
_JSON_NUMBER_TYPES = {int, float}
class MaskFormatError(ValueError):
    """A mask, RLE or polygon that cannot be interpreted; the message names what was wrong."""


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters (always one line: repr escapes newlines)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_number(value: Any) -> bool:
    """True for a real number (JSON ``int`` or ``float``), False for ``bool`` and everything else."""
    kind = type(value)
    if kind is int or kind is float:  # the JSON case first: abstract-class checks are slow
        return True
    return isinstance(value, numbers.Real) and kind is not bool


def is_integer(value: Any) -> bool:
    """True for an integer (not ``bool``, not an integral float)."""
    kind = type(value)
    return kind is int or (isinstance(value, numbers.Integral) and kind is not bool)


def check_image_size(height: Any, width: Any) -> None:
    """Raise MaskFormatError unless height and width are positive integers within MAX_MASK_PIXELS."""
    if not (is_integer(height) and is_integer(width)):
        raise MaskFormatError(f"image size must be two integers, got {short_repr(height)} x "
                              f"{short_repr(width)}")
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise MaskFormatError(f"image size must be positive, got height {height}, width {width}")
    if height * width > MAX_MASK_PIXELS:
        raise MaskFormatError(f"image size {height} x {width} = {height * width} pixels exceeds the maximum "
                              f"of {MAX_MASK_PIXELS} (2**28)")


def check_rle_size(size: Any, height: int, width: int) -> None:
    """Raise MaskFormatError unless an RLE ``size`` is ``[height, width]`` (two integers)."""
    if type(size) is list and len(size) == 2 and type(size[0]) is int and type(size[1]) is int \
            and size[0] == height and size[1] == width:
        return  # the common case, without the slower checks below
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise MaskFormatError(f"size must be [height, width], got {short_repr(size)}")
    if not all(is_integer(v) for v in size):
        raise MaskFormatError(f"size must hold two integers, got {short_repr(size)}")
    if [size[0], size[1]] != [height, width]:
        raise MaskFormatError(f"RLE size {short_repr(list(size))} disagrees with image size "
                              f"[{height}, {width}]")


def canonical_counts(counts: np.ndarray) -> np.ndarray:
    """Runs with empty runs after the first merged away (pycocotools' own form; same mask)."""
    values = np.arange(len(counts)) % 2
    keep = counts > 0
    runs, run_values = counts[keep], values[keep]
    starts = np.flatnonzero(np.r_[True, run_values[1:] != run_values[:-1]])
    merged = np.add.reduceat(runs, starts) if len(runs) else runs
    if len(merged) == 0 or run_values[starts[0]] == 1:
        merged = np.r_[0, merged]
    return merged.astype(np.int64)


def _needs_canonical(counts: np.ndarray) -> bool:
    return bool(len(counts) > 1 and (counts[1:] == 0).any())


def check_counts_list(counts: list, pixels: int) -> Optional[np.ndarray]:
    """Validate uncompressed RLE counts; ``None`` when canonical as given, else the canonical runs.

    Runs must be non-negative integers (integral finite numbers) adding up to ``pixels``.
    """
    if not set(map(type, counts)) <= _JSON_NUMBER_TYPES:  # fast: one C-level pass
        for index, value in enumerate(counts):
            if not is_number(value):
                raise MaskFormatError(f"counts: run {index} is {short_repr(value)}, not a number")
    try:
        runs = np.array(counts, dtype=np.float64)
    except OverflowError:
        raise MaskFormatError("counts: a run is too large") from None
    bad = ~np.isfinite(runs) | (runs != np.floor(runs)) | (runs < 0) | (runs > MAX_MASK_PIXELS)
    if bad.any():
        index = int(np.argmax(bad))
        raise MaskFormatError(f"counts: run {index} is {short_repr(counts[index])}, not a pixel count "
                              f"(a non-negative integer)")
    runs = runs.astype(np.int64)
    total = int(runs.sum())
    if total != pixels:
        raise MaskFormatError(f"counts: runs add up to {total} pixels, not height x width = {pixels}")
    return canonical_counts(runs) if _needs_canonical(runs) else None


def _coordinate_ranges(height: int, width: int) -> tuple:
    x_low, x_high = max(-width, -MAX_COORDINATE), min(2 * width, MAX_COORDINATE)
    y_low, y_high = max(-height, -MAX_COORDINATE), min(2 * height, MAX_COORDINATE)
    return x_low, x_high, y_low, y_high


def _polygon_problem(k: int, polygon: Any) -> Optional[str]:
    """What is wrong with the shape or value types of polygon ``k``; None when nothing is."""
    if type(polygon) is not list:
        return f"polygon {k} is {short_repr(polygon)}, not a list of coordinates"
    if len(polygon) < 6 or len(polygon) % 2:
        return f"polygon {k} needs at least 3 (x, y) points and an even length, got {len(polygon)} numbers"
    if not set(map(type, polygon)) <= _JSON_NUMBER_TYPES:  # fast: one C-level pass
        bad = next((j for j, value in enumerate(polygon) if not is_number(value)), None)
        if bad is not None:
            return f"polygon {k}: value {bad} is {short_repr(polygon[bad])}, not a number"
    return None


def check_polygons(polygons: Sequence[Any], height: int, width: int) -> None:
    """Raise MaskFormatError unless ``polygons`` are flat coordinate lists pycocotools can rasterise safely.

    Each polygon: at least 3 (x, y) points, even length, finite numbers within the coordinate range;
    all together within MAX_POLYGON_PERIMETER (see the module docstring).
    """
    problem = check_polygon_sets([(polygons, height, width)])[0]
    if problem is not None:
        raise MaskFormatError(problem)


def check_polygon_sets(items: Sequence[tuple]) -> list[Optional[str]]:
    """Check many segmentations' polygons at once: ``items`` are ``(polygons, height, width)``; per item
    None (valid, as ``check_polygons`` defines it) or the error message. Vectorised over all points."""
    errors: list = [None] * len(items)
    polygons, poly_item, poly_index = [], [], []
    for i, (item_polygons, _, _) in enumerate(items):
        for k, polygon in enumerate(item_polygons):
            errors[i] = _polygon_problem(k, polygon)
            if errors[i] is not None:
                break
        else:
            polygons.extend(item_polygons)
            poly_item.extend([i] * len(item_polygons))
            poly_index.extend(range(len(item_polygons)))
    if not polygons:
        return errors
    lengths = np.fromiter(map(len, polygons), dtype=np.int64, count=len(polygons))
    poly_start = np.cumsum(lengths) - lengths
    try:
        flat = np.fromiter(chain.from_iterable(polygons), dtype=np.float64, count=int(lengths.sum()))
    except OverflowError:  # an integer beyond float range: find it polygon by polygon
        flat = np.concatenate([_floats_or_inf(polygon) for polygon in polygons])
    poly_item, poly_index = np.asarray(poly_item), np.asarray(poly_index)

    def report(flat_positions: np.ndarray, message) -> None:
        # per item, the first flagged position gets ``message(polygon, position in it)``
        polys = np.searchsorted(poly_start, flat_positions, side="right") - 1
        hit, first = np.unique(poly_item[polys], return_index=True)
        for i, f, poly in zip(hit.tolist(), flat_positions[first].tolist(), polys[first].tolist()):
            if errors[i] is None:
                errors[i] = message(poly, f - int(poly_start[poly]))

    if not np.isfinite(flat).all():
        report(np.flatnonzero(~np.isfinite(flat)), lambda poly, j: (
            f"polygon {poly_index[poly]}: value {j} is {short_repr(polygons[poly][j])}, not a finite "
            f"number"))
    bounds = np.array([_coordinate_ranges(height, width) for _, height, width in items], dtype=np.float64)
    point_poly = np.repeat(np.arange(len(polygons)), lengths // 2)
    point_bounds = bounds[poly_item[point_poly]]
    x, y = flat[0::2], flat[1::2]
    outside = (x < point_bounds[:, 0]) | (x > point_bounds[:, 1]) | (y < point_bounds[:, 2]) \
        | (y > point_bounds[:, 3])
    if outside.any():
        def outside_message(poly: int, j: int) -> str:
            _, height, width = items[poly_item[poly]]
            x_low, x_high, y_low, y_high = _coordinate_ranges(height, width)
            point = f"({short_repr(polygons[poly][j], 24)}, {short_repr(polygons[poly][j + 1], 24)})"
            return (f"polygon {poly_index[poly]} point {j // 2} {point} lies outside the allowed range "
                    f"x in [{x_low}, {x_high}], y in [{y_low}, {y_high}] (one image size around the "
                    f"{width}x{height} image)")
        report(2 * np.flatnonzero(outside), outside_message)
    # Chebyshev length of every edge, the closing one included: pycocotools' memory goes with it
    following = np.arange(1, len(x) + 1)
    point_end = np.cumsum(lengths // 2)
    following[point_end - 1] = point_end - lengths // 2
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite values are reported above
        edges = np.maximum(np.abs(x[following] - x), np.abs(y[following] - y))
    perimeter = np.bincount(poly_item[point_poly], weights=edges, minlength=len(items))
    for i in np.flatnonzero(perimeter > MAX_POLYGON_PERIMETER).tolist():
        if errors[i] is None:
            errors[i] = (f"polygons have a perimeter of {perimeter[i]:.0f} pixels, more than the maximum "
                         f"of {MAX_POLYGON_PERIMETER} (2**20)")
    return errors


def _floats_or_inf(values: list) -> np.ndarray:
    """Floats of JSON numbers, with integers too large for a float as Infinity (reported as such)."""
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:
        return np.array([v if abs(v) < 2 ** 1023 else float("inf") for v in values], dtype=np.float64)


def check_box(box: Any, height: int, width: int) -> tuple[float, float, float, float]:
    """A COCO ``[x, y, w, h]`` box as ``(x0, y0, x1, y1)``; finite, non-negative size, in range."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise MaskFormatError(f"box must be [x, y, width, height], got {short_repr(box)}")
    if not set(map(type, box)) <= _JSON_NUMBER_TYPES:
        for index, value in enumerate(box):
            if not is_number(value):
                raise MaskFormatError(f"box: value {index} is {short_repr(value)}, not a number")
    try:
        x, y, w, h = map(float, box)
    except OverflowError:
        raise MaskFormatError(f"box {short_repr(box)}: a value is too large for a coordinate") from None
    if not all(map(math.isfinite, (x, y, w, h))):
        raise MaskFormatError(f"box {short_repr(box)} holds a non-finite value (NaN or Infinity)")
    if w < 0 or h < 0:
        raise MaskFormatError(f"box {short_repr(box)} has a negative width or height")
    x_low, x_high, y_low, y_high = _coordinate_ranges(height, width)
    if x < x_low or y < y_low or x + w > x_high or y + h > y_high:
        raise MaskFormatError(f"box {short_repr(box)} lies outside the allowed range x in [{x_low}, "
                              f"{x_high}], y in [{y_low}, {y_high}] (one image size around the "
                              f"{width}x{height} image)")
    return (x, y, x + w, y + h)


def check_boxes(boxes: Sequence[Any], sizes: Sequence[tuple]) -> list:
    """Many boxes at once, each as ``check_box`` would (``sizes``: each box's ``(height, width)``);
    per box its ``(x0, y0, x1, y1)`` or the error message. Vectorised when every box is valid."""
    if boxes and set(map(type, boxes)) <= {list} and set(map(len, boxes)) == {4} \
            and set(map(type, chain.from_iterable(boxes))) <= _JSON_NUMBER_TYPES:
        try:
            values = np.array(boxes, dtype=np.float64)
        except OverflowError:
            values = None
        if values is not None:
            heights, widths = np.array(sizes, dtype=np.float64).T
            x, y, w, h = values.T
            x_low, y_low = np.maximum(-widths, -MAX_COORDINATE), np.maximum(-heights, -MAX_COORDINATE)
            x_high, y_high = np.minimum(2 * widths, MAX_COORDINATE), np.minimum(2 * heights, MAX_COORDINATE)
            with np.errstate(invalid="ignore", over="ignore"):
                valid = np.isfinite(values).all(axis=1) & (w >= 0) & (h >= 0) & (x >= x_low) & (y >= y_low) \
                    & (x + w <= x_high) & (y + h <= y_high)
            if valid.all():
                return [tuple(box) for box in np.stack([x, y, x + w, y + h], axis=1).tolist()]
    results = []
    for box, (height, width) in zip(boxes, sizes):  # some box is bad: the exact messages, box by box
        try:
            results.append(check_box(box, height, width))
        except MaskFormatError as exc:
            results.append(str(exc))
    return results


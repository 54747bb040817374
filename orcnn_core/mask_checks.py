"""Checks of untrusted RLEs, polygons and boxes, done before pycocotools sees them.

pycocotools trusts its input. RLE runs that do not add up to height x width make its merge and IoU
loops spin forever; an empty or truncated counts string is read past its end; a polygon coordinate
of 2**63 is cast to ``int`` and the rasteriser allocates memory in proportion to the coordinate
range. So every segmentation read from an annotation or results file is checked here first, in
pure Python/numpy, and masks made by ``masks.encode`` are trusted afterwards.

Limits (documented in docs/data.md, "Validation"):

* ``MAX_MASK_PIXELS``: an image, and so every mask, has at most 2**28 pixels (e.g. 16384 x 16384);
  larger sizes are refused before anything is allocated.
* A compressed count takes at most ``MAX_COUNT_CHARS`` = 6 characters (30 bits, more than any run
  of such a mask needs; beyond that pycocotools' own shifts overflow).
* Polygon and box coordinates lie within one image size around the image (-W <= x <= 2W,
  -H <= y <= 2H) and within +-``MAX_COORDINATE``; the polygons of one segmentation have a total
  Chebyshev perimeter of at most ``MAX_POLYGON_PERIMETER`` pixels (pycocotools rasterises with 5x
  upsampling, about 80 bytes per perimeter pixel: at most ~84 MB).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from itertools import chain
from typing import Any, Optional, Sequence, Union

import numpy as np

MAX_MASK_PIXELS = 2 ** 28
MAX_COUNT_CHARS = 6
MAX_COORDINATE = 2 ** 28  # x 5 (pycocotools' upsampling) still fits a C int
MAX_POLYGON_PERIMETER = 2 ** 20
_ALPHABET_FIRST, _ALPHABET_LAST = ord("0"), ord("o")  # pycocotools writes chars 48..111
_JSON_NUMBER_TYPES = {int, float}
# Per byte: in pycocotools' alphabet; a "more characters follow" character (0x20 set); its 5-bit digit,
# signed (two's complement) for a run's last character, which carries the sign in bit 0x10.
_IN_ALPHABET = np.zeros(256, dtype=bool)
_IN_ALPHABET[_ALPHABET_FIRST:_ALPHABET_LAST + 1] = True
_MORE = np.zeros(256, dtype=bool)
_MORE[_ALPHABET_FIRST + 0x20:_ALPHABET_LAST + 1] = True
_DIGIT = np.zeros(256, dtype=np.int8)
_DIGIT[_ALPHABET_FIRST:_ALPHABET_LAST + 1] = [c if c < 16 else c - 32 for c in range(64)]


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


@dataclass
class _DecodedStrings:
    """Runs of a batch of counts strings: ``errors`` by string index; runs of the others, concatenated."""

    errors: dict
    usable: list                 # indices of the strings that were decoded, in order
    runs: np.ndarray             # (R,) int64, every decoded string's runs one after the other
    first_run: np.ndarray        # (len(usable),) index in ``runs`` of each usable string's first run
    runs_per_string: np.ndarray  # (len(usable),)

    def runs_of(self, k: int) -> np.ndarray:
        """The runs of the ``k``-th usable string."""
        return self.runs[self.first_run[k]:self.first_run[k] + self.runs_per_string[k]]


def _decode_strings(strings: Sequence[str]) -> _DecodedStrings:
    """Decode compressed counts strings in one vectorised pass, as pycocotools' ``rleFrString`` would.

    Format: each run is LEB128-like, 5 bits per character offset by 48 ('0'), 0x20 meaning "more
    characters follow", the last character's 5 bits signed (two's complement); from the fourth run
    on, a run is stored as the difference to the run two before. Strings that pycocotools would read
    past their end, misread, or turn into negative (wrapped) runs get an error message instead.
    """
    errors: dict = {}
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    joined = "".join(strings)
    if lengths.min(initial=1) == 0 or not joined.isascii():
        for i, text in enumerate(strings):
            if not text:
                errors[i] = "counts: empty string (an RLE has at least one run)"
            elif not text.isascii():
                position = next(k for k, ch in enumerate(text) if ord(ch) > 127)
                errors[i] = f"counts: non-ASCII character {text[position]!r} at position {position}"
        usable = [i for i in range(len(strings)) if i not in errors]
        lengths = lengths[usable]
        joined = "".join(strings[i] for i in usable)
    else:
        usable = list(range(len(strings)))
    if not usable:
        empty = np.zeros(0, dtype=np.int64)
        return _DecodedStrings(errors, usable, empty, empty, empty)
    string_end = np.cumsum(lengths)
    string_start = string_end - lengths
    codes = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)

    def flag(positions: np.ndarray, owners: np.ndarray, message) -> None:
        # the first flagged position of each string gets the message (earlier checks win)
        strings_hit, first = np.unique(owners, return_index=True)
        for k, index in zip(strings_hit.tolist(), positions[first].tolist()):
            errors.setdefault(usable[k], message(k, index))

    def char_owners(positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(string_end, positions, side="right")

    if codes.min() < _ALPHABET_FIRST or codes.max() > _ALPHABET_LAST:
        outside = np.flatnonzero(~_IN_ALPHABET[codes])
        flag(outside, char_owners(outside),
             lambda k, p: f"counts: character {chr(codes[p])!r} at position {p - string_start[k]} is not "
                          f"in pycocotools' RLE alphabet ('0' to 'o')")
    last = string_end - 1
    if _MORE[codes[last]].any():
        cut = last[_MORE[codes[last]]]
        flag(cut, char_owners(cut), lambda k, p: "counts: the string ends inside a run (truncated)")
    final = ~_MORE[codes]
    final[last] = True  # so that no run spans two strings
    run_end = np.flatnonzero(final)
    first_run = np.searchsorted(run_end, string_start)
    runs_per_string = np.diff(first_run, append=len(run_end))

    def run_owners(indices: np.ndarray) -> np.ndarray:
        return np.searchsorted(first_run, indices, side="right") - 1

    def run_index(r: int) -> int:
        return int(r - first_run[run_owners(np.array([r]))[0]])

    # value of each run: 5 bits per character, least significant first, the last character's signed
    # (``_DIGIT``). Horner's rule from the last character back, one pass per character position
    # (most runs take one or two characters); a run still going on after MAX_COUNT_CHARS is refused.
    values = _DIGIT[codes[run_end]].astype(np.int32)
    # walking back stops at a final character: the end of the previous run or string (index -1 is
    # the last character, final too), so that no run reaches into another string
    going_on = np.flatnonzero(~final[run_end - 1])
    for k in range(1, MAX_COUNT_CHARS + 1):
        if len(going_on) == 0:
            break
        if k == MAX_COUNT_CHARS:
            flag(going_on, run_owners(going_on), lambda k, r: f"counts: run {run_index(r)} takes more than "
                                                              f"{MAX_COUNT_CHARS} characters (out of range)")
            break
        values[going_on] = (values[going_on] << 5) + _DIGIT[codes[run_end[going_on] - k]]
        going_on = going_on[~final[run_end[going_on] - k - 1]]

    # undo the delta coding: run j >= 3 is stored as run j minus run j - 2, so run j is the sum of the
    # stored values j, j - 2, ... down to 1 or 2 (run 0 is stored as it is). Per global parity p, the
    # runs at positions p, p + 2, ... are a cumulative sum minus its value before each string.
    chained = values.astype(np.int64)
    chained[first_run] = 0
    runs = np.empty_like(chained)
    string_stop = first_run + runs_per_string
    for parity in (0, 1):
        total = np.cumsum(chained[parity::2])
        start, stop = (first_run - parity + 1) // 2, (string_stop - parity + 1) // 2  # in chained[parity::2]
        before = np.where(start > 0, total[np.maximum(start - 1, 0)], 0) if len(total) else start * 0
        runs[parity::2] = total - np.repeat(before, stop - start)
    runs[first_run] = values[first_run]
    # pycocotools would wrap a negative run to a huge unsigned one; valid runs never wrap, so for the
    # strings accepted here its runs and these are the same
    if runs.min() < 0:
        negative = np.flatnonzero(runs < 0)
        flag(negative, run_owners(negative),
             lambda k, r: f"counts: run {run_index(r)} is negative ({runs[r]})")
    return _DecodedStrings(errors, usable, runs, first_run, runs_per_string)


def decode_counts_string(text: str) -> np.ndarray:
    """The runs of one compressed counts string (int64), as pycocotools decodes it; MaskFormatError
    when it is not a valid string (the runs' total is not checked here)."""
    decoded = _decode_strings([text])
    if decoded.errors:
        raise MaskFormatError(decoded.errors[0])
    return decoded.runs.copy()


def check_counts_strings(strings: Sequence[str],
                         pixels: Sequence[int]) -> list[Union[None, str, np.ndarray]]:
    """Decode many compressed RLE counts strings at once and check each against its pixel count.

    Per string the result is ``None`` (valid as it is), an error message, or the canonical runs
    (valid, but with empty runs to merge away before pycocotools' merge and IoU loops see them).
    """
    decoded = _decode_strings(strings)
    results: list = [decoded.errors.get(i) for i in range(len(strings))]
    if not decoded.usable:
        return results
    sums = np.add.reduceat(decoded.runs, decoded.first_run)
    empty_inner = decoded.runs == 0
    empty_inner[decoded.first_run] = False
    canonical_needed = set()
    if empty_inner.any():
        canonical_needed = set((np.searchsorted(decoded.first_run, np.flatnonzero(empty_inner), side="right")
                                - 1).tolist())
    for k, i in enumerate(decoded.usable):
        if results[i] is not None:
            continue
        if sums[k] != pixels[i]:
            results[i] = f"counts: runs add up to {sums[k]} pixels, not height x width = {pixels[i]}"
        elif k in canonical_needed:
            results[i] = canonical_counts(decoded.runs_of(k))
    return results


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


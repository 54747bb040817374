"""Validation of untrusted RLEs, polygons and boxes (orcnn_core.mask_checks, masks.segmentation_to_rle).

Expected runs come from test-side encoders (mask_helpers.uncompressed_rle, ``_encode_counts`` below,
a transcription of pycocotools' ``rleToString``) or from pycocotools itself, never from the code
under test.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mask_helpers import coco_rle, uncompressed_rle
from pycocotools import mask as pycoco

from orcnn_core import mask_checks, rle_strings
from orcnn_core import masks as mask_ops
from orcnn_core.mask_checks import MaskFormatError

SETTINGS = settings(max_examples=150, derandomize=True, deadline=None, database=None)


def _encode_counts(runs: list, pad: tuple = ()) -> str:
    """pycocotools' rleToString, with optional redundant continuation characters (``pad[j]`` extra
    characters for run j) that pycocotools' reader still decodes to the same value."""
    out = []
    for j, run in enumerate(runs):
        x = run - runs[j - 2] if j > 2 else run
        chars = []
        while True:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(c | (0x20 if more else 0))
            if not more:
                break
        extra = pad[j] if j < len(pad) else 0
        if extra:  # sign-extend with more digits: same value, longer string
            fill = 0x1F if chars[-1] & 0x10 else 0
            chars[-1] |= 0x20
            chars += [fill | 0x20] * (extra - 1) + [fill]
        out.extend(chr(c + 48) for c in chars)
    return "".join(out)


def _runs_to_mask(runs: list, height: int, width: int) -> np.ndarray:
    values = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
    return values.reshape(width, height).T


# ---- the decoder agrees with pycocotools ---------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (24, 32), (61, 1), (300, 200)])
def test_decoded_runs_of_pycocotools_strings(shape):
    rng = np.random.default_rng(shape[0])
    for density in (0.0, 0.02, 0.5, 0.97, 1.0):
        mask = rng.random(shape) < density
        runs = rle_strings.decode_counts_string(coco_rle(mask)["counts"])
        assert runs.tolist() == uncompressed_rle(mask)["counts"]


def test_runs_beyond_16_bits_and_at_the_pixel_limit():
    side = 2 ** 14  # 2**28 pixels, the documented maximum; only the last pixel set
    text = pycoco.frPyObjects({"size": [side, side], "counts": [2 ** 28 - 1, 1]}, side, side)["counts"]
    assert pycoco.area({"size": [side, side], "counts": text}) == 1  # pycocotools' own reading, no mask made
    text = text.decode("ascii")
    assert rle_strings.decode_counts_string(text).tolist() == [2 ** 28 - 1, 1]
    assert rle_strings.check_counts_strings([text], [2 ** 28]) == [None]
    assert rle_strings.check_counts_strings([text], [2 ** 28 - 1])[0].startswith("counts: runs add up")


@st.composite
def _runs_and_padding(draw):
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    cuts = sorted(draw(st.lists(st.integers(1, height * width - 1), max_size=12, unique=True))) \
        if height * width > 1 else []
    bounds = [0, *cuts, height * width]
    runs = [b - a for a, b in zip(bounds, bounds[1:])]
    if draw(st.booleans()):
        runs = [0, *runs]  # starts with foreground
    pad = tuple(draw(st.lists(st.integers(0, 2), min_size=len(runs), max_size=len(runs))))
    return height, width, runs, pad


@SETTINGS
@given(_runs_and_padding())
def test_batch_decoding_matches_pycocotools(case):
    height, width, runs, pad = case
    text = _encode_counts(runs, pad)
    # pycocotools reads the (possibly padded) string back to the same mask
    decoded = pycoco.decode({"size": [height, width], "counts": text.encode("ascii")}).astype(bool)
    assert np.array_equal(decoded, _runs_to_mask(runs, height, width))
    # decoded alone and in a batch between other strings, with the same result
    assert rle_strings.decode_counts_string(text).tolist() == runs
    other = _encode_counts([3, 4, 5])
    assert rle_strings.check_counts_strings([other, text, other], [12, height * width, 12]) == [None] * 3
    assert rle_strings.check_counts_strings([text], [height * width + 1])[0].startswith("counts: runs add up")


# ---- bad counts strings ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("", "empty string"),
    ("5é", "non-ASCII character 'é' at position 1"),
    ("5 ", "character ' ' at position 1 is not in pycocotools' RLE alphabet"),
    ("5~", "character '~'"),
    ("0P", "ends inside a run (truncated)"),
    ("PPPPPP0", "run 0 takes more than 6 characters"),
    ("5A", "run 1 is negative (-15)"),      # 'A' = 48 + 17: the signed 5-bit digit -15
    ("3O", "run 1 is negative (-1)"),
    ("55", "runs add up to 10 pixels, not height x width = 25"),
    ("P5", "runs add up to 160 pixels"),     # 0 + 5 * 32
])
def test_bad_counts_strings(text, message):
    result = rle_strings.check_counts_strings([text], [25])[0]
    assert isinstance(result, str) and message in result
    # the same verdict inside a batch of valid strings, which stay valid
    good = _encode_counts([5, 20])
    assert rle_strings.check_counts_strings([good, text, good], [25, 25, 25]) == [None, result, None]


def test_a_truncated_string_does_not_spill_into_the_next():
    assert rle_strings.check_counts_strings(["0P", "5"], [1, 5]) == \
        ["counts: the string ends inside a run (truncated)", None]
    assert rle_strings.check_counts_strings(["5", "0P"], [5, 1])[0] is None


def test_delta_coded_negative_run_is_refused():
    # runs 10, 5, 7, then run 3 stored as 5 - 20 = -15: run 3 would be negative
    text = _encode_counts([10, 5, 7]) + _encode_counts([0, 0, 0, -15])[-1]
    assert rle_strings.check_counts_strings([text], [100])[0] == "counts: run 3 is negative (-10)"


def test_empty_inner_runs_are_merged_to_the_same_mask():
    runs = [3, 0, 2, 5, 0, 0, 4, 11]  # 25 pixels with empty runs that flip nothing
    text = _encode_counts(runs)
    rle = mask_ops.segmentation_to_rle({"size": [5, 5], "counts": text}, 5, 5)
    expected = _runs_to_mask(runs, 5, 5)
    assert np.array_equal(mask_ops.decode(rle), expected)
    assert rle_strings.decode_counts_string(rle["counts"]).tolist() == uncompressed_rle(expected)["counts"]
    listed = mask_ops.segmentation_to_rle({"size": [5, 5], "counts": runs}, 5, 5)
    assert listed == rle


# ---- sizes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, message", [
    ([5, float("nan")], "two integers"),
    ([5, float("inf")], "two integers"),
    (["5", 5], "two integers"),
    ([True, 5], "two integers"),
    ([5, 5, 5], "must be [height, width]"),
    (5, "must be [height, width]"),
    ([6, 5], "disagrees with image size [5, 5]"),
])
def test_bad_rle_sizes(size, message):
    with pytest.raises(MaskFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        mask_ops.segmentation_to_rle({"size": size, "counts": "0j0"}, 5, 5)


@pytest.mark.parametrize("height, width, message", [
    (0, 5, "positive"), (-3, 5, "positive"), (100000, 100000, "exceeds the maximum"),
    (2 ** 28 + 1, 1, "exceeds the maximum"), (5.0, 5, "two integers"),
])
def test_bad_image_sizes(height, width, message):
    with pytest.raises(MaskFormatError, match=message):
        mask_ops.segmentation_to_rle({"size": [height, width], "counts": "0"}, height, width)


def test_huge_rle_is_refused_without_allocating():
    tracemalloc.start()
    try:
        for segm in ({"size": [100000, 100000], "counts": "0"},
                     {"size": [100000, 100000], "counts": [10 ** 10]},
                     [[0, 0, 99999, 0, 99999, 99999]]):
            with pytest.raises(MaskFormatError, match="exceeds the maximum"):
                mask_ops.segmentation_to_rle(segm, 100000, 100000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # numpy registers its buffers with tracemalloc: nothing near 10**10 bytes


def test_largest_allowed_size_is_accepted():
    rle = mask_ops.segmentation_to_rle({"size": [2 ** 14, 2 ** 14], "counts": [2 ** 28]}, 2 ** 14, 2 ** 14)
    assert mask_ops.area(rle) == 0


# ---- list counts ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("counts, message", [
    ([5, 5], "runs add up to 10 pixels, not height x width = 25"),
    ([8000, 8000], "runs add up to 16000"),
    ([5, -5, 25], "run 1 is -5"),
    ([5, 2.5, 17.5], "run 1 is 2.5"),
    ([5, float("nan"), 20], "run 1 is nan"),
    ([5, float("inf")], "run 1 is inf"),
    ([5, True, 19], "run 1 is True, not a number"),
    ([5, "20"], "run 1 is '20', not a number"),
    ([5, [20]], "run 1 is [20]"),
    ([10 ** 30], "run 0 is"),
    ([10 ** 400], "too large"),
    ([], "runs add up to 0"),
    ("", "empty string"),
    (None, "counts must be a string or a list"),
    (5, "counts must be a string or a list"),
])
def test_bad_count_lists(counts, message):
    with pytest.raises(MaskFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        mask_ops.segmentation_to_rle({"size": [5, 5], "counts": counts}, 5, 5)


def test_count_list_of_integral_floats_is_read():
    mask = np.zeros((5, 5), dtype=bool)
    mask[1:3, 2:4] = True
    runs = uncompressed_rle(mask)["counts"]
    rle = mask_ops.segmentation_to_rle({"size": [5, 5], "counts": [float(r) for r in runs]}, 5, 5)
    assert np.array_equal(mask_ops.decode(rle), mask)


def test_rle_without_counts_or_size():
    with pytest.raises(MaskFormatError, match="missing 'counts'"):
        mask_ops.segmentation_to_rle({"size": [5, 5]}, 5, 5)
    with pytest.raises(MaskFormatError, match="missing 'size'"):
        mask_ops.segmentation_to_rle({"counts": "05"}, 5, 5)


# ---- polygons -------------------------------------------------------------------------------------------

TRIANGLE = [1, 1, 8, 1, 4, 6]


@pytest.mark.parametrize("polygons, message", [
    ([[1, 1, 5, 5]], "at least 3"),
    ([[1, 1, 5, 5, 2]], "at least 3"),
    ([TRIANGLE + [3]], "even length"),
    ([TRIANGLE, [1, 2, float("nan"), 4, 5, 6]], "polygon 1: value 2 is nan, not a finite number"),
    ([[1, 2, 3, float("inf"), 5, 6]], "value 3 is inf"),
    ([[1, 2, 3, 2 ** 63, 5, 6]], "polygon 0 point 1"),
    ([[1, 2, 3, 10 ** 400, 5, 6]], "not a finite number"),
    ([[1, 2, 3, True, 5, 6]], "value 3 is True, not a number"),
    ([[1, 2, 3, "4", 5, 6]], "value 3 is '4', not a number"),
    ([[1, 2, 3, None, 5, 6]], "value 3 is None"),
    ([[[1, 2], 3, 4, 5, 6, 7]], "polygon 0: value 0 is [1, 2], not a number"),
    ([TRIANGLE, "abc"], "polygon 1 is 'abc', not a list"),
])
def test_bad_polygons(polygons, message):
    with pytest.raises(MaskFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        mask_ops.segmentation_to_rle(polygons, 10, 12)


@pytest.mark.parametrize("axis, value, ok", [
    (0, 24, True), (0, 24.01, False), (0, -12, True), (0, -12.01, False),   # width 12: x in [-12, 24]
    (1, 20, True), (1, 20.5, False), (1, -10, True), (1, -10.5, False),      # height 10: y in [-10, 20]
])
def test_polygon_coordinate_range_both_sides(axis, value, ok):
    polygon = [2.0, 2.0, 6.0, 2.0, 4.0, 5.0]
    polygon[2 + axis] = value
    if ok:
        mask_checks.check_polygons([polygon], 10, 12)
        reference = pycoco.decode(pycoco.merge(pycoco.frPyObjects([polygon], 10, 12))).astype(bool)
        assert np.array_equal(mask_ops.decode(mask_ops.segmentation_to_rle([polygon], 10, 12)), reference)
    else:
        with pytest.raises(MaskFormatError, match="lies outside the allowed range"):
            mask_checks.check_polygons([polygon], 10, 12)


def test_polygon_perimeter_limit_both_sides():
    side = 2 ** 14  # a 16384 x 16384 image (the pixel limit); x may run from -16384 to 32768
    # a zigzag of 64 points whose every edge (the closing one too) has a Chebyshev length of 16384
    zigzag = [v for k in range(32) for v in (0, k, side, k)]
    assert len(zigzag) == 128 and 64 * side == mask_checks.MAX_POLYGON_PERIMETER
    mask_checks.check_polygons([zigzag], side, side)
    longer = list(zigzag)
    longer[2] = side + 1  # two edges one pixel longer
    with pytest.raises(MaskFormatError, match="perimeter of 1048578 pixels, more than the maximum"):
        mask_checks.check_polygons([longer], side, side)
    # the limit is per segmentation: the polygons add up
    with pytest.raises(MaskFormatError, match="perimeter of 1048588 pixels"):
        mask_checks.check_polygons([zigzag, [0, 0, 4, 0, 0, 4]], side, side)


def test_flat_polygon_and_empty_polygon_list():
    flat = mask_ops.segmentation_to_rle(TRIANGLE, 10, 12)
    nested = mask_ops.segmentation_to_rle([TRIANGLE], 10, 12)
    assert flat == nested
    empty = mask_ops.segmentation_to_rle([], 10, 12)
    assert mask_ops.area(empty) == 0 and empty["size"] == [10, 12]


def test_batch_keeps_errors_in_place():
    good = coco_rle(np.eye(5, dtype=bool))
    out = mask_ops.segmentations_to_rles(
        [good, {"size": [5, 5], "counts": "55"}, TRIANGLE, [[1, 2, 3]], "x",
         {"size": [5, 5], "counts": [25]}],
        [(5, 5), (5, 5), (10, 12), (10, 12), (5, 5), (5, 5)])
    assert out[0] == {"size": [5, 5], "counts": good["counts"]}
    assert isinstance(out[1], MaskFormatError) and "runs add up to 10" in str(out[1])
    assert mask_ops.area(out[2]) > 0
    assert isinstance(out[3], MaskFormatError) and "at least 3" in str(out[3])
    assert isinstance(out[4], MaskFormatError) and "unsupported segmentation type str" in str(out[4])
    assert mask_ops.area(out[5]) == 0


# ---- boxes ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("box, message", [
    ([1, 2, 3], "must be [x, y, width, height]"),
    ("1,2,3,4", "must be [x, y, width, height]"),
    ([1, 2, float("nan"), 4], "non-finite"),
    ([1, 2, float("-inf"), 4], "non-finite"),
    ([1, 2, 10 ** 400, 4], "too large"),
    ([1, 2, "3", 4], "value 2 is '3', not a number"),
    ([1, 2, True, 4], "value 2 is True"),
    ([1, 2, -1, 4], "negative width or height"),
    ([1, 2, 30, 4], "outside the allowed range"),
    ([-13, 2, 1, 4], "outside the allowed range"),
])
def test_bad_boxes(box, message):
    with pytest.raises(MaskFormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        mask_checks.check_box(box, 10, 12)


def test_box_range_both_sides():
    assert mask_checks.check_box([-12, -10, 36, 30], 10, 12) == (-12.0, -10.0, 24.0, 20.0)
    with pytest.raises(MaskFormatError):
        mask_checks.check_box([-12, -10, 36.5, 30], 10, 12)


def test_batch_box_check_agrees_with_single_checks():
    boxes = [[-12, -10, 36, 30], [1, 2, 3, 4], [0.5, 0.5, 0, 0]]
    sizes = [(10, 12)] * 3
    assert mask_checks.check_boxes(boxes, sizes) == [mask_checks.check_box(b, 10, 12) for b in boxes]
    bad = boxes + [[-12, -10, 36.5, 30], [1, 2, float("nan"), 4], [1, 2, "3", 4], [1, 2, 3]]
    results = mask_checks.check_boxes(bad, [(10, 12)] * len(bad))
    assert results[:3] == [mask_checks.check_box(b, 10, 12) for b in boxes]
    assert "outside the allowed range" in results[3] and "non-finite" in results[4]
    assert "value 2 is '3'" in results[5] and "must be [x, y, width, height]" in results[6]

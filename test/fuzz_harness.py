"""Property-based fuzzing of the annotation readers and the results parser (hypothesis).

Property: any input file gives a valid dataset (or parsed results) or the project's one-line error,
within a time bound. Run by ``test_fuzz.py`` in a subprocess with a timeout and a memory cap, so that
a segfault, a hang or a runaway allocation in a C library is reported instead of killing pytest:

    python test/fuzz_harness.py [--examples N] [PROPERTY ...]

Exit status 0 when every property held; otherwise hypothesis' falsifying example is printed.
Examples are derandomized (the same inputs every run).
"""

from __future__ import annotations

import argparse
import atexit
import copy
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))  # mask_helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's orcnn_core

from mask_helpers import coco_rle, uncompressed_rle  # noqa: E402

from orcnn_core import masks as mask_ops  # noqa: E402
from orcnn_core.data import load_annotations, write_annotations  # noqa: E402
from orcnn_core.data.stats import dataset_stats  # noqa: E402
from orcnn_core.errors import DatasetError  # noqa: E402
from orcnn_core.evaluation import AmodalEvaluator, ResultsError, load_results  # noqa: E402
from orcnn_core.structures import AmodalAnnotation, ImageRecord  # noqa: E402

H, W = 12, 16
TIME_BOUND_S = 10.0  # per input; a real hang is caught by the caller's subprocess timeout
WORK = Path(tempfile.mkdtemp(prefix="orcnn_fuzz_"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)


def _rect(y0, y1, x0, x1):
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


TOP, BOTTOM = _rect(1, 6, 1, 8), _rect(3, 10, 5, 14)
BASES = {
    "cocoa": {
        "images": [{"id": 7, "file_name": "a.png", "height": H, "width": W}],
        "annotations": [
            {"id": 4, "image_id": 7, "category_id": 1, "segmentation": [[1, 1, 8, 1, 8, 6, 1, 6]],
             "bbox": [1, 1, 7, 5], "iscrowd": 0, "occlude_rate": 0.0},
            {"id": 5, "image_id": 7, "category_id": 2, "segmentation": coco_rle(BOTTOM),
             "visible_mask": coco_rle(BOTTOM & ~TOP), "invisible_mask": uncompressed_rle(BOTTOM & TOP),
             "bbox": [5, 3, 9, 7], "name": "cup"}],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "cup"}],
    },
    "kins": {
        "images": [{"id": 3, "file_name": "k.png", "height": H, "width": W}],
        "annotations": [{"id": 1, "image_id": 3, "category_id": 1,
                         "segmentation": [[5, 3, 14, 3, 14, 10, 5, 10]],
                         "inmodal_seg": coco_rle(BOTTOM & ~TOP), "bbox": [5, 3, 9, 7],
                         "inmodal_bbox": [5, 3, 9, 7], "ico_id": 1, "oco_id": 2}],
        "categories": [{"id": 1, "name": "car"}],
    },
    "cocoa_raw": {"image_id": 9, "id": 1, "height": H, "width": W, "regions": [
        {"segmentation": [1, 1, 8, 1, 8, 6, 1, 6], "name": "box", "order": 1, "isStuff": 0,
         "occlude_rate": 0},
        {"segmentation": [5, 3, 14, 3, 14, 10, 5, 10], "name": "cup", "order": 2, "isStuff": 0,
         "visible_mask": coco_rle(BOTTOM & ~TOP), "invisible_mask": coco_rle(BOTTOM & TOP)}]},
    "d2_list": [{"file_name": "d.png", "height": H, "width": W, "image_id": 2, "annotations": [
        {"segmentation": coco_rle(BOTTOM), "visible_mask": coco_rle(BOTTOM & ~TOP), "category_id": 1}]}],
}

# Values that broke the readers before (issue 13) and their relatives.
SPECIAL = st.sampled_from([
    float("nan"), float("inf"), float("-inf"), 2 ** 63, -(2 ** 63), 2 ** 64, 10 ** 30, 1e308, -1, 0, 1.5,
    100000, "", "abc", "0", "0P", "o" * 30, "PPPPPPP0", "\u00e9", "a\nb", [], {}, [5, 5], [8000, 8000],
    {"size": [100000, 100000], "counts": "0"}, {"size": [H, W], "counts": ""}, {"size": [float("nan"), W]},
    [[1, 1, 5, float("nan"), 9, 9]], [[0, 0, 2 ** 63, 0, 5, 5]], [[1, 2, 3]], [H, W], [None], True, None,
]).map(copy.deepcopy)  # fresh objects: mutations must not change the strategy's own values
KEYS = st.sampled_from(["id", "image_id", "category_id", "segmentation", "visible_mask", "invisible_mask",
                        "size", "counts", "bbox", "height", "width", "regions", "annotations", "images",
                        "categories", "name", "iscrowd", "extra", "inmodal_seg", "file_name", "order"])
LEAVES = (SPECIAL | st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
          | st.floats(allow_nan=True, allow_infinity=True)
          | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=130), max_size=10))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=10)


def _paths(value, prefix=()):
    """Every path (tuple of keys/indices) into a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _mutate(data, draw):
    """Replace, delete or insert at 1-3 random places of a copy of ``data``."""
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "delete", "insert"]))
        if not path:
            data = draw(VALUES) if action == "replace" else data
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if action == "replace":
            parent[key] = draw(VALUES)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = draw(VALUES)
        else:
            parent.insert(key, draw(VALUES))
    return data


def _write(name: str, data=None, raw: bytes = None) -> Path:
    path = WORK / name
    if raw is None:
        raw = json.dumps(data).encode("utf-8")  # NaN/Infinity literals included, as other tools write them
    path.write_bytes(raw)
    return path


def _one_line(message: str, path: Path) -> None:
    assert "\n" not in message and "\r" not in message, message
    assert str(path) in message, message


def _check_loaded(annotations) -> None:
    """Invariants of a loaded dataset; it must also write and read back as strict JSON."""
    category_ids = {c["id"] for c in annotations.categories}
    for record in annotations.images:
        assert isinstance(record.image_id, int) and record.height > 0 and record.width > 0
        for ann in record.annotations:
            assert ann.category_id in category_ids
            amodal, visible, invisible = ann.amodal_mask(), ann.visible_mask(), ann.invisible_mask()
            assert amodal.shape == visible.shape == invisible.shape == (record.height, record.width)
            assert not (visible & ~amodal).any()
            assert np.array_equal(invisible, amodal & ~visible)
            assert all(np.isfinite(ann.amodal_box)) and all(np.isfinite(ann.visible_box))
    out = write_annotations(annotations, None, WORK / "written.json")
    json.loads(out.read_text(), parse_constant=lambda name: (_ for _ in ()).throw(AssertionError(name)))
    again = load_annotations(out)
    assert [len(r.annotations) for r in again.images] == [len(r.annotations) for r in annotations.images]
    dataset_stats(annotations)


def _load_or_error(path: Path, format=None) -> None:
    start = time.monotonic()
    try:
        annotations = load_annotations(path, format=format)
    except DatasetError as exc:
        _one_line(str(exc), path)
    else:
        _check_loaded(annotations)
    assert time.monotonic() - start < TIME_BOUND_S, "too slow"


FUZZ = dict(derandomize=True, database=None, deadline=None,
            suppress_health_check=list(HealthCheck))


def annotation_structure(examples: int):
    """Structurally mutated annotation files of every layout."""
    @settings(max_examples=examples, **FUZZ)
    @given(st.sampled_from(sorted(BASES)), st.data())
    def prop(base, data):
        mutated = _mutate(BASES[base], data.draw)
        _load_or_error(_write(f"{base}.json", mutated))
    return prop


def annotation_bytes(examples: int):
    """Byte-level damage: truncation, flipped and inserted bytes, other encodings, deep nesting."""
    @settings(max_examples=examples, **FUZZ)
    @given(st.sampled_from(sorted(BASES)), st.data())
    def prop(base, data):
        raw = json.dumps(BASES[base]).encode("utf-8")
        kind = data.draw(st.sampled_from(["truncate", "flip", "insert", "encoding", "nest"]))
        if kind == "truncate":
            raw = raw[:data.draw(st.integers(0, len(raw)))]
        elif kind == "flip":
            for _ in range(data.draw(st.integers(1, 4))):
                i = data.draw(st.integers(0, len(raw) - 1))
                raw = raw[:i] + bytes([raw[i] ^ (1 << data.draw(st.integers(0, 7)))]) + raw[i + 1:]
        elif kind == "insert":
            i = data.draw(st.integers(0, len(raw)))
            raw = raw[:i] + data.draw(st.binary(min_size=1, max_size=8)) + raw[i:]
        elif kind == "encoding":
            encoding = data.draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1"]))
            raw = raw.decode().encode(encoding)
        else:
            depth = data.draw(st.sampled_from([99, 100, 101, 5000, 200000]))
            raw = b"[" * depth + raw + b"]" * depth
        _load_or_error(_write(f"{base}_bytes.json", raw=raw))
    return prop


GT_ANNS = [AmodalAnnotation.from_masks(4, 1, TOP, TOP),
           AmodalAnnotation.from_masks(5, 2, BOTTOM, BOTTOM & ~TOP)]
GT_IMAGES = [ImageRecord(7, "a.png", H, W, GT_ANNS)]
GT_CATEGORIES = [{"id": 1, "name": "box"}, {"id": 2, "name": "cup"}]
RESULTS = [
    {"image_id": 7, "file_name": "a.png", "category_id": 1, "score": 0.9, "segmentation": coco_rle(TOP),
     "visible_mask": coco_rle(TOP), "invisible_mask": uncompressed_rle(np.zeros((H, W), bool)),
     "bbox": [1, 1, 7, 5]},
    {"image_id": 7, "file_name": "a.png", "category_id": 2, "score": 0.5,
     "segmentation": [[5, 3, 14, 3, 14, 10, 5, 10]], "visible_mask": coco_rle(BOTTOM & ~TOP)},
]


def results_structure(examples: int):
    """Structurally mutated results files against a fixed ground truth."""
    evaluator = AmodalEvaluator(GT_IMAGES, GT_CATEGORIES)

    @settings(max_examples=examples, **FUZZ)
    @given(st.data())
    def prop(data):
        path = _write("results.json", _mutate(RESULTS, data.draw))
        start = time.monotonic()
        try:
            summary = evaluator.evaluate(load_results(path), source=str(path))
        except ResultsError as exc:
            _one_line(str(exc), path)
        else:
            for row in (summary["all"], summary["occluded"]):
                assert all(v is None or 0.0 <= v <= 100.0 for v in row.values())
        assert time.monotonic() - start < TIME_BOUND_S, "too slow"
    return prop


def segmentation_values(examples: int):
    """Arbitrary values as a segmentation: an RLE or the module's MaskFormatError, nothing else."""
    @settings(max_examples=examples, **FUZZ)
    @given(VALUES | st.fixed_dictionaries({"size": VALUES, "counts": VALUES})
           | st.fixed_dictionaries({"size": st.just([H, W]), "counts": st.text(max_size=40)
                                    | st.lists(st.integers(-5, 200), max_size=8)}))
    def prop(segm):
        try:
            rle = mask_ops.segmentation_to_rle(segm, H, W)
        except mask_ops.MaskFormatError as exc:
            assert "\n" not in str(exc)
        else:
            assert mask_ops.decode(rle).shape == (H, W)
            assert mask_ops.iou_matrix([rle], [coco_rle(TOP)]).shape == (1, 1)
    return prop


PROPERTIES = {f.__name__: f for f in (annotation_structure, annotation_bytes, results_structure,
                                      segmentation_values)}


def main() -> int:
    """Run the chosen properties (default: all); exit 1 at the first that fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="examples per property")
    parser.add_argument("properties", nargs="*", help=f"some of {', '.join(PROPERTIES)} (default: all)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # accepted inputs may warn (dropped extras); not what is tested
    unknown = set(args.properties) - set(PROPERTIES)
    if unknown:
        parser.error(f"unknown properties: {', '.join(sorted(unknown))}")
    for name in args.properties or PROPERTIES:
        start = time.monotonic()
        PROPERTIES[name](args.examples)()
        print(f"{name}: {args.examples} examples passed in {time.monotonic() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

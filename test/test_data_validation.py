"""Bad annotation and results files: one clear error naming file, image, annotation (or entry) and
field, before pycocotools sees anything; JSON encodings and nesting; invisible-mask consistency;
strict JSON output of `orcnn convert`."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pytest
from mask_helpers import coco_rle as rle

from orcnn_core import cli
from orcnn_core.data import load_annotations
from orcnn_core.data.jsonfile import MAX_JSON_DEPTH
from orcnn_core.errors import DatasetError
from orcnn_core.evaluation import AmodalEvaluator, ResultsError, load_results
from orcnn_core.structures import AmodalAnnotation, ImageRecord

H, W = 20, 24


def rect(y0, y1, x0, x1):
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


A = rect(2, 10, 2, 12)  # on top of B
B_AMODAL = rect(5, 15, 8, 20)
B_VISIBLE = B_AMODAL & ~A
B_INVISIBLE = B_AMODAL & A


def base_file():
    """A flat COCOA file: image 7; annotation 4 (A, unoccluded), annotation 5 (B, occluded by A)."""
    return {
        "images": [{"id": 7, "file_name": "a.png", "height": H, "width": W}],
        "annotations": [
            {"id": 4, "image_id": 7, "category_id": 1, "segmentation": rle(A), "visible_mask": rle(A),
             "bbox": [2, 2, 10, 8], "iscrowd": 0},
            {"id": 5, "image_id": 7, "category_id": 2, "segmentation": rle(B_AMODAL),
             "visible_mask": rle(B_VISIBLE), "invisible_mask": rle(B_INVISIBLE), "bbox": [8, 5, 12, 10]},
        ],
        "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "cup"}],
    }


def write(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def load_error(path, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        load_annotations(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    return message


def set_path(data, path, value):
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


ANN5 = ("annotations", 1)
BAD_ANNOTATION_FIELDS = [
    # (where, value, what the message must say)
    ((*ANN5, "category_id"), float("inf"), "category id inf is not an integer"),
    ((*ANN5, "category_id"), float("-inf"), "category id -inf"),
    ((*ANN5, "category_id"), float("nan"), "category id nan"),
    ((*ANN5, "category_id"), 1.5, "category id 1.5 is not an integer"),
    ((*ANN5, "category_id"), [1], "category id [1] is not an integer"),
    ((*ANN5, "category_id"), "a\nb", r"category id 'a\nb'"),
    ((*ANN5, "image_id"), [7], "image [7], annotation 5: image id [7] is not an integer"),
    ((*ANN5, "image_id"), {"id": 7}, "image id {'id': 7} is not an integer"),
    ((*ANN5, "image_id"), "7", "image id '7' is not an integer"),
    ((*ANN5, "id"), [5], "annotation [5]: annotation id [5] is not an integer"),
    ((*ANN5, "id"), 5.5, "annotation id 5.5 is not an integer"),
    ((*ANN5, "iscrowd"), "yes", "annotation 5: iscrowd 'yes' is not 0 or 1"),
    ((*ANN5, "iscrowd"), 2, "iscrowd 2"),
    ((*ANN5, "bbox"), [8, 5, float("nan"), 10],
     "annotation 5: 'bbox': box [8, 5, nan, 10] holds a non-finite"),
    ((*ANN5, "bbox"), [8, 5, 12], "'bbox': box must be [x, y, width, height]"),
    ((*ANN5, "segmentation", "counts"), "", "annotation 5: 'segmentation': counts: empty string"),
    ((*ANN5, "segmentation", "counts"), [5, 5],
     "'segmentation': counts: runs add up to 10 pixels, not height x width = 480"),
    ((*ANN5, "visible_mask", "counts"), [8000, 8000], "'visible_mask': counts: runs add up to 16000"),
    ((*ANN5, "visible_mask", "counts"), "0P", "'visible_mask': counts: the string ends inside a run"),
    ((*ANN5, "visible_mask", "counts"), "5é", "non-ASCII character 'é'"),
    ((*ANN5, "visible_mask", "counts"), [-5, 485], "'visible_mask': counts: run 0 is -5"),
    ((*ANN5, "visible_mask", "counts"), 7, "counts must be a string or a list"),
    ((*ANN5, "invisible_mask", "size"), [float("nan"), W], "'invisible_mask': size must hold two integers"),
    ((*ANN5, "invisible_mask", "size"), [float("inf"), W], "size must hold two integers"),
    ((*ANN5, "invisible_mask", "size"), "20x24", "size must be [height, width]"),
    ((*ANN5, "invisible_mask", "size"), [100000, 100000],
     "RLE size [100000, 100000] disagrees with image size"),
    ((*ANN5, "segmentation"), [[1, 1, 9, 1, float("nan"), 9]], "'segmentation': polygon 0: value 4 is nan"),
    ((*ANN5, "segmentation"), [[1, 1, 9, 1, 2 ** 63, 9]], "'segmentation': polygon 0 point 2"),
    ((*ANN5, "segmentation"), [[1, 1, 9, 1, float("inf"), 9]], "value 4 is inf, not a finite number"),
    ((*ANN5, "segmentation"), "abc", "'segmentation': unsupported segmentation type str"),
    (("images", 0, "height"), -20, "bad.json, image 7: image size must be positive"),
    (("images", 0, "height"), 0, "image 7: image size must be positive"),
    (("images", 0, "height"), 20_000_000, "image 7: image size 20000000 x 24 = 480000000 pixels exceeds"),
    (("images", 0, "height"), float("nan"), "image 7: image size must be integers, got height nan"),
    (("images", 0, "width"), "wide", "width 'wide'"),
    (("images", 0, "id"), "abc", "bad.json: image id 'abc' is not an integer"),
    (("images", 0, "id"), [7], "image id [7] is not an integer"),
    (("images", 0, "file_name"), "a\x00.png", "image 7: file_name 'a\\x00.png' contains a NUL character"),
    (("images", 0, "file_name"), ["a.png"], "file_name ['a.png'] is not a string"),
    (("categories", 0, "id"), float("nan"), "bad.json: category id nan is not an integer"),
]


@pytest.mark.parametrize("where, value, message", BAD_ANNOTATION_FIELDS,
                         ids=[f"{'.'.join(map(str, w[-2:]))}={str(v)[:20]}"
                              for w, v, _ in BAD_ANNOTATION_FIELDS])
def test_bad_field_is_one_line_naming_where(tmp_path, where, value, message):
    data = base_file()
    set_path(data, where, value)
    text = load_error(write(tmp_path, data))
    assert text.startswith(str(tmp_path / "bad.json"))
    assert message in text
    if where[0] == "annotations":
        assert "image" in text and "annotation" in text


def test_huge_image_size_refused_before_allocating(tmp_path):
    data = base_file()
    data["images"][0].update(height=100000, width=100000)
    for ann in data["annotations"]:
        for key in ("segmentation", "visible_mask", "invisible_mask"):
            if key in ann:
                ann[key] = {"size": [100000, 100000], "counts": [10 ** 10]}
    assert "exceeds the maximum of 268435456" in load_error(write(tmp_path, data))


def test_valid_base_file_loads(tmp_path):
    # guards the table above: each case differs from a file that loads
    record = load_annotations(write(tmp_path, base_file(), "good.json")).images[0]
    assert [a.id for a in record.annotations] == [4, 5]
    assert np.array_equal(record.annotations[1].invisible_mask(), B_INVISIBLE)


def test_nan_literals_in_json_are_refused_by_field(tmp_path):
    text = json.dumps(base_file()).replace('"category_id": 2', '"category_id": NaN')
    path = tmp_path / "nan.json"
    path.write_text(text, encoding="utf-8")
    assert "image 7, annotation 5: category id nan is not an integer" in load_error(path)
    path.write_text(json.dumps(base_file()).replace('"height": 20', '"height": Infinity'), encoding="utf-8")
    assert "image 7: image size must be integers, got height inf" in load_error(path)


# ---- COCOA raw --------------------------------------------------------------------------------------

def raw_record():
    return {"image_id": 5, "id": 1, "height": H, "width": W, "regions": [
        {"segmentation": [2, 2, 12, 2, 12, 10, 2, 10], "name": "box", "order": 1, "isStuff": 0},
        {"segmentation": [8, 5, 20, 5, 20, 15, 8, 15], "name": "cup", "order": 2, "isStuff": 0,
         "visible_mask": rle(B_VISIBLE), "invisible_mask": rle(B_INVISIBLE)}]}


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(regions={"a": 1}), "image 5: 'regions' must be a list, got {'a': 1}"),
    (lambda r: r["regions"].append("region"),
     "annotation 3: region 2 is not an object with a 'segmentation'"),
    (lambda r: r.update(image_id="abc"), "raw.json: image_id 'abc' is not an integer"),
    (lambda r: r.update(image_id=float("nan")), "image_id nan is not an integer"),
    (lambda r: r["regions"][1]["visible_mask"].update(size=[float("nan"), W]),
     "image 5: region 1 'visible_mask' size: image size must be integers, got height nan"),
    (lambda r: r["regions"][1]["visible_mask"].update(size=[100000, 100000]), "exceeds the maximum"),
    (lambda r: r["regions"][1]["invisible_mask"].update(counts=""),
     "annotation 2 (region 1, order 2): 'invisible_mask': counts: empty string"),
    (lambda r: r["regions"][0].update(segmentation=[2, 2, 12, float("inf"), 12, 10]),
     "'segmentation': polygon 0"),
    (lambda r: r["regions"][0].update(order="x\ny", segmentation=[1, 2]), r"(region 0, order 'x\ny'): "),
])
def test_bad_cocoa_raw_records(tmp_path, mutate, message):
    record = raw_record()
    mutate(record)
    text = load_error(write(tmp_path, record, "raw.json"))
    assert message in text


def test_cocoa_raw_record_loads(tmp_path):
    record = load_annotations(write(tmp_path, raw_record(), "raw.json")).images[0]
    assert np.array_equal(record.annotations[1].invisible_mask(), B_INVISIBLE)


# ---- JSON: encodings, nesting, numbers ---------------------------------------------------------------

def test_utf16_and_other_encodings_are_one_line_errors(tmp_path):
    text = json.dumps(base_file())
    path = tmp_path / "enc.json"
    path.write_bytes(text.encode("utf-16"))  # with a byte-order mark
    assert "UTF-16 or UTF-32 encoded (byte-order mark); save it as UTF-8" in load_error(path)
    path.write_bytes(text.encode("utf-16-le"))  # without one
    assert "NUL byte at offset 1" in load_error(path)
    path.write_bytes(text.replace("a.png", "\u00e9.png").encode("latin-1"))
    message = load_error(path)
    assert "not valid UTF-8: byte 0xe9 at offset" in message and str(path) in message
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # a UTF-8 byte-order mark is fine
    assert load_annotations(path).images[0].image_id == 7


def test_nesting_limit_both_sides(tmp_path):
    from orcnn_core.data.io import read_json

    path = tmp_path / "deep.json"
    path.write_text("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert read_json(path) is not None
    path.write_text("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
    expected = f"nested more than {MAX_JSON_DEPTH} levels deep (at byte offset {MAX_JSON_DEPTH})"
    assert expected in load_error(path)
    path.write_text("[" * 100000 + "]" * 100000)
    assert "nested more than" in load_error(path)
    # brackets inside strings, escaped quotes included, do not count
    path.write_text(json.dumps(["[" * 500, '\\"' + "{" * 300, {"k\\": "[[["}]))
    assert read_json(path)[0] == "[" * 500


def test_number_too_long_and_malformed(tmp_path):
    path = tmp_path / "long.json"
    path.write_text('{"images": [{"id": ' + "1" * 5000 + "}]}")
    assert "malformed JSON" in load_error(path)
    path.write_text('{"images": [')
    assert "malformed JSON: Expecting value (line 1, column 13)" in load_error(path)


# ---- invisible masks: consistent, or an error, or repaired on request ----------------------------------

@pytest.mark.parametrize("invisible", [
    B_INVISIBLE | rect(16, 18, 0, 2),   # pixels outside the amodal mask
    B_INVISIBLE & ~rect(5, 7, 8, 12),   # pixels missing
    B_AMODAL,                           # invisible = amodal (the synth mutation of issue 11)
])
def test_inconsistent_invisible_mask_is_an_error_or_repaired(tmp_path, invisible):
    data = base_file()
    data["annotations"][1]["invisible_mask"] = rle(invisible)
    path = write(tmp_path, data)
    extra = int((invisible & ~B_INVISIBLE).sum())
    missing = int((B_INVISIBLE & ~invisible).sum())
    message = load_error(path)
    assert (f"image 7, annotation 5: 'invisible_mask': not exactly amodal AND NOT visible ({extra} pixels "
            f"too many, {missing} missing)") in message
    assert "--repair" in message
    repaired = load_annotations(path, repair=True).images[0].annotations[1]
    assert np.array_equal(repaired.invisible_mask(), B_AMODAL & ~B_VISIBLE)
    assert np.array_equal(repaired.visible_mask(), B_VISIBLE)


def test_invisible_mask_on_an_unoccluded_annotation_is_an_error(tmp_path):
    data = base_file()
    data["annotations"][0]["invisible_mask"] = rle(rect(3, 4, 3, 4))  # visible == amodal: nothing hidden
    assert "annotation 4: 'invisible_mask': not exactly amodal AND NOT visible (1 pixels too many" in \
        load_error(write(tmp_path, data))
    empty = base_file()
    empty["annotations"][0]["invisible_mask"] = rle(np.zeros((H, W), bool))
    assert load_annotations(write(tmp_path, empty, "empty.json")).images[0].annotations[0].invisible_rle


def test_invisible_only_outside_amodal_is_an_error(tmp_path):
    # d2sa: invisible given without visible; visible = amodal - invisible needs invisible inside amodal
    data = base_file()
    ann = data["annotations"][1]
    del ann["visible_mask"]
    ann["invisible_mask"] = rle(B_INVISIBLE | rect(0, 1, 0, 1))
    assert "annotation 5: 'invisible_mask': not exactly" in load_error(write(tmp_path, data), format="d2sa")


def test_convert_repair_flag_recomputes_invisible(tmp_path, capsys):
    data = base_file()
    data["annotations"][1]["invisible_mask"] = rle(B_AMODAL)
    src = write(tmp_path, data, "in.json")
    out = tmp_path / "out.json"
    assert cli.main(["convert", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("orcnn convert: error: ") and "'invisible_mask'" in err[0]
    assert cli.main(["convert", str(src), "--out", str(out), "--repair"]) == 0
    written = json.loads(out.read_text())
    invisible = written["annotations"][1]["invisible_mask"]
    assert invisible["counts"] == rle(B_INVISIBLE)["counts"]


@pytest.mark.parametrize("command", [["stats"], ["eval", "--results", "RESULTS", "--gt"]])
def test_stats_and_eval_take_repair_too(tmp_path, capsys, command):
    data = base_file()
    data["annotations"][1]["invisible_mask"] = rle(B_AMODAL)
    src = write(tmp_path, data, "gt.json")
    (tmp_path / "none.json").write_text("[]")
    argv = [a.replace("RESULTS", str(tmp_path / "none.json")) for a in command] + [str(src)]
    assert cli.main(argv) == 2
    assert "'invisible_mask'" in capsys.readouterr().err
    assert cli.main([*argv, "--repair"]) == 0


# ---- strict JSON output ------------------------------------------------------------------------------------

def _refuse_constant(name):
    raise AssertionError(f"non-standard JSON literal {name} written")


def test_convert_never_writes_nan_and_drops_non_finite_extras(tmp_path, caplog):
    data = base_file()
    data["annotations"][1].update(occlude_rate=float("nan"), name="cup",
                                  extra={"score": float("inf"), "ok": 3, "list": [1, float("-inf")],
                                         "nested": {"a": 1}})
    src = write(tmp_path, data, "in.json")
    out = tmp_path / "out.json"
    with caplog.at_level(logging.WARNING):
        assert cli.main(["convert", str(src), "--out", str(out)]) == 0
    written = json.loads(out.read_text(), parse_constant=_refuse_constant)
    extra = written["annotations"][1]["extra"]
    assert extra == {"name": "cup", "ok": 3}
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "occlude_rate (1x)" in warning and "score (1x)" in warning and "list (1x)" in warning


# ---- results files ---------------------------------------------------------------------------------------

def _ground_truth():
    anns = [AmodalAnnotation.from_masks(4, 1, A, A), AmodalAnnotation.from_masks(5, 2, B_AMODAL, B_VISIBLE)]
    return [ImageRecord(7, "a.png", H, W, anns)], [{"id": 1, "name": "box"}, {"id": 2, "name": "cup"}]


def _results():
    return [{"image_id": 7, "file_name": "a.png", "category_id": 1, "score": 0.9, "segmentation": rle(A),
             "visible_mask": rle(A), "invisible_mask": rle(np.zeros((H, W), bool)), "bbox": [2, 2, 10, 8]},
            {"image_id": 7, "file_name": "a.png", "category_id": 2, "score": 0.8,
             "segmentation": rle(B_AMODAL), "visible_mask": rle(B_VISIBLE),
             "invisible_mask": rle(B_INVISIBLE)}]


@pytest.mark.parametrize("key, value, message", [
    ("segmentation", {"size": [H, W], "counts": ""}, "bad segmentation: counts: empty string"),
    ("segmentation", {"size": [H, W], "counts": [5, 5]}, "bad segmentation: counts: runs add up to 10"),
    ("visible_mask", {"size": [H, W], "counts": [8000, 8000]},
     "bad visible_mask: counts: runs add up to 16000"),
    ("visible_mask", {"size": [H, W], "counts": "0P"}, "bad visible_mask: counts: the string ends inside"),
    ("invisible_mask", {"size": [H, W], "counts": "o" * 40}, "bad invisible_mask: counts: the string ends"),
    ("invisible_mask", {"size": [H, W], "counts": "5A"}, "run 1 is negative"),
    ("invisible_mask", {"size": [float("nan"), W], "counts": "0"}, "size must hold two integers"),
    ("segmentation", [[1, 1, 9, 1, float("nan"), 9]], "bad segmentation: polygon 0: value 4 is nan"),
    ("bbox", [1, 2, float("nan"), 4], "bad bbox: box [1, 2, nan, 4] holds a non-finite"),
    ("visible_bbox", "box", "bad visible_bbox: box must be"),
    ("category_id", float("inf"), "category_id inf is not a ground-truth category"),
])
def test_invalid_results_entries_are_refused_not_scored(key, value, message):
    images, categories = _ground_truth()
    results = _results()
    assert AmodalEvaluator(images, categories).evaluate(copy.deepcopy(results))["all"]["AP_A"] == \
        pytest.approx(100.0)
    results[1][key] = value
    with pytest.raises(ResultsError) as info:
        AmodalEvaluator(images, categories).evaluate(results, source="res.json")
    text = str(info.value)
    assert text.startswith("res.json: entry 1 (image_id 7") and message in text and "\n" not in text


def test_results_file_encoding_and_nesting(tmp_path):
    path = tmp_path / "res.json"
    path.write_bytes(json.dumps(_results()).encode("utf-16"))
    with pytest.raises(ResultsError, match="res.json: the file is UTF-16"):
        load_results(path)
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ResultsError, match="nested more than 100 levels"):
        load_results(path)


@pytest.mark.parametrize("command", ["stats", "convert", "eval-gt", "eval-results"])
def test_cli_bad_input_is_exit_2_with_one_line(tmp_path, capsys, command):
    good_gt = write(tmp_path, base_file(), "gt.json")
    good_results = write(tmp_path, _results(), "res.json")
    bad = tmp_path / "bad.json"
    if command == "eval-results":
        bad.write_text(json.dumps(_results()).replace('"score": 0.8', '"score": NaN'))
    else:
        data = base_file()
        data["annotations"][1]["visible_mask"]["counts"] = [5, 5]
        bad.write_text(json.dumps(data))
    argv = {"stats": ["stats", str(bad)], "convert": ["convert", str(bad), "--out", str(tmp_path / "o.json")],
            "eval-gt": ["eval", "--gt", str(bad), "--results", str(good_results)],
            "eval-results": ["eval", "--gt", str(good_gt), "--results", str(bad)]}[command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"orcnn {argv[0]}: error: ") and "bad.json" in err[0]
    assert not (tmp_path / "o.json").exists()


def test_modal_coco_reader_validates_masks(tmp_path):
    from orcnn_core.data.modal import load_modal_coco

    data = base_file()
    for ann in data["annotations"]:
        ann.pop("visible_mask")
        ann.pop("invisible_mask", None)
    path = write(tmp_path, data, "modal.json")
    assert [i.id for i in load_modal_coco(path).instances[7]] == [4, 5]
    data["annotations"][1]["segmentation"] = [[1, 1, 9, 1, 2 ** 63, 9]]
    with pytest.raises(DatasetError, match=r"modal\.json, image 7, annotation 5: 'segmentation': polygon 0 "):
        load_modal_coco(write(tmp_path, data, "modal.json"))
    data["annotations"][1]["segmentation"] = {"size": [H, W], "counts": [5, 5]}
    with pytest.raises(DatasetError, match="annotation 5: 'segmentation': counts: runs add up to 10"):
        load_modal_coco(write(tmp_path, data, "modal.json"))

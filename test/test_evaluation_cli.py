"""``orcnn eval``: the table, the JSON layout, the plots and the error exit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orcnn_core import masks as mask_ops
from orcnn_core.cli import main
from orcnn_core.evaluation import AmodalEvaluator, evaluate_files
from orcnn_core.structures import AmodalAnnotation, ImageRecord

H, W = 20, 28
CATEGORIES = [{"id": 1, "name": "box"}, {"id": 2, "name": "can"}]
METRIC_KEYS = {f"{p}_{k}{s}" for k in ("AV", "A", "V") for p, s in
               (("AP", ""), ("AP", "50"), ("AP", "75"), ("AR", ""))}


def _rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _records() -> list:
    """Two images of three z-ordered boxes (the last on top)."""
    images, ann_id = [], 1
    layouts = [[(1, 9, 1, 12, 1), (4, 14, 8, 20, 2), (10, 19, 15, 27, 1)],
               [(0, 10, 0, 10, 2), (5, 15, 6, 18, 1), (2, 8, 14, 26, 2)]]
    for image_id, layout in enumerate(layouts, start=7):
        amodal = [_rect(*box[:4]) for box in layout]
        anns = []
        for i, (mask, box) in enumerate(zip(amodal, layout)):
            above = np.logical_or.reduce(amodal[i + 1:]) if i + 1 < len(amodal) else np.zeros((H, W), bool)
            anns.append(AmodalAnnotation.from_masks(ann_id, box[4], mask, mask & ~above))
            ann_id += 1
        images.append(ImageRecord(image_id, f"images/{image_id}.png", H, W, anns))
    return images


def _write_project_gt(path, images) -> None:
    """The project's annotation format (docs/architecture.md), written by hand."""
    anns = []
    for im in images:
        for a in im.annotations:
            anns.append({"id": a.id, "image_id": im.image_id, "category_id": a.category_id,
                         "segmentation": a.amodal_rle, "visible_mask": a.visible_rle,
                         "invisible_mask": a.invisible_rle, "bbox": mask_ops.xyxy_to_xywh(a.amodal_box),
                         "visible_bbox": mask_ops.xyxy_to_xywh(a.visible_box),
                         "occlude_rate": a.occlusion_rate, "area": a.amodal_area, "iscrowd": 0})
    data = {"info": {"format": "orcnn", "version": 1, "image_root": "."},
            "images": [{"id": im.image_id, "file_name": im.file_name, "height": H, "width": W}
                       for im in images],
            "annotations": anns, "categories": CATEGORIES}
    path.write_text(json.dumps(data), encoding="utf-8")


def _results(images, with_visible: bool = True, shift: int = 0) -> list:
    out = []
    for im in images:
        for n, a in enumerate(im.annotations):
            amodal = np.roll(a.amodal_mask(), shift, axis=1)
            entry = {"image_id": im.image_id, "file_name": im.file_name, "category_id": a.category_id,
                     "score": 0.9 - 0.1 * n, "segmentation": mask_ops.encode(amodal)}
            if with_visible:
                entry["visible_mask"] = mask_ops.encode(np.roll(a.visible_mask(), shift, axis=1))
                entry["invisible_mask"] = mask_ops.encode(np.roll(a.invisible_mask(), shift, axis=1))
            out.append(entry)
    return out


@pytest.fixture()
def files(tmp_path):
    images = _records()
    gt = tmp_path / "gt.json"
    _write_project_gt(gt, images)
    paths = {}
    variants = (("perfect", _results(images)), ("amodal_only", _results(images, with_visible=False)),
                ("shifted", _results(images, shift=2)))
    for name, results in variants:
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(results), encoding="utf-8")
    return images, gt, paths


def _row(out: str, name: str) -> list:
    return next(line for line in out.splitlines() if line.startswith(name + " ")).split()


def test_eval_prints_table_and_writes_json_and_plots(files, tmp_path, capsys):
    images, gt, paths = files
    out_json, plots = tmp_path / "out" / "metrics.json", tmp_path / "plots"
    rc = main(["eval", "--gt", str(gt), "--results", str(paths["perfect"]), str(paths["amodal_only"]),
               str(paths["shifted"]), "--json", str(out_json), "--plots", str(plots)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "AP_IV@0.5 diff" in out and "occluded" in out

    payload = json.loads(out_json.read_text())
    assert isinstance(payload, list) and len(payload) == 3
    for summary in payload:
        assert set(summary["all"]) == METRIC_KEYS and set(summary["occluded"]) == METRIC_KEYS
        assert {"AP_IV50", "AP_IV50_diff", "per_category", "notes"} <= set(summary)
        assert set(summary["per_category"]) == {"box", "can"}
    perfect, amodal_only, shifted = payload
    assert _row(out, "perfect") == ["perfect", "|"] + ["100.0"] * 3 + ["|"] + ["100.0"] * 3 + \
        ["|", "100.0", "|", "100.0"]
    assert amodal_only["AP_IV50"] is None and _row(out, "amodal_only")[-3:] == ["-", "|", "-"]
    assert any("visible_mask" in note for note in amodal_only["notes"])
    assert "note: " in out and "amodal_only.json" in out

    # The printed row is the JSON rounded to one decimal, in the paper's column order.
    row = [v for v in _row(out, "shifted")[1:] if v != "|"]
    values = [shifted[s][k] for s in ("all", "occluded") for k in ("AP_AV", "AP_A", "AP_V")]
    values += [shifted["AP_IV50"], shifted["AP_IV50_diff"]]
    assert row == [f"{v:.1f}" for v in values]
    assert 0 < shifted["all"]["AP_A"] < 100

    # Same numbers as the evaluator on the in-memory records.
    direct = AmodalEvaluator(images, CATEGORIES).evaluate(json.loads(paths["shifted"].read_text()))
    assert direct["all"] == pytest.approx(shifted["all"])

    pngs = sorted(p.name for p in plots.iterdir())
    assert pngs == sorted(f"{n}_{s}_pr.png" for n in ("perfect", "amodal_only", "shifted")
                          for s in ("all", "occluded"))
    assert all((plots / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_eval_single_file_writes_one_object(files, tmp_path, capsys):
    _, gt, paths = files
    out_json = tmp_path / "one.json"
    assert main(["eval", "--gt", str(gt), "--results", str(paths["shifted"]), "--json", str(out_json)]) == 0
    payload = json.loads(out_json.read_text())
    assert isinstance(payload, dict)
    assert payload["all"] == pytest.approx(evaluate_files(gt, [paths["shifted"]])[0]["all"])
    capsys.readouterr()


def test_eval_bad_results_exit_2_naming_the_file(files, tmp_path, capsys):
    images, gt, _ = files
    broken = tmp_path / "broken.json"
    broken.write_text("[{", encoding="utf-8")
    assert main(["eval", "--gt", str(gt), "--results", str(broken)]) == 2
    assert "broken.json" in capsys.readouterr().err
    unknown = tmp_path / "unknown.json"
    results = _results(images)
    results[3]["image_id"], results[3]["file_name"] = 12345, "nowhere.png"
    unknown.write_text(json.dumps(results), encoding="utf-8")
    assert main(["eval", "--gt", str(gt), "--results", str(unknown)]) == 2
    err = capsys.readouterr().err
    assert "unknown.json" in err and "entry 3" in err and "12345" in err

"""`orcnn demo` and `orcnn predict` end to end with the bundled demo model."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from orcnn_core.cli import main as cli_main
from orcnn_core.data import load_annotations, synth
from orcnn_core.engine import predictor as predictor_module
from orcnn_core.errors import WeightsError
from orcnn_core.evaluation import AmodalEvaluator
from orcnn_core.model.weights import read_sidecar

RESULT_KEYS = {"image_id", "file_name", "category_id", "score", "segmentation", "visible_mask",
               "invisible_mask", "bbox", "visible_bbox",
               # the published occlusion graph (docs/evaluation.md, "Graph fields")
               "instance_index", "occluder_indices", "layer", "pick_rank"}


def test_bundled_model_is_small_and_loadable():
    weights = predictor_module.bundled_weights()
    assert weights.stat().st_size <= 25 * 2**20
    config = read_sidecar(weights)
    assert config.variant == "orcnn" and len(config.class_names) == config.num_classes


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--synth", "1", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    overlay = cv2.imread(str(out / "overlays" / "000000.png"))
    scene = cv2.imread(str(out / "images" / "000000.png"))
    assert scene.shape == (240, 320, 3)
    # Overlays of small images are drawn at twice the size so the labels stay legible.
    assert overlay is not None and overlay.shape == (480, 640, 3)
    upscaled_scene = cv2.resize(scene, (640, 480), interpolation=cv2.INTER_LINEAR)
    assert np.abs(overlay.astype(int) - upscaled_scene.astype(int)).max() > 0, "nothing was drawn"
    results = json.loads((out / "results.json").read_text())
    assert results, "the bundled model found nothing in a synthetic scene"
    assert all(set(r) == RESULT_KEYS and r["file_name"] == "000000.png" for r in results)
    # One printed line per instance, naming its class, score and occlusion.
    names = read_sidecar(predictor_module.bundled_weights()).class_names
    instance_lines = [line for line in printed.splitlines() if line.strip().startswith("#")]
    assert len(instance_lines) == len(results)
    assert all(any(name in line for name in names) and "occluded" in line for line in instance_lines)
    assert "pick order" in printed


def test_demo_without_bundled_weights_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(predictor_module, "BUNDLED_WEIGHTS", tmp_path / "gone" / "demo_small.safetensors")
    assert cli_main(["demo", "--synth", "1", "--out", str(tmp_path / "o")]) == 2
    assert "bundled demo model is missing" in capsys.readouterr().err


def test_predict_folder_with_ground_truth_ids_and_a_corrupt_file(tmp_path):
    dataset = synth.synthesize(tmp_path / "val", images=2, seed=4242, classes=6, size=(320, 240))
    images = tmp_path / "val" / "images"
    (images / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "results.json"
    viz = tmp_path / "viz"
    gt = tmp_path / "val" / "annotations.json"
    assert cli_main(["predict", "--images", str(images), "--out", str(out), "--gt", str(gt),
                     "--viz", str(viz), "--batch-size", "2", "--device", "cpu"]) == 0
    results = json.loads(out.read_text())
    ids = {r.file_name: r.image_id for r in dataset.images}
    assert results and all(set(r) == RESULT_KEYS for r in results)
    assert {r["file_name"] for r in results} <= set(ids)
    assert all(r["image_id"] == ids[r["file_name"]] for r in results)
    assert sorted(p.name for p in viz.iterdir()) == sorted(ids)
    # What predict writes is what the evaluator reads.
    annotations = load_annotations(gt)
    metrics = AmodalEvaluator(annotations.images, annotations.categories).evaluate(results)
    assert metrics["all"]["AP_AV"] is not None

    # Without --gt: ids are the images' positions in the sorted listing, from 1.
    assert cli_main(["predict", "--images", str(images), "--out", str(out), "--device", "cpu"]) == 0
    by_name = {r["file_name"]: r["image_id"] for r in json.loads(out.read_text())}
    assert by_name and all(by_name[name] == {"000000.png": 1, "000001.png": 2}[name] for name in by_name)


def test_load_predictor_defaults_to_the_bundled_model(tmp_path, monkeypatch):
    predictor = predictor_module.load_predictor(device="cpu", score_threshold=0.3)
    assert predictor.score_threshold == 0.3 and predictor.device.type == "cpu"
    assert predictor.class_names == read_sidecar(predictor_module.bundled_weights()).class_names
    monkeypatch.setattr(predictor_module, "BUNDLED_WEIGHTS", tmp_path / "gone" / "demo_small.safetensors")
    with pytest.raises(WeightsError, match="bundled demo model is missing"):
        predictor_module.load_predictor()
    with pytest.raises(WeightsError, match="not found"):
        predictor_module.load_predictor(tmp_path / "nothing.safetensors", device="cpu")

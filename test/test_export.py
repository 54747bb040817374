"""Export: TorchScript and ONNX outputs match the Predictor's within the stated tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orcnn_core.cli import main as cli_main
from orcnn_core.data import synth
from orcnn_core.engine.export import EXPORT_ATOL, ExportedModel, export_model, paste_masks_grid
from orcnn_core.engine.predictor import Predictor
from orcnn_core.model import build_model, model_config_from_dict, save_weights
from orcnn_core.model.rcnn import paste_mask_channels

WIDTH, HEIGHT = 96, 64
TINY_MODEL = {"num_classes": 2, "backbone": "mobilenet_v3_fpn", "backbone_width_mult": 0.25, "norm": "batch",
              "fpn_channels": 16, "anchor_sizes": [8, 16, 32, 64], "rpn_pre_nms_top_n_test": 100,
              "rpn_post_nms_top_n_test": 40, "box_representation_size": 32, "mask_head_channels": 8,
              "mask_roi_size": 7, "min_size": 64, "max_size": 96, "detections_per_image": 30,
              "score_threshold": 0.0}


def scenes(count: int) -> list[np.ndarray]:
    return [synth.generate_scene(np.random.default_rng([77, i]), classes=2, size=(WIDTH, HEIGHT)).image
            for i in range(count)]


@pytest.fixture(scope="module")
def tiny_predictor():
    torch.manual_seed(0)
    cfg = model_config_from_dict(TINY_MODEL)
    model = build_model(cfg).eval()
    # A score threshold in the middle of the random model's scores, so that the number of
    # detections differs between images (the exported graph must not freeze it).
    probe = Predictor(model, cfg, device="cpu", score_threshold=0.0)
    scores = np.concatenate([p.scores for p in probe.predict_batch(scenes(2))])
    threshold = float(np.median(scores))
    return Predictor(model, cfg, device="cpu", score_threshold=threshold)


def assert_matches(exported: dict, prediction) -> None:
    assert exported["boxes"].shape[0] == len(prediction)
    order = np.argsort(-exported["scores"], kind="stable")  # the Predictor lists by score

    def pick(name: str) -> np.ndarray:
        return exported[name][order]

    np.testing.assert_allclose(pick("boxes"), prediction.amodal_boxes, atol=EXPORT_ATOL["boxes"])
    np.testing.assert_allclose(pick("scores"), prediction.scores, atol=EXPORT_ATOL["scores"])
    np.testing.assert_array_equal(pick("labels"), prediction.labels)
    for name in ("amodal_masks", "visible_masks", "invisible_masks"):
        masks = getattr(prediction, name)
        np.testing.assert_allclose(pick(name), masks, atol=EXPORT_ATOL["masks"])


@pytest.mark.parametrize("fmt,suffix", [("torchscript", ".pt"), ("onnx", ".onnx")])
def test_export_matches_predictor(tmp_path, tiny_predictor, fmt, suffix):
    path = export_model(tiny_predictor.model, tmp_path / f"model{suffix}", fmt, height=HEIGHT, width=WIDTH,
                        score_threshold=tiny_predictor.score_threshold)
    exported = ExportedModel(path)
    counts = set()
    for image in scenes(3):  # other images than the tracing example
        prediction = tiny_predictor.predict_batch([image], return_probabilities=True)[0]
        out = exported(image)
        assert_matches(out, prediction)
        counts.add(len(prediction))
    assert len(counts) > 1, f"all images gave {counts} detections: the test cannot see frozen shapes"


def test_traceable_paste_equals_model_paste():
    torch.manual_seed(1)
    masks = torch.rand(5, 3, 14, 14)
    boxes = torch.tensor([[3.2, 4.7, 40.1, 30.0], [-5.0, -3.0, 20.0, 12.5], [50.0, 20.0, 95.9, 63.9],
                          [10.0, 10.0, 10.4, 10.3], [0.0, 0.0, 96.0, 64.0]])
    expected = paste_mask_channels(masks, boxes, (64, 96))
    got = paste_masks_grid(masks, boxes, 64, 96)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_export_command(tmp_path, tiny_predictor):
    weights = save_weights(tiny_predictor.model, tiny_predictor.config, tmp_path / "tiny.safetensors")
    out = tmp_path / "tiny.pt"
    assert cli_main(["export", "--weights", str(weights), "--format", "torchscript", "--out", str(out),
                     "--size", f"{WIDTH}x{HEIGHT}"]) == 0
    image = scenes(1)[0]
    result = ExportedModel(out)(image)
    assert set(result) == {"boxes", "labels", "scores", "amodal_masks", "visible_masks", "invisible_masks"}
    assert result["amodal_masks"].shape[1:] == (HEIGHT, WIDTH)
    with pytest.raises(SystemExit):
        cli_main(["export", "--weights", str(weights), "--format", "tflite"])
    assert cli_main(["export", "--weights", str(tmp_path / "missing.safetensors")]) == 2

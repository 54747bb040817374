"""Predictor: numpy images in, Prediction out, for every variant; options and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orcnn_core import masks as mask_ops
from orcnn_core.engine import Predictor
from orcnn_core.engine.predictor import MAX_IMAGE_SIDE
from orcnn_core.errors import ConfigError, InputError
from orcnn_core.model import build_model, save_weights, tiny_config
from orcnn_core.structures import Prediction

torch.set_num_threads(1)
VARIANTS = ["orcnn", "no_iv", "no_v", "independent", "arcnn", "mrcnn", "merged"]


def image(seed: int = 0, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 40, np.uint8)
    img[8:30, 10:40] = rng.integers(0, 255, 3, dtype=np.uint8)
    img[20:44, 30:60] = rng.integers(0, 255, 3, dtype=np.uint8)
    return img


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    cfg = tiny_config(num_classes=2, class_names=["cup", "box"], category_ids=[7, 11])
    return Predictor(build_model(cfg), cfg, device="cpu")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_gives_image_sized_bool_masks(variant):
    torch.manual_seed(0)
    predictor = Predictor.from_config(tiny_config(variant=variant), device="cpu")
    prediction = predictor(image())
    assert isinstance(prediction, Prediction) and prediction.image_size == (48, 64)
    n = len(prediction)
    assert n > 0
    assert prediction.amodal_boxes.shape == (n, 4) and prediction.amodal_boxes.dtype == np.float32
    assert prediction.visible_boxes.shape == (n, 4) and prediction.visible_boxes.dtype == np.float32
    assert prediction.scores.dtype == np.float32 and np.all(np.diff(prediction.scores) <= 0)
    assert prediction.labels.dtype == np.int64 and len(prediction.class_names) == n
    for masks in (prediction.amodal_masks, prediction.visible_masks, prediction.invisible_masks):
        assert masks.shape == (n, 48, 64) and masks.dtype == bool
    if variant in ("arcnn", "mrcnn"):
        assert np.array_equal(prediction.amodal_masks, prediction.visible_masks)
        assert not prediction.invisible_masks.any()


def test_labels_map_to_category_ids_and_names(predictor):
    prediction = predictor(image())
    names = {1: "cup", 2: "box"}
    ids = {1: 7, 2: 11}
    assert prediction.class_names == [names[k] for k in prediction.labels]
    assert prediction.category_ids.tolist() == [ids[k] for k in prediction.labels]
    assert predictor.class_names == ["cup", "box"] and predictor.device == torch.device("cpu")


def test_visible_box_is_the_tight_box_of_the_visible_mask(predictor):
    prediction = predictor(image(1))
    assert prediction.visible_masks.any()
    for box, mask in zip(prediction.visible_boxes, prediction.visible_masks):
        assert tuple(box.tolist()) == mask_ops.mask_box(mask)


def test_probabilities_threshold_and_invisible_by_difference(predictor):
    img = image(2)
    probs = predictor.predict_batch([img], return_probabilities=True)[0]
    binary = predictor(img)
    assert probs.amodal_masks.dtype == np.float32
    assert 0 <= probs.amodal_masks.min() and probs.amodal_masks.max() <= 1
    assert np.array_equal(binary.amodal_masks, probs.amodal_masks >= 0.5)
    assert np.array_equal(binary.invisible_masks, probs.invisible_masks >= 0.5)

    diff_probs = predictor.predict_batch([img], return_probabilities=True, invisible_by_difference=True)[0]
    np.testing.assert_allclose(diff_probs.invisible_masks,
                               np.clip(probs.amodal_masks - probs.visible_masks, 0, 1), atol=1e-6)
    diff = predictor(img, invisible_by_difference=True)
    assert np.array_equal(diff.invisible_masks, binary.amodal_masks & ~binary.visible_masks)


def test_score_threshold_and_max_instances(predictor):
    capped = Predictor(predictor.model, predictor.config, device="cpu", max_instances=3)(image())
    assert len(capped) == 3
    everything = predictor(image())
    threshold = float(np.median(everything.scores))
    strict = Predictor(predictor.model, predictor.config, device="cpu", score_threshold=threshold)(image())
    assert 0 < len(strict) < len(everything) and np.all(strict.scores >= threshold)


def test_bgr_input_gives_the_rgb_result(predictor):
    rgb = image(3)
    expected = predictor(rgb)
    bgr = Predictor(predictor.model, predictor.config, device="cpu", color_order="bgr")
    got = bgr(np.ascontiguousarray(rgb[:, :, ::-1]))
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-5)
    assert np.array_equal(got.amodal_masks, expected.amodal_masks)
    different = predictor(np.ascontiguousarray(rgb[:, :, ::-1]))  # the swap must matter at all
    assert not np.allclose(different.scores[:3], expected.scores[:3])


def test_batches_give_the_same_results_as_single_images(predictor):
    images = [image(4), image(5), image(6)]
    batched = predictor.predict_batch(images, batch_size=2)
    for img, got in zip(images, batched):
        single = predictor(img)
        np.testing.assert_allclose(got.scores, single.scores, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got.amodal_boxes, single.amodal_boxes, atol=1e-2)


def test_grayscale_and_rgba_are_converted(predictor):
    rgb = image(7)
    gray = rgb[:, :, 1].copy()
    np.testing.assert_allclose(predictor(gray).scores, predictor(np.repeat(gray[:, :, None], 3, 2)).scores)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(predictor(rgba).scores, predictor(rgb).scores)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8, 3), np.float32), "image 0: dtype must be uint8, got float32"),
    (np.zeros((2, 8, 8, 3), np.uint8), r"image 0: shape must be HxWx3.*\(2, 8, 8, 3\)"),
    (np.zeros((8, 8, 2), np.uint8), r"image 0: shape must be HxWx3.*\(8, 8, 2\)"),
    (np.zeros((0, 8, 3), np.uint8), "image 0: image is empty"),
    (np.zeros((1, MAX_IMAGE_SIDE + 1, 3), np.uint8), f"8193x1 exceeds the maximum .*{MAX_IMAGE_SIDE} per"),
    (np.zeros((4097, 4096, 3), np.uint8), "4096x4097 exceeds the maximum of 16777216 pixels"),
    (np.zeros((1, 3000, 3), np.uint8), "3000x1 is too thin: the model would see it as 96x0 pixels"),
    ([[1, 2, 3]], "image 0: expected a numpy array, got list"),
])
def test_bad_images_are_input_errors_naming_the_field(predictor, bad, message):
    with pytest.raises(InputError, match=message):
        predictor(bad)


def test_bad_image_in_a_batch_names_its_index(predictor):
    with pytest.raises(InputError, match="image 2: dtype"):
        predictor.predict_batch([image(), image(), image().astype(np.int32)])


def test_bad_options_are_config_errors(predictor):
    for kwargs, field in [({"color_order": "hsv"}, "color_order"), ({"device": "tpu"}, "device"),
                          ({"mask_threshold": 1.5}, "mask_threshold"),
                          ({"max_instances": 0}, "max_instances")]:
        with pytest.raises(ConfigError, match=field):
            Predictor(predictor.model, predictor.config, **kwargs)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            Predictor(predictor.model, predictor.config, device="cuda:0")


def test_half_on_cpu_runs_float32(predictor):
    half = Predictor(predictor.model, predictor.config, device="cpu", half=True)
    np.testing.assert_allclose(half(image()).scores, predictor(image()).scores)


def test_from_weights_and_from_config_yaml(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(variant="no_iv", class_names=["a", "b"])
    path = save_weights(build_model(cfg), cfg, tmp_path / "w")
    loaded = Predictor.from_weights(path, device="cpu", max_instances=2)
    assert loaded.config.variant == "no_iv" and loaded.class_names == ["a", "b"]
    assert len(loaded(image())) == 2
    yaml = tmp_path / "m.yaml"
    yaml.write_text("model:\n  variant: arcnn\n  backbone: mobilenet_v3_fpn\n  norm: group\n"
                    "  backbone_width_mult: 0.25\n  anchor_sizes: [16, 32, 64, 128]\n  num_classes: 3\n"
                    "  fpn_channels: 16\n  mask_head_channels: 8\n  box_representation_size: 16\n")
    from_yaml = Predictor.from_config(yaml, device="cpu")
    assert from_yaml.config.variant == "arcnn" and len(from_yaml.class_names) == 3


def _member_detection(score: float, threshold: float, h: int = 48, w: int = 64) -> dict[str, torch.Tensor]:
    """One hand-made member detection (rows 8-30, cols 10-40), dropped as the threshold would."""
    mask = torch.zeros(1, 1, h, w)
    mask[:, :, 8:30, 10:40] = 1.0
    keep = score >= threshold
    n = int(keep)
    return {"boxes": torch.tensor([[10.0, 8.0, 40.0, 30.0]])[:n], "labels": torch.tensor([1])[:n],
            "scores": torch.tensor([score])[:n], "amodal_masks": mask[:n], "visible_masks": mask[:n],
            "invisible_masks": torch.zeros_like(mask)[:n],
            "visible_boxes": torch.tensor([[10.0, 8.0, 40.0, 30.0]])[:n]}


def test_merged_members_are_not_thresholded_before_merging(monkeypatch):
    model = build_model(tiny_config(variant="merged"))
    amodal, modal = model.amodal_model, model.modal_model
    asked = []

    def member(score):
        def detect(images, score_threshold=None, detections_per_image=None):
            asked.append(score_threshold)
            return [_member_detection(score, score_threshold)]
        return detect

    monkeypatch.setattr(amodal, "detect", member(0.6))
    monkeypatch.setattr(modal, "detect", member(0.3))
    predictor = Predictor(model, model.config, device="cpu", score_threshold=0.4, max_instances=1)
    prediction = predictor(image())
    np.testing.assert_allclose(prediction.scores, [0.45], rtol=1e-6)  # (0.6 + 0.3) / 2
    assert asked == [model.config.score_threshold] * 2  # the members were not given the 0.4
    strict = Predictor(model, model.config, device="cpu", score_threshold=0.5)(image())
    assert len(strict) == 0  # the merged score 0.45 is below 0.5


def test_prediction_never_modifies_the_shared_model(predictor, monkeypatch):
    # Per-call limits used to be set on the RoI heads and restored: two threads sharing a model
    # could then read each other's threshold. Record every attribute written during calls.
    other = Predictor(predictor.model, predictor.config, device="cpu", score_threshold=0.2, max_instances=1)
    written = []
    original = torch.nn.Module.__setattr__

    def spy(module, name, value):
        written.append((type(module).__name__, name))
        original(module, name, value)

    monkeypatch.setattr(torch.nn.Module, "__setattr__", spy)
    other(image())
    predictor(image(), score_threshold=0.5, max_instances=3)
    # torchvision refreshes these caches on every call with values that depend only on the model
    # (anchor cells, FPN level scales): the same for every thread.
    idempotent_caches = {"cell_anchors", "scales", "map_levels"}
    assert [w for w in written if w[1] not in idempotent_caches] == []


def test_two_threads_sharing_a_model_get_their_own_limits(predictor):
    import threading

    images = [image(seed) for seed in range(3)]
    expected = {t: [len(p) for p in predictor.predict_batch(images, score_threshold=t)] for t in (0.0, 0.9)}
    assert expected[0.0] != expected[0.9]  # otherwise the threads could not disagree
    seen: dict = {0.0: [], 0.9: []}
    barrier = threading.Barrier(2)

    def work(threshold):
        barrier.wait()
        for _ in range(4):
            runs = predictor.predict_batch(images, score_threshold=threshold)
            seen[threshold].append([len(p) for p in runs])

    threads = [threading.Thread(target=work, args=(t,)) for t in (0.0, 0.9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(counts == expected[t] for t, runs in seen.items() for counts in runs) and all(seen.values())


class _InputRecorder(torch.nn.Module):
    """A 'model' that records the tensors it is given and detects nothing."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def detect(self, images, **limits):
        self.seen.extend(images)
        return [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                 "scores": torch.zeros(0)} for _ in images]


@pytest.mark.parametrize("color_order, pixel", [("rgb", (255, 0, 0)), ("bgr", (0, 0, 255))])
def test_colour_order_reaches_the_model_as_rgb(color_order, pixel):
    # A pure red scene, given as RGB or as BGR: the model must receive red in channel 0 both times
    # (expected values written out, not computed by another code path of the Predictor).
    recorder = _InputRecorder()
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :] = pixel
    Predictor(recorder, tiny_config(), device="cpu", color_order=color_order)(image)
    (tensor,) = recorder.seen
    assert tensor.shape == (3, 48, 64)
    assert float(tensor[0].min()) == 1.0 and float(tensor[1:].max()) == 0.0

"""Shared helpers: masks/RLE conversions, canonical records, results JSON, configs, CLI errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from mask_helpers import uncompressed_rle
from pycocotools import mask as coco_mask

from orcnn_core import masks as mask_ops
from orcnn_core.config import from_dict, load_yaml
from orcnn_core.errors import ConfigError
from orcnn_core.structures import AmodalAnnotation, Prediction, prediction_to_results


def _random_mask(rng: np.random.Generator, h: int = 24, w: int = 32) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
    mask[y0:y0 + rng.integers(1, h // 2), x0:x0 + rng.integers(1, w // 2)] = True
    return mask


@pytest.mark.parametrize("seed", range(5))
def test_rle_round_trip_and_json(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = _random_mask(rng) | (rng.random((24, 32)) > 0.9)
    rle = mask_ops.encode(mask)
    assert isinstance(rle["counts"], str)
    json.dumps(rle)  # serialisable as is
    assert np.array_equal(mask_ops.decode(rle), mask)
    assert mask_ops.area(rle) == int(mask.sum())
    stack = np.stack([mask, ~mask])
    decoded = [mask_ops.decode(r) for r in mask_ops.encode_many(stack)]
    assert np.array_equal(np.stack(decoded), stack)


def test_uncompressed_rle_and_polygon() -> None:
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:6, 3:9] = True
    runs = uncompressed_rle(mask)["counts"]
    assert np.array_equal(mask_ops.decode({"size": [10, 12], "counts": runs}), mask)
    compressed = mask_ops.segmentation_to_rle({"size": [10, 12], "counts": runs}, 10, 12)
    assert np.array_equal(mask_ops.decode(compressed), mask)
    poly_rle = mask_ops.segmentation_to_rle([3, 2, 9, 2, 9, 6, 3, 6], 10, 12)  # flat polygon (COCOA raw)
    reference = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([[3, 2, 9, 2, 9, 6, 3, 6]], 10, 12)))
    assert np.array_equal(mask_ops.decode(poly_rle), reference.astype(bool))


def test_bad_segmentations_raise() -> None:
    with pytest.raises(mask_ops.MaskFormatError, match="3"):
        mask_ops.polygons_to_rle([[0, 0, 1, 1]], 5, 5)
    with pytest.raises(mask_ops.MaskFormatError, match="disagrees"):
        mask_ops.segmentation_to_rle(mask_ops.encode(np.zeros((4, 4), bool)), 5, 5)
    with pytest.raises(mask_ops.MaskFormatError):
        mask_ops.segmentation_to_rle("nonsense", 5, 5)


def test_boxes_iou_union() -> None:
    a = np.zeros((8, 8), bool)
    a[1:4, 2:7] = True
    b = np.zeros((8, 8), bool)
    b[2:6, 4:8] = True
    assert mask_ops.mask_box(a) == (2.0, 1.0, 7.0, 4.0)
    assert mask_ops.rle_box(mask_ops.encode(a)) == (2.0, 1.0, 7.0, 4.0)
    assert mask_ops.mask_box(np.zeros((3, 3), bool)) == (0.0, 0.0, 0.0, 0.0)
    inter, uni = (a & b).sum(), (a | b).sum()
    iou = mask_ops.iou_matrix([mask_ops.encode(a)], [mask_ops.encode(b), mask_ops.encode(a)])
    assert iou.shape == (1, 2)
    assert iou[0, 0] == pytest.approx(inter / uni)
    assert iou[0, 1] == pytest.approx(1.0)
    assert np.array_equal(mask_ops.decode(mask_ops.union([mask_ops.encode(a), mask_ops.encode(b)])), a | b)
    both = [mask_ops.encode(a), mask_ops.encode(b)]
    assert np.array_equal(mask_ops.decode(mask_ops.intersection(both)), a & b)
    assert mask_ops.xywh_to_xyxy(mask_ops.xyxy_to_xywh((1, 2, 5, 9))) == (1.0, 2.0, 5.0, 9.0)


def test_annotation_from_masks_derives_invisible() -> None:
    amodal = np.zeros((10, 10), bool)
    amodal[2:8, 2:8] = True
    visible = amodal.copy()
    visible[2:8, 5:8] = False
    ann = AmodalAnnotation.from_masks(3, 1, amodal, visible)
    assert np.array_equal(ann.invisible_mask(), amodal & ~visible)
    assert ann.occlusion_rate == pytest.approx(18 / 36)
    assert ann.is_occluded and ann.amodal_area == 36 and ann.visible_area == 18
    assert ann.visible_box == (2.0, 2.0, 5.0, 8.0)


def test_prediction_results_entries() -> None:
    rng = np.random.default_rng(0)
    amodal = np.stack([_random_mask(rng) for _ in range(3)])
    visible = amodal & (rng.random(amodal.shape) > 0.3)
    pred = Prediction(
        amodal_boxes=np.array([mask_ops.mask_box(m) for m in amodal], np.float32),
        visible_boxes=np.array([mask_ops.mask_box(m) for m in visible], np.float32),
        labels=np.array([1, 2, 1]), category_ids=np.array([5, 7, 5]), class_names=["a", "b", "a"],
        scores=np.array([0.9, 0.5, 0.7], np.float32), amodal_masks=amodal, visible_masks=visible,
        invisible_masks=amodal & ~visible, image_size=(24, 32))
    entries = prediction_to_results(pred, image_id=11, file_name="x.png")
    assert [e["category_id"] for e in entries] == [5, 7, 5]
    assert all(e["image_id"] == 11 and e["file_name"] == "x.png" for e in entries)
    for e, a, v in zip(entries, amodal, visible):
        assert np.array_equal(mask_ops.decode(e["segmentation"]), a)
        assert np.array_equal(mask_ops.decode(e["visible_mask"]), v)
        assert np.array_equal(mask_ops.decode(e["invisible_mask"]), a & ~v)
    json.dumps(entries)
    sub = pred.select(np.array([False, True, True]))
    assert len(sub) == 2 and sub.class_names == ["b", "a"]
    probabilities = pred.amodal_masks.astype(np.float32) * 0.8
    pred_prob = dataclasses.replace(pred, amodal_masks=probabilities)
    first = prediction_to_results(pred_prob, 1, threshold=0.5)[0]
    assert np.array_equal(mask_ops.decode(first["segmentation"]), amodal[0])
    assert prediction_to_results(Prediction.empty(4, 5), 1) == []


@dataclasses.dataclass
class _Inner:
    width: int = 4


@dataclasses.dataclass
class _Outer:
    name: str = "x"
    inner: _Inner = dataclasses.field(default_factory=_Inner)

    def validate(self) -> None:
        if self.inner.width <= 0:
            raise ConfigError("inner.width must be positive")


def test_config_from_dict_unknown_keys_and_validation(tmp_path) -> None:
    cfg = from_dict(_Outer, {"name": "y", "inner": {"width": 8}})
    assert cfg.inner.width == 8 and cfg.name == "y"
    with pytest.raises(ConfigError, match="inner.widht"):
        from_dict(_Outer, {"inner": {"widht": 8}})
    with pytest.raises(ConfigError, match="'nme'"):
        from_dict(_Outer, {"nme": "z"})
    with pytest.raises(ConfigError, match="positive"):
        from_dict(_Outer, {"inner": {"width": 0}})
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)


def test_cli_help_lists_commands(capsys) -> None:
    from orcnn_core.cli import build_parser, main

    parser = build_parser()
    assert main([]) == 2  # no command: usage and a non-zero exit
    names = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001
    assert {"synth", "eval", "demo", "train", "predict"} <= names


@pytest.mark.parametrize("seed", range(3))
def test_batched_boxes_difference_binarize(seed: int) -> None:
    rng = np.random.default_rng(seed)
    stack = np.stack([_random_mask(rng) for _ in range(4)] + [np.zeros((24, 32), bool)])
    boxes = mask_ops.mask_boxes(stack)
    for mask, box in zip(stack, boxes):
        ys, xs = np.nonzero(mask)
        expected = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(ys) else (0, 0, 0, 0)
        assert tuple(box) == expected
    other = np.stack([_random_mask(rng) for _ in range(5)])
    diffs = mask_ops.difference_many(mask_ops.encode_many(stack), mask_ops.encode_many(other))
    for d, a, b in zip(diffs, stack, other):
        assert np.array_equal(mask_ops.decode(d), a & ~b)
    single = mask_ops.difference(mask_ops.encode(stack[0]), mask_ops.encode(other[0]))
    assert np.array_equal(mask_ops.decode(single), stack[0] & ~other[0])
    probs = rng.random((2, 4, 4)).astype(np.float32)
    assert np.array_equal(mask_ops.binarize(probs, 0.3), probs >= 0.3)
    assert mask_ops.binarize(stack) is stack
    crowd_iou = mask_ops.iou_matrix([mask_ops.encode(stack[0])], [mask_ops.encode(stack[0] | stack[1])], [1])
    inter = (stack[0] & (stack[0] | stack[1])).sum()
    assert crowd_iou[0, 0] == pytest.approx(inter / stack[0].sum())

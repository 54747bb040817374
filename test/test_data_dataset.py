"""AmodalDataset, transforms and collate: tensors in the model's format, masks and boxes consistent."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from orcnn_core.data import AmodalDataset, collate, load_annotations, synth, write_annotations
from orcnn_core.data.dataset import SyntheticAmodalDataset
from orcnn_core.data.transforms import ColorJitter, Compose, HorizontalFlip, ResizeShortestEdge
from orcnn_core.errors import DatasetError
from orcnn_core.structures import AmodalAnnotation, ImageRecord

H, W = 30, 40


def numpy_box(mask):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.fixture
def hand_dataset(tmp_path):
    """One 30x40 image: category 5 rectangle on top of a category 3 rectangle, plus a crowd region."""
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = np.arange(W, dtype=np.uint8)[None, :] * 6  # a left-right ramp: flips are visible
    cv2.imwrite(str(tmp_path / "img.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    top = np.zeros((H, W), bool)
    top[4:16, 3:20] = True
    below = np.zeros((H, W), bool)
    below[10:25, 12:35] = True
    anns = [
        AmodalAnnotation.from_masks(1, 3, below, below & ~top),
        AmodalAnnotation.from_masks(2, 5, top, top),
        AmodalAnnotation.from_masks(3, 3, below, below, iscrowd=True),
    ]
    record = ImageRecord(image_id=42, file_name="img.png", height=H, width=W, annotations=anns)
    path = write_annotations(
        [record], [{"id": 3, "name": "c"}, {"id": 5, "name": "e"}], tmp_path / "ann.json", image_root=tmp_path
    )
    return load_annotations(path), image, top, below


def test_item_format_and_label_order(hand_dataset):
    annotations, image, top, below = hand_dataset
    ds = AmodalDataset(annotations, category_ids=[5, 3])
    tensor, target = ds[0]
    assert tensor.dtype == torch.float32 and tensor.shape == (3, H, W)
    assert torch.allclose(tensor, torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    assert target["image_id"] == 42
    assert target["labels"].tolist() == [2, 1]  # crowd dropped; labels follow category_ids order
    assert target["amodal_masks"].dtype == torch.uint8 and target["amodal_masks"].shape == (2, H, W)
    assert np.array_equal(target["amodal_masks"][0].numpy().astype(bool), below)
    assert np.array_equal(target["visible_masks"][0].numpy().astype(bool), below & ~top)
    assert target["boxes"].tolist() == [numpy_box(below), numpy_box(top)]
    assert target["visible_boxes"].tolist() == [numpy_box(below & ~top), numpy_box(top)]
    only_three = AmodalDataset(annotations, category_ids=[3])[0][1]
    assert only_three["labels"].tolist() == [1]


def test_flip_twice_is_identity_and_flip_moves_boxes(hand_dataset):
    annotations, *_ = hand_dataset
    plain = AmodalDataset(annotations)[0]
    once = AmodalDataset(annotations, transforms=HorizontalFlip())[0]
    twice = AmodalDataset(annotations, transforms=Compose([HorizontalFlip(), HorizontalFlip()]))[0]
    assert torch.equal(twice[0], plain[0])
    for key in ("boxes", "visible_boxes", "amodal_masks", "visible_masks", "labels"):
        assert torch.equal(twice[1][key], plain[1][key])
    x0, y0, x1, y1 = plain[1]["boxes"].unbind(1)
    assert torch.equal(once[1]["boxes"], torch.stack([W - x1, y0, W - x0, y1], 1))
    assert torch.equal(once[0], plain[0].flip(-1))


def check_consistent(target):
    for masks, boxes in (("amodal_masks", "boxes"), ("visible_masks", "visible_boxes")):
        for mask, box in zip(target[masks].numpy().astype(bool), target[boxes].tolist()):
            assert box == (numpy_box(mask) if mask.any() else [0, 0, 0, 0])
    assert not (target["visible_masks"] & (1 - target["amodal_masks"])).any()


def test_resize_keeps_masks_and_boxes_consistent(hand_dataset):
    annotations, *_ = hand_dataset
    ds = AmodalDataset(
        annotations, transforms=Compose([ResizeShortestEdge(45, 1000), ColorJitter(0.3, 0.3, 0.3)])
    )
    tensor, target = ds[0]
    assert tensor.shape == (3, 45, 60)
    assert target["amodal_masks"].shape == (2, 45, 60)
    check_consistent(target)
    small = AmodalDataset(annotations, transforms=ResizeShortestEdge(100, 20))[0]
    assert max(small[0].shape[1:]) == 20  # max_size wins
    check_consistent(small[1])


def test_synthetic_dataset_and_collate():
    ds = SyntheticAmodalDataset(
        4,
        seed=3,
        classes=4,
        size=(64, 48),
        transforms=Compose([ResizeShortestEdge(60, 80), HorizontalFlip()]),
    )
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == 2 and len(targets) == 2
    assert images[0].shape == (3, 60, 80)
    for target in targets:
        check_consistent(target)
        assert target["labels"].min() >= 1 and target["labels"].max() <= 4
    assert [t["image_id"] for t in targets] == [1, 2]  # the ids `orcnn synth` gives scenes 0 and 1
    again = ds[0]
    assert torch.equal(again[0], images[0]) and torch.equal(
        again[1]["amodal_masks"], targets[0]["amodal_masks"]
    )
    with pytest.raises(IndexError):
        ds[4]


def test_written_synth_data_loads(tmp_path):
    synth.synthesize(tmp_path, images=2, seed=0, size=(64, 48))
    ds = AmodalDataset(load_annotations(tmp_path))
    tensor, target = ds[1]
    assert tensor.shape == (3, 48, 64)
    check_consistent(target)


def test_corrupt_or_missing_image(hand_dataset, tmp_path):
    annotations, *_ = hand_dataset
    (tmp_path / "img.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="img.png"):
        AmodalDataset(annotations)[0]
    (tmp_path / "img.png").unlink()
    with pytest.raises(DatasetError, match="not found.*img.png"):
        AmodalDataset(annotations)[0]


def test_image_size_disagreeing_with_annotations(hand_dataset, tmp_path):
    annotations, image, *_ = hand_dataset
    cv2.imwrite(str(tmp_path / "img.png"), np.zeros((H + 2, W, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"img.png, image 42: image is 32x40"):
        AmodalDataset(annotations)[0]


def test_build_transforms_without_resize_keeps_the_size():
    from orcnn_core.data.transforms import RandomApply, TransformConfig, build_transforms

    config = TransformConfig(min_size=[100, 200], max_size=300, flip_prob=0.5, color_jitter=0.1)
    train = build_transforms(config, resize=False)
    assert [type(t) for t in train.transforms] == [RandomApply, ColorJitter]
    assert build_transforms(config, train=False, resize=False).transforms == []
    sample = {"image": np.zeros((30, 40, 3), np.uint8), "amodal_masks": np.zeros((1, 30, 40), np.uint8),
              "visible_masks": np.zeros((1, 30, 40), np.uint8), "labels": [1]}
    assert train(sample)["image"].shape == (30, 40, 3)
    evaluation = build_transforms(config, train=False)
    assert [type(t) for t in evaluation.transforms] == [ResizeShortestEdge]
    assert evaluation.transforms[0].min_sizes == [200]  # the largest training size
    assert evaluation(sample)["image"].shape == (200, 267, 3)


def test_decode_stack_matches_per_mask_decode(hand_dataset):
    from orcnn_core.data.dataset import decode_stack

    record = hand_dataset[0].images[0]
    stack = decode_stack([a.amodal_rle for a in record.annotations], record.height, record.width)
    assert stack.dtype == np.uint8 and stack.flags.c_contiguous
    assert np.array_equal(stack, np.stack([a.amodal_mask() for a in record.annotations]))
    assert decode_stack([], 5, 6).shape == (0, 5, 6)

"""D2S-style amodal augmentation from modal COCO labels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as pycoco

from orcnn_core import cli
from orcnn_core.data import load_annotations
from orcnn_core.data.augment import AugmentConfig, augment
from orcnn_core.data.images import read_image_rgb
from orcnn_core.errors import DatasetError

H, W = 40, 50


def rle(mask):
    out = pycoco.encode(np.asfortranarray(mask.astype(np.uint8)))
    out["counts"] = out["counts"].decode("ascii")
    return out


@pytest.fixture
def modal_dataset(tmp_path):
    """Two images with textured objects; one object touches the border and must never be used."""
    rng = np.random.default_rng(0)
    images, annotations, masks, pixels = [], [], {}, {}
    shapes = {1: (1, (5, 17, 6, 20)), 2: (2, (20, 34, 25, 44)), 3: (1, (0, 12, 30, 49))}  # id: (cat, box)
    for image_id in (1, 2):
        image = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"{image_id}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        pixels[image_id] = image
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": H, "width": W})
        for k, (category, (y0, y1, x0, x1)) in shapes.items():
            mask = np.zeros((H, W), bool)
            mask[y0:y1, x0:x1] = True
            mask[y0 : y0 + 3, x0 : x0 + 3] = False  # notch: the shape is not symmetric
            ann_id = image_id * 10 + k
            masks[ann_id] = (mask, image_id)
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": category,
                    "segmentation": rle(mask),
                    "iscrowd": 0,
                }
            )
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    (tmp_path / "modal.json").write_text(json.dumps(data))
    return tmp_path, masks, pixels


def crop(mask):
    ys, xs = np.nonzero(mask)
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1], (ys.min(), xs.min())


def test_shift_only_pastes_exact_source_masks(modal_dataset, tmp_path):
    folder, masks, pixels = modal_dataset
    config = AugmentConfig(rotation=0.0, scale=(1.0, 1.0), flip=False, min_objects=3, max_objects=4)
    out = augment(folder / "modal.json", folder, tmp_path / "out", count=4, seed=1, config=config)
    loaded = load_annotations(tmp_path / "out")
    assert loaded.format == "orcnn" and len(loaded.images) == 4
    assert [c["name"] for c in loaded.categories] == ["a", "b"]
    used = set()
    for record in loaded.images:
        image = read_image_rgb(loaded.image_path(record))
        taken = np.zeros((record.height, record.width), int)
        for ann in record.annotations:
            source_id = ann.extra["source_annotation_id"]
            used.add(source_id)
            source_mask, source_image = masks[source_id]
            amodal, visible = ann.amodal_mask(), ann.visible_mask()
            assert ann.visible_area + ann.invisible_mask().sum() == ann.amodal_area
            assert not (visible & ~amodal).any()
            got, (gy, gx) = crop(amodal)
            want, (sy, sx) = crop(source_mask)
            assert np.array_equal(got, want)  # the amodal mask is the shifted source modal mask
            ys, xs = np.nonzero(visible)  # visible pixels show the source pixels, shifted
            assert np.array_equal(image[ys, xs], pixels[source_image][ys - gy + sy, xs - gx + sx])
            taken += visible
        assert taken.max() <= 1
    assert used and not used & {13, 23}  # border-touching instances are never cut out
    assert sum(a.is_occluded for r in out.images for a in r.annotations) > 0


def test_rotated_pastes_stay_consistent(modal_dataset, tmp_path):
    folder, *_ = modal_dataset
    bg = tmp_path / "bg"
    bg.mkdir()
    cv2.imwrite(str(bg / "table.png"), np.full((60, 70, 3), 128, np.uint8))
    out = augment(
        folder / "modal.json",
        folder,
        tmp_path / "out",
        count=3,
        seed=2,
        backgrounds=bg,
        config=AugmentConfig(min_visible_fraction=0.3),
    )
    for record in out.images:
        assert (record.height, record.width) == (60, 70)
        for ann in record.annotations:
            amodal, visible = ann.amodal_mask(), ann.visible_mask()
            assert not (visible & ~amodal).any()
            assert visible.sum() >= 0.3 * amodal.sum()
            assert ann.amodal_area > 0


def test_augment_cli_and_errors(modal_dataset, tmp_path, capsys):
    folder, *_ = modal_dataset
    args = [
        "augment",
        "--modal",
        str(folder / "modal.json"),
        "--images",
        str(folder),
        "--out",
        str(tmp_path / "cli"),
        "--count",
        "2",
        "--seed",
        "3",
        "--size",
        "64x48",
    ]
    assert cli.main(args) == 0
    assert "num imgs" in capsys.readouterr().out
    first = (tmp_path / "cli" / "annotations.json").read_bytes()
    assert cli.main(args) == 0
    assert (tmp_path / "cli" / "annotations.json").read_bytes() == first  # deterministic per seed
    assert load_annotations(tmp_path / "cli").images[0].width == 64
    with pytest.raises(DatasetError, match="background folder not found"):
        augment(folder / "modal.json", folder, tmp_path / "x", count=1, backgrounds=tmp_path / "none")
    with pytest.raises(DatasetError, match="not found"):
        augment(folder / "missing.json", folder, tmp_path / "x", count=1)

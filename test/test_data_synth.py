"""Synthetic scenes: determinism, exact mask relations, class names, the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest

from orcnn_core import cli
from orcnn_core.data import load_annotations, synth
from orcnn_core.data.images import read_image_rgb
from orcnn_core.errors import DatasetError

SIZE = (96, 72)


def files_of(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synthesize_is_byte_identical_per_seed(tmp_path):
    a = synth.synthesize(tmp_path / "a", images=3, seed=5, size=SIZE)
    synth.synthesize(tmp_path / "b", images=3, seed=5, size=SIZE)
    synth.synthesize(tmp_path / "c", images=3, seed=6, size=SIZE)
    first, second, other = files_of(tmp_path / "a"), files_of(tmp_path / "b"), files_of(tmp_path / "c")
    assert first == second
    assert set(first) == set(other)
    assert all(first[name] != other[name] for name in first)
    assert a.num_instances > 0


def test_synth_masks_are_exact(tmp_path):
    synth.synthesize(tmp_path, images=4, seed=1, size=SIZE, occlusion="high")
    loaded = load_annotations(tmp_path)
    assert loaded.format == "orcnn"
    assert [c["name"] for c in loaded.categories] == list(synth.SYNTH_CLASS_NAMES[:6])
    occluded = 0
    for record in loaded.images:
        image = read_image_rgb(loaded.image_path(record))
        assert image.shape == (SIZE[1], SIZE[0], 3)
        visible_union = np.zeros(image.shape[:2], dtype=np.int32)
        for ann in record.annotations:
            amodal, visible, invisible = ann.amodal_mask(), ann.visible_mask(), ann.invisible_mask()
            assert not (visible & ~amodal).any()
            assert np.array_equal(invisible, amodal & ~visible)
            assert visible.sum() >= 0.1 * amodal.sum()  # tiny-visible instances were dropped
            assert 1 <= ann.category_id <= 6
            visible_union += visible
            occluded += ann.is_occluded
        assert visible_union.max() <= 1  # visible masks of one image are pairwise disjoint
    assert occluded > 0


def test_scene_layers_follow_painting_order():
    """Each instance's invisible part is covered by the amodal mask of some instance above it."""
    for seed in range(3):
        scene = synth.generate_scene(np.random.default_rng(seed), size=SIZE, occlusion="high")
        amodal, visible = scene.amodal_masks, scene.visible_masks
        for i in range(len(amodal)):
            above = amodal[i + 1 :].any(axis=0) if i + 1 < len(amodal) else np.zeros_like(amodal[i])
            assert np.array_equal(visible[i], amodal[i] & ~above)
        assert scene.image.dtype == np.uint8 and scene.image.shape == (SIZE[1], SIZE[0], 3)


def test_min_visible_fraction_is_respected():
    scene = synth.generate_scene(
        np.random.default_rng(3), size=SIZE, occlusion="high", min_visible_fraction=0.6
    )
    for amodal, visible in zip(scene.amodal_masks, scene.visible_masks):
        assert visible.sum() >= 0.6 * amodal.sum()


def test_objects_leaving_the_frame_are_clipped():
    touching = 0
    for seed in range(12):
        scene = synth.generate_scene(np.random.default_rng(seed), size=SIZE, occlusion="low")
        for amodal in scene.amodal_masks:
            touching += bool(amodal[0].any() or amodal[-1].any() or amodal[:, 0].any() or amodal[:, -1].any())
    assert touching > 0


def test_class_names_and_bad_arguments():
    assert synth.class_names(3) == ["box", "disc", "triangle"]
    assert len(set(synth.SYNTH_CLASS_NAMES)) == len(synth.SYNTH_CLASS_NAMES) >= 6
    with pytest.raises(DatasetError, match="classes"):
        synth.class_names(len(synth.SYNTH_CLASS_NAMES) + 1)
    with pytest.raises(DatasetError, match="occlusion level"):
        synth.generate_scene(np.random.default_rng(0), occlusion="extreme")


def test_synth_cli_prints_table(tmp_path, capsys):
    assert (
        cli.main(
            [
                "synth",
                "--out",
                str(tmp_path),
                "--images",
                "2",
                "--seed",
                "0",
                "--size",
                "80x60",
                "--classes",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    loaded = load_annotations(tmp_path / "annotations.json")
    assert re.search(r"^num imgs\s+2$", out, re.M)
    assert re.search(rf"^num objs\s+{loaded.num_instances}$", out, re.M)
    assert all(1 <= a.category_id <= 4 for r in loaded.images for a in r.annotations)
    assert cli.main(["synth", "--out", str(tmp_path), "--images", "1", "--classes", "99"]) == 2


def test_written_invisible_masks_are_amodal_minus_visible_in_the_file(tmp_path):
    # Read the RLEs straight from the JSON (not through the loader, which checks and could repair).
    import json

    from pycocotools import mask as pycoco

    synth.synthesize(tmp_path, images=3, seed=2, size=SIZE, occlusion="high")
    entries = json.loads((tmp_path / "annotations.json").read_text())["annotations"]

    def decode(rle):
        return pycoco.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)

    hidden = 0
    for entry in entries:
        amodal, visible = decode(entry["segmentation"]), decode(entry["visible_mask"])
        invisible = decode(entry["invisible_mask"])
        assert np.array_equal(invisible, amodal & ~visible), entry["id"]
        hidden += int(invisible.sum())
    assert hidden > 0  # an all-empty invisible channel would pass the check above trivially

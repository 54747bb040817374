"""Synthetic RGB-D scenes: the colour output unchanged by --depth, determinism, depth consistent with
the colour image (front objects nearer), the written 3D truth against an independent computation, the
sensor model, and the readers still reading the files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from orcnn_core import cli
from orcnn_core.data import load_annotations, synth
from orcnn_core.data.synth_depth import SensorModel, render_depth, stack_heights
from orcnn_core.depth.depth_io import read_depth_png_mm

SIZE = (160, 120)


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgbd")
    synth.synthesize(root, images=3, seed=11, size=SIZE, depth=True)
    return root


def test_colour_output_is_the_same_with_and_without_depth(tmp_path, rgbd):
    synth.synthesize(tmp_path / "plain", images=3, seed=11, size=SIZE)
    plain, with_depth = files_of(tmp_path / "plain"), files_of(rgbd)
    assert {k: v for k, v in with_depth.items() if k.startswith("images/")} == \
        {k: v for k, v in plain.items() if k.startswith("images/")}
    assert sorted(k for k in with_depth if k.startswith("depth/")) == [f"depth/{i:06d}.png" for i in range(3)]
    a, b = json.loads(plain["annotations.json"]), json.loads(with_depth["annotations.json"])
    strip_image = lambda e: {k: v for k, v in e.items() if k not in ("camera", "depth_file")}  # noqa: E731
    assert [strip_image(e) for e in b["images"]] == a["images"]
    strip_ann = lambda e: {**e, "extra": {"depth": e["extra"]["depth"]}}  # noqa: E731
    assert [strip_ann(e) for e in b["annotations"]] == a["annotations"]


def test_depth_is_deterministic_per_seed(tmp_path, rgbd):
    synth.synthesize(tmp_path, images=3, seed=11, size=SIZE, depth=True)
    assert files_of(tmp_path) == files_of(rgbd)
    other = tmp_path / "other"
    synth.synthesize(other, images=1, seed=12, size=SIZE, depth=True)
    assert (other / "depth/000000.png").read_bytes() != (rgbd / "depth/000000.png").read_bytes()


def test_truth_matches_the_depth_image_and_front_objects_are_nearer(rgbd):
    data = load_annotations(rgbd)  # the project's reader keeps the 3D truth in `extra`
    images = {e["file_name"]: e for e in json.loads((rgbd / "annotations.json").read_text())["images"]}
    checked_pairs = 0
    for record in data.images:
        entry = images[record.file_name]
        assert entry["depth_file"] == f"depth/{record.file_name}"
        cam = entry["camera"]
        depth = read_depth_png_mm(rgbd / entry["depth_file"]).astype(np.float64) / 1000.0
        assert depth.shape == (record.height, record.width) and (depth > 0).all()  # exact depth: no holes
        anns = sorted(record.annotations, key=lambda a: a.extra["depth"])  # bottom to top
        table = np.ones(depth.shape, bool)
        for a in anns:
            table &= ~a.amodal_mask()
        assert 0.70 < np.median(depth[table]) < 0.90  # the camera ~0.8 m above the table
        for a in anns:
            visible = a.visible_mask()
            rows, cols = np.nonzero(visible)
            z = depth[rows, cols]
            points = np.stack([(cols - cam["cx"]) * z / cam["fx"], (rows - cam["cy"]) * z / cam["fy"], z])
            # independent of synth_depth: back-projection of the written (mm) depth, by hand
            np.testing.assert_allclose(points.mean(axis=1), a.extra["visible_centroid_3d"], atol=0.0006)
            assert np.median(z) < np.median(depth[table])  # every object stands on the table
            normal = np.asarray(a.extra["surface_normal_3d"])
            assert normal[2] < -0.98 and abs(np.linalg.norm(normal) - 1) < 1e-9  # faces the camera, <= 8 deg
            low = np.asarray(a.extra["center_3d"]) - np.asarray(a.extra["extent_3d"]) / 2
            assert low[2] == pytest.approx(z.min(), abs=0.0006)  # the solid's nearest point is its top face
        for i, below in enumerate(anns):
            for above in anns[i + 1:]:
                shared = below.amodal_mask() & above.visible_mask()
                if shared.sum() > 20:  # `above` hides part of `below`: nearer than `below`'s face
                    below_face = np.median(depth[below.visible_mask()])
                    assert np.median(depth[shared]) < below_face - 0.01
                    checked_pairs += 1
    assert checked_pairs > 0


def test_stacked_heights_follow_the_occlusion_order():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :5, :5] = masks[1, 3:8, 3:8] = masks[2, 8:, 8:] = True  # 1 lies on 0; 2 touches nothing
    base, top = stack_heights(masks, np.array([0.02, 0.03, 0.04]))
    assert base.tolist() == pytest.approx([0.0, 0.02, 0.0])
    assert top.tolist() == pytest.approx([0.02, 0.05, 0.04])


def test_sensor_model_adds_noise_quantisation_and_edge_holes():
    rng = np.random.default_rng(0)
    scene = synth.generate_scene(rng, size=(320, 240))
    exact = render_depth(scene.amodal_masks, scene.visible_masks, np.random.default_rng([0, 0, 1]))
    noisy = render_depth(scene.amodal_masks, scene.visible_masks, np.random.default_rng([0, 0, 1]),
                         SensorModel())
    assert np.array_equal(exact.exact_depth_m, noisy.exact_depth_m) and exact.camera == noisy.camera
    measured = noisy.depth_mm.astype(np.float64) / 1000.0
    far = cv2.dilate(exact.exact_depth_m, np.ones((3, 3)))
    near = cv2.erode(exact.exact_depth_m, np.ones((3, 3)))
    edge = (far - near) > 0.008
    flat = ~cv2.dilate(edge.astype(np.uint8), np.ones((7, 7))).astype(bool)
    holes = measured == 0
    assert holes[edge].mean() > 0.25 and holes[flat].mean() < 0.01
    error = (measured - exact.exact_depth_m)[flat & ~holes]
    assert 0.0015 < error.std() < 0.005          # ~2.6 mm at 0.8 m, plus quantisation
    assert abs(error.mean()) < 0.0005
    steps = np.diff(np.unique(noisy.depth_mm[flat & ~holes]))
    assert np.median(steps) >= 2  # quantised: the readings skip millimetres (disparity steps)


def test_cli_writes_depth_with_the_sensor_model(tmp_path, capsys):
    argv = ["synth", "--out", str(tmp_path), "--images", "1", "--size", "96x72", "--depth-sensor"]
    assert cli.main(argv) == 0
    assert "depth with the sensor model" in capsys.readouterr().out
    depth = read_depth_png_mm(tmp_path / "depth" / "000000.png")
    assert depth.shape == (72, 96) and (depth == 0).any()
    assert cli.main(["stats", str(tmp_path / "annotations.json")]) == 0  # readers still read the file

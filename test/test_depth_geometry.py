"""3D geometry: back-projection against hand-computed points, the robust surface (holes, flying pixels,
mask pixels on another surface), normals, footprints of hidden parts, and the per-frame 3D step."""

from __future__ import annotations

import numpy as np
import pytest

from orcnn_core.analysis import analyze
from orcnn_core.depth.camera import CameraError, CameraIntrinsics
from orcnn_core.depth.depth_io import DepthFrame
from orcnn_core.depth.geometry import back_project, fit_plane, pixel_rays, project
from orcnn_core.depth.instances3d import compute_geometry
from orcnn_core.masks import mask_boxes
from orcnn_core.structures import Prediction

CAMERA = CameraIntrinsics(fx=500.0, fy=400.0, cx=320.0, cy=240.0)
H, W = 120, 160
SMALL = CameraIntrinsics(fx=200.0, fy=200.0, cx=79.5, cy=59.5)

# Stated bound: on a flat face 0.8 m away, holes and flying pixels move the visible centroid by at
# most this much (metres); docs/ros.md "Depth and 3D" quotes it.
CENTROID_BOUND_M = 0.001


def test_back_projection_matches_hand_computed_points():
    us = np.array([420, 320, 0, 320])
    vs = np.array([240, 340, 0, 240])
    z = np.array([2.0, 1.0, 0.5, 0.8])
    points = back_project(us, vs, z, CAMERA)
    expected = np.array([[0.4, 0.0, 2.0],        # (420 - 320) * 2 / 500
                         [0.0, 0.25, 1.0],       # (340 - 240) * 1 / 400
                         [-0.32, -0.3, 0.5],     # (0 - 320) * 0.5 / 500, (0 - 240) * 0.5 / 400
                         [0.0, 0.0, 0.8]]).T     # the principal point lies on the optical axis
    assert points.shape == (3, 4)
    np.testing.assert_allclose(points, expected, atol=1e-12)
    np.testing.assert_allclose(project(points, CAMERA), np.stack([us, vs]), atol=1e-9)
    np.testing.assert_allclose(pixel_rays(us, vs, CAMERA)[2], 1.0)


def test_camera_from_k_and_refusals():
    camera = CameraIntrinsics.from_k([615.0, 0, 321.5, 0, 616.0, 239.5, 0, 0, 1], "camera_info")
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (615.0, 616.0, 321.5, 239.5)
    with pytest.raises(CameraError, match="camera_info: focal lengths must be > 0"):
        CameraIntrinsics.from_k([0.0] * 9, "camera_info")
    with pytest.raises(CameraError, match="K has 4 entries"):
        CameraIntrinsics.from_k([1, 0, 0, 1], "camera_info")
    with pytest.raises(CameraError, match="cx is not finite"):
        CameraIntrinsics(500.0, 500.0, float("nan"), 1.0).check()
    with pytest.raises(CameraError, match="camera 'fy' must be a number"):
        CameraIntrinsics.from_mapping({"fx": 1, "fy": "2", "cx": 0, "cy": 0}, "camera.json")


def test_fitted_plane_normal_points_to_the_camera():
    grid = np.stack(np.meshgrid(np.linspace(-0.1, 0.1, 9), np.linspace(-0.1, 0.1, 9))).reshape(2, -1)
    points = np.vstack([grid, 1.0 + 0.1 * grid[0]])  # z = 1 + 0.1 x
    centroid, normal = fit_plane(points)
    np.testing.assert_allclose(centroid, [0, 0, 1.0], atol=1e-12)
    np.testing.assert_allclose(normal, np.array([0.1, 0.0, -1.0]) / np.sqrt(1.01), atol=1e-9)


# -- a flat square at 0.8 m on a table at 0.85 m, measured by compute_geometry --------------------

def square_scene(rng=None, flying=False, holes=0.0):
    """(depth HxW, visible HxW) of a 60x60 px square face at 0.8 m on a table at 0.85 m."""
    depth = np.full((H, W), 0.85, np.float32)
    visible = np.zeros((H, W), bool)
    visible[30:90, 50:110] = True
    depth[visible] = 0.8
    if flying:  # the mask's outer 2-pixel ring mixes face and table, as ToF / stereo sensors do
        ring = visible.copy()
        ring[32:88, 52:108] = False
        depth[ring] = rng.uniform(0.8, 0.85, size=int(ring.sum()))
        spikes = rng.choice(np.flatnonzero(visible & ~ring), size=15, replace=False)
        depth.reshape(-1)[spikes] = rng.choice([0.3, 1.5], size=15)  # isolated wild readings
    if holes:
        depth[rng.random((H, W)) < holes] = 0.0
    return depth, visible


def exact_square_centroid():
    """Mean of the square's pixels back-projected at 0.8 m, by hand: its pixel centre is (79.5, 59.5)."""
    return np.array([(79.5 - SMALL.cx) * 0.8 / SMALL.fx, (59.5 - SMALL.cy) * 0.8 / SMALL.fy, 0.8])


def geometry_of(depth, visible, amodal=None, camera=SMALL, **config):
    visible = visible[None]
    amodal = visible if amodal is None else amodal[None]
    return compute_geometry(visible, amodal, mask_boxes(visible).astype(np.int64),
                            mask_boxes(amodal).astype(np.int64), DepthFrame(depth, camera))


def test_clean_face_gives_the_exact_centroid_normal_and_box():
    depth, visible = square_scene()
    g = geometry_of(depth, visible)
    assert g.has_3d.tolist() == [True] and g.valid_points[0] == 3600
    np.testing.assert_allclose(g.visible_centroid[0], exact_square_centroid(), atol=1e-6)
    np.testing.assert_allclose(g.surface_normal[0], [0, 0, -1], atol=1e-6)
    # box corners: pixel columns 50..109 and rows 30..89 at 0.8 m
    pixel = 0.8 / SMALL.fx  # metres per pixel at 0.8 m
    np.testing.assert_allclose(g.visible_box_min[0], [(50 - 79.5) * pixel, (30 - 59.5) * pixel, 0.8],
                               atol=1e-6)
    np.testing.assert_allclose(g.visible_box_max[0], [(109 - 79.5) * pixel, (89 - 59.5) * pixel, 0.8],
                               atol=1e-6)


def test_holes_and_flying_pixels_do_not_move_the_centroid_beyond_the_bound():
    rng = np.random.default_rng(0)
    depth, visible = square_scene(rng, flying=True, holes=0.3)
    g = geometry_of(depth, visible)
    error = np.linalg.norm(g.visible_centroid[0] - exact_square_centroid())
    assert error <= CENTROID_BOUND_M
    np.testing.assert_allclose(g.surface_normal[0], [0, 0, -1], atol=0.01)
    assert g.visible_box_max[0][2] < 0.81 and g.visible_box_min[0][2] > 0.79  # no flying pixel in the box
    # ... while the plain mean of the mask's depth pixels is pulled far off: the test can fail
    rows, cols = np.nonzero(visible & (depth > 0))
    naive = back_project(cols, rows, depth[rows, cols], SMALL).mean(axis=1)
    assert np.linalg.norm(naive - exact_square_centroid()) > 3 * CENTROID_BOUND_M


def test_mask_pixels_on_another_surface_are_left_out():
    depth, visible = square_scene()
    mask = visible.copy()
    mask[30:90, 40:50] = True  # the predicted mask spills 10 columns onto the table (5 cm further)
    g = geometry_of(depth, mask)
    np.testing.assert_allclose(g.visible_centroid[0], exact_square_centroid(), atol=1e-6)
    assert g.valid_points[0] == 3600


def test_tilted_face_normal_and_too_few_points():
    rows, cols = np.mgrid[0:H, 0:W]
    x = (cols - SMALL.cx) / SMALL.fx
    # the plane z = 0.8 + 0.2 X: along the ray (x, y, 1) * z that is z = 0.8 + 0.2 x z
    depth = (0.8 / (1 - 0.2 * x)).astype(np.float32)
    visible = np.zeros((H, W), bool)
    visible[20:100, 30:130] = True
    g = geometry_of(depth, visible)
    np.testing.assert_allclose(g.surface_normal[0], np.array([0.2, 0, -1]) / np.sqrt(1.04), atol=1e-4)
    sparse = np.zeros_like(depth)
    sparse[50, 60:75] = 0.8  # 15 valid pixels < min_points 20
    assert geometry_of(sparse, visible).has_3d.tolist() == [False]


def test_hidden_part_is_placed_on_the_object_own_surface():
    """A square half hidden behind a nearer object: its footprint is the whole square at its own depth."""
    depth, amodal = square_scene()
    visible = amodal.copy()
    visible[:, 80:] = False          # the right half is hidden ...
    depth[:, 80:] = 0.7              # ... by something 10 cm nearer
    g = geometry_of(depth, visible, amodal)
    np.testing.assert_allclose(g.amodal_centroid[0], exact_square_centroid(), atol=1e-6)
    outline = g.amodal_footprint[0]
    assert outline.dtype == np.float32 and len(outline) == 4
    corners = {(round(float(x) / 0.004 + 79.5), round(float(y) / 0.004 + 59.5)) for x, y, _ in outline}
    assert corners == {(50, 30), (109, 30), (109, 89), (50, 89)}  # the square's corner pixels
    np.testing.assert_allclose(outline[:, 2], 0.8, atol=1e-6)
    # the visible centroid is the visible half's own (columns 50..79)
    np.testing.assert_allclose(g.visible_centroid[0][0], (64.5 - 79.5) * 0.004, atol=1e-6)


def test_analysis_gets_3d_only_from_usable_depth():
    depth, visible = square_scene()
    masks = visible[None]
    box = mask_boxes(masks).astype(np.float32)
    prediction = Prediction(box, box.copy(), np.array([1]), np.array([1]), ["box"],
                            np.array([0.9], np.float32), masks, masks.copy(), np.zeros_like(masks), (H, W))
    assert analyze(prediction).geometry is None
    frame = analyze(prediction, depth=DepthFrame(depth, SMALL))
    assert frame.depth_error is None and frame.geometry.has_3d.tolist() == [True]
    for depth_frame, cause in [(DepthFrame(depth[:, :100], SMALL), "depth_size_mismatch"),
                               (DepthFrame(np.zeros_like(depth), SMALL), "depth_all_holes"),
                               (DepthFrame(depth, CameraIntrinsics(0.0, 0.0, 0.0, 0.0)), "camera_invalid")]:
        frame = analyze(prediction, depth=depth_frame)
        assert frame.geometry is None and frame.depth_error.cause == cause

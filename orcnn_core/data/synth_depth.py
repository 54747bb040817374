"""Aligned depth for synthetic scenes, with exact 3D truth: what ``orcnn synth --depth`` writes.

The colour scene (``synth.generate_scene``) is read as the view of a pinhole camera about 0.8 m above
a table, looking down (the table tilted by up to ``MAX_TILT_DEG`` from facing the camera). Every
object is a solid: its painted shape is its top face, a plane parallel to the table at its height;
its sides run along the camera's rays, so that only the top face is seen and the depth image agrees
pixel for pixel with the colour image. Objects are stacked in their occlusion order: an object rests
on the highest object below it that its shape overlaps (else on the table), so an object in front is
nearer along every ray.

Truth per object (camera optical frame, metres; kept in the annotation's ``extra``):
``visible_centroid_3d`` (mean of the visible top-face points), ``amodal_centroid_3d`` (mean of the
whole top face, hidden part included), ``surface_normal_3d`` (unit, towards the camera),
``center_3d`` / ``extent_3d`` (centre and size of the solid's axis-aligned box) and ``height_3d``.
All of it is of the in-image part of an object (as its amodal mask).

``SensorModel`` adds what a real depth camera does: noise growing with the square of the distance,
disparity quantisation (a stereo camera's depth steps), holes and flying (mixed) pixels along depth
edges, and scattered holes. Randomness comes from its own generator, so the colour image of a scene
is the same with or without depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import cv2
import numpy as np

from orcnn_core.depth.camera import CameraIntrinsics
from orcnn_core.depth.depth_io import millimetres_from_metres, write_depth_png
from orcnn_core.depth.geometry import pixel_rays
from orcnn_core.structures import ImageRecord

if TYPE_CHECKING:
    from orcnn_core.data.synth import Scene

DEPTH_DIR = "depth"               # depth/NAME.png beside images/NAME.png

TABLE_DISTANCE_M = (0.75, 0.85)   # camera to table, along the table's normal
MAX_TILT_DEG = 8.0                # the table's normal is at most this far from the optical axis
HFOV_DEG = (55.0, 65.0)           # horizontal field of view of the camera
OBJECT_HEIGHT_M = (0.015, 0.05)   # thickness of each solid


@dataclass(frozen=True)
class SensorModel:
    """What a structured-light / stereo depth camera adds to the exact depth."""

    noise_at_1m: float = 0.004         # standard deviation (m) of depth noise at 1 m; grows with z^2
    baseline_m: float = 0.05           # disparity = fx * baseline / z ...
    subpixel: float = 0.125            # ... measured in steps of this many pixels (depth quantisation)
    edge_step_m: float = 0.008         # a depth step larger than this between neighbours is an edge
    edge_hole_fraction: float = 0.4    # share of pixels within 1 px of an edge without a reading
    edge_flying_fraction: float = 0.3  # share of them with a reading mixed from both sides
    hole_fraction: float = 0.003       # share of all pixels without a reading


@dataclass
class DepthScene:
    """The depth of one scene: what is written, the exact depth, the camera and each object's truth."""

    depth_mm: np.ndarray       # HxW uint16 millimetres, 0 = no reading (sensor model applied if any)
    exact_depth_m: np.ndarray  # HxW float32 exact metres
    camera: CameraIntrinsics
    truth: list                # per instance (bottom to top, as the scene), dict of 3D truth


def scene_camera(rng: np.random.Generator, width: int, height: int) -> CameraIntrinsics:
    """A pinhole camera for a ``width`` x ``height`` image: random field of view, principal point near
    the centre (integer coordinates at pixel centres)."""
    hfov = np.deg2rad(rng.uniform(*HFOV_DEG))
    focal = (width / 2.0) / np.tan(hfov / 2.0)
    cx = (width - 1) / 2.0 + rng.uniform(-2.0, 2.0)
    cy = (height - 1) / 2.0 + rng.uniform(-2.0, 2.0)
    return CameraIntrinsics(float(focal), float(focal), float(cx), float(cy))


def _table_normal(rng: np.random.Generator) -> np.ndarray:
    tilt, azimuth = np.deg2rad(rng.uniform(0.0, MAX_TILT_DEG)), rng.uniform(0.0, 2 * np.pi)
    # Towards the camera: the optical axis is +z, so the table faces -z.
    return -np.asarray([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])


def stack_heights(amodal_masks: np.ndarray, thickness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(base, top) height above the table of each solid of a bottom-to-top stack: each rests on the
    highest solid below it whose amodal mask overlaps its own, else on the table (height 0)."""
    count = len(amodal_masks)
    base, top = np.zeros(count), np.zeros(count)
    flat = amodal_masks.reshape(count, -1)
    for i in range(count):
        below = [top[k] for k in range(i) if np.any(flat[k] & flat[i])]
        base[i] = max(below, default=0.0)
        top[i] = base[i] + thickness[i]
    return base, top


def _plane_depth(rays: np.ndarray, normal: np.ndarray, distance: float) -> np.ndarray:
    """Depth (z) where (3, N) rays (z = 1) meet the plane ``normal . X + distance = 0``."""
    return distance / -(normal @ rays)


def _solid_truth(us: np.ndarray, vs: np.ndarray, visible: np.ndarray, camera: CameraIntrinsics,
                 normal: np.ndarray, table_distance: float, base: float, top: float) -> dict:
    rays = pixel_rays(us, vs, camera)
    top_points = rays * _plane_depth(rays, normal, table_distance - top)
    base_points = rays * _plane_depth(rays, normal, table_distance - base)
    corners = np.concatenate([top_points, base_points], axis=1)
    low, high = corners.min(axis=1), corners.max(axis=1)
    as_list = lambda v: [float(x) for x in v]  # noqa: E731
    return {"visible_centroid_3d": as_list(top_points[:, visible].mean(axis=1)),
            "amodal_centroid_3d": as_list(top_points.mean(axis=1)),
            "surface_normal_3d": as_list(normal),
            "center_3d": as_list((low + high) / 2), "extent_3d": as_list(high - low),
            "height_3d": float(top - base)}


def apply_sensor_model(depth_m: np.ndarray, camera: CameraIntrinsics, sensor: SensorModel,
                       rng: np.random.Generator) -> np.ndarray:
    """A float32 depth image as ``sensor`` would measure the exact ``depth_m`` (0 = no reading)."""
    depth = depth_m.astype(np.float32)
    near = cv2.erode(depth, np.ones((3, 3), np.uint8))   # nearest neighbour depth (3x3 min)
    far = cv2.dilate(depth, np.ones((3, 3), np.uint8))   # farthest (3x3 max)
    edge = (far - near) > sensor.edge_step_m             # pixels within 1 px of a depth step
    draw = rng.random(depth.shape, dtype=np.float32)
    flying = edge & (draw < sensor.edge_flying_fraction)
    holes = edge & (draw >= sensor.edge_flying_fraction) & \
        (draw < sensor.edge_flying_fraction + sensor.edge_hole_fraction)
    # A flying pixel mixes its own surface with the other side of the edge.
    weight = rng.uniform(0.2, 0.8, size=depth.shape).astype(np.float32)
    other = np.where(depth - near > far - depth, near, far)
    depth = np.where(flying, weight * depth + (1 - weight) * other, depth)
    depth = depth + rng.normal(0.0, 1.0, size=depth.shape).astype(np.float32) * \
        np.float32(sensor.noise_at_1m) * depth * depth
    disparity_step = sensor.subpixel
    focal_baseline = camera.fx * sensor.baseline_m
    disparity = np.round(focal_baseline / np.maximum(depth, 1e-3) / disparity_step) * disparity_step
    depth = (focal_baseline / np.maximum(disparity, disparity_step)).astype(np.float32)
    holes |= rng.random(depth.shape, dtype=np.float32) < sensor.hole_fraction
    depth[holes] = 0.0
    return depth


def render_depth(amodal_masks: np.ndarray, visible_masks: np.ndarray, rng: np.random.Generator,
                 sensor: Optional[SensorModel] = None) -> DepthScene:
    """Depth and 3D truth of a scene given as bottom-to-top (N, H, W) amodal and visible masks."""
    count, height, width = amodal_masks.shape
    camera = scene_camera(rng, width, height)
    normal = _table_normal(rng)
    table_distance = float(rng.uniform(*TABLE_DISTANCE_M))
    thickness = rng.uniform(*OBJECT_HEIGHT_M, size=count)
    base, top = stack_heights(amodal_masks, thickness)
    # Surface height seen at every pixel: the visible object's top face, else the table.
    surface_height = np.zeros((height, width), np.float64)
    for i in range(count):
        surface_height[visible_masks[i]] = top[i]
    vs, us = np.mgrid[0:height, 0:width]
    rays = pixel_rays(us.reshape(-1), vs.reshape(-1), camera)
    exact = (table_distance - surface_height.reshape(-1)) / -(normal @ rays)
    exact = exact.reshape(height, width).astype(np.float32)
    truth = []
    for i in range(count):
        rows, cols = np.nonzero(amodal_masks[i])
        truth.append(_solid_truth(cols, rows, visible_masks[i][rows, cols], camera, normal, table_distance,
                                  base[i], top[i]))
    measured = exact if sensor is None else apply_sensor_model(exact, camera, sensor, rng)
    return DepthScene(depth_mm=millimetres_from_metres(measured), exact_depth_m=exact, camera=camera,
                      truth=truth)


def add_depth(out_dir: Path, record: ImageRecord, scene: Scene, rng: np.random.Generator,
              sensor: Optional[SensorModel] = None) -> DepthScene:
    """Render ``scene``'s depth, write it as ``out_dir/depth/NAME.png`` and put the camera, the depth
    file and each object's 3D truth into ``record`` (``images[k].camera``, ``images[k].depth_file``,
    the annotations' ``extra``)."""
    rendered = render_depth(scene.amodal_masks, scene.visible_masks, rng, sensor)
    depth_file = Path(DEPTH_DIR) / Path(record.file_name).with_suffix(".png")
    write_depth_png(Path(out_dir) / depth_file, rendered.depth_mm)
    record.extra["camera"] = rendered.camera.as_dict()
    record.extra["depth_file"] = depth_file.as_posix()
    for annotation, truth in zip(record.annotations, rendered.truth):
        annotation.extra.update(truth)
    return rendered

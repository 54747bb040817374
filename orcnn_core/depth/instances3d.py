"""The per-frame 3D step: where each instance is in space, from its masks and an aligned depth image.

``compute_geometry`` is called once per frame by ``orcnn_core.analysis.analyze`` when depth is given;
its ``Geometry3D`` feeds the result message (``orcnn_ros.conversions``), the labelled point cloud and
the results JSON of ``orcnn predict --depth``. Units: metres, the camera's optical frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from orcnn_core.depth.camera import CameraIntrinsics
from orcnn_core.depth.depth_io import DepthFrame
from orcnn_core.depth.geometry import back_project, footprint_on_plane, robust_surface
from orcnn_core.errors import InputError


@dataclass(frozen=True)
class Geometry3DConfig:
    """How the visible surface of an instance is measured (see ``geometry.robust_surface``)."""

    core_erosion_px: int = 2         # the plane is fitted away from the mask edge (flying pixels live there)
    min_points: int = 20             # fewer valid inlier depth pixels: no 3D for that instance
    inlier_sigmas: float = 3.0       # inliers lie within this many robust sigmas of the fitted plane ...
    min_tolerance_m: float = 0.005   # ... and never closer than this (sensor noise floor)
    max_footprint_vertices: int = 64  # the amodal outline is simplified to at most this many vertices

    def validate(self) -> None:
        """InputError naming the first field out of range."""
        if isinstance(self.core_erosion_px, bool) or not 0 <= int(self.core_erosion_px) <= 50:
            raise InputError(f"core_erosion_px must be in [0, 50], got {self.core_erosion_px}")
        if isinstance(self.min_points, bool) or int(self.min_points) < 3:
            raise InputError(f"min_points must be >= 3, got {self.min_points}")
        if not self.inlier_sigmas > 0 or not self.min_tolerance_m > 0:
            raise InputError("inlier_sigmas and min_tolerance_m must be > 0")
        if isinstance(self.max_footprint_vertices, bool) or int(self.max_footprint_vertices) < 3:
            raise InputError(f"max_footprint_vertices must be >= 3, got {self.max_footprint_vertices}")


@dataclass
class Geometry3D:
    """3D of N instances in the camera's optical frame (metres); rows of instances without 3D are 0."""

    has_3d: np.ndarray            # (N,) bool: enough valid depth on the visible part
    visible_centroid: np.ndarray  # (N, 3) robust centroid of the visible surface points
    surface_normal: np.ndarray    # (N, 3) unit normal there, towards the camera
    visible_box_min: np.ndarray   # (N, 3) axis-aligned box of the visible surface points ...
    visible_box_max: np.ndarray   # (N, 3) ... its opposite corner
    valid_points: np.ndarray      # (N,) int64 inlier depth pixels used
    amodal_centroid: np.ndarray   # (N, 3) centroid of the whole object placed on its visible surface
    amodal_footprint: list        # N (K, 3) float32 outlines of the whole object on that surface
    points: list                  # N (K, 3) float32 inlier points of the visible surface (for clouds)
    camera: CameraIntrinsics      # the camera the points were measured with

    def __len__(self) -> int:
        return int(self.has_3d.shape[0])

    @classmethod
    def empty(cls, count: int, camera: CameraIntrinsics) -> Geometry3D:
        """``count`` instances, none with 3D."""
        zeros = lambda: np.zeros((count, 3), np.float64)  # noqa: E731
        return cls(has_3d=np.zeros(count, bool), visible_centroid=zeros(), surface_normal=zeros(),
                   visible_box_min=zeros(), visible_box_max=zeros(), valid_points=np.zeros(count, np.int64),
                   amodal_centroid=zeros(), amodal_footprint=[np.zeros((0, 3), np.float32)] * count,
                   points=[np.zeros((0, 3), np.float32)] * count, camera=camera)

    def instance_json(self, i: int) -> dict[str, Any]:
        """Instance ``i`` as the ``geometry_3d`` entry of the results JSON (metres, camera frame)."""
        if not self.has_3d[i]:
            return {"has_3d": False}
        as_list = lambda v: [round(float(x), 6) for x in v]  # noqa: E731  (micrometres: plenty)
        return {"has_3d": True, "visible_centroid": as_list(self.visible_centroid[i]),
                "surface_normal": as_list(self.surface_normal[i]),
                "visible_box_min": as_list(self.visible_box_min[i]),
                "visible_box_max": as_list(self.visible_box_max[i]),
                "valid_points": int(self.valid_points[i]),
                "amodal_centroid": as_list(self.amodal_centroid[i]),
                "amodal_footprint": [as_list(p) for p in self.amodal_footprint[i]]}


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    # Zero border: the crop is the mask's tight box, so its border is the mask's edge.
    eroded = cv2.erode(mask.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return eroded.view(bool)


def compute_geometry(visible_masks: np.ndarray, amodal_masks: np.ndarray, visible_boxes: np.ndarray,
                     amodal_boxes: np.ndarray, depth: DepthFrame,
                     config: Geometry3DConfig = Geometry3DConfig()) -> Geometry3D:
    """``Geometry3D`` of N instances from (N, H, W) bool masks, their tight (N, 4) x0 y0 x1 y1 int boxes
    and a checked ``DepthFrame`` of the same size. Only each mask's box is touched."""
    count = len(visible_masks)
    camera, depth_m = depth.camera, depth.depth_m
    geometry = Geometry3D.empty(count, camera)
    footprints, points = list(geometry.amodal_footprint), list(geometry.points)
    for i in range(count):
        x0, y0, x1, y1 = (int(v) for v in visible_boxes[i])
        visible = np.ascontiguousarray(visible_masks[i, y0:y1, x0:x1])
        if not visible.any():
            continue
        crop_depth = depth_m[y0:y1, x0:x1]
        valid = visible & (crop_depth > 0)
        rows, cols = np.nonzero(valid)
        if len(rows) < config.min_points:
            continue
        core = _erode(visible, config.core_erosion_px)[rows, cols]
        surface_points = back_project(cols + x0, rows + y0, crop_depth[rows, cols], camera)
        surface = robust_surface(surface_points, core, config.min_points, config.inlier_sigmas,
                                 config.min_tolerance_m)
        if surface is None:
            continue
        ax0, ay0, ax1, ay1 = (int(v) for v in amodal_boxes[i])
        outline, amodal_centroid = footprint_on_plane(amodal_masks[i, ay0:ay1, ax0:ax1], (ax0, ay0), surface,
                                                      camera, config.max_footprint_vertices)
        geometry.has_3d[i] = True
        geometry.visible_centroid[i] = surface.centroid
        geometry.surface_normal[i] = surface.normal
        geometry.visible_box_min[i] = surface.box_min
        geometry.visible_box_max[i] = surface.box_max
        geometry.valid_points[i] = surface.count
        geometry.amodal_centroid[i] = amodal_centroid
        footprints[i], points[i] = outline, surface.points.T.astype(np.float32)
    geometry.amodal_footprint, geometry.points = footprints, points
    return geometry

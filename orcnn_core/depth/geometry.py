"""3D geometry of depth pixels (pure numpy): back-projection, a robust plane fit, footprints on a plane.

Frame: the camera's optical frame in metres (x right, y down, z forward); pixel (u, v) = (column,
row) with integer coordinates at pixel centres, as in ROS ``camera_info``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from orcnn_core.depth.camera import CameraIntrinsics

# Least-squares fits and robust spreads use at most this many points (every k-th): a plane needs
# few (its error at 3 mm depth noise and 1024 points is ~0.1 mm), and large objects would otherwise
# cost time for no accuracy. The centroid, box and inliers still use every point.
MAX_FIT_POINTS = 1024
# The hidden part's centroid is averaged over at most this many amodal pixels (every k-th in raster
# order: far below a millimetre from the mean of all of them).
MAX_FOOTPRINT_POINTS = 4096
# Robust spread of residuals: 1.4826 * MAD is the standard deviation for Gaussian noise.
MAD_TO_SIGMA = 1.4826


def pixel_rays(us: np.ndarray, vs: np.ndarray, camera: CameraIntrinsics) -> np.ndarray:
    """(3, N) float64 rays through pixels (u, v), scaled so that z = 1 (one row per coordinate: the
    per-point work below runs on contiguous rows)."""
    rays = np.empty((3, len(us)), dtype=np.float64)
    rays[0] = (np.asarray(us, np.float64) - camera.cx) / camera.fx
    rays[1] = (np.asarray(vs, np.float64) - camera.cy) / camera.fy
    rays[2] = 1.0
    return rays


def back_project(us: np.ndarray, vs: np.ndarray, z: np.ndarray, camera: CameraIntrinsics) -> np.ndarray:
    """(3, N) float64 points (rows x, y, z) of pixels (u, v) with depth ``z`` (metres along the axis)."""
    return pixel_rays(us, vs, camera) * np.asarray(z, np.float64)


def project(points: np.ndarray, camera: CameraIntrinsics) -> np.ndarray:
    """(2, N) pixel coordinates (rows u, v) of (3, N) points in front of the camera (z > 0)."""
    points = np.asarray(points, np.float64)
    return np.stack([camera.fx * points[0] / points[2] + camera.cx,
                     camera.fy * points[1] / points[2] + camera.cy])


def _thin(points: np.ndarray, limit: int = MAX_FIT_POINTS) -> np.ndarray:
    """Every k-th column of (3, N) points, at most ``limit`` of them."""
    step = max(1, int(np.ceil(points.shape[1] / limit)))
    return points if step == 1 else np.ascontiguousarray(points[:, ::step])  # strided views slow compress


def fit_plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centroid, unit normal) of the least-squares plane through (3, N >= 3) points.

    The normal points towards the camera (the origin): ``normal . centroid < 0``.
    """
    sample = _thin(np.asarray(points, np.float64))
    centroid = _mean(sample)
    centred = sample - centroid[:, None]
    _, vectors = np.linalg.eigh(centred @ centred.T)
    normal = vectors[:, 0]  # eigenvector of the smallest eigenvalue
    if normal @ centroid > 0:
        normal = -normal
    return centroid, normal / np.linalg.norm(normal)


def _median(values: np.ndarray) -> float:
    """The (upper) median: one partition, without np.median's overhead (this runs per instance)."""
    middle = len(values) // 2
    return float(np.partition(values, middle)[middle])


def _mad_sigma(values: np.ndarray, median: Optional[float] = None) -> float:
    median = _median(values) if median is None else median
    return MAD_TO_SIGMA * _median(np.abs(values - median))


def _mean(points: np.ndarray) -> np.ndarray:
    """Row means of (3, N) points as one matrix-vector product (faster than a strided reduction)."""
    return points @ np.full(points.shape[1], 1.0 / points.shape[1])


@dataclass
class SurfaceEstimate:
    """A visible surface seen in depth: its robust centroid, normal there, box and inlier points."""

    centroid: np.ndarray      # (3,) mean of the inlier points
    normal: np.ndarray        # (3,) unit, towards the camera, of the surface around the centroid
    box_min: np.ndarray       # (3,) smallest x, y, z of the inliers
    box_max: np.ndarray       # (3,) largest x, y, z of the inliers
    plane_point: np.ndarray   # (3,) and ...
    plane_normal: np.ndarray  # (3,) ... the plane fitted to the whole visible surface
    points: np.ndarray        # (3, K) inlier points

    @property
    def count(self) -> int:
        """Number of inlier points."""
        return int(self.points.shape[1])


def robust_surface(points: np.ndarray, core: np.ndarray, min_points: int = 20, inlier_sigmas: float = 3.0,
                   min_tolerance_m: float = 0.005) -> Optional[SurfaceEstimate]:
    """The surface of (3, N) depth points of one visible mask, robust to holes, flying pixels and mask
    pixels that fall on another surface; None with fewer than ``min_points`` inliers.

    ``core`` (N,) marks points away from the mask's edge (where flying pixels and mask errors live):
    the plane is fitted to them (to all points when fewer than ``min_points`` are core; to every
    k-th of them beyond ``MAX_FIT_POINTS``). Steps: core points within ``inlier_sigmas`` robust
    sigmas (at least ``min_tolerance_m``) of their median depth seed a plane fit; every point within
    ``inlier_sigmas`` robust sigmas of the plane (at least ``min_tolerance_m``) is an inlier; the fit
    is repeated once on the core inliers; the centroid is the mean of all inliers. The normal is
    fitted to the inliers nearest the centroid (a quarter of them, at least ``min_points``), so a
    curved object gets the normal where a gripper would touch it.
    """
    points = np.asarray(points, np.float64)
    if points.shape[1] < min_points:
        return None
    core = np.asarray(core, bool)
    fit = _thin(np.compress(core, points, axis=1) if np.count_nonzero(core) >= min_points else points)
    z = fit[2]
    median = _median(z)
    tolerance = max(inlier_sigmas * _mad_sigma(z, median), min_tolerance_m)
    seed = np.compress(np.abs(z - median) <= tolerance, fit, axis=1)
    if seed.shape[1] < 3:
        return None
    for _ in range(2):
        plane_point, plane_normal = fit_plane(seed)
        offset = plane_normal @ plane_point
        fit_residuals = plane_normal @ fit - offset
        tolerance = max(inlier_sigmas * _mad_sigma(fit_residuals), min_tolerance_m)
        next_seed = np.compress(np.abs(fit_residuals) <= tolerance, fit, axis=1)
        if next_seed.shape[1] < 3:
            break
        seed = next_seed
    kept = np.compress(np.abs(plane_normal @ points - offset) <= tolerance, points, axis=1)
    if kept.shape[1] < min_points:
        return None
    centroid = _mean(kept)
    normal = plane_normal
    local_count = max(min_points, kept.shape[1] // 4)
    if local_count < kept.shape[1]:
        offsets = kept - centroid[:, None]
        distance = np.einsum("ij,ij->j", offsets, offsets)
        _, local_normal = fit_plane(np.take(kept, np.argpartition(distance, local_count - 1)[:local_count],
                                            axis=1))
        if np.all(np.isfinite(local_normal)):
            normal = local_normal
    return SurfaceEstimate(centroid=centroid, normal=normal, box_min=kept.min(axis=1),
                           box_max=kept.max(axis=1), plane_point=plane_point, plane_normal=plane_normal,
                           points=kept)


# A plane seen this close to edge-on (|cos| between its normal and a pixel ray) cannot place hidden
# pixels reliably; they go to the fronto-parallel plane through the visible centroid instead.
MIN_RAY_PLANE_COSINE = 0.2


def intersect_plane(rays: np.ndarray, plane_point: np.ndarray,
                    plane_normal: np.ndarray) -> Optional[np.ndarray]:
    """(3, N) points where (3, N) rays from the camera centre meet a plane; None when any ray meets it
    at a grazing angle (or behind the camera)."""
    rays = np.asarray(rays, np.float64)
    if not rays.shape[1]:
        return rays.copy()
    denominators = plane_normal @ rays
    cosines = np.abs(denominators) / np.sqrt(np.einsum("ij,ij->j", rays, rays))
    scale = (plane_point @ plane_normal) / denominators
    if cosines.min() < MIN_RAY_PLANE_COSINE or scale.min() <= 0:
        return None
    return rays * scale


def mask_outline(mask: np.ndarray, max_vertices: int = 64) -> np.ndarray:
    """(K, 2) float64 pixel coordinates (u, v) of the outer contour of a bool mask's largest part,
    through its boundary pixels' centres, simplified to at most ``max_vertices`` vertices."""
    crop = np.ascontiguousarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return np.zeros((0, 2), np.float64)
    contour = max(contours, key=cv2.contourArea)
    epsilon = 0.75
    outline = contour
    while len(outline) > max_vertices:
        outline = cv2.approxPolyDP(contour, epsilon, True)
        epsilon *= 1.5
    return outline.reshape(-1, 2).astype(np.float64)


def footprint_on_plane(amodal_crop: np.ndarray, offset: tuple, surface: SurfaceEstimate,
                       camera: CameraIntrinsics, max_vertices: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(outline (K, 3) float32, centroid (3,)) of a whole object's mask placed on its visible surface.

    Every amodal pixel (every k-th of more than ``MAX_FOOTPRINT_POINTS``), hidden ones included, is
    put where its ray meets the plane fitted to the visible surface; a plane seen nearly edge-on is
    replaced by the fronto-parallel plane through the visible centroid. ``offset`` = (x0, y0) of the
    crop in the image.
    """
    x0, y0 = offset
    rows, cols = np.nonzero(amodal_crop)
    step = max(1, int(np.ceil(len(rows) / MAX_FOOTPRINT_POINTS)))
    rays = pixel_rays(cols[::step] + x0, rows[::step] + y0, camera)
    outline_px = mask_outline(amodal_crop, max_vertices) + np.asarray([x0, y0], np.float64)
    outline_rays = pixel_rays(outline_px[:, 0], outline_px[:, 1], camera)
    plane = (surface.plane_point, surface.plane_normal)
    placed = intersect_plane(rays, *plane)
    outline = intersect_plane(outline_rays, *plane) if placed is not None else None
    if placed is None or outline is None:
        plane = (surface.centroid, np.asarray([0.0, 0.0, -1.0]))
        placed, outline = intersect_plane(rays, *plane), intersect_plane(outline_rays, *plane)
    centroid = _mean(placed) if placed.shape[1] else surface.centroid.copy()
    return outline.T.astype(np.float32), centroid

"""Depth messages to numpy and back, without ROS: aligned depth images, camera_info, labelled points.

Like ``conversions``, these take any object with the ROS field names (rclpy messages, rosbags
dataclasses, ``SimpleNamespace``). A depth message or camera_info that cannot be used is a
``DepthError`` whose ``cause`` says why (``orcnn_core.depth.depth_io.NO_3D_CAUSES``); the frame then
goes on without 3D.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orcnn_core.analysis import FrameAnalysis
from orcnn_core.data.image_decode import MAX_IMAGE_PIXELS
from orcnn_core.depth.camera import CameraError, CameraIntrinsics
from orcnn_core.depth.depth_io import DepthError, DepthFrame, metres_from_millimetres, sanitize_metres
from orcnn_ros.conversions import ImageInputError, _data_bytes

#: Depth encodings read, with their numpy type: millimetres (0 = no reading) or metres (NaN / 0 = none).
DEPTH_ENCODINGS = {"16uc1": np.dtype("<u2"), "mono16": np.dtype("<u2"), "32fc1": np.dtype("<f4")}


def depth_msg_to_metres(msg: Any) -> np.ndarray:
    """HxW float32 metres (0 = no reading) of a depth ``sensor_msgs/Image`` (16UC1 mm or 32FC1 m)."""
    encoding = str(getattr(msg, "encoding", "")).lower()
    if encoding not in DEPTH_ENCODINGS:
        raise DepthError("depth_encoding", f"depth Image.encoding '{msg.encoding}' is not supported "
                                           "(16UC1 millimetres or 32FC1 metres)")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0 or height * width > MAX_IMAGE_PIXELS:
        raise DepthError("depth_malformed", f"depth Image is {width}x{height} pixels (at most "
                                            f"{MAX_IMAGE_PIXELS} pixels, none zero)")
    dtype = DEPTH_ENCODINGS[encoding]
    if bool(getattr(msg, "is_bigendian", 0)):
        dtype = dtype.newbyteorder(">")
    row_bytes = width * dtype.itemsize
    try:
        data = _data_bytes(msg.data, "depth Image.data")
    except ImageInputError as exc:
        raise DepthError("depth_malformed", str(exc)) from None
    if step < row_bytes or data.size != step * height:
        raise DepthError("depth_malformed", f"depth Image.data has {data.size} bytes, step {step}: expected "
                                            f"step >= {row_bytes} and step*height = {step * height} "
                                            f"({width}x{height} {msg.encoding})")
    rows = data.reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
    if dtype.kind == "u":
        return metres_from_millimetres(pixels)
    return sanitize_metres(pixels)


def camera_from_info(info: Any, depth_size: tuple) -> CameraIntrinsics:
    """Intrinsics of a ``sensor_msgs/CameraInfo`` for a depth image of ``depth_size`` = (H, W).

    Refused (``camera_invalid``): a missing, zero or non-finite K, and a camera_info that states a
    size other than the depth image's (a size of 0x0, "not set", is accepted).
    """
    width, height = int(getattr(info, "width", 0)), int(getattr(info, "height", 0))
    if (width or height) and (height, width) != tuple(depth_size):
        raise DepthError("camera_invalid", f"camera_info is for {width}x{height} images but the depth "
                                           f"image is {depth_size[1]}x{depth_size[0]}")
    try:
        return CameraIntrinsics.from_k(getattr(info, "k", None), "camera_info")
    except CameraError as exc:
        raise DepthError("camera_invalid", str(exc)) from None


def depth_frame_from_msgs(depth_msg: Any, info_msg: Any) -> DepthFrame:
    """The ``DepthFrame`` of a depth image and its camera_info; DepthError when either is unusable."""
    depth = depth_msg_to_metres(depth_msg)
    return DepthFrame(depth, camera_from_info(info_msg, depth.shape))


def depth_image_fields(depth_mm: np.ndarray) -> dict:
    """Fields of a ``16UC1`` ``sensor_msgs/Image`` (millimetres) from an HxW uint16 array."""
    depth_mm = np.ascontiguousarray(depth_mm, dtype="<u2")
    height, width = depth_mm.shape
    return {"height": height, "width": width, "encoding": "16UC1", "is_bigendian": 0, "step": width * 2,
            "data": depth_mm.reshape(-1).view(np.uint8)}


def camera_info_fields(camera: CameraIntrinsics, height: int, width: int) -> dict:
    """Fields of a ``sensor_msgs/CameraInfo`` of a rectified pinhole camera (no distortion)."""
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    return {"height": int(height), "width": int(width), "distortion_model": "plumb_bob",
            "d": np.zeros(5, np.float64), "k": np.asarray([fx, 0, cx, 0, fy, cy, 0, 0, 1], np.float64),
            "r": np.eye(3).reshape(-1), "p": np.asarray([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], np.float64)}


#: PointCloud2 layout of labelled points: x, y, z float32 metres, label uint32 (the instance id).
POINT_FIELDS = (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("label", 12, 6))  # (name, offset, datatype)
POINT_STEP = 16


def labelled_points(frame: FrameAnalysis) -> tuple[np.ndarray, np.ndarray]:
    """((K, 3) float32 points, (K,) uint32 instance ids) of every instance's visible surface inliers."""
    geometry = frame.geometry
    if geometry is None or not len(geometry):
        return np.zeros((0, 3), np.float32), np.zeros(0, np.uint32)
    points = [p for p in geometry.points]
    labels = [np.full(len(p), i, np.uint32) for i, p in enumerate(points)]
    return np.concatenate(points).astype(np.float32), np.concatenate(labels)


def point_cloud_fields(frame: FrameAnalysis) -> dict:
    """Fields of an unorganised ``sensor_msgs/PointCloud2`` (x, y, z, label) of ``labelled_points``
    (``fields`` as (name, offset, datatype, count) tuples for the caller's PointField class)."""
    points, labels = labelled_points(frame)
    record = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<u4")])
    record["x"], record["y"], record["z"], record["label"] = points[:, 0], points[:, 1], points[:, 2], labels
    return {"height": 1, "width": len(points), "is_bigendian": False, "point_step": POINT_STEP,
            "row_step": POINT_STEP * len(points), "is_dense": True,
            "fields": [(name, offset, datatype, 1) for name, offset, datatype in POINT_FIELDS],
            "data": record.view(np.uint8).reshape(-1)}

"""Depth images: PNG files (uint16 millimetres, 0 = no reading), ``DepthFrame``, and when depth is usable.

A depth image is kept as float32 metres with 0 where the sensor has no reading (a hole): the value
a uint16 file or a ``16UC1`` message stores there. Values that cannot be a distance (NaN, infinite,
negative, beyond ``MAX_RANGE_M``) become holes too, so nothing downstream sees them.

Depth that cannot be used makes a frame lose its 3D, never the frame: every refusal is a
``DepthError`` whose ``cause`` is a short stable key, counted per cause by the node, the replay and
``orcnn predict`` (``NO_3D_CAUSES`` lists them all).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import cv2
import numpy as np

from orcnn_core.data.image_decode import MAX_ENCODED_BYTES, ImageDecodeError, read_image_header
from orcnn_core.depth.camera import CameraError, CameraIntrinsics, CameraTable
from orcnn_core.errors import InputError

#: Readings beyond this (metres) are treated as holes: no depth camera measures that far.
MAX_RANGE_M = 100.0

#: Why a frame (or image) has no 3D: cause key -> meaning (docs/ros.md "Depth and 3D").
NO_3D_CAUSES = {
    "depth_encoding": "depth image encoding is not 16UC1 (millimetres) or 32FC1 (metres)",
    "depth_malformed": "depth message whose step, data size or dimensions disagree",
    "depth_size_mismatch": "depth image and colour image differ in size",
    "camera_invalid": "camera_info / camera file with missing, zero or non-finite intrinsics, or of "
                      "another size than the depth image",
    "depth_all_holes": "depth image without a single valid reading",
    "depth_not_matched": "no depth image within the stamp slop of the colour frame",
    "no_depth_yet": "no depth image (with camera_info) received yet",
    "depth_missing": "no depth file for the image",
    "depth_unreadable": "depth file that is not a 16-bit single-channel PNG or cannot be decoded",
    "camera_missing": "the camera file has no camera for the image",
}


class DepthError(InputError):
    """Depth that cannot be used for one frame; ``cause`` is a key of ``NO_3D_CAUSES``."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause

    def __reduce__(self) -> tuple:
        return type(self), (self.cause, str(self))


@dataclass(frozen=True)
class DepthFrame:
    """A depth image aligned with (registered to) the colour image, and the camera of both.

    ``depth_m`` is HxW float32 metres along the optical axis, 0 = no reading.
    """

    depth_m: np.ndarray
    camera: CameraIntrinsics

    def check(self, image_size: tuple, source: str = "depth") -> DepthFrame:
        """Itself when usable with a colour image of ``image_size`` = (H, W); DepthError otherwise."""
        size = tuple(int(v) for v in self.depth_m.shape)
        if size != tuple(int(v) for v in image_size):
            raise DepthError("depth_size_mismatch", f"{source}: depth is {size[1]}x{size[0]} but the colour "
                                                    f"image is {image_size[1]}x{image_size[0]}")
        try:
            self.camera.check(f"{source} camera")
        except CameraError as exc:
            raise DepthError("camera_invalid", str(exc)) from None
        if not np.any(self.depth_m > 0):
            raise DepthError("depth_all_holes", f"{source}: no valid depth reading in the whole image")
        return self


def metres_from_millimetres(depth_mm: np.ndarray) -> np.ndarray:
    """float32 metres (0 = hole) of a uint16 millimetre image (0 = no reading)."""
    depth = np.asarray(depth_mm, dtype=np.float32)
    depth *= np.float32(0.001)
    return depth


def sanitize_metres(depth: np.ndarray) -> np.ndarray:
    """float32 metres; readings that cannot be a distance (NaN, inf, <= 0, > MAX_RANGE_M) set to 0."""
    depth = np.array(depth, dtype=np.float32, copy=True)
    bad = ~np.isfinite(depth)
    bad |= depth <= 0
    bad |= depth > MAX_RANGE_M
    depth[bad] = 0.0
    return depth


def millimetres_from_metres(depth_m: np.ndarray) -> np.ndarray:
    """uint16 millimetres of float metres (rounded; holes and readings beyond 65.535 m become 0)."""
    depth = sanitize_metres(depth_m)
    mm = np.rint(depth * 1000.0)
    mm[mm > np.iinfo(np.uint16).max] = 0
    return mm.astype(np.uint16)


def _png_bit_depth_and_colour(data: bytes) -> tuple:
    """(bit depth, colour type) from the IHDR chunk of a PNG whose header was already checked."""
    return struct.unpack_from(">BB", data, 8 + 8 + 8)  # signature, IHDR length+type, width+height


def read_depth_png(path: Union[str, Path]) -> np.ndarray:
    """float32 metres (0 = hole) of a uint16 millimetre depth PNG; DepthError naming the file."""
    return metres_from_millimetres(read_depth_png_mm(path))


def read_depth_png_mm(path: Union[str, Path]) -> np.ndarray:
    """HxW uint16 millimetres (0 = no reading) of a depth PNG; DepthError naming the file.

    The PNG header is checked before decoding (size limits, completeness, 16-bit grayscale), so
    nothing unchecked reaches the decoder.
    """
    path = Path(path)
    if not path.is_file():
        raise DepthError("depth_missing", f"depth file not found: {path}")
    try:
        if path.stat().st_size > MAX_ENCODED_BYTES:
            raise DepthError("depth_unreadable", f"depth file {path}: larger than {MAX_ENCODED_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise DepthError("depth_unreadable",
                         f"cannot read depth file {path}: {exc.strerror or exc}") from None
    try:
        header = read_image_header(data, f"depth file {path}")
    except ImageDecodeError as exc:
        raise DepthError("depth_unreadable", str(exc)) from None
    if header.format != "png":
        raise DepthError("depth_unreadable", f"depth file {path}: {header.format.upper()}, expected a "
                                             "16-bit grayscale PNG (millimetres)")
    bit_depth, colour = _png_bit_depth_and_colour(data)
    if (bit_depth, colour) != (16, 0):
        raise DepthError("depth_unreadable", f"depth file {path}: PNG of bit depth {bit_depth}, colour type "
                                             f"{colour}; expected 16-bit grayscale (millimetres)")
    try:
        depth = cv2.imdecode(np.frombuffer(data, np.uint8, count=header.end), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        depth = None
    if depth is None or depth.dtype != np.uint16 or depth.shape != (header.height, header.width):
        raise DepthError("depth_unreadable", f"depth file {path}: corrupt 16-bit PNG")
    return depth


def write_depth_png(path: Union[str, Path], depth: np.ndarray) -> None:
    """Write a depth image as a uint16 millimetre PNG: uint16 input as it is, float input as metres."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    depth = np.asarray(depth)
    mm = depth if depth.dtype == np.uint16 else millimetres_from_metres(depth)
    if mm.ndim != 2:
        raise InputError(f"depth image for {path} must be HxW, got shape {mm.shape}")
    ok, encoded = cv2.imencode(".png", mm, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise InputError(f"cannot encode depth PNG for {path}")
    path.write_bytes(encoded.tobytes())


def depth_file_for(depth_dir: Union[str, Path], image_name: str) -> Path:
    """The depth file of image ``image_name`` (relative path): the same relative path, as ``.png``."""
    return Path(depth_dir) / Path(image_name).with_suffix(".png")


def load_depth_frame(depth_dir: Union[str, Path], image_name: str, cameras: CameraTable,
                     image_size: tuple) -> DepthFrame:
    """The checked ``DepthFrame`` of image file ``image_name`` (relative to its folder) from its depth
    file and ``cameras``; DepthError (with its cause) when unusable."""
    depth = read_depth_png(depth_file_for(depth_dir, image_name))
    try:
        camera = cameras.for_image(image_name)
    except CameraError as exc:
        raise DepthError("camera_missing", str(exc)) from None
    return DepthFrame(depth, camera).check(image_size, f"depth file {depth_file_for(depth_dir, image_name)}")

"""Pinhole camera intrinsics, and the camera files of ``orcnn predict --depth`` / ``bag-from-images``.

A camera file is either one JSON object ``{"fx": .., "fy": .., "cx": .., "cy": ..}`` (pixels; the
same camera for every image) or an annotation file written by ``orcnn synth --depth``, whose
``images[k].camera`` holds each image's own intrinsics (looked up by ``file_name``).
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from orcnn_core.errors import InputError

CAMERA_KEYS = ("fx", "fy", "cx", "cy")


class CameraError(InputError):
    """Intrinsics that cannot be used (missing, zero, negative or not finite); names the source."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """A pinhole camera: focal lengths and principal point in pixels (no distortion: rectified images).

    Pixel (u, v) with depth z (metres along the optical axis) is the point
    ``((u - cx) * z / fx, (v - cy) * z / fy, z)`` in the camera's optical frame.
    """

    fx: float
    fy: float
    cx: float
    cy: float

    def check(self, source: str = "camera") -> CameraIntrinsics:
        """Itself when usable; CameraError naming ``source`` and the bad value otherwise."""
        for key in CAMERA_KEYS:
            value = getattr(self, key)
            if not math.isfinite(value):
                raise CameraError(f"{source}: {key} is not finite ({value})")
        if self.fx <= 0 or self.fy <= 0:
            raise CameraError(f"{source}: focal lengths must be > 0, got fx={self.fx}, fy={self.fy} "
                              "(zero intrinsics: is the camera calibrated?)")
        return self

    def as_dict(self) -> dict:
        """``{"fx", "fy", "cx", "cy"}`` as plain floats (the annotation and camera file form)."""
        return {key: float(getattr(self, key)) for key in CAMERA_KEYS}

    @classmethod
    def from_mapping(cls, data: Any, source: str) -> CameraIntrinsics:
        """From ``{"fx", "fy", "cx", "cy"}`` (numbers); CameraError naming ``source`` and the key."""
        if not isinstance(data, Mapping):
            raise CameraError(f"{source}: camera must be an object with {', '.join(CAMERA_KEYS)}, "
                              f"got {type(data).__name__}")
        values = []
        for key in CAMERA_KEYS:
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CameraError(f"{source}: camera '{key}' must be a number, got {value!r}")
            values.append(float(value))
        return cls(*values).check(source)

    @classmethod
    def from_k(cls, k: Any, source: str) -> CameraIntrinsics:
        """From a row-major 3x3 camera matrix (``sensor_msgs/CameraInfo.k``); CameraError if unusable."""
        try:
            values = [float(v) for v in k]
        except (TypeError, ValueError):
            raise CameraError(f"{source}: K is not a list of 9 numbers") from None
        if len(values) != 9:
            raise CameraError(f"{source}: K has {len(values)} entries, expected 9")
        return cls(values[0], values[4], values[2], values[5]).check(source)


class CameraTable:
    """The intrinsics of each image, from a camera file (see the module docstring)."""

    def __init__(self, path: Path, single: Optional[CameraIntrinsics] = None,
                 by_name: Optional[dict] = None) -> None:
        self.path = path
        self.single = single
        self.by_name = dict(by_name or {})
        basenames: dict = {}
        for name, camera in self.by_name.items():
            base = posixpath.basename(name)
            basenames[base] = camera if base not in basenames else None  # ambiguous base names: no entry
        self._by_basename = basenames

    def for_image(self, name: str) -> CameraIntrinsics:
        """The camera of image ``name`` (path relative to the image folder); CameraError when unknown."""
        if self.single is not None:
            return self.single
        camera = self.by_name.get(name) or self._by_basename.get(posixpath.basename(name))
        if camera is None:
            raise CameraError(f"camera file {self.path}: no camera for image '{name}'")
        return camera

    def __len__(self) -> int:
        return 1 if self.single is not None else len(self.by_name)


def read_camera_file(path: Union[str, Path]) -> CameraTable:
    """A ``CameraTable`` from a camera JSON or an ``orcnn synth --depth`` annotation file.

    A malformed file, a camera with a missing or non-positive value, or an annotation file whose
    images carry no ``camera`` is an InputError naming the file (and image).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CameraError(f"cannot read camera file {path}: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:
        raise CameraError(f"camera file {path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and all(key in data for key in CAMERA_KEYS):
        return CameraTable(path, single=CameraIntrinsics.from_mapping(data, f"camera file {path}"))
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        by_name = {}
        for entry in data["images"]:
            if not isinstance(entry, dict) or "camera" not in entry:
                continue
            name = str(entry.get("file_name", ""))
            where = f"camera file {path}, image '{name}'"
            by_name[name] = CameraIntrinsics.from_mapping(entry["camera"], where)
        if not by_name:
            raise CameraError(f"camera file {path}: an annotation file without per-image 'camera' "
                              "(write one with `orcnn synth --depth`, or give {fx, fy, cx, cy})")
        return CameraTable(path, by_name=by_name)
    raise CameraError(f"camera file {path}: expected {{\"fx\", \"fy\", \"cx\", \"cy\"}} or an annotation "
                      "file with images[k].camera")

"""``orcnn bag-from-images``: a rosbag2 from a folder of images, and the image map that ties each frame's
stamp back to its file (what ``orcnn replay --gt`` uses to find a frame's ground truth).

With a depth folder and a camera file, each frame also gets its aligned depth image (``16UC1``
millimetres, from ``DEPTH_DIR/NAME.png``) and a ``sensor_msgs/CameraInfo``, with the frame's stamp.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from orcnn_core.data.images import IMAGE_EXTENSIONS, list_images
from orcnn_core.errors import InputError
from orcnn_core.fileio import atomic_write_text
from orcnn_ros.bagio import COMPRESSED_TYPE, IMAGE_TYPE, BagWriter, PathLike, prepare_output

IMAGE_MAP_NAME = "image_map.json"
DEPTH_TOPIC = "/depth/image"
CAMERA_INFO_TOPIC = "/depth/camera_info"
_ENCODED_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}


@dataclass(frozen=True)
class MapEntry:
    """One frame of a bag made by ``images_to_bag``: index in the topic, stamp (ns), source file."""

    index: int
    stamp_ns: int
    file_name: str  # relative to the image folder, POSIX separators


def image_map_path(bag: PathLike) -> Path:
    """Where the image map of ``bag`` lives: inside a bag folder, next to a bare bag file."""
    bag = Path(bag)
    return bag / IMAGE_MAP_NAME if bag.is_dir() or not bag.suffix else bag.parent / IMAGE_MAP_NAME


def write_image_map(path: PathLike, entries: Sequence[MapEntry]) -> None:
    """Write the image map: a JSON list of ``{index, stamp_ns, file_name}``."""
    rows = [{"index": e.index, "stamp_ns": e.stamp_ns, "file_name": e.file_name} for e in entries]
    atomic_write_text(path, json.dumps(rows, indent=1) + "\n")


def read_image_map(path: PathLike) -> list[MapEntry]:
    """Read an image map written by ``write_image_map``; a malformed one is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image map not found: {path} (written by 'orcnn bag-from-images'; "
                         "pass --image-map)")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [MapEntry(int(r["index"]), int(r["stamp_ns"]), str(r["file_name"])) for r in rows]
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError) as exc:
        raise InputError(f"image map {path} is malformed (expected a list of "
                         f"{{index, stamp_ns, file_name}}): {exc!r}") from exc


def _frame_message(path: Path, header: Any, compressed: bool) -> tuple[str, Any, tuple]:
    """(type, rosbags message, (height, width)) for one image file: raw bgr8 Image, or its encoded bytes
    as CompressedImage.

    The file goes through the project's one decoder first (header limits, truncation), so a bag never
    carries an image the node or the replay would refuse.
    """
    import cv2

    from orcnn_core.data.images import read_image_rgb
    from orcnn_ros import messages

    rgb = read_image_rgb(path)
    size = rgb.shape[:2]
    suffix = path.suffix.lower()
    if compressed and suffix in _ENCODED_FORMATS:
        data = path.read_bytes()  # the file's own bytes: lossless, decodes to the file's pixels
        return COMPRESSED_TYPE, messages.make_compressed_image(header, data, _ENCODED_FORMATS[suffix]), size
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if compressed:  # other formats become PNG, still lossless
        encoded = cv2.imencode(".png", bgr)[1]
        return COMPRESSED_TYPE, messages.make_compressed_image(header, encoded, "png"), size
    return IMAGE_TYPE, messages.make_image(header, bgr, encoding="bgr8"), size


def _depth_messages(folder: Path, path: Path, depth_dir: Path, cameras: Any, header: Any,
                    image_size: tuple) -> tuple[Any, Any]:
    """(16UC1 depth Image, CameraInfo) of one image file; InputError naming the file when unusable."""
    from orcnn_core.depth.depth_io import depth_file_for, read_depth_png_mm
    from orcnn_ros import messages
    from orcnn_ros.conversions import make_image_msg
    from orcnn_ros.depth_conversions import depth_image_fields

    name = path.relative_to(folder).as_posix()
    depth_mm = read_depth_png_mm(depth_file_for(depth_dir, name))
    if depth_mm.shape != image_size:
        raise InputError(f"depth file {depth_file_for(depth_dir, name)} is {depth_mm.shape[1]}x"
                         f"{depth_mm.shape[0]} but image {path} is {image_size[1]}x{image_size[0]}")
    camera = cameras.for_image(name)
    depth = make_image_msg(messages.rosbags_factories(), header, depth_image_fields(depth_mm))
    return depth, messages.make_camera_info(header, camera, *image_size)


def images_to_bag(folder: PathLike, out: PathLike, topic: str = "/image", rate_hz: float = 10.0,
                  compressed: bool = False, storage: str = "sqlite3", frame_id: str = "camera",
                  start_ns: int = 0, overwrite: bool = False, depth_dir: Optional[PathLike] = None,
                  camera_file: Optional[PathLike] = None, depth_topic: str = DEPTH_TOPIC,
                  camera_info_topic: str = CAMERA_INFO_TOPIC) -> list[MapEntry]:
    """Write the images of ``folder`` (sorted) as one image topic of a new bag, plus its image map.

    Frame ``k`` gets header stamp and receive time ``start_ns + round(k * 1e9 / rate_hz)``. With
    ``depth_dir`` and ``camera_file`` (``orcnn_core.depth.camera.read_camera_file``), its depth image
    and camera_info follow it on ``depth_topic`` and ``camera_info_topic`` with the same stamp. A file
    that cannot be decoded (or a missing depth file, or one of another size) is an error naming it,
    and no bag is left behind.
    """
    from orcnn_ros import messages

    if not rate_hz > 0:
        raise InputError(f"--rate must be positive, got {rate_hz}")
    if (depth_dir is None) != (camera_file is None):
        raise InputError("--depth and --camera go together")
    if depth_dir is not None and len({topic, depth_topic, camera_info_topic}) < 3:
        raise InputError("the image, depth and camera_info topics must be three different topics")
    files = list_images(folder)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    cameras = None
    if camera_file is not None:
        from orcnn_core.depth.camera import read_camera_file

        cameras = read_camera_file(camera_file)
        if not Path(depth_dir).is_dir():
            raise InputError(f"--depth: folder not found: {depth_dir}")
    out = prepare_output(out, overwrite)
    msgtype = COMPRESSED_TYPE if compressed else IMAGE_TYPE
    entries = []
    try:
        with BagWriter(out, storage) as writer:
            writer.add_topic(topic, msgtype, typestore=messages.typestore())
            if cameras is not None:
                writer.add_topic(depth_topic, messages.IMAGE_TYPE, typestore=messages.typestore())
                writer.add_topic(camera_info_topic, messages.CAMERA_INFO_TYPE, typestore=messages.typestore())
            for index, path in enumerate(files):
                stamp = int(start_ns) + round(index * 1e9 / rate_hz)
                header = messages.make_header(stamp // 10**9, stamp % 10**9, frame_id)
                _, msg, size = _frame_message(path, header, compressed)
                writer.write(topic, stamp, messages.serialize(msg, msgtype))
                if cameras is not None:  # after the colour frame, as depth usually arrives
                    depth, info = _depth_messages(Path(folder), path, Path(depth_dir), cameras, header, size)
                    writer.write(depth_topic, stamp, messages.serialize(depth, messages.IMAGE_TYPE))
                    info_bytes = messages.serialize(info, messages.CAMERA_INFO_TYPE)
                    writer.write(camera_info_topic, stamp, info_bytes)
                entries.append(MapEntry(index, stamp, path.relative_to(folder).as_posix()))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # we created it; a half bag of a dataset is no use
        raise
    write_image_map(image_map_path(out), entries)
    return entries

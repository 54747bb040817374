"""Our message types without ROS: the ``.msg`` files registered in a ``rosbags`` typestore.

The ``.msg`` definitions ship as package data in ``orcnn_ros/msg_definitions/`` (a copy of the
repository's ``msg/``, kept in sync by a test) so that they are found from a checkout and from a
pip install alike. Not ``orcnn_ros/msg``: on a colcon install rosidl generates that package.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from orcnn_core.errors import InputError
from orcnn_ros.conversions import MessageFactories

PACKAGE = "orcnn_ros"
MESSAGE_NAMES = ("AmodalInstance", "AmodalInstanceArray")
DEFINITIONS_DIR = Path(__file__).resolve().parent / "msg_definitions"

INSTANCE_TYPE = f"{PACKAGE}/msg/AmodalInstance"
INSTANCE_ARRAY_TYPE = f"{PACKAGE}/msg/AmodalInstanceArray"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
ROI_TYPE = "sensor_msgs/msg/RegionOfInterest"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
POINT_FIELD_TYPE = "sensor_msgs/msg/PointField"
POINT_TYPE = "geometry_msgs/msg/Point"
VECTOR3_TYPE = "geometry_msgs/msg/Vector3"
POLYGON_TYPE = "geometry_msgs/msg/Polygon"
POINT32_TYPE = "geometry_msgs/msg/Point32"
HEADER_TYPE = "std_msgs/msg/Header"
TIME_TYPE = "builtin_interfaces/msg/Time"


def message_definition(name: str) -> str:
    """Text of our ``.msg`` file ``name`` (e.g. ``"AmodalInstance"``) from the package data."""
    path = DEFINITIONS_DIR / f"{name}.msg"
    if not path.is_file():
        raise FileNotFoundError(f"message definition {path} missing: orcnn_ros was installed without "
                                "its msg_definitions package data")
    return path.read_text()


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """A ROS 2 Humble typestore (std_msgs, sensor_msgs, diagnostic_msgs, ...) plus our types."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict = {}
    for name in MESSAGE_NAMES:
        types.update(get_types_from_msg(message_definition(name), f"{PACKAGE}/msg/{name}"))
    store.register(types)
    return store


def msg_class(typename: str) -> type:
    """The rosbags dataclass of a message type, e.g. ``msg_class("sensor_msgs/msg/Image")``."""
    try:
        return typestore().types[typename]
    except KeyError:
        raise InputError(f"unknown message type '{typename}'") from None


def serialize(msg: Any, typename: str) -> bytes:
    """CDR (little endian) bytes of a rosbags message, as rosbag2 stores them."""
    return bytes(typestore().serialize_cdr(msg, typename))


def deserialize(data: bytes, typename: str) -> Any:
    """A rosbags message from CDR bytes; malformed data is an InputError naming the type."""
    try:
        return typestore().deserialize_cdr(data, typename)
    except Exception as exc:  # rosbags raises assorted errors (struct.error, IndexError, ...)
        raise InputError(f"cannot deserialize {typename} from {len(data)} bytes: {exc}") from exc


def make_header(sec: int = 0, nanosec: int = 0, frame_id: str = "") -> Any:
    """A rosbags ``std_msgs/msg/Header``."""
    return msg_class(HEADER_TYPE)(stamp=msg_class(TIME_TYPE)(sec=int(sec), nanosec=int(nanosec)),
                                  frame_id=str(frame_id))


def make_image(header: Any, rgb_or_mono: np.ndarray, encoding: str = "rgb8") -> Any:
    """A rosbags ``sensor_msgs/msg/Image`` from an HxWxC (or HxW) uint8 array, unpadded rows."""
    array = np.ascontiguousarray(rgb_or_mono, dtype=np.uint8)
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    return msg_class(IMAGE_TYPE)(header=header, height=height, width=width, encoding=encoding,
                                 is_bigendian=0, step=width * channels, data=array.reshape(-1))


def make_compressed_image(header: Any, data: bytes, fmt: str = "jpeg") -> Any:
    """A rosbags ``sensor_msgs/msg/CompressedImage`` holding encoded bytes."""
    return msg_class(COMPRESSED_IMAGE_TYPE)(header=header, format=fmt,
                                            data=np.frombuffer(bytes(data), dtype=np.uint8))


def make_camera_info(header: Any, camera: Any, height: int, width: int) -> Any:
    """A rosbags ``sensor_msgs/msg/CameraInfo`` of a rectified pinhole camera (``CameraIntrinsics``)."""
    from orcnn_ros.depth_conversions import camera_info_fields

    roi = msg_class(ROI_TYPE)(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return msg_class(CAMERA_INFO_TYPE)(header=header, binning_x=0, binning_y=0, roi=roi,
                                       **camera_info_fields(camera, height, width))


def rosbags_factories() -> MessageFactories:
    """Message classes and array adapters for building our messages as rosbags dataclasses."""
    return MessageFactories(
        instance_array=msg_class(INSTANCE_ARRAY_TYPE), instance=msg_class(INSTANCE_TYPE),
        image=msg_class(IMAGE_TYPE), roi=msg_class(ROI_TYPE), point=msg_class(POINT_TYPE),
        vector3=msg_class(VECTOR3_TYPE), polygon=msg_class(POLYGON_TYPE), point32=msg_class(POINT32_TYPE),
        byte_array=lambda a: np.ascontiguousarray(a, dtype=np.uint8).reshape(-1),
        uint32_array=lambda v: np.asarray(v, dtype=np.uint32).reshape(-1),
        float32_array=lambda v: np.asarray(v, dtype=np.float32).reshape(-1),
    )

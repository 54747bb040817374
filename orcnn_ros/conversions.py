"""Plain functions between ROS message fields and numpy, and our result message built and read back.

They take any object with the ROS field names: rclpy-generated messages, rosbags dataclasses or a
``SimpleNamespace``. Message classes are passed in (``MessageFactories``) so the node builds
rclpy messages and the replay and tests build rosbags ones with the same code.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np

from orcnn_core.analysis import FrameAnalysis
from orcnn_core.data.image_decode import ImageDecodeError, check_image_size, decode_image
from orcnn_core.depth.instances3d import Geometry3D
from orcnn_core.errors import InputError
from orcnn_core.occlusion import OcclusionGraph
from orcnn_core.structures import Prediction

# Channels per supported raw encoding, and how to turn it into RGB.
ENCODING_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
           "mono8": cv2.COLOR_GRAY2RGB}

#: A frame that cannot be used; ``cause`` is a short stable key (for counting and log-once). The same
#: class as the file decoder's, so ``except ImageInputError`` also catches what ``decode_image`` raises.
ImageInputError = ImageDecodeError


@dataclass(frozen=True)
class MessageFactories:
    """Message classes to build results with, and adapters for array fields of that message flavour."""

    instance_array: type
    instance: type
    image: type
    roi: type
    point: type                                      # geometry_msgs/Point
    vector3: type                                    # geometry_msgs/Vector3
    polygon: type                                    # geometry_msgs/Polygon
    point32: type                                    # geometry_msgs/Point32
    byte_array: Callable[[np.ndarray], Any]         # uint8 data -> value of a ``uint8[]`` field
    uint32_array: Callable[[Sequence[int]], Any]    # -> value of a ``uint32[]`` field
    float32_array: Callable[[Sequence[float]], Any]  # -> value of a ``float32[]`` field

    @classmethod
    def for_rclpy(cls, instance_array: type, instance: type, image: type, roi: type, *, point: type,
                  vector3: type, polygon: type, point32: type) -> MessageFactories:
        """Factories for rclpy-generated classes: array fields take ``array.array`` (fast path)."""
        return cls(instance_array=instance_array, instance=instance, image=image, roi=roi, point=point,
                   vector3=vector3, polygon=polygon, point32=point32,
                   byte_array=lambda a: array.array("B", np.ascontiguousarray(a, np.uint8).tobytes()),
                   uint32_array=lambda v: array.array("I", [int(x) for x in v]),
                   float32_array=lambda v: array.array("f", [float(x) for x in v]))


def _data_bytes(data: Any, field: str) -> np.ndarray:
    """A flat uint8 view of a ``uint8[]`` field (bytes, array.array, numpy or list)."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else data.astype(np.uint8)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise ImageInputError("bad_data", f"{field} is not a byte array ({type(data).__name__})") from exc


def image_msg_to_numpy(msg: Any) -> np.ndarray:
    """RGB uint8 HxWx3 array from a ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8)."""
    encoding = str(getattr(msg, "encoding", "")).lower()
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if encoding not in ENCODING_CHANNELS:
        raise ImageInputError("unsupported_encoding", f"Image.encoding '{msg.encoding}' is not supported "
                         f"(supported: {', '.join(ENCODING_CHANNELS)})")
    if height <= 0 or width <= 0:
        raise ImageInputError("zero_size", f"Image is zero-size: height={height}, width={width}")
    check_image_size(height, width, f"Image ({encoding})")  # the file limits, before any copy
    channels = ENCODING_CHANNELS[encoding]
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageInputError("step_too_small",
                              f"Image.step {step} is smaller than width*channels = {row_bytes} ({encoding})")
    data = _data_bytes(msg.data, "Image.data")
    if data.size != step * height:
        raise ImageInputError("size_mismatch",
                              f"Image.data has {data.size} bytes but step*height = {step}*{height} = "
                              f"{step * height} ({width}x{height} {encoding})")
    # Drop row padding (step > width*channels) before reshaping to pixels.
    pixels = data.reshape(height, step)[:, :row_bytes].reshape(height, width, channels)
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels)
    source = np.ascontiguousarray(pixels if channels > 1 else pixels[:, :, 0])
    return cv2.cvtColor(source, _TO_RGB[encoding])


def compressed_msg_to_numpy(msg: Any) -> np.ndarray:
    """RGB uint8 HxWx3 array from a ``sensor_msgs/CompressedImage``, by the image files' decoder.

    The bytes decide the format (PNG, JPEG; BMP, TIFF, WebP too), not ``format``; refusals are
    ``ImageInputError`` with ``decode_image``'s causes (``truncated_jpeg``, ``too_large``, ...).
    """
    data = _data_bytes(msg.data, "CompressedImage.data")
    fmt = getattr(msg, "format", "")
    if data.size == 0:
        raise ImageInputError("zero_size", f"CompressedImage.data is empty (format '{fmt}')")
    return decode_image(data, f"CompressedImage.data ({data.size} bytes, format '{fmt}')")


def mask_image_fields(mask: np.ndarray) -> dict:
    """Fields of a mono8 0/255 ``sensor_msgs/Image`` from an HxW bool mask (data as uint8 array)."""
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    return {"height": height, "width": width, "encoding": "mono8", "is_bigendian": 0, "step": width,
            "data": (mask.astype(np.uint8) * 255).reshape(-1)}


def rgb_image_fields(rgb: np.ndarray) -> dict:
    """Fields of an rgb8 ``sensor_msgs/Image`` from an HxWx3 uint8 array (data as uint8 array)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"rgb image must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    return {"height": height, "width": width, "encoding": "rgb8", "is_bigendian": 0, "step": width * 3,
            "data": np.ascontiguousarray(rgb).reshape(-1)}


def image_fields_to_numpy(fields: Any) -> np.ndarray:
    """HxW bool mask from a mono8 0/255 Image (any object with its fields), as sent by this package."""
    if str(fields.encoding) != "mono8":
        raise InputError(f"mask Image.encoding must be mono8, got '{fields.encoding}'")
    height, width, step = int(fields.height), int(fields.width), int(fields.step)
    data = _data_bytes(fields.data, "Image.data")
    if data.size != step * height or step < width:
        raise InputError(f"mask Image.data has {data.size} bytes, expected step*height = {step * height}")
    return data.reshape(height, step)[:, :width] > 0 if height and width else np.zeros((height, width), bool)


def make_image_msg(factories: MessageFactories, header: Any, fields: dict) -> Any:
    """An Image message of the factories' flavour from ``*_image_fields`` output."""
    values = dict(fields)
    values["data"] = factories.byte_array(values["data"])
    return factories.image(header=header, **values)


def roi_fields(box: Sequence[float]) -> dict:
    """Fields of a ``sensor_msgs/RegionOfInterest`` from an integer-valued (x0, y0, x1, y1) box."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return {"x_offset": max(x0, 0), "y_offset": max(y0, 0), "height": max(y1 - y0, 0),
            "width": max(x1 - x0, 0), "do_rectify": False}


def geometry_fields(geometry: Optional[Geometry3D], i: int, factories: MessageFactories) -> dict:
    """The 3D fields of ``AmodalInstance`` for instance ``i`` (zeros, ``has_3d`` false, without 3D)."""
    has_3d = geometry is not None and bool(geometry.has_3d[i])
    zero = np.zeros(3)

    def xyz(kind: type, values: np.ndarray) -> Any:
        x, y, z = (float(v) for v in (values[i] if has_3d else zero))
        return kind(x=x, y=y, z=z)

    outline = geometry.amodal_footprint[i].tolist() if has_3d else []
    return {
        "has_3d": has_3d,
        "visible_centroid": xyz(factories.point, geometry.visible_centroid if has_3d else None),
        "surface_normal": xyz(factories.vector3, geometry.surface_normal if has_3d else None),
        "visible_box_min": xyz(factories.point, geometry.visible_box_min if has_3d else None),
        "visible_box_max": xyz(factories.point, geometry.visible_box_max if has_3d else None),
        "valid_points": int(geometry.valid_points[i]) if has_3d else 0,
        "amodal_centroid": xyz(factories.point, geometry.amodal_centroid if has_3d else None),
        "amodal_footprint": factories.polygon(points=[factories.point32(x=x, y=y, z=z)
                                                      for x, y, z in outline]),
    }


def build_instance_array(frame: FrameAnalysis, header: Any, factories: MessageFactories) -> Any:
    """``AmodalInstanceArray`` for one analysed image; masks cropped to the amodal mask's tight box,
    mono8 0/255. The masks, boxes, graph and 3D are the analysis's own (nothing is recomputed here)."""
    prediction, graph = frame.prediction, frame.graph
    height, width = frame.image_size
    amodal_boxes, visible_boxes = frame.amodal_boxes.tolist(), frame.visible_boxes.tolist()
    instances = []
    for i in range(len(frame)):
        x0, y0, x1, y1 = amodal_boxes[i]
        crop = (slice(y0, y1), slice(x0, x1))
        instances.append(factories.instance(
            id=i,
            class_id=int(prediction.category_ids[i]),
            class_name=str(prediction.class_names[i]),
            score=float(prediction.scores[i]),
            amodal_roi=factories.roi(**roi_fields(amodal_boxes[i])),
            visible_roi=factories.roi(**roi_fields(visible_boxes[i])),
            amodal_mask=make_image_msg(factories, header, mask_image_fields(frame.amodal_masks[i][crop])),
            visible_mask=make_image_msg(factories, header, mask_image_fields(frame.visible_masks[i][crop])),
            invisible_mask=make_image_msg(factories, header,
                                          mask_image_fields(frame.invisible_masks[i][crop])),
            amodal_area=int(graph.amodal_area[i]),
            visible_area=int(graph.visible_area[i]),
            occlusion_rate=float(graph.occlusion_rate[i]),
            occluder_ids=factories.uint32_array(graph.occluder_ids[i]),
            occluder_overlap=factories.float32_array(graph.occluder_overlap[i]),
            truncated=bool(graph.truncated[i]),
            layer=int(graph.layer[i]),
            **geometry_fields(frame.geometry, i, factories),
        ))
    return factories.instance_array(header=header, image_width=width, image_height=height,
                                    instances=instances, pick_order=factories.uint32_array(graph.pick_order))


def paste_mask(image_msg: Any, roi: Any, height: int, width: int) -> np.ndarray:
    """Full-image HxW bool mask from a cropped mono8 mask and its RegionOfInterest."""
    crop = image_fields_to_numpy(image_msg)
    full = np.zeros((height, width), dtype=bool)
    y0, x0 = int(roi.y_offset), int(roi.x_offset)
    if crop.shape != (int(roi.height), int(roi.width)):
        raise InputError(f"mask is {crop.shape} but its ROI is {(int(roi.height), int(roi.width))}")
    if crop.size and (y0 + crop.shape[0] > height or x0 + crop.shape[1] > width):
        raise InputError(f"mask ROI (x {x0}, y {y0}, {crop.shape[1]}x{crop.shape[0]}) reaches outside "
                         f"the {width}x{height} image")
    full[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    return full


def roi_box(roi: Any) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` box (far edge exclusive) of a ``sensor_msgs/RegionOfInterest``."""
    x0, y0 = float(roi.x_offset), float(roi.y_offset)
    return (x0, y0, x0 + float(roi.width), y0 + float(roi.height))


def instance_array_to_graph(msg: Any) -> OcclusionGraph:
    """The occlusion graph an AmodalInstanceArray carries (occluders, overlaps, layers, pick order),
    as the planner received it: for evaluating recorded results with the published relations."""
    instances = list(msg.instances)
    n = len(instances)
    occluders = [[int(j) for j in inst.occluder_ids] for inst in instances]
    if any(j >= n or j == i for i, ids in enumerate(occluders) for j in ids):
        raise InputError(f"occluder_ids name instances outside the message's {n} (or the instance itself)")
    order = [int(k) for k in msg.pick_order]
    if sorted(order) != list(range(n)):
        raise InputError(f"pick_order {order} is not a permutation of the {n} instance ids")
    return OcclusionGraph(
        occluder_ids=occluders,
        occluder_overlap=[[float(v) for v in inst.occluder_overlap] for inst in instances],
        truncated=np.asarray([bool(inst.truncated) for inst in instances], dtype=bool),
        pick_order=order,
        amodal_area=np.asarray([int(inst.amodal_area) for inst in instances], dtype=np.int64),
        visible_area=np.asarray([int(inst.visible_area) for inst in instances], dtype=np.int64),
        invisible_area=np.asarray([int(inst.amodal_area) - int(inst.visible_area) for inst in instances],
                                  dtype=np.int64),
        occlusion_rate=np.asarray([float(inst.occlusion_rate) for inst in instances], dtype=np.float32),
        layer=np.asarray([int(inst.layer) for inst in instances], dtype=np.int64))


def instance_array_to_prediction(msg: Any) -> Prediction:
    """A Prediction with image-sized bool masks from an AmodalInstanceArray (undoes build_instance_array).

    Masks are pasted back from their amodal-ROI crops, so visible pixels outside the amodal mask's
    box (which the message does not carry) are lost. Boxes are the message's ROIs (tight mask
    boxes); ``labels`` are the class ids, as the message carries no separate model label.
    """
    height, width = int(msg.image_height), int(msg.image_width)
    instances = list(msg.instances)
    n = len(instances)
    masks = {kind: np.zeros((n, height, width), dtype=bool) for kind in ("amodal", "visible", "invisible")}
    for i, inst in enumerate(instances):
        for kind, stack in masks.items():
            stack[i] = paste_mask(getattr(inst, f"{kind}_mask"), inst.amodal_roi, height, width)
    class_ids = np.asarray([int(inst.class_id) for inst in instances], dtype=np.int64)
    return Prediction(
        amodal_boxes=np.asarray([roi_box(inst.amodal_roi) for inst in instances], np.float32).reshape(-1, 4),
        visible_boxes=np.asarray([roi_box(inst.visible_roi) for inst in instances],
                                 np.float32).reshape(-1, 4),
        labels=class_ids, category_ids=class_ids.copy(),
        class_names=[str(inst.class_name) for inst in instances],
        scores=np.asarray([float(inst.score) for inst in instances], dtype=np.float32),
        amodal_masks=masks["amodal"], visible_masks=masks["visible"], invisible_masks=masks["invisible"],
        image_size=(height, width))

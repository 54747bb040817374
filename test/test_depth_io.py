"""Depth files and messages in, camera files and camera_info: what is read, and what is refused (with
its cause) instead of reaching the 3D step."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from orcnn_core.depth.camera import CameraError, read_camera_file
from orcnn_core.depth.depth_io import (
    DepthError,
    read_depth_png,
    read_depth_png_mm,
    sanitize_metres,
    write_depth_png,
)
from orcnn_ros.depth_conversions import camera_from_info, depth_frame_from_msgs, depth_msg_to_metres


def test_depth_png_round_trip_and_units(tmp_path):
    mm = np.array([[0, 1, 800], [65535, 1234, 0]] * 5, np.uint16).repeat(4, axis=1)  # 10x12
    write_depth_png(tmp_path / "d.png", mm)
    assert np.array_equal(read_depth_png_mm(tmp_path / "d.png"), mm)
    metres = read_depth_png(tmp_path / "d.png")
    assert metres.dtype == np.float32
    np.testing.assert_allclose(metres[0, :12:4], [0.0, 0.001, 0.8], rtol=1e-6)
    write_depth_png(tmp_path / "m.png", np.where(mm > 0, mm / 1000.0, np.nan))  # float metres, NaN holes
    assert np.array_equal(read_depth_png_mm(tmp_path / "m.png"), mm)


@pytest.mark.parametrize("kind", ["8bit", "rgb16", "jpeg", "truncated", "text", "missing"])
def test_unusable_depth_files_are_refused_with_a_cause(tmp_path, kind):
    path = tmp_path / "d.png"
    if kind == "8bit":
        cv2.imwrite(str(path), np.zeros((10, 10), np.uint8))
    elif kind == "rgb16":
        cv2.imwrite(str(path), np.zeros((10, 10, 3), np.uint16))
    elif kind == "jpeg":
        path.write_bytes(cv2.imencode(".jpg", np.zeros((10, 10), np.uint8))[1].tobytes())
    elif kind == "truncated":
        write_depth_png(path, np.full((40, 40), 800, np.uint16))
        path.write_bytes(path.read_bytes()[:-30])
    elif kind == "text":
        path.write_text("not an image")
    with pytest.raises(DepthError) as info:
        read_depth_png(path)
    assert info.value.cause == ("depth_missing" if kind == "missing" else "depth_unreadable")
    assert str(path) in str(info.value)


def test_impossible_distances_become_holes():
    values = np.array([0.8, np.nan, np.inf, -1.0, 0.0, 150.0], np.float32)
    assert sanitize_metres(values).tolist() == pytest.approx([0.8, 0, 0, 0, 0, 0])


# -- camera files ------------------------------------------------------------------------------------

def test_camera_files_single_and_per_image(tmp_path):
    single = tmp_path / "camera.json"
    single.write_text(json.dumps({"fx": 600, "fy": 601, "cx": 319.5, "cy": 239.5}))
    table = read_camera_file(single)
    assert table.for_image("any/name.png").fy == 601
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps({"images": [
        {"id": 1, "file_name": "a/000001.png", "camera": {"fx": 500, "fy": 500, "cx": 10, "cy": 20}},
        {"id": 2, "file_name": "000002.png", "camera": {"fx": 400, "fy": 400, "cx": 1, "cy": 2}}]}))
    table = read_camera_file(annotations)
    assert table.for_image("a/000001.png").cx == 10
    assert table.for_image("000001.png").cx == 10      # by base name, as `orcnn predict --gt` matches
    assert table.for_image("sub/000002.png").fx == 400
    with pytest.raises(CameraError, match="no camera for image 'other.png'"):
        table.for_image("other.png")


@pytest.mark.parametrize("content, words", [
    ({"fx": 0, "fy": 600, "cx": 1, "cy": 1}, "focal lengths must be > 0"),
    ({"fx": 600, "fy": 600, "cx": 1}, "expected"),
    ({"images": [{"id": 1, "file_name": "a.png"}]}, "without per-image 'camera'"),
    ({"images": [{"id": 1, "file_name": "a.png", "camera": {"fx": 1, "fy": 1, "cx": None, "cy": 0}}]},
     "image 'a.png': camera 'cx' must be a number"),
    ("[1, 2", "not valid JSON"),
])
def test_bad_camera_files_name_the_file_and_field(tmp_path, content, words):
    path = tmp_path / "cam.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(CameraError, match=words) as info:
        read_camera_file(path)
    assert str(path) in str(info.value)


# -- depth messages --------------------------------------------------------------------------------

def depth_msg(array: np.ndarray, encoding: str, big_endian: bool = False, pad: int = 0):
    dtype = array.dtype.newbyteorder(">" if big_endian else "<")
    rows = np.ascontiguousarray(array.astype(dtype)).view(np.uint8).reshape(array.shape[0], -1)
    rows = np.pad(rows, ((0, 0), (0, pad)))
    return SimpleNamespace(height=array.shape[0], width=array.shape[1], encoding=encoding,
                           is_bigendian=int(big_endian), step=rows.shape[1], data=rows.reshape(-1).tobytes(),
                           header=SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0)))


def info_msg(k=(600.0, 0, 40.0, 0, 600.0, 30.0, 0, 0, 1), width=80, height=60):
    return SimpleNamespace(k=list(k), width=width, height=height)


def test_16uc1_and_32fc1_messages_in_metres():
    mm = np.arange(60 * 80, dtype=np.uint16).reshape(60, 80)
    for big_endian, pad in ((False, 0), (True, 6)):
        metres = depth_msg_to_metres(depth_msg(mm, "16UC1", big_endian, pad))
        np.testing.assert_allclose(metres, mm / 1000.0, rtol=1e-6)
    floats = np.full((60, 80), 0.75, np.float32)
    floats[0, :4] = [np.nan, np.inf, -0.5, 0.0]
    metres = depth_msg_to_metres(depth_msg(floats, "32FC1", pad=4))
    assert metres[0, :5].tolist() == pytest.approx([0, 0, 0, 0, 0.75])
    frame = depth_frame_from_msgs(depth_msg(floats, "32FC1"), info_msg())
    assert (frame.camera.fx, frame.camera.cx, frame.camera.cy) == (600.0, 40.0, 30.0)
    assert camera_from_info(info_msg(width=0, height=0), (60, 80)).fy == 600.0  # size not set: accepted


@pytest.mark.parametrize("case, cause", [
    ("rgb8", "depth_encoding"), ("short", "depth_malformed"), ("step", "depth_malformed"),
    ("huge", "depth_malformed"), ("zero_k", "camera_invalid"), ("nan_k", "camera_invalid"),
    ("info_size", "camera_invalid"), ("no_k", "camera_invalid"),
])
def test_unusable_depth_messages_give_their_cause(case, cause):
    msg = depth_msg(np.full((60, 80), 800, np.uint16), "16UC1")
    info = info_msg()
    if case == "rgb8":
        msg.encoding = "rgb8"
    elif case == "short":
        msg.data = msg.data[:-2]
    elif case == "step":
        msg.step = 100  # less than 80 * 2 bytes
    elif case == "huge":
        msg.height = msg.width = 100_000
    elif case == "zero_k":
        info = info_msg(k=[0.0] * 9)
    elif case == "nan_k":
        info = info_msg(k=[float("nan")] + [0.0] * 8)
    elif case == "info_size":
        info = info_msg(width=640, height=480)
    elif case == "no_k":
        info = SimpleNamespace(width=80, height=60)
    with pytest.raises(DepthError) as caught:
        depth_frame_from_msgs(msg, info)
    assert caught.value.cause == cause

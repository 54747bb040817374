"""The 3D fields of AmodalInstance through CDR and rosbag2 files, the labelled point cloud, and the
planner example's grasp target in metres."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from test_ros_messages import H, W, scene

from orcnn_core.analysis import analyze
from orcnn_core.depth.camera import CameraIntrinsics
from orcnn_core.depth.depth_io import DepthFrame
from orcnn_ros import messages
from orcnn_ros.conversions import build_instance_array
from orcnn_ros.depth_conversions import POINT_STEP, labelled_points, point_cloud_fields
from orcnn_ros.planner_example import grasp_target, next_grasp

CAMERA = CameraIntrinsics(60.0, 60.0, 24.5, 19.5)
FACE_DEPTH = (0.78, 0.80, 0.82, 0.79)  # metres, per instance of test_ros_messages.scene()


def analysed_with_depth():
    prediction = scene()
    depth = np.full((H, W), 0.85, np.float32)
    for i in np.argsort(FACE_DEPTH)[::-1]:  # paint far to near, as seen
        depth[prediction.visible_masks[i]] = FACE_DEPTH[i]
    return analyze(prediction, depth=DepthFrame(depth, CAMERA))


def xyz(point):
    return [point.x, point.y, point.z]


def round_trip(msg, typename=messages.INSTANCE_ARRAY_TYPE):
    """The message after CDR serialisation, as a subscriber or a bag reader gets it."""
    return messages.deserialize(messages.serialize(msg, typename), typename)


@pytest.mark.parametrize("plugin", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_3d_fields_survive_a_rosbag2_file(tmp_path, plugin):
    frame = analysed_with_depth()
    geometry = frame.geometry
    assert geometry.has_3d.all()
    msg = build_instance_array(frame, messages.make_header(3, 4, "camera_color_optical_frame"),
                               messages.rosbags_factories())
    store = messages.typestore()
    with Writer(tmp_path / "bag", version=8, storage_plugin=plugin) as writer:
        conn = writer.add_connection("/amodal/instances", messages.INSTANCE_ARRAY_TYPE, typestore=store)
        writer.write(conn, 1, messages.serialize(msg, messages.INSTANCE_ARRAY_TYPE))
    with Reader(tmp_path / "bag") as reader:
        (back,) = [store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages()]
    assert back.header.frame_id == "camera_color_optical_frame"
    for i, inst in enumerate(back.instances):
        assert inst.has_3d is True and inst.valid_points == geometry.valid_points[i] > 0
        assert xyz(inst.visible_centroid) == geometry.visible_centroid[i].tolist()  # float64: exact
        assert xyz(inst.surface_normal) == geometry.surface_normal[i].tolist()
        assert xyz(inst.visible_box_min) == geometry.visible_box_min[i].tolist()
        assert xyz(inst.visible_box_max) == geometry.visible_box_max[i].tolist()
        assert xyz(inst.amodal_centroid) == geometry.amodal_centroid[i].tolist()
        outline = np.asarray([xyz(p) for p in inst.amodal_footprint.points], np.float32)
        assert np.array_equal(outline, geometry.amodal_footprint[i]) and len(outline) >= 3
        # each face at its own depth, hidden part included
        assert inst.visible_centroid.z == pytest.approx(FACE_DEPTH[i], abs=1e-6)
        assert np.allclose(outline[:, 2], FACE_DEPTH[i], atol=1e-6)


def test_without_depth_the_3d_fields_are_zero():
    msg = build_instance_array(analyze(scene()), messages.make_header(), messages.rosbags_factories())
    back = round_trip(msg)
    for inst in back.instances:
        assert not inst.has_3d and inst.valid_points == 0 and list(inst.amodal_footprint.points) == []
        for name in ("visible_centroid", "surface_normal", "visible_box_min", "visible_box_max",
                     "amodal_centroid"):
            assert xyz(getattr(inst, name)) == [0, 0, 0], name


def test_labelled_point_cloud():
    frame = analysed_with_depth()
    points, labels = labelled_points(frame)
    assert len(points) == int(frame.geometry.valid_points.sum())
    assert np.bincount(labels).tolist() == frame.geometry.valid_points.tolist()
    for i in range(4):  # each instance's points lie on its own face
        np.testing.assert_allclose(points[labels == i, 2], FACE_DEPTH[i], atol=1e-6)
    fields = point_cloud_fields(frame)
    point_field = messages.msg_class(messages.POINT_FIELD_TYPE)
    cloud = messages.msg_class(messages.POINT_CLOUD_TYPE)(
        header=messages.make_header(1, 2, "camera"), **{**fields, "fields": [
            point_field(name=n, offset=o, datatype=t, count=c) for n, o, t, c in fields["fields"]]})
    back = round_trip(cloud, messages.POINT_CLOUD_TYPE)
    assert (back.width, back.height, back.point_step) == (len(points), 1, POINT_STEP)
    assert [(f.name, f.offset, f.datatype) for f in back.fields] == [
        ("x", 0, point_field.FLOAT32), ("y", 4, point_field.FLOAT32), ("z", 8, point_field.FLOAT32),
        ("label", 12, point_field.UINT32)]
    raw = np.frombuffer(bytes(back.data), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<u4")])
    assert np.array_equal(raw["label"], labels) and np.array_equal(raw["z"], points[:, 2])


def test_planner_example_grasp_target_in_metres():
    msg = round_trip(build_instance_array(analysed_with_depth(), messages.make_header(),
                                          messages.rosbags_factories()))
    k = next_grasp(msg)
    position, approach = grasp_target(msg, k)
    assert k == 0 and position[2] == pytest.approx(FACE_DEPTH[0], abs=1e-6)
    assert approach == pytest.approx((0.0, 0.0, 1.0), abs=1e-6)  # straight down into the face
    flat = round_trip(build_instance_array(analyze(scene()), messages.make_header(),
                                           messages.rosbags_factories()))
    assert grasp_target(flat, 0) is None

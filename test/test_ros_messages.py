"""Our .msg types in rosbags: CDR round trip, rosbag2 .db3 and .mcap round trip, planner example."""

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from orcnn_core.analysis import AnalysisConfig
from orcnn_core.analysis import analyze as analyze_frame
from orcnn_core.errors import InputError
from orcnn_core.layering import LayeringConfig
from orcnn_core.structures import Prediction
from orcnn_ros import messages
from orcnn_ros.conversions import build_instance_array, paste_mask
from orcnn_ros.planner_example import next_grasp, objects_to_remove_first


def analyze(prediction):
    """The frame analysis without the layering: these tests are about the messages, not the layering."""
    return analyze_frame(prediction, AnalysisConfig(layering=LayeringConfig(enabled=False)))

REPO = Path(__file__).resolve().parents[1]
H, W = 40, 50


def test_packaged_msg_copies_match_the_msg_folder():
    for name in messages.MESSAGE_NAMES:
        source = (REPO / "msg" / f"{name}.msg").read_text()
        assert messages.message_definition(name) == source, (
            f"orcnn_ros/msg_definitions/{name}.msg is out of date: copy msg/{name}.msg over it")
    packaged = sorted(p.name for p in messages.DEFINITIONS_DIR.glob("*.msg"))
    assert packaged == sorted(p.name for p in (REPO / "msg").glob("*.msg"))


def scene():
    """0 hides 1 and 2; 1 hides 2; 3 stands alone and is cut by the left border."""
    amodal = np.zeros((4, H, W), bool)
    amodal[1, 5:25, 5:30] = True
    amodal[2, 15:35, 15:45] = True
    amodal[0, 1:20, 20:40] = True
    amodal[3, 25:38, 0:8] = True
    visible = amodal.copy()
    visible[1] &= ~amodal[0]
    visible[2] &= ~(amodal[0] | amodal[1])
    boxes = np.zeros((4, 4), np.float32)
    return Prediction(boxes, boxes.copy(), np.array([1, 1, 2, 2]), np.array([1, 1, 2, 2]),
                      ["box", "box", "can", "can"], np.array([0.8, 0.9, 0.7, 0.95], np.float32),
                      amodal, visible, amodal & ~visible, (H, W))


def built_array(prediction=None):
    return build_instance_array(analyze(prediction or scene()), messages.make_header(12, 345, "camera"),
                                messages.rosbags_factories())


def assert_same_array(a, b):
    assert (a.header.stamp.sec, a.header.stamp.nanosec, a.header.frame_id) == (
        b.header.stamp.sec, b.header.stamp.nanosec, b.header.frame_id)
    assert (a.image_width, a.image_height) == (b.image_width, b.image_height)
    assert list(a.pick_order) == list(b.pick_order)
    assert len(a.instances) == len(b.instances)
    for x, y in zip(a.instances, b.instances):
        for field in ("id", "class_id", "class_name", "amodal_area", "visible_area", "truncated"):
            assert getattr(x, field) == getattr(y, field), field
        assert x.score == pytest.approx(y.score) and x.occlusion_rate == pytest.approx(y.occlusion_rate)
        assert list(x.occluder_ids) == list(y.occluder_ids)
        assert np.allclose(x.occluder_overlap, y.occluder_overlap)
        for mask in ("amodal_mask", "visible_mask", "invisible_mask"):
            mx, my = getattr(x, mask), getattr(y, mask)
            assert (mx.height, mx.width, mx.encoding, mx.step) == (my.height, my.width, my.encoding, my.step)
            assert bytes(mx.data) == bytes(my.data)
        for roi in ("amodal_roi", "visible_roi"):
            rx, ry = getattr(x, roi), getattr(y, roi)
            assert (rx.x_offset, rx.y_offset, rx.width, rx.height) == (ry.x_offset, ry.y_offset, ry.width,
                                                                       ry.height)


def test_cdr_round_trip_keeps_every_field():
    msg = built_array()
    data = messages.serialize(msg, messages.INSTANCE_ARRAY_TYPE)
    assert isinstance(data, bytes) and len(data) > 100
    back = messages.deserialize(data, messages.INSTANCE_ARRAY_TYPE)
    assert_same_array(msg, back)
    pred = scene()
    for i, inst in enumerate(back.instances):
        assert np.array_equal(paste_mask(inst.invisible_mask, inst.amodal_roi, H, W), pred.invisible_masks[i])


def test_deserializing_garbage_is_an_input_error():
    with pytest.raises(InputError, match="AmodalInstanceArray"):
        messages.deserialize(b"\x00\x01\x00\x00\x05", messages.INSTANCE_ARRAY_TYPE)


@pytest.mark.parametrize("plugin", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_rosbag2_round_trip(tmp_path, plugin):
    store = messages.typestore()
    msg = built_array()
    image = messages.make_image(msg.header, np.full((H, W, 3), 40, np.uint8))
    bag = tmp_path / "bag"
    with Writer(bag, version=8, storage_plugin=plugin) as writer:
        conn_arr = writer.add_connection("/amodal/instances", messages.INSTANCE_ARRAY_TYPE, typestore=store)
        conn_img = writer.add_connection("/image", messages.IMAGE_TYPE, typestore=store)
        for k in range(3):
            writer.write(conn_img, 1_000 + k, messages.serialize(image, messages.IMAGE_TYPE))
            writer.write(conn_arr, 1_000 + k, messages.serialize(msg, messages.INSTANCE_ARRAY_TYPE))
    suffix = ".db3" if plugin == StoragePlugin.SQLITE3 else ".mcap"
    assert list(bag.glob(f"*{suffix}")), f"no {suffix} file written"
    with Reader(bag) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {"/amodal/instances": messages.INSTANCE_ARRAY_TYPE, "/image": messages.IMAGE_TYPE}
        got = [(c.topic, t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages()]
    arrays = [(t, m) for topic, t, m in got if topic == "/amodal/instances"]
    assert [t for t, _ in arrays] == [1_000, 1_001, 1_002]
    for _, back in arrays:
        assert_same_array(msg, back)


def test_planner_example_on_a_rosbags_message():
    msg = messages.deserialize(messages.serialize(built_array(), messages.INSTANCE_ARRAY_TYPE),
                               messages.INSTANCE_ARRAY_TYPE)
    assert [list(i.occluder_ids) for i in msg.instances] == [[], [0], [0, 1], []]
    # 2 is hidden by 0 and 1, and 1 by 0: remove 0 then 1 (pick order) before grasping 2.
    assert objects_to_remove_first(msg, 2) == [0, 1]
    assert objects_to_remove_first(msg, 0) == []
    # Unhidden objects first by score: 3 (0.95, cut by the border) then 0 (0.8).
    assert list(msg.pick_order)[:2] == [3, 0]
    assert next_grasp(msg) == 0
    assert next_grasp(msg, allow_truncated=True) == 3
    assert next_grasp(msg, min_score=0.99) is None

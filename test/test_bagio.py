"""Bag reading and writing without ROS 2: legacy 2019 .db3, malformed real bags, writer, output checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orcnn_core.errors import InputError
from orcnn_ros import messages
from orcnn_ros.bagio import (
    BagReader,
    BagWriter,
    copy_topic_info,
    normalize_msgtype,
    prepare_output,
)
from orcnn_ros.conversions import compressed_msg_to_numpy, image_msg_to_numpy

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
LEGACY = REAL / "rosbag2_legacy_2019" / "sample.db3"
MALFORMED = REAL / "rosbag2_malformed"
MALFORMED_BAGS = [MALFORMED / "test_bag_sqlite3", MALFORMED / "test_bag_mcap",
                  MALFORMED / "test_bag_mcap" / "test_bag_mcap.mcap"]


def test_normalize_msgtype() -> None:
    assert normalize_msgtype("sensor_msgs/Image") == "sensor_msgs/msg/Image"
    assert normalize_msgtype("sensor_msgs/msg/Image") == "sensor_msgs/msg/Image"
    assert normalize_msgtype("odd") == "odd"


@pytest.mark.parametrize("backend", ["auto", "sqlite"])
def test_legacy_bag_topics_and_images(backend: str) -> None:
    with BagReader(LEGACY, backend=backend) as reader:
        assert reader.image_topics() == ["/image", "/image/compressed"]
        assert reader.topics["/imu"].msgtype == "sensor_msgs/msg/Imu"
        msgs = list(reader.messages(["/image", "/image/compressed"]))
    assert [(m.topic, m.index) for m in msgs] == [("/image", 0), ("/image/compressed", 0)]
    assert msgs[0].timestamp < msgs[1].timestamp  # receive-time order
    raw = messages.deserialize(bytes(msgs[0].data), msgs[0].msgtype)
    assert (raw.width, raw.height, raw.encoding) == (640, 480, "bgr8")
    assert raw.header.frame_id == "" and raw.header.stamp.sec == 0
    assert image_msg_to_numpy(raw).shape == (480, 640, 3)
    jpeg = messages.deserialize(bytes(msgs[1].data), msgs[1].msgtype)
    assert compressed_msg_to_numpy(jpeg).shape == (480, 640, 3)


def test_legacy_backends_agree() -> None:
    """The plain-sqlite3 fallback reads the same bytes, stamps and types as rosbags."""
    read = {}
    for backend in ("rosbags", "sqlite"):
        with BagReader(LEGACY, backend=backend) as reader:
            read[backend] = [(m.topic, m.msgtype, m.timestamp, bytes(m.data))
                             for m in reader.messages(sorted(reader.topics))]
            assert reader.time_range() == (1552860401167984836, 1553411909073353785)
    assert read["rosbags"] == read["sqlite"]
    assert len(read["sqlite"]) == 5


def test_missing_and_non_image_topic_errors() -> None:
    with BagReader(LEGACY) as reader:
        with pytest.raises(InputError, match="no topic '/camera'") as missing:
            reader.image_topic("/camera")
        assert "/image, /image/compressed" in str(missing.value)
        with pytest.raises(InputError, match="unsupported type sensor_msgs/msg/Imu"):
            reader.image_topic("/imu")
    with pytest.raises(InputError, match="bag not found"):
        BagReader(LEGACY.parent / "nope.db3")


def test_not_a_bag_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db3"
    bad.write_bytes(b"this is not sqlite")
    with pytest.raises(InputError, match=str(bad)):
        BagReader(bad)


@pytest.mark.parametrize("path", MALFORMED_BAGS, ids=["sqlite3-dir", "mcap-dir", "mcap-file"])
def test_malformed_bags_open_and_list_images(path: Path) -> None:
    with BagReader(path) as reader:
        assert len(reader.topics) == 94
        assert reader.image_topics() == ["/test/sensor_msgs/compressed_image", "/test/sensor_msgs/image"]
        msgs = list(reader.messages(["/test/sensor_msgs/image"]))
    assert [m.index for m in msgs] == [0, 1]
    image = messages.deserialize(bytes(msgs[0].data), msgs[0].msgtype)
    assert (image.width, image.height, len(image.data)) == (640, 480, 30)  # the fixture's lie
    with pytest.raises(InputError, match="30 bytes"):
        image_msg_to_numpy(image)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_writer_finalises_on_exception(tmp_path: Path, storage: str) -> None:
    """An exception inside the writer leaves a valid bag holding what was written before it."""
    out = tmp_path / "partial"
    header = messages.make_header(1, 0, "cam")
    payloads = [messages.serialize(messages.make_image(header, np.full((4, 5, 3), k, np.uint8)),
                                   messages.IMAGE_TYPE) for k in range(3)]
    with pytest.raises(KeyboardInterrupt):
        with BagWriter(out, storage) as writer:
            writer.add_topic("/img", messages.IMAGE_TYPE, typestore=messages.typestore())
            for k, data in enumerate(payloads):
                if k == 2:
                    raise KeyboardInterrupt
                writer.write("/img", 100 + k, data)
    assert (out / "metadata.yaml").is_file()
    with BagReader(out) as reader:
        got = [(m.timestamp, bytes(m.data)) for m in reader.messages(["/img"])]
    assert got == [(100, payloads[0]), (101, payloads[1])]


def test_writer_rejects_unknown_storage_and_undefined_type(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown storage"):
        BagWriter(tmp_path / "a", "rosbag1")
    with BagWriter(tmp_path / "b") as writer, pytest.raises(InputError, match="no definition of pkg/msg/X"):
        writer.add_topic("/x", "pkg/msg/X", typestore=messages.typestore())


@pytest.mark.parametrize("source,topic",
                         [(LEGACY, "/fix"), (MALFORMED / "test_bag_mcap", "/test/std_msgs/string")],
                         ids=["legacy-typestore-def", "stored-def"])
def test_copy_topic_keeps_bytes_and_stamps(tmp_path: Path, source: Path, topic: str) -> None:
    with BagReader(source) as reader:
        info = reader.topics[topic]
        originals = [(m.timestamp, bytes(m.data)) for m in reader.messages([topic])]
        with BagWriter(tmp_path / "copy", "mcap") as writer:
            copy_topic_info(writer, info, messages.typestore())
            for m in reader.messages([topic]):
                writer.write(topic, m.timestamp, m.data)
    with BagReader(tmp_path / "copy") as copied:
        assert copied.topics[topic].msgtype == info.msgtype
        assert [(m.timestamp, bytes(m.data)) for m in copied.messages([topic])] == originals
        # the copy is readable as its type, not just as bytes
        messages.deserialize(bytes(next(copied.messages([topic])).data), info.msgtype)


def test_prepare_output_refuses_and_overwrites(tmp_path: Path) -> None:
    bag = tmp_path / "out"
    with BagWriter(bag) as writer:
        writer.add_topic("/img", messages.IMAGE_TYPE, typestore=messages.typestore())
    with pytest.raises(InputError, match="--overwrite"):
        prepare_output(bag, overwrite=False)
    assert bag.is_dir()
    prepare_output(bag, overwrite=True)
    assert not bag.exists()

    other = tmp_path / "notabag"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="non-bag files"):
        prepare_output(other, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"
    with pytest.raises(InputError, match="is the input bag"):
        prepare_output(LEGACY.parent, overwrite=True, inputs=[LEGACY])

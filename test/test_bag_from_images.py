"""``orcnn bag-from-images``: frames, stamps, pixels and the image map, through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from orcnn_core.cli import main as orcnn_main
from orcnn_core.data.images import read_image_rgb
from orcnn_core.data.synth import synthesize
from orcnn_ros import messages
from orcnn_ros.bag_from_images import read_image_map
from orcnn_ros.bagio import BagReader
from orcnn_ros.conversions import compressed_msg_to_numpy, image_msg_to_numpy

START_NS = 1_700_000_000_250_000_000


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synthesize(root, images=3, seed=5, classes=2, size=(96, 72))
    return root / "images"


def _read_frames(bag: Path, topic: str) -> list:
    with BagReader(bag) as reader:
        assert reader.image_topics() == [topic]
        return [(m.timestamp, m.msgtype, messages.deserialize(bytes(m.data), m.msgtype))
                for m in reader.messages([topic])]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "compressed"])
def test_frames_stamps_pixels_and_map(tmp_path: Path, image_dir: Path, storage: str,
                                      compressed: bool) -> None:
    bag = tmp_path / "bag"
    argv = ["bag-from-images", str(image_dir), "--out", str(bag), "--rate", "4", "--storage", storage,
            "--frame-id", "cam0", "--start-stamp", "1700000000.25"]
    assert orcnn_main(argv + (["--compressed"] if compressed else [])) == 0
    topic = "/image/compressed" if compressed else "/image"
    frames = _read_frames(bag, topic)
    files = sorted(image_dir.glob("*.png"))
    expected_stamps = [START_NS + k * 250_000_000 for k in range(len(files))]  # 4 Hz
    assert [t for t, _, _ in frames] == expected_stamps
    for (stamp, msgtype, msg), path in zip(frames, files):
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
        assert msg.header.frame_id == "cam0"
        if compressed:
            assert msgtype == messages.COMPRESSED_IMAGE_TYPE and msg.format == "png"
            assert bytes(msg.data) == path.read_bytes()  # the file's own bytes, lossless
            pixels = compressed_msg_to_numpy(msg)
        else:
            assert msgtype == messages.IMAGE_TYPE and msg.encoding == "bgr8"
            pixels = image_msg_to_numpy(msg)
        assert np.array_equal(pixels, read_image_rgb(path))
    entries = read_image_map(bag / "image_map.json")
    assert [(e.index, e.stamp_ns, e.file_name) for e in entries] == \
        [(k, s, p.name) for k, (s, p) in enumerate(zip(expected_stamps, files))]
    assert json.loads((bag / "image_map.json").read_text())[0].keys() == {"index", "stamp_ns", "file_name"}


def test_jpeg_and_other_formats(tmp_path: Path, image_dir: Path) -> None:
    """JPEG files are stored as they are; other formats become lossless PNG."""
    import cv2

    folder = tmp_path / "mixed"
    folder.mkdir()
    rgb = read_image_rgb(sorted(image_dir.glob("*.png"))[0])
    cv2.imwrite(str(folder / "a.jpg"), rgb[:, :, ::-1])
    cv2.imwrite(str(folder / "b.bmp"), rgb[:, :, ::-1])
    (folder / "notes.txt").write_text("not an image")
    bag = tmp_path / "bag"
    assert orcnn_main(["bag-from-images", str(folder), "--out", str(bag), "--compressed",
                       "--topic", "/cam/compressed", "--start-stamp", "0"]) == 0
    frames = _read_frames(bag, "/cam/compressed")
    assert [f[2].format for f in frames] == ["jpeg", "png"]
    assert bytes(frames[0][2].data) == (folder / "a.jpg").read_bytes()
    assert np.array_equal(compressed_msg_to_numpy(frames[1][2]), rgb)  # bmp -> png, pixels kept
    assert [e.file_name for e in read_image_map(bag / "image_map.json")] == ["a.jpg", "b.bmp"]


def test_errors(tmp_path: Path, image_dir: Path, capsys: pytest.CaptureFixture) -> None:
    bag = tmp_path / "bag"
    assert orcnn_main(["bag-from-images", str(image_dir), "--out", str(bag), "--start-stamp", "0"]) == 0
    before = sorted(p.name for p in bag.iterdir())
    capsys.readouterr()
    assert orcnn_main(["bag-from-images", str(image_dir), "--out", str(bag)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in bag.iterdir()) == before
    assert orcnn_main(["bag-from-images", str(image_dir), "--out", str(bag), "--overwrite",
                       "--storage", "mcap"]) == 0
    assert any(p.suffix == ".mcap" for p in bag.iterdir())

    broken = tmp_path / "broken"
    shutil.copytree(image_dir, broken)
    (broken / "000001.png").write_bytes(b"\x89PNG\r\n\x1a\ncut")
    capsys.readouterr()
    assert orcnn_main(["bag-from-images", str(broken), "--out", str(tmp_path / "b2")]) == 2
    err = capsys.readouterr().err
    assert "000001.png" in err and err.count("\n") == 1  # one clear line, naming the file
    assert not (tmp_path / "b2").exists()  # no half-written bag left behind

    empty = tmp_path / "empty"
    empty.mkdir()
    assert orcnn_main(["bag-from-images", str(empty), "--out", str(tmp_path / "b3")]) == 2
    assert "no images" in capsys.readouterr().err
    assert orcnn_main(["bag-from-images", str(image_dir), "--out", str(tmp_path / "b4"), "--rate", "0"]) == 2
    assert "--rate" in capsys.readouterr().err

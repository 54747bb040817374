"""Depth through every entry point: `orcnn bag-from-images --depth --camera` -> `orcnn replay
--depth-topic --camera-info-topic` publishes the same 3D as `orcnn predict --depth --camera` on the
files; stamps that never match, option errors, and missing or unusable depth files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Writer
from test_ros_pipeline import FakePredictor

from orcnn_core.cli import main as orcnn_main
from orcnn_core.data.synth import synthesize
from orcnn_core.data.synth_depth import SensorModel
from orcnn_core.depth.camera import CameraIntrinsics
from orcnn_core.errors import InputError
from orcnn_ros import messages, replay
from orcnn_ros.bag_from_images import images_to_bag, read_image_map
from orcnn_ros.bagio import BagReader
from orcnn_ros.conversions import make_image_msg
from orcnn_ros.depth_conversions import depth_image_fields
from orcnn_ros.replay import run as replay_run

START_NS = 1_700_000_000_000_000_000
DEPTH_ARGS = ["--depth-topic", "/depth/image", "--camera-info-topic", "/depth/camera_info"]


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("rgbd"), images=4, seed=21, size=(320, 240), depth=True,
                      sensor=SensorModel())


@pytest.fixture(scope="module")
def rgbd_bag(rgbd, tmp_path_factory):
    """Through the CLI: `orcnn bag-from-images DIR --depth DEPTH_DIR --camera ANNOTATIONS`."""
    bag = tmp_path_factory.mktemp("bags") / "rgbd"
    assert orcnn_main(["bag-from-images", str(rgbd.image_root), "--out", str(bag), "--rate", "10",
                       "--start-stamp", str(START_NS // 10**9), "--depth", str(rgbd.path.parent / "depth"),
                       "--camera", str(rgbd.path)]) == 0
    return bag


def run_cli(argv, capsys, with_err=False):
    code = replay.main([*map(str, argv), "--no-progress"])
    captured = capsys.readouterr()
    return (code, captured.out, captured.err) if with_err else (code, captured.out)


def read_arrays(bag: Path) -> list:
    with BagReader(bag) as reader:
        return [messages.deserialize(bytes(m.data), m.msgtype)
                for m in reader.messages(["/amodal/instances"])]


def test_bag_holds_depth_and_camera_info_with_the_frame_stamps(rgbd, rgbd_bag):
    with BagReader(rgbd_bag) as reader:
        assert {t: i.msgtype for t, i in reader.topics.items()} == {
            "/image": messages.IMAGE_TYPE, "/depth/image": messages.IMAGE_TYPE,
            "/depth/camera_info": messages.CAMERA_INFO_TYPE}
        depth = [messages.deserialize(bytes(m.data), m.msgtype) for m in reader.messages(["/depth/image"])]
        infos = [messages.deserialize(bytes(m.data), m.msgtype)
                 for m in reader.messages(["/depth/camera_info"])]
    entries = read_image_map(rgbd_bag / "image_map.json")
    cameras = {e["file_name"]: e["camera"] for e in json.loads(rgbd.path.read_text())["images"]}
    for d, info, entry in zip(depth, infos, entries):
        stamp = d.header.stamp.sec * 10**9 + d.header.stamp.nanosec
        assert stamp == entry.stamp_ns == info.header.stamp.sec * 10**9 + info.header.stamp.nanosec
        assert (d.encoding, d.width, d.height, d.step) == ("16UC1", 320, 240, 640)
        from orcnn_core.depth.depth_io import read_depth_png_mm

        written = read_depth_png_mm(rgbd.path.parent / "depth" / entry.file_name)
        assert np.array_equal(np.frombuffer(bytes(d.data), "<u2").reshape(240, 320), written)
        camera = cameras[entry.file_name]
        assert list(info.k) == [camera["fx"], 0, camera["cx"], 0, camera["fy"], camera["cy"], 0, 0, 1]


def test_replay_gives_the_same_3d_as_predict_depth(tmp_path, rgbd, rgbd_bag, capsys):
    """The bundled model through the bag (depth recorded after each colour frame, batches of 3) and
    through `orcnn predict --depth` on the files: the same instances with the same 3D."""
    out = tmp_path / "out"
    code, stdout = run_cli([rgbd_bag, "--topic", "/image", "--out", out, "--device", "cpu", "--batch-size", 3,
                            "--summary-json", tmp_path / "s.json", *DEPTH_ARGS], capsys)
    assert code == 0, stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames_with_3d"] == 4 and summary["no_3d_by_cause"] == {}
    assert "3D: 4 frame(s) with depth" in stdout
    assert orcnn_main(["predict", "--images", str(rgbd.image_root), "--out", str(tmp_path / "p.json"),
                       "--device", "cpu", "--batch-size", "3", "--score-threshold", "0.5",
                       "--gt", str(rgbd.path),
                       "--depth", str(rgbd.path.parent / "depth"), "--camera", str(rgbd.path)]) == 0
    predicted = json.loads((tmp_path / "p.json").read_text())
    by_name = {r.file_name: r.image_id for r in rgbd.images}
    compared = 0
    for msg, entry in zip(read_arrays(out), read_image_map(rgbd_bag / "image_map.json")):
        ref = [e for e in predicted if e["image_id"] == by_name[entry.file_name]]
        assert len(msg.instances) == len(ref)
        for inst, e in zip(msg.instances, ref):
            g = e["geometry_3d"]
            assert inst.has_3d == g["has_3d"]
            if not inst.has_3d:
                continue
            compared += 1
            for name in ("visible_centroid", "surface_normal", "visible_box_min", "visible_box_max",
                         "amodal_centroid"):
                point = getattr(inst, name)
                assert [point.x, point.y, point.z] == pytest.approx(g[name], abs=1e-6), name
            assert inst.valid_points == g["valid_points"]
            outline = [[p.x, p.y, p.z] for p in inst.amodal_footprint.points]
            assert np.allclose(outline, g["amodal_footprint"], atol=1e-6)
    assert compared >= 8  # real objects with 3D, not a comparison of empty results


def depth_bag(path: Path, offset_ns: int, frames: int = 4) -> Path:
    """Colour frames every 100 ms; depth + camera_info stamped ``offset_ns`` later."""
    store = messages.typestore()
    camera = CameraIntrinsics(60.0, 60.0, 31.5, 23.5)
    with Writer(path, version=8) as writer:
        image = writer.add_connection("/image", messages.IMAGE_TYPE, typestore=store)
        depth = writer.add_connection("/depth", messages.IMAGE_TYPE, typestore=store)
        info = writer.add_connection("/info", messages.CAMERA_INFO_TYPE, typestore=store)
        for k in range(frames):
            stamp = START_NS + k * 100_000_000
            header = messages.make_header(stamp // 10**9, stamp % 10**9, "camera")
            colour = messages.make_image(header, np.full((48, 64, 3), 60, np.uint8))
            writer.write(image, stamp, messages.serialize(colour, messages.IMAGE_TYPE))
            stamp += offset_ns
            header = messages.make_header(stamp // 10**9, stamp % 10**9, "camera")
            fields = depth_image_fields(np.full((48, 64), 800, np.uint16))
            msg = make_image_msg(messages.rosbags_factories(), header, fields)
            writer.write(depth, stamp, messages.serialize(msg, messages.IMAGE_TYPE))
            writer.write(info, stamp, messages.serialize(messages.make_camera_info(header, camera, 48, 64),
                                                         messages.CAMERA_INFO_TYPE))
    return path


@pytest.mark.parametrize("slop, with_3d", [("0", 0), ("0.02", 0), ("0.05", 4)])
def test_stamps_that_never_match_process_frames_without_3d(tmp_path, monkeypatch, capsys, slop, with_3d):
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: FakePredictor())
    bag = depth_bag(tmp_path / "in", offset_ns=30_000_000)  # depth always 30 ms after its frame
    code, stdout = run_cli([bag, "--topic", "/image", "--out", tmp_path / "out", "--depth-topic", "/depth",
                            "--camera-info-topic", "/info", "--depth-slop", slop, "--batch-size", 2,
                            "--summary-json", tmp_path / "s.json"], capsys)
    assert code == 0, stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames_processed"] == 4 and summary["frames_with_3d"] == with_3d
    assert summary["no_3d_by_cause"] == ({} if with_3d else {"depth_not_matched": 4})
    arrays = read_arrays(tmp_path / "out")
    assert len(arrays) == 4 and all(len(a.instances) == 2 for a in arrays)  # the 2D result every time
    assert all(i.has_3d == bool(with_3d) for a in arrays for i in a.instances)


def test_frames_keep_their_depth_with_a_short_history_and_long_batches(tmp_path, monkeypatch, capsys):
    """Depth recorded after its frame, batches of 4, room for only 2 depth images: each frame is paired
    as soon as its depth is in, so none loses it to the bounded history while its batch fills."""
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: FakePredictor())
    monkeypatch.setattr(replay_run, "DEPTH_HISTORY", 2)
    bag = depth_bag(tmp_path / "in", offset_ns=0, frames=6)
    code, stdout = run_cli([bag, "--topic", "/image", "--out", tmp_path / "out", "--depth-topic", "/depth",
                            "--camera-info-topic", "/info", "--batch-size", 4, "--summary-json",
                            tmp_path / "s.json"], capsys)
    assert code == 0, stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames_with_3d"] == 6 and summary["no_3d_by_cause"] == {}


def test_depth_option_and_topic_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: FakePredictor())
    bag = depth_bag(tmp_path / "in", offset_ns=0, frames=1)
    base = [bag, "--topic", "/image", "--out", tmp_path / "out"]
    cases = [(["--depth-topic", "/depth"], "--depth-topic and --camera-info-topic go together"),
             (["--depth-topic", "/depth", "--camera-info-topic", "/nope"], "--camera-info-topic /nope: bag"),
             (["--depth-topic", "/info", "--camera-info-topic", "/depth"],
              "holds sensor_msgs/msg/CameraInfo"),
             (["--depth-topic", "/image", "--camera-info-topic", "/info"], "three different topics"),
             (["--depth-topic", "/depth", "--camera-info-topic", "/info", "--depth-slop", "-1"],
              "--depth-slop")]
    for extra, words in cases:
        code, _, err = run_cli([*base, *extra], capsys, with_err=True)
        assert code == 2 and words in err, err
    from orcnn_ros.replay.options import ReplayOptions

    with pytest.raises(InputError, match="go together"):
        ReplayOptions(bag=bag, topic="/image", out=tmp_path / "o", camera_info_topic="/info").validate()


def test_bag_from_images_refuses_missing_or_mismatched_depth(tmp_path, rgbd):
    depth = tmp_path / "depth"
    depth.mkdir()
    with pytest.raises(InputError, match="--depth and --camera go together"):
        images_to_bag(rgbd.image_root, tmp_path / "a", depth_dir=depth)
    with pytest.raises(InputError, match="depth file not found: .*000000.png"):
        images_to_bag(rgbd.image_root, tmp_path / "b", depth_dir=depth, camera_file=rgbd.path)
    assert not (tmp_path / "b").exists()  # no half bag left behind
    from orcnn_core.depth.depth_io import write_depth_png

    for k in range(4):
        write_depth_png(depth / f"{k:06d}.png", np.full((100, 100), 800, np.uint16))
    with pytest.raises(InputError, match="is 100x100 but image .* is 320x240"):
        images_to_bag(rgbd.image_root, tmp_path / "c", depth_dir=depth, camera_file=rgbd.path)


def test_predict_keeps_2d_results_when_depth_is_missing(tmp_path, rgbd, monkeypatch, capsys):
    """An image without a depth file loses its 3D, not its results; counted by cause."""
    import shutil

    depth = tmp_path / "depth"
    shutil.copytree(rgbd.path.parent / "depth", depth)
    (depth / "000001.png").unlink()
    from orcnn_core.engine import predictor as predictor_module

    fake = FakePredictor()
    fake.config = None
    monkeypatch.setattr(predictor_module, "load_predictor", lambda *a, **k: fake)
    monkeypatch.setattr(predictor_module, "check_image", lambda image, config=None: image)
    assert orcnn_main(["predict", "--images", str(rgbd.image_root), "--out", str(tmp_path / "p.json"),
                       "--depth", str(depth), "--camera", str(rgbd.path)]) == 0
    assert "3D for 3 image(s), without 3D: depth_missing 1" in capsys.readouterr().out
    results = json.loads((tmp_path / "p.json").read_text())
    assert len(results) == 8
    assert [e["geometry_3d"]["has_3d"] for e in results if e["image_id"] == 2] == [False, False]
    assert all(e["geometry_3d"]["has_3d"] for e in results if e["image_id"] != 2)
    assert orcnn_main(["predict", "--images", str(rgbd.image_root), "--out", str(tmp_path / "q.json"),
                       "--depth", str(depth)]) == 2  # --depth without --camera: one clear line
    assert "--depth and --camera go together" in capsys.readouterr().err

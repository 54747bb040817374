"""``orcnn-replay`` end to end: round trip against plain prediction, GT keys, real legacy and malformed
bags, frame selection, refusal to overwrite, interrupted runs, ``--eval-bag`` on results bags, and the
replay launch file."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from orcnn_core import masks as mask_ops
from orcnn_core.data.images import read_image_rgb
from orcnn_core.data.synth import synthesize
from orcnn_core.errors import InputError
from orcnn_core.evaluation import AmodalEvaluator
from orcnn_core.structures import Prediction, prediction_to_results
from orcnn_ros import messages, replay
from orcnn_ros.bag_from_images import MapEntry, images_to_bag, read_image_map, write_image_map
from orcnn_ros.bagio import BagReader
from orcnn_ros.conversions import instance_array_to_prediction
from orcnn_ros.replay import run as replay_run

REPO = Path(__file__).resolve().parents[1]
REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
LEGACY = REAL / "rosbag2_legacy_2019" / "sample.db3"
MALFORMED = REAL / "rosbag2_malformed"
START_NS = 1_600_000_000_000_000_000
CLASSES = 3
AP_COLUMNS = ("AP_AV", "AP_A", "AP_V")


# --- fixtures and helpers -------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    return synthesize(tmp_path_factory.mktemp("synth"), images=4, seed=3, classes=CLASSES, size=(96, 72))


@pytest.fixture(scope="module")
def raw_bag(dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bag = tmp_path_factory.mktemp("bags") / "raw"
    images_to_bag(dataset.image_root, bag, start_ns=START_NS, rate_hz=10)
    return bag


@pytest.fixture(scope="module")
def compressed_bag(dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bag = tmp_path_factory.mktemp("bags") / "compressed"
    images_to_bag(dataset.image_root, bag, topic="/image/compressed", compressed=True, storage="mcap",
                  start_ns=START_NS, rate_hz=10)
    return bag


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixed random-init tiny ORCNN, saved like real weights."""
    import torch

    from orcnn_core.model import ModelConfig, build_model, save_weights

    torch.manual_seed(0)
    config = ModelConfig(num_classes=CLASSES, backbone="resnet18_fpn", norm="group", fpn_channels=16,
                         box_representation_size=32, mask_head_channels=8, mask_roi_size=7, min_size=72,
                         max_size=96, rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20,
                         detections_per_image=8)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(build_model(config), config, path)
    return path


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def gt_prediction(record) -> Prediction:
    """The ground truth of one image as a Prediction (scores decreasing, labels = category ids)."""
    anns = record.annotations
    stack = lambda masks: np.stack(masks) if masks else np.zeros((0, record.height, record.width), bool)  # noqa: E731
    ids = np.asarray([a.category_id for a in anns], np.int64)
    return Prediction(
        amodal_boxes=np.asarray([a.amodal_box for a in anns], np.float32).reshape(-1, 4),
        visible_boxes=np.asarray([a.visible_box for a in anns], np.float32).reshape(-1, 4),
        labels=ids, category_ids=ids, class_names=[f"class_{i}" for i in ids],
        scores=np.linspace(0.99, 0.5, len(anns)).astype(np.float32),
        amodal_masks=stack([a.amodal_mask() for a in anns]),
        visible_masks=stack([a.visible_mask() for a in anns]),
        invisible_masks=stack([a.invisible_mask() for a in anns]),
        image_size=(record.height, record.width))


class PerfectPredictor:
    """Answers every known image with its ground truth; can fail on chosen calls or images."""

    def __init__(self, dataset, interrupt_on_call: int = 0, fail_on_image: int = -1) -> None:
        self.by_pixels = {_key(read_image_rgb(dataset.image_path(r))): r for r in dataset.images}
        self.calls = 0
        self.seen: list = []  # image ids in the order they were predicted
        self.interrupt_on_call, self.fail_on_image = interrupt_on_call, fail_on_image

    def predict_batch(self, images, batch_size: int = 4, **limits) -> list:
        self.calls += 1
        if self.calls == self.interrupt_on_call:
            raise KeyboardInterrupt
        records = [self.by_pixels[_key(image)] for image in images]
        if any(r.image_id == self.fail_on_image for r in records):
            raise RuntimeError("model failure on this image")
        self.seen.extend(r.image_id for r in records)
        return [gt_prediction(r) for r in records]


class RefusingPredictor:
    def predict_batch(self, images, batch_size: int = 4, **limits) -> list:
        raise AssertionError("no frame should reach the model")


def read_arrays(bag: Path, topic: str = replay.INSTANCES_TOPIC) -> list:
    """(receive time, AmodalInstanceArray) of every result message in a bag."""
    with BagReader(bag) as reader:
        return [(m.timestamp, messages.deserialize(bytes(m.data), m.msgtype))
                for m in reader.messages([topic])]


def bag_results(bag: Path, image_ids: list) -> list:
    out = []
    for (_, msg), image_id in zip(read_arrays(bag), image_ids):
        out.extend(prediction_to_results(instance_array_to_prediction(msg), image_id))
    return out


def input_stamps(bag: Path, topic: str) -> list:
    with BagReader(bag) as reader:
        return [m.timestamp for m in reader.messages([topic])]


def run_cli(argv: list, capsys: pytest.CaptureFixture) -> tuple:
    code = replay.main([*map(str, argv), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def ap_values(summary: dict) -> list:
    return [summary[subset][k] for subset in ("all", "occluded") for k in AP_COLUMNS] + [summary["AP_IV50"]]


# --- round trip against plain prediction ----------------------------------------------------

def test_round_trip_matches_predict(tmp_path: Path, dataset, raw_bag: Path, tiny_weights: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    """bag-from-images -> orcnn-replay gives what `orcnn predict` + `orcnn eval` give on the files."""
    from orcnn_core.cli import main as orcnn_main

    out, gt = tmp_path / "out", dataset.path
    # An explicit threshold on both sides: replay's default is the node's 0.5, predict's the model's;
    # a replay that ignored --score-threshold would publish nothing of this weak random model.
    code, stdout, _ = run_cli([raw_bag, "--topic", "/image", "--out", out, "--weights", tiny_weights,
                               "--score-threshold", "0.1",
                               "--gt", gt, "--device", "cpu", "--batch-size", 3, "--overlay",
                               "--copy-topic", "/image", "--results-json", tmp_path / "replay.json",
                               "--summary-json", tmp_path / "summary.json"], capsys)
    assert code == 0, stdout

    # The reference: the same weights on the image files, through the plain CLI.
    assert orcnn_main(["predict", "--images", str(dataset.image_root), "--out", str(tmp_path / "pred.json"),
                       "--weights", str(tiny_weights), "--device", "cpu", "--batch-size", "3",
                       "--score-threshold", "0.1", "--gt", str(gt)]) == 0
    assert orcnn_main(["eval", "--gt", str(gt), "--results", str(tmp_path / "pred.json"),
                       "--json", str(tmp_path / "metrics.json")]) == 0
    capsys.readouterr()
    predicted = json.loads((tmp_path / "pred.json").read_text())
    assert len(predicted) > 0  # the comparisons below are about real instances

    # Results JSON of the replay == the one of `orcnn predict` (same entries, same order).
    assert json.loads((tmp_path / "replay.json").read_text()) == predicted

    # The bag's messages carry the same instances: scores, classes and masks.
    arrays = read_arrays(out)
    assert [t for t, _ in arrays] == input_stamps(raw_bag, "/image")
    by_name = {r.file_name: r.image_id for r in dataset.images}
    for (stamp, msg), entry in zip(arrays, read_image_map(raw_bag / "image_map.json")):
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == entry.stamp_ns == stamp
        assert (msg.image_width, msg.image_height) == (96, 72)
        ref = [e for e in predicted if e["image_id"] == by_name[entry.file_name]]
        got = instance_array_to_prediction(msg)
        assert len(got) == len(ref)
        assert got.scores.tolist() == [np.float32(e["score"]) for e in ref]
        assert got.category_ids.tolist() == [e["category_id"] for e in ref]
        for i, (inst, e) in enumerate(zip(msg.instances, ref)):
            assert np.array_equal(got.amodal_masks[i], mask_ops.decode(e["segmentation"]))
            assert np.array_equal(got.invisible_masks[i], mask_ops.decode(e["invisible_mask"]))
            # visible masks travel cropped to the amodal ROI (msg definition): equal inside it
            roi = (slice(inst.amodal_roi.y_offset, inst.amodal_roi.y_offset + inst.amodal_roi.height),
                   slice(inst.amodal_roi.x_offset, inst.amodal_roi.x_offset + inst.amodal_roi.width))
            assert np.array_equal(got.visible_masks[i][roi], mask_ops.decode(e["visible_mask"])[roi])
        assert sorted(msg.pick_order) == list(range(len(ref)))

    # Same metrics: replay's own evaluation, the bag read back, and `orcnn eval` of predict's JSON.
    expected = json.loads((tmp_path / "metrics.json").read_text())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert ap_values(summary["evaluation"]) == ap_values(expected)
    image_ids = [by_name[e.file_name] for e in read_image_map(raw_bag / "image_map.json")]
    from_bag = AmodalEvaluator(dataset.images, dataset.categories).evaluate(bag_results(out, image_ids))
    assert ap_values(from_bag) == ap_values(expected)
    assert "AP_IV@0.5" in stdout and "occluders per occluded instance" in stdout
    # --eval-bag on the results bag alone (no model) gives the same numbers
    code, eval_out, _ = run_cli(["--eval-bag", out, "--gt", gt, "--image-map", raw_bag / "image_map.json",
                                 "--summary-json", tmp_path / "eval.json"], capsys)
    assert code == 0, eval_out
    assert ap_values(json.loads((tmp_path / "eval.json").read_text())["evaluation"]) == ap_values(expected)

    # Overlay and copied topic.
    with BagReader(out) as reader:
        overlays = [messages.deserialize(bytes(m.data), m.msgtype)
                    for m in reader.messages([replay.OVERLAY_TOPIC])]
        copied = [(m.timestamp, bytes(m.data)) for m in reader.messages(["/image"])]
    assert [(o.encoding, o.width, o.height) for o in overlays] == [("rgb8", 96, 72)] * 4
    with BagReader(raw_bag) as reader:
        assert copied == [(m.timestamp, bytes(m.data)) for m in reader.messages(["/image"])]
    assert summary["frames_processed"] == 4 and summary["frames_skipped"] == 0
    assert summary["instances_total"] == len(predicted)


# --- a perfect predictor: AP 100 through the whole bag path, for every GT key ------------------

@pytest.mark.parametrize("kind,storage,key", [("raw", "sqlite3", "stamp"), ("compressed", "mcap", "file"),
                                              ("raw", "mcap", "index")])
def test_perfect_predictor_scores_100(tmp_path: Path, dataset, raw_bag: Path, compressed_bag: Path,
                                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                      kind: str, storage: str, key: str) -> None:
    bag, topic = (raw_bag, "/image") if kind == "raw" else (compressed_bag, "/image/compressed")
    fake = PerfectPredictor(dataset)
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: fake)
    out = tmp_path / "out"
    # The raw masks published as they are (--no-layering): the statistics below are then exactly the
    # ground truth's (the layering test below checks the layered path).
    code, stdout, _ = run_cli([bag, "--topic", topic, "--out", out, "--gt", dataset.path, "--gt-key", key,
                               "--storage", storage, "--batch-size", 3, "--no-layering",
                               "--summary-json", tmp_path / "s.json"], capsys)
    assert code == 0, stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert ap_values(summary["evaluation"]) == [100.0] * 7
    order = summary["evaluation"]["order"]
    assert (order["edge_precision"], order["edge_recall"], order["cycle_images"]) == (100.0, 100.0, 0.0)
    assert any(r.occlusion_rate > 0 for r in dataset.images[0].annotations + dataset.images[1].annotations)

    # the bag alone (read back, keyed by the image map) also scores 100
    by_name = {r.file_name: r.image_id for r in dataset.images}
    image_ids = [by_name[e.file_name] for e in read_image_map(bag / "image_map.json")]
    evaluator = AmodalEvaluator(dataset.images, dataset.categories)
    assert ap_values(evaluator.evaluate(bag_results(out, image_ids))) == [100.0] * 7

    # summary statistics against the ground truth itself
    anns = [a for r in dataset.images for a in r.annotations]
    assert summary["instances_total"] == len(anns)
    assert summary["mean_occlusion_rate"] == pytest.approx(np.mean([a.occlusion_rate for a in anns]))
    assert summary["occluded_fraction"] == pytest.approx(np.mean([a.occlusion_rate > 0 for a in anns]))
    assert summary["occluders_per_occluded"] >= 1.0
    assert len(summary["evaluation"]) and "100.0" in stdout


def test_wrong_image_map_breaks_the_match(tmp_path: Path, dataset, raw_bag: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture) -> None:
    """The stamp key really looks frames up: a map that rotates file names scores 0, not 100."""
    entries = read_image_map(raw_bag / "image_map.json")
    names = [e.file_name for e in entries]
    rotated = [MapEntry(e.index, e.stamp_ns, n) for e, n in zip(entries, names[1:] + names[:1])]
    write_image_map(tmp_path / "rotated.json", rotated)
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: PerfectPredictor(dataset))
    code, _, _ = run_cli([raw_bag, "--topic", "/image", "--out", tmp_path / "out", "--gt", dataset.path,
                          "--image-map", tmp_path / "rotated.json",
                          "--summary-json", tmp_path / "s.json"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "s.json").read_text())["evaluation"]["all"]["AP_A"] < 50.0


# --- --eval-bag: evaluating a results bag without a model ------------------------------------

@pytest.mark.parametrize("key", ["stamp", "index", "file"])
def test_eval_bag_scores_a_replay_results_bag_like_the_replay(tmp_path: Path, dataset, raw_bag: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture,
                                                              key: str) -> None:
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: PerfectPredictor(dataset))
    out = tmp_path / "out"
    code, _, _ = run_cli([raw_bag, "--topic", "/image", "--out", out, "--gt", dataset.path, "--gt-key", key,
                          "--summary-json", tmp_path / "replay.json", "--results-json", tmp_path / "r1.json"],
                         capsys)
    assert code == 0
    replayed = json.loads((tmp_path / "replay.json").read_text())["evaluation"]
    # no model from here on
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: RefusingPredictor())
    code, stdout, _ = run_cli(["--eval-bag", out, "--gt", dataset.path, "--gt-key", key,
                               "--image-map", raw_bag / "image_map.json",
                               "--summary-json", tmp_path / "eval.json",
                               "--results-json", tmp_path / "r2.json"], capsys)
    assert code == 0, stdout
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert ap_values(evaluated["evaluation"]) == ap_values(replayed) == [100.0] * 7
    anns = sum(len(r.annotations) for r in dataset.images)
    assert (evaluated["messages"], evaluated["frames_evaluated"], evaluated["frames_without_gt"]) == (4, 4, 0)
    assert evaluated["instances_total"] == anns
    assert "100.0" in stdout and "4 evaluated" in stdout
    # the results JSON holds the same detections as the replay's own (masks survive the bag exactly)
    key_of = lambda e: (e["image_id"], e["score"], e["segmentation"]["counts"])  # noqa: E731
    first = json.loads((tmp_path / "r1.json").read_text())
    second = json.loads((tmp_path / "r2.json").read_text())
    assert len(first) == len(second) == anns
    assert sorted(map(key_of, first)) == sorted(map(key_of, second))


def test_eval_bag_keys_frames_and_evaluates_only_the_frames_in_the_bag(tmp_path: Path, dataset,
                                                                      raw_bag: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: PerfectPredictor(dataset))
    out = tmp_path / "out"
    assert run_cli([raw_bag, "--topic", "/image", "--out", out, "--every", 2], capsys)[0] == 0
    shutil.copy(raw_bag / "image_map.json", out / "image_map.json")  # the default map location
    code, _, _ = run_cli(["--eval-bag", out, "--gt", dataset.path, "--summary-json", tmp_path / "s.json"],
                         capsys)
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["messages"], summary["frames_evaluated"]) == (2, 2)
    assert ap_values(summary["evaluation"]) == [100.0] * 7  # images of skipped-over frames are not counted
    # a rotated map sends every message to the wrong image
    entries = read_image_map(raw_bag / "image_map.json")
    names = [e.file_name for e in entries]
    write_image_map(tmp_path / "rotated.json",
                    [MapEntry(e.index, e.stamp_ns, n) for e, n in zip(entries, names[1:] + names[:1])])
    code, _, _ = run_cli(["--eval-bag", out, "--gt", dataset.path, "--image-map", tmp_path / "rotated.json",
                          "--summary-json", tmp_path / "s.json"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "s.json").read_text())["evaluation"]["all"]["AP_A"] < 50.0
    # a map without these stamps: nothing matches, nothing is evaluated
    write_image_map(tmp_path / "other.json",
                    [MapEntry(e.index, e.stamp_ns + 1, e.file_name) for e in entries])
    code, stdout, _ = run_cli(["--eval-bag", out, "--gt", dataset.path,
                               "--image-map", tmp_path / "other.json",
                               "--summary-json", tmp_path / "s.json"], capsys)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert code == 0 and summary["evaluation"] is None and summary["frames_without_gt"] == 2
    assert "without ground truth (not evaluated): 2" in stdout


def test_eval_bag_option_errors(tmp_path: Path, dataset, raw_bag: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: PerfectPredictor(dataset))
    out = tmp_path / "out"
    assert run_cli([raw_bag, "--topic", "/image", "--out", out], capsys)[0] == 0
    for argv, words in ((["--eval-bag", out], "needs --gt"),
                        (["--eval-bag", out, "--gt", dataset.path, "--topic", "/image"],
                         "--topic do not apply"),
                        (["--eval-bag", out, "--gt", dataset.path], "image map not found"),
                        (["--eval-bag", out, "--gt", dataset.path, "--gt-key", "index",
                          "--instances-topic", "/other"], "no topic '/other'"),
                        (["--eval-bag", raw_bag, "--gt", dataset.path, "--gt-key", "index",
                          "--instances-topic", "/image"], "expected orcnn_ros/msg/AmodalInstanceArray"),
                        (["--topic", "/image", "--out", tmp_path / "o2"], "BAG required"),
                        ([raw_bag, "--topic", "/image"], "--out required")):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and words in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "o2").exists()


# --- real bags: legacy 2019 and malformed -----------------------------------------------------

@pytest.mark.parametrize("topic", ["/image", "/image/compressed"])
def test_legacy_bag(tmp_path: Path, tiny_weights: Path, capsys: pytest.CaptureFixture, topic: str) -> None:
    out = tmp_path / "out"
    code, stdout, _ = run_cli([LEGACY, "--topic", topic, "--out", out, "--weights", tiny_weights,
                               "--device", "cpu", "--copy-topic", "/imu"], capsys)
    assert code == 0, stdout
    with BagReader(LEGACY) as reader:
        (image_msg,) = list(reader.messages([topic]))
        imu = [(m.timestamp, bytes(m.data)) for m in reader.messages(["/imu"])]
    ((stamp, array),) = read_arrays(out)
    assert stamp == image_msg.timestamp
    assert (array.image_width, array.image_height) == (640, 480)
    assert (array.header.frame_id, array.header.stamp.sec, array.header.stamp.nanosec) == ("", 0, 0)
    with BagReader(out) as copied:
        assert [(m.timestamp, bytes(m.data)) for m in copied.messages(["/imu"])] == imu
        assert copied.topics["/imu"].msgtype == "sensor_msgs/msg/Imu"
    assert "1 processed, 0 skipped" in stdout


def test_legacy_missing_topic_lists_image_topics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli([LEGACY, "--topic", "/camera", "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert err.startswith("orcnn-replay: error:") and "/image, /image/compressed" in err
    code, _, err = run_cli([LEGACY, "--topic", "/imu", "--out", tmp_path / "out"], capsys)
    assert code == 2 and "unsupported type sensor_msgs/msg/Imu" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bag", ["test_bag_sqlite3", "test_bag_mcap"])
@pytest.mark.parametrize("topic,cause", [("/test/sensor_msgs/image", "size_mismatch"),
                                         ("/test/sensor_msgs/compressed_image", "truncated_jpeg")])
def test_malformed_frames_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture, bag: str, topic: str,
                                      cause: str) -> None:
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: RefusingPredictor())
    out = tmp_path / "out"
    code, stdout, _ = run_cli([MALFORMED / bag, "--topic", topic, "--out", out,
                               "--summary-json", tmp_path / "s.json"], capsys)
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames_selected"] == 2 and summary["frames_processed"] == 0
    assert summary["skipped_by_cause"] == {cause: 2}
    assert [f["index"] for f in summary["skipped_frames"]] == [0, 1]
    assert all(("30 bytes" if cause == "size_mismatch" else "10 bytes") in f["message"]
               for f in summary["skipped_frames"])
    assert f"skipped by cause: {cause} 2" in stdout
    assert read_arrays(out) == []  # a valid, empty results bag


# --- selection, refusal, interruption -------------------------------------------------------

def test_every_start_end_select_frames(tmp_path: Path, dataset, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "eight"
    folder.mkdir()
    for k in range(8):  # 8 frames at 10 Hz: t = 0.0, 0.1, ... 0.7 s
        shutil.copy(dataset.image_path(dataset.images[k % 4]), folder / f"{k:02d}.png")
    bag = tmp_path / "bag"
    images_to_bag(folder, bag, rate_hz=10, start_ns=START_NS)
    stamps = input_stamps(bag, "/image")
    for extra, expected in ((["--every", 3], [0, 3, 6]), (["--start", 0.25, "--end", 0.55], [3, 4, 5]),
                            (["--every", 2, "--start", 0.25], [4, 6])):
        monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: PerfectPredictor(dataset))
        out = tmp_path / f"out{len(extra)}{extra[0]}"
        code, _, _ = run_cli([bag, "--topic", "/image", "--out", out, *extra], capsys)
        assert code == 0
        assert [t for t, _ in read_arrays(out)] == [stamps[k] for k in expected], extra


def test_existing_output_is_refused(tmp_path: Path, dataset, raw_bag: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: PerfectPredictor(dataset))
    out = tmp_path / "out"
    assert run_cli([raw_bag, "--topic", "/image", "--out", out, "--every", 2], capsys)[0] == 0
    code, _, err = run_cli([raw_bag, "--topic", "/image", "--out", out], capsys)
    assert code == 2 and "--overwrite" in err
    assert len(read_arrays(out)) == 2  # untouched
    assert run_cli([raw_bag, "--topic", "/image", "--out", out, "--overwrite"], capsys)[0] == 0
    assert len(read_arrays(out)) == 4
    code, _, err = run_cli([raw_bag, "--topic", "/image", "--out", raw_bag, "--overwrite"], capsys)
    assert code == 2 and "input bag" in err and (raw_bag / "image_map.json").is_file()


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_interrupted_run_leaves_a_readable_partial_bag(tmp_path: Path, dataset, raw_bag: Path, storage: str,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    interrupting = PerfectPredictor(dataset, interrupt_on_call=2)
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: interrupting)
    out = tmp_path / "out"
    code, stdout, err = run_cli([raw_bag, "--topic", "/image", "--out", out, "--batch-size", 2,
                                 "--storage", storage], capsys)
    assert code == 130 and "interrupted" in err and "INTERRUPTED" in stdout
    assert [t for t, _ in read_arrays(out)] == input_stamps(raw_bag, "/image")[:2]  # the first batch


def test_model_failure_skips_only_the_failing_frame(tmp_path: Path, dataset, raw_bag: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    bad = sorted(r.image_id for r in dataset.images)[2]
    failing = PerfectPredictor(dataset, fail_on_image=bad)
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: failing)
    out = tmp_path / "out"
    code, _, _ = run_cli([raw_bag, "--topic", "/image", "--out", out, "--batch-size", 4,
                          "--summary-json", tmp_path / "s.json"], capsys)
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["skipped_by_cause"] == {"error:RuntimeError": 1}
    stamps = input_stamps(raw_bag, "/image")
    assert [t for t, _ in read_arrays(out)] == [stamps[0], stamps[1], stamps[3]]


class WrongSizePredictor(PerfectPredictor):
    """Returns, for one image, a prediction whose masks do not fit the image (a broken model)."""

    def __init__(self, dataset, broken_image: int) -> None:
        super().__init__(dataset)
        self.broken_image = broken_image

    def predict_batch(self, images, batch_size: int = 4, **limits) -> list:
        out = super().predict_batch(images, batch_size)
        for image_id, prediction in zip(self.seen[-len(out):], out):
            if image_id == self.broken_image:
                assert len(prediction)  # masks exist, so their size is checked
                prediction.image_size = (prediction.image_size[0] + 1, prediction.image_size[1])
        return out


def test_unbuildable_result_skips_only_that_frame(tmp_path: Path, dataset, raw_bag: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    fake = WrongSizePredictor(dataset, broken_image=sorted(r.image_id for r in dataset.images)[1])
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: fake)
    code, _, _ = run_cli([raw_bag, "--topic", "/image", "--out", tmp_path / "out", "--overlay",
                          "--summary-json", tmp_path / "s.json"], capsys)
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["skipped_by_cause"] == {"error:InputError": 1}
    stamps = input_stamps(raw_bag, "/image")
    assert [t for t, _ in read_arrays(tmp_path / "out")] == [stamps[0], stamps[2], stamps[3]]
    assert len(read_arrays(tmp_path / "out", replay.OVERLAY_TOPIC)) == 3  # nothing half-written


def test_option_errors(tmp_path: Path, raw_bag: Path, dataset, capsys: pytest.CaptureFixture) -> None:
    for extra, words in ((["--every", 0], "--every"), (["--copy-topic", "/nope"], "/nope"),
                         (["--gt", dataset.path, "--image-map", tmp_path / "none.json"],
                          "image map not found"),
                         (["--weights", tmp_path / "missing.safetensors"], "missing")):
        code, _, err = run_cli([raw_bag, "--topic", "/image", "--out", tmp_path / "o", *extra], capsys)
        assert code == 2 and words in err and err.count("\n") == 1, (extra, err)
        assert not (tmp_path / "o").exists()


def test_copy_topic_clashes_only_with_topics_that_are_written(tmp_path: Path) -> None:
    opts = replay.ReplayOptions(bag=tmp_path / "in", topic="/image", out=tmp_path / "o",
                                copy_topics=(replay.OVERLAY_TOPIC,))
    opts.validate()  # no --overlay: nothing is written on the overlay topic, so copying it is fine
    opts.overlay = True
    with pytest.raises(InputError, match=replay.OVERLAY_TOPIC):
        opts.validate()
    opts = replay.ReplayOptions(bag=tmp_path / "in", topic="/image", out=tmp_path / "o",
                                copy_topics=(replay.INSTANCES_TOPIC,))
    with pytest.raises(InputError, match=replay.INSTANCES_TOPIC):
        opts.validate()


# --- the launch file (launch is not importable here: check its structure) ----------------------

def test_replay_launch_file_structure() -> None:
    source = (REPO / "launch" / "replay.launch.py").read_text()
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    names = [getattr(c.func, "id", getattr(c.func, "attr", "")) for c in calls]
    declared = {c.args[0].value for c in calls if getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    assert {"bag", "image_topic", "out_bag", "weights"} <= declared
    assert names.count("ExecuteProcess") >= 2 and "IncludeLaunchDescription" in names
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"play", "record", "orcnn.launch.py"} <= strings
    assert replay.INSTANCES_TOPIC.lstrip("/") in " ".join(strings)


def test_a_ground_truth_image_shown_by_two_frames_is_evaluated_once(tmp_path: Path, dataset, raw_bag: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    # docs/replay.md: an image repeated in the bag is evaluated once, for its first frame. Here the
    # map says frames 0 and 1 both show image 0, but frame 1 carries image 1's pixels: evaluating it
    # as image 0 again would add false positives to image 0 (the predictor is perfect otherwise).
    entries = read_image_map(raw_bag / "image_map.json")
    twice = [MapEntry(e.index, e.stamp_ns, entries[0].file_name if e.index == 1 else e.file_name)
             for e in entries]
    write_image_map(tmp_path / "map.json", twice)
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: PerfectPredictor(dataset))
    code, _, _ = run_cli([raw_bag, "--topic", "/image", "--out", tmp_path / "o", "--gt", dataset.path,
                          "--image-map", tmp_path / "map.json", "--summary-json", tmp_path / "s.json"],
                         capsys)
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames_processed"] == len(entries)
    assert [summary["evaluation"]["all"][k] for k in AP_COLUMNS] == [100.0, 100.0, 100.0]


def test_a_bag_damaged_part_way_keeps_the_frames_before_and_fails_in_one_line(tmp_path: Path, raw_bag: Path,
                                                                             dataset, monkeypatch,
                                                                             capsys: pytest.CaptureFixture):
    # Found by bench/fuzz.py: a .db3 whose later pages are garbage raised apsw.CorruptError from deep in
    # the storage (a traceback). 0xFF over the last tenth of the file breaks it after 3 of 4 frames.
    (db3,) = raw_bag.glob("*.db3")
    damaged = bytearray(db3.read_bytes())
    start = int(len(damaged) * 0.9)
    damaged[start:start + 4096] = b"\xff" * 4096
    bag = tmp_path / "damaged.db3"
    bag.write_bytes(bytes(damaged))
    monkeypatch.setattr(replay_run, "load_predictor", lambda *a, **k: PerfectPredictor(dataset))
    code, _, err = run_cli([bag, "--topic", "/image", "--out", tmp_path / "out", "--batch-size", 4], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "is damaged: reading stopped after 3 message(s)" in lines[0], err
    assert len(read_arrays(tmp_path / "out")) == 3  # the batch read before the damage was written

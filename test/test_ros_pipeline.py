"""The node's per-frame logic without ROS: settings, bad-frame policy, newest-frame slot, worker."""

import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from orcnn_core.engine.predictor import load_predictor
from orcnn_core.errors import CauseCounter, InputError
from orcnn_core.structures import Prediction
from orcnn_ros import messages
from orcnn_ros.params import NodeParams, check_update, params_from_mapping
from orcnn_ros.pipeline import AmodalPipeline, LatestFrameSlot, PipelineWorker

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
MALFORMED = FIXTURES / "rosbag2_malformed"


# -- the pipeline ---------------------------------------------------------------------------------

class FakePredictor:
    """Two overlapping rectangles scaled to the image; counts calls and can be made to fail or wait."""

    def __init__(self, fail_on=(), gate=None):
        self.calls = 0
        self.fail_on = set(fail_on)
        self.gate = gate
        self.seen = []
        self.limits = []  # (score_threshold, max_instances) of every call

    def predict_batch(self, images, batch_size=4, *, score_threshold=None, max_instances=None):
        self.limits.append((score_threshold, max_instances))
        return [self(image) for image in images]

    def __call__(self, image):
        self.calls += 1
        self.seen.append(int(image[0, 0, 0]))
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.calls in self.fail_on:
            raise RuntimeError("model exploded")
        h, w = image.shape[:2]
        amodal = np.zeros((2, h, w), bool)
        amodal[0, h // 4: 3 * h // 4, w // 8: w // 2] = True
        amodal[1, h // 3: 7 * h // 8, w // 3: 3 * w // 4] = True
        visible = amodal.copy()
        visible[0] &= ~amodal[1]
        boxes = np.zeros((2, 4), np.float32)
        return Prediction(boxes, boxes.copy(), np.array([1, 2]), np.array([1, 2]), ["a", "b"],
                          np.array([0.9, 0.8], np.float32), amodal, visible, amodal & ~visible, (h, w))


def good_frame(value=50, h=48, w=64):
    return messages.make_image(messages.make_header(1, 2, "cam"), np.full((h, w, 3), value, np.uint8))


def bad_encoding_frame():
    frame = good_frame()
    frame.encoding = "yuv422"
    return frame


def size_mismatch_frame():
    frame = good_frame()
    frame.data = frame.data[:30]
    return frame


def make_pipeline(predictor=None, **params):
    """A pipeline with the per-frame settings of the node parameters ``params``."""
    settings = params_from_mapping(params).frame_settings()
    return AmodalPipeline(predictor or FakePredictor(), messages.rosbags_factories(), settings)


def test_good_frame_gives_instances_with_the_input_header_and_overlay_on_request():
    pipeline = make_pipeline(occluder_min_pixels=1)
    frame = good_frame()
    result = pipeline.process(frame)
    assert result.overlay is None
    assert result.instances.header is frame.header
    assert [list(i.occluder_ids) for i in result.instances.instances] == [[1], []]
    with_overlay = pipeline.process(frame, want_overlay=True)
    ov = with_overlay.overlay
    assert (ov.encoding, ov.height, ov.width, ov.header) == ("rgb8", 48, 64, frame.header)
    assert pipeline.processed == 2 and pipeline.skipped == 0


def test_bad_frames_are_skipped_counted_and_logged_once_per_cause(caplog):
    predictor = FakePredictor()
    pipeline = make_pipeline(predictor, image_max_side=100)
    jpeg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    frames = [bad_encoding_frame(), good_frame(), bad_encoding_frame(), size_mismatch_frame(),
              messages.make_compressed_image(messages.make_header(), jpeg[:10]), good_frame(),
              size_mismatch_frame(), good_frame(h=50, w=200), bad_encoding_frame(), good_frame()]
    with caplog.at_level(logging.WARNING, logger="orcnn_ros.pipeline"):
        results = [pipeline.process(f) for f in frames]
    assert [k for k, r in enumerate(results) if r is not None] == [1, 5, 9]
    assert pipeline.processed == 3 and predictor.calls == 3
    assert dict(pipeline.skipped_by_cause) == {"unsupported_encoding": 3, "size_mismatch": 2,
                                               "truncated_jpeg": 1, "too_large": 1}
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 4, logged
    for cause in pipeline.skipped_by_cause:
        assert sum(cause in m for m in logged) == 1
    assert any("yuv422" in m for m in logged) and any("exceeds image_max_side" in m for m in logged)


def test_a_failing_model_skips_the_frame_and_processing_goes_on(caplog):
    pipeline = make_pipeline(FakePredictor(fail_on={2, 3}))
    with caplog.at_level(logging.ERROR, logger="orcnn_ros.pipeline"):
        results = [pipeline.process(good_frame()) for _ in range(4)]
    assert [r is not None for r in results] == [True, False, False, True]
    assert pipeline.skipped_by_cause["error:RuntimeError"] == 2
    assert len(caplog.records) == 1 and "model exploded" in caplog.records[0].getMessage()


def test_diagnostics_warn_after_skips_then_recover():
    pipeline = make_pipeline()
    pipeline.process(good_frame())
    pipeline.process(bad_encoding_frame())
    level, message, values = pipeline.diagnostics()
    assert level == 1 and "1 bad frame" in message
    assert values["frames_processed"] == "1" and values["skipped[unsupported_encoding]"] == "1"
    assert float(values["latency_mean_ms"]) > 0 and float(values["latency_p95_ms"]) > 0
    pipeline.process(good_frame())
    level, message, values = pipeline.diagnostics()
    assert (level, message, values["frames_processed"]) == (0, "ok", "2")


def test_class_names_parameter_renames_by_label():
    pipeline = make_pipeline(class_names=["mug"])
    names = [i.class_name for i in pipeline.process(good_frame()).instances.instances]
    assert names == ["mug", "b"]  # label 2 has no override: keeps the model's name


def test_finish_is_the_part_of_process_after_the_model():
    """decode + model + finish (the batched replay's path) builds what process builds, counting nothing."""
    pipeline = make_pipeline(occluder_min_pixels=1, class_names=["mug"])
    frame = good_frame(value=70)
    via_process = pipeline.process(frame, want_overlay=True)
    image = pipeline.decode(frame)
    via_finish = pipeline.finish(image, FakePredictor()(image), frame.header, want_overlay=True)
    assert pipeline.processed == 1  # finish leaves the counters to its caller
    assert [i.class_name for i in via_finish.instances.instances] == ["mug", "b"]
    assert [list(i.occluder_ids) for i in via_finish.instances.instances] == [[1], []]
    for got, ref, kind in ((via_finish.instances, via_process.instances, messages.INSTANCE_ARRAY_TYPE),
                           (via_finish.overlay, via_process.overlay, messages.IMAGE_TYPE)):
        assert messages.serialize(got, kind) == messages.serialize(ref, kind)
    assert via_finish.overlay.header is frame.header
    assert pipeline.finish(image, FakePredictor()(image), frame.header).overlay is None


def test_finish_raises_for_a_broken_prediction_and_process_counts_it():
    pipeline = make_pipeline()
    image = np.zeros((48, 64, 3), np.uint8)
    broken = FakePredictor()(image)
    broken.image_size = (49, 64)
    with pytest.raises(InputError, match="image_size"):
        pipeline.finish(image, broken, messages.make_header())
    assert pipeline.skipped == 0 and pipeline.processed == 0

    class Broken(FakePredictor):
        def __call__(self, img):
            return broken

    pipeline.predictor = Broken()
    assert pipeline.process(good_frame()) is None
    assert dict(pipeline.skipped_by_cause) == {"error:InputError": 1}


@pytest.mark.parametrize("bag", ["test_bag_sqlite3", "test_bag_mcap"])
def test_malformed_fixture_bags_are_skipped_per_message_and_processing_goes_on(bag, caplog):
    store = messages.typestore()
    frames = []
    with Reader(MALFORMED / bag) as reader:
        wanted = [c for c in reader.connections if c.msgtype in (messages.IMAGE_TYPE,
                                                                 messages.COMPRESSED_IMAGE_TYPE)]
        for conn, _, raw in reader.messages(connections=wanted):
            frames.append(store.deserialize_cdr(raw, conn.msgtype))
    assert len(frames) >= 4
    pipeline = make_pipeline()
    with caplog.at_level(logging.WARNING, logger="orcnn_ros.pipeline"):
        for frame in frames:
            assert pipeline.process(frame) is None
            assert pipeline.process(good_frame()) is not None  # the next good frame still works
    n_raw = sum(hasattr(f, "encoding") for f in frames)
    assert dict(pipeline.skipped_by_cause) == {"size_mismatch": n_raw, "truncated_jpeg": len(frames) - n_raw}
    assert pipeline.processed == len(frames)
    assert len(caplog.records) == 2


# -- newest-frame-only hand-over ------------------------------------------------------------------

def test_cause_counter_says_which_event_is_the_first_of_its_cause():
    counts = CauseCounter()
    assert [counts.add(c) for c in ("a", "b", "a", "a")] == [True, True, False, False]
    assert counts == {"a": 3, "b": 1} and sum(counts.values()) == 4


def test_latest_frame_slot_keeps_only_the_newest():
    slot = LatestFrameSlot()
    assert [slot.put(k) for k in (1, 2, 3)] == [False, True, True]
    assert slot.dropped == 2
    assert slot.take(timeout=1) == 3
    assert slot.take(timeout=0.01) is None


def test_latest_frame_slot_hands_over_between_threads_and_close_wakes_a_waiter():
    slot = LatestFrameSlot()
    got = []
    taker = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    taker.start()
    slot.put("frame")
    taker.join(10)
    assert got == ["frame"]
    waiter = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    waiter.start()
    slot.close()
    waiter.join(10)
    assert not waiter.is_alive() and got == ["frame", None]


def test_latest_frame_slot_reopen_discards_a_stale_frame_and_counts_it():
    slot = LatestFrameSlot()
    slot.put("old")
    slot.close()
    assert slot.reopen() is True and slot.dropped == 1
    assert slot.take(timeout=0.01) is None
    assert slot.reopen() is False and slot.dropped == 1


def test_worker_restart_does_not_publish_a_frame_from_before_deactivation():
    predictor = FakePredictor()
    pipeline = make_pipeline(predictor)
    published = []
    worker = PipelineWorker(pipeline, published.append, poll_s=0.05)
    worker.start()
    assert worker.stop(timeout=10)
    worker.submit(good_frame(10))  # arrives after deactivation: stale once reactivated
    worker.start()
    try:
        worker.submit(good_frame(20))
        for _ in range(500):
            if published:
                break
            threading.Event().wait(0.01)
    finally:
        assert worker.stop(timeout=10)
    assert predictor.seen == [20] and len(published) == 1
    assert pipeline.dropped == 1 and pipeline.processed == 1


def test_worker_drops_stale_frames_while_busy_and_processes_the_newest():
    gate = threading.Event()
    predictor = FakePredictor(gate=gate)
    pipeline = make_pipeline(predictor)
    published = []
    done = threading.Event()

    def publish(result):
        published.append(result)
        if len(published) == 2:
            done.set()

    worker = PipelineWorker(pipeline, publish, poll_s=0.05)
    worker.start()
    try:
        worker.submit(good_frame(10))
        for _ in range(200):  # bounded wait until the worker has taken frame 10 and blocks in the model
            if predictor.calls:
                break
            threading.Event().wait(0.01)
        assert predictor.calls == 1
        for value in (20, 30, 40):  # arrive while the model is busy: only 40 survives
            worker.submit(good_frame(value))
        gate.set()
        assert done.wait(10)
    finally:
        assert worker.stop(timeout=10)
    assert predictor.seen == [10, 40]
    assert pipeline.dropped == 2 and pipeline.processed == 2


def test_end_to_end_with_a_small_random_model():
    config = str(REPO / "config" / "models" / "small_cpu.yaml")
    params = params_from_mapping({"model_config": config, "device": "cpu", "score_threshold": 0.0,
                                  "max_instances": 5})
    pipeline = make_pipeline(load_predictor(**params.predictor_kwargs()), score_threshold=0.0,
                             max_instances=5)
    result = pipeline.process(good_frame(value=90, h=96, w=128), want_overlay=True)
    assert result is not None, dict(pipeline.skipped_by_cause)
    msg = result.instances
    assert (msg.image_width, msg.image_height) == (128, 96)
    assert len(msg.instances) == len(result.prediction) <= 5
    assert sorted(int(k) for k in msg.pick_order) == list(range(len(msg.instances)))
    back = messages.deserialize(messages.serialize(msg, messages.INSTANCE_ARRAY_TYPE),
                                messages.INSTANCE_ARRAY_TYPE)
    assert len(back.instances) == len(msg.instances)


# -- live parameters --------------------------------------------------------------------------------

def test_live_parameters_reach_the_next_frame():
    # `ros2 param set score_threshold 0.95` used to say "successful" and change nothing until a
    # reconfigure. The node's callback validates (check_update) and hands the new settings over.
    predictor = FakePredictor()
    params = NodeParams(score_threshold=0.5, max_instances=50, occluder_min_pixels=10**6)
    pipeline = AmodalPipeline(predictor, messages.rosbags_factories(), params.frame_settings())
    first = pipeline.process(good_frame())
    assert [list(i.occluder_ids) for i in first.instances.instances] == [[], []]  # 10**6 px needed
    params = check_update(params, {"score_threshold": 0.95, "max_instances": 7, "occluder_min_pixels": 1},
                          configured=True)
    pipeline.update_settings(params.frame_settings())
    second = pipeline.process(good_frame())
    assert predictor.limits == [(0.5, 50), (0.95, 7)]
    assert [list(i.occluder_ids) for i in second.instances.instances] == [[1], []]


def test_a_frame_keeps_the_settings_snapshot_it_started_with():
    gate = threading.Event()
    predictor = FakePredictor(gate=gate)
    pipeline = make_pipeline(predictor, score_threshold=0.5)
    results = []
    worker = threading.Thread(target=lambda: results.append(pipeline.process(good_frame())))
    worker.start()
    for _ in range(200):
        if predictor.calls:
            break
        threading.Event().wait(0.01)
    # Changed while the frame is inside the model: this frame's class names stay the old ones.
    pipeline.update_settings(params_from_mapping({"score_threshold": 0.9, "class_names": ["mug"]})
                             .frame_settings())
    gate.set()
    worker.join(10)
    assert [i.class_name for i in results[0].instances.instances] == ["a", "b"]
    assert [i.class_name for i in pipeline.process(good_frame()).instances.instances] == ["mug", "b"]

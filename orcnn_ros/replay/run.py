"""The replay loop: read frames, predict in batches, write one result message per frame in receive order.

Works without ROS 2: bags are read and written with ``rosbags`` (``orcnn_ros.bagio``). The per-frame
steps are the node's own (``AmodalPipeline``: decode with its size limit and per-cause errors, then
``finish``), so a replay publishes exactly what the node would for the same frames and settings.

With ``--depth-topic`` / ``--camera-info-topic``, depth and camera_info are paired by stamp
(``DepthInfoSynchronizer``) and each frame gets the depth nearest its stamp (``DepthPairing``, the
node's rule). A frame is paired as soon as the depth stream has passed its stamp (+ slop), and a
batch waits for that (or for ``DEPTH_WAIT_S`` of bag time), so depth recorded after its colour frame
is still used and no frame's depth has left the bounded history by the time it is paired.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from orcnn_core.analysis import AnalysisConfig, frame_results
from orcnn_core.engine.predictor import load_predictor
from orcnn_core.errors import InputError
from orcnn_core.layering import LayeringConfig
from orcnn_ros import messages
from orcnn_ros.bagio import BagMessage, BagReader, BagWriter, copy_topic_info, prepare_output
from orcnn_ros.conversions import ImageInputError
from orcnn_ros.depth_pairing import DepthInfoSynchronizer, DepthPairing
from orcnn_ros.params import FrameSettings
from orcnn_ros.pipeline import AmodalPipeline
from orcnn_ros.replay.ground_truth import GroundTruthIndex, header_stamp_ns, load_ground_truth
from orcnn_ros.replay.options import ReplayOptions
from orcnn_ros.replay.report import ReplaySummary, evaluate

log = logging.getLogger("orcnn-replay")
DEPTH_WAIT_S = 1.0    # bag time a batch waits for its depth before it is processed without
DEPTH_HISTORY = 64    # depth pairs kept for matching (a second of 60 Hz depth)
DEPTH_TYPES = {"depth": messages.IMAGE_TYPE, "camera_info": messages.CAMERA_INFO_TYPE}


@dataclass
class Frame:
    """One selected image message on its way through the replay."""

    msg: BagMessage
    header: Any
    image: Optional[np.ndarray] = None
    prediction: Any = None
    gt_image_id: Optional[int] = None
    seconds: float = 0.0  # processing time so far (decode, inference share, messages, write)
    depth: Any = None                  # the DepthSample paired with it (with --depth-topic)
    depth_cause: Optional[str] = None  # "" paired, else why not; None: not paired yet

    @property
    def stamp_ns(self) -> int:
        return header_stamp_ns(self.header)


def frame_settings(opts: ReplayOptions) -> FrameSettings:
    """The per-frame settings of a replay: the node's defaults with the run's score threshold."""
    analysis = AnalysisConfig(layering=LayeringConfig(enabled=opts.layering))
    return FrameSettings(score_threshold=opts.score_threshold, max_instances=None, analysis=analysis)


class ReplayRun:
    """One run: reads frames, predicts in batches, writes results in receive-time order."""

    def __init__(self, opts: ReplayOptions, predictor: Any, writer: BagWriter, summary: ReplaySummary,
                 gt_index: Optional[GroundTruthIndex]) -> None:
        self.opts, self.writer = opts, writer
        self.summary, self.gt_index = summary, gt_index
        self.settings = frame_settings(opts)
        self.pipeline = AmodalPipeline(predictor, messages.rosbags_factories(), self.settings)
        self.results: list = []
        self.depth_pairing: Optional[DepthPairing] = None
        if opts.depth_topic is not None:
            self.depth_pairing = DepthPairing(opts.depth_slop, DEPTH_HISTORY)
            self._depth_sync = DepthInfoSynchronizer(self.depth_pairing.add, opts.depth_slop)
            self._bad_depth_logged = False
            summary.depth = True
        self._pending: list = []   # decoded frames waiting for a batch
        self._queue: list = []     # ("frame", Frame) | ("copy", BagMessage) in receive order

    def feed(self, msg: BagMessage) -> None:
        """Take one message of the input (image topic or copied topic) in receive order."""
        if msg.topic in self.opts.copy_topics:
            self._queue.append(("copy", msg))
        depth_topics = (self.opts.depth_topic, self.opts.camera_info_topic)
        if self.depth_pairing is not None and msg.topic in depth_topics:
            self._feed_depth(msg)
            self._pair_depth()
        if msg.topic == self.opts.topic and msg.index % self.opts.every == 0:
            self.summary.frames_selected += 1
            frame = self._decode(msg)
            if frame is not None:
                self._pending.append(frame)
                self._queue.append(("frame", frame))
                self._pair_depth()
        if not self._pending or (len(self._pending) >= self.opts.batch_size and self._depth_settled(msg)):
            self.flush()

    def _feed_depth(self, msg: BagMessage) -> None:
        """A depth image or camera_info message into the synchroniser; a malformed one is ignored."""
        try:
            ros_msg = messages.deserialize(bytes(msg.data), msg.msgtype)
        except InputError as exc:
            if not self._bad_depth_logged:
                self._bad_depth_logged = True
                log.warning("%s: ignoring a message that cannot be read (%s); frames without depth "
                            "are processed without 3D", msg.topic, exc)
            return
        if msg.topic == self.opts.depth_topic:
            self._depth_sync.add_depth(ros_msg)
        else:
            self._depth_sync.add_info(ros_msg)

    def _pair_depth(self, force: bool = False) -> None:
        """Pair each waiting frame with depth once the depth stream has passed its stamp (+ slop): no
        nearer depth can come after that. ``force``: pair every waiting frame now (batch time)."""
        if self.depth_pairing is None:
            return
        latest = self.depth_pairing.latest_stamp_ns()
        slop_ns = round(self.opts.depth_slop * 1e9)
        for frame in self._pending:
            passed = latest is not None and latest >= frame.stamp_ns + slop_ns
            if frame.depth_cause is None and (force or passed):
                frame.depth, frame.depth_cause = self.depth_pairing.match(frame.stamp_ns)

    def _depth_settled(self, msg: BagMessage) -> bool:
        """True when the newest pending frame is paired with depth, or ``DEPTH_WAIT_S`` of bag time
        passed since it was received. Always true without depth."""
        if self.depth_pairing is None:
            return True
        newest = self._pending[-1]
        waited = msg.timestamp - newest.msg.timestamp >= DEPTH_WAIT_S * 1e9
        return newest.depth_cause is not None or waited

    def _decode(self, msg: BagMessage) -> Optional[Frame]:
        started = time.perf_counter()
        frame = Frame(msg=msg, header=None)
        try:
            ros_msg = messages.deserialize(bytes(msg.data), msg.msgtype)
        except InputError as exc:
            self._mark_gt(frame)
            self.summary.skip(msg, "malformed_message", str(exc))
            return None
        frame.header = ros_msg.header
        self._mark_gt(frame)
        try:
            frame.image = self.pipeline.decode(ros_msg, self.settings)
        except ImageInputError as exc:
            self.summary.skip(msg, exc.cause, str(exc))
            return None
        except Exception as exc:  # like the node: a frame no decoder can read is skipped, the run goes on
            self.summary.skip(msg, f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}")
            return None
        frame.seconds += time.perf_counter() - started
        return frame

    def _mark_gt(self, frame: Frame) -> None:
        """Attach the ground-truth image id; frames whose image repeats are not evaluated twice."""
        if self.gt_index is None:
            return
        stamp = frame.stamp_ns if frame.header is not None else None
        record = self.gt_index.claim(frame.msg.index, stamp)
        self.summary.frames_without_gt = self.gt_index.unmatched
        if record is not None:
            frame.gt_image_id = record.image_id

    def flush(self) -> None:
        """Predict the pending frames, then write everything queued in receive order."""
        if self._pending:
            self._pair_depth(force=True)
            self._predict(self._pending)
        for kind, item in self._queue:
            if kind == "copy":
                self._write(item.topic, item.timestamp, item.data)
            elif item.prediction is not None:
                self._write_frame(item)
        self._pending, self._queue = [], []

    def _predict(self, frames: list) -> None:
        started = time.perf_counter()
        try:
            predictions = self.pipeline.predictor.predict_batch(
                [f.image for f in frames], batch_size=len(frames),
                score_threshold=self.settings.score_threshold, max_instances=self.settings.max_instances)
        except Exception as exc:  # a model failure on one frame must not cost the others
            if len(frames) > 1:
                for frame in frames:
                    self._predict([frame])
                return
            self.summary.skip(frames[0].msg, f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}")
            return
        share = (time.perf_counter() - started) / len(frames)
        for frame, prediction in zip(frames, predictions):
            frame.prediction = prediction
            frame.seconds += share

    def _write_frame(self, frame: Frame) -> None:
        started = time.perf_counter()
        try:  # like the node: a frame whose messages cannot be built is skipped
            payloads, result = self._frame_messages(frame)
        except Exception as exc:
            self.summary.skip(frame.msg, f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}")
            return
        for topic, data in payloads:  # a failing write is fatal: the output bag is closed as it is
            self._write(topic, frame.msg.timestamp, data)
        if frame.gt_image_id is not None:  # what the message carries: layered masks and the graph
            self.results.extend(frame_results(result.analysis, frame.gt_image_id,
                                              self.gt_index.seen[frame.gt_image_id]))
        self._account(frame, result.analysis.graph, time.perf_counter() - started)
        if result.depth_expected:
            if result.no_3d_cause:
                if self.summary.no_3d_by_cause.add(result.no_3d_cause):
                    log.warning("frame %d processed without 3D (%s): %s; further frames with this cause are "
                                "only counted", frame.msg.index, result.no_3d_cause, result.no_3d_message)
            else:
                self.summary.frames_with_3d += 1

    def _frame_messages(self, frame: Frame) -> tuple[list, Any]:
        """Serialized (topic, bytes) of one frame's results (the node's ``finish``) and the FrameResult."""
        result = self.pipeline.finish(frame.image, frame.prediction, frame.header, self.opts.overlay,
                                      self.settings, frame.depth, frame.depth_cause or "")
        payloads = [(self.opts.instances_topic, messages.serialize(result.instances,
                                                                   messages.INSTANCE_ARRAY_TYPE))]
        if result.overlay is not None:
            overlay = messages.serialize(result.overlay, messages.IMAGE_TYPE)
            payloads.append((self.opts.overlay_topic, overlay))
        return payloads, result

    def _write(self, topic: str, timestamp: int, data: bytes) -> None:
        self.writer.write(topic, timestamp, data)
        self.summary.written[topic] += 1

    def _account(self, frame: Frame, occlusion: Any, seconds: float) -> None:
        s = self.summary
        s.frames_processed += 1
        s.latencies_ms.append((frame.seconds + seconds) * 1000.0)
        s.instances_per_frame.append(len(frame.prediction))
        rates = np.asarray(occlusion.occlusion_rate, dtype=np.float64)
        s.occlusion_rates.extend(rates.tolist())
        s.occluder_counts.extend(len(occlusion.occluder_ids[i]) for i in np.flatnonzero(rates > 0))
        frame.image = None  # free the pixels; the frame stays queued only until written


def _window(reader: BagReader, opts: ReplayOptions) -> tuple[Optional[int], Optional[int]]:
    """--start/--end as absolute receive times (ns), relative to the bag's first message."""
    if opts.start is None and opts.end is None:
        return None, None
    first, _ = reader.time_range()
    start = None if opts.start is None else first + round(opts.start * 1e9)
    end = None if opts.end is None else first + round(opts.end * 1e9)
    return start, end


def _check_depth_topics(reader: BagReader, opts: ReplayOptions) -> list:
    """The depth and camera_info topics to read (none without --depth-topic); InputError naming a topic
    the bag lacks or holds with another type."""
    if opts.depth_topic is None:
        return []
    wanted = {"depth": ("--depth-topic", opts.depth_topic), "camera_info": ("--camera-info-topic",
                                                                              opts.camera_info_topic)}
    for kind, (flag, topic) in wanted.items():
        info = reader.topics.get(topic)
        if info is None:
            raise InputError(f"{flag} {topic}: bag {opts.bag} has no such topic "
                             f"(topics: {', '.join(sorted(reader.topics))})")
        if info.msgtype != DEPTH_TYPES[kind]:
            raise InputError(f"{flag} {topic}: holds {info.msgtype}, expected {DEPTH_TYPES[kind]}")
    return [opts.depth_topic, opts.camera_info_topic]


def _resume_point(opts: ReplayOptions) -> Optional[int]:
    """Receive time (ns) of the last message a killed run left in ``opts.out``; its inputs up to then
    are done. Messages are written in receive order, so every earlier input is in the bag too."""
    if not Path(opts.out).exists():
        raise InputError(f"--resume: {opts.out} does not exist; nothing to resume (leave out --resume)")
    if Path(opts.bag).resolve() == Path(opts.out).resolve():
        raise InputError(f"output bag {opts.out} is the input bag; choose another --out")
    with BagReader(opts.out) as written:
        stamps = [written.last_written(t).timestamp for t in written.topics]
    stamps = [t for t in stamps if t is not None]
    return max(stamps) if stamps else None


def run_replay(opts: ReplayOptions, predictor: Any = None) -> ReplaySummary:
    """Replay ``opts.bag`` through ``predictor`` (default: loaded from ``opts.weights``) into ``opts.out``.

    A KeyboardInterrupt ends the run early with ``summary.interrupted`` set; the output bag is
    finalised in every case and holds everything written up to then.
    """
    from tqdm import tqdm

    opts.validate()
    with BagReader(opts.bag) as reader:
        info = reader.image_topic(opts.topic)
        copy_infos = []
        for topic in opts.copy_topics:
            if topic not in reader.topics:
                raise InputError(f"--copy-topic {topic}: bag {opts.bag} has no such topic "
                                 f"(topics: {', '.join(sorted(reader.topics))})")
            copy_infos.append(reader.topics[topic])
        depth_topics = _check_depth_topics(reader, opts)
        dataset, gt_index = (load_ground_truth(opts.gt, opts.gt_key, opts.image_map, opts.bag)
                             if opts.gt else (None, None))
        if predictor is None:
            predictor = load_predictor(opts.weights, device=opts.device, score_threshold=opts.score_threshold)
        start_ns, end_ns = _window(reader, opts)
        done_until = _resume_point(opts) if opts.resume else None
        if done_until is None:
            prepare_output(opts.out, opts.overwrite, inputs=[opts.bag])
        summary = ReplaySummary(bag=str(opts.bag), topic=opts.topic, out=str(opts.out),
                                frames_in_topic=info.count)
        started = time.perf_counter()
        with BagWriter(opts.out, opts.storage, resume=opts.resume) as writer:
            store = messages.typestore()
            writer.add_topic(opts.instances_topic, messages.INSTANCE_ARRAY_TYPE, typestore=store)
            if opts.overlay:
                writer.add_topic(opts.overlay_topic, messages.IMAGE_TYPE, typestore=store)
            for copy_info in copy_infos:
                copy_topic_info(writer, copy_info, store)
            run = ReplayRun(opts, predictor, writer, summary, gt_index)
            topics = list(dict.fromkeys([opts.topic, *opts.copy_topics, *depth_topics]))
            bar = tqdm(total=info.count, unit="frame", desc="replay", disable=None if opts.progress else True)
            try:
                for msg in reader.messages(topics):
                    if (start_ns is not None and msg.timestamp < start_ns) or \
                            (end_ns is not None and msg.timestamp > end_ns):
                        continue
                    if done_until is not None and msg.timestamp <= done_until:
                        summary.frames_resumed += msg.topic == opts.topic
                        continue  # already in the resumed output bag
                    run.feed(msg)
                    if msg.topic == opts.topic:
                        bar.update(1)
                run.flush()
            except KeyboardInterrupt:
                summary.interrupted = True
            except InputError:  # the input bag is damaged part way: keep what was read before, then say so
                run.flush()
                raise
            finally:
                bar.close()
        summary.wall_seconds = time.perf_counter() - started
    if dataset is not None and not summary.interrupted:
        summary.evaluation = evaluate(dataset, gt_index, run.results, str(opts.bag), opts.results_json)
    return summary

"""``orcnn-replay``: run ORCNN offline on an image topic of a rosbag2 and write the results to a new bag.

One ``orcnn_ros/msg/AmodalInstanceArray`` is written per processed frame (header copied from the
image, same receive timestamp), optionally an rgb8 overlay per frame, and chosen input topics are
copied through byte for byte. A bad frame is logged, counted by cause and skipped. With ``--gt`` the
predictions are evaluated with the project's evaluator and the Table-2 row is printed.
``orcnn-replay --eval-bag RESULTS_BAG --gt GT.json`` evaluates an existing results bag (written by a
replay or recorded from the node) without a model.
Works without ROS 2: bags are read and written with ``rosbags`` (see orcnn_ros/bagio.py).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import posixpath
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from orcnn_core.errors import InputError, OrcnnError
from orcnn_ros.bagio import (
    STORAGES,
    BagMessage,
    BagReader,
    BagWriter,
    copy_topic_info,
    image_map_path,
    prepare_output,
    read_image_map,
)
from orcnn_ros.pipeline import CauseCounter

log = logging.getLogger("orcnn-replay")

INSTANCES_TOPIC = "/amodal/instances"
OVERLAY_TOPIC = "/amodal/overlay"
GT_KEYS = ("stamp", "index", "file")


@dataclass
class ReplayOptions:
    """Everything one replay run needs (the command-line options of ``orcnn-replay``)."""

    bag: Path
    topic: str
    out: Path
    weights: Optional[Path] = None       # None: the bundled demo weights
    gt: Optional[Path] = None
    gt_key: str = "stamp"
    image_map: Optional[Path] = None     # None: image_map.json of the input bag
    every: int = 1
    start: Optional[float] = None        # seconds after the bag's first message
    end: Optional[float] = None
    overlay: bool = False
    copy_topics: Sequence[str] = ()
    batch_size: int = 4
    device: str = "auto"
    score_threshold: Optional[float] = None
    storage: str = "sqlite3"
    overwrite: bool = False
    instances_topic: str = INSTANCES_TOPIC
    overlay_topic: str = OVERLAY_TOPIC
    results_json: Optional[Path] = None
    summary_json: Optional[Path] = None
    progress: bool = True

    def validate(self) -> None:
        """Raise InputError naming the first option that is out of range."""
        if self.every < 1:
            raise InputError(f"--every must be >= 1, got {self.every}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise InputError(f"--end ({self.end}) is before --start ({self.start})")
        if self.gt_key not in GT_KEYS:
            raise InputError(f"--gt-key must be one of {', '.join(GT_KEYS)}, got {self.gt_key!r}")
        if self.storage not in STORAGES:
            raise InputError(f"--storage must be one of {', '.join(STORAGES)}, got {self.storage!r}")
        if self.overlay and self.overlay_topic == self.instances_topic:
            raise InputError("--overlay-topic must differ from --instances-topic")
        outputs = {self.instances_topic} | ({self.overlay_topic} if self.overlay else set())
        clash = outputs & set(self.copy_topics)
        if clash:
            raise InputError(f"--copy-topic {sorted(clash)[0]} clashes with an output topic name")


def header_stamp_ns(header: Any) -> int:
    """A ``std_msgs/Header`` stamp in nanoseconds."""
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


@dataclass
class Frame:
    """One selected image message on its way through the replay."""

    msg: BagMessage
    header: Any
    image: Optional[np.ndarray] = None
    prediction: Any = None
    gt_image_id: Optional[int] = None
    seconds: float = 0.0  # processing time so far (decode, inference share, messages, write)

    @property
    def stamp_ns(self) -> int:
        return header_stamp_ns(self.header)


@dataclass
class ReplaySummary:
    """Counts and statistics of one run; ``format()`` is what ``orcnn-replay`` prints."""

    bag: str
    topic: str
    out: str
    frames_in_topic: int = 0
    frames_selected: int = 0
    frames_processed: int = 0
    skipped_by_cause: CauseCounter = field(default_factory=CauseCounter)
    skipped_frames: list = field(default_factory=list)  # {index, stamp_ns, cause, message}
    latencies_ms: list = field(default_factory=list)
    instances_per_frame: list = field(default_factory=list)
    occlusion_rates: list = field(default_factory=list)     # one per instance
    occluder_counts: list = field(default_factory=list)     # one per occluded instance
    written: collections.Counter = field(default_factory=collections.Counter)
    wall_seconds: float = 0.0
    interrupted: bool = False
    frames_without_gt: int = 0
    evaluation: Optional[dict] = None

    @property
    def frames_skipped(self) -> int:
        return sum(self.skipped_by_cause.values())

    def skip(self, frame: Frame, cause: str, message: str) -> None:
        """Record a skipped frame; the first frame of each cause is logged, the rest counted."""
        self.skipped_frames.append({"index": frame.msg.index, "stamp_ns": frame.msg.timestamp,
                                    "cause": cause, "message": message})
        if self.skipped_by_cause.add(cause):
            log.warning("%s: skipping frame %d (receive time %d ns): %s [%s]; further frames with this "
                        "cause are only counted", self.topic, frame.msg.index, frame.msg.timestamp,
                        message, cause)

    def stats(self) -> dict:
        """The derived figures: latency, instances per frame, occlusion statistics."""
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        inst = np.asarray(self.instances_per_frame, dtype=np.float64)
        rates = np.asarray(self.occlusion_rates, dtype=np.float64)
        return {
            "latency_mean_ms": float(lat.mean()) if lat.size else None,
            "latency_p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
            "frames_per_second": self.frames_processed / self.wall_seconds if self.wall_seconds else None,
            "instances_total": int(inst.sum()),
            "instances_per_frame": float(inst.mean()) if inst.size else None,
            "mean_occlusion_rate": float(rates.mean()) if rates.size else None,
            "occluded_fraction": float((rates > 0).mean()) if rates.size else None,
            "occluders_per_occluded": (float(np.mean(self.occluder_counts))
                                       if self.occluder_counts else None),
        }

    def to_dict(self) -> dict:
        """JSON-ready form (for --summary-json)."""
        return {"bag": self.bag, "topic": self.topic, "out": self.out,
                "frames_in_topic": self.frames_in_topic, "frames_selected": self.frames_selected,
                "frames_processed": self.frames_processed, "frames_skipped": self.frames_skipped,
                "skipped_by_cause": dict(self.skipped_by_cause), "skipped_frames": self.skipped_frames,
                "written": dict(self.written), "interrupted": self.interrupted,
                "wall_seconds": self.wall_seconds, "frames_without_gt": self.frames_without_gt,
                **self.stats(), "evaluation": self.evaluation}

    def format(self) -> str:
        """Human-readable summary lines."""
        s = self.stats()

        def num(value: Optional[float], fmt: str = ".2f", scale: float = 1.0) -> str:
            return "-" if value is None else format(value * scale, fmt)

        state = "INTERRUPTED" if self.interrupted else "done"
        written = ", ".join(f"{t} {n}" for t, n in sorted(self.written.items())) or "nothing"
        lines = [f"replay {state}: {self.bag} {self.topic} -> {self.out}",
                 f"  frames: {self.frames_in_topic} in topic, {self.frames_selected} selected, "
                 f"{self.frames_processed} processed, {self.frames_skipped} skipped"]
        if self.skipped_by_cause:
            causes = ", ".join(f"{cause} {n}" for cause, n in sorted(self.skipped_by_cause.items()))
            lines.append(f"  skipped by cause: {causes}")
        lines += [f"  latency per frame: mean {num(s['latency_mean_ms'], '.1f')} ms, "
                  f"p95 {num(s['latency_p95_ms'], '.1f')} ms; {num(s['frames_per_second'])} frames/s",
                  f"  instances per frame: {num(s['instances_per_frame'])} ({s['instances_total']} in all)",
                  f"  occlusion: mean occlusion rate {num(s['mean_occlusion_rate'], '.3f')}, "
                  f"occluded instances {num(s['occluded_fraction'], '.1f', 100.0)}%, "
                  f"occluders per occluded instance {num(s['occluders_per_occluded'])}",
                  f"  written: {written}"]
        if self.frames_without_gt:
            lines.append(f"  frames without ground truth (not evaluated): {self.frames_without_gt}")
        return "\n".join(lines)


# --- ground truth ---------------------------------------------------------------------------

class GroundTruthIndex:
    """Finds the ground-truth image of a frame by header stamp, topic index or file name (--gt-key).

    * ``index``: frame k of the topic (counting every message on it from 0) is the k-th image of the
      ground truth in ascending image_id order.
    * ``stamp``: the frame's header stamp equals ``stamp_ns`` of an image-map entry; that entry's
      ``file_name`` names the image (survives dropped frames and re-recording, which keeps headers).
    * ``file``: the image-map entry whose ``index`` is the frame's topic index names the image.

    A file name matches a ground-truth image whose ``file_name`` is the same path, or else the same
    base name when exactly one image has it.
    """

    def __init__(self, images: Sequence[Any], key: str, image_map: Optional[Sequence[Any]] = None,
                 source: str = "") -> None:
        self.key = key
        self.by_order = sorted(images, key=lambda r: r.image_id)
        from orcnn_core.data.records import index_by_file_name

        by_path, self._by_base = index_by_file_name(images)  # an ambiguous base name maps to None
        self._by_path = {posixpath.normpath(path): r for path, r in by_path.items()}
        entries = list(image_map or [])
        if key in ("stamp", "file") and not entries:
            raise InputError(f"--gt-key {key} needs an image map ({source or 'none given'} is empty)")
        self._by_stamp = {e.stamp_ns: e.file_name for e in entries}
        self._by_index = {e.index: e.file_name for e in entries}
        self.seen: dict = {}   # image_id -> file_name of the images handed out by ``claim``
        self.unmatched = 0     # frames ``claim`` found no ground-truth image for

    def _by_file(self, name: Optional[str]) -> Optional[Any]:
        if name is None:
            return None
        name = posixpath.normpath(name.replace("\\", "/"))
        if name in self._by_path:
            return self._by_path[name]
        return self._by_base.get(posixpath.basename(name))  # None when missing or ambiguous

    def match(self, index: int, stamp_ns: Optional[int]) -> Optional[Any]:
        """Ground-truth ImageRecord of the frame at topic ``index``, header ``stamp_ns``; or None."""
        if self.key == "index":
            return self.by_order[index] if 0 <= index < len(self.by_order) else None
        if self.key == "stamp":
            return self._by_file(self._by_stamp.get(stamp_ns))
        return self._by_file(self._by_index.get(index))

    def claim(self, index: int, stamp_ns: Optional[int]) -> Optional[Any]:
        """Like ``match``, but each image only once (a repeat gives None); counts frames without a match."""
        record = self.match(index, stamp_ns)
        if record is None:
            self.unmatched += 1
            return None
        if record.image_id in self.seen:
            return None
        self.seen[record.image_id] = record.file_name
        return record


# --- the run --------------------------------------------------------------------------------

def load_predictor(weights: Optional[Path], device: str, score_threshold: Optional[float]) -> Any:
    """A Predictor from ``weights`` (default: the bundled demo weights)."""
    from orcnn_core.engine.demo import load_predictor as load_demo_predictor

    return load_demo_predictor(weights, device=device, score_threshold=score_threshold)


class _Replay:
    """One run: reads frames, predicts in batches, writes results in receive-time order."""

    def __init__(self, opts: ReplayOptions, predictor: Any, writer: BagWriter, summary: ReplaySummary,
                 gt_index: Optional[GroundTruthIndex]) -> None:
        from orcnn_ros import messages
        from orcnn_ros.pipeline import AmodalPipeline

        self.opts, self.predictor, self.writer = opts, predictor, writer
        self.summary, self.gt_index = summary, gt_index
        self.messages = messages
        self.factories = messages.rosbags_factories()
        # The node's pipeline decodes (size limit, per-cause errors) and holds its occlusion defaults.
        self.pipeline = AmodalPipeline(predictor, self.factories)
        self.results: list = []
        self._pending: list = []   # decoded frames waiting for a batch
        self._queue: list = []     # ("frame", Frame) | ("copy", BagMessage) in receive order

    def feed(self, msg: BagMessage) -> None:
        """Take one message of the input (image topic or copied topic) in receive order."""
        if msg.topic in self.opts.copy_topics:
            self._queue.append(("copy", msg))
        if msg.topic == self.opts.topic and msg.index % self.opts.every == 0:
            self.summary.frames_selected += 1
            frame = self._decode(msg)
            if frame is not None:
                self._pending.append(frame)
                self._queue.append(("frame", frame))
        if not self._pending or len(self._pending) >= self.opts.batch_size:
            self.flush()

    def _decode(self, msg: BagMessage) -> Optional[Frame]:
        from orcnn_ros.conversions import ImageInputError

        started = time.perf_counter()
        frame = Frame(msg=msg, header=None)
        try:
            ros_msg = self.messages.deserialize(bytes(msg.data), msg.msgtype)
        except InputError as exc:
            self._mark_gt(frame)
            self.summary.skip(frame, "malformed_message", str(exc))
            return None
        frame.header = ros_msg.header
        self._mark_gt(frame)
        try:
            frame.image = self.pipeline.decode(ros_msg)
        except ImageInputError as exc:
            self.summary.skip(frame, exc.cause, str(exc))
            return None
        except InputError as exc:
            self.summary.skip(frame, "invalid_image", str(exc))
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
            self._predict(self._pending)
        for kind, item in self._queue:
            if kind == "copy":
                self.writer.write(item.topic, item.timestamp, item.data)
                self.summary.written[item.topic] += 1
            elif item.prediction is not None:
                self._write_frame(item)
        self._pending, self._queue = [], []

    def _predict(self, frames: list) -> None:
        started = time.perf_counter()
        try:
            predictions = self.predictor.predict_batch([f.image for f in frames], batch_size=len(frames))
        except Exception as exc:  # a model failure on one frame must not cost the others
            if len(frames) > 1:
                for frame in frames:
                    self._predict([frame])
                return
            self.summary.skip(frames[0], f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}")
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
            self.summary.skip(frame, f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}")
            return
        for topic, data in payloads:  # a failing write is fatal: the output bag is closed as it is
            self._write(topic, frame.msg.timestamp, data)
        if frame.gt_image_id is not None:
            from orcnn_core.structures import prediction_to_results

            self.results.extend(prediction_to_results(result.prediction, frame.gt_image_id,
                                                      self.gt_index.seen[frame.gt_image_id],
                                                      threshold=self.pipeline.mask_threshold))
        self._account(frame, result.occlusion, time.perf_counter() - started)

    def _frame_messages(self, frame: Frame) -> tuple[list, Any]:
        """Serialized (topic, bytes) of one frame's results (the node's ``finish``) and the FrameResult."""
        result = self.pipeline.finish(frame.image, frame.prediction, frame.header, self.opts.overlay)
        m = self.messages
        payloads = [(self.opts.instances_topic, m.serialize(result.instances, m.INSTANCE_ARRAY_TYPE))]
        if result.overlay is not None:
            payloads.append((self.opts.overlay_topic, m.serialize(result.overlay, m.IMAGE_TYPE)))
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


def _load_ground_truth(gt: Path, gt_key: str, image_map: Optional[Path],
                       bag: Path) -> tuple[Any, GroundTruthIndex]:
    """The annotations and their index; the image map defaults to the one of ``bag``."""
    from orcnn_core.data import load_annotations

    dataset = load_annotations(gt)
    entries, source = None, ""
    if gt_key in ("stamp", "file"):
        map_path = image_map or image_map_path(bag)
        entries, source = read_image_map(map_path), str(map_path)
    return dataset, GroundTruthIndex(dataset.images, gt_key, entries, source)


def run_replay(opts: ReplayOptions, predictor: Any = None) -> ReplaySummary:
    """Replay ``opts.bag`` through ``predictor`` (default: loaded from ``opts.weights``) into ``opts.out``.

    A KeyboardInterrupt ends the run early with ``summary.interrupted`` set; the output bag is
    finalised in every case and holds everything written up to then.
    """
    from tqdm import tqdm

    from orcnn_ros import messages

    opts.validate()
    with BagReader(opts.bag) as reader:
        info = reader.image_topic(opts.topic)
        copy_infos = []
        for topic in opts.copy_topics:
            if topic not in reader.topics:
                raise InputError(f"--copy-topic {topic}: bag {opts.bag} has no such topic "
                                 f"(topics: {', '.join(sorted(reader.topics))})")
            copy_infos.append(reader.topics[topic])
        dataset, gt_index = (_load_ground_truth(opts.gt, opts.gt_key, opts.image_map, opts.bag)
                             if opts.gt else (None, None))
        if predictor is None:
            predictor = load_predictor(opts.weights, opts.device, opts.score_threshold)
        start_ns, end_ns = _window(reader, opts)
        prepare_output(opts.out, opts.overwrite, inputs=[opts.bag])
        summary = ReplaySummary(bag=str(opts.bag), topic=opts.topic, out=str(opts.out),
                                frames_in_topic=info.count)
        started = time.perf_counter()
        with BagWriter(opts.out, opts.storage) as writer:
            writer.add_topic(opts.instances_topic, messages.INSTANCE_ARRAY_TYPE,
                             typestore=messages.typestore())
            if opts.overlay:
                writer.add_topic(opts.overlay_topic, messages.IMAGE_TYPE, typestore=messages.typestore())
            for copy_info in copy_infos:
                copy_topic_info(writer, copy_info, messages.typestore())
            run = _Replay(opts, predictor, writer, summary, gt_index)
            topics = list(dict.fromkeys([opts.topic, *opts.copy_topics]))
            bar = tqdm(total=info.count, unit="frame", desc="replay", disable=None if opts.progress else True)
            try:
                for msg in reader.messages(topics):
                    if (start_ns is not None and msg.timestamp < start_ns) or \
                            (end_ns is not None and msg.timestamp > end_ns):
                        continue
                    run.feed(msg)
                    if msg.topic == opts.topic:
                        bar.update(1)
                run.flush()
            except KeyboardInterrupt:
                summary.interrupted = True
            finally:
                bar.close()
        summary.wall_seconds = time.perf_counter() - started
    if dataset is not None and not summary.interrupted:
        summary.evaluation = _evaluate(dataset, gt_index, run.results, str(opts.bag), opts.results_json)
    return summary


def _evaluate(dataset: Any, gt_index: GroundTruthIndex, results: list, source: str,
              results_json: Optional[Path]) -> Optional[dict]:
    """Metrics over the ground-truth images the frames claimed (frames without results count as misses)."""
    from orcnn_core.evaluation import AmodalEvaluator

    images = [r for r in dataset.images if r.image_id in gt_index.seen]
    if results_json:
        Path(results_json).write_text(json.dumps(results) + "\n")
    if not images:
        log.warning("no frame matched the ground truth (--gt-key %s); nothing to evaluate", gt_index.key)
        return None
    return AmodalEvaluator(images, dataset.categories).evaluate(results, source=source)


# --- evaluating an existing results bag (--eval-bag) ----------------------------------------

@dataclass
class EvalBagOptions:
    """The options of ``orcnn-replay --eval-bag``: a results bag and its ground truth."""

    results_bag: Path
    gt: Path
    gt_key: str = "stamp"
    image_map: Optional[Path] = None     # None: image_map.json of the results bag
    instances_topic: str = INSTANCES_TOPIC
    results_json: Optional[Path] = None
    summary_json: Optional[Path] = None


@dataclass
class EvalBagSummary:
    """Counts of one ``--eval-bag`` run and its metrics; ``format()`` is what is printed."""

    bag: str
    topic: str
    messages: int = 0
    frames_evaluated: int = 0       # messages whose ground-truth image they were the first to claim
    frames_without_gt: int = 0
    instances_total: int = 0
    skipped_by_cause: CauseCounter = field(default_factory=CauseCounter)
    evaluation: Optional[dict] = None

    def to_dict(self) -> dict:
        """JSON-ready form (for --summary-json)."""
        return {"bag": self.bag, "topic": self.topic, "messages": self.messages,
                "frames_evaluated": self.frames_evaluated, "frames_without_gt": self.frames_without_gt,
                "instances_total": self.instances_total, "skipped_by_cause": dict(self.skipped_by_cause),
                "evaluation": self.evaluation}

    def format(self) -> str:
        """Human-readable summary lines."""
        lines = [f"eval-bag: {self.bag} {self.topic}: {self.messages} result messages, "
                 f"{self.frames_evaluated} evaluated, {self.instances_total} instances"]
        if self.skipped_by_cause:
            causes = ", ".join(f"{cause} {n}" for cause, n in sorted(self.skipped_by_cause.items()))
            lines.append(f"  unreadable messages (their images count as misses): {causes}")
        if self.frames_without_gt:
            lines.append(f"  messages without ground truth (not evaluated): {self.frames_without_gt}")
        return "\n".join(lines)


def run_eval_bag(opts: EvalBagOptions) -> EvalBagSummary:
    """Evaluate the AmodalInstanceArray messages of ``opts.results_bag`` against ``opts.gt``; no model.

    Message k of the results topic is frame k for ``--gt-key index``/``file``; the header stamp is
    used for ``stamp``.
    """
    from orcnn_core.structures import prediction_to_results
    from orcnn_ros import messages
    from orcnn_ros.conversions import instance_array_to_prediction

    if opts.gt_key not in GT_KEYS:
        raise InputError(f"--gt-key must be one of {', '.join(GT_KEYS)}, got {opts.gt_key!r}")
    with BagReader(opts.results_bag) as reader:
        info = reader.topics.get(opts.instances_topic)
        if info is None:
            raise InputError(f"bag {opts.results_bag} has no topic '{opts.instances_topic}' "
                             f"(topics: {', '.join(sorted(reader.topics)) or 'none'}); see --instances-topic")
        if info.msgtype != messages.INSTANCE_ARRAY_TYPE:
            raise InputError(f"bag {opts.results_bag}: topic '{opts.instances_topic}' has type "
                             f"{info.msgtype}, expected {messages.INSTANCE_ARRAY_TYPE}")
        dataset, gt_index = _load_ground_truth(opts.gt, opts.gt_key, opts.image_map, opts.results_bag)
        summary = EvalBagSummary(bag=str(opts.results_bag), topic=opts.instances_topic)
        results: list = []
        for m in reader.messages([opts.instances_topic]):
            summary.messages += 1
            try:
                msg = messages.deserialize(bytes(m.data), m.msgtype)
            except InputError as exc:
                gt_index.claim(m.index, None)
                _count_unreadable(summary, m, "malformed_message", str(exc))
                continue
            record = gt_index.claim(m.index, header_stamp_ns(msg.header))
            if record is None:
                continue
            try:
                prediction = instance_array_to_prediction(msg)
            except InputError as exc:
                _count_unreadable(summary, m, "invalid_instances", str(exc))
                continue
            summary.frames_evaluated += 1
            summary.instances_total += len(prediction)
            results.extend(prediction_to_results(prediction, record.image_id, record.file_name))
        summary.frames_without_gt = gt_index.unmatched
    summary.evaluation = _evaluate(dataset, gt_index, results, str(opts.results_bag), opts.results_json)
    return summary


def _count_unreadable(summary: EvalBagSummary, m: BagMessage, cause: str, message: str) -> None:
    if summary.skipped_by_cause.add(cause):
        log.warning("%s: skipping message %d (receive time %d ns): %s [%s]; further messages with this "
                    "cause are only counted", summary.topic, m.index, m.timestamp, message, cause)


# --- command line ---------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The ``orcnn-replay`` argument parser."""
    p = argparse.ArgumentParser(
        prog="orcnn-replay",
        description="Run ORCNN on an image topic of a rosbag2 (.db3, .mcap, folder or legacy file) and "
                    f"write one AmodalInstanceArray per frame on {INSTANCES_TOPIC} of a new bag; or, "
                    "with --eval-bag, evaluate an existing results bag against ground truth (no model).",
        usage="%(prog)s BAG --topic TOPIC --out OUT_BAG [options]\n"
              "       %(prog)s --eval-bag RESULTS_BAG --gt GT.json [--gt-key K] [--image-map MAP.json] "
              "[options]")
    p.add_argument("bag", type=Path, nargs="?", default=None, metavar="BAG",
                   help="input bag folder, .db3 or .mcap file")
    p.add_argument("--topic", help="sensor_msgs/Image or CompressedImage topic to run on (required with BAG)")
    p.add_argument("--out", type=Path, metavar="OUT_BAG", help="output bag folder (required with BAG)")
    p.add_argument("--eval-bag", type=Path, default=None, metavar="RESULTS_BAG",
                   help="instead of running the model: evaluate the AmodalInstanceArray messages of this "
                        "bag (--instances-topic) against --gt")
    p.add_argument("--weights", type=Path, default=None, metavar="W",
                   help="NAME.safetensors (+ NAME.json); default: the bundled demo weights")
    p.add_argument("--gt", type=Path, default=None, metavar="GT.json",
                   help="ground truth (any format orcnn reads): evaluate and print the Table-2 row")
    p.add_argument("--gt-key", choices=GT_KEYS, default="stamp",
                   help="how frames find their ground-truth image (see docs/replay.md; default stamp)")
    p.add_argument("--image-map", type=Path, default=None, metavar="MAP.json",
                   help="image map for --gt-key stamp/file (default: BAG/image_map.json, with --eval-bag "
                        "RESULTS_BAG/image_map.json)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="process every N-th frame")
    p.add_argument("--start", type=float, default=None, metavar="S", help="seconds after the bag start")
    p.add_argument("--end", type=float, default=None, metavar="S", help="seconds after the bag start")
    p.add_argument("--overlay", action="store_true", help=f"also write overlay images on {OVERLAY_TOPIC}")
    p.add_argument("--copy-topic", action="append", default=[], metavar="T",
                   help="copy topic T unchanged into the output (repeatable)")
    p.add_argument("--batch-size", type=int, default=4, metavar="B", help="frames per model call")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--score-threshold", type=float, default=None,
                   help="drop detections below this score (default: the model's)")
    p.add_argument("--storage", choices=STORAGES, default="sqlite3", help="output bag storage")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output bag")
    p.add_argument("--instances-topic", default=INSTANCES_TOPIC,
                   help="output topic of the results (with --eval-bag: the topic read)")
    p.add_argument("--overlay-topic", default=OVERLAY_TOPIC, help="output topic of the overlays")
    p.add_argument("--results-json", type=Path, default=None,
                   help="with --gt or --eval-bag: also write the results JSON (for orcnn eval)")
    p.add_argument("--summary-json", type=Path, default=None, help="write the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    """ReplayOptions from parsed command-line arguments (InputError when BAG, --topic or --out is missing)."""
    missing = [name for name, value in (("BAG", args.bag), ("--topic", args.topic), ("--out", args.out))
               if value is None]
    if missing:
        raise InputError(f"{', '.join(missing)} required (or --eval-bag RESULTS_BAG --gt GT.json)")
    return ReplayOptions(
        bag=args.bag, topic=args.topic, out=args.out, weights=args.weights, gt=args.gt,
        gt_key=args.gt_key, image_map=args.image_map, every=args.every, start=args.start, end=args.end,
        overlay=args.overlay, copy_topics=tuple(args.copy_topic), batch_size=args.batch_size,
        device=args.device, score_threshold=args.score_threshold, storage=args.storage,
        overwrite=args.overwrite, instances_topic=args.instances_topic, overlay_topic=args.overlay_topic,
        results_json=args.results_json, summary_json=args.summary_json, progress=not args.no_progress)


def eval_options_from_args(args: argparse.Namespace) -> EvalBagOptions:
    """EvalBagOptions from parsed command-line arguments (InputError for options of a replay run)."""
    if args.gt is None:
        raise InputError("--eval-bag needs --gt GT.json")
    replay_only = [name for name, value in (("BAG", args.bag), ("--topic", args.topic), ("--out", args.out),
                                            ("--weights", args.weights), ("--overlay", args.overlay),
                                            ("--copy-topic", args.copy_topic)) if value]
    if replay_only:
        raise InputError(f"--eval-bag reads an existing results bag: {', '.join(replay_only)} do not apply")
    return EvalBagOptions(results_bag=args.eval_bag, gt=args.gt, gt_key=args.gt_key, image_map=args.image_map,
                          instances_topic=args.instances_topic, results_json=args.results_json,
                          summary_json=args.summary_json)


def print_report(summary: Union[ReplaySummary, EvalBagSummary]) -> None:
    """Print the summary and, with ground truth, the Table-2 row and the evaluator's notes."""
    print(summary.format())
    if summary.evaluation is not None:
        from orcnn_core.evaluation.table import format_table

        print(format_table([(Path(summary.bag).name or summary.bag, summary.evaluation)]))
        for note in summary.evaluation.get("notes", []):
            print(f"note: {note}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``orcnn-replay`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.eval_bag is not None:
            eval_opts = eval_options_from_args(args)
            evaluated = run_eval_bag(eval_opts)
            print_report(evaluated)
            if eval_opts.summary_json:
                Path(eval_opts.summary_json).write_text(json.dumps(evaluated.to_dict(), indent=2) + "\n")
            return 0
        opts = options_from_args(args)
        summary = run_replay(opts)
        print_report(summary)
        if opts.summary_json:
            Path(opts.summary_json).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    except OrcnnError as exc:
        print(f"orcnn-replay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("orcnn-replay: interrupted", file=sys.stderr)
        return 130
    if summary.interrupted:
        print(f"orcnn-replay: interrupted; {opts.out} holds the frames written so far", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

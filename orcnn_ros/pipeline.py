"""The node's per-frame work without ROS: decode, predict, analyse, result messages.

The steps are usable one frame at a time (``process`` = ``decode`` + ``predict`` + ``finish``) and in
batches (the offline replay calls ``decode``, the Predictor's ``predict_batch``, then ``finish`` per
frame). ``AmodalPipeline.process`` never raises for a bad frame: it logs the first frame of each
cause, counts every one and returns None. Every per-frame setting comes from one immutable
``FrameSettings`` snapshot, read once per frame and replaced as a whole by ``update_settings`` (the
node's live parameters), so a frame never sees half an update. ``LatestFrameSlot`` +
``PipelineWorker`` give newest-frame-only processing on a worker thread: a frame arriving before the
previous one was taken replaces it.

Depth (optional): with a ``DepthPairing``, each frame is paired with the synchronised depth image +
camera_info nearest its stamp (within the slop) when it is processed, and ``finish`` adds every
instance's 3D. Depth that is missing or unusable costs the frame its 3D, never the frame: the cause
is counted (``no_3d[<cause>]`` in the diagnostics) and logged once.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from orcnn_core.analysis import FrameAnalysis, analyze
from orcnn_core.depth.depth_io import DepthError
from orcnn_core.errors import CauseCounter
from orcnn_core.structures import Prediction
from orcnn_core.viz import draw_overlay
from orcnn_ros.conversions import (
    ImageInputError,
    MessageFactories,
    build_instance_array,
    compressed_msg_to_numpy,
    image_msg_to_numpy,
    make_image_msg,
    rgb_image_fields,
)
from orcnn_ros.depth_conversions import depth_frame_from_msgs
from orcnn_ros.depth_pairing import DepthPairing, DepthSample, stamp_ns
from orcnn_ros.params import FrameSettings

LATENCY_WINDOW = 200  # frames kept for the latency statistics


class BatchPredictor(Protocol):
    """What the pipeline needs of a model: the Predictor's ``predict_batch`` with per-call limits."""

    def predict_batch(self, images: Sequence[np.ndarray], batch_size: int = 4, *,
                      score_threshold: Optional[float] = None,
                      max_instances: Optional[int] = None) -> list[Prediction]:
        """One Prediction per image."""


@dataclass
class FrameResult:
    """What one processed frame produced."""

    instances: Any                 # AmodalInstanceArray of the factories' flavour
    analysis: FrameAnalysis        # the published masks, boxes and occlusion graph
    overlay: Optional[Any] = None  # rgb8 Image message, only when asked for
    depth_expected: bool = False   # depth was given or looked for: a frame without 3D is worth counting
    no_3d_cause: str = ""          # why a frame with depth expected has no 3D ("" when it has)
    no_3d_message: str = ""        # the same in words, for the log

    @property
    def prediction(self) -> Prediction:
        return self.analysis.prediction


def is_compressed(msg: Any) -> bool:
    """True for a ``sensor_msgs/CompressedImage`` (has ``format``, no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def rename_classes(prediction: Prediction, class_names: Sequence[str]) -> Prediction:
    """The prediction with ``class_names`` applied by label (label k -> class_names[k-1]) when given."""
    if not class_names:
        return prediction
    names = list(class_names)
    renamed = [names[int(k) - 1] if 0 < int(k) <= len(names) else old
               for k, old in zip(prediction.labels, prediction.class_names)]
    return dataclasses.replace(prediction, class_names=renamed)


class AmodalPipeline:
    """Per-frame logic of the node: message in, AmodalInstanceArray (+ overlay) out."""

    def __init__(self, predictor: BatchPredictor, factories: MessageFactories,
                 settings: Optional[FrameSettings] = None, logger: Optional[Any] = None,
                 depth_pairing: Optional[DepthPairing] = None):
        self.predictor = predictor
        self.factories = factories
        self.depth_pairing = depth_pairing  # None: no depth, frames are processed as before
        self._settings = settings or FrameSettings()
        self.log = logger if logger is not None else logging.getLogger(__name__)
        self._lock = threading.Lock()  # counters are read by the diagnostics timer thread
        self.processed = 0
        self.dropped = 0
        self.skipped_by_cause = CauseCounter()
        self.frames_with_3d = 0
        self.no_3d_by_cause = CauseCounter()  # frames processed without 3D although depth was expected
        self._skipped_at_last_report = 0
        self._latencies_ms: collections.deque = collections.deque(maxlen=LATENCY_WINDOW)

    @property
    def settings(self) -> FrameSettings:
        """The per-frame settings the next frame will use."""
        return self._settings

    def update_settings(self, settings: FrameSettings) -> None:
        """Replace the per-frame settings; frames already started keep the snapshot they took."""
        self._settings = settings  # one reference assignment: atomic for the reading thread

    # -- per frame ---------------------------------------------------------------------------
    def decode(self, msg: Any, settings: Optional[FrameSettings] = None) -> np.ndarray:
        """RGB uint8 image of a raw or compressed image message; ImageInputError when unusable."""
        max_side = (settings or self._settings).image_max_side
        if not is_compressed(msg):
            # Refuse huge frames before copying their pixels.
            _check_size(int(getattr(msg, "height", 0)), int(getattr(msg, "width", 0)), max_side)
            return image_msg_to_numpy(msg)
        image = compressed_msg_to_numpy(msg)
        _check_size(*image.shape[:2], max_side)
        return image

    def predict(self, image: np.ndarray, settings: Optional[FrameSettings] = None) -> Prediction:
        """The model's prediction for one decoded image, with the settings' score threshold and cap."""
        settings = settings or self._settings
        return self.predictor.predict_batch([image], batch_size=1, score_threshold=settings.score_threshold,
                                            max_instances=settings.max_instances)[0]

    def finish(self, image: np.ndarray, prediction: Prediction, header: Any, want_overlay: bool = False,
               settings: Optional[FrameSettings] = None, depth: Optional[DepthSample] = None,
               depth_cause: str = "") -> FrameResult:
        """The steps after the model for one frame: class names, analysis (with 3D from ``depth``),
        messages, overlay. ``depth_cause``: why a frame that should have depth has none (pairing).

        Shared by ``process`` (one frame) and the batched replay (after ``predict_batch``). It raises
        on failure and counts nothing: counting and logging are the caller's.
        """
        settings = settings or self._settings
        depth_frame, depth_error = None, None
        if depth is not None:
            try:
                depth_frame = depth_frame_from_msgs(depth.depth, depth.info)
            except DepthError as exc:  # unusable depth: the frame goes on without 3D
                depth_error = exc
        analysis = analyze(rename_classes(prediction, settings.class_names), settings.analysis, depth_frame)
        instances = build_instance_array(analysis, header, self.factories)
        overlay = None
        if want_overlay:
            overlay = make_image_msg(self.factories, header, rgb_image_fields(draw_overlay(image, analysis)))
        error = depth_error or analysis.depth_error
        cause = error.cause if error is not None else depth_cause
        message = str(error) if error is not None else f"no depth paired with this frame ({depth_cause})"
        expected = depth is not None or bool(depth_cause)
        return FrameResult(instances, analysis, overlay, depth_expected=expected, no_3d_cause=cause,
                           no_3d_message=message if cause else "")

    def process(self, msg: Any, want_overlay: bool = False) -> Optional[FrameResult]:
        """Decode, predict and finish one frame; a bad frame is logged once per cause, counted: None."""
        start = time.perf_counter()
        settings = self._settings  # one snapshot for the whole frame
        try:
            image = self.decode(msg, settings)
            prediction = self.predict(image, settings)
            # Paired after inference, so that depth arriving while the model ran is used.
            depth, depth_cause = (self.depth_pairing.match(stamp_ns(msg.header))
                                  if self.depth_pairing is not None else (None, ""))
            result = self.finish(image, prediction, msg.header, want_overlay, settings, depth, depth_cause)
        except ImageInputError as exc:
            self.report_bad_frame(exc.cause, str(exc))
            return None
        except Exception as exc:  # a model or message failure must not stop the node
            self.report_bad_frame(f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}", error=True)
            return None
        with self._lock:
            self.processed += 1
            self._latencies_ms.append((time.perf_counter() - start) * 1000.0)
        self.count_depth(result)
        return result

    def count_depth(self, result: FrameResult) -> None:
        """Count a processed frame with 3D, or without it by cause (the first of each cause logged)."""
        if not result.depth_expected:
            return
        with self._lock:
            if not result.no_3d_cause:
                self.frames_with_3d += 1
                return
            first = self.no_3d_by_cause.add(result.no_3d_cause)
        if first:
            self.log.warning(f"frame processed without 3D ({result.no_3d_cause}): {result.no_3d_message}; "
                             "later frames with this cause are only counted (see /diagnostics)")

    def report_bad_frame(self, cause: str, message: str, error: bool = False) -> None:
        """Count a skipped frame under ``cause``; log only the first one of each cause."""
        with self._lock:
            first = self.skipped_by_cause.add(cause)
        if first:
            log = self.log.error if error else self.log.warning
            log(f"skipping frame ({cause}): {message}; later frames with this cause are only counted "
                "(see /diagnostics)")

    def record_drops(self, count: int = 1) -> None:
        """Count frames replaced before they were processed (newest-frame-only policy)."""
        with self._lock:
            self.dropped += int(count)

    # -- diagnostics -------------------------------------------------------------------------
    @property
    def skipped(self) -> int:
        """Total frames skipped as bad."""
        with self._lock:
            return sum(self.skipped_by_cause.values())

    def latency_ms(self) -> tuple[float, float]:
        """(mean, p95) processing time of the recent frames in milliseconds; (0, 0) before any."""
        with self._lock:
            values = np.asarray(self._latencies_ms, dtype=np.float64)
        if values.size == 0:
            return 0.0, 0.0
        return float(values.mean()), float(np.percentile(values, 95))

    def diagnostics(self) -> tuple[int, str, dict]:
        """(level 0 OK / 1 WARN, message, key -> value strings) for a DiagnosticStatus."""
        mean, p95 = self.latency_ms()
        with self._lock:
            skipped = sum(self.skipped_by_cause.values())
            new_skips = skipped - self._skipped_at_last_report
            self._skipped_at_last_report = skipped
            values = {"frames_processed": str(self.processed), "frames_dropped": str(self.dropped),
                      "frames_skipped": str(skipped), "latency_mean_ms": f"{mean:.1f}",
                      "latency_p95_ms": f"{p95:.1f}"}
            values.update({f"skipped[{cause}]": str(n) for cause, n in sorted(self.skipped_by_cause.items())})
            if self.depth_pairing is not None:
                values["frames_with_3d"] = str(self.frames_with_3d)
                values["depth_received"] = str(self.depth_pairing.received)
                values.update({f"no_3d[{cause}]": str(n) for cause, n in sorted(self.no_3d_by_cause.items())})
        if new_skips:
            return 1, f"{new_skips} bad frame(s) skipped since the last report", values
        return 0, "ok", values



def _check_size(height: int, width: int, max_side: int) -> None:
    if max(height, width) > max_side:
        raise ImageInputError("too_large", f"image {width}x{height} exceeds image_max_side {max_side}")


class LatestFrameSlot:
    """A depth-1 hand-over between threads: ``put`` replaces an untaken frame and counts a drop."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Store ``item`` as the newest frame; True when it replaced one that was never taken."""
        with self._cond:
            replaced = self._full
            if replaced:
                self.dropped += 1
            self._item, self._full = item, True
            self._cond.notify()
            return replaced

    def take(self, timeout: Optional[float] = None) -> Optional[Any]:
        """The newest frame (removing it), or None after ``timeout`` seconds or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._full or self._closed, timeout)
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        """Wake any waiting ``take`` and make further waits return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> bool:
        """Allow waiting again after ``close`` (node re-activation).

        A frame left in the slot from before is stale (its header is old): it is discarded and
        counted as dropped. True when one was.
        """
        with self._cond:
            self._closed = False
            stale = self._full
            if stale:
                self.dropped += 1
            self._item, self._full = None, False
            return stale


class PipelineWorker:
    """A thread that takes frames from a LatestFrameSlot, runs the pipeline and hands results on."""

    def __init__(self, pipeline: AmodalPipeline, publish: Callable[[FrameResult], None],
                 want_overlay: Callable[[], bool] = lambda: False, poll_s: float = 0.2):
        self.pipeline = pipeline
        self.publish = publish
        self.want_overlay = want_overlay
        self.poll_s = poll_s
        self.slot = LatestFrameSlot()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def submit(self, msg: Any) -> None:
        """Offer a frame (from the subscription callback); replaces an unprocessed one."""
        if self.slot.put(msg):
            self.pipeline.record_drops(1)

    def start(self) -> None:
        """Start the worker thread (no-op when running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        if self.slot.reopen():  # a frame left over from before deactivation is stale
            self.pipeline.record_drops(1)
        self._thread = threading.Thread(target=self._run, name="orcnn-pipeline", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread; True when it ended within ``timeout`` seconds."""
        self._stop.set()
        self.slot.close()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        self._thread = None if not alive else self._thread
        return not alive

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.slot.take(timeout=self.poll_s)
            if msg is None:
                continue
            result = self.pipeline.process(msg, want_overlay=self.want_overlay())
            if result is None:
                continue
            try:
                self.publish(result)
            except Exception as exc:  # a failed publish (e.g. during shutdown) must not kill the thread
                self.pipeline.report_bad_frame(f"publish:{type(exc).__name__}", str(exc), error=True)

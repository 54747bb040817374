"""The node's per-frame work without ROS: decode, predict, occlusion graph, result messages.

The steps are usable one frame at a time (``process`` = ``decode`` + model + ``finish``) and in
batches (the offline replay calls ``decode``, its own ``predict_batch``, then ``finish`` per frame).
``AmodalPipeline.process`` never raises for a bad frame: it logs the first frame of each cause,
counts every one and returns None. ``LatestFrameSlot`` + ``PipelineWorker`` give newest-frame-only
processing on a worker thread: a frame arriving before the previous one was taken replaces it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from orcnn_core.occlusion import (
    DEFAULT_MIN_OVERLAP,
    DEFAULT_MIN_PIXELS,
    OcclusionGraph,
    compute_occlusion_graph,
)
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

LATENCY_WINDOW = 200  # frames kept for the latency statistics

Predict = Callable[[np.ndarray], Prediction]


@dataclass
class FrameResult:
    """What one processed frame produced."""

    instances: Any                 # AmodalInstanceArray of the factories' flavour
    prediction: Prediction
    occlusion: OcclusionGraph
    overlay: Optional[Any] = None  # rgb8 Image message, only when asked for


class CauseCounter(collections.Counter):
    """Counts events (skipped frames, unreadable messages) per cause; only the first of each cause
    is worth a log line, the rest are only counted: ``add`` says which one it was."""

    def add(self, cause: str) -> bool:
        """Count one event of ``cause``; True when it is the first of its cause (log it)."""
        self[cause] += 1
        return self[cause] == 1


def load_predictor(params: Any) -> Predict:
    """The Predictor named by ``NodeParams`` (weights, else a model config with random init)."""
    params.require_model()
    from orcnn_core.engine import Predictor  # lazy: torch is heavy

    kwargs = {"device": params.device, "half": params.half, "score_threshold": params.score_threshold,
              "max_instances": params.max_instances, "mask_threshold": params.mask_threshold,
              "color_order": "rgb"}
    if params.weights:
        return Predictor.from_weights(params.weights, **kwargs)
    return Predictor.from_config(params.model_config, **kwargs)


def is_compressed(msg: Any) -> bool:
    """True for a ``sensor_msgs/CompressedImage`` (has ``format``, no ``encoding``)."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


class AmodalPipeline:
    """Per-frame logic of the node: message in, AmodalInstanceArray (+ overlay) out."""

    def __init__(self, predictor: Predict, factories: MessageFactories, *,
                 occluder_min_overlap: float = DEFAULT_MIN_OVERLAP,
                 occluder_min_pixels: int = DEFAULT_MIN_PIXELS,
                 mask_threshold: float = 0.5, image_max_side: int = 4096,
                 class_names: Optional[list] = None, logger: Optional[Any] = None):
        self.predictor = predictor
        self.factories = factories
        self.occluder_min_overlap = occluder_min_overlap
        self.occluder_min_pixels = occluder_min_pixels
        self.mask_threshold = mask_threshold
        self.image_max_side = image_max_side
        self.class_names = list(class_names or [])
        self.log = logger if logger is not None else logging.getLogger(__name__)
        self._lock = threading.Lock()  # counters are read by the diagnostics timer thread
        self.processed = 0
        self.dropped = 0
        self.skipped_by_cause = CauseCounter()
        self._skipped_at_last_report = 0
        self._latencies_ms: collections.deque = collections.deque(maxlen=LATENCY_WINDOW)

    @classmethod
    def from_params(cls, predictor: Predict, params: Any, factories: MessageFactories,
                    logger: Optional[Any] = None) -> AmodalPipeline:
        """A pipeline configured from ``NodeParams``."""
        return cls(predictor, factories, occluder_min_overlap=params.occluder_min_overlap,
                   occluder_min_pixels=params.occluder_min_pixels, mask_threshold=params.mask_threshold,
                   image_max_side=params.image_max_side, class_names=params.class_names, logger=logger)

    # -- per frame ---------------------------------------------------------------------------
    def decode(self, msg: Any) -> np.ndarray:
        """RGB uint8 image of a raw or compressed image message; ImageInputError when unusable."""
        if not is_compressed(msg):
            # Refuse huge frames before copying their pixels.
            self._check_size(int(getattr(msg, "height", 0)), int(getattr(msg, "width", 0)))
            return image_msg_to_numpy(msg)
        image = compressed_msg_to_numpy(msg)
        self._check_size(*image.shape[:2])
        return image

    def _check_size(self, height: int, width: int) -> None:
        if max(height, width) > self.image_max_side:
            raise ImageInputError("too_large", f"image {width}x{height} exceeds image_max_side "
                                               f"{self.image_max_side}")

    def finish(self, image: np.ndarray, prediction: Prediction, header: Any,
               want_overlay: bool = False) -> FrameResult:
        """The steps after the model for one frame: class names, occlusion graph, messages, overlay.

        Shared by ``process`` (one frame) and the batched replay (after ``predict_batch``). It raises
        on failure and counts nothing: counting and logging are the caller's.
        """
        prediction = self._rename(prediction)
        occlusion = compute_occlusion_graph(prediction, min_overlap=self.occluder_min_overlap,
                                            min_pixels=self.occluder_min_pixels,
                                            mask_threshold=self.mask_threshold)
        instances = build_instance_array(prediction, occlusion, header, self.factories,
                                         mask_threshold=self.mask_threshold)
        overlay = None
        if want_overlay:
            drawn = draw_overlay(image, prediction, occlusion, mask_threshold=self.mask_threshold)
            overlay = make_image_msg(self.factories, header, rgb_image_fields(drawn))
        return FrameResult(instances, prediction, occlusion, overlay)

    def process(self, msg: Any, want_overlay: bool = False) -> Optional[FrameResult]:
        """Decode, predict and finish one frame; a bad frame is logged once per cause, counted: None."""
        start = time.perf_counter()
        try:
            image = self.decode(msg)
            result = self.finish(image, self.predictor(image), msg.header, want_overlay)
        except ImageInputError as exc:
            self.report_bad_frame(exc.cause, str(exc))
            return None
        except Exception as exc:  # a model or message failure must not stop the node
            self.report_bad_frame(f"error:{type(exc).__name__}", f"{type(exc).__name__}: {exc}", error=True)
            return None
        with self._lock:
            self.processed += 1
            self._latencies_ms.append((time.perf_counter() - start) * 1000.0)
        return result

    def _rename(self, prediction: Prediction) -> Prediction:
        """Apply the ``class_names`` parameter (label k -> class_names[k-1]) when it is set."""
        if self.class_names:
            names = self.class_names
            prediction.class_names = [names[int(k) - 1] if 0 < int(k) <= len(names) else old
                                      for k, old in zip(prediction.labels, prediction.class_names)]
        return prediction

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
        if new_skips:
            return 1, f"{new_skips} bad frame(s) skipped since the last report", values
        return 0, "ok", values


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

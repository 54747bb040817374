"""Pairing colour frames with depth by header stamp, without ROS (the node, the replay and tests share it).

Two steps, as with ``message_filters``:

1. depth image + camera_info are synchronised with each other (in the node by ``message_filters``'
   ``TimeSynchronizer`` / ``ApproximateTimeSynchronizer``; offline by ``DepthInfoSynchronizer``, the
   same rule in plain Python) and each pair is handed to ``DepthPairing.add``;
2. when a colour frame is processed, ``DepthPairing.match`` gives it the buffered depth whose stamp is
   nearest to the frame's, if within ``slop_s`` (0: the stamps must be equal).

The colour path never waits for depth: a frame without a match is processed without 3D, and the
cause is returned (``no_depth_yet`` before any depth arrived, else ``depth_not_matched``).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

#: Depth pairs kept for matching: at 30 Hz, a second of depth for frames the model is still working on.
DEFAULT_HISTORY = 30


def stamp_ns(header: Any) -> int:
    """Header stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass(frozen=True)
class DepthSample:
    """A depth image with its camera_info, synchronised; ``stamp_ns`` is the depth image's stamp."""

    stamp_ns: int
    depth: Any
    info: Any


class DepthPairing:
    """The recent synchronised depth pairs, and the match of a colour frame's stamp among them."""

    def __init__(self, slop_s: float = 0.0, history: int = DEFAULT_HISTORY) -> None:
        if not slop_s >= 0:
            raise ValueError(f"slop_s must be >= 0, got {slop_s}")
        self._slop_ns = round(slop_s * 1e9)
        self._samples: collections.deque = collections.deque(maxlen=max(1, int(history)))
        self._lock = threading.Lock()  # add() runs in the executor, match() in the worker thread
        self.received = 0

    @property
    def slop_s(self) -> float:
        """Largest stamp difference (seconds) of a colour frame and the depth it is paired with."""
        return self._slop_ns / 1e9

    def add(self, depth_msg: Any, info_msg: Any) -> None:
        """Store a synchronised depth image + camera_info (the synchroniser's callback)."""
        sample = DepthSample(stamp_ns(depth_msg.header), depth_msg, info_msg)
        with self._lock:
            self._samples.append(sample)
            self.received += 1

    def latest_stamp_ns(self) -> Optional[int]:
        """Stamp of the newest depth pair stored, None before any."""
        with self._lock:
            return max((s.stamp_ns for s in self._samples), default=None)

    def match(self, frame_stamp_ns: int) -> tuple[Optional[DepthSample], str]:
        """``(sample, "")`` for the stored depth nearest to ``frame_stamp_ns`` within the slop (the newer
        one on a tie), else ``(None, cause)``: ``no_depth_yet`` or ``depth_not_matched``."""
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return None, "no_depth_yet"
        best = min(samples, key=lambda s: (abs(s.stamp_ns - frame_stamp_ns), -s.stamp_ns))
        if abs(best.stamp_ns - frame_stamp_ns) > self._slop_ns:
            return None, "depth_not_matched"
        return best, ""


class DepthInfoSynchronizer:
    """Depth images and camera_infos paired by stamp (equal, or within ``slop_s``), each pair passed
    to ``callback(depth, info)`` once: what ``message_filters``' synchronisers do in the node, for
    the offline replay. At most ``queue_size`` unpaired messages of each kind are kept."""

    def __init__(self, callback: Callable[[Any, Any], None], slop_s: float = 0.0,
                 queue_size: int = 10) -> None:
        self.callback = callback
        self._slop_ns = round(slop_s * 1e9)
        self._queues: tuple = (collections.OrderedDict(), collections.OrderedDict())  # stamp -> msg
        self._queue_size = queue_size

    def add_depth(self, msg: Any) -> None:
        """Offer a depth image."""
        self._add(msg, 0)

    def add_info(self, msg: Any) -> None:
        """Offer a camera_info."""
        self._add(msg, 1)

    def _add(self, msg: Any, kind: int) -> None:
        own, other = self._queues[kind], self._queues[1 - kind]
        stamp = stamp_ns(msg.header)
        partner = min(other, key=lambda s: abs(s - stamp), default=None)
        if partner is not None and abs(partner - stamp) <= self._slop_ns:
            partner_msg = other.pop(partner)
            depth, info = (msg, partner_msg) if kind == 0 else (partner_msg, msg)
            self.callback(depth, info)
            return
        own[stamp] = msg
        while len(own) > self._queue_size:
            own.popitem(last=False)

"""Clean process shutdown on SIGINT and SIGTERM, without ROS (the node's ``main`` uses it).

``docker stop``, systemd and ``ros2 launch`` end a node with SIGTERM (then SIGKILL after a grace
period); Ctrl-C sends SIGINT. Both must end the node the same clean way: leave the spin loop, run
the lifecycle shutdown (worker thread stopped, publishers released), exit 0. rclpy's own signal
handling is turned off and these handlers only set a flag that the spin loop checks, so nothing
heavy runs inside a signal handler. A second signal while shutting down exits at once (status 1):
the user insisted.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Optional

DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ShutdownSignal:
    """Turns SIGINT / SIGTERM into a request the main loop sees (``requested``, ``signal_name``)."""

    def __init__(self, signals: tuple = DEFAULT_SIGNALS) -> None:
        self.signals = tuple(signals)
        self.requested = threading.Event()
        self.signal_name: Optional[str] = None
        self._previous: dict = {}

    def install(self) -> ShutdownSignal:
        """Install the handlers (main thread only, as Python requires); returns self."""
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before ``install``."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def request(self, reason: str) -> None:
        """Ask for shutdown without a signal (e.g. the context was shut down elsewhere)."""
        self.signal_name = self.signal_name or reason
        self.requested.set()

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested.is_set():
            os._exit(1)  # a second signal: the clean shutdown is taking too long for the user
        self.request(signal.Signals(signum).name)


def spin_until_shutdown(spin_once: Callable[[float], None], stop: ShutdownSignal,
                        ok: Callable[[], bool] = lambda: True, period_s: float = 0.1) -> str:
    """Call ``spin_once(period_s)`` until a shutdown is requested or ``ok()`` turns False; the reason."""
    while not stop.requested.is_set():
        if not ok():
            stop.request("context shut down")
            break
        spin_once(period_s)
    return stop.signal_name or "requested"

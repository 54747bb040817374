"""Reading and writing rosbag2 files (.db3, .mcap, bag folders, legacy 2019 .db3) without ROS 2.

Everything goes through the ``rosbags`` library. Legacy bags written by early ROS 2 tooling have
no ``metadata.yaml`` and name types without ``/msg/`` (``sensor_msgs/Image``); ``BagReader``
normalises those names and, where ``rosbags`` cannot open such a file, reads its ``topics`` and
``messages`` tables with ``sqlite3`` directly. ``BagWriter`` always finalises the bag it writes,
also when the run is interrupted, so a partial output is a valid bag up to the last message; and it
checkpoints the bag every second (``bag_checkpoint``), so even after ``kill -9`` the folder holds
every message written more than about a second before. ``BagReader`` reads such a killed bag (its
storage file, a killed .mcap through ``mcap_partial``), ``last_written`` says where it ended, and
``BagWriter(..., resume=True)`` continues it.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from orcnn_core.errors import InputError
from orcnn_ros.bag_checkpoint import Checkpointer, is_incomplete_folder, recover_sqlite_journal
from orcnn_ros.bag_sources import (  # noqa: F401  (TopicInfo, normalize_msgtype: part of bagio's API)
    LegacySqliteSource,
    RosbagsSource,
    TopicInfo,
    normalize_msgtype,
    with_metadata_digests,
)
from orcnn_ros.mcap_partial import PartialMcapSource

logger = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
STORAGES = ("sqlite3", "mcap")
#: Seconds between checkpoints of a bag being written (what a kill -9 may lose, at most about).
CHECKPOINT_S = 1.0
# Files a bag folder may hold; --overwrite deletes a folder only when it holds nothing else.
_BAG_FOLDER_SUFFIXES = (".db3", ".mcap", ".yaml", ".json", ".db3-shm", ".db3-wal", ".db3-journal", ".tmp")

PathLike = Union[str, Path]


@dataclass(frozen=True)
class LastWritten:
    """Where a topic of a (possibly killed) bag ends: message count and last receive timestamp (ns)."""

    count: int
    timestamp: Optional[int]  # None when the topic holds no message (or is not in the bag)


@dataclass(frozen=True)
class BagMessage:
    """One serialized message: topic, type, receive timestamp (ns), CDR bytes and its index in the topic."""

    topic: str
    msgtype: str
    timestamp: int
    data: Union[bytes, memoryview]
    index: int


Source = Union[RosbagsSource, LegacySqliteSource, PartialMcapSource]


class BagReader:
    """Read a rosbag2: a bag folder (metadata.yaml), a bare .db3 or .mcap file, or a legacy .db3.

    ``backend`` is ``"auto"`` (rosbags, falling back to plain sqlite3 for a .db3 and to a record walk
    for an unfinished .mcap), ``"rosbags"`` or ``"sqlite"``. A folder whose metadata.yaml is missing
    or marked incomplete (a ``BagWriter`` that was killed) is read from its storage file, so counts
    are what the file holds. Use as a context manager.
    """

    def __init__(self, path: PathLike, backend: str = "auto") -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"bag not found: {self.path}")
        if backend not in ("auto", "rosbags", "sqlite"):
            raise InputError(f"unknown bag backend {backend!r} (auto, rosbags, sqlite)")
        self._source = self._open(backend)
        self._topics = self._source.topics()
        if self.path.is_dir() and any(not info.digest for info in self._topics.values()):
            self._topics = with_metadata_digests(self.path / "metadata.yaml", self._topics)

    def _open(self, backend: str) -> Source:
        if backend == "sqlite":
            db3 = self._sqlite_file()
            recover_sqlite_journal(db3)
            return LegacySqliteSource(db3)
        if self.path.is_file():
            return self._open_file(self.path, backend)
        if is_incomplete_folder(self.path):
            return self._open_file(self._storage_file(), backend)
        try:
            return RosbagsSource(self.path)
        except Exception as exc:  # rosbags raises ReaderError, KeyError, YAML errors ... on odd files
            if backend == "auto" and self._sqlite_file(required=False) is not None:
                return LegacySqliteSource(self._sqlite_file())
            raise InputError(f"cannot open bag {self.path}: {exc}") from exc

    def _open_file(self, storage: Path, backend: str) -> Source:
        """A bare storage file: rosbags, else (auto) plain sqlite3 for .db3, a record walk for .mcap."""
        if storage.suffix == ".db3":
            recover_sqlite_journal(storage)
        try:
            return RosbagsSource(storage)
        except Exception as exc:  # see _open
            if backend == "auto" and storage.suffix == ".db3":
                return LegacySqliteSource(storage)
            if backend == "auto" and storage.suffix == ".mcap":
                return PartialMcapSource(storage)
            raise InputError(f"cannot open bag {self.path}: {exc}") from exc

    def _storage_file(self) -> Path:
        """The one .db3 or .mcap file of a bag folder without usable metadata."""
        found = sorted(p for p in self.path.iterdir() if p.suffix in (".db3", ".mcap") and p.is_file())
        if len(found) != 1:
            raise InputError(f"bag {self.path}: no usable metadata.yaml and {len(found)} storage files "
                             "(.db3/.mcap); expected one")
        return found[0]

    def _sqlite_file(self, required: bool = True) -> Optional[Path]:
        if self.path.is_file() and self.path.suffix == ".db3":
            return self.path
        found = sorted(self.path.glob("*.db3")) if self.path.is_dir() else []
        if len(found) == 1:
            return found[0]
        if required:
            raise InputError(f"bag {self.path}: expected one .db3 file, found {len(found)}")
        return None

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying storage."""
        self._source.close()

    @property
    def topics(self) -> dict[str, TopicInfo]:
        """All topics of the bag by name."""
        return dict(self._topics)

    def image_topics(self) -> list[str]:
        """Names of the topics holding ``sensor_msgs`` Image or CompressedImage, sorted."""
        return sorted(t for t, info in self._topics.items() if info.msgtype in IMAGE_TYPES)

    def image_topic(self, topic: str) -> TopicInfo:
        """The image topic ``topic``; missing or non-image: InputError listing the image topics."""
        listing = ", ".join(self.image_topics()) or "none"
        info = self._topics.get(topic)
        if info is None:
            raise InputError(f"bag {self.path} has no topic '{topic}' (image topics: {listing})")
        if info.msgtype not in IMAGE_TYPES:
            raise InputError(f"bag {self.path}: topic '{topic}' has unsupported type {info.msgtype}; "
                             f"expected {' or '.join(IMAGE_TYPES)} (image topics: {listing})")
        return info

    def time_range(self) -> tuple[int, int]:
        """First and last receive timestamp (ns) of the whole bag; (0, 0) when empty."""
        return self._source.time_range()

    def last_written(self, topic: str) -> LastWritten:
        """Count and last receive timestamp of ``topic``; (0, None) for a topic not in the bag."""
        if topic not in self._topics:
            return LastWritten(0, None)
        fast = getattr(self._source, "last_written", None)
        db3 = self._sqlite_file(required=False)
        if fast is not None:
            count, last = fast(topic)
        elif db3 is not None:  # one query instead of reading every message's data
            conn = sqlite3.connect(f"file:{db3}?mode=ro", uri=True)
            try:
                count, last = conn.execute(
                    "SELECT COUNT(*), MAX(m.timestamp) FROM messages m JOIN topics t ON m.topic_id = t.id "
                    "WHERE t.name = ?", (topic,)).fetchone()
            finally:
                conn.close()
        else:
            count, last = 0, -1
            for _, _, timestamp, _ in self._source.messages([topic]):
                count, last = count + 1, max(last, timestamp)
        return LastWritten(count, None if count == 0 else last)

    def messages(self, topics: Sequence[str]) -> Iterator[BagMessage]:
        """Messages of ``topics`` in receive-time order; ``index`` counts per topic from 0."""
        unknown = [t for t in topics if t not in self._topics]
        if unknown:
            raise InputError(f"bag {self.path} has no topic '{unknown[0]}' "
                             f"(topics: {', '.join(sorted(self._topics)) or 'none'})")
        counters = dict.fromkeys(topics, 0)
        stored = iter(self._source.messages(topics))
        while True:
            # Only the storage's own reading is guarded: errors of the caller's loop body do not pass
            # through this generator.
            try:
                topic, msgtype, timestamp, data = next(stored)
            except StopIteration:
                return
            except Exception as exc:  # sqlite (apsw), mcap and rosbags raise many types for damaged files
                read = sum(counters.values())
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InputError(f"bag {self.path} is damaged: reading stopped after {read} message(s) "
                                 f"({type(exc).__name__}: {first})") from exc
            yield BagMessage(topic, msgtype, timestamp, data, counters[topic])
            counters[topic] += 1


def last_written(bag: PathLike, topic: str) -> LastWritten:
    """Count and last receive timestamp of ``topic`` in ``bag``, which may be a killed ``BagWriter``'s.

    What a resumed run needs: it continues after ``timestamp`` (see ``BagWriter``'s ``resume``).
    """
    with BagReader(bag) as reader:
        return reader.last_written(topic)


def bag_time_range(path: PathLike) -> tuple[int, int]:
    """First and last receive timestamp (ns) of a bag (see ``BagReader.time_range``)."""
    with BagReader(path) as reader:
        return reader.time_range()


def prepare_output(path: PathLike, overwrite: bool, inputs: Sequence[PathLike] = ()) -> Path:
    """Check that a new bag may be written at ``path``: refuse an existing one unless ``overwrite``.

    With ``overwrite`` an existing bag folder (only bag files in it) or file is deleted; a folder
    holding anything else, or one of ``inputs``, is never deleted.
    """
    path = Path(path)
    for src in inputs:
        if Path(src).resolve() == path.resolve() or Path(src).resolve().parent == path.resolve():
            raise InputError(f"output bag {path} is the input bag; choose another --out")
    if not path.exists():
        return path
    if not overwrite:
        raise InputError(f"output {path} exists already; pass --overwrite to replace it")
    if path.is_dir():
        others = [p.name for p in path.iterdir() if p.is_dir() or not p.name.endswith(_BAG_FOLDER_SUFFIXES)]
        if others:
            raise InputError(f"output {path} is a folder holding non-bag files ({others[0]}, ...); "
                             "not deleting it, choose another --out")
        shutil.rmtree(path)
    else:
        path.unlink()
    return path


class BagWriter:
    """Write a new rosbag2 folder (sqlite3 or mcap) through ``rosbags``; use as a context manager.

    The bag is finalised (metadata.yaml, mcap index) on every exit, including exceptions and
    KeyboardInterrupt, so an interrupted run leaves a readable bag up to the last message written.
    Every ``checkpoint_s`` seconds (``None``: never) a background thread makes what was written
    durable and metadata.yaml current (``bag_checkpoint``), so after ``kill -9`` the folder is a
    readable bag holding every message written more than about ``checkpoint_s`` before the kill.

    ``resume=True`` continues the bag at ``path`` if there is one (e.g. a killed run's): it is moved
    aside to ``<path>.resume``, its topics and messages are copied into the new bag on entering, and
    the old copy is deleted; ``counts`` then include the copied messages and ``add_topic`` of a topic
    already in the bag (same type) does nothing. An interrupted resume is redone from ``<path>.resume``.
    """

    def __init__(self, path: PathLike, storage: str = "sqlite3", checkpoint_s: Optional[float] = CHECKPOINT_S,
                 resume: bool = False) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        if storage not in STORAGES:
            raise InputError(f"unknown storage {storage!r} (choose {', '.join(STORAGES)})")
        if checkpoint_s is not None and not checkpoint_s > 0:
            raise InputError(f"checkpoint interval must be positive seconds or None, got {checkpoint_s}")
        self.path = Path(path)
        self.checkpoint_s = checkpoint_s
        self._resume_from = _stage_resume(self.path) if resume else None
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        except WriterError as exc:
            raise InputError(f"cannot write bag {self.path}: {exc}") from exc
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self._open = False
        self._lock = threading.Lock()  # the writer is shared with the checkpoint thread
        self._checkpointer: Optional[Checkpointer] = None
        self._resumed_topics: set[str] = set()

    def __enter__(self) -> BagWriter:
        self._writer.open()
        self._open = True
        try:
            if self.checkpoint_s is not None:
                self._start_checkpoints()
            if self._resume_from is not None:
                self._copy_resumed(self._resume_from)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_checkpoints(self) -> None:
        try:
            self._checkpointer = Checkpointer(self._writer, self._lock, self.checkpoint_s)
        except RuntimeError as exc:  # a rosbags version whose writers we do not know
            logger.warning("bag %s: no periodic checkpoints (%s); it is finalised only on close",
                           self.path, exc)
            return
        self._checkpointer.start()

    def close(self) -> None:
        """Finalise the bag (idempotent)."""
        if self._open:
            self._open = False
            if self._checkpointer is not None:
                self._checkpointer.stop()
            with self._lock:
                self._writer.close()

    def checkpoint(self) -> None:
        """Make everything written so far durable now (the background thread does it every second)."""
        with self._lock:
            self._check_checkpoint_error()
            if self._checkpointer is not None:
                self._checkpointer.checkpoint()

    def _check_checkpoint_error(self) -> None:
        if self._checkpointer is not None and self._checkpointer.error is not None:
            error, self._checkpointer.error = self._checkpointer.error, None
            raise error

    def add_topic(self, topic: str, msgtype: str, typestore: Any = None, msgdef: str = "",
                  digest: str = "") -> None:
        """Declare ``topic`` of ``msgtype``, defined by ``msgdef``+``digest`` or else ``typestore``."""
        if topic in self._resumed_topics and self._connections[topic].msgtype == msgtype:
            return  # already in the resumed bag
        if topic in self._connections:
            raise InputError(f"output bag {self.path}: topic '{topic}' declared twice")
        with self._lock:
            if msgdef and digest:
                conn = self._writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest)
            elif typestore is not None and msgtype in typestore.fielddefs:
                conn = self._writer.add_connection(topic, msgtype, typestore=typestore)
            else:
                raise InputError(f"topic '{topic}': the bag stores no definition of {msgtype} and the "
                                 "typestore does not know it; cannot copy it")
            if self._checkpointer is not None:
                self._checkpointer.note_change()
        self._connections[topic] = conn
        self.counts[topic] = 0

    def write(self, topic: str, timestamp: int, data: Union[bytes, memoryview]) -> None:
        """Write one serialized message on a declared topic with receive time ``timestamp`` (ns)."""
        with self._lock:
            self._check_checkpoint_error()
            self._writer.write(self._connections[topic], int(timestamp), data)
            self.counts[topic] += 1
            if self._checkpointer is not None:
                self._checkpointer.note_write(len(data))

    def _copy_resumed(self, staged: Path) -> None:
        """Copy the bag being resumed into this one, then delete it (see the class docstring)."""
        from orcnn_ros import messages

        with BagReader(staged) as reader:
            topics = reader.topics
            for info in topics.values():
                copy_topic_info(self, info, messages.typestore())
            for msg in reader.messages(sorted(topics)):
                self.write(msg.topic, msg.timestamp, msg.data)
        self._resumed_topics = set(topics)
        self.checkpoint()
        # Rename first: once the copy is durable, a kill must not make a later resume redo it from a
        # half-deleted source.
        done = staged.with_name(staged.name + "-done")
        staged.rename(done)
        shutil.rmtree(done, ignore_errors=True)


def _stage_resume(path: Path) -> Optional[Path]:
    """Move the bag at ``path`` aside for resuming; the staged copy, or None when there is no bag."""
    staged = path.with_name(path.name + ".resume")
    shutil.rmtree(staged.with_name(staged.name + "-done"), ignore_errors=True)  # a finished resume's
    if staged.exists():  # an interrupted resume: the staged bag is the original, path a partial copy
        prepare_output(path, overwrite=True)
        return staged
    if not path.exists():
        return None
    if not path.is_dir():
        raise InputError(f"cannot resume {path}: not a bag folder written by orcnn")
    path.rename(staged)
    return staged


def copy_topic_info(writer: BagWriter, info: TopicInfo, typestore: Any) -> None:
    """Declare ``info``'s topic on ``writer`` with the stored definition, else the typestore's."""
    if info.msgdef and info.digest:
        writer.add_topic(info.name, info.msgtype, msgdef=info.msgdef, digest=info.digest)
    else:
        writer.add_topic(info.name, info.msgtype, typestore=typestore)

"""Keeping a rosbag2 that is being written readable after ``kill -9``: periodic checkpoints of the storage.

``rosbags``' writers keep everything until ``close()``: the sqlite3 writer inserts every message in one
open transaction (a kill rolls it back to an empty bag), the mcap writer holds the open chunk in memory
and writes the summary only at the end, and both write ``metadata.yaml`` only at the end. A
``Checkpointer`` makes what was written durable at most every ``interval_s`` seconds, from a background
thread so that a writer that waits (e.g. on a model) is checkpointed too:

* sqlite3: commit the transaction. The connection is reopened with ``cache_spill`` off, so uncommitted
  pages never reach the ``.db3`` before a commit and the file alone is a consistent bag at the last
  commit (readers that ignore the rollback journal, like ``rosbags``' immutable reader, see it whole).
* mcap: close the open chunk (with its message index) and flush the file; readers of an unfinished
  file walk its records (``mcap_partial``).
* both: rewrite ``metadata.yaml`` (temp file + rename) with the counts of the checkpoint and the
  ``custom_data`` marker ``orcnn_bag_state: incomplete``, so ``ros2 bag info`` and ``rosbags`` open the
  folder, and ``BagReader`` knows to take the counts from the storage file itself. ``close()`` writes
  the final metadata (without the marker) as before.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from io import StringIO
from pathlib import Path
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

#: ``custom_data`` entry of the metadata.yaml of a bag still being written (or killed while written).
INCOMPLETE_KEY, INCOMPLETE_VALUE = "orcnn_bag_state", "incomplete"
#: Checkpoint early when this many message bytes are pending (bounds the memory of an open transaction).
MAX_PENDING_BYTES = 64 * 2**20


def metadata_text(writer: Any) -> str:
    """metadata.yaml of an open ``rosbags`` Writer as of now, marked incomplete.

    The layout is that of ``rosbags.rosbag2.Writer.close`` (which writes only at the end).
    """
    from rosbags.rosbag2.metadata import dump_qos_v8, dump_qos_v9
    from ruamel.yaml import YAML

    dump_qos = dump_qos_v9 if writer.version >= 9 else dump_qos_v8
    count = sum(writer.counts.values())
    start = writer.min_timestamp if count else 0
    duration = max(0, writer.max_timestamp - writer.min_timestamp) if count else 0
    name = writer.storage.path.name
    info = {
        "version": writer.version,
        "storage_identifier": writer.storage_plugin.name.lower(),
        "relative_file_paths": [name],
        "duration": {"nanoseconds": duration},
        "starting_time": {"nanoseconds_since_epoch": start},
        "message_count": count,
        "topics_with_message_count": [
            {"topic_metadata": {"name": c.topic, "type": c.msgtype,
                                "serialization_format": c.ext.serialization_format,
                                "offered_qos_profiles": dump_qos(c.ext.offered_qos_profiles),
                                "type_description_hash": c.digest},
             "message_count": writer.counts[c.id]}
            for c in writer.connections],
        "compression_format": "",
        "compression_mode": "",
        "files": [{"path": name, "starting_time": {"nanoseconds_since_epoch": start},
                   "duration": {"nanoseconds": duration}, "message_count": count}],
        "custom_data": {INCOMPLETE_KEY: INCOMPLETE_VALUE},
        "ros_distro": "rosbags",
    }
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    stream = StringIO()
    yaml.dump({"rosbag2_bagfile_information": info}, stream)
    return stream.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` through a synced temp file and a rename (never a half file)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def is_incomplete_folder(path: Path) -> bool:
    """True for a bag folder whose metadata.yaml is missing or marked incomplete (written or killed)."""
    meta = Path(path) / "metadata.yaml"
    if not meta.is_file():
        return True
    try:
        text = meta.read_text(encoding="utf8", errors="replace")
    except OSError:
        return False  # unreadable metadata: let the normal reader report it
    # A plain text check: the marker line is ours, and YAML-parsing a huge file here would be wasted work.
    return f"{INCOMPLETE_KEY}: {INCOMPLETE_VALUE}" in text


def recover_sqlite_journal(db3: Path) -> None:
    """Roll back the transaction a killed writer left open, when its rollback journal is still there.

    SQLite does that on the first read through a read-write connection; read-only readers cannot.
    Without write access the file is read as it is (consistent unless the kill hit a commit).
    """
    journal = db3.with_name(db3.name + "-journal")
    if not journal.exists():
        return
    try:
        conn = sqlite3.connect(f"file:{db3}?mode=rw", uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        logger.warning("bag %s: could not roll back the interrupted write (%s); reading it as it is",
                       db3, exc)


class Checkpointer:
    """Periodic checkpoints of an open ``rosbags`` Writer (see the module docstring).

    All calls, and every write to the Writer, must hold ``lock``; the background thread takes it too.
    """

    def __init__(self, writer: Any, lock: threading.Lock, interval_s: float) -> None:
        self.writer = writer
        self.lock = lock
        self.interval_s = float(interval_s)
        self.error: Optional[BaseException] = None  # raised by the owner on its next call
        self._dirty = True  # write the first metadata.yaml at once
        self._pending_bytes = 0
        self._metapath = Path(writer.path) / "metadata.yaml"
        self._stop = threading.Event()
        self._flush: Callable[[], None] = self._prepare_storage()
        self._thread = threading.Thread(target=self._run, name=f"bag-checkpoint:{writer.path}", daemon=True)

    def _prepare_storage(self) -> Callable[[], None]:
        """The storage's flush step; sqlite3 gets a connection usable from the checkpoint thread."""
        storage = self.writer.storage
        if hasattr(storage, "conn") and hasattr(storage, "cursor"):  # rosbags' Sqlite3Writer
            storage.conn.close()  # only the schema was written, and committed, by rosbags
            conn = sqlite3.connect(f"file:{storage.path}", uri=True, check_same_thread=False)
            conn.execute("PRAGMA cache_spill=OFF")  # see the module docstring
            storage.conn, storage.cursor = conn, conn.cursor()
            return conn.commit
        if all(hasattr(storage, name) for name in ("close_chunk", "chunk", "bio")):  # rosbags' McapWriter

            def flush_mcap() -> None:
                if storage.chunk.msgs:  # a chunk without messages would only hold schemas and channels
                    storage.close_chunk()
                storage.bio.flush()
                os.fsync(storage.bio.fileno())

            return flush_mcap
        raise RuntimeError(f"unknown rosbags storage writer {type(storage).__name__}")

    def start(self) -> None:
        """Write the first metadata.yaml and start the background thread."""
        with self.lock:
            self.checkpoint()
        self._thread.start()

    def note_write(self, nbytes: int) -> None:
        """Count a message written (lock held); checkpoint now when much is pending."""
        self._dirty = True
        self._pending_bytes += nbytes
        if self._pending_bytes >= MAX_PENDING_BYTES:
            self.checkpoint()

    def note_change(self) -> None:
        """Mark a change that is not a message (a topic declared); lock held."""
        self._dirty = True

    def checkpoint(self) -> None:
        """Make everything written so far durable and metadata.yaml current (lock held)."""
        if not self._dirty:
            return
        self._flush()
        write_atomic(self._metapath, metadata_text(self.writer))
        self._dirty = False
        self._pending_bytes = 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self.lock:
                if self.error is not None or self.writer.storage is None:
                    return
                try:
                    self.checkpoint()
                except Exception as exc:  # e.g. disk full: the owner raises it on its next call
                    self.error = exc
                    return

    def stop(self) -> None:
        """Stop the thread (lock NOT held); the owner's close() then finalises the bag."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

"""Message sources behind ``bagio.BagReader``: ``rosbags``, and plain ``sqlite3`` for legacy .db3 files.

Each source offers ``topics()``, ``messages(topics)``, ``time_range()`` and ``close()`` (and may offer
``last_written(topic)``); ``mcap_partial.PartialMcapSource`` is the third one, for unfinished .mcap.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

from orcnn_core.errors import InputError


def normalize_msgtype(name: str) -> str:
    """ROS 2 type name with its ``/msg/`` part: ``sensor_msgs/Image`` -> ``sensor_msgs/msg/Image``."""
    parts = name.split("/")
    if len(parts) == 2 and all(parts):
        return f"{parts[0]}/msg/{parts[1]}"
    return name


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: name, normalised type, message count and (when stored) its definition."""

    name: str
    msgtype: str
    count: int
    msgdef: str = ""   # ROS 2 .msg text of the type as stored in the bag ("" when the bag has none)
    digest: str = ""   # RIHS01 hash stored with it ("" when none)


class RosbagsSource:
    """Messages through ``rosbags.rosbag2.Reader`` (bag folders, bare .db3 and .mcap files)."""

    def __init__(self, path: Path) -> None:
        from rosbags.rosbag2 import Reader

        self._reader = Reader(path)
        self._reader.open()

    def topics(self) -> dict[str, TopicInfo]:
        """TopicInfo per topic (connections of one topic summed)."""
        counts: dict[str, int] = {}
        first: dict[str, Any] = {}
        for conn in self._reader.connections:
            counts[conn.topic] = counts.get(conn.topic, 0) + int(conn.msgcount)
            first.setdefault(conn.topic, conn)
        return {topic: TopicInfo(topic, normalize_msgtype(conn.msgtype), counts[topic],
                                 conn.msgdef.data or "", conn.digest or "")
                for topic, conn in first.items()}

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, str, int, Union[bytes, memoryview]]]:
        """``(topic, msgtype, timestamp, data)`` of ``topics`` in receive-time order."""
        conns = [c for c in self._reader.connections if c.topic in set(topics)]
        if not conns:
            return
        for conn, timestamp, data in self._reader.messages(connections=conns):
            yield conn.topic, normalize_msgtype(conn.msgtype), int(timestamp), data

    def time_range(self) -> tuple[int, int]:
        """First and last receive timestamp (ns); (0, 0) when empty."""
        if not self._reader.message_count:
            return (0, 0)
        return (int(self._reader.start_time), int(self._reader.end_time) - 1)  # end_time is last + 1

    def close(self) -> None:
        """Close the reader."""
        self._reader.close()


class LegacySqliteSource:
    """Messages of a bare rosbag2 sqlite3 file read with ``sqlite3`` (no metadata, no schema table)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = self._conn.execute("SELECT id, name, type FROM topics").fetchall()
            counts = dict(self._conn.execute(
                "SELECT topic_id, COUNT(*) FROM messages GROUP BY topic_id").fetchall())
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise InputError(f"bag {path}: not a rosbag2 sqlite3 file ({exc})") from exc
        self._ids = {name: int(tid) for tid, name, _ in rows}
        self._topics = {name: TopicInfo(name, normalize_msgtype(typ), int(counts.get(tid, 0)))
                        for tid, name, typ in rows}

    def topics(self) -> dict[str, TopicInfo]:
        """TopicInfo per topic (no definitions: legacy files store none)."""
        return dict(self._topics)

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, str, int, Union[bytes, memoryview]]]:
        """``(topic, msgtype, timestamp, data)`` of ``topics`` in receive-time order."""
        ids = {self._ids[t]: t for t in topics if t in self._ids}
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        cursor = self._conn.execute(
            f"SELECT topic_id, timestamp, data FROM messages WHERE topic_id IN ({marks}) "
            "ORDER BY timestamp, id", tuple(ids))
        for tid, timestamp, data in cursor:
            topic = ids[tid]
            yield topic, self._topics[topic].msgtype, int(timestamp), data

    def time_range(self) -> tuple[int, int]:
        """First and last receive timestamp (ns); (0, 0) when empty."""
        first, last = self._conn.execute("SELECT MIN(timestamp), MAX(timestamp) FROM messages").fetchone()
        return (int(first or 0), int(last or 0))

    def last_written(self, topic: str) -> tuple[int, int]:
        """Message count and last receive timestamp of ``topic`` (0, -1 when none)."""
        count, last = self._conn.execute("SELECT COUNT(*), MAX(timestamp) FROM messages WHERE topic_id = ?",
                                         (self._ids[topic],)).fetchone()
        return int(count), -1 if last is None else int(last)

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def with_metadata_digests(meta: Path, topics: dict[str, TopicInfo]) -> dict[str, TopicInfo]:
    """``topics`` with missing type hashes taken from metadata.yaml (an unfinished mcap has none)."""
    import yaml

    try:
        info = yaml.safe_load(meta.read_text(encoding="utf8"))["rosbag2_bagfile_information"]
        digests = {t["topic_metadata"]["name"]: str(t["topic_metadata"].get("type_description_hash") or "")
                   for t in info["topics_with_message_count"]}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return topics  # no usable metadata: the digests stay empty, copying falls back to a typestore
    return {name: t if t.digest else TopicInfo(t.name, t.msgtype, t.count, t.msgdef, digests.get(name, ""))
            for name, t in topics.items()}

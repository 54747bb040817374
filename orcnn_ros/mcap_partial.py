"""Reading an mcap file that was never finished (writer killed): its records walked from the start.

An mcap file is the magic ``\\x89MCAP0\\r\\n`` followed by records ``opcode u8, length u64 LE, content``.
A finished file ends with a summary and a footer, which ``rosbags`` needs; a killed one stops anywhere.
This reader needs neither: it walks the data section record by record (schemas, channels, messages,
and chunks, which hold the same records, possibly compressed) and stops at the first record that runs
past the end of the file -- the one the kill cut. Every complete chunk is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence, Union

from orcnn_core.errors import InputError
from orcnn_ros.bag_sources import TopicInfo, normalize_msgtype

MAGIC = b"\x89MCAP0\r\n"
_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK, _FOOTER, _DATA_END = 0x03, 0x04, 0x05, 0x06, 0x02, 0x0F
_MAX_CHUNK_BYTES = 2**30  # a declared uncompressed chunk size above this is refused, not allocated


@dataclass(frozen=True)
class _Channel:
    topic: str
    msgtype: str
    msgdef: str
    digest: str


@dataclass(frozen=True)
class _Entry:
    """Where one message is: a chunk's file offset (-1: a top-level record) and the record in it."""

    timestamp: int
    order: int
    channel_id: int
    chunk_offset: int
    start: int
    end: int


class _Cursor:
    """Reads ``u16/u32/u64/str/bytes`` fields of one record's content."""

    def __init__(self, data: Union[bytes, memoryview]) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def blob(self) -> bytes:
        size = self.take("<I")
        if self.pos + size > len(self.data):
            raise ValueError("field runs past its record")
        value = bytes(self.data[self.pos:self.pos + size])
        self.pos += size
        return value

    def text(self) -> str:
        return self.blob().decode("utf8", errors="replace")


def _records(data: Union[bytes, memoryview], base: int = 0) -> Iterator[tuple[int, int, int]]:
    """``(opcode, content start, content end)`` of the complete records in ``data``; stops at a cut one."""
    pos = 0
    while pos + 9 <= len(data):
        opcode, length = struct.unpack_from("<BQ", data, pos)
        end = pos + 9 + length
        if end > len(data):
            return
        yield opcode, base + pos + 9, base + end
        pos = end


class PartialMcapSource:
    """Messages of a complete or unfinished .mcap file, with the interface of ``bagio``'s sources."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "rb")  # closed by close()
        try:
            if self._file.read(len(MAGIC)) != MAGIC:
                raise InputError(f"bag {self.path}: not an mcap file (no mcap magic)")
            self._schemas: dict[int, tuple[str, str]] = {}
            self._channels: dict[int, _Channel] = {}
            self._entries: list[_Entry] = []
            self._walk()
        except InputError:
            self._file.close()
            raise
        except (struct.error, ValueError) as exc:  # a field that runs past its record
            self._file.close()
            raise InputError(f"bag {self.path}: corrupt mcap record ({exc})") from exc
        except BaseException:
            self._file.close()
            raise
        self._entries.sort(key=lambda e: (e.timestamp, e.order))
        self._chunk_cache: tuple[int, bytes] = (-2, b"")

    # -- index pass ----------------------------------------------------------------------------------
    def _walk(self) -> None:
        self._file.seek(0, 2)
        size = self._file.tell()
        pos = len(MAGIC)
        while pos + 9 <= size:
            self._file.seek(pos)
            opcode, length = struct.unpack("<BQ", self._file.read(9))
            end = pos + 9 + length
            if end > size or opcode in (_FOOTER, _DATA_END):
                return  # the cut record of a killed writer, or the end of the data section
            if opcode in (_SCHEMA, _CHANNEL, _MESSAGE):
                self._record(opcode, self._file.read(length), -1, pos + 9)
            elif opcode == _CHUNK:
                chunk = self._chunk(pos)
                for inner, start, inner_end in _records(chunk):
                    self._record(inner, chunk[start:inner_end], pos, start)
            pos = end

    def _chunk(self, offset: int) -> bytes:
        """The records of the chunk record at ``offset``, decompressed."""
        from rosbags.rosbag2.storage_mcap import decompress

        self._file.seek(offset)
        _, length = struct.unpack("<BQ", self._file.read(9))
        cursor = _Cursor(self._file.read(length))
        cursor.take("<Q"), cursor.take("<Q")  # message start / end time
        uncompressed, crc = cursor.take("<Q"), cursor.take("<I")
        compression = cursor.text()
        size = cursor.take("<Q")
        if uncompressed > _MAX_CHUNK_BYTES or cursor.pos + size > len(cursor.data):
            raise ValueError(f"chunk at offset {offset} declares {uncompressed} bytes")
        data = cursor.data[cursor.pos:cursor.pos + size]
        try:
            return decompress(data, compression, uncompressed, crc)
        except Exception as exc:  # rosbags' ReaderError, or the codec's own errors
            raise InputError(f"bag {self.path}: chunk at offset {offset} cannot be read ({exc})") from exc

    def _record(self, opcode: int, content: bytes, chunk_offset: int, start: int) -> None:
        cursor = _Cursor(content)
        if opcode == _SCHEMA:
            schema_id, name, encoding = cursor.take("<H"), cursor.text(), cursor.text()
            data = cursor.blob()
            text = data.decode("utf8", errors="replace") if encoding in ("ros2msg", "ros2idl") else ""
            self._schemas[schema_id] = (name, text)
        elif opcode == _CHANNEL:
            channel_id, schema_id, topic = cursor.take("<H"), cursor.take("<H"), cursor.text()
            cursor.text()  # message encoding (cdr)
            metadata = self._metadata(cursor)
            name, text = self._schemas.get(schema_id, ("", ""))
            digest = metadata.get("type_description_hash", "")
            self._channels[channel_id] = _Channel(topic, name, text, digest)
        elif opcode == _MESSAGE:
            channel_id, _, log_time = cursor.take("<H"), cursor.take("<I"), cursor.take("<Q")
            cursor.take("<Q")  # publish time
            self._entries.append(_Entry(log_time, len(self._entries), channel_id, chunk_offset,
                                        start + cursor.pos, start + len(content)))

    @staticmethod
    def _metadata(cursor: _Cursor) -> dict[str, str]:
        size = cursor.take("<I")
        end, values = cursor.pos + size, {}
        while cursor.pos < end:
            key = cursor.text()
            values[key] = cursor.text()
        return values

    # -- the source interface ------------------------------------------------------------------------
    def topics(self) -> dict[str, TopicInfo]:
        """TopicInfo per topic, counting the messages of the complete records."""
        counts: dict[int, int] = {}
        for entry in self._entries:
            counts[entry.channel_id] = counts.get(entry.channel_id, 0) + 1
        topics: dict[str, TopicInfo] = {}
        for channel_id, channel in self._channels.items():
            known = topics.get(channel.topic)
            count = counts.get(channel_id, 0) + (known.count if known else 0)
            topics[channel.topic] = TopicInfo(channel.topic, normalize_msgtype(channel.msgtype), count,
                                              channel.msgdef, channel.digest)
        return topics

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """``(topic, msgtype, timestamp, data)`` of ``topics`` in receive-time order."""
        wanted = {cid: c for cid, c in self._channels.items() if c.topic in set(topics)}
        for entry in self._entries:
            channel = wanted.get(entry.channel_id)
            if channel is not None:
                yield channel.topic, normalize_msgtype(channel.msgtype), entry.timestamp, self._data(entry)

    def _data(self, entry: _Entry) -> bytes:
        if entry.chunk_offset < 0:
            self._file.seek(entry.start)
            return self._file.read(entry.end - entry.start)
        if self._chunk_cache[0] != entry.chunk_offset:  # messages are mostly in file order
            self._chunk_cache = (entry.chunk_offset, self._chunk(entry.chunk_offset))
        return self._chunk_cache[1][entry.start:entry.end]

    def time_range(self) -> tuple[int, int]:
        """First and last receive timestamp (ns); (0, 0) when there are no messages."""
        if not self._entries:
            return (0, 0)
        return (self._entries[0].timestamp, max(e.timestamp for e in self._entries))

    def last_written(self, topic: str) -> tuple[int, int]:
        """Message count and last receive timestamp of ``topic`` (0, -1 when none)."""
        ids = {cid for cid, c in self._channels.items() if c.topic == topic}
        stamps = [e.timestamp for e in self._entries if e.channel_id in ids]
        return len(stamps), max(stamps, default=-1)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

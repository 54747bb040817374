"""Bags that survive kill -9: periodic checkpoints, reading a killed bag, where it ended, resuming it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orcnn_core.errors import InputError
from orcnn_ros import messages
from orcnn_ros.bag_checkpoint import INCOMPLETE_KEY
from orcnn_ros.bagio import BagReader, BagWriter, LastWritten, last_written
from orcnn_ros.mcap_partial import PartialMcapSource

REPO_ROOT = Path(__file__).resolve().parents[1]
TOPIC, MSGTYPE = "/chatter", "std_msgs/msg/String"

# A writer that prints "index monotonic-time" after each message, at ``rate`` Hz; with ``idle`` it
# stops writing after ``count`` messages and waits (a replay waiting on its model).
WRITER = """
import sys, time
from orcnn_ros import messages
from orcnn_ros.bagio import BagWriter
out, storage, rate, count, idle = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with BagWriter(out, storage) as writer:
    writer.add_topic("/chatter", "std_msgs/msg/String", typestore=messages.typestore())
    print("ready", time.monotonic(), flush=True)
    index = 0
    while idle != "idle" or index < count:
        writer.write("/chatter", 10**9 + index, messages.serialize(
            messages.msg_class("std_msgs/msg/String")(data="x" * 2000 + str(index)), "std_msgs/msg/String"))
        print(index, time.monotonic(), flush=True)
        index += 1
        time.sleep(1.0 / rate)
    print("idle", time.monotonic(), flush=True)
    time.sleep(600)
"""


def string_msg(text: str) -> bytes:
    return messages.serialize(messages.msg_class(MSGTYPE)(data=text), MSGTYPE)


def read_all(bag: Path) -> list[tuple[int, str]]:
    with BagReader(bag) as reader:
        return [(m.timestamp, messages.deserialize(bytes(m.data), MSGTYPE).data)
                for m in reader.messages([TOPIC])]


def start_writer(out: Path, storage: str, idle: bool) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", WRITER, str(out), storage, "100", "40",
                             "idle" if idle else "steady"],
                            stdout=subprocess.PIPE, text=True, env=env)


def test_kill_9_keeps_every_message_written_a_second_before(tmp_path):
    """Both storages, killed while writing at 100 Hz and while idle after 40 messages."""
    cases = {(storage, idle): tmp_path / f"{storage}_{'idle' if idle else 'steady'}"
             for storage in ("sqlite3", "mcap") for idle in (False, True)}
    procs = {case: start_writer(out, *case) for case, out in cases.items()}
    written: dict = {case: [] for case in cases}
    kill_time = {}
    try:
        for case, proc in procs.items():
            # Each writer: read its lines until it has written for 2.2 s (or gone idle 1.3 s ago), kill.
            started = idle_at = None
            for line in proc.stdout:
                word, stamp = line.split()
                if word == "ready":
                    started = float(stamp)
                elif word == "idle":
                    idle_at = float(stamp)
                    time.sleep(max(0.0, idle_at + 1.3 - time.monotonic()))
                    break
                else:
                    written[case].append((int(word), float(stamp)))
                    if not case[1] and float(stamp) - started > 2.2:
                        break
            proc.send_signal(signal.SIGKILL)
            kill_time[case] = time.monotonic()
            proc.wait()
            for line in proc.stdout:  # what it wrote after the lines read so far
                word, stamp = line.split()
                if word not in ("ready", "idle"):
                    written[case].append((int(word), float(stamp)))
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
            proc.stdout.close()
    for case, out in cases.items():
        old = {index for index, stamp in written[case] if stamp < kill_time[case] - 1.0}
        assert len(old) >= (40 if case[1] else 20), (case, len(old))
        found = read_all(out)
        found_indices = {ts - 10**9 for ts, _ in found}
        assert found_indices <= {index for index, _ in written[case]} | {len(written[case])}
        assert len(old & found_indices) >= 0.9 * len(old), (case, len(old & found_indices), len(old))
        assert [text[2000:] for _, text in found] == [str(i) for i in sorted(found_indices)]
        assert last_written(out, TOPIC) == LastWritten(len(found), max(ts for ts, _ in found))
        assert INCOMPLETE_KEY in (out / "metadata.yaml").read_text()


def test_checkpoint_makes_the_bag_readable_without_close(tmp_path):
    for storage in ("sqlite3", "mcap"):
        out = tmp_path / storage
        writer = BagWriter(out, storage, checkpoint_s=3600).__enter__()  # only explicit checkpoints
        writer.add_topic(TOPIC, MSGTYPE, typestore=messages.typestore())
        for i in range(5):
            writer.write(TOPIC, 100 + i, string_msg(f"m{i}"))
        writer.checkpoint()
        writer.write(TOPIC, 200, string_msg("after the checkpoint"))
        # What another process sees now: the 5 checkpointed messages, exactly.
        assert read_all(out) == [(100 + i, f"m{i}") for i in range(5)]
        with BagReader(out) as reader:
            assert reader.topics[TOPIC].count == 5 and reader.time_range() == (100, 104)
        writer.close()
        assert read_all(out)[-1] == (200, "after the checkpoint")
        assert last_written(out, TOPIC) == LastWritten(6, 200)
        assert INCOMPLETE_KEY not in (out / "metadata.yaml").read_text()  # finalised by rosbags


def test_uncommitted_data_never_reaches_the_db3(tmp_path):
    """Far more than SQLite's page cache written after a checkpoint stays out of the .db3 file."""
    out = tmp_path / "big"
    writer = BagWriter(out, "sqlite3", checkpoint_s=3600).__enter__()
    writer.add_topic(TOPIC, MSGTYPE, typestore=messages.typestore())
    writer.write(TOPIC, 1, string_msg("committed"))
    writer.checkpoint()
    committed = (out / "big.db3").read_bytes()
    writer._writer.storage.conn.execute("PRAGMA cache_size=10")  # as if memory were short: 10 pages
    for i in range(2000):
        writer.write(TOPIC, 10 + i, string_msg("z" * 5000))
    assert (out / "big.db3").read_bytes() == committed  # (SQLite would spill ~10 MB into it)
    assert read_all(out) == [(1, "committed")]
    writer.close()
    assert len(read_all(out)) == 2001


def test_reader_rolls_back_a_transaction_a_kill_left_in_the_db3(tmp_path):
    """A writer without our settings (cache spilling on) killed mid-transaction: the journal undoes it."""
    db3 = tmp_path / "killed.db3"
    script = f"""
import os, sqlite3
conn = sqlite3.connect({str(db3)!r})
conn.executescript(
    "CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT, type TEXT, serialization_format TEXT);"
    "CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER, timestamp INTEGER, data BLOB);")
conn.execute("INSERT INTO topics VALUES (1, '/t', 'std_msgs/msg/String', 'cdr')")
insert = "INSERT INTO messages(topic_id, timestamp, data) VALUES (1, ?, ?)"
conn.executemany(insert, [(i, b'x') for i in range(10)])
conn.commit()
print(os.path.getsize({str(db3)!r}), flush=True)
conn.execute("PRAGMA cache_size=10")
for i in range(10, 2000):
    conn.execute(insert, (i, b'y' * 5000))
os.kill(os.getpid(), 9)
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    committed_size = int(killed.stdout)
    assert db3.with_name("killed.db3-journal").exists() and db3.stat().st_size > 10 * committed_size
    with BagReader(db3) as reader:
        assert reader.topics["/t"].count == 10 and reader.time_range() == (0, 9)
    assert not db3.with_name("killed.db3-journal").exists() and db3.stat().st_size == committed_size


def test_without_checkpoints_nothing_is_written_before_close(tmp_path):
    out = tmp_path / "plain"
    with BagWriter(out, "sqlite3", checkpoint_s=None) as writer:
        writer.add_topic(TOPIC, MSGTYPE, typestore=messages.typestore())
        writer.write(TOPIC, 1, string_msg("a"))
        assert not (out / "metadata.yaml").exists()
    assert read_all(out) == [(1, "a")]


def test_resume_continues_a_killed_bag(tmp_path):
    for storage in ("sqlite3", "mcap"):
        out = tmp_path / storage
        writer = BagWriter(out, storage, checkpoint_s=3600).__enter__()
        writer.add_topic(TOPIC, MSGTYPE, typestore=messages.typestore())
        for i in range(3):
            writer.write(TOPIC, 10 + i, string_msg(f"old{i}"))
        writer.checkpoint()
        writer._checkpointer.stop()  # "killed": never closed, nothing more reaches the files
        assert last_written(out, TOPIC) == LastWritten(3, 12)
        with BagWriter(out, "sqlite3", resume=True) as resumed:
            assert resumed.counts == {TOPIC: 3}
            resumed.add_topic(TOPIC, MSGTYPE, typestore=messages.typestore())  # already there: no-op
            resumed.write(TOPIC, 20, string_msg("new"))
        assert read_all(out) == [(10, "old0"), (11, "old1"), (12, "old2"), (20, "new")]
        assert not out.with_name(out.name + ".resume").exists()
        from rosbags.rosbag2 import Reader  # the resumed bag is a finished one

        with Reader(out) as reader:
            assert reader.message_count == 4


def test_interrupted_resume_is_redone_from_the_staged_bag(tmp_path):
    out = tmp_path / "bag"
    with BagWriter(out) as writer:
        writer.add_topic(TOPIC, MSGTYPE, typestore=messages.typestore())
        writer.write(TOPIC, 1, string_msg("kept"))
    out.rename(tmp_path / "bag.resume")  # as a resume killed during its copy leaves it
    with BagWriter(out) as partial:
        partial.add_topic(TOPIC, MSGTYPE, typestore=messages.typestore())
    with BagWriter(out, resume=True) as writer:
        assert writer.counts == {TOPIC: 1}
    assert read_all(out) == [(1, "kept")]


def test_resume_without_a_bag_starts_a_new_one(tmp_path):
    with BagWriter(tmp_path / "fresh", resume=True) as writer:
        writer.add_topic(TOPIC, MSGTYPE, typestore=messages.typestore())
        writer.write(TOPIC, 5, string_msg("first"))
    assert read_all(tmp_path / "fresh") == [(5, "first")]
    assert last_written(tmp_path / "fresh", "/other") == LastWritten(0, None)


def test_checkpoint_errors_reach_the_writer(tmp_path, monkeypatch):
    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        with BagWriter(tmp_path / "bag", checkpoint_s=0.05) as writer:
            writer.add_topic(TOPIC, MSGTYPE, typestore=messages.typestore())
            monkeypatch.setattr(writer._checkpointer, "_flush", disk_full)
            writer.write(TOPIC, 1, string_msg("a"))
            time.sleep(0.5)  # the background checkpoint fails meanwhile
            assert writer._checkpointer.error is not None
            writer.write(TOPIC, 2, string_msg("b"))
    assert read_all(tmp_path / "bag") == [(1, "a")]  # closed all the same, by rosbags


def finished_mcap(tmp_path: Path, count: int = 60) -> Path:
    out = tmp_path / "finished"
    with BagWriter(out, "mcap", checkpoint_s=None) as writer:
        writer.add_topic(TOPIC, MSGTYPE, typestore=messages.typestore())
        writer.add_topic("/other", MSGTYPE, typestore=messages.typestore())
        for i in range(count):
            writer.write(TOPIC if i % 3 else "/other", 1000 + i, string_msg("y" * (i * 2000)))  # 3 chunks
    return out / "finished.mcap"


def test_partial_mcap_reader_agrees_with_rosbags_on_a_finished_file(tmp_path):
    mcap = finished_mcap(tmp_path)
    with BagReader(mcap, backend="rosbags") as reader:
        expected = [(m.topic, m.timestamp, bytes(m.data)) for m in reader.messages([TOPIC, "/other"])]
        topics = reader.topics
    source = PartialMcapSource(mcap)
    try:
        assert [(t, ts, bytes(d)) for t, _, ts, d in source.messages([TOPIC, "/other"])] == expected
        assert {k: (v.msgtype, v.count, v.msgdef) for k, v in source.topics().items()} == {
            k: (v.msgtype, v.count, v.msgdef) for k, v in topics.items()}
        assert source.time_range() == (1000, 1059)
    finally:
        source.close()


def test_cut_mcap_gives_a_prefix_of_its_messages(tmp_path):
    mcap = finished_mcap(tmp_path)
    data = mcap.read_bytes()
    with BagReader(mcap) as reader:
        full = [(m.timestamp, bytes(m.data)) for m in reader.messages([TOPIC, "/other"])]
    counts = []
    for cut in (8, 9, 30, len(data) // 4, len(data) // 2, len(data) - 200, len(data) - 1):
        piece = tmp_path / f"cut{cut}.mcap"
        piece.write_bytes(data[:cut])
        with BagReader(piece) as reader:
            got = [(m.timestamp, bytes(m.data)) for m in reader.messages(sorted(reader.topics))]
        assert got == full[:len(got)]
        counts.append(len(got))
    assert counts == sorted(counts) and 0 < counts[4] < len(full) and counts[-1] == len(full)
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap at all")
    with pytest.raises(InputError, match="junk.mcap"):
        BagReader(tmp_path / "junk.mcap")

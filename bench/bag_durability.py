"""What surviving kill -9 costs: messages/s of ``BagWriter`` with its 1 s checkpoints against without.

Each run writes messages of one size as fast as it can for ``--seconds`` (so the checkpointed writer
commits / flushes a chunk and rewrites metadata.yaml a few times), then closes the bag; messages/s
counts the close, where the writer without checkpoints does all of its committing. Runs alternate
between the two writers and the median of ``--repeats`` is used, so a busy machine affects both alike.
Sizes: 2 KB (a small AmodalInstanceArray) and 300 KB (a compressed camera frame); both storages.

    python bench/bag_durability.py [--seconds 2] [--repeats 3]

Last line: ``bagwriter_checkpoint_ratio: <checkpointed msgs/s / plain msgs/s, worst case>``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from orcnn_ros import messages
from orcnn_ros.bagio import CHECKPOINT_S, BagWriter

SIZES = {"2KB": 2_000, "300KB": 300_000}
TOPIC, MSGTYPE = "/data", "std_msgs/msg/String"


def payload(size: int) -> bytes:
    """A serialized std_msgs/String of about ``size`` bytes."""
    return messages.serialize(messages.msg_class(MSGTYPE)(data="x" * size), MSGTYPE)


def run(out: Path, storage: str, data: bytes, seconds: float, checkpoint_s) -> float:
    """Messages per second of one writer, close included."""
    typestore = messages.typestore()
    count = 0
    start = time.perf_counter()
    with BagWriter(out, storage, checkpoint_s=checkpoint_s) as writer:
        writer.add_topic(TOPIC, MSGTYPE, typestore=typestore)
        while time.perf_counter() - start < seconds:
            for _ in range(10):
                writer.write(TOPIC, count, data)
                count += 1
    elapsed = time.perf_counter() - start
    shutil.rmtree(out)
    return count / elapsed


def main() -> None:
    """Run the benchmark and print its figures; the last line is the headline ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ratios = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for storage in ("sqlite3", "mcap"):
            for label, size in SIZES.items():
                data = payload(size)
                rates: dict[str, list[float]] = {"plain": [], "checkpointed": []}
                for _ in range(args.repeats):
                    rates["plain"].append(run(tmp / "bag", storage, data, args.seconds, None))
                    rates["checkpointed"].append(run(tmp / "bag", storage, data, args.seconds, CHECKPOINT_S))
                plain, durable = (statistics.median(rates[k]) for k in ("plain", "checkpointed"))
                ratios.append(durable / plain)
                mib_s = plain * size / 2**20
                print(f"{storage:8s} {label:>6s}: plain {plain:9.0f} msg/s ({mib_s:6.1f} MiB/s), checkpoint "
                      f"every {CHECKPOINT_S:g} s {durable:9.0f} msg/s, ratio {durable / plain:.3f}")
    print(f"bagwriter_checkpoint_ratio: {min(ratios):.3f}")


if __name__ == "__main__":
    main()

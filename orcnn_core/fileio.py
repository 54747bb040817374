"""Files that are either the old version or the whole new one: write to a temporary name, rename.

Every command that writes results (predict, demo, eval --json, replay summaries, annotation files,
checkpoints) goes through ``atomic_write`` so that a kill, a full disk or two runs writing the same
file never leave a half-written file: the temporary file sits in the same folder (so the rename is
atomic), is fsync'ed, and is removed again when the write fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _default_mode() -> int:
    # mkstemp makes owner-only files; checkpoints get the permissions a plain open() would give.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def commit_file(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, give it plain-file permissions and rename it onto ``final`` (same folder)."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp, _default_mode())
    os.replace(tmp, final)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` for a temporary path next to ``path``, fsync it, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        commit_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomically replace a text file."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_stale_temporaries(folder: str | Path, patterns: tuple = (".*.tmp",)) -> list[Path]:
    """Delete what a killed writer left in ``folder`` (files or folders matching ``patterns``)."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for pattern in patterns:
            for path in folder.glob(pattern):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed

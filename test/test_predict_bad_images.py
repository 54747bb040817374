"""``orcnn predict`` / ``orcnn demo`` on folders with bad files: skipped by cause, good results kept."""

from __future__ import annotations

import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from orcnn_core.cli import main as cli_main
from orcnn_core.data import synth


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb's header), with a tiny body."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


@pytest.fixture
def folder(tmp_path):
    """Two good synthetic scenes and one file of each bad kind."""
    data = synth.synthesize(tmp_path / "scenes", images=2, seed=4242, classes=6, size=(320, 240))
    images = data.image_root
    good_jpeg = cv2.imencode(".jpg", cv2.imread(str(images / "000000.png")))[1].tobytes()
    (images / "cut.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])       # truncated JPEG
    (images / "bomb.png").write_bytes(png_claiming(100_000, 100_000))       # header > the pixel limit
    cv2.imwrite(str(images / "line.png"), np.zeros((1, 3000, 3), np.uint8))  # below the decoder's minimum
    cv2.imwrite(str(images / "thin.png"), np.zeros((20, 3000, 3), np.uint8))  # too thin for the model
    (images / "notes.jpg").write_bytes(b"not an image at all")
    return images


def test_predict_skips_bad_images_by_cause_and_keeps_the_good_results(folder, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert cli_main(["predict", "--images", str(folder), "--out", str(out), "--device", "cpu",
                     "--score-threshold", "0.5"]) == 0
    captured = capsys.readouterr()
    results = json.loads(out.read_text())
    assert {r["file_name"] for r in results} == {"000000.png", "000001.png"}
    # one summary line, and a warning naming every cause with its count
    assert "2 of 7 image(s)" in captured.out
    warning = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warning) == 1
    for cause in ("truncated_jpeg", "too_large", "too_small", "invalid_image", "undecodable"):
        assert f"{cause} 1" in warning[0], warning[0]


def test_predict_with_no_usable_image_fails_in_one_line_and_writes_nothing(folder, tmp_path, capsys):
    for good in ("000000.png", "000001.png"):
        (folder / good).unlink()
    out = tmp_path / "results.json"
    assert cli_main(["predict", "--images", str(folder), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("orcnn predict: error: --images: no image of") and "too_large 1" in err[-1]
    assert not out.exists()


def test_predict_output_is_replaced_whole(folder, tmp_path, monkeypatch):
    # The results file is written to a temporary name and renamed: a failing write leaves the old file.
    out = tmp_path / "results.json"
    out.write_text("[]")
    import orcnn_core.fileio as fileio

    def failing_commit(tmp, final):
        raise OSError("disk full")

    monkeypatch.setattr(fileio, "commit_file", failing_commit)
    with pytest.raises(OSError, match="disk full"):
        cli_main(["predict", "--images", str(folder), "--out", str(out), "--device", "cpu"])
    assert out.read_text() == "[]"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_demo_on_a_folder_skips_bad_images(folder, tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli_main(["demo", "--images", str(folder), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["000000.png", "000001.png"]
    assert "skipped 5 image(s)" in printed

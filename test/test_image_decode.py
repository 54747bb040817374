"""One decoder for image files and CompressedImage frames: header limits, truncation, same answer."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orcnn_core.data import image_decode
from orcnn_core.data.image_decode import (
    MAX_IMAGE_PIXELS,
    MIN_IMAGE_SIDE,
    ImageDecodeError,
    decode_image,
    read_image_header,
)
from orcnn_core.data.images import ImageFileError, read_image_rgb
from orcnn_core.errors import DatasetError, InputError
from orcnn_ros.conversions import ImageInputError, compressed_msg_to_numpy, image_msg_to_numpy

RNG = np.random.default_rng(13)
# Noise makes the JPEG entropy data full of FF00 stuffing; the flat band gives long runs.
NOISE = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
NOISE[:8] = 200
PNG = cv2.imencode(".png", NOISE)[1].tobytes()
JPEG = cv2.imencode(".jpg", NOISE, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
JPEG_RST = cv2.imencode(".jpg", NOISE, [cv2.IMWRITE_JPEG_RST_INTERVAL, 1])[1].tobytes()
JPEG_PROGRESSIVE = cv2.imencode(".jpg", NOISE, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A complete, well-formed PNG file whose IHDR claims ``width`` x ``height`` (8-bit RGB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)  # far fewer rows than claimed: only a bomb's header matters
    return (image_decode.PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """``JPEG`` with the size in its SOF0 frame header replaced."""
    sof = JPEG.index(b"\xff\xc0")
    return JPEG[:sof + 5] + struct.pack(">HH", height, width) + JPEG[sof + 9:]


def with_exif_thumbnail(main: bytes) -> tuple[bytes, int]:
    """``main`` with an APP1 EXIF segment holding a whole JPEG thumbnail (its own FFD9) after SOI.

    Returns the bytes and the offset just past the APP1 segment (i.e. past the thumbnail's FFD9).
    """
    thumb = cv2.imencode(".jpg", NOISE[::4, ::4])[1].tobytes()
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 0) + struct.pack("<I", 0)
    payload = b"Exif\x00\x00" + tiff + thumb
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = main[:2] + app1 + main[2:]
    return data, 2 + len(app1)


def frame(data: bytes, fmt: str = "jpeg") -> SimpleNamespace:
    """A CompressedImage-like message."""
    return SimpleNamespace(format=fmt, data=data)


def decode_file(tmp_path: Path, data: bytes, name: str = "image.bin") -> np.ndarray:
    path = tmp_path / name
    path.write_bytes(data)
    return read_image_rgb(path)


# --- valid images -------------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [PNG, JPEG, JPEG_RST, JPEG_PROGRESSIVE], ids=["png", "jpeg", "rst", "prog"])
def test_valid_images_decode_as_opencv_does(data, tmp_path):
    expected = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decode_image(data), expected)
    assert np.array_equal(compressed_msg_to_numpy(frame(data)), expected)
    assert np.array_equal(decode_file(tmp_path, data), expected)


def test_png_is_lossless():
    assert np.array_equal(decode_image(PNG), NOISE[:, :, ::-1])


def test_rst_and_progressive_jpegs_really_have_those_markers():
    # Guards the two cases above: without RSTn / several scans they would test nothing new.
    assert any(bytes([0xFF, m]) in JPEG_RST for m in range(0xD0, 0xD8))
    assert JPEG_PROGRESSIVE.count(b"\xff\xda") > 1 and b"\xff\xc2" in JPEG_PROGRESSIVE
    assert b"\xff\x00" in JPEG


@pytest.mark.parametrize("data", [PNG, JPEG, JPEG_PROGRESSIVE], ids=["png", "jpeg", "prog"])
@pytest.mark.parametrize("trailer", [b"\x00", b"\xff\xd8\xff", b"garbage after the end" * 50])
def test_trailing_bytes_after_the_end_marker_are_accepted(data, trailer, tmp_path):
    expected = decode_image(data)
    assert np.array_equal(compressed_msg_to_numpy(frame(data + trailer)), expected)
    assert np.array_equal(decode_file(tmp_path, data + trailer), expected)


def test_exif_thumbnail_jpeg_decodes():
    data, _ = with_exif_thumbnail(JPEG)
    assert np.array_equal(decode_image(data), decode_image(JPEG))


@pytest.mark.parametrize("ext, params", [(".bmp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
                                         (".tiff", [])])
def test_other_formats_through_pillow_header(ext, params, tmp_path):
    data = cv2.imencode(ext, NOISE, params)[1].tobytes()
    assert read_image_header(data).height == 48 and read_image_header(data).width == 64
    assert np.array_equal(decode_image(data), NOISE[:, :, ::-1])
    assert np.array_equal(decode_file(tmp_path, data, "x" + ext), NOISE[:, :, ::-1])


# --- refusals -----------------------------------------------------------------------------------------

def cuts(data: bytes) -> list[int]:
    """Several cut points: inside the signature, in the headers, in the pixel data, just before the end."""
    return sorted({1, 2, 3, 5, 8, 12, 20, 40, len(data) // 3, len(data) // 2, len(data) - 3, len(data) - 1})


@pytest.mark.parametrize("name, data, cause", [
    ("png", PNG, "truncated_png"), ("jpeg", JPEG, "truncated_jpeg"), ("rst", JPEG_RST, "truncated_jpeg"),
    ("prog", JPEG_PROGRESSIVE, "truncated_jpeg")])
def test_cut_images_are_truncated_on_both_sides(name, data, cause, tmp_path):
    for cut in cuts(data):
        with pytest.raises(ImageInputError) as from_frame:
            compressed_msg_to_numpy(frame(data[:cut]))
        with pytest.raises(ImageFileError) as from_file:
            decode_file(tmp_path, data[:cut], f"{name}.bin")
        assert (cut, from_frame.value.cause) == (cut, cause)
        assert from_file.value.cause == cause


def test_png_without_iend_is_truncated():
    assert PNG.endswith(png_chunk(b"IEND", b""))
    with pytest.raises(ImageDecodeError) as info:
        decode_image(PNG[:-12])
    assert info.value.cause == "truncated_png"


def test_exif_thumbnail_end_marker_is_not_the_image_end():
    data, after_thumbnail = with_exif_thumbnail(JPEG)
    assert data[after_thumbnail - 2:after_thumbnail] == b"\xff\xd9"  # the thumbnail's own EOI
    for cut in (after_thumbnail, after_thumbnail + 200, len(data) - 2):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(data[:cut])
        assert info.value.cause == "truncated_jpeg"


def test_decompression_bombs_are_refused_from_the_header(monkeypatch, tmp_path):
    def no_decoding(*args, **kwargs):
        raise AssertionError("a bomb reached cv2.imdecode")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    for data, size in ((png_claiming(100000, 100000), "100000x100000"),
                       (jpeg_claiming(60000, 60000), "60000x60000"),
                       (png_claiming(4097, 4096), "4097x4096"),
                       (png_claiming(8193, 16), "8193x16")):
        with pytest.raises(ImageInputError, match=size) as info:
            compressed_msg_to_numpy(frame(data))
        assert info.value.cause == "too_large"
        with pytest.raises(ImageFileError, match=size) as info:
            decode_file(tmp_path, data)
        assert info.value.cause == "too_large"


def test_size_limits_are_inclusive():
    header = read_image_header(png_claiming(4096, 4096))
    assert (header.width, header.height) == (4096, 4096) and 4096 * 4096 == MAX_IMAGE_PIXELS
    assert read_image_header(png_claiming(MIN_IMAGE_SIDE, 100)).width == MIN_IMAGE_SIDE
    assert read_image_header(jpeg_claiming(8192, 8)).width == 8192


@pytest.mark.parametrize("data, cause", [
    (png_claiming(3000, 1), "too_small"),
    (png_claiming(MIN_IMAGE_SIDE - 1, 50), "too_small"),
    (jpeg_claiming(3000, 1), "too_small"),
    (png_claiming(0, 10), "zero_size"),
    (b"", "zero_size"),
    (bytes(RNG.integers(0, 256, 3000, dtype=np.uint8)), "undecodable"),
    (b"not an image at all", "undecodable"),
    (b"GIF89a\x10\x00\x10\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00"
     b"\x00\x00\x10\x00\x10\x00\x00\x02\x02D\x01\x00;", "unsupported_format"),
    (JPEG[:2] + JPEG[2:].replace(b"\xff\xc0", b"\xff\xfe", 1), "undecodable"),  # no frame header
    (PNG[:12] + b"IDAT" + PNG[16:], "undecodable"),  # first chunk not IHDR
], ids=["1x3000", "7x50", "jpeg1x3000", "zero-width", "empty", "random", "text", "gif", "no-sof", "no-ihdr"])
def test_bad_images_same_cause_for_files_and_frames(data, cause, tmp_path):
    with pytest.raises(ImageInputError) as from_frame:
        compressed_msg_to_numpy(frame(data))
    with pytest.raises(ImageFileError) as from_file:
        decode_file(tmp_path, data, "bad.png")
    assert from_frame.value.cause == from_file.value.cause == cause
    assert "CompressedImage" in str(from_frame.value)
    assert str(tmp_path / "bad.png") in str(from_file.value) and "\n" not in str(from_file.value)


def test_file_errors_are_dataset_errors_and_name_the_file(tmp_path):
    with pytest.raises(ImageFileError, match="missing.png") as info:
        read_image_rgb(tmp_path / "missing.png")
    assert info.value.cause == "not_found" and info.value.path == tmp_path / "missing.png"
    # Callers that skip DatasetError (predict, demo, datasets) and ones that catch the decoder's type.
    assert isinstance(info.value, DatasetError) and isinstance(info.value, ImageDecodeError)
    assert isinstance(info.value, InputError)


def test_errors_survive_pickling_and_a_message_only_rebuild(tmp_path):
    import pickle

    with pytest.raises(ImageFileError) as info:
        decode_file(tmp_path, JPEG[:100], "cut.jpg")
    copy = pickle.loads(pickle.dumps(info.value))  # as a DataLoader worker's error travels
    assert (type(copy), copy.cause, copy.path, str(copy)) == (
        ImageFileError, "truncated_jpeg", tmp_path / "cut.jpg", str(info.value))
    # torch re-raises a worker's error as ``type(message)``: still the project's error, not a TypeError.
    rebuilt = ImageFileError("Caught ImageFileError in DataLoader worker process 0")
    assert isinstance(rebuilt, DatasetError) and rebuilt.cause == "unknown" and "worker" in str(rebuilt)
    frame_error = pickle.loads(pickle.dumps(ImageInputError("too_large", "big")))
    assert (frame_error.cause, str(frame_error)) == ("too_large", "big")


def test_opencv_errors_never_escape(monkeypatch, tmp_path):
    def opencv_refuses(*args, **kwargs):
        raise cv2.error("OpenCV(4.x) error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS")

    monkeypatch.setattr(cv2, "imdecode", opencv_refuses)
    with pytest.raises(ImageInputError, match="CV_IO_MAX_IMAGE_PIXELS") as info:
        compressed_msg_to_numpy(frame(PNG))
    assert info.value.cause == "undecodable"
    with pytest.raises(ImageFileError) as info:
        decode_file(tmp_path, JPEG)
    assert info.value.cause == "undecodable"


def test_raw_frame_over_the_limit_is_refused_before_its_data_is_read():
    class Untouchable:
        def __getattribute__(self, name):
            raise AssertionError("Image.data was read")

    msg = SimpleNamespace(height=5000, width=5000, encoding="rgb8", step=15000, data=Untouchable())
    with pytest.raises(ImageInputError, match="5000x5000") as info:
        image_msg_to_numpy(msg)
    assert info.value.cause == "too_large"
    msg = SimpleNamespace(height=1, width=3000, encoding="mono8", step=3000, data=Untouchable())
    with pytest.raises(ImageInputError) as info:
        image_msg_to_numpy(msg)
    assert info.value.cause == "too_small"


# --- any bytes: pixels or the project's error ---------------------------------------------------------

def mutate(data: bytes, rng: random.Random) -> bytes:
    """Flip, insert, delete or cut a few bytes."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        action, at = rng.randrange(4), rng.randrange(len(out) or 1)
        if action == 0 and out:
            out[at] = rng.randrange(256)
        elif action == 1:
            out[at:at] = bytes([0xFF, rng.randrange(256)])
        elif action == 2:
            del out[at:at + rng.randint(1, 64)]
        else:
            del out[at:]
    return bytes(out)


@settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([PNG, JPEG, JPEG_PROGRESSIVE, JPEG_RST]), st.integers(0, 2**32 - 1))
def test_mutated_images_give_pixels_or_the_projects_error(data, seed):
    mutated = mutate(data, random.Random(seed))
    try:
        image = decode_image(mutated)
    except ImageDecodeError as exc:
        assert exc.cause in {"truncated_png", "truncated_jpeg", "undecodable", "too_small", "too_large",
                             "zero_size", "unsupported_format"}
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@settings(max_examples=150, deadline=2000)
@given(st.binary(max_size=300))
def test_any_bytes_give_pixels_or_the_projects_error(data):
    try:
        decode_image(data)
    except ImageDecodeError:
        pass

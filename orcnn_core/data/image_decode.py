"""One image decoder for image files and encoded frames (ROS ``CompressedImage``), with one set of rules.

Before any pixel is decoded, the image size is read from the header (PNG ``IHDR``, JPEG ``SOFn``, other
formats through Pillow's lazy header) and checked against the limits below, so no decompression bomb
is ever decoded, and the file is walked to its end marker (PNG chunks by length to ``IEND``; JPEG
segments by length, then the entropy-coded data, to ``EOI``), so a cut-off image is refused instead of
being decoded with a grey bottom. Bytes after a valid end marker are ignored. Every refusal is an
``ImageDecodeError`` whose ``cause`` is a short stable key, for counting skipped images by cause:

``zero_size``, ``too_small``, ``too_large``, ``truncated_jpeg``, ``truncated_png``, ``undecodable``,
``unsupported_format`` (plus ``not_found`` / ``unreadable`` for files, ``bad_data`` for messages).
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Optional, Union

import cv2
import numpy as np

from orcnn_core.errors import InputError

#: At most this many pixels (height * width): 4096x4096 RGB is 48 MiB decoded.
MAX_IMAGE_PIXELS = 4096 * 4096
#: Longest side accepted (the predictor's own limit, ``engine.predictor.MAX_IMAGE_SIDE``).
MAX_IMAGE_SIDE = 8192
#: Shortest side accepted. With ``MAX_IMAGE_SIDE`` this bounds the aspect ratio to 1024:1, so the model's
#: resize (long side to ``max_size`` = 1333 by default) never makes the short side 0 pixels.
MIN_IMAGE_SIDE = 8
#: Encoded images larger than this are refused before they are read (``too_large``).
MAX_ENCODED_BYTES = 128 * 2**20

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# Formats other than PNG/JPEG that the project reads (IMAGE_EXTENSIONS), as Pillow names them.
_PILLOW_FORMATS = {"BMP": "bmp", "TIFF": "tiff", "WEBP": "webp"}
# SOFn markers (frame headers) carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# In entropy-coded data a marker is FF followed by anything but 00 (stuffing), D0-D7 (RSTn) or FF (fill).
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Outside scans: the next FF (after any stray bytes and FF fill bytes) and the marker byte after it.
_JPEG_NEXT_MARKER = re.compile(rb"\xff+[^\xff]")
_PNG_MAX_CHUNK = 2**31 - 1  # the PNG spec's limit on a chunk length

Bytes = Union[bytes, bytearray, memoryview, np.ndarray]


class ImageDecodeError(InputError):
    """An image that cannot be used; ``cause`` is a short stable key (for counting and log-once)."""

    def __init__(self, cause: str, message: Optional[str] = None) -> None:
        if message is None:  # rebuilt from its message alone, as torch's DataLoader re-raises errors
            cause, message = "unknown", cause
        super().__init__(message)
        self.cause = cause

    def __reduce__(self) -> tuple:
        return type(self), (self.cause, str(self))  # pickled with its cause (multiprocessing workers)


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an encoded image says: format, size, and where its end marker ends."""

    format: str  # "png", "jpeg", "bmp", "tiff", "webp"
    height: int
    width: int
    end: int  # offset just past IEND / EOI; the data length for formats that are not walked


def check_image_size(height: int, width: int, source: str) -> None:
    """Refuse a size outside the documented limits (``zero_size``, ``too_small``, ``too_large``)."""
    if height <= 0 or width <= 0:
        raise ImageDecodeError("zero_size", f"{source}: image is zero-size ({width}x{height})")
    if min(height, width) < MIN_IMAGE_SIDE:
        raise ImageDecodeError("too_small", f"{source}: image is {width}x{height} pixels; its shorter "
                                            f"side must be at least MIN_IMAGE_SIDE = {MIN_IMAGE_SIDE}")
    if max(height, width) > MAX_IMAGE_SIDE:
        raise ImageDecodeError("too_large", f"{source}: image is {width}x{height} pixels; its longer "
                                            f"side must be at most MAX_IMAGE_SIDE = {MAX_IMAGE_SIDE}")
    if height * width > MAX_IMAGE_PIXELS:
        raise ImageDecodeError("too_large", f"{source}: image is {width}x{height} = {height * width} "
                                            f"pixels, more than MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS}")


def _u16(data: memoryview, pos: int) -> int:
    return (data[pos] << 8) | data[pos + 1]


def _png_header(data: memoryview, source: str) -> ImageHeader:
    """Size from IHDR, then every chunk walked by its length to IEND."""
    def truncated(what: str) -> ImageDecodeError:
        return ImageDecodeError("truncated_png", f"{source}: truncated PNG ({len(data)} bytes, {what})")

    size = None
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise truncated("no IHDR chunk" if size is None else "no IEND chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        if length > _PNG_MAX_CHUNK:
            raise ImageDecodeError("undecodable", f"{source}: corrupt PNG (chunk length {length} at "
                                                  f"offset {pos})")
        end = pos + 12 + length  # length, type, data, CRC
        if size is None:
            if kind != b"IHDR" or length != 13:
                raise ImageDecodeError("undecodable", f"{source}: corrupt PNG (first chunk is not IHDR)")
            if pos + 16 > len(data):
                raise truncated("cut in IHDR")
            width, height = struct.unpack_from(">II", data, pos + 8)
            size = (height, width)
            check_image_size(height, width, source)
        if end > len(data):
            raise truncated(f"chunk {bytes(kind)!r} at offset {pos} needs {end} bytes; no IEND chunk")
        if kind == b"IEND":
            return ImageHeader("png", size[0], size[1], end)
        pos = end


def _jpeg_header(data: memoryview, source: str) -> ImageHeader:
    """Size from the SOFn segment, then segments by length and scans to EOI (RSTn, FF00 honoured)."""
    n = len(data)

    def truncated(what: str) -> ImageDecodeError:
        return ImageDecodeError("truncated_jpeg", f"{source}: truncated JPEG ({n} bytes, {what})")

    size = None
    pos = 2  # after SOI
    while True:
        # The next marker: libjpeg skips stray bytes before it, and FF fill bytes may precede it.
        found = _JPEG_NEXT_MARKER.search(data, pos)
        if found is None:
            raise truncated("no end-of-image marker")
        marker, pos = data[found.end() - 1], found.end()
        if marker == 0xD9:  # EOI
            if size is None:
                raise ImageDecodeError("undecodable", f"{source}: JPEG without a frame header (SOF)")
            return ImageHeader("jpeg", size[0], size[1], pos)
        if 0xD0 <= marker <= 0xD7 or marker in (0x00, 0x01):  # standalone markers carry no length
            continue
        if marker == 0xD8:
            raise ImageDecodeError("undecodable", f"{source}: corrupt JPEG (second SOI at offset {pos - 2})")
        if pos + 2 > n:
            raise truncated(f"cut in the length of marker FF{marker:02X}")
        length = _u16(data, pos)
        if length < 2:
            raise ImageDecodeError("undecodable", f"{source}: corrupt JPEG (segment FF{marker:02X} of "
                                                  f"length {length} at offset {pos - 2})")
        segment_end = pos + length  # APPn segments (EXIF with its own thumbnail and FFD9) are skipped whole
        if segment_end > n:
            raise truncated(f"segment FF{marker:02X} at offset {pos - 2} needs {segment_end} bytes")
        if marker in _JPEG_SOF and size is None:
            if length < 8:
                raise ImageDecodeError("undecodable", f"{source}: corrupt JPEG (frame header too short)")
            height, width = _u16(data, pos + 3), _u16(data, pos + 5)
            if height == 0:  # the height would come from a DNL marker, which libjpeg does not support
                raise ImageDecodeError("unsupported_format", f"{source}: JPEG with its height in a DNL "
                                                             "marker is not supported")
            size = (height, width)
            check_image_size(height, width, source)
        pos = segment_end
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to the next real marker
            if size is None:
                raise ImageDecodeError("undecodable", f"{source}: JPEG scan before its frame header (SOF)")
            found = _JPEG_MARKER_IN_SCAN.search(data, pos)
            if found is None:
                raise truncated("cut in the entropy-coded data, no end-of-image marker")
            pos = found.start()


def _pillow_header(data: memoryview, source: str) -> ImageHeader:
    """Format and size of a BMP, TIFF or WebP from Pillow's lazy header read (no pixels decoded)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        message = f"{source}: not PNG or JPEG, and Pillow (for BMP, TIFF, WebP headers) is not installed"
        raise ImageDecodeError("unsupported_format", message) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            with Image.open(io.BytesIO(data)) as image:
                kind, (width, height) = image.format, image.size
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("too_large", f"{source}: {exc}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("undecodable", f"{source}: not an image in a known format "
                                              f"({len(data)} bytes)") from None
    except Exception as exc:  # Pillow's plugins raise many types on corrupt headers
        raise ImageDecodeError("undecodable", f"{source}: corrupt image header ({exc})") from None
    if kind not in _PILLOW_FORMATS:
        raise ImageDecodeError("unsupported_format", f"{source}: {kind} images are not supported "
                                                     "(PNG, JPEG, BMP, TIFF, WebP)")
    check_image_size(int(height), int(width), source)
    return ImageHeader(_PILLOW_FORMATS[kind], int(height), int(width), len(data))


def _as_bytes_view(data: Bytes) -> memoryview:
    """A flat byte view of ``data`` without copying."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return memoryview(data).cast("B")


def read_image_header(data: Bytes, source: str = "image") -> ImageHeader:
    """Format, size and end of an encoded image, checked (limits, completeness) without decoding it."""
    view = _as_bytes_view(data)
    if len(view) == 0:
        raise ImageDecodeError("zero_size", f"{source}: empty (0 bytes)")
    if len(view) > MAX_ENCODED_BYTES:
        raise ImageDecodeError("too_large", f"{source}: {len(view)} bytes, more than MAX_ENCODED_BYTES = "
                                            f"{MAX_ENCODED_BYTES}")
    head = bytes(view[:8])
    if head == PNG_SIGNATURE:
        return _png_header(view, source)
    if head[:2] == JPEG_SOI:
        return _jpeg_header(view, source)
    # Only the start of a signature: a PNG or JPEG cut within its first bytes.
    if len(head) < len(PNG_SIGNATURE) and PNG_SIGNATURE.startswith(head):
        raise ImageDecodeError("truncated_png", f"{source}: truncated PNG ({len(head)} bytes)")
    if head == JPEG_SOI[:1]:
        raise ImageDecodeError("truncated_jpeg", f"{source}: truncated JPEG (1 byte)")
    return _pillow_header(view, source)


def decode_image(data: Bytes, source: str = "image") -> np.ndarray:
    """HxWx3 uint8 RGB pixels of an encoded image (PNG, JPEG, BMP, TIFF, WebP); ImageDecodeError if unusable.

    ``source`` names the image in error messages (a file path, ``CompressedImage.data``).
    """
    header = read_image_header(data, source)
    view = _as_bytes_view(data)
    encoded = np.frombuffer(view, dtype=np.uint8, count=header.end)  # without trailing bytes
    try:
        bgr = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # e.g. OpenCV's own CV_IO_MAX_IMAGE_PIXELS, or a codec failure
        raise ImageDecodeError("undecodable", f"{source}: {header.format.upper()} cannot be decoded "
                                              f"({str(exc).strip().splitlines()[-1]})") from None
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ImageDecodeError("undecodable", f"{source}: corrupt {header.format.upper()} "
                                              f"({len(view)} bytes) cannot be decoded")
    # EXIF orientation may swap the sides; any other size means the header walk misread the file.
    if bgr.shape[:2] not in ((header.height, header.width), (header.width, header.height)):
        raise ImageDecodeError("undecodable", f"{source}: {header.format.upper()} decodes to "
                                              f"{bgr.shape[1]}x{bgr.shape[0]} but its header says "
                                              f"{header.width}x{header.height}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

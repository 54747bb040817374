"""Image file IO for the data package: reading RGB pixels, reading only the size, writing PNGs.

Pixels are decoded by ``image_decode.decode_image``, the decoder ROS ``CompressedImage`` frames go
through too, so a file and a frame with the same bytes give the same pixels or the same refusal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from orcnn_core.data.image_decode import (  # noqa: F401  (re-exported: the limits callers document)
    MAX_ENCODED_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    ImageDecodeError,
    decode_image,
)
from orcnn_core.errors import DatasetError

#: Image file suffixes (lower case) every image reader of the project accepts.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder) -> list:
    """Image files (``IMAGE_EXTENSIONS``, any case) in ``folder`` and its sub-folders, sorted by
    relative path: the one image lister of every command. A missing folder is a DatasetError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder not found: {folder}")
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def read_image_size(path: Path) -> tuple:
    """``(height, width)`` of an image file, reading only its header where Pillow can."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    try:
        from PIL import Image  # header-only read; Pillow comes with matplotlib

        with Image.open(path) as image:
            width, height = image.size
        return int(height), int(width)
    except ImportError:
        pass
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise DatasetError(f"cannot read image file {path}: {exc}") from exc
    return read_image_rgb(path).shape[:2]


class ImageFileError(ImageDecodeError, DatasetError):
    """An image file that cannot be used: ``cause`` as for frames, ``path`` the file.

    Also a DatasetError, so a loop over a dataset's files that skips DatasetError skips it.
    """

    def __init__(self, cause: str, message: Optional[str] = None, path: Optional[Path] = None) -> None:
        super().__init__(cause, message)
        self.path = path

    def __reduce__(self) -> tuple:
        return type(self), (self.cause, str(self), self.path)


def read_image_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of an image file; a missing, unreadable or bad file raises ImageFileError.

    The rules are ``decode_image``'s: size limits checked from the header before decoding, a cut-off
    PNG or JPEG refused, bytes after the end marker ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageFileError("not_found", f"image file not found: {path}", path)
    try:
        size = path.stat().st_size
        if size > MAX_ENCODED_BYTES:  # refused before reading it into memory
            raise ImageFileError("too_large", f"image file {path}: {size} bytes, more than "
                                              f"MAX_ENCODED_BYTES = {MAX_ENCODED_BYTES}", path)
        data = path.read_bytes()
    except OSError as exc:
        raise ImageFileError("unreadable", f"cannot read image file {path}: {exc.strerror or exc}",
                             path) from None
    try:
        return decode_image(data, f"image file {path}")
    except ImageDecodeError as exc:
        raise ImageFileError(exc.cause, str(exc), path) from None


def write_png_rgb(path: Path, image: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB image as PNG (deterministic bytes for the same pixels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DatasetError(f"cannot encode PNG for {path}")
    path.write_bytes(data.tobytes())

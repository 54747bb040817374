"""Image file IO for the data package: reading RGB pixels, reading only the size, writing PNGs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

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


def read_image_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB pixels of an image file; unreadable or corrupt files raise DatasetError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot decode image file {path} (corrupt or unsupported)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_png_rgb(path: Path, image: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB image as PNG (deterministic bytes for the same pixels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise DatasetError(f"cannot encode PNG for {path}")
    path.write_bytes(data.tobytes())

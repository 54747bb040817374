"""Image file IO for the data package: reading RGB pixels, reading only the size, writing PNGs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from orcnn_core.errors import DatasetError


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

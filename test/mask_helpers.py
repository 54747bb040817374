"""Mask encodings written independently of orcnn_core, for building test inputs."""

from __future__ import annotations

import numpy as np


def uncompressed_rle(mask: np.ndarray) -> dict:
    """Column-major run lengths starting with zeros, as COCO stores crowd masks."""
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for pixel in flat:
        if pixel == value:
            run += 1
        else:
            counts.append(run)
            value, run = pixel, 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def coco_rle(mask: np.ndarray) -> dict:
    """Compressed RLE with ``str`` counts, straight from pycocotools."""
    from pycocotools import mask as pycoco

    out = pycoco.encode(np.asfortranarray(mask.astype(np.uint8)))
    out["counts"] = out["counts"].decode("ascii")
    return out

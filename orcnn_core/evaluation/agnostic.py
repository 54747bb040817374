"""Class-agnostic evaluation: every category merged into one, in the ground truth and the results.

OSD-Amodal / UOAIS style ground truth has one category ("object"); a class-specific model (or any
model against such ground truth) is then evaluated on masks alone, without relabelling files.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from orcnn_core.structures import ImageRecord

AGNOSTIC_CATEGORY = {"id": 1, "name": "object"}


def merge_ground_truth(images: Sequence[ImageRecord]) -> list[ImageRecord]:
    """Copies of the records whose annotations all have ``category_id`` 1 (masks shared, not copied)."""
    merged = AGNOSTIC_CATEGORY["id"]
    return [dataclasses.replace(image, annotations=[dataclasses.replace(a, category_id=merged)
                                                    for a in image.annotations])
            for image in images]


def merge_results(entries: list) -> list:
    """Results entries with ``category_id`` 1 (whatever they held); non-objects are left for the
    results validation to report."""
    return [dict(e, category_id=AGNOSTIC_CATEGORY["id"]) if isinstance(e, dict) else e for e in entries]

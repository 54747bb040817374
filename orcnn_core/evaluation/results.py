"""Reading and validating the project's results JSON (a COCO results list with amodal fields).

An entry (``structures.prediction_to_results``) has ``image_id``, ``file_name``, ``category_id``,
``score``, ``segmentation`` (amodal, RLE or polygons), optional ``visible_mask`` and
``invisible_mask`` (RLE or polygons) and optional boxes, which the evaluation does not use. Every
mask and box is validated (``masks.segmentations_to_rles``, ``mask_checks.check_box``) before
pycocotools sees it: an invalid RLE is an error naming the entry, never scored.

Image matching rule: entries are matched to ground-truth images by ``image_id``. When some
``image_id`` of a file is not in the ground truth but every entry's ``file_name`` basename is, the
whole file is matched by basename instead (written to the notes).
"""

from __future__ import annotations

import math
import numbers
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.data.coco_fields import one_line
from orcnn_core.data.jsonfile import read_json_file
from orcnn_core.data.records import index_by_file_name
from orcnn_core.errors import InputError
from orcnn_core.mask_checks import check_box, short_repr
from orcnn_core.structures import ImageRecord

REQUIRED_KEYS = ("category_id", "score", "segmentation")
MASK_KEYS = ("segmentation", "visible_mask", "invisible_mask")
BOX_KEYS = ("bbox", "visible_bbox")


class ResultsError(InputError):
    """A results file or entry that cannot be evaluated; the message names the file and entry."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


@dataclass
class DetectionCell:
    """The predictions of one (image, category), highest score first (stable for ties)."""

    scores: np.ndarray          # (D,) float64, descending
    amodal: list                # D compressed RLEs
    visible: list               # D compressed RLEs (amodal where the entry had none)
    invisible: list             # D compressed RLEs, or None where the entry had none
    entry_index: np.ndarray     # (D,) index of each prediction in the results list


@dataclass
class ParsedResults:
    """Validated results of one file, grouped by (image_id, category_id), with the fallbacks taken."""

    source: str
    cells: dict = field(default_factory=dict)  # (image_id, category_id) -> DetectionCell
    num_entries: int = 0
    num_without_visible: int = 0
    num_without_invisible: int = 0
    notes: list = field(default_factory=list)

    @property
    def only_amodal(self) -> bool:
        """True when no entry carries a visible or invisible mask (AP_IV is then undefined)."""
        return self.num_entries > 0 and self.num_without_visible == self.num_entries \
            and self.num_without_invisible == self.num_entries


def load_results(path: Union[str, Path]) -> list[dict]:
    """Read a results JSON file: a list of entries (``[]`` is valid); malformed files raise."""
    path = Path(path)
    data = read_json_file(path, ResultsError, "results file")
    if not isinstance(data, list):
        raise ResultsError(f"{path}: a results file must hold a JSON list of entries, "
                           f"got {type(data).__name__}")
    return data


def _basename(name: Any) -> str:
    return posixpath.basename(str(name).replace("\\", "/"))


def _match_images(entries: list, images: Sequence[ImageRecord], source: str, notes: list) -> list:
    """The ground-truth image id of every entry, by ``image_id`` or else by ``file_name``."""
    known_ids = {image.image_id for image in images}

    def known(entry: dict) -> bool:
        image_id = entry.get("image_id")
        return not isinstance(image_id, bool) and isinstance(image_id, numbers.Integral) \
            and int(image_id) in known_ids

    first_unknown = next((i for i, e in enumerate(entries) if not known(e)), None)
    if first_unknown is None:
        return [int(e["image_id"]) for e in entries]
    _, by_name = index_by_file_name(images)
    matched = []
    for i, entry in enumerate(entries):
        name = _basename(entry.get("file_name", ""))
        image = by_name.get(name)
        if image is None:
            bad = entries[first_unknown]
            if name in by_name:  # ambiguous basename
                count = sum(_basename(im.file_name) == name for im in images)
                raise ResultsError(
                    f"{source}: entry {i}: file_name {short_repr(entry.get('file_name'))} matches "
                    f"{count} ground-truth images (ambiguous basename) and image_id "
                    f"{short_repr(entry.get('image_id'))} is not usable")
            raise ResultsError(
                f"{source}: entry {first_unknown}: image_id {short_repr(bad.get('image_id'))} is not in the "
                f"ground truth (nor does file_name {short_repr(bad.get('file_name'))} match one)")
        matched.append(image.image_id)
    notes.append(f"{source}: image_ids do not match the ground truth; matched {len(entries)} entries "
                 f"to images by file_name basename")
    return matched


def _finite_score(entry: dict, index: int, source: str, image_id: Any) -> float:
    score = entry["score"]
    if isinstance(score, bool) or not isinstance(score, numbers.Real) or not math.isfinite(score):
        raise ResultsError(f"{source}: entry {index} (image_id {image_id}): score must be a finite "
                           f"number, got {short_repr(score)}")
    return float(score)


def _where(source: str, index: int, image: ImageRecord) -> str:
    return f"{source}: entry {index} (image_id {image.image_id}, file_name {short_repr(image.file_name)})"


def _check_boxes(entry: dict, image: ImageRecord, index: int, source: str) -> None:
    """Optional boxes are not evaluated, but a present one must be a valid box."""
    for key in BOX_KEYS:
        if entry.get(key) is not None:
            try:
                check_box(entry[key], image.height, image.width)
            except mask_ops.MaskFormatError as exc:
                raise ResultsError(f"{_where(source, index, image)}: bad {key}: {exc}") from exc


def _convert_masks(entries: list, images: list, source: str) -> list:
    """Per entry ``{key: RLE or None}`` for MASK_KEYS, validated in one batch; the first bad mask raises."""
    segms, sizes, owners = [], [], []
    for i, (entry, image) in enumerate(zip(entries, images)):
        for key in MASK_KEYS:
            if entry.get(key) is not None:
                segms.append(entry[key])
                sizes.append((image.height, image.width))
                owners.append((i, key))
    masks: list = [dict.fromkeys(MASK_KEYS) for _ in entries]
    for (i, key), rle in zip(owners, mask_ops.segmentations_to_rles(segms, sizes)):
        masks[i][key] = rle
    for i, (found, image) in enumerate(zip(masks, images)):
        for key in MASK_KEYS:
            if isinstance(found[key], mask_ops.MaskFormatError):
                raise ResultsError(f"{_where(source, i, image)}: bad {key}: {found[key]}")
    return masks


def parse_results(entries: list, images: Sequence[ImageRecord], category_ids: Sequence[int],
                  source: str = "results") -> ParsedResults:
    """Validate results entries against the ground truth and group them by (image, category)."""
    if not isinstance(entries, list):
        raise ResultsError(f"{source}: results must be a list of entries, got {type(entries).__name__}")
    parsed = ParsedResults(source=source, num_entries=len(entries))
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ResultsError(f"{source}: entry {i} is a {type(entry).__name__}, not an object")
        missing = [k for k in REQUIRED_KEYS if k not in entry]
        if missing:
            raise ResultsError(f"{source}: entry {i} (image_id {short_repr(entry.get('image_id'))}) lacks "
                               f"{', '.join(repr(k) for k in missing)}")
    if not entries:
        parsed.notes.append(f"{source}: the results file holds no predictions; every AP and AR is 0")
        return parsed

    image_ids = _match_images(entries, images, source, parsed.notes)
    image_by_id = {image.image_id: image for image in images}
    entry_images = [image_by_id[image_id] for image_id in image_ids]
    known_categories = set(int(c) for c in category_ids)
    scores = []
    for i, (entry, image_id) in enumerate(zip(entries, image_ids)):
        category_id = entry["category_id"]
        if isinstance(category_id, bool) or not isinstance(category_id, numbers.Integral) \
                or int(category_id) not in known_categories:
            raise ResultsError(f"{source}: entry {i} (image_id {image_id}): category_id "
                               f"{short_repr(category_id)} is not a ground-truth category")
        scores.append(_finite_score(entry, i, source, image_id))
        if entry["segmentation"] is None:
            raise ResultsError(f"{source}: entry {i} (image_id {image_id}): segmentation is null")
        _check_boxes(entry, entry_images[i], i, source)
    masks = _convert_masks(entries, entry_images, source)
    grouped = defaultdict(list)  # key -> [(score, amodal, visible, invisible, index)]
    for i, (entry, image_id, found) in enumerate(zip(entries, image_ids, masks)):
        amodal, visible, invisible = (found[key] for key in MASK_KEYS)
        if visible is None:
            parsed.num_without_visible += 1
            visible = amodal  # paper, sec. 3.3: amodal masks also serve as visible predictions
        parsed.num_without_invisible += invisible is None
        grouped[image_id, int(entry["category_id"])].append((scores[i], amodal, visible, invisible, i))

    for key, items in grouped.items():
        order = np.argsort([-item[0] for item in items], kind="mergesort")  # as COCOeval sorts
        items = [items[j] for j in order]
        parsed.cells[key] = DetectionCell(
            scores=np.array([it[0] for it in items], dtype=np.float64),
            amodal=[it[1] for it in items], visible=[it[2] for it in items],
            invisible=[it[3] for it in items], entry_index=np.array([it[4] for it in items]))

    n = parsed.num_entries
    if parsed.num_without_visible:
        parsed.notes.append(
            f"{source}: {parsed.num_without_visible} of {n} entries have no visible_mask; their "
            f"amodal mask is used as the visible prediction (paper, sec. 3.3)")
    if parsed.only_amodal:
        parsed.notes.append(f"{source}: no entry has a visible_mask or invisible_mask; AP_IV@0.5 and its "
                            f"diff variant are undefined (null, the paper's '-')")
    elif parsed.num_without_invisible:
        parsed.notes.append(
            f"{source}: {parsed.num_without_invisible} of {n} entries have no invisible_mask; AP_IV@0.5 "
            f"uses amodal AND NOT visible for them (as AP_IV@0.5 diff does)")
    return parsed

"""Which ground-truth image a replayed frame (or a recorded result message) shows: ``--gt-key``."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any, Optional, Sequence

from orcnn_core.data.records import index_by_file_name
from orcnn_core.errors import InputError
from orcnn_ros.bag_from_images import image_map_path, read_image_map


def header_stamp_ns(header: Any) -> int:
    """A ``std_msgs/Header`` stamp in nanoseconds."""
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


class GroundTruthIndex:
    """Finds the ground-truth image of a frame by header stamp, topic index or file name (--gt-key).

    * ``index``: frame k of the topic (counting every message on it from 0) is the k-th image of the
      ground truth in ascending image_id order.
    * ``stamp``: the frame's header stamp equals ``stamp_ns`` of an image-map entry; that entry's
      ``file_name`` names the image (survives dropped frames and re-recording, which keeps headers).
    * ``file``: the image-map entry whose ``index`` is the frame's topic index names the image.

    A file name matches a ground-truth image whose ``file_name`` is the same path, or else the same
    base name when exactly one image has it.
    """

    def __init__(self, images: Sequence[Any], key: str, image_map: Optional[Sequence[Any]] = None,
                 source: str = "") -> None:
        self.key = key
        self.by_order = sorted(images, key=lambda r: r.image_id)
        by_path, self._by_base = index_by_file_name(images)  # an ambiguous base name maps to None
        self._by_path = {posixpath.normpath(path): r for path, r in by_path.items()}
        entries = list(image_map or [])
        if key in ("stamp", "file") and not entries:
            raise InputError(f"--gt-key {key} needs an image map ({source or 'none given'} is empty)")
        self._by_stamp = {e.stamp_ns: e.file_name for e in entries}
        self._by_index = {e.index: e.file_name for e in entries}
        self.seen: dict = {}   # image_id -> file_name of the images handed out by ``claim``
        self.unmatched = 0     # frames ``claim`` found no ground-truth image for

    def _by_file(self, name: Optional[str]) -> Optional[Any]:
        if name is None:
            return None
        name = posixpath.normpath(name.replace("\\", "/"))
        if name in self._by_path:
            return self._by_path[name]
        return self._by_base.get(posixpath.basename(name))  # None when missing or ambiguous

    def match(self, index: int, stamp_ns: Optional[int]) -> Optional[Any]:
        """Ground-truth ImageRecord of the frame at topic ``index``, header ``stamp_ns``; or None."""
        if self.key == "index":
            return self.by_order[index] if 0 <= index < len(self.by_order) else None
        if self.key == "stamp":
            return self._by_file(self._by_stamp.get(stamp_ns))
        return self._by_file(self._by_index.get(index))

    def claim(self, index: int, stamp_ns: Optional[int]) -> Optional[Any]:
        """Like ``match``, but each image only once (a repeat gives None); counts frames without a match."""
        record = self.match(index, stamp_ns)
        if record is None:
            self.unmatched += 1
            return None
        if record.image_id in self.seen:
            return None
        self.seen[record.image_id] = record.file_name
        return record



def load_ground_truth(gt: Path, gt_key: str, image_map: Optional[Path],
                      bag: Path) -> tuple[Any, GroundTruthIndex]:
    """The annotations and their index; the image map defaults to the one of ``bag``."""
    from orcnn_core.data import load_annotations

    dataset = load_annotations(gt)
    entries, source = None, ""
    if gt_key in ("stamp", "file"):
        map_path = image_map or image_map_path(bag)
        entries, source = read_image_map(map_path), str(map_path)
    return dataset, GroundTruthIndex(dataset.images, gt_key, entries, source)

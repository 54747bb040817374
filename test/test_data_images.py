"""Shared image-file helpers: the extension list, folder listing and file-name indexes."""

from __future__ import annotations

import pytest

from orcnn_core.data.images import IMAGE_EXTENSIONS, list_images
from orcnn_core.data.records import index_by_file_name
from orcnn_core.errors import DatasetError
from orcnn_core.structures import ImageRecord


def test_image_extensions_cover_every_reader():
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def test_list_images_walks_sub_folders_sorted_by_relative_path(tmp_path):
    for name in ("b.PNG", "a.jpg", "notes.txt", "sub/c.webp", "sub/a.tif", "z.bmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.png").mkdir()
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == [
        "a.jpg", "b.PNG", "sub/a.tif", "sub/c.webp", "z.bmp"]
    with pytest.raises(DatasetError, match="missing_folder"):
        list_images(tmp_path / "missing_folder")


def test_index_by_file_name_marks_ambiguous_basenames():
    records = [ImageRecord(image_id=i, file_name=name, height=1, width=1)
               for i, name in enumerate(["a/x.png", "b\\x.png", "y.png"])]
    by_path, by_base = index_by_file_name(records)
    assert {k: r.image_id for k, r in by_path.items()} == {"a/x.png": 0, "b/x.png": 1, "y.png": 2}
    assert by_base["x.png"] is None and by_base["y.png"].image_id == 2

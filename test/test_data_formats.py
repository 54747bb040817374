"""Readers of every supported amodal format, on small files written here in each layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mask_helpers import coco_rle as rle
from mask_helpers import uncompressed_rle
from pycocotools import mask as pycoco

from orcnn_core.data import load_annotations, write_annotations
from orcnn_core.errors import DatasetError

H, W = 20, 24
REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"


def rect(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m






def poly_mask(poly):
    return pycoco.decode(pycoco.merge(pycoco.frPyObjects([poly], H, W))).astype(bool)


# Scene: object A (id 11) lies on top of object B (id 12), C (id 13) is alone.
A = rect(2, 10, 2, 12)
B_AMODAL = rect(5, 15, 8, 20)
B_VISIBLE = B_AMODAL & ~A
C = rect(14, 19, 1, 6)
POLY_B = [8, 5, 20, 5, 20, 15, 8, 15]  # a rectangle polygon; its raster is taken from pycocotools


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def coco_file(annotations, categories=None):
    return {
        "images": [{"id": 7, "file_name": "a.png", "height": H, "width": W}],
        "annotations": annotations,
        "categories": categories or [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
    }


def masks_by_id(annotations):
    record = annotations.images[0]
    return {a.id: a for a in record.annotations}


def check_instance(ann, amodal, visible):
    assert np.array_equal(ann.amodal_mask(), amodal)
    assert np.array_equal(ann.visible_mask(), visible)
    assert np.array_equal(ann.invisible_mask(), amodal & ~visible)
    assert ann.occlusion_rate == pytest.approx((amodal & ~visible).sum() / amodal.sum())
    ys, xs = np.nonzero(amodal)
    assert ann.amodal_box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    ys, xs = np.nonzero(visible)
    assert ann.visible_box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_cocoa_flat_and_d2sa(tmp_path):
    anns = [
        {"id": 11, "image_id": 7, "category_id": 1, "segmentation": rle(A)},  # unoccluded: no visible_mask
        {
            "id": 12,
            "image_id": 7,
            "category_id": 2,
            "segmentation": rle(B_AMODAL),
            "visible_mask": rle(B_VISIBLE),
            "invisible_mask": rle(B_AMODAL & ~B_VISIBLE),
            "occlude_rate": 0.2,
        },
        {"id": 13, "image_id": 7, "category_id": 1, "segmentation": rle(C), "visible_mask": rle(C)},
    ]
    path = write_json(tmp_path / "cocoa.json", coco_file(anns))
    loaded = load_annotations(path)
    assert loaded.format == "cocoa"
    assert loaded.categories == [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]
    got = masks_by_id(loaded)
    check_instance(got[11], A, A)
    check_instance(got[12], B_AMODAL, B_VISIBLE)
    check_instance(got[13], C, C)
    assert got[12].category_id == 2
    assert load_annotations(path, format="d2sa").format == "d2sa"


def test_d2sa_invisible_only_gives_visible_by_difference(tmp_path):
    anns = [
        {
            "id": 12,
            "image_id": 7,
            "category_id": 1,
            "segmentation": rle(B_AMODAL),
            "invisible_mask": rle(B_AMODAL & A),
        }
    ]
    got = masks_by_id(load_annotations(write_json(tmp_path / "d2sa.json", coco_file(anns)), format="d2sa"))
    check_instance(got[12], B_AMODAL, B_VISIBLE)


def test_kins_original_polygons_and_rle(tmp_path):
    anns = [
        {
            "id": 12,
            "image_id": 7,
            "category_id": 1,
            "segmentation": [POLY_B],
            "bbox": [8, 5, 12, 10],
            "inmodal_seg": rle(poly_mask(POLY_B) & ~A),
            "inmodal_bbox": [8, 5, 12, 10],
            "ico_id": 2,
            "oco_id": 3,
        },
        {"id": 11, "image_id": 7, "category_id": 2, "segmentation": rle(A), "inmodal_seg": rle(A)},
    ]
    loaded = load_annotations(write_json(tmp_path / "kins.json", coco_file(anns)))
    assert loaded.format == "kins"
    got = masks_by_id(loaded)
    amodal = poly_mask(POLY_B)
    check_instance(got[12], amodal, amodal & ~A)
    check_instance(got[11], A, A)
    assert got[12].extra["oco_id"] == 3


def test_kins2020(tmp_path):
    visible_poly = [8, 10, 20, 10, 20, 15, 8, 15]
    anns = [
        {
            "id": 12,
            "image_id": 7,
            "category_id": 1,
            "a_segm": [POLY_B],
            "a_bbox": [8, 5, 12, 10],
            "i_segm": [visible_poly],
            "i_bbox": [8, 10, 12, 5],
            "a_area": 120,
            "i_area": 60,
            "oco_id": 1,
            "ico_id": 1,
        }
    ]
    loaded = load_annotations(write_json(tmp_path / "update_train_2020.json", coco_file(anns)))
    assert loaded.format == "kins2020"
    check_instance(masks_by_id(loaded)[12], poly_mask(POLY_B), poly_mask(visible_poly))


def test_uoais_coco_and_detectron2_list(tmp_path):
    anns = [
        {
            "id": 12,
            "image_id": 7,
            "category_id": 1,
            "segmentation": uncompressed_rle(B_AMODAL),
            "visible_mask": rle(B_VISIBLE),
            "occluded_mask": rle(B_AMODAL & A),
            "occluded_rate": 0.2,
            "bbox": [8, 5, 12, 10],
            "visible_bbox": [8, 10, 12, 5],
        },
        {
            "id": 11,
            "image_id": 7,
            "category_id": 1,
            "segmentation": rle(A),
            "visible_mask": rle(A),
            "occluded_mask": rle(np.zeros((H, W), bool)),
        },
    ]
    loaded = load_annotations(write_json(tmp_path / "uoais.json", coco_file(anns)))
    assert loaded.format == "uoais"
    got = masks_by_id(loaded)
    check_instance(got[12], B_AMODAL, B_VISIBLE)
    check_instance(got[11], A, A)

    d2_list = [
        {
            "file_name": "a.png",
            "height": H,
            "width": W,
            "image_id": 3,
            "annotations": [{k: v for k, v in a.items() if k not in ("id", "image_id")} for a in anns],
        }
    ]
    loaded = load_annotations(write_json(tmp_path / "uoais_d2.json", d2_list))
    assert loaded.format == "uoais"
    record = loaded.images[0]
    assert (record.image_id, record.height, record.width) == (3, H, W)
    check_instance(record.annotations[0], B_AMODAL, B_VISIBLE)
    check_instance(record.annotations[1], A, A)


def test_project_format_round_trip(tmp_path):
    anns = [
        {
            "id": 12,
            "image_id": 7,
            "category_id": 2,
            "segmentation": rle(B_AMODAL),
            "visible_mask": rle(B_VISIBLE),
        },
        {"id": 11, "image_id": 7, "category_id": 1, "segmentation": rle(A)},
    ]
    first = load_annotations(write_json(tmp_path / "cocoa.json", coco_file(anns)))
    out = write_annotations(first, None, tmp_path / "out" / "orcnn.json")
    again = load_annotations(out)
    assert again.format == "orcnn"
    assert again.image_root == tmp_path.resolve()  # relative image root stored and resolved
    got = masks_by_id(again)
    check_instance(got[12], B_AMODAL, B_VISIBLE)
    check_instance(got[11], A, A)
    data = json.loads(out.read_text())
    entry = next(a for a in data["annotations"] if a["id"] == 12)
    assert entry["bbox"] == [8, 5, 12, 10]
    assert entry["area"] == int(B_AMODAL.sum())
    assert pycoco.area(
        dict(entry["invisible_mask"], counts=entry["invisible_mask"]["counts"].encode())
    ) == int((B_AMODAL & A).sum())


def test_rle_round_trip():
    from orcnn_core import masks as mask_ops

    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((H, W)) < 0.3
        assert np.array_equal(mask_ops.decode(mask_ops.encode(mask)), mask)
        assert np.array_equal(mask_ops.decode(uncompressed_rle(mask)), mask)


def cocoa_raw_record(image_id=5, with_stuff=True):
    occluded = {
        "segmentation": POLY_B,
        "name": "cup",
        "area": 120,
        "isStuff": 0,
        "order": 2,
        "occlude_rate": 0.2,
        "visible_mask": rle(poly_mask(POLY_B) & ~A),
        "invisible_mask": rle(poly_mask(POLY_B) & A),
    }
    top = {
        "segmentation": [2, 2, 12, 2, 12, 10, 2, 10],
        "name": "box ",
        "area": 80,
        "isStuff": 0,
        "order": 1,
        "occlude_rate": 0,
    }
    stuff = {
        "segmentation": [0, 15, 10, 15, 10, 20, 0, 20],
        "name": "table",
        "area": 50,
        "isStuff": 1,
        "order": 3,
        "occlude_rate": 0,
    }
    regions = [top, occluded] + ([stuff] if with_stuff else [])
    return {
        "author": "x",
        "url": f"http://x/COCO_val2014_{image_id:012d}.jpg",
        "image_id": image_id,
        "id": 1,
        "size": len(regions),
        "regions": regions,
        "height": H,
        "width": W,
    }


def test_cocoa_raw_single_list_and_folder(tmp_path):
    single = load_annotations(write_json(tmp_path / "one.json", cocoa_raw_record()))
    assert single.format == "cocoa_raw"
    assert single.categories == [{"id": 1, "name": "object"}]
    record = single.images[0]
    assert record.file_name == "COCO_val2014_000000000005.jpg"
    top, occluded, stuff = record.annotations
    check_instance(top, poly_mask([2, 2, 12, 2, 12, 10, 2, 10]), poly_mask([2, 2, 12, 2, 12, 10, 2, 10]))
    check_instance(occluded, poly_mask(POLY_B), poly_mask(POLY_B) & ~A)
    assert occluded.extra["name"] == "cup" and top.extra["name"] == "box"
    assert stuff.extra["isStuff"] == 1
    assert len(load_annotations(tmp_path / "one.json", no_stuff=True).images[0].annotations) == 2

    many = load_annotations(write_json(tmp_path / "many.json", [cocoa_raw_record(5), cocoa_raw_record(6)]))
    assert [r.image_id for r in many.images] == [5, 6]
    ids = [a.id for r in many.images for a in r.annotations]
    assert len(set(ids)) == 6

    folder = tmp_path / "records"
    folder.mkdir()
    write_json(folder / "2.json", cocoa_raw_record(9))
    write_json(folder / "10.json", cocoa_raw_record(4))
    loaded = load_annotations(folder)
    assert [r.image_id for r in loaded.images] == [9, 4]  # numeric file order


def test_real_cocoa_raw_fixture():
    folder = REAL / "cocoa_raw_demo"
    raw = [json.loads((folder / f"{i}.json").read_text()) for i in range(1, 6)]
    loaded = load_annotations(folder)
    assert loaded.format == "cocoa_raw"
    assert len(loaded.images) == 5
    anns = [a for r in loaded.images for a in r.annotations]
    assert len(anns) == 48
    assert sum(a.is_occluded for a in anns) == 24
    for record, source in zip(loaded.images, raw):
        assert record.image_id == source["image_id"]
        assert (loaded.image_root / record.file_name).is_file()
        for ann, region in zip(record.annotations, source["regions"]):
            amodal, visible = ann.amodal_mask(), ann.visible_mask()
            assert amodal.shape == (record.height, record.width)
            assert not (visible & ~amodal).any()
            assert ann.occlusion_rate == pytest.approx(region["occlude_rate"], abs=1e-6)
            assert ann.amodal_area == region["area"]
    stuff = sum(r["isStuff"] for s in raw for r in s["regions"])
    assert stuff > 0
    assert load_annotations(folder, no_stuff=True).num_instances == 48 - stuff


# ---- bad input -------------------------------------------------------------------------------------------


def bad(tmp_path, data, name="bad.json"):
    return write_json(tmp_path / name, data)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_annotations(tmp_path / "nope.json")
    path = bad(tmp_path, coco_file([]))
    with pytest.raises(DatasetError, match="unknown annotation format 'lvis'"):
        load_annotations(path, format="lvis")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match="broken.json"):
        load_annotations(tmp_path / "broken.json")
    with pytest.raises(DatasetError, match="without amodal fields"):
        load_annotations(
            bad(
                tmp_path,
                coco_file([{"id": 1, "image_id": 7, "category_id": 1, "segmentation": rle(A)}]),
                "modal.json",
            )
        )


def test_short_polygon(tmp_path):
    anns = [
        {"id": 4, "image_id": 7, "category_id": 1, "segmentation": [[1, 1, 5, 5]], "visible_mask": rle(A)}
    ]
    with pytest.raises(DatasetError, match=r"bad\.json.*image 7.*annotation 4.*at least 3"):
        load_annotations(bad(tmp_path, coco_file(anns)))


def test_rle_size_mismatch(tmp_path):
    wrong = rle(np.zeros((H + 1, W), bool))
    anns = [{"id": 4, "image_id": 7, "category_id": 1, "segmentation": rle(A), "visible_mask": wrong}]
    with pytest.raises(DatasetError, match=r"image 7.*annotation 4.*disagrees with image size"):
        load_annotations(bad(tmp_path, coco_file(anns)))


def test_visible_outside_amodal_and_repair(tmp_path):
    visible = A | rect(0, 1, 0, 3)  # 3 pixels outside
    anns = [{"id": 4, "image_id": 7, "category_id": 1, "segmentation": rle(A), "visible_mask": rle(visible)}]
    path = bad(tmp_path, coco_file(anns))
    with pytest.raises(DatasetError, match=r"image 7, annotation 4: 3 visible pixels lie outside"):
        load_annotations(path)
    repaired = masks_by_id(load_annotations(path, repair=True))[4]
    check_instance(repaired, A | visible, visible)


def test_duplicate_ids_and_unknown_category(tmp_path):
    ann = {"id": 4, "image_id": 7, "category_id": 1, "segmentation": rle(A), "visible_mask": rle(A)}
    with pytest.raises(DatasetError, match=r"image 7, annotation 4: duplicate annotation id"):
        load_annotations(bad(tmp_path, coco_file([ann, dict(ann)])))
    data = coco_file([ann])
    data["images"].append(dict(data["images"][0]))
    with pytest.raises(DatasetError, match=r"image 7: duplicate image id"):
        load_annotations(bad(tmp_path, data, "dup_image.json"))
    with pytest.raises(DatasetError, match=r"image 7, annotation 4: unknown category id 9"):
        load_annotations(bad(tmp_path, coco_file([dict(ann, category_id=9)]), "cat.json"))
    with pytest.raises(DatasetError, match=r"annotation 4: annotation refers to an image id"):
        load_annotations(bad(tmp_path, coco_file([dict(ann, image_id=8)]), "img.json"))
    with pytest.raises(DatasetError, match="duplicate image id"):
        load_annotations(bad(tmp_path, [cocoa_raw_record(5), cocoa_raw_record(5)], "raw_dup.json"))


def test_detectron2_list_without_category_id(tmp_path):
    d2_list = [{"file_name": "a.png", "height": H, "width": W,
                "annotations": [{"segmentation": rle(B_AMODAL), "visible_mask": rle(B_VISIBLE)},
                                {"segmentation": rle(C), "category_id": 2}]}]
    loaded = load_annotations(write_json(tmp_path / "d2_nocat.json", d2_list), "uoais")
    assert [a.category_id for a in loaded.images[0].annotations] == [1, 2]
    assert loaded.category_names() == {1: "class_1", 2: "class_2"}
    check_instance(loaded.images[0].annotations[0], B_AMODAL, B_VISIBLE)


def test_non_numeric_category_id_names_its_location(tmp_path):
    ann = {"id": 4, "image_id": 7, "category_id": "car", "segmentation": rle(A)}
    with pytest.raises(DatasetError, match=r"bad\.json, image 7, annotation 4: category id 'car' is not"):
        load_annotations(bad(tmp_path, coco_file([ann])), "uoais")
    d2_list = [{"file_name": "a.png", "height": H, "width": W, "image_id": 3,
                "annotations": [{"id": 5, "segmentation": rle(A), "category_id": "car"}]}]
    with pytest.raises(DatasetError, match=r"d2\.json, image 3, annotation 5: category id 'car'"):
        load_annotations(write_json(tmp_path / "d2.json", d2_list), "uoais")
    data = coco_file([dict(ann, category_id=1)], categories=[{"id": "x", "name": "thing"}])
    with pytest.raises(DatasetError, match=r"cat\.json: category id 'x' is not an integer"):
        load_annotations(bad(tmp_path, data, "cat.json"), "uoais")

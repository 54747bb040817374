"""Image message <-> numpy for every encoding, and AmodalInstanceArray messages <-> Prediction."""

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from orcnn_core.analysis import AnalysisConfig
from orcnn_core.analysis import analyze as analyze_frame
from orcnn_core.errors import InputError
from orcnn_core.layering import LayeringConfig
from orcnn_core.structures import Prediction
from orcnn_ros import messages
from orcnn_ros.conversions import (
    ImageInputError,
    MessageFactories,
    build_instance_array,
    compressed_msg_to_numpy,
    image_msg_to_numpy,
    instance_array_to_prediction,
    mask_image_fields,
    paste_mask,
)


def analyze(prediction):
    """The frame analysis without the layering: these tests are about the messages, not the layering."""
    return analyze_frame(prediction, AnalysisConfig(layering=LayeringConfig(enabled=False)))

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)  # just over MIN_IMAGE_SIDE = 8


def raw_msg(pixels, encoding, pad=0, data_type="bytes"):
    """An Image-like object: rows of ``pixels`` (H, W, C) followed by ``pad`` junk bytes."""
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    padded = np.concatenate([rows, np.full((h, pad), 77, np.uint8)], axis=1)
    flat = padded.reshape(-1)
    data = {"bytes": flat.tobytes(), "array": array.array("B", flat.tobytes()), "numpy": flat,
            "list": flat.tolist()}[data_type]
    return SimpleNamespace(height=h, width=w, encoding=encoding, is_bigendian=0, step=rows.shape[1] + pad,
                           data=data)


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", RGB),
    ("bgr8", RGB[:, :, ::-1]),
    ("rgba8", np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])),
    ("bgra8", np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
])
def test_colour_encodings_with_row_padding(encoding, pixels, pad):
    out = image_msg_to_numpy(raw_msg(np.ascontiguousarray(pixels), encoding, pad))
    assert out.dtype == np.uint8 and out.shape == RGB.shape
    assert np.array_equal(out, RGB)


@pytest.mark.parametrize("data_type", ["bytes", "array", "numpy", "list"])
def test_mono8_and_every_data_container(data_type):
    gray = RGB[:, :, 0]
    out = image_msg_to_numpy(raw_msg(gray[:, :, None], "mono8", pad=1, data_type=data_type))
    assert np.array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


@pytest.mark.parametrize("msg, cause, words", [
    (SimpleNamespace(height=4, width=4, encoding="16UC1", step=8, data=bytes(32)), "unsupported_encoding",
     "16UC1"),
    (SimpleNamespace(height=0, width=640, encoding="rgb8", step=1920, data=b""), "zero_size", "zero-size"),
    (SimpleNamespace(height=8, width=10, encoding="rgb8", step=20, data=bytes(160)), "step_too_small",
     "step"),
    (SimpleNamespace(height=480, width=640, encoding="rgb8", step=1920, data=bytes(30)), "size_mismatch",
     "30 bytes"),
])
def test_raw_image_errors_name_the_field(msg, cause, words):
    with pytest.raises(ImageInputError, match=words) as info:
        image_msg_to_numpy(msg)
    assert info.value.cause == cause
    assert isinstance(info.value, InputError)


def test_compressed_png_is_exact_and_jpeg_close():
    bgr = np.ascontiguousarray(RGB[:, :, ::-1])
    png = cv2.imencode(".png", bgr)[1].tobytes()
    assert np.array_equal(compressed_msg_to_numpy(SimpleNamespace(format="png", data=png)), RGB)
    smooth = np.dstack([np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))] * 3)
    jpeg = cv2.imencode(".jpg", smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    out = compressed_msg_to_numpy(SimpleNamespace(format="jpeg", data=array.array("B", jpeg)))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 3


@pytest.mark.parametrize("make, cause", [
    (lambda jpg, png: jpg[:len(jpg) // 2], "truncated_jpeg"),
    (lambda jpg, png: jpg[:10], "truncated_jpeg"),
    (lambda jpg, png: png[:len(png) - 20], "truncated_png"),
    (lambda jpg, png: b"not an image at all", "undecodable"),
    (lambda jpg, png: b"", "zero_size"),
])
def test_compressed_errors(make, cause):
    img = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    png = cv2.imencode(".png", img)[1].tobytes()
    with pytest.raises(ImageInputError, match="CompressedImage") as info:
        compressed_msg_to_numpy(SimpleNamespace(format="jpeg", data=make(jpg, png)))
    assert info.value.cause == cause


H, W = 48, 64


def make_prediction():
    """Three objects: 1 in front of 0, 2 alone and touching the right border."""
    amodal = np.zeros((3, H, W), bool)
    amodal[0, 10:30, 5:30] = True
    amodal[1, 20:40, 20:45] = True
    amodal[2, 5:15, 50:64] = True
    visible = amodal.copy()
    visible[0] &= ~amodal[1]
    boxes = np.array([[5, 10, 30, 30], [20, 20, 45, 40], [50, 5, 64, 15]], np.float32)
    return Prediction(boxes, boxes.copy(), np.array([1, 2, 1]), np.array([11, 22, 11]), ["box", "can", "box"],
                      np.array([0.9, 0.6, 0.75], np.float32), amodal, visible, amodal & ~visible, (H, W))


def test_built_array_fields_match_prediction_and_masks_paste_back():
    pred = make_prediction()
    header = messages.make_header(5, 6, "cam")
    msg = build_instance_array(analyze(pred), header, messages.rosbags_factories())
    assert msg.header is header
    assert (msg.image_width, msg.image_height) == (W, H)
    assert len(msg.instances) == 3
    for i, inst in enumerate(msg.instances):
        assert inst.id == i
        assert inst.class_id == pred.category_ids[i] and inst.class_name == pred.class_names[i]
        assert inst.score == pytest.approx(pred.scores[i])
        ys, xs = np.nonzero(pred.amodal_masks[i])
        roi = inst.amodal_roi
        assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (
            xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        for name, full in (("amodal", pred.amodal_masks[i]), ("visible", pred.visible_masks[i]),
                           ("invisible", pred.invisible_masks[i])):
            image = getattr(inst, f"{name}_mask")
            assert image.encoding == "mono8" and (image.height, image.width) == (roi.height, roi.width)
            assert set(np.unique(image.data)) <= {0, 255}
            assert np.array_equal(paste_mask(image, roi, H, W), full), name
        assert inst.amodal_area == np.count_nonzero(pred.amodal_masks[i])
        assert inst.visible_area == np.count_nonzero(pred.visible_masks[i])
        hidden = np.count_nonzero(pred.amodal_masks[i] & ~pred.visible_masks[i])
        assert inst.occlusion_rate == pytest.approx(hidden / inst.amodal_area)
    assert list(msg.instances[0].occluder_ids) == [1]
    assert msg.instances[0].occluder_overlap[0] == pytest.approx(1.0)
    assert [bool(i.truncated) for i in msg.instances] == [False, False, True]
    assert list(msg.pick_order) == [2, 1, 0]


def test_visible_roi_is_the_visible_masks_box():
    pred = make_prediction()
    msg = build_instance_array(analyze(pred), messages.make_header(), messages.rosbags_factories())
    ys, xs = np.nonzero(pred.visible_masks[0])
    roi = msg.instances[0].visible_roi
    assert (roi.x_offset, roi.y_offset, roi.x_offset + roi.width, roi.y_offset + roi.height) == (
        xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_rclpy_style_factories_use_typed_arrays():
    built = []

    class Record(SimpleNamespace):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            built.append(self)

    factories = MessageFactories.for_rclpy(Record, Record, Record, Record, point=Record, vector3=Record,
                                           polygon=Record, point32=Record)
    pred = make_prediction()
    msg = build_instance_array(analyze(pred), SimpleNamespace(frame_id="x"), factories)
    assert isinstance(msg.pick_order, array.array) and msg.pick_order.typecode == "I"
    inst = msg.instances[0]
    assert inst.occluder_ids.typecode == "I" and inst.occluder_overlap.typecode == "f"
    assert inst.amodal_mask.data.typecode == "B"
    crop = pred.amodal_masks[0][10:30, 5:30]
    assert bytes(inst.amodal_mask.data) == (crop.astype(np.uint8) * 255).tobytes()


def test_empty_prediction_builds_an_empty_array():
    msg = build_instance_array(analyze(Prediction.empty(H, W)), messages.make_header(),
                               messages.rosbags_factories())
    assert list(msg.instances) == [] and list(msg.pick_order) == []
    assert (msg.image_width, msg.image_height) == (W, H)


def test_mask_fields_are_mono8_0_255():
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    fields = mask_image_fields(mask)
    assert fields["encoding"] == "mono8" and fields["step"] == 4
    assert fields["data"].tolist() == [0] * 6 + [255] + [0] * 5


# -- message -> Prediction (the reader's side, for offline evaluation of results bags) -------------

def assert_same_prediction(back, pred):
    assert len(back) == len(pred) and back.image_size == (H, W)
    for name in ("amodal_masks", "visible_masks", "invisible_masks"):
        got = getattr(back, name)
        assert got.dtype == bool and got.shape == (len(pred), H, W), name
        assert np.array_equal(got, getattr(pred, name)), name
    assert np.array_equal(back.amodal_boxes, pred.amodal_boxes)
    assert np.array_equal(back.visible_boxes, pred.visible_boxes)
    assert back.scores.dtype == np.float32 and np.array_equal(back.scores, pred.scores)
    assert back.category_ids.tolist() == pred.category_ids.tolist()
    assert back.labels.tolist() == pred.category_ids.tolist()  # the message carries class ids only
    assert back.class_names == pred.class_names


def test_instance_array_converts_back_to_the_prediction():
    pred = make_prediction()  # visible within amodal, boxes = tight mask boxes: the round trip is exact
    assert not (pred.visible_masks & ~pred.amodal_masks).any()
    msg = build_instance_array(analyze(pred), messages.make_header(3, 4, "cam"),
                               messages.rosbags_factories())
    assert_same_prediction(instance_array_to_prediction(msg), pred)
    # ... also after CDR serialization, as read from a bag
    data = messages.serialize(msg, messages.INSTANCE_ARRAY_TYPE)
    assert_same_prediction(instance_array_to_prediction(
        messages.deserialize(data, messages.INSTANCE_ARRAY_TYPE)), pred)


def test_instance_array_from_rclpy_style_messages_converts_back():
    class Record(SimpleNamespace):
        pass

    pred = make_prediction()
    factories = MessageFactories.for_rclpy(Record, Record, Record, Record, point=Record, vector3=Record,
                                           polygon=Record, point32=Record)
    msg = build_instance_array(analyze(pred), SimpleNamespace(frame_id="x"), factories)
    assert_same_prediction(instance_array_to_prediction(msg), pred)


def test_visible_pixels_outside_the_amodal_roi_are_lost():
    """Masks travel cropped to the amodal mask's box: a visible pixel outside it does not come back."""
    pred = make_prediction()
    pred.visible_masks[2, 40, 10] = True  # far from object 2's amodal box (rows 5:15, cols 50:64)
    pred.visible_masks[2, 6, 49] = True   # just left of it
    msg = build_instance_array(analyze(pred), messages.make_header(), messages.rosbags_factories())
    back = instance_array_to_prediction(msg)
    expected = pred.visible_masks[2].copy()
    expected[40, 10] = expected[6, 49] = False
    assert np.array_equal(back.visible_masks[2], expected)
    assert np.array_equal(back.amodal_masks, pred.amodal_masks)
    assert np.array_equal(back.visible_masks[:2], pred.visible_masks[:2])
    # the visible box still covers them: it is the message's visible_roi, not the pasted mask's box
    assert back.visible_boxes[2].tolist() == [10.0, 5.0, 64.0, 41.0]


def test_empty_instance_array_converts_to_an_empty_prediction():
    msg = build_instance_array(analyze(Prediction.empty(H, W)), messages.make_header(),
                               messages.rosbags_factories())
    back = instance_array_to_prediction(msg)
    assert len(back) == 0 and back.image_size == (H, W)
    assert back.amodal_masks.shape == (0, H, W) and back.amodal_boxes.shape == (0, 4)


def test_a_roi_outside_the_image_is_an_input_error():
    msg = build_instance_array(analyze(make_prediction()), messages.make_header(),
                               messages.rosbags_factories())
    msg.image_width = 60  # object 2 reaches column 63
    with pytest.raises(InputError, match="outside the 60x48 image"):
        instance_array_to_prediction(msg)

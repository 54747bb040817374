"""Overlays: visible solid, invisible lighter, untouched background, readable labels, clear errors."""

import numpy as np
import pytest

from orcnn_core import occlusion
from orcnn_core.analysis import analyze
from orcnn_core.errors import InputError
from orcnn_core.occlusion import compute_occlusion_graph
from orcnn_core.structures import Prediction
from orcnn_core.viz import (
    READABLE_LONG_SIDE,
    class_color,
    draw_overlay,
    instance_colors,
    label_lines,
    layout_labels,
)

H, W = 240, 320


def scene():
    back = np.zeros((H, W), bool)
    back[120:220, 40:200] = True
    front = np.zeros((H, W), bool)
    front[100:230, 150:280] = True
    amodal = np.stack([back, front])
    visible = amodal.copy()
    visible[0] &= ~front
    boxes = np.array([[40, 120, 200, 220], [150, 100, 280, 230]], np.float32)
    return Prediction(boxes, boxes.copy(), np.array([1, 2]), np.array([1, 2]), ["box", "can"],
                      np.array([0.9, 0.8], np.float32), amodal, visible, amodal & ~visible, (H, W))


def interior(mask, margin=6):
    """Pixels at least ``margin`` away from the mask border (no contours drawn there)."""
    out = mask.copy()
    for axis in (0, 1):
        for shift in (margin, -margin):
            out &= np.roll(mask, shift, axis=axis)
    return out


def test_overlay_shape_colours_and_untouched_background():
    image = np.full((H, W, 3), 100, np.uint8)
    pred = scene()
    out = draw_overlay(image, analyze(pred), arrows=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 100).all(), "input image must not be modified"
    change = np.abs(out.astype(int) - image.astype(int)).sum(axis=2)
    visible_in = interior(pred.visible_masks[0])
    invisible_in = interior(pred.invisible_masks[0])
    # Background far from all objects and labels is untouched; both parts of the object are painted.
    assert (change[5:60, 290:315] == 0).all()
    assert (change[visible_in] > 0).all() and (change[invisible_in] > 0).all()
    # The visible region takes the class colour.
    colour = np.asarray(class_color(1), float)
    dist_visible = np.median(np.linalg.norm(out[visible_in].astype(float) - colour, axis=1))
    assert dist_visible < 0.6 * np.linalg.norm(np.full(3, 100.0) - colour)
    # The hidden part is drawn over its occluder: lighter than the occluder's own solid paint,
    # with hatch lines in the hidden object's class colour.
    front_only = interior(pred.visible_masks[1] & ~pred.amodal_masks[0])
    front_dist = np.linalg.norm(out[front_only].astype(float) - colour, axis=1)
    hidden_dist = np.linalg.norm(out[invisible_in].astype(float) - colour, axis=1)
    assert hidden_dist.min() < front_dist.min()
    assert np.median(out[invisible_in].sum(axis=1)) > np.median(out[front_only].sum(axis=1))


def test_invisible_region_is_hatched():
    image = np.full((H, W, 3), 100, np.uint8)
    pred = scene()
    out = draw_overlay(image, pred, arrows=False)
    inv = interior(pred.invisible_masks[0])
    values = out[inv].astype(int).sum(axis=1)
    assert len(np.unique(values)) >= 2, "hatching gives two tones inside the hidden part"


def test_arrows_draw_from_occluder_to_occluded():
    image = np.full((H, W, 3), 100, np.uint8)
    pred = scene()
    with_arrows = draw_overlay(image, pred, arrows=True)
    without = draw_overlay(image, pred, arrows=False)
    assert (with_arrows != without).any()


def test_empty_prediction_leaves_image_unchanged():
    image = np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)
    out = draw_overlay(image, Prediction.empty(H, W))
    assert np.array_equal(out, image)


def test_min_long_side_upscales_and_default_keeps_the_input_size():
    image = np.full((H, W, 3), 100, np.uint8)
    pred = scene()
    assert draw_overlay(image, pred).shape == (H, W, 3)
    assert draw_overlay(image, pred, min_long_side=W).shape == (H, W, 3)  # already long enough
    assert draw_overlay(image, pred, min_long_side=200).shape == (H, W, 3)  # never shrinks
    big = draw_overlay(image, pred, min_long_side=READABLE_LONG_SIDE)
    assert big.shape == (480, 640, 3) and big.dtype == np.uint8
    assert draw_overlay(image, pred, min_long_side=1000).shape == (750, 1000, 3)
    # The upscaled overlay paints the same places, at twice the coordinates.
    colour = np.asarray(class_color(1), float)
    inside = np.zeros((480, 640), bool)
    inside[2 * 140:2 * 200, 2 * 50:2 * 140] = True  # deep inside instance 0's visible part
    dist = np.median(np.linalg.norm(big[inside].astype(float) - colour, axis=1))
    assert dist < 0.6 * np.linalg.norm(np.full(3, 100.0) - colour)
    assert (big[2 * 5:2 * 60, 2 * 290:2 * 315] == 100).all()
    empty = draw_overlay(image, Prediction.empty(H, W), min_long_side=640)
    assert empty.shape == (480, 640, 3) and (empty == 100).all()


def test_labels_stay_inside_the_image_and_apart():
    h, w = 100, 160
    sizes = [(90, 30), (90, 30), (200, 40), (50, 20)]
    boxes = [(0, 0, 30, 30), (0, 2, 40, 28), (120, 70, 160, 100), None]  # corners, too wide, no box
    rects = layout_labels(sizes, boxes, (h, w))
    for (x0, y0, x1, y1), (lw, lh) in zip(rects, sizes):
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h
        assert y1 - y0 == lh and x1 - x0 == min(lw, w)
    (a, b) = rects[:2]
    assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), "labels overlap"
    # With room, a label goes right above its box, off the object.
    occupied = np.zeros((h, w), bool)
    occupied[50:90, 40:100] = True
    (rect,) = layout_labels([(40, 12)], [(40, 50, 100, 90)], (h, w), occupied=occupied)
    assert rect[3] <= 50 and not occupied[rect[1]:rect[3], rect[0]:rect[2]].any()


def test_labels_are_compact():
    pred = scene()
    graph = compute_occlusion_graph(pred)
    assert label_lines(1, pred, graph) == ("#1 can .80", None)  # not occluded: no share, no 2nd line
    head, behind = label_lines(0, pred, graph)
    rate = round(100 * float(graph.occlusion_rate[0]))
    assert head == f"#0 box .90 occ {rate}%" and behind == "behind #1"


def test_repeated_classes_get_distinct_colours():
    colours = instance_colors([1, 1, 1, 2])
    assert colours[0] == class_color(1) and colours[3] == class_color(2)
    assert len(set(colours)) == 4


def test_bad_inputs_raise_input_error():
    pred = scene()
    with pytest.raises(InputError, match="HxWx3 uint8"):
        draw_overlay(np.zeros((H, W), np.uint8), pred)
    with pytest.raises(InputError, match="HxWx3 uint8"):
        draw_overlay(np.zeros((H, W, 3), np.float32), pred)
    with pytest.raises(InputError, match="image is"):
        draw_overlay(np.zeros((H + 1, W, 3), np.uint8), pred)
    with pytest.raises(InputError, match="min_long_side"):
        draw_overlay(np.zeros((H, W, 3), np.uint8), pred, min_long_side=-1)


def test_overlay_draws_the_analysis_it_is_given_without_analysing_again(monkeypatch):
    # One analysis per frame, shared by messages and overlay: nothing may binarise the masks or
    # compute the graph again. Poison both after the analysis.
    image = np.full((H, W, 3), 100, np.uint8)
    frame = analyze(scene())
    frame.prediction.amodal_masks = None  # the overlay must read the analysis's masks, not these
    monkeypatch.setattr(occlusion, "compute_occlusion_graph", lambda *a, **k: pytest.fail("graph again"))
    out = draw_overlay(image, frame, arrows=False)
    assert np.abs(out.astype(int) - image.astype(int)).sum(axis=2)[interior(frame.visible_masks[0])].min() > 0

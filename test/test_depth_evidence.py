"""Depth evidence for the layering: a stack of two boxes whose order only depth can tell, holes,
flying pixels on the boundary, and no evidence where there is nothing to compare."""

from __future__ import annotations

import numpy as np
import pytest

from orcnn_core.depth.evidence import NO_EVIDENCE, depth_order_evidence

H, W = 60, 80


def two_boxes(left_z: float, right_z: float):
    """Two boxes touching along column 40: from the masks alone either could hide the other."""
    left, right = np.zeros((H, W), bool), np.zeros((H, W), bool)
    left[10:50, 10:40] = True
    right[10:50, 40:70] = True
    depth = np.full((H, W), 0.85, np.float32)
    depth[left], depth[right] = left_z, right_z
    return depth, left, right


def test_depth_alone_decides_which_box_is_in_front():
    depth, left, right = two_boxes(0.76, 0.80)   # the left box is 4 cm nearer
    ahead = depth_order_evidence(depth, left, right)
    assert ahead.i_in_front is True and ahead.score == pytest.approx(1.0)
    assert ahead.gap_m == pytest.approx(0.04, abs=1e-6) and ahead.pixels_i == ahead.pixels_j == 40 * 3
    behind = depth_order_evidence(depth, right, left)
    assert behind.i_in_front is False and behind.score == pytest.approx(-1.0)
    swapped = depth_order_evidence(*two_boxes(0.80, 0.76))   # same masks, other depth: other order
    assert swapped.i_in_front is False


def test_small_gap_gives_proportionally_weaker_evidence():
    depth, left, right = two_boxes(0.795, 0.80)  # 5 mm: half of step_m
    assert depth_order_evidence(depth, left, right).score == pytest.approx(0.5, abs=1e-3)
    coplanar = depth_order_evidence(*two_boxes(0.80, 0.80))
    assert coplanar.score == 0.0 and coplanar.i_in_front is None


def test_holes_lower_the_weight_and_flying_pixels_do_not_flip_the_order():
    rng = np.random.default_rng(0)
    depth, left, right = two_boxes(0.76, 0.80)
    depth[:, 39:41] = rng.uniform(0.76, 0.80, size=(H, 2))   # flying pixels on the boundary itself
    holes = rng.random((H, W)) < 0.6
    depth[holes] = 0.0
    evidence = depth_order_evidence(depth, left, right)
    assert evidence.i_in_front is True
    assert 0.3 < evidence.valid_fraction < 0.5 and evidence.weight == pytest.approx(
        evidence.valid_fraction * min(1.0, min(evidence.pixels_i, evidence.pixels_j) / 100))
    assert evidence.score < 0.5


def test_no_evidence_without_a_shared_boundary_or_without_depth():
    depth, left, right = two_boxes(0.76, 0.80)
    far = np.zeros((H, W), bool)
    far[55:, 75:] = True
    assert depth_order_evidence(depth, left, far) == NO_EVIDENCE
    assert depth_order_evidence(np.zeros_like(depth), left, right) == NO_EVIDENCE
    assert depth_order_evidence(depth, np.zeros_like(left), right) == NO_EVIDENCE
    with pytest.raises(ValueError, match="differ in size"):
        depth_order_evidence(depth[:, :10], left, right)

"""Scene layering on hand-made scenes whose layers, edges and pick order are known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from orcnn_core.errors import ConfigError, InputError
from orcnn_core.layering import LayeringConfig, SceneLayering, layer_instances, layer_prediction
from orcnn_core.layering.order import exact_order, front_to_back, greedy_order
from orcnn_core.occlusion import compute_occlusion_graph
from orcnn_core.structures import Prediction

H, W = 60, 80
YY, XX = np.mgrid[:H, :W]


def rect(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def disc(cy, cx, r):
    return (YY - cy) ** 2 + (XX - cx) ** 2 <= r * r


def stacked(amodal, visible):
    """(amodal, visible, invisible) stacks; invisible = amodal AND NOT visible."""
    a, v = np.stack(amodal), np.stack(visible)
    return a, v, a & ~v


def as_prediction(amodal, visible, invisible, scores, labels=None):
    n = len(amodal)
    labels = np.ones(n, np.int64) if labels is None else np.asarray(labels, np.int64)
    boxes = np.tile(np.array([[0, 0, W, H]], np.float32), (n, 1))
    return Prediction(boxes, boxes.copy(), labels, labels + 10, [f"c{k}" for k in labels],
                      np.asarray(scores, np.float32), amodal, visible, invisible, (H, W))


def layered_graph(amodal, visible, invisible, scores, labels=None, config=LayeringConfig()):
    layering = layer_instances(amodal, visible, scores, np.ones(len(scores)) if labels is None else labels,
                               invisible=invisible, config=config)
    return layering, layering.occlusion_graph(np.asarray(scores)[layering.keep])


# ---------------------------------------------------------------- scenes with known layering

def test_two_overlapping_discs():
    back, front = disc(30, 30, 15), disc(30, 45, 15)
    a, v, h = stacked([back, front], [back & ~front, front])
    layering, graph = layered_graph(a, v, h, [0.9, 0.8])
    assert layering.keep.tolist() == [0, 1]
    assert layering.order.tolist() == [1, 0]
    assert layering.layer.tolist() == [1, 0]
    assert layering.front_of.tolist() == [[False, False], [True, False]]
    assert graph.occluder_ids == [[1], []]
    assert graph.occluder_overlap == [[1.0], []]
    assert graph.pick_order == [1, 0]
    assert graph.layer.tolist() == [1, 0]
    # Consistent input: the layering leaves every mask as it was.
    assert np.array_equal(layering.visible_masks, v)
    assert np.array_equal(layering.invisible_masks, h)
    assert np.array_equal(layering.amodal_masks, a)
    assert layering.unexplained_hidden.tolist() == [0, 0]


def test_chain_of_three():
    first, second, third = rect(10, 30, 5, 35), rect(10, 30, 25, 55), rect(10, 30, 45, 75)
    a, v, h = stacked([first, second, third], [first & ~second, second & ~third, third])
    layering, graph = layered_graph(a, v, h, [0.5, 0.9, 0.7])
    assert layering.order.tolist() == [2, 1, 0]
    assert layering.layer.tolist() == [2, 1, 0]
    assert graph.occluder_ids == [[1], [2], []]
    assert graph.layer.tolist() == [2, 1, 0]
    assert graph.pick_order == [2, 1, 0]
    assert layering.overruled == 0


def test_a_cycle_in_raw_outputs_is_broken_at_its_weakest_decision():
    # A hides under B (100 px shared), B under C (57 px), C under A (27 px): a cycle of raw claims.
    a_mask, b_mask = rect(0, 20, 0, 30), rect(0, 20, 25, 55)
    c_mask = rect(17, 40, 15, 50) & ~rect(0, 40, 24, 31)  # no pixel shared by all three
    ab, bc, ca = a_mask & b_mask, b_mask & c_mask, c_mask & a_mask
    assert (ab.sum(), bc.sum(), ca.sum()) == (100, 57, 27)
    visible = [a_mask & ~ab, b_mask & ~bc, c_mask & ~ca]
    a, v, h = stacked([a_mask, b_mask, c_mask], visible)
    raw = compute_occlusion_graph((a, v, h), [0.9, 0.8, 0.7])
    assert raw.occluder_ids == [[1], [2], [0]]  # today's graph holds the cycle
    layering, graph = layered_graph(a, v, h, [0.9, 0.8, 0.7])
    assert layering.overruled == 1
    assert layering.order.tolist() == [2, 1, 0]
    assert layering.front_of.tolist() == [[False, False, False], [True, False, False], [True, True, False]]
    assert layering.layer.tolist() == [2, 1, 0]
    # C's claimed hidden part under A is explained by nothing in front of C: trimmed; A stays
    # visible there. A is hidden under B, B under C.
    assert layering.unexplained_hidden.tolist() == [0, 0, 27]
    assert np.array_equal(layering.amodal_masks[2], c_mask & ~ca)
    assert np.array_equal(layering.visible_masks[0], a_mask & ~ab)
    assert graph.occluder_ids == [[1], [2], []]
    assert graph.pick_order == [2, 1, 0]
    assert graph.layer.tolist() == [2, 1, 0]


def test_a_duplicate_pair_keeps_the_higher_score():
    obj, other = disc(30, 30, 12), disc(30, 60, 10)
    shifted = np.roll(obj, 1, axis=1)
    a, v, h = stacked([obj, shifted, other], [obj, shifted, other])
    layering = layer_instances(a, v, [0.6, 0.9, 0.8], [3, 3, 3])
    assert layering.keep.tolist() == [1, 2]
    assert layering.duplicate_of.tolist() == [1, -1, -1]
    # Different classes are two objects unless class-agnostic.
    assert layer_instances(a, v, [0.6, 0.9, 0.8], [3, 4, 3]).keep.tolist() == [0, 1, 2]
    agnostic = layer_instances(a, v, [0.6, 0.9, 0.8], [3, 4, 3], config=LayeringConfig(class_agnostic=True))
    assert agnostic.keep.tolist() == [1, 2]


def test_unexplained_hidden_part_is_trimmed_unless_it_reaches_the_border():
    # Each object claims a hidden strip with nothing in front of it.
    inner, inner_hidden = rect(20, 40, 10, 30), rect(20, 40, 30, 36)
    edge, edge_hidden = rect(20, 40, 60, 74), rect(20, 40, 74, 80)  # hidden strip reaches column 79
    a = np.stack([inner | inner_hidden, edge | edge_hidden])
    v = np.stack([inner, edge])
    layering, graph = layered_graph(a, v, a & ~v, [0.9, 0.8])
    assert layering.unexplained_hidden.tolist() == [120, 0]
    assert np.array_equal(layering.amodal_masks[0], inner)          # trimmed
    assert np.array_equal(layering.invisible_masks[1], edge_hidden)  # truncated by the border: kept
    assert graph.truncated.tolist() == [False, True]
    assert graph.occluder_ids == [[], []]
    flagged = layer_instances(a, v, [0.9, 0.8], [1, 1], config=LayeringConfig(unexplained_hidden="flag"))
    assert flagged.unexplained_hidden.tolist() == [120, 0]
    assert np.array_equal(flagged.invisible_masks[0], inner_hidden)  # kept, only counted


def test_a_ninety_percent_occluded_object_stays_with_its_occluder():
    back = rect(20, 40, 20, 50)                      # 600 px
    front = rect(18, 42, 23, 60)                     # hides columns 23..49 of it: 540 px = 90 %
    a, v, h = stacked([front, back], [front, back & ~front])
    assert (back & ~front).sum() == 60
    layering, graph = layered_graph(a, v, h, [0.95, 0.55], labels=[2, 2])
    assert layering.keep.tolist() == [0, 1]
    assert graph.occluder_ids == [[], [0]]
    assert graph.occlusion_rate[1] == pytest.approx(0.9)
    assert graph.pick_order == [0, 1]


def test_pick_order_prefers_an_object_no_decision_could_put_under_another():
    # A lone object (score 0.6) and a pair that both claim their shared region as visible: the
    # tie goes to the higher score (0.9), a decision without evidence, so that one is in doubt.
    lone = disc(45, 65, 8)
    left, right = rect(5, 25, 5, 30), rect(5, 25, 20, 45)
    a = np.stack([lone, left, right])
    layering, graph = layered_graph(a, a.copy(), np.zeros_like(a), [0.6, 0.9, 0.8])
    assert layering.front_of[1, 2] and layering.confidence[1, 2] == 0.0
    assert graph.occluder_ids == [[], [], [1]]
    assert graph.pick_order == [0, 1, 2]
    by_score = layered_graph(a, a.copy(), np.zeros_like(a), [0.6, 0.9, 0.8],
                             config=LayeringConfig(pick_priority="score"))[1]
    assert by_score.pick_order == [1, 0, 2]


def test_pair_evidence_hook_can_overrule_the_masks():
    back, front = disc(30, 30, 15), disc(30, 45, 15)
    a, v, h = stacked([back, front], [back & ~front, front])

    def says_first_in_front(context):
        return np.ones(len(context.pairs))  # pairs are (i < j): instance 0 in front

    layering = layer_instances(a, v, [0.9, 0.8], [1, 1], invisible=h,
                               pair_evidence=[(10.0, says_first_in_front)])
    assert layering.order.tolist() == [0, 1]
    with pytest.raises(InputError, match="pair evidence term"):
        layer_instances(a, v, [0.9, 0.8], [1, 1], pair_evidence=[(1.0, lambda context: np.array([np.nan]))])


def test_probability_masks_give_the_bool_result_when_they_are_zero_or_one():
    back, front = disc(30, 30, 15), disc(30, 45, 15)
    a, v, h = stacked([back, front], [back & ~front, front])
    from_bool = layer_instances(a, v, [0.9, 0.8], [1, 1], invisible=h)
    from_prob = layer_instances(a.astype(np.float32), v.astype(np.float32), [0.9, 0.8], [1, 1],
                                invisible=h.astype(np.float32))
    assert from_prob.order.tolist() == from_bool.order.tolist()
    assert np.array_equal(from_prob.visible_masks, from_bool.visible_masks)
    assert from_prob.confidence[0, 1] == pytest.approx(from_bool.confidence[0, 1])


def test_disabled_layering_keeps_everything_and_publishes_todays_graph():
    a_mask, b_mask = rect(10, 30, 10, 40), rect(10, 30, 30, 60)
    a = np.stack([a_mask, b_mask])
    v = np.stack([a_mask & ~rect(10, 30, 30, 35), b_mask & ~rect(10, 30, 35, 40)])  # mutual claims
    config = LayeringConfig(enabled=False)
    layering = layer_instances(a, v, [0.9, 0.8], [1, 1], config=config)
    assert layering.keep.tolist() == [0, 1] and not layering.front_of.any()
    assert np.array_equal(layering.visible_masks, v)
    graph = layering.occlusion_graph([0.9, 0.8])
    today = compute_occlusion_graph((a, v), [0.9, 0.8])
    assert graph.occluder_ids == today.occluder_ids == [[1], [0]]
    assert graph.pick_order == today.pick_order


# ---------------------------------------------------------------- bad and degenerate input

def test_empty_one_and_identical_instances():
    empty = layer_instances(np.zeros((0, H, W), bool), np.zeros((0, H, W), bool), [], [])
    assert isinstance(empty, SceneLayering) and len(empty) == 0
    assert empty.amodal_masks.shape == (0, H, W) and empty.occlusion_graph([]).pick_order == []
    pred, layering = layer_prediction(Prediction.empty(H, W))
    assert len(pred) == 0 and pred.image_size == (H, W) and len(layering) == 0

    one = disc(30, 40, 10)
    single = layer_instances(one[None], one[None], [0.7], [1])
    assert single.keep.tolist() == [0] and single.layer.tolist() == [0]
    assert single.occlusion_graph([0.7]).pick_order == [0]

    same = np.stack([one] * 3)
    assert layer_instances(same, same, [0.5, 0.9, 0.7], [1, 1, 1]).keep.tolist() == [1]
    across = layer_instances(same, same, [0.5, 0.9, 0.7], [1, 2, 3])  # three classes: kept
    assert across.keep.tolist() == [0, 1, 2]
    assert across.order[0] == 1  # no evidence either way: the best score is in front
    assert across.visible_masks.sum(axis=(1, 2)).tolist() == [0, one.sum(), 0]  # disjoint
    graph = across.occlusion_graph([0.5, 0.9, 0.7])
    assert graph.occluder_ids == [[1], [], [1]] and graph.pick_order[0] == 1


def test_bad_input_raises_input_error_naming_it():
    m = np.zeros((2, H, W), bool)
    with pytest.raises(InputError, match="instance 1: score is nan"):
        layer_instances(m, m, [0.5, float("nan")], [1, 1])
    with pytest.raises(InputError, match="visible_masks shape"):
        layer_instances(m, np.zeros((2, H, W + 1), bool), [0.5, 0.5], [1, 1])
    with pytest.raises(InputError, match=r"scores must have shape \(2,\)"):
        layer_instances(m, m, [0.5], [1, 1])
    with pytest.raises(InputError, match=r"\(N, H, W\)"):
        layer_instances(m[0], m[0], [0.5], [1])
    pred = as_prediction(m, m, m, [0.5, 0.6])
    pred.image_size = (H + 1, W)
    with pytest.raises(InputError, match="image_size"):
        layer_prediction(pred)


@pytest.mark.parametrize("field, value", [("duplicate_visible_iou", 1.5), ("min_shared_pixels", 0),
                                          ("cut_visible_by", "depth"), ("enabled", "yes"),
                                          ("exact_order_limit", 20), ("visible_weight", -1.0),
                                          ("sure_confidence", 0.0)])
def test_config_values_out_of_range_raise_config_error(field, value):
    with pytest.raises(ConfigError, match=field):
        LayeringConfig(**{field: value})


def test_layer_prediction_keeps_detection_fields_of_the_kept_instances():
    obj, other = disc(30, 30, 12), disc(30, 60, 10)
    a, v, h = stacked([obj, obj, other], [obj, obj, other])
    pred = as_prediction(a, v, h, [0.6, 0.9, 0.8], labels=[3, 3, 4])
    layered, layering = layer_prediction(pred)
    assert layering.keep.tolist() == [1, 2]
    assert layered.scores.tolist() == pytest.approx([0.9, 0.8])
    assert layered.category_ids.tolist() == [13, 14] and layered.class_names == ["c3", "c4"]
    assert layered.amodal_masks.dtype == bool and layered.amodal_masks.shape == (2, H, W)
    x, y = np.flatnonzero(other.any(0)), np.flatnonzero(other.any(1))
    assert layered.visible_boxes[1].tolist() == [x[0], y[0], x[-1] + 1, y[-1] + 1]


# ---------------------------------------------------------------- the order itself

def _brute_force_cost(weights):
    """Least total weight of decisions any order reverses, by trying every permutation."""
    n = weights.shape[0]
    best = np.inf
    for perm in itertools.permutations(range(n)):
        rank = np.empty(n, int)
        rank[list(perm)] = np.arange(n)
        best = min(best, weights[rank[:, None] > rank[None, :]].sum())
    return best


def _cost(weights, order):
    rank = np.empty(len(order), int)
    rank[list(order)] = np.arange(len(order))
    return weights[rank[:, None] > rank[None, :]].sum()


@pytest.mark.parametrize("seed", range(6))
def test_exact_order_reaches_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    n = 6
    weights = np.zeros((n, n))
    for i, j in itertools.combinations(range(n), 2):  # one direction per pair, as the layering makes
        if rng.random() < 0.8:
            w = float(rng.integers(1, 20))
            weights[(i, j) if rng.random() < 0.5 else (j, i)] = w
    order = exact_order(weights)
    assert sorted(order) == list(range(n))
    assert _cost(weights, order) == _brute_force_cost(weights)
    greedy = greedy_order(weights)
    assert sorted(greedy) == list(range(n)) and _cost(weights, greedy) >= _cost(weights, order)


def test_front_to_back_keeps_an_acyclic_relation_and_counts_what_it_overruled():
    weights = np.zeros((4, 4))
    weights[0, 1], weights[1, 2], weights[2, 0] = 5.0, 4.0, 1.0   # cycle, weakest 2 -> 0
    weights[3, 0] = 2.0
    order, kept, overruled = front_to_back(weights, [0.1, 0.2, 0.3, 0.4])
    assert overruled == 1 and not kept[2, 0]
    assert order == [3, 0, 1, 2]
    small = front_to_back(weights, [0.1, 0.2, 0.3, 0.4], exact_limit=2)  # greedy path
    assert small[2] == 1 and sorted(small[0]) == [0, 1, 2, 3]


def test_todays_graph_reports_layers_even_with_a_cycle():
    first, second, third = rect(10, 30, 5, 35), rect(10, 30, 25, 55), rect(10, 30, 45, 75)
    a = np.stack([first, second, third])
    chain = compute_occlusion_graph((a, np.stack([first & ~second, second & ~third, third])))
    assert chain.layer.tolist() == [2, 1, 0]
    # 0 and 1 hide each other: the cycle is broken by score (1 first), so 0 sits one layer deeper.
    mutual = np.stack([first & ~rect(10, 30, 25, 30), second & ~rect(10, 30, 30, 35), third])
    cyclic = compute_occlusion_graph((a, mutual), [0.5, 0.9, 0.1])
    assert cyclic.occluder_ids == [[1], [0], []]
    assert cyclic.pick_order == [2, 1, 0] and cyclic.layer.tolist() == [1, 0, 0]


def test_order_score_threshold_default_is_the_nodes():
    from orcnn_core.evaluation import commands, order_eval
    from orcnn_ros.params import NodeParams

    assert commands.DEFAULT_ORDER_SCORE_THRESHOLD == order_eval.DEFAULT_ORDER_SCORE_THRESHOLD \
        == NodeParams().score_threshold


def test_a_low_score_detection_never_goes_in_front_of_a_confident_one():
    back, front = disc(30, 30, 15), disc(30, 45, 15)
    a, v, h = stacked([back, front], [back & ~front, front])   # the masks say: 1 in front of 0
    assert layer_instances(a, v, [0.9, 0.3], [1, 2], invisible=h).order.tolist() == [0, 1]
    trusting = LayeringConfig(front_min_score=0.0)
    assert layer_instances(a, v, [0.9, 0.3], [1, 2], invisible=h, config=trusting).order.tolist() == [1, 0]


def test_detections_with_empty_masks_are_layered_without_error():
    # A weak model can detect boxes whose masks are nowhere above the threshold (seen end to end).
    empty = np.zeros((3, 24, 32), bool)
    layering = layer_instances(empty, empty.copy(), [0.3, 0.3, 0.2], [1, 1, 2])
    graph = layering.occlusion_graph(np.asarray([0.3, 0.3, 0.2])[layering.keep])
    assert graph.occluder_ids == [[]] * len(layering)
    assert not graph.truncated.any() and sorted(graph.pick_order) == list(range(len(layering)))

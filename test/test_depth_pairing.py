"""Colour frames paired with depth by stamp (exact, within the slop, never), depth + camera_info
synchronised, and the node's pipeline with depth: 3D when paired, the frame without 3D (counted by
cause) when the depth is missing or unusable."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from test_ros_pipeline import FakePredictor  # the two-rectangle model of the pipeline tests

from orcnn_core.depth.camera import CameraIntrinsics
from orcnn_ros import messages
from orcnn_ros.conversions import make_image_msg
from orcnn_ros.depth_conversions import depth_image_fields
from orcnn_ros.depth_pairing import DepthInfoSynchronizer, DepthPairing, stamp_ns
from orcnn_ros.pipeline import AmodalPipeline

H, W = 48, 64
CAMERA = CameraIntrinsics(80.0, 80.0, 31.5, 23.5)


def header(ns: int):
    return messages.make_header(ns // 10**9, ns % 10**9, "camera")


def depth_pair(ns: int, depth_mm=None, camera=CAMERA, encoding=None):
    """A 16UC1 depth image (flat 0.8 m by default) and its camera_info, both stamped ``ns``."""
    depth_mm = np.full((H, W), 800, np.uint16) if depth_mm is None else depth_mm
    depth = make_image_msg(messages.rosbags_factories(), header(ns), depth_image_fields(depth_mm))
    if encoding:
        depth.encoding = encoding
    return depth, messages.make_camera_info(header(ns), camera, *depth_mm.shape)


def colour(ns: int):
    return messages.make_image(header(ns), np.full((H, W, 3), 60, np.uint8))


# -- DepthPairing -------------------------------------------------------------------------------------

def test_exact_stamps_pair_and_one_nanosecond_off_does_not():
    pairing = DepthPairing(slop_s=0.0)
    assert pairing.match(5) == (None, "no_depth_yet")
    pairing.add(*depth_pair(1_000_000_000))
    sample, cause = pairing.match(1_000_000_000)
    assert cause == "" and sample.stamp_ns == 1_000_000_000 and stamp_ns(sample.info.header) == 1_000_000_000
    assert pairing.match(1_000_000_001) == (None, "depth_not_matched")


def test_within_the_slop_the_nearest_depth_wins_and_the_newer_on_a_tie():
    pairing = DepthPairing(slop_s=0.02)
    for ns in (1_000_000_000, 1_033_000_000, 1_066_000_000):
        pairing.add(*depth_pair(ns))
    assert pairing.match(1_040_000_000)[0].stamp_ns == 1_033_000_000   # 7 ms away
    assert pairing.match(1_049_500_000)[0].stamp_ns == 1_066_000_000   # equidistant (16.5 ms): newer
    assert pairing.match(981_000_000)[0].stamp_ns == 1_000_000_000     # 19 ms before the oldest: < 20 ms
    assert pairing.match(979_000_000) == (None, "depth_not_matched")     # 21 ms
    assert pairing.match(1_100_000_000) == (None, "depth_not_matched")  # 34 ms from the newest
    assert pairing.latest_stamp_ns() == 1_066_000_000 and pairing.received == 3


def test_stamps_that_never_match_leave_every_frame_unpaired():
    pairing = DepthPairing(slop_s=0.01, history=4)
    for k in range(20):  # depth always 50 ms behind the colour frame
        pairing.add(*depth_pair(k * 100_000_000))
        assert pairing.match(k * 100_000_000 + 50_000_000) == (None, "depth_not_matched")
    assert len(pairing._samples) == 4  # bounded history


def test_depth_and_camera_info_are_synchronised_by_stamp():
    pairs = []
    sync = DepthInfoSynchronizer(lambda d, i: pairs.append((stamp_ns(d.header), stamp_ns(i.header))),
                                 slop_s=0.0, queue_size=2)
    depth_a, info_a = depth_pair(100)
    depth_b, info_b = depth_pair(200)
    sync.add_info(info_a)
    sync.add_depth(depth_b)
    sync.add_depth(depth_a)   # pairs with the waiting info of 100
    sync.add_info(info_b)
    assert pairs == [(100, 100), (200, 200)]
    lonely = DepthInfoSynchronizer(lambda d, i: pairs.append("never"), slop_s=0.0, queue_size=2)
    for ns in (1, 2, 3):
        lonely.add_depth(depth_pair(ns)[0])
    lonely.add_info(depth_pair(1)[1])  # its depth was dropped (queue of 2): no pair
    assert "never" not in pairs
    approx = DepthInfoSynchronizer(lambda d, i: pairs.append((stamp_ns(d.header), stamp_ns(i.header))),
                                   slop_s=0.005)
    approx.add_depth(depth_pair(1_000_000_000)[0])
    approx.add_info(depth_pair(1_004_000_000)[1])
    assert pairs[-1] == (1_000_000_000, 1_004_000_000)


# -- the pipeline with depth ------------------------------------------------------------------------

def pipeline_with(pairing: DepthPairing) -> AmodalPipeline:
    return AmodalPipeline(FakePredictor(), messages.rosbags_factories(), depth_pairing=pairing,
                          logger=logging.getLogger("test"))


def test_paired_frame_gets_3d_in_its_message():
    pairing = DepthPairing()
    pipeline = pipeline_with(pairing)
    depth_mm = np.full((H, W), 900, np.uint16)
    depth_mm[H // 3:, W // 3:] = 850  # the front rectangle (instance 1) is 5 cm nearer
    pairing.add(*depth_pair(7_000, depth_mm))
    result = pipeline.process(colour(7_000))
    inst = result.instances.instances
    assert [i.has_3d for i in inst] == [True, True]
    assert inst[1].visible_centroid.z == pytest.approx(0.85, abs=1e-6)
    assert inst[0].visible_centroid.z == pytest.approx(0.90, abs=1e-6)
    # the hidden part of instance 0 goes to its own surface depth, not to the occluder's
    assert inst[0].amodal_centroid.z == pytest.approx(0.90, abs=1e-6)
    assert all(p.z == pytest.approx(0.9, abs=1e-6) for p in inst[0].amodal_footprint.points)
    assert inst[0].surface_normal.z == pytest.approx(-1.0, abs=1e-6)
    assert pipeline.frames_with_3d == 1 and not pipeline.no_3d_by_cause
    values = pipeline.diagnostics()[2]
    assert values["frames_with_3d"] == "1" and values["depth_received"] == "1"


@pytest.mark.parametrize("pair, cause", [
    (lambda ns: None, "no_depth_yet"),
    (lambda ns: depth_pair(ns + 1), "depth_not_matched"),
    (lambda ns: depth_pair(ns, encoding="rgb8"), "depth_encoding"),
    (lambda ns: depth_pair(ns, np.full((H, W + 2), 800, np.uint16)), "depth_size_mismatch"),
    (lambda ns: depth_pair(ns, camera=CameraIntrinsics(0.0, 0.0, 0.0, 0.0)), "camera_invalid"),
    (lambda ns: depth_pair(ns, np.zeros((H, W), np.uint16)), "depth_all_holes"),
])
def test_frame_without_usable_depth_is_processed_without_3d_and_counted(pair, cause, caplog):
    pairing = DepthPairing()
    pipeline = pipeline_with(pairing)
    for k in range(3):
        ns = 1_000 * (k + 1)
        sample = pair(ns)
        if sample is not None:
            pairing.add(*sample)
        result = pipeline.process(colour(ns))
        assert result is not None and len(result.instances.instances) == 2  # the 2D result is published
        assert not any(i.has_3d for i in result.instances.instances)
        assert all(i.visible_centroid.z == 0.0 and not i.amodal_footprint.points
                   for i in result.instances.instances)
    assert pipeline.processed == 3 and pipeline.skipped == 0
    assert pipeline.no_3d_by_cause == {cause: 3} and pipeline.frames_with_3d == 0
    assert pipeline.diagnostics()[2][f"no_3d[{cause}]"] == "3"
    assert sum(cause in r.getMessage() for r in caplog.records) == 1  # logged once


def test_without_pairing_nothing_about_depth_is_counted_or_reported():
    pipeline = AmodalPipeline(FakePredictor(), messages.rosbags_factories())
    result = pipeline.process(colour(1))
    assert not result.depth_expected and not any(i.has_3d for i in result.instances.instances)
    assert "frames_with_3d" not in pipeline.diagnostics()[2]

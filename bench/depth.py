"""Per-frame cost of the 3D step against the model's inference, on the same 640x480 RGB-D frames.

3D step = what the node adds per frame with depth: the 16UC1 depth message and camera_info to a
checked ``DepthFrame``, ``compute_geometry`` (robust centroid, normal, box, footprint per instance)
and the 3D fields of every ``AmodalInstance``. Inference = the bundled demo model (``Predictor``,
score threshold 0.5 as the node) on the colour image. Frames: unseen synthetic 640x480 scenes with
the sensor model (``orcnn synth --depth-sensor``), the bundled model's own predictions; plus a
stress frame of 20 stacked objects (``bench/node_pipeline.py``'s clutter) with depth rendered for it.
Times: per frame, the median of ``--repeats`` runs, interleaved; 2 threads.

    python bench/depth.py [--frames 8] [--repeats 5]

Last line: ``depth_overhead_ratio: <3D step / inference, median over the scenes>`` (target <= 0.05).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from node_pipeline import cluttered_scene

from orcnn_core.analysis import analyze
from orcnn_core.data.synth import generate_scene
from orcnn_core.data.synth_depth import SensorModel, render_depth
from orcnn_core.depth.instances3d import compute_geometry
from orcnn_core.engine.predictor import load_predictor
from orcnn_ros import messages
from orcnn_ros.conversions import geometry_fields
from orcnn_ros.depth_conversions import depth_frame_from_msgs, depth_image_fields

THREADS = 2
SEED = 4242


def depth_messages(depth_mm: np.ndarray, camera) -> tuple:
    """(16UC1 Image, CameraInfo) rosbags messages of one frame."""
    header = messages.make_header(1, 0, "camera")
    fields = depth_image_fields(depth_mm)
    image = messages.msg_class(messages.IMAGE_TYPE)(header=header, **fields)
    return image, messages.make_camera_info(header, camera, *depth_mm.shape)


def step_3d(prediction, depth_msg, info_msg, factories) -> tuple[float, int]:
    """(seconds, instances with 3D) of the 3D step for one frame, on top of its 2D analysis."""
    frame = analyze(prediction)  # the 2D analysis every frame has anyway: not timed
    started = time.perf_counter()
    depth = depth_frame_from_msgs(depth_msg, info_msg).check(frame.image_size)
    frame.geometry = compute_geometry(frame.visible_masks, frame.amodal_masks, frame.visible_boxes,
                                      frame.amodal_boxes, depth)
    for i in range(len(frame)):
        geometry_fields(frame.geometry, i, factories)
    return time.perf_counter() - started, int(frame.geometry.has_3d.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    predictor = load_predictor(None, device="cpu", score_threshold=0.5)
    factories = messages.rosbags_factories()
    frames = []
    for index in range(args.frames):
        scene = generate_scene(np.random.default_rng([SEED, index]), size=(640, 480))
        rng = np.random.default_rng([SEED, index, 1])
        rendered = render_depth(scene.amodal_masks, scene.visible_masks, rng, SensorModel())
        messages_3d = depth_messages(rendered.depth_mm, rendered.camera)
        frames.append((f"scene {index}", scene.image, None, *messages_3d))
    clutter = cluttered_scene(20)
    rendered = render_depth(clutter.amodal_masks, clutter.visible_masks, np.random.default_rng([SEED, 99]),
                            SensorModel())
    frames.append(("clutter 20", frames[0][1], clutter, *depth_messages(rendered.depth_mm, rendered.camera)))
    predictor(frames[0][1])  # warm-up
    print(f"torch {torch.__version__}, {THREADS} threads, bundled demo model, 640x480, median of "
          f"{args.repeats} runs per frame")
    print(f"{'frame':<11} {'instances':>9} {'with 3D':>7} {'inference ms':>12} {'3D step ms':>10} "
          f"{'ratio':>6}")
    ratios = []
    for name, image, fixed, depth_msg, info_msg in frames:
        inference, depth = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            prediction = predictor(image)
            inference.append(time.perf_counter() - started)
            used = fixed if fixed is not None else prediction
            seconds, with_3d = step_3d(used, depth_msg, info_msg, factories)
            depth.append(seconds)
        instances = len(fixed if fixed is not None else prediction)
        ratio = statistics.median(depth) / statistics.median(inference)
        if fixed is None:
            ratios.append(ratio)
        print(f"{name:<11} {instances:>9} {with_3d:>7} {statistics.median(inference) * 1e3:>12.1f} "
              f"{statistics.median(depth) * 1e3:>10.2f} {ratio:>6.3f}")
    print("target: 3D step <= 0.05 of inference (the clutter frame's inference is scene 0's, for scale)")
    print(f"depth_overhead_ratio: {statistics.median(ratios):.4f}")


if __name__ == "__main__":
    main()

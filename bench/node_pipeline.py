"""Per-frame cost of the node's own work against model inference (CPU, small config, 640x480).

Own work = rgb8 Image message -> numpy, occlusion graph, AmodalInstanceArray with cropped masks
(rosbags classes) and its CDR serialisation, for ~20 overlapping objects. Inference = a randomly
initialised ``config/models/small_cpu.yaml`` model on the same frame.

    python bench/node_pipeline.py [--instances 20] [--repeats 20]

Last line: ``pipeline_overhead_ratio: <own work / inference>`` (target <= 0.15).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.data.synth import resolve_visibility
from orcnn_core.structures import Prediction
from orcnn_ros import messages
from orcnn_ros.params import FrameSettings
from orcnn_ros.pipeline import AmodalPipeline

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 480, 640


def cluttered_scene(n: int, seed: int = 0) -> Prediction:
    """``n`` rectangles and ellipses stacked at random depths: exact amodal / visible / invisible masks."""
    rng = np.random.default_rng(seed)
    amodal = np.zeros((n, HEIGHT, WIDTH), bool)
    for k in range(n):
        canvas = np.zeros((HEIGHT, WIDTH), np.uint8)
        cx, cy = int(rng.integers(60, WIDTH - 60)), int(rng.integers(60, HEIGHT - 60))
        if k % 2:
            axes = (int(rng.integers(30, 90)), int(rng.integers(20, 70)))
            cv2.ellipse(canvas, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        else:
            hw, hh = int(rng.integers(25, 80)), int(rng.integers(20, 60))
            cv2.rectangle(canvas, (cx - hw, cy - hh), (cx + hw, cy + hh), 1, -1)
        amodal[k] = canvas > 0
    boxes = mask_ops.mask_boxes(amodal)
    crops = [(y0, y1, x0, x1) for x0, y0, x1, y1 in boxes.astype(int).tolist()]
    _, visible = resolve_visibility(amodal, crops, 0.0, 0)  # later objects lie in front
    labels = rng.integers(1, 5, n).astype(np.int64)
    vboxes = mask_ops.mask_boxes(visible)
    return Prediction(boxes, vboxes, labels, labels.copy(), [f"class_{k}" for k in labels],
                      rng.uniform(0.3, 1.0, n).astype(np.float32), amodal, visible, amodal & ~visible,
                      (HEIGHT, WIDTH))


def timed(fn, repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


class FixedPredictor:
    """Stands in for the model: the same prediction for every frame (the model is timed apart)."""

    def __init__(self, prediction) -> None:
        self.prediction = prediction

    def predict_batch(self, images, batch_size=4, **limits):
        return [self.prediction for _ in images]


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--model-repeats", type=int, default=5)
    args = parser.parse_args()

    scene = cluttered_scene(args.instances)
    image = np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame = messages.make_image(messages.make_header(1, 2, "camera"), image)
    pipeline = AmodalPipeline(FixedPredictor(scene), messages.rosbags_factories(), FrameSettings())

    def own_work() -> None:
        result = pipeline.process(frame)
        messages.serialize(result.instances, messages.INSTANCE_ARRAY_TYPE)

    def own_work_with_overlay() -> None:
        result = pipeline.process(frame, want_overlay=True)
        messages.serialize(result.instances, messages.INSTANCE_ARRAY_TYPE)

    own_work()  # warm caches (typestore, serializers)
    check = pipeline.process(frame)
    edges = sum(len(i.occluder_ids) for i in check.instances.instances)
    size = len(messages.serialize(check.instances, messages.INSTANCE_ARRAY_TYPE))
    own = statistics.median(timed(own_work, args.repeats))
    own_overlay = statistics.median(timed(own_work_with_overlay, max(3, args.repeats // 4)))
    print(f"frame: {WIDTH}x{HEIGHT} rgb8, {args.instances} instances, {edges} occluder edges, "
          f"message {size / 1024:.0f} KiB")
    print(f"own work per frame (median of {args.repeats}): {own * 1000:.1f} ms")
    print(f"own work with overlay (only while subscribed): {own_overlay * 1000:.1f} ms")
    print(f"pipeline_fps_without_model: {1.0 / own:.1f}")

    from orcnn_core.engine import Predictor  # torch import only for the model part

    predictor = Predictor.from_config(REPO / "config" / "models" / "small_cpu.yaml", device="cpu")
    predictor(image)  # warm-up
    inference = statistics.median(timed(lambda: predictor(image), args.model_repeats))
    print(f"model inference, small_cpu.yaml on CPU (median of {args.model_repeats}): "
          f"{inference * 1000:.1f} ms")
    print(f"pipeline_overhead_ratio: {own / inference:.3f}")


if __name__ == "__main__":
    main()

"""Cost of the scene layering + occlusion graph per frame, against the model's inference on that frame.

One 640x480 synthetic tabletop frame (``orcnn synth`` style, heavy occlusion, fixed seed); the
bundled small model (``orcnn_core/weights/demo_small.safetensors``) on CPU with 2 torch threads
detects at score threshold 0.01 with a cap of N instances (N = 20 and 50), so both steps work on
the very same N detections. Measured, median of ``--runs`` interleaved runs after warm-up:

* model: ``Predictor(image)`` (bool masks, what the node publishes today) and, for reference,
  ``Predictor(image, return_probabilities=True)``;
* layering: ``layer_prediction(prediction)`` + ``layering.occlusion_graph(scores)`` on that
  prediction.

Ratio = layering / model for the same input kind. Target <= 0.05.
Last line: ``layering_overhead_ratio: <worst bool-input ratio over N>``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from orcnn_core.data.synth import generate_scene
from orcnn_core.engine.predictor import Predictor
from orcnn_core.layering import LayeringConfig, layer_prediction

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "orcnn_core" / "weights" / "demo_small.safetensors"
THREADS = 2
COUNTS = (20, 50)
SEED = 5


def layer_and_graph(prediction, config: LayeringConfig):
    """The measured step: layering, then the occlusion graph of the layered masks."""
    layered, layering = layer_prediction(prediction, config)
    return layering.occlusion_graph(layered.scores)


def main() -> int:
    """Run the benchmark; prints one line per N and input kind, then the headline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    scene = generate_scene(np.random.default_rng(SEED), size=(640, 480), occlusion="high")
    config = LayeringConfig()
    print(f"torch {torch.__version__}, {THREADS} threads, 640x480 frame with {len(scene.category_ids)} "
          f"objects, median of {args.runs} runs")
    print(f"{'N':>3} {'input':<6} {'model ms':>9} {'layering ms':>12} {'ratio':>7} {'pairs':>6} {'kept':>5}")
    worst = 0.0
    for count in COUNTS:
        predictor = Predictor.from_weights(WEIGHTS, device="cpu", score_threshold=0.01, max_instances=count)
        for kind, probabilities in (("bool", False), ("prob", True)):
            prediction = predictor(scene.image, return_probabilities=probabilities)
            for _ in range(args.warmup):
                predictor(scene.image, return_probabilities=probabilities)
                layer_and_graph(prediction, config)
            model_times, layer_times = [], []
            for _ in range(args.runs):  # interleaved, so that load changes hit both alike
                start = time.perf_counter()
                predictor(scene.image, return_probabilities=probabilities)
                model_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                layer_and_graph(prediction, config)
                layer_times.append(time.perf_counter() - start)
            model_ms = 1000 * statistics.median(model_times)
            layer_ms = 1000 * statistics.median(layer_times)
            ratio = layer_ms / model_ms
            _, layering = layer_prediction(prediction, config)
            pairs = int((layering.shared > 0).sum() // 2)
            print(f"{len(prediction):>3} {kind:<6} {model_ms:>9.1f} {layer_ms:>12.2f} {ratio:>7.3f} "
                  f"{pairs:>6} {len(layering):>5}")
            if not probabilities:
                worst = max(worst, ratio)
    print("target: layering + graph <= 0.05 x model inference")
    print(f"layering_overhead_ratio: {worst:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

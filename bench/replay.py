"""Benchmark: frames per second of ``orcnn-replay`` against ``orcnn predict`` on the same images.

Both run in this process on the same 40 synthetic 320x240 frames with the same weights, batch size
and device; replay reads them from a rosbag2 (made by ``bag-from-images``, not timed) and writes one
AmodalInstanceArray per frame, predict reads the PNG files and writes a results JSON. Both include
loading the weights. Runs alternate and the median of ``--repeats`` is used, so a busy machine
affects both alike. Bag IO must not be the bottleneck: target ratio >= 0.9.

    python bench/replay.py [--frames 40] [--batch-size 4] [--repeats 3] [--weights W]

Last line: ``replay_vs_predict_ratio: <replay fps / predict fps>``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path


def _weights(tmp: Path, given: str | None) -> tuple[Path, str]:
    """The weights to time: given, else the bundled demo model, else the small config at random init."""
    from orcnn_core.engine.predictor import BUNDLED_WEIGHTS

    if given:
        return Path(given), given
    if BUNDLED_WEIGHTS.is_file():
        return BUNDLED_WEIGHTS, "bundled demo model"
    import torch

    from orcnn_core.model import build_model, load_model_config, save_weights

    torch.manual_seed(0)
    config = load_model_config(Path(__file__).resolve().parents[1] / "config" / "models" / "small_cpu.yaml")
    path = tmp / "small_random.safetensors"
    save_weights(build_model(config), config, path)
    return path, "config/models/small_cpu.yaml, random init (bundled demo model not found)"


def main() -> None:
    """Run the benchmark and print its figures; the last line is the headline ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from orcnn_core.data.synth import synthesize
    from orcnn_core.engine.predict import predict_folder
    from orcnn_ros.bag_from_images import images_to_bag
    from orcnn_ros.replay import ReplayOptions, run_replay

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = synthesize(tmp / "synth", images=args.frames, seed=7, classes=6, size=(320, 240))
        weights, weights_note = _weights(tmp, args.weights)
        raw_bag, jpeg_dir = tmp / "raw_bag", tmp / "png_bag"
        images_to_bag(data.image_root, raw_bag, start_ns=10**18)
        images_to_bag(data.image_root, jpeg_dir, topic="/image/compressed", compressed=True, start_ns=10**18)
        print(f"frames: {args.frames} synthetic 320x240; weights: {weights_note}; "
              f"batch size {args.batch_size}; device {args.device}")

        def run_predict(k: int) -> float:
            started = time.perf_counter()
            predict_folder(data.image_root, tmp / f"pred{k}.json", weights=weights,
                           batch_size=args.batch_size, device=args.device, score_threshold=0.5)
            return time.perf_counter() - started

        def run_bag(k: int, bag: Path, topic: str) -> tuple[float, object]:
            opts = ReplayOptions(bag=bag, topic=topic, out=tmp / f"out_{bag.name}{k}", weights=weights,
                                 batch_size=args.batch_size, device=args.device, progress=False,
                                 score_threshold=0.5)  # the same threshold on both sides
            started = time.perf_counter()
            summary = run_replay(opts)
            return time.perf_counter() - started, summary

        run_predict(-1)  # warm-up: first torch calls are slower
        predict_s, replay_s, compressed_s = [], [], []
        for k in range(args.repeats):
            predict_s.append(run_predict(k))
            seconds, summary = run_bag(k, raw_bag, "/image")
            replay_s.append(seconds)
            compressed_s.append(run_bag(k, jpeg_dir, "/image/compressed")[0])
        stats = summary.stats()
        predict_fps = args.frames / statistics.median(predict_s)
        replay_fps = args.frames / statistics.median(replay_s)
        compressed_fps = args.frames / statistics.median(compressed_s)
        print(f"orcnn predict (PNG files -> results JSON): {predict_fps:.2f} frames/s "
              f"(runs: {', '.join(f'{s:.2f}' for s in predict_s)} s)")
        print(f"orcnn-replay raw bgr8 bag -> results bag:  {replay_fps:.2f} frames/s "
              f"(runs: {', '.join(f'{s:.2f}' for s in replay_s)} s)")
        print(f"orcnn-replay PNG CompressedImage bag:      {compressed_fps:.2f} frames/s "
              f"(ratio to predict {compressed_fps / predict_fps:.3f})")
        print(f"replay per-frame latency: mean {stats['latency_mean_ms']:.1f} ms, "
              f"p95 {stats['latency_p95_ms']:.1f} ms; {stats['instances_per_frame']:.1f} instances per frame")
        print(f"replay_vs_predict_ratio: {replay_fps / predict_fps:.3f}")


if __name__ == "__main__":
    main()

"""Visible-centroid error of the bundled model's 3D against the exact truth of unseen RGB-D scenes.

Writes ``--images`` synthetic 640x480 scenes (occlusion ``mid``, seed ``--seed``, unseen by the demo
model) twice, with exact depth and with the sensor model (``orcnn synth --depth`` / ``--depth-sensor``;
the colour images are the same), runs ``orcnn predict --depth --camera`` at the node's score
threshold 0.5, matches predictions to ground truth (``orcnn_core.depth.accuracy``) and prints the
error statistics. Targets: median <= 10 mm (exact depth) and <= 20 mm (sensor model).

    python bench/depth_accuracy.py [--images 100] [--seed 4242]

Last line: ``visible_centroid_median_error_mm_sensor: <value>``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from orcnn_core.data import load_annotations
from orcnn_core.data.synth import synthesize
from orcnn_core.data.synth_depth import SensorModel
from orcnn_core.depth.accuracy import centroid_accuracy
from orcnn_core.engine.predict import predict_folder

NODE_SCORE_THRESHOLD = 0.5


def measure(root: Path, images: int, seed: int, sensor: bool) -> dict:
    """Synthesize, predict with depth, and the accuracy summary of one setting."""
    data = synthesize(root, images=images, seed=seed, size=(640, 480), occlusion="mid", depth=True,
                      sensor=SensorModel() if sensor else None)
    out = root / "results.json"
    started = time.perf_counter()
    summary = predict_folder(data.image_root, out, device="cpu", score_threshold=NODE_SCORE_THRESHOLD,
                             gt=data.path, depth_dir=root / "depth", camera_file=data.path)
    accuracy = centroid_accuracy(json.loads(out.read_text()), load_annotations(data.path).images)
    return {**accuracy.summary(), "images_with_3d": summary.images_with_3d,
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sensor in (("exact", False), ("sensor", True)):
            rows[name] = measure(Path(tmp) / name, args.images, args.seed, sensor)
    print(f"bundled demo model, {args.images} unseen 640x480 scenes (seed {args.seed}, occlusion mid), "
          f"score threshold {NODE_SCORE_THRESHOLD}; predictions matched to ground truth (visible IoU > 0.5)")
    print(f"{'depth':<7} {'median mm':>9} {'p90 mm':>7} {'mean mm':>8} {'measured':>8} {'matched':>7} "
          f"{'GT objs':>7} {'no 3D':>5} {'target':>7}")
    for name, target in (("exact", 10.0), ("sensor", 20.0)):
        r = rows[name]
        print(f"{name:<7} {r['median_mm']:>9.2f} {r['p90_mm']:>7.2f} {r['mean_mm']:>8.2f} "
              f"{r['measured']:>8} {r['matched']:>7} {r['ground_truth']:>7} {r['matched_without_3d']:>5} "
              f"{'<= ' + str(target):>7}")
    print(f"visible_centroid_median_error_mm_exact: {rows['exact']['median_mm']:.2f}")
    print(f"visible_centroid_median_error_mm_sensor: {rows['sensor']['median_mm']:.2f}")


if __name__ == "__main__":
    main()

"""Throughput of the data package on one core: synthetic scene generation and AmodalDataset items.

Run: python bench/data.py [--seconds S]. Last line: ``synth_images_per_s: <value>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from orcnn_core.data import AmodalDataset, load_annotations, synth, write_annotations
from orcnn_core.data.images import write_png_rgb
from orcnn_core.data.transforms import build_transforms
from orcnn_core.structures import AmodalAnnotation, ImageRecord

WIDTH, HEIGHT = 640, 480


def rate(fn, seconds: float) -> tuple:
    """Calls per second of ``fn(i)`` over about ``seconds`` (after one warm-up call)."""
    fn(0)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 5:
        fn(count + 1)
        count += 1
    return count / (time.perf_counter() - start), count


def bench_synth(seconds: float) -> float:
    def one(i: int) -> None:
        scene = synth.generate_scene(np.random.default_rng([0, i]), classes=6, size=(WIDTH, HEIGHT))
        synth.scene_to_record(scene, i, f"{i:06d}.png")

    per_s, count = rate(one, seconds)
    print(f"synth generate_scene + RLE encode, {WIDTH}x{HEIGHT}, 6 classes, mid occlusion: "
          f"{per_s:.1f} images/s ({count} images)")
    return per_s


def ten_object_dataset(folder: Path, images: int = 8) -> Path:
    """Images with exactly 10 overlapping instances each, written in the project format."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(images):
        amodal = np.zeros((10, HEIGHT, WIDTH), np.uint8)
        for k in range(10):
            centre = (int(rng.integers(80, WIDTH - 80)), int(rng.integers(80, HEIGHT - 80)))
            axes = (int(rng.integers(30, 80)), int(rng.integers(30, 80)))
            cv2.ellipse(amodal[k], centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        boxes = [(0, HEIGHT, 0, WIDTH)] * 10
        _, visible = synth.resolve_visibility(amodal.astype(bool), boxes, 0.0, 1)
        anns = [AmodalAnnotation.from_masks(i * 10 + k + 1, 1, amodal[k], visible[k]) for k in range(10)]
        write_png_rgb(folder / f"{i}.png", synth.table_background(rng, HEIGHT, WIDTH))
        records.append(ImageRecord(image_id=i + 1, file_name=f"{i}.png", height=HEIGHT, width=WIDTH,
                                   annotations=anns))
    return write_annotations(records, [{"id": 1, "name": "object"}], folder / "annotations.json")


def bench_dataset(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        annotations = load_annotations(ten_object_dataset(Path(tmp)))
        for name, transforms in (("no transforms", None),
                                 ("train transforms (resize 240..320, flip)", build_transforms())):
            dataset = AmodalDataset(annotations, transforms=transforms)
            per_s, count = rate(lambda i, d=dataset: d[i % len(d)], seconds)
            print(f"AmodalDataset.__getitem__, {WIDTH}x{HEIGHT}, 10 objects, {name}: "
                  f"{per_s:.1f} images/s ({count} images)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    bench_dataset(args.seconds)
    per_s = bench_synth(args.seconds)
    print(f"synth_images_per_s: {per_s:.1f}")


if __name__ == "__main__":
    main()

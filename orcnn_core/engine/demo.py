"""``orcnn demo``: the bundled model (or any weights) on a few scenes, with overlays, a results JSON and
a printout of who hides whom. ``orcnn predict`` is in ``engine/predict.py``."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

DEMO_SEED = 2019          # scenes of ``orcnn demo`` (not the training seed 0 nor the validation seed 12345)
DEMO_SIZE = (320, 240)    # width, height: the size the bundled model was trained at


@dataclass
class ImageSummary:
    """What the demo prints for one image."""

    file_name: str
    lines: list = field(default_factory=list)


def describe(prediction, graph) -> list[str]:
    """One line per instance: class, score, occlusion rate and occluders (by instance number)."""
    lines = []
    for i in range(len(prediction)):
        occluders = ", ".join(f"#{j} ({overlap:.0%})"
                              for j, overlap in zip(graph.occluder_ids[i], graph.occluder_overlap[i]))
        lines.append(f"  #{i} {prediction.class_names[i]:<10} score {prediction.scores[i]:.2f}  "
                     f"occluded {graph.occlusion_rate[i]:5.1%}"
                     + (f"  by {occluders}" if occluders
                        else "  (no occluder)" if graph.occlusion_rate[i] > 0 else "  (not occluded)")
                     + ("  truncated" if bool(graph.truncated[i]) else ""))
    if graph.pick_order:
        lines.append("  pick order: " + " -> ".join(f"#{i}" for i in graph.pick_order))
    return lines


def _demo_scenes(count: int, classes: int, seed: int) -> list[tuple[str, np.ndarray]]:
    from orcnn_core.data import synth

    scenes = []
    for index in range(count):
        scene = synth.generate_scene(np.random.default_rng([seed, index]), classes=classes, size=DEMO_SIZE)
        scenes.append((f"{index:06d}.png", scene.image))
    return scenes


def run_demo(out_dir: str | Path = "demo_out", images_dir: Optional[str | Path] = None, synth_count: int = 4,
             weights: Optional[str | Path] = None, seed: int = DEMO_SEED, device: str = "auto",
             score_threshold: Optional[float] = None, print_fn=print,
             analysis=None) -> list[ImageSummary]:
    """Run a model on images (a folder, or fresh synthetic scenes) and write overlays + results JSON.

    ``analysis`` is the ``AnalysisConfig`` of each frame (default: the node's, layering on)."""
    from orcnn_core.analysis import AnalysisConfig, analyze, frame_results
    from orcnn_core.data.images import write_png_rgb
    from orcnn_core.engine.predict import iter_images
    from orcnn_core.engine.predictor import load_predictor
    from orcnn_core.errors import CauseCounter
    from orcnn_core.fileio import atomic_write_text
    from orcnn_core.viz import READABLE_LONG_SIDE, draw_overlay

    predictor = load_predictor(weights, device=device, score_threshold=score_threshold)
    analysis = analysis or AnalysisConfig()
    out_dir = Path(out_dir)
    skipped = CauseCounter()
    if images_dir is not None:
        found = iter_images(Path(images_dir), predictor.config, skipped)
        sources = ((name, image) for name, _, image in found)
    else:
        scenes = _demo_scenes(synth_count, min(predictor.config.num_classes, 10), seed)
        for name, image in scenes:
            write_png_rgb(out_dir / "images" / name, image)
        sources = iter(scenes)
    summaries, results = [], []
    for image_id, (name, image) in enumerate(sources, start=1):
        frame = analyze(predictor(image), analysis)
        overlay = draw_overlay(image, frame, min_long_side=READABLE_LONG_SIDE)
        write_png_rgb(out_dir / "overlays" / Path(name).with_suffix(".png"), overlay)
        results.extend(frame_results(frame, image_id, name))
        summary = ImageSummary(name, describe(frame.prediction, frame.graph))
        print_fn(f"{name}: {len(frame)} instance(s)")
        for line in summary.lines:
            print_fn(line)
        summaries.append(summary)
    atomic_write_text(out_dir / "results.json", json.dumps(results))
    print_fn(f"wrote {len(summaries)} overlay(s) to {out_dir / 'overlays'} and {out_dir / 'results.json'}"
             + (f"; skipped {sum(skipped.values())} image(s): {skipped.format()}" if skipped else ""))
    return summaries

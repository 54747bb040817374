"""The jobs around a trained model: ``orcnn demo`` (overlays of the bundled model on synthetic scenes)
and ``orcnn predict`` (a folder of images -> the project's results JSON)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from orcnn_core.errors import DatasetError, WeightsError

if TYPE_CHECKING:
    from orcnn_core.engine.predictor import Predictor

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
BUNDLED_WEIGHTS = WEIGHTS_DIR / "demo_small.safetensors"
DEMO_SEED = 2019          # scenes of ``orcnn demo`` (not the training seed 0 nor the validation seed 12345)
DEMO_SIZE = (320, 240)    # width, height: the size the bundled model was trained at
def bundled_weights() -> Path:
    """Path of the bundled demo model; WeightsError when the file is missing."""
    if not BUNDLED_WEIGHTS.is_file() or not BUNDLED_WEIGHTS.with_suffix(".json").is_file():
        raise WeightsError(f"the bundled demo model is missing: {BUNDLED_WEIGHTS} (+ .json sidecar); "
                           "reinstall orcnn, or pass --weights PATH to a trained model "
                           "(see orcnn_core/weights/README.md to rebuild it)")
    return BUNDLED_WEIGHTS


def load_predictor(weights: str | Path | None = None, **kwargs) -> Predictor:
    """``Predictor.from_weights(weights, **kwargs)``; ``None`` loads the bundled demo model.

    WeightsError (naming the file) when the weights or their ``.json`` sidecar are missing.
    """
    from orcnn_core.engine.predictor import Predictor

    return Predictor.from_weights(Path(weights) if weights is not None else bundled_weights(), **kwargs)


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by relative path."""
    from orcnn_core.data.images import list_images as list_image_files

    if not Path(folder).is_dir():
        raise DatasetError(f"--images: folder not found: {folder}")
    return list_image_files(folder, recursive=True)


def ids_from_ground_truth(gt_path: str | Path) -> dict[str, int]:
    """``file_name -> image_id`` of an annotation file: full relative names, and unambiguous base names."""
    from orcnn_core.data import load_annotations
    from orcnn_core.data.records import index_by_file_name

    by_path, by_basename = index_by_file_name(load_annotations(gt_path).images)
    ids = {name: int(record.image_id) for name, record in by_basename.items() if record is not None}
    ids.update({name: int(record.image_id) for name, record in by_path.items()})
    return ids


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
             score_threshold: Optional[float] = None, print_fn=print) -> list[ImageSummary]:
    """Run a model on images (a folder, or fresh synthetic scenes) and write overlays + results JSON."""
    from orcnn_core.data.images import read_image_rgb, write_png_rgb
    from orcnn_core.occlusion import compute_occlusion_graph
    from orcnn_core.structures import prediction_to_results
    from orcnn_core.viz import READABLE_LONG_SIDE, draw_overlay

    predictor = load_predictor(weights, device=device, score_threshold=score_threshold)
    out_dir = Path(out_dir)
    if images_dir is not None:
        folder = Path(images_dir)
        sources = [(p.relative_to(folder).as_posix(), p) for p in list_images(folder)]
    else:
        classes = min(predictor.config.num_classes, 10)
        sources = _demo_scenes(synth_count, classes, seed)
        for name, image in sources:
            write_png_rgb(out_dir / "images" / name, image)
    summaries, results = [], []
    for image_id, (name, source) in enumerate(sources, start=1):
        try:
            image = source if isinstance(source, np.ndarray) else read_image_rgb(source)
        except DatasetError as exc:
            logger.warning("skipped %s: %s", name, exc)
            continue
        prediction = predictor(image)
        graph = compute_occlusion_graph(prediction)
        overlay = draw_overlay(image, prediction, graph, min_long_side=READABLE_LONG_SIDE)
        write_png_rgb(out_dir / "overlays" / Path(name).with_suffix(".png"), overlay)
        results.extend(prediction_to_results(prediction, image_id, name))
        summary = ImageSummary(name, describe(prediction, graph))
        print_fn(f"{name}: {len(prediction)} instance(s)")
        for line in summary.lines:
            print_fn(line)
        summaries.append(summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results))
    print_fn(f"wrote {len(summaries)} overlay(s) to {out_dir / 'overlays'} and {out_dir / 'results.json'}")
    return summaries


def predict_folder(images_dir: str | Path, out_json: str | Path, weights: Optional[str | Path] = None,
                   viz_dir: Optional[str | Path] = None, batch_size: int = 4, device: str = "auto",
                   score_threshold: Optional[float] = None, gt: Optional[str | Path] = None) -> int:
    """Predict every image of a folder into a results JSON (``orcnn eval`` input); returns images done."""
    from orcnn_core.data.images import read_image_rgb, write_png_rgb
    from orcnn_core.structures import prediction_to_results

    folder = Path(images_dir)
    paths = list_images(folder)
    if not paths:
        raise DatasetError(f"--images: no png/jpg/jpeg/bmp files in {folder}")
    gt_ids = ids_from_ground_truth(gt) if gt is not None else None
    predictor = load_predictor(weights, device=device, score_threshold=score_threshold)
    results: list[dict] = []
    done = 0
    pending: list[tuple[int, str, np.ndarray]] = []

    def flush() -> None:
        nonlocal done
        if not pending:
            return
        predictions = predictor.predict_batch([image for _, _, image in pending], batch_size=batch_size)
        for (image_id, name, image), prediction in zip(pending, predictions):
            results.extend(prediction_to_results(prediction, image_id, name))
            if viz_dir is not None:
                from orcnn_core.viz import READABLE_LONG_SIDE, draw_overlay

                overlay = draw_overlay(image, prediction, min_long_side=READABLE_LONG_SIDE)
                write_png_rgb(Path(viz_dir) / Path(name).with_suffix(".png"), overlay)
        done += len(pending)
        pending.clear()

    for index, path in enumerate(paths, start=1):
        name = path.relative_to(folder).as_posix()
        image_id = index
        if gt_ids is not None:
            image_id = gt_ids.get(name, gt_ids.get(path.name))
            if image_id is None:
                logger.warning("skipped %s: not an image of %s", name, gt)
                continue
        try:
            image = read_image_rgb(path)
        except DatasetError as exc:  # one bad file must not stop a long run
            logger.warning("skipped %s: %s", name, exc)
            continue
        pending.append((image_id, name, image))
        if len(pending) >= batch_size:
            flush()
    flush()
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results))
    logger.info("%d image(s), %d instance(s) -> %s", done, len(results), out_json)
    return done


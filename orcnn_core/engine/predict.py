"""``orcnn predict``: every image of a folder to the project's results JSON (``orcnn eval`` input).

A long run must not die on one bad file: an image that cannot be read, is too large or too small
for the model, or makes the model fail is skipped and counted by cause; every good image's
results are written (atomically: the file is the old one or the whole new one). The run fails
(exit 2) only when no image at all could be used.

With ``--depth DIR --camera FILE`` each image's aligned depth (``DIR/NAME.png``) places every instance in
3D: a ``geometry_3d`` entry per result (``Geometry3D.instance_json``). An image whose depth is missing
or unusable keeps its 2D results with ``{"has_3d": false}``, counted by cause.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from orcnn_core.errors import CauseCounter, ConfigError, DatasetError, OrcnnError

logger = logging.getLogger(__name__)


@dataclass
class PredictSummary:
    """What one ``orcnn predict`` run did."""

    images_found: int = 0
    images_done: int = 0
    instances: int = 0
    skipped: CauseCounter = field(default_factory=CauseCounter)
    depth: bool = False           # --depth was given
    images_with_3d: int = 0
    no_3d: CauseCounter = field(default_factory=CauseCounter)  # images done without 3D, by cause

    def format(self, out: Path) -> str:
        """One line for the user; names the skip causes when there were any."""
        line = f"{self.images_done} of {self.images_found} image(s), {self.instances} instance(s) -> {out}"
        if self.skipped:
            line += f"; skipped {sum(self.skipped.values())}: {self.skipped.format()}"
        if self.depth:
            line += f"; 3D for {self.images_with_3d} image(s)"
            if self.no_3d:
                line += f", without 3D: {self.no_3d.format()}"
        return line


def skip_cause(exc: BaseException, default: str) -> str:
    """The short cause key of a skipped input (the error's own ``cause`` when it has one)."""
    return str(getattr(exc, "cause", "") or default)


def iter_images(folder: Path, config, skipped: CauseCounter) -> Iterator[tuple[str, Path, np.ndarray]]:
    """``(relative name, path, RGB image)`` of every usable image under ``folder``, in name order.

    An image that cannot be decoded, or that the model cannot take (``check_image`` with the model's
    ``config``), is logged once per cause, counted in ``skipped`` and left out.
    """
    from orcnn_core.data.images import list_images, read_image_rgb
    from orcnn_core.engine.predictor import check_image

    for path in list_images(folder):
        name = path.relative_to(folder).as_posix()
        try:
            image = check_image(read_image_rgb(path), config=config)
        except OrcnnError as exc:  # one bad file must not stop a long run
            cause = skip_cause(exc, "unreadable" if isinstance(exc, DatasetError) else "invalid_image")
            if skipped.add(cause):
                logger.warning("skipped %s: %s [%s]; further images with this cause are only counted",
                               name, exc, cause)
            continue
        yield name, path, image


def ids_from_ground_truth(gt_path: str | Path) -> dict[str, int]:
    """``file_name -> image_id`` of an annotation file: full relative names, and unambiguous base names."""
    from orcnn_core.data import load_annotations
    from orcnn_core.data.records import index_by_file_name

    by_path, by_basename = index_by_file_name(load_annotations(gt_path).images)
    ids = {name: int(record.image_id) for name, record in by_basename.items() if record is not None}
    ids.update({name: int(record.image_id) for name, record in by_path.items()})
    return ids


def predict_folder(images_dir: str | Path, out_json: str | Path, weights: Optional[str | Path] = None,
                   viz_dir: Optional[str | Path] = None, batch_size: int = 4, device: str = "auto",
                   score_threshold: Optional[float] = None, gt: Optional[str | Path] = None,
                   analysis=None, depth_dir: Optional[str | Path] = None,
                   camera_file: Optional[str | Path] = None) -> PredictSummary:
    """Predict every usable image of a folder into a results JSON; DatasetError when none was usable.

    Image ids: from the ground truth's file names with ``gt`` (images it does not list are skipped),
    else the image's position in the sorted listing, from 1. Each frame is analysed with
    ``analysis`` (an ``AnalysisConfig``; default the node's, layering on), so the results are what
    the node would publish. ``depth_dir`` + ``camera_file``: 3D per instance (module docstring).
    """
    from orcnn_core.analysis import AnalysisConfig, analyze, frame_results
    from orcnn_core.data.images import list_images, write_png_rgb
    from orcnn_core.engine.predictor import load_predictor
    from orcnn_core.fileio import atomic_write_text
    from orcnn_core.viz import READABLE_LONG_SIDE, draw_overlay

    folder = Path(images_dir)
    if (depth_dir is None) != (camera_file is None):
        raise ConfigError("--depth and --camera go together")
    cameras = None
    if camera_file is not None:
        from orcnn_core.depth.camera import read_camera_file

        cameras = read_camera_file(camera_file)
        if not Path(depth_dir).is_dir():
            raise DatasetError(f"--depth: folder not found: {depth_dir}")
    paths = list_images(folder)
    if not paths:
        raise DatasetError(f"--images: no image files in {folder}")
    positions = {p.relative_to(folder).as_posix(): k for k, p in enumerate(paths, start=1)}
    gt_ids = ids_from_ground_truth(gt) if gt is not None else None
    predictor = load_predictor(weights, device=device, score_threshold=score_threshold)
    analysis = analysis or AnalysisConfig()
    summary = PredictSummary(images_found=len(paths), depth=cameras is not None)
    results: list[dict] = []
    pending: list[tuple[int, str, np.ndarray]] = []

    def depth_for(name: str, image: np.ndarray):
        """The image's DepthFrame, or None (counted by cause) when its depth is missing or unusable."""
        from orcnn_core.depth.depth_io import DepthError, load_depth_frame

        try:
            return load_depth_frame(depth_dir, name, cameras, image.shape[:2])
        except DepthError as exc:  # the image keeps its 2D results
            if summary.no_3d.add(exc.cause):
                logger.warning("%s: no 3D: %s [%s]; further images with this cause are only counted",
                               name, exc, exc.cause)
            return None

    def finish(image_id: int, name: str, image: np.ndarray, prediction) -> None:
        depth = depth_for(name, image) if cameras is not None else None
        frame = analyze(prediction, analysis, depth=depth)
        results.extend(frame_results(frame, image_id, name, with_3d=cameras is not None))
        summary.images_with_3d += frame.geometry is not None
        if viz_dir is not None:
            overlay = draw_overlay(image, frame, min_long_side=READABLE_LONG_SIDE)
            write_png_rgb(Path(viz_dir) / Path(name).with_suffix(".png"), overlay)
        summary.images_done += 1
        summary.instances += len(frame)

    def flush() -> None:
        if not pending:
            return
        try:
            predictions = predictor.predict_batch([image for _, _, image in pending], batch_size=batch_size)
        except Exception:  # a model failure on one image must not cost the others: retry one by one
            predictions = None
        if predictions is None:
            for image_id, name, image in pending:
                try:
                    finish(image_id, name, image, predictor(image))
                except Exception as exc:
                    cause = f"error:{type(exc).__name__}"
                    if summary.skipped.add(cause):
                        logger.error("skipped %s: the model failed: %s [%s]", name, exc, cause)
        else:
            for (image_id, name, image), prediction in zip(pending, predictions):
                finish(image_id, name, image, prediction)
        pending.clear()

    for name, path, image in iter_images(folder, predictor.config, summary.skipped):
        image_id = positions[name]
        if gt_ids is not None:
            image_id = gt_ids.get(name, gt_ids.get(path.name))
            if image_id is None:
                if summary.skipped.add("not_in_ground_truth"):
                    logger.warning("skipped %s: not an image of %s", name, gt)
                continue
        pending.append((image_id, name, image))
        if len(pending) >= batch_size:
            flush()
    flush()
    if summary.images_done == 0:
        raise DatasetError(f"--images: no image of {folder} could be used ({summary.skipped.format()})")
    atomic_write_text(out_json, json.dumps(results))
    return summary

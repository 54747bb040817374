"""Model predictions of a dataset, computed once and kept on disk (a helper of scripts/order_check.py).

The cache holds each instance's three probability masks as uint8 crops (``round(255 p)``) of the
region the model pasted them into, so a cached ``Prediction`` is rebuilt bit-exactly at mask
threshold 0.5 (``round(255 p) >= 128`` exactly when ``p >= 0.5``) without rerunning the model.
The cache file is keyed by the dataset folder, the weights file and the score threshold.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from orcnn_core.structures import ImageRecord, Prediction

MASK_KEYS = ("amodal_masks", "visible_masks", "invisible_masks")


def _cache_file(cache_dir: Path, data_dir: Path, weights: Path, score_threshold: float) -> Path:
    """One file per (dataset, weights, threshold); the weights' bytes are part of the key."""
    digest = hashlib.sha256()
    digest.update(str(data_dir.resolve()).encode())
    digest.update(weights.read_bytes())
    digest.update(f"{score_threshold:.6f}".encode())
    return cache_dir / f"{data_dir.name}_{digest.hexdigest()[:12]}.npz"


def _pack(predictions: Iterable[Prediction]) -> dict:
    """Flat arrays of every image's instances, probabilities as uint8 crops (consumes an iterator,
    so that only one image's full-size probabilities are in memory at a time)."""
    counts, boxes, meta, scores, amodal_boxes = [], [], [], [], []
    crops: dict = {k: [] for k in MASK_KEYS}
    for prediction in predictions:
        counts.append(len(prediction))
        scores.append(prediction.scores)
        amodal_boxes.append(prediction.amodal_boxes)
        for i in range(len(prediction)):
            support = (prediction.amodal_masks[i] > 0) | (prediction.visible_masks[i] > 0) \
                | (prediction.invisible_masks[i] > 0)
            rows, cols = np.flatnonzero(support.any(1)), np.flatnonzero(support.any(0))
            y0, y1 = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, 0)
            x0, x1 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, 0)
            boxes.append((x0, y0, x1, y1))
            for key in MASK_KEYS:
                crop = getattr(prediction, key)[i, y0:y1, x0:x1]
                crops[key].append(np.rint(crop * 255.0).astype(np.uint8).ravel())
            meta.append((int(prediction.labels[i]), int(prediction.category_ids[i])))
    arrays = {"counts": np.array(counts, np.int64), "boxes": np.array(boxes, np.int64).reshape(-1, 4),
              "labels": np.array(meta, np.int64).reshape(-1, 2),
              "scores": np.concatenate(scores or [np.zeros(0, np.float32)]),
              "amodal_boxes": np.concatenate(amodal_boxes or [np.zeros((0, 4), np.float32)])}
    for key in MASK_KEYS:
        arrays[key] = np.concatenate(crops[key] or [np.zeros(0, np.uint8)])
    return arrays


def _unpack(arrays: dict, records: list[ImageRecord], class_names: list, as_bool: bool) -> list[Prediction]:
    predictions, offset = [], {k: 0 for k in MASK_KEYS}
    index = 0
    for record, count in zip(records, arrays["counts"].tolist()):
        height, width = record.height, record.width
        masks = {k: np.zeros((count, height, width), bool if as_bool else np.float32) for k in MASK_KEYS}
        for n in range(count):
            x0, y0, x1, y1 = arrays["boxes"][index + n].tolist()
            size = (y1 - y0) * (x1 - x0)
            for key in MASK_KEYS:
                crop = arrays[key][offset[key]:offset[key] + size].reshape(y1 - y0, x1 - x0)
                offset[key] += size
                masks[key][n, y0:y1, x0:x1] = crop >= 128 if as_bool else crop / np.float32(255.0)
        labels = arrays["labels"][index:index + count]
        predictions.append(Prediction(
            amodal_boxes=arrays["amodal_boxes"][index:index + count].astype(np.float32),
            visible_boxes=np.zeros((count, 4), np.float32),  # not used by the order check
            labels=labels[:, 0].copy(), category_ids=labels[:, 1].copy(),
            class_names=[class_names[k - 1] for k in labels[:, 0]],
            scores=arrays["scores"][index:index + count].astype(np.float32),
            image_size=(height, width), **masks))
        index += count
    return predictions


def cached_predictions(data_dir: str | Path, weights: str | Path, score_threshold: float,
                       cache_dir: Optional[str | Path], as_bool: bool = True,
                       threads: int = 2) -> tuple[list[ImageRecord], list, list[Prediction]]:
    """(records, categories, predictions) of an ``orcnn synth`` folder; predictions from the cache
    when there is one, else from the model (then written to the cache)."""
    import torch

    from orcnn_core.data import load_annotations
    from orcnn_core.data.images import read_image_rgb
    from orcnn_core.engine.predictor import Predictor
    from orcnn_core.model.builder import load_weights

    data_dir, weights = Path(data_dir), Path(weights)
    dataset = load_annotations(data_dir)
    records = list(dataset.images)
    _, config = load_weights(weights)
    path = None if cache_dir is None else _cache_file(Path(cache_dir), data_dir, weights, score_threshold)
    if path is not None and path.is_file():
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        return records, dataset.categories, _unpack(arrays, records, list(config.class_names), as_bool)
    torch.set_num_threads(threads)
    predictor = Predictor.from_weights(weights, device="cpu", score_threshold=score_threshold)
    probabilities = (predictor(read_image_rgb(dataset.image_path(r)), return_probabilities=True)
                     for r in records)
    arrays = _pack(probabilities)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **arrays)
    return records, dataset.categories, _unpack(arrays, records, list(config.class_names), as_bool)

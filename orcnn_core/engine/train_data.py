"""What training reads: the datasets a config's ``data:`` section describes, and the resumable sampler.

``build_train_data`` turns the config into a ``TrainData`` (training dataset + validation split);
``infinite_batches`` is the endless, rank-aware, exactly resumable stream of batches the loop draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from orcnn_core.engine.config import TrainConfig
from orcnn_core.errors import ConfigError, DatasetError
from orcnn_core.structures import ImageRecord


class TrainData:
    """The training dataset plus the validation split (records, categories and a way to get pixels)."""

    def __init__(self, train_dataset: torch.utils.data.Dataset, val_records: list[ImageRecord],
                 val_categories: list[dict[str, Any]], val_image_fn):
        self.train_dataset = train_dataset
        self.val_records = val_records
        self.val_categories = val_categories
        self._val_image_fn = val_image_fn

    @property
    def has_val(self) -> bool:
        return bool(self.val_records)

    def val_image(self, record: ImageRecord) -> np.ndarray:
        """HxWx3 uint8 RGB pixels of a validation record."""
        return self._val_image_fn(record)


def _train_transforms(cfg: TrainConfig):
    from orcnn_core.data.transforms import build_transforms

    # Resizing is the model's job (GeneralizedRCNNTransform); only flip/jitter here.
    transforms = build_transforms(cfg.data, train=True, resize=False)
    return transforms if transforms.transforms else None


def synthetic_records(count: int, seed: int, classes: int, size: Sequence[int], occlusion: str
                      ) -> tuple[list[ImageRecord], list[np.ndarray]]:
    """Scenes ``0..count-1`` of ``orcnn synth --seed SEED`` (same ids and file names), generated in memory."""
    from orcnn_core.data import synth

    records, images, next_ann_id = [], [], 1
    for index in range(count):
        scene = synth.generate_scene(np.random.default_rng([seed, index]), classes=classes, size=tuple(size),
                                     occlusion=occlusion)
        record = synth.scene_to_record(scene, index + 1, f"{index:06d}.png", next_ann_id)
        next_ann_id += len(record.annotations)
        records.append(record)
        images.append(scene.image)
    return records, images


def build_train_data(cfg: TrainConfig) -> TrainData:
    """Datasets the ``data:`` section describes; a missing file is a DatasetError naming it."""
    from orcnn_core.data import AmodalDataset, SyntheticAmodalDataset, load_annotations, synth
    from orcnn_core.data.images import read_image_rgb

    model_cfg = cfg.model
    transforms = _train_transforms(cfg)
    if cfg.data.synthetic is not None:
        spec = cfg.data.synthetic
        if spec.classes != model_cfg.num_classes:
            raise ConfigError(f"data.synthetic.classes ({spec.classes}) must equal model.num_classes "
                              f"({model_cfg.num_classes})")
        train_set = SyntheticAmodalDataset(spec.images, seed=spec.seed, classes=spec.classes, size=spec.size,
                                           occlusion=spec.occlusion, transforms=transforms)
        val_records, val_images = synthetic_records(spec.val_images, spec.val_seed, spec.classes, spec.size,
                                                    spec.occlusion)
        categories = synth.categories(spec.classes)
        by_id = {r.image_id: image for r, image in zip(val_records, val_images)}
        return TrainData(train_set, val_records, categories, lambda record: by_id[record.image_id])

    def load(split: str, spec) -> Any:
        path = Path(spec.annotations)
        if not path.exists():
            raise DatasetError(f"data.{split}.annotations: file not found: {path}")
        annotations = load_annotations(path, None if spec.format == "auto" else spec.format)
        if spec.image_root:
            root = Path(spec.image_root)
            if not root.is_dir():
                raise DatasetError(f"data.{split}.image_root: folder not found: {root}")
            annotations.image_root = root
        return annotations

    train_ann = load("train", cfg.data.train)
    known = {int(c["id"]) for c in train_ann.categories}
    missing = [c for c in model_cfg.category_ids if c not in known]
    if missing:
        raise ConfigError(f"model.category_ids {missing} are not categories of {cfg.data.train.annotations} "
                          f"(it has {sorted(known)})")
    train_set = AmodalDataset(train_ann, category_ids=model_cfg.category_ids, transforms=transforms)
    if cfg.data.val is None:
        return TrainData(train_set, [], [], lambda record: None)
    val_ann = load("val", cfg.data.val)
    categories = [c for c in val_ann.categories if int(c["id"]) in set(model_cfg.category_ids)]
    return TrainData(train_set, list(val_ann.images), categories,
                     lambda record: read_image_rgb(val_ann.image_path(record)))


class ResumableSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices, a fresh permutation per epoch, fixed by ``seed``.

    Position ``p`` of the global stream is a pure function of ``(seed, p)``; iteration ``i`` of rank
    ``r`` reads positions ``(i * world_size + r) * batch .. + batch``, so a run resumed at iteration
    ``i`` sees exactly the samples the uninterrupted run would have seen.
    """

    def __init__(self, size: int, batch_per_rank: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_iter: int = 0):
        if size < 1:
            raise DatasetError("the training dataset is empty")
        self.size, self.batch, self.seed = size, batch_per_rank, seed
        self.rank, self.world_size, self.start_iter = rank, world_size, start_iter
        self._epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.size)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=generator).tolist()
        return self._perm[offset]

    def __iter__(self) -> Iterator[int]:
        iteration = self.start_iter
        while True:
            first = (iteration * self.world_size + self.rank) * self.batch
            for position in range(first, first + self.batch):
                yield self._index(position)
            iteration += 1


def infinite_batches(data: TrainData, batch_per_rank: int, *, seed: int, rank: int, world_size: int,
                     start_iter: int, num_workers: int) -> Iterator[tuple[list, list]]:
    """Endless ``(images, targets)`` batches for this process starting at ``start_iter``."""
    from orcnn_core.data import collate

    sampler = ResumableSampler(len(data.train_dataset), batch_per_rank, seed, rank, world_size, start_iter)
    loader = torch.utils.data.DataLoader(
        data.train_dataset, batch_size=batch_per_rank, sampler=sampler, num_workers=num_workers,
        collate_fn=collate, persistent_workers=num_workers > 0,
        # Own generator: creating the loader must not draw from the global torch RNG (exact resume).
        generator=torch.Generator().manual_seed(seed * 7919 + rank))
    return iter(loader)

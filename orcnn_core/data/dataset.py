"""Torch datasets yielding ``(image, target)`` in the model's training format (docs/architecture.md)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset

from orcnn_core import masks as mask_ops
from orcnn_core.data.images import read_image_rgb
from orcnn_core.data.records import AmodalAnnotations, Where
from orcnn_core.structures import ImageRecord

Transform = Callable[[dict], dict]


def decode_stack(rles: Sequence[dict], height: int, width: int) -> np.ndarray:
    """NxHxW uint8 stack of compressed RLEs, in one batched pycocotools decode."""
    if not rles:
        return np.zeros((0, height, width), dtype=np.uint8)
    stacked = mask_utils.decode([mask_ops.compress(r) for r in rles])  # (H, W, N), Fortran order
    return np.ascontiguousarray(stacked.transpose(2, 0, 1))


def sample_to_example(sample: dict, image_id: object) -> tuple:
    """A numpy sample (image, amodal/visible masks, labels) as ``(image tensor, target dict)``.

    Boxes are taken from the (transformed) masks; instances whose amodal mask vanished are dropped.
    """
    amodal = sample["amodal_masks"]
    boxes = mask_ops.mask_boxes(amodal)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    amodal, visible = amodal[keep], sample["visible_masks"][keep]
    image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1).float().div_(255.0)
    target = {
        "boxes": torch.from_numpy(boxes[keep]),
        "labels": torch.as_tensor(np.asarray(sample["labels"], dtype=np.int64)[keep]),
        "amodal_masks": torch.from_numpy(np.ascontiguousarray(amodal)),
        "visible_masks": torch.from_numpy(np.ascontiguousarray(visible)),
        "visible_boxes": torch.from_numpy(mask_ops.mask_boxes(visible)),
        "image_id": image_id,
    }
    return image, target


def collate(batch: Sequence[tuple]) -> tuple:
    """``[(image, target), ...]`` -> ``(list of images, list of targets)`` for detection models."""
    images, targets = [], []
    for image, target in batch:
        images.append(image)
        targets.append(target)
    return images, targets


class AmodalDataset(Dataset):
    """Images and amodal targets of loaded annotations; labels 1..K follow ``category_ids`` order.

    Crowd annotations and annotations of categories not in ``category_ids`` are left out.
    """

    def __init__(self, annotations: AmodalAnnotations, category_ids: Optional[Sequence[int]] = None,
                 transforms: Optional[Transform] = None):
        self.annotations = annotations
        self.category_ids = [int(c) for c in (category_ids if category_ids is not None
                                              else [c["id"] for c in annotations.categories])]
        self.label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        self.transforms = transforms
        self.records: list = list(annotations.images)

    def __len__(self) -> int:
        return len(self.records)

    def load_sample(self, index: int) -> dict:
        """The untransformed numpy sample of record ``index``."""
        record: ImageRecord = self.records[index]
        path = self.annotations.image_path(record)
        image = read_image_rgb(path)
        if image.shape[:2] != (record.height, record.width):
            raise Where(path, record.image_id).error(
                f"image is {image.shape[0]}x{image.shape[1]} (HxW) but the annotations say "
                f"{record.height}x{record.width}")
        anns = [a for a in record.annotations if not a.iscrowd and a.category_id in self.label_of]
        amodal = decode_stack([a.amodal_rle for a in anns], record.height, record.width)
        visible = decode_stack([a.visible_rle for a in anns], record.height, record.width)
        return {"image": image, "amodal_masks": amodal, "visible_masks": visible,
                "labels": [self.label_of[a.category_id] for a in anns]}

    def __getitem__(self, index: int) -> tuple:
        sample = self.load_sample(index)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample_to_example(sample, self.records[index].image_id)


class SyntheticAmodalDataset(Dataset):
    """Procedural scenes generated on the fly (``synth.generate_scene``); item ``i`` is fixed by
    ``(seed, i)``, so the dataset is reproducible without writing files."""

    def __init__(self, length: int, seed: int = 0, classes: int = 6, size: tuple = (320, 240),
                 occlusion: str = "mid", transforms: Optional[Transform] = None, **scene_kwargs):
        from orcnn_core.data import synth

        self.length, self.seed = int(length), int(seed)
        self.scene_kwargs = dict(classes=classes, size=tuple(size), occlusion=occlusion, **scene_kwargs)
        self.category_ids = list(range(1, classes + 1))
        self.class_names = synth.class_names(classes)
        self.transforms = transforms

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple:
        from orcnn_core.data import synth

        if not 0 <= index < self.length:
            raise IndexError(index)
        scene = synth.generate_scene(np.random.default_rng([self.seed, index]), **self.scene_kwargs)
        sample = {"image": scene.image, "amodal_masks": scene.amodal_masks.astype(np.uint8),
                  "visible_masks": scene.visible_masks.astype(np.uint8), "labels": list(scene.category_ids)}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample_to_example(sample, index + 1)  # image ids as `orcnn synth` writes them

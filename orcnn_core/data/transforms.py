"""Training transforms on numpy samples, keeping image, amodal and visible masks aligned.

A sample is a dict: ``image`` HxWx3 uint8 RGB, ``amodal_masks`` and ``visible_masks`` NxHxW uint8.
Geometric transforms move both mask stacks with the image (nearest-neighbour, so masks stay binary
and visible stays inside amodal); boxes are derived from the masks afterwards by the dataset, which
keeps them exactly consistent. Randomness comes from torch so that ``torch.manual_seed`` and
DataLoader worker seeding govern it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np
import torch

Sample = dict


def _uniform(low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand(()).item())


def resize_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an NxHxW uint8 mask stack."""
    if len(masks) == 0:
        return np.zeros((0, height, width), dtype=np.uint8)
    out = np.empty((len(masks), height, width), dtype=np.uint8)
    for start in range(0, len(masks), 512):  # cv2 handles at most 512 channels per call
        chunk = np.ascontiguousarray(masks[start:start + 512].transpose(1, 2, 0))
        resized = cv2.resize(chunk, (width, height), interpolation=cv2.INTER_NEAREST)
        out[start:start + 512] = resized.reshape(height, width, -1).transpose(2, 0, 1)
    return out


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class ResizeShortestEdge:
    """Scale so the short side is ``min_size`` (random choice if a sequence), long side <= ``max_size``."""

    def __init__(self, min_size: Union[int, Sequence[int]], max_size: int):
        self.min_sizes = [int(min_size)] if isinstance(min_size, (int, float)) else [int(s) for s in min_size]
        self.max_size = int(max_size)

    def target_size(self, height: int, width: int) -> tuple:
        """``(height, width)`` after resizing an image of the given size."""
        short = self.min_sizes[int(torch.randint(len(self.min_sizes), ()).item())]
        scale = min(short / min(height, width), self.max_size / max(height, width))
        return max(1, int(round(height * scale))), max(1, int(round(width * scale)))

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample["image"].shape[:2]
        new_h, new_w = self.target_size(height, width)
        if (new_h, new_w) == (height, width):
            return sample
        out = dict(sample)
        out["image"] = cv2.resize(sample["image"], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        out["amodal_masks"] = resize_masks(sample["amodal_masks"], new_h, new_w)
        out["visible_masks"] = resize_masks(sample["visible_masks"], new_h, new_w)
        return out


class HorizontalFlip:
    """Mirror image and masks left-right (always; wrap in ``RandomApply`` for a probability)."""

    def __call__(self, sample: Sample) -> Sample:
        out = dict(sample)
        out["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
        out["amodal_masks"] = np.ascontiguousarray(sample["amodal_masks"][:, :, ::-1])
        out["visible_masks"] = np.ascontiguousarray(sample["visible_masks"][:, :, ::-1])
        return out


class RandomApply:
    """Apply ``transform`` with probability ``p``."""

    def __init__(self, transform: Callable[[Sample], Sample], p: float = 0.5):
        self.transform, self.p = transform, float(p)

    def __call__(self, sample: Sample) -> Sample:
        return self.transform(sample) if torch.rand(()).item() < self.p else sample


class ColorJitter:
    """Random brightness, contrast and saturation change of the image only (masks untouched)."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2):
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"].astype(np.float32)
        image *= _uniform(1 - self.brightness, 1 + self.brightness)
        mean = image.mean()
        image = (image - mean) * _uniform(1 - self.contrast, 1 + self.contrast) + mean
        gray = image.mean(axis=2, keepdims=True)
        image = (image - gray) * _uniform(1 - self.saturation, 1 + self.saturation) + gray
        out = dict(sample)
        out["image"] = np.clip(image, 0, 255).astype(np.uint8)
        return out


@dataclass
class TransformConfig:
    """Data augmentation settings (a config section): sizes in pixels, probabilities in [0, 1]."""

    min_size: Union[int, list] = 240
    max_size: int = 320
    flip_prob: float = 0.5
    color_jitter: float = 0.0  # strength of brightness, contrast and saturation jitter; 0 = off


def build_transforms(config: Optional[TransformConfig] = None, train: bool = True,
                     resize: bool = True) -> Compose:
    """Transforms for training (resize, random flip, jitter) or evaluation (resize only).

    Evaluation resizes to the largest of ``min_size``. ``resize=False`` leaves the size alone, for
    models that resize their inputs themselves (the torchvision-based ORCNN does): training then gets
    only the random flip and colour jitter, evaluation an empty ``Compose``. With ``resize=False``
    only ``flip_prob`` and ``color_jitter`` of ``config`` are read.
    """
    config = config or TransformConfig()
    transforms: list = []
    if resize:
        min_size = config.min_size if train else _largest_size(config.min_size)
        transforms.append(ResizeShortestEdge(min_size, config.max_size))
    if train and config.flip_prob > 0:
        transforms.append(RandomApply(HorizontalFlip(), config.flip_prob))
    if train and config.color_jitter > 0:
        transforms.append(ColorJitter(config.color_jitter, config.color_jitter, config.color_jitter))
    return Compose(transforms)


def _largest_size(size: Union[int, Sequence[int]]) -> int:
    """The evaluation short side: ``size`` itself, or the largest of a training size range."""
    return int(size) if isinstance(size, (int, float)) else int(max(size))

"""Amodal training data from modal labels: the D2S amodal augmentation (paper section 4.3).

Instances that do not touch the image border are cut out of a modal COCO dataset (pixels plus
modal mask, which is then the whole object) and pasted with a random pose (rotation, flip, scale,
translation) and deliberate overlap onto backgrounds. The pasted full mask is the amodal mask; the
visible mask is what later-pasted objects leave of it. Instances hidden almost completely are not
pasted at all (``min_visible_fraction``), so every pasted object is annotated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from orcnn_core import masks as mask_ops
from orcnn_core.data.images import IMAGE_EXTENSIONS, list_images, read_image_rgb, write_png_rgb
from orcnn_core.data.io import write_annotations
from orcnn_core.data.modal import ModalDataset, load_modal_coco
from orcnn_core.data.records import AmodalAnnotations, annotations_from_masks
from orcnn_core.data.synth import resolve_visibility, table_background
from orcnn_core.errors import DatasetError
from orcnn_core.structures import ImageRecord


@dataclass
class AugmentConfig:
    """Pose and layout ranges of the pasted objects."""

    min_objects: int = 3
    max_objects: int = 7
    rotation: float = 180.0          # max |angle| in degrees
    scale: tuple = (0.7, 1.2)
    flip: bool = True                # random horizontal flip of the cut-out
    spread: float = 0.2              # std of object centres around a cluster centre / short image side
    min_visible_fraction: float = 0.1
    border_margin: int = 1           # a source instance must stay this many pixels off the border
    size: Optional[tuple] = None     # output (width, height); default: the background's or first source's


@dataclass
class Cutout:
    """One source instance: its crop's pixels (RGB) and modal mask, plus where it came from."""

    image: np.ndarray  # h x w x 3 uint8
    mask: np.ndarray   # h x w bool
    category_id: int
    source_annotation_id: int
    source_image_id: object


@dataclass
class Pose:
    """Placement of a cut-out: flip, then rotate/scale about the crop centre, then shift by (dx, dy)."""

    angle: float = 0.0
    scale: float = 1.0
    flip: bool = False
    dx: int = 0
    dy: int = 0

    def matrix(self, height: int, width: int) -> np.ndarray:
        """2x3 affine matrix from crop to output pixels."""
        matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), self.angle, self.scale)
        matrix[:, 2] += (self.dx, self.dy)
        return matrix


@dataclass
class CutoutSource:
    """The instances of a modal dataset that may be cut out (``border_margin`` off the border)."""

    modal: ModalDataset
    image_root: Path
    candidates: list = field(default_factory=list)  # (image_id, ModalInstance)

    @classmethod
    def from_modal(cls, modal: ModalDataset, image_root: Path, border_margin: int = 1) -> CutoutSource:
        """Select instances whose mask box stays ``border_margin`` pixels inside the image."""
        candidates = []
        for image_id, instances in modal.instances.items():
            info = modal.images[image_id]
            for inst in instances:
                x0, y0, x1, y1 = mask_ops.rle_box(inst.rle)
                if inst.iscrowd or x1 <= x0:
                    continue
                if (x0 >= border_margin and y0 >= border_margin and x1 <= info["width"] - border_margin
                        and y1 <= info["height"] - border_margin):
                    candidates.append((image_id, inst))
        return cls(modal=modal, image_root=Path(image_root), candidates=candidates)

    def cutout(self, index: int) -> Cutout:
        """Pixels and mask of candidate ``index``, cropped to its box."""
        image_id, inst = self.candidates[index]
        info = self.modal.images[image_id]
        image = _read_cached(str(self.image_root / info["file_name"]))
        if image.shape[:2] != (info["height"], info["width"]):
            raise DatasetError(f"{self.image_root / info['file_name']}: image {image_id} is "
                               f"{image.shape[0]}x{image.shape[1]} but the COCO file says "
                               f"{info['height']}x{info['width']}")
        x0, y0, x1, y1 = (int(v) for v in mask_ops.rle_box(inst.rle))
        mask = mask_ops.decode(inst.rle)[y0:y1, x0:x1]
        return Cutout(image=image[y0:y1, x0:x1].copy(), mask=mask, category_id=inst.category_id,
                      source_annotation_id=inst.id, source_image_id=image_id)


@lru_cache(maxsize=8)
def _read_cached(path: str) -> np.ndarray:
    return read_image_rgb(Path(path))


def paste(background: np.ndarray, cutouts: Sequence[Cutout], poses: Sequence[Pose],
          min_visible_fraction: float = 0.1) -> tuple:
    """Paste cut-outs bottom to top; returns ``(image, amodal (N,H,W), visible (N,H,W), kept indices)``.

    Instances left with visible < ``min_visible_fraction`` of amodal (or empty) are not pasted.
    """
    height, width = background.shape[:2]
    warped_masks = np.zeros((len(cutouts), height, width), dtype=bool)
    matrices = []
    boxes = []
    for k, (cut, pose) in enumerate(zip(cutouts, poses)):
        mask = cut.mask[:, ::-1] if pose.flip else cut.mask
        matrices.append(pose.matrix(*mask.shape))
        warped_masks[k] = cv2.warpAffine(np.ascontiguousarray(mask, dtype=np.uint8), matrices[k],
                                         (width, height), flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
        x, y, w, h = cv2.boundingRect(warped_masks[k].view(np.uint8))
        boxes.append((y, y + h, x, x + w))
    keep, visible = resolve_visibility(warped_masks, boxes, min_visible_fraction, 1)
    image = background.copy()
    kept = np.flatnonzero(keep)
    for k in kept:  # pixels are warped only for the cut-outs that are pasted
        pixels = cutouts[k].image[:, ::-1] if poses[k].flip else cutouts[k].image
        warped = cv2.warpAffine(np.ascontiguousarray(pixels), matrices[k], (width, height),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        image[warped_masks[k]] = warped[warped_masks[k]]
    return image, warped_masks[kept], visible[kept], [int(k) for k in kept]


def random_pose(rng: np.random.Generator, cut: Cutout, center: tuple, size: tuple,
                config: AugmentConfig) -> Pose:
    """A random pose putting ``cut`` near ``center`` and entirely inside an image of ``size`` (w, h)."""
    width, height = size
    h, w = cut.mask.shape
    angle = float(rng.uniform(-config.rotation, config.rotation)) if config.rotation > 0 else 0.0
    scale = float(rng.uniform(*config.scale))
    flip = bool(config.flip and rng.random() < 0.5)
    # Shrink objects that would not fit the image at this angle.
    matrix = Pose(angle, scale).matrix(h, w)
    corners = np.asarray([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64) @ matrix.T
    extent = corners.max(axis=0) - corners.min(axis=0)
    fit = min(1.0, (width - 2) / max(extent[0], 1e-6), (height - 2) / max(extent[1], 1e-6))
    if fit < 1.0:
        scale *= fit
        matrix = Pose(angle, scale).matrix(h, w)
        corners = np.asarray([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=np.float64) @ matrix.T
    low, high = corners.min(axis=0), corners.max(axis=0)
    dx = int(round(center[0] - w / 2.0))
    dy = int(round(center[1] - h / 2.0))
    dx = int(np.clip(dx, np.ceil(-low[0]), np.floor(width - high[0])))
    dy = int(np.clip(dy, np.ceil(-low[1]), np.floor(height - high[1])))
    return Pose(angle=angle, scale=scale, flip=flip, dx=dx, dy=dy)


def _backgrounds(folder: Optional[Path]) -> list:
    if folder is None:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"background folder not found: {folder}")
    files = list_images(folder)
    if not files:
        raise DatasetError(f"background folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def augment(modal_path: Union[str, Path], images_dir: Union[str, Path], out_dir: Union[str, Path], count: int,
            seed: int = 0, backgrounds: Union[str, Path, None] = None,
            config: Optional[AugmentConfig] = None) -> AmodalAnnotations:
    """Write ``count`` augmented images to ``out_dir/images`` and ``out_dir/annotations.json``."""
    config = config or AugmentConfig()
    modal = load_modal_coco(modal_path)
    source = CutoutSource.from_modal(modal, Path(images_dir), config.border_margin)
    if not source.candidates:
        raise DatasetError(f"{modal_path}: no non-crowd instance stays {config.border_margin} px off the "
                           "image border; nothing to cut out")
    background_files = _backgrounds(Path(backgrounds) if backgrounds else None)
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    if config.size is not None:
        default_size = tuple(int(v) for v in config.size)
    else:
        first = modal.images[source.candidates[0][0]]
        default_size = (first["width"], first["height"])
    records, next_ann_id = [], 1
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        if background_files:
            background = read_image_rgb(background_files[int(rng.integers(len(background_files)))])
            if config.size is not None:
                background = cv2.resize(background, default_size, interpolation=cv2.INTER_AREA)
        else:
            background = table_background(rng, default_size[1], default_size[0])
        height, width = background.shape[:2]
        n = int(rng.integers(config.min_objects, config.max_objects + 1))
        picks = rng.integers(len(source.candidates), size=n)
        cutouts = [source.cutout(int(p)) for p in picks]
        cluster = rng.uniform([0.3 * width, 0.3 * height], [0.7 * width, 0.7 * height])
        centers = cluster + rng.normal(0.0, config.spread * min(width, height), size=(n, 2))
        poses = [random_pose(rng, cut, tuple(c), (width, height), config) for cut, c in zip(cutouts, centers)]
        image, amodal, visible, kept = paste(background, cutouts, poses, config.min_visible_fraction)
        file_name = f"{index:06d}.png"
        write_png_rgb(image_dir / file_name, image)
        extras = [{"source_annotation_id": cutouts[k].source_annotation_id, "depth": j}
                  for j, k in enumerate(kept)]
        annotations = annotations_from_masks(amodal, visible, [cutouts[k].category_id for k in kept],
                                             next_ann_id, extras)
        next_ann_id += len(annotations)
        records.append(ImageRecord(image_id=index + 1, file_name=file_name, height=height, width=width,
                                   annotations=annotations))
    categories = [dict(c) for c in modal.categories]
    path = write_annotations(records, categories, out_dir / "annotations.json", image_root=image_dir)
    return AmodalAnnotations(images=records, categories=categories, format="orcnn", path=path,
                             image_root=image_dir.resolve())

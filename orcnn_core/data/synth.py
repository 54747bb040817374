"""Procedural tabletop scenes with exact amodal, visible and invisible masks.

Objects are flat shapes, one class per shape with its own colour and texture (``CLASS_STYLES``),
dropped on a table with a lighting gradient, soft shadows and sensor noise. Masks come from the
painting itself: an object's amodal mask is its whole shape clipped to the image (as D2S amodal
stores the in-image part) and its visible mask is what is left after everything painted above it.
Instances hidden almost completely (visible < ``min_visible_fraction`` of amodal) or almost
entirely outside the image are removed from the scene before painting, so every painted object is
annotated. Everything is drawn from one ``numpy.random.Generator``: the same seed gives the same
scene, and ``synthesize`` gives byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import cv2
import numpy as np

from orcnn_core.data.images import write_png_rgb
from orcnn_core.data.io import write_annotations
from orcnn_core.data.records import AmodalAnnotations, annotations_from_masks
from orcnn_core.errors import DatasetError
from orcnn_core.structures import ImageRecord

if TYPE_CHECKING:
    from orcnn_core.data.synth_depth import SensorModel


@dataclass(frozen=True)
class ClassStyle:
    """How one synthetic class looks: outline shape, base colour (RGB) and surface texture."""

    name: str
    shape: str
    color: tuple
    texture: str  # solid | stripes | checker | dots | rings


CLASS_STYLES = (
    ClassStyle("box", "box", (215, 40, 40), "solid"),
    ClassStyle("disc", "disc", (40, 90, 225), "rings"),
    ClassStyle("triangle", "triangle", (40, 175, 60), "stripes"),
    ClassStyle("star", "star", (245, 205, 30), "solid"),
    ClassStyle("ring", "ring", (165, 45, 200), "solid"),
    ClassStyle("cross", "cross", (250, 125, 20), "checker"),
    ClassStyle("l_shape", "l_shape", (30, 200, 210), "stripes"),
    ClassStyle("hexagon", "hexagon", (35, 35, 70), "dots"),
    ClassStyle("diamond", "diamond", (235, 235, 235), "checker"),
    ClassStyle("arrow", "arrow", (230, 80, 150), "dots"),
)
SYNTH_CLASS_NAMES = tuple(style.name for style in CLASS_STYLES)

# Outlines in unit coordinates (radius ~1), rotated and scaled per instance.
_POLYGONS = {
    "triangle": [(np.cos(a), np.sin(a)) for a in np.deg2rad([90, 210, 330])],
    "star": [((1.0 if k % 2 == 0 else 0.45) * np.cos(a), (1.0 if k % 2 == 0 else 0.45) * np.sin(a))
             for k, a in enumerate(np.deg2rad(np.arange(10) * 36 - 90))],
    "cross": [(-0.33, -1), (0.33, -1), (0.33, -0.33), (1, -0.33), (1, 0.33), (0.33, 0.33), (0.33, 1),
              (-0.33, 1), (-0.33, 0.33), (-1, 0.33), (-1, -0.33), (-0.33, -0.33)],
    "l_shape": [(-0.9, -1), (-0.2, -1), (-0.2, 0.35), (0.9, 0.35), (0.9, 1), (-0.9, 1)],
    "hexagon": [(np.cos(a), np.sin(a)) for a in np.deg2rad(np.arange(6) * 60)],
    "diamond": [(0, -1), (0.62, 0), (0, 1), (-0.62, 0)],
    "arrow": [(-1, -0.3), (0.2, -0.3), (0.2, -0.75), (1, 0), (0.2, 0.75), (0.2, 0.3), (-1, 0.3)],
}
_POLYGONS = {k: np.asarray(v, dtype=np.float64) for k, v in _POLYGONS.items()}


@dataclass(frozen=True)
class OcclusionLevel:
    """How crowded a scene is: object count range and how tightly objects cluster."""

    min_objects: int
    max_objects: int
    spread: float  # std of object centres around the cluster centre, as a fraction of the short side


OCCLUSION_LEVELS = {
    "low": OcclusionLevel(2, 4, 0.45),
    "mid": OcclusionLevel(4, 7, 0.18),
    "high": OcclusionLevel(6, 10, 0.15),
}


@dataclass
class Scene:
    """One generated image with its instances, listed bottom (painted first) to top."""

    image: np.ndarray          # HxWx3 uint8 RGB
    amodal_masks: np.ndarray   # (N, H, W) bool
    visible_masks: np.ndarray  # (N, H, W) bool
    category_ids: list         # N ints in 1..K

    @property
    def invisible_masks(self) -> np.ndarray:
        return self.amodal_masks & ~self.visible_masks


def class_names(classes: int) -> list:
    """Names of the first ``classes`` synthetic classes (category ids 1..classes)."""
    if not 1 <= classes <= len(CLASS_STYLES):
        raise DatasetError(f"synthetic scenes have 1..{len(CLASS_STYLES)} classes, got {classes}")
    return list(SYNTH_CLASS_NAMES[:classes])


def categories(classes: int) -> list:
    """COCO ``categories`` list of the first ``classes`` synthetic classes."""
    return [{"id": k + 1, "name": name} for k, name in enumerate(class_names(classes))]


def _draw_shape(canvas: np.ndarray, shape: str, center: tuple, radius: float, angle: float,
                aspect: float, transposed: bool = False) -> None:
    """Fill one shape with value 1 into a uint8 canvas (sub-pixel precise, clipped at the border).

    ``transposed``: the canvas is WxH (the mask's transpose), so x and y swap roles.
    """
    shift = 4
    scale = 1 << shift
    cx, cy = center
    if shape in ("disc", "ring"):
        axes = (int(radius * scale), int(radius * aspect * scale))
        degrees = float(np.rad2deg(angle))
        if transposed:  # mirroring about the diagonal swaps x/y and turns angle a into 90 - a
            cx, cy, degrees = cy, cx, 90.0 - degrees
        centre = (int(round(cx * scale)), int(round(cy * scale)))
        cv2.ellipse(canvas, centre, axes, degrees, 0, 360, 1, -1, cv2.LINE_8, shift)
        if shape == "ring":
            inner = (int(axes[0] * 0.5), int(axes[1] * 0.5))
            cv2.ellipse(canvas, centre, inner, degrees, 0, 360, 0, -1, cv2.LINE_8, shift)
        return
    if shape == "box":
        points = np.asarray([(-1, -aspect), (1, -aspect), (1, aspect), (-1, aspect)], dtype=np.float64)
    else:
        points = _POLYGONS[shape] * np.asarray([1.0, aspect])
    c, s = np.cos(angle), np.sin(angle)
    rotated = points @ np.asarray([[c, s], [-s, c]]) * radius + np.asarray([cx, cy])
    if transposed:
        rotated = rotated[:, ::-1]
    cv2.fillPoly(canvas, [np.round(rotated * scale).astype(np.int32)], 1, cv2.LINE_8, shift)


def _table(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Background: a table colour with a lighting gradient and low-frequency grain (float32 HxWx3)."""
    palette = np.asarray([(170, 140, 105), (150, 150, 150), (120, 100, 80), (185, 175, 160)], np.float32)
    base = palette[rng.integers(len(palette))] * np.float32(rng.uniform(0.85, 1.1))
    gx, gy = rng.uniform(-0.25, 0.25, size=2).astype(np.float32)
    ys = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    xs = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :]
    grain = rng.random((max(2, height // 24), max(2, width // 6)), dtype=np.float32)
    light = cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)
    light *= np.float32(0.14)
    light += np.float32(0.93)
    light *= 1.0 + gx * xs + gy * ys
    return cv2.merge([light * base[0], light * base[1], light * base[2]])


def _texture(style: ClassStyle, color: np.ndarray, ys: np.ndarray, xs: np.ndarray, center: tuple,
             angle: float, radius: float, rim: np.ndarray) -> np.ndarray:
    """Per-pixel colours (h, w, 3) of an object's bounding crop (``ys`` a column, ``xs`` a row of
    pixel coordinates); the pattern follows the object's pose; ``rim`` pixels are darkened."""
    c, s = np.cos(angle), np.sin(angle)
    u = (xs - center[0]) * c + (ys - center[1]) * s
    v = -(xs - center[0]) * s + (ys - center[1]) * c
    period = max(4.0, radius / 3.0)
    if style.texture == "stripes":
        factor = np.where(np.floor(u / period) % 2 == 0, 1.0, 0.55)
    elif style.texture == "checker":
        factor = np.where((np.floor(u / period) + np.floor(v / period)) % 2 == 0, 1.0, 0.5)
    elif style.texture == "dots":
        du, dv = np.mod(u, period) - period / 2, np.mod(v, period) - period / 2
        factor = np.where(du * du + dv * dv < (period * 0.3) ** 2, 3.0, 1.0)
    elif style.texture == "rings":
        factor = np.where(np.floor(np.sqrt(u * u + v * v) / period) % 2 == 0, 1.0, 0.6)
    else:
        factor = np.ones_like(u)
    shading = 1.08 - 0.16 * (u + v) / (2 * radius)  # light from the top left
    shade = (factor * shading * np.where(rim, 0.7, 1.0)).astype(np.float32)
    return np.minimum(shade[:, :, None] * color[None, None, :], 255)


def generate_scene(rng: np.random.Generator, classes: int = 6, size: tuple = (640, 480),
                   occlusion: str = "mid", min_visible_fraction: float = 0.1,
                   object_size: tuple = (0.15, 0.32), noise: float = 3.0) -> Scene:
    """One random scene of ``size`` = (width, height); ``object_size`` = diameter range as a fraction
    of the short image side; instances come out bottom to top."""
    if occlusion not in OCCLUSION_LEVELS:
        raise DatasetError(f"unknown occlusion level '{occlusion}' (known: {', '.join(OCCLUSION_LEVELS)})")
    width, height = int(size[0]), int(size[1])
    if width < 16 or height < 16:
        raise DatasetError(f"synthetic image size must be at least 16x16, got {width}x{height}")
    names = class_names(classes)
    level = OCCLUSION_LEVELS[occlusion]
    short = min(width, height)
    count = int(rng.integers(level.min_objects, level.max_objects + 1))
    cluster = rng.uniform([0.3 * width, 0.3 * height], [0.7 * width, 0.7 * height])
    centers = cluster + rng.normal(0.0, level.spread * short, size=(count, 2))
    centers = np.clip(centers, [0, 0], [width - 1, height - 1])
    labels = rng.integers(0, len(names), size=count)
    radii = rng.uniform(object_size[0], object_size[1], size=count) * short / 2
    angles = rng.uniform(0, 2 * np.pi, size=count)
    aspects = rng.uniform(0.65, 1.0, size=count)
    tints = rng.uniform(0.85, 1.12, size=(count, 3))

    # Masks live transposed (N, W, H) in memory, i.e. column-major per mask as pycocotools wants
    # them: RLE encoding then needs no transposing copy. `amodal` is the (N, H, W) view.
    canvas = np.zeros((count, width, height), dtype=np.uint8)
    boxes = []  # (y0, y1, x0, x1) of each drawn shape, so that later work touches only that crop
    for i in range(count):
        shape = CLASS_STYLES[labels[i]].shape
        _draw_shape(canvas[i], shape, tuple(centers[i]), radii[i], angles[i], aspects[i], transposed=True)
        row, col, rows, cols = cv2.boundingRect(canvas[i])  # in the transposed canvas
        boxes.append((row, row + rows, col, col + cols))
    amodal_t = canvas.view(bool)  # values are 0/1
    amodal = amodal_t.transpose(0, 2, 1)

    keep, visible = resolve_visibility(amodal, boxes, min_visible_fraction, 0.003 * width * height)
    visible_t = np.ascontiguousarray(visible.transpose(0, 2, 1)[keep])

    image = _table(rng, height, width)
    for i in np.flatnonzero(keep):
        _paint_object(image, amodal[i], boxes[i], CLASS_STYLES[labels[i]], tints[i], tuple(centers[i]),
                      angles[i], radii[i], rng)
    if noise > 0:  # uniform sensor noise with standard deviation `noise` (cheaper than Gaussian)
        grain = np.frombuffer(rng.bytes(image.size), dtype=np.uint8).reshape(image.shape).astype(np.float32)
        grain -= np.float32(127.5)
        grain *= np.float32(noise * np.sqrt(3.0) / 127.5)
        image += grain
    np.clip(image, 0, 255, out=image)
    return Scene(image=image.astype(np.uint8), amodal_masks=amodal_t[keep].transpose(0, 2, 1),
                 visible_masks=visible_t.transpose(0, 2, 1),
                 category_ids=[int(labels[i]) + 1 for i in np.flatnonzero(keep)])


def resolve_visibility(amodal: np.ndarray, boxes: Sequence[tuple], min_visible_fraction: float,
                       min_area: float) -> tuple:
    """Which of a bottom-to-top stack of amodal masks to keep, and their visible masks.

    Decided top-down, since an instance's visibility depends only on those above it: an instance
    with amodal area < ``min_area`` or visible < ``min_visible_fraction`` of amodal is removed (so it
    hides nothing). ``boxes`` are ``(y0, y1, x0, x1)`` crops holding each mask, to touch less memory.
    Returns ``(keep (N,) bool, visible (N, H, W) bool)``.
    """
    count, height, width = amodal.shape
    keep = np.zeros(count, dtype=bool)
    visible = np.zeros_like(amodal, dtype=bool)
    covered = np.zeros((height, width), dtype=bool)
    for i in range(count - 1, -1, -1):
        y0, y1, x0, x1 = boxes[i]
        crop = amodal[i, y0:y1, x0:x1]
        area = np.count_nonzero(crop)
        if area == 0 or area < min_area:
            continue
        visible_crop = crop & ~covered[y0:y1, x0:x1]
        if np.count_nonzero(visible_crop) < min_visible_fraction * area:
            continue
        keep[i] = True
        visible[i, y0:y1, x0:x1] = visible_crop
        covered[y0:y1, x0:x1] |= crop
    return keep, visible


def table_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A plain table image (HxWx3 uint8 RGB) with lighting gradient and grain."""
    return np.clip(_table(rng, height, width), 0, 255).astype(np.uint8)


def _paint_object(image: np.ndarray, mask: np.ndarray, box: tuple, style: ClassStyle, tint: np.ndarray,
                  center: tuple, angle: float, radius: float, rng: np.random.Generator) -> None:
    """Paint a soft shadow, then the textured object with a darker rim, into ``image`` in place."""
    height, width = mask.shape
    y0, y1, x0, x1 = box
    # Shadow: the mask shifted down-right and blurred, darkening what lies below.
    offset = int(max(2, radius * 0.12))
    blur = int(max(3, radius * 0.15)) | 1
    pad = offset + blur
    sy0, sy1, sx0, sx1 = max(0, y0 - pad), min(height, y1 + pad), max(0, x0 - pad), min(width, x1 + pad)
    shadow = np.zeros((sy1 - sy0, sx1 - sx0), dtype=np.float32)
    src = mask[max(sy0 - offset, 0):sy1 - offset, max(sx0 - offset, 0):sx1 - offset]
    shadow[shadow.shape[0] - src.shape[0]:, shadow.shape[1] - src.shape[1]:] = src
    shadow = cv2.GaussianBlur(shadow, (blur, blur), 0)
    image[sy0:sy1, sx0:sx1] *= (1.0 - 0.4 * shadow)[:, :, None]
    # Object surface, with a darker one-pixel rim inside the mask so touching objects stay apart.
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8)
    inner = cv2.erode(crop, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    colors = _texture(style, np.asarray(style.color, np.float32) * tint.astype(np.float32), ys, xs, center,
                      angle + rng.uniform(-0.2, 0.2), radius, rim=crop > inner)
    np.copyto(image[y0:y1, x0:x1], colors, where=crop.view(bool)[:, :, None])


def scene_to_record(scene: Scene, image_id: int, file_name: str, first_annotation_id: int = 1) -> ImageRecord:
    """A scene as a canonical ``ImageRecord`` (RLE-encoded masks, ids from ``first_annotation_id``)."""
    height, width = scene.image.shape[:2]
    depths = [{"depth": k} for k in range(len(scene.category_ids))]
    annotations = annotations_from_masks(scene.amodal_masks, scene.visible_masks, scene.category_ids,
                                         first_annotation_id, depths, invisible=scene.invisible_masks)
    return ImageRecord(image_id=image_id, file_name=file_name, height=height, width=width,
                       annotations=annotations)


def synthesize(out_dir: Union[str, Path], images: int, seed: int, classes: int = 6,
               size: tuple = (640, 480), occlusion: str = "mid",
               min_visible_fraction: float = 0.1, depth: bool = False,
               sensor: Optional[SensorModel] = None) -> AmodalAnnotations:
    """Write ``images`` scenes as ``out_dir/images/NNNNNN.png`` + ``out_dir/annotations.json``.

    Scene ``i`` uses ``numpy.random.default_rng([seed, i])``, so output is byte-identical for the
    same arguments and any image can be regenerated alone. ``depth``: also ``out_dir/depth/NNNNNN.png``
    with the camera and 3D truth in the annotations (``synth_depth``; a ``sensor`` implies ``depth``:
    as measured by that sensor model), drawn from ``default_rng([seed, i, 1])`` so the colour output
    stays the same.
    """
    if images < 0:
        raise DatasetError(f"number of images must be >= 0, got {images}")
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    records, next_ann_id = [], 1
    for index in range(images):
        scene = generate_scene(np.random.default_rng([seed, index]), classes=classes, size=size,
                               occlusion=occlusion, min_visible_fraction=min_visible_fraction)
        file_name = f"{index:06d}.png"
        write_png_rgb(image_dir / file_name, scene.image)
        record = scene_to_record(scene, index + 1, file_name, next_ann_id)
        if depth or sensor is not None:
            from orcnn_core.data.synth_depth import add_depth

            add_depth(out_dir, record, scene, np.random.default_rng([seed, index, 1]), sensor)
        next_ann_id += len(record.annotations)
        records.append(record)
    cats = categories(classes)
    ann_path = write_annotations(records, cats, out_dir / "annotations.json", image_root=image_dir)
    return AmodalAnnotations(images=records, categories=cats, format="orcnn", path=ann_path,
                             image_root=image_dir.resolve())

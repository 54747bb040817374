"""Deployment export: TorchScript (traced) or ONNX of a model at one fixed input size.

The exported graph takes one ``3 x H x W`` float RGB image in [0, 1] (H, W fixed at export) and returns
``boxes`` (N, 4), ``labels`` (N,), ``scores`` (N,) and ``amodal`` / ``visible`` / ``invisible`` mask
probabilities (N, H, W), N varying per image (detections scoring at least the export's score
threshold). These are the Predictor's outputs with ``return_probabilities=True``.

The model's own mask pasting reads box corners as Python numbers, which tracing would freeze; the
export replaces it with the same geometry written as one ``grid_sample`` call (bilinear,
``align_corners=False``, border clamping, integer boxes expanded by one mask pixel), so the exported
masks equal the Predictor's within ``EXPORT_ATOL``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from orcnn_core.errors import ConfigError, InputError
from orcnn_core.model.rcnn import name_mask_channels

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx")
OUTPUT_NAMES = ("boxes", "labels", "scores", "amodal_masks", "visible_masks", "invisible_masks")
EXPORT_ATOL = {"boxes": 1e-3, "scores": 1e-4, "masks": 1e-3}  # tested in test/test_export.py


def paste_masks_grid(masks: Tensor, boxes: Tensor, height: int, width: int, padding: int = 1) -> Tensor:
    """Paste (N, C, M, M) box-relative masks into (N, C, H, W), traceable for any N.

    Same result as ``orcnn_core.model.rcnn.paste_mask_channels`` (torchvision's geometry).
    """
    n, _, m, _ = masks.shape
    padded = F.pad(masks, (padding,) * 4)
    scale = (m + 2 * padding) / m
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    center_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    center_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    # Integer corners exactly as torchvision's expand_boxes(...).to(int64) (truncation toward zero).
    x0 = (center_x - half_w).to(torch.int64).to(masks.dtype)
    x1 = (center_x + half_w).to(torch.int64).to(masks.dtype)
    y0 = (center_y - half_h).to(torch.int64).to(masks.dtype)
    y1 = (center_y + half_h).to(torch.int64).to(masks.dtype)
    box_w = (x1 - x0 + 1).clamp(min=1)
    box_h = (y1 - y0 + 1).clamp(min=1)
    xs = torch.arange(width, dtype=masks.dtype, device=masks.device)
    ys = torch.arange(height, dtype=masks.dtype, device=masks.device)
    # Normalised sampling coordinate of pixel centre x in a box resized to box_w pixels.
    grid_x = 2.0 * (xs[None, :] - x0[:, None] + 0.5) / box_w[:, None] - 1.0       # (N, W)
    grid_y = 2.0 * (ys[None, :] - y0[:, None] + 0.5) / box_h[:, None] - 1.0       # (N, H)
    grid = torch.stack([grid_x[:, None, :].expand(n, height, width),
                        grid_y[:, :, None].expand(n, height, width)], dim=-1)
    pasted = F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside_x = (xs[None, :] >= x0[:, None]) & (xs[None, :] < x0[:, None] + box_w[:, None])
    inside_y = (ys[None, :] >= y0[:, None]) & (ys[None, :] < y0[:, None] + box_h[:, None])
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    return pasted * inside[:, None].to(masks.dtype)


class ExportableModel(nn.Module):
    """One-image wrapper of an OcclusionRCNN whose mask pasting is traceable (see module docstring)."""

    def __init__(self, model: nn.Module, height: int, width: int, score_threshold: float = 0.0):
        super().__init__()
        if not hasattr(model, "roi_heads") or not hasattr(model.roi_heads, "kinds"):
            raise ConfigError("export supports single models (not the 'merged' ensemble)")
        self.model = model.eval()
        self.height, self.width = int(height), int(width)
        self.score_threshold = float(score_threshold)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        """``image`` 3xHxW float RGB in [0, 1] -> boxes, labels, scores, amodal, visible, invisible."""
        from torchvision.models.detection.transform import resize_boxes

        model = self.model
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        detection = detections[0]
        keep = torch.where(detection["scores"] >= self.score_threshold)[0]  # as the Predictor filters
        boxes = resize_boxes(detection["boxes"][keep], images.image_sizes[0], (self.height, self.width))
        probs = paste_masks_grid(detection["mask_probs"][keep], boxes, self.height, self.width)
        masks = name_mask_channels(probs, model.roi_heads.kinds)
        return (boxes, detection["labels"][keep], detection["scores"][keep],
                masks["amodal"][:, 0], masks["visible"][:, 0], masks["invisible"][:, 0])


def _example(height: int, width: int, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(3, height, width, generator=generator)


def export_model(model: nn.Module, out_path: str | Path, fmt: str = "torchscript",
                 height: int = 240, width: int = 320, score_threshold: float = 0.0,
                 example: Optional[Tensor] = None) -> Path:
    """Export ``model`` for ``height`` x ``width`` inputs as TorchScript (``.pt``) or ONNX (``.onnx``).

    Detections scoring below ``score_threshold`` are dropped inside the graph (pass the Predictor's
    ``score_threshold`` to get the same instances).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format: must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if height < 16 or width < 16:
        raise InputError(f"export size must be at least 16x16, got {width}x{height}")
    wrapper = ExportableModel(model, height, width, score_threshold).eval()
    example = _example(height, width) if example is None else example
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings list the Python-number conversions; the fixed input size makes them constant.
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
            traced.save(str(out_path))
        else:
            torch.onnx.export(wrapper, (example,), str(out_path), input_names=["image"],
                              output_names=list(OUTPUT_NAMES), opset_version=17, dynamo=False,
                              dynamic_axes={name: {0: "instances"} for name in OUTPUT_NAMES})
    logger.info("exported %s (%s, input 3x%dx%d)", out_path, fmt, height, width)
    return out_path


class ExportedModel:
    """Runs an exported file on HxWx3 uint8 RGB images; returns the six outputs as numpy arrays."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"exported model not found: {self.path}")
        if self.path.suffix == ".onnx":
            import onnxruntime

            self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            self._module = None
        else:
            self._module = torch.jit.load(str(self.path), map_location="cpu")
            self._session = None

    def __call__(self, image_rgb: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs for one image (must have the export size)."""
        tensor = torch.from_numpy(np.ascontiguousarray(image_rgb)).permute(2, 0, 1).float().div(255.0)
        if self._module is not None:
            with torch.no_grad():
                outputs = [o.numpy() for o in self._module(tensor)]
        else:
            outputs = self._session.run(list(OUTPUT_NAMES), {"image": tensor.numpy()})
        return dict(zip(OUTPUT_NAMES, outputs))


def default_export_path(weights: Path, fmt: str) -> Path:
    """``NAME.pt`` / ``NAME.onnx`` next to ``NAME.safetensors``."""
    return weights.with_suffix(".pt" if fmt == "torchscript" else ".onnx")

"""``Predictor``: numpy images in, ``Prediction`` (amodal / visible / invisible masks) out."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from orcnn_core.errors import ConfigError, InputError
from orcnn_core.model.builder import build_model
from orcnn_core.model.config import ModelConfig, load_model_config
from orcnn_core.model.merged import MergedRCNN
from orcnn_core.model.rcnn import tight_boxes
from orcnn_core.model.weights import load_weights
from orcnn_core.structures import Prediction

logger = logging.getLogger(__name__)

# Largest accepted image side in pixels: larger inputs are almost always a decoding mistake, and the
# pasted (N, H, W) probability masks of such an image would not fit in memory.
MAX_IMAGE_SIDE = 8192
COLOR_ORDERS = ("rgb", "bgr")


def resolve_device(device: str, local_rank: Optional[int] = None, *, field: str = "device") -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a torch.device.

    With ``local_rank`` (a ``torchrun`` process), ``auto`` on a CUDA machine and ``cuda`` mean
    ``cuda:LOCAL_RANK``. ``field`` names the setting in error messages.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and local_rank is not None:
        device = f"cuda:{local_rank}"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"{field}: {device!r} is not 'auto', 'cpu' or 'cuda:N'") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"{field}: {device!r} is not 'auto', 'cpu' or 'cuda:N'")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{field}: {device!r} asked for, but CUDA is not available here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ConfigError(f"{field}: {device!r} does not exist ({count} CUDA devices)")
    return resolved


def check_image(image: np.ndarray, index: int = 0) -> np.ndarray:
    """Validate one image; returns it as HxWx3 uint8 (HxW grayscale is repeated, HxWx4 drops alpha)."""
    where = f"image {index}"
    if not isinstance(image, np.ndarray):
        raise InputError(f"{where}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"{where}: dtype must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"{where}: shape must be HxWx3 (or HxW, HxWx4), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{where}: image is empty, shape {image.shape}")
    if max(image.shape[:2]) > MAX_IMAGE_SIDE:
        raise InputError(f"{where}: size {image.shape[1]}x{image.shape[0]} exceeds the maximum side "
                         f"of {MAX_IMAGE_SIDE} pixels")
    return image[:, :, :3]


class Predictor:
    """Runs a model of any variant on numpy images and returns one ``Prediction`` per image."""

    def __init__(self, model: nn.Module, config: ModelConfig, *, device: str = "auto", half: bool = False,
                 score_threshold: float | None = None, max_instances: int | None = None,
                 mask_threshold: float = 0.5, color_order: str = "rgb") -> None:
        if color_order not in COLOR_ORDERS:
            raise ConfigError(f"color_order: must be 'rgb' or 'bgr', got {color_order!r}")
        if not 0.0 <= mask_threshold <= 1.0:
            raise ConfigError(f"mask_threshold: must be in [0, 1], got {mask_threshold}")
        if score_threshold is not None and not 0.0 <= score_threshold < 1.0:
            raise ConfigError(f"score_threshold: must be in [0, 1), got {score_threshold}")
        if max_instances is not None and max_instances < 1:
            raise ConfigError(f"max_instances: must be >= 1, got {max_instances}")
        self.config = config
        self.class_names = list(config.class_names)
        self.device = resolve_device(device)
        self.mask_threshold = float(mask_threshold)
        self.color_order = color_order
        self.score_threshold = config.score_threshold if score_threshold is None else float(score_threshold)
        self.max_instances = max_instances
        self.autocast_dtype: Optional[torch.dtype] = None
        if half:
            if self.device.type == "cuda":
                self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            else:
                logger.warning("half precision is used on CUDA only; running float32 on %s", self.device)
        self.model = model.to(self.device).eval()
        self._category_ids = np.asarray(config.category_ids, dtype=np.int64)

    @classmethod
    def from_weights(cls, path: str | Path, **kwargs) -> Predictor:
        """Load ``NAME.safetensors`` + ``NAME.json`` (see ``orcnn_core.model.weights``)."""
        model, config = load_weights(path)
        return cls(model, config, **kwargs)

    @classmethod
    def from_config(cls, config: ModelConfig | str | Path, **kwargs) -> Predictor:
        """A randomly initialised model of ``config`` (a ModelConfig or a YAML file): tests, benchmarks."""
        if not isinstance(config, ModelConfig):
            config = load_model_config(config)
        return cls(build_model(config), config, **kwargs)

    def __call__(self, image: np.ndarray, **opts) -> Prediction:
        """Predict one image; ``opts`` are those of ``predict_batch``."""
        return self.predict_batch([image], batch_size=1, **opts)[0]

    def predict_batch(self, images: Sequence[np.ndarray], batch_size: int = 4, *,
                      return_probabilities: bool = False,
                      invisible_by_difference: bool = False) -> list[Prediction]:
        """Predict HxWx3 uint8 images (``color_order``) in batches of ``batch_size``.

        Masks are bool at ``mask_threshold``, or float32 probabilities with ``return_probabilities``.
        ``invisible_by_difference`` replaces the occlusion head by amodal AND NOT visible
        (probabilities: clip(amodal - visible, 0, 1)).
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
        checked = [check_image(image, i) for i, image in enumerate(images)]
        results = []
        for start in range(0, len(checked), batch_size):
            batch = checked[start:start + batch_size]
            for image, detection in zip(batch, self._run(batch)):
                results.append(self._to_prediction(detection, image.shape[:2], return_probabilities,
                                                   invisible_by_difference))
        return results

    def _run(self, images: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        tensors = []
        for image in images:
            tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)
            if self.color_order == "bgr":
                tensor = tensor.flip(0)
            tensors.append(tensor.float().div_(255.0))
        with torch.inference_mode(), self._detector_limits(), torch.autocast(
                self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self.model(tensors)

    @contextlib.contextmanager
    def _detector_limits(self):
        """Apply this Predictor's score threshold / instance cap inside the detector, then restore."""
        # Thresholding before NMS and top-k (not only afterwards) also saves pasting masks; restoring
        # keeps Predictors that share one model independent. The members of a merged model are only
        # loosened (never a higher threshold or a lower cap than their own): a modal result below the
        # threshold can still lift its amodal partner's merged score above it, and ``_to_prediction``
        # applies threshold and cap to the merged results.
        heads = [m for m in self.model.modules()
                 if hasattr(m, "score_thresh") and hasattr(m, "detections_per_img")]
        saved = [(m.score_thresh, m.detections_per_img) for m in heads]
        members_only = isinstance(self.model, MergedRCNN)
        for module in heads:
            if members_only:
                module.score_thresh = min(module.score_thresh, self.score_threshold)
                if self.max_instances is not None:
                    module.detections_per_img = max(module.detections_per_img, self.max_instances)
                continue
            module.score_thresh = self.score_threshold
            if self.max_instances is not None:
                module.detections_per_img = self.max_instances
        try:
            yield
        finally:
            for module, (score_thresh, detections) in zip(heads, saved):
                module.score_thresh, module.detections_per_img = score_thresh, detections

    def _to_prediction(self, detection: dict[str, torch.Tensor], size: tuple[int, int],
                       return_probabilities: bool, invisible_by_difference: bool) -> Prediction:
        keep = torch.where(detection["scores"] >= self.score_threshold)[0]
        keep = keep[torch.argsort(detection["scores"][keep], descending=True, stable=True)]
        if self.max_instances is not None:
            keep = keep[:self.max_instances]
        if len(keep) == 0:
            return Prediction.empty(*size)
        amodal = detection["amodal_masks"][keep, 0].float()
        visible = detection["visible_masks"][keep, 0].float()
        invisible = detection["invisible_masks"][keep, 0].float()
        if invisible_by_difference:
            invisible = (amodal - visible).clamp_(0.0, 1.0)
        visible_binary = visible >= self.mask_threshold
        if return_probabilities:
            masks = (amodal, visible, invisible)
        else:
            amodal_binary = amodal >= self.mask_threshold
            invisible_binary = (amodal_binary & ~visible_binary if invisible_by_difference
                                else invisible >= self.mask_threshold)
            masks = (amodal_binary, visible_binary, invisible_binary)
        labels = detection["labels"][keep].cpu().numpy().astype(np.int64)
        return Prediction(
            amodal_boxes=detection["boxes"][keep].float().cpu().numpy().astype(np.float32),
            visible_boxes=tight_boxes(visible_binary).cpu().numpy().astype(np.float32),
            labels=labels,
            category_ids=self._category_ids[labels - 1],
            class_names=[self.class_names[k - 1] for k in labels],
            scores=detection["scores"][keep].float().cpu().numpy().astype(np.float32),
            amodal_masks=masks[0].cpu().numpy(), visible_masks=masks[1].cpu().numpy(),
            invisible_masks=masks[2].cpu().numpy(), image_size=(int(size[0]), int(size[1])))


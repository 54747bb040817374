"""``Predictor``: numpy images in, ``Prediction`` (amodal / visible / invisible masks) out."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from orcnn_core.data.image_decode import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from orcnn_core.errors import ConfigError, InputError, WeightsError
from orcnn_core.model.builder import build_model, load_weights
from orcnn_core.model.config import ModelConfig, load_model_config
from orcnn_core.model.rcnn import paste_box_masks, tight_boxes
from orcnn_core.structures import Prediction

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
BUNDLED_WEIGHTS = WEIGHTS_DIR / "demo_small.safetensors"

# The image size limits are those of the one image decoder (files and ROS frames): larger inputs are
# almost always a mistake, and the (N, H, W) masks of such an image would not fit in memory.
# The coarsest FPN level has stride 32: an image the model sees narrower than this has no cell there.
MIN_MODEL_SIDE = 32
COLOR_ORDERS = ("rgb", "bgr")
MASK_KINDS = ("amodal", "visible", "invisible")


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


def model_input_size(height: int, width: int, config: ModelConfig) -> tuple[int, int]:
    """(height, width) the model's transform resizes an image to (torchvision's rule: the short side to
    ``min_size`` unless the long side would exceed ``max_size``; sizes rounded down)."""
    scale = min(config.min_size / min(height, width), config.max_size / max(height, width))
    return int(math.floor(height * scale)), int(math.floor(width * scale))


def check_image(image: np.ndarray, index: int = 0, config: Optional[ModelConfig] = None) -> np.ndarray:
    """Validate one image; returns it as HxWx3 uint8 (HxW grayscale is repeated, HxWx4 drops alpha).

    With the model's ``config``, an image so thin that the model would see fewer than
    ``MIN_MODEL_SIDE`` pixels across it is refused too (its resize would be empty).
    """
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
    if max(image.shape[:2]) > MAX_IMAGE_SIDE or image.shape[0] * image.shape[1] > MAX_IMAGE_PIXELS:
        raise InputError(f"{where}: size {image.shape[1]}x{image.shape[0]} exceeds the maximum of "
                         f"{MAX_IMAGE_PIXELS} pixels ({MAX_IMAGE_SIDE} per side)")
    if config is not None:
        seen = model_input_size(image.shape[0], image.shape[1], config)
        if min(seen) < MIN_MODEL_SIDE:
            raise InputError(f"{where}: size {image.shape[1]}x{image.shape[0]} is too thin: the model "
                             f"would see it as {seen[1]}x{seen[0]} pixels (at least {MIN_MODEL_SIDE} "
                             "across needed)")
    return image[:, :, :3]


def bundled_weights() -> Path:
    """Path of the bundled demo model; WeightsError when the file is missing."""
    if not BUNDLED_WEIGHTS.is_file() or not BUNDLED_WEIGHTS.with_suffix(".json").is_file():
        raise WeightsError(f"the bundled demo model is missing: {BUNDLED_WEIGHTS} (+ .json sidecar); "
                           "reinstall orcnn, or pass the path of a trained model "
                           "(see orcnn_core/weights/README.md to rebuild it)")
    return BUNDLED_WEIGHTS


def load_predictor(weights: str | Path | None = None, *, model_config: str | Path | None = None,
                   **kwargs) -> Predictor:
    """The one way every command and the node get a Predictor.

    ``weights`` (``NAME.safetensors`` + ``NAME.json``); else ``model_config`` (a model YAML, random
    weights: smoke tests); else the bundled demo model. ``kwargs`` go to ``Predictor``. A missing
    file is a WeightsError / ConfigError naming it.
    """
    if weights:
        return Predictor.from_weights(Path(weights).expanduser(), **kwargs)
    if model_config:
        path = Path(model_config).expanduser()
        if not path.is_file():
            raise ConfigError(f"model config file not found: {path}")
        return Predictor.from_config(path, **kwargs)
    return Predictor.from_weights(bundled_weights(), **kwargs)


def check_limits(score_threshold: Optional[float], max_instances: Optional[int]) -> None:
    """ConfigError when a score threshold is outside [0, 1) or an instance cap below 1."""
    if score_threshold is not None and not 0.0 <= score_threshold < 1.0:
        raise ConfigError(f"score_threshold: must be in [0, 1), got {score_threshold}")
    if max_instances is not None and (isinstance(max_instances, bool) or max_instances < 1):
        raise ConfigError(f"max_instances: must be >= 1, got {max_instances}")


class Predictor:
    """Runs a model of any variant on numpy images and returns one ``Prediction`` per image.

    Thread-safe: the model is never modified per call, so one Predictor (or several sharing a model)
    can serve several threads; per-call limits are arguments of ``predict_batch``.
    """

    def __init__(self, model: nn.Module, config: ModelConfig, *, device: str = "auto", half: bool = False,
                 score_threshold: float | None = None, max_instances: int | None = None,
                 mask_threshold: float = 0.5, color_order: str = "rgb") -> None:
        if color_order not in COLOR_ORDERS:
            raise ConfigError(f"color_order: must be 'rgb' or 'bgr', got {color_order!r}")
        if not 0.0 <= mask_threshold <= 1.0:
            raise ConfigError(f"mask_threshold: must be in [0, 1], got {mask_threshold}")
        check_limits(score_threshold, max_instances)
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
        self.source = "a model built in memory"  # what the model was loaded from, for logs

    @classmethod
    def from_weights(cls, path: str | Path, **kwargs) -> Predictor:
        """Load ``NAME.safetensors`` + ``NAME.json`` (see ``orcnn_core.model.weights``)."""
        model, config = load_weights(path)
        predictor = cls(model, config, **kwargs)
        predictor.source = str(path)
        return predictor

    @classmethod
    def from_config(cls, config: ModelConfig | str | Path, **kwargs) -> Predictor:
        """A randomly initialised model of ``config`` (a ModelConfig or a YAML file): tests, benchmarks."""
        source = "a random model of a ModelConfig"
        if not isinstance(config, ModelConfig):
            source = f"a random model of {config}"
            config = load_model_config(config)
        predictor = cls(build_model(config), config, **kwargs)
        predictor.source = source
        return predictor

    def __call__(self, image: np.ndarray, **opts) -> Prediction:
        """Predict one image; ``opts`` are those of ``predict_batch``."""
        return self.predict_batch([image], batch_size=1, **opts)[0]

    def predict_batch(self, images: Sequence[np.ndarray], batch_size: int = 4, *,
                      return_probabilities: bool = False, invisible_by_difference: bool = False,
                      score_threshold: Optional[float] = None,
                      max_instances: Optional[int] = None) -> list[Prediction]:
        """Predict HxWx3 uint8 images (``color_order``) in batches of ``batch_size``.

        Masks are bool at ``mask_threshold``, or float32 probabilities with ``return_probabilities``.
        ``invisible_by_difference`` replaces the occlusion head by amodal AND NOT visible
        (probabilities: clip(amodal - visible, 0, 1)). ``score_threshold`` / ``max_instances``
        override this Predictor's own for this call only.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
        check_limits(score_threshold, max_instances)
        threshold = self.score_threshold if score_threshold is None else float(score_threshold)
        cap = self.max_instances if max_instances is None else int(max_instances)
        checked = [check_image(image, i, self.config) for i, image in enumerate(images)]
        results = []
        for start in range(0, len(checked), batch_size):
            batch = checked[start:start + batch_size]
            for image, detection in zip(batch, self._run(batch, threshold, cap)):
                results.append(detections_to_prediction(
                    detection, image.shape[:2], self.config, score_threshold=threshold, max_instances=cap,
                    mask_threshold=self.mask_threshold, return_probabilities=return_probabilities,
                    invisible_by_difference=invisible_by_difference))
        return results

    def _run(self, images: list[np.ndarray], score_threshold: float,
             max_instances: Optional[int]) -> list[dict[str, torch.Tensor]]:
        tensors = []
        for image in images:
            tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)
            if self.color_order == "bgr":
                tensor = tensor.flip(0)
            tensors.append(tensor.float().div_(255.0))
        # Thresholding inside the detector (before NMS and top-k, not only afterwards) also saves
        # pasting masks. The limits are call arguments: the shared model is never modified, so one
        # model can serve several Predictors and threads.
        with torch.inference_mode(), torch.autocast(
                self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self.model.detect(tensors, score_threshold=score_threshold,
                                     detections_per_image=max_instances, paste_masks=False)


def detections_to_prediction(detection: dict[str, torch.Tensor], size: tuple[int, int], config: ModelConfig,
                             *, score_threshold: float, max_instances: Optional[int] = None,
                             mask_threshold: float = 0.5, return_probabilities: bool = False,
                             invisible_by_difference: bool = False) -> Prediction:
    """One image's detector output (``boxes``, ``labels``, ``scores``, and ``*_masks`` (N, 1, H, W)
    probabilities, or box-relative ``*_box_masks`` pasted here for the kept detections only) as a
    ``Prediction``: thresholded, sorted by score, capped, masks binarised.

    The one conversion used by the Predictor and by exported-model backends, so that their results
    are interchangeable.
    """
    keep = torch.where(detection["scores"] >= score_threshold)[0]
    keep = keep[torch.argsort(detection["scores"][keep], descending=True, stable=True)]
    if max_instances is not None:
        keep = keep[:max_instances]
    if len(keep) == 0:
        return Prediction.empty(*size)
    if "amodal_masks" not in detection:  # box-relative: paste only what is kept
        binary = not (return_probabilities or invisible_by_difference)
        pasted = paste_box_masks({k: detection[f"{k}_box_masks"][keep] for k in MASK_KINDS},
                                 detection["boxes"][keep], size, mask_threshold if binary else None)
        detection = {**detection, **{f"{k}_masks": v for k, v in pasted.items()},
                     **{name: detection[name][keep] for name in ("boxes", "labels", "scores")}}
        keep = torch.arange(len(keep), device=keep.device)
    amodal = detection["amodal_masks"][keep, 0].float()
    visible = detection["visible_masks"][keep, 0].float()
    invisible = detection["invisible_masks"][keep, 0].float()
    if invisible_by_difference:
        invisible = (amodal - visible).clamp_(0.0, 1.0)
    visible_binary = visible >= mask_threshold
    if return_probabilities:
        masks = (amodal, visible, invisible)
    else:
        amodal_binary = amodal >= mask_threshold
        invisible_binary = (amodal_binary & ~visible_binary if invisible_by_difference
                            else invisible >= mask_threshold)
        masks = (amodal_binary, visible_binary, invisible_binary)
    labels = detection["labels"][keep].cpu().numpy().astype(np.int64)
    category_ids = np.asarray(config.category_ids, dtype=np.int64)
    return Prediction(
        amodal_boxes=detection["boxes"][keep].float().cpu().numpy().astype(np.float32),
        visible_boxes=tight_boxes(visible_binary).cpu().numpy().astype(np.float32),
        labels=labels,
        category_ids=category_ids[labels - 1],
        class_names=[config.class_names[k - 1] for k in labels],
        scores=detection["scores"][keep].float().cpu().numpy().astype(np.float32),
        amodal_masks=masks[0].cpu().numpy(), visible_masks=masks[1].cpu().numpy(),
        invisible_masks=masks[2].cpu().numpy(), image_size=(int(size[0]), int(size[1])))

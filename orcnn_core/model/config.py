"""``ModelConfig``: everything that defines the network (the ``model:`` section of a YAML config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from orcnn_core.config import from_dict, load_yaml
from orcnn_core.errors import ConfigError

BACKBONES = ("resnet50_fpn", "resnet18_fpn", "mobilenet_v3_fpn")
NORMS = ("frozen_batch", "batch", "group")


@dataclass
class ModelConfig:
    """Architecture, variant, classes and inference defaults of one ORCNN model.

    ``num_classes`` counts object classes only (model labels 1..K; 0 is background).
    """

    variant: str = "orcnn"            # see orcnn_core.model.variants.VARIANTS
    class_agnostic_masks: bool = False
    num_classes: int = 1
    class_names: list = field(default_factory=list)    # K names; default "class_1".."class_K"
    category_ids: list = field(default_factory=list)   # K dataset ids; default 1..K

    # backbone + FPN
    backbone: str = "resnet50_fpn"
    norm: str = "frozen_batch"        # frozen_batch (pretrained weights only) | batch | group
    backbone_weights: Optional[str] = None   # local torchvision ImageNet state dict (.safetensors/.pth)
    trainable_backbone_layers: int = 5  # stages (from the top) left trainable; ignored for batch/group
    backbone_width_mult: float = 1.0  # mobilenet_v3_fpn only
    fpn_channels: int = 256

    # RPN
    anchor_sizes: list = field(default_factory=lambda: [32, 64, 128, 256, 512])  # one per FPN level
    aspect_ratios: list = field(default_factory=lambda: [0.5, 1.0, 2.0])
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256

    # RoI heads
    box_representation_size: int = 1024
    box_batch_size_per_image: int = 512
    mask_head_channels: int = 256     # width of the 4 conv3x3 layers and the deconv
    mask_roi_size: int = 14           # RoIAlign output; masks are predicted at 2x this size

    # image resizing (GeneralizedRCNNTransform)
    min_size: int = 800
    max_size: int = 1333

    # inference
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100

    def __post_init__(self) -> None:
        if not self.class_names and isinstance(self.num_classes, int):
            self.class_names = [f"class_{k}" for k in range(1, self.num_classes + 1)]
        if not self.category_ids and isinstance(self.num_classes, int):
            self.category_ids = list(range(1, self.num_classes + 1))

    def validate(self) -> None:
        """Raise ConfigError naming the first field that is out of range or inconsistent."""
        from orcnn_core.model.variants import VARIANTS  # late: variants imports nothing heavy either

        def fail(name: str, why: str) -> None:
            raise ConfigError(f"model.{name}: {why} (got {getattr(self, name)!r})")

        if self.variant not in VARIANTS:
            fail("variant", f"must be one of {', '.join(VARIANTS)}")
        if self.backbone not in BACKBONES:
            fail("backbone", f"must be one of {', '.join(BACKBONES)}")
        if self.norm not in NORMS:
            fail("norm", f"must be one of {', '.join(NORMS)}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            fail("num_classes", "must be an integer >= 1 (object classes, background excluded)")
        if len(self.class_names) != self.num_classes:
            fail("class_names", f"needs one name per class ({self.num_classes})")
        if len(self.category_ids) != self.num_classes or not all(
                isinstance(c, int) for c in self.category_ids):
            fail("category_ids", f"needs one integer id per class ({self.num_classes})")
        if len(set(self.category_ids)) != len(self.category_ids):
            fail("category_ids", "must be unique")
        for name in ("fpn_channels", "box_representation_size", "mask_head_channels", "mask_roi_size",
                     "min_size", "max_size", "detections_per_image", "rpn_batch_size_per_image",
                     "box_batch_size_per_image", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test",
                     "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, "must be a positive integer")
        if self.max_size < self.min_size:
            fail("max_size", f"must be >= min_size ({self.min_size})")
        if not self.anchor_sizes or not all(isinstance(s, (int, float)) and s > 0 for s in self.anchor_sizes):
            fail("anchor_sizes", "must be a non-empty list of positive sizes, one per FPN level")
        if not self.aspect_ratios or not all(isinstance(r, (int, float)) and r > 0
                                             for r in self.aspect_ratios):
            fail("aspect_ratios", "must be a non-empty list of positive ratios")
        if not 0.0 <= self.score_threshold < 1.0:
            fail("score_threshold", "must be in [0, 1)")
        if not 0.0 < self.nms_threshold <= 1.0:
            fail("nms_threshold", "must be in (0, 1]")
        if not 0 <= self.trainable_backbone_layers <= 5:
            fail("trainable_backbone_layers", "must be in [0, 5]")
        if not self.backbone_width_mult > 0:
            fail("backbone_width_mult", "must be > 0")
        if self.backbone_width_mult != 1.0 and self.backbone != "mobilenet_v3_fpn":
            fail("backbone_width_mult", "is only supported by mobilenet_v3_fpn")
        if self.backbone_weights is not None and not isinstance(self.backbone_weights, str):
            fail("backbone_weights", "must be a file path or null")

    @property
    def label_to_category_id(self) -> dict[int, int]:
        """Model label (1..K) -> dataset category id."""
        return {k + 1: int(c) for k, c in enumerate(self.category_ids)}


def model_config_from_dict(data: dict | None) -> ModelConfig:
    """Build and validate a ModelConfig from the contents of a ``model:`` section."""
    return from_dict(ModelConfig, data, where="model")


def load_model_config(path: str | Path) -> ModelConfig:
    """Read only the ``model:`` section of a YAML config file (other sections belong to other parts)."""
    data = load_yaml(path)
    if "model" not in data:
        raise ConfigError(f"config file {path} has no 'model:' section")
    try:
        return model_config_from_dict(data["model"])
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def tiny_config(**overrides) -> ModelConfig:
    """A very small, fast, from-scratch config (64-96 px images, 2 classes) for tests and smoke runs."""
    values = dict(backbone="mobilenet_v3_fpn", backbone_width_mult=0.25, norm="batch", fpn_channels=16,
                  anchor_sizes=[16, 32, 64, 128], box_representation_size=32, mask_head_channels=8,
                  min_size=64, max_size=96, num_classes=2, rpn_pre_nms_top_n_train=200,
                  rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
                  rpn_batch_size_per_image=64, box_batch_size_per_image=64, score_threshold=0.0,
                  detections_per_image=8)
    values.update(overrides)
    if values["backbone"] != "mobilenet_v3_fpn":
        values["backbone_width_mult"] = overrides.get("backbone_width_mult", 1.0)
    cfg = ModelConfig(**values)
    cfg.validate()
    return cfg

"""``build_model``: the one entry point from a ModelConfig to a model of any variant."""

from __future__ import annotations

from torch import nn

from orcnn_core.model.config import ModelConfig
from orcnn_core.model.merged import MergedRCNN
from orcnn_core.model.rcnn import OcclusionRCNN
from orcnn_core.model.variants import get_variant


def build_model(cfg: ModelConfig) -> nn.Module:
    """A randomly initialised model of ``cfg.variant`` (backbone from ``cfg.backbone_weights`` if set)."""
    cfg.validate()
    if get_variant(cfg.variant).members:
        return MergedRCNN(cfg)
    return OcclusionRCNN(cfg)

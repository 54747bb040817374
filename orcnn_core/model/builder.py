"""From configs and files to models: ``build_model`` for any variant, ``load_weights`` for a weights file.

Above every other module of the model package (it imports the model classes and the file IO of
``weights``; nothing imports it back), so the package has no import circle.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from torch import nn

from orcnn_core.model.config import ModelConfig
from orcnn_core.model.merged import MergedRCNN
from orcnn_core.model.rcnn import OcclusionRCNN
from orcnn_core.model.variants import get_variant
from orcnn_core.model.weights import (
    check_compatible,
    load_model_state,
    load_state_dict_file,
    read_sidecar,
    weight_paths,
)


def build_model(cfg: ModelConfig) -> nn.Module:
    """A randomly initialised model of ``cfg.variant`` (backbone from ``cfg.backbone_weights`` if set)."""
    cfg.validate()
    if get_variant(cfg.variant).members:
        return MergedRCNN(cfg)
    return OcclusionRCNN(cfg)


def load_weights(path: str | Path, expected: Optional[ModelConfig] = None) -> tuple[nn.Module, ModelConfig]:
    """Build the model described by the sidecar and load its tensors; returns (model in eval mode, config).

    With ``expected``, a file made for another variant, class count or architecture is a WeightsError.
    """
    tensors_path, _ = weight_paths(path)
    config = read_sidecar(path)
    if expected is not None:
        check_compatible(config, expected, tensors_path)
    state = load_state_dict_file(tensors_path)
    # The file holds every tensor: do not read the ImageNet file the model was once started from.
    model = build_model(dataclasses.replace(config, backbone_weights=None))
    load_model_state(model, state, tensors_path)
    model.eval()
    return model, config

"""ORCNN on torchvision's Mask R-CNN: config, variants, heads, builder and weights I/O."""

from orcnn_core.model.builder import build_model
from orcnn_core.model.config import ModelConfig, load_model_config, model_config_from_dict, tiny_config
from orcnn_core.model.mask_head import occlusion_logits
from orcnn_core.model.merged import MergedRCNN, match_amodal_to_modal, merge_detections
from orcnn_core.model.rcnn import OcclusionRCNN
from orcnn_core.model.variants import VARIANTS, VariantSpec, get_variant, loss_names
from orcnn_core.model.weights import (
    init_mask_heads_from_modal,
    load_state_dict_file,
    load_weights,
    save_weights,
)

__all__ = [
    "MergedRCNN", "ModelConfig", "OcclusionRCNN", "VARIANTS", "VariantSpec", "build_model", "get_variant",
    "init_mask_heads_from_modal", "load_model_config", "load_state_dict_file", "load_weights",
    "loss_names", "match_amodal_to_modal", "merge_detections", "model_config_from_dict",
    "occlusion_logits", "save_weights", "tiny_config",
]

"""ORCNN on torchvision's Mask R-CNN: config, variants, heads, builder and weights I/O.

Import order inside the package, bottom to top (no circle): config, variants -> weights (file IO)
-> backbone, mask_head, roi_heads -> rcnn -> merged -> builder (build_model, load_weights);
modal_init (mask-head transplant) beside builder.
"""

from orcnn_core.model.builder import build_model, load_weights
from orcnn_core.model.config import ModelConfig, load_model_config, model_config_from_dict, tiny_config
from orcnn_core.model.mask_head import occlusion_logits
from orcnn_core.model.merged import MergedRCNN, match_amodal_to_modal, merge_detections
from orcnn_core.model.modal_init import init_mask_heads_from_modal
from orcnn_core.model.rcnn import OcclusionRCNN
from orcnn_core.model.variants import VARIANTS, VariantSpec, get_variant, loss_names
from orcnn_core.model.weights import load_state_dict_file, save_weights

__all__ = [
    "MergedRCNN", "ModelConfig", "OcclusionRCNN", "VARIANTS", "VariantSpec", "build_model", "get_variant",
    "init_mask_heads_from_modal", "load_model_config", "load_state_dict_file", "load_weights",
    "loss_names", "match_amodal_to_modal", "merge_detections", "model_config_from_dict",
    "occlusion_logits", "save_weights", "tiny_config",
]

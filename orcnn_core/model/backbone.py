"""FPN backbones built from torchvision classification networks, with a choice of normalisation.

From-scratch training needs trainable normalisation (``batch`` or ``group``); torchvision's default
``FrozenBatchNorm2d`` (``frozen_batch``) only makes sense on top of pretrained weights, which can be
given as a local torchvision ImageNet state dict (``backbone_weights``); nothing is downloaded.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

from torch import nn
from torchvision.models import mobilenetv3, resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import misc as misc_nn_ops

from orcnn_core.errors import ConfigError
from orcnn_core.model.config import ModelConfig
from orcnn_core.model.weights import load_state_dict_file

logger = logging.getLogger(__name__)


def _group_norm(num_channels: int, max_groups: int = 32) -> nn.GroupNorm:
    # Narrow (width_mult < 1) networks have channel counts like 24 or 40: use the largest divisor.
    return nn.GroupNorm(math.gcd(max_groups, num_channels), num_channels)


def norm_layer(name: str) -> Callable[[int], nn.Module]:
    """The normalisation layer constructor for ``ModelConfig.norm``."""
    if name == "frozen_batch":
        return misc_nn_ops.FrozenBatchNorm2d
    if name == "batch":
        return nn.BatchNorm2d
    if name == "group":
        return _group_norm
    raise ConfigError(f"model.norm: unknown normalisation {name!r}")


def load_backbone_weights(network: nn.Module, path: str) -> None:
    """Load a local torchvision classification state dict into ``network`` (classifier keys ignored)."""
    from orcnn_core.errors import WeightsError

    state = load_state_dict_file(path)
    own = network.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise WeightsError(f"{path}: backbone weight '{key}' has shape {tuple(value.shape)}, "
                               f"the model expects {tuple(own[key].shape)}")
    result = network.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.startswith(("fc.", "classifier."))]
    if missing or unexpected:
        raise WeightsError(f"{path}: not a state dict of this backbone "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    logger.info("loaded backbone weights from %s (%d tensors)", path, len(state))


def _freeze_stem(network: nn.Module, trainable: list[str]) -> None:
    for name, parameter in network.named_parameters():
        if not name.startswith(tuple(trainable)):
            parameter.requires_grad_(False)


def _resnet_fpn(cfg: ModelConfig, norm: Callable[[int], nn.Module]) -> BackboneWithFPN:
    network = getattr(resnet, cfg.backbone.replace("_fpn", ""))(weights=None, norm_layer=norm)
    if cfg.backbone_weights:
        load_backbone_weights(network, cfg.backbone_weights)
    if cfg.norm == "frozen_batch":  # torchvision's convention: freeze the lowest stages
        stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][:cfg.trainable_backbone_layers]
        _freeze_stem(network, stages + (["bn1"] if cfg.trainable_backbone_layers == 5 else []))
    stage2 = network.inplanes // 8
    in_channels = [stage2 * 2 ** i for i in range(4)]
    return_layers = {f"layer{k}": str(k - 1) for k in range(1, 5)}
    return BackboneWithFPN(network, return_layers, in_channels, cfg.fpn_channels)


def _mobilenet_fpn(cfg: ModelConfig, norm: Callable[[int], nn.Module]) -> BackboneWithFPN:
    settings, last_channel = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_large",
                                                            width_mult=cfg.backbone_width_mult)
    network = mobilenetv3.MobileNetV3(settings, last_channel, norm_layer=norm)
    if cfg.backbone_weights:
        load_backbone_weights(network, cfg.backbone_weights)
    features = network.features
    # Outputs of strides 8, 16 and 32 (torchvision's own mobilenet FPN uses two stride-32 maps,
    # too coarse for small objects).
    strided = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    picked = [strided[-2] - 1, strided[-1] - 1, len(features) - 1]  # last block of strides 8, 16, 32
    if cfg.norm == "frozen_batch":
        stage_starts = [0] + strided
        first_trainable = stage_starts[max(0, len(stage_starts) - cfg.trainable_backbone_layers)] \
            if cfg.trainable_backbone_layers else len(features)
        for block in features[:first_trainable]:
            block.requires_grad_(False)
    return_layers = {str(i): str(level) for level, i in enumerate(picked)}
    in_channels = [_out_channels(features[i]) for i in picked]
    return BackboneWithFPN(features, return_layers, in_channels, cfg.fpn_channels)


def _out_channels(block: nn.Module) -> int:
    return getattr(block, "out_channels", None) or [m for m in block.modules()
                                                    if isinstance(m, nn.Conv2d)][-1].out_channels


BACKBONE_BUILDERS = {
    "resnet50_fpn": _resnet_fpn,
    "resnet18_fpn": _resnet_fpn,
    "mobilenet_v3_fpn": _mobilenet_fpn,
}


def build_backbone(cfg: ModelConfig) -> BackboneWithFPN:
    """The FPN backbone of ``cfg`` (``out_channels`` = ``cfg.fpn_channels``; levels '0'.. and 'pool')."""
    if cfg.backbone not in BACKBONE_BUILDERS:
        raise ConfigError(f"model.backbone: unknown backbone {cfg.backbone!r} "
                          f"(known: {', '.join(BACKBONE_BUILDERS)})")
    return BACKBONE_BUILDERS[cfg.backbone](cfg, norm_layer(cfg.norm))


def feature_level_names(backbone: nn.Module) -> list[str]:
    """Names of the FPN levels RoIAlign pools from (all but the max-pool level)."""
    return [str(i) for i in range(len(backbone.fpn.inner_blocks))]


def count_levels(backbone: nn.Module) -> int:
    """Number of feature maps the backbone returns (FPN levels + the max-pool level)."""
    return len(backbone.fpn.inner_blocks) + 1


"""Amodal and visible mask heads on one shared RoIAlign, the occlusion logits and the mask losses.

Each branch has torchvision's Mask R-CNN layout (``MaskRCNNHeads``: 4 x conv3x3+ReLU,
``MaskRCNNPredictor``: deconv 2x2 stride 2 + ReLU, 1x1 conv), so a modal torchvision mask head's
weights fit either branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import roi_align

from orcnn_core.model.variants import VariantSpec


class MaskBranch(nn.Module):
    """One Mask R-CNN mask head: features (P, C, S, S) -> logits (P, classes, 2S, 2S)."""

    def __init__(self, in_channels: int, channels: int, num_mask_classes: int) -> None:
        super().__init__()
        self.head = MaskRCNNHeads(in_channels, [channels] * 4, dilation=1)
        self.predictor = MaskRCNNPredictor(channels, channels, num_mask_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.head(features))


def occlusion_logits(amodal_logits: torch.Tensor, visible_logits: torch.Tensor) -> torch.Tensor:
    """Occlusion (invisible) logits = amodal - ReLU(visible) (paper sec. 3.1)."""
    # The ReLU keeps pixels where neither mask is predicted from counting as occluded.
    return amodal_logits - F.relu(visible_logits)


class AmodalMaskHeads(nn.Module):
    """The mask branches a variant has, all reading the same RoI features.

    ``forward`` returns a dict of logits with the keys of the variant's masks: ``amodal``,
    ``visible`` and (when both branches exist) ``invisible``.
    """

    def __init__(self, spec: VariantSpec, in_channels: int, channels: int, num_mask_classes: int) -> None:
        super().__init__()
        self.detach_visible = spec.detach_visible
        self.branches = nn.ModuleDict({kind: MaskBranch(in_channels, channels, num_mask_classes)
                                       for kind in spec.mask_branches})

    def branch_logits(self, roi_features: torch.Tensor) -> dict[str, torch.Tensor]:
        """(P, classes, M, M) logits of each branch the variant has."""
        logits = {}
        if "amodal" in self.branches:
            logits["amodal"] = self.branches["amodal"](roi_features)
        if "visible" in self.branches:
            # independent variant: the visible loss must not train the shared RoI features.
            visible_input = roi_features.detach() if self.detach_visible else roi_features
            logits["visible"] = self.branches["visible"](visible_input)
        return logits

    def add_invisible(self, logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add the occlusion logits to amodal + visible ``logits`` (any shape); others pass unchanged."""
        if len(logits) == 2:
            amodal = logits["amodal"].detach() if self.detach_visible else logits["amodal"]
            logits["invisible"] = occlusion_logits(amodal, logits["visible"])
        return logits

    def forward(self, roi_features: torch.Tensor, with_invisible: bool = True) -> dict[str, torch.Tensor]:
        logits = self.branch_logits(roi_features)
        return self.add_invisible(logits) if with_invisible else logits

    def class_logits(self, roi_features: torch.Tensor, labels: torch.Tensor,
                     with_invisible: bool = True) -> dict[str, torch.Tensor]:
        """(P, M, M) logits of each proposal's class; occlusion logits on that class only (cheaper)."""
        logits = {kind: select_class(value, labels)
                  for kind, value in self.branch_logits(roi_features).items()}
        return self.add_invisible(logits) if with_invisible else logits


def crop_mask_targets(gt_masks: torch.Tensor, proposals: torch.Tensor, matched_idxs: torch.Tensor,
                      size: int) -> torch.Tensor:
    """RoIAlign-crop (G, C, H, W) ground-truth mask channels to (P, C, size, size) for P proposals."""
    rois = torch.cat([matched_idxs.to(proposals)[:, None], proposals], dim=1)
    return roi_align(gt_masks.to(proposals), rois, (size, size), 1.0)


TARGET_KEYS = {"amodal": "amodal_masks", "visible": "visible_masks"}


def stack_mask_targets(target: dict[str, torch.Tensor], kinds: tuple) -> torch.Tensor:
    """(G, len(kinds), H, W) float ground truth of one image; invisible = amodal AND NOT visible."""
    channels = []
    for kind in kinds:
        if kind == "invisible":
            channels.append(target["amodal_masks"].bool() & ~target["visible_masks"].bool())
        else:
            channels.append(target[TARGET_KEYS[kind]].bool())
    return torch.stack(channels, dim=1).float()


def mask_bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mask R-CNN's mean per-pixel sigmoid BCE between (P, M, M) logits and soft targets."""
    if targets.numel() == 0:
        return logits.sum() * 0  # keeps the graph connected when a batch has no positives
    return F.binary_cross_entropy_with_logits(logits, targets)


def select_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(P, classes, M, M) logits -> (P, M, M) of each proposal's label (channel 0 if class-agnostic)."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    return logits[torch.arange(labels.shape[0], device=labels.device), labels]

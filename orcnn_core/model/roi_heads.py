"""torchvision's ``RoIHeads`` with the amodal/visible mask branches in place of the single mask head.

Box sampling, box losses and detection post-processing are torchvision's own; only the mask part
of ``forward`` differs: one RoIAlign feeds every mask branch, and the mask losses are the variant's.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from orcnn_core.model.mask_head import (
    AmodalMaskHeads,
    crop_mask_targets,
    mask_bce_loss,
    stack_mask_targets,
)
from orcnn_core.model.variants import LOSS_NAMES, VariantSpec


def output_kinds(spec: VariantSpec) -> tuple:
    """Mask kinds the model predicts, in the channel order of ``mask_probs``."""
    if len(spec.mask_branches) == 2:
        return ("amodal", "visible", "invisible")
    return tuple(spec.mask_branches)


class AmodalRoIHeads(RoIHeads):
    """RoI heads of ORCNN and its variants: box head + shared-RoIAlign amodal/visible mask heads."""

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, box_predictor: nn.Module, *,
                 mask_roi_pool: nn.Module, mask_heads: AmodalMaskHeads, spec: VariantSpec,
                 **box_kwargs) -> None:
        super().__init__(box_roi_pool, box_head, box_predictor, **box_kwargs)
        # Set after super(): torchvision's has_mask() stays False, so its single-mask code never runs.
        self.mask_roi_pool = mask_roi_pool
        self.mask_heads = mask_heads
        self.spec = spec
        self.kinds = output_kinds(spec)

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]],
                targets: Optional[list[dict[str, torch.Tensor]]] = None,
                ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Training: ([], losses). Eval: per image boxes, labels, scores and ``mask_probs`` (N, C, M, M)."""
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels,
                                                          regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            losses.update(self.mask_losses(features, proposals, image_shapes, labels, matched_idxs, targets))
            return [], losses

        boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals,
                                                            image_shapes)
        mask_probs = self.mask_probabilities(features, boxes, labels, image_shapes)
        return [{"boxes": b, "labels": lab, "scores": s, "mask_probs": m}
                for b, lab, s, m in zip(boxes, labels, scores, mask_probs)], {}

    def mask_losses(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                    image_shapes: list[tuple[int, int]], labels: list[torch.Tensor],
                    matched_idxs: list[torch.Tensor], targets: list[dict[str, torch.Tensor]],
                    ) -> dict[str, torch.Tensor]:
        """L_AM, L_VM, L_IVM (those the variant has) on the positive proposals."""
        positives = [torch.where(lab > 0)[0] for lab in labels]
        mask_proposals = [p[i] for p, i in zip(proposals, positives)]
        roi_features = self.mask_roi_pool(features, mask_proposals, image_shapes)
        kinds = self.spec.mask_losses
        pos_labels = torch.cat([lab[i] for lab, i in zip(labels, positives)])
        logits = self.mask_heads.class_logits(roi_features, pos_labels, with_invisible="invisible" in kinds)
        size = next(iter(logits.values())).shape[-1]
        gt = torch.cat([crop_mask_targets(stack_mask_targets(t, kinds), p, m[i], size)
                        for t, p, m, i in zip(targets, mask_proposals, matched_idxs, positives)])
        return {LOSS_NAMES[kind]: mask_bce_loss(logits[kind], gt[:, c]) for c, kind in enumerate(kinds)}

    def mask_probabilities(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                           labels: list[torch.Tensor], image_shapes: list[tuple[int, int]],
                           ) -> list[torch.Tensor]:
        """Per image (N, C, M, M) sigmoid probabilities of the detected class, channels ``self.kinds``."""
        roi_features = self.mask_roi_pool(features, boxes, image_shapes)
        selected = self.mask_heads.class_logits(roi_features, torch.cat(labels),
                                                with_invisible="invisible" in self.kinds)
        probs = torch.stack([selected[kind] for kind in self.kinds], dim=1).sigmoid()
        return list(probs.split([len(b) for b in boxes]))

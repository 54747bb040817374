"""torchvision's ``RoIHeads`` with the amodal/visible mask branches in place of the single mask head.

Box sampling, box losses and detection post-processing are torchvision's own; only the mask part
of ``forward`` differs: one RoIAlign feeds every mask branch, and the mask losses are the variant's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

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


@dataclass(frozen=True)
class DetectionLimits:
    """Per-call limits of eval mode: detections scoring at most ``score_threshold`` are dropped before
    NMS, at most ``detections_per_image`` are kept after it."""

    score_threshold: float
    detections_per_image: int


class _LimitedView:
    """The RoI heads as torchvision's ``postprocess_detections`` reads them, with per-call limits.

    That method reads ``self.score_thresh`` and ``self.detections_per_img``; handing it this view
    instead of changing the module's attributes keeps a model shared by several threads unchanged.
    """

    def __init__(self, heads: RoIHeads, limits: DetectionLimits) -> None:
        self._heads = heads
        self.score_thresh = limits.score_threshold
        self.detections_per_img = limits.detections_per_image

    def __getattr__(self, name: str) -> Any:
        return getattr(self._heads, name)


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
                limits: Optional[DetectionLimits] = None,
                ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Training: ([], losses). Eval: per image boxes, labels, scores and ``mask_probs`` (N, C, M, M),
        within ``limits`` (default: the module's own ``score_thresh`` / ``detections_per_img``)."""
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

        heads = self if limits is None else _LimitedView(self, limits)
        boxes, scores, labels = RoIHeads.postprocess_detections(heads, class_logits, box_regression,
                                                                proposals, image_shapes)
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
        if len(boxes) == 1:  # no split: a traced export must not freeze the detection count
            return [probs]
        return list(probs.split([len(b) for b in boxes]))

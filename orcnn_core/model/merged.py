"""mergedAMRCNN (paper sec. 4.1): an amodal Mask R-CNN and a modal one, results matched by mask IoU."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from orcnn_core.model.config import ModelConfig
from orcnn_core.model.rcnn import OcclusionRCNN, tight_boxes
from orcnn_core.model.variants import get_variant


def _as_tensor(values) -> Tensor:
    return values if torch.is_tensor(values) else torch.as_tensor(np.asarray(values))


def match_amodal_to_modal(amodal_masks, amodal_labels, amodal_scores, modal_masks, modal_labels,
                          iou_threshold: float = 0.5) -> list[Optional[int]]:
    """Greedy matching: per amodal result (by descending score) the index of its modal result, or None.

    Masks are (N, H, W) / (M, H, W) bool (or (N, 1, H, W)); an amodal result takes the still
    unmatched modal result of the same label with the highest mask IoU, if that IoU > ``iou_threshold``.
    """
    amodal = _as_tensor(amodal_masks).bool().flatten(1).float()
    modal = _as_tensor(modal_masks).bool().flatten(1).float()
    a_labels, m_labels = _as_tensor(amodal_labels), _as_tensor(modal_labels)
    matches: list[Optional[int]] = [None] * amodal.shape[0]
    if amodal.shape[0] == 0 or modal.shape[0] == 0:
        return matches
    inter = amodal @ modal.T
    union = amodal.sum(1, keepdim=True) + modal.sum(1)[None] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
    # Small (N, M): one transfer, so the greedy loop runs on the CPU without a device sync per step.
    iou = iou.cpu()
    iou[a_labels.cpu().reshape(-1, 1) != m_labels.cpu().reshape(1, -1)] = -1.0  # other class: no match
    taken = torch.zeros(modal.shape[0], dtype=torch.bool)
    order = torch.argsort(_as_tensor(amodal_scores).float(), descending=True, stable=True)
    for i in order.tolist():
        candidates = iou[i].masked_fill(taken, -1.0)
        j = int(candidates.argmax())
        if candidates[j] > iou_threshold:
            matches[i] = j
            taken[j] = True
    return matches


def merge_detections(amodal: dict[str, Tensor], modal: dict[str, Tensor], iou_threshold: float = 0.5,
                     mask_threshold: float = 0.5) -> dict[str, Tensor]:
    """Merge one image's arcnn and mrcnn outputs (dicts of ``boxes``, ``labels``, ``scores``, masks).

    Matched: score = mean of both, visible mask from the modal result. Unmatched amodal: its amodal
    mask is the visible mask, invisible empty. Unmatched modal results are dropped. Invisible
    probability = min(amodal, 1 - visible), i.e. amodal AND NOT visible once thresholded.
    """
    amodal_masks = amodal["amodal_masks"]
    matches = match_amodal_to_modal(amodal_masks >= mask_threshold, amodal["labels"], amodal["scores"],
                                    modal["visible_masks"] >= mask_threshold, modal["labels"], iou_threshold)
    visible_masks = amodal_masks.clone()
    scores = amodal["scores"].clone()
    matched = torch.zeros(len(matches), dtype=torch.bool, device=amodal_masks.device)
    for i, j in enumerate(matches):
        if j is not None:
            visible_masks[i] = modal["visible_masks"][j]
            scores[i] = (amodal["scores"][i] + modal["scores"][j]) / 2
            matched[i] = True
    invisible_masks = torch.minimum(amodal_masks, 1 - visible_masks)
    invisible_masks[~matched] = 0
    order = torch.argsort(scores, descending=True, stable=True)
    merged = {"boxes": amodal["boxes"], "labels": amodal["labels"], "scores": scores,
              "amodal_masks": amodal_masks, "visible_masks": visible_masks,
              "invisible_masks": invisible_masks,
              "visible_boxes": tight_boxes(visible_masks[:, 0] >= mask_threshold).to(amodal["boxes"])}
    return {k: v[order] for k, v in merged.items()}


class MergedRCNN(nn.Module):
    """The ``merged`` variant: ``amodal_model`` (arcnn) and ``modal_model`` (mrcnn) side by side.

    Training returns the two models' losses added per name (the same as training both at once);
    eval returns the merged results in the same format as ``OcclusionRCNN``.
    """

    def __init__(self, cfg: ModelConfig, iou_threshold: float = 0.5) -> None:
        super().__init__()
        members = get_variant(cfg.variant).members
        self.amodal_model = OcclusionRCNN(dataclasses.replace(cfg, variant=members[0]))
        self.modal_model = OcclusionRCNN(dataclasses.replace(cfg, variant=members[1]))
        self.config = cfg
        self.spec = get_variant(cfg.variant)
        self.iou_threshold = iou_threshold

    def forward(self, images: Sequence[Tensor], targets: Optional[list[dict[str, Tensor]]] = None):
        """Summed losses (training) or merged per-image detections (eval)."""
        if self.training:
            losses = dict(self.amodal_model(images, targets))
            for name, value in self.modal_model(images, targets).items():
                losses[name] = losses[name] + value if name in losses else value
            return losses
        return self.detect(images)

    def detect(self, images: Sequence[Tensor], *, score_threshold: Optional[float] = None,
               detections_per_image: Optional[int] = None,
               paste_masks: bool = True) -> list[dict[str, Tensor]]:
        """Merged detections; the members run with per-call limits that are only ever LOOSER than
        their own (a modal result below the threshold can still lift its amodal partner's merged
        score above it), so the caller applies ``score_threshold`` / the cap to the merged results.
        Masks are always pasted (``paste_masks`` is accepted and ignored): matching needs them."""
        limits = {}
        if score_threshold is not None:
            limits["score_threshold"] = min(float(score_threshold), self.config.score_threshold)
        if detections_per_image is not None:
            limits["detections_per_image"] = max(int(detections_per_image), self.config.detections_per_image)
        return [merge_detections(a, m, self.iou_threshold)
                for a, m in zip(self.amodal_model.detect(images, **limits),
                                self.modal_model.detect(images, **limits))]

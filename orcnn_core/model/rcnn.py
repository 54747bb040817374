"""``OcclusionRCNN``: torchvision's two-stage detector with amodal/visible mask heads (all variants).

torchvision's ``MaskRCNN`` is ``FasterRCNN`` plus one mask head; this class is torchvision's
``GeneralizedRCNN`` with Faster R-CNN's backbone and RPN, ``AmodalRoIHeads`` (the variant's mask
branches on one shared RoIAlign) and a transform that resizes and pastes the amodal/visible/invisible
masks.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import MultiScaleRoIAlign

from orcnn_core.errors import ConfigError, InputError
from orcnn_core.model.backbone import build_backbone, count_levels, feature_level_names
from orcnn_core.model.config import ModelConfig
from orcnn_core.model.mask_head import TARGET_KEYS, AmodalMaskHeads
from orcnn_core.model.roi_heads import AmodalRoIHeads, DetectionLimits
from orcnn_core.model.variants import get_variant

MASK_KEYS = ("amodal_masks", "visible_masks")


def paste_mask_channels(masks: Tensor, boxes: Tensor, image_size: tuple[int, int],
                        padding: int = 1) -> Tensor:
    """Paste (N, C, M, M) box-relative masks into (N, C, H, W) images, all channels in one pass.

    Same geometry as torchvision's ``paste_masks_in_image`` (which pastes one channel).
    """
    height, width = image_size
    out = masks.new_zeros((masks.shape[0], masks.shape[1], height, width))
    if masks.shape[0] == 0:
        return out
    masks, scale = expand_masks(masks, padding=padding)
    boxes = expand_boxes(boxes, scale).to(torch.int64).tolist()
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        resized = F.interpolate(masks[i:i + 1], size=(h, w), mode="bilinear", align_corners=False)[0]
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
        if cx1 > cx0 and cy1 > cy0:
            out[i, :, cy0:cy1, cx0:cx1] = resized[:, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return out


# Float pixels pasted at once by ``paste_box_masks``: bounds its temporary memory (~256 MB) whatever the
# image size and detection count.
PASTE_PIXEL_BUDGET = 64 * 2**20


def paste_box_masks(box_masks: dict[str, Tensor], boxes: Tensor, image_size: tuple[int, int],
                    threshold: Optional[float] = None) -> dict[str, Tensor]:
    """Image-sized masks from box-relative ones (``{kind: (N, 1, M, M)}``), a few instances at a time.

    With ``threshold`` the result is bool (``>= threshold``), else float probabilities; the values are
    those of ``paste_mask_channels``.
    """
    kinds = list(box_masks)
    stacked = torch.cat([box_masks[k] for k in kinds], dim=1)  # (N, C, M, M)
    n, channels = stacked.shape[:2]
    height, width = image_size
    dtype = torch.bool if threshold is not None else torch.float32
    out = torch.zeros((n, channels, height, width), dtype=dtype, device=stacked.device)
    step = max(1, PASTE_PIXEL_BUDGET // max(1, channels * height * width))
    for start in range(0, n, step):
        pasted = paste_mask_channels(stacked[start:start + step], boxes[start:start + step], image_size)
        out[start:start + step] = pasted >= threshold if threshold is not None else pasted
    return {kind: out[:, c:c + 1] for c, kind in enumerate(kinds)}


def tight_boxes(masks: Tensor) -> Tensor:
    """(N, 4) float ``x0 y0 x1 y1`` tight boxes (far edge exclusive) of (N, H, W) bool masks; 0 if empty.

    The torch twin of ``orcnn_core.masks.mask_boxes``: it stays on the masks' device.
    """
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    height, width = masks.shape[-2:]
    y0 = rows.float().argmax(dim=1)
    y1 = height - rows.flip(1).float().argmax(dim=1)
    x0 = cols.float().argmax(dim=1)
    x1 = width - cols.flip(1).float().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return boxes * rows.any(dim=1, keepdim=True)


def name_mask_channels(probs: Tensor, kinds) -> dict[str, Tensor]:
    """``amodal``, ``visible``, ``invisible`` (N, 1, ...) slices of (N, len(kinds), ...) mask channels.

    A model without a head copies the other mask (paper 4.1); without both, invisible is zeros.
    """
    masks = {kind: probs[:, c:c + 1] for c, kind in enumerate(kinds)}
    masks.setdefault("amodal", masks.get("visible"))
    masks.setdefault("visible", masks["amodal"])
    if "invisible" not in masks:
        masks["invisible"] = torch.zeros_like(masks["amodal"])
    return masks


class AmodalTransform(GeneralizedRCNNTransform):
    """torchvision's resize/normalise/batch transform, extended to amodal and visible targets/outputs."""

    def resize(self, image: Tensor, target: Optional[dict[str, Tensor]] = None,
               ) -> tuple[Tensor, Optional[dict[str, Tensor]]]:
        if target is None:
            return super().resize(image, target)
        kinds = [k for k in MASK_KEYS if k in target]
        counts = [len(target[k]) for k in kinds]
        if kinds:  # torchvision resizes target["masks"]: pass all mask stacks through it at once
            target["masks"] = torch.cat([target.pop(k) for k in kinds])
        size = image.shape[-2:]
        image, target = super().resize(image, target)
        if kinds:
            for kind, part in zip(kinds, target.pop("masks").split(counts)):
                target[kind] = part
        if "visible_boxes" in target:
            target["visible_boxes"] = resize_boxes(target["visible_boxes"], size, image.shape[-2:])
        return image, target

    def postprocess(self, result: list[dict[str, Tensor]], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        if self.training:
            return result
        result = super().postprocess(result, image_shapes, original_image_sizes)  # resizes boxes
        for pred, size in zip(result, original_image_sizes):
            pred["mask_probs"] = paste_mask_channels(pred["mask_probs"], pred["boxes"], size)
        return result


# torchvision's Faster R-CNN constants (its ``FasterRCNN.__init__`` defaults), so the parts built
# here are exactly those torchvision would build.
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]
RPN_FG_IOU, RPN_BG_IOU, RPN_POSITIVE_FRACTION, RPN_NMS = 0.7, 0.3, 0.5, 0.7
BOX_FG_IOU, BOX_BG_IOU, BOX_POSITIVE_FRACTION = 0.5, 0.5, 0.25


def _build_rpn(cfg: ModelConfig, channels: int, levels: int) -> RegionProposalNetwork:
    anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), (tuple(cfg.aspect_ratios),) * levels)
    return RegionProposalNetwork(
        anchors, RPNHead(channels, anchors.num_anchors_per_location()[0]),
        RPN_FG_IOU, RPN_BG_IOU, cfg.rpn_batch_size_per_image, RPN_POSITIVE_FRACTION,
        dict(training=cfg.rpn_pre_nms_top_n_train, testing=cfg.rpn_pre_nms_top_n_test),
        dict(training=cfg.rpn_post_nms_top_n_train, testing=cfg.rpn_post_nms_top_n_test),
        RPN_NMS, score_thresh=0.0)


def _build_box_parts(cfg: ModelConfig, names: list[str]) -> tuple:
    """RoIAlign, two-layer MLP and class/box predictor of the box head (torchvision's layout)."""
    return (MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
            TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.box_representation_size),
            FastRCNNPredictor(cfg.box_representation_size, cfg.num_classes + 1))


def _build_roi_heads(cfg: ModelConfig, spec, names: list[str], box_parts: tuple) -> AmodalRoIHeads:
    return AmodalRoIHeads(
        *box_parts, fg_iou_thresh=BOX_FG_IOU, bg_iou_thresh=BOX_BG_IOU,
        batch_size_per_image=cfg.box_batch_size_per_image, positive_fraction=BOX_POSITIVE_FRACTION,
        bbox_reg_weights=None, score_thresh=cfg.score_threshold, nms_thresh=cfg.nms_threshold,
        detections_per_img=cfg.detections_per_image,
        mask_roi_pool=MultiScaleRoIAlign(names, output_size=cfg.mask_roi_size, sampling_ratio=2),
        mask_heads=AmodalMaskHeads(spec, cfg.fpn_channels, cfg.mask_head_channels,
                                   1 if cfg.class_agnostic_masks else cfg.num_classes + 1),
        spec=spec)


class OcclusionRCNN(GeneralizedRCNN):
    """ORCNN and its single-model variants (``cfg.variant``), built from a ModelConfig.

    The parts are torchvision's Faster R-CNN parts (FPN backbone, RPN, box head), built once here
    with the same attribute names, so state dicts keep torchvision's keys; the RoI heads and the
    transform are the amodal ones.

    Training: ``model(images, targets)`` -> dict of losses. Eval: ``model(images)`` (the config's
    limits) or ``model.detect(images, score_threshold=..., detections_per_image=...)`` -> per image
    ``boxes``, ``labels``, ``scores``, ``amodal_masks``, ``visible_masks``, ``invisible_masks``
    (N, 1, H, W probabilities at the input size) and ``visible_boxes``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        spec = get_variant(cfg.variant)
        if spec.members:
            raise ConfigError(f"model.variant: {cfg.variant!r} is an ensemble; build it with build_model")
        backbone = build_backbone(cfg)
        levels = count_levels(backbone)
        if len(cfg.anchor_sizes) != levels:
            raise ConfigError(f"model.anchor_sizes: backbone {cfg.backbone} has {levels} feature levels, "
                              f"got {len(cfg.anchor_sizes)} anchor sizes")
        names = feature_level_names(backbone)
        # Parameters are created in torchvision's order (box head, RPN head, then the mask heads), so
        # a seed gives the same initial weights as torchvision's own construction would.
        box_parts = _build_box_parts(cfg, names)
        rpn = _build_rpn(cfg, backbone.out_channels, levels)
        super().__init__(backbone, rpn, _build_roi_heads(cfg, spec, names, box_parts),
                         AmodalTransform(cfg.min_size, cfg.max_size, IMAGE_MEAN, IMAGE_STD))
        self.config = cfg
        self.spec = spec

    def forward(self, images: list[Tensor], targets: Optional[list[dict[str, Tensor]]] = None):
        """Losses (training) or per-image detections with amodal/visible/invisible masks (eval)."""
        if self.training:
            targets = [self.prepare_target(t, img, i)
                       for i, (t, img) in enumerate(zip(targets or [], images))]
            if len(targets) != len(images):
                raise InputError(f"training needs one target per image: {len(images)} images, "
                                 f"{len(targets)} targets")
            return super().forward(images, targets)
        return self.detect(images)

    def detect(self, images: list[Tensor], *, score_threshold: Optional[float] = None,
               detections_per_image: Optional[int] = None,
               paste_masks: bool = True) -> list[dict[str, Tensor]]:
        """Detections of eval mode with per-call limits (default: the config's).

        The limits are arguments, not module state, so several callers (threads) can share one model.
        With ``paste_masks=False`` the masks stay box-relative (``amodal_box_masks`` etc., (N, 1, M, M)
        probabilities, to be pasted by ``paste_box_masks``): a caller that keeps only some detections,
        or wants bool masks, then never holds every float mask at image size.
        """
        limits = DetectionLimits(
            self.config.score_threshold if score_threshold is None else float(score_threshold),
            self.config.detections_per_image if detections_per_image is None else int(detections_per_image))
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        batch, _ = self.transform(images)
        features = self.backbone(batch.tensors)
        proposals, _ = self.rpn(batch, features)
        detections, _ = self.roi_heads(features, proposals, batch.image_sizes, limits=limits)
        if not paste_masks:
            detections = GeneralizedRCNNTransform.postprocess(self.transform, detections, batch.image_sizes,
                                                              original_sizes)  # boxes only
            for detection in detections:
                named = name_mask_channels(detection.pop("mask_probs"), self.roi_heads.kinds)
                detection.update({f"{kind}_box_masks": value for kind, value in named.items()})
            return detections
        detections = self.transform.postprocess(detections, batch.image_sizes, original_sizes)
        return [self.assemble_output(d) for d in detections]

    def prepare_target(self, target: dict[str, Tensor], image: Tensor, index: int) -> dict[str, Tensor]:
        """Check one training target; for ``mrcnn`` make the visible boxes the box targets."""
        image_id = target.get("image_id", index)
        where = f"target of image {int(image_id) if torch.is_tensor(image_id) else image_id}"
        needed = ["boxes", "labels"] + [TARGET_KEYS[k] for k in self.spec.mask_losses if k in TARGET_KEYS]
        if "invisible" in self.spec.mask_losses:
            needed += list(MASK_KEYS)
        if self.spec.box_target == "visible":
            needed.append("visible_boxes")
        for key in dict.fromkeys(needed):
            if key not in target:
                raise InputError(f"{where}: missing '{key}'")
        target = dict(target)
        if self.spec.box_target == "visible":
            # A fully occluded instance has no visible box: Mask R-CNN on visible data never sees it.
            boxes = target["visible_boxes"]
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            for key in ("boxes", "labels", "visible_boxes", *MASK_KEYS):
                if key in target:
                    target[key] = target[key][keep]
            target["boxes"] = target["visible_boxes"]
        boxes, labels = target["boxes"], target["labels"]
        n = len(labels)
        if boxes.dim() != 2 or boxes.shape != (n, 4) or not boxes.is_floating_point():
            raise InputError(f"{where}: 'boxes' must be float (N, 4) with N = {n} labels, "
                             f"got {tuple(boxes.shape)} {boxes.dtype}")
        num_classes = self.config.num_classes
        if labels.dtype != torch.int64 or (n and (labels.min() < 1 or labels.max() > num_classes)):
            raise InputError(f"{where}: 'labels' must be int64 in 1..{self.config.num_classes}")
        bad = torch.where((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))[0]
        if len(bad):
            raise InputError(f"{where}: instance {int(bad[0])} has an empty box {boxes[bad[0]].tolist()}")
        for key in MASK_KEYS:
            if key in target and tuple(target[key].shape) != (n, *image.shape[-2:]):
                raise InputError(f"{where}: '{key}' must be (N, H, W) = {(n, *image.shape[-2:])}, "
                                 f"got {tuple(target[key].shape)}")
        return target

    def assemble_output(self, detection: dict[str, Tensor]) -> dict[str, Tensor]:
        """Name the pasted mask channels; models without a head copy the other mask (paper 4.1)."""
        masks = name_mask_channels(detection.pop("mask_probs"), self.roi_heads.kinds)
        for kind, value in masks.items():
            detection[f"{kind}_masks"] = value
        if self.spec.box_target == "visible":
            detection["visible_boxes"] = detection["boxes"].clone()
        else:
            detection["visible_boxes"] = tight_boxes(masks["visible"][:, 0] >= 0.5).to(detection["boxes"])
        return detection

"""Shared pieces of the benchmarks: torchvision's Mask R-CNN built like an ORCNN model config."""

from __future__ import annotations

import torch


def torchvision_mask_rcnn(cfg) -> torch.nn.Module:
    """torchvision MaskRCNN with ORCNN's backbone, anchors, box head, mask-head width and the
    config's RPN / detection settings for training and inference (random initial weights, created
    in the same order as ORCNN's, so a seed gives the same backbone)."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    from orcnn_core.model.backbone import build_backbone, count_levels, feature_level_names

    backbone = build_backbone(cfg)
    names, levels = feature_level_names(backbone), count_levels(backbone)
    return MaskRCNN(
        backbone, num_classes=None, min_size=cfg.min_size, max_size=cfg.max_size,
        rpn_anchor_generator=AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes),
                                             (tuple(cfg.aspect_ratios),) * levels),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        box_roi_pool=MultiScaleRoIAlign(names, 7, 2),
        box_head=TwoMLPHead(cfg.fpn_channels * 49, cfg.box_representation_size),
        box_predictor=FastRCNNPredictor(cfg.box_representation_size, cfg.num_classes + 1),
        box_score_thresh=cfg.score_threshold, box_nms_thresh=cfg.nms_threshold,
        box_detections_per_img=cfg.detections_per_image,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        mask_roi_pool=MultiScaleRoIAlign(names, cfg.mask_roi_size, 2),
        mask_head=MaskRCNNHeads(cfg.fpn_channels, [cfg.mask_head_channels] * 4, 1),
        mask_predictor=MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, cfg.num_classes + 1))

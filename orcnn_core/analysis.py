"""The one per-frame analysis: everything derived from a ``Prediction`` that its consumers share.

The node, the replay, ``orcnn predict`` and ``orcnn demo`` all publish the same thing for a frame:
``analyze`` runs the scene layering (``orcnn_core.layering``: duplicates removed, one front/behind
decision per overlapping pair, an acyclic front-to-back order, masks that follow it), binarises the
masks once, computes their tight boxes once and the occlusion graph once, and hands the result (a
``FrameAnalysis``) to message building (``orcnn_ros.conversions``), to the overlay
(``orcnn_core.viz``) and to the results JSON (``frame_results``), so none of them checks, binarises
or analyses the masks again. With the layering off (``LayeringConfig(enabled=False)``) the model's
raw masks are published and their graph may hold cycles. Given an aligned depth image
(``DepthFrame``), the same call also places every instance in 3D (``orcnn_core.depth.instances3d``)
and lets the depth along shared boundaries weigh in the layering's front/behind decisions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from orcnn_core.depth.depth_io import DepthError, DepthFrame
from orcnn_core.depth.evidence import depth_term
from orcnn_core.depth.instances3d import Geometry3D, Geometry3DConfig, compute_geometry
from orcnn_core.errors import InputError
from orcnn_core.layering import LayeringConfig, SceneLayering, layer_prediction
from orcnn_core.layering.crops import AMODAL, INVISIBLE, VISIBLE
from orcnn_core.masks import binarize, mask_boxes
from orcnn_core.occlusion import (
    DEFAULT_MIN_INVISIBLE_FRACTION,
    DEFAULT_MIN_OVERLAP,
    DEFAULT_MIN_PIXELS,
    OcclusionGraph,
    compute_occlusion_graph,
)
from orcnn_core.structures import Prediction, prediction_to_results


@dataclass(frozen=True)
class AnalysisConfig:
    """How a frame is analysed; the node's live parameters map onto these fields."""

    mask_threshold: float = 0.5                     # probability masks are binarised at this value
    occluder_min_overlap: float = DEFAULT_MIN_OVERLAP
    occluder_min_pixels: int = DEFAULT_MIN_PIXELS
    min_invisible_fraction: float = DEFAULT_MIN_INVISIBLE_FRACTION
    layering: LayeringConfig = field(default_factory=LayeringConfig)
    geometry: Geometry3DConfig = field(default_factory=Geometry3DConfig)  # the 3D step, with depth

    def layering_config(self) -> LayeringConfig:
        """The layering's config with this analysis's mask threshold and occluder rule (one source)."""
        return dataclasses.replace(self.layering, mask_threshold=self.mask_threshold,
                                   min_overlap=self.occluder_min_overlap,
                                   min_pixels=int(self.occluder_min_pixels),
                                   min_invisible_fraction=self.min_invisible_fraction)

    def validate(self) -> None:
        """InputError naming the first field out of range."""
        if not 0.0 < self.mask_threshold <= 1.0:
            raise InputError(f"mask_threshold must be in (0, 1], got {self.mask_threshold}")
        if not 0.0 <= self.occluder_min_overlap <= 1.0:
            raise InputError(f"occluder_min_overlap must be in [0, 1], got {self.occluder_min_overlap}")
        if isinstance(self.occluder_min_pixels, bool) or int(self.occluder_min_pixels) < 0:
            raise InputError(f"occluder_min_pixels must be >= 0, got {self.occluder_min_pixels}")
        if not 0.0 <= self.min_invisible_fraction <= 1.0:
            raise InputError(f"min_invisible_fraction must be in [0, 1], got {self.min_invisible_fraction}")
        self.geometry.validate()


@dataclass
class FrameAnalysis:
    """One image's instances as every consumer needs them (N instances, masks at image size)."""

    prediction: Prediction
    amodal_masks: np.ndarray      # (N, H, W) bool
    visible_masks: np.ndarray     # (N, H, W) bool
    invisible_masks: np.ndarray   # (N, H, W) bool
    amodal_boxes: np.ndarray      # (N, 4) int64 tight x0 y0 x1 y1 (far edge exclusive); zeros if empty
    visible_boxes: np.ndarray     # (N, 4) int64, likewise
    invisible_boxes: np.ndarray   # (N, 4) int64, likewise
    graph: OcclusionGraph = field(default_factory=OcclusionGraph)
    layering: Optional[SceneLayering] = None  # None when the layering is off
    geometry: Optional[Geometry3D] = None     # 3D per instance; None without (usable) depth
    depth_error: Optional[DepthError] = None  # why the depth given was not usable (its ``cause``)

    def __len__(self) -> int:
        return len(self.prediction)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return tuple(int(v) for v in self.prediction.image_size)


def _binary_stack(masks: np.ndarray, threshold: float, name: str, size: tuple[int, int]) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3 or masks.shape[1:] != size:
        raise InputError(f"Prediction.{name} must be (N, H, W) with (H, W) = image_size {size}, "
                         f"got shape {masks.shape}")
    if masks.dtype != bool and masks.size and not np.isfinite(masks).all():
        raise InputError(f"Prediction.{name} holds NaN or Inf probabilities")
    return binarize(masks, threshold)


def _check_prediction(prediction: Prediction) -> None:
    n = len(prediction)
    for name in ("amodal_boxes", "labels", "category_ids", "scores"):
        value = np.asarray(getattr(prediction, name))
        if value.shape[:1] != (n,):
            raise InputError(f"Prediction.{name} has {value.shape[:1]} entries, expected {n}")
    if len(prediction.class_names) != n:
        raise InputError(f"Prediction.class_names has {len(prediction.class_names)} entries, expected {n}")
    if n and not np.isfinite(np.asarray(prediction.scores, dtype=np.float64)).all():
        raise InputError("Prediction.scores holds NaN or Inf")


def analyze(prediction: Prediction, config: Optional[AnalysisConfig] = None,
            depth: Optional[DepthFrame] = None) -> FrameAnalysis:
    """Layering (when on), binary masks, their boxes and the occlusion graph of ``prediction``, each
    computed once; the analysis's ``prediction`` is the layered one (duplicates removed, masks
    following the front-to-back order). With ``depth``, also each instance's 3D (``geometry``) and
    depth evidence in the layering, or, when that depth is unusable for this image (other size, all
    holes, bad intrinsics), neither, and the reason in ``depth_error``."""
    config = config or AnalysisConfig()
    _check_prediction(prediction)
    size = tuple(int(v) for v in prediction.image_size)
    amodal = _binary_stack(prediction.amodal_masks, config.mask_threshold, "amodal_masks", size)
    visible = _binary_stack(prediction.visible_masks, config.mask_threshold, "visible_masks", size)
    invisible = _binary_stack(prediction.invisible_masks, config.mask_threshold, "invisible_masks", size)
    depth_error = None
    if depth is not None:
        try:
            depth.check(size)
        except DepthError as exc:  # bad depth costs the frame its 3D, never the frame
            depth, depth_error = None, exc
    if config.layering.enabled:
        binary = dataclasses.replace(prediction, amodal_masks=amodal, visible_masks=visible,
                                     invisible_masks=invisible)
        evidence = ()  # with depth, the nearer surface along a shared boundary weighs in too
        if depth is not None and config.layering.depth_weight > 0:
            evidence = ((config.layering.depth_weight, depth_term(depth.depth_m)),)
        prediction, layering = layer_prediction(binary, config.layering_config(), pair_evidence=evidence)
        amodal, visible = prediction.amodal_masks, prediction.visible_masks
        invisible, crops = prediction.invisible_masks, layering.crops
        amodal_boxes = crops.tight_boxes(AMODAL).astype(np.int64)
        visible_boxes = crops.tight_boxes(VISIBLE).astype(np.int64)
        invisible_boxes = crops.tight_boxes(INVISIBLE).astype(np.int64)
        graph = layering.occlusion_graph(prediction.scores)
    else:
        layering = None
        amodal_boxes, visible_boxes, invisible_boxes = (mask_boxes(m).astype(np.int64)
                                                        for m in (amodal, visible, invisible))
        graph = compute_occlusion_graph((amodal, visible, invisible), prediction.scores,
                                        min_overlap=config.occluder_min_overlap,
                                        min_pixels=config.occluder_min_pixels,
                                        min_invisible_fraction=config.min_invisible_fraction)
    geometry = None
    if depth is not None:
        geometry = compute_geometry(visible, amodal, visible_boxes, amodal_boxes, depth, config.geometry)
    return FrameAnalysis(prediction=prediction, amodal_masks=amodal, visible_masks=visible,
                         invisible_masks=invisible, amodal_boxes=amodal_boxes, visible_boxes=visible_boxes,
                         invisible_boxes=invisible_boxes, graph=graph, layering=layering,
                         geometry=geometry, depth_error=depth_error)


def frame_results(frame: FrameAnalysis, image_id: int, file_name: str = "",
                  with_3d: bool = False) -> list[dict]:
    """Results-JSON entries of an analysed frame: its published masks and its graph fields, and with
    ``with_3d`` each instance's ``geometry_3d`` (``{"has_3d": false}`` when the frame has no 3D)."""
    entries = prediction_to_results(frame.prediction, image_id, file_name, occlusion=frame.graph)
    if with_3d or frame.geometry is not None:
        for i, entry in enumerate(entries):
            entry["geometry_3d"] = ({"has_3d": False} if frame.geometry is None
                                    else frame.geometry.instance_json(i))
    return entries


def as_analysis(frame: Prediction | FrameAnalysis, config: Optional[AnalysisConfig] = None) -> FrameAnalysis:
    """``frame`` itself when it is already analysed, else ``analyze(frame, config)``."""
    return frame if isinstance(frame, FrameAnalysis) else analyze(frame, config)

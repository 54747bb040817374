"""``LayeringConfig``: every knob of the scene layering as a config value (docs/layering.md)."""

from __future__ import annotations

from dataclasses import dataclass

from orcnn_core.errors import ConfigError
from orcnn_core.occlusion import DEFAULT_MIN_INVISIBLE_FRACTION, DEFAULT_MIN_OVERLAP, DEFAULT_MIN_PIXELS

CUT_CHOICES = ("amodal", "visible")
UNEXPLAINED_CHOICES = ("trim", "flag")
PICK_CHOICES = ("score", "least_doubt")
CLAIM_CHOICES = ("none", "unclaimed", "all")


@dataclass(frozen=True)
class LayeringConfig:
    """Every knob of the layering; defaults chosen by measurement (docs/layering.md)."""

    enabled: bool = True
    class_agnostic: bool = False          # duplicates across classes too
    duplicate_visible_iou: float = 0.5    # same object seen twice: visible IoU at least this
    min_shared_pixels: int = 10           # pairs sharing fewer support pixels get no decision
    visible_weight: float = 1.0           # weights of the built-in evidence terms
    hidden_weight: float = 1.0
    covered_weight: float = 0.0
    difference_weight: float = 1.0
    depth_weight: float = 50.0            # depth along the shared boundary, when a depth image is given:
                                          # where it has evidence it decides (measured, docs/layering.md)
    exact_order_limit: int = 12           # largest strongly connected component solved exactly
    cut_visible_by: str = "amodal"        # what of the instances in front removes visible pixels
    claim_shared: str = "unclaimed"       # where the front instance's amodal mask becomes visible over
                                          # those behind: "none", "unclaimed" (no visible there), "all"
    unexplained_hidden: str = "trim"      # "trim" or "flag" hidden parts nothing in front explains
    explain_margin: int = 2               # pixels of slack around the instances in front
    pick_priority: str = "least_doubt"    # tie-break among pickable instances: "least_doubt" or "score"
    sure_confidence: float = 1.0          # decision confidence above which a pair adds no doubt
    min_edge_confidence: float = 0.0      # published occluder edges need at least this confidence
    unexplained_doubt: float = 1.0        # doubt per unexplained hidden pixel (pick order)
    mask_threshold: float = 0.5           # binarises probability masks
    front_min_score: float = 0.5          # detections below this never go in front of those above
    min_overlap: float = DEFAULT_MIN_OVERLAP                          # occlusion-graph rule
    min_pixels: int = DEFAULT_MIN_PIXELS
    min_invisible_fraction: float = DEFAULT_MIN_INVISIBLE_FRACTION

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first value out of range."""
        for name in ("duplicate_visible_iou", "mask_threshold", "min_overlap", "min_invisible_fraction",
                     "front_min_score"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise ConfigError(f"layering.{name}: must be a number in [0, 1], got {value!r}")
        for name in ("visible_weight", "hidden_weight", "covered_weight", "difference_weight", "depth_weight",
                     "min_edge_confidence", "unexplained_doubt"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0.0:
                raise ConfigError(f"layering.{name}: must be a number >= 0, got {value!r}")
        for name, low in (("min_shared_pixels", 1), ("exact_order_limit", 1), ("explain_margin", 0),
                          ("min_pixels", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"layering.{name}: must be an integer >= {low}, got {value!r}")
        if not isinstance(self.sure_confidence, (int, float)) or not self.sure_confidence > 0:
            raise ConfigError(f"layering.sure_confidence: must be a number > 0, got {self.sure_confidence!r}")
        if self.exact_order_limit > 16:
            raise ConfigError(f"layering.exact_order_limit: at most 16 (2^N states), "
                              f"got {self.exact_order_limit}")
        for name, choices in (("cut_visible_by", CUT_CHOICES), ("unexplained_hidden", UNEXPLAINED_CHOICES),
                              ("pick_priority", PICK_CHOICES), ("claim_shared", CLAIM_CHOICES)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"layering.{name}: must be one of {', '.join(choices)}, "
                                  f"got {getattr(self, name)!r}")
        for name in ("enabled", "class_agnostic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"layering.{name}: must be true or false, got {getattr(self, name)!r}")

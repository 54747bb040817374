"""Parameters of the ``orcnn_node``: one dataclass, validated, with the ROS 2 rules of when each applies.

Every parameter is a field of ``NodeParams``; ``PARAMETERS`` says, per parameter, what it means, its
numeric range (for the ROS parameter descriptor) and WHEN it takes effect:

* ``live``: applied to the next frame when set while the node runs (``ros2 param set``);
* ``configure``: read when the node is configured; while it is configured (inactive or active) a
  change is refused with a message saying so (deactivate, cleanup, set, configure);
* ``startup``: read once when the node starts (read-only for ``ros2 param set``).

``check_update`` is the one validation used at configure time and by the node's
on-set-parameters callback, so ``ros2 param set`` never says "successful" for a value that does
nothing or that the next configure would refuse.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from orcnn_core.analysis import AnalysisConfig
from orcnn_core.config import from_dict, load_yaml
from orcnn_core.errors import ConfigError
from orcnn_core.layering import LayeringConfig
from orcnn_core.occlusion import DEFAULT_MIN_OVERLAP, DEFAULT_MIN_PIXELS

NODE_NAME = "orcnn_node"
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
LIVE, CONFIGURE, STARTUP = "live", "configure", "startup"


@dataclass
class NodeParams:
    """Everything the node reads from its ROS parameters (see docs/ros.md for the table)."""

    weights: str = ""                  # .safetensors file (sidecar .json next to it); empty: bundled model
    model_config: str = ""             # model YAML: random init, for smoke tests without weights
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    half: bool = False                 # fp16 inference (CUDA only)
    score_threshold: float = 0.5       # drop detections below this score
    max_instances: int = 50            # keep at most this many instances per image
    class_names: List[str] = field(default_factory=list)  # override the weights' names; empty: keep
    input: str = "raw"                 # raw: sensor_msgs/Image on `image`; compressed: `image/compressed`
    qos_reliability: str = "best_effort"  # best_effort (sensor data) | reliable
    qos_depth: int = 1                 # subscription queue depth (1: always the newest frame)
    publish_overlay: bool = True       # publish amodal/overlay while someone subscribes
    occluder_min_overlap: float = DEFAULT_MIN_OVERLAP  # share of an instance's hidden area an occluder covers
    occluder_min_pixels: int = DEFAULT_MIN_PIXELS      # and at least this many pixels (ignores mask noise)
    mask_threshold: float = 0.5        # probability masks are binarised at this value
    layering: bool = True              # scene layering: no duplicates, no cycles, masks that agree
    layering_class_agnostic: bool = False  # duplicates across classes too (one object, two labels)
    diagnostics_period_s: float = 1.0  # /diagnostics publishing period
    autostart: bool = True             # configure + activate at startup
    image_max_side: int = 4096         # skip frames whose longer side exceeds this (pixels)
    depth: bool = False                # also subscribe to depth/image + depth/camera_info: 3D per instance
    depth_slop_s: float = 0.02         # largest stamp difference of a colour frame and its depth (0: equal)
    publish_points: bool = True        # publish amodal/points (labelled visible points) while subscribed

    def validate(self) -> None:
        """Check types and ranges; a ConfigError names the parameter at fault."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        if not _DEVICE.match(self.device):
            raise ConfigError(f"parameter 'device' must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        for name, spec in PARAMETERS.items():
            if spec.low is not None:
                _check_range(name, getattr(self, name), spec)
        _check_choice("input", self.input, ("raw", "compressed"))
        _check_choice("qos_reliability", self.qos_reliability, ("best_effort", "reliable"))
        if self.half and self.device == "cpu":
            raise ConfigError("parameter 'half' needs a CUDA device; 'device' is cpu")

    def require_model(self) -> None:
        """Check that the model files named exist (done at configure time, not at load)."""
        for name in ("weights", "model_config"):
            value = getattr(self, name)
            if value and not Path(value).expanduser().is_file():
                raise ConfigError(f"parameter '{name}': file not found: {value}")

    @property
    def depth_topics(self) -> tuple[str, str]:
        """The aligned depth image and camera_info topics (relative, remapped by the launch file)."""
        return "depth/image", "depth/camera_info"

    @property
    def topic(self) -> str:
        """The input topic the node subscribes to (relative, remapped by the launch file)."""
        return "image" if self.input == "raw" else "image/compressed"

    def predictor_kwargs(self) -> dict:
        """Arguments of ``orcnn_core.engine.predictor.load_predictor`` for these parameters (empty
        ``weights`` and ``model_config``: the bundled demo model)."""
        return {"weights": self.weights or None, "model_config": self.model_config or None,
                "device": self.device, "half": self.half, "score_threshold": self.score_threshold,
                "max_instances": self.max_instances, "mask_threshold": self.mask_threshold,
                "color_order": "rgb"}

    def analysis_config(self) -> AnalysisConfig:
        """How each frame is analysed (mask threshold, occluder rule)."""
        layering = LayeringConfig(enabled=self.layering, class_agnostic=self.layering_class_agnostic)
        return AnalysisConfig(mask_threshold=self.mask_threshold,
                              occluder_min_overlap=self.occluder_min_overlap,
                              occluder_min_pixels=self.occluder_min_pixels, layering=layering)

    def frame_settings(self) -> FrameSettings:
        """The live per-frame settings of these parameters (what the pipeline reads each frame)."""
        return FrameSettings(score_threshold=self.score_threshold, max_instances=self.max_instances,
                             analysis=self.analysis_config(), image_max_side=self.image_max_side,
                             class_names=tuple(self.class_names))


@dataclass(frozen=True)
class FrameSettings:
    """Per-frame settings: one immutable snapshot, replaced as a whole when a live parameter changes,
    so a frame never sees half an update."""

    score_threshold: float = 0.5
    max_instances: Optional[int] = 50
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    image_max_side: int = 4096
    class_names: tuple = ()   # label k -> class_names[k - 1]; empty keeps the model's names


@dataclass(frozen=True)
class ParamSpec:
    """What the node declares for one parameter: when it applies, its meaning and numeric range."""

    when: str                       # live | configure | startup
    description: str
    low: Optional[float] = None     # inclusive bounds (a ROS FloatingPointRange / IntegerRange)
    high: Optional[float] = None
    low_open: bool = False          # (low, high]: the descriptor range is then only advisory

    @property
    def read_only(self) -> bool:
        """Read-only for ``ros2 param set`` (it is still taken from params files and overrides)."""
        return self.when == STARTUP


PARAMETERS: dict[str, ParamSpec] = {
    "weights": ParamSpec(CONFIGURE, ".safetensors weights with their .json sidecar; empty: the bundled "
                                    "demo model"),
    "model_config": ParamSpec(CONFIGURE, "model YAML with random weights (smoke tests); used when "
                                         "'weights' is empty and this is set"),
    "device": ParamSpec(CONFIGURE, "auto | cpu | cuda | cuda:N"),
    "half": ParamSpec(CONFIGURE, "half-precision inference (CUDA only)"),
    "score_threshold": ParamSpec(LIVE, "drop detections scoring below this", 0.0, 0.999),
    "max_instances": ParamSpec(LIVE, "keep at most this many instances per image", 1, 1000),
    "class_names": ParamSpec(LIVE, "class names replacing the model's, by label; [''] keeps them"),
    "input": ParamSpec(CONFIGURE, "raw (sensor_msgs/Image on image) | compressed (image/compressed)"),
    "qos_reliability": ParamSpec(CONFIGURE, "input QoS reliability: best_effort | reliable"),
    "qos_depth": ParamSpec(CONFIGURE, "input QoS history depth (1: always the newest frame)", 1, 100),
    "publish_overlay": ParamSpec(LIVE, "publish amodal/overlay while someone subscribes"),
    "occluder_min_overlap": ParamSpec(LIVE, "share of an object's hidden area an occluder must cover",
                                      0.0, 1.0),
    "occluder_min_pixels": ParamSpec(LIVE, "... and at least this many pixels", 0, 1_000_000),
    "mask_threshold": ParamSpec(LIVE, "probability masks are binarised at this value", 0.0, 1.0,
                                low_open=True),
    "layering": ParamSpec(LIVE, "scene layering: duplicates removed, one acyclic front-to-back order, "
                                "masks and occluder graph that follow it (false: the model's raw outputs)"),
    "layering_class_agnostic": ParamSpec(LIVE, "layering treats two detections of different classes over "
                                               "the same visible pixels as one object seen twice"),
    "diagnostics_period_s": ParamSpec(LIVE, "/diagnostics period in seconds", 0.01, 3600.0),
    "autostart": ParamSpec(STARTUP, "configure and activate when the node starts"),
    "image_max_side": ParamSpec(LIVE, "skip frames whose longer side exceeds this (pixels)", 32, 65536),
    "depth": ParamSpec(CONFIGURE, "subscribe to an aligned depth image (depth/image, 16UC1 mm or 32FC1 m) "
                                  "and depth/camera_info: 3D per instance"),
    "depth_slop_s": ParamSpec(CONFIGURE, "largest stamp difference (s) of a colour frame and the depth "
                                         "paired with it, and of depth and camera_info; 0: equal stamps",
                              0.0, 1.0),
    "publish_points": ParamSpec(LIVE, "publish amodal/points (labelled visible 3D points) while someone "
                                      "subscribes (needs depth)"),
}


def _check_type(name: str, value: Any, hint: Any) -> None:
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    else:  # List[str]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
    if not ok:
        expected = getattr(hint, "__name__", "list of strings")
        raise ConfigError(f"parameter '{name}' must be {expected}, got {value!r} ({type(value).__name__})")


def _check_range(name: str, value: float, spec: ParamSpec) -> None:
    low, high = spec.low, spec.high
    inside = (low < value <= high) if spec.low_open else (low <= value <= high)
    if not inside:
        bracket = "(" if spec.low_open else "["
        raise ConfigError(f"parameter '{name}' must be in {bracket}{low:g}, {high:g}], got {value}")


def _check_choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"parameter '{name}' must be one of {', '.join(choices)}, got '{value}'")


def _normalise(values: dict) -> dict:
    values = dict(values)
    # ROS 2 cannot declare an empty string array, so [""] stands for "no class names".
    if "class_names" in values:
        values["class_names"] = [v for v in (values["class_names"] or []) if v != ""]
    return values


def params_from_mapping(values: dict) -> NodeParams:
    """NodeParams from a flat mapping (ROS parameter values); unknown names raise ConfigError."""
    params = from_dict(NodeParams, _normalise(values), where="")
    params.class_names = list(params.class_names)
    return params


def check_update(current: NodeParams, changes: dict, *, configured: bool) -> NodeParams:
    """The parameters after ``changes`` (name -> value), or ConfigError saying why they are refused.

    Refused: an unknown name, a value out of range or of the wrong type (the same checks as
    configure), a ``startup`` parameter, and, while ``configured``, a ``configure`` parameter whose
    value changes (it would do nothing until the next configure).
    """
    changes = _normalise(changes)
    unknown = sorted(set(changes) - set(PARAMETERS))
    if unknown:
        raise ConfigError(f"unknown parameter '{unknown[0]}'")
    updated = dataclasses.replace(current, **changes)
    updated.validate()  # an invalid value is refused for what it is, whenever it is set
    updated.class_names = list(updated.class_names)
    for name, value in changes.items():
        spec = PARAMETERS[name]
        if value == getattr(current, name):
            continue
        if spec.when == STARTUP:
            raise ConfigError(f"parameter '{name}' is read only when the node starts; restart the node "
                              "to change it")
        if spec.when == CONFIGURE and configured:
            raise ConfigError(f"parameter '{name}' is read at configure: deactivate and clean up the node, "
                              "set it, then configure again")
    return updated


def section_for(data: dict, node_name: str = NODE_NAME, namespace: str = "") -> Optional[dict]:
    """The ``ros__parameters`` of a params file that apply to the node ``namespace/node_name``.

    As ROS 2 Humble matches them (rclpy's ``get_node_parameters``): a key without a leading ``/`` gets
    one, then ``/**`` applies to every node and the node's fully qualified name to that node, the
    latter winning. So ``orcnn_node:`` reaches only ``/orcnn_node``, and ``/**:`` (the shipped file)
    also reaches ``/robot2/orcnn_node``.
    """
    ns = namespace.strip("/")
    fqn = f"/{ns}/{node_name}" if ns else f"/{node_name}"
    merged: Optional[dict] = None
    for wanted in ("/**", fqn):  # in precedence order: the exact name wins
        for key, section in data.items():
            key = str(key) if str(key).startswith("/") else f"/{key}"
            if key == wanted and isinstance(section, dict) and "ros__parameters" in section:
                merged = {**(merged or {}), **(section["ros__parameters"] or {})}
    return merged


def load_params_yaml(path: str | Path, node_name: str = NODE_NAME, namespace: str = "") -> NodeParams:
    """NodeParams from a ROS 2 params file, for the node ``namespace/node_name`` (see ``section_for``)."""
    data = load_yaml(path)
    section = section_for(data, node_name, namespace)
    if section is None:
        raise ConfigError(f"{path}: no section for node '{node_name}' (expected '/**:' or "
                          f"'{node_name}:' with 'ros__parameters:')")
    return params_from_mapping(section)


def ros_defaults() -> dict:
    """Parameter name -> default value as ROS declares it (an empty string array becomes [""])."""
    defaults = dataclasses.asdict(NodeParams())
    defaults["class_names"] = defaults["class_names"] or [""]
    return defaults

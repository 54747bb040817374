"""Parameters of the ``orcnn_node``: one dataclass, validated, loadable from a ROS 2 params YAML."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List

from orcnn_core.config import from_dict, load_yaml
from orcnn_core.errors import ConfigError
from orcnn_core.occlusion import DEFAULT_MIN_OVERLAP, DEFAULT_MIN_PIXELS

NODE_NAME = "orcnn_node"
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


@dataclass
class NodeParams:
    """Everything the node reads from its ROS parameters (see docs/ros.md for the table)."""

    weights: str = ""                  # .safetensors file (sidecar .json next to it)
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
    diagnostics_period_s: float = 1.0  # /diagnostics publishing period
    autostart: bool = True             # configure + activate at startup
    image_max_side: int = 4096         # skip frames whose longer side exceeds this (pixels)

    def validate(self) -> None:
        """Check types and ranges; a ConfigError names the parameter at fault."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        if not _DEVICE.match(self.device):
            raise ConfigError(f"parameter 'device' must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        if not 0.0 <= self.score_threshold < 1.0:
            raise ConfigError(f"parameter 'score_threshold' must be in [0, 1), got {self.score_threshold}")
        _check_range("occluder_min_overlap", self.occluder_min_overlap, 0.0, 1.0)
        _check_range("mask_threshold", self.mask_threshold, 0.0, 1.0, low_open=True)
        _check_choice("input", self.input, ("raw", "compressed"))
        _check_choice("qos_reliability", self.qos_reliability, ("best_effort", "reliable"))
        for name, low in (("max_instances", 1), ("qos_depth", 1), ("occluder_min_pixels", 0),
                          ("image_max_side", 32)):
            if getattr(self, name) < low:
                raise ConfigError(f"parameter '{name}' must be >= {low}, got {getattr(self, name)}")
        if not self.diagnostics_period_s > 0:
            raise ConfigError(f"parameter 'diagnostics_period_s' must be > 0, "
                              f"got {self.diagnostics_period_s}")
        if self.half and self.device == "cpu":
            raise ConfigError("parameter 'half' needs a CUDA device; 'device' is cpu")

    def require_model(self) -> None:
        """Check that a model source is set and exists (done at configure time, not at load)."""
        if not self.weights and not self.model_config:
            raise ConfigError("set parameter 'weights' (a .safetensors file) "
                              "or 'model_config' (a model YAML)")
        for name in ("weights", "model_config"):
            value = getattr(self, name)
            if value and not Path(value).expanduser().is_file():
                raise ConfigError(f"parameter '{name}': file not found: {value}")

    @property
    def topic(self) -> str:
        """The input topic the node subscribes to (relative, remapped by the launch file)."""
        return "image" if self.input == "raw" else "image/compressed"


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


def _check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    if not (low < value <= high if low_open else low <= value <= high):
        bracket = "(" if low_open else "["
        raise ConfigError(f"parameter '{name}' must be in {bracket}{low}, {high}], got {value}")


def _check_choice(name: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"parameter '{name}' must be one of {', '.join(choices)}, got '{value}'")


def params_from_mapping(values: dict) -> NodeParams:
    """NodeParams from a flat mapping (ROS parameter values); unknown names raise ConfigError."""
    values = dict(values)
    # ROS 2 cannot declare an empty string array, so [""] stands for "no class names".
    if "class_names" in values:
        values["class_names"] = [v for v in (values["class_names"] or []) if v != ""]
    params = from_dict(NodeParams, values, where="")
    params.class_names = list(params.class_names)
    return params


def load_params_yaml(path: str | Path, node_name: str = NODE_NAME) -> NodeParams:
    """NodeParams from a ROS 2 params file (``<node_name>: ros__parameters: {...}`` or ``/**:``)."""
    data = load_yaml(path)
    for key in (node_name, f"/{node_name}", "/**"):
        section = data.get(key)
        if isinstance(section, dict) and "ros__parameters" in section:
            return params_from_mapping(section["ros__parameters"] or {})
    raise ConfigError(f"{path}: no '{node_name}: ros__parameters:' section")


def ros_defaults() -> dict:
    """Parameter name -> default value as ROS declares it (an empty string array becomes [""])."""
    defaults = dataclasses.asdict(NodeParams())
    defaults["class_names"] = defaults["class_names"] or [""]
    return defaults

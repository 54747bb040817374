"""The options of ``orcnn replay``, declared once: dataclass fields whose metadata builds the parser.

Each option is one ``option(...)`` field; ``add_arguments`` turns the fields of ``ReplayOptions`` and
``EvalBagOptions`` into argparse arguments and ``options_from_args`` turns parsed arguments back into
the dataclass of the mode asked for. Adding an option is adding one field.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from orcnn_core.errors import InputError
from orcnn_ros.bagio import STORAGES

INSTANCES_TOPIC = "/amodal/instances"
OVERLAY_TOPIC = "/amodal/overlay"
GT_KEYS = ("stamp", "index", "file")
NODE_SCORE_THRESHOLD = 0.5  # the node's default (config/orcnn_node.yaml): replay publishes the same


def option(*flags: str, help: str, default: Any = dataclasses.MISSING, required: bool = False,
           **argparse_kwargs: Any) -> Any:
    """A dataclass field that is also a command-line option (``flags``, ``help``, argparse keywords).

    ``required`` options have no dataclass default and must be given in their mode.
    """
    metadata = {"flags": flags, "help": help, "argparse": argparse_kwargs, "required": required}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(kw_only=True)
class GroundTruthOptions:
    """Options shared by a replay run and ``--eval-bag``: ground truth, result files, progress."""

    gt: Optional[Path] = option("--gt", type=Path, metavar="GT.json", default=None,
                                help="ground truth (any format orcnn reads): evaluate and print the "
                                     "Table-2 row")
    gt_key: str = option("--gt-key", choices=GT_KEYS, default="stamp",
                         help="how frames find their ground-truth image (see docs/replay.md; default stamp)")
    image_map: Optional[Path] = option("--image-map", type=Path, metavar="MAP.json", default=None,
                                       help="image map for --gt-key stamp/file (default: BAG/image_map.json, "
                                            "with --eval-bag RESULTS_BAG/image_map.json)")
    instances_topic: str = option("--instances-topic", default=INSTANCES_TOPIC,
                                  help="output topic of the results (with --eval-bag: the topic read)")
    results_json: Optional[Path] = option("--results-json", type=Path, default=None,
                                          help="with --gt or --eval-bag: also write the results JSON "
                                               "(for orcnn eval)")
    summary_json: Optional[Path] = option("--summary-json", type=Path, default=None,
                                          help="write the summary as JSON")
    progress: bool = option("--no-progress", action="store_false", default=True, help="no progress bar")


@dataclass(kw_only=True)
class ReplayOptions(GroundTruthOptions):
    """Everything one replay run needs (``orcnn replay BAG --topic T --out OUT``)."""

    bag: Path = option("bag", type=Path, nargs="?", metavar="BAG", required=True,
                       help="input bag folder, .db3 or .mcap file")
    topic: str = option("--topic", required=True,
                        help="sensor_msgs/Image or CompressedImage topic to run on (required with BAG)")
    out: Path = option("--out", type=Path, metavar="OUT_BAG", required=True,
                       help="output bag folder (required with BAG)")
    weights: Optional[Path] = option("--weights", type=Path, metavar="W", default=None,
                                     help="NAME.safetensors (+ NAME.json); default: the bundled demo weights")
    every: int = option("--every", type=int, metavar="N", default=1, help="process every N-th frame")
    start: Optional[float] = option("--start", type=float, metavar="S", default=None,
                                    help="seconds after the bag start")
    end: Optional[float] = option("--end", type=float, metavar="S", default=None,
                                  help="seconds after the bag start")
    overlay: bool = option("--overlay", action="store_true", default=False,
                           help=f"also write overlay images on {OVERLAY_TOPIC}")
    copy_topics: Sequence[str] = option("--copy-topic", action="append", metavar="T", default=[],
                                        help="copy topic T unchanged into the output (repeatable)")
    batch_size: int = option("--batch-size", type=int, metavar="B", default=4, help="frames per model call")
    device: str = option("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    score_threshold: float = option("--score-threshold", type=float, default=NODE_SCORE_THRESHOLD,
                                    help=f"drop detections below this score (default {NODE_SCORE_THRESHOLD}, "
                                         "the node's default, so replay publishes what the node would)")
    layering: bool = option("--no-layering", action="store_false", default=True,
                            help="publish the model's raw masks and graph (may hold cycles) instead of the "
                                 "scene layering the node runs by default")
    storage: str = option("--storage", choices=STORAGES, default="sqlite3", help="output bag storage")
    overwrite: bool = option("--overwrite", action="store_true", default=False,
                             help="replace an existing output bag")
    resume: bool = option("--resume", action="store_true", default=False,
                          help="continue an interrupted or killed run: keep what OUT_BAG holds and process "
                               "the frames after its last result (evaluate the whole bag afterwards with "
                               "--eval-bag)")
    overlay_topic: str = option("--overlay-topic", default=OVERLAY_TOPIC, help="output topic of the overlays")
    depth_topic: Optional[str] = option(
        "--depth-topic", metavar="T", default=None,
        help="aligned depth image topic (16UC1 mm or 32FC1 m, the colour image's size): 3D per instance; "
             "needs --camera-info-topic")
    camera_info_topic: Optional[str] = option(
        "--camera-info-topic", metavar="T", default=None,
        help="sensor_msgs/CameraInfo topic of the depth image (with --depth-topic)")
    depth_slop: float = option(
        "--depth-slop", type=float, metavar="S", default=0.0,
        help="pair a frame with the depth whose stamp is at most S seconds away, and depth with camera_info "
             "likewise (default 0: equal stamps)")

    def validate(self) -> None:
        """Raise InputError naming the first option that is out of range."""
        if self.every < 1:
            raise InputError(f"--every must be >= 1, got {self.every}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.score_threshold < 1.0:
            raise InputError(f"--score-threshold must be in [0, 1), got {self.score_threshold}")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise InputError(f"--end ({self.end}) is before --start ({self.start})")
        if self.gt_key not in GT_KEYS:
            raise InputError(f"--gt-key must be one of {', '.join(GT_KEYS)}, got {self.gt_key!r}")
        if self.storage not in STORAGES:
            raise InputError(f"--storage must be one of {', '.join(STORAGES)}, got {self.storage!r}")
        if self.resume and self.overwrite:
            raise InputError("--resume keeps the output bag, --overwrite replaces it: give one of them")
        if self.resume and self.gt is not None:
            raise InputError("--resume writes the rest of the bag; evaluate the finished bag with "
                             "--eval-bag OUT_BAG --gt GT.json")
        if self.overlay and self.overlay_topic == self.instances_topic:
            raise InputError("--overlay-topic must differ from --instances-topic")
        if (self.depth_topic is None) != (self.camera_info_topic is None):
            raise InputError("--depth-topic and --camera-info-topic go together")
        if not 0.0 <= self.depth_slop <= 1.0:
            raise InputError(f"--depth-slop must be in [0, 1] seconds, got {self.depth_slop}")
        if self.depth_topic is not None and len({self.topic, self.depth_topic, self.camera_info_topic}) < 3:
            raise InputError("--topic, --depth-topic and --camera-info-topic must be three different topics")
        outputs = {self.instances_topic} | ({self.overlay_topic} if self.overlay else set())
        clash = outputs & set(self.copy_topics)
        if clash:
            raise InputError(f"--copy-topic {sorted(clash)[0]} clashes with an output topic name")


@dataclass(kw_only=True)
class EvalBagOptions(GroundTruthOptions):
    """``orcnn replay --eval-bag RESULTS_BAG --gt GT.json``: evaluate a results bag, no model."""

    results_bag: Path = option("--eval-bag", type=Path, metavar="RESULTS_BAG", required=True,
                               help="instead of running the model: evaluate the AmodalInstanceArray messages "
                                    "of this bag (--instances-topic) against --gt")

    def validate(self) -> None:
        """Raise InputError naming the first option that is missing or out of range."""
        if self.gt is None:
            raise InputError("--eval-bag needs --gt GT.json")
        if self.gt_key not in GT_KEYS:
            raise InputError(f"--gt-key must be one of {', '.join(GT_KEYS)}, got {self.gt_key!r}")


MODES = (ReplayOptions, EvalBagOptions)


def _fields(cls: type) -> list:
    return [f for f in dataclasses.fields(cls) if "flags" in f.metadata]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of every mode to ``parser`` (each declared once, shared ones once)."""
    seen = set()
    for cls in MODES:
        for f in _fields(cls):
            if f.name in seen:
                continue
            seen.add(f.name)
            kwargs = dict(f.metadata["argparse"])
            positional = not f.metadata["flags"][0].startswith("-")
            if not positional:
                kwargs["dest"] = f.name
            if f.default is not dataclasses.MISSING:
                kwargs["default"] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                kwargs["default"] = f.default_factory()
            else:
                kwargs["default"] = None  # required in its mode: checked by options_from_args
            parser.add_argument(*f.metadata["flags"], help=f.metadata["help"], **kwargs)


def _values(cls: type, args: argparse.Namespace) -> dict:
    values = {f.name: getattr(args, f.name) for f in _fields(cls)}
    if "copy_topics" in values:
        values["copy_topics"] = tuple(values["copy_topics"])
    return values


def options_from_args(args: argparse.Namespace) -> ReplayOptions | EvalBagOptions:
    """The options of the mode ``args`` ask for; InputError for a missing or misplaced option."""
    mode = EvalBagOptions if args.results_bag is not None else ReplayOptions
    other = ReplayOptions if mode is EvalBagOptions else EvalBagOptions
    own = {f.name for f in _fields(mode)}
    misplaced = [f.metadata["flags"][0] if f.metadata["flags"][0].startswith("-") else f.name.upper()
                 for f in _fields(other) if f.name not in own and getattr(args, f.name) != _default(f)]
    if misplaced:
        raise InputError(f"--eval-bag reads an existing results bag: {', '.join(misplaced)} do not apply"
                         if mode is EvalBagOptions else f"{', '.join(misplaced)} only apply with --eval-bag")
    missing = [f.metadata["flags"][0] if f.metadata["flags"][0].startswith("-") else f.name.upper()
               for f in _fields(mode) if f.metadata["required"] and getattr(args, f.name) is None]
    if missing:
        raise InputError(f"{', '.join(missing)} required (or --eval-bag RESULTS_BAG --gt GT.json)")
    options = mode(**_values(mode, args))
    options.validate()
    return options


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None

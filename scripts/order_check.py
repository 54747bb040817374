"""Occlusion-order check of a model on synthetic scenes: raw outputs with today's graph against the
scene layering, on the paper's metrics and the occlusion-order metrics (docs/layering.md).

    orcnn synth --out /tmp/mid_201 --images 100 --seed 201 --occlusion mid --size 640x480
    python scripts/order_check.py --data /tmp/mid_201 [/tmp/other ...] [--cache /tmp/pred_cache]
        [--set duplicate_visible_iou=0.5 ...] [--depth] [--json out.json]

Predictions at ``--score-threshold`` (default 0.5, the node's) with the bundled model unless
``--weights``; ``--cache`` keeps them on disk, so the layering can be re-run with other settings
(``--set KEY=VALUE``, fields of ``LayeringConfig``) without the model. One table per data folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from prediction_cache import cached_predictions  # noqa: E402

from orcnn_core.analysis import AnalysisConfig, analyze, frame_results  # noqa: E402
from orcnn_core.evaluation.amodal_eval import AmodalEvaluator  # noqa: E402
from orcnn_core.evaluation.order_eval import OrderEvaluator  # noqa: E402
from orcnn_core.layering import LayeringConfig  # noqa: E402

DEFAULT_WEIGHTS = REPO / "orcnn_core" / "weights" / "demo_small.safetensors"
ROWS = (("AP_AV", lambda s: s["all"]["AP_AV"]), ("AP_A", lambda s: s["all"]["AP_A"]),
        ("AP_V", lambda s: s["all"]["AP_V"]), ("occluded AP_AV", lambda s: s["occluded"]["AP_AV"]),
        ("AP_IV@0.5", lambda s: s["AP_IV50"]),
        ("images with a cycle [%]", lambda s: s["order"]["cycle_images"]),
        ("edge precision", lambda s: _fraction(s["order"]["edge_precision"])),
        ("edge recall", lambda s: _fraction(s["order"]["edge_recall"])),
        ("edge F1", lambda s: _fraction(s["order"]["edge_f1"])),
        ("order accuracy [%]", lambda s: s["order"]["order_accuracy"]),
        ("duplicate rate [%]", lambda s: s["order"]["duplicate_rate"]),
        ("first-pick safety [%]", lambda s: s["order"]["first_pick_safety"]),
        ("false all-clear [%]", lambda s: s["order"]["false_all_clear"]))


def _fraction(percent):
    return None if percent is None else percent / 100.0


def parse_setting(text: str) -> tuple:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (numbers, true/false), else a string."""
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def results_of(records, predictions, config: LayeringConfig, depths=None) -> list:
    """Results entries as the node publishes them (``analysis.analyze``: raw outputs with today's
    graph when the layering is off, else the layered prediction and graph; with ``depths``, one
    ``DepthFrame`` per record, depth evidence in the layering)."""
    entries = []
    analysis = AnalysisConfig(layering=config)
    for k, (record, prediction) in enumerate(zip(records, predictions)):
        frame = analyze(prediction, analysis, depth=None if depths is None else depths[k])
        entries.extend(frame_results(frame, record.image_id, record.file_name))
    return entries


def depth_frames(data: Path, records) -> list:
    """The depth of every record of an ``orcnn synth --depth`` folder."""
    from orcnn_core.depth.camera import read_camera_file
    from orcnn_core.depth.depth_io import load_depth_frame

    cameras = read_camera_file(Path(data) / "annotations.json")
    folder = Path(data) / "depth"
    return [load_depth_frame(folder, r.file_name, cameras, (r.height, r.width)) for r in records]


def evaluate(records, categories, entries, score_threshold: float) -> dict:
    """Paper metrics with the order metrics under ``"order"``."""
    summary = AmodalEvaluator(records, categories).evaluate(entries)
    summary["order"] = OrderEvaluator(records, categories, score_threshold=score_threshold) \
        .evaluate_results(entries)
    return summary


def format_rows(columns: dict) -> str:
    """Metrics as rows, one column per variant."""
    names = list(columns)
    width = max(len(label) for label, _ in ROWS)
    lines = [" " * width + " | " + " | ".join(f"{n:>12}" for n in names)]
    for label, get in ROWS:
        values = [get(columns[name]) for name in names]
        digits = 3 if label.startswith("edge") else 1
        cells = ["-" if v is None else f"{v:.{digits}f}" for v in values]
        lines.append(f"{label:<{width}} | " + " | ".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    """Run the check; prints one table per data folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="orcnn synth output folders")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--cache", default=None, help="folder for cached predictions")
    parser.add_argument("--probabilities", action="store_true",
                        help="layer the probability masks (default: bool masks, what the node publishes)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="LayeringConfig field for the layered column (repeatable)")
    parser.add_argument("--depth", action="store_true",
                        help="add a column layered with depth evidence (folders from `orcnn synth --depth`)")
    parser.add_argument("--json", default=None, help="write every summary here")
    args = parser.parse_args(argv)
    config = replace(LayeringConfig(), **dict(parse_setting(s) for s in args.set))
    report = {}
    for data in args.data:
        start = time.perf_counter()
        records, categories, predictions = cached_predictions(data, args.weights, args.score_threshold,
                                                              args.cache, as_bool=not args.probabilities)
        loaded = time.perf_counter() - start
        columns = {}
        for name, variant in (("raw", replace(config, enabled=False)), ("layered", config)):
            columns[name] = evaluate(records, categories, results_of(records, predictions, variant),
                                     args.score_threshold)
        if args.depth:
            entries = results_of(records, predictions, config, depth_frames(data, records))
            columns["with depth"] = evaluate(records, categories, entries, args.score_threshold)
        print(f"\n{data}: {len(records)} images, {sum(len(p) for p in predictions)} predictions at score "
              f">= {args.score_threshold} (loaded in {loaded:.1f} s)")
        print(format_rows(columns))
        report[str(data)] = columns
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

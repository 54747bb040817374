"""Sub-commands of ``orcnn`` owned by this package (see orcnn_core/cli.py): ``eval``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# The node's default threshold; a constant here so that ``orcnn --help`` needs no numpy.
DEFAULT_ORDER_SCORE_THRESHOLD = 0.5


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``orcnn eval``."""
    parser = subparsers.add_parser(
        "eval", help="amodal evaluation: AP_AV, AP_A, AP_V (all / occluded), AP_IV@0.5",
        description="Evaluate results JSON files against amodal ground truth; one table row per file.")
    parser.add_argument("--gt", required=True, help="ground-truth annotation file")
    parser.add_argument("--results", required=True, nargs="+", metavar="RES.json",
                        help="results JSON files (COCO results list with visible/invisible masks)")
    parser.add_argument("--format", default=None, help="ground-truth format (default: detect)")
    parser.add_argument("--json", default=None, metavar="OUT.json",
                        help="write the metrics (percent) as JSON; a list when several results files")
    parser.add_argument("--plots", default=None, metavar="DIR", help="write precision-recall curves (PNG)")
    parser.add_argument("--repair", action="store_true",
                        help="ground truth: add visible pixels outside the amodal mask to it and recompute "
                             "inconsistent invisible masks, instead of refusing the file")
    parser.add_argument("--class-agnostic", action="store_true",
                        help="merge all categories into one, for every metric (e.g. OSD-Amodal / UOAIS)")
    parser.add_argument("--order-score-threshold", type=float, default=DEFAULT_ORDER_SCORE_THRESHOLD,
                        metavar="T", help="score threshold of the occlusion-order metrics "
                                          f"(default {DEFAULT_ORDER_SCORE_THRESHOLD}, the node's)")
    parser.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``orcnn eval``: print the table and notes, optionally write JSON and plots."""
    from orcnn_core.errors import ConfigError
    from orcnn_core.evaluation.amodal_eval import compute_files
    from orcnn_core.evaluation.table import format_order_table, format_table
    from orcnn_core.fileio import atomic_write_text

    if not 0.0 <= args.order_score_threshold <= 1.0:
        raise ConfigError(f"--order-score-threshold: must be in [0, 1], got {args.order_score_threshold}")
    evaluations = compute_files(args.gt, args.results, format=args.format, class_agnostic=args.class_agnostic,
                                order_score_threshold=args.order_score_threshold, repair=args.repair)
    names = [Path(path).stem for path in args.results]
    summaries = [evaluation.summary for evaluation in evaluations]
    print(format_table(list(zip(names, summaries))))
    print()
    print(format_order_table([(name, summary["order"]) for name, summary in zip(names, summaries)]))
    for summary in summaries:
        for note in summary["notes"] + summary["order"]["notes"]:
            print(f"note: {note}")
    if args.json:
        payload = summaries[0] if len(summaries) == 1 else summaries
        atomic_write_text(args.json, json.dumps(payload, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}")
    if args.plots:
        from orcnn_core.evaluation.plots import plot_precision_recall

        for name, evaluation in zip(names, evaluations):
            for path in plot_precision_recall(evaluation, args.plots, name):
                print(f"wrote {path}")
    return 0

"""``orcnn replay`` (and its alias ``orcnn-replay``): run the model over a bag, or evaluate a results bag."""

from __future__ import annotations

import argparse
import logging
from typing import Optional, Sequence

from orcnn_ros.replay.options import INSTANCES_TOPIC, EvalBagOptions, add_arguments, options_from_args

DESCRIPTION = ("Run ORCNN on an image topic of a rosbag2 (.db3, .mcap, folder or legacy file) and write one "
               f"AmodalInstanceArray per frame on {INSTANCES_TOPIC} of a new bag; or, with --eval-bag, "
               "evaluate an existing results bag against ground truth (no model).")
USAGE = ("%(prog)s BAG --topic TOPIC --out OUT_BAG [options]\n"
         "       %(prog)s --eval-bag RESULTS_BAG --gt GT.json [--gt-key K] [--image-map MAP.json] [options]")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``orcnn replay``."""
    parser = subparsers.add_parser("replay", help="run the model over a rosbag2 image topic, or evaluate a "
                                                  "results bag (--eval-bag)", description=DESCRIPTION,
                                   usage=USAGE)
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``orcnn replay``: exit 0, or 130 when interrupted (the bag keeps what was written)."""
    import sys

    from orcnn_ros.replay.eval_bag import run_eval_bag
    from orcnn_ros.replay.report import print_report, write_summary
    from orcnn_ros.replay.run import run_replay

    opts = options_from_args(args)
    summary = run_eval_bag(opts) if isinstance(opts, EvalBagOptions) else run_replay(opts)
    print_report(summary)
    write_summary(summary, opts.summary_json)
    if getattr(summary, "interrupted", False):
        print(f"orcnn replay: interrupted; {opts.out} holds the frames written so far", file=sys.stderr)
        return 130
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``orcnn-replay`` console script: the same as ``orcnn replay``."""
    from orcnn_core.cli import run_handler

    parser = argparse.ArgumentParser(prog="orcnn-replay", description=DESCRIPTION, usage=USAGE)
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_handler("orcnn-replay", run, args)

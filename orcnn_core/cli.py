"""The ``orcnn`` command: one sub-command per job, each registered by the module that owns it.

Command modules import heavy dependencies (torch, ...) inside their handlers so that
``orcnn --help`` and light commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from orcnn_core import __version__
from orcnn_core.errors import OrcnnError

# Each module defines ``register(subparsers)`` adding its sub-commands with ``set_defaults(func=...)``;
# a handler takes the parsed args and returns an exit code.
COMMAND_MODULES = (
    "orcnn_core.data.commands",        # synth, convert, augment, stats
    "orcnn_core.evaluation.commands",  # eval
    "orcnn_core.engine.commands",      # train, predict, demo, export
    "orcnn_ros.commands",              # bag-from-images
)


def build_parser() -> argparse.ArgumentParser:
    """The full ``orcnn`` argument parser."""
    parser = argparse.ArgumentParser(prog="orcnn",
                                     description="Occlusion R-CNN: amodal instance segmentation")
    parser.add_argument("--version", action="version", version=f"orcnn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``orcnn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except OrcnnError as exc:
        print(f"orcnn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"orcnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

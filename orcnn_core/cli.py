"""The ``orcnn`` command: one sub-command per job, each registered by the module that owns it.

The core's own command modules are listed here; other installed packages add theirs through the
``orcnn.commands`` entry-point group (``orcnn_ros`` adds ``bag-from-images`` and ``replay`` that way),
so the core never imports them by name. Command modules import heavy dependencies (torch, ...)
inside their handlers so that ``orcnn --help`` and light commands start fast.

One error contract for every command: bad input (an ``OrcnnError``) is one line on stderr and exit
status 2; a bug is a traceback and exit status 1; Ctrl-C is exit status 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib import metadata
from types import ModuleType
from typing import Callable, Optional, Sequence

from orcnn_core import __version__
from orcnn_core.errors import OrcnnError

# Each module defines ``register(subparsers)`` adding its sub-commands with ``set_defaults(func=...)``;
# a handler takes the parsed args and returns an exit code.
COMMAND_MODULES = (
    "orcnn_core.data.commands",        # synth, convert, augment, stats
    "orcnn_core.evaluation.commands",  # eval
    "orcnn_core.engine.commands",      # train, predict, demo, export
)
ENTRY_POINT_GROUP = "orcnn.commands"


def command_modules() -> list[ModuleType]:
    """The core's command modules, then those of installed packages (entry points, by name)."""
    modules = [importlib.import_module(name) for name in COMMAND_MODULES]
    plugins = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    modules += [ep.load() for ep in plugins]
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The full ``orcnn`` argument parser."""
    parser = argparse.ArgumentParser(prog="orcnn",
                                     description="Occlusion R-CNN: amodal instance segmentation")
    parser.add_argument("--version", action="version", version=f"orcnn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        module.register(subparsers)
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
    return run_handler(f"orcnn {args.command}", args.func, args)


def run_handler(prog: str, handler: Callable[[argparse.Namespace], Optional[int]],
                args: argparse.Namespace) -> int:
    """Run a command handler under the one error contract (see the module docstring)."""
    try:
        return int(handler(args) or 0)
    except OrcnnError as exc:
        message = " ".join(str(exc).split("\n"))  # one line, whatever the message held
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

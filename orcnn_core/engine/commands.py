"""Sub-commands of ``orcnn`` owned by this package (see orcnn_core/cli.py)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's sub-commands (none yet)."""

"""The ``ttame`` command: one module per subcommand, each with ``register(subparsers)``.

Failures the user can fix (:class:`~ttame.errors.TTameError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ttame.cli import compare, evaluate, explain, export, import_checkpoint, train
from ttame.errors import TTameError

SUBCOMMANDS = (explain, export, train, evaluate, compare, import_checkpoint)
"""Modules whose ``register(subparsers)`` adds a subcommand, in the order shown by ``--help``."""


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="ttame", description="T-TAME explanations.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ttame`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except TTameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

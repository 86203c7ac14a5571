"""``ttame train`` and ``train.py``: one option per field of the training config."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttame.errors import TTameError
from ttame.training.config import add_options, config_from_args
from ttame.training.trainer import train


def run(args: argparse.Namespace) -> int:
    """Handler of ``ttame train`` and ``train.py``."""
    train(config_from_args(args), shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    return 0


DESCRIPTION = (
    "Train a T-TAME head on a frozen backbone. Labels are the backbone's own top-1, so any "
    "unlabelled images do. Multi-GPU: torchrun --nproc_per_node=N train.py ..."
)


def register(subparsers: Any) -> None:
    """Add ``ttame train``."""
    parser = subparsers.add_parser("train", help="train a head", description=DESCRIPTION)
    add_options(parser)
    parser.set_defaults(handler=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train.py``."""
    parser = argparse.ArgumentParser(prog="train.py", description=DESCRIPTION)
    add_options(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TTameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

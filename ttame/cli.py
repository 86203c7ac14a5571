"""The ``ttame`` command.

Each subcommand lives beside the code it drives and registers itself through a
``register(subparsers)`` function listed in :data:`SUBCOMMANDS`; failures the user can fix
(:class:`~ttame.errors.TTameError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import warnings
from collections.abc import Sequence

from ttame.errors import TTameError

SUBCOMMANDS: tuple[str, ...] = (
    "ttame.cli",
    "ttame.training",
    "ttame.evaluate",
    "ttame.paired",
    "ttame.hub",
)
"""Modules whose ``register(subparsers)`` adds subcommands, in the order shown by ``--help``."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ttame explain``."""
    parser = subparsers.add_parser(
        "explain", help="explain one image", description="Explain an image with T-TAME."
    )
    parser.add_argument("image", help="image file (any common format)")
    parser.add_argument("--backbone", default=None, help="backbone name (default: the head's)")
    parser.add_argument("--head", default=None, help="head folder or Hugging Face Hub repo id")
    parser.add_argument("--weights", default=None, help="local backbone weights file")
    parser.add_argument(
        "--class",
        dest="target",
        default=None,
        help="class index or name to explain (default: the top-1)",
    )
    parser.add_argument("--out", default=None, help="write the overlay here (PNG/JPEG)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1]")
    parser.add_argument("--colormap", default="jet", help="matplotlib colour map")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    """Load, explain, print (and optionally write the overlay)."""
    import torch

    from ttame.explainer import Explainer, UntrainedHeadWarning
    from ttame.images import load_image, map_to_original, overlay, peak_xy, preprocess

    image = load_image(args.image)
    explainer = Explainer.from_pretrained(args.head, args.backbone, args.weights, args.device)
    if not explainer.trained:
        print(
            "WARNING: no trained head for this backbone; the map is NOT an explanation.",
            file=sys.stderr,
        )
    spec = explainer.spec
    tensor, geometry = preprocess(image, spec.input_size, spec.resize_size)
    target = None if args.target is None else explainer.class_index(args.target)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadWarning)
        result = explainer.explain(tensor[None].to(args.device), target)
    seconds = time.perf_counter() - start
    saliency = result.maps[0]
    probabilities = result.probabilities[0]
    top = torch.topk(probabilities, k=min(5, probabilities.numel()))
    index = int(result.classes[0])
    if args.out:
        overlay(image, map_to_original(saliency, geometry), args.alpha, args.colormap).save(
            args.out
        )
    x, y = peak_xy(saliency, geometry)
    report = {
        "backbone": spec.name,
        "head": "trained" if explainer.trained else "untrained",
        "class_index": index,
        "class_name": explainer.categories[index],
        "probability": float(probabilities[index]),
        "top5": [
            [int(i), explainer.categories[int(i)], float(p)]
            for p, i in zip(top.values, top.indices, strict=True)
        ],
        "peak_xy": [round(x, 1), round(y, 1)],
        "seconds": round(seconds, 4),
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"{report['class_name']} (class {index}) p={report['probability']:.3f}; "
            f"peak at x={x:.0f}, y={y:.0f}; {seconds * 1000:.0f} ms"
            + (f"; overlay -> {args.out}" if args.out else "")
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="ttame", description="T-TAME explanations.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMANDS:
        importlib.import_module(module).register(subparsers)
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

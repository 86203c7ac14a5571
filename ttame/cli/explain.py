"""``ttame explain IMAGE``: the map of one photo, printed (or as JSON) and drawn."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any

import torch

from ttame.errors import UntrainedHeadWarning
from ttame.explainer import Explainer
from ttame.explanation import ImageExplanation
from ttame.images import load_image, peak_xy


def register(subparsers: Any) -> None:
    """Add ``ttame explain``."""
    parser = subparsers.add_parser(
        "explain", help="explain one image", description="Explain an image with T-TAME."
    )
    parser.add_argument("image", help="image file (any common format)")
    parser.add_argument("--backbone", default=None, help="backbone name (default: the head's)")
    parser.add_argument(
        "--head",
        default=None,
        help="head folder, Hub repo id, hf://OWNER/NAME/FILE.ckpt or .ckpt "
        "(default: the backbone's known head, docs/hub.md)",
    )
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
    image = load_image(args.image)
    explainer = Explainer.from_pretrained(
        head=args.head, backbone=args.backbone, weights=args.weights, device=args.device
    )
    if not explainer.trained:
        print(
            "WARNING: no trained head for this backbone; the map is NOT an explanation.",
            file=sys.stderr,
        )
    provenance = explainer.provenance
    if provenance is not None and provenance.terms:
        print(f"Head {provenance.source}: {provenance.terms}", file=sys.stderr)
    spec = explainer.spec
    tensor, geometry = explainer.preprocess(image)
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
        shown = ImageExplanation.of(image, result, geometry, explainer.categories)
        shown.overlay(args.alpha, args.colormap).save(args.out)
    x, y = peak_xy(saliency, geometry)
    report = {
        "backbone": spec.name,
        "head": "trained" if explainer.trained else "untrained",
        "head_source": provenance.source if provenance is not None else None,
        "head_license": provenance.license if provenance is not None else None,
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

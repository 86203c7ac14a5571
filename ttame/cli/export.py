"""``ttame export BACKBONE_OR_HEAD --format onnx --out M.onnx``: one graph, raw RGB to maps."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ttame.explainer import Explainer
from ttame.export.onnx import export_onnx

FORMATS = ("onnx",)


def register(subparsers: Any) -> None:
    """Add ``ttame export``."""
    parser = subparsers.add_parser(
        "export",
        help="write an explainer as one ONNX graph",
        description=(
            "One graph from raw RGB images (B x 3 x S x S in [0, 1], any batch, S the "
            "backbone's input size) to probabilities, the top classes and their maps; "
            "normalisation inside, the head's card in the metadata. See docs/export.md."
        ),
    )
    parser.add_argument(
        "model", help="backbone name (its bundled head), head folder or Hub repo id"
    )
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="graph format")
    parser.add_argument("--out", required=True, help="the file to write (M.onnx)")
    parser.add_argument("--top-k", type=int, default=1, help="maps of the k most probable classes")
    parser.add_argument("--backbone", default=None, help="backbone name (default: the head's)")
    parser.add_argument("--weights", default=None, help="local backbone weights file")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Load the explainer, export it, say where and what."""
    explainer = Explainer.from_pretrained(args.model, backbone=args.backbone, weights=args.weights)
    provenance = explainer.provenance
    if not explainer.trained:
        source = "none: an untrained head"
        print(
            "WARNING: no trained head for this backbone; the graph's maps are NOT explanations.",
            file=sys.stderr,
        )
    else:
        source = provenance.source if provenance is not None else args.model
    path = export_onnx(
        explainer,
        args.out,
        top_k=args.top_k,
        head_source=source,
        licence=provenance.license if provenance is not None else None,
    )
    size = explainer.spec.input_size
    print(f"{path}: {explainer.spec.name}, images B x 3 x {size} x {size}, top-{args.top_k} maps")
    return 0

"""``ttame compare A.json B.json``: one method in two evaluate reports, paired by image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ttame.errors import TTameError
from ttame.evaluation.paired import paired_between_reports
from ttame.evaluation.report import paired_table


def register(subparsers: Any) -> None:
    """Add ``ttame compare``."""
    parser = subparsers.add_parser(
        "compare",
        help="paired differences of one method between two evaluate reports",
        description=(
            "One method in report A minus the same (or --reference-method) in report B, image "
            "by image on the images both hold (matched by file): for two heads on the same "
            "images. Reports are the --json files of ttame evaluate."
        ),
    )
    parser.add_argument("report", help="report A (its method is M)")
    parser.add_argument("reference", help="report B (the reference)")
    parser.add_argument("--method", default="ttame", help="the method compared (default: ttame)")
    parser.add_argument(
        "--reference-method", default=None, help="the method taken from B (default: --method)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seeds the bootstrap")
    parser.add_argument("--json", default=None, help="write the paired block here")
    parser.set_defaults(handler=run_compare)


def _load(path: str) -> dict[str, Any]:
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise TTameError(f"Cannot read the report '{path}': {exc}") from exc
    if "records" not in report:
        raise TTameError(f"'{path}' holds no per-image records (not a ttame evaluate report).")
    return report


def run_compare(args: argparse.Namespace) -> int:
    """Load both reports, pair them by file, print the table (and write the JSON)."""
    if args.bootstrap < 1:
        raise TTameError("--bootstrap must be positive.")
    report, reference = _load(args.report), _load(args.reference)
    other = args.reference_method or args.method
    paired = paired_between_reports(
        report, reference, args.method, other, args.bootstrap, args.seed
    )
    for label, path, rep, name in (
        ("A", args.report, report, args.method),
        ("B", args.reference, reference, other),
    ):
        digest = rep.get("head_sha256")
        print(
            f"{label}: {name} in {path} ({rep['backbone']}, head {rep['head']}"
            + (f", SHA-256 {digest[:16]}…)" if digest else ")")
        )
    if report["backbone"] != reference["backbone"]:
        print("note: the backbones differ, so the explained classes may too.", file=sys.stderr)
    print(f"{paired['methods']['A']['n_images']} images in common\n")
    print(paired_table(paired))
    if args.json:
        Path(args.json).write_text(json.dumps(paired, indent=1) + "\n")
    return 0

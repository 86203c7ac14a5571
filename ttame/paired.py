"""Paired comparisons: method M minus a reference, image by image, on the same images.

Two methods scored on the same images are correlated through the images: a hard photo is
hard for both. The marginal intervals of ``ttame evaluate``'s table carry that shared
spread twice and overlap even where M is better on nearly every image; the interval of the
per-image differences does not. Each difference is M's per-image value minus the
reference's: AD and IC per kept share (IC as each image's 0/100 indicator, so its mean is in
percentage points), ROAD as each image's mean over the removed fractions (on the images
where both have ROAD), pointing game and energy-in-mask per region kind. The bootstrap draws
image indices and applies them to both methods at once, which is resampling the
differences. ``ttame compare`` does the same for one method in two reports (two heads) on
the same images, matched by file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ttame.errors import TTameError
from ttame.evaluate import REGIONS, ROAD_ORDERS, Settings, _cell, _key, bootstrap_interval
from ttame.metrics.perturbation import drop_per_image, increase_per_image

DIRECTIONS: dict[str, str] = {
    "AD": "lower",
    "IC": "higher",
    "MoRF": "lower",
    "LeRF": "higher",
    "pointing": "higher",
    "energy": "higher",
}
"""Which way each metric improves: a difference is "better" when it goes this way."""

LOCALISATION = ("pointing", "energy")


def difference_stat(
    differences: Sequence[float] | np.ndarray,
    direction: str,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Mean, paired bootstrap interval, n and shares better/worse/tied of M minus reference.

    ``verdict`` is "better" or "worse" only when the interval excludes 0; otherwise
    "inconclusive", so code can read the comparison without knowing the metric's direction.
    """
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', not {direction!r}")
    values = np.asarray(differences, dtype=np.float64)
    n = int(values.size)
    low, high = bootstrap_interval(values, resamples, seed, level)
    gain = values if direction == "higher" else -values
    if n and ((direction == "higher" and low > 0) or (direction == "lower" and high < 0)):
        verdict = "better"
    elif n and ((direction == "higher" and high < 0) or (direction == "lower" and low > 0)):
        verdict = "worse"
    else:
        verdict = "inconclusive"
    return {
        "mean": float(values.mean()) if n else math.nan,
        "CI95": [low, high],
        "n": n,
        "direction": direction,
        "share_better": float((gain > 0).mean()) if n else math.nan,
        "share_worse": float((gain < 0).mean()) if n else math.nan,
        "share_tied": float((gain == 0).mean()) if n else math.nan,
        "verdict": verdict,
    }


def _confidence_terms(entries: Sequence[dict], percents: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image AD and IC terms (``N x P``), computed as ``summarise`` computes them."""
    clean = torch.tensor([e["clean"] for e in entries], dtype=torch.float64)
    masked = torch.tensor([e["masked"] for e in entries], dtype=torch.float64)
    masked = masked.reshape(len(entries), percents)
    return drop_per_image(clean, masked).numpy(), increase_per_image(clean, masked).numpy()


def paired_differences(
    records: Sequence[dict],
    method: str,
    reference: str,
    settings: Settings,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Every metric of ``method`` minus ``reference`` on the records that hold both.

    Returns ``{"n_images", "AD": {share: stat}, "IC": {...}, "ROAD": {order: stat},
    "localisation": {region: {metric: stat}}}`` with :func:`difference_stat`'s stats; ROAD
    and localisation appear only when some image has them for both methods.
    """
    pairs = [
        (r["methods"][method], r["methods"][reference])
        for r in records
        if method in r["methods"] and reference in r["methods"]
    ]
    ours = [a for a, _ in pairs]
    theirs = [b for _, b in pairs]
    count = len(settings.percents)
    drops, increases = _confidence_terms(ours, count)
    drops_ref, increases_ref = _confidence_terms(theirs, count)
    result: dict = {"n_images": len(pairs), "AD": {}, "IC": {}}
    for j, percent in enumerate(settings.percents):
        key = _key(percent)
        result["AD"][key] = difference_stat(
            drops[:, j] - drops_ref[:, j], DIRECTIONS["AD"], resamples, seed
        )
        result["IC"][key] = difference_stat(
            increases[:, j] - increases_ref[:, j], DIRECTIONS["IC"], resamples, seed
        )
    road = [(a["road"], b["road"]) for a, b in pairs if "road" in a and "road" in b]
    if road:
        result["ROAD"] = {
            order: difference_stat(
                [np.mean(a[order]) - np.mean(b[order]) for a, b in road],
                DIRECTIONS[order],
                resamples,
                seed,
            )
            for order in ROAD_ORDERS
        }
    for region in REGIONS:
        scored = [(a[region], b[region]) for a, b in pairs if region in a and region in b]
        if scored:
            result.setdefault("localisation", {})[region] = {
                metric: difference_stat(
                    [a[metric] - b[metric] for a, b in scored],
                    DIRECTIONS[metric],
                    resamples,
                    seed,
                )
                for metric in LOCALISATION
            }
    return result


def paired_block(
    records: Sequence[dict],
    methods: Sequence[str],
    reference: str,
    settings: Settings,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """The report's ``"paired"`` block: every method but the reference, minus the reference."""
    return {
        "reference": reference,
        "level": 0.95,
        "resamples": resamples,
        "seed": seed,
        "methods": {
            name: paired_differences(records, name, reference, settings, resamples, seed)
            for name in methods
            if name != reference
        },
    }


def _settings(report: dict) -> Settings:
    return Settings(
        percents=tuple(report["percents"]),
        fractions=tuple(report["road_fractions"]),
        seed=report["bootstrap"]["seed"],
    )


def paired_from_report(
    report: dict,
    reference: str,
    methods: Sequence[str] | None = None,
    resamples: int | None = None,
    seed: int | None = None,
) -> dict:
    """The ``"paired"`` block of a saved ``ttame evaluate`` report, from its records.

    Resamples and seed default to the report's own bootstrap settings.
    """
    names = list(report["methods"]) if methods is None else list(methods)
    for name in [*names, reference]:
        if name not in report["methods"]:
            have = ", ".join(report["methods"])
            raise TTameError(f"The report has no method '{name}'; it has {have}.")
    boot = report["bootstrap"]
    return paired_block(
        report["records"],
        names,
        reference,
        _settings(report),
        boot["resamples"] if resamples is None else resamples,
        boot["seed"] if seed is None else seed,
    )


def _image_key(report: dict, record: dict) -> str:
    """The image's path relative to the report's image folder (else as recorded)."""
    path, root = Path(record["file"]), Path(report.get("images", ""))
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def paired_between_reports(
    report: dict,
    reference: dict,
    method: str,
    reference_method: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    labels: tuple[str, str] = ("A", "B"),
) -> dict:
    """``method`` in ``report`` minus ``reference_method`` (default: the same) in ``reference``.

    Made for two heads scored on the same images: records are matched by file (relative to
    each report's image folder), and only the images both reports hold are compared.
    """
    other = reference_method or method
    for name, rep in ((method, report), (other, reference)):
        if name not in rep["methods"]:
            have = ", ".join(rep["methods"])
            raise TTameError(f"A report has no method '{name}'; it has {have}.")
    if list(report["percents"]) != list(reference["percents"]):
        raise TTameError("The two reports keep different shares; AD/IC cannot be paired.")
    theirs = {_image_key(reference, r): r for r in reference["records"]}
    records = []
    for record in report["records"]:
        match = theirs.get(_image_key(report, record))
        if match is not None:
            entries = {labels[0]: record["methods"][method], labels[1]: match["methods"][other]}
            records.append({"index": record["index"], "file": record["file"], "methods": entries})
    if not records:
        raise TTameError("The two reports have no image in common (matched by file).")
    return paired_block(records, [labels[0]], labels[1], _settings(report), resamples, seed)


def _paired_cell(stat: dict | None, digits: int) -> str:
    if stat is None or stat["n"] == 0:
        return "–"
    mark = {"better": " ✓", "worse": " ✗"}.get(stat["verdict"], "")
    shares = f" {100 * stat['share_better']:.0f}:{100 * stat['share_worse']:.0f}"
    low, high = (round(v, digits) + 0.0 for v in stat["CI95"])  # no "-0.000" for a rounded 0
    return _cell(round(stat["mean"], digits) + 0.0, (low, high), digits) + mark + shares


LEGEND = (
    "Each cell: the mean over images of M's value minus {ref}'s [paired 95 % bootstrap "
    "interval]; ✓ M better, ✗ M worse, with the interval excluding 0 (the arrows say which "
    "way is better); then the % of images where M is better : worse (the rest tie)."
)


def paired_table(paired: dict) -> str:
    """The "M minus REF, paired" markdown tables (AD/IC/ROAD; localisation when present)."""
    ref, methods = paired["reference"], paired["methods"]
    if not methods:
        return ""
    percents = list(next(iter(methods.values()))["AD"])
    header = [f"M minus {ref}, paired"]
    header += [f"AD {p}% ↓" for p in percents] + [f"IC {p}% ↑ (pp)" for p in percents]
    header += ["ROAD MoRF ↓", "ROAD LeRF ↑", "n (ROAD)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in methods.items():
        cells = [name]
        cells += [_paired_cell(m["AD"][p], 1) for p in percents]
        cells += [_paired_cell(m["IC"][p], 1) for p in percents]
        road = m.get("ROAD", {})
        cells += [_paired_cell(road.get(order), 3) for order in ROAD_ORDERS]
        cells.append(f"{m['n_images']} ({road['MoRF']['n'] if road else 0})")
        lines.append("| " + " | ".join(cells) + " |")
    regions = [r for r in REGIONS if any(r in m.get("localisation", {}) for m in methods.values())]
    if regions:
        head = [f"M minus {ref}, paired"]
        for region in regions:
            head += [f"pointing ({region}) ↑", f"energy ({region}) ↑"]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, m in methods.items():
            cells = [name]
            for region in regions:
                block = m.get("localisation", {}).get(region, {})
                cells += [_paired_cell(block.get(metric), 3) for metric in LOCALISATION]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + LEGEND.format(ref=ref)


def register(subparsers: argparse._SubParsersAction) -> None:
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


def _load(path: str) -> dict:
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

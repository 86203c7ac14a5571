"""Write docs/results.md from the JSON reports of ``ttame evaluate`` in docs/results/.

    python scripts/results_report.py [--dir docs/results] [--out docs/results.md]

Per backbone it expects ``<backbone>_photos.json`` (the fast methods on every evaluation
photo), ``<backbone>_photos_slow.json`` (Score-CAM and RISE on a spread subset) and
``<backbone>_groundtruth.json`` (localisation on the composites); a missing one is left out.
The fast methods are re-scored on the slow run's subset from their per-image records, so that
every method is compared on the same photos. A report run with ``--against METHOD`` also gets
its paired table (every method minus METHOD, image by image), and so does the subset. The
hand-written reading between the ``reading`` markers of an existing docs/results.md is kept.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from ttame.evaluation.paired import paired_block
from ttame.evaluation.report import markdown_table, paired_table, plot_curves
from ttame.evaluation.summary import Settings, summarise

START, END = "<!-- reading -->", "<!-- /reading -->"
BACKBONES = ("mobilenet_v2", "efficientnet_lite0")


def subset_report(fast: dict, slow: dict) -> dict:
    """Every method of both runs, scored on the photos of the slow run only."""
    files = {r["file"] for r in slow["records"]}
    records = {r["file"]: r for r in slow["records"]}
    for record in fast["records"]:
        if record["file"] in files:
            records[record["file"]]["methods"].update(record["methods"])
    merged = sorted(records.values(), key=lambda r: r["index"])
    names = list(fast["methods"]) + list(slow["methods"])
    settings = Settings(
        percents=tuple(slow["percents"]),
        fractions=tuple(slow["road_fractions"]),
        seed=slow["bootstrap"]["seed"],
    )
    resamples = slow["bootstrap"]["resamples"]
    report = {
        **slow,
        "n_images": len(merged),
        "methods": summarise(merged, names, settings, resamples),
    }
    if "paired" in fast:
        reference = fast["paired"]["reference"]
        report["paired"] = paired_block(
            merged, names, reference, settings, resamples, settings.seed
        )
    return report


def paired_lines(report: dict) -> list[str]:
    """The report's paired table under its own heading; nothing when it has none."""
    paired = report.get("paired")
    if not paired or not paired["methods"]:
        return []
    return [
        f"Paired: each method minus {paired['reference']}, image by image on the same images "
        "(a difference can be clear where the intervals above overlap).",
        "",
        paired_table(paired),
        "",
    ]


def section(backbone: str, folder: Path) -> list[str]:
    """The markdown of one backbone's results, and its plots written beside the JSON."""
    paths = {
        kind: folder / f"{backbone}_{kind}.json"
        for kind in ("photos", "photos_slow", "groundtruth")
    }
    reports = {k: json.loads(p.read_text()) for k, p in paths.items() if p.is_file()}
    if not reports:
        return []
    first = next(iter(reports.values()))
    digest = first.get("head_sha256")
    lines = [
        f"## {backbone}",
        "",
        f"T-TAME head: **{first['head']}**"
        + (f" (model.safetensors SHA-256 `{digest[:16]}…`)." if digest else "."),
        "",
    ]
    fast = reports.get("photos")
    if fast:
        road = {m.get("n_images_road", 0) for m in fast["methods"].values()}
        lines += [
            f"### Evaluation photos: {fast['n_images']} images "
            f"(ROAD on {max(road)} of them, spread over the list)",
            "",
            markdown_table({k: v for k, v in fast.items() if k != "sanity"}),
            "",
            *paired_lines(fast),
        ]
        if fast["skipped"]:
            lines += [f"Skipped (unreadable): {', '.join(s['file'] for s in fast['skipped'])}.", ""]
        plot = folder / f"{backbone}_photos.png"
        plot_curves(fast, plot)
        lines += [f"![{backbone} curves](results/{plot.name})", ""]
    slow = reports.get("photos_slow")
    if slow and fast:
        both = subset_report(fast, slow)
        lines += [
            f"### Every method on the same {both['n_images']} photos "
            f"(RISE with {slow['options']['rise_masks']} masks)",
            "",
            markdown_table(both),
            "",
            *paired_lines(both),
        ]
        plot = folder / f"{backbone}_subset.png"
        plot_curves(both, plot)
        lines += [f"![{backbone} curves, all methods](results/{plot.name})", ""]
    if fast and fast.get("sanity"):
        sanity = fast["sanity"]
        steps = list(next(iter(sanity["methods"].values())))
        lines += [
            f"### Sanity: Spearman ρ of intact vs randomised maps ({sanity['n_images']} photos)",
            "",
            "Cascading randomisation of the backbone's top (classifier, then also the last "
            "stage, then the stage before); same classes as the intact model. A value near 1 "
            "means the map did not change: the method ignored what was destroyed.",
            "",
            "| method | " + " | ".join(steps) + " |",
            "|---|" + "---|" * len(steps),
        ]
        for name, by_step in sanity["methods"].items():
            lines.append(f"| {name} | " + " | ".join(f"{by_step[s]:.2f}" for s in steps) + " |")
        lines.append("")
    truth = reports.get("groundtruth")
    if truth:
        lines += [
            f"### Localisation: {truth['n_images']} ground-truth composites",
            "",
            markdown_table(truth),
            "",
            *paired_lines(truth),
        ]
    return lines


def main() -> None:
    """Assemble the page, keeping the hand-written reading."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="docs/results")
    parser.add_argument("--out", default="docs/results.md")
    args = parser.parse_args()
    folder, out = Path(args.dir), Path(args.out)
    reading = f"{START}\n(No reading yet.)\n{END}"
    if out.is_file() and START in out.read_text():
        text = out.read_text()
        reading = text[text.index(START) : text.index(END) + len(END)]
    commands = (
        (folder / "commands.txt").read_text().strip() if (folder / "commands.txt").is_file() else ""
    )
    lines = [
        "# Results on real photos",
        "",
        f"Generated on {datetime.date.today()} by `bash scripts/run_results.sh` "
        "(which runs the commands below, then `scripts/results_report.py`). Everything is "
        "measured for the backbone's own top-1 class, on images no head was trained on. "
        "AD and IC follow docs/method.md, Evaluation (soft map kept above the image's "
        "percentile, raw image "
        "multiplied); AD, IC in %, ROAD as the share of images still classified the same "
        "(mean over 10-90 % removed). Brackets: 95 % bootstrap intervals over images. "
        "Seconds per image are CPU times on a shared 2-core machine: compare within a table.",
        "",
        "## Reading",
        "",
        reading,
        "",
    ]
    for backbone in BACKBONES:
        lines += section(backbone, folder)
    if commands:
        lines += ["## Commands", "", "```", commands, "```", ""]
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()

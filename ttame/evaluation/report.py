"""The evaluation's tables (markdown) and curves (PNG), from a report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ttame.evaluation.inputs import LOCALISATION, REGIONS
from ttame.evaluation.summary import percent_key
from ttame.metrics.road.constants import ROAD_ORDERS


def cell(value: float | None, interval: Sequence[float] | None = None, digits: int = 1) -> str:
    """A table cell: the value with ``digits`` decimals, its interval in brackets, or a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if interval is not None and not any(math.isnan(v) for v in interval):
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


def accuracy_line(report: dict) -> str:
    """Which class the maps explain and, for a labelled list, the backbone's top-1 accuracy."""
    explained = report.get("explained", "prediction")
    text = "maps explain " + (
        "the backbone's top-1 prediction" if explained == "prediction" else "the list's label"
    )
    top1 = report.get("accuracy")
    if top1:
        value = cell(top1["top1"], top1["top1_CI95"], 2)
        text += f"; backbone top-1 accuracy on the labels: {value} % ({top1['n_images']} images)"
    return text


def markdown_table(report: dict) -> str:
    """The methods x metrics table (95 % bootstrap intervals in brackets)."""
    methods = report["methods"]
    percents = [percent_key(p) for p in report["percents"]]
    header = ["method"] + [f"AD {p}% ↓" for p in percents] + [f"IC {p}% ↑" for p in percents]
    header += ["ROAD MoRF ↓", "ROAD LeRF ↑", "s / image"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in methods.items():
        cells = [name]
        cells += [cell(m["AD"][p], m["AD_CI95"][p]) for p in percents]
        cells += [cell(m["IC"][p], m["IC_CI95"][p]) for p in percents]
        for order in ROAD_ORDERS:
            road = m.get("ROAD", {}).get(order)
            cells.append(cell(road["mean"], m["ROAD_CI95"][order], 3) if road else "–")
        cells.append(f"{m['seconds_per_image']:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    chance = report.get("localisation_chance")
    if chance:
        head = ["method"]
        for region in chance:
            head += [f"pointing ({region}) ↑", f"energy ({region}) ↑"]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        chance_row = ["chance (region's share)"]
        for region in chance:
            chance_row += [cell(chance[region], None, 3)] * 2
        rows.append("| " + " | ".join(chance_row) + " |")
        for name, m in methods.items():
            cells = [name]
            for region in chance:
                block = m.get("localisation", {}).get(region)
                for metric in ("pointing", "energy"):
                    cells.append(cell(block[metric], block[f"{metric}_CI95"], 3) if block else "–")
            rows.append("| " + " | ".join(cells) + " |")
        text += "\n\n" + "\n".join(rows)
    sanity = report.get("sanity")
    if sanity:
        steps = list(next(iter(sanity["methods"].values())))
        head = ["method"] + [f"ρ after {s}" for s in steps]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, by_step in sanity["methods"].items():
            rows.append(
                "| " + " | ".join([name] + [cell(by_step[s], None, 2) for s in steps]) + " |"
            )
        text += "\n\n" + "\n".join(rows)
    return text


def plot_curves(report: dict, path: str | Path) -> None:
    """AD and IC against the kept %, ROAD accuracy against the removed %, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    percents = [percent_key(p) for p in report["percents"]]
    x_kept = [float(p) for p in percents]
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    panels = [
        (axes[0, 0], "AD", "Average Drop (%) ↓", "kept (%)"),
        (axes[0, 1], "IC", "Increase in Confidence (%) ↑", "kept (%)"),
        (axes[1, 0], "MoRF", "ROAD MoRF accuracy ↓", "removed (%)"),
        (axes[1, 1], "LeRF", "ROAD LeRF accuracy ↑", "removed (%)"),
    ]
    for name, m in report["methods"].items():
        for ax, metric, _, _ in panels:
            if metric in ("AD", "IC"):
                ax.plot(x_kept, [m[metric][p] for p in percents], marker="o", label=name)
            elif "ROAD" in m:
                curve = {k: v for k, v in m["ROAD"][metric].items() if k != "mean"}
                ax.plot([float(k) for k in curve], list(curve.values()), marker="o", label=name)
    for ax, _, title, xlabel in panels:
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0, 0].invert_xaxis()
    axes[0, 1].invert_xaxis()
    axes[0, 0].legend(fontsize=8)
    head = report.get("head", "")
    fig.suptitle(f"{report['backbone']} ({head} head), {report['n_images']} images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _paired_cell(stat: dict | None, digits: int) -> str:
    if stat is None or stat["n"] == 0:
        return "–"
    mark = {"better": " ✓", "worse": " ✗"}.get(stat["verdict"], "")
    shares = f" {100 * stat['share_better']:.0f}:{100 * stat['share_worse']:.0f}"
    low, high = (round(v, digits) + 0.0 for v in stat["CI95"])  # no "-0.000" for a rounded 0
    return cell(round(stat["mean"], digits) + 0.0, (low, high), digits) + mark + shares


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

"""What each callback returns, field by field in the order of its outputs, and the texts shown.

Gradio takes a tuple per click, one value per output component; a NamedTuple is such a tuple
whose fields say which value goes where.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ttame.app.state import Shown
from ttame.methods.registry import label
from ttame.metrics.photo import PhotoADIC, PhotoROAD
from ttame.metrics.road.constants import ROAD_ORDERS


class Explained(NamedTuple):
    """``explain``: the new map, the prediction, and the comparison pictures cleared."""

    overlay: Any
    heatmap: Any
    prediction: str
    top5: Any
    status: str
    compare_ttame: Any
    compare_baseline: Any
    timings: str
    shown: Shown


class Menu(NamedTuple):
    """``load``: the class menu of the backbone and the head's status line."""

    target: Any
    status: str


class Restyled(NamedTuple):
    """``restyle``: the same maps in new colours (``gr.skip()`` where there is nothing)."""

    overlay: Any
    heatmap: Any
    compare_ttame: Any
    compare_baseline: Any


class Compared(NamedTuple):
    """``compare``: T-TAME's map and the baseline's, side by side, and their times."""

    ttame: Any
    baseline: Any
    timings: str
    shown: Shown


class Measured(NamedTuple):
    """``adic`` and ``road``: the images the backbone saw, the curves, the scores, the JSON."""

    steps: list[tuple[Any, str]]
    curves: Any
    summary: str
    numbers: dict[str, Any]


def timings_table(
    class_name: str, index: int, rows: list[tuple[str, float, str]], costs: dict[str, str]
) -> str:
    """The comparison's table: each method's time for one map, and what a map costs."""
    lines = [f"Class **{class_name}** ({index})\n\n| method | time | cost |\n|---|---|---|\n"]
    for method, seconds, note in rows:
        lines.append(
            f"| {label(method)}{note} | {seconds * 1000:.0f} ms | {costs.get(method, '')} |\n"
        )
    return "".join(lines)


def adic_summary(report: PhotoADIC, class_name: str, method: str, seconds: float) -> str:
    """The AD/IC table of one photo."""
    return (
        f"**AD / IC** for **{class_name}** with the {label(method)} map (made in "
        f"{seconds * 1000:.0f} ms); clean probability {report.clean_probability:.1%}.\n\n"
        "| top of the map kept | probability | drop (AD term) | more confident (IC term) |\n"
        "|---|---|---|---|\n"
        + "".join(
            f"| {p:g} % | {o:.1%} | {d:.1f} % | {'yes' if i else 'no'} |\n"
            for p, o, d, i in zip(
                report.percents, report.probability, report.drop, report.increase, strict=True
            )
        )
    )


def road_summary(report: PhotoROAD, class_name: str, method: str, seconds: float) -> str:
    """The ROAD table of one photo: per order, which removals kept the prediction."""
    fractions = ", ".join(f"{f:.0%}" for f in report.fractions)
    rows = []
    for order, better in zip(ROAD_ORDERS, ("lower", "higher"), strict=True):
        curve = report.curves[order]
        marks = " ".join("✓" if a else "✗" for a in curve["accuracy"])
        rows.append(f"| {order} | {marks} | {curve['mean']:.2f} | {better} |\n")
    return (
        f"**ROAD** for **{class_name}** with the {label(method)} map (made in "
        f"{seconds * 1000:.0f} ms).\n\n| order | prediction kept at {fractions} removed | ROAD "
        "| better |\n|---|---|---|---|\n" + "".join(rows)
    )

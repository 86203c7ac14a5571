"""Per-image records to per-method numbers: means and percentile bootstrap intervals.

The summary depends only on the records, never on how they were sharded over processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ttame.evaluation.inputs import REGIONS
from ttame.methods.registry import MethodOptions
from ttame.metrics.perturbation import DEFAULT_PERCENTS, drop_per_image, increase_per_image
from ttame.metrics.road.constants import ROAD_FRACTIONS, ROAD_ORDERS

EXPLAINED = ("prediction", "label")
"""Which class each map explains: the backbone's top-1 (the paper's protocol) or the label."""


@dataclass
class Settings:
    """What one evaluation run computes."""

    percents: tuple[float, ...] = DEFAULT_PERCENTS
    fractions: tuple[float, ...] = ROAD_FRACTIONS
    road_indices: frozenset[int] | None = None
    """Images (by index) that get ROAD, the costly metric; None: all of them."""
    batch_size: int = 8
    seed: int = 0
    options: MethodOptions = field(default_factory=MethodOptions)
    explain: Literal["prediction", "label"] = "prediction"
    """The class explained and scored (:data:`EXPLAINED`); ``label`` needs labelled images."""


def bootstrap_interval(
    values: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per image).

    Resampling images with replacement says how much the mean would move with another draw
    of equally many images: with tens of images, that is most of the uncertainty.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def percent_key(value: float) -> str:
    """``100`` for 100.0, ``12.5`` for 12.5: JSON keys for percentages."""
    return str(int(value)) if float(value).is_integer() else str(value)


def summarise(
    records: Sequence[dict], methods: Sequence[str], settings: Settings, resamples: int = 1000
) -> dict:
    """The per-method summary: AD, IC, ROAD, localisation, time, with bootstrap intervals."""
    seed = settings.seed
    summary: dict = {}
    for name in methods:
        rows = [r["methods"][name] for r in records]
        clean = torch.tensor([r["clean"] for r in rows], dtype=torch.float64)
        masked = torch.tensor([r["masked"] for r in rows], dtype=torch.float64)
        masked = masked.reshape(len(rows), len(settings.percents))
        drops = drop_per_image(clean, masked).numpy()
        increases = increase_per_image(clean, masked).numpy()
        result: dict = {"AD": {}, "IC": {}, "AD_CI95": {}, "IC_CI95": {}}
        for j, percent in enumerate(settings.percents):
            key = percent_key(percent)
            result["AD"][key] = float(drops[:, j].mean()) if len(rows) else math.nan
            result["IC"][key] = float(increases[:, j].mean()) if len(rows) else math.nan
            result["AD_CI95"][key] = bootstrap_interval(drops[:, j], resamples, seed)
            result["IC_CI95"][key] = bootstrap_interval(increases[:, j], resamples, seed)
        road_rows = [r["road"] for r in rows if "road" in r]
        if road_rows:
            result["ROAD"], result["ROAD_CI95"] = {}, {}
            for order in ROAD_ORDERS:
                correct = np.array([r[order] for r in road_rows], dtype=np.float64)
                curve = {
                    percent_key(round(f * 100, 6)): float(c)
                    for f, c in zip(settings.fractions, correct.mean(axis=0), strict=True)
                }
                curve["mean"] = float(correct.mean())
                result["ROAD"][order] = curve
                result["ROAD_CI95"][order] = bootstrap_interval(
                    correct.mean(axis=1), resamples, seed
                )
            result["n_images_road"] = len(road_rows)
        for region in REGIONS:
            scored = [r[region] for r in rows if region in r]
            if scored:
                block: dict = {"n_images": len(scored)}
                for metric in ("pointing", "energy"):
                    values = np.array([s[metric] for s in scored])
                    block[metric] = float(values.mean())
                    block[f"{metric}_CI95"] = bootstrap_interval(values, resamples, seed)
                result.setdefault("localisation", {})[region] = block
        result["seconds_per_image"] = float(np.mean([r["seconds"] for r in rows])) if rows else 0.0
        summary[name] = result
    return summary


def accuracy(records: Sequence[dict], resamples: int = 1000, seed: int = 0) -> dict | None:
    """The backbone's top-1 accuracy (%) on the clean images against their labels, if labelled.

    The bootstrap interval is over images, as for every other number of the report.
    """
    labelled = [r for r in records if r.get("label") is not None]
    if not labelled:
        return None
    hits = np.array([100.0 * (r["predicted"] == r["label"]) for r in labelled])
    return {
        "top1": float(hits.mean()),
        "top1_CI95": bootstrap_interval(hits, resamples, seed),
        "n_images": len(labelled),
    }


def chance_levels(records: Sequence[dict]) -> dict[str, float]:
    """Mean share of the image covered by each region kind: the localisation chance level."""
    levels = {}
    for region in REGIONS:
        shares = [r["coverage"][region] for r in records if region in r.get("coverage", {})]
        if shares:
            levels[region] = float(np.mean(shares))
    return levels

"""Paired comparisons: method M minus a reference, image by image, on the same images.

Two methods scored on the same images are correlated through the images: a hard photo is
hard for both. The marginal intervals of ``ttame evaluate``'s table carry that shared
spread twice and overlap even where M is better on nearly every image; the interval of the
per-image differences does not. Each difference is M's per-image value minus the
reference's: AD and IC per kept share (IC as each image's 0/100 indicator, so its mean is in
percentage points), ROAD as each image's mean over the removed fractions (on the images
where both have ROAD), pointing game and energy-in-mask per region kind. The bootstrap draws
image indices and applies them to both methods at once, which is resampling the
differences. ``ttame compare`` (:mod:`ttame.cli.compare`) does the same for one method in two
reports (two heads) on the same images, matched by file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch

from ttame.errors import TTameError
from ttame.evaluation.inputs import LOCALISATION, REGIONS
from ttame.evaluation.summary import Settings, bootstrap_interval, percent_key
from ttame.metrics.perturbation import drop_per_image, increase_per_image
from ttame.metrics.road.constants import ROAD_ORDERS

DIRECTIONS: dict[str, str] = {
    "AD": "lower",
    "IC": "higher",
    "MoRF": "lower",
    "LeRF": "higher",
    "pointing": "higher",
    "energy": "higher",
}
"""Which way each metric improves: a difference is "better" when it goes this way."""


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
    ``sd`` is the spread of the per-image differences, which sets how many images a given
    difference needs (:func:`images_needed`).
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
        "sd": float(values.std(ddof=1)) if n > 1 else math.nan,
        "direction": direction,
        "share_better": float((gain > 0).mean()) if n else math.nan,
        "share_worse": float((gain < 0).mean()) if n else math.nan,
        "share_tied": float((gain == 0).mean()) if n else math.nan,
        "verdict": verdict,
    }


def images_needed(sd: float, effect: float, power: float = 0.8, level: float = 0.95) -> int:
    """Images a paired comparison needs to find a true mean difference ``effect`` with ``power``.

    The normal approximation for a two-sided test at ``level``:
    ``n = ((z_(1+level)/2 + z_power) * sd / effect) ** 2``, so that a claim's sample size can be
    checked against the effect it is to show before the images are scored.
    """
    if effect == 0 or not 0 < power < 1 or not 0 < level < 1:
        raise ValueError("effect must be non-zero, power and level in (0, 1)")
    normal = NormalDist()
    z = normal.inv_cdf((1 + level) / 2) + normal.inv_cdf(power)
    return math.ceil((z * sd / abs(effect)) ** 2)


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
        key = percent_key(percent)
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

"""Every method x every metric over the images, one record per image.

Each image is explained by each method for the backbone's top-1 class (the paper's protocol;
or, for labelled images, for its label if the settings say so); AD/IC, ROAD and,
given ground-truth masks, the pointing game and energy-in-mask are computed per image
(docs/method.md, "Evaluation"), so that bootstrap intervals can be drawn over images. Under
``torchrun`` each rank takes every ``world``-th image and rank 0 gathers the records.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ttame.distributed import Runtime, gather_to_main
from ttame.evaluation.inputs import Item, load_batches, merge
from ttame.evaluation.sanity import cascading_randomization
from ttame.evaluation.summary import Settings
from ttame.explainer import Explainer
from ttame.methods.registry import METHODS, MapMaker, MethodOptions
from ttame.metrics import road
from ttame.metrics.localisation import coverage, energy_in_mask, pointing_game
from ttame.metrics.perturbation import masked_confidence
from ttame.metrics.road.constants import ROAD_ORDERS


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_items(
    explainer: Explainer,
    methods: dict[str, MapMaker],
    items: Sequence[Item],
    settings: Settings,
    progress: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Per-image records (all methods, all metrics) and the images that failed to load."""
    device = next(explainer.parameters()).device
    spec = explainer.spec
    records: list[dict] = []
    failures: list[dict] = []
    bar = tqdm(total=len(items), desc="evaluate", unit="image", disable=not progress)
    batches = load_batches(items, spec.input_size, spec.resize_size, settings.batch_size)
    for batch in batches:
        failures.extend(batch.failed)
        bar.update(len(batch.items) + len(batch.failed))
        if not batch.items:
            continue
        images = batch.images.to(device)
        regions = {k: v.to(device) for k, v in batch.regions.items()}
        rows: list[dict] = [
            {"index": item.index, "file": str(item.path), "methods": {}} for item in batch.items
        ]
        targets = (
            torch.tensor([item.label for item in batch.items], device=device)
            if settings.explain == "label"
            else None
        )
        for name, maker in methods.items():
            _synchronize(device)
            start = time.perf_counter()
            explanation = maker.explain(images, targets)
            _synchronize(device)
            seconds = (time.perf_counter() - start) / len(images)
            maps, classes = explanation.maps, explanation.classes
            clean = explanation.scores
            with torch.no_grad():
                masked = masked_confidence(
                    explainer.backbone, images, maps, classes, settings.percents
                )
            localisation = {
                region: {
                    "pointing": pointing_game(maps, mask).tolist(),
                    "energy": energy_in_mask(maps, mask).tolist(),
                }
                for region, mask in regions.items()
            }
            predicted = explanation.probabilities.argmax(dim=1).tolist()
            for i, (row, item) in enumerate(zip(rows, batch.items, strict=True)):
                row["class"] = int(classes[i])
                row["predicted"] = predicted[i]
                if item.label is not None:
                    row["label"] = item.label
                entry: dict = {
                    "clean": float(clean[i]),
                    "masked": masked[i].tolist(),
                    "seconds": seconds,
                }
                if settings.road_indices is None or item.index in settings.road_indices:
                    scores = road.road_scores(
                        explainer.backbone,
                        images[i : i + 1],
                        maps[i : i + 1],
                        settings.fractions,
                        ROAD_ORDERS,
                        labels=classes[i : i + 1],
                        seed=settings.seed * 1_000_003 + item.index,
                    )
                    entry["road"] = {o: scores[o]["correct"][:, 0].tolist() for o in ROAD_ORDERS}
                for region, scores in localisation.items():
                    entry[region] = {k: v[i] for k, v in scores.items()}
                row["methods"][name] = entry
        for region, mask in regions.items():
            for row, share in zip(rows, coverage(mask).tolist(), strict=True):
                row.setdefault("coverage", {})[region] = share
        records.extend(rows)
    bar.close()
    return records, failures


def sanity_report(
    explainer: Explainer, names: Sequence[str], items: Sequence[Item], options: MethodOptions
) -> dict:
    """Mean Spearman correlation of intact vs randomised maps, per method and cascade step."""
    spec = explainer.spec
    device = next(explainer.parameters()).device
    loaded = [b.images for b in load_batches(items, spec.input_size, spec.resize_size, len(items))]
    images = torch.cat([x for x in loaded if x.numel()]).to(device)
    result: dict = {"n_images": len(images), "methods": {}}
    for name in names:
        steps = cascading_randomization(explainer, METHODS[name], images, options, options.seed)
        result["methods"][name] = {
            step: float(np.nanmean(rho.numpy())) if np.isfinite(rho.numpy()).any() else math.nan
            for step, rho in steps.items()
        }
    return result


def gather(
    records: list[dict[str, Any]], failures: list[dict[str, Any]], runtime: Runtime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every rank's records and failures on rank 0 (merged in image order); others get []."""
    parts = gather_to_main((records, failures), runtime)
    if parts is None:
        return [], []
    pairs = [part for part in parts if isinstance(part, tuple)]
    return merge([p[0] for p in pairs]), [f for p in pairs for f in p[1]]


def head_provenance(explainer: Explainer) -> dict[str, str | None]:
    """Which head was scored: its source and the SHA-256 of the file its weights came from.

    The hash ties a results table to the exact head file, so a later head cannot be mistaken
    for the one that was measured.
    """
    if not explainer.trained:
        return {"head": "untrained", "head_sha256": None}
    provenance = explainer.provenance
    if provenance is None:
        return {"head": "built in memory", "head_sha256": None}
    weights = provenance.weights
    if weights is None or not weights.is_file():
        return {"head": provenance.source, "head_sha256": None}
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    return {"head": provenance.source, "head_sha256": digest}

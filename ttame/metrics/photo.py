"""AD/IC and ROAD for one photo and one map, with every image the backbone was shown.

The averages over a data set are what the paper reports; on one photo, AD is the drop of the
class probability in % and IC whether the masked photo is more confident than the clean one.
The app shows these reports; they know nothing of which method made the map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypedDict

import torch

from ttame.metrics import perturbation, road
from ttame.metrics.road.constants import ROAD_FRACTIONS, ROAD_ORDERS

Classify = Callable[[torch.Tensor], torch.Tensor]
"""Raw [0, 1] images ``B x 3 x H x W`` -> logits (normalisation inside)."""


@dataclass
class PhotoADIC:
    """The photo masked to the top of its map at each kept share, and what the backbone said."""

    class_index: int
    clean_probability: float
    percents: list[float]
    probability: list[float]
    """The class's probability on each masked photo."""
    drop: list[float]
    """Each share's Average Drop term, in %."""
    increase: list[float]
    """Each share's Increase in Confidence term: 100 if more confident, else 0."""
    images: torch.Tensor
    """The masked photos, ``P x 3 x H x W``."""


class RoadCurve(TypedDict):
    """One order of one photo's ROAD: prediction kept (1.0 or 0.0) and probability, per fraction."""

    accuracy: list[float]
    mean: float
    probability: list[float]


@dataclass
class PhotoROAD:
    """The photo with 10-90 % of its pixels removed and imputed, MoRF and LeRF."""

    class_index: int
    clean_probability: float
    fractions: list[float]
    curves: dict[str, RoadCurve]
    """Per order: ``accuracy`` (prediction kept, per fraction), ``mean``, ``probability``."""
    images: dict[str, torch.Tensor]
    """Per order, the imputed photos, ``F x 3 x H x W``."""


@torch.no_grad()
def photo_adic(
    classify: Classify,
    image: torch.Tensor,
    saliency: torch.Tensor,
    class_index: int,
    clean_probability: float,
    percents: Sequence[float] = perturbation.DEFAULT_PERCENTS,
) -> PhotoADIC:
    """AD/IC of one map (``H x W``) of one raw image (``3 x H x W``) for ``class_index``."""
    maps = saliency[None]
    masked = perturbation.masked_images(image[None], maps, percents)[:, 0]
    after = perturbation.masked_confidence(
        classify, image[None], maps, torch.tensor([class_index]), percents
    )
    before = torch.tensor([clean_probability], dtype=after.dtype)
    return PhotoADIC(
        class_index=class_index,
        clean_probability=clean_probability,
        percents=list(percents),
        probability=after[0].tolist(),
        drop=perturbation.drop_per_image(before, after)[0].tolist(),
        increase=perturbation.increase_per_image(before, after)[0].tolist(),
        images=masked,
    )


@torch.no_grad()
def photo_road(
    classify: Classify,
    image: torch.Tensor,
    saliency: torch.Tensor,
    class_index: int,
    clean_probability: float,
    fractions: Sequence[float] = ROAD_FRACTIONS,
) -> PhotoROAD:
    """ROAD of one map: whether the backbone still says ``class_index`` once pixels are gone."""
    scores = road.road_scores(
        classify,
        image[None],
        saliency[None],
        fractions,
        ROAD_ORDERS,
        labels=torch.tensor([class_index]),
        return_images=True,
    )
    curves: dict[str, RoadCurve] = {}
    images = {}
    for order in ROAD_ORDERS:
        imputed = scores["images"][order][:, 0]
        images[order] = imputed
        curves[order] = {
            "accuracy": scores[order]["accuracy"],
            "mean": scores[order]["mean"],
            "probability": classify(imputed).softmax(1)[:, class_index].tolist(),
        }
    return PhotoROAD(class_index, clean_probability, list(fractions), curves, images)

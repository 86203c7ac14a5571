"""The app's pictures: tensors as photos, the photo at display size, the metric curves."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from PIL import Image

from ttame.images import Geometry
from ttame.methods.registry import label
from ttame.metrics.photo import PhotoADIC, PhotoROAD
from ttame.metrics.road.constants import ROAD_ORDERS

DISPLAY_SIDE = 1024
"""Longest side of the pictures sent back: big enough to see, small enough to send fast."""


def picture(image: torch.Tensor) -> Image.Image:
    """A raw ``3 x H x W`` tensor (imputation may overshoot [0, 1]) as an RGB picture."""
    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
    return Image.fromarray(array.cpu().numpy())


def probability_axes(clean_probability: float) -> tuple[Any, Any]:
    """A figure for a class probability under perturbation, with the clean photo's as a line."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.6), layout="constrained")
    axes = figure.add_subplot()
    axes.axhline(clean_probability, color="gray", linestyle="--", label="clean photo")
    return figure, axes


def road_figure(scores: PhotoROAD, class_name: str, method: str) -> Any:
    """The class probability as pixels go, MoRF and LeRF; hollow marks: prediction lost."""
    figure, axes = probability_axes(scores.clean_probability)
    percent = [100 * f for f in scores.fractions]
    for order, colour in zip(ROAD_ORDERS, ("tab:red", "tab:blue"), strict=True):
        curve = scores.curves[order]
        axes.plot(
            percent,
            curve["probability"],
            "-",
            color=colour,
            label=f"{order} (ROAD {curve['mean']:.2f})",
        )
        for x, y, kept in zip(percent, curve["probability"], curve["accuracy"], strict=True):
            axes.plot(x, y, "o", color=colour, markerfacecolor=colour if kept else "white")
    axes.set(
        xlabel="pixels removed and imputed (%)",
        ylabel=f"p({class_name})",
        ylim=(0, 1.02),
        title=f"ROAD: {label(method)} map",
    )
    axes.legend(loc="best", fontsize="small")
    return figure


def adic_figure(report: PhotoADIC, class_name: str, method: str) -> Any:
    """The class probability on the photo masked to its top 100, 50, 15 %, against the clean."""
    figure, axes = probability_axes(report.clean_probability)
    kept = [f"{p:g} %" for p in report.percents]
    bars = axes.bar(kept, report.probability, color="tab:orange", label="masked photo")
    axes.bar_label(bars, labels=[f"drop {d:.0f} %" for d in report.drop], fontsize="small")
    axes.set(
        xlabel="top of the map kept",
        ylabel=f"p({class_name})",
        ylim=(0, 1.1),
        title=f"Average Drop / Increase in Confidence: {label(method)} map",
    )
    axes.legend(loc="upper right", fontsize="small")
    return figure


def display_copy(image: Image.Image, geometry: Geometry) -> tuple[Image.Image, Geometry]:
    """The photo shrunk to :data:`DISPLAY_SIDE` at most, with the geometry scaled alike."""
    width, height = image.size
    scale = min(1.0, DISPLAY_SIDE / max(width, height))
    if scale == 1.0:
        return image, geometry
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    sx, sy = size[0] / width, size[1] / height
    left, top, right, bottom = geometry.crop_box
    small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return small, replace(
        geometry, original_size=size, crop_box=(left * sx, top * sy, right * sx, bottom * sy)
    )

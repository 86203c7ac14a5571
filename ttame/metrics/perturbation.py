"""Average Drop and Increase in Confidence at a list of kept percentages.

docs/method.md, "Evaluation", states the protocol.

The convention is the T-TAME / L-CAM papers': the map is min-max normalised to [0, 1] at the
input size, every value below the image's ``(100 - p)``-th percentile is set to 0 and the rest
keep their *soft* value, and the RAW image is multiplied by that (the backbone normalises
afterwards). Other code bases differ: pytorch-grad-cam's metrics, for one, keep a hard binary
mask of the top pixels, so their numbers are not comparable with these.

``Y_i`` is the softmax probability of the explained (predicted) class on the clean image and
``O_i`` on the masked one; ``AD = 100/N sum max(0, Y_i - O_i) / Y_i`` (lower is better),
``IC = 100/N sum [O_i > Y_i]`` (higher is better).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ttame.explanation import normalize_maps

DEFAULT_PERCENTS: tuple[int, ...] = (100, 50, 15)
"""Kept percentages the paper reports."""


def keep_top(
    maps: torch.Tensor, percent: float, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Soft masks ``B x H x W``: the maps in [0, 1], zero below their ``(100 - p)``-th percentile.

    The percentile interpolates linearly between pixels (numpy's default); ``p = 100`` keeps
    the whole soft map. ``size`` (default: the maps' own) is the input size to upsample to.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"A kept percentage must be in (0, 100]; got {percent}.")
    unit = normalize_maps(maps[:, None], size or (maps.shape[-2], maps.shape[-1]))[:, 0]
    threshold = torch.quantile(unit.flatten(1), 1 - percent / 100, dim=1)
    return unit * (unit >= threshold[:, None, None])


def masked_images(
    images: torch.Tensor, maps: torch.Tensor, percents: Sequence[float] = DEFAULT_PERCENTS
) -> torch.Tensor:
    """Raw images multiplied by their kept maps, ``P x B x 3 x H x W`` (one slice per %)."""
    size = (images.shape[-2], images.shape[-1])
    masks = torch.stack([keep_top(maps, p, size) for p in percents])
    return images[None] * masks[:, :, None].to(images.dtype)


@torch.no_grad()
def masked_confidence(
    classify: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    percents: Sequence[float] = DEFAULT_PERCENTS,
) -> torch.Tensor:
    """``O``: the probability of each image's class on its masked copies, ``B x P``.

    All percentages of a batch go through ``classify`` (raw images -> logits) in one call.
    """
    batch = masked_images(images, maps, percents).flatten(0, 1)
    probs = classify(batch).float().softmax(dim=1).view(len(percents), len(images), -1)
    index = classes.to(probs.device).view(1, -1, 1).expand(len(percents), -1, 1)
    return probs.gather(2, index)[..., 0].T


def drop_per_image(clean: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Each image's term of Average Drop, in %: ``100 max(0, Y - O) / Y`` (``B x P``)."""
    clean = clean[:, None]
    return 100 * (clean - masked).clamp_min(0) / clean.clamp_min(torch.finfo(clean.dtype).tiny)


def increase_per_image(clean: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Each image's term of Increase in Confidence, in %: ``100 [O > Y]`` (``B x P``)."""
    return 100 * (masked > clean[:, None]).float()


def average_drop(clean: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """AD per kept percentage (``P``), in %; lower is better."""
    return drop_per_image(clean, masked).mean(dim=0)


def increase_in_confidence(clean: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """IC per kept percentage (``P``), in %; higher is better."""
    return increase_per_image(clean, masked).mean(dim=0)

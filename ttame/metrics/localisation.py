"""Does the map point at the object? Pointing game and energy inside a box or mask.

Both are only meaningful beside their chance level, the share of the image the region covers:
a map that points at a random pixel hits a region covering 30 % of the image 30 % of the time,
and a flat map puts 30 % of its mass there. :func:`coverage` gives that level per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def box_mask(box: Sequence[int], size: tuple[int, int]) -> torch.Tensor:
    """``H x W`` bool mask of a box ``(x0, y0, x1, y1)`` with exclusive ends, clipped."""
    h, w = size
    x0, y0, x1, y1 = (int(v) for v in box)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)] = True
    return mask


def _check(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    if maps.shape != masks.shape or maps.dim() != 3:
        raise ValueError(
            f"maps and masks must both be B x H x W; got {tuple(maps.shape)} and "
            f"{tuple(masks.shape)}."
        )
    return masks.to(device=maps.device, dtype=torch.bool)


def pointing_game(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image, whether the map's maximum lies inside the region (``B`` values in [0, 1]).

    When several pixels share the maximum the score is the share of them inside the region,
    the expected hit of a random tie-break: a flat map scores the region's coverage, not a
    free hit.
    """
    masks = _check(maps, masks)
    flat = maps.flatten(1)
    peak = flat == flat.amax(dim=1, keepdim=True)
    return (peak & masks.flatten(1)).sum(1) / peak.sum(1)


def energy_in_mask(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image, the share of the map's mass inside the region (``B`` values in [0, 1]).

    Maps are non-negative (in [0, 1]); an all-zero map counts as flat, so it scores the
    region's coverage.
    """
    masks = _check(maps, masks)
    flat = maps.flatten(1).float().clamp_min(0)
    total = flat.sum(1)
    inside = (flat * masks.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-12), coverage(masks))


def coverage(masks: torch.Tensor) -> torch.Tensor:
    """Share of each image the region covers: the chance level of both scores (``B``)."""
    return masks.flatten(1).float().mean(1)

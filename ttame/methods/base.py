"""What the baselines share: a clean pass first, then maps for the classes asked for."""

from __future__ import annotations

import torch

from ttame.explanation import ClassesArg, Explanation, check_images, normalize_maps, target_classes
from ttame.model.taps import Backbone


def finish(
    maps: torch.Tensor,
    target: torch.Tensor,
    single: bool,
    logits: torch.Tensor,
    like: torch.Tensor,
) -> Explanation:
    """Pack ``B x M x h x w`` raw maps as an Explanation at the input's size and device."""
    maps = normalize_maps(maps.to(like.device), (like.shape[-2], like.shape[-1]))
    probabilities = logits.detach().float().softmax(dim=1).to(like.device)
    target = target.to(like.device)
    if single:
        return Explanation(maps[:, 0], target[:, 0], probabilities)
    return Explanation(maps, target, probabilities)


class CleanPass:
    """A map-maker that first classifies the clean images, then makes maps for the targets."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone

    def maps(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Raw maps ``B x M x h x w`` for the ``B x M`` target classes."""
        raise NotImplementedError

    @torch.no_grad()
    def explain(self, images: torch.Tensor, classes: ClassesArg = None) -> Explanation:
        """Maps for raw RGB images in [0, 1]; classes as for T-TAME (None: the top-1)."""
        images = check_images(images)
        logits = self.backbone(images)
        target, single = target_classes(classes, logits)
        return finish(self.maps(images, target), target, single, logits, images)

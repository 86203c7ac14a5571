"""Floors a real method must beat: a random map and a centred Gaussian.

A method that does not beat them explains nothing: the random map is noise, the centred
Gaussian the photographer's habit of putting the object in the middle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ttame.methods.base import CleanPass
from ttame.model.taps import Backbone


class RandomMap(CleanPass):
    """Uniform noise on a coarse grid, upsampled: the floor every method must beat.

    A coarse grid (7x7 by default, like the last stage of a 224-pixel CNN) gives blobs about as
    smooth as a CAM's; per-pixel noise would instead dim the whole image evenly when thresholded.
    The generator is seeded once, so a run repeats exactly.
    """

    def __init__(self, backbone: Backbone, seed: int = 0, cells: int = 7):
        super().__init__(backbone)
        self.cells = cells
        self.generator = torch.Generator().manual_seed(seed)

    def maps(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The same fresh noise for every class of an image."""
        noise = torch.rand(len(images), 1, self.cells, self.cells, generator=self.generator)
        noise = F.interpolate(noise, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return noise.expand(-1, target.shape[1], -1, -1)


class CentreGaussian(CleanPass):
    """A Gaussian centred on the image (std ``sigma`` x the side): the photographer's prior.

    Many photos put the object in the middle; a method that does no better than this map
    has learnt the dataset's framing, not the classifier.
    """

    def __init__(self, backbone: Backbone, sigma: float = 0.25):
        super().__init__(backbone)
        self.sigma = sigma

    def maps(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One map, the same for every image and class."""
        h, w = images.shape[-2:]
        ys = (torch.arange(h, device=images.device) + 0.5) / h - 0.5
        xs = (torch.arange(w, device=images.device) + 0.5) / w - 0.5
        bump = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * self.sigma**2))
        return bump.expand(len(images), target.shape[1], h, w)

"""RISE, batched: the class score averaged over randomly masked copies of the image."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from ttame.methods.base import CleanPass
from ttame.model.taps import Backbone


class RISE(CleanPass):
    """RISE (Petsiuk et al., BMVC 2018): the class score averaged over random masks.

    ``n_masks`` binary ``cells x cells`` grids (each cell kept with probability ``p``) are
    upsampled bilinearly to ``(cells + 1)`` cells' size, randomly shifted by up to a cell and
    cropped; the saliency is ``sum_i P(class | image * M_i) M_i / (n_masks * p)``. The masks
    multiply the raw image. They are drawn once from ``seed`` (the same set for every image, as
    in the reference) and the masked images go through the backbone ``batch_size`` at a time.
    """

    def __init__(
        self,
        backbone: Backbone,
        n_masks: int = 4000,
        cells: int = 7,
        p: float = 0.5,
        seed: int = 0,
        batch_size: int = 64,
    ):
        super().__init__(backbone)
        if n_masks < 1 or not 0 < p < 1:
            raise ValueError("RISE needs at least one mask and a keep probability in (0, 1).")
        self.n_masks, self.cells, self.p, self.batch_size = n_masks, cells, p, batch_size
        generator = torch.Generator().manual_seed(seed)
        self.grids = (torch.rand(n_masks, 1, cells, cells, generator=generator) < p).float()
        self.shifts = torch.rand(n_masks, 2, generator=generator)

    def masks(
        self, size: Sequence[int], chunk: int, device: torch.device
    ) -> Iterator[torch.Tensor]:
        """The mask set at ``size``, ``chunk`` masks at a time (``m x H x W``)."""
        h, w = size
        cell_h, cell_w = math.ceil(h / self.cells), math.ceil(w / self.cells)
        up = ((self.cells + 1) * cell_h, (self.cells + 1) * cell_w)
        for start in range(0, self.n_masks, chunk):
            grids = self.grids[start : start + chunk].to(device)
            big = F.interpolate(grids, size=up, mode="bilinear", align_corners=False)[:, 0]
            offsets = (self.shifts[start : start + chunk] * torch.tensor([cell_h, cell_w])).long()
            yield torch.stack(
                [m[y : y + h, x : x + w] for m, (y, x) in zip(big, offsets.tolist(), strict=True)]
            )

    def maps(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Score-weighted sum of the masks, ``n_masks`` backbone passes per image, batched."""
        batch = len(images)
        chunk = max(1, self.batch_size // batch)
        saliency = torch.zeros(batch, target.shape[1], *images.shape[-2:], device=images.device)
        for masks in self.masks(images.shape[-2:], chunk, images.device):
            masked = (images[:, None] * masks[None, :, None]).flatten(0, 1)
            probs = self.backbone(masked).float().softmax(dim=1).view(batch, len(masks), -1)
            scores = probs.gather(2, target[:, None, :].expand(-1, len(masks), -1))
            saliency += torch.einsum("bmk,mhw->bkhw", scores, masks)
        return saliency / (self.n_masks * self.p)

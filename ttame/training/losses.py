"""The T-TAME training loss (docs/method.md, "Training").

``loss = ce * CE(masked logits, label) + area * mean((a + eps) ** power) + tv * TV(a)``

The cross-entropy asks the mask of each image's label to keep what the backbone needs to still
say that label; the area term asks masks to be small and the smoothness term asks them to be
blob-like. Following the reference, the area and smoothness terms see every image's mask for
every label in the batch (a ``B x B`` set), so masks of classes an image does not show are
pushed towards zero as well.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ttame.explanation import normalize_maps

UNKNOWN = -1.0
"""Teacher value of a pixel the teacher did not see (outside its centre crop; composites)."""

AREA_EPS = 0.0005
"""Keeps the area term's gradient finite where a mask is exactly 0 (``x ** 0.3`` at 0)."""


def area_loss(masks: torch.Tensor, power: float = 0.3, eps: float = AREA_EPS) -> torch.Tensor:
    """``mean((masks + eps) ** power)``, the area term.

    A power below 1 favours a few large values over many small ones, so masks become sparse
    rather than uniformly dim.
    """
    return ((masks + eps) ** power).mean()


def smoothness_loss(masks: torch.Tensor, border: float = 0.3) -> torch.Tensor:
    """Total variation of ``B x M x h x w`` masks, with a penalty on the border values.

    ``(sum of squared vertical and horizontal differences + border * sum of the squared values
    on the four edges) / (2 * B)``, ``B = masks.shape[0]``, exactly as the reference (corner
    values count on two edges; the sum, not the mean, over the ``M`` masks of each image).
    """
    vertical = (masks[..., 1:, :] - masks[..., :-1, :]).pow(2).sum()
    horizontal = (masks[..., :, 1:] - masks[..., :, :-1]).pow(2).sum()
    edges = (
        masks[..., 0, :].pow(2).sum()
        + masks[..., -1, :].pow(2).sum()
        + masks[..., :, 0].pow(2).sum()
        + masks[..., :, -1].pow(2).sum()
    )
    return (vertical + horizontal + border * edges) / (2 * masks.shape[0])


def distill_loss(
    class_maps: torch.Tensor,
    teachers: torch.Tensor,
    teacher_classes: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    """How differently the head's maps rank the pixels than the teachers do (a KL divergence).

    ``class_maps``: the head's logits for each image's label (``B x h x w``); ``teachers``:
    ``B x H x W`` in [0, 1] or UNKNOWN. Only images whose teacher class is the step's label
    count, and only the cells the teacher saw. Both maps are min-max normalised (the
    explanation's scale) and compared as softmax distributions over the cells at
    ``temperature``, so the top of the map weighs most, as AD's kept share does.
    """
    h, w = class_maps.shape[-2:]
    known = (teachers != UNKNOWN).float()[:, None]
    seen = F.adaptive_avg_pool2d(known, (h, w))[:, 0]
    target = F.adaptive_avg_pool2d(teachers.clamp_min(0)[:, None] * known, (h, w))[:, 0]
    target = target / seen.clamp_min(1e-6)
    cells = seen > 0.99
    rows = (teacher_classes == labels) & cells.flatten(1).any(1)
    if not rows.any():
        return class_maps.new_zeros(()).float()
    maps = normalize_maps(class_maps[rows][:, None], (h, w))[:, 0]
    off = torch.where(cells[rows], 0.0, float("-inf"))
    student = torch.log_softmax((maps / temperature + off).flatten(1), 1)
    teacher = torch.softmax((target[rows] / temperature + off).flatten(1), 1)
    terms = torch.where(teacher > 0, teacher * (teacher.clamp_min(1e-12).log() - student), 0.0)
    return terms.sum(1).mean()


@dataclass
class LossTerms:
    """The total loss and its unweighted terms (for logging).

    ``kept``: the cross-entropy on the image kept by the top of the map (0 when not used);
    ``teacher``: how far the maps rank pixels from the teacher's (0 when not used).
    """

    total: torch.Tensor
    ce: torch.Tensor
    area: torch.Tensor
    tv: torch.Tensor
    kept: torch.Tensor
    teacher: torch.Tensor

    def stacked(self) -> torch.Tensor:
        """The four values as one detached float tensor (one reduction across processes)."""
        return torch.stack([getattr(self, f.name).detach().float() for f in fields(self)])

    @staticmethod
    def names() -> list[str]:
        """Names in the order of :meth:`stacked`."""
        return [f.name for f in fields(LossTerms)]


class TTameLoss(nn.Module):
    """Weighted sum of cross-entropy, area and smoothness; weights default to the paper's."""

    def __init__(
        self,
        ce_weight: float = 1.5,
        area_weight: float = 2.0,
        tv_weight: float = 0.01,
        area_power: float = 0.3,
        border: float = 0.3,
        kept_weight: float = 0.0,
        kept_softness: float = 0.0,
        teacher_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.area_weight = area_weight
        self.tv_weight = tv_weight
        self.area_power = area_power
        self.border = border
        self.kept_weight = kept_weight
        self.kept_softness = kept_softness  # the threshold's gradient width (kept_image)
        self.teacher_weight = teacher_weight  # weight of a distill_loss computed by the step

    def forward(
        self,
        masked_logits: torch.Tensor,
        labels: torch.Tensor,
        masks: torch.Tensor,
        kept_logits: torch.Tensor | None = None,
        teacher: torch.Tensor | None = None,
    ) -> LossTerms:
        """Loss of a batch.

        ``masked_logits``: the backbone's logits on the masked images (``B x K``); ``labels``:
        its top-1 on the clean images (``B``); ``masks``: ``sigmoid(c)`` at the head's
        resolution for every image and every batch label (``B x B x h x w``);
        ``kept_logits``: the logits on the images kept by the top of their maps, when
        ``kept_weight`` > 0 (see ``ttame.training.step.kept_image``); ``teacher``: the
        teacher term's value, when ``teacher_weight`` > 0 (``ttame.training.teacher``).
        """
        ce = F.cross_entropy(masked_logits.float(), labels)
        area = area_loss(masks.float(), self.area_power)
        tv = smoothness_loss(masks.float(), self.border)
        total = self.ce_weight * ce + self.area_weight * area + self.tv_weight * tv
        kept = ce.new_zeros(())
        if kept_logits is not None:
            kept = F.cross_entropy(kept_logits.float(), labels)
            total = total + self.kept_weight * kept
        taught = ce.new_zeros(())
        if teacher is not None:
            taught = teacher
            total = total + self.teacher_weight * teacher
        return LossTerms(total, ce, area, tv, kept, taught)

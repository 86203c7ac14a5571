"""One training step: the backbone labels and taps, the head masks, the masked image is scored.

Each step: one backbone pass without gradients gives the labels (its own top-1) and the tapped
maps; the head computes masks for the batch's labels only; each image is multiplied by the mask
of its label and passed through the backbone again, and the loss goes back through that pass
into the head (docs/method.md, "Training").
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ttame.distributed import Runtime, reduce_sum
from ttame.errors import TrainingError
from ttame.model.head import AttentionHead
from ttame.model.taps import Backbone
from ttame.training.losses import LossTerms, TTameLoss, distill_loss

TERMS = ["loss", "ce", "area", "tv", "kept", "teacher"]
"""Column names of :meth:`LossTerms.stacked` (``loss`` is the total)."""


def masked_forward(backbone: Backbone, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Logits of the masked images: CNNs mask the raw image, ViTs the normalised one."""
    if backbone.spec.kind == "vit":
        return backbone.forward_normalized(backbone.normalize(images) * masks)
    return backbone(images * masks)


def compute_loss(
    backbone: Backbone,
    head: nn.Module,
    loss_fn: TTameLoss,
    images: torch.Tensor,
    amp: bool = False,
    shares: Sequence[float] = (0.15,),
    teachers: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[LossTerms, torch.Tensor]:
    """The loss of one batch of raw [0, 1] images, and the labels (the backbone's top-1).

    ``teachers``: the batch's teacher maps and classes (``ttame.training.teacher``), when the
    loss has a teacher term.

    The head's fusion runs for the batch's unique labels only (``U <= B`` of the K classes);
    the area and smoothness terms then see the ``B x B`` set of every image's mask for every
    image's label, as the reference does, by indexing those ``U`` maps.
    """
    autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp)
    with torch.no_grad(), autocast:
        logits, maps = backbone.forward_features(images)
    labels = logits.argmax(dim=1)
    unique, inverse = torch.unique(labels, return_inverse=True)
    with autocast:
        class_maps = head(maps, unique)
    masks = torch.sigmoid(class_maps.float())  # B x U x h x w
    own_maps = class_maps[torch.arange(len(labels), device=labels.device), inverse]
    own = masks[torch.arange(len(labels), device=labels.device), inverse]
    upsampled = F.interpolate(
        own[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
    )
    with autocast:
        masked_logits = masked_forward(backbone, images, upsampled)
    kept_logits = None
    if loss_fn.kept_weight > 0:
        kept = kept_image(
            own_maps,
            images.shape[-2:],
            shares,
            loss_fn.kept_softness,
        )
        with autocast:
            kept_logits = masked_forward(backbone, images, kept[:, None])
    taught = None
    if teachers is not None and loss_fn.teacher_weight > 0:
        taught = distill_loss(
            own_maps,
            teachers[0],
            teachers[1],
            labels,
        )
    return loss_fn(masked_logits, labels, masks[:, inverse], kept_logits, taught), labels


def kept_image(
    class_maps: torch.Tensor,
    size: torch.Size,
    shares: Sequence[float],
    softness: float = 0.0,
) -> torch.Tensor:
    """What the AD/IC protocol keeps of each image: ``B x H x W`` weights.

    Each map (``B x h x w`` logits) is min-max normalised, upsampled to ``size`` and zeroed
    below its ``1 - share`` quantile, exactly as the explanation is scored; image ``i`` uses
    ``shares[i % len(shares)]``. Training on it asks the top of the map, not only the soft
    mask, to hold what the backbone needs.

    With ``softness`` 0 only the kept values get a gradient, so the loss cannot say that a
    pixel just below the threshold should have been kept. With ``softness`` > 0 the 0/1 gate
    passes the gradient of ``sigmoid((map - threshold) / softness)``, the threshold moving
    with the map as a quantile does (straight through: the values, hence the loss, stay
    exactly the protocol's), so pixels near the threshold learn to swap in and out of the
    kept share.
    """
    low = class_maps.float().amin(dim=(-2, -1), keepdim=True)
    high = class_maps.float().amax(dim=(-2, -1), keepdim=True)
    maps = (class_maps.float() - low) / (high - low).clamp_min(1e-6)
    maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[
        :, 0
    ]
    flat = maps.detach().flatten(1)
    which = torch.arange(len(maps), device=maps.device) % len(shares)
    threshold = torch.empty(len(maps), device=maps.device)
    for k, share in enumerate(shares):
        rows = which == k
        threshold[rows] = torch.quantile(flat[rows], 1 - share, dim=1)
    threshold = threshold[:, None, None]
    gate = (maps >= threshold).to(maps.dtype)
    if softness > 0:
        # The threshold is the map's quantile: raising one pixel into the kept share pushes
        # another out. Its implicit gradient (the soft gate's mean fixed at the share) is the
        # maps' mean weighted by the gate's slope, so the pushes sum to zero: pixels trade
        # places instead of all rising together and spreading the map.
        near = torch.sigmoid((maps - threshold) / softness).detach()
        slope = near * (1 - near)  # the soft gate's slope, up to the factor 1 / softness
        weighted = (slope * maps).sum((-2, -1), keepdim=True) / slope.sum(
            (-2, -1), keepdim=True
        ).clamp_min(1e-12)
        moving = threshold + weighted - weighted.detach()
        soft = torch.sigmoid((maps - moving) / softness)
        gate = gate + soft - soft.detach()
    return maps * gate


class SharedFusion(nn.Module):
    """The head plus a fusion row shared by every class, for training on small data.

    A class's own fusion row learns only from the images the backbone predicts as that class,
    a handful each in a small pool, so the rows of the earlier taps (which start at zero) hardly
    move. The shared row learns from every image: which channels of each tap mark the object
    the backbone looks at, whatever its class. It is added to every class's row, so
    :meth:`folded` gives a plain :class:`AttentionHead` with exactly the same maps: the head's
    architecture, file format and inference cost do not change.

    With ``transfer``, the earlier taps' rows also get a class-specific part learnt by every
    image: a matrix shared by all classes maps a class's last-tap row (its CAM weights) to
    rows for the earlier taps, so the finer taps can say where *this* class's evidence lies,
    while nothing is learnt per class. It is folded in the same way.
    """

    def __init__(self, head: AttentionHead, transfer: bool = False) -> None:
        super().__init__()
        self.head = head
        self.shared = nn.Parameter(torch.zeros(sum(head.in_channels)))
        last = head.in_channels[-1]
        self.transfer = (
            nn.Parameter(torch.zeros(sum(head.in_channels) - last, last)) if transfer else None
        )

    def rows(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        """The fusion rows the folded head has for ``classes`` (1-D; None: all), M x sum(C)."""
        own = self.head.fuser.weight.flatten(1)
        own = own if classes is None else own[classes]
        rows = own + self.shared
        if self.transfer is not None:
            last = self.head.in_channels[-1]
            rows = rows + F.pad(own[:, -last:] @ self.transfer.T, (0, last))
        return rows

    def forward(self, maps: list[torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """Class maps of ``classes`` (1-D), as the folded head would give them."""
        return self.head.fuse(maps, self.rows(classes), self.head.fuser_bias[classes])

    @torch.no_grad()
    def folded(self) -> AttentionHead:
        """A copy of the head with the shared parts folded into every class's fusion row."""
        head = copy.deepcopy(self.head)
        head.fuser.weight.copy_(self.rows().to(head.fuser.weight.dtype)[:, :, None, None])
        return head

    def extra_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps beside the head: the shared row (and the transfer)."""
        state = {"shared": self.shared.detach().cpu()}
        if self.transfer is not None:
            state["transfer"] = self.transfer.detach().cpu()
        return state

    @torch.no_grad()
    def load_extra_state(self, saved: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` gave (from a checkpoint's dict)."""
        self.shared.copy_(saved["shared"])
        if self.transfer is not None:
            self.transfer.copy_(saved["transfer"])


@torch.no_grad()
def init_from_cam(head: AttentionHead, backbone: Backbone, images: torch.Tensor) -> float:
    """Initialise the fusion from the backbone's classifier (see ``init_from_classifier``).

    The CAM's scale is set from ``images`` (a batch of training images): the maps of their
    labels are standardised to mean 0 and standard deviation 1, so the masks start in the
    sigmoid's sensitive range instead of saturated at 0 or 1. Returns the scale.
    """
    name = backbone.spec.cam_classifier
    classifier = dict(backbone.model.named_modules()).get(name or "")
    if not isinstance(classifier, nn.Linear):
        raise TrainingError(
            f"Backbone '{backbone.spec.name}' has no linear classifier over its last tap to "
            "start from; use --init random."
        )
    weight, bias = classifier.weight.float(), classifier.bias.float()
    head.init_from_classifier(weight, bias)
    logits, maps = backbone.forward_features(images)
    was_training = head.training
    head.eval()
    cams = head(maps, logits.argmax(dim=1)[:, None]).float()
    head.train(was_training)
    std = float(cams.std().clamp_min(1e-6))
    scale = 1.0 / std
    head.init_from_classifier(weight, bias, scale, -float(cams.mean()) * scale)
    return scale


def parameter_groups(head: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on convolution weights only (not biases or BatchNorm); frozen ones left out."""
    trained = [p for p in head.parameters() if p.requires_grad]
    decay = [p for p in trained if p.ndim > 1]
    no_decay = [p for p in trained if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@torch.no_grad()
def validate(
    backbone: Backbone,
    head: nn.Module,
    loss_fn: TTameLoss,
    loader: DataLoader,
    runtime: Runtime,
    amp: bool,
    memory_format: torch.memory_format,
    shares: Sequence[float] = (0.15,),
) -> torch.Tensor:
    """Mean loss terms (:data:`TERMS`) over the validation set, head in eval mode."""
    head.eval()
    n = len(TERMS)
    sums = torch.zeros(n + 1, dtype=torch.float64, device=runtime.device)
    for images in loader:
        images = images.to(runtime.device, non_blocking=True, memory_format=memory_format)
        terms, _ = compute_loss(backbone, head, loss_fn, images, amp, shares)
        sums[:n] += terms.stacked().double() * len(images)
        sums[n] += len(images)
    head.train()
    sums = reduce_sum(sums, runtime)
    return sums[:n] / sums[n].clamp_min(1)

"""The T-TAME attention head (docs/method.md, "The head").

One branch per tapped map (1x1 conv, BatchNorm, skip, ReLU), bilinearly resized to the largest
map's size (capped at 56x56), concatenated and fused by a 1x1 conv into one map per class.
The fusion and the resizing are linear, so the maps of a few classes are computed from only
those classes' weights, before the resizing: explaining one class costs ``sum C`` multiply-adds
per pixel of each tapped map and resizes one map per tap, not ``sum C`` channels.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ttame.errors import HeadError

TokenMaps = Literal["patches", "patches_times_class"]
"""How a head's token taps become maps: the patch tokens alone (the class token dropped), or
each patch token multiplied by the class token of the same layer (the reference ViT adapter of
attention version ``TTAME``). A property of the trained head, so it is part of its config."""
TOKEN_MAPS: tuple[TokenMaps, ...] = ("patches", "patches_times_class")
DEFAULT_TOKENS: TokenMaps = "patches"
DEFAULT_MAX_SIZE = 56
"""Cap on the fused map's side: the tapped maps are resized to the largest one, up to this."""


class FeatureBranch(nn.Module):
    """``relu(x + bn(conv1x1(x)))``: a residual re-weighting of one tapped map."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, bias=True)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The re-weighted map, same shape as ``x``."""
        return F.relu(x + self.bn(self.conv(x)))


class AttentionHead(nn.Module):
    """Feature branches + fusion; saved as ``config.json`` + ``model.safetensors``.

    :attr:`config` records the backbone and tapped layers it was trained on (and, for a
    transformer, how its tokens became maps: :data:`TokenMaps`), so a head file alone rebuilds
    the whole explainer (:mod:`ttame.hub.heads` reads and writes head folders).
    """

    def __init__(
        self,
        backbone: str,
        layers: list[str],
        in_channels: list[int],
        num_classes: int = 1000,
        max_size: int = DEFAULT_MAX_SIZE,
        tokens: TokenMaps = DEFAULT_TOKENS,
    ):
        super().__init__()
        if len(layers) != len(in_channels) or not layers:
            raise HeadError("A head needs one input channel count per tapped layer.")
        if tokens not in TOKEN_MAPS:
            raise HeadError(f"Unknown tokens '{tokens}': a head takes one of {list(TOKEN_MAPS)}.")
        self.backbone = backbone
        self.layers = list(layers)
        self.in_channels = list(in_channels)
        self.num_classes = num_classes
        self.max_size = max_size
        self.tokens: TokenMaps = tokens
        self.branches = nn.ModuleList(FeatureBranch(c) for c in in_channels)
        self.fuser = nn.Conv2d(sum(in_channels), num_classes, kernel_size=1, bias=True)

    @property
    def fuser_bias(self) -> torch.Tensor:
        """The fusion layer's bias (``K``): one per class, always there."""
        bias = self.fuser.bias
        assert bias is not None
        return bias

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments: ``AttentionHead(**head.config)`` rebuilds the head.

        ``tokens`` is left out while it is the default, so a head that needs no class token
        writes the same ``config.json`` as before the field existed (and older readers load it).
        """
        config: dict[str, Any] = {
            "backbone": self.backbone,
            "layers": list(self.layers),
            "in_channels": list(self.in_channels),
            "num_classes": self.num_classes,
            "max_size": self.max_size,
        }
        if self.tokens != DEFAULT_TOKENS:
            config["tokens"] = self.tokens
        return config

    def fused_size(self, maps: list[torch.Tensor]) -> tuple[int, int]:
        """Spatial size of the largest tapped map, each side capped at ``max_size``."""
        h, w = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        return min(int(h), self.max_size), min(int(w), self.max_size)

    @torch.no_grad()
    def init_from_classifier(
        self, weight: torch.Tensor, bias: torch.Tensor, scale: float = 1.0, shift: float = 0.0
    ) -> None:
        """Start every class map as a class activation map (CAM) of the last tapped layer.

        ``weight`` (K x C_last) and ``bias`` (K) are the backbone's linear classifier over the
        global average of the last tap. The last branch starts as the identity (its BatchNorm
        scale is zeroed, so ``relu(x + 0)``), the fusion weighs only that branch, with the
        classifier's weights: ``c_k = scale * (W_k . f + b_k) + shift``. Classes the training
        data never shows then still get a CAM-like map instead of random noise.
        """
        if weight.shape != (self.num_classes, self.in_channels[-1]):
            raise HeadError(
                f"A classifier of shape {tuple(weight.shape)} does not fit the last tap "
                f"({self.in_channels[-1]} channels) and {self.num_classes} classes."
            )
        last = self.branches[-1]
        assert isinstance(last, FeatureBranch)
        last.bn.weight.zero_()
        last.bn.bias.zero_()
        self.fuser.weight.zero_()
        self.fuser.weight[:, -self.in_channels[-1] :, 0, 0] = scale * weight
        self.fuser_bias.copy_(scale * bias + shift)

    def forward(
        self, maps: list[torch.Tensor], classes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class maps ``c`` (logits of the attention mask; ``sigmoid(c)`` is the mask).

        ``classes``: None for all K (``B x K x h x w``); a 1-D tensor of M classes shared by
        every image (``B x M x h x w``); or a ``B x M`` tensor of per-image classes.

        Equal to resizing every branch output, concatenating and fusing, but computed in the
        cheaper order: each branch output is projected onto the requested classes' fusion
        weights at its own size, and only those M maps are resized (resizing acts on each
        channel alike, so it commutes with the 1x1 fusion) and summed.
        """
        weight = self.fuser.weight.flatten(1)  # K x sum(C)
        bias = self.fuser_bias
        if classes is not None:
            weight, bias = weight[classes], bias[classes]  # (B x) M x sum(C), (B x) M
        return self.fuse(maps, weight, bias)

    def fuse(
        self, maps: list[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """Class maps from explicit fusion rows: ``weight`` (B x) M x sum(C), ``bias`` (B x) M.

        :meth:`forward` passes rows of the fusion layer; training passes them plus a part
        shared by every class (``ttame.training.step.SharedFusion``), which is later folded in.
        """
        got = [int(m.shape[1]) for m in maps]
        if got != self.in_channels:
            raise HeadError(
                f"This head expects tapped maps with channels {self.in_channels} "
                f"(layers {self.layers} of '{self.backbone}') but got {got}: the head does not "
                "fit this backbone."
            )
        size = self.fused_size(maps)
        out: torch.Tensor | None = None
        for branch, x, part in zip(
            self.branches, maps, weight.split(self.in_channels, dim=-1), strict=True
        ):
            y = branch(x)
            if part.dim() == 2:
                y = F.conv2d(y, part[:, :, None, None])
            else:
                y = torch.einsum("bmc,bchw->bmhw", part.to(y.dtype), y)
            if tuple(y.shape[-2:]) != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        assert out is not None  # a head has at least one branch
        bias = bias[None] if bias.dim() == 1 else bias
        return out + bias.to(out.dtype)[..., None, None]

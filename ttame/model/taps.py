"""Feature taps: one backbone pass gives the logits and the outputs of the tapped layers.

Forward hooks record the named modules' outputs (they work on any torchvision/timm/plain
PyTorch model and under ``torch.compile``). Token models' outputs go through the feature-map
adapter (:func:`tokens_to_grid`, as the head's ``tokens`` says), so the head always sees
``B x C x h x w`` maps. :func:`probe_spec` is the one shape
probe: a dry pass on PyTorch's ``meta`` device says what the taps give without any weights;
:func:`probe` does the same dry pass on a built backbone.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttame.errors import BackboneError, TTameError
from ttame.model.backbones import BackboneSpec, build_classifier
from ttame.model.head import DEFAULT_TOKENS, TokenMaps


def infer_grid(num_tokens: int, image_hw: tuple[int, int]) -> tuple[int, int]:
    """The ``h x w`` patch grid with ``h * w == num_tokens`` closest to the image's aspect ratio.

    Derived from the token count so non-square grids and non-224 inputs work; nothing assumes
    14x14.
    """
    target = image_hw[0] / image_hw[1]
    best: tuple[float, tuple[int, int]] | None = None
    for h in range(1, math.isqrt(num_tokens) + 1):
        if num_tokens % h:
            continue
        for grid in ((h, num_tokens // h), (num_tokens // h, h)):
            error = abs(math.log(grid[0] / grid[1]) - math.log(target))
            if best is None or error < best[0]:
                best = (error, grid)
    assert best is not None  # num_tokens >= 1 always has the grid (1, num_tokens)
    return best[1]


def tokens_to_grid(
    tokens: torch.Tensor,
    num_prefix_tokens: int,
    image_hw: tuple[int, int],
    mode: TokenMaps = DEFAULT_TOKENS,
) -> torch.Tensor:
    """Feature-map adapter: ``B x (P + N) x D`` tokens to a ``B x D x h x w`` map.

    Drops the ``P`` class/register/distillation tokens, then lays the ``N`` patch tokens on the
    grid whose shape matches the image's aspect ratio. ``mode="patches_times_class"`` first
    multiplies every patch token, channel by channel, by the class token (the first token) of
    the same sequence, as the reference ViT adapter of attention version ``TTAME`` does
    (``PreprocessSeq.new_forward`` in src/tame/attention/factory.py of IDT-ITI/T-TAME).
    """
    patches = tokens[:, num_prefix_tokens:]
    if patches.shape[1] < 1:
        raise BackboneError(
            f"A tapped token sequence of length {tokens.shape[1]} has no patch tokens after "
            f"dropping {num_prefix_tokens} prefix tokens."
        )
    if mode == "patches_times_class":
        if num_prefix_tokens < 1:
            raise BackboneError(
                "Multiplying the patch tokens by the class token needs a class token; this "
                "backbone has no prefix tokens."
            )
        patches = patches * tokens[:, :1]
    h, w = infer_grid(patches.shape[1], image_hw)
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class Backbone(nn.Module):
    """A frozen classifier that takes raw RGB in [0, 1] and can also return its tapped maps.

    Taking raw images everywhere lets metrics and training mask pixels in the raw space and
    leaves normalisation to one place. ``tokens`` is how token taps become maps: the head's own
    ``tokens``, so that a head sees the maps it was trained on.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        spec: BackboneSpec,
        layers: tuple[str, ...] | None = None,
        tokens: TokenMaps = DEFAULT_TOKENS,
    ):
        super().__init__()
        self.model = model
        self.spec = spec
        self.layers = tuple(layers or spec.taps)
        self.tokens: TokenMaps = tokens
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)
        modules = dict(model.named_modules())
        for name in self.layers:
            if name not in modules:
                close = difflib.get_close_matches(name, list(modules), n=3)
                raise BackboneError(
                    f"Backbone '{spec.name}' has no layer '{name}'."
                    + (f" Close names: {', '.join(close)}." if close else "")
                )
        self._captured: dict[str, torch.Tensor] | None = None
        for name in self.layers:
            modules[name].register_forward_hook(self._recorder(name))

    def _recorder(self, name: str) -> Callable[[nn.Module, object, Any], None]:
        def hook(_module: nn.Module, _inputs: object, output: Any) -> None:
            if self._captured is not None:
                self._captured[name] = output[0] if isinstance(output, tuple) else output

        return hook

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Raw [0, 1] RGB to the backbone's input space."""
        return (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for raw [0, 1] images ``B x 3 x H x W``."""
        return self.model(self.normalize(images))

    def forward_normalized(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits for inputs already in the backbone's normalised space."""
        return self.model(inputs)

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One pass: logits and the tapped maps (``B x C x h x w`` each), shallow to deep."""
        self._captured = {}
        try:
            logits = self.model(self.normalize(images))
            captured = self._captured
        finally:
            self._captured = None
        hw = (images.shape[-2], images.shape[-1])
        maps = []
        for name in self.layers:
            if name not in captured:
                raise BackboneError(f"Layer '{name}' was not run by the backbone's forward pass.")
            out = captured[name]
            if out.dim() == 3:
                out = tokens_to_grid(out, self.spec.num_prefix_tokens, hw, self.tokens)
            maps.append(out)
        return logits, maps


def build_backbone(
    spec: BackboneSpec,
    weights: str | Path | None = None,
    pretrained: bool = True,
    layers: tuple[str, ...] | None = None,
    tokens: TokenMaps = DEFAULT_TOKENS,
) -> Backbone:
    """The spec's frozen classifier wrapped with normalisation and taps."""
    return Backbone(build_classifier(spec, weights, pretrained), spec, layers, tokens)


@dataclass(frozen=True)
class TapShapes:
    """What one pass through a backbone gives at its taps."""

    layers: tuple[str, ...]
    channels: list[int]
    """Channels of each tapped map (the token width of a token layer), shallow to deep."""
    calls: list[int]
    """How often each tapped module runs in one pass (its last call is the one tapped)."""
    tokens: list[bool]
    """Whether each tapped module gives a token sequence (``B x N x D``) rather than a map."""
    num_classes: int


def probe(backbone: Backbone) -> TapShapes:
    """One dry pass of a zero image of the backbone's input size, on its own device."""
    modules = dict(backbone.model.named_modules())
    calls = dict.fromkeys(backbone.layers, 0)
    dims: dict[str, int] = {}

    def counter(name: str) -> Callable[[nn.Module, object, Any], None]:
        def hook(_module: nn.Module, _inputs: object, output: Any) -> None:
            calls[name] += 1
            dims[name] = (output[0] if isinstance(output, tuple) else output).dim()

        return hook

    handles = [modules[name].register_forward_hook(counter(name)) for name in backbone.layers]
    size = backbone.spec.input_size
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.no_grad():
            logits, maps = backbone.forward_features(torch.zeros(1, 3, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return TapShapes(
        layers=backbone.layers,
        channels=[int(m.shape[1]) for m in maps],
        calls=[calls[name] for name in backbone.layers],
        tokens=[dims.get(name) == 3 for name in backbone.layers],
        num_classes=int(logits.shape[1]),
    )


def probe_spec(spec: BackboneSpec, layers: tuple[str, ...] | list[str] | None = None) -> TapShapes:
    """What ``spec``'s taps (or ``layers``) give, without building real weights.

    The network is built on PyTorch's ``meta`` device, which records shapes and allocates
    nothing, so even VGG-16 answers in milliseconds. Should a model not run on ``meta``, it is
    built on the CPU with random weights instead.
    """
    chosen = tuple(layers) if layers else None
    try:
        with torch.device("meta"):
            return probe(Backbone(spec.build(), spec, chosen))
    except TTameError:
        raise
    except Exception:  # noqa: BLE001 - fall back to a real dry run
        return probe(Backbone(spec.build().eval(), spec, chosen))

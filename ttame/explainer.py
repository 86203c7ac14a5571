"""The explainer: a frozen backbone, its taps and a T-TAME head, answering ``explain``.

``explain(images, classes)`` costs one backbone pass plus the head, with the fusion computed
only for the classes asked for; ``explain_image(photo, target)`` does the same for one photo
and puts the map back on the photo's own pixels. Heads load from a local folder, the bundled
``checkpoints/`` or a Hugging Face Hub repo (safetensors only: nothing pickled is ever loaded).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from ttame.errors import BackboneError, ClassIndexError, HeadError, UntrainedHeadWarning
from ttame.explanation import (
    ClassesArg,
    Explanation,
    ImageExplanation,
    check_images,
    normalize_maps,
    target_classes,
)
from ttame.hub.heads import push_head, save_head
from ttame.hub.load import OpenedHead, Provenance, default_head, open_head
from ttame.images import Geometry, ImageSource, load_image, preprocess
from ttame.model.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec
from ttame.model.head import DEFAULT_MAX_SIZE, DEFAULT_TOKENS, AttentionHead
from ttame.model.registry import DEFAULT_BACKBONE, REGISTRY, get_spec
from ttame.model.taps import Backbone, TapShapes, build_backbone, probe, probe_spec
from ttame.model.timm import TIMM_PREFIX

__all__ = ["Explainer", "UntrainedHeadWarning", "check_fit", "fresh_head", "load_explainer"]


def is_backbone_name(text: str) -> bool:
    """Whether ``text`` names a backbone (registered, or ``timm/<model>``) rather than a head."""
    return text in REGISTRY or text.startswith(TIMM_PREFIX)


class Explainer(nn.Module):
    """Frozen backbone + taps + attention head."""

    def __init__(
        self,
        backbone: Backbone,
        head: AttentionHead,
        trained: bool = True,
        provenance: Provenance | None = None,
    ):
        super().__init__()
        if backbone.tokens != head.tokens:
            raise HeadError(
                f"The head lays tokens as '{head.tokens}' but the backbone as "
                f"'{backbone.tokens}': build the backbone with the head's tokens."
            )
        self.backbone = backbone
        self.head = head
        self.trained = trained
        self.provenance = provenance
        """Where the head came from and its licence (None: a head built here)."""

    @property
    def spec(self) -> BackboneSpec:
        """The backbone's spec: its name, input sizes, normalisation and classes."""
        return self.backbone.spec

    @property
    def device(self) -> torch.device:
        """Where the explainer's weights are."""
        param = next(self.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @cached_property
    def categories(self) -> list[str]:
        """The class names, by index (``class i`` where the backbone names none)."""
        names = self.spec.categories()
        if len(names) != self.head.num_classes:
            return [f"class {i}" for i in range(self.head.num_classes)]
        return names

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path | None = None,
        backbone: str | None = None,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        pretrained_backbone: bool = True,
        *,
        head: str | Path | None = None,
        cache_limit: int | str | None = None,
    ) -> Explainer:
        """An explainer from a backbone name or a head (any source :func:`open_head` takes).

        ``source`` is a backbone name (``"resnet50"``, ``"timm/resnet18"``: its best known
        head, :mod:`ttame.hub.known`), or a head: a folder, ``OWNER/NAME``, ``hf://...`` or a
        reference ``.ckpt``. ``head=`` and ``backbone=`` say which explicitly. Without a head,
        the known head of the backbone is used (bundled, or downloaded once from the Hub); if
        there is none, a fresh untrained head is built and every ``explain`` warns loudly.
        ``weights`` is a local file of backbone weights; without it, a checkpoint that holds
        the backbone's weights provides them, else the model library downloads them.
        ``cache_limit`` bounds the disk the downloads take (default ``TTAME_CACHE_LIMIT``).
        """
        if source is not None and head is not None:
            raise HeadError("Give the head once: as the first argument or as head=.")
        if source is not None and isinstance(source, str) and is_backbone_name(source):
            if backbone is not None and backbone != source:
                raise BackboneError(f"Two backbones named: '{source}' and '{backbone}'.")
            backbone, source = source, None
        head = head if head is not None else source
        opened: OpenedHead | None
        if head is not None:
            opened = open_head(head, backbone=backbone, cache_limit=cache_limit)
        else:
            opened = default_head(backbone or DEFAULT_BACKBONE, cache_limit=cache_limit)
        loaded = opened.head if opened is not None else None
        name = backbone or (loaded.backbone if loaded is not None else DEFAULT_BACKBONE)
        if opened is not None and opened.head.backbone != name:
            raise HeadError(
                f"The head at '{opened.provenance.source}' was trained for backbone "
                f"'{opened.head.backbone}', not '{name}'."
            )
        spec = get_spec(name)
        layers = tuple(loaded.layers) if loaded is not None else None
        if loaded is not None:
            check_fit(loaded, spec)
        if weights is None and opened is not None:
            weights = opened.backbone_weights
        tokens = loaded.tokens if loaded is not None else DEFAULT_TOKENS
        body = build_backbone(spec, weights, pretrained_backbone, layers, tokens)
        if opened is None:
            return cls(body, fresh_head(body), trained=False).to(device).eval()
        return cls(body, opened.head, provenance=opened.provenance).to(device).eval()

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
        layers: Sequence[str],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        input_size: int = 224,
        resize_size: int = 256,
        categories: Sequence[str] | None = None,
        num_prefix_tokens: int = 0,
        name: str = "custom",
        head: str | Path | AttentionHead | None = None,
    ) -> Explainer:
        """An explainer on a user's own classifier, tapping the named ``layers``.

        ``model`` maps normalised images to logits; ``mean`` and ``std`` are its input
        normalisation, ``input_size``/``resize_size`` its centre crop. Token layers
        (``B x N x D``) are laid on their patch grid after dropping ``num_prefix_tokens``.
        Without ``head`` the head is fresh and untrained (train one with ``ttame train`` after
        :func:`ttame.register_backbone`, or pass a trained one).
        """
        frozen = model.eval().requires_grad_(False)
        spec = BackboneSpec(
            name=name,
            build=lambda: copy.deepcopy(frozen),
            taps=tuple(layers),
            kind="cnn",
            categories=lambda: list(categories) if categories is not None else [],
            input_size=input_size,
            resize_size=resize_size,
            mean=_triple(mean),
            std=_triple(std),
            num_prefix_tokens=num_prefix_tokens,
            description="a user's own model",
        )
        body = Backbone(frozen, spec)
        if any(probe(body).tokens):
            body.spec = spec = dataclasses.replace(spec, kind="vit")
        if head is None:
            return cls(body, fresh_head(body), trained=False).eval()
        provenance = None
        if isinstance(head, AttentionHead):
            loaded = head
        else:
            opened = open_head(head, backbone=name)
            loaded, provenance = opened.head, opened.provenance
        if list(layers) != loaded.layers:
            raise HeadError(f"The head taps {loaded.layers}, not {list(layers)}.")
        shapes = probe(Backbone(frozen, spec, tuple(loaded.layers)))
        if shapes.channels != loaded.in_channels or shapes.num_classes != loaded.num_classes:
            raise HeadError(
                f"The head expects channels {loaded.in_channels} and {loaded.num_classes} "
                f"classes; the model gives {shapes.channels} and {shapes.num_classes}: the head "
                "does not fit this backbone."
            )
        check_tokens(loaded, shapes, spec)
        body = Backbone(frozen, spec, tuple(loaded.layers), loaded.tokens)
        return cls(body, loaded.eval(), provenance=provenance).eval()

    def class_index(self, name_or_index: str | int) -> int:
        """A class index from an index, a digit string or a class name (case-insensitive)."""
        text = str(name_or_index).strip()
        if text.lstrip("-").isdigit():
            index = int(text)
            if not 0 <= index < len(self.categories):
                raise ClassIndexError(
                    f"Class index {index} is out of range 0..{len(self.categories) - 1}."
                )
            return index
        lowered = [c.lower() for c in self.categories]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        partial = [i for i, c in enumerate(lowered) if text.lower() in c]
        if len(partial) == 1:
            return partial[0]
        close = difflib.get_close_matches(text.lower(), lowered, n=3)
        options = [self.categories[lowered.index(c)] for c in close] or [
            self.categories[i] for i in partial[:5]
        ]
        hint = f" Did you mean: {', '.join(options)}?" if options else ""
        raise ClassIndexError(f"Unknown class name '{text}'.{hint}")

    def _indices(self, classes: ClassesArg) -> ClassesArg:
        """``classes`` with every class name replaced by its index."""
        if isinstance(classes, str):
            return self.class_index(classes)
        if isinstance(classes, Sequence) and any(
            isinstance(c, str) or (isinstance(c, Sequence) and not isinstance(c, str))
            for c in classes
        ):
            converted: list[Any] = [self._indices(c) for c in classes]
            return converted
        return classes

    @torch.no_grad()
    def explain(
        self, images: torch.Tensor, classes: ClassesArg = None, top: int | None = None
    ) -> Explanation:
        """Maps for raw RGB images ``B x 3 x H x W`` in [0, 1]: one backbone pass plus the head.

        ``classes``: None (each image's top-1), one index or name for all, one per image, or
        ``B x M``. ``top=k`` instead explains each image's k most probable classes
        (``B x k`` maps, best first) from the same single pass.
        """
        if top is not None and classes is not None:
            raise ClassIndexError("Give classes or top, not both.")
        if not self.trained:
            warnings.warn(
                "UNTRAINED T-TAME HEAD: these maps are not explanations. Train one with "
                "`ttame train` or load a trained head.",
                UntrainedHeadWarning,
                stacklevel=2,
            )
        images = check_images(images)
        logits, maps = self.backbone.forward_features(images)
        if logits.shape[1] != self.head.num_classes:
            raise HeadError(
                f"This head has {self.head.num_classes} classes but backbone '{self.spec.name}' "
                f"has {logits.shape[1]}: the head does not fit this backbone."
            )
        if top is not None:
            if not 1 <= top <= logits.shape[1]:
                raise ClassIndexError(
                    f"top must be between 1 and the number of classes ({logits.shape[1]}); "
                    f"got {top}."
                )
            target, single = logits.topk(top, dim=1).indices, False
        else:
            target, single = target_classes(self._indices(classes), logits)
        class_maps = self.head(maps, target)
        saliency = normalize_maps(class_maps, (images.shape[-2], images.shape[-1]))
        probabilities = logits.float().softmax(dim=1)
        if single:
            return Explanation(saliency[:, 0], target[:, 0], probabilities)
        return Explanation(saliency, target, probabilities)

    forward = explain

    def preprocess(self, image: ImageSource) -> tuple[torch.Tensor, Geometry]:
        """The backbone's input for a photo (its own resize and centre crop) and the geometry."""
        picture = image if isinstance(image, Image.Image) else load_image(image)
        return preprocess(picture, self.spec.input_size, self.spec.resize_size)

    def explain_image(
        self, image: ImageSource, target: str | int | None = None
    ) -> ImageExplanation:
        """Explain one photo (a path, bytes, a PIL image or an array) for ``target``.

        ``target`` is a class index or name (None: the top-1). The result's ``map`` lies on
        the photo's own pixels; ``overlay()`` draws it there.
        """
        picture = load_image(image)
        x, geometry = self.preprocess(picture)
        index = None if target is None else self.class_index(target)
        explanation = self.explain(x[None].to(self.device), index)
        return ImageExplanation.of(picture, explanation, geometry, self.categories)

    def save_pretrained(self, folder: str | Path, **card: Any) -> Path:
        """Write the head as ``config.json`` + ``model.safetensors`` + model card ``README.md``.

        The backbone is not saved. ``card`` fills the model card (see
        :func:`ttame.hub.card.head_card`: ``training_data``, ``metrics``, ``license``,
        ``license_note``, ``source``, ``repo_id``); the card is rewritten on every save so
        that it always describes the head beside it.
        """
        return save_head(self.head, folder, card)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, **card: Any) -> str:
        """Upload the head (config, weights, model card) to a Hub repo; returns the commit URL.

        Needs a token (``hf auth login``); ``card`` as in :meth:`save_pretrained`.
        """
        return push_head(self.head, repo_id, card, private=private)


def load_explainer(
    source: str | Path | None = None,
    backbone: str | None = None,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> Explainer:
    """An explainer from a backbone name, a head folder, ``OWNER/NAME`` or ``hf://...``.

    The first line of the three-line API; see :meth:`Explainer.from_pretrained`.
    """
    return Explainer.from_pretrained(source, backbone, weights, device)


def check_fit(head: AttentionHead, spec: BackboneSpec) -> None:
    """Refuse a head whose channels or classes differ from the backbone's, before any weights.

    A head file is consistent on its own but may name the wrong sizes for its backbone; found
    here, that is one clear error at load time instead of a failure at the first explanation.
    """
    shapes = probe_spec(spec, head.layers)
    if shapes.channels != head.in_channels or shapes.num_classes != head.num_classes:
        raise HeadError(
            f"The head expects tapped maps with channels {head.in_channels} (layers "
            f"{head.layers}) and {head.num_classes} classes, but backbone '{spec.name}' gives "
            f"{shapes.channels} and {shapes.num_classes} classes: the head does not fit this "
            "backbone."
        )
    check_tokens(head, shapes, spec)


def check_tokens(head: AttentionHead, shapes: TapShapes, spec: BackboneSpec) -> None:
    """Refuse a head that multiplies patch tokens by the class token on taps without them.

    Only a transformer's token taps with a class token can give those maps; a CNN's maps have
    no class token, so such a head would explain with maps it was never trained on.
    """
    if head.tokens == DEFAULT_TOKENS:
        return
    if not all(shapes.tokens) or spec.num_prefix_tokens < 1:
        raise HeadError(
            f"The head multiplies patch tokens by the class token (tokens '{head.tokens}'), "
            f"but the taps {head.layers} of backbone '{spec.name}' are not token layers with "
            "a class token: the head does not fit this backbone."
        )


def fresh_head(
    backbone: Backbone, num_classes: int | None = None, max_size: int = DEFAULT_MAX_SIZE
) -> AttentionHead:
    """An untrained head sized for ``backbone``'s taps (one dry pass reads the channels).

    It takes the backbone's ``tokens``, so it is trained on the maps the backbone gives;
    ``max_size`` caps the side of its fused map.
    """
    shapes = probe(backbone)
    param = next(backbone.parameters(), None)
    return AttentionHead(
        backbone=backbone.spec.name,
        layers=list(backbone.layers),
        in_channels=shapes.channels,
        num_classes=num_classes or shapes.num_classes,
        tokens=backbone.tokens,
        max_size=max_size,
    ).to(param.device if param is not None else torch.device("cpu"))


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    """Three per-channel statistics as floats."""
    if len(values) != 3:
        raise ValueError(f"mean and std take three values (R, G, B); got {list(values)}.")
    return float(values[0]), float(values[1]), float(values[2])

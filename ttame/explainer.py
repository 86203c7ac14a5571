"""The explainer: a frozen backbone, its taps and a T-TAME head, answering ``explain``.

``explain(images, classes)`` costs one backbone pass plus the head, with the fusion computed
only for the classes asked for. Heads load from a local folder, the bundled ``checkpoints/``
or a Hugging Face Hub repo id (safetensors only: nothing pickled is ever loaded).
"""

from __future__ import annotations

import difflib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_model
from torch import nn

from ttame.backbones import DEFAULT_BACKBONE, BackboneSpec, get_spec
from ttame.errors import ClassIndexError, HeadError, ImageError
from ttame.head import AttentionHead
from ttame.hub import (
    CHECKPOINT_SUFFIXES,
    HF_SCHEME,
    REPO_ID,
    HubRef,
    checkpoint_head,
    convert_checkpoint,
    hub_folder,
    tap_channels,
)
from ttame.taps import Backbone, build_backbone

ClassesArg = int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | None
_PACKAGE_CHECKPOINTS = Path(__file__).parent / "checkpoints"
_SOURCE_CHECKPOINTS = Path(__file__).parent.parent / "checkpoints"


class UntrainedHeadWarning(UserWarning):
    """The head was never trained: its maps mean nothing yet."""


@dataclass
class Explanation:
    """Saliency maps and what they explain.

    ``maps`` is ``B x H x W`` (one class per image) or ``B x M x H x W`` (M classes per image),
    in [0, 1], at the input's resolution and on its device; ``classes`` is ``B`` or ``B x M``;
    ``probabilities`` is the backbone's softmax on the clean images, ``B x K``.
    """

    maps: torch.Tensor
    classes: torch.Tensor
    probabilities: torch.Tensor

    @property
    def scores(self) -> torch.Tensor:
        """Probability of each explained class, shaped like ``classes``."""
        flat = self.classes.reshape(self.classes.shape[0], -1)
        return self.probabilities.gather(1, flat).reshape(self.classes.shape)


def normalize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Min-max each map to [0, 1] (a constant map becomes 0), then upsample bilinearly."""
    maps = maps.float()
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    maps = (maps - low) / (high - low).clamp_min(1e-12)
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return maps.clamp_(0.0, 1.0)


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate a raw RGB batch in [0, 1]; a single ``3 x H x W`` image gets a batch axis."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise ImageError("Images must be a floating-point tensor B x 3 x H x W in [0, 1].")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ImageError(f"Images must be B x 3 x H x W; got shape {tuple(images.shape)}.")
    if not torch.isfinite(images).all():
        raise ImageError("Images contain NaN or infinite values.")
    low, high = float(images.min()), float(images.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ImageError(
            f"Images must be raw RGB in [0, 1] (normalisation happens inside); got values in "
            f"[{low:.3g}, {high:.3g}]."
        )
    return images


def target_classes(classes: ClassesArg, logits: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Classes to explain as ``B x M`` indices, and whether one class per image was asked."""
    batch, num_classes = logits.shape
    if classes is None:
        return logits.argmax(dim=1, keepdim=True), True
    try:
        target = torch.as_tensor(classes, device=logits.device)
    except (TypeError, ValueError) as exc:
        raise ClassIndexError(f"Classes must be integers; got {classes!r}.") from exc
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise ClassIndexError(f"Class indices must be integers; got dtype {target.dtype}.")
    target = target.long()
    single = target.dim() <= 1
    if target.dim() == 0:
        target = target.expand(batch)
    if target.dim() == 1:
        target = target[:, None]
    if target.dim() != 2 or target.shape[0] != batch or target.shape[1] == 0:
        raise ClassIndexError(
            f"Give one class per image ({batch}) or a B x M tensor; got shape "
            f"{tuple(torch.as_tensor(classes).shape)}."
        )
    bad = target[(target < 0) | (target >= num_classes)]
    if bad.numel():
        raise ClassIndexError(
            f"Class index {int(bad[0])} is out of range: this backbone has classes "
            f"0..{num_classes - 1}."
        )
    return target, single


def bundled_head(backbone: str) -> Path | None:
    """The head shipped in ``checkpoints/<backbone>`` (package data or a source checkout)."""
    for root in (_PACKAGE_CHECKPOINTS, _SOURCE_CHECKPOINTS):
        folder = root / backbone.replace("/", "--")
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            return folder
    return None


def load_head(
    source: str | Path, cache_dir: str | Path | None = None, backbone: str | None = None
) -> AttentionHead:
    """A head from a folder, a Hub repo id, a reference checkpoint or an ``hf://`` reference.

    - a folder with ``config.json`` + ``model.safetensors``;
    - ``OWNER/NAME`` or ``hf://OWNER/NAME[@REVISION]``: a head repo on the Hub;
    - ``FILE.ckpt`` (also ``.pt`` / ``.pth``): a checkpoint of the reference implementation,
      converted in memory (:func:`ttame.hub.convert_checkpoint`);
    - ``hf://OWNER/NAME[@REVISION]/FILE.ckpt``: such a checkpoint in a Hub repo, fetched and
      converted once, then cached.

    Hub files are looked up in the Hugging Face cache first; only on a miss, and when the Hub
    answers within a few seconds, are they downloaded. Offline, the failure is immediate.
    ``backbone`` names the backbone a checkpoint belongs to when the file does not say.
    """
    text = str(source)
    path = Path(source).expanduser()
    if text.startswith(HF_SCHEME):
        ref = HubRef.parse(text)
        if ref.filename is None:
            path = hub_folder(ref.repo_id, cache_dir, ref.revision)
        else:
            path = checkpoint_head(ref, backbone, cache_dir)
    elif path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        return convert_checkpoint(path, backbone)[0]
    elif path.is_dir():
        missing = [n for n in ("config.json", "model.safetensors") if not (path / n).is_file()]
        if missing:
            raise HeadError(f"Head folder {path} lacks {', '.join(missing)}.")
    elif REPO_ID.match(text) and ".." not in text:
        path = hub_folder(text, cache_dir)
    else:
        raise HeadError(
            f"'{source}' is neither a head folder nor a Hugging Face Hub repo id (owner/name); "
            "other sources: hf://owner/name[/file.ckpt], a reference checkpoint file (.ckpt)."
        )
    try:
        config = json.loads((path / "config.json").read_text())
        head = AttentionHead(**config)
        load_model(head, str(path / "model.safetensors"), strict=True)
    except Exception as exc:
        raise HeadError(f"Could not load the head from '{source}': {_reason(exc)}") from exc
    return head.eval()


def check_fit(head: AttentionHead, spec: BackboneSpec) -> None:
    """Refuse a head whose channels or classes differ from the backbone's, before any weights.

    A head file is consistent on its own but may name the wrong sizes for its backbone; found
    here, that is one clear error at load time instead of a failure at the first explanation.
    """
    channels, classes = tap_channels(spec, head.layers)
    if channels != head.in_channels or classes != head.num_classes:
        raise HeadError(
            f"The head expects tapped maps with channels {head.in_channels} (layers "
            f"{head.layers}) and {head.num_classes} classes, but backbone '{spec.name}' gives "
            f"{channels} and {classes} classes: the head does not fit this backbone."
        )


def _reason(exc: Exception) -> str:
    """The exception on one line (the CLI prints one line per error), at most 300 characters."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


class Explainer(nn.Module):
    """Frozen backbone + taps + attention head."""

    def __init__(self, backbone: Backbone, head: AttentionHead, trained: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.trained = trained

    @property
    def spec(self) -> BackboneSpec:
        return self.backbone.spec

    @cached_property
    def categories(self) -> list[str]:
        names = self.spec.categories()
        if len(names) != self.head.num_classes:
            return [f"class {i}" for i in range(self.head.num_classes)]
        return names

    @classmethod
    def from_pretrained(
        cls,
        head: str | Path | None = None,
        backbone: str | None = None,
        weights: str | Path | None = None,
        device: str | torch.device = "cpu",
        pretrained_backbone: bool = True,
    ) -> Explainer:
        """Build an explainer from a head (any source :func:`load_head` takes) or the bundled one.

        With no head, the bundled ``checkpoints/<backbone>`` is used; if there is none, a fresh
        untrained head is built and every ``explain`` warns loudly.
        """
        source = head if head is not None else bundled_head(backbone or DEFAULT_BACKBONE)
        loaded = load_head(source, backbone=backbone) if source is not None else None
        name = backbone or (loaded.backbone if loaded is not None else DEFAULT_BACKBONE)
        if loaded is not None and loaded.backbone != name:
            raise HeadError(
                f"The head at '{source}' was trained for backbone '{loaded.backbone}', "
                f"not '{name}'."
            )
        spec = get_spec(name)
        layers = tuple(loaded.layers) if loaded is not None else None
        if loaded is not None:
            check_fit(loaded, spec)
        body = build_backbone(spec, weights, pretrained_backbone, layers)
        if loaded is None:
            loaded = fresh_head(body)
        return cls(body, loaded, trained=source is not None).to(device).eval()

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

    @torch.no_grad()
    def explain(self, images: torch.Tensor, classes: ClassesArg = None) -> Explanation:
        """Maps for raw RGB images ``B x 3 x H x W`` in [0, 1]: one backbone pass plus the head.

        ``classes``: None (each image's top-1), one index for all, one per image, or ``B x M``.
        """
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
        target, single = target_classes(classes, logits)
        class_maps = self.head(maps, target)
        saliency = normalize_maps(class_maps, (images.shape[-2], images.shape[-1]))
        probabilities = logits.float().softmax(dim=1)
        if single:
            return Explanation(saliency[:, 0], target[:, 0], probabilities)
        return Explanation(saliency, target, probabilities)

    forward = explain

    def save_pretrained(self, folder: str | Path, **card: Any) -> Path:
        """Write the head as ``config.json`` + ``model.safetensors`` + model card ``README.md``.

        The backbone is not saved. ``card`` fills the model card (see :func:`ttame.hub.head_card`:
        ``training_data``, ``metrics``, ``license``, ``license_note``, ``source``, ``repo_id``);
        the card is rewritten on every save so that it always describes the head beside it.
        """
        folder = Path(folder)
        (folder / "README.md").unlink(missing_ok=True)
        self.head.save_pretrained(folder, model_card_kwargs=card)
        return folder

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, **card: Any) -> str:
        """Upload the head (config, weights, model card) to a Hub repo; returns the commit URL.

        Needs a token (``hf auth login``); ``card`` as in :meth:`save_pretrained`.
        """
        return self.head.push_to_hub(
            repo_id, private=private, model_card_kwargs={"repo_id": repo_id, **card}
        )


def fresh_head(backbone: Backbone, num_classes: int | None = None) -> AttentionHead:
    """An untrained head sized for ``backbone``'s taps (one dry pass reads the channels)."""
    size = backbone.spec.input_size
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    with torch.no_grad():
        logits, maps = backbone.forward_features(torch.zeros(1, 3, size, size, device=device))
    return AttentionHead(
        backbone=backbone.spec.name,
        layers=list(backbone.layers),
        in_channels=[int(m.shape[1]) for m in maps],
        num_classes=num_classes or int(logits.shape[1]),
    ).to(device)

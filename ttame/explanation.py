"""What every map-maker returns, and the helpers they all share.

T-TAME and every baseline answer ``explain(images, classes) -> Explanation``: maps in [0, 1] at
the input's size and on its device, the explained classes, the clean images' probabilities.
:class:`ImageExplanation` is the answer for one photo, with its map on the photo's own pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ttame.errors import ClassIndexError, ImageError
from ttame.images import Geometry, map_to_original, overlay, seen_region

ClassesArg = int | str | Sequence[int | str] | Sequence[Sequence[int | str]] | torch.Tensor | None
"""Classes to explain: None (each image's top-1), one for all, one per image, or ``B x M``.

Indices everywhere; :meth:`ttame.Explainer.explain` also takes class names."""


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


@dataclass
class ImageExplanation:
    """The explanation of one photo, on the photo's own pixels.

    ``map`` is ``H x W`` over the original photo (0 where the backbone never looked, see
    ``seen``); ``label`` and ``index`` name the explained class, ``score`` is its probability;
    ``explanation`` keeps the backbone-sized result and ``geometry`` where its crop lies.
    """

    image: Image.Image
    map: np.ndarray
    seen: np.ndarray
    index: int
    label: str
    score: float
    explanation: Explanation
    geometry: Geometry

    @classmethod
    def of(
        cls, image: Image.Image, explanation: Explanation, geometry: Geometry, labels: Sequence[str]
    ) -> ImageExplanation:
        """Put the first map of a one-image ``explanation`` back on ``image``."""
        index = int(explanation.classes.reshape(-1)[0])
        saliency = explanation.maps.reshape(-1, *explanation.maps.shape[-2:])[0]
        return cls(
            image=image,
            map=map_to_original(saliency, geometry),
            seen=seen_region(geometry),
            index=index,
            label=labels[index],
            score=float(explanation.probabilities[0, index]),
            explanation=explanation,
            geometry=geometry,
        )

    def overlay(self, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
        """The map blended over the photo; pixels the backbone never saw stay untinted."""
        return overlay(self.image, self.map, alpha, colormap, seen=self.seen)


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
    if not isinstance(images, torch.Tensor):
        raise ImageError(
            "Images must be a floating-point tensor B x 3 x H x W in [0, 1]; for a photo (a "
            "path, a PIL image, an array) call explainer.explain_image(photo)."
        )
    if not images.is_floating_point():
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

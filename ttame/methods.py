"""One interface for every map-maker, and the registry that names them.

Metrics, evaluation and the app only ever call ``explain(images, classes)``; they never know
which method made the maps. Adding a method is one class and one entry in :data:`METHODS`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ttame import baselines
from ttame.errors import TTameError
from ttame.explainer import ClassesArg, Explainer, Explanation


@runtime_checkable
class MapMaker(Protocol):
    """Anything that answers ``explain`` with maps ``B x H x W`` in [0, 1] on the input's device.

    ``images`` are raw RGB in [0, 1], ``B x 3 x H x W``; ``classes`` as for
    :meth:`ttame.explainer.Explainer.explain` (None: each image's top-1).
    """

    def explain(self, images: torch.Tensor, classes: ClassesArg = None) -> Explanation:
        """Saliency maps, the explained classes and the clean images' probabilities."""
        ...


@dataclass(frozen=True)
class MethodOptions:
    """Knobs of the costly baselines; every method ignores the ones it has no use for."""

    rise_masks: int = 4000
    """RISE's number of random masks (the reference uses 4000 on ImageNet)."""
    batch_size: int = 64
    """Most perturbed images per backbone call (RISE, Score-CAM)."""
    seed: int = 0
    """Seeds RISE's masks and the random floor, so a run repeats exactly."""


MethodFactory = Callable[[Explainer, MethodOptions], MapMaker]
"""Builds a map-maker from the explainer (its backbone; T-TAME uses the whole explainer)."""


class UnknownMethodError(TTameError, ValueError):
    """A method name that is not in the registry."""


METHODS: dict[str, MethodFactory] = {
    "ttame": lambda explainer, _options: explainer,
    "gradcam": lambda explainer, _options: baselines.GradCAM(explainer.backbone),
    "gradcampp": lambda explainer, _options: baselines.GradCAMPlusPlus(explainer.backbone),
    "scorecam": lambda explainer, options: baselines.ScoreCAM(
        explainer.backbone, batch_size=options.batch_size
    ),
    "rise": lambda explainer, options: baselines.RISE(
        explainer.backbone,
        n_masks=options.rise_masks,
        seed=options.seed,
        batch_size=options.batch_size,
    ),
    "random": lambda explainer, options: baselines.RandomMap(explainer.backbone, seed=options.seed),
    "centre": lambda explainer, _options: baselines.CentreGaussian(explainer.backbone),
}
"""Method name -> factory. ``random`` and ``centre`` are floors a real method must beat."""


def build_method(name: str, explainer: Explainer, options: MethodOptions | None = None) -> MapMaker:
    """The map-maker called ``name`` for the explainer's backbone."""
    check_method(name)
    return METHODS[name](explainer, options or MethodOptions())


def check_method(name: str) -> None:
    """Fail early, with the closest names, on a method the registry does not know."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownMethodError(f"Unknown method '{name}'. Known: {', '.join(METHODS)}.{hint}")


def parse_methods(text: str) -> list[str]:
    """A comma-separated method list, checked against the registry, duplicates dropped."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UnknownMethodError(f"No method named; choose from {', '.join(METHODS)}.")
    for name in names:
        check_method(name)
    return names

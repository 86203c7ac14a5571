"""One interface for every map-maker, and the registry that names them.

Metrics, evaluation and the app only ever call ``explain(images, classes)``; they never know
which method made the maps. Adding a method is one class and one entry in :data:`METHODS`,
which also says how people write the method's name and what one map costs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ttame.errors import UnknownMethodError
from ttame.explainer import Explainer
from ttame.explanation import ClassesArg, Explanation
from ttame.methods.cam import GradCAM, GradCAMPlusPlus, ScoreCAM
from ttame.methods.floors import CentreGaussian, RandomMap
from ttame.methods.rise import RISE

TTAME = "ttame"
"""The registry name of T-TAME itself."""


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


@dataclass(frozen=True)
class Method:
    """A registry entry: how to build the map-maker, its name for people, what a map costs.

    Calling the entry builds the map-maker, so an entry is itself a :data:`MethodFactory`.
    """

    factory: MethodFactory
    label: str
    """The method's name as people write it."""
    cost: str
    """What one map costs, in backbone passes."""
    floor: bool = False
    """A floor (random, centred): a real method must beat it."""

    def __call__(self, explainer: Explainer, options: MethodOptions) -> MapMaker:
        """The map-maker for the explainer's backbone."""
        return self.factory(explainer, options)


METHODS: dict[str, Method] = {
    TTAME: Method(lambda explainer, _options: explainer, "T-TAME", "one forward pass"),
    "gradcam": Method(
        lambda explainer, _options: GradCAM(explainer.backbone),
        "Grad-CAM",
        "one forward and one backward pass per class",
    ),
    "gradcampp": Method(
        lambda explainer, _options: GradCAMPlusPlus(explainer.backbone),
        "Grad-CAM++",
        "one forward and one backward pass per class",
    ),
    "scorecam": Method(
        lambda explainer, options: ScoreCAM(explainer.backbone, batch_size=options.batch_size),
        "Score-CAM",
        "one forward pass per channel of the last tapped layer",
    ),
    "rise": Method(
        lambda explainer, options: RISE(
            explainer.backbone,
            n_masks=options.rise_masks,
            seed=options.seed,
            batch_size=options.batch_size,
        ),
        "RISE",
        "one forward pass per random mask",
    ),
    "random": Method(
        lambda explainer, options: RandomMap(explainer.backbone, seed=options.seed),
        "random map",
        "one forward pass (for the prediction)",
        floor=True,
    ),
    "centre": Method(
        lambda explainer, _options: CentreGaussian(explainer.backbone),
        "centre Gaussian",
        "one forward pass (for the prediction)",
        floor=True,
    ),
}
"""Method name -> entry. ``random`` and ``centre`` are floors a real method must beat."""


def label(name: str) -> str:
    """A method's name as people write it (the registry name if it is not registered)."""
    method = METHODS.get(name)
    return method.label if method is not None else name


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

"""Model-randomisation sanity check (Adebayo et al., NeurIPS 2018), cascading from the top.

A map that explains the classifier must change when the classifier's weights are destroyed.
The backbone's top layers are re-initialised step by step (the classifier, then also the last
stage, then also the stage before it), each map-maker is rebuilt on the randomised backbone,
and its maps for the *same* classes (the intact model's top-1) are compared with the intact
ones by Spearman rank correlation. High correlation after randomisation is a failure: such a
method shows the image's edges or its own prior, not the model. T-TAME keeps its trained head;
only the backbone changes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ttame.errors import UntrainedHeadWarning
from ttame.explainer import Explainer
from ttame.methods.registry import MethodFactory, MethodOptions
from ttame.model.taps import Backbone


@dataclass(frozen=True)
class CascadeStep:
    """One cumulative randomisation: its name and every module re-initialised so far."""

    name: str
    modules: tuple[str, ...]


def cascade(backbone: Backbone) -> list[CascadeStep]:
    """The cumulative steps for ``backbone``, found from one dry pass in execution order.

    Stage boundaries are the taps: "classifier" is every module with weights that starts
    running after the last tap has finished, "last stage" adds those after the middle tap,
    "last two stages" those after the first. This works alike for CNNs and token models, and
    for modules called more than once (a tap's last call counts, like the taps themselves).
    """
    model = backbone.model
    modules = dict(model.named_modules())
    clock = 0
    started: dict[str, int] = {}
    finished: dict[str, int] = {}

    def on_start(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            nonlocal clock
            clock += 1
            started.setdefault(name, clock)

        return hook

    def on_end(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            nonlocal clock
            clock += 1
            finished[name] = clock

        return hook

    weighted = [n for n, m in modules.items() if n and any(True for _ in m.parameters(False))]
    handles = [modules[n].register_forward_pre_hook(on_start(n)) for n in weighted]
    handles += [modules[n].register_forward_hook(on_end(n)) for n in backbone.layers]
    size = backbone.spec.input_size
    device = next(backbone.parameters()).device
    try:
        with torch.no_grad():
            backbone(torch.zeros(1, 3, size, size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    names = ("classifier", "last stage", "last two stages")
    boundaries = [finished[layer] for layer in reversed(backbone.layers)][: len(names)]
    steps: list[CascadeStep] = []
    for name, boundary in zip(names, boundaries, strict=False):
        after = tuple(n for n in weighted if started.get(n, 0) > boundary)
        if after and (not steps or after != steps[-1].modules):
            steps.append(CascadeStep(name, after))
    return steps


def randomized(backbone: Backbone, modules: tuple[str, ...], seed: int = 0) -> Backbone:
    """A copy of ``backbone`` with ``modules`` re-initialised (the original is untouched)."""
    model = backbone.spec.build()
    model.load_state_dict(backbone.model.state_dict())
    named = dict(model.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in modules:
            module = named[name]
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:
                for param in module.parameters(False):
                    nn.init.normal_(param, std=0.02)
    model.eval().requires_grad_(False)
    device = next(backbone.parameters()).device
    return Backbone(model, backbone.spec, backbone.layers, backbone.tokens).to(device)


def spearman(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps (``B x H x W`` each), ties averaged.

    A map that is flat on either side has no ranking: its correlation is NaN.
    """
    from scipy.stats import rankdata

    a = rankdata(before.detach().flatten(1).cpu().double().numpy(), axis=1)
    b = rankdata(after.detach().flatten(1).cpu().double().numpy(), axis=1)
    a -= a.mean(1, keepdims=True)
    b -= b.mean(1, keepdims=True)
    denominator = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denominator > 0, (a * b).sum(1) / denominator, np.nan)
    return torch.from_numpy(rho)


def cascading_randomization(
    explainer: Explainer,
    factory: MethodFactory,
    images: torch.Tensor,
    options: MethodOptions | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Spearman correlation (``B`` per step) of intact vs randomised maps, step by step.

    The classes are the intact backbone's top-1, kept for every step, so only the model
    changes. ``factory`` builds the map-maker from an explainer, as in the method registry.
    """
    options = options or MethodOptions()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadWarning)
        intact = factory(explainer, options).explain(images)
        results = {}
        for step in cascade(explainer.backbone):
            body = randomized(explainer.backbone, step.modules, seed)
            broken = Explainer(body, explainer.head, explainer.trained)
            maps = factory(broken, options).explain(images, intact.classes).maps
            results[step.name] = spearman(intact.maps, maps)
    return results

"""Fixtures every test gets: the tiny backbones, resolvable by name like registered ones;
and, for modules that serve the app, the tiny backbones and their saved heads for the module."""

from __future__ import annotations

import pytest

from tests.helpers import TINY, tiny_explainer
from ttame.model import registry


@pytest.fixture(autouse=True)
def tiny_backbones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``tiny_cnn`` and ``tiny_vit`` resolvable like any registered backbone."""
    for name, spec in TINY.items():
        monkeypatch.setitem(registry.REGISTRY, name, lambda spec=spec: spec)


@pytest.fixture(scope="module")
def tiny_registry():
    """The tiny backbones, registered for a whole module (a server outlives one test)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, spec in TINY.items():
            patch.setitem(registry.REGISTRY, name, lambda spec=spec: spec)
        yield


@pytest.fixture(scope="module")
def heads(tiny_registry, tmp_path_factory) -> dict[str, str]:
    """Saved heads of the two tiny backbones, by name (for an app served by a module)."""
    root = tmp_path_factory.mktemp("heads")
    return {
        name: str(tiny_explainer(name, seed).save_pretrained(root / name))
        for seed, name in enumerate(("tiny_cnn", "tiny_vit"))
    }

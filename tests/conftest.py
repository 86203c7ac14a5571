"""Fixtures every test gets: the tiny backbones, resolvable by name like registered ones."""

from __future__ import annotations

import pytest

from tests.helpers import TINY
from ttame.model import registry


@pytest.fixture(autouse=True)
def tiny_backbones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``tiny_cnn`` and ``tiny_vit`` resolvable like any registered backbone."""
    for name, spec in TINY.items():
        monkeypatch.setitem(registry.REGISTRY, name, lambda spec=spec: spec)

"""The backbone registry: a name becomes a fully specified, frozen classifier.

The registry is a dict from name to a function that makes the :class:`BackboneSpec`; the
bundled backbones are in it from the start, :func:`register_backbone` adds a user's own, and
``timm/<model>`` names any timm model on the fly.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from ttame.errors import BackboneError
from ttame.model.backbones import BUILT_IN, BackboneSpec
from ttame.model.timm import TIMM_PREFIX, timm_spec

REGISTRY: dict[str, Callable[[], BackboneSpec]] = dict(BUILT_IN)
"""Backbone name -> the function that makes its spec."""
DEFAULT_BACKBONE = "mobilenet_v2"
"""The backbone used when none is named: real ImageNet weights that install offline."""


def list_backbones() -> list[str]:
    """Registered backbone names (any ``timm/<model>`` works too)."""
    return list(REGISTRY)


def register_backbone(
    spec: BackboneSpec | Callable[[], BackboneSpec], name: str | None = None
) -> str:
    """Make a backbone resolvable by name everywhere a name is taken; returns the name.

    ``spec`` is a :class:`BackboneSpec` or a function that makes one (called on each use);
    ``name`` defaults to the spec's own. A name already registered is replaced.
    """
    factory = spec if callable(spec) and not isinstance(spec, BackboneSpec) else None
    if factory is None:
        assert isinstance(spec, BackboneSpec)
        fixed = spec

        def factory() -> BackboneSpec:
            return fixed

    key = name or factory().name
    if key.startswith(TIMM_PREFIX):
        raise BackboneError(f"Names starting with '{TIMM_PREFIX}' are timm's; choose another.")
    REGISTRY[key] = factory
    return key


def get_spec(name: str) -> BackboneSpec:
    """The spec for ``name``; unknown names fail with the closest known ones."""
    if name.startswith(TIMM_PREFIX):
        return timm_spec(name[len(TIMM_PREFIX) :])
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BackboneError(
            f"Unknown backbone '{name}'. Known: {', '.join(REGISTRY)}, or timm/<model name>.{hint}"
        )
    return REGISTRY[name]()

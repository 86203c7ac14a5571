"""What the app offers and keeps between clicks: its config, a small LRU of loaded explainers.

Loading a backbone and its head takes seconds and hundreds of megabytes; explaining takes
milliseconds. Keeping the last few explainers makes switching back and forth instant while
bounding memory, whatever a crowd of users asks for. Each entry carries a lock: the feature
taps record into the backbone during a pass, so two passes through one backbone must not
overlap, while different backbones can run side by side. Each backbone also checks, before
every pass, the time budget of the request running it (:func:`time_budget`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ttame.errors import TimeBudgetError
from ttame.explainer import Explainer
from ttame.hub.known import KNOWN_HEADS, KnownHead, can_fetch, is_cached, known_head
from ttame.hub.load import Provenance, bundled_head
from ttame.images import IMAGE_SUFFIXES
from ttame.methods.registry import METHODS, TTAME, MethodOptions
from ttame.model.registry import DEFAULT_BACKBONE, list_backbones

Loader = Callable[[str | None, str | None], Explainer]
"""Builds an explainer from (head source or None, backbone name or None)."""
MethodFactory = Callable[[Explainer, Any], Any]
"""Builds a map-maker (anything with ``explain(images, classes) -> Explanation``) from the
explainer and the methods' options, as the entries of ``ttame.methods.registry.METHODS`` do."""

_PACKAGE = Path(__file__).resolve().parent.parent
EXAMPLES_DIRS = (_PACKAGE / "examples", _PACKAGE.parent / "examples")
"""Where the example photos are looked for: the installed package's data, a source checkout."""
EXAMPLES_DIR = next((d for d in EXAMPLES_DIRS if d.is_dir()), EXAMPLES_DIRS[-1])
TIME_BUDGET = 60.0
"""Seconds a comparison or a measurement may take before it is stopped with a message."""
DEFAULT_MENU = [DEFAULT_BACKBONE, *(name for name in KNOWN_HEADS if name != DEFAULT_BACKBONE)]
"""The backbones offered by default: every one with a known head, the offline default first."""


@dataclass
class AppConfig:
    """What the app offers: backbones (the first is the default), heads, methods, photos."""

    backbones: list[str] = field(default_factory=lambda: list(DEFAULT_MENU))
    heads: dict[str, str] = field(default_factory=dict)
    """Head folder per backbone; without one the bundled ``checkpoints/<backbone>`` is used."""
    methods: dict[str, MethodFactory] = field(default_factory=dict)
    """Baselines for Compare and Measure, by registry name."""
    method_options: Any = None
    """Passed to every method factory (``ttame.methods.registry.MethodOptions``)."""
    examples_dir: Path = EXAMPLES_DIR
    cache_size: int = 3
    time_budget: float | None = TIME_BUDGET
    """Seconds a comparison or a measurement may run (None: no limit)."""
    hub_backbones: list[str] = field(default_factory=list_backbones)
    """Backbones a head typed in as a Hub repo id may use (their sizes are known)."""


@dataclass
class Shown:
    """The pictures of the last explanation, kept per browser session for restyling.

    Maps are over the shown photo, NaN where the backbone saw nothing.
    """

    image: Image.Image
    maps: dict[str, np.ndarray] = field(default_factory=dict)


def default_methods() -> tuple[dict[str, MethodFactory], MethodOptions]:
    """The baselines of the method registry (all but T-TAME) and the app's options for them.

    RISE draws 1000 masks instead of the reference's 4000: a click should take seconds, not a
    minute, on a small CPU; the comparison table says so.
    """
    return {k: v for k, v in METHODS.items() if k != TTAME}, MethodOptions(rise_masks=1000)


def example_photos(folder: Path) -> list[tuple[Path, str]]:
    """The bundled photos and their credits, read from the folder's ``SOURCES.md`` table."""
    credits = {}
    sources = folder / "SOURCES.md"
    if sources.is_file():
        for line in sources.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 2 and Path(cells[0]).suffix.lower() in IMAGE_SUFFIXES:
                credits[cells[0]] = cells[-1]
    photos = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, f"{p.stem}: {credits.get(p.name, 'source not recorded')}") for p in photos]


def load_explainer(head: str | None, backbone: str | None) -> Explainer:
    """The app's loader: a head folder or Hub repo id, else the bundled or untrained head."""
    return Explainer.from_pretrained(head=head, backbone=backbone)


_request = threading.local()


@contextmanager
def time_budget(seconds: float | None, what: str) -> Iterator[None]:
    """Give this thread's backbone passes a deadline ``seconds`` from now (None: no limit).

    A thread cannot be stopped from outside; instead every pass of a cached backbone checks
    the deadline of the request running it (:func:`check_budget`), so a slow measurement ends
    within one pass of its budget, freeing its worker and the backbone's lock. ``what`` names
    the work in the message.
    """
    saved = getattr(_request, "budget", None)
    _request.budget = None if seconds is None else (time.monotonic() + seconds, seconds, what)
    try:
        yield
    finally:
        _request.budget = saved


def check_budget(*_hook_args: object) -> None:
    """Raise :class:`TimeBudgetError` once this thread's request is past its deadline."""
    budget = getattr(_request, "budget", None)
    if budget is not None and time.monotonic() > budget[0]:
        raise TimeBudgetError(
            f"{budget[2]} was stopped after its {budget[1]:g} s time budget. Try a faster "
            "method (T-TAME, Grad-CAM), or measure offline with `ttame evaluate`."
        )


@dataclass
class Loaded:
    """One cached explainer, the lock that serialises passes through it, its other methods."""

    explainer: Explainer
    lock: threading.RLock = field(default_factory=threading.RLock)
    methods: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.explainer.backbone.model.register_forward_pre_hook(check_budget)

    def method(self, name: str, factory: MethodFactory, options: Any = None) -> Any:
        """The map-maker ``name`` for this backbone, built once (call with the lock held)."""
        if name not in self.methods:
            self.methods[name] = factory(self.explainer, options)
        return self.methods[name]


class ExplainerCache:
    """A thread-safe LRU of explainers, at most ``capacity`` held at once.

    Loading happens outside the cache's own lock: a slow Hub download for one head never
    holds up requests for explainers already loaded. Two requests for the same new head wait
    for one load.
    """

    def __init__(self, capacity: int = 3, loader: Loader = load_explainer) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1; got {capacity}.")
        self.capacity = capacity
        self._loader = loader
        self._items: OrderedDict[tuple[str | None, str | None], Loaded] = OrderedDict()
        self._loading: dict[tuple[str | None, str | None], threading.Lock] = {}
        self._lock = threading.Lock()

    def _cached(self, key: tuple[str | None, str | None]) -> Loaded | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def get(self, backbone: str | None, head: str | None = None) -> Loaded:
        """The entry for this head (or this backbone's default head), loading it if needed.

        A head names its own backbone, so with a head the backbone is not part of the key.
        """
        key = (None if head else backbone, head or None)
        entry = self._cached(key)
        if entry is not None:
            return entry
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            entry = self._cached(key)
            if entry is not None:
                return entry
            try:
                entry = Loaded(self._loader(key[1], key[0]))
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._items[key] = entry
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
            return entry

    def keys(self) -> list[tuple[str | None, str | None]]:
        """The cached (backbone, head) keys, least recently used first."""
        with self._lock:
            return list(self._items)


def backbone_choices(names: list[str], heads: dict[str, str]) -> list[tuple[str, str]]:
    """(label, name) pairs for the backbone menu: those with a head, and the first always.

    The first name is the app's default; without a trained head it is still offered, labelled
    loudly, so the app works before any head exists. A head that comes from the Hub says its
    download size and licence, or, when it is not cached and the Hub cannot be reached, that
    it needs the network (the Hub is probed once, only then).
    """
    choices = []
    online: bool | None = None
    for position, name in enumerate(names):
        entry = known_head(name)
        if name in heads or (bundled_head(name) is not None and not (entry and entry.on_hub)):
            choices.append((name, name))
        elif entry is not None and entry.on_hub:
            cached = is_cached(entry)
            if not cached and online is None:
                online = can_fetch()
            choices.append((hub_label(entry, cached, bool(online)), name))
        elif position == 0:
            choices.append((f"{name} (UNTRAINED head: not an explanation)", name))
    return choices


def hub_label(entry: KnownHead, cached: bool, online: bool) -> str:
    """The menu's label of a backbone whose head comes from the Hub."""
    licence = f"licence: {entry.license}"
    if cached:
        return f"{entry.backbone} (downloaded; {licence})"
    if online:
        return f"{entry.backbone} ({entry.download_mb} MB download, once; {licence})"
    return f"{entry.backbone} (needs the network: {entry.download_mb} MB download; {licence})"


def provenance_line(provenance: Provenance | None) -> str:
    """Where the head came from and its licence, in one line beside every map."""
    if provenance is None:
        return "Head: built here, never trained."
    return f"Head: {provenance.source} · licence: {provenance.license}"

"""The app's callbacks: explain a photo, pick the class, compare with a baseline, measure live.

Everything here is wiring: the maps come from :class:`~ttame.explainer.Explainer` and the
baselines' ``explain``, the geometry and colours from :mod:`ttame.images`, the scores from
:mod:`ttame.metrics.photo`. Each callback returns a NamedTuple of :mod:`ttame.app.results`,
one field per output. Errors a user can cause become a message in the page; the server keeps
serving.
"""

from __future__ import annotations

import functools
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from ttame.app.figures import adic_figure, display_copy, picture, road_figure
from ttame.app.results import (
    Compared,
    Explained,
    Measured,
    Menu,
    Restyled,
    adic_summary,
    road_summary,
    timings_table,
)
from ttame.app.state import (
    AppConfig,
    ExplainerCache,
    Loaded,
    Shown,
    backbone_choices,
    provenance_line,
    time_budget,
)
from ttame.app.state import load_explainer as library_loader
from ttame.errors import HeadError, TimeBudgetError, TTameError, UntrainedHeadWarning
from ttame.explainer import Explainer
from ttame.explanation import Explanation
from ttame.hub.client import is_repo_id
from ttame.hub.load import load_head
from ttame.images import Geometry, heatmap, load_image, map_to_original, overlay
from ttame.methods.registry import METHODS, TTAME, label
from ttame.metrics.photo import photo_adic, photo_road

TOP1 = "top-1"
"""The class menu's value for "the predicted class"."""


def user_error(exc: Exception | str) -> gr.Error:
    """A message box for a mistake the user can fix; the server keeps serving.

    Python object addresses that decoders put in their messages are dropped: they mean
    nothing to the reader.
    """
    return gr.Error(re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc)), print_exception=False)


def budgeted(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a slow action under the app's time budget; past it, a message instead of a result."""

    def wrap(action: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(action)
        def run(self: TTameApp, *args: Any, **kwargs: Any) -> Any:
            try:
                with time_budget(self.config.time_budget, what):
                    return action(self, *args, **kwargs)
            except TimeBudgetError as exc:
                raise user_error(exc) from exc

        return run

    return wrap


def _path(payload: Any) -> tuple[str, str]:
    """The server-side path of an uploaded image and the name its owner gave it."""
    if isinstance(payload, dict):
        path = payload.get("path")
        return str(path or ""), str(payload.get("orig_name") or Path(str(path or "")).name)
    return str(payload or ""), Path(str(payload or "")).name


def unseen_nan(saliency: torch.Tensor, geometry: Geometry) -> np.ndarray:
    """A map over the shown photo, NaN where the backbone saw nothing (left untinted)."""
    return map_to_original(saliency, geometry, outside=float("nan"))


class TTameApp:
    """The callbacks; :func:`ttame.app.layout.build_app` wires them to components."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.cache = ExplainerCache(config.cache_size, self.build_explainer)
        self.menu = backbone_choices(config.backbones, config.heads)
        self.offered = [name for _, name in self.menu]

    def build_explainer(self, head: str | None, backbone: str | None) -> Explainer:
        """The cache's loader; a head typed in from the Hub must be for one of ``hub_backbones``.

        A head's config names its backbone, and any ``timm/<model>`` named there would be
        downloaded and built; with the registered ones the memory and disk that the cache's
        few explainers take stay bounded.
        """
        if head is not None and head not in self.config.heads.values():
            name = load_head(head).backbone
            if name not in self.config.hub_backbones:
                raise HeadError(
                    f"The head '{head}' is for backbone '{name}'; this app loads heads from the "
                    f"Hub for {', '.join(self.config.hub_backbones)} only."
                )
        return library_loader(head, backbone)

    # ---- inputs ---------------------------------------------------------------------------
    def read_image(self, payload: Any) -> Image.Image:
        """The uploaded photo as RGB, or a message saying what is wrong with it."""
        path, name = _path(payload)
        if not path:
            raise user_error("Upload a photo or pick an example first.")
        try:
            return load_image(path)
        except TTameError as exc:
            raise user_error(str(exc).replace(path, name)) from exc

    def model(self, backbone: str | None, repo: str | None) -> Loaded:
        """The explainer for the chosen backbone, or for the head typed in as a Hub repo id."""
        repo = (repo or "").strip()
        try:
            if repo:
                if not is_repo_id(repo):
                    raise HeadError(
                        f"'{repo}' is not a Hugging Face Hub repo id; type it as owner/name."
                    )
                return self.cache.get(None, repo)
            name = backbone or self.offered[0]
            if name not in self.offered:
                raise HeadError(
                    f"This app offers the backbones {', '.join(self.offered)}; "
                    f"'{name}' is not one of them. Type a Hub repo id for other heads."
                )
            return self.cache.get(name, self.config.heads.get(name))
        except TTameError as exc:
            raise user_error(exc) from exc

    @staticmethod
    def head_status(loaded: Loaded, repo: str | None) -> str:
        """One line on which head explains, and a loud warning if it was never trained."""
        explainer = loaded.explainer
        where = f"Hub repo {repo.strip()}" if repo and repo.strip() else "its default head"
        if not explainer.trained:
            return (
                f"WARNING: backbone {explainer.spec.name} has NO trained head; the maps are "
                "from an UNTRAINED head and are NOT explanations."
            )
        return (
            f"Backbone {explainer.spec.name}, {where} ({explainer.head.num_classes} classes). "
            + provenance_line(explainer.provenance)
        )

    @staticmethod
    def class_choices(loaded: Loaded) -> list[tuple[str, str]]:
        """The class menu: the predicted class first, then every class by name."""
        names = loaded.explainer.categories
        return [("Top-1 (the predicted class)", TOP1)] + [
            (f"{name} · {i}", str(i)) for i, name in enumerate(names)
        ]

    @staticmethod
    def target(loaded: Loaded, value: Any) -> int | None:
        """The class asked for (None: the top-1), from an index, a menu value or a name."""
        text = str(value if value is not None else "").strip()
        if text in {"", TOP1}:
            return None
        menu = re.fullmatch(r".* · (\d+)", text)
        try:
            return loaded.explainer.class_index(menu.group(1) if menu else text)
        except TTameError as exc:
            raise user_error(exc) from exc

    def run_method(
        self, loaded: Loaded, method: str, x: torch.Tensor, target: int | None
    ) -> tuple[Explanation, float]:
        """One method's explanation of one image, and the seconds it took."""
        if method != TTAME and method not in self.config.methods:
            known = ", ".join([TTAME, *self.config.methods])
            raise user_error(f"Unknown method '{method}'; choose one of {known}.")
        with loaded.lock:
            if method == TTAME:
                maker: Any = loaded.explainer
            else:
                maker = loaded.method(
                    method, self.config.methods[method], self.config.method_options
                )
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UntrainedHeadWarning)
                try:
                    result = maker.explain(x[None], target)
                except TTameError as exc:
                    raise user_error(exc) from exc
            return result, time.perf_counter() - start

    def prepare(
        self, image: Any, backbone: str, repo: str, target: Any
    ) -> tuple[Loaded, Image.Image, torch.Tensor, Geometry, int | None]:
        """Everything a click starts from: the explainer, the photo, its input, the class."""
        loaded = self.model(backbone, repo)
        photo = self.read_image(image)
        x, geometry = loaded.explainer.preprocess(photo)
        return loaded, photo, x, geometry, self.target(loaded, target)

    @staticmethod
    def classifier(loaded: Loaded) -> Callable[[torch.Tensor], torch.Tensor]:
        """The backbone as a metric calls it: raw images to logits, one pass at a time."""

        def classify(images: torch.Tensor) -> torch.Tensor:
            with loaded.lock, torch.no_grad():
                return loaded.explainer.backbone(images)

        return classify

    # ---- actions --------------------------------------------------------------------------
    def load(
        self,
        backbone: str,
        repo: str,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's way
    ) -> Menu:
        """Load (or fetch from the cache) the chosen backbone: its class menu and head status.

        A head not yet on disk downloads here once, its progress shown; later visitors find it
        in memory (the explainer cache) or on disk.
        """
        progress(0.0, desc=f"Loading {(repo or '').strip() or backbone}")
        loaded = self.model(backbone, repo)
        menu = gr.update(choices=self.class_choices(loaded), value=TOP1)
        return Menu(menu, self.head_status(loaded, repo))

    def explain(
        self,
        image: Any,
        backbone: str,
        repo: str,
        target: Any,
        alpha: float,
        colormap: str,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's way
    ) -> Explained:
        """Explain the photo for the chosen class: overlay, bare map, prediction, top-5.

        The first explanation with a head not yet downloaded shows the download's progress.
        """
        loaded, photo, x, geometry, cls = self.prepare(image, backbone, repo, target)
        explainer = loaded.explainer
        spec = explainer.spec
        result, seconds = self.run_method(loaded, TTAME, x, cls)
        shown_image, shown_geometry = display_copy(photo, geometry)
        heat = unseen_nan(result.maps[0], shown_geometry)
        probabilities = result.probabilities[0]
        index = int(result.classes[0])
        top = torch.topk(probabilities, k=min(5, probabilities.numel()))
        names = explainer.categories
        top5 = [
            (f"{names[int(i)]} — {float(p):.1%}", str(int(i)))
            for p, i in zip(top.values, top.indices, strict=True)
        ]
        text = (
            f"### {names[index]}\nclass {index}, probability **{float(probabilities[index]):.1%}**"
            f" · T-TAME map in {seconds * 1000:.0f} ms · backbone `{spec.name}`\n\n"
            + provenance_line(explainer.provenance)
        )
        if not explainer.trained:
            text = (
                '<p class="untrained">UNTRAINED HEAD: this map is NOT an explanation '
                f"(no trained head for {spec.name}).</p>\n\n" + text
            )
        picked = str(index) if any(v == str(index) for _, v in top5) else None
        return Explained(
            overlay=overlay(shown_image, heat, float(alpha), colormap),
            heatmap=heatmap(heat, colormap),
            prediction=text,
            top5=gr.update(choices=top5, value=picked),
            status=self.head_status(loaded, repo),
            compare_ttame=None,
            compare_baseline=None,
            timings="",
            shown=Shown(shown_image, {TTAME: heat}),
        )

    def restyle(self, shown: Shown | None, alpha: float, colormap: str) -> Restyled:
        """Re-colour the last pictures with a new opacity or colour map (no model pass)."""
        if shown is None or TTAME not in shown.maps:
            return Restyled(gr.skip(), gr.skip(), gr.skip(), gr.skip())
        ours = overlay(shown.image, shown.maps[TTAME], float(alpha), colormap)
        bare = heatmap(shown.maps[TTAME], colormap)
        other = [heat for name, heat in shown.maps.items() if name != TTAME]
        if not other:
            return Restyled(ours, bare, gr.skip(), gr.skip())
        return Restyled(ours, bare, ours, overlay(shown.image, other[0], float(alpha), colormap))

    @budgeted("The comparison")
    def compare(
        self,
        image: Any,
        backbone: str,
        repo: str,
        target: Any,
        method: str,
        alpha: float,
        colormap: str,
        shown: Shown | None,
    ) -> Compared:
        """The same class by T-TAME and by a baseline, side by side, with each one's time."""
        loaded, photo, x, geometry, cls = self.prepare(image, backbone, repo, target)
        ours, ours_seconds = self.run_method(loaded, TTAME, x, cls)
        cls = int(ours.classes[0])
        theirs, their_seconds = self.run_method(loaded, method, x, cls)
        shown_image, shown_geometry = display_copy(photo, geometry)
        heats = {
            TTAME: unseen_nan(ours.maps[0], shown_geometry),
            method: unseen_nan(theirs.maps[0], shown_geometry),
        }
        note = ""
        if method == "rise" and self.config.method_options is not None:
            note = f" ({self.config.method_options.rise_masks} masks)"
        costs = {name: entry.cost for name, entry in METHODS.items()}
        rows = [(TTAME, ours_seconds, ""), (method, their_seconds, note)]
        return Compared(
            ttame=overlay(shown_image, heats[TTAME], float(alpha), colormap),
            baseline=overlay(shown_image, heats[method], float(alpha), colormap),
            timings=timings_table(loaded.explainer.categories[cls], cls, rows, costs)
            + "\n"
            + provenance_line(loaded.explainer.provenance),
            shown=Shown(shown_image, heats),
        )

    @budgeted("The AD/IC measurement")
    def adic(
        self,
        image: Any,
        backbone: str,
        repo: str,
        target: Any,
        method: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way to ask for progress
    ) -> Measured:
        """AD and IC for this photo, class and method: the masked photos, the bars, the scores.

        For this one photo AD is the drop of the class probability in % and IC whether the
        masked photo is more confident than the clean one (the averages over a data set are
        what the paper reports).
        """
        progress(0.0, desc=f"Explaining with {label(method)}")
        loaded, _, x, _, cls = self.prepare(image, backbone, repo, target)
        result, seconds = self.run_method(loaded, method, x, cls)
        cls = int(result.classes[0])
        progress(0.4, desc="Keeping the top 100, 50 and 15 % of the map")
        progress(0.6, desc="Asking the backbone about the masked photos")
        clean = float(result.probabilities[0, cls])
        report = photo_adic(self.classifier(loaded), x, result.maps[0], cls, clean)
        name = loaded.explainer.categories[cls]
        numbers: dict[str, Any] = {
            "metric": "AD/IC",
            "method": method,
            "class_index": cls,
            "class_name": name,
            "clean_probability": report.clean_probability,
            "percents": report.percents,
            "probability": report.probability,
            "drop": report.drop,
            "increase": report.increase,
            "map_seconds": seconds,
        }
        gallery = [
            (picture(image_), f"top {p:g} % kept: p = {o:.1%} (clean {clean:.1%})")
            for p, image_, o in zip(report.percents, report.images, report.probability, strict=True)
        ]
        progress(1.0, desc="Plotting")
        summary = adic_summary(report, name, method, seconds)
        summary += "\n" + provenance_line(loaded.explainer.provenance)
        return Measured(gallery, adic_figure(report, name, method), summary, numbers)

    @budgeted("The ROAD measurement")
    def road(
        self,
        image: Any,
        backbone: str,
        repo: str,
        target: Any,
        method: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way to ask for progress
    ) -> Measured:
        """ROAD for this photo, class and method: every imputed image, the curves, the scores.

        The label is the class explained (the top-1 by default): ROAD asks whether the
        backbone still says it once pixels are gone.
        """
        progress(0.0, desc=f"Explaining with {label(method)}")
        loaded, _, x, _, cls = self.prepare(image, backbone, repo, target)
        result, seconds = self.run_method(loaded, method, x, cls)
        cls = int(result.classes[0])
        progress(0.3, desc="Removing 10-90 % of the pixels and imputing them (14 images)")
        clean = float(result.probabilities[0, cls])
        report = photo_road(self.classifier(loaded), x, result.maps[0], cls, clean)
        progress(0.8, desc="Asking the backbone about the imputed images")
        name = loaded.explainer.categories[cls]
        numbers: dict[str, Any] = {
            "metric": "ROAD",
            "method": method,
            "class_index": cls,
            "class_name": name,
            "clean_probability": clean,
            "fractions": report.fractions,
            "map_seconds": seconds,
            **report.curves,
        }
        gallery = []
        for order, curve in report.curves.items():
            kept_and_p = zip(curve["accuracy"], curve["probability"], strict=True)
            for fraction, image_, (kept, p) in zip(
                report.fractions, report.images[order], kept_and_p, strict=True
            ):
                verdict = "still" if kept else "no longer"
                caption = f"{order} {fraction:.0%} removed: {verdict} {name}, p = {p:.1%}"
                gallery.append((picture(image_), caption))
        progress(1.0, desc="Plotting")
        summary = road_summary(report, name, method, seconds)
        summary += "\n" + provenance_line(loaded.explainer.provenance)
        return Measured(gallery, road_figure(report, name, method), summary, numbers)

"""The Gradio app: explain a photo, pick the class, compare with a baseline, measure live.

Everything here is wiring: the maps come from :class:`~ttame.explainer.Explainer` and the
baselines' ``explain``, the geometry and colours from :mod:`ttame.images`, the scores from
:mod:`ttame.metrics`. Every action is a named API endpoint, so ``gradio_client`` drives the
app exactly as the browser does. Errors a user can cause become a message in the page; the
server keeps serving.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from PIL import Image

from ttame.app_state import (
    ExplainerCache,
    Loaded,
    MethodFactory,
    backbone_choices,
    load_explainer,
    time_budget,
)
from ttame.backbones import DEFAULT_BACKBONE, list_backbones
from ttame.errors import HeadError, TimeBudgetError, TTameError
from ttame.explainer import REPO_ID, Explainer, UntrainedHeadWarning, load_head
from ttame.images import Geometry, heatmap, load_image, map_to_original, overlay, preprocess
from ttame.methods import METHODS, MethodOptions
from ttame.metrics import perturbation, road_cpu
from ttame.metrics.road import road_scores

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
TTAME = "ttame"
"""The registry name of T-TAME itself, as in ``ttame.methods.METHODS``."""
TOP1 = "top-1"
METHOD_LABELS = {
    TTAME: "T-TAME",
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "scorecam": "Score-CAM",
    "rise": "RISE",
    "random": "random map",
    "centre": "centre Gaussian",
}
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
ROAD_ORDERS = ("MoRF", "LeRF")
COLORMAPS = ("jet", "turbo", "inferno", "viridis", "magma", "gray")
DISPLAY_SIDE = 1024
"""Longest side of the pictures sent back: big enough to see, small enough to send fast."""
MAX_FILE_SIZE = "20mb"
TIME_BUDGET = 60.0
STATE_SESSIONS = 100
"""Browser sessions whose last pictures are kept for restyling; the oldest are dropped."""
STATE_SECONDS = 3600
"""How long a session's last pictures are kept."""
FILE_CLEANUP = (3600, 3600)
"""Every hour, delete uploaded and generated files older than an hour."""
"""Seconds a comparison or a measurement may take before it is stopped with a message."""
CSS = """
#prediction .untrained, .untrained { color: #b00020; font-weight: 700; }
"""

EXPLAINER_TEXT = """
**The map.** T-TAME is a small attention head trained on top of a frozen classifier. For the
class you choose it paints where the classifier's features point to that class: red is where
the evidence is strongest, blue where there is none. The map is computed in *one* forward pass
of the classifier, so it is fast enough to follow every click. It shows what the *classifier*
used, not where the object is: a map on the background can be a true (and useful) finding.

**The classes.** The top-5 are the classifier's own predictions with their probabilities; you
can also ask about any other class by name and see where, if anywhere, it finds evidence.

**Compare.** Grad-CAM and friends make maps by other means (gradients, or many masked
copies of the image); the times show what one-pass explanation saves.

**Measure.** A good map points at what the classifier needs.
*Average Drop (AD)*: keep only the top 100/50/15 % of the map's pixels (the rest go black)
and see how much of the class probability survives; lower drop is better. *Increase in
Confidence (IC)*: whether the masked image is even more confident; higher is better.
*ROAD*: remove 10-90 % of the pixels, most relevant first (MoRF: the prediction should
collapse fast, lower is better) or least relevant first (LeRF: it should hold, higher is
better); removed pixels are filled in from their neighbours so that the holes themselves do
not give the answer away.
"""


@dataclass
class AppConfig:
    """What the app offers: backbones (the first is the default), heads, methods, photos."""

    backbones: list[str] = field(default_factory=lambda: [DEFAULT_BACKBONE])
    heads: dict[str, str] = field(default_factory=dict)
    """Head folder per backbone; without one the bundled ``checkpoints/<backbone>`` is used."""
    methods: dict[str, MethodFactory] = field(default_factory=dict)
    """Baselines for Compare and Measure, by registry name."""
    method_options: Any = None
    """Passed to every method factory (``ttame.methods.MethodOptions``)."""
    examples_dir: Path = EXAMPLES_DIR
    cache_size: int = 3
    time_budget: float | None = TIME_BUDGET
    """Seconds a comparison or a measurement may run (None: no limit)."""
    hub_backbones: list[str] = field(default_factory=list_backbones)
    """Backbones a head typed in as a Hub repo id may use (their sizes are known)."""


@dataclass
class Shown:
    """The pictures of the last explanation, kept per browser session for restyling."""

    image: Image.Image
    maps: dict[str, np.ndarray] = field(default_factory=dict)


def label(method: str) -> str:
    """A method's name as people write it."""
    return METHOD_LABELS.get(method, method)


def default_methods() -> tuple[dict[str, MethodFactory], Any]:
    """The baselines of the method registry (all but T-TAME) and the app's options for them.

    RISE draws 1000 masks instead of the reference's 4000: a click should take seconds, not a
    minute, on a small CPU; the comparison table says so.
    """
    return {k: v for k, v in METHODS.items() if k != TTAME}, MethodOptions(rise_masks=1000)


def output_picture(title: str, elem_id: str) -> gr.Image:
    """An output picture: sent as JPEG (a fraction of PNG's bytes for photos), not editable."""
    return gr.Image(label=title, type="pil", format="jpeg", interactive=False, elem_id=elem_id)


def picture(image: torch.Tensor) -> Image.Image:
    """A raw ``3 x H x W`` tensor (imputation may overshoot [0, 1]) as an RGB picture."""
    array = image.detach().float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0)
    return Image.fromarray(array.cpu().numpy())


def probability_axes(clean_probability: float) -> tuple[Any, Any]:
    """A figure for a class probability under perturbation, with the clean photo's as a line."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.6), layout="constrained")
    axes = figure.add_subplot()
    axes.axhline(clean_probability, color="gray", linestyle="--", label="clean photo")
    return figure, axes


def road_figure(scores: dict[str, Any], class_name: str, method: str) -> Any:
    """The class probability as pixels go, MoRF and LeRF; hollow marks: prediction lost."""
    figure, axes = probability_axes(scores["clean_probability"])
    percent = [100 * f for f in scores["fractions"]]
    for order, colour in zip(ROAD_ORDERS, ("tab:red", "tab:blue"), strict=True):
        curve = scores[order]
        axes.plot(
            percent,
            curve["probability"],
            "-",
            color=colour,
            label=f"{order} (ROAD {curve['mean']:.2f})",
        )
        for x, y, kept in zip(percent, curve["probability"], curve["accuracy"], strict=True):
            axes.plot(x, y, "o", color=colour, markerfacecolor=colour if kept else "white")
    axes.set(
        xlabel="pixels removed and imputed (%)",
        ylabel=f"p({class_name})",
        ylim=(0, 1.02),
        title=f"ROAD: {label(method)} map",
    )
    axes.legend(loc="best", fontsize="small")
    return figure


def adic_figure(report: dict[str, Any], class_name: str, method: str) -> Any:
    """The class probability on the photo masked to its top 100, 50, 15 %, against the clean."""
    figure, axes = probability_axes(report["clean_probability"])
    kept = [f"{p:g} %" for p in report["percents"]]
    bars = axes.bar(kept, report["probability"], color="tab:orange", label="masked photo")
    axes.bar_label(bars, labels=[f"drop {d:.0f} %" for d in report["drop"]], fontsize="small")
    axes.set(
        xlabel="top of the map kept",
        ylabel=f"p({class_name})",
        ylim=(0, 1.1),
        title=f"Average Drop / Increase in Confidence: {label(method)} map",
    )
    axes.legend(loc="upper right", fontsize="small")
    return figure


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


def example_photos(folder: Path) -> list[tuple[Path, str]]:
    """The bundled photos and their credits, read from the folder's ``SOURCES.md`` table."""
    credits = {}
    sources = folder / "SOURCES.md"
    if sources.is_file():
        for line in sources.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 2 and re.search(r"\.(jpe?g|png|webp)$", cells[0], re.I):
                credits[cells[0]] = cells[-1]
    photos = sorted(p for p in folder.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    return [(p, f"{p.stem}: {credits.get(p.name, 'source not recorded')}") for p in photos]


def display_copy(image: Image.Image, geometry: Geometry) -> tuple[Image.Image, Geometry]:
    """The photo shrunk to :data:`DISPLAY_SIDE` at most, with the geometry scaled alike."""
    width, height = image.size
    scale = min(1.0, DISPLAY_SIDE / max(width, height))
    if scale == 1.0:
        return image, geometry
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    sx, sy = size[0] / width, size[1] / height
    left, top, right, bottom = geometry.crop_box
    small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return small, replace(
        geometry, original_size=size, crop_box=(left * sx, top * sy, right * sx, bottom * sy)
    )


def _path(payload: Any) -> tuple[str, str]:
    """The server-side path of an uploaded image and the name its owner gave it."""
    if isinstance(payload, dict):
        path = payload.get("path")
        return str(path or ""), str(payload.get("orig_name") or Path(str(path or "")).name)
    return str(payload or ""), Path(str(payload or "")).name


class TTameApp:
    """The callbacks; :func:`build_app` wires them to components."""

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
        return load_explainer(head, backbone)

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
                if not REPO_ID.match(repo) or ".." in repo:
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
        where = f"Hub repo {repo.strip()}" if repo and repo.strip() else "bundled head"
        if not explainer.trained:
            return (
                f"WARNING: backbone {explainer.spec.name} has NO trained head; the maps are "
                "from an UNTRAINED head and are NOT explanations."
            )
        return f"Backbone {explainer.spec.name}, {where} ({explainer.head.num_classes} classes)."

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
    ) -> tuple[Any, float]:
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
        spec = loaded.explainer.spec
        x, geometry = preprocess(photo, spec.input_size, spec.resize_size)
        return loaded, photo, x, geometry, self.target(loaded, target)

    @staticmethod
    def classifier(loaded: Loaded) -> Any:
        """The backbone as a metric calls it: raw images to logits, one pass at a time."""

        def classify(images: torch.Tensor) -> torch.Tensor:
            with loaded.lock, torch.no_grad():
                return loaded.explainer.backbone(images)

        return classify

    # ---- actions --------------------------------------------------------------------------
    def load(self, backbone: str, repo: str) -> tuple[Any, str]:
        """Load (or fetch from the cache) the chosen backbone: its class menu and head status."""
        loaded = self.model(backbone, repo)
        return gr.update(choices=self.class_choices(loaded), value=TOP1), self.head_status(
            loaded, repo
        )

    def explain(
        self, image: Any, backbone: str, repo: str, target: Any, alpha: float, colormap: str
    ) -> tuple[Any, ...]:
        """Explain the photo for the chosen class: overlay, bare map, prediction, top-5."""
        loaded, photo, x, geometry, cls = self.prepare(image, backbone, repo, target)
        explainer = loaded.explainer
        spec = explainer.spec
        result, seconds = self.run_method(loaded, TTAME, x, cls)
        shown_image, shown_geometry = display_copy(photo, geometry)
        heat = map_to_original(result.maps[0], shown_geometry)
        shown = Shown(shown_image, {TTAME: heat})
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
            f" · T-TAME map in {seconds * 1000:.0f} ms · backbone `{spec.name}`"
        )
        if not explainer.trained:
            text = (
                '<p class="untrained">UNTRAINED HEAD: this map is NOT an explanation '
                f"(no trained head for {spec.name}).</p>\n\n" + text
            )
        return (
            overlay(shown_image, heat, float(alpha), colormap),
            heatmap(heat, colormap),
            text,
            gr.update(
                choices=top5, value=str(index) if any(v == str(index) for _, v in top5) else None
            ),
            self.head_status(loaded, repo),
            None,
            None,
            "",
            shown,
        )

    def restyle(self, shown: Shown | None, alpha: float, colormap: str) -> tuple[Any, ...]:
        """Re-colour the last pictures with a new opacity or colour map (no model pass)."""
        if shown is None or TTAME not in shown.maps:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        ours = overlay(shown.image, shown.maps[TTAME], float(alpha), colormap)
        bare = heatmap(shown.maps[TTAME], colormap)
        other = [heat for name, heat in shown.maps.items() if name != TTAME]
        if not other:
            return ours, bare, gr.skip(), gr.skip()
        return ours, bare, ours, overlay(shown.image, other[0], float(alpha), colormap)

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
    ) -> tuple[Any, ...]:
        """The same class by T-TAME and by a baseline, side by side, with each one's time."""
        loaded, photo, x, geometry, cls = self.prepare(image, backbone, repo, target)
        ours, ours_seconds = self.run_method(loaded, TTAME, x, cls)
        cls = int(ours.classes[0])
        theirs, their_seconds = self.run_method(loaded, method, x, cls)
        shown_image, shown_geometry = display_copy(photo, geometry)
        heats = {
            TTAME: map_to_original(ours.maps[0], shown_geometry),
            method: map_to_original(theirs.maps[0], shown_geometry),
        }
        name = loaded.explainer.categories[cls]
        note = ""
        if method == "rise" and self.config.method_options is not None:
            note = f" ({self.config.method_options.rise_masks} masks)"
        table = (
            f"Class **{name}** ({cls})\n\n| method | time |\n|---|---|\n"
            f"| {label(TTAME)} | {ours_seconds * 1000:.0f} ms |\n"
            f"| {label(method)}{note} | {their_seconds * 1000:.0f} ms |\n"
        )
        return (
            overlay(shown_image, heats[TTAME], float(alpha), colormap),
            overlay(shown_image, heats[method], float(alpha), colormap),
            table,
            Shown(shown_image, heats),
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
    ) -> tuple[Any, ...]:
        """AD and IC for this photo, class and method: the masked photos, the bars, the scores.

        For this one photo AD is the drop of the class probability in % and IC whether the
        masked photo is more confident than the clean one (the averages over a data set are
        what the paper reports).
        """
        progress(0.0, desc=f"Explaining with {label(method)}")
        loaded, _, x, _, cls = self.prepare(image, backbone, repo, target)
        result, seconds = self.run_method(loaded, method, x, cls)
        cls = int(result.classes[0])
        percents = perturbation.DEFAULT_PERCENTS
        progress(0.4, desc="Keeping the top 100, 50 and 15 % of the map")
        masked = perturbation.masked_images(x[None], result.maps, percents)[:, 0]
        progress(0.6, desc="Asking the backbone about the masked photos")
        classes = torch.tensor([cls])
        after = perturbation.masked_confidence(
            self.classifier(loaded), x[None], result.maps, classes, percents
        )
        before = result.probabilities[:, cls]
        name = loaded.explainer.categories[cls]
        report: dict[str, Any] = {
            "metric": "AD/IC",
            "method": method,
            "class_index": cls,
            "class_name": name,
            "clean_probability": float(before[0]),
            "percents": list(percents),
            "probability": after[0].tolist(),
            "drop": perturbation.drop_per_image(before, after)[0].tolist(),
            "increase": perturbation.increase_per_image(before, after)[0].tolist(),
            "map_seconds": seconds,
        }
        gallery = [
            (
                picture(image_),
                f"top {p:g} % kept: p = {o:.1%} (clean {report['clean_probability']:.1%})",
            )
            for p, image_, o in zip(percents, masked, report["probability"], strict=True)
        ]
        summary = (
            f"**AD / IC** for **{name}** with the {label(method)} map (made in "
            f"{seconds * 1000:.0f} ms); clean probability {report['clean_probability']:.1%}.\n\n"
            "| top of the map kept | probability | drop (AD term) | more confident (IC term) |\n"
            "|---|---|---|---|\n"
            + "".join(
                f"| {p:g} % | {o:.1%} | {d:.1f} % | {'yes' if i else 'no'} |\n"
                for p, o, d, i in zip(
                    percents,
                    report["probability"],
                    report["drop"],
                    report["increase"],
                    strict=True,
                )
            )
        )
        progress(1.0, desc="Plotting")
        return gallery, adic_figure(report, name, method), summary, report

    @budgeted("The ROAD measurement")
    def road(
        self,
        image: Any,
        backbone: str,
        repo: str,
        target: Any,
        method: str,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's way to ask for progress
    ) -> tuple[Any, ...]:
        """ROAD for this photo, class and method: every imputed image, the curves, the scores.

        The label is the class explained (the top-1 by default): ROAD asks whether the
        backbone still says it once pixels are gone.
        """
        progress(0.0, desc=f"Explaining with {label(method)}")
        loaded, _, x, _, cls = self.prepare(image, backbone, repo, target)
        result, seconds = self.run_method(loaded, method, x, cls)
        cls = int(result.classes[0])
        classify = self.classifier(loaded)
        progress(0.3, desc="Removing 10-90 % of the pixels and imputing them (14 images)")
        scores = road_scores(
            classify,
            x[None],
            result.maps,
            ROAD_FRACTIONS,
            ROAD_ORDERS,
            labels=torch.tensor([cls]),
            return_images=True,
        )
        progress(0.8, desc="Asking the backbone about the imputed images")
        name = loaded.explainer.categories[cls]
        report: dict[str, Any] = {
            "metric": "ROAD",
            "method": method,
            "class_index": cls,
            "class_name": name,
            "clean_probability": float(result.probabilities[0, cls]),
            "fractions": list(ROAD_FRACTIONS),
            "map_seconds": seconds,
        }
        gallery = []
        for order in ROAD_ORDERS:
            imputed = scores["images"][order][:, 0]
            probability = classify(imputed).softmax(1)[:, cls].tolist()
            report[order] = {
                "accuracy": scores[order]["accuracy"],
                "mean": scores[order]["mean"],
                "probability": probability,
            }
            for fraction, image_, p, kept in zip(
                ROAD_FRACTIONS, imputed, probability, scores[order]["accuracy"], strict=True
            ):
                verdict = "still" if kept else "no longer"
                gallery.append(
                    (
                        picture(image_),
                        f"{order} {fraction:.0%} removed: {verdict} {name}, p = {p:.1%}",
                    )
                )
        summary = (
            f"**ROAD** for **{name}** with the {label(method)} map (made in "
            f"{seconds * 1000:.0f} ms).\n\n| order | prediction kept at "
            f"{', '.join(f'{f:.0%}' for f in ROAD_FRACTIONS)} removed | ROAD | better |\n"
            "|---|---|---|---|\n"
            + "".join(
                f"| {order} | {' '.join('✓' if a else '✗' for a in report[order]['accuracy'])} "
                f"| {report[order]['mean']:.2f} | {better} |\n"
                for order, better in zip(ROAD_ORDERS, ("lower", "higher"), strict=True)
            )
        )
        progress(1.0, desc="Plotting")
        return gallery, road_figure(report, name, method), summary, report


def build_app(
    backbones: Sequence[str] | None = None,
    heads: dict[str, str] | None = None,
    methods: dict[str, MethodFactory] | None = None,
    method_options: Any = None,
    examples_dir: str | Path = EXAMPLES_DIR,
    cache_size: int = 3,
    time_budget: float | None = TIME_BUDGET,
) -> gr.Blocks:
    """The whole app as Gradio Blocks (not launched); see :func:`serve` to run it.

    ``backbones`` lists the offered backbones, the first being the default; ``heads`` maps a
    backbone to a head folder (otherwise the bundled one); ``methods`` replaces the registry's
    baselines (and ``method_options`` their options); ``time_budget`` bounds the seconds of a
    comparison or a measurement.
    """
    if methods is None:
        methods, method_options = default_methods()
    config = AppConfig(
        backbones=list(backbones or [DEFAULT_BACKBONE]),
        heads={k: str(v) for k, v in (heads or {}).items()},
        methods=dict(methods),
        method_options=method_options,
        examples_dir=Path(examples_dir),
        cache_size=cache_size,
        time_budget=time_budget,
    )
    app = TTameApp(config)
    photos = example_photos(config.examples_dir)
    default = app.offered[0]
    default_classes = app.class_choices(app.model(default, None))
    baselines = [(label(name), name) for name in config.methods]

    with gr.Blocks(
        title="T-TAME: where did the classifier look?", delete_cache=FILE_CLEANUP
    ) as demo:
        shown = gr.State(None, time_to_live=STATE_SECONDS)
        gr.Markdown(
            "# T-TAME: where did the classifier look?\nUpload a photo (or pick an example), "
            "choose a backbone and a class, and see the explanation on your photo."
        )
        with gr.Accordion("What am I looking at?", open=False):
            gr.Markdown(EXPLAINER_TEXT)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    label="Photo",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    elem_id="photo",
                    height=320,
                )
                if photos:
                    gr.Examples(
                        [[str(p)] for p, _ in photos],
                        inputs=[image],
                        example_labels=[label for _, label in photos],
                        label="Example photos",
                    )
                backbone = gr.Dropdown(
                    app.menu, value=default, label="Backbone", elem_id="backbone"
                )
                repo = gr.Textbox(
                    label="…or a head from the Hugging Face Hub (repo id, optional)",
                    placeholder="owner/name",
                    elem_id="repo",
                )
                target = gr.Dropdown(
                    default_classes,
                    value=TOP1,
                    label="Class to explain (type to search)",
                    allow_custom_value=True,
                    elem_id="target",
                )
                run = gr.Button("Explain", variant="primary", elem_id="explain")
                status = gr.Textbox(
                    app.head_status(app.model(default, None), None),
                    label="Status",
                    interactive=False,
                    elem_id="status",
                )
            with gr.Column(scale=2):
                prediction = gr.Markdown(label="Prediction", elem_id="prediction")
                with gr.Row():
                    shown_overlay = output_picture("Explanation on your photo", "overlay")
                    bare = output_picture("The map alone", "heatmap")
                with gr.Row():
                    alpha = gr.Slider(0, 1, 0.5, step=0.05, label="Opacity", elem_id="alpha")
                    colormap = gr.Dropdown(
                        list(COLORMAPS), value="jet", label="Colour map", elem_id="colormap"
                    )
                top5 = gr.Radio(
                    [], label="Top-5 predictions (click one to explain it)", elem_id="top5"
                )
        gr.Markdown("## Compare with a baseline")
        with gr.Row():
            method = gr.Dropdown(
                baselines,
                value=baselines[0][1] if baselines else None,
                label="Baseline",
                elem_id="method",
            )
            compare = gr.Button("Compare", elem_id="compare", interactive=bool(baselines))
        with gr.Row():
            ours = output_picture("T-TAME", "compare-ttame")
            theirs = output_picture("Baseline", "compare-baseline")
        timings = gr.Markdown(label="Timings", elem_id="timings")
        gr.Markdown(
            "## Measure the map on this photo\nHow much does the backbone need the pixels the "
            "map points at? (See *What am I looking at?* above.)"
        )
        with gr.Row():
            measured = gr.Dropdown(
                [(label(TTAME), TTAME), *baselines],
                value=TTAME,
                label="Map to measure",
                elem_id="measure-method",
            )
            run_adic = gr.Button("AD / IC (keep 100, 50, 15 %)", elem_id="adic")
            run_road = gr.Button("ROAD (remove 10-90 %)", elem_id="road")
        summary = gr.Markdown(label="Scores", elem_id="scores")
        with gr.Row():
            curves = gr.Plot(label="Curves", elem_id="curves")
            steps = gr.Gallery(
                label="The images the backbone saw at each step",
                columns=4,
                format="jpeg",
                elem_id="steps",
            )
        with gr.Accordion("The numbers (JSON)", open=False):
            numbers = gr.JSON(label="Numbers", elem_id="numbers")
        if photos:
            with gr.Accordion("Where the example photos come from", open=False):
                gr.Markdown("\n".join(f"- {label}" for _, label in photos))

        explain_inputs = [image, backbone, repo, target, alpha, colormap]
        explain_outputs = [
            shown_overlay,
            bare,
            prediction,
            top5,
            status,
            ours,
            theirs,
            timings,
            shown,
        ]
        run.click(
            app.explain, explain_inputs, explain_outputs, api_name="explain", preprocess=False
        )
        target.input(
            app.explain,
            explain_inputs,
            explain_outputs,
            api_name="explain_class",
            api_visibility="private",
            preprocess=False,
        )
        top5.input(lambda v: v, top5, target, api_name="pick_class").then(
            app.explain,
            explain_inputs,
            explain_outputs,
            api_name="explain_pick",
            api_visibility="private",
            preprocess=False,
        )
        gr.on(
            [backbone.input, repo.submit],
            app.load,
            [backbone, repo],
            [target, status],
            api_name="load",
            preprocess=False,
        )
        gr.on(
            [alpha.change, colormap.change],
            app.restyle,
            [shown, alpha, colormap],
            [shown_overlay, bare, ours, theirs],
            api_name="restyle",
            preprocess=False,
            show_progress="hidden",
        )
        compare.click(
            app.compare,
            [image, backbone, repo, target, method, alpha, colormap, shown],
            [ours, theirs, timings, shown],
            api_name="compare",
            preprocess=False,
        )
        measure_inputs = [image, backbone, repo, target, measured]
        measure_outputs = [steps, curves, summary, numbers]
        for button, fn, name in ((run_adic, app.adic, "adic"), (run_road, app.road, "road")):
            button.click(
                fn,
                measure_inputs,
                measure_outputs,
                api_name=name,
                preprocess=False,
                concurrency_id="measure",
                concurrency_limit=1,
            )
    return demo


def serve(
    demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True, **kwargs: Any
) -> gr.Blocks:
    """Queue and launch with the app's limits: file size, concurrency, queue length, sessions.

    Heavy measurements share one slot (see ``concurrency_id``); explanations take two, one per
    core, and a full queue turns new requests away instead of piling up memory, as does the
    cap on sessions whose pictures are kept.
    """
    # ROAD's solver compiles on first use (about 17 s once per machine): do it before a click.
    threading.Thread(target=road_cpu.warm_up, name="road-warm-up", daemon=True).start()
    demo.queue(default_concurrency_limit=2, max_size=32)
    demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=MAX_FILE_SIZE,
        state_session_capacity=STATE_SESSIONS,
        css=CSS,
        prevent_thread_lock=not block,
        show_error=False,
        **kwargs,
    )
    return demo

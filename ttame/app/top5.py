"""The Explain view's top-5 maps: the five most probable classes side by side, one pass.

``Explainer.explain(images, top=5)`` gives the five maps from a single backbone pass; each is
drawn on the photo like the main map and captioned with its class and probability. Opacity
and colour changes recolour the kept maps without a new pass, as the main map's do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr

from ttame.app.callbacks import TTameApp, unseen_nan, user_error
from ttame.app.figures import display_copy
from ttame.app.state import Shown
from ttame.errors import TTameError, UntrainedHeadWarning
from ttame.images import overlay

TOP = 5
"""Classes shown side by side."""


class TopMaps(NamedTuple):
    """``explain_top5``: the gallery (hidden when not asked for) and the maps kept for restyling."""

    gallery: Any
    shown: Shown | None


class TopFive:
    """The top-5 callbacks; :func:`wire_top5` connects them."""

    def __init__(self, app: TTameApp) -> None:
        self.app = app

    def maps(
        self,
        image: Any,
        backbone: str,
        repo: str,
        alpha: float = 0.5,
        colormap: str = "jet",
        show: bool = True,
    ) -> TopMaps:
        """The maps of the photo's five most probable classes, each with name and probability."""
        if not show:
            return TopMaps(gr.update(value=None, visible=False), None)
        loaded, photo, x, geometry, _ = self.app.prepare(image, backbone, repo, None)
        explainer = loaded.explainer
        try:
            with loaded.lock, warnings.catch_warnings():
                warnings.simplefilter("ignore", UntrainedHeadWarning)
                result = explainer.explain(x[None], top=min(TOP, explainer.head.num_classes))
        except TTameError as exc:
            raise user_error(exc) from exc
        shown_image, shown_geometry = display_copy(photo, geometry)
        heats = {
            f"{explainer.categories[cls]} — {probability:.1%}": unseen_nan(saliency, shown_geometry)
            for saliency, cls, probability in zip(
                result.maps[0], result.classes[0].tolist(), result.scores[0].tolist(), strict=True
            )
        }
        shown = Shown(shown_image, heats)
        return TopMaps(gr.update(value=self.pictures(shown, alpha, colormap), visible=True), shown)

    @staticmethod
    def pictures(shown: Shown, alpha: float, colormap: str) -> list[tuple[Any, str]]:
        """Each kept map on the photo, with its caption."""
        return [
            (overlay(shown.image, heat, float(alpha), colormap), caption)
            for caption, heat in shown.maps.items()
        ]

    def restyle(self, shown: Shown | None, alpha: float, colormap: str) -> Any:
        """The kept maps in a new opacity or colour map (no model pass; nothing if none)."""
        return gr.skip() if shown is None else self.pictures(shown, alpha, colormap)


@dataclass
class TopFiveSection:
    """The checkbox that asks for the top-5 maps and the gallery that shows them."""

    show: gr.Checkbox
    gallery: gr.Gallery
    shown: gr.State


def top5_section(state_seconds: float) -> TopFiveSection:
    """The checkbox and the (hidden until asked) gallery; its maps kept ``state_seconds``."""
    show = gr.Checkbox(
        False, label="Top-5 classes: their maps side by side (one pass)", elem_id="top5-maps"
    )
    gallery = gr.Gallery(
        label="The maps of the five most probable classes",
        columns=TOP,
        format="jpeg",
        visible=False,
        elem_id="top5-gallery",
    )
    return TopFiveSection(show, gallery, gr.State(None, time_to_live=state_seconds))


def wire_top5(
    top: TopFive,
    section: TopFiveSection,
    explain_triggers: list[Any],
    inputs: list[Any],
    style: list[Any],
) -> None:
    """Show the maps on Explain or on ticking the box; recolour them with the main map.

    ``inputs`` are the photo, the backbone and the Hub repo; ``style`` the opacity and the
    colour map.
    """
    gr.on(
        [*explain_triggers, section.show.change],
        top.maps,
        [*inputs, *style, section.show],
        [section.gallery, section.shown],
        api_name="explain_top5",
        preprocess=False,
    )
    gr.on(
        [s.change for s in style],
        top.restyle,
        [section.shown, *style],
        section.gallery,
        api_name="restyle_top5",
        api_visibility="private",
        preprocess=False,
        show_progress="hidden",
    )

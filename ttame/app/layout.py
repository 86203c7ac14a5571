"""The app's page: one function per section, the events wired in one place, and the server.

Every action is a named API endpoint, so ``gradio_client`` drives the app exactly as the
browser does (``/explain``, ``/explain_top5``, ``/load``, ``/pick_class``, ``/restyle``,
``/compare``, ``/adic``, ``/road``; in the Live tab ``/explain_frame`` and ``/explain_clip``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ttame.app.callbacks import TOP1, TTameApp
from ttame.app.live import LiveView, live_tab, wire_live
from ttame.app.state import (
    EXAMPLES_DIR,
    TIME_BUDGET,
    AppConfig,
    MethodFactory,
    default_methods,
    example_photos,
)
from ttame.app.top5 import TopFive, top5_section, wire_top5
from ttame.methods.registry import TTAME, label
from ttame.model.registry import DEFAULT_BACKBONE

COLORMAPS = ("jet", "turbo", "inferno", "viridis", "magma", "gray")
MAX_FILE_SIZE = "20mb"
STATE_SESSIONS = 100
"""Browser sessions whose last pictures are kept for restyling; the oldest are dropped."""
STATE_SECONDS = 3600
"""How long a session's last pictures are kept."""
FILE_CLEANUP = (300, 900)
"""Every 5 minutes, delete uploaded and generated files older than 15 minutes: the Live tab's
stream leaves one JPEG per frame in Gradio's cache (about 20 a second), so an hour's age would
let two streams fill gigabytes of a Space's disk."""
CSS = """
#prediction .untrained, .untrained { color: #b00020; font-weight: 700; }
"""

EXPLAINER_TEXT = """
**The map.** T-TAME is a small attention head trained on top of a frozen classifier. For the
class you choose it paints where the classifier's features point to that class: red is where
the evidence is strongest, blue where there is none; what lies outside the classifier's centre
crop it never saw, and stays untinted. The map is computed in *one* forward pass of the
classifier, so it is fast enough to follow every click. It shows what the *classifier*
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


def output_picture(title: str, elem_id: str) -> gr.Image:
    """An output picture: sent as JPEG (a fraction of PNG's bytes for photos), not editable."""
    return gr.Image(label=title, type="pil", format="jpeg", interactive=False, elem_id=elem_id)


@dataclass
class Inputs:
    """The left column: the photo, the backbone or Hub head, the class, the button, status."""

    image: gr.Image
    backbone: gr.Dropdown
    repo: gr.Textbox
    target: gr.Dropdown
    run: gr.Button
    status: gr.Textbox


@dataclass
class Outputs:
    """The right column: the prediction, the map on the photo and alone, its style, top-5."""

    prediction: gr.Markdown
    overlay: gr.Image
    bare: gr.Image
    alpha: gr.Slider
    colormap: gr.Dropdown
    top5: gr.Radio


@dataclass
class Comparison:
    """The baseline menu, its button, the two maps and their times."""

    method: gr.Dropdown
    button: gr.Button
    ours: gr.Image
    theirs: gr.Image
    timings: gr.Markdown


@dataclass
class Measurement:
    """The map to measure, the two metrics' buttons, and what they show."""

    method: gr.Dropdown
    adic: gr.Button
    road: gr.Button
    summary: gr.Markdown
    curves: gr.Plot
    steps: gr.Gallery
    numbers: gr.JSON


def inputs_section(app: TTameApp, photos: list[tuple[Path, str]]) -> Inputs:
    """The photo (with the example photos), the backbone, a Hub head, the class, Explain."""
    default = app.offered[0]
    image = gr.Image(
        label="Photo", type="filepath", sources=["upload", "clipboard"], elem_id="photo", height=320
    )
    if photos:
        gr.Examples(
            [[str(p)] for p, _ in photos],
            inputs=[image],
            example_labels=[text for _, text in photos],
            label="Example photos",
        )
    backbone = gr.Dropdown(app.menu, value=default, label="Backbone", elem_id="backbone")
    repo = gr.Textbox(
        label="…or a head from the Hugging Face Hub (repo id, optional)",
        placeholder="owner/name",
        elem_id="repo",
    )
    target = gr.Dropdown(
        app.class_choices(app.model(default, None)),
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
    return Inputs(image, backbone, repo, target, run, status)


def outputs_section() -> Outputs:
    """The prediction, the overlay and the bare map, opacity and colours, the top-5."""
    prediction = gr.Markdown(label="Prediction", elem_id="prediction")
    with gr.Row():
        shown_overlay = output_picture("Explanation on your photo", "overlay")
        bare = output_picture("The map alone", "heatmap")
    with gr.Row():
        alpha = gr.Slider(0, 1, 0.5, step=0.05, label="Opacity", elem_id="alpha")
        colormap = gr.Dropdown(list(COLORMAPS), value="jet", label="Colour map", elem_id="colormap")
    top5 = gr.Radio([], label="Top-5 predictions (click one to explain it)", elem_id="top5")
    return Outputs(prediction, shown_overlay, bare, alpha, colormap, top5)


def compare_section(baselines: list[tuple[str, str]]) -> Comparison:
    """Compare with a baseline: the same class by another method, side by side."""
    gr.Markdown("## Compare with a baseline")
    with gr.Row():
        method = gr.Dropdown(
            baselines,
            value=baselines[0][1] if baselines else None,
            label="Baseline",
            elem_id="method",
        )
        button = gr.Button("Compare", elem_id="compare", interactive=bool(baselines))
    with gr.Row():
        ours = output_picture("T-TAME", "compare-ttame")
        theirs = output_picture("Baseline", "compare-baseline")
    timings = gr.Markdown(label="Timings", elem_id="timings")
    return Comparison(method, button, ours, theirs, timings)


def measure_section(baselines: list[tuple[str, str]]) -> Measurement:
    """Measure the map on this photo: AD/IC and ROAD, with every image the backbone saw."""
    gr.Markdown(
        "## Measure the map on this photo\nHow much does the backbone need the pixels the "
        "map points at? (See *What am I looking at?* above.)"
    )
    with gr.Row():
        method = gr.Dropdown(
            [(label(TTAME), TTAME), *baselines],
            value=TTAME,
            label="Map to measure",
            elem_id="measure-method",
        )
        adic = gr.Button("AD / IC (keep 100, 50, 15 %)", elem_id="adic")
        road = gr.Button("ROAD (remove 10-90 %)", elem_id="road")
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
    return Measurement(method, adic, road, summary, curves, steps, numbers)


def wire(
    app: TTameApp,
    shown: gr.State,
    inputs: Inputs,
    outputs: Outputs,
    comparison: Comparison,
    measurement: Measurement,
) -> None:
    """Connect every event to its callback, each a named API endpoint."""
    explain_inputs = [
        inputs.image,
        inputs.backbone,
        inputs.repo,
        inputs.target,
        outputs.alpha,
        outputs.colormap,
    ]
    explain_outputs = [  # the fields of ttame.app.results.Explained, in order
        outputs.overlay,
        outputs.bare,
        outputs.prediction,
        outputs.top5,
        inputs.status,
        comparison.ours,
        comparison.theirs,
        comparison.timings,
        shown,
    ]
    inputs.run.click(
        app.explain, explain_inputs, explain_outputs, api_name="explain", preprocess=False
    )
    inputs.target.input(
        app.explain,
        explain_inputs,
        explain_outputs,
        api_name="explain_class",
        api_visibility="private",
        preprocess=False,
    )
    outputs.top5.input(lambda v: v, outputs.top5, inputs.target, api_name="pick_class").then(
        app.explain,
        explain_inputs,
        explain_outputs,
        api_name="explain_pick",
        api_visibility="private",
        preprocess=False,
    )
    gr.on(
        [inputs.backbone.input, inputs.repo.submit],
        app.load,
        [inputs.backbone, inputs.repo],
        [inputs.target, inputs.status],
        api_name="load",
        preprocess=False,
    )
    gr.on(
        [outputs.alpha.change, outputs.colormap.change],
        app.restyle,
        [shown, outputs.alpha, outputs.colormap],
        [outputs.overlay, outputs.bare, comparison.ours, comparison.theirs],
        api_name="restyle",
        preprocess=False,
        show_progress="hidden",
    )
    comparison.button.click(
        app.compare,
        [*explain_inputs[:4], comparison.method, outputs.alpha, outputs.colormap, shown],
        [comparison.ours, comparison.theirs, comparison.timings, shown],
        api_name="compare",
        preprocess=False,
    )
    measure_inputs = [*explain_inputs[:4], measurement.method]
    measure_outputs = [
        measurement.steps,
        measurement.curves,
        measurement.summary,
        measurement.numbers,
    ]
    for button, fn, name in (
        (measurement.adic, app.adic, "adic"),
        (measurement.road, app.road, "road"),
    ):
        button.click(
            fn,
            measure_inputs,
            measure_outputs,
            api_name=name,
            preprocess=False,
            concurrency_id="measure",
            concurrency_limit=1,
        )


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
        with gr.Tab("Explain", elem_id="explain-tab"):
            with gr.Row():
                with gr.Column(scale=1):
                    inputs = inputs_section(app, photos)
                with gr.Column(scale=2):
                    outputs = outputs_section()
                    top5 = top5_section(STATE_SECONDS)
            comparison = compare_section(baselines)
            measurement = measure_section(baselines)
            if photos:
                with gr.Accordion("Where the example photos come from", open=False):
                    gr.Markdown("\n".join(f"- {text}" for _, text in photos))
        with gr.Tab("Live", elem_id="live-tab"):
            live = live_tab(COLORMAPS, STATE_SECONDS)
        wire(app, shown, inputs, outputs, comparison, measurement)
        wire_top5(
            TopFive(app),
            top5,
            [inputs.run.click],
            [inputs.image, inputs.backbone, inputs.repo],
            [outputs.alpha, outputs.colormap],
        )
        wire_live(LiveView(app), live)
    return demo


def serve(
    demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True, **kwargs: Any
) -> gr.Blocks:
    """Queue and launch with the app's limits: file size, concurrency, queue length, sessions.

    Heavy measurements share one slot (see ``concurrency_id``); explanations take two, one per
    core, and a full queue turns new requests away instead of piling up memory, as does the
    cap on sessions whose pictures are kept.
    """
    from ttame.metrics.road import cpu_solver  # compiled with numba, an optional dependency

    # ROAD's solver compiles on first use (about 17 s once per machine): do it before a click.
    threading.Thread(target=cpu_solver.warm_up, name="road-warm-up", daemon=True).start()
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

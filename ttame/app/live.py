"""The Live tab: the webcam explained frame by frame at video rate, and uploaded clips.

Each webcam frame costs one backbone pass, the head and an overlay drawn in 8 bits
(:func:`ttame.video.explain_frames`), with the app's default backbone and its bundled head.
The browser streams frames through ``.stream``; the same function is the ``/explain_frame``
endpoint for clients. The frames per second shown are measured here, on the server, over the
last frames served to this browser session.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np

from ttame.app.callbacks import TTameApp, user_error
from ttame.app.state import Loaded
from ttame.errors import TTameError, UntrainedHeadWarning
from ttame.video import FrameResult, explain_frames, explain_video

FPS_WINDOW = 10
"""Frames over which the frames per second are measured."""
STREAM_EVERY = 0.05
"""Seconds between webcam frames sent by the browser (at most 20 per second); a frame that
arrives while the last one is still being explained replaces the one waiting."""
STREAM_SECONDS = 120
"""How long one webcam stream runs before the browser must start it again: a visitor who walks
away does not hold a slot for ever."""
LIVE_STREAMS = 2
"""Webcam streams served at once (one per core); more visitors wait in the queue."""
MAX_CLIP_FRAMES = 900
"""Longest uploaded clip, in frames (30 s at 30 fps); longer ones belong to the library."""
CLIP_BATCH = 8
"""Frames per backbone pass for an uploaded clip."""


@dataclass
class FrameClock:
    """When this session's last frames were served, for a frames-per-second figure."""

    stamps: deque[float] = field(default_factory=lambda: deque(maxlen=FPS_WINDOW))

    def tick(self) -> float | None:
        """Record a frame served now; the rate over the frames kept (None for the first)."""
        self.stamps.append(time.perf_counter())
        if len(self.stamps) < 2:
            return None
        return (len(self.stamps) - 1) / max(self.stamps[-1] - self.stamps[0], 1e-9)


class LiveFrame(NamedTuple):
    """``explain_frame``: the overlay at the frame's size, the line under it, the clock."""

    overlay: Any
    info: str
    clock: FrameClock


class LiveClip(NamedTuple):
    """``explain_clip``: the overlay clip, its per-frame top-1 as JSON Lines, a summary."""

    video: str
    frames: str
    summary: str


class LiveView:
    """The Live tab's callbacks, on the app's default explainer."""

    def __init__(self, app: TTameApp) -> None:
        self.app = app

    def loaded(self) -> Loaded:
        """The default backbone with its bundled head, from the app's cache."""
        return self.app.model(self.app.offered[0], None)

    def frame(
        self,
        frame: np.ndarray | None,
        alpha: float = 0.5,
        colormap: str = "jet",
        clock: FrameClock | None = None,
    ) -> LiveFrame:
        """One frame's top-1 map drawn on it, with the rate, the class and its probability."""
        if frame is None:
            raise user_error("Send a frame: start the webcam, or give a picture.")
        loaded = self.loaded()
        start = time.perf_counter()
        try:
            with loaded.lock, warnings.catch_warnings():
                warnings.simplefilter("ignore", UntrainedHeadWarning)
                drawn, explanation = explain_frames(loaded.explainer, frame, float(alpha), colormap)
        except TTameError as exc:
            raise user_error(exc) from exc
        seconds = time.perf_counter() - start
        clock = clock if clock is not None else FrameClock()
        rate = clock.tick()
        index = int(explanation.classes[0])
        name = loaded.explainer.categories[index]
        measured = "first frame" if rate is None else f"**{rate:.1f} fps**"
        info = (
            f"{measured} · {seconds * 1000:.0f} ms per frame · **{name}** "
            f"{float(explanation.scores[0]):.1%}"
        )
        if not loaded.explainer.trained:
            info = "UNTRAINED head: NOT an explanation · " + info
        return LiveFrame(drawn[0], info, clock)

    def clip(
        self,
        video: str | None,
        alpha: float = 0.5,
        colormap: str = "jet",
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's way
    ) -> LiveClip:
        """Every frame of an uploaded clip explained, written as a clip of the same size."""
        if not video:
            raise user_error("Upload a clip first.")
        source = Path(video)
        out = source.with_name(f"{source.stem}-ttame.mp4")
        loaded = self.loaded()
        progress(0.0, desc="Explaining the clip")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UntrainedHeadWarning)
                results = explain_video(
                    loaded.explainer,
                    source,
                    out,
                    batch=CLIP_BATCH,
                    alpha=float(alpha),
                    colormap=colormap,
                    max_frames=MAX_CLIP_FRAMES,
                    lock=loaded.lock,
                )
        except TTameError as exc:
            raise user_error(exc) from exc
        lines = out.with_suffix(".jsonl")
        lines.write_text("".join(json.dumps(r.as_json()) + "\n" for r in results))
        return LiveClip(str(out), str(lines), clip_summary(results))


def clip_summary(results: list[FrameResult]) -> str:
    """How many frames, and the classes most often on top."""
    counts: dict[str, int] = {}
    for result in results:
        counts[result.class_name] = counts.get(result.class_name, 0) + 1
    common = sorted(counts.items(), key=lambda item: -item[1])[:3]
    top = ", ".join(f"**{name}** ({n} frames)" for name, n in common)
    seconds = results[-1].time if results else 0.0
    return f"{len(results)} frames over {seconds:.1f} s; most often on top: {top}."


@dataclass
class LiveTab:
    """The webcam and its overlay, their style, the clip upload and what it gives back."""

    webcam: gr.Image
    overlay: gr.Image
    info: gr.Markdown
    alpha: gr.Slider
    colormap: gr.Dropdown
    clock: gr.State
    video: gr.Video
    button: gr.Button
    clip: gr.Video
    frames: gr.File
    summary: gr.Markdown


def live_tab(colormaps: Sequence[str], state_seconds: float) -> LiveTab:
    """The Live tab's components (call inside the tab); its clock kept ``state_seconds``."""
    gr.Markdown(
        "Start your webcam: every frame is explained as it comes (the default backbone and "
        "its head, on the server's CPU), with the frames per second measured on the server."
    )
    with gr.Row():
        webcam = gr.Image(
            label="Webcam",
            sources=["webcam"],
            streaming=True,
            type="numpy",
            image_mode="RGB",
            elem_id="webcam",
        )
        overlay = gr.Image(
            label="Explanation, frame by frame",
            type="numpy",
            format="jpeg",
            interactive=False,
            elem_id="live-overlay",
        )
    info = gr.Markdown(elem_id="live-info")
    with gr.Row():
        alpha = gr.Slider(0, 1, 0.5, step=0.05, label="Opacity", elem_id="live-alpha")
        colormap = gr.Dropdown(
            list(colormaps), value="jet", label="Colour map", elem_id="live-colormap"
        )
    clock = gr.State(None, time_to_live=state_seconds)
    gr.Markdown(f"### …or a clip\nUp to {MAX_CLIP_FRAMES} frames; every frame is explained.")
    with gr.Row():
        video = gr.Video(label="Clip", sources=["upload"], elem_id="clip")
        clip = gr.Video(label="Explained clip", interactive=False, elem_id="clip-overlay")
    button = gr.Button("Explain the clip", elem_id="explain-clip")
    with gr.Row():
        frames = gr.File(label="Top-1 of every frame (JSON Lines)", elem_id="clip-frames")
        summary = gr.Markdown(elem_id="clip-summary")
    return LiveTab(
        webcam, overlay, info, alpha, colormap, clock, video, button, clip, frames, summary
    )


def wire_live(view: LiveView, tab: LiveTab) -> None:
    """The webcam stream, its API twin ``/explain_frame``, and ``/explain_clip``."""
    inputs = [tab.webcam, tab.alpha, tab.colormap, tab.clock]
    outputs = [tab.overlay, tab.info, tab.clock]
    tab.webcam.stream(
        view.frame,
        inputs,
        outputs,
        api_name="explain_frame_stream",
        api_visibility="private",
        stream_every=STREAM_EVERY,
        time_limit=STREAM_SECONDS,
        concurrency_limit=LIVE_STREAMS,
        concurrency_id="live",
        show_progress="hidden",
    )
    # No trigger in the page: the endpoint for clients (gradio_client cannot drive a stream).
    gr.on([], view.frame, inputs, outputs, api_name="explain_frame", concurrency_id="live")
    tab.button.click(
        view.clip,
        [tab.video, tab.alpha, tab.colormap],
        [tab.clip, tab.frames, tab.summary],
        api_name="explain_clip",
        concurrency_id="measure",
        concurrency_limit=1,
    )

"""The Live tab and the top-5 maps: as functions, and over the API against a live server."""

from __future__ import annotations

import io
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.loadgen import free_port
from tests.test_video import decode, photo_frames, write_clip
from ttame.app import live
from ttame.app.callbacks import TTameApp
from ttame.app.figures import display_copy
from ttame.app.layout import build_app, serve
from ttame.app.state import AppConfig
from ttame.app.top5 import TopFive
from ttame.explainer import Explainer
from ttame.images import load_image, map_to_original, overlay
from ttame.video import explain_frames

ROOT = Path(__file__).resolve().parent.parent
CHELSEA = ROOT / "examples" / "chelsea.jpg"
INTEGRATION = [
    pytest.mark.slow,
    pytest.mark.integration,  # a live server on loopback
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]


@pytest.fixture(scope="module")
def view(heads) -> live.LiveView:
    config = AppConfig(backbones=["tiny_cnn", "tiny_vit"], heads=heads)
    return live.LiveView(TTameApp(config))


@pytest.fixture(scope="module")
def url(heads):
    demo = build_app(["tiny_cnn", "tiny_vit"], heads=heads, methods={})
    port = free_port()
    serve(demo, "127.0.0.1", port, block=False, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def frame_file(tmp_path: Path, frame: np.ndarray, name: str = "frame.png") -> Path:
    Image.fromarray(frame).save(tmp_path / name)
    return tmp_path / name


def jpeg(picture: np.ndarray) -> np.ndarray:
    """The picture as the app sends it: JPEG at PIL's default quality."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG")
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32)


def test_a_frame_is_one_explained_overlay_with_rate_class_and_probability(view, heads):
    frame = photo_frames(size=(120, 90), count=1)[0]
    out = view.frame(frame, 0.5, "jet", None)
    explainer = Explainer.from_pretrained(head=heads["tiny_cnn"])  # the app's default
    want, explanation = explain_frames(explainer, frame)
    assert out.overlay.shape == frame.shape and np.array_equal(out.overlay, want[0])
    index = int(explanation.classes[0])
    assert out.info.startswith("first frame")
    assert f"**thing {index}** {float(explanation.scores[0]):.1%}" in out.info
    again = view.frame(frame, 0.5, "jet", out.clock)
    assert again.clock is out.clock and " fps** · " in again.info
    assert "UNTRAINED" not in again.info


def test_frames_per_second_over_the_last_frames(monkeypatch):
    now = iter([0.0, 0.1, 0.2, 0.3, *(0.3 + 0.05 * i for i in range(1, 30))])
    monkeypatch.setattr(live.time, "perf_counter", lambda: next(now))
    clock = live.FrameClock()
    rates = [clock.tick() for _ in range(4)]
    assert rates[0] is None and rates[-1] == pytest.approx(10.0)
    for _ in range(live.FPS_WINDOW - 1):  # the slow start leaves the window
        rate = clock.tick()
    assert rate == pytest.approx(20.0)


def test_a_missing_frame_is_a_message(view):
    with pytest.raises(gr.Error, match="Send a frame"):
        view.frame(None)
    with pytest.raises(gr.Error, match="Frames must be RGB"):
        view.frame(np.zeros((8, 8), np.float32))


def test_a_clip_is_explained_into_a_clip_and_json_lines(view, heads, tmp_path):
    frames = photo_frames(count=5)
    clip = write_clip(tmp_path / "upload.mp4", frames, rate=10)
    out = view.clip(str(clip), 0.5, "jet")
    written, rate = decode(Path(out.video))
    assert written.shape == frames.shape and rate == 10
    records = [json.loads(line) for line in Path(out.frames).read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(5))
    assert out.summary.startswith("5 frames over 0.4 s")
    with pytest.raises(gr.Error, match="Upload a clip"):
        view.clip(None)
    (tmp_path / "notes.mp4").write_text("no video here")
    with pytest.raises(gr.Error, match="not a video we can read"):
        view.clip(str(tmp_path / "notes.mp4"))


def test_top5_maps_come_from_one_pass_and_restyle_without_one(view, heads, monkeypatch):
    top = TopFive(view.app)
    loaded = view.app.model("tiny_cnn", None)
    passes = []
    explain = loaded.explainer.explain
    monkeypatch.setattr(
        loaded.explainer, "explain", lambda x, top=None: passes.append(top) or explain(x, top=top)
    )
    result = top.maps(str(CHELSEA), "tiny_cnn", "", 0.5, "jet", True)
    assert passes == [5] and result.gallery["visible"] is True
    photo = load_image(CHELSEA)
    x, geometry = loaded.explainer.preprocess(photo)
    want = explain(x[None], top=5)
    shown, shown_geometry = display_copy(photo, geometry)
    captions = [caption for _, caption in result.gallery["value"]]
    assert captions == [
        f"thing {c} — {p:.1%}"
        for c, p in zip(want.classes[0].tolist(), want.scores[0].tolist(), strict=True)
    ]
    for (picture, _), saliency in zip(result.gallery["value"], want.maps[0], strict=True):
        heat = map_to_original(saliency, shown_geometry, outside=float("nan"))
        assert np.array_equal(np.asarray(picture), np.asarray(overlay(shown, heat, 0.5, "jet")))
    grey = top.restyle(result.shown, 1.0, "gray")
    assert passes == [5] and len(grey) == 5
    assert not np.array_equal(np.asarray(grey[0][0]), np.asarray(result.gallery["value"][0][0]))
    hidden = top.maps(str(CHELSEA), "tiny_cnn", "", 0.5, "jet", False)
    assert hidden.gallery["visible"] is False and hidden.shown is None and passes == [5]
    assert top.restyle(None, 0.5, "jet") == gr.skip()


class TestOverTheApi:
    """The endpoints over gradio_client, against the server on loopback."""

    pytestmark = INTEGRATION

    def test_explain_frame_has_defaults_and_returns_the_frames_size(self, url, heads, tmp_path):
        client = Client(url, verbose=False)
        endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        parameters = endpoint["/explain_frame"]["parameters"]
        assert parameters[0]["parameter_name"] == "frame"
        assert not parameters[0]["parameter_has_default"]
        assert all(p["parameter_has_default"] for p in parameters[1:])
        frame = photo_frames(size=(160, 120), count=1)[0]
        picture, info = client.predict(
            handle_file(frame_file(tmp_path, frame)), api_name="/explain_frame"
        )
        explainer = Explainer.from_pretrained(head=heads["tiny_cnn"])
        want, explanation = explain_frames(explainer, frame)
        got = np.asarray(Image.open(picture).convert("RGB"), dtype=np.float32)
        assert got.shape == frame.shape
        assert np.abs(got - jpeg(want[0])).mean() < 0.5  # sent as JPEG
        assert info.startswith("first frame") and f"thing {int(explanation.classes[0])}" in info
        _, info = client.predict(
            handle_file(frame_file(tmp_path, frame)), 0.0, "gray", api_name="/explain_frame"
        )
        assert " fps** · " in info  # the same session's clock

    def test_explain_clip_over_the_api(self, url, tmp_path):
        client = Client(url, verbose=False)
        clip = write_clip(tmp_path / "clip.mp4", photo_frames(count=4), rate=8)
        video, lines, summary = client.predict(handle_file(str(clip)), api_name="/explain_clip")
        path = video["video"] if isinstance(video, dict) else video
        written, rate = decode(Path(path))
        assert written.shape == (4, 72, 96, 3) and rate == 8
        assert len(Path(lines).read_text().splitlines()) == 4 and summary.startswith("4 frames")

    def test_explain_top5_over_the_api(self, url):
        client = Client(url, verbose=False)
        photo = handle_file(str(CHELSEA))
        shown = client.predict(photo, "tiny_cnn", "", show=True, api_name="/explain_top5")
        gallery = shown["value"]  # an update: the gallery shows itself
        assert shown["visible"] is True and len(gallery) == 5
        assert all(" — " in item["caption"] for item in gallery)
        assert Image.open(gallery[0]["image"]).size == Image.open(CHELSEA).size
        hidden = client.predict(photo, "tiny_cnn", "", api_name="/explain_top5")  # box unticked
        assert hidden["visible"] is False

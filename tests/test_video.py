"""Frames and clips: the frame path against the photo path, clips in and out with PyAV."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import tiny_explainer
from ttame.errors import ImageError, VideoError
from ttame.images import crop_geometry, map_to_original, overlay, preprocess
from ttame.video import (
    explain_frames,
    explain_video,
    frames_input,
    overlay_frames,
)

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "examples").glob("*.jpg"))
SIZE = (96, 72)
"""(width, height) of the test frames: the tiny backbones' crop (36 -> 32) lands on whole pixels."""


def photo_frames(size: tuple[int, int] = SIZE, count: int = 10) -> np.ndarray:
    """``count`` frames cycling through the example photos, ``size`` each."""
    pictures = [np.asarray(Image.open(p).convert("RGB").resize(size)) for p in PHOTOS]
    return np.stack([pictures[i % len(pictures)] for i in range(count)])


def write_clip(path: Path, frames: np.ndarray, rate: int = 12, codec: str = "libx264") -> Path:
    """A clip of these frames at ``rate`` frames per second, with PyAV."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decode(path: Path) -> tuple[np.ndarray, Fraction]:
    """Every frame of a clip as RGB, and its frame rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return np.stack(frames), stream.average_rate


@pytest.fixture
def explainer():
    return tiny_explainer("tiny_cnn", seed=3)


def test_the_frame_input_is_the_photo_input(explainer):
    frames = photo_frames(count=2)
    x, box = frames_input(explainer, frames)
    geometry = crop_geometry(SIZE, 36, 32)
    assert box == tuple(round(v) for v in geometry.crop_box) == (16, 4, 80, 68)
    for frame, mine in zip(frames, x, strict=True):
        theirs, _ = preprocess(Image.fromarray(frame), 32, 36)
        assert mine.shape == theirs.shape == (3, 32, 32)
        assert float((mine - theirs).abs().mean()) < 0.01  # torch's antialias vs PIL's bilinear


@pytest.mark.parametrize("colormap", ["jet", "viridis"])
def test_the_frame_overlay_is_the_photo_overlay(explainer, colormap):
    frames = photo_frames(count=3)
    x, box = frames_input(explainer, frames)
    maps = explainer.explain(x).maps
    drawn = overlay_frames(frames, maps, box, 0.6, colormap)
    geometry = crop_geometry(SIZE, 36, 32)
    for frame, picture, saliency in zip(frames, drawn, maps, strict=True):
        heat = map_to_original(saliency, geometry, outside=float("nan"))
        want = np.asarray(overlay(Image.fromarray(frame), heat, 0.6, colormap), dtype=np.int16)
        difference = np.abs(picture.astype(np.int16) - want)
        assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 4
        x0, y0, x1, y1 = box
        outside = np.ones(frame.shape[:2], dtype=bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(picture[outside], frame[outside])  # never seen: untouched
        assert np.abs(picture[y0:y1, x0:x1].astype(int) - frame[y0:y1, x0:x1]).mean() > 10
    assert np.array_equal(overlay_frames(frames, maps, box, 0.0, colormap), frames)


def test_a_batch_is_its_frames_one_by_one(explainer):
    frames = photo_frames(count=4)
    together = explain_frames(explainer, frames)
    for i, frame in enumerate(frames):
        alone = explain_frames(explainer, frame)
        assert alone.frames.shape == (1, 72, 96, 3)
        assert int(alone.explanation.classes[0]) == int(together.explanation.classes[i])
        difference = np.abs(alone.frames[0].astype(int) - together.frames[i])
        assert difference.max() <= 2
    want = explainer.explain(frames_input(explainer, frames)[0])
    assert torch.equal(together.explanation.classes, want.classes)


def test_bad_frames_are_refused(explainer):
    for bad in (np.zeros((4, 4), np.uint8), np.zeros((1, 4, 4, 4), np.uint8), np.zeros((4, 4, 3))):
        with pytest.raises(ImageError, match="Frames must be RGB arrays"):
            explain_frames(explainer, bad)
    frames = photo_frames(count=1)
    x, box = frames_input(explainer, frames)
    with pytest.raises(ValueError, match="alpha"):
        overlay_frames(frames, explainer.explain(x).maps, box, 1.5)


def test_a_clip_in_batches_one_pass_each(explainer, tmp_path, monkeypatch):
    frames = photo_frames(count=10)
    clip = write_clip(tmp_path / "clip.mp4", frames, rate=12)
    decoded, _ = decode(clip)
    passes = []
    explain = explainer.explain
    monkeypatch.setattr(explainer, "explain", lambda x: passes.append(len(x)) or explain(x))
    out = tmp_path / "out" / "overlay.mp4"
    results = explain_video(explainer, clip, out, batch=4, progress=False)
    assert passes == [4, 4, 2]
    want = explain_frames(explainer, decoded)
    assert [r.index for r in results] == list(range(10))
    assert [r.time for r in results] == pytest.approx([i / 12 for i in range(10)])
    assert [r.class_index for r in results] == want.explanation.classes.tolist()
    assert [r.probability for r in results] == pytest.approx(want.explanation.scores.tolist())
    assert all(r.class_name == f"thing {r.class_index}" for r in results)
    written, rate = decode(out)
    assert written.shape == decoded.shape and rate == 12
    assert np.abs(written.astype(int) - want.frames).mean() < 6  # H.264's loss
    assert np.abs(written.astype(int) - decoded).mean() > 10  # the maps are drawn
    assert [p.name for p in out.parent.iterdir()] == ["overlay.mp4"]


def test_results_as_json_lines(explainer, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", photo_frames(count=3), rate=5)
    results = explain_video(explainer, clip, None, progress=False)
    lines = [json.dumps(r.as_json()) for r in results]
    first = json.loads(lines[0])
    assert set(first) == {"frame", "time", "class_index", "class_name", "probability"}
    assert [json.loads(line)["time"] for line in lines] == [0.0, 0.2, 0.4]


def test_progress_bar_and_odd_sizes(explainer, tmp_path, capsys):
    frames = photo_frames(size=(95, 71), count=3)
    clip = write_clip(tmp_path / "odd.avi", frames, rate=8, codec="mpeg4")
    explain_video(explainer, clip, tmp_path / "odd.mp4", batch=2)
    assert "3/3" in capsys.readouterr().err
    written, rate = decode(tmp_path / "odd.mp4")
    assert written.shape == (3, 72, 96, 3) and rate == 8  # 4:2:0 needs even: one row/column more


def test_unreadable_videos_are_clear_errors(explainer, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(VideoError, match=r"'.*notes\.mp4' is not a video we can read"):
        explain_video(explainer, text, tmp_path / "out.mp4", progress=False)
    with pytest.raises(VideoError, match="No such video file"):
        explain_video(explainer, tmp_path / "missing.mp4", progress=False)
    clip = write_clip(tmp_path / "clip.mp4", photo_frames(count=12), rate=12)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(VideoError, match=r"cut\.mp4"):
        explain_video(explainer, cut, tmp_path / "out.mp4", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "cut.mp4", "notes.mp4"]


def test_too_long_clips_are_refused_and_leave_nothing(explainer, tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", photo_frames(count=6), rate=12)
    with pytest.raises(VideoError, match="at most 5"):
        explain_video(explainer, clip, tmp_path / "out.mp4", max_frames=5, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    assert len(explain_video(explainer, clip, None, max_frames=6, progress=False)) == 6


def test_a_clip_without_frame_count_or_times_is_counted_while_decoding(explainer, tmp_path):
    raw = write_clip(tmp_path / "raw.h264", photo_frames(count=6))  # no container: no count
    with av.open(str(raw)) as container:
        assert container.streams.video[0].frames == 0
        rate = float(container.streams.video[0].average_rate)
    with pytest.raises(VideoError, match="more than 5 frames"):
        explain_video(explainer, raw, tmp_path / "out.mp4", max_frames=5, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.h264"]
    results = explain_video(explainer, raw, None, progress=False)
    assert [r.time for r in results] == pytest.approx([i / rate for i in range(6)])

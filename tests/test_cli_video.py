"""``ttame explain CLIP.mp4``: the overlay of every frame, each frame's top-1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_video import decode, write_clip
from ttame.cli import main

TINY = ["--backbone", "tiny_cnn"]


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    frames = np.random.default_rng(0).integers(0, 256, (7, 48, 64, 3), dtype=np.uint8)
    return write_clip(tmp_path / "clip.mp4", frames, rate=10)


def test_a_clip_gives_an_overlay_clip_and_one_line_per_frame(clip, tmp_path, capsys):
    out, jsonl = tmp_path / "overlay.mp4", tmp_path / "frames.jsonl"
    options = ["--batch", "3", "--out", str(out), "--jsonl", str(jsonl)]
    assert main(["explain", str(clip), *TINY, *options]) == 0
    frames, rate = decode(out)
    assert frames.shape == (7, 48, 64, 3) and rate == 10
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(7))
    assert all(r["file"] == str(clip) and 0 <= r["probability"] <= 1 for r in records)
    assert records[1]["time"] == pytest.approx(0.1)
    assert "7 frames" in capsys.readouterr().err


def test_json_prints_each_frame(clip, capsys):
    assert main(["explain", str(clip), *TINY, "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == 7 and {"frame", "class_index", "class_name"} <= set(printed[0])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "overlay.png"], "video file"),
        (["--classes", "top5"], "top-1"),
        (["--class", "3"], "top-1"),
    ],
)
def test_options_a_clip_cannot_take_are_refused_in_one_line(clip, tmp_path, capsys, extra, message):
    extra = [str(tmp_path / e) if e.endswith(".png") else e for e in extra]
    assert main(["explain", str(clip), *TINY, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_missing_or_broken_clip_is_a_one_line_error(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "none.mp4"), *TINY]) == 2
    assert "No such video file" in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    out = tmp_path / "overlay.mp4"
    assert main(["explain", str(broken), *TINY, "--out", str(out)]) == 2
    assert "not a video" in capsys.readouterr().err and not out.exists()

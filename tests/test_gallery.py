"""scripts/gallery.py on a tiny backbone: the pick, the rows, the page."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import tiny_explainer
from ttame.methods.registry import MethodOptions

ROOT = Path(__file__).resolve().parent.parent


def _load_gallery():
    spec = importlib.util.spec_from_file_location("gallery", ROOT / "scripts" / "gallery.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gallery"] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gallery():
    return _load_gallery()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i, size in enumerate([(48, 40), (40, 56)]):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{i}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    entries = [
        {
            "file": "photo_0.png",
            "key": "k0",
            "source": "somewhere",
            "licence": "CC0-1.0",
            "credit": "Ann Author",
            "part": "test",
            "origin": "https://example.org/0",
        }
    ]
    (folder / "manifest.json").write_text(json.dumps(entries))
    return folder


def test_pick_is_deterministic_and_skips_unreadable_files(gallery, photos):
    first, skipped = gallery.pick_photos(photos, 5)
    again, _ = gallery.pick_photos(photos, 5)
    assert first == again == [photos / "photo_0.png", photos / "photo_1.png"]
    assert len(skipped) == 1 and skipped[0].startswith("broken.jpg")
    assert gallery.pick_photos(photos, 1)[0] == [photos / "photo_0.png"]


def test_region_iou_and_peak(gallery):
    a = torch.zeros(10, 10)
    a[0, 0] = 1.0
    assert gallery.region_iou(a, a) == 1.0
    b = torch.zeros(10, 10)
    b[9, 9] = 1.0
    assert gallery.region_iou(a, b) == 0.0
    assert gallery.peak(b) == (9, 9)
    texts = [gallery.seconds_text(s) for s in (0.0467, 3.14, 163.2)]
    assert texts == ["0.047", "3.1", "163"]


def test_section_and_page(gallery, photos, tmp_path):
    chosen, skipped = gallery.pick_photos(photos, 2)
    out = tmp_path / "docs" / "gallery"
    out.mkdir(parents=True)
    stale = out / "tiny_cnn_07_old.png"
    stale.write_bytes(b"old")
    options = MethodOptions(rise_masks=8, batch_size=4, seed=0)
    section = gallery.build_section(tiny_explainer(), chosen, out, options, tile=32)
    assert not stale.exists()
    assert [p.name for p in section.pngs] == ["tiny_cnn_01_photo_0.png", "tiny_cnn_02_photo_1.png"]
    for png, row in zip(section.pngs, section.rows, strict=True):
        with Image.open(png) as picture:
            assert picture.format == "PNG" and picture.width >= 5 * 32
        assert set(row.drop) == set(gallery.METHODS) == set(row.seconds)
        assert all(0 <= v <= 100 for v in row.drop.values())
        assert 0 <= row.iou <= 1 and row.peak_distance >= 0
        assert all(m.shape == (32, 32) for m in row.maps.values())
    page = tmp_path / "docs" / "gallery.md"
    credits = gallery.load_credits(photos)
    gallery.write_markdown(
        [section], page, "python scripts/gallery.py --n 2", "machine", credits, skipped
    )
    text = page.read_text()
    assert "python scripts/gallery.py --n 2" in text and "broken.jpg" in text
    assert "![tiny_cnn: photo_0.png" in text and "(gallery/tiny_cnn_01_photo_0.png)" in text
    assert "Ann Author, CC0-1.0, via somewhere ([origin](<https://example.org/0>))" in text
    lines = [gallery.photo_line(row) for row in section.rows]
    assert all(line in text for line in lines)
    for line in [*lines, *gallery.summary_lines(section.rows)]:
        assert not line or line.startswith("|---") or re.search(r"\d", line), line
    assert "on 0 of 2" in text or "on 1 of 2" in text or "on 2 of 2" in text


def test_main_writes_the_page(gallery, photos, tmp_path, monkeypatch):
    from ttame.explainer import Explainer

    monkeypatch.setattr(Explainer, "from_pretrained", lambda *a, **k: tiny_explainer())
    out = tmp_path / "g"
    argv = ["--backbone", "tiny_cnn", "--images", str(photos), "--n", "1"]
    assert gallery.main([*argv, "--rise-masks", "4", "--tile", "24", "--out", str(out)]) == 0
    text = (tmp_path / "g.md").read_text()
    assert "python scripts/gallery.py --backbone tiny_cnn" in text
    assert "tiny_cnn: summary over 1 photos" in text
    assert [p.name for p in out.iterdir()] == ["tiny_cnn_01_photo_0.png"]

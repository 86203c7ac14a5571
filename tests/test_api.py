"""The public API: three lines from a name to an overlay, and what they promise."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ttame
from tests.helpers import TINY_CNN, TinyCNN, TinyViT, _seeded, tiny_explainer
from ttame import errors, images
from ttame.images import crop_geometry, load_image
from ttame.model.registry import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
CHELSEA = ROOT / "examples" / "chelsea.jpg"


@pytest.fixture
def head_folder(tmp_path: Path) -> Path:
    return tiny_explainer("tiny_cnn").save_pretrained(tmp_path / "head")


def test_three_lines_from_a_head_to_an_overlay(head_folder, tmp_path):
    explainer = ttame.load_explainer(str(head_folder))
    result = explainer.explain_image(CHELSEA, target="thing 3")
    result.overlay().save(tmp_path / "out.png")
    photo = Image.open(CHELSEA)
    assert Image.open(tmp_path / "out.png").size == photo.size
    assert result.map.shape == (photo.height, photo.width)
    assert (result.index, result.label) == (3, "thing 3")
    assert result.score == pytest.approx(float(result.explanation.probabilities[0, 3]))


def test_a_backbone_name_comes_first(head_folder):
    with pytest.warns(errors.UntrainedHeadWarning):  # tiny_cnn has no bundled head
        ttame.Explainer.from_pretrained("tiny_cnn").explain(torch.rand(1, 3, 32, 32))
    assert ttame.Explainer.from_pretrained("tiny_cnn").spec.name == "tiny_cnn"
    by_keyword = ttame.Explainer.from_pretrained(head=head_folder, backbone="tiny_cnn")
    by_position = ttame.Explainer.from_pretrained(str(head_folder))
    assert by_keyword.trained and by_position.trained
    with pytest.raises(errors.BackboneError, match="Two backbones"):
        ttame.Explainer.from_pretrained("tiny_cnn", backbone="tiny_vit")


def test_photos_come_as_paths_pil_images_or_arrays(head_folder):
    explainer = ttame.load_explainer(str(head_folder))
    photo = load_image(CHELSEA)
    maps = [
        explainer.explain_image(source, target=2).map
        for source in (CHELSEA, str(CHELSEA), photo, np.asarray(photo), CHELSEA.read_bytes())
    ]
    assert all(np.array_equal(maps[0], m) for m in maps[1:])


def test_a_photo_given_to_explain_says_what_to_call(head_folder):
    explainer = ttame.load_explainer(str(head_folder))
    with pytest.raises(errors.ImageError, match=r"explain_image\(photo\)"):
        explainer.explain(load_image(CHELSEA))


def test_classes_by_name_or_index(head_folder):
    explainer = ttame.load_explainer(str(head_folder))
    x = torch.rand(2, 3, 32, 32)
    by_name = explainer.explain(x, "thing 4")
    assert torch.equal(by_name.classes, torch.tensor([4, 4]))
    assert torch.equal(by_name.maps, explainer.explain(x, 4).maps)
    mixed = explainer.explain(x, ["thing 1", 7])
    assert torch.equal(mixed.classes, torch.tensor([1, 7]))
    several = explainer.explain(x, [["thing 1", 2], [3, "thing 9"]])
    assert several.maps.shape == (2, 2, 32, 32)
    with pytest.raises(errors.ClassIndexError, match="Unknown class name 'zebra'"):
        explainer.explain(x, "zebra")


def test_preprocess_uses_the_backbones_own_sizes(head_folder):
    explainer = ttame.load_explainer(str(head_folder))
    x, geometry = explainer.preprocess(CHELSEA)
    assert x.shape == (3, TINY_CNN.input_size, TINY_CNN.input_size)
    size = Image.open(CHELSEA).size
    assert geometry == crop_geometry(size, TINY_CNN.resize_size, TINY_CNN.input_size)
    with pytest.raises(TypeError):
        ttame.preprocess(load_image(CHELSEA))  # sizes are never assumed


def test_pixels_the_backbone_never_saw_stay_untinted(head_folder):
    explainer = ttame.load_explainer(str(head_folder))
    result = explainer.explain_image(CHELSEA)
    photo = np.asarray(result.image, dtype=np.int16)
    drawn = np.asarray(result.overlay(alpha=1.0), dtype=np.int16)
    assert not result.seen.all() and result.seen.any()
    assert np.array_equal(drawn[~result.seen], photo[~result.seen])
    assert np.abs(drawn[result.seen] - photo[result.seen]).mean() > 10
    x0, y0, x1, y1 = (round(v) for v in result.geometry.crop_box)
    assert result.seen[y0:y1, x0:x1].all() and result.seen.sum() == (y1 - y0) * (x1 - x0)


def test_overlays_need_no_matplotlib_for_jet(monkeypatch):
    heat = np.concatenate([np.linspace(0, 1, 1001), [0.0, 1.0, 0.5]]).astype(np.float32)
    heat = heat.reshape(1, -1)
    with_matplotlib = images._colours(heat, "jet")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert np.array_equal(images._colours(heat, "jet"), with_matplotlib)
    with pytest.raises(errors.ImageError, match="needs matplotlib"):
        images._colours(heat, "viridis")


def test_a_users_own_module(tmp_path):
    cnn = _seeded(TinyCNN)
    explainer = ttame.Explainer.for_model(
        cnn,
        layers=["stage1", "stage3"],
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        input_size=32,
        resize_size=36,
        categories=[f"kind {i}" for i in range(10)],
    )
    assert not explainer.trained and explainer.spec.kind == "cnn"
    assert explainer.head.in_channels == [4, 8]
    with pytest.warns(errors.UntrainedHeadWarning):
        result = explainer.explain_image(CHELSEA, target="kind 5")
    assert result.label == "kind 5" and result.map.shape == Image.open(CHELSEA).size[::-1]
    explainer.save_pretrained(tmp_path / "own")
    again = ttame.Explainer.for_model(
        cnn, layers=["stage1", "stage3"], input_size=32, resize_size=36, head=tmp_path / "own"
    )
    assert again.trained and again.head.layers == ["stage1", "stage3"]
    with pytest.raises(errors.HeadError, match="taps"):
        ttame.Explainer.for_model(cnn, layers=["stage2"], input_size=32, head=tmp_path / "own")
    taps = ["blocks.0.norm1", "blocks.2.norm1"]
    unfit = ttame.AttentionHead("custom", taps, [4, 8], 10)
    with pytest.raises(errors.HeadError, match="does not fit"):
        ttame.Explainer.for_model(_seeded(TinyViT), layers=taps, input_size=32, head=unfit)


def test_a_users_token_model_is_laid_on_its_grid():
    vit = _seeded(TinyViT)
    explainer = ttame.Explainer.for_model(
        vit,
        layers=["blocks.1.norm1", "blocks.2.norm1"],
        input_size=32,
        resize_size=36,
        num_prefix_tokens=3,
    )
    assert explainer.spec.kind == "vit" and explainer.head.in_channels == [12, 12]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.UntrainedHeadWarning)
        assert explainer.explain(torch.rand(2, 3, 32, 32)).maps.shape == (2, 32, 32)


def test_register_backbone_makes_a_name_work_everywhere():
    spec = ttame.BackboneSpec(
        name="my_cnn",
        build=lambda: _seeded(TinyCNN),
        taps=("stage2", "stage3"),
        kind="cnn",
        categories=lambda: [f"c{i}" for i in range(10)],
        input_size=32,
        resize_size=36,
    )
    try:
        assert ttame.register_backbone(spec) == "my_cnn"
        assert "my_cnn" in ttame.list_backbones()
        explainer = ttame.Explainer.from_pretrained("my_cnn", pretrained_backbone=False)
        assert explainer.head.layers == ["stage2", "stage3"]
        with pytest.raises(errors.BackboneError, match="timm"):
            ttame.register_backbone(spec, name="timm/mine")
    finally:
        REGISTRY.pop("my_cnn", None)


def test_every_error_is_a_ttame_error_exported_from_the_package():
    classes = [getattr(errors, name) for name in errors.__all__]
    for cls in classes:
        assert getattr(ttame, cls.__name__) is cls
        if cls is not errors.UntrainedHeadWarning:
            assert issubclass(cls, errors.TTameError), cls
    assert issubclass(errors.SourceError, RuntimeError)  # what callers caught before


def test_the_version_is_defined_once():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "\nversion =" not in pyproject
    assert ttame.__version__.count(".") == 2

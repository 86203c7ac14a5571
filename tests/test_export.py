"""``ttame export``: one ONNX graph from raw RGB to probabilities, classes and maps.

Every graph is run with onnxruntime at batches other than the one traced and checked against
the library's own ``explain``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import tiny_explainer
from ttame.cli import export as export_command
from ttame.cli import main
from ttame.explainer import Explainer
from ttame.export.onnx import EXAMPLE_BATCH, export_onnx, graph_metadata
from ttame.hub.card import NOT_STATED
from ttame.images import load_image

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

EXAMPLES = Path(__file__).parent.parent / "examples"


def run(path: Path, images: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})


def metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def assert_parity(explainer: Explainer, path: Path, images: torch.Tensor, top_k: int) -> None:
    probabilities, classes, maps = run(path, images)
    expected = explainer.explain(images, top=top_k) if top_k > 1 else explainer.explain(images)
    assert classes.dtype == np.int64
    np.testing.assert_array_equal(classes, expected.classes.numpy())
    np.testing.assert_allclose(maps, expected.maps.numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(probabilities, expected.probabilities.numpy(), atol=1e-5, rtol=0)
    assert maps.min() >= 0 and maps.max() <= 1


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_vit"])
def test_the_graph_answers_as_the_library_at_any_batch(name, tmp_path):
    explainer = tiny_explainer(name)
    path = export_onnx(explainer, tmp_path / "m.onnx", head_source="a test")
    torch.manual_seed(0)
    assert EXAMPLE_BATCH not in (1, 3)
    for batch in (1, 3):  # batches the exporter never saw
        images = torch.rand(batch, 3, 32, 32)
        assert_parity(explainer, path, images, top_k=1)
        probabilities, classes, maps = run(path, images)
        assert probabilities.shape == (batch, 10)
        assert classes.shape == (batch,) and maps.shape == (batch, 32, 32)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["images"]
    assert [o.name for o in graph.output] == ["probabilities", "classes", "maps"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch


def test_cli_writes_top_k_maps_and_the_card_in_the_metadata(tmp_path, capsys):
    folder = tmp_path / "head"
    tiny_explainer().save_pretrained(folder, license="apache-2.0")
    out = tmp_path / "graph.onnx"
    assert main(["export", str(folder), "--format", "onnx", "--out", str(out), "--top-k", "3"]) == 0
    assert str(out) in capsys.readouterr().out
    facts = metadata(out)
    assert facts["ttame.backbone"] == "tiny_cnn"
    assert json.loads(facts["ttame.layers"]) == ["stage1", "stage2", "stage3"]
    assert facts["ttame.head_source"] == str(folder)
    assert facts["ttame.licence"] == "apache-2.0"
    assert facts["ttame.top_k"] == "3" and facts["ttame.input_size"] == "32"
    assert json.loads(facts["ttame.categories"])[4] == "thing 4"
    explainer = Explainer.from_pretrained(folder)
    torch.manual_seed(1)
    images = torch.rand(3, 3, 32, 32)
    assert_parity(explainer, out, images, top_k=3)
    assert run(out, images)[2].shape == (3, 3, 32, 32)


def test_an_untrained_head_says_so_and_a_head_without_a_card_states_no_licence(
    tmp_path, capsys, monkeypatch
):
    asked = {}

    def fake_export(explainer, path, **options):
        asked.update(options, trained=explainer.trained)
        return Path(path)

    monkeypatch.setattr(export_command, "export_onnx", fake_export)
    assert main(["export", "tiny_vit", "--out", str(tmp_path / "fresh.onnx")]) == 0
    assert "NOT explanations" in capsys.readouterr().err
    assert asked == {
        "top_k": 1, "head_source": "none: an untrained head", "licence": None, "trained": False
    }  # fmt: skip
    folder = tmp_path / "head"
    tiny_explainer().save_pretrained(folder)  # no card
    assert main(["export", str(folder), "--out", str(tmp_path / "m.onnx")]) == 0
    assert asked["head_source"] == str(folder) and asked["licence"] == NOT_STATED
    facts = graph_metadata(tiny_explainer(), 1, "here", None)
    assert "ttame.licence" not in facts and facts["ttame.head_trained"] == "true"


def test_a_bad_top_k_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "tiny_cnn", "--out", str(out), "--top-k", "11"]) == 2
    err = capsys.readouterr().err
    assert "error: top_k must be between 1 and the number of classes (10)" in err
    assert not out.exists()


@pytest.mark.slow
def test_the_real_mobilenet_graph_answers_as_the_library(tmp_path, capsys):
    out = tmp_path / "mobilenet_v2.onnx"
    assert main(["export", "mobilenet_v2", "--out", str(out)]) == 0
    explainer = Explainer.from_pretrained("mobilenet_v2")
    photos = [load_image(EXAMPLES / f"{name}.jpg") for name in ("chelsea", "coffee", "rocket")]
    images = torch.stack([explainer.preprocess(p)[0] for p in photos])
    assert_parity(explainer, out, images, top_k=1)
    facts = metadata(out)
    assert facts["ttame.head_source"] == "checkpoints/mobilenet_v2"
    assert json.loads(facts["ttame.std"]) == pytest.approx([0.229, 0.224, 0.225])

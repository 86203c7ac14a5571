"""The bad-input corpus through the library and the CLI: handled, or one clear error."""

import json
import time

import pytest
import torch
from badcorpus import CASES, Case
from conftest import tiny_explainer
from safetensors.torch import save_file

from ttame.cli import main
from ttame.errors import ClassIndexError, HeadError, ImageError
from ttame.explainer import load_head
from ttame.images import load_image, map_to_original, preprocess


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_library(case: Case):
    if case.expected == "error":
        with pytest.raises(ImageError):
            load_image(case.make())
        return
    image = load_image(case.make())
    assert image.mode == "RGB" and image.size == case.size
    explainer = tiny_explainer()
    tensor, geometry = preprocess(image, 32, 36)
    result = explainer.explain(tensor[None])
    assert torch.isfinite(result.maps).all()
    assert map_to_original(result.maps[0], geometry).shape == case.size[::-1]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cli(case: Case, tmp_path, capsys):
    path = tmp_path / f"input{case.suffix}"
    path.write_bytes(case.make())
    code = main(["explain", str(path), "--backbone", "tiny_cnn", "--json"])
    captured = capsys.readouterr()
    if case.expected == "error":
        assert code == 2
        assert captured.err.strip().startswith("error: ") and "Traceback" not in captured.err
    else:
        assert code == 0
        report = json.loads(captured.out)
        x, y = report["peak_xy"]
        assert 0 <= x <= case.size[0] and 0 <= y <= case.size[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--class", "10"], "out of range"),
        (["--class", "-1"], "out of range"),
        (["--class", "zebra"], "Unknown class name"),
        (["--backbone", "nope"], "Unknown backbone"),
        (["--head", "not/a/repo/id"], "neither a head folder"),
    ],
)
def test_cli_refuses_bad_arguments(args, message, tmp_path, capsys):
    path = tmp_path / "ok.png"
    path.write_bytes(next(c for c in CASES if c.name == "1x1 image").make())
    code = main(["explain", str(path), "--backbone", "tiny_cnn", *args])
    assert code == 2 and message in capsys.readouterr().err


def test_class_errors_in_the_library():
    explainer = tiny_explainer()
    with pytest.raises(ClassIndexError):
        explainer.explain(torch.rand(1, 3, 32, 32), -3)
    with pytest.raises(ClassIndexError):
        explainer.class_index("no such class")


def _head_folder(tmp_path, weights: bytes | None = None):
    folder = tmp_path / "head"
    tiny_explainer().save_pretrained(folder)
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_a_pickle_offered_as_a_head_is_refused(tmp_path):
    import pickle

    folder = _head_folder(tmp_path, pickle.dumps({"branches.0.conv.weight": object()}))
    with pytest.raises(HeadError):
        load_head(folder)


def test_a_truncated_safetensors_head_is_refused(tmp_path):
    folder = _head_folder(tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(HeadError):
        load_head(folder)


def test_a_head_with_wrong_tensor_shapes_is_refused(tmp_path):
    folder = _head_folder(tmp_path)
    state = {k: v.clone() for k, v in tiny_explainer().head.state_dict().items()}
    state["fuser.weight"] = torch.zeros(3, 18, 1, 1)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(HeadError):
        load_head(folder)


@pytest.mark.parametrize("repo", ["owner/absent-head", "owner/..", "a/b/c", "/"])
def test_hub_repo_ids_fail_fast_and_clearly_offline(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(
        HeadError, match=r"not in the local Hugging Face cache|neither a head|lacks"
    ):
        load_head(repo, cache_dir=tmp_path)
    assert time.perf_counter() - start < 5


def test_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(HeadError, match=r"127\.0\.0\.1:9\) cannot be reached"):
        load_head("owner/some-head", cache_dir=tmp_path)
    assert time.perf_counter() - start < 5

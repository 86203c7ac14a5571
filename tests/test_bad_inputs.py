"""The bad-input corpus through the library and the CLI: handled, or one clear error."""

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.badcorpus import (
    CASES,
    MISUSES,
    Case,
    Misuse,
    bad_head,
    evil_reference_checkpoint,
    evil_training_checkpoint,
    half_written_checkpoint,
    table,
)
from tests.helpers import tiny_explainer
from ttame.cli import main
from ttame.errors import HeadError, ImageError
from ttame.explainer import Explainer
from ttame.hub.load import load_head
from ttame.images import load_image, map_to_original, preprocess
from ttame.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_library(case: Case):
    if case.expected == "error":
        with pytest.raises(ImageError, match=case.message):
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
        assert captured.err.startswith("error: ") and case.message in captured.err
        assert "Traceback" not in captured.err
    else:
        assert code == 0
        report = json.loads(captured.out)
        x, y = report["peak_xy"]
        assert 0 <= x <= case.size[0] and 0 <= y <= case.size[1]


# --- Mistakes other than image files -------------------------------------------------------

Action = Callable[[Path, pytest.MonkeyPatch], object]


def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


def unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


def poisoned() -> torch.Tensor:
    images = torch.rand(1, 3, 32, 32)
    images[0, 0, 3, 4], images[0, 1, 5, 6] = float("nan"), float("inf")
    return images


def hub(setup: Callable[[Path, pytest.MonkeyPatch], None], repo: str) -> Action:
    def act(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        setup(tmp_path, monkeypatch)
        return load_head(repo)

    return act


def head(flaw: str, backbone: str | None = None) -> Action:
    return lambda tmp, _: Explainer.from_pretrained(bad_head(tmp, flaw), backbone, None, "cpu")


LIBRARY: dict[str, Action] = {
    "NaN or Inf in an image tensor": lambda *_: tiny_explainer().explain(poisoned()),
    "image tensor outside [0, 1]": lambda *_: tiny_explainer().explain(
        torch.rand(1, 3, 8, 8) * 255
    ),
    "class index out of range (10 of 10)": lambda *_: tiny_explainer().explain(
        torch.rand(1, 3, 32, 32), 10
    ),
    "negative class index (-1)": lambda *_: tiny_explainer().explain(torch.rand(1, 3, 32, 32), -1),
    "unknown class name": lambda *_: tiny_explainer().class_index("zebra"),
    "unknown backbone": lambda *_: Explainer.from_pretrained(backbone="nope"),
    "malformed Hub repo id (a/b/c)": hub(offline, "a/b/c"),
    "Hub repo absent, offline": hub(offline, "owner/absent-head"),
    "Hub unreachable": hub(unreachable, "owner/some-head"),
    "head trained for another backbone": head("other backbone", "tiny_cnn"),
    "head whose channels do not fit its backbone": head("channels"),
    "head with another number of classes than its backbone": head("classes"),
    "head whose tensors disagree with its config": head("weights"),
    "pickle offered as a head's model.safetensors": head("pickle"),
    "truncated model.safetensors": head("truncated"),
    "pickle that runs code, as a reference checkpoint (.ckpt)": lambda tmp, _: load_head(
        evil_reference_checkpoint(tmp / "evil.ckpt", tmp / "ran"), backbone="tiny_cnn"
    ),
    "half-written training checkpoint (--resume)": lambda tmp, _: load_checkpoint(
        half_written_checkpoint(tmp / "checkpoint.pt")
    ),
    "pickle that runs code, as a training checkpoint with a valid checksum (--resume)": (
        lambda tmp, _: load_checkpoint(evil_training_checkpoint(tmp / "c.pt", tmp / "ran"))
    ),
}


def photo() -> bytes:
    return next(c for c in CASES if c.name == "RGBA PNG").make()


def explain_args(*options: str) -> Callable[[Path, pytest.MonkeyPatch], list[str]]:
    def args(tmp_path: Path, _monkeypatch: pytest.MonkeyPatch) -> list[str]:
        (tmp_path / "photo.png").write_bytes(photo())
        return ["explain", str(tmp_path / "photo.png"), *options]

    return args


def with_setup(setup: Callable[[Path, pytest.MonkeyPatch], None], *options: str):
    def args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        setup(tmp_path, monkeypatch)
        return explain_args(*options)(tmp_path, monkeypatch)

    return args


def head_args(flaw: str, *options: str):
    def args(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        folder = str(bad_head(tmp_path, flaw))
        return explain_args("--head", folder, *options)(tmp_path, monkeypatch)

    return args


def resume_args(write: Callable[[Path], object]):
    def args(tmp_path: Path, _monkeypatch: pytest.MonkeyPatch) -> list[str]:
        images = tmp_path / "images"
        images.mkdir()
        for i in range(4):
            (images / f"{i}.png").write_bytes(photo())
        (tmp_path / "run").mkdir()
        write(tmp_path / "run" / "checkpoint.pt")
        run = ["--out", str(tmp_path / "run"), "--batch", "2", "--workers", "0", "--resume"]
        return ["train", "--backbone", "tiny_cnn", "--data", str(images), *run]

    return args


CLI: dict[str, Callable[[Path, pytest.MonkeyPatch], list[str]]] = {
    "class index out of range (10 of 10)": explain_args("--backbone", "tiny_cnn", "--class", "10"),
    "negative class index (-1)": explain_args("--backbone", "tiny_cnn", "--class", "-1"),
    "unknown class name": explain_args("--backbone", "tiny_cnn", "--class", "zebra"),
    "unknown backbone": explain_args("--backbone", "nope"),
    "malformed Hub repo id (a/b/c)": with_setup(offline, "--head", "a/b/c"),
    "Hub repo absent, offline": with_setup(offline, "--head", "owner/absent-head"),
    "Hub unreachable": with_setup(unreachable, "--head", "owner/some-head"),
    "head trained for another backbone": head_args("other backbone", "--backbone", "tiny_cnn"),
    "head whose channels do not fit its backbone": head_args("channels"),
    "head with another number of classes than its backbone": head_args("classes"),
    "head whose tensors disagree with its config": head_args("weights"),
    "pickle offered as a head's model.safetensors": head_args("pickle"),
    "truncated model.safetensors": head_args("truncated"),
    "pickle that runs code, as a reference checkpoint (.ckpt)": lambda tmp, mp: explain_args(
        "--head", str(evil_reference_checkpoint(tmp / "evil.ckpt", tmp / "ran"))
    )(tmp, mp),
    "half-written training checkpoint (--resume)": resume_args(half_written_checkpoint),
    "pickle that runs code, as a training checkpoint with a valid checksum (--resume)": (
        resume_args(lambda path: evil_training_checkpoint(path, path.parent.parent / "ran"))
    ),
}


def test_every_mistake_is_tried_in_the_library_and_the_cli():
    assert set(LIBRARY) == {m.name for m in MISUSES}
    assert set(CLI) == {m.name for m in MISUSES if m.cli is not None}


@pytest.mark.parametrize("misuse", MISUSES, ids=lambda m: m.name)
def test_library_mistakes(misuse: Misuse, tmp_path, monkeypatch):
    with pytest.raises(misuse.error) as caught:
        LIBRARY[misuse.name](tmp_path, monkeypatch)
    assert misuse.library in str(caught.value)
    assert not (tmp_path / "ran").exists()  # no pickled code ran


@pytest.mark.parametrize("misuse", [m for m in MISUSES if m.cli], ids=lambda m: m.name)
def test_cli_mistakes(misuse: Misuse, tmp_path, monkeypatch, capsys):
    code = main(CLI[misuse.name](tmp_path, monkeypatch))
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the untrained-head warning, if any
    assert code == 2 and last.startswith("error: ") and misuse.cli in last
    assert "Traceback" not in err and not (tmp_path / "ran").exists()


def test_the_reliability_table_is_current():
    document = (ROOT / "docs" / "reliability.md").read_text()
    assert table() in document, "run: PYTHONPATH=. python tests/badcorpus.py"
    for item in [*CASES, *MISUSES]:
        assert f"| {item.name} |" in document


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

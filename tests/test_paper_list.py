"""The paper's protocol on a labelled list: ``ttame evaluate --imagenet-val DIR --list LIST``.

A tiny fake ImageNet validation folder (JPEGs in nested folders, one image the list leaves
out) and a list file in the reference format; the list is read from disk or fetched from the
loopback Hub of tests/test_hub.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_hub import fake_hub, go_offline  # noqa: F401 (fake_hub: a fixture)
from ttame.cli import main
from ttame.explainer import Explainer

LISTED = ["n02/sub/val_00000003.JPEG", "n01/val_00000001.JPEG", "n03/val_00000002.jpg"]
"""In the list's order, which is not the sorted order."""
UNLISTED = "n01/val_00000009.JPEG"
HUB_LIST = "hf://IDT-ITI/T-TAME-models/datalist/ILSVRC/Evaluation_2000.txt"


@pytest.fixture
def val_dir(tmp_path: Path) -> Path:
    """ImageNet-like validation images: the listed ones and one the list does not name."""
    root = tmp_path / "val"
    rng = np.random.default_rng(0)
    for name in [*LISTED, UNLISTED]:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return root


def predictions(root: Path) -> list[int]:
    """The tiny backbone's top-1 on each listed image, computed apart from the evaluation."""
    explainer = Explainer.from_pretrained(backbone="tiny_cnn", device="cpu")
    with torch.no_grad():
        return [
            int(explainer.backbone(explainer.preprocess(root / name)[0]).argmax())
            for name in LISTED
        ]


def labels_with_one_wrong(root: Path) -> list[int]:
    """Labels that agree with the backbone on the first and last image, not the middle one."""
    predicted = predictions(root)
    return [predicted[0], (predicted[1] + 1) % 10, predicted[2]]


def write_list(path: Path, names: list[str], labels: list[int]) -> Path:
    """A list file as the authors write it (a trailing space after each label)."""
    path.write_text("".join(f"{n} {label} \n" for n, label in zip(names, labels, strict=True)))
    return path


def evaluate(tmp_path: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    out.unlink(missing_ok=True)
    argv = ["evaluate", "--backbone", "tiny_cnn", "--device", "cpu", "--json", str(out)]
    argv += ["--methods", "centre,ttame", "--no-road", "--bootstrap", "50", *extra]
    code = main(argv)
    return code, json.loads(out.read_text()) if out.exists() else {}


def test_a_list_runs_on_exactly_its_images_in_its_order_with_their_accuracy(
    val_dir, tmp_path, capsys
):
    labels = labels_with_one_wrong(val_dir)
    listed = write_list(tmp_path / "Evaluation.txt", LISTED, labels)
    code, report = evaluate(
        tmp_path, "--imagenet-val", str(val_dir), "--list", str(listed), "--batch-size", "2"
    )
    assert code == 0
    assert [r["file"] for r in report["records"]] == [str(val_dir / n) for n in LISTED]
    assert report["n_images"] == 3 and report["list"] == str(listed)
    assert [r["label"] for r in report["records"]] == labels
    predicted = predictions(val_dir)
    assert [r["predicted"] for r in report["records"]] == predicted
    assert report["accuracy"]["top1"] == pytest.approx(200 / 3)
    assert report["accuracy"]["n_images"] == 3
    # The paper's protocol: every method explains the backbone's prediction.
    assert report["explained"] == "prediction"
    assert [r["class"] for r in report["records"]] == predicted
    out = capsys.readouterr().out
    assert "maps explain the backbone's top-1 prediction" in out
    assert "accuracy on the labels: 66.67" in out


def test_explain_label_explains_and_scores_the_ground_truth(val_dir, tmp_path):
    labels = labels_with_one_wrong(val_dir)
    listed = write_list(tmp_path / "Evaluation.txt", LISTED, labels)
    args = ("--imagenet-val", str(val_dir), "--list", str(listed))
    code, by_label = evaluate(tmp_path, *args, "--explain", "label")
    assert code == 0 and by_label["explained"] == "label"
    assert [r["class"] for r in by_label["records"]] == labels
    _, by_prediction = evaluate(tmp_path, *args)
    # Only the mislabelled image is explained for another class, so only its scores move.
    clean = [
        [r["methods"]["centre"]["clean"] for r in report["records"]]
        for report in (by_label, by_prediction)
    ]
    assert clean[0][0] == clean[1][0] and clean[0][2] == clean[1][2]
    assert clean[0][1] < clean[1][1]


def test_limit_spreads_over_the_lists_order(val_dir, tmp_path):
    listed = write_list(tmp_path / "Evaluation.txt", LISTED, [1, 2, 3])
    code, report = evaluate(
        tmp_path, "--imagenet-val", str(val_dir), "--list", str(listed), "--limit", "2"
    )
    assert code == 0
    assert [r["file"] for r in report["records"]] == [str(val_dir / LISTED[i]) for i in (0, 1)]
    assert [r["label"] for r in report["records"]] == [1, 2]


def test_missing_images_are_counted_and_the_first_few_named(val_dir, tmp_path, capsys):
    absent = [f"n09/val_0000010{i}.JPEG" for i in range(7)]
    listed = write_list(tmp_path / "Evaluation.txt", [LISTED[0], *absent], [0] * 8)
    code, _ = evaluate(tmp_path, "--imagenet-val", str(val_dir), "--list", str(listed))
    err = capsys.readouterr().err
    assert code == 2 and "7 of the 8 images" in err
    assert all(name in err for name in absent[:5]) and absent[5] not in err
    assert "--imagenet-val" in err


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("# the authors' list\n\nn01/val_00000001.JPEG 3\nn03/val_00000002.jpg\n", 4),
        ("n01/val_00000001.JPEG three\n", 1),
        ("n01/val_00000001.JPEG 3\nnotes.txt 5\n", 2),
    ],
)
def test_a_malformed_line_is_named_by_its_number(val_dir, tmp_path, capsys, text, line):
    listed = tmp_path / "Evaluation.txt"
    listed.write_text(text)
    code, _ = evaluate(tmp_path, "--imagenet-val", str(val_dir), "--list", str(listed))
    assert code == 2 and f"Evaluation.txt:{line}:" in capsys.readouterr().err


def test_a_label_outside_the_backbones_classes_is_an_error(val_dir, tmp_path, capsys):
    listed = write_list(tmp_path / "Evaluation.txt", LISTED, [0, 10, 1])
    code, _ = evaluate(tmp_path, "--imagenet-val", str(val_dir), "--list", str(listed))
    err = capsys.readouterr().err
    assert code == 2 and "labelled 10" in err and LISTED[1] in err


@pytest.mark.parametrize(
    "extra",
    [
        ["--list", "Evaluation.txt"],  # no folder for its paths
        ["--images", "val", "--imagenet-val", "val"],
        ["--images", "val", "--explain", "label"],  # no labels to explain
        ["--list", "absent.txt", "--imagenet-val", "val"],
        ["--list", "hf://IDT-ITI/T-TAME-models", "--imagenet-val", "val"],  # a repo, no file
    ],
)
def test_options_that_do_not_fit_together_are_errors(val_dir, tmp_path, monkeypatch, extra):
    write_list(tmp_path / "Evaluation.txt", LISTED, [0, 1, 2])
    monkeypatch.chdir(tmp_path)
    assert evaluate(tmp_path, *extra)[0] == 2


@pytest.mark.integration
def test_the_hub_list_is_fetched_once_then_used_offline(
    val_dir,
    tmp_path,
    monkeypatch,
    fake_hub,  # noqa: F811 (the fixture imported above)
):
    labels = labels_with_one_wrong(val_dir)
    listed = write_list(tmp_path / "Evaluation.txt", LISTED, labels)
    fake_hub.publish("IDT-ITI/T-TAME-models", {HUB_LIST.split("/", 4)[4]: listed.read_bytes()})
    listed.unlink()
    code, report = evaluate(tmp_path, "--imagenet-val", str(val_dir), "--list", HUB_LIST)
    assert code == 0 and report["list"] == HUB_LIST
    assert [r["file"] for r in report["records"]] == [str(val_dir / n) for n in LISTED]
    assert report["accuracy"]["top1"] == pytest.approx(200 / 3)
    assert any("Evaluation_2000.txt" in r for r in fake_hub.requests)

    go_offline(fake_hub, monkeypatch)
    code, again = evaluate(tmp_path, "--imagenet-val", str(val_dir), "--list", HUB_LIST)
    assert code == 0 and again["accuracy"] == report["accuracy"]


def test_an_uncached_hub_list_fails_fast_offline(val_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    code, _ = evaluate(tmp_path, "--imagenet-val", str(val_dir), "--list", HUB_LIST)
    err = capsys.readouterr().err
    assert code == 2 and "HF_HUB_OFFLINE is set" in err and "Evaluation_2000.txt" in err

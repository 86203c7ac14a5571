"""``ttame explain`` on folders, globs and many files; several classes from one pass."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import tiny_explainer
from ttame.batch import explain_files
from ttame.cli import main

TINY = ["--backbone", "tiny_cnn"]


def photo(path: Path, seed: int, size: tuple[int, int] = (50, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    photo(root / "a.jpg", 0)
    photo(root / "a.png", 1, (64, 30))
    photo(root / "sub" / "b.jpg", 2, (30, 70))
    photo(root / "sub" / "deeper" / "c.webp", 3)
    (root / "sub" / "broken.jpg").write_text("not an image")
    (root / "notes.txt").write_text("not looked at")
    return root


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_gives_one_line_per_file_and_goes_on_past_a_broken_one(folder, tmp_path, capsys):
    jsonl = tmp_path / "out.jsonl"
    code = main(["explain", str(folder), *TINY, "--batch", "3", "--jsonl", str(jsonl)])
    assert code == 1  # one file failed
    found = lines(jsonl)
    names = [Path(r["file"]).relative_to(folder).as_posix() for r in found]
    assert names == ["a.jpg", "a.png", "sub/b.jpg", "sub/broken.jpg", "sub/deeper/c.webp"]
    broken = found[3]
    assert set(broken) == {"file", "error"} and "\n" not in broken["error"]
    assert "not an image" in broken["error"]
    for report in found[:3] + found[4:]:
        assert 0 <= report["probability"] <= 1 and report["class_name"].startswith("thing")
    assert "1 failed" in capsys.readouterr().err


def test_a_line_has_the_single_file_json_plus_file(folder, tmp_path, capsys):
    jsonl = tmp_path / "out.jsonl"
    main(["explain", str(folder), *TINY, "--batch", "2", "--jsonl", str(jsonl)])
    capsys.readouterr()
    assert main(["explain", str(folder / "sub" / "b.jpg"), *TINY, "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    line = next(r for r in lines(jsonl) if r["file"].endswith("b.jpg"))
    assert list(line) == ["file", *single]
    for key in ("backbone", "head", "class_index", "class_name", "peak_xy"):
        assert line[key] == single[key], key
    assert line["probability"] == pytest.approx(single["probability"], abs=1e-6)
    assert [t[0] for t in line["top5"]] == [t[0] for t in single["top5"]]


def test_results_do_not_depend_on_the_batch_size_or_the_decoding_threads(folder, tmp_path):
    runs = []
    for batch, workers in ((1, 0), (4, 2)):
        jsonl = tmp_path / f"{batch}.jsonl"
        main(["explain", str(folder), *TINY, "--batch", str(batch), "--workers", str(workers),
              "--jsonl", str(jsonl)])  # fmt: skip
        runs.append([(r["file"], r.get("class_index"), r.get("peak_xy")) for r in lines(jsonl)])
    assert runs[0] == runs[1]


def test_overlays_mirror_the_folder_without_collisions(folder, tmp_path):
    out = tmp_path / "overlays"
    assert main(["explain", str(folder), *TINY, "--out", str(out)]) == 1
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.jpg.png", "a.png.png", "sub/b.jpg.png", "sub/deeper/c.webp.png"]
    assert Image.open(out / "sub" / "b.jpg.png").size == (30, 70)  # the photo's own size


def test_a_glob_and_several_files(folder, tmp_path):
    jsonl = tmp_path / "glob.jsonl"
    code = main(["explain", str(folder / "**" / "*.jpg"), *TINY, "--jsonl", str(jsonl)])
    assert code == 1  # broken.jpg matches too
    assert sorted(Path(r["file"]).name for r in lines(jsonl)) == ["a.jpg", "b.jpg", "broken.jpg"]
    files = [str(folder / "a.jpg"), str(folder / "sub" / "b.jpg"), str(folder / "a.jpg")]
    assert main(["explain", *files, *TINY, "--jsonl", str(jsonl)]) == 0
    assert [Path(r["file"]).name for r in lines(jsonl)] == ["a.jpg", "b.jpg"]  # each once


def test_a_missing_file_among_several_is_an_error_line(folder, tmp_path):
    jsonl = tmp_path / "out.jsonl"
    files = [str(folder / "a.jpg"), str(folder / "gone.jpg")]
    assert main(["explain", *files, *TINY, "--jsonl", str(jsonl)]) == 1
    found = lines(jsonl)
    assert "class_index" in found[0] and "No such image file" in found[1]["error"]


def test_an_empty_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["explain", str(tmp_path / "empty"), *TINY]) == 2
    assert capsys.readouterr().err.strip().startswith("error: No image files")


def test_top_k_classes_give_one_summary_and_one_overlay_per_class(folder, tmp_path):
    jsonl, out = tmp_path / "out.jsonl", tmp_path / "overlays"
    args = ["--classes", "top3", "--jsonl", str(jsonl), "--out", str(out)]
    main(["explain", str(folder), *TINY, *args])
    report = lines(jsonl)[0]
    assert "class_index" not in report and len(report["maps"]) == 3
    assert [m["class_index"] for m in report["maps"]] == [t[0] for t in report["top5"][:3]]
    for summary in report["maps"]:
        assert set(summary) == {"class_index", "class_name", "probability", "peak_xy"}
    indices = [m["class_index"] for m in report["maps"]]
    assert sorted(p.name for p in out.glob("a.jpg.*")) == sorted(f"a.jpg.{i}.png" for i in indices)


def test_a_list_of_class_names_and_indices_for_one_photo(folder, tmp_path, capsys):
    out = tmp_path / "overlay.png"
    code = main(["explain", str(folder / "a.jpg"), *TINY, "--classes", "thing 4,2", "--json",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [m["class_index"] for m in report["maps"]] == [4, 2]
    assert {p.name for p in tmp_path.glob("overlay.*.png")} == {"overlay.4.png", "overlay.2.png"}
    explainer = tiny_explainer()
    image, _ = explainer.preprocess(folder / "a.jpg")
    probabilities = explainer.explain(image[None]).probabilities[0]
    assert report["maps"][0]["probability"] == pytest.approx(float(probabilities[4]), abs=1e-6)


@pytest.mark.parametrize(
    ("classes", "message"), [("top0", "between 1 and 10"), ("zebra", "Unknown class name")]
)
def test_bad_classes_are_one_line_errors(folder, capsys, classes, message):
    assert main(["explain", str(folder / "a.jpg"), *TINY, "--classes", classes]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_class_and_classes_exclude_each_other(folder):
    with pytest.raises(SystemExit):
        main(["explain", str(folder / "a.jpg"), *TINY, "--class", "1", "--classes", "top2"])


def test_explain_files_matches_explain_on_each_image(folder):
    explainer = tiny_explainer()
    paths = sorted(folder.rglob("*.jpg"))
    results = list(explain_files(explainer, paths, batch=2, top=2, workers=2))
    assert [r.path for r in results] == paths
    for result in results:
        if result.error is not None:
            assert result.path.name == "broken.jpg" and result.explanation is None
            continue
        image, _ = explainer.preprocess(result.path)
        alone = explainer.explain(image[None], top=2)
        assert result.explanation is not None
        assert torch.equal(result.explanation.classes, alone.classes)
        torch.testing.assert_close(result.explanation.maps, alone.maps, atol=1e-5, rtol=0)


def test_out_that_is_a_file_is_a_one_line_error_for_many_images(folder, tmp_path, capsys):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"x")
    assert main(["explain", str(folder), *TINY, "--out", str(taken)]) == 2
    assert "is a file; for many images give a folder" in capsys.readouterr().err

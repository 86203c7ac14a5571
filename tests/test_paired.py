import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ttame.cli import main
from ttame.errors import TTameError
from ttame.evaluation.paired import (
    difference_stat,
    images_needed,
    paired_between_reports,
    paired_block,
    paired_differences,
    paired_from_report,
)
from ttame.evaluation.report import paired_table
from ttame.evaluation.summary import Settings, bootstrap_interval, summarise
from ttame.metrics import road

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = Settings()  # kept shares 100, 50, 15


def _entry(drops, increases=(False, False, False), **extra) -> dict:
    """A method's record whose per-image AD terms are ``drops`` (clean confidence 1)."""
    masked = [1.5 if up else 1 - d / 100 for d, up in zip(drops, increases, strict=True)]
    return {"clean": 1.0, "masked": masked, "seconds": 0.01, **extra}


def _records(ours, theirs) -> list[dict]:
    return [
        {"index": i, "file": f"photos/img{i}.png", "class": 0, "methods": {"m": a, "ref": b}}
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
    ]


def _ad_records(base: np.ndarray, difference: np.ndarray) -> list[dict]:
    """M's AD is ``base + difference`` at every kept share, the reference's is ``base``."""
    ours = [_entry([b + d] * 3) for b, d in zip(base, difference, strict=True)]
    return _records(ours, [_entry([b] * 3) for b in base])


def _report(records: list[dict], methods: list[str], images: str = "photos", **extra) -> dict:
    return {
        "backbone": "tiny_cnn",
        "head": "untrained",
        "head_sha256": None,
        "images": images,
        "n_images": len(records),
        "skipped": [],
        "percents": list(SETTINGS.percents),
        "road_fractions": list(SETTINGS.fractions),
        "bootstrap": {"resamples": 300, "level": 0.95, "seed": 0},
        "methods": summarise(records, methods, SETTINGS, 300),
        **extra,
        "records": records,
    }


def test_better_by_exactly_three_points_on_every_image():
    base = np.random.default_rng(1).uniform(10, 90, 400)
    result = paired_differences(_ad_records(base, np.full(400, -3.0)), "m", "ref", SETTINGS, 300)
    assert result["n_images"] == 400
    for share in ("100", "50", "15"):
        stat = result["AD"][share]
        assert stat["mean"] == pytest.approx(-3)
        assert stat["CI95"] == pytest.approx([-3, -3])
        assert stat["n"] == 400 and stat["direction"] == "lower"
        assert (stat["share_better"], stat["share_worse"], stat["share_tied"]) == (1, 0, 0)
        assert stat["verdict"] == "better"
        ic = result["IC"][share]
        assert ic["mean"] == 0 and ic["share_tied"] == 1 and ic["verdict"] == "inconclusive"
    assert "ROAD" not in result and "localisation" not in result


def test_normal_differences_give_an_interval_around_the_mean_that_excludes_zero():
    rng = np.random.default_rng(2)
    differences = rng.normal(-3, 1, 400)
    result = paired_differences(
        _ad_records(rng.uniform(20, 80, 400), differences), "m", "ref", SETTINGS, 1000, seed=3
    )
    stat = result["AD"]["100"]
    low, high = stat["CI95"]
    assert low < -3 < high < 0 and high - low < 0.3
    assert stat["mean"] == pytest.approx(differences.mean())
    assert stat["verdict"] == "better"


def test_zero_mean_differences_are_inconclusive():
    half = np.random.default_rng(4).normal(0, 2, 200)
    differences = np.concatenate([half, -half])
    result = paired_differences(
        _ad_records(np.full(400, 50.0), differences), "m", "ref", SETTINGS, 1000
    )
    stat = result["AD"]["50"]
    assert stat["mean"] == pytest.approx(0, abs=1e-9)
    assert stat["CI95"][0] < 0 < stat["CI95"][1]
    assert stat["verdict"] == "inconclusive"
    assert stat["share_better"] == stat["share_worse"] == pytest.approx(0.5)


def test_pairing_separates_correlated_methods_whose_marginal_intervals_overlap():
    # Images differ a lot (AD 10-90); M is better by about 1 point on each of them.
    rng = np.random.default_rng(5)
    base = rng.uniform(10, 90, 100)
    our = base - 1 + rng.normal(0, 0.5, 100)
    records = _ad_records(base, our - base)
    paired = paired_differences(records, "m", "ref", SETTINGS, 1000)["AD"]["100"]
    # Unpaired: each method's images resampled on their own.
    draws = np.random.default_rng(0).integers(0, 100, size=(2, 1000, 100))
    means = our[draws[0]].mean(axis=1) - base[draws[1]].mean(axis=1)
    unpaired = np.percentile(means, [2.5, 97.5])
    assert paired["CI95"][1] < 0 < unpaired[1]
    assert paired["CI95"][1] - paired["CI95"][0] < (unpaired[1] - unpaired[0]) / 10
    marginal = summarise(records, ["m", "ref"], SETTINGS, 1000)
    (m_low, m_high), (r_low, r_high) = (marginal[k]["AD_CI95"]["100"] for k in ("m", "ref"))
    assert m_low < r_high and r_low < m_high  # the table's intervals overlap


def test_ic_is_paired_in_percentage_points_and_ties_are_counted_apart():
    up = [(i < 10, False, False) for i in range(50)]  # M's confidence rises on 10 images
    ref_up = [(i in (20, 21), False, False) for i in range(50)]  # the reference's on 2 others
    records = _records([_entry([0] * 3, u) for u in up], [_entry([0] * 3, u) for u in ref_up])
    stat = paired_differences(records, "m", "ref", SETTINGS, 300)["IC"]["100"]
    assert stat["mean"] == pytest.approx(16.0)  # (10 - 2) / 50 images, in points
    assert stat["direction"] == "higher"
    assert (stat["share_better"], stat["share_worse"], stat["share_tied"]) == pytest.approx(
        (0.2, 0.04, 0.76)
    )


def test_road_is_paired_only_on_images_where_both_methods_have_it():
    def curve(morf: bool, lerf: list[bool]) -> dict:
        return {"MoRF": [morf] * 7, "LeRF": lerf}

    # M has ROAD on images 0-5, the reference on 3-9: they share images 3, 4 and 5.
    ours = [
        _entry([20] * 3, **({"road": curve(False, [True] * 7)} if i < 6 else {})) for i in range(10)
    ]
    lerf = [True] * 3 + [False] * 4
    theirs = [
        _entry([20] * 3, **({"road": curve(True, lerf)} if i >= 3 else {})) for i in range(10)
    ]
    result = paired_differences(_records(ours, theirs), "m", "ref", SETTINGS, 300)
    morf, lerf = result["ROAD"]["MoRF"], result["ROAD"]["LeRF"]
    assert morf["n"] == lerf["n"] == 3 and result["n_images"] == 10
    assert morf["mean"] == pytest.approx(-1) and morf["verdict"] == "better"
    assert lerf["mean"] == pytest.approx(4 / 7) and lerf["verdict"] == "better"
    assert morf["direction"] == "lower" and lerf["direction"] == "higher"
    only_ours = _records(ours, [_entry([20] * 3)] * 10)
    assert "ROAD" not in paired_differences(only_ours, "m", "ref", SETTINGS, 300)


def test_localisation_is_paired_per_region_kind():
    ours = [_entry([20] * 3, mask={"pointing": 1.0, "energy": 0.5}) for _ in range(4)]
    theirs = [
        _entry([20] * 3, mask={"pointing": float(i % 2), "energy": 0.4 + 0.1 * i}) for i in range(4)
    ]
    result = paired_differences(_records(ours, theirs), "m", "ref", SETTINGS, 300)
    assert list(result["localisation"]) == ["mask"]
    pointing, energy = (result["localisation"]["mask"][k] for k in ("pointing", "energy"))
    assert pointing["mean"] == pytest.approx(0.5) and pointing["n"] == 4
    assert (pointing["share_better"], pointing["share_tied"]) == (0.5, 0.5)
    assert energy["mean"] == pytest.approx(-0.05)
    assert pointing["direction"] == energy["direction"] == "higher"
    table = paired_table(paired_block(_records(ours, theirs), ["m", "ref"], "ref", SETTINGS, 300))
    assert "M minus ref, paired" in table and "pointing (mask) ↑" in table
    assert "box" not in table


def test_difference_stat_reads_the_direction():
    assert difference_stat([2.0] * 5, "higher")["verdict"] == "better"
    assert difference_stat([2.0] * 5, "lower")["verdict"] == "worse"
    empty = difference_stat([], "lower")
    assert empty["n"] == 0 and empty["verdict"] == "inconclusive"
    with pytest.raises(ValueError):
        difference_stat([1.0], "up")
    # Bootstrapping the differences is resampling both methods with the same image indices.
    ours, theirs = np.random.default_rng(6).uniform(0, 1, (2, 30))
    stat = difference_stat(ours - theirs, "lower", 500, seed=7)
    rows = np.random.default_rng(7).integers(0, 30, size=(500, 30))
    same = np.percentile(ours[rows].mean(axis=1) - theirs[rows].mean(axis=1), [2.5, 97.5])
    assert stat["CI95"] == pytest.approx(list(same))
    assert stat["CI95"] == pytest.approx(list(bootstrap_interval(ours - theirs, 500, 7)))


def test_the_paired_block_survives_a_json_round_trip(tmp_path):
    base = np.random.default_rng(8).uniform(10, 90, 40)
    records = _ad_records(base, np.full(40, -2.0))
    for i, record in enumerate(records):
        for entry in record["methods"].values():
            entry["road"] = {"MoRF": [i % 2 == 0] * 7, "LeRF": [True] * 7}
    paired = paired_block(records, ["m", "ref"], "ref", SETTINGS, 300, 0)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report(records, ["m", "ref"], paired=paired)))
    loaded = json.loads(path.read_text())
    assert loaded["paired"]["reference"] == "ref" and list(loaded["paired"]["methods"]) == ["m"]
    again = json.loads(json.dumps(paired_from_report(loaded, "ref")))
    assert again == loaded["paired"]
    assert loaded["paired"]["methods"]["m"]["AD"]["15"]["mean"] == pytest.approx(-2)
    with pytest.raises(TTameError, match="no method 'gradcam'"):
        paired_from_report(loaded, "gradcam")


def _head_reports() -> tuple[dict, dict]:
    """Two heads' reports of ttame on the same photos, folders spelled apart, B with one extra."""
    base = np.random.default_rng(9).uniform(10, 90, 12)
    a = [
        {"index": i, "file": f"/data/photos/img{i}.png", "methods": {"ttame": _entry([b - 2] * 3)}}
        for i, b in enumerate(base)
    ]
    b = [
        {"index": i, "file": f"photos/img{i}.png", "methods": {"ttame": _entry([v] * 3)}}
        for i, v in enumerate([*base, 50.0])
    ]
    return _report(a, ["ttame"], "/data/photos"), _report(b[::-1], ["ttame"], "photos")


def test_two_reports_of_different_heads_are_paired_by_file():
    first, second = _head_reports()
    paired = paired_between_reports(first, second, "ttame", resamples=300)
    assert paired["reference"] == "B" and list(paired["methods"]) == ["A"]
    stat = paired["methods"]["A"]["AD"]["100"]
    assert paired["methods"]["A"]["n_images"] == stat["n"] == 12
    assert stat["mean"] == pytest.approx(-2) and stat["CI95"] == pytest.approx([-2, -2])
    second["percents"] = [100, 50]
    with pytest.raises(TTameError, match="different shares"):
        paired_between_reports(first, second, "ttame")


def test_compare_command_prints_and_writes_the_paired_block(tmp_path, capsys):
    first, second = _head_reports()
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, report in zip(paths, (first, second), strict=True):
        path.write_text(json.dumps(report))
    out = tmp_path / "paired.json"
    code = main(["compare", *map(str, paths), "--method", "ttame", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "A: ttame in" in text and "12 images in common" in text
    assert "| M minus B, paired |" in text and "| A | -2.0 [-2.0, -2.0] ✓ 100:0 |" in text
    assert json.loads(out.read_text())["methods"]["A"]["AD"]["50"]["verdict"] == "better"
    assert main(["compare", *map(str, paths), "--method", "gradcam"]) == 2
    assert "no method 'gradcam'" in capsys.readouterr().err


def _write_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(
            folder / f"img{i}.png"
        )


def _same_road(classify, images, maps, fractions, orders, labels=None, seed=0, **_):
    """ROAD stand-in that scores every map alike, so every ROAD difference is 0."""
    return {order: {"correct": torch.ones(len(fractions), 1, dtype=torch.bool)} for order in orders}


def test_evaluate_against_adds_the_reference_and_the_paired_block(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(road, "road_scores", _same_road)
    _write_images(tmp_path / "images", 3)
    out = tmp_path / "report.json"
    argv = ["evaluate", "--backbone", "tiny_cnn", "--device", "cpu", "--images"]
    argv += [str(tmp_path / "images"), "--methods", "ttame,centre", "--bootstrap", "200"]
    assert main([*argv, "--against", "gradcam", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["methods"]) == ["ttame", "centre", "gradcam"]
    paired = report["paired"]
    assert paired["reference"] == "gradcam" and list(paired["methods"]) == ["ttame", "centre"]
    assert paired == json.loads(
        json.dumps(paired_from_report(report, "gradcam", ["ttame", "centre"]))
    )
    for stats in paired["methods"].values():
        assert stats["n_images"] == 3 and set(stats["AD"]) == {"100", "50", "15"}
        assert stats["ROAD"]["MoRF"]["mean"] == 0 and stats["ROAD"]["LeRF"]["share_tied"] == 1
    text = capsys.readouterr().out
    assert "| M minus gradcam, paired |" in text and "| centre |" in text
    assert main([*argv, "--against", "gradcam,centre", "--no-road"]) == 2


def _load_results_report():
    spec = importlib.util.spec_from_file_location(
        "results_report", ROOT / "scripts" / "results_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_report_shows_a_paired_table_only_when_the_json_has_one(tmp_path):
    results_report = _load_results_report()
    rng = np.random.default_rng(10)
    base = rng.uniform(10, 90, 6)
    records = [
        {
            "index": i,
            "file": f"photos/img{i}.png",
            "methods": {
                "ttame": _entry([b - 3] * 3, road={"MoRF": [False] * 7, "LeRF": [True] * 7}),
                "gradcam": _entry([b] * 3, road={"MoRF": [True] * 7, "LeRF": [True] * 7}),
            },
        }
        for i, b in enumerate(base)
    ]
    plain = _report(records, ["ttame", "gradcam"])
    slow_records = [
        {
            **r,
            "methods": {"rise": _entry([50.0] * 3, road={"MoRF": [True] * 7, "LeRF": [True] * 7})},
        }
        for r in records[::2]
    ]
    slow = _report(slow_records, ["rise"], options={"rise_masks": 10})
    (tmp_path / "tiny_cnn_photos_slow.json").write_text(json.dumps(slow))
    (tmp_path / "tiny_cnn_photos.json").write_text(json.dumps(plain))
    assert "Paired" not in "\n".join(results_report.section("tiny_cnn", tmp_path))
    paired = paired_from_report(plain, "gradcam")
    (tmp_path / "tiny_cnn_photos.json").write_text(json.dumps({**plain, "paired": paired}))
    text = "\n".join(results_report.section("tiny_cnn", tmp_path))
    assert text.count("Paired: each method minus gradcam") == 2  # all photos and the subset
    assert "| ttame | -3.0 [-3.0, -3.0] ✓ 100:0 |" in text
    assert "| rise |" in text.split("Every method on the same 3 photos")[1]


@pytest.mark.skipif(
    not (ROOT / "docs" / "results" / "mobilenet_v2_photos.json").is_file(),
    reason="no saved results",
)
def test_results_report_still_reads_the_saved_reports_without_a_paired_block(tmp_path):
    for path in (ROOT / "docs" / "results").glob("mobilenet_v2_*.json"):
        report = json.loads(path.read_text())
        report.pop("paired", None)  # as reports written before --against existed
        (tmp_path / path.name).write_text(json.dumps(report))
    lines = _load_results_report().section("mobilenet_v2", tmp_path)
    assert lines[0] == "## mobilenet_v2" and "Paired" not in "\n".join(lines)


def test_the_spread_of_the_differences_sets_the_images_needed():
    rng = np.random.default_rng(0)
    differences = rng.normal(-3.0, 20.0, size=400)
    stat = difference_stat(differences, "lower")
    assert stat["sd"] == pytest.approx(20.0, rel=0.1)
    assert images_needed(20.0, 3.0) == 349  # ((1.96 + 0.84) * 20 / 3) ** 2
    assert images_needed(20.0, 6.0) == 88
    assert images_needed(20.0, -6.0, power=0.9) > 88
    with pytest.raises(ValueError):
        images_needed(20.0, 0.0)
    assert math.isnan(difference_stat([1.0], "lower")["sd"])

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from tests.helpers import tiny_explainer
from tests.loadgen import free_port
from ttame.cli import main
from ttame.distributed import setup_runtime
from ttame.evaluation.inputs import Item, merge, shard, spread
from ttame.evaluation.run import gather, head_provenance
from ttame.metrics import road

FRACTIONS = ["10", "20", "30", "40", "50", "70", "90"]


def _write_images(folder: Path, count: int, size: tuple[int, int] = (36, 36)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _fake_road(calls: list):
    """ROAD stand-in with a known answer: MoRF keeps the class below 50 % removed, LeRF always."""

    def road_scores(classify, images, maps, fractions, orders, labels=None, seed=0, **_):
        calls.append((tuple(maps.shape), labels.tolist(), seed))
        morf = torch.tensor([[f < 0.5] for f in fractions])
        return {
            "MoRF": {"correct": morf},
            "LeRF": {"correct": torch.ones(len(fractions), 1, dtype=torch.bool)},
        }

    return road_scores


def _evaluate(tmp_path: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    code = main(
        ["evaluate", "--backbone", "tiny_cnn", "--device", "cpu", "--json", str(out), *extra]
    )
    return code, json.loads(out.read_text()) if out.exists() else {}


def test_shards_partition_the_images_and_merge_restores_their_order():
    items = [Item(i, Path(f"{i}.png")) for i in range(7)]
    parts = [shard(items, rank, 3) for rank in range(3)]
    assert sorted(i.index for p in parts for i in p) == list(range(7))
    assert [i.index for i in parts[1]] == [1, 4]
    records = [[{"index": i.index} for i in p] for p in reversed(parts)]
    assert [r["index"] for r in merge(records)] == list(range(7))
    with pytest.raises(ValueError):
        merge([[{"index": 1}], [{"index": 1}]])
    with pytest.raises(ValueError):
        shard(items, 3, 3)


def test_limits_spread_over_the_sorted_list():
    assert spread(10, 3) == [0, 3, 6]
    assert spread(4, None) == spread(4, 9) == [0, 1, 2, 3]
    assert spread(5, 0) == []


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    runtime = setup_runtime("cpu")
    assert (runtime.rank, runtime.world_size) == (rank, world)
    items = shard([Item(i, Path(f"{i}.png")) for i in range(5)], rank, world)
    records = [{"index": i.index, "rank": rank} for i in items]
    failures = [{"file": f"bad{rank}.png", "error": "unreadable"}]
    merged, failed = gather(records, failures, runtime)
    if rank == 0:
        Path(out).write_text(json.dumps({"records": merged, "failed": failed}))
    else:
        assert merged == [] and failed == []
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.integration
def test_two_ranks_gather_their_shards_on_rank_zero_over_gloo(tmp_path):
    port = free_port()
    out = tmp_path / "gathered.json"
    mp.spawn(_gather_worker, args=(2, port, str(out)), nprocs=2, join=True)
    result = json.loads(out.read_text())
    assert [(r["index"], r["rank"]) for r in result["records"]] == [
        (0, 0),
        (1, 1),
        (2, 0),
        (3, 1),
        (4, 0),
    ]
    assert sorted(f["file"] for f in result["failed"]) == ["bad0.png", "bad1.png"]


def test_cli_writes_the_documented_json(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(road, "road_scores", _fake_road(calls))
    _write_images(tmp_path / "images", 3)
    plot = tmp_path / "curves.png"
    code, report = _evaluate(
        tmp_path,
        "--images",
        str(tmp_path / "images"),
        "--methods",
        "ttame,gradcam,centre",
        "--plot",
        str(plot),
        "--batch-size",
        "2",
        "--bootstrap",
        "200",
    )
    assert code == 0
    assert report["backbone"] == "tiny_cnn" and report["n_images"] == 3
    assert report["head"] == "untrained"
    assert list(report["methods"]) == ["ttame", "gradcam", "centre"]
    for summary in report["methods"].values():
        assert set(summary["AD"]) == set(summary["IC"]) == {"100", "50", "15"}
        assert all(0 <= v <= 100 for v in [*summary["AD"].values(), *summary["IC"].values()])
        for key, (low, high) in summary["AD_CI95"].items():
            assert low <= summary["AD"][key] <= high
        assert list(summary["ROAD"]["MoRF"]) == [*FRACTIONS, "mean"]
        assert [summary["ROAD"]["MoRF"][f] for f in FRACTIONS] == [1, 1, 1, 1, 0, 0, 0]
        assert summary["ROAD"]["MoRF"]["mean"] == pytest.approx(4 / 7)
        assert summary["ROAD"]["LeRF"]["mean"] == 1.0
        assert summary["seconds_per_image"] > 0
    # One ROAD call per image and method, for its map, its class and its own seed.
    assert len(calls) == 9 and {c[0] for c in calls} == {(1, 32, 32)}
    assert sorted({c[2] for c in calls}) == [0, 1, 2]
    assert [r["index"] for r in report["records"]] == [0, 1, 2]
    assert plot.stat().st_size > 0
    table = capsys.readouterr().out
    assert "| ttame |" in table and "AD 15% ↓" in table


@pytest.mark.slow
def test_cli_runs_the_real_road_on_one_image(tmp_path):
    _write_images(tmp_path / "images", 2)
    code, report = _evaluate(
        tmp_path, "--images", str(tmp_path / "images"), "--methods", "centre", "--road-limit", "1"
    )
    assert code == 0 and report["n_images"] == 2
    centre = report["methods"]["centre"]
    assert centre["n_images_road"] == 1
    assert all(v in (0.0, 1.0) for v in centre["ROAD"]["MoRF"].values())


def test_unreadable_images_are_reported_and_skipped(tmp_path, capsys):
    _write_images(tmp_path / "images", 2)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not an image")
    code, report = _evaluate(
        tmp_path, "--images", str(tmp_path / "images"), "--methods", "random", "--no-road"
    )
    assert code == 0 and report["n_images"] == 2
    assert [Path(s["file"]).name for s in report["skipped"]] == ["broken.jpg"]
    assert "skipped" in capsys.readouterr().err
    assert "ROAD" not in report["methods"]["random"]


def test_nothing_readable_is_an_error(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG nonsense")
    code, _ = _evaluate(tmp_path, "--images", str(tmp_path / "images"), "--no-road")
    assert code == 2 and "error:" in capsys.readouterr().err
    assert main(["evaluate", "--images", str(tmp_path), "--methods", "gradcm"]) == 2


def test_masks_add_pointing_game_and_energy_against_chance(tmp_path):
    # 36 x 36 images, object = left half (x < 18). The backbone sees the centre 32 x 32 crop,
    # where the object is columns 0..15: half the crop. The centred Gaussian's four maximal
    # pixels straddle the object's edge (two inside) and its mass is split evenly.
    root = tmp_path / "gt"
    paths = _write_images(root / "images", 2)
    (root / "masks").mkdir()
    manifest = []
    for path in paths:
        mask = np.zeros((36, 36), dtype=np.uint8)
        mask[:, :18] = 255
        Image.fromarray(mask).save(root / "masks" / path.name)
        manifest.append(
            {"image": f"images/{path.name}", "mask": f"masks/{path.name}", "box": [0, 0, 18, 36]}
        )
    (root / "manifest.json").write_text(json.dumps(manifest))
    code, report = _evaluate(
        tmp_path,
        "--images",
        str(root / "images"),
        "--masks",
        str(root),
        "--methods",
        "centre",
        "--no-road",
    )
    assert code == 0
    assert report["localisation_chance"] == {"mask": 0.5, "box": 0.5}
    for region in ("mask", "box"):
        block = report["methods"]["centre"]["localisation"][region]
        assert block["n_images"] == 2
        assert block["pointing"] == pytest.approx(0.5)
        assert block["energy"] == pytest.approx(0.5, abs=1e-5)


def test_a_trained_head_is_named_with_its_weights_hash(tmp_path):
    head = tiny_explainer().save_pretrained(tmp_path / "head")
    _write_images(tmp_path / "images", 1)
    code, report = _evaluate(
        tmp_path,
        "--images",
        str(tmp_path / "images"),
        "--head",
        str(head),
        "--methods",
        "ttame",
        "--no-road",
    )
    assert code == 0 and report["head"] == str(head)
    digest = hashlib.sha256((head / "model.safetensors").read_bytes()).hexdigest()
    assert report["head_sha256"] == digest


def test_a_head_built_in_memory_or_untrained_is_named_so():
    built = tiny_explainer()
    assert head_provenance(built) == {"head": "built in memory", "head_sha256": None}
    built.trained = False
    assert head_provenance(built) == {"head": "untrained", "head_sha256": None}

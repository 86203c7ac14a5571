"""Tests of the offline image pool; every source is faked in a temporary folder."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ttame.pool import (
    TrainingPool,
    build_groundtruth_set,
    composite,
    default_train_transform,
    export_eval_photos,
)
from ttame.pool_sources import (
    Background,
    Photo,
    PoolSources,
    SourceError,
    Stamp,
    collect_sources,
    fetch_deb,
    load_gcompris_photos,
    load_package_photos,
    load_stamps,
    parse_credits,
    read_rcc,
    split_of,
)

RED, GREEN, BLUE, YELLOW, PURPLE = (
    (255, 0, 0),
    (0, 200, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
)


# --- builders ---------------------------------------------------------------------------------


def write_stamp(path: Path, colour: tuple[int, int, int], size=(60, 40), margin=10) -> Path:
    """An RGBA cut-out: an opaque rectangle of ``colour`` inside a transparent margin."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGBA", (size[0] + 2 * margin, size[1] + 2 * margin), (0, 0, 0, 0))
    image.paste(Image.new("RGBA", size, (*colour, 255)), (margin, margin))
    image.save(path)
    return path


def write_background(path: Path, seed: int) -> Path:
    """A noisy grey texture with no pure red, green, blue or yellow pixel."""
    noise = np.random.default_rng(seed).integers(90, 170, size=(90, 120, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    return path


def photo(key: str, split: str, colour=(10, 20, 30)) -> Photo:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buffer, format="PNG")
    return Photo(key, "test", buffer.getvalue(), split, "CC0", "someone", "https://example.org")


@pytest.fixture
def sources(tmp_path: Path) -> PoolSources:
    """Training stamps are red, evaluation stamps are red, green, yellow or purple."""
    stamps = [
        Stamp("s/train_a.png", write_stamp(tmp_path / "train_a.png", RED), "a", "train"),
        Stamp("s/train_b.png", write_stamp(tmp_path / "train_b.png", RED, (30, 50)), "b", "train"),
        Stamp("s/eval_red.png", write_stamp(tmp_path / "eval_red.png", RED), "red", "eval"),
        Stamp("s/eval_green.png", write_stamp(tmp_path / "eval_green.png", GREEN), "g", "eval"),
        Stamp("s/eval_yel.png", write_stamp(tmp_path / "eval_yel.png", YELLOW), "y", "eval"),
        Stamp("s/eval_pur.png", write_stamp(tmp_path / "eval_pur.png", PURPLE), "p", "eval"),
    ]
    backgrounds = [
        Background(f"bg/{i}.png", write_background(tmp_path / f"bg{i}.png", i)) for i in range(3)
    ]
    photos = [photo("p/train.png", "train"), photo("p/eval.png", "eval", (200, 100, 0))]
    return PoolSources(stamps, backgrounds, photos)


def build_rcc(files: dict[str, bytes], version: int = 3, compress: set[str] = frozenset()) -> bytes:
    """Write a Qt resource archive in the documented layout (children stored contiguously)."""
    root: dict = {}
    for path, data in files.items():
        node = root
        *folders, name = path.strip("/").split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
        node[name] = (path, data)
    names, payload, entries = bytearray(), bytearray(), []

    def name_offset(name: str) -> int:
        offset = len(names)
        encoded = name.encode("utf-16-be")
        names.extend(struct.pack(">HI", len(name), 0) + encoded)
        return offset

    queue = [(root, 0)]
    entries.append((0, 2, 0, 0))  # the root; count and first child filled in below
    while queue:
        node, index = queue.pop(0)
        first = len(entries)
        entries[index] = (entries[index][0], 2, len(node), first)
        for name, child in node.items():
            if isinstance(child, dict):
                entries.append((name_offset(name), 2, 0, 0))
                queue.append((child, len(entries) - 1))
            else:
                path, data = child
                blob = data
                if path in compress:
                    blob = struct.pack(">I", len(data)) + zlib.compress(data)
                offset = len(payload)
                payload.extend(struct.pack(">I", len(blob)) + blob)
                flags = 1 if path in compress else 0
                entries.append((name_offset(name), flags, None, offset))
    tail = b"\0" * 8 if version >= 2 else b""
    tree = bytearray()
    for noff, flags, count, value in entries:
        if flags & 2:
            tree.extend(struct.pack(">IHII", noff, flags, count, value) + tail)
        else:
            tree.extend(struct.pack(">IHHHI", noff, flags, 0, 0, value) + tail)
    header = 24 if version >= 3 else 20
    data_at, names_at = header, header + len(payload)
    tree_at = names_at + len(names)
    head = b"qres" + struct.pack(">IIII", version, tree_at, data_at, names_at)
    if version >= 3:
        head += struct.pack(">I", 0)
    return head + bytes(payload) + bytes(names) + bytes(tree)


def webp(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buffer, format="WEBP")
    return buffer.getvalue()


# --- split ------------------------------------------------------------------------------------


def test_split_is_a_stable_hash_of_the_key():
    # Pinned values: changing the rule would silently move images between train and eval.
    assert split_of("tuxpaint-stamps/animals/birds/owl.png", 0.5) == "train"
    assert split_of("tuxpaint-stamps/animals/mammals/cats/cheetah.png", 0.5) == "eval"
    assert split_of("gcompris/explore_farm_animals/animals/cow.webp", 0.2) == "eval"
    assert split_of("gcompris/categorization/images/tools/hammer1.webp", 0.2) == "train"
    keys = [f"folder/photo_{i}.webp" for i in range(4000)]
    share = sum(split_of(k, 0.2) == "eval" for k in keys) / len(keys)
    assert 0.17 < share < 0.23
    assert [split_of(k, 0.2) for k in keys] == [split_of(k, 0.2) for k in keys]


def test_stamp_loader_skips_drawings_and_splits_by_file(tmp_path: Path):
    base = tmp_path / "usr/share/tuxpaint/stamps"
    for i in range(40):
        write_stamp(base / f"animals/photo_{i}.png", RED, size=(80, 50))
    (base / "animals/photo_0.txt").write_text("A red box.\nfr.utf8=Une boîte.\n")
    big = (80, 50)
    write_stamp(base / "animals/cartoon/drawn.png", RED, big)
    write_stamp(base / "animals/photo_mirror.png", RED, big)
    write_stamp(base / "town/flags/flag.png", RED, big)
    write_stamp(base / "food/vector.png", RED, big).with_suffix(".svg").write_text("<svg/>")
    write_stamp(base / "food/tiny.png", RED, size=(40, 40))
    Image.new("RGB", (90, 90), RED).save(base / "food/opaque.png")

    stamps = load_stamps(tmp_path)

    assert sorted(s.path.stem for s in stamps) == sorted(f"photo_{i}" for i in range(40))
    assert stamps[0].name == "A red box"
    train = {s.key for s in stamps if s.split == "train"}
    evaluation = {s.key for s in stamps if s.split == "eval"}
    assert train and evaluation and not train & evaluation
    assert train | evaluation == {s.key for s in stamps}
    assert {s.key for s in load_stamps(tmp_path) if s.split == "eval"} == evaluation


def test_named_photos_are_evaluation_only():
    photos = load_package_photos({})
    assert photos, "scikit-image ships example photos"
    assert {p.split for p in photos} == {"eval"}
    assert all(p.image().mode == "RGB" for p in photos)


# --- Qt resource archives ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 3])
def test_read_rcc_reads_plain_and_zlib_files(version: int):
    files = {"/a/b/one.txt": b"first file", "/a/two.bin": b"\x00\x01" * 50, "/top": b"top"}
    archive = build_rcc(files, version, compress={"/a/two.bin"})
    assert read_rcc(archive) == files
    assert read_rcc(archive, lambda path: path.endswith(".txt")) == {"/a/b/one.txt": b"first file"}


def test_read_rcc_rejects_other_files():
    with pytest.raises(ValueError, match="qres"):
        read_rcc(b"PK\x03\x04 not an rcc")


def test_gcompris_photos_with_credits_and_no_duplicate_across_archives(tmp_path: Path):
    rcc_dir = tmp_path / "usr/share/gcompris-qt/rcc"
    rcc_dir.mkdir(parents=True)
    readme = (
        "Copyright: Someone\nLicense: CC0-1.0\nSource: https://example.org/colosseum.jpg\n"
        "Files:\nimages/colosseum.webp\n\nFiles: images/fish.webp\nLicense: Public Domain\n"
    )
    base = "/gcompris/src/activities/categorization/resource/"
    (rcc_dir / "categorization.rcc").write_bytes(
        build_rcc(
            {
                base + "README": readme.encode(),
                base + "images/colosseum.webp": webp(RED),
                base + "images/fish.webp": webp(GREEN),
                base + "images/numbers.webp": webp(BLUE),
                base + "Board.qml": b"Item {}",
            },
            compress={base + "README"},
        )
    )
    other = "/gcompris/src/activities/explore_monuments/resource/"
    (rcc_dir / "explore_monuments.rcc").write_bytes(
        build_rcc(
            {
                other + "README": b"Source: https://example.org/colosseum.jpg\nFiles: w/c.webp\n",
                other + "w/c.webp": webp(RED),
            }
        )
    )

    photos = load_gcompris_photos(tmp_path, ["categorization", "explore_monuments"])

    by_key = {p.key: p for p in photos}
    assert set(by_key) == {
        "gcompris/categorization/images/colosseum.webp",
        "gcompris/categorization/images/fish.webp",
    }
    colosseum = by_key["gcompris/categorization/images/colosseum.webp"]
    assert (colosseum.licence, colosseum.credit) == ("CC0-1.0", "Someone")
    assert colosseum.origin == "https://example.org/colosseum.jpg"
    assert by_key["gcompris/categorization/images/fish.webp"].licence == "Public Domain"
    assert colosseum.image().getpixel((5, 5))[0] > 200
    assert all(p.split == split_of(p.key, 0.2) for p in photos)


def test_parse_credits_reads_files_on_the_same_or_following_lines():
    credits = parse_credits("License: A\nFiles:\nx.webp\ny.webp\n\nFiles: z.webp\nLicense: B\n")
    assert {name: fields["License"] for name, fields in credits.items()} == {
        "x.webp": "A",
        "y.webp": "A",
        "z.webp": "B",
    }


# --- fetching ---------------------------------------------------------------------------------


@pytest.fixture
def failing_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An apt-get that cannot reach any mirror."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "apt-get"
    script.write_text("#!/bin/sh\necho 'E: Unable to locate package '\"$2\" >&2\nexit 100\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


@pytest.mark.usefixtures("failing_apt")
def test_failing_download_says_which_package_and_why(tmp_path: Path):
    with pytest.raises(SourceError, match=r"nosuchpkg: apt-get download failed.*Unable to locate"):
        fetch_deb("nosuchpkg", tmp_path / "cache", lambda name: True)


@pytest.mark.usefixtures("failing_apt")
def test_collect_sources_reports_failures_and_keeps_the_rest(tmp_path: Path):
    messages: list[str] = []
    pool = collect_sources(tmp_path / "cache", on_error=messages.append)
    assert {"tuxpaint-stamps-default", "tuxpaint-data", "gcompris-qt-data", "darknet"} <= set(
        pool.failures
    )
    assert all("apt-get download failed" in m for m in messages[:4])
    assert any(p.source == "scikit-image" for p in pool.photos)


def test_offline_read_of_an_empty_cache_points_at_the_build_script(tmp_path: Path):
    with pytest.raises(SourceError, match=r"build_pool\.py"):
        fetch_deb("tuxpaint-data", tmp_path, lambda name: True, download=False)
    with pytest.raises(SourceError, match=r"build_pool\.py"):
        TrainingPool(cache_dir=tmp_path)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_fetch_deb_unpacks_only_wanted_files_and_reuses_the_cache(tmp_path: Path):
    package = tmp_path / "pkg"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN/control").write_text(
        "Package: fake\nVersion: 1.0\nArchitecture: all\nMaintainer: x <x@example.org>\n"
        "Description: test\n"
    )
    (package / "usr/share/fake").mkdir(parents=True)
    (package / "usr/share/fake/keep.png").write_bytes(b"png")
    (package / "usr/share/fake/drop.ogg").write_bytes(b"ogg")
    debs = tmp_path / "cache/debs"
    debs.mkdir(parents=True)
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", str(package), str(debs / "fake_1.0_all.deb")],
        check=True,
        capture_output=True,
    )

    root = fetch_deb("fake", tmp_path / "cache", lambda name: name.endswith(".png"))

    assert (root / "usr/share/fake/keep.png").read_bytes() == b"png"
    assert not (root / "usr/share/fake/drop.ogg").exists()
    (debs / "fake_1.0_all.deb").unlink()  # a second call must not need the .deb again
    assert fetch_deb("fake", tmp_path / "cache", lambda name: True) == root


# --- composites -------------------------------------------------------------------------------


def test_composite_mask_and_box_match_the_pasted_object(tmp_path: Path):
    stamp = Image.open(write_stamp(tmp_path / "s.png", RED, size=(60, 30), margin=7))
    background = Image.new("RGB", (300, 200), BLUE)

    image, mask, box = composite(stamp, background, scale=0.5, position=(0.0, 1.0), size=100)

    assert image.size == (100, 100) and mask.shape == (100, 100) and mask.dtype == bool
    assert box == (0, 75, 50, 100)  # 60x30 object -> 50x25, bottom-left corner
    rows, cols = np.nonzero(mask)
    assert box == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    assert mask.sum() == pytest.approx(50 * 25, abs=50)
    pixels = np.asarray(image).astype(int)
    inner = mask.copy()
    inner[[box[1], box[3] - 1], :] = inner[:, [box[0], box[2] - 1]] = False
    assert np.abs(pixels[inner] - RED).max() < 30
    assert np.abs(pixels[~mask] - BLUE).max() < 30

    _, _, right = composite(stamp, background, scale=0.5, position=(1.0, 0.0), size=100)
    assert right == (50, 0, 100, 25)
    with pytest.raises(ValueError, match="scale"):
        composite(stamp, background, scale=1.5, position=(0.5, 0.5))


def test_composite_rejects_an_empty_stamp():
    empty = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="transparent"):
        composite(empty, Image.new("RGB", (50, 50)), scale=0.5, position=(0.5, 0.5))


# --- training pool ----------------------------------------------------------------------------


def arrays(pool: TrainingPool) -> list[np.ndarray]:
    return [np.asarray(pool[i]) for i in range(len(pool))]


def test_training_pool_is_fixed_per_epoch_and_new_each_epoch(sources: PoolSources):
    pool = TrainingPool(sources, composites_per_epoch=6, size=64, seed=3)
    again = TrainingPool(sources, composites_per_epoch=6, size=64, seed=3)
    assert len(pool) == 7  # one training photo + six composites

    first = arrays(pool)
    assert all(np.array_equal(a, b) for a, b in zip(first, arrays(again), strict=True))
    assert np.array_equal(first[0], np.asarray(sources.photos[0].image()))
    pool.set_epoch(1)
    second = arrays(pool)
    assert np.array_equal(first[0], second[0])
    assert not any(np.array_equal(a, b) for a, b in zip(first[1:], second[1:], strict=True))
    again.set_epoch(1)
    assert all(np.array_equal(a, b) for a, b in zip(second, arrays(again), strict=True))

    other_seed = TrainingPool(sources, composites_per_epoch=6, size=64, seed=4)
    assert not np.array_equal(first[3], np.asarray(other_seed[3]))


def test_training_pool_uses_only_the_training_split(sources: PoolSources):
    pool = TrainingPool(sources, composites_per_epoch=20, size=64)
    assert [p.key for p in pool.photos] == ["p/train.png"]
    for image in arrays(pool)[1:]:
        red = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] < 60)
        green = (image[..., 1] > 150) & (image[..., 0] < 60) & (image[..., 2] < 60)
        assert red.sum() > 100 and green.sum() == 0


def test_default_train_transform_gives_a_raw_224_crop():
    transform = default_train_transform(color_jitter=0.2)
    tensor = transform(Image.new("RGB", (400, 300), (255, 128, 0)))
    assert tensor.shape == (3, 224, 224)
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0


# --- ground truth -----------------------------------------------------------------------------


def colour_classifier(batch: torch.Tensor) -> torch.Tensor:
    """Class 1 when red is visible, no opinion when yellow is, else class 2 (the scenery).

    Purple is class 5 on a textured background but class 6 on plain grey: its answer depends on
    the context, so it must never be kept.
    """
    r, g, b = batch[:, 0], batch[:, 1], batch[:, 2]

    def share(mask: torch.Tensor) -> torch.Tensor:
        return mask.float().mean(dim=(1, 2)) > 0.01

    red = share((r > 0.8) & (g < 0.2) & (b < 0.2))
    yellow = share((r > 0.8) & (g > 0.8) & (b < 0.2))
    purple = share((r > 0.8) & (g < 0.2) & (b > 0.8))
    grey = batch.sub(128 / 255).abs().amax(dim=1).lt(1e-3).float().mean(dim=(1, 2)) > 0.5
    classes = torch.full((batch.shape[0],), 2)
    classes[purple] = torch.where(grey[purple], 6, 5)
    classes[red] = 1
    logits = torch.nn.functional.one_hot(classes, 1000).float() * 10
    logits[yellow & ~red] = 0.0
    return logits


def test_groundtruth_keeps_only_object_driven_composites(sources: PoolSources, tmp_path: Path):
    out = tmp_path / "gt"
    stats = build_groundtruth_set(
        out, colour_classifier, n=3, seed=0, sources=sources, batch_size=4, max_per_stamp=3
    )

    manifest = json.loads((out / "manifest.json").read_text())
    assert stats.kept == len(manifest) == 3
    assert {entry["stamp"] for entry in manifest} == {"s/eval_red.png"}
    assert stats.rejected["background alone agrees"] > 0
    assert stats.rejected["low confidence"] > 0
    assert stats.rejected["object alone disagrees"] > 0
    for entry in manifest:
        assert entry["label"] == 1 and entry["confidence"] > 0.3
        mask = np.asarray(Image.open(out / entry["mask"]))
        assert set(np.unique(mask)) == {0, 255}
        rows, cols = np.nonzero(mask)
        assert entry["box"] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        image = np.asarray(Image.open(out / entry["image"])).astype(int)
        assert image.shape == (224, 224, 3)
        assert np.median(image[mask > 0], axis=0).tolist() == list(RED)
    boxes = [tuple(entry["box"]) for entry in manifest]
    assert len(set(boxes)) == 3  # random positions, not one spot


def test_groundtruth_is_deterministic_and_reruns_leave_no_strays(
    sources: PoolSources, tmp_path: Path
):
    def build(out: Path, n: int, seed: int) -> list[dict]:
        build_groundtruth_set(out, colour_classifier, n, seed, sources=sources, batch_size=4)
        return json.loads((out / "manifest.json").read_text())

    first, second = build(tmp_path / "a", 3, 0), build(tmp_path / "b", 3, 0)
    assert first == second
    for entry in first:
        assert (tmp_path / "a" / entry["image"]).read_bytes() == (
            tmp_path / "b" / entry["image"]
        ).read_bytes()
    assert build(tmp_path / "c", 3, 1) != first

    assert len(build(tmp_path / "a", 1, 0)) == 1
    assert len(list((tmp_path / "a/images").iterdir())) == 1
    assert len(list((tmp_path / "a/masks").iterdir())) == 1


def test_groundtruth_stops_when_nothing_passes(sources: PoolSources, tmp_path: Path):
    def undecided(batch: torch.Tensor) -> torch.Tensor:
        return torch.zeros(batch.shape[0], 1000)

    stats = build_groundtruth_set(
        tmp_path, undecided, n=5, seed=0, sources=sources, max_draws=10, batch_size=4
    )
    assert stats.kept == 0 and stats.candidates == 10
    assert stats.rejected == {"low confidence": 10}
    assert json.loads((tmp_path / "manifest.json").read_text()) == []


# --- evaluation photos ------------------------------------------------------------------------


def test_export_eval_photos_copies_only_the_eval_split(sources: PoolSources, tmp_path: Path):
    entries = export_eval_photos(tmp_path / "photos", sources)
    assert [e["key"] for e in entries] == ["p/eval.png"]
    written = tmp_path / "photos" / entries[0]["file"]
    assert written.read_bytes() == sources.photos[1].data
    assert json.loads((tmp_path / "photos/manifest.json").read_text()) == entries
    assert "CC0" in (tmp_path / "photos/SOURCES.md").read_text()
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == sorted(
        ["SOURCES.md", "manifest.json", entries[0]["file"]]
    )

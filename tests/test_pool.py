"""Tests of the offline image pool; every source is faked in a temporary folder."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ttame.data.pool.composites import composite
from ttame.data.pool.groundtruth import build_groundtruth_set, export_eval_photos
from ttame.data.pool.sources import debian, evaluation_only, fetch, packages
from ttame.data.pool.sources.collect import collect_sources
from ttame.data.pool.sources.common import (
    PHOTO_EVAL_FRACTION,
    Background,
    Photo,
    PoolSources,
    Stamp,
    parse_credits,
    part_of,
    split_of,
)
from ttame.data.pool.sources.debian import (
    load_jigzo_photos,
    load_kalzium_photos,
    load_kphotoalbum_photos,
    load_lomiri_photos,
    load_mate_photos,
    load_opencv_photos,
    load_palapeli_photos,
    read_pzl,
)
from ttame.data.pool.sources.evaluation_only import (
    load_jigsaw_photos,
    load_lxqt_photos,
    load_plasma_photos,
)
from ttame.data.pool.sources.fetch import fetch_deb, fetch_wheel
from ttame.data.pool.sources.gcompris import load_gcompris_photos, read_rcc
from ttame.data.pool.sources.packages import (
    load_foolbox_photos,
    load_kivy_photos,
    load_package_photos,
)
from ttame.data.pool.sources.scratch import (
    embedded_jpegs,
    load_scratch_backgrounds,
    load_scratch_costumes,
    load_scratch_project_photos,
    white_to_alpha,
)
from ttame.data.pool.sources.tuxpaint import load_stamps
from ttame.data.pool.training import TrainingPool
from ttame.data.transforms import default_train_transform
from ttame.errors import SourceError

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


def jpeg(size=(300, 220), seed: int = 0, **options) -> bytes:
    """A noisy JFIF JPEG (Pillow writes the ``FF D8 FF E0`` header Scratch projects hold)."""
    shape = (size[1], size[0], 3)
    noise = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


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
    """An apt-get that cannot reach any mirror, and a pip that cannot reach PyPI."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "apt-get"
    script.write_text("#!/bin/sh\necho 'E: Unable to locate package '\"$2\" >&2\nexit 100\n")
    script.chmod(0o755)
    pip = bin_dir / "pip"
    pip.write_text("#!/bin/sh\necho 'ERROR: No matching distribution found' >&2\nexit 1\n")
    pip.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(fetch, "_PIP", (str(pip),))


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


def test_crop_scale_zooms_into_the_picture():
    # Left half red, right half blue: the paper's 224 crop of the 256 resize always shows both,
    # while crops of at most a fifth of the area often show one colour alone.
    picture = Image.new("RGB", (300, 256), (0, 0, 255))
    picture.paste((255, 0, 0), (0, 0, 150, 256))

    def single_coloured(transform) -> int:
        torch.manual_seed(0)
        crops = [transform(picture) for _ in range(200)]
        assert all(c.shape == (3, 224, 224) for c in crops)
        return sum(int(c[0].mean() > 0.99 or c[2].mean() > 0.99) for c in crops)

    assert single_coloured(default_train_transform()) == 0
    assert single_coloured(default_train_transform(crop_scale=0.05)) >= 10
    with pytest.raises(ValueError, match="crop_scale"):
        default_train_transform(crop_scale=0)


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
    assert entries[0]["part"] == part_of("p/eval.png")
    assert entries[0]["file"] == f"{entries[0]['part']}/p_eval.png"
    written = tmp_path / "photos" / entries[0]["file"]
    assert written.read_bytes() == sources.photos[1].data
    assert json.loads((tmp_path / "photos/manifest.json").read_text()) == entries
    assert "CC0" in (tmp_path / "photos/SOURCES.md").read_text()
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == sorted(
        ["SOURCES.md", "manifest.json", "dev", "test"]
    )


def test_export_eval_photos_divides_dev_and_test_and_leaves_no_strays(tmp_path: Path):
    photos = [photo(f"src/photo {i}.png", "eval", (i, 0, 0)) for i in range(40)]
    photos.append(photo("src/trained.png", "train"))
    entries = export_eval_photos(tmp_path, PoolSources(photos=photos))

    assert len(entries) == 40
    for entry in entries:
        assert entry["part"] == part_of(entry["key"])
        assert entry["file"].startswith(f"{entry['part']}/") and " " not in entry["file"]
        assert (tmp_path / entry["file"]).is_file()
    assert {e["part"] for e in entries} == {"dev", "test"}
    assert all(
        sorted(p.name for p in (tmp_path / part).iterdir())
        == sorted(e["file"].split("/")[1] for e in entries if e["part"] == part)
        for part in ("dev", "test")
    )
    export_eval_photos(tmp_path, PoolSources(photos=photos[:3]))
    assert sum(1 for _ in tmp_path.rglob("*.png")) == 3


def test_groundtruth_of_one_part_uses_only_that_parts_stamps(tmp_path: Path):
    keys = [f"s/red_{i}.png" for i in range(12)]
    stamps = [
        Stamp(key, write_stamp(tmp_path / f"red_{i}.png", RED), "red", "eval")
        for i, key in enumerate(keys)
    ]
    backgrounds = [Background("bg/0.png", write_background(tmp_path / "bg0.png", 0))]
    sources = PoolSources(stamps, backgrounds)
    used = {}
    for part in ("dev", "test"):
        build_groundtruth_set(
            tmp_path / part, colour_classifier, 6, 0, sources=sources, batch_size=4, part=part
        )
        manifest = json.loads((tmp_path / part / "manifest.json").read_text())
        used[part] = {entry["stamp"] for entry in manifest}
        assert used[part] and all(part_of(key) == part for key in used[part])
    assert not used["dev"] & used["test"]
    only_dev = PoolSources([s for s in stamps if s.part == "dev"], backgrounds)
    with pytest.raises(SourceError, match="no test evaluation stamps"):
        build_groundtruth_set(
            tmp_path / "x", colour_classifier, 1, 0, sources=only_dev, part="test"
        )


# --- dev and test -----------------------------------------------------------------------------


def test_part_is_a_stable_balanced_hash_independent_of_the_split():
    # Pinned values: changing the rule would silently move images between dev and test.
    assert part_of("tuxpaint-stamps/animals/birds/owl.png") == "dev"
    assert part_of("gcompris/erase/alpaca.webp") == "test"
    assert part_of("darknet/dog.jpg") == "test"
    keys = [f"folder/photo_{i}.jpg" for i in range(4000)]
    parts = [part_of(k) for k in keys]
    assert parts == [part_of(k) for k in keys]
    assert 0.47 < parts.count("test") / len(keys) < 0.53
    evaluation = [k for k in keys if split_of(k, PHOTO_EVAL_FRACTION) == "eval"]
    share = sum(part_of(k) == "test" for k in evaluation) / len(evaluation)
    assert 0.45 < share < 0.55  # the part does not follow the split's hash


def test_versions_of_one_subject_share_split_and_part():
    a = Photo("k/cassy-1.jpg", "t", b"", "eval", "x", group="k/cassy")
    b = Photo("k/cassy-2.jpg", "t", b"", "eval", "x", group="k/cassy")
    assert a.part == b.part == part_of("k/cassy")
    assert Photo("k/solo.jpg", "t", b"", "eval", "x").part == part_of("k/solo.jpg")
    stamp = Stamp("k/cow1.gif", Path("cow1.gif"), "cow", "eval", group="k/cow")
    assert stamp.part == part_of("k/cow")


# --- more real photos -------------------------------------------------------------------------


SCRATCH = "usr/share/scratch"


def test_scratch_backgrounds_keep_the_photos(tmp_path: Path):
    base = tmp_path / SCRATCH / "Media/Backgrounds"
    write(base / "Nature/lake.jpg", jpeg(seed=1))
    write(base / "Indoors/room1.jpg", jpeg(seed=2))  # a drawing, on the skip list
    write(base / "Nature/woods.gif", b"GIF89a")  # the GIF backgrounds are drawings
    write(base / "Fantasy/castle.jpg", jpeg(seed=3))  # not one of the photo folders

    photos = load_scratch_backgrounds(tmp_path)

    assert [p.key for p in photos] == ["scratch/Backgrounds/Nature/lake.jpg"]
    assert photos[0].data == (base / "Nature/lake.jpg").read_bytes()
    assert photos[0].split == split_of(photos[0].key, PHOTO_EVAL_FRACTION)
    assert "CC-BY-SA-3.0" in photos[0].licence


def test_embedded_jpegs_finds_each_stream_whole():
    plain, progressive = jpeg(seed=4), jpeg((64, 48), seed=5, progressive=True)
    broken = b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 40  # a header and no image
    blob = b"Squeak" + plain + b"\x00\x01junk" + broken + progressive + b"\x89PNG tail"
    assert embedded_jpegs(blob) == [plain, progressive]
    assert embedded_jpegs(b"no images here") == []


def test_scratch_project_photos_are_distinct_large_and_not_library_copies(tmp_path: Path):
    projects = tmp_path / SCRATCH / "Projects"
    library_jpeg = jpeg(seed=6)
    library = [Photo("scratch/Backgrounds/Nature/x.jpg", "scratch", library_jpeg, "train", "x")]
    photo_a, photo_b = jpeg(seed=7), jpeg(seed=8)
    write(projects / "Stories/1 Tale.sb", b"sb" + photo_a + jpeg((120, 90), seed=9) + photo_b)
    # A second project reuses photo_a and a library background (re-encoded: other bytes).
    copy = io.BytesIO()
    Image.open(io.BytesIO(library_jpeg)).save(copy, format="JPEG", quality=97)
    write(projects / "Stories/2 Sequel.sb", b"sb" + photo_a + copy.getvalue())

    photos = load_scratch_project_photos(tmp_path, keep=None, library=library)

    assert [p.key for p in photos] == [
        "scratch/Projects/Stories/1 Tale.sb/1.jpg",
        "scratch/Projects/Stories/1 Tale.sb/3.jpg",
    ]
    assert [p.data for p in photos] == [photo_a, photo_b]  # bytes as stored in the project
    assert {p.group for p in photos} == {"scratch/Projects/Stories/1 Tale.sb"}
    assert photos[0].split == photos[1].split == split_of(photos[0].group, PHOTO_EVAL_FRACTION)
    kept = load_scratch_project_photos(tmp_path, keep={"Stories/1 Tale.sb/3"}, library=library)
    assert [p.data for p in kept] == [photo_b]


def test_white_to_alpha_clears_only_the_white_around_the_object():
    image = Image.new("RGB", (40, 30), (250, 252, 251))
    image.paste(Image.new("RGB", (20, 14), RED), (10, 8))
    image.paste(Image.new("RGB", (6, 4), (255, 255, 255)), (17, 13))  # white inside the object
    alpha = np.asarray(white_to_alpha(image).getchannel("A"))
    assert alpha[0, 0] == alpha[29, 39] == alpha[20, 5] == 0
    assert alpha[9, 11] == 255 and alpha[14, 19] == 255
    assert int((alpha == 255).sum()) == 20 * 14


def test_scratch_costumes_become_stamps_with_a_mask(tmp_path: Path):
    costumes = tmp_path / SCRATCH / "Media/Costumes"
    on_white = Image.new("RGB", (120, 100), (255, 255, 255))
    on_white.paste(Image.new("RGB", (70, 60), GREEN), (20, 20))
    (costumes / "Things").mkdir(parents=True)
    on_white.save(costumes / "Things/vase.png")
    write_stamp(costumes / "People/cassy-dancing-1.png", RED, size=(60, 90))
    write_stamp(costumes / "People/cassy-jumping-2.png", RED, size=(70, 90))
    Image.new("RGB", (90, 90), BLUE).save(costumes / "Things/photo.png")  # no mask to be had
    write_stamp(costumes / "Fantasy/dragon.png", RED, size=(80, 80))  # not a photo folder
    derived = tmp_path / "derived"

    stamps = {s.key: s for s in load_scratch_costumes(tmp_path, derived, keep=None)}

    assert set(stamps) == {
        "scratch/Costumes/Things/vase.png",
        "scratch/Costumes/People/cassy-dancing-1.png",
        "scratch/Costumes/People/cassy-jumping-2.png",
    }
    vase = stamps["scratch/Costumes/Things/vase.png"]
    assert vase.path == derived / "Things/vase.png"
    alpha = np.asarray(Image.open(vase.path).getchannel("A"))
    assert alpha[0, 0] == 0 and alpha[50, 50] == 255 and int((alpha == 255).sum()) == 70 * 60
    dancing = stamps["scratch/Costumes/People/cassy-dancing-1.png"]
    jumping = stamps["scratch/Costumes/People/cassy-jumping-2.png"]
    assert dancing.path == costumes / "People/cassy-dancing-1.png"
    assert dancing.group == jumping.group == "scratch/Costumes/People/cassy"
    assert (dancing.split, dancing.part) == (jumping.split, jumping.part)
    assert dancing.name == "cassy dancing 1" and "CC-BY-SA-3.0" in dancing.licence
    only = load_scratch_costumes(tmp_path, derived, keep={"Things/vase.png"})
    assert [s.key for s in only] == ["scratch/Costumes/Things/vase.png"]


def pzl(width: int, height: int) -> bytes:
    """A jigzo puzzle: a text header, a thumbnail, a PNG mask, then the atlas whose top-left
    ``width`` x ``height`` is the photo (red) and whose rest holds the pieces (blue)."""
    atlas = Image.new("RGB", (width + 60, height + 40), BLUE)
    atlas.paste(Image.new("RGB", (width, height), RED), (0, 0))
    big, thumb, mask = io.BytesIO(), io.BytesIO(), io.BytesIO()
    atlas.save(big, format="JPEG", quality=95)
    Image.new("RGB", (40, 30), GREEN).save(thumb, format="JPEG")
    Image.new("L", (30, 30)).save(mask, format="PNG")
    header = f"PzlF\n0.1\nbike\ncrop000 1 2 3 4\nimage 0 0 {width} {height} 1 1    \n"
    return header.encode() + thumb.getvalue() + mask.getvalue() + b"bike.jpg\n" + big.getvalue()


def test_read_pzl_crops_the_largest_jpeg_to_the_header_size(tmp_path: Path):
    image = read_pzl(pzl(90, 70))
    assert image.size == (90, 70)
    pixels = np.asarray(image).astype(int)
    assert np.abs(pixels[2:-2, 2:-2] - RED).max() < 40
    with pytest.raises(ValueError, match="image 0 0"):
        read_pzl(b"PzlF\nno image line")

    base = tmp_path / "usr/share/games/jigzo/puzzles/00_default"
    write(base / "bike-3x4.pzl", pzl(60, 80))
    write(base / "penguin-3x2.pzl", pzl(80, 60))
    write(
        tmp_path / "usr/share/doc/jigzo-data/copyright",
        b"Files: *\nCopyright: Maarten\nLicense: GPL-2+\n\n"
        b"Files: puzzles/00_default/penguin-3x2.pzl\nCopyright: Jon\nLicense: CC-BY-NC-SA-1.0\n",
    )
    photos = {p.key: p for p in load_jigzo_photos(tmp_path)}
    assert set(photos) == {"jigzo/00_default/bike-3x4.jpg", "jigzo/00_default/penguin-3x2.jpg"}
    penguin = photos["jigzo/00_default/penguin-3x2.jpg"]
    assert (penguin.licence, penguin.credit) == ("CC-BY-NC-SA-1.0 (jigzo-data)", "Jon")
    assert photos["jigzo/00_default/bike-3x4.jpg"].licence == "GPL-2+ (jigzo-data)"
    assert penguin.image().size == (80, 60)


def test_kphotoalbum_photos_are_turned_upright_as_its_index_says(tmp_path: Path):
    demo = tmp_path / "usr/share/kphotoalbum/demo"
    tall = Image.new("RGB", (60, 40), BLUE)
    tall.paste(Image.new("RGB", (10, 40), RED), (0, 0))  # red on the left: the picture's top
    buffer = io.BytesIO()
    tall.save(buffer, format="JPEG", quality=95)
    write(demo / "new_wave_1.jpg", buffer.getvalue())
    write(demo / "skagen.jpg", jpeg((50, 40), seed=10))
    write(demo / "skagen_2.jpg", jpeg((50, 40), seed=11))
    write(
        demo / "index.xml",
        b'<KPhotoAlbum><images><image file="new_wave_1.jpg" angle="90"/>'
        b'<image file="skagen.jpg"/></images></KPhotoAlbum>',
    )

    photos = {p.key.split("/")[-1]: p for p in load_kphotoalbum_photos(tmp_path)}

    turned = photos["new_wave_1.jpg"].image()
    assert turned.size == (40, 60)
    assert np.asarray(turned)[3, 20, 0] > 200 and np.asarray(turned)[55, 20, 2] > 200
    assert photos["skagen.jpg"].data == (demo / "skagen.jpg").read_bytes()
    assert photos["skagen.jpg"].group == photos["skagen_2.jpg"].group
    assert photos["skagen.jpg"].split == photos["skagen_2.jpg"].split


def test_wallpaper_and_puzzle_photos_keep_their_credits(tmp_path: Path):
    write(tmp_path / "usr/share/backgrounds/Bridge_by_Sander.jpg", jpeg(seed=12))
    write(tmp_path / "usr/share/backgrounds/umang_by_Abhishek_Mudgal.jpg", jpeg(seed=13))
    write(
        tmp_path / "usr/share/doc/lomiri-wallpapers-16.04/copyright",
        b"Files: 16.04/Bridge_by_Sander.jpg\nCopyright: 2018. Sander\nLicense: CC-BY-SA-4.0\n",
    )
    (bridge,) = load_lomiri_photos(tmp_path)  # the abstract is left out
    assert (bridge.key, bridge.credit) == ("lomiri-wallpapers/Bridge_by_Sander.jpg", "2018. Sander")
    assert bridge.licence == "CC-BY-SA-4.0 (lomiri-wallpapers-16.04)"

    write(tmp_path / "usr/share/backgrounds/mate/nature/Dune.jpg", jpeg(seed=14))
    write(
        tmp_path / "usr/share/doc/mate-backgrounds/copyright",
        b"Files: nature/Aqua.jpg\n       nature/Dune.jpg\n"
        b"Copyright: 2007, Marco <m@example.org>\nLicense: GPL-2+\n",
    )
    (dune,) = load_mate_photos(tmp_path)
    assert (dune.credit, dune.licence) == ("2007, Marco", "GPL-2+ (mate-backgrounds)")

    collection = tmp_path / "usr/share/palapeli/collection"
    write(collection / "bee.jpg", jpeg(seed=15))
    write(
        collection / "bee.desktop",
        b"[Desktop Entry]\nX-KDE-PluginInfo-Author=John\nX-KDE-PluginInfo-License=Public Domain\n"
        b"X-KDE-PluginInfo-Website=https://example.org/bee\n",
    )
    (bee,) = load_palapeli_photos(tmp_path)
    assert (bee.credit, bee.licence, bee.origin) == (
        "John",
        "Public Domain (palapeli-data)",
        "https://example.org/bee",
    )


def test_kalzium_and_opencv_photos(tmp_path: Path):
    tools = tmp_path / "usr/share/kalzium/data/toolpics"
    write(tools / "becherglas.jpg", jpeg(seed=16))
    write(tools / "kolbenprober.png", b"a drawing")
    assert [p.key for p in load_kalzium_photos(tmp_path)] == ["kalzium/toolpics/becherglas.jpg"]

    data = tmp_path / "usr/share/doc/opencv-doc/examples/data"
    with pytest.raises(SourceError, match=r"opencv-doc: .* missing"):
        load_opencv_photos(tmp_path)
    for i, name in enumerate(debian._OPENCV_PHOTOS):
        write(data / name, jpeg((40, 30), seed=i))
    write(data / "chessboard.png", b"a test pattern")
    photos = {p.key: p for p in load_opencv_photos(tmp_path)}
    assert set(photos) == {f"opencv/{name}" for name in debian._OPENCV_PHOTOS}
    assert photos["opencv/aero1.jpg"].group == photos["opencv/aero3.jpg"].group == "opencv/aero"


def kivy_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for i, rel in enumerate(packages._KIVY_PHOTOS):
            archive.writestr(f"{packages._KIVY_DIR}/{rel}", jpeg((30, 20), seed=i))
        archive.writestr(f"{packages._KIVY_DIR}/demo/pictures/images/Ill1.jpg", b"drawn")
    return path


def test_kivy_photos_are_read_from_the_cached_wheel(tmp_path: Path):
    wheels = tmp_path / "cache/wheels"
    wheels.mkdir(parents=True)
    wheel = kivy_wheel(wheels / "Kivy_examples-2.3.1-py3-none-any.whl")

    assert fetch_wheel("kivy-examples", "2.3.1", tmp_path / "cache", download=False) == wheel
    with pytest.raises(SourceError, match="build_pool"):
        fetch_wheel("kivy-examples", "9.9", tmp_path / "cache", download=False)
    photos = load_kivy_photos(wheel)
    assert [p.key for p in photos] == [f"kivy-examples/{r}" for r in packages._KIVY_PHOTOS]
    assert all(p.image().size == (30, 20) and p.licence == "MIT (kivy-examples)" for p in photos)


def unpacked(cache: Path, package: str) -> Path:
    """Fake what ``fetch_deb`` leaves in the cache, so no download is attempted."""
    root = cache / "extracted" / package
    root.mkdir(parents=True)
    (root / ".complete").touch()
    return root


@pytest.mark.usefixtures("failing_apt")
def test_a_missing_new_package_is_skipped_with_one_message(tmp_path: Path):
    cache = tmp_path / "cache"
    write(unpacked(cache, "kalzium-data") / "usr/share/kalzium/data/toolpics/a.jpg", jpeg())
    write(unpacked(cache, "palapeli-data") / "usr/share/palapeli/collection/b.jpg", jpeg())
    scratch = unpacked(cache, "scratch") / SCRATCH
    write(scratch / "Media/Backgrounds/Nature/lake.jpg", jpeg(seed=1))
    write(scratch / "Projects/Stories/1 Tale.sb", b"sb" + jpeg(seed=2))
    write_stamp(scratch / "Media/Costumes/Animals/cow1.gif", RED, size=(90, 60))
    opencv = unpacked(cache, "opencv-doc") / "usr/share/doc/opencv-doc/examples/data"
    for i, name in enumerate(debian._OPENCV_PHOTOS):
        write(opencv / name, jpeg((40, 30), seed=i))
    for package in ("kphotoalbum", "lomiri-wallpapers-16.04", "mate-backgrounds"):
        unpacked(cache, package)
    (cache / "wheels").mkdir()
    kivy_wheel(cache / "wheels/Kivy_examples-2.3.1-py3-none-any.whl")
    messages: list[str] = []

    pool = collect_sources(cache, on_error=messages.append)

    new_sources = {
        "scratch",
        "kalzium-data",
        "opencv-doc",
        "kphotoalbum",
        "jigzo-data",
        "lomiri-wallpapers-16.04",
        "mate-backgrounds",
        "palapeli-data",
        "kivy-examples",
    }
    new = [m for m in messages if m.split(":")[0] in new_sources]
    assert len(new) == 1 and new[0].startswith("jigzo-data: apt-get download failed")
    assert set(pool.failures) & new_sources == {"jigzo-data"}
    sources = {p.source for p in pool.photos}
    assert {"kalzium-data", "opencv-doc", "palapeli-data", "kivy-examples", "scratch"} <= sources
    assert "scratch/Backgrounds/Nature/lake.jpg" in {p.key for p in pool.photos}
    assert [s.key for s in pool.stamps] == ["scratch/Costumes/Animals/cow1.gif"]


# --- evaluation-only sources ------------------------------------------------------------------


def test_plasma_lxqt_and_jigsaw_photos_go_to_evaluation_only(tmp_path: Path):
    base = tmp_path / evaluation_only.PLASMA_DIR
    for i, name in enumerate(evaluation_only.PLASMA_PHOTOS):
        write(base / name / "contents/images" / evaluation_only.PLASMA_SIZE, jpeg(seed=i))
        plugin = {"KPlugin": {"Authors": [{"Name": f"Author {i}"}], "License": "LGPLv3"}}
        write(base / name / "metadata.json", json.dumps(plugin).encode())
    plasma = load_plasma_photos(tmp_path)
    assert [p.key for p in plasma] == [
        f"plasma-wallpapers/{name}.jpg" for name in evaluation_only.PLASMA_PHOTOS
    ]
    assert (plasma[1].credit, plasma[1].licence) == (
        "Author 1",
        "LGPLv3 (plasma-workspace-wallpapers)",
    )
    wanted = evaluation_only._plasma_member
    assert wanted("usr/share/wallpapers/Path/contents/images/2560x1600.jpg")
    assert wanted("usr/share/wallpapers/Path/metadata.json")
    assert not wanted("usr/share/wallpapers/Path/contents/images/1280x800.jpg")
    assert not wanted("usr/share/wallpapers/Altai/contents/images/2560x1600.jpg")  # a render

    lxqt = tmp_path / evaluation_only.LXQT_DIR
    with pytest.raises(SourceError, match=r"lxqt-themes: .* missing"):
        load_lxqt_photos(tmp_path)
    for i, name in enumerate(evaluation_only.LXQT_PHOTOS):
        write(lxqt / name, jpeg(seed=20 + i))
    write(lxqt / "triangles-logo.png", b"a render")
    photos = plasma + load_lxqt_photos(tmp_path)

    samples = tmp_path / evaluation_only.JIGSAW_DIR
    write(samples / "cat.jpg", jpeg(seed=40))
    write(samples / "tiger.jpeg", jpeg(seed=41))
    write(samples / "README", b"not a photo")
    jigsaw = load_jigsaw_photos(tmp_path)
    assert [p.key for p in jigsaw] == ["puzzle-jigsaw/cat.jpg", "puzzle-jigsaw/tiger.jpeg"]
    photos += jigsaw
    members = {package: accept for package, _, accept in evaluation_only.EVAL_PACKAGES}
    assert members["puzzle-jigsaw"]("usr/share/puzzle-jigsaw/samples/tiger.jpeg")
    assert not members["puzzle-jigsaw"]("usr/share/puzzle-jigsaw/images/table.png")
    assert members["lxqt-themes"]("usr/share/lxqt/wallpapers/fog.jpg")
    assert not members["lxqt-themes"]("usr/share/lxqt/wallpapers/triangles-logo.png")
    assert len(photos) == 11 + 11 + 2 and {p.split for p in photos} == {"eval"}
    assert {p.part for p in photos} == {"dev", "test"}


def test_foolbox_photos_are_read_from_the_cached_wheel(tmp_path: Path):
    wheel = tmp_path / "foolbox-3.3.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("foolbox/data/imagenet_00_243.jpg", jpeg((30, 20), seed=1))
        archive.writestr("foolbox/data/imagenet_01_559.jpg", jpeg((30, 20), seed=2))
        archive.writestr("foolbox/data/mnist_00_7.png", b"a digit")
        archive.writestr("foolbox/models/base.py", b"")
    photos = load_foolbox_photos(wheel)
    assert [p.key for p in photos] == ["foolbox/imagenet_00_243.jpg", "foolbox/imagenet_01_559.jpg"]
    assert {p.split for p in photos} == {"eval"} and photos[0].image().size == (30, 20)


def test_gradio_photos_come_from_the_installed_package():
    photos = [p for p in load_package_photos({}) if p.source == "gradio"]
    assert len(photos) == 5 and {p.split for p in photos} == {"eval"}
    assert all(min(p.image().size) >= 256 for p in photos)

"""Offline image sources: Debian packages, Qt resource archives, photos in Python packages.

Nothing here needs the internet beyond the Debian mirror that ``apt-get download`` reaches. The
packages are downloaded as ``.deb`` files into a cache and only the files the pool needs are
unpacked from them (through ``dpkg-deb``); nothing is installed.

Every image gets a stable, source-relative ``key`` (``"tuxpaint-stamps/animals/birds/owl.png"``).
The train/eval split is a hash of that key, so it is the same on every machine and never depends
on the order in which files were found.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import struct
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Literal

from PIL import Image

Split = Literal["train", "eval"]

DEFAULT_CACHE = Path("data/cache")

STAMPS_PACKAGE = "tuxpaint-stamps-default"
BACKGROUNDS_PACKAGE = "tuxpaint-data"
GCOMPRIS_PACKAGE = "gcompris-qt-data"
DARKNET_PACKAGE = "darknet"

GCOMPRIS_EVAL_FRACTION = 0.2
STAMPS_EVAL_FRACTION = 0.5

_STAMPS_DIR = "usr/share/tuxpaint/stamps"
# Drawings rather than photo cut-outs: a saliency map on a clip-art flag teaches little.
_STAMP_SKIP_PARTS = {"cartoon", "symbols", "clothes", "roadsigns", "flags"}
_STAMP_SKIP_DIRS = {"seasonal/easter", "seasonal/hanukkah", "seasonal/newyears"}
_STAMP_DRAWINGS = {
    "animals/mammals/hedgehog.png",
    "food/pizza.png",
    "medical/tooth.png",
    "naturalforces/lightningbolt.png",
    "people/body_parts/eye.png",
    "seasonal/christmas/Santa.png",
    "seasonal/christmas/star.png",
    "seasonal/christmas/tree.png",
    "sports/rugby_goal_posts.png",
    "town/monuments/inukshuk-outline.png",
    "vehicles/7spoke256.png",
}
_STAMP_MIN_SIDE = 64

_TEMPLATES_DIR = "usr/share/tuxpaint/templates"
# Templates dominated by one ImageNet object would compete with the pasted stamp.
_BACKGROUND_SKIP = {"jellyfish.jpg", "lighthouse.jpg", "sheep.jpg", "wool_mill_machine.jpg"}

_RCC_DIR = "usr/share/gcompris-qt/rcc"
GCOMPRIS_ARCHIVES = (
    "categorization",
    "erase",
    "explore_world_animals",
    "explore_farm_animals",
    "explore_monuments",
)
# Collages of drawn letters and digits, not photos.
_GCOMPRIS_NOT_PHOTOS = {"numbers.webp", "alphabets.webp"}
_GCOMPRIS_LICENCE = "GPL-3+ / CC-BY-SA-4.0 (gcompris-qt-data)"

_DARKNET_DIR = "usr/share/darknet/data"
_DARKNET_NOT_PHOTOS = {"scream.jpg"}  # a painting
_DARKNET_LICENCE = "GPL-3+ or MIT or WTFPL (darknet)"

_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class SourceError(RuntimeError):
    """An image source could not be fetched or read; the message says what to do about it."""


def split_of(key: str, eval_fraction: float) -> Split:
    """Assign ``key`` to train or eval from its SHA-1, so the split is stable and order-free."""
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "eval" if bucket < eval_fraction else "train"


@dataclass(frozen=True)
class Photo:
    """A real photo held in memory (they are small), with where it came from and its licence."""

    key: str
    source: str
    data: bytes = field(repr=False)
    split: Split
    licence: str
    credit: str = ""
    origin: str = ""

    def image(self) -> Image.Image:
        """Decode to an RGB PIL image."""
        return Image.open(io.BytesIO(self.data)).convert("RGB")


@dataclass(frozen=True)
class Stamp:
    """A photo cut-out whose alpha channel is the exact mask of the object."""

    key: str
    path: Path
    name: str
    split: Split
    licence: str = "GPL-2 (tuxpaint-stamps-default)"


@dataclass(frozen=True)
class Background:
    """A texture photo to paste stamps on; shared by training and evaluation composites."""

    key: str
    path: Path
    licence: str = "GPL-2+ (tuxpaint-data)"


@dataclass
class PoolSources:
    """Everything the pool was able to read, plus a message for each source that failed."""

    stamps: list[Stamp] = field(default_factory=list)
    backgrounds: list[Background] = field(default_factory=list)
    photos: list[Photo] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)

    def stamps_in(self, split: Split) -> list[Stamp]:
        """Stamps of one half; the halves never share a file."""
        return [s for s in self.stamps if s.split == split]

    def photos_in(self, split: Split) -> list[Photo]:
        """Real photos of one split."""
        return [p for p in self.photos if p.split == split]


# --- Debian packages --------------------------------------------------------------------------


def fetch_deb(
    package: str,
    cache_dir: Path,
    wanted: Callable[[str], bool],
    *,
    download: bool = True,
) -> Path:
    """Download ``package`` with ``apt-get download`` and unpack the members ``wanted`` accepts.

    Only the needed files are written (the stamps package is mostly sound files). Returns the
    unpack root. Reuses both the ``.deb`` and the unpacked tree, so repeated calls are free.
    """
    root = Path(cache_dir) / "extracted" / package
    if (root / ".complete").exists():
        return root
    deb = _download_deb(package, Path(cache_dir) / "debs", download)
    if shutil.which("dpkg-deb") is None:
        raise SourceError(f"{package}: dpkg-deb not found; it ships with dpkg on Debian/Ubuntu")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=root.parent))
    try:
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if member.isfile() and wanted(name):
                        member.name = name
                        tar.extract(member, tmp, filter="data")
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode != 0:
            raise SourceError(f"{package}: dpkg-deb could not read {deb}: {stderr.strip()}")
        (tmp / ".complete").touch()
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def _download_deb(package: str, debs_dir: Path, download: bool) -> Path:
    """Return the cached ``.deb`` of ``package``, downloading it first when allowed."""
    cached = sorted(debs_dir.glob(f"{package}_*.deb"))
    if cached:
        return cached[-1]
    if not download:
        raise SourceError(
            f"{package}: not in the cache {debs_dir}; run scripts/build_pool.py to fetch it"
        )
    if shutil.which("apt-get") is None:
        raise SourceError(
            f"{package}: apt-get not found; download {package}_*.deb by hand into {debs_dir}"
        )
    debs_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["apt-get", "download", package], cwd=debs_dir, capture_output=True, text=True, check=False
    )
    cached = sorted(debs_dir.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not cached:
        errors = [line for line in result.stderr.splitlines() if line.startswith("E:")]
        detail = "; ".join(errors) or result.stderr.strip() or f"exit status {result.returncode}"
        raise SourceError(
            f"{package}: apt-get download failed ({detail}); "
            "check the network and run `apt-get update` first"
        )
    return cached[-1]


# --- Qt resource archives (.rcc) --------------------------------------------------------------


def read_rcc(data: bytes, select: Callable[[str], bool] = lambda path: True) -> dict[str, bytes]:
    """Return ``{path: bytes}`` for the files of a Qt ``.rcc`` archive that ``select`` accepts.

    GCompris keeps its photos in these archives; this reads them without Qt. Layout: ``qres``,
    then big-endian u32 version, tree, data and names offsets. Tree entries are 14 bytes (22 from
    version 2): u32 name offset, u16 flags (2 directory, 1 zlib, 4 zstd), then a directory's u32
    child count and first child index, or a file's u32 data offset at byte 10. Data is a u32
    size then the bytes (zlib data starts with its u32 uncompressed length). Names are a u16
    length, a u32 hash, then UTF-16-BE.
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt resource archive (no 'qres' magic)")
    version, tree, payload, names = struct.unpack_from(">IIII", data, 4)
    entry_size = 14 if version < 2 else 22

    def name_at(offset: int) -> str:
        (length,) = struct.unpack_from(">H", data, names + offset)
        start = names + offset + 6
        return data[start : start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}
    pending = [(0, "")]
    while pending:
        index, parent = pending.pop()
        entry = tree + index * entry_size
        name_offset, flags = struct.unpack_from(">IH", data, entry)
        path = parent if index == 0 else f"{parent}/{name_at(name_offset)}"
        if flags & 2:
            count, first = struct.unpack_from(">II", data, entry + 6)
            pending.extend((child, path) for child in range(first, first + count))
            continue
        if not select(path):
            continue
        (offset,) = struct.unpack_from(">I", data, entry + 10)
        (size,) = struct.unpack_from(">I", data, payload + offset)
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 4:
            raise ValueError(f"{path}: zstd-compressed entries are not supported")
        files[path] = zlib.decompress(blob[4:]) if flags & 1 else blob
    return files


def parse_credits(readme: str) -> dict[str, dict[str, str]]:
    """Map each file named in a GCompris README to its Copyright/License/Source fields.

    Blocks are separated by blank lines; ``Files:`` lists names on its line or the lines after.
    """
    credits: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", readme):
        fields: dict[str, str] = {}
        files: list[str] = []
        in_files = False
        for line in block.splitlines():
            match = re.match(r"^(\w+):\s*(.*)$", line.strip())
            if match:
                key, value = match.groups()
                in_files = key == "Files"
                if in_files:
                    files.extend(value.split())
                else:
                    fields[key] = value.strip()
            elif in_files:
                files.extend(line.split())
        for name in files:
            credits[name] = fields
    return credits


# --- loaders ----------------------------------------------------------------------------------


def load_stamps(root: Path) -> list[Stamp]:
    """Photo stamps under an unpacked ``tuxpaint-stamps-default``, drawings left out.

    Left out: cartoon/symbol/mirrored variants, clothes, road signs and flags, the drawn seasonal
    sets, PNGs with an SVG sibling (renders of a drawing), a short list of other drawings,
    images without transparency (no mask) and cut-outs smaller than 64 px.
    """
    base = Path(root) / _STAMPS_DIR
    stamps = []
    for path in sorted(base.rglob("*.png")):
        rel = path.relative_to(base).as_posix()
        parts = set(PurePosixPath(rel).parent.parts)
        if (
            parts & _STAMP_SKIP_PARTS
            or any(rel.startswith(d + "/") for d in _STAMP_SKIP_DIRS)
            or rel in _STAMP_DRAWINGS
            or "mirror" in path.stem
            or path.with_suffix(".svg").exists()
            or not _is_cutout(path)
        ):
            continue
        key = f"tuxpaint-stamps/{rel}"
        stamps.append(Stamp(key, path, _stamp_name(path), split_of(key, STAMPS_EVAL_FRACTION)))
    return stamps


def _is_cutout(path: Path) -> bool:
    """Check for transparent pixels around an object of a sensible size (a usable cut-out)."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    box = alpha.point(lambda a: 255 if a >= 128 else 0).getbbox()
    if box is None or alpha.getextrema()[0] > 0:
        return False
    return max(box[2] - box[0], box[3] - box[1]) >= _STAMP_MIN_SIDE


def _stamp_name(path: Path) -> str:
    """Name a stamp by its ``.txt`` description (first line, English), else its file name."""
    text = path.with_suffix(".txt")
    if text.exists():
        first = text.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        if first and first[0].strip():
            return first[0].strip().rstrip(".")
    return path.stem.replace("_", " ")


def load_backgrounds(root: Path) -> list[Background]:
    """Texture photos from an unpacked ``tuxpaint-data``, without the object-dominated ones."""
    base = Path(root) / _TEMPLATES_DIR
    return [
        Background(f"tuxpaint-templates/{path.name}", path)
        for path in sorted(base.glob("*.jpg"))
        if path.name not in _BACKGROUND_SKIP
    ]


def load_gcompris_photos(root: Path, archives: Iterable[str] = GCOMPRIS_ARCHIVES) -> list[Photo]:
    """Real photos from GCompris ``.rcc`` archives, with per-file credits from their READMEs.

    A photo used by two activities (same source URL) is kept once, so it cannot fall into both
    splits.
    """
    photos: list[Photo] = []
    seen_origins: set[str] = set()
    for archive in archives:
        path = Path(root) / _RCC_DIR / f"{archive}.rcc"
        if not path.exists():
            raise SourceError(f"{GCOMPRIS_PACKAGE}: archive {path.name} missing from the package")
        files = read_rcc(
            path.read_bytes(),
            lambda p: p.endswith(_PHOTO_SUFFIXES) or PurePosixPath(p).name == "README",
        )
        credits: dict[str, dict[str, str]] = {}
        for readme, text in files.items():
            if PurePosixPath(readme).name == "README":
                folder = PurePosixPath(readme).parent
                for name, fields in parse_credits(text.decode("utf-8", errors="replace")).items():
                    credits[str(folder / name)] = fields
        for inner, blob in sorted(files.items()):
            name = PurePosixPath(inner).name
            if name == "README" or name in _GCOMPRIS_NOT_PHOTOS:
                continue
            fields = credits.get(inner, {})
            origin = fields.get("Source", "")
            if origin and origin in seen_origins:
                continue
            seen_origins.add(origin)
            rel = inner.removeprefix("/gcompris/src/activities/").replace("/resource/", "/", 1)
            key = f"gcompris/{rel}"
            photos.append(
                Photo(
                    key=key,
                    source=GCOMPRIS_PACKAGE,
                    data=blob,
                    split=split_of(key, GCOMPRIS_EVAL_FRACTION),
                    licence=fields.get("License", _GCOMPRIS_LICENCE),
                    credit=fields.get("Copyright", "GCompris contributors"),
                    origin=origin or f"{archive}.rcc:{inner}",
                )
            )
    return photos


def load_darknet_photos(root: Path) -> list[Photo]:
    """Read the example photos of ``darknet`` (evaluation only; the painting is left out)."""
    base = Path(root) / _DARKNET_DIR
    return [
        Photo(
            key=f"darknet/{path.name}",
            source=DARKNET_PACKAGE,
            data=path.read_bytes(),
            split="eval",
            licence=_DARKNET_LICENCE,
            credit="darknet (Joseph Redmon)",
            origin=f"/{_DARKNET_DIR}/{path.name}",
        )
        for path in sorted(base.glob("*.jpg"))
        if path.name not in _DARKNET_NOT_PHOTOS
    ]


_PACKAGE_PHOTOS = (
    ("scikit-image", "skimage", "data/astronaut.png", "Public domain (NASA)", "NASA"),
    ("scikit-image", "skimage", "data/coffee.png", "CC0", "Rachel Michetti"),
    ("scikit-image", "skimage", "data/chelsea.png", "CC0", "Stefan van der Walt"),
    ("scikit-image", "skimage", "data/rocket.jpg", "Public domain (SpaceX)", "SpaceX"),
    (
        "scikit-image",
        "skimage",
        "data/motorcycle_left.png",
        "Middlebury 2014 stereo dataset, as redistributed by scikit-image (BSD-3)",
        "Scharstein et al., Middlebury College",
    ),
    ("scikit-learn", "sklearn", "datasets/images/china.jpg", "CC-BY-2.0", "danielbuechele"),
    ("scikit-learn", "sklearn", "datasets/images/flower.jpg", "CC-BY-2.0", "vultilion"),
    (
        "matplotlib",
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
        "Public domain (US Navy)",
        "US Navy",
    ),
)


def load_package_photos(failures: dict[str, str] | None = None) -> list[Photo]:
    """Photos shipped inside installed Python packages (evaluation only: the example photos).

    A package that is not installed is reported in ``failures`` and skipped.
    """
    photos = []
    for source, module, rel, licence, credit in _PACKAGE_PHOTOS:
        try:
            path = resources.files(module).joinpath(rel)
            data = path.read_bytes()
        except (ModuleNotFoundError, FileNotFoundError) as error:
            if failures is not None:
                failures[f"{source}:{PurePosixPath(rel).name}"] = (
                    f"{source}: {PurePosixPath(rel).name} unavailable ({error})"
                )
            continue
        photos.append(
            Photo(
                key=f"{source}/{PurePosixPath(rel).name}",
                source=source,
                data=data,
                split="eval",
                licence=licence,
                credit=credit,
                origin=f"{module}/{rel}",
            )
        )
    return photos


# --- everything together ----------------------------------------------------------------------


def _wanted(prefix: str, suffixes: tuple[str, ...]) -> Callable[[str], bool]:
    """Member filter for ``fetch_deb``: files under ``prefix`` with one of ``suffixes``."""
    return lambda name: name.startswith(prefix) and name.lower().endswith(suffixes)


def collect_sources(
    cache_dir: Path = DEFAULT_CACHE,
    *,
    download: bool = True,
    on_error: Callable[[str], None] | None = None,
) -> PoolSources:
    """Fetch and read every source; a source that fails is reported and the others go on.

    ``download=False`` only reads what an earlier run left in ``cache_dir`` (for training jobs
    that must not touch the network).
    """
    pool = PoolSources()

    def attempt(name: str, load: Callable[[], None]) -> None:
        try:
            load()
        except (SourceError, OSError, ValueError, struct.error, zlib.error) as error:
            message = str(error) if isinstance(error, SourceError) else f"{name}: {error}"
            pool.failures[name] = message
            if on_error is not None:
                on_error(message)

    def fetch(package: str, wanted: Callable[[str], bool]) -> Path:
        return fetch_deb(package, cache_dir, wanted, download=download)

    rcc_files = {f"{_RCC_DIR}/{archive}.rcc" for archive in GCOMPRIS_ARCHIVES}
    attempt(
        STAMPS_PACKAGE,
        lambda: pool.stamps.extend(
            load_stamps(fetch(STAMPS_PACKAGE, _wanted(_STAMPS_DIR, (".png", ".svg", ".txt"))))
        ),
    )
    attempt(
        BACKGROUNDS_PACKAGE,
        lambda: pool.backgrounds.extend(
            load_backgrounds(fetch(BACKGROUNDS_PACKAGE, _wanted(_TEMPLATES_DIR, (".jpg",))))
        ),
    )
    attempt(
        GCOMPRIS_PACKAGE,
        lambda: pool.photos.extend(
            load_gcompris_photos(fetch(GCOMPRIS_PACKAGE, rcc_files.__contains__))
        ),
    )
    attempt(
        DARKNET_PACKAGE,
        lambda: pool.photos.extend(
            load_darknet_photos(fetch(DARKNET_PACKAGE, _wanted(_DARKNET_DIR, (".jpg",))))
        ),
    )
    package_failures: dict[str, str] = {}
    pool.photos.extend(load_package_photos(package_failures))
    for name, message in package_failures.items():
        pool.failures[name] = message
        if on_error is not None:
            on_error(message)
    return pool

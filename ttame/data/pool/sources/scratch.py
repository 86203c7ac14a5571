"""Scratch 1.4: scene photos, photos embedded in its example projects, photo cut-outs."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import tempfile
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ttame.data.pool.sources.common import STAMPS_EVAL_FRACTION, Photo, Stamp, photo, split_of
from ttame.data.pool.sources.tuxpaint import is_cutout

SCRATCH_PACKAGE = "scratch"

def _signature(image: Image.Image) -> np.ndarray:
    """A 32 x 24 grey thumbnail: two copies of one photo, re-encoded or not, nearly match it."""
    return np.asarray(image.convert("L").resize((32, 24), Image.Resampling.BILINEAR), float)


def _same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two signatures show the same picture (mean grey difference under 2 of 255)."""
    return float(np.abs(a - b).mean()) < 2.0


SCRATCH_DIR = "usr/share/scratch"
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
    base = Path(root) / SCRATCH_DIR / "Media/Backgrounds"
    photos = []
    for folder in _SCRATCH_BACKGROUND_FOLDERS:
        for path in sorted((base / folder).glob("*.jpg")):
            rel = f"{folder}/{path.name}"
            if rel in _SCRATCH_NOT_PHOTOS:
                continue
            photos.append(
                photo(
                    f"scratch/Backgrounds/{rel}",
                    SCRATCH_PACKAGE,
                    path.read_bytes(),
                    _SCRATCH_LICENCE,
                    _SCRATCH_CREDIT,
                    f"/{SCRATCH_DIR}/Media/Backgrounds/{rel}",
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
    base = Path(root) / SCRATCH_DIR / "Projects"
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
                photo(
                    f"scratch/Projects/{name}.jpg",
                    SCRATCH_PACKAGE,
                    blob,
                    _SCRATCH_LICENCE,
                    _SCRATCH_CREDIT,
                    f"/{SCRATCH_DIR}/Projects/{project} (JPEG {ordinal})",
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
    base = Path(root) / SCRATCH_DIR / "Media/Costumes"
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
            if np.asarray(rgba.getchannel("A")).min() > 0:
                if not _has_white_background(rgba):
                    continue
                cutout = Path(derived_dir) / folder / f"{path.stem}.png"
                if not cutout.exists():  # written atomically: training jobs may read it
                    cutout.parent.mkdir(parents=True, exist_ok=True)
                    with tempfile.NamedTemporaryFile(dir=cutout.parent, delete=False) as file:
                        white_to_alpha(rgba).save(file, format="PNG")
                    Path(file.name).replace(cutout)
            if not is_cutout(cutout):
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

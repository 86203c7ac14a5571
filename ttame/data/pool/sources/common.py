"""What the pool's sources yield, and how each image is assigned to a side of the split.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image, ImageOps

Split = Literal["train", "eval"]
Part = Literal["dev", "test"]

DEFAULT_CACHE = Path("data/cache")

GCOMPRIS_EVAL_FRACTION = 0.2
STAMPS_EVAL_FRACTION = 0.5
# The sources added after GCompris give a larger share to evaluation: the evaluation photos are
# also divided into dev and test, and 67 photos were too few for that.
PHOTO_EVAL_FRACTION = 0.3

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


def photo(
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


def eval_photo(key: str, source: str, data: bytes, licence: str, credit: str, origin: str) -> Photo:
    """A photo that goes to evaluation only (then dev or test by its key's hash)."""
    return Photo(key, source, data, "eval", licence, credit, origin)


def encode(image: Image.Image, format: str = "JPEG") -> bytes:
    """Store a transformed photo as JPEG quality 95 (as the originals), or as PNG."""
    buffer = io.BytesIO()
    options = {"quality": 95} if format == "JPEG" else {}
    image.convert("RGB").save(buffer, format=format, **options)
    return buffer.getvalue()


def upright(data: bytes, clockwise: int = 0) -> bytes:
    """Apply the EXIF orientation and a further clockwise turn; unchanged bytes if neither."""
    with Image.open(io.BytesIO(data)) as image:
        if image.getexif().get(0x0112, 1) == 1 and clockwise % 360 == 0:
            return data
        upright = ImageOps.exif_transpose(image)
        turned = upright.rotate(-clockwise, expand=True) if clockwise % 360 else upright
        return encode(turned, "PNG" if image.format == "PNG" else "JPEG")

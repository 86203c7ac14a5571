"""GCompris: real photos inside Qt resource archives, read without Qt."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from ttame.data.pool.sources.common import GCOMPRIS_EVAL_FRACTION, Photo, parse_credits, split_of
from ttame.errors import SourceError

GCOMPRIS_PACKAGE = "gcompris-qt-data"

RCC_DIR = "usr/share/gcompris-qt/rcc"
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

_PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # the photos among the archives' files


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


def load_gcompris_photos(root: Path, archives: Iterable[str] = GCOMPRIS_ARCHIVES) -> list[Photo]:
    """Real photos from GCompris ``.rcc`` archives, with per-file credits from their READMEs.

    A photo used by two activities (same source URL) is kept once, so it cannot fall into both
    splits.
    """
    photos: list[Photo] = []
    seen_origins: set[str] = set()
    for archive in archives:
        path = Path(root) / RCC_DIR / f"{archive}.rcc"
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

"""A corpus of awkward and hostile image files, generated (nothing binary is stored).

Each case says what must happen: ``"explained"`` (handled like any photo) or ``"error"`` (one
:class:`ttame.errors.ImageError` with a message a user understands).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str
    suffix: str
    make: Callable[[], bytes]
    expected: str  # "explained" or "error"
    size: tuple[int, int] | None = None  # original (width, height) the map must cover


def _save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _photo(width: int = 64, height: int = 48) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack(
        [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1
    ).astype(np.uint8)
    return Image.fromarray(array)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A real 1-bit PNG of width x height: ~50 KB on disk, 400 megapixels decoded."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", data)
        + _png_chunk(b"IEND", b"")
    )


def _truncated_jpeg() -> bytes:
    data = _save(_photo(), "JPEG")
    return data[: data.index(b"\xff\xda") + 40]  # cut inside the entropy-coded scan


def _corrupt_jpeg_header() -> bytes:
    data = bytearray(_save(_photo(), "JPEG"))
    start = data.index(b"\xff\xc0")  # the frame header: sizes and components
    data[start + 4 : start + 12] = b"\xff" * 8
    return bytes(data)


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(_photo(64, 48), "JPEG", exif=exif)


def _palette_transparent() -> bytes:
    image = _photo().convert("P", palette=Image.Palette.ADAPTIVE)
    image.info["transparency"] = 0
    return _save(image, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [_photo().convert("P"), Image.new("P", (64, 48), 3)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff() -> bytes:
    return _save(_photo(), "TIFF", save_all=True, append_images=[Image.new("RGB", (64, 48))])


def _sixteen_bit() -> bytes:
    array = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    return _save(Image.fromarray(array), "PNG")


CASES: list[Case] = [
    Case("JPEG truncated mid-scan", ".jpg", _truncated_jpeg, "error"),
    Case("JPEG with a corrupt frame header", ".jpg", _corrupt_jpeg_header, "error"),
    Case("truncated PNG", ".png", lambda: _save(_photo(), "PNG")[:100], "error"),
    Case("text file named .jpg", ".jpg", lambda: b"hello, I am not a picture\n", "error"),
    Case("empty file", ".png", lambda: b"", "error"),
    Case("20000x20000 PNG (decompression bomb, 50 KB)", ".png", _bomb, "error"),
    Case(
        "1x1 image",
        ".png",
        lambda: _save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "explained",
        (1, 1),
    ),
    Case("16-bit greyscale PNG", ".png", _sixteen_bit, "explained", (64, 48)),
    Case(
        "CMYK JPEG", ".jpg", lambda: _save(_photo().convert("CMYK"), "JPEG"), "explained", (64, 48)
    ),
    Case("palette PNG with transparency", ".png", _palette_transparent, "explained", (64, 48)),
    Case("LA PNG", ".png", lambda: _save(_photo().convert("LA"), "PNG"), "explained", (64, 48)),
    Case("RGBA PNG", ".png", lambda: _save(_photo().convert("RGBA"), "PNG"), "explained", (64, 48)),
    Case("EXIF-rotated JPEG", ".jpg", _exif_rotated, "explained", (48, 64)),
    Case("animated GIF (first frame)", ".gif", _animated_gif, "explained", (64, 48)),
    Case("multi-page TIFF (first page)", ".tif", _multipage_tiff, "explained", (64, 48)),
    Case(
        "extreme aspect ratio 4000x1",
        ".png",
        lambda: _save(_photo(4000, 1), "PNG"),
        "explained",
        (4000, 1),
    ),
    Case(
        "extreme aspect ratio 1x4000",
        ".png",
        lambda: _save(_photo(1, 4000), "PNG"),
        "explained",
        (1, 4000),
    ),
]

"""A corpus of awkward and hostile inputs, generated (nothing binary is stored).

Image files (:data:`CASES`) say what must happen: ``"explained"`` (handled like any photo) or
``"error"`` (one :class:`ttame.errors.ImageError` whose message contains ``message``). The
other mistakes (:data:`MISUSES`: classes, backbones, heads, Hub ids, tensors, checkpoints) say
which documented exception the library raises and what the library, the CLI and the app say.
``test_bad_inputs.py`` runs all of it through the library and the CLI, ``test_app.py`` through
the running app; :func:`table` is the record in ``docs/reliability.md`` (``python
tests/badcorpus.py`` rewrites it; a test checks it is current).
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from tests.helpers import tiny_explainer
from ttame.errors import BackboneError, ClassIndexError, HeadError, ImageError, TrainingError
from ttame.hub.heads import save_head
from ttame.model.head import AttentionHead
from ttame.training.checkpoint import save_checkpoint


@dataclass(frozen=True)
class Case:
    name: str
    suffix: str
    make: Callable[[], bytes]
    expected: str  # "explained" or "error"
    size: tuple[int, int] | None = None  # original (width, height) the map must cover
    message: str = ""  # "error": what the library, the CLI and the app all say


@dataclass(frozen=True)
class Misuse:
    """A mistake other than an image file, and what each interface answers.

    ``cli`` / ``app`` is None where that interface offers no way to make the mistake; ``why``
    then says so in the table.
    """

    name: str
    error: type[Exception]
    library: str
    cli: str | None
    app: str | None
    why: str = ""


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


def _claims_pixels(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width x height``: refused before decoding."""
    data = bytearray(_save(_photo(), "JPEG"))
    start = data.index(b"\xff\xc0")
    data[start + 5 : start + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _float_nan() -> bytes:
    array = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    array[10, 10] = np.nan
    return _save(Image.fromarray(array, mode="F"), "TIFF")


CASES: list[Case] = [
    Case("JPEG truncated mid-scan", ".jpg", _truncated_jpeg, "error", None, "corrupt or truncated"),
    Case(
        "JPEG with a corrupt frame header",
        ".jpg",
        _corrupt_jpeg_header,
        "error",
        None,
        "is not an image we can read",
    ),
    Case(
        "truncated PNG",
        ".png",
        lambda: _save(_photo(), "PNG")[:100],
        "error",
        None,
        "corrupt or truncated",
    ),
    Case(
        "text file named .jpg",
        ".jpg",
        lambda: b"hello, I am not a picture\n",
        "error",
        None,
        "is not an image we can read",
    ),
    Case("empty file", ".png", lambda: b"", "error", None, "is empty"),
    Case(
        "20000x20000 PNG (decompression bomb, 50 KB)",
        ".png",
        _bomb,
        "error",
        None,
        "the limit is 50,000,000 pixels",
    ),
    Case(
        "JPEG header claiming 10000x8000 pixels",
        ".jpg",
        lambda: _claims_pixels(10000, 8000),
        "error",
        None,
        "the limit is 50,000,000 pixels",
    ),
    Case(
        "32-bit float TIFF with a NaN pixel",
        ".tif",
        _float_nan,
        "error",
        None,
        "NaN or infinite values",
    ),
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


# --- Heads, checkpoints and other mistakes -------------------------------------------------


class Payload:
    """A pickled object whose loading would run a shell command (creating ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def bad_head(root: Path, flaw: str) -> Path:
    """A ``tiny_cnn`` head folder with one flaw (or a ``tiny_vit`` head for ``"other backbone"``).

    ``"channels"`` / ``"classes"``: a consistent head sized for another backbone; ``"weights"``:
    tensors that disagree with the config; ``"pickle"``: a pickle in ``model.safetensors``;
    ``"truncated"``: half of a real ``model.safetensors``.
    """
    folder = root / f"head-{flaw.replace(' ', '-')}"
    explainer = tiny_explainer("tiny_vit" if flaw == "other backbone" else "tiny_cnn")
    explainer.save_pretrained(folder)
    weights = folder / "model.safetensors"
    layers = ["stage1", "stage2", "stage3"]
    if flaw == "channels":
        save_head(AttentionHead("tiny_cnn", layers, [4, 6, 9], 10), folder)
    elif flaw == "classes":
        save_head(AttentionHead("tiny_cnn", layers, [4, 6, 8], 5), folder)
    elif flaw == "weights":
        state = {k: v.clone() for k, v in explainer.head.state_dict().items()}
        state["fuser.weight"] = torch.zeros(3, 18, 1, 1)
        save_file(state, weights)
    elif flaw == "pickle":
        import pickle

        weights.write_bytes(pickle.dumps({"branches.0.conv.weight": Payload(root / "ran")}))
    elif flaw == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif flaw != "other backbone":
        raise ValueError(flaw)
    return folder


def evil_reference_checkpoint(path: Path, marker: Path) -> Path:
    """A ``.ckpt`` whose unpickling would run a command (a reference checkpoint's suffix)."""
    torch.save({"state_dict": {"x": torch.zeros(1)}, "callbacks": Payload(marker)}, path)
    return path


def evil_training_checkpoint(path: Path, marker: Path) -> Path:
    """A training checkpoint with a valid header and checksum around a pickle that runs code."""
    save_checkpoint(path, {"head": Payload(marker)})
    return path


def half_written_checkpoint(path: Path) -> Path:
    """A training checkpoint cut in the middle, as a crash without atomic writes would leave."""
    save_checkpoint(path, {"step": 1, "weights": torch.zeros(256)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def everywhere(name: str, error: type[Exception], message: str) -> Misuse:
    """A mistake that the library, the CLI and the app all answer with the same words."""
    return Misuse(name, error, message, message, message)


NO_FILES = "takes image files: see *32-bit float TIFF with a NaN pixel*"
NO_TRAINING = "the app does not train"
UNFIT = "the head does not fit this backbone"
UNREADABLE = "Could not load the head"
REFUSED = "pickled objects are refused"

MISUSES: list[Misuse] = [
    Misuse("NaN or Inf in an image tensor", ImageError, "NaN or infinite", None, None, NO_FILES),
    Misuse(
        "image tensor outside [0, 1]", ImageError, "raw RGB in [0, 1]", None, None, "reads files"
    ),
    everywhere("class index out of range (10 of 10)", ClassIndexError, "is out of range"),
    everywhere("negative class index (-1)", ClassIndexError, "is out of range"),
    everywhere("unknown class name", ClassIndexError, "Unknown class name 'zebra'"),
    Misuse(
        "unknown backbone", BackboneError, *["Unknown backbone 'nope'"] * 2, "'nope' is not one of"
    ),
    Misuse(
        "malformed Hub repo id (a/b/c)",
        HeadError,
        *["is neither a head folder nor"] * 2,
        "is not a Hugging Face Hub repo id",
    ),
    everywhere("Hub repo absent, offline", HeadError, "not in the local Hugging Face cache"),
    everywhere("Hub unreachable", HeadError, "cannot be reached"),
    Misuse(
        "head trained for another backbone",
        HeadError,
        *["was trained for backbone 'tiny_vit'"] * 2,
        None,
        "a Hub head brings its own backbone",
    ),
    everywhere("head whose channels do not fit its backbone", HeadError, UNFIT),
    everywhere("head with another number of classes than its backbone", HeadError, UNFIT),
    everywhere("head whose tensors disagree with its config", HeadError, "size mismatch"),
    everywhere("pickle offered as a head's model.safetensors", HeadError, UNREADABLE),
    everywhere("truncated model.safetensors", HeadError, UNREADABLE),
    Misuse(
        "pickle that runs code, as a reference checkpoint (.ckpt)",
        HeadError,
        *[REFUSED] * 2,
        None,
        "heads come by Hub repo id",
    ),
    Misuse(
        "half-written training checkpoint (--resume)",
        TrainingError,
        *["damaged or incomplete"] * 2,
        None,
        NO_TRAINING,
    ),
    Misuse(
        "pickle that runs code, as a training checkpoint with a valid checksum (--resume)",
        TrainingError,
        *[REFUSED] * 2,
        None,
        NO_TRAINING,
    ),
]


def _quote(message: str) -> str:
    return f"`…{message}…`"


def _image_row(case: Case) -> str:
    if case.expected == "explained":
        width, height = case.size
        return (
            f"| {case.name} | explained; map over {width}x{height} | exit 0, report | "
            f"overlay at {width}x{height} |"
        )
    said = _quote(case.message)
    return f"| {case.name} | `ImageError` {said} | exit 2, {said} | message {said} |"


def _misuse_row(misuse: Misuse) -> str:
    def answer(message: str | None, done: str) -> str:
        return f"n/a: {misuse.why}" if message is None else f"{done} {_quote(message)}"

    return (
        f"| {misuse.name} | `{misuse.error.__name__}` {_quote(misuse.library)} | "
        f"{answer(misuse.cli, 'exit 2,')} | {answer(misuse.app, 'message')} |"
    )


TABLE_START = "<!-- corpus table: generated by tests/badcorpus.py -->"
TABLE_END = "<!-- end of corpus table -->"


def table() -> str:
    """Every case and what the library, the CLI and the app do with it, as Markdown."""
    lines = [
        TABLE_START,
        "| case | library | CLI (`ttame explain` / `ttame train`) | app (then serves the next "
        "request) |",
        "|---|---|---|---|",
        *(_image_row(case) for case in CASES),
        *(_misuse_row(misuse) for misuse in MISUSES),
        TABLE_END,
    ]
    return "\n".join(lines)


def write_table(document: Path) -> None:
    """Replace the table between the markers in ``document``."""
    text = document.read_text()
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    document.write_text(pattern.sub(lambda _: table(), text))


if __name__ == "__main__":
    write_table(Path(__file__).resolve().parent.parent / "docs" / "reliability.md")

"""Images in, pictures out: find and load image files, prepare them for a backbone, map back.

The explanation is computed on the backbone's centre crop; :class:`Geometry` remembers where
that crop lies in the original image, so maps and peaks land on the original pixels, and the
pixels the backbone never saw are left untinted in overlays (:func:`seen_region`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from ttame.errors import ImageError

MAX_PIXELS = 50_000_000
"""Largest image accepted (width x height); larger ones are refused before decoding."""
MAX_BYTES = 50 * 1024 * 1024
"""Largest encoded file accepted."""

IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
)
"""File suffixes read as images (lower case), wherever ttame looks for image files."""

ImageSource = str | Path | bytes | Image.Image | np.ndarray
"""Anything :func:`load_image` reads: a path, encoded bytes, a PIL image or an array."""


@dataclass(frozen=True)
class Geometry:
    """Where the backbone's square input lies in the original image (original pixels)."""

    original_size: tuple[int, int]
    """(width, height) of the original image."""
    crop_box: tuple[float, float, float, float]
    """(left, top, right, bottom) of the region the backbone saw."""


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has an image suffix (:data:`IMAGE_SUFFIXES`, any case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def find_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder``, recursively, by suffix, hidden ones skipped, sorted.

    A file or folder whose name starts with a dot (``.DS_Store``, ``._photo.jpg``,
    ``.ipynb_checkpoints/``) is left out. The sorted order is stable on every machine. A
    missing folder raises :class:`ImageError`; an empty one gives an empty list.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageError(f"'{root}' is not a folder of images.")
    return sorted(
        p
        for p in root.rglob("*")
        if is_image_file(p)
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read an image as 8-bit RGB, upright (EXIF), first frame, alpha composited on white.

    16-bit and float images are scaled to 8 bits; palette, greyscale, CMYK and LA/RGBA all
    become RGB. Anything unreadable or too large raises :class:`ImageError`.
    """
    name = source if isinstance(source, str | Path) else type(source).__name__
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    try:
        if isinstance(source, Image.Image):
            image = source
        else:
            data = source if isinstance(source, bytes) else _read_bytes(Path(source))
            if not data:
                raise ImageError(f"'{name}' is empty.")
            if len(data) > MAX_BYTES:
                raise ImageError(f"'{name}' is larger than {MAX_BYTES // 2**20} MiB.")
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(
                f"'{name}' is {width}x{height} pixels; the limit is {max_pixels:,} pixels."
            )
        if width < 1 or height < 1:
            raise ImageError(f"'{name}' has no pixels.")
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"'{name}' has too many pixels to decode; the limit is {max_pixels:,} pixels. ({exc})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"'{name}' is not an image we can read: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"'{name}' is corrupt or truncated: {exc}") from exc


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ImageError(f"No such image file: {path}")
    if path.stat().st_size > MAX_BYTES:
        raise ImageError(f"'{path}' is larger than {MAX_BYTES // 2**20} MiB.")
    return path.read_bytes()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB."""
    if image.mode in {"I", "I;16", "I;16B", "I;16L", "F"}:
        return _array_to_rgb(np.asarray(image))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    """An H x W (x 1/3/4) array of any numeric dtype as 8-bit RGB."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"An image array must be H x W or H x W x 3/4; got {array.shape}.")
    if array.size == 0:
        raise ImageError("The image array is empty.")
    if array.dtype == np.uint8:
        scaled = array
    else:
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise ImageError("The image contains NaN or infinite values.")
        if np.issubdtype(array.dtype, np.floating) and values.min() >= 0 and values.max() <= 1:
            values = values * 255.0
        elif array.dtype == np.uint16 or values.max() > 255:
            values = values / 257.0
        scaled = np.clip(np.round(values), 0, 255).astype(np.uint8)
    mode = "L" if scaled.ndim == 2 else ("RGB" if scaled.shape[2] == 3 else "RGBA")
    return _to_rgb(Image.fromarray(np.ascontiguousarray(scaled), mode=mode))


def crop_geometry(size: tuple[int, int], resize_size: int, input_size: int) -> Geometry:
    """The region "resize the shorter side to ``resize_size``, centre-crop ``input_size``" sees."""
    width, height = size
    scale = resize_size / min(width, height)
    side = input_size / scale
    left = (width - side) / 2
    top = (height - side) / 2
    box = (max(left, 0.0), max(top, 0.0), min(left + side, width), min(top + side, height))
    return Geometry((width, height), box)


def preprocess(
    image: Image.Image, input_size: int, resize_size: int
) -> tuple[torch.Tensor, Geometry]:
    """The backbone's square input (``3 x S x S``, raw RGB in [0, 1]) and its geometry.

    The shorter side is resized to ``resize_size`` and the centre ``input_size`` square is
    kept: give the backbone's own sizes (``spec.input_size``, ``spec.resize_size``), or call
    :meth:`ttame.Explainer.preprocess`, which does. Equivalent to resize-then-centre-crop, but
    crops first: an extreme aspect ratio never produces a huge intermediate image.
    """
    geometry = crop_geometry(image.size, resize_size, input_size)
    crop = image.resize(
        (input_size, input_size), Image.Resampling.BILINEAR, box=geometry.crop_box, reducing_gap=3.0
    )
    array = np.asarray(crop, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0), geometry


def seen_box(geometry: Geometry) -> tuple[int, int, int, int]:
    """The region the backbone saw in whole original pixels: (x0, y0, x1, y1), ends exclusive."""
    left, top, right, bottom = geometry.crop_box
    x0, y0 = round(left), round(top)
    return x0, y0, max(round(right), x0 + 1), max(round(bottom), y0 + 1)


def seen_region(geometry: Geometry) -> np.ndarray:
    """``H x W`` bool mask of the original pixels the backbone saw (its centre crop)."""
    width, height = geometry.original_size
    x0, y0, x1, y1 = seen_box(geometry)
    seen = np.zeros((height, width), dtype=bool)
    seen[y0:y1, x0:x1] = True
    return seen


def map_to_original(saliency: torch.Tensor, geometry: Geometry, outside: float = 0.0) -> np.ndarray:
    """An ``H x W`` map over the backbone's input as a map over the original image.

    Outside the region the backbone saw the map is ``outside``: 0 by default, or NaN to mark
    those pixels as unseen, which :func:`overlay` and :func:`heatmap` then leave untinted.
    """
    width, height = geometry.original_size
    x0, y0, x1, y1 = seen_box(geometry)
    inside = F.interpolate(
        saliency.detach().float().cpu()[None, None],
        size=(y1 - y0, x1 - x0),
        mode="bilinear",
        align_corners=False,
    )[0, 0]
    full = np.full((height, width), outside, dtype=np.float32)
    full[y0:y1, x0:x1] = inside.clamp(0, 1).numpy()
    return full


def peak_xy(saliency: torch.Tensor, geometry: Geometry) -> tuple[float, float]:
    """The map's maximum in original-image pixel coordinates (x, y), pixel centres."""
    h, w = saliency.shape[-2:]
    index = int(saliency.reshape(-1).argmax())
    y, x = divmod(index, w)
    left, top, right, bottom = geometry.crop_box
    return left + (x + 0.5) / w * (right - left), top + (y + 0.5) / h * (bottom - top)


UNSEEN_GREY = 0.5
"""Grey level of the pixels :func:`heatmap` draws where the backbone saw nothing."""


JET = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}
"""Matplotlib's "jet" as (position, value) points per channel: overlays need no matplotlib."""


def jet_lut(n: int = 256) -> np.ndarray:
    """The ``n x 3`` lookup table matplotlib builds for "jet", computed as it computes it."""
    positions = (n - 1) * np.linspace(0, 1, n)
    table = np.empty((n, 3))
    for channel, points in enumerate(JET.values()):
        x = np.array([p for p, _ in points]) * (n - 1)
        y = np.array([v for _, v in points])
        inner = positions[1:-1]
        index = np.searchsorted(x, inner)
        distance = (inner - x[index - 1]) / (x[index] - x[index - 1])
        table[1:-1, channel] = distance * (y[index] - y[index - 1]) + y[index - 1]
        table[0, channel], table[-1, channel] = y[0], y[-1]
    return np.clip(table, 0, 1)


COLOUR_LEVELS = 256
"""Entries of a colour table: a map value v is drawn with entry ``min(floor(256 v), 255)``."""


def colour_table(colormap: str = "jet") -> np.ndarray:
    """The ``256 x 3`` colours in [0, 1] of a colour map, as matplotlib tabulates it.

    Any matplotlib colour map when matplotlib is installed; "jet" without it, identically.
    """
    try:
        import matplotlib
    except ImportError:
        if colormap != "jet":
            raise ImageError(
                f"The colour map '{colormap}' needs matplotlib (pip install matplotlib); "
                "'jet' does not."
            ) from None
        return jet_lut(COLOUR_LEVELS)
    if colormap not in matplotlib.colormaps:
        raise ImageError(f"Unknown colour map '{colormap}'.")
    return np.asarray(matplotlib.colormaps[colormap](np.arange(COLOUR_LEVELS))[:, :3])


def colour_index(values: np.ndarray) -> np.ndarray:
    """Each value's entry of :func:`colour_table`, computed as matplotlib computes it."""
    index = np.clip(np.nan_to_num(values), 0, 1) * COLOUR_LEVELS
    return np.minimum(index, COLOUR_LEVELS - 1).astype(np.intp)


def _colours(heat: np.ndarray, colormap: str) -> np.ndarray:
    """``H x W x 3`` colours in [0, 1] of a map in [0, 1] (NaN pixels come out as 0)."""
    return colour_table(colormap)[colour_index(heat)]


def overlay(
    image: Image.Image,
    heat: np.ndarray,
    alpha: float = 0.5,
    colormap: str = "jet",
    seen: np.ndarray | None = None,
) -> Image.Image:
    """Blend a colour-mapped ``[0, 1]`` map (same size as ``image``) over the image.

    Pixels outside ``seen`` (default: where ``heat`` is finite) keep the photo's colours:
    the backbone never saw them, so the map says nothing there, not "no evidence".
    """
    if heat.shape != (image.height, image.width):
        raise ImageError(f"Map shape {heat.shape} does not match image {image.size[::-1]}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    tinted = np.isfinite(heat) if seen is None else np.asarray(seen, dtype=bool)
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    blended = (1 - alpha) * base + alpha * _colours(heat, colormap)
    blended = np.where(tinted[..., None], blended, base)
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def heatmap(heat: np.ndarray, colormap: str = "jet") -> Image.Image:
    """The bare colour-mapped map as an RGB picture; NaN (unseen) pixels are plain grey."""
    colours = np.where(np.isfinite(heat)[..., None], _colours(heat, colormap), UNSEEN_GREY)
    return Image.fromarray(np.round(colours * 255).astype(np.uint8))

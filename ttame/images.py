"""Images in, pictures out: load any common file, prepare it for a backbone, map back, overlay.

The explanation is computed on the backbone's centre crop; :class:`Geometry` remembers where
that crop lies in the original image, so maps and peaks land on the original pixels.
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

ImageSource = str | Path | bytes | Image.Image | np.ndarray


@dataclass(frozen=True)
class Geometry:
    """Where the backbone's square input lies in the original image (original pixels)."""

    original_size: tuple[int, int]
    """(width, height) of the original image."""
    crop_box: tuple[float, float, float, float]
    """(left, top, right, bottom) of the region the backbone saw."""


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
    image: Image.Image, input_size: int = 224, resize_size: int = 256
) -> tuple[torch.Tensor, Geometry]:
    """The backbone's square input (``3 x S x S``, raw RGB in [0, 1]) and its geometry.

    Equivalent to resize-then-centre-crop, but crops first: an extreme aspect ratio never
    produces a huge intermediate image.
    """
    geometry = crop_geometry(image.size, resize_size, input_size)
    crop = image.resize(
        (input_size, input_size), Image.Resampling.BILINEAR, box=geometry.crop_box, reducing_gap=3.0
    )
    array = np.asarray(crop, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0), geometry


def map_to_original(saliency: torch.Tensor, geometry: Geometry) -> np.ndarray:
    """An ``H x W`` map over the backbone's input as a map over the original image.

    Outside the region the backbone saw the map is 0.
    """
    width, height = geometry.original_size
    left, top, right, bottom = geometry.crop_box
    x0, y0 = round(left), round(top)
    x1, y1 = max(round(right), x0 + 1), max(round(bottom), y0 + 1)
    inside = F.interpolate(
        saliency.detach().float().cpu()[None, None],
        size=(y1 - y0, x1 - x0),
        mode="bilinear",
        align_corners=False,
    )[0, 0]
    full = np.zeros((height, width), dtype=np.float32)
    full[y0:y1, x0:x1] = inside.clamp(0, 1).numpy()
    return full


def peak_xy(saliency: torch.Tensor, geometry: Geometry) -> tuple[float, float]:
    """The map's maximum in original-image pixel coordinates (x, y), pixel centres."""
    h, w = saliency.shape[-2:]
    index = int(saliency.reshape(-1).argmax())
    y, x = divmod(index, w)
    left, top, right, bottom = geometry.crop_box
    return left + (x + 0.5) / w * (right - left), top + (y + 0.5) / h * (bottom - top)


def overlay(
    image: Image.Image, heat: np.ndarray, alpha: float = 0.5, colormap: str = "jet"
) -> Image.Image:
    """Blend a colour-mapped ``[0, 1]`` map (same size as ``image``) over the image."""
    import matplotlib

    if heat.shape != (image.height, image.width):
        raise ImageError(f"Map shape {heat.shape} does not match image {image.size[::-1]}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    colours = matplotlib.colormaps[colormap](np.clip(heat, 0, 1))[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    blended = (1 - alpha) * base + alpha * colours
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def heatmap(heat: np.ndarray, colormap: str = "jet") -> Image.Image:
    """The bare colour-mapped map as an RGB picture."""
    import matplotlib

    colours = matplotlib.colormaps[colormap](np.clip(heat, 0, 1))[..., :3]
    return Image.fromarray(np.round(colours * 255).astype(np.uint8))

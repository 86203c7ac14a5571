"""Composites: photo cut-outs pasted on backgrounds, with their exact object masks.

The same function makes training and evaluation pictures, so both see the same kind of
picture; :class:`Layout` draws the random choices behind one, :class:`CompositeMix` says what
the training composites look like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

Box = tuple[int, int, int, int]

SCALE_RANGE = (0.4, 0.75)
GREY = (128, 128, 128)
_STAMP_MAX_SIDE = 512  # stamps are never pasted larger than this; decoding less is faster


def composite(
    stamp_rgba: Image.Image,
    background_rgb: Image.Image,
    scale: float,
    position: tuple[float, float],
    size: int = 224,
) -> tuple[Image.Image, np.ndarray, Box]:
    """Paste a cut-out on a background and return the image, its exact object mask and box.

    The same function makes training and evaluation images, so both see the same kind of
    picture. The background is centre-cropped to a square and resized to ``size``. The stamp is
    first cropped to its visible pixels, so ``scale`` is the object's longer side as a fraction of
    the canvas side. ``position`` is where the object sits in the free space, in [0, 1] per axis:
    (0, 0) touches the top-left corner, (1, 1) the bottom-right; the object is always wholly
    inside. The mask is alpha >= 128; the box is ``(x0, y0, x1, y1)`` with exclusive ends, the
    tightest box around the mask.
    """
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if not all(0 <= p <= 1 for p in position):
        raise ValueError(f"position must be in [0, 1] x [0, 1], got {position}")
    stamp = stamp_rgba.convert("RGBA")
    visible = stamp.getchannel("A").getbbox()
    if visible is None:
        raise ValueError("the stamp is fully transparent")
    stamp = stamp.crop(visible)
    factor = scale * size / max(stamp.size)
    width = max(1, round(stamp.width * factor))
    height = max(1, round(stamp.height * factor))
    # Resample with premultiplied alpha, or transparent pixels bleed a dark fringe.
    stamp = stamp.convert("RGBa").resize((width, height), Image.Resampling.LANCZOS).convert("RGBA")
    x0 = round(position[0] * (size - width))
    y0 = round(position[1] * (size - height))
    canvas = square(background_rgb.convert("RGB"), size)
    alpha = stamp.getchannel("A")
    canvas.paste(stamp.convert("RGB"), (x0, y0), alpha)
    mask = np.zeros((size, size), dtype=bool)
    mask[y0 : y0 + height, x0 : x0 + width] = np.asarray(alpha) >= 128
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("the pasted object is too small to cover any pixel")
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return canvas, mask, box


def square(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to ``size`` x ``size``."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.BILINEAR)


@lru_cache(maxsize=128)
def load_stamp(path: Path) -> Image.Image:
    """Decode a stamp once, shrunk to the largest size it is ever pasted at."""
    with Image.open(path) as image:
        stamp = image.convert("RGBA")
    stamp.thumbnail((_STAMP_MAX_SIDE, _STAMP_MAX_SIDE), Image.Resampling.LANCZOS)
    return stamp


@lru_cache(maxsize=32)
def load_background(path: Path) -> Image.Image:
    """Decode a background once; there are only a few."""
    with Image.open(path) as image:
        return image.convert("RGB")


@dataclass(frozen=True)
class Layout:
    """The random choices behind one composite, apart from which stamp."""

    background: int
    crop_side: float
    crop_centre: tuple[float, float]
    flip: bool
    scale: float
    position: tuple[float, float]

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        n_backgrounds: int,
        scale: tuple[float, float] = SCALE_RANGE,
    ) -> Layout:
        """Random background crop (half to all of its short side, maybe mirrored) and placement."""
        return cls(
            background=int(rng.integers(n_backgrounds)),
            crop_side=float(rng.uniform(0.5, 1.0)),
            crop_centre=(float(rng.random()), float(rng.random())),
            flip=bool(rng.random() < 0.5),
            scale=float(rng.uniform(*scale)),
            position=(float(rng.random()), float(rng.random())),
        )

    def background_crop(self, image: Image.Image) -> Image.Image:
        """Cut out the square piece of the background this layout uses."""
        side = max(1, round(self.crop_side * min(image.size)))
        left = round(self.crop_centre[0] * (image.width - side))
        top = round(self.crop_centre[1] * (image.height - side))
        crop = image.crop((left, top, left + side, top + side))
        return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if self.flip else crop


@dataclass(frozen=True)
class CompositeMix:
    """What the training composites look like; the default is one stamp on one background.

    A small pool needs varied pictures, not just more of the same: ``max_stamps`` > 1 pastes
    1 to ``max_stamps`` stamps (the backbone's top-1 then rests on one of them, which the mask
    must find among the others); ``mosaic`` is the share of composites that are instead a
    mosaic of four training photos split at a random point (the top-1 is then driven by one
    tile); ``scale`` is the range of a single stamp's size (several stamps are drawn at 0.6 of
    it, so they fit side by side).
    """

    max_stamps: int = 1
    mosaic: float = 0.0
    scale: tuple[float, float] = SCALE_RANGE

    def __post_init__(self) -> None:
        if self.max_stamps < 1 or not 0 <= self.mosaic <= 1:
            raise ValueError("max_stamps must be >= 1 and mosaic a share in [0, 1]")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale must be a range within (0, 1], got {self.scale}")


def mosaic(tiles: Sequence[Image.Image], split: tuple[float, float], size: int) -> Image.Image:
    """Four pictures in a 2 x 2 grid cut at ``split`` (fractions of the side).

    Each picture is cropped to its cell's shape around its centre.
    """
    if len(tiles) != 4:
        raise ValueError("a mosaic takes four pictures")
    cut_x, cut_y = (max(1, min(size - 1, round(f * size))) for f in split)
    canvas = Image.new("RGB", (size, size))
    cells = [(0, 0, cut_x, cut_y), (cut_x, 0, size, cut_y), (0, cut_y, cut_x, size),
             (cut_x, cut_y, size, size)]
    for tile, (x0, y0, x1, y1) in zip(tiles, cells, strict=True):
        canvas.paste(ImageOps.fit(tile.convert("RGB"), (x1 - x0, y1 - y0)), (x0, y0))
    return canvas

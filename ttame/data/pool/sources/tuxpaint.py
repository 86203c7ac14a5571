"""Tux Paint: photo cut-outs (the stamps, whose alpha is an exact mask) and texture backgrounds."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ttame.data.pool.sources.common import STAMPS_EVAL_FRACTION, Background, Stamp, split_of

STAMPS_PACKAGE = "tuxpaint-stamps-default"
BACKGROUNDS_PACKAGE = "tuxpaint-data"

STAMPS_DIR = "usr/share/tuxpaint/stamps"
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
STAMP_MIN_SIDE = 64

TEMPLATES_DIR = "usr/share/tuxpaint/templates"
# Templates dominated by one ImageNet object would compete with the pasted stamp.
_BACKGROUND_SKIP = {"jellyfish.jpg", "lighthouse.jpg", "sheep.jpg", "wool_mill_machine.jpg"}


def load_stamps(root: Path) -> list[Stamp]:
    """Photo stamps under an unpacked ``tuxpaint-stamps-default``, drawings left out.

    Left out: cartoon/symbol/mirrored variants, clothes, road signs and flags, the drawn seasonal
    sets, PNGs with an SVG sibling (renders of a drawing), a short list of other drawings,
    images without transparency (no mask) and cut-outs smaller than 64 px.
    """
    base = Path(root) / STAMPS_DIR
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
            or not is_cutout(path)
        ):
            continue
        key = f"tuxpaint-stamps/{rel}"
        stamps.append(Stamp(key, path, _stamp_name(path), split_of(key, STAMPS_EVAL_FRACTION)))
    return stamps


def is_cutout(path: Path) -> bool:
    """Check for transparent pixels around an object of a sensible size (a usable cut-out)."""
    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    alpha = rgba.getchannel("A")
    box = alpha.point(lambda a: 255 if a >= 128 else 0).getbbox()
    if box is None or np.asarray(alpha).min() > 0:
        return False
    return max(box[2] - box[0], box[3] - box[1]) >= STAMP_MIN_SIDE


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
    base = Path(root) / TEMPLATES_DIR
    return [
        Background(f"tuxpaint-templates/{path.name}", path)
        for path in sorted(base.glob("*.jpg"))
        if path.name not in _BACKGROUND_SKIP
    ]

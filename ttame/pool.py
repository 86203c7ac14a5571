"""The offline image pool: training images, ground-truth composites and evaluation photos.

Training sees the training split of the real photos plus composites of training-half stamps on
texture backgrounds, drawn afresh every epoch. Evaluation sees the other half of the stamps (as
composites with exact object masks) and the evaluation photos, each divided into a dev part (to
tune on) and a test part (for the final numbers). The two sides never share a file; see
:mod:`ttame.pool_sources` for the sources, the split and the parts.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms

from ttame.pool_sources import (
    DEFAULT_CACHE,
    Background,
    Part,
    Photo,
    PoolSources,
    SourceError,
    Stamp,
    collect_sources,
)

PARTS: tuple[Part, ...] = ("dev", "test")

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
    canvas = _square(background_rgb.convert("RGB"), size)
    alpha = stamp.getchannel("A")
    canvas.paste(stamp.convert("RGB"), (x0, y0), alpha)
    mask = np.zeros((size, size), dtype=bool)
    mask[y0 : y0 + height, x0 : x0 + width] = np.asarray(alpha) >= 128
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("the pasted object is too small to cover any pixel")
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return canvas, mask, box


def _square(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square and resize to ``size`` x ``size``."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.BILINEAR)


@lru_cache(maxsize=128)
def _load_stamp(path: Path) -> Image.Image:
    """Decode a stamp once, shrunk to the largest size it is ever pasted at."""
    with Image.open(path) as image:
        stamp = image.convert("RGBA")
    stamp.thumbnail((_STAMP_MAX_SIDE, _STAMP_MAX_SIDE), Image.Resampling.LANCZOS)
    return stamp


_PHOTO_MIN_SIDE = 384  # training photos are decoded once, their short side cut to this


@lru_cache(maxsize=1024)
def _training_photo(photo: Photo) -> Image.Image:
    """Decode a training photo once, its short side at most ``_PHOTO_MIN_SIDE`` pixels.

    Some photos are wallpapers of 5000 pixels; training only ever sees them resized to 256, so
    decoding and shrinking them at every draw would cost more than the step itself.
    """
    image = photo.image()
    factor = _PHOTO_MIN_SIDE / min(image.size)
    if factor < 1:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return image


@lru_cache(maxsize=32)
def _load_background(path: Path) -> Image.Image:
    """Decode a background once; there are only a few."""
    with Image.open(path) as image:
        return image.convert("RGB")


@dataclass(frozen=True)
class _Layout:
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
    ) -> _Layout:
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


def default_train_transform(
    size: int = 224, resize: int = 256, color_jitter: float = 0.0
) -> Callable[[Image.Image], torch.Tensor]:
    """Build the paper's augmentation: resize to 256, random 224 crop, horizontal flip.

    Returns a raw [0, 1] tensor: the backbone's normalisation is applied after masking.
    ``color_jitter`` > 0 adds mild brightness/contrast/saturation jitter, which helps when the
    pool is small.
    """
    steps: list[Callable] = [
        transforms.Resize(resize),
        transforms.RandomCrop(size),
        transforms.RandomHorizontalFlip(),
    ]
    if color_jitter > 0:
        steps.append(transforms.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps.append(transforms.ToTensor())
    return transforms.Compose(steps)


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


class TrainingPool(Dataset):
    """Training images: the training-split photos, then ``composites_per_epoch`` composites.

    Composite ``i`` of epoch ``e`` depends only on ``(seed, e, i)``, so a run can be repeated
    and resumed, and every epoch shows new placements. Call :meth:`set_epoch` before iterating
    (with DataLoader workers, before creating the iterator, without ``persistent_workers``).
    Items are PIL RGB images, or whatever ``transform`` makes of them. Composites are
    ``size`` x ``size`` (default 256, so the paper's resize-to-256 leaves them unchanged).
    """

    def __init__(
        self,
        sources: PoolSources | None = None,
        *,
        cache_dir: Path = DEFAULT_CACHE,
        composites_per_epoch: int = 1000,
        size: int = 256,
        seed: int = 0,
        transform: Callable[[Image.Image], object] | None = None,
        mix: CompositeMix | None = None,
    ) -> None:
        if sources is None:
            sources = collect_sources(cache_dir, download=False)
        self.photos = sources.photos_in("train")
        self.stamps: list[Stamp] = sources.stamps_in("train")
        self.backgrounds: list[Background] = sources.backgrounds
        if composites_per_epoch and not (self.stamps and self.backgrounds):
            raise SourceError("no training stamps or backgrounds; run scripts/build_pool.py")
        if not self.photos and not composites_per_epoch:
            raise SourceError("the training pool is empty; run scripts/build_pool.py")
        self.composites_per_epoch = composites_per_epoch
        self.size = size
        self.seed = seed
        self.transform = transform
        self.mix = mix or CompositeMix()
        if self.mix.mosaic and not self.photos:
            raise SourceError("mosaics need training photos; the pool has none")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's composites the pool yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.photos) + self.composites_per_epoch

    def __getitem__(self, index: int) -> object:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        if index < len(self.photos):
            image = _training_photo(self.photos[index])
        else:
            image = self._composite(np.random.default_rng([self.seed, self.epoch, index]))
        return self.transform(image) if self.transform is not None else image

    def _composite(self, rng: np.random.Generator) -> Image.Image:
        """One composite drawn with ``rng`` by the pool's :class:`CompositeMix`."""
        mix = self.mix
        if mix.mosaic and rng.random() < mix.mosaic:
            picks = rng.integers(len(self.photos), size=4)
            split = (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7)))
            return mosaic([_training_photo(self.photos[int(i)]) for i in picks], split, self.size)
        count = 1 if mix.max_stamps == 1 else int(rng.integers(1, mix.max_stamps + 1))
        scale = mix.scale if count == 1 else (0.6 * mix.scale[0], 0.6 * mix.scale[1])
        stamp = self.stamps[int(rng.integers(len(self.stamps)))]
        layout = _Layout.draw(rng, len(self.backgrounds), scale)
        background = _load_background(self.backgrounds[layout.background].path)
        image, _, _ = composite(
            _load_stamp(stamp.path),
            layout.background_crop(background),
            layout.scale,
            layout.position,
            self.size,
        )
        for _ in range(count - 1):
            stamp = self.stamps[int(rng.integers(len(self.stamps)))]
            position = (float(rng.random()), float(rng.random()))
            image, _, _ = composite(
                _load_stamp(stamp.path), image, float(rng.uniform(*scale)), position, self.size
            )
        return image


@dataclass(frozen=True)
class GroundTruthStats:
    """How the ground-truth set was built: what was kept and why the rest was not."""

    kept: int
    candidates: int
    rejected: dict[str, int]


def _to_batch(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL RGB images -> float tensor B x 3 x H x W in [0, 1]."""
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(255)


def _forget_previous(out_dir: Path, keys: Sequence[str]) -> None:
    """Delete the files an earlier run listed in ``manifest.json``, so reruns leave no strays."""
    manifest = out_dir / "manifest.json"
    if manifest.exists():
        for entry in json.loads(manifest.read_text()):
            for key in keys:
                (out_dir / entry[key]).unlink(missing_ok=True)
        manifest.unlink()


@dataclass(frozen=True)
class _Candidate:
    """One ground-truth candidate and the two control views the filter classifies."""

    stamp: Stamp
    background: Background
    layout: _Layout
    image: Image.Image
    mask: np.ndarray
    box: Box
    on_grey: Image.Image
    background_alone: Image.Image

    @classmethod
    def make(
        cls, stamp: Stamp, backgrounds: Sequence[Background], layout: _Layout, size: int
    ) -> _Candidate:
        """Render the composite, the same object on plain grey, and the background alone."""
        background = backgrounds[layout.background]
        crop = layout.background_crop(_load_background(background.path))
        picture = _load_stamp(stamp.path)
        image, mask, box = composite(picture, crop, layout.scale, layout.position, size)
        grey = Image.new("RGB", (size, size), GREY)
        on_grey, _, _ = composite(picture, grey, layout.scale, layout.position, size)
        return cls(stamp, background, layout, image, mask, box, on_grey, _square(crop, size))

    def save(self, out_dir: Path, name: str, label: int, confidence: float) -> dict:
        """Write the image and its 0/255 mask; return the manifest entry."""
        self.image.save(out_dir / "images" / f"{name}.png")
        Image.fromarray(self.mask.astype(np.uint8) * 255).save(out_dir / "masks" / f"{name}.png")
        return {
            "image": f"images/{name}.png",
            "mask": f"masks/{name}.png",
            "box": list(self.box),
            "stamp": self.stamp.key,
            "background": self.background.key,
            "label": label,
            "confidence": round(confidence, 4),
            "scale": round(self.layout.scale, 4),
            "position": [round(p, 4) for p in self.layout.position],
        }


def build_groundtruth_set(
    out_dir: Path,
    classify: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    seed: int,
    *,
    sources: PoolSources | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    size: int = 224,
    min_confidence: float = 0.3,
    max_per_stamp: int = 3,
    max_draws: int | None = None,
    batch_size: int = 16,
    class_names: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    part: Part | None = None,
) -> GroundTruthStats:
    """Write up to ``n`` composites whose predicted class is driven by the pasted object.

    A candidate (an evaluation-half stamp on a random background crop at a random scale and
    position) is kept only when the classifier's top-1 is the same on a plain grey background,
    different on the background alone, and its confidence exceeds ``min_confidence``: then a
    good explanation must point at the object, and the mask says exactly where it is. Stamps are
    tried in a seeded round-robin, at most ``max_per_stamp`` kept each, so no few easy objects
    dominate. ``classify`` maps a B x 3 x size x size batch in raw [0, 1] RGB to logits
    (normalise inside it). Writes ``images/NAME.png``, ``masks/NAME.png`` (0/255) and
    ``manifest.json``; the result depends only on ``seed`` and the classifier. ``progress`` is
    called with the number of composites kept after each batch. At most ``max_draws`` (default
    ``20 * n``) candidates are drawn, so a classifier that rejects everything cannot loop forever.
    ``part`` (``"dev"`` or ``"test"``) limits the stamps to that part of the evaluation half, so
    the two sets never show the same object; None uses the whole half.
    """
    if sources is None:
        sources = collect_sources(cache_dir, download=False)
    stamps = sources.stamps_in("eval", part)
    backgrounds = sources.backgrounds
    if not stamps or not backgrounds:
        which = f"{part} " if part else ""
        raise SourceError(f"no {which}evaluation stamps or backgrounds; run scripts/build_pool.py")
    out_dir = Path(out_dir)
    _forget_previous(out_dir, ("image", "mask"))
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    limit = max_draws if max_draws is not None else 20 * n
    order = np.random.default_rng(seed).permutation(len(stamps))
    per_stamp: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    manifest: list[dict] = []
    draws = examined = 0
    while len(manifest) < n and draws < limit:
        batch: list[_Candidate] = []
        while len(batch) < batch_size and draws < limit:
            stamp = stamps[int(order[draws % len(stamps)])]
            rng = np.random.default_rng([seed, draws])
            draws += 1
            if per_stamp[stamp.key] < max_per_stamp:
                layout = _Layout.draw(rng, len(backgrounds))
                batch.append(_Candidate.make(stamp, backgrounds, layout, size))
        if not batch:
            break
        views = [view for c in batch for view in (c.image, c.on_grey, c.background_alone)]
        with torch.inference_mode():
            probs = torch.softmax(classify(_to_batch(views)).float(), dim=1)
        confidence, top1 = probs.max(dim=1)
        for i, candidate in enumerate(batch):
            if len(manifest) == n:
                break
            examined += 1
            label, grey_label, alone_label = (int(t) for t in top1[3 * i : 3 * i + 3])
            score = float(confidence[3 * i])
            if score <= min_confidence:
                rejected["low confidence"] += 1
            elif grey_label != label:
                rejected["object alone disagrees"] += 1
            elif alone_label == label:
                rejected["background alone agrees"] += 1
            elif per_stamp[candidate.stamp.key] == max_per_stamp:
                rejected["stamp used enough"] += 1
            else:
                per_stamp[candidate.stamp.key] += 1
                name = f"{len(manifest):04d}_{candidate.stamp.path.stem}"
                entry = candidate.save(out_dir, name, label, score)
                if class_names is not None:
                    entry["class_name"] = class_names[label]
                manifest.append(entry)
        if progress is not None:
            progress(len(manifest))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return GroundTruthStats(len(manifest), examined, dict(rejected))


def _file_name(key: str) -> str:
    """A flat file name for a source key (Scratch project names hold spaces)."""
    return re.sub(r"[/\s]", "_", key)


def export_eval_photos(
    out_dir: Path, sources: PoolSources | None = None, *, cache_dir: Path = DEFAULT_CACHE
) -> list[dict[str, str]]:
    """Copy the evaluation-split photos, unchanged, into ``out_dir/dev`` and ``out_dir/test``.

    Tune on ``dev``; keep ``test`` for the final numbers. Writes one ``manifest.json`` (file,
    part, key, source, licence, credit, origin per photo; ``file`` is relative to ``out_dir``)
    and a human-readable ``SOURCES.md``; returns the manifest entries.
    """
    if sources is None:
        sources = collect_sources(cache_dir, download=False)
    out_dir = Path(out_dir)
    _forget_previous(out_dir, ("file",))
    entries = []
    for part in PARTS:
        (out_dir / part).mkdir(parents=True, exist_ok=True)
        for photo in sources.photos_in("eval", part):
            name = f"{part}/{_file_name(photo.key)}"
            (out_dir / name).write_bytes(photo.data)
            entries.append(
                {
                    "file": name,
                    "part": part,
                    "key": photo.key,
                    "source": photo.source,
                    "licence": photo.licence,
                    "credit": photo.credit,
                    "origin": photo.origin,
                }
            )
    (out_dir / "manifest.json").write_text(json.dumps(entries, indent=1) + "\n")
    lines = [
        "# Evaluation photos",
        "",
        "Never used for training. Tune on `dev/`; `test/` is for the final numbers only.",
        "Rebuild with `python scripts/build_pool.py`.",
        "",
        "| file | part | source | licence | credit | origin |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {e['file']} | {e['part']} | {e['source']} | {e['licence']} | {e['credit']} "
        f"| {e['origin']} |"
        for e in entries
    ]
    (out_dir / "SOURCES.md").write_text("\n".join(lines) + "\n")
    return entries

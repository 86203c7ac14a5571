"""The training side of the offline pool: training-split photos plus fresh composites.

Training sees the training split of the real photos plus composites of training-half stamps on
texture backgrounds, drawn afresh every epoch; the evaluation side never shares a file with it
(:mod:`ttame.data.pool.sources.common` says how the split is made).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from ttame.data.pool.composites import (
    CompositeMix,
    Layout,
    composite,
    load_background,
    load_stamp,
    mosaic,
)
from ttame.data.pool.sources.collect import collect_sources
from ttame.data.pool.sources.common import DEFAULT_CACHE, Background, Photo, PoolSources, Stamp
from ttame.errors import SourceError

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
        layout = Layout.draw(rng, len(self.backgrounds), scale)
        background = load_background(self.backgrounds[layout.background].path)
        image, _, _ = composite(
            load_stamp(stamp.path),
            layout.background_crop(background),
            layout.scale,
            layout.position,
            self.size,
        )
        for _ in range(count - 1):
            stamp = self.stamps[int(rng.integers(len(self.stamps)))]
            position = (float(rng.random()), float(rng.random()))
            image, _, _ = composite(
                load_stamp(stamp.path), image, float(rng.uniform(*scale)), position, self.size
            )
        return image

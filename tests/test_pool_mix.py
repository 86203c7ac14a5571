"""The varied training composites: several stamps per picture and mosaics of photos."""

import numpy as np
import pytest
from PIL import Image

from tests.test_pool import RED, photo, write_background, write_stamp
from ttame.data.pool.composites import CompositeMix, mosaic
from ttame.data.pool.sources.common import Background, PoolSources, Stamp
from ttame.data.pool.training import TrainingPool
from ttame.errors import SourceError


@pytest.fixture
def sources(tmp_path) -> PoolSources:
    stamps = [
        Stamp(f"s/{i}.png", write_stamp(tmp_path / f"{i}.png", RED, (20, 20), 4), str(i), "train")
        for i in range(3)
    ]
    backgrounds = [Background("bg/0.png", write_background(tmp_path / "bg0.png", 0))]
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    photos = [photo(f"p/{i}.png", "train", c) for i, c in enumerate(colours)]
    return PoolSources(stamps, backgrounds, photos)


def red_pixels(image: Image.Image) -> int:
    a = np.asarray(image).astype(int)
    return int(((a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)).sum())


def test_mosaic_puts_each_picture_in_its_cell():
    tiles = [
        Image.new("RGB", (30, 50), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]
    ]
    out = np.asarray(mosaic(tiles, (0.25, 0.5), 64))
    assert out.shape == (64, 64, 3)
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[0, 15]) == (255, 0, 0)
    assert tuple(out[0, 16]) == (0, 255, 0) and tuple(out[31, 63]) == (0, 255, 0)
    assert tuple(out[32, 0]) == (0, 0, 255) and tuple(out[63, 16]) == (9, 9, 9)
    with pytest.raises(ValueError, match="four"):
        mosaic(tiles[:3], (0.5, 0.5), 64)


def test_default_mix_is_one_stamp_and_more_stamps_cover_more(sources):
    one = TrainingPool(sources, composites_per_epoch=40, size=96, seed=1)
    many = TrainingPool(
        sources,
        composites_per_epoch=40,
        size=96,
        seed=1,
        mix=CompositeMix(max_stamps=4, scale=(0.2, 0.3)),
    )
    assert one.mix == CompositeMix()
    first = len(one.photos)
    singles = [red_pixels(one[i]) for i in range(first, len(one))]
    several = [red_pixels(many[i]) for i in range(first, len(many))]
    assert min(singles) > 0 and min(several) > 0
    # Several small stamps: some composites carry clearly more red than the largest single one
    # could at that scale, and the count varies from picture to picture.
    assert len(set(several)) > 5
    assert max(several) > (0.6 * 0.3 * 96) ** 2


def test_mosaics_are_made_of_training_photos_and_are_seeded(sources):
    pool = TrainingPool(
        sources, composites_per_epoch=20, size=64, seed=2, mix=CompositeMix(mosaic=1.0)
    )
    again = TrainingPool(
        sources, composites_per_epoch=20, size=64, seed=2, mix=CompositeMix(mosaic=1.0)
    )
    first = len(pool.photos)
    for i in range(first, len(pool)):
        image = np.asarray(pool[i])
        assert np.array_equal(image, np.asarray(again[i]))
        colours = {tuple(c) for c in image.reshape(-1, 3)}
        assert colours <= {(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)}
    pool.set_epoch(1)
    assert not np.array_equal(np.asarray(pool[first]), np.asarray(again[first]))


def test_mix_rejects_what_it_cannot_make(sources):
    with pytest.raises(ValueError):
        CompositeMix(max_stamps=0)
    with pytest.raises(ValueError):
        CompositeMix(scale=(0.5, 0.2))
    no_photos = PoolSources(sources.stamps, sources.backgrounds, [])
    with pytest.raises(SourceError, match="mosaics"):
        TrainingPool(no_photos, composites_per_epoch=4, mix=CompositeMix(mosaic=0.5))

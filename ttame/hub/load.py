"""A head from wherever it is: a folder, the bundled ``checkpoints/``, a Hub repo, a checkpoint.

Nothing pickled is ever loaded: heads are safetensors, and the reference implementation's
checkpoints are read as tensors only (:mod:`ttame.hub.convert`). Every head comes with its
provenance (where it came from, its licence) and, when its checkpoint holds the backbone's
weights too, that file, so one download gives the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ttame.errors import HeadError
from ttame.hub import cache
from ttame.hub.card import AUTHORS_LICENCE, AUTHORS_LICENSE_NAME, card_license
from ttame.hub.client import HF_SCHEME, HubRef, hub_folder, is_repo_id
from ttame.hub.convert import CHECKPOINT_SUFFIXES, checkpoint_head, convert_checkpoint
from ttame.hub.heads import CONFIG_FILE, WEIGHTS_FILE, read_head
from ttame.hub.known import KnownHead, known_head
from ttame.model.head import AttentionHead

_PACKAGE = Path(__file__).resolve().parent.parent
BUNDLED_ROOTS = (_PACKAGE / "checkpoints", _PACKAGE.parent / "checkpoints")
"""Where bundled heads are looked for: the installed package's data, then a source checkout."""


@dataclass(frozen=True)
class Provenance:
    """Where a head came from and under which licence: shown beside every map it makes."""

    source: str
    license: str
    terms: str | None = None
    """Terms of use to show the user once (the authors' non-commercial licence)."""
    weights: Path | None = None
    """The local file the head's weights were read from, so a report can name it by hash."""


@dataclass(frozen=True)
class OpenedHead:
    """A loaded head, its provenance, and the checkpoint holding its backbone's weights, if any."""

    head: AttentionHead
    provenance: Provenance
    backbone_weights: Path | None = None


def bundled_head(backbone: str) -> Path | None:
    """The head shipped in ``checkpoints/<backbone>`` (package data or a source checkout)."""
    for root in BUNDLED_ROOTS:
        folder = root / backbone.replace("/", "--")
        if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
            return folder
    return None


def _terms(license_name: str) -> str | None:
    return AUTHORS_LICENCE if license_name == AUTHORS_LICENSE_NAME else None


def open_head(
    source: str | Path,
    cache_dir: str | Path | None = None,
    backbone: str | None = None,
    cache_limit: int | str | None = None,
) -> OpenedHead:
    """A head from a folder, a Hub repo id, a reference checkpoint or an ``hf://`` reference.

    - a folder with ``config.json`` + ``model.safetensors``;
    - ``OWNER/NAME`` or ``hf://OWNER/NAME[@REVISION]``: a head repo on the Hub;
    - ``FILE.ckpt`` (also ``.pt`` / ``.pth``): a checkpoint of the reference implementation,
      converted in memory (:func:`ttame.hub.convert.convert_checkpoint`);
    - ``hf://OWNER/NAME[@REVISION]/FILE.ckpt``: such a checkpoint in a Hub repo, fetched and
      converted once, then cached.

    Hub files are looked up in the Hugging Face cache first; only on a miss, and when the Hub
    answers within a few seconds, are they downloaded. Offline, the failure is immediate.
    ``backbone`` names the backbone a checkpoint belongs to when the file does not say;
    ``cache_limit`` bounds the disk the downloads take (:func:`ttame.hub.cache.cache_limit`).
    """
    text = str(source)
    path = Path(source).expanduser()
    if text.startswith(HF_SCHEME):
        ref = HubRef.parse(text)
        if ref.filename is None:
            return _repo_head(ref.repo_id, text, cache_dir, ref.revision, cache_limit)
        converted = checkpoint_head(ref, backbone, cache_dir, cache_limit)
        head = read_head(converted.folder, source)
        licence = card_license(converted.folder)
        weights = converted.checkpoint if converted.backbone_prefix is not None else None
        provenance = Provenance(text, licence, _terms(licence), converted.folder / WEIGHTS_FILE)
        return OpenedHead(head, provenance, weights)
    if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        head, report = convert_checkpoint(path, backbone)
        weights = path if report.backbone_prefix is not None else None
        terms = _terms(AUTHORS_LICENSE_NAME)
        return OpenedHead(head, Provenance(text, AUTHORS_LICENSE_NAME, terms, path), weights)
    if path.is_dir():
        licence = card_license(path)
        provenance = Provenance(text, licence, _terms(licence), path / WEIGHTS_FILE)
        return OpenedHead(read_head(path, source), provenance)
    if is_repo_id(text):
        return _repo_head(text, f"{HF_SCHEME}{text}", cache_dir, None, cache_limit)
    raise HeadError(
        f"'{source}' is neither a head folder nor a Hugging Face Hub repo id (owner/name); "
        "other sources: hf://owner/name[/file.ckpt], a reference checkpoint file (.ckpt)."
    )


def _repo_head(
    repo_id: str,
    shown: str,
    cache_dir: str | Path | None,
    revision: str | None,
    cache_limit: int | str | None,
) -> OpenedHead:
    """A head repo's snapshot, fetched once under a lock and counted in the cache's limit."""
    with cache.locked(f"{repo_id}@{revision}"):
        folder = hub_folder(repo_id, cache_dir, revision)
    cache.record([folder], cache_limit)
    licence = card_license(folder)
    provenance = Provenance(shown, licence, _terms(licence), folder / WEIGHTS_FILE)
    return OpenedHead(read_head(folder, shown), provenance)


def load_head(
    source: str | Path, cache_dir: str | Path | None = None, backbone: str | None = None
) -> AttentionHead:
    """The head alone from any source :func:`open_head` takes."""
    return open_head(source, cache_dir, backbone).head


def default_head(
    backbone: str, cache_dir: str | Path | None = None, cache_limit: int | str | None = None
) -> OpenedHead | None:
    """The best known head for ``backbone`` (:mod:`ttame.hub.known`), or None if there is none.

    A bundled entry whose folder is missing (a package installed without its data) and a
    backbone outside the table with a ``checkpoints/<backbone>`` folder both fall back to the
    bundled folder, if any.
    """
    entry = known_head(backbone)
    if entry is not None and entry.on_hub:
        return open_head(entry.source, cache_dir, backbone, cache_limit)
    folder = bundled_head(backbone)
    if folder is None:
        return None
    entry = entry or KnownHead(backbone, f"checkpoints/{folder.name}", card_license(folder))
    provenance = Provenance(entry.source, entry.license, entry.terms, folder / WEIGHTS_FILE)
    return OpenedHead(read_head(folder, entry.source), provenance)

"""A head from wherever it is: a folder, the bundled ``checkpoints/``, a Hub repo, a checkpoint.

Nothing pickled is ever loaded: heads are safetensors, and the reference implementation's
checkpoints are read as tensors only (:mod:`ttame.hub.convert`).
"""

from __future__ import annotations

from pathlib import Path

from ttame.errors import HeadError
from ttame.hub.client import HF_SCHEME, HubRef, hub_folder, is_repo_id
from ttame.hub.convert import CHECKPOINT_SUFFIXES, checkpoint_head, convert_checkpoint
from ttame.hub.heads import CONFIG_FILE, WEIGHTS_FILE, read_head
from ttame.model.head import AttentionHead

_PACKAGE = Path(__file__).resolve().parent.parent
BUNDLED_ROOTS = (_PACKAGE / "checkpoints", _PACKAGE.parent / "checkpoints")
"""Where bundled heads are looked for: the installed package's data, then a source checkout."""


def bundled_head(backbone: str) -> Path | None:
    """The head shipped in ``checkpoints/<backbone>`` (package data or a source checkout)."""
    for root in BUNDLED_ROOTS:
        folder = root / backbone.replace("/", "--")
        if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
            return folder
    return None


def head_folder(source: str | Path | None, backbone: str) -> Path | None:
    """The folder holding the head ``source`` names (None: the bundled one), if it is a folder.

    Its model card (``README.md``) lives there. A reference checkpoint has no folder: None.
    """
    if source is None:
        return bundled_head(backbone)
    text = str(source)
    if text.startswith(HF_SCHEME):
        ref = HubRef.parse(text)
        return hub_folder(ref.repo_id, revision=ref.revision) if ref.filename is None else None
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    return hub_folder(text) if is_repo_id(text) and not path.exists() else None


def load_head(
    source: str | Path, cache_dir: str | Path | None = None, backbone: str | None = None
) -> AttentionHead:
    """A head from a folder, a Hub repo id, a reference checkpoint or an ``hf://`` reference.

    - a folder with ``config.json`` + ``model.safetensors``;
    - ``OWNER/NAME`` or ``hf://OWNER/NAME[@REVISION]``: a head repo on the Hub;
    - ``FILE.ckpt`` (also ``.pt`` / ``.pth``): a checkpoint of the reference implementation,
      converted in memory (:func:`ttame.hub.convert.convert_checkpoint`);
    - ``hf://OWNER/NAME[@REVISION]/FILE.ckpt``: such a checkpoint in a Hub repo, fetched and
      converted once, then cached.

    Hub files are looked up in the Hugging Face cache first; only on a miss, and when the Hub
    answers within a few seconds, are they downloaded. Offline, the failure is immediate.
    ``backbone`` names the backbone a checkpoint belongs to when the file does not say.
    """
    text = str(source)
    path = Path(source).expanduser()
    if text.startswith(HF_SCHEME):
        ref = HubRef.parse(text)
        if ref.filename is None:
            path = hub_folder(ref.repo_id, cache_dir, ref.revision)
        else:
            path = checkpoint_head(ref, backbone, cache_dir)
    elif path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        return convert_checkpoint(path, backbone)[0]
    elif path.is_dir():
        pass
    elif is_repo_id(text):
        path = hub_folder(text, cache_dir)
    else:
        raise HeadError(
            f"'{source}' is neither a head folder nor a Hugging Face Hub repo id (owner/name); "
            "other sources: hf://owner/name[/file.ckpt], a reference checkpoint file (.ckpt)."
        )
    return read_head(path, source)

"""Head folders: the one writer (atomic, refuses NaN), the reader and the upload to the Hub.

A head folder holds ``config.json`` (backbone, tapped layers, channels, classes, the fused
size), ``model.safetensors`` (the weights; nothing pickled) and, when written with a card,
``README.md`` (:mod:`ttame.hub.card`). Training, checkpoint import, ``Explainer.save_pretrained``
and ``push_to_hub`` all write through :func:`save_head`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi
from safetensors.torch import load_model, save_model

from ttame._files import publish
from ttame.errors import HeadError
from ttame.hub.card import head_card
from ttame.hub.client import reason
from ttame.model.head import AttentionHead

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"


def non_finite(head: AttentionHead) -> list[str]:
    """Names of the head's floating-point tensors holding NaN or infinite values."""
    return [
        name
        for name, value in head.state_dict().items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def save_head(
    head: AttentionHead,
    folder: str | Path,
    card: Mapping[str, Any] | None = None,
    *,
    fp16: bool = False,
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (+ the model card) into ``folder``.

    The files are written to a temporary folder beside ``folder`` and each moved in with one
    rename, so a crash never leaves a half-written file and two processes writing the same
    head do not clash. Other files in ``folder`` are kept; ``README.md`` is (re)written only
    when ``card`` is given (its fields as in :func:`ttame.hub.card.head_card`), so a
    hand-written card survives a retraining. A head with NaN or infinite weights (a last step
    that diverged) is refused: it would explain nothing. ``fp16`` stores the weights in half
    precision (half the size; they load back as float32).
    """
    broken = non_finite(head)
    if broken:
        raise HeadError(
            f"The head has NaN or infinite values in {', '.join(broken[:4])}; it was not written."
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    copy = AttentionHead(**head.config)
    copy.load_state_dict(head.state_dict())
    if fp16:
        copy = copy.half()
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        staged = Path(tmp)
        (staged / CONFIG_FILE).write_text(json.dumps(copy.config, sort_keys=True, indent=2))
        save_model(copy, str(staged / WEIGHTS_FILE))
        names = [CONFIG_FILE, WEIGHTS_FILE]
        if card is not None:
            head_card(head, **card).save(staged / CARD_FILE)
            names.append(CARD_FILE)
        for name in names:
            publish(staged / name, folder / name)
    return folder


def read_head(folder: str | Path, source: str | Path | None = None) -> AttentionHead:
    """The head in a folder written by :func:`save_head`, in eval mode (safetensors only).

    ``source`` is what the user named (a repo id, say), for the error message.
    """
    path = Path(folder)
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if not (path / n).is_file()]
    if missing:
        raise HeadError(f"Head folder {path} lacks {', '.join(missing)}.")
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
        head = AttentionHead(**config)
        load_model(head, str(path / WEIGHTS_FILE), strict=True)
    except Exception as exc:
        raise HeadError(f"Could not load the head from '{source or path}': {reason(exc)}") from exc
    return head.eval()


def push_head(
    head: AttentionHead,
    repo_id: str,
    card: Mapping[str, Any] | None = None,
    *,
    private: bool | None = None,
    token: str | None = None,
) -> str:
    """Upload the head (config, weights, model card) to a Hub repo; returns the commit URL.

    Needs a token (``hf auth login``); the repo is created if it does not exist.
    """
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_head(head, Path(tmp) / "head", {"repo_id": repo_id, **(card or {})})
        return str(api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=folder))

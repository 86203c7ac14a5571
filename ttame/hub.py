"""Heads and weights from the Hugging Face Hub, the authors' released checkpoints, model cards.

Three jobs, each needing the network only when it is there:

- **Hub access that fails fast.** Files are looked up in the local Hugging Face cache first;
  only on a miss, and only when ``HF_HUB_OFFLINE`` is off and the Hub's host answers a short TCP
  probe, is anything downloaded. huggingface_hub alone retries an unreachable host for most of a
  minute; here an offline user hears "no network" in about a second.
- **Import of the reference implementation's heads.** Its PyTorch Lightning ``.ckpt`` files keep
  the attention head under a prefix (``generic.attn_mech.`` for CNNs, ``generic.attn_mech.1.``
  for the transformer) as ``convs.N``, ``bns.N`` and ``fuser``, beside the frozen backbone. They
  are read without running pickled code, checked shape by shape against a head built for the
  backbone's taps, and written as a head folder (``config.json`` + ``model.safetensors`` +
  model card). ``hf://OWNER/NAME/FILE.ckpt`` does the same on the fly from a Hub repo, caching
  the converted head.
- **Model cards** for saved and pushed heads: backbone, tapped layers, training data, metrics,
  licence and how to load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from ttame.backbones import TIMM_PREFIX, BackboneSpec, get_spec
from ttame.errors import HeadError, TTameError
from ttame.head import AttentionHead
from ttame.weights import StateDict, load_checkpoint, unwrap_state_dict

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
HF_SCHEME = "hf://"
HEAD_FILES = ["config.json", "model.safetensors", "README.md"]
MAX_HEAD_BYTES = 256 * 2**20
"""Largest head file downloaded. The paper's heads take 5-40 MB; anything far larger is not a
head, and refusing it before the download keeps a typed repo id from filling the disk."""
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
PAPER_BACKBONES = ("vgg16", "resnet50", "vit_b_16")
AUTHORS_LICENCE = (
    "The trained heads released by the T-TAME authors are for academic, non-commercial use "
    "only (see the reference implementation's licence). This file only renames their tensors."
)


# --- Hub access ----------------------------------------------------------------------------


def hub_offline() -> bool:
    """Whether Hugging Face offline mode is on (read now, not at import time)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return flag in {"1", "ON", "YES", "TRUE"} or bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    """The Hub's address (``HF_ENDPOINT`` read now, not at import time)."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_cache(cache_dir: str | Path | None = None) -> Path:
    """The Hugging Face cache folder: ``cache_dir``, else ``HF_HUB_CACHE`` / ``HF_HOME`` now."""
    from huggingface_hub import constants

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


GET_IT = "Connect to the network once (HF_HUB_OFFLINE unset), or give a local file or folder."


def hub_folder(
    repo_id: str, cache_dir: str | Path | None = None, revision: str | None = None
) -> Path:
    """The local snapshot of a head repo: from the cache, else downloaded if the Hub answers."""
    from huggingface_hub import snapshot_download

    cache = hub_cache(cache_dir)
    def snapshot(**where: Any) -> Path:
        return Path(snapshot_download(
            repo_id, revision=revision, allow_patterns=HEAD_FILES, cache_dir=cache, **where
        ))

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
        raise HeadError(
            f"No T-TAME head could be fetched from '{repo_id}': {_reason(exc)}"
        ) from exc
    raise HeadError(
        f"Head repo '{repo_id}' holds {', '.join(oversized)}: more than the "
        f"{MAX_HEAD_BYTES // 2**20} MiB a head file may take; it was not downloaded."
    )


def _oversized_head_files(repo_id: str, revision: str | None, endpoint: str) -> list[str]:
    """The head files of a Hub repo larger than :data:`MAX_HEAD_BYTES`, as 'name (size)'."""
    from huggingface_hub import HfApi

    files = HfApi(endpoint=endpoint).list_repo_tree(repo_id, revision=revision)
    return [
        f"{item.path} ({item.size / 2**20:.0f} MiB)"
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
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

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
        raise error(f"Could not fetch '{filename}' from '{repo_id}': {_reason(exc)}") from exc


def timm_pretrained_state_dict(model_name: str) -> StateDict:
    """The pretrained weights of timm model ``model_name``: the Hugging Face cache, else a download.

    timm fetches most weights from the Hub. The file is looked up in the cache, else downloaded
    here (after the reachability probe, so an offline machine fails in about a second instead
    of after huggingface_hub's minute of retries), and handed to timm, which still adapts it to
    the model. Weights timm keeps elsewhere go through timm's own download.
    """
    import timm
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id or cfg.custom_load:
        return timm.create_model(model_name, pretrained=True).state_dict()
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else TIMM_FILES
    cache = hub_cache()
    found = None
    for name in names:
        cached = try_to_load_from_cache(repo_id, name, cache_dir=cache, revision=revision or None)
        if isinstance(cached, str):
            found = cached
            break
    if found is None:
        endpoint = require_hub(f"The weights file of {cfg.hf_hub_id}", OSError)
        for name in names:
            try:
                found = hf_hub_download(
                    repo_id, name, revision=revision or None, cache_dir=cache, endpoint=endpoint
                )
                break
            except EntryNotFoundError:
                continue
        else:
            raise OSError(f"Hub repo {repo_id} has none of {', '.join(names)}.")
    model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay={"file": found})
    return model.state_dict()


TIMM_FILES = ["model.safetensors", "pytorch_model.bin"]
"""The files timm looks for in a Hub repo, in its order of preference."""


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
            not REPO_ID.match(repo_id)
            or ".." in repo_id
            or (filename is not None and ".." in filename.split("/"))
            or (parts[1].count("@") and not revision)
        ):
            raise HeadError(f"'{text}': write {HF_SCHEME}OWNER/NAME[@REVISION][/FILE.ckpt].")
        return cls(repo_id, filename, revision or None)


# --- Import of the reference implementation's heads ----------------------------------------

_HEAD_KEY = re.compile(
    r"^(?:convs\.(?P<conv>\d+)\.(?P<conv_p>weight|bias)"
    r"|bns\.(?P<bn>\d+)\.(?P<bn_p>weight|bias|running_mean|running_var|num_batches_tracked)"
    r"|fuser\.(?P<fuser_p>weight|bias))$"
)
_FIRST_CONV = re.compile(r"^(?P<prefix>(?:.*\.)?)convs\.0\.weight$")


@dataclass
class ImportReport:
    """What a checkpoint import took, where it put it, and everything it left out."""

    source: str
    backbone: str
    layers: list[str]
    in_channels: list[int]
    num_classes: int
    prefix: str
    converted: int
    ignored_tensors: dict[str, int] = field(default_factory=dict)
    """Tensors outside the head (the frozen backbone...), counted by the key prefix they share."""
    ignored_entries: list[str] = field(default_factory=list)
    """Top-level entries of the checkpoint other than the state dict (optimizer states, ...)."""
    notes: list[str] = field(default_factory=list)
    out: str | None = None

    def summary(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"Imported the head of {self.source} for backbone '{self.backbone}': "
            f"{self.converted} tensors under '{self.prefix}', taps {', '.join(self.layers)} "
            f"(channels {self.in_channels}), {self.num_classes} classes.",
        ]
        if self.ignored_tensors:
            groups = ", ".join(f"{k}.* ({n})" for k, n in self.ignored_tensors.items())
            lines.append(f"Ignored tensors: {groups}.")
        if self.ignored_entries:
            lines.append(f"Ignored entries: {', '.join(self.ignored_entries)}.")
        lines.extend(self.notes)
        if self.out:
            lines.append(f"Head written to {self.out}")
        return "\n".join(lines)


def tap_channels(spec: BackboneSpec, layers: list[str] | None = None) -> tuple[list[int], int]:
    """Channels of each tapped map and the number of classes, without building real weights.

    The network is built on PyTorch's ``meta`` device, which records shapes and allocates
    nothing, so even VGG-16 answers in milliseconds. Should a model not run on ``meta``, it is
    built on the CPU with random weights instead.
    """
    from ttame.taps import Backbone

    size = spec.input_size
    try:
        with torch.device("meta"):
            body = Backbone(spec.build(), spec, tuple(layers) if layers else None)
            logits, maps = body.forward_features(torch.zeros(1, 3, size, size))
    except TTameError:
        raise
    except Exception:  # noqa: BLE001 - fall back to a real dry run
        body = Backbone(spec.build().eval(), spec, tuple(layers) if layers else None)
        with torch.no_grad():
            logits, maps = body.forward_features(torch.zeros(1, 3, size, size))
    return [int(m.shape[1]) for m in maps], int(logits.shape[1])


def find_head_prefix(state: Mapping[str, torch.Tensor]) -> str:
    """The key prefix under which a reference checkpoint keeps its attention head."""
    prefixes = sorted({m["prefix"] for k in state if (m := _FIRST_CONV.match(k))})
    if not prefixes:
        raise HeadError(
            "No T-TAME attention head in this checkpoint: no key ends in 'convs.0.weight' "
            "(expected the reference layout convs.N / bns.N / fuser)."
        )
    if len(prefixes) > 1:
        raise HeadError(
            f"Several attention heads in this checkpoint (under {', '.join(prefixes)}); "
            "choose one with --prefix."
        )
    return prefixes[0]


def convert_state_dict(state: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """Rename the reference head's tensors under ``prefix`` to ttame's head keys.

    ``convs.N`` -> ``branches.N.conv``, ``bns.N`` -> ``branches.N.bn``, ``fuser`` -> ``fuser``.
    A key under the prefix that is not part of that layout is an error: silently dropping a
    trained parameter would give a head that computes something else.
    """
    out: StateDict = {}
    unknown = []
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        match = _HEAD_KEY.match(key[len(prefix) :])
        if match is None:
            unknown.append(key)
        elif match["conv"] is not None:
            out[f"branches.{match['conv']}.conv.{match['conv_p']}"] = value
        elif match["bn"] is not None:
            out[f"branches.{match['bn']}.bn.{match['bn_p']}"] = value
        else:
            out[f"fuser.{match['fuser_p']}"] = value
    if unknown:
        raise HeadError(
            f"Unrecognised tensors under the head prefix '{prefix}': {', '.join(unknown[:6])}. "
            "This is not the reference T-TAME head layout."
        )
    return out


def _backbone_from_hints(hints: Mapping[str, Any], channels: list[int]) -> str:
    """The backbone a checkpoint was trained on: its hyper-parameters, else its channel counts."""
    named = hints.get("model_name")
    if isinstance(named, str):
        squeeze = re.compile(r"[^a-z0-9]")
        for candidate in (named, *PAPER_BACKBONES):
            if squeeze.sub("", candidate.lower()) == squeeze.sub("", named.lower()):
                try:
                    return get_spec(candidate).name
                except TTameError:
                    continue
    fits = [name for name in PAPER_BACKBONES if tap_channels(get_spec(name))[0] == channels]
    if len(fits) == 1:
        return fits[0]
    raise HeadError(
        f"Cannot tell which backbone this head belongs to (branch channels {channels}); "
        "name it (--backbone NAME, or backbone= in Python)."
    )


def convert_checkpoint(
    path: str | Path, backbone: str | None = None, prefix: str | None = None
) -> tuple[AttentionHead, ImportReport]:
    """A ttame head from a reference T-TAME checkpoint, and a report of what was ignored.

    The file is read with ``torch.load(weights_only=True)`` (plus Lightning's hyper-parameter
    dicts as plain dicts); anything else pickled is refused. The backbone comes from
    ``backbone``, else the checkpoint's hyper-parameters, else the channel counts of the paper's
    three backbones. The tapped layers are the checkpoint's ``layers`` hyper-parameter when
    the backbone has them, else the backbone's default taps. Every tensor's shape is checked
    against a head built for those taps.
    """
    path = Path(path)
    raw = load_checkpoint(path, HeadError)
    try:
        state = unwrap_state_dict(raw, path)
    except TTameError as exc:
        raise HeadError(str(exc)) from exc
    hints = raw.get("hyper_parameters") if isinstance(raw, Mapping) else None
    hints = hints if isinstance(hints, Mapping) else {}
    prefix = find_head_prefix(state) if prefix is None else prefix
    converted = convert_state_dict(state, prefix)
    branches = sorted({int(k.split(".")[1]) for k in converted if k.startswith("branches.")})
    if branches != list(range(len(branches))) or "fuser.weight" not in converted:
        raise HeadError(f"The head under '{prefix}' in {path} is incomplete (branches {branches}).")
    channels = [int(converted[f"branches.{i}.conv.weight"].shape[0]) for i in branches]
    spec = get_spec(backbone or _backbone_from_hints(hints, channels))
    notes = []
    layers = list(spec.taps)
    hinted = hints.get("layers")
    if isinstance(hinted, list | tuple) and list(hinted) != layers:
        try:
            tap_channels(spec, [str(name) for name in hinted])
            layers = [str(name) for name in hinted]
        except TTameError:
            notes.append(f"Its layers {list(hinted)} are not in '{spec.name}'; used {layers}.")
    version = hints.get("attention_version")
    if isinstance(version, str) and version != "TAME":
        notes.append(
            f"It was trained as attention_version '{version}'; ttame computes the paper's head "
            "(the 'TAME' attention module, class token dropped): compare a few maps with the "
            "reference implementation's before relying on them."
        )
    expected, num_classes = tap_channels(spec, layers)
    head = AttentionHead(spec.name, layers, expected, int(converted["fuser.weight"].shape[0]))
    target = head.state_dict()
    problems = [
        f"{key}: {tuple(value.shape)} in the file, {tuple(target[key].shape)} for '{spec.name}'"
        for key, value in converted.items()
        if key in target and tuple(value.shape) != tuple(target[key].shape)
    ]
    problems += [f"{key}: not in this head" for key in converted if key not in target]
    if len(branches) != len(layers):
        problems.insert(0, f"{len(branches)} branches in the file, {len(layers)} taps")
    if head.num_classes != num_classes:
        problems.append(f"{head.num_classes} classes, the backbone has {num_classes}")
    if problems:
        raise HeadError(
            f"The head in {path} does not fit backbone '{spec.name}' (taps {layers}, channels "
            f"{expected}): " + "; ".join(problems[:6])
        )
    missing = sorted(set(target) - set(converted))
    if any(not key.endswith("num_batches_tracked") for key in missing):
        raise HeadError(f"The head in {path} lacks {', '.join(missing[:6])}.")
    if missing:
        notes.append("No BatchNorm step counters in the file (unused at inference).")
    head.load_state_dict({**target, **converted})
    ignored = Counter(_group(k, prefix) for k in state if not k.startswith(prefix))
    entries = [str(k) for k in raw if k != "state_dict"] if isinstance(raw, Mapping) else []
    report = ImportReport(
        source=str(path),
        backbone=spec.name,
        layers=layers,
        in_channels=expected,
        num_classes=head.num_classes,
        prefix=prefix,
        converted=len(converted),
        ignored_tensors=dict(ignored),
        ignored_entries=entries,
        notes=notes,
    )
    return head.eval(), report


def import_checkpoint(
    path: str | Path,
    out: str | Path,
    backbone: str | None = None,
    prefix: str | None = None,
    source: str | None = None,
) -> ImportReport:
    """Convert a reference checkpoint into a head folder with its model card; return the report."""
    head, report = convert_checkpoint(path, backbone, prefix)
    if source is not None:
        report.source = source
    write_head(head, out, imported_card(report))
    report.out = str(out)
    return report


def imported_card(report: ImportReport) -> dict[str, Any]:
    """Model card fields for a head converted from the authors' checkpoint."""
    return {
        "training_data": "ImageNet-1k training set, by the T-TAME authors (see their paper)",
        "source": f"converted from {report.source}",
        "license": "other",
        "license_name": "academic-non-commercial",
        "license_note": AUTHORS_LICENCE,
    }


def write_head(head: AttentionHead, out: str | Path, card: Mapping[str, Any]) -> Path:
    """Write a head folder (config, weights, card), replacing the folder's files atomically.

    The files are written to a temporary folder beside ``out`` and moved in, so a crash never
    leaves a half-written head, and two processes converting the same file do not clash.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        head.save_pretrained(tmp, model_card_kwargs=dict(card))
        out.mkdir(exist_ok=True)
        for name in HEAD_FILES:
            os.replace(Path(tmp) / name, out / name)
    return out


def checkpoint_head(
    ref: HubRef, backbone: str | None = None, cache_dir: str | Path | None = None
) -> Path:
    """The head folder converted from a reference checkpoint in a Hub repo, cached.

    The checkpoint comes through the Hugging Face cache (fetched once); the converted head is
    kept under :func:`ttame_cache`, keyed by the repo, the cached file and the backbone, so the
    conversion also runs only once.
    """
    if ref.filename is None:
        raise HeadError(f"'{ref.repo_id}' names no checkpoint file.")
    path = hub_file(ref.repo_id, ref.filename, cache_dir, ref.revision)
    real = path.resolve()
    stat = real.stat()
    key = hashlib.sha256(f"{real}:{stat.st_size}:{stat.st_mtime_ns}:{backbone}".encode())
    folder = ttame_cache() / "heads" / f"{ref.repo_id.replace('/', '--')}--{key.hexdigest()[:16]}"
    if not all((folder / name).is_file() for name in HEAD_FILES):
        source = f"{HF_SCHEME}{ref.repo_id}/{ref.filename}"
        import_checkpoint(path, folder, backbone, source=source)
    return folder


# --- Model cards ---------------------------------------------------------------------------


def head_card(
    head: AttentionHead,
    *,
    training_data: str | None = None,
    metrics: Mapping[str, float | str] | None = None,
    license: str | None = None,
    license_name: str | None = None,
    license_note: str | None = None,
    source: str | None = None,
    repo_id: str | None = None,
) -> ModelCard:
    """The model card (README.md) of a head: what it explains, how it was made, how to load it.

    Written with every saved or pushed head so that a head found on its own (on the Hub, in a
    folder) says which backbone and layers it needs, what it was trained on, its licence and
    the two lines that load it. Fields not given are stated as not recorded.
    """
    from huggingface_hub import ModelCard, ModelCardData

    try:
        spec = get_spec(head.backbone)
        described = f" ({spec.description})" if spec.description else ""
    except TTameError:
        described = ""
    data = ModelCardData(
        library_name="ttame",
        tags=["explainability", "saliency", "t-tame", "pytorch_model_hub_mixin"],
        license=license,
        license_name=license_name,
    )
    where = repo_id or "path/to/this/folder"
    taps = "\n".join(
        f"| {i} | `{name}` | {c} |"
        for i, (name, c) in enumerate(zip(head.layers, head.in_channels, strict=True))
    )
    if metrics:
        scores = "| metric | value |\n|---|---|\n" + "\n".join(
            f"| {name} | {value} |" for name, value in metrics.items()
        )
    else:
        scores = "No metrics were recorded with this head."
    if license_note:
        terms = license_note
    elif license:
        terms = f"`{license}`."
    else:
        terms = "Not stated by whoever saved this head: ask them before using it."
    weights_hint = (
        "\nThe backbone's weights are not in this repo: torchvision or timm downloads them, or "
        "pass a local file with `weights=` / `--weights`.\n"
        if head.backbone in PAPER_BACKBONES or head.backbone.startswith(TIMM_PREFIX)
        else ""
    )
    text = f"""---
{data.to_yaml()}
---

# T-TAME attention head for `{head.backbone}`

A T-TAME attention head (Ntrougkas, Gkalelis, Mezaris, IEEE Access 2024). On top of the frozen
image classifier `{head.backbone}`{described}, it gives a saliency map of where the classifier
looked for any of its {head.num_classes} classes, in one forward pass.

## Backbone and tapped layers

| branch | layer | channels |
|---|---|---|
{taps}

Branch outputs are resized to at most {head.max_size}x{head.max_size} and fused into \
{head.num_classes} class maps.

## Training

- Data: {training_data or "not recorded"}
- Source: {source or "not recorded"}

## Metrics

{scores}

## Licence

{terms}

## How to load

```python
from ttame import Explainer

explainer = Explainer.from_pretrained("{where}")
result = explainer.explain(images)  # raw RGB in [0, 1], B x 3 x H x W; maps B x H x W
```

or `ttame explain photo.jpg --head {where}`. Needs the `ttame` package.
{weights_hint}"""
    return ModelCard(text)


# --- Command line --------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ttame import-checkpoint``."""
    parser = subparsers.add_parser(
        "import-checkpoint",
        help="convert a reference T-TAME checkpoint into a head folder",
        description=(
            "Convert a T-TAME checkpoint of the reference implementation (a Lightning .ckpt) "
            "into a ttame head folder: config.json, model.safetensors and a model card. The file "
            "is read without running pickled code. The authors' heads are for academic, "
            "non-commercial use."
        ),
    )
    parser.add_argument("file", nargs="?", help="local checkpoint (.ckpt / .pt / .pth)")
    parser.add_argument("--repo", help="Hugging Face Hub repo id holding the checkpoint")
    parser.add_argument("--filename", help="the checkpoint's path inside --repo")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of --repo")
    parser.add_argument(
        "--backbone", default=None, help="backbone name (default: from the checkpoint)"
    )
    parser.add_argument("--prefix", default=None, help="key prefix of the head (default: found)")
    parser.add_argument("--out", required=True, help="head folder to write")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Fetch (if from the Hub), convert, write, report."""
    if (args.file is None) == (args.repo is None):
        raise HeadError("Give either a checkpoint FILE or --repo OWNER/NAME --filename FILE.")
    source = args.file
    if args.repo is not None:
        if not args.filename:
            raise HeadError("--repo needs --filename: the checkpoint's path inside the repo.")
        ref = HubRef.parse(f"{HF_SCHEME}{args.repo}/{args.filename}")
        path = hub_file(ref.repo_id, args.filename, revision=args.revision)
        source = f"{HF_SCHEME}{args.repo}/{args.filename}"
    else:
        path = Path(args.file)
    report = import_checkpoint(path, args.out, args.backbone, args.prefix, source=source)
    print(json.dumps(report.__dict__) if args.json else report.summary())
    return 0


def _group(key: str, prefix: str) -> str:
    """The part of ``key`` up to where it leaves the head's prefix (``generic.body``, say)."""
    parts, head = key.split("."), prefix.split(".")
    shared = 0
    while shared < min(len(parts) - 1, len(head)) and parts[shared] == head[shared]:
        shared += 1
    return ".".join(parts[: min(shared + 1, len(parts) - 1)] or parts[:1])


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


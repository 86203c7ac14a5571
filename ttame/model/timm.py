"""Any timm classifier as a backbone: its spec, and its weights through the Hugging Face cache.

``timm/<model>`` names a spec made on the fly: the default taps are the last three stages of a
CNN or the last three blocks of a vision transformer, the input sizes and normalisation are
the model's own. timm is an optional dependency, imported only here and only when used.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError
from torch import nn

from ttame.errors import BackboneError
from ttame.hub.client import hub_cache, require_hub
from ttame.model.backbones import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec, imagenet_categories
from ttame.model.weights import StateDict, WeightsSource

TIMM_PREFIX = "timm/"
"""Backbone names that start with this name a timm model."""
TIMM_FILES = ["model.safetensors", "pytorch_model.bin"]
"""The files timm looks for in a Hub repo, in its order of preference."""


def timm_spec(model_name: str) -> BackboneSpec:
    """A spec for any timm classifier: default taps are the last three stages or blocks."""
    import timm

    try:
        probe = timm.create_model(model_name, pretrained=False)
    except Exception as exc:
        raise BackboneError(f"timm does not know the model '{model_name}': {exc}") from exc
    cfg: dict[str, Any] = dict(getattr(probe, "pretrained_cfg", {}))
    blocks = getattr(probe, "blocks", None)
    prefix = int(getattr(probe, "num_prefix_tokens", 0))
    if isinstance(blocks, nn.Sequential) and hasattr(probe, "patch_embed"):
        kind: Literal["cnn", "vit"] = "vit"
        first_norm = "norm1" if hasattr(blocks[0], "norm1") else ""
        taps = tuple(
            f"blocks.{i}.{first_norm}".rstrip(".") for i in range(len(blocks) - 3, len(blocks))
        )
    else:
        kind = "cnn"
        stages = cast(list[dict[str, Any]], probe.feature_info)
        taps = tuple(str(info["module"]) for info in stages[-3:])
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    num_classes = int(getattr(probe, "num_classes", 1000))

    def categories() -> list[str]:
        if num_classes == 1000:
            return imagenet_categories()
        return [f"class {i}" for i in range(num_classes)]

    def build() -> nn.Module:
        return timm.create_model(model_name, pretrained=False)

    return BackboneSpec(
        name=TIMM_PREFIX + model_name,
        build=build,
        taps=taps,
        kind=kind,
        categories=categories,
        weights=WeightsSource(download=lambda: timm_pretrained_state_dict(model_name)),
        input_size=size,
        resize_size=round(size / float(cfg.get("crop_pct", 0.875))),
        mean=_triple(cfg.get("mean", IMAGENET_MEAN)),
        std=_triple(cfg.get("std", IMAGENET_STD)),
        num_prefix_tokens=prefix if kind == "vit" else 0,
        description=f"timm {model_name}",
    )


def _triple(values: object) -> tuple[float, float, float]:
    """A per-channel statistic from timm's config as three floats."""
    first, second, third = (float(v) for v in values)  # type: ignore[attr-defined]
    return first, second, third


def timm_pretrained_state_dict(model_name: str) -> StateDict:
    """The pretrained weights of timm model ``model_name``: the Hugging Face cache, else a download.

    timm fetches most weights from the Hub. The file is looked up in the cache, else downloaded
    here (after the reachability probe, so an offline machine fails in about a second instead
    of after huggingface_hub's minute of retries), and handed to timm, which still adapts it to
    the model. Weights timm keeps elsewhere go through timm's own download.
    """
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id or cfg.custom_load:
        return dict(timm.create_model(model_name, pretrained=True).state_dict())
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
    return dict(model.state_dict())

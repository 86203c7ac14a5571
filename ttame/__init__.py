"""T-TAME: trainable attention explanations for image classifiers, in one forward pass.

from ttame import Explainer, load_image, preprocess
explainer = Explainer.from_pretrained(backbone="mobilenet_v2")
image, _ = preprocess(load_image("cat.jpg"))
explanation = explainer.explain(image[None])   # maps B x H x W in [0, 1]
"""

from ttame.backbones import BackboneSpec, get_spec, list_backbones
from ttame.errors import (
    BackboneError,
    ClassIndexError,
    HeadError,
    ImageError,
    TTameError,
    WeightsUnavailableError,
)
from ttame.explainer import Explainer, Explanation, UntrainedHeadWarning, load_head
from ttame.head import AttentionHead
from ttame.images import load_image, map_to_original, overlay, preprocess

__version__ = "0.1.0"

__all__ = [
    "AttentionHead",
    "BackboneError",
    "BackboneSpec",
    "ClassIndexError",
    "Explainer",
    "Explanation",
    "HeadError",
    "ImageError",
    "TTameError",
    "UntrainedHeadWarning",
    "WeightsUnavailableError",
    "get_spec",
    "list_backbones",
    "load_head",
    "load_image",
    "map_to_original",
    "overlay",
    "preprocess",
]

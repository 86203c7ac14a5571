"""T-TAME: trainable attention explanations for image classifiers, in one forward pass.

    import ttame

    explainer = ttame.load_explainer("mobilenet_v2")  # a backbone, a head folder, OWNER/NAME
    result = explainer.explain_image("cat.jpg", target="tabby")  # path/PIL/array; index/name
    result.overlay().save("out.png")  # also result.map, .label, .score

``explainer.explain(images, classes)`` maps a batch of raw RGB tensors in one backbone pass.
"""

from ttame.errors import (
    BackboneError,
    ClassIndexError,
    DataError,
    ExportError,
    HeadError,
    ImageError,
    SourceError,
    TimeBudgetError,
    TrainingError,
    TTameError,
    UnknownMethodError,
    UntrainedHeadWarning,
    VideoError,
    WeightsUnavailableError,
)
from ttame.explainer import Explainer, load_explainer
from ttame.explanation import Explanation, ImageExplanation
from ttame.hub.heads import save_head
from ttame.hub.load import load_head
from ttame.images import load_image, map_to_original, overlay, preprocess
from ttame.model.backbones import BackboneSpec
from ttame.model.head import AttentionHead
from ttame.model.registry import get_spec, list_backbones, register_backbone

__version__ = "0.1.0"

__all__ = [
    "AttentionHead",
    "BackboneError",
    "BackboneSpec",
    "ClassIndexError",
    "DataError",
    "Explainer",
    "Explanation",
    "ExportError",
    "HeadError",
    "ImageError",
    "ImageExplanation",
    "SourceError",
    "TTameError",
    "TimeBudgetError",
    "TrainingError",
    "UnknownMethodError",
    "UntrainedHeadWarning",
    "VideoError",
    "WeightsUnavailableError",
    "__version__",
    "get_spec",
    "list_backbones",
    "load_explainer",
    "load_head",
    "load_image",
    "map_to_original",
    "overlay",
    "preprocess",
    "register_backbone",
    "save_head",
]

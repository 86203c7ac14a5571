"""One ONNX graph from raw RGB to the answer: probabilities, the top classes and their maps.

The graph holds everything :meth:`ttame.Explainer.explain` does for each image's top classes
after the input checks: the backbone's normalisation, one backbone pass with the taps, the head
for the top-k classes, the maps' min-max normalisation and their bilinear upsampling to the
input size. Input ``images`` is ``B x 3 x S x S`` raw RGB in [0, 1] with a dynamic batch and
the backbone's own input size ``S`` (crop and resize photos before, as
:meth:`ttame.Explainer.preprocess` does). The model card's facts (backbone, tapped layers, the
head's source, its licence when its card states one, the class names) go into the file's
metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ttame.errors import ExportError
from ttame.explainer import Explainer
from ttame.explanation import normalize_maps

INPUT = "images"
OUTPUTS = ("probabilities", "classes", "maps")
EXAMPLE_BATCH = 2
"""The batch of the example traced. Traced at batch 1, the exporter writes the batch size of 1
into the maps' resize operations, and the graph then refuses any other batch."""
OPSET = 18


class ExplanationGraph(nn.Module):
    """An explainer as one function of raw RGB: probabilities, top-k classes, their maps.

    ``top_k == 1`` gives ``B`` classes and ``B x S x S`` maps; more gives ``B x k`` and
    ``B x k x S x S``, most probable first, as ``explain(images, top=k)`` does.
    """

    def __init__(self, explainer: Explainer, top_k: int = 1) -> None:
        super().__init__()
        if not 1 <= top_k <= explainer.head.num_classes:
            raise ExportError(
                f"top_k must be between 1 and the number of classes "
                f"({explainer.head.num_classes}); got {top_k}."
            )
        self.backbone = explainer.backbone
        self.head = explainer.head
        self.top_k = top_k

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Probabilities ``B x K``, classes ``B`` (or ``B x k``), maps in [0, 1] at input size."""
        logits, features = self.backbone.forward_features(images)
        probabilities = logits.float().softmax(dim=1)
        classes = logits.topk(self.top_k, dim=1).indices
        maps = normalize_maps(self.head(features, classes), (images.shape[-2], images.shape[-1]))
        if self.top_k == 1:
            return probabilities, classes[:, 0], maps[:, 0]
        return probabilities, classes, maps


def graph_metadata(
    explainer: Explainer, top_k: int, head_source: str, licence: str | None
) -> dict[str, str]:
    """The facts a served graph needs about itself, as ONNX ``metadata_props`` (all strings)."""
    spec = explainer.spec
    facts = {
        "ttame.backbone": spec.name,
        "ttame.layers": json.dumps(list(explainer.head.layers)),
        "ttame.head_source": head_source,
        "ttame.head_trained": json.dumps(explainer.trained),
        "ttame.input_size": str(spec.input_size),
        "ttame.resize_size": str(spec.resize_size),
        "ttame.mean": json.dumps(list(spec.mean)),
        "ttame.std": json.dumps(list(spec.std)),
        "ttame.top_k": str(top_k),
        "ttame.categories": json.dumps(explainer.categories),
    }
    if licence:
        facts["ttame.licence"] = licence
    return facts


def export_onnx(
    explainer: Explainer,
    path: str | Path,
    *,
    top_k: int = 1,
    head_source: str = "not recorded",
    licence: str | None = None,
) -> Path:
    """Write ``explainer`` as one ONNX file (weights inside) and return its path.

    ``head_source`` and ``licence`` go into the metadata beside the backbone, its layers and
    classes (:func:`graph_metadata`). Needs the ``onnxscript`` package (the exporter).
    """
    graph = ExplanationGraph(explainer, top_k).eval()
    size = explainer.spec.input_size
    example = torch.rand(EXAMPLE_BATCH, 3, size, size, device=explainer.device)
    try:
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}},
            opset_version=OPSET,
            verbose=False,
        )
    except ImportError as exc:
        raise ExportError(
            f"Exporting to ONNX needs onnx and onnxscript (pip install 'ttame[export]'): {exc}"
        ) from exc
    if program is None:  # only the legacy exporter returns nothing
        raise ExportError("The ONNX exporter returned no program.")
    program.model.metadata_props.update(graph_metadata(explainer, top_k, head_source, licence))
    program.model.doc_string = (
        f"T-TAME explanations of {explainer.spec.name}: raw RGB in [0, 1] -> "
        f"probabilities, top-{top_k} classes and their maps."
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    program.save(target, external_data=False)
    return target

"""Grad-CAM, Grad-CAM++ and Score-CAM from pytorch-grad-cam, behind the same ``explain``.

They run on the backbone's last tapped layer (a token layer goes through the same
token-to-grid adapter as the head). pytorch-grad-cam is an optional dependency, imported on
first use: it pulls in OpenCV and scikit-learn, seconds of start-up that ``ttame explain``
should not pay.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ttame.explanation import ClassesArg, Explanation, check_images, target_classes
from ttame.methods.base import finish
from ttame.model.taps import Backbone, probe, tokens_to_grid


class _LastCall:
    """The backbone's last tapped layer as pytorch-grad-cam sees it.

    A module can run more than once per pass (EfficientNet-Lite's shared ``_swish`` runs for
    the stem and the head); like the taps, CAMs must use its last call. The library registers
    its hooks through :meth:`register_forward_hook`; they fire on that call only. For gradient
    methods the output is also made to require grad there, so the backward pass stops at this
    layer instead of running down to the input through the frozen backbone.
    """

    def __init__(self, backbone: Backbone, calls: int, needs_grad: bool):
        self.module = dict(backbone.model.named_modules())[backbone.layers[-1]]
        self.calls = calls
        self.count = 0
        self.handles = [
            backbone.model.register_forward_pre_hook(self._reset),
            self.module.register_forward_hook(self._count_and_enable_grad(needs_grad)),
        ]

    def _reset(self, *_: object) -> None:
        self.count = 0

    def _count_and_enable_grad(self, needs_grad: bool) -> Callable:
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor | None:
            self.count += 1
            if needs_grad and self.count == self.calls and not output.requires_grad:
                return output.detach().requires_grad_(True).clone()
            return None

        return hook

    def register_forward_hook(self, hook: Callable) -> torch.utils.hooks.RemovableHandle:
        """Register ``hook`` on the real module, filtered to the last call of each pass."""

        def on_last_call(module: nn.Module, inputs: object, output: object) -> object:
            return hook(module, inputs, output) if self.count == self.calls else None

        handle = self.module.register_forward_hook(on_last_call)
        self.handles.append(handle)
        return handle

    def remove(self) -> None:
        """Remove every hook this adapter placed."""
        for handle in self.handles:
            handle.remove()


class _LibraryCAM:
    """A pytorch-grad-cam method on the backbone's last tap, behind ``explain``.

    The library is imported on first use: it pulls in OpenCV and scikit-learn, seconds of
    start-up that ``ttame explain`` should not pay.
    """

    library_class: str
    uses_gradients = True

    def __init__(self, backbone: Backbone):
        self.backbone = backbone
        shapes = probe(backbone)  # calls of the target layer per pass, tokens, classes
        self.calls, self.tokens = shapes.calls[-1], shapes.tokens[-1]
        self.num_classes = shapes.num_classes

    def _run(
        self, images: torch.Tensor, classes: torch.Tensor | None
    ) -> tuple[np.ndarray, torch.Tensor]:
        """One library call: (maps ``B x H x W`` as numpy, logits)."""
        reshape = None
        if self.tokens:
            hw = (images.shape[-2], images.shape[-1])
            prefix = self.backbone.spec.num_prefix_tokens

            def reshape(t: torch.Tensor) -> torch.Tensor:
                return tokens_to_grid(t, prefix, hw)

        import pytorch_grad_cam as library
        from pytorch_grad_cam.utils import model_targets as target

        layer = _LastCall(self.backbone, self.calls, self.uses_gradients)
        cam = getattr(library, self.library_class)(
            model=self.backbone, target_layers=[layer], reshape_transform=reshape
        )
        self.configure(cam)
        targets = None
        if classes is not None:
            targets = [target.ClassifierOutputTarget(int(c)) for c in classes]
        try:
            with torch.inference_mode(False), torch.enable_grad():
                grayscale = cam(input_tensor=images.detach().clone(), targets=targets)
            return grayscale, cam.outputs.detach()
        finally:
            cam.activations_and_grads.release()
            layer.remove()

    def configure(self, cam: object) -> None:
        """Adjust the library object before it runs (Score-CAM's batch size)."""

    def explain(self, images: torch.Tensor, classes: ClassesArg = None) -> Explanation:
        """Maps for raw RGB images in [0, 1]; a ``B x M`` class tensor costs M library calls."""
        images = check_images(images)
        if classes is None:
            grayscale, logits = self._run(images, None)
            target = logits.argmax(dim=1, keepdim=True)
            maps = [torch.from_numpy(grayscale)]
            single = True
        else:
            placeholder = torch.zeros(len(images), self.num_classes, device=images.device)
            target, single = target_classes(classes, placeholder)
            maps = []
            for column in target.T:
                grayscale, logits = self._run(images, column)
                maps.append(torch.from_numpy(grayscale))
        return finish(torch.stack(maps, dim=1), target, single, logits, images)


class GradCAM(_LibraryCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017): channels weighted by their mean gradient."""

    library_class = "GradCAM"


class GradCAMPlusPlus(_LibraryCAM):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018): higher-order gradient weights."""

    library_class = "GradCAMPlusPlus"


class ScoreCAM(_LibraryCAM):
    """Score-CAM (Wang et al., CVPRW 2020): channels weighted by the scores of what they mask.

    One backbone pass per channel of the layer (1280 for MobileNetV2). The library builds all
    channels' masked copies of an image at once (channels x 3 x H x W floats), so images go
    through one at a time; its per-image progress bars are silenced.
    """

    library_class = "ScoreCAM"
    uses_gradients = False

    def __init__(self, backbone: Backbone, batch_size: int = 64):
        super().__init__(backbone)
        self.batch_size = batch_size

    def configure(self, cam: object) -> None:
        """Use our batch size for the masked copies."""
        cam.batch_size = self.batch_size  # type: ignore[attr-defined]

    def _run(
        self, images: torch.Tensor, classes: torch.Tensor | None
    ) -> tuple[np.ndarray, torch.Tensor]:
        parts = []
        with contextlib.redirect_stderr(io.StringIO()):
            for i in range(len(images)):
                parts.append(
                    super()._run(images[i : i + 1], None if classes is None else classes[i : i + 1])
                )
        return (
            np.concatenate([grayscale for grayscale, _ in parts]),
            torch.cat([logits for _, logits in parts]),
        )

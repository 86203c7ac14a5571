"""Baseline map-makers behind the same ``explain(images, classes)`` as T-TAME.

Grad-CAM, Grad-CAM++ and Score-CAM come from pytorch-grad-cam, on the backbone's last tapped
layer (a token layer goes through the same token-to-grid adapter as the head). RISE is ours,
batched. A random map and a centred Gaussian are floors: a method that does not beat them
explains nothing. Every map is min-max normalised to [0, 1] at the input's size, on its device.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ttame.explainer import ClassesArg, Explanation, check_images, normalize_maps, target_classes
from ttame.taps import Backbone, tokens_to_grid


def _finish(
    maps: torch.Tensor, target: torch.Tensor, single: bool, logits: torch.Tensor, like: torch.Tensor
) -> Explanation:
    """Pack ``B x M x h x w`` raw maps as an Explanation at the input's size and device."""
    maps = normalize_maps(maps.to(like.device), (like.shape[-2], like.shape[-1]))
    probabilities = logits.detach().float().softmax(dim=1).to(like.device)
    target = target.to(like.device)
    if single:
        return Explanation(maps[:, 0], target[:, 0], probabilities)
    return Explanation(maps, target, probabilities)


class _CleanPass:
    """A map-maker that first classifies the clean images, then makes maps for the targets."""

    def __init__(self, backbone: Backbone):
        self.backbone = backbone

    def maps(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Raw maps ``B x M x h x w`` for the ``B x M`` target classes."""
        raise NotImplementedError

    @torch.no_grad()
    def explain(self, images: torch.Tensor, classes: ClassesArg = None) -> Explanation:
        """Maps for raw RGB images in [0, 1]; classes as for T-TAME (None: the top-1)."""
        images = check_images(images)
        logits = self.backbone(images)
        target, single = target_classes(classes, logits)
        return _finish(self.maps(images, target), target, single, logits, images)


class RandomMap(_CleanPass):
    """Uniform noise on a coarse grid, upsampled: the floor every method must beat.

    A coarse grid (7x7 by default, like the last stage of a 224-pixel CNN) gives blobs about as
    smooth as a CAM's; per-pixel noise would instead dim the whole image evenly when thresholded.
    The generator is seeded once, so a run repeats exactly.
    """

    def __init__(self, backbone: Backbone, seed: int = 0, cells: int = 7):
        super().__init__(backbone)
        self.cells = cells
        self.generator = torch.Generator().manual_seed(seed)

    def maps(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The same fresh noise for every class of an image."""
        noise = torch.rand(len(images), 1, self.cells, self.cells, generator=self.generator)
        noise = F.interpolate(noise, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return noise.expand(-1, target.shape[1], -1, -1)


class CentreGaussian(_CleanPass):
    """A Gaussian centred on the image (std ``sigma`` x the side): the photographer's prior.

    Many photos put the object in the middle; a method that does no better than this map
    has learnt the dataset's framing, not the classifier.
    """

    def __init__(self, backbone: Backbone, sigma: float = 0.25):
        super().__init__(backbone)
        self.sigma = sigma

    def maps(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One map, the same for every image and class."""
        h, w = images.shape[-2:]
        ys = (torch.arange(h, device=images.device) + 0.5) / h - 0.5
        xs = (torch.arange(w, device=images.device) + 0.5) / w - 0.5
        bump = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * self.sigma**2))
        return bump.expand(len(images), target.shape[1], h, w)


class RISE(_CleanPass):
    """RISE (Petsiuk et al., BMVC 2018): the class score averaged over random masks.

    ``n_masks`` binary ``cells x cells`` grids (each cell kept with probability ``p``) are
    upsampled bilinearly to ``(cells + 1)`` cells' size, randomly shifted by up to a cell and
    cropped; the saliency is ``sum_i P(class | image * M_i) M_i / (n_masks * p)``. The masks
    multiply the raw image. They are drawn once from ``seed`` (the same set for every image, as
    in the reference) and the masked images go through the backbone ``batch_size`` at a time.
    """

    def __init__(
        self,
        backbone: Backbone,
        n_masks: int = 4000,
        cells: int = 7,
        p: float = 0.5,
        seed: int = 0,
        batch_size: int = 64,
    ):
        super().__init__(backbone)
        if n_masks < 1 or not 0 < p < 1:
            raise ValueError("RISE needs at least one mask and a keep probability in (0, 1).")
        self.n_masks, self.cells, self.p, self.batch_size = n_masks, cells, p, batch_size
        generator = torch.Generator().manual_seed(seed)
        self.grids = (torch.rand(n_masks, 1, cells, cells, generator=generator) < p).float()
        self.shifts = torch.rand(n_masks, 2, generator=generator)

    def masks(
        self, size: tuple[int, int], chunk: int, device: torch.device
    ) -> Iterator[torch.Tensor]:
        """The mask set at ``size``, ``chunk`` masks at a time (``m x H x W``)."""
        h, w = size
        cell_h, cell_w = math.ceil(h / self.cells), math.ceil(w / self.cells)
        up = ((self.cells + 1) * cell_h, (self.cells + 1) * cell_w)
        for start in range(0, self.n_masks, chunk):
            grids = self.grids[start : start + chunk].to(device)
            big = F.interpolate(grids, size=up, mode="bilinear", align_corners=False)[:, 0]
            offsets = (self.shifts[start : start + chunk] * torch.tensor([cell_h, cell_w])).long()
            yield torch.stack(
                [m[y : y + h, x : x + w] for m, (y, x) in zip(big, offsets.tolist(), strict=True)]
            )

    def maps(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Score-weighted sum of the masks, ``n_masks`` backbone passes per image, batched."""
        batch = len(images)
        chunk = max(1, self.batch_size // batch)
        saliency = torch.zeros(batch, target.shape[1], *images.shape[-2:], device=images.device)
        for masks in self.masks(images.shape[-2:], chunk, images.device):
            masked = (images[:, None] * masks[None, :, None]).flatten(0, 1)
            probs = self.backbone(masked).float().softmax(dim=1).view(batch, len(masks), -1)
            scores = probs.gather(2, target[:, None, :].expand(-1, len(masks), -1))
            saliency += torch.einsum("bmk,mhw->bkhw", scores, masks)
        return saliency / (self.n_masks * self.p)


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
        self.calls, self.tokens, self.num_classes = self._probe()

    def _probe(self) -> tuple[int, bool, int]:
        """Calls of the target layer per pass, whether it gives tokens, number of classes."""
        module = dict(self.backbone.model.named_modules())[self.backbone.layers[-1]]
        outputs: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
        size = self.backbone.spec.input_size
        device = next(self.backbone.parameters()).device
        try:
            with torch.no_grad():
                logits = self.backbone(torch.zeros(1, 3, size, size, device=device))
        finally:
            handle.remove()
        return len(outputs), outputs[-1].dim() == 3, int(logits.shape[1])

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

        library = importlib.import_module("pytorch_grad_cam")
        target = importlib.import_module("pytorch_grad_cam.utils.model_targets")
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
        return _finish(torch.stack(maps, dim=1), target, single, logits, images)


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

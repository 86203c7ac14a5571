"""The pictures the backbone is shown: the explainer's own view, and training's augmentation.

Both give raw [0, 1] tensors: the backbone's normalisation is applied after masking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import v2


def eval_transform(input_size: int, resize_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side and centre-crop: the view the explainer itself uses."""
    return transforms.Compose(
        [transforms.Resize(resize_size), transforms.CenterCrop(input_size), transforms.ToTensor()]
    )


def default_train_transform(
    size: int = 224, resize: int = 256, color_jitter: float = 0.0, crop_scale: float = 1.0
) -> Callable[..., Any]:
    """Build the paper's augmentation: resize to 256, random 224 crop, horizontal flip.

    Returns a raw [0, 1] tensor: the backbone's normalisation is applied after masking.
    ``color_jitter`` > 0 adds mild brightness/contrast/saturation jitter, which helps when the
    pool is small. ``crop_scale`` < 1 replaces the resize and crop by a random resized crop
    covering between that share and all of the picture: a few hundred photos then show many
    views, often with a different top-1 class (a zoom on one object of a scene). Called with
    ``(picture, tv_tensors.Mask)`` it moves the mask with the picture (training's teacher).
    """
    if not 0 < crop_scale <= 1:
        raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale}")
    if color_jitter < 0:
        raise ValueError(f"color_jitter must be 0 or more, got {color_jitter}")
    crop: list[Callable] = (
        [v2.Resize(resize), v2.RandomCrop(size)]
        if crop_scale == 1
        else [v2.RandomResizedCrop(size, scale=(crop_scale, 1.0))]
    )
    steps: list[Callable] = [*crop, v2.RandomHorizontalFlip()]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()]
    return v2.Compose(steps)

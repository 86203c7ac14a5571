"""Maps fitted to each training photo, for the head to learn from (``train.py --teacher``).

The kept-share cross-entropy (``kept_image``) tells the head how much of the class its top
share holds, not *which* pixels should have been in it. A teacher says which: for every
training photo, a coarse grid is fitted to the AD protocol itself by gradient descent
(started from Grad-CAM, the best iterate kept, so never worse than Grad-CAM on that photo),
once, offline (``scripts/fit_masks.py``). Training then asks the head's map to rank the
photo's pixels as the teacher does (``ttame.training.losses.distill_loss``). The head and its
one-pass cost do not change: the teacher exists only in training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torchvision import tv_tensors

from ttame.data.sampling import SeededItems
from ttame.errors import TrainingError
from ttame.explanation import normalize_maps
from ttame.training.losses import UNKNOWN
from ttame.training.step import kept_image


@dataclass
class Teacher:
    """Fitted grids (``N x g x g``, in [0, 1]) and classes (``N``) of the photos ``keys``."""

    keys: list[str]
    grids: torch.Tensor
    classes: torch.Tensor
    backbone: str

    def save(self, path: str | Path) -> None:
        """One safetensors file; the keys and backbone in its metadata."""
        save_file(
            {"grids": self.grids.float().contiguous(), "classes": self.classes.long()},
            str(path),
            metadata={"keys": json.dumps(self.keys), "backbone": self.backbone},
        )

    @classmethod
    def load(cls, path: str | Path) -> Teacher:
        """Read what :meth:`save` wrote."""
        try:
            with safe_open(str(path), "pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
            return cls(
                json.loads(metadata["keys"]),
                tensors["grids"],
                tensors["classes"],
                metadata["backbone"],
            )
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise TrainingError(
                f"--teacher: cannot read '{path}' as a teacher file: {exc}"
            ) from exc


def fit_grids(
    classify: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    start: torch.Tensor,
    classes: torch.Tensor,
    *,
    grid: int = 14,
    shares: Sequence[float] = (0.15, 0.5),
    steps: int = 20,
    lr: float = 0.05,
    softness: float = 0.05,
    amp: bool = False,
) -> torch.Tensor:
    """Grids (``B x grid x grid``) that keep ``classes`` best when scored as AD scores a map.

    ``start``: maps to begin from (``B x H x W``, Grad-CAM's). Each step scores the images
    kept at every share of ``shares`` (``kept_image``, straight-through gate of width
    ``softness``); the iterate with the lowest summed cross-entropy is returned per image.
    """
    low = F.adaptive_avg_pool2d(start[:, None].float(), grid)
    param = normalize_maps(low, (grid, grid))[:, 0].requires_grad_(True)
    optimizer = torch.optim.Adam([param], lr=lr)
    best = param.detach().clone()
    best_loss = torch.full((len(images),), float("inf"))
    size = images.shape[-2:]
    for _ in range(steps + 1):
        loss = images.new_zeros(len(images))
        for share in shares:
            kept = kept_image(param, size, [share], softness)
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = classify(images * kept[:, None])
            loss = loss + F.cross_entropy(logits.float(), classes, reduction="none")
        better = loss.detach().cpu() < best_loss
        best[better] = param.detach()[better]
        best_loss = torch.where(better, loss.detach().cpu(), best_loss)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    return normalize_maps(best[:, None], (grid, grid))[:, 0]


def teacher_canvas(grid: torch.Tensor, resized: tuple[int, int], crop: int) -> torch.Tensor:
    """The grid upsampled over the centre ``crop`` of a ``resized`` (H, W) picture, UNKNOWN around.

    The teacher was fitted on the explainer's view (resize, centre crop); placing it in the
    resized picture lets the training crop and flip move it with the image.
    """
    height, width = resized
    canvas = torch.full((height, width), UNKNOWN)
    top, left = (height - crop) // 2, (width - crop) // 2
    inner = F.interpolate(grid[None, None].float(), size=(crop, crop), mode="bilinear")
    canvas[top : top + crop, left : left + crop] = inner[0, 0]
    return canvas


class TeacherItems(SeededItems):
    """Training items with their teacher: ``(image, teacher map, teacher class)``.

    Photos the teacher knows get its map, moved by the same augmentation as the image (the
    training transform takes a ``tv_tensors.Mask`` beside the picture); every other item gets
    a map of UNKNOWN and class -1.
    """

    def __init__(
        self,
        images: object,
        transform: Callable[..., Any],
        teacher: Teacher,
        photo_keys: Sequence[str],
        size: int,
        resize: int,
        seed: int = 0,
    ) -> None:
        super().__init__(images, transform, seed)  # type: ignore[arg-type]
        where = {key: k for k, key in enumerate(teacher.keys)}
        self.rows = [where.get(key, -1) for key in photo_keys]
        self.teacher = teacher
        self.size, self.resize = size, resize

    def __getitem__(  # type: ignore[override]
        self, key: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = key[1]
        row = self.rows[index] if index < len(self.rows) else -1
        if row < 0:
            image = super().__getitem__(key)
            return image, torch.full(image.shape[-2:], UNKNOWN), torch.tensor(-1)
        with self.seeded(key):
            picture = self.images[index]
            # The teacher saw the centre crop of the picture resized to ``resize``: in the
            # picture's own pixels that crop is ``size * short side / resize`` wide.
            crop = round(self.size * min(picture.size) / self.resize)
            canvas = teacher_canvas(self.teacher.grids[row], (picture.height, picture.width), crop)
            joint = cast(Callable[..., Any], self.transform)  # takes a mask beside the picture
            image, mask = joint(picture, tv_tensors.Mask(canvas))
        return image, mask, self.teacher.classes[row]

"""Compare the maps of two heads on the held-out images (e.g. a head and its fp16 copy).

    python scripts/compare_heads.py runs/mobilenet_v2/checkpoint.pt checkpoints/mobilenet_v2

Each side is a head folder or a training checkpoint (``checkpoint.pt``, whose head is float32).
Prints the largest and the mean absolute difference between the [0, 1] maps of each image's
top-1 class, and how far apart the two maps' peaks are.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
from unseen_classes import load_held_out

from ttame.explainer import Explainer
from ttame.hub.load import load_head
from ttame.model.head import AttentionHead
from ttame.model.registry import get_spec
from ttame.model.taps import build_backbone
from ttame.training.checkpoint import head_from_checkpoint


def head_from(source: Path) -> AttentionHead:
    """A head folder, or the head inside a training checkpoint."""
    return head_from_checkpoint(source) if source.is_file() else load_head(source)


@torch.no_grad()
def maps_of(explainer: Explainer, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Top-1 maps of every image, ``N x H x W``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.cat(
            [explainer.explain(images[i : i + batch]).maps for i in range(0, len(images), batch)]
        )


def main() -> None:
    """Load both heads on one backbone, explain the held-out images, print the differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--photos", type=Path, default=Path("data/eval_photos/dev"))
    parser.add_argument("--groundtruth", type=Path, default=Path("data/groundtruth/dev"))
    args = parser.parse_args()
    first, second = head_from(args.a), head_from(args.b)
    spec = get_spec(first.backbone)
    body = build_backbone(spec, layers=tuple(first.layers), tokens=first.tokens)
    images = load_held_out(args.photos, args.groundtruth, spec.input_size, spec.resize_size).images
    a = maps_of(Explainer(body, first), images)
    b = maps_of(Explainer(body, second), images)
    diff = (a - b).abs()
    width = a.shape[-1]
    peaks = [
        torch.stack([m.flatten(1).argmax(1) // width, m.flatten(1).argmax(1) % width], 1)
        for m in (a, b)
    ]
    distance = (peaks[0] - peaks[1]).float().norm(dim=1)
    print(
        f"{spec.name}, {len(images)} images: max |a - b| = {diff.max():.4f}, "
        f"mean |a - b| = {diff.mean():.2e}; same peak pixel for "
        f"{100 * (distance == 0).float().mean():.1f} %, peaks at most "
        f"{distance.max():.1f} px apart"
    )


if __name__ == "__main__":
    main()

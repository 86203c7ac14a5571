r"""Maps fitted to each photo by the AD protocol itself: a yardstick, and training's teacher.

    python scripts/fit_masks.py --backbone mobilenet_v2 --images data/eval_photos/dev --limit 32
    python scripts/fit_masks.py --backbone mobilenet_v2 --training-photos \
        --out runs/teacher_mobilenet_v2.safetensors

Each photo's map is a coarse grid started from Grad-CAM's map and moved by gradient descent on
the backbone's cross-entropy of the photo kept as AD keeps it, at every share of ``--shares``
(``ttame.training.teacher.fit_grids``; the best iterate is kept). That costs ``--steps``
backward passes per photo: never an explanation the product gives, but it shows how far above
Grad-CAM a map of one photo can go, and, written with ``--out`` for the pool's training photos,
it is what ``train.py --teacher`` teaches the head. Prints the fitted maps' AD(15 %) and
AD(50 %) minus Grad-CAM's, per photo, paired, with 95 % bootstrap intervals.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttame.data.pool.sources.collect import collect_sources
from ttame.evaluation.paired import difference_stat
from ttame.explainer import Explainer
from ttame.images import find_images, load_image, preprocess
from ttame.methods.registry import build_method
from ttame.metrics.perturbation import drop_per_image, masked_confidence
from ttame.training.teacher import Teacher, fit_grids

PERCENTS = (15, 50)


def named_photos(args: argparse.Namespace) -> list[tuple[str, object]]:
    """(key, PIL image): the pool's training photos (keyed as the pool keys them), or a folder's."""
    if args.training_photos:
        sources = collect_sources(Path(args.pool) / "cache", download=False)
        return [(p.key, p.image()) for p in sources.photos_in("train")]
    return [(p.name, load_image(p)) for p in sorted(find_images(args.images))]


def drops(explainer: Explainer, images, maps, classes, clean) -> torch.Tensor:
    """The protocol's drop per image at each of PERCENTS, in %, in float32 (``B x P``)."""
    masked = masked_confidence(explainer.backbone, images, maps, classes, PERCENTS)
    return drop_per_image(clean, masked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--images", help="folder of photos")
    where.add_argument("--training-photos", action="store_true", help="the pool's training photos")
    parser.add_argument("--pool", default="data", help="the offline pool (training photos)")
    parser.add_argument("--grid", type=int, default=14)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--shares", default="0.15,0.5")
    parser.add_argument("--softness", type=float, default=0.05)
    parser.add_argument("--amp", action="store_true", help="bfloat16 autocast while fitting")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", help="write the fitted grids as a teacher file (safetensors)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    explainer = Explainer.from_pretrained(backbone=args.backbone)
    explainer.backbone.requires_grad_(False)
    spec = explainer.spec
    named = named_photos(args)[: args.limit]
    images = torch.stack([preprocess(p, spec.input_size, spec.resize_size)[0] for _, p in named])
    gradcam = build_method("gradcam", explainer)
    shares = [float(s) for s in args.shares.split(",")]
    started = time.perf_counter()
    fitted, cams, grids, classes = [], [], [], []
    for first in range(0, len(images), args.batch):
        batch = images[first : first + args.batch]
        explanation = gradcam.explain(batch)
        grid = fit_grids(
            explainer.backbone,
            batch,
            explanation.maps,
            explanation.classes,
            grid=args.grid,
            shares=shares,
            steps=args.steps,
            lr=args.lr,
            softness=args.softness,
            amp=args.amp,
        )
        upsampled = F.interpolate(grid[:, None], size=batch.shape[-2:], mode="bilinear")[:, 0]
        fitted.append(drops(explainer, batch, upsampled, explanation.classes, explanation.scores))
        cams.append(
            drops(explainer, batch, explanation.maps, explanation.classes, explanation.scores)
        )
        grids.append(grid)
        classes.append(explanation.classes)
        print(
            f"{first + len(batch)}/{len(images)} photos, {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    fit_drop, cam_drop = torch.cat(fitted), torch.cat(cams)
    settings = {k: v for k, v in vars(args).items() if k not in ("pool", "out", "threads")}
    print(
        f"{args.backbone}: {len(images)} photos, {time.perf_counter() - started:.0f} s, {settings}"
    )
    for k, percent in enumerate(PERCENTS):
        stat = difference_stat((fit_drop[:, k] - cam_drop[:, k]).numpy(), "lower")
        low, high = stat["CI95"]
        print(
            f"AD({percent} %): fitted {fit_drop[:, k].mean():.1f}, "
            f"Grad-CAM {cam_drop[:, k].mean():.1f}, "
            f"fitted minus Grad-CAM {stat['mean']:+.1f} [{low:+.1f}, {high:+.1f}]"
        )
    if args.out:
        Teacher(
            [key for key, _ in named], torch.cat(grids), torch.cat(classes), args.backbone
        ).save(args.out)
        print(f"teacher written to {args.out}")


if __name__ == "__main__":
    main()

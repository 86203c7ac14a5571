r"""Two questions about AD(15 %) that decide what training can gain, per image and paired.

    python scripts/kept_share_check.py --backbone mobilenet_v2 --training-photos 4
    python scripts/kept_share_check.py --backbone mobilenet_v2 --images data/eval_photos/dev \
        --head runs/T_mobilenet_v2/head

1. Does the head beat Grad-CAM on the photos it was *trained* on? (``--training-photos N``:
   every N-th training photo of the offline pool.) If not, the limit is what training
   optimises, not how it generalises.
2. How much of AD(15 %) is the protocol's soft values (the kept pixels are dimmed by the map's
   own values) rather than which pixels are kept? The same top 15 % is scored both ways: with
   its soft values (the protocol, docs/method.md) and as a binary mask.

Prints T-TAME minus Grad-CAM, per image, with paired 95 % bootstrap intervals.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttame.data.pool.sources.collect import collect_sources
from ttame.evaluation.paired import difference_stat
from ttame.explainer import Explainer
from ttame.images import find_images, load_image, preprocess
from ttame.methods.registry import MapMaker, build_method
from ttame.metrics.perturbation import drop_per_image, keep_top

KINDS = ("soft (the protocol)", "binary (same pixels)")


def photos(args: argparse.Namespace) -> list[Image.Image]:
    """PIL images: every N-th training photo of the pool, or the photos of a folder."""
    if args.training_photos:
        sources = collect_sources(Path(args.pool) / "cache", download=False)
        return [p.image().convert("RGB") for p in sources.photos_in("train")][
            :: args.training_photos
        ]
    return [load_image(p) for p in sorted(find_images(args.images))]


@torch.no_grad()
def drops(explainer: Explainer, maker: MapMaker, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """AD(15 %) per image, in %, with the kept share's soft values and as a binary mask."""
    out: dict[str, list[torch.Tensor]] = {kind: [] for kind in KINDS}
    for start in range(0, len(images), 16):
        batch = images[start : start + 16]
        explanation = maker.explain(batch)
        clean = explanation.scores
        soft = keep_top(explanation.maps, 15)
        for kind, kept in zip(KINDS, (soft, (soft > 0).float()), strict=True):
            probs = explainer.backbone(batch * kept[:, None]).softmax(1)
            masked = probs.gather(1, explanation.classes[:, None])
            out[kind].append(drop_per_image(clean, masked)[:, 0])
    return {kind: torch.cat(values) for kind, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--head", help="head folder (default: the bundled head)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--images", help="folder of photos")
    where.add_argument("--training-photos", type=int, metavar="N", help="every N-th one")
    parser.add_argument("--pool", default="data", help="the offline pool (training photos)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    explainer = Explainer.from_pretrained(backbone=args.backbone, head=args.head)
    spec = explainer.spec
    images = torch.stack(
        [preprocess(p, spec.input_size, spec.resize_size)[0] for p in photos(args)]
    )
    ttame = drops(explainer, explainer, images)
    gradcam = drops(explainer, build_method("gradcam", explainer), images)
    print(f"{args.backbone}, head {args.head or 'bundled'}, {len(images)} photos")
    print("| AD(15 %) kept as | T-TAME | Grad-CAM | T-TAME minus Grad-CAM, paired |")
    print("|---|---|---|---|")
    for kind in KINDS:
        stat = difference_stat((ttame[kind] - gradcam[kind]).numpy(), "lower")
        low, high = stat["CI95"]
        print(
            f"| {kind} | {ttame[kind].mean():.1f} | {gradcam[kind].mean():.1f} | "
            f"{stat['mean']:+.1f} [{low:+.1f}, {high:+.1f}] |"
        )


if __name__ == "__main__":
    main()

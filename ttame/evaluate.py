"""``ttame evaluate``: every method x every metric over a folder of images.

Each image is explained by each method for the backbone's top-1 class; AD/IC (SPEC section
3), ROAD and, given ground-truth masks, the pointing game and energy-in-mask are computed per
image, so that bootstrap intervals can be drawn over images. Under ``torchrun`` each rank takes
every ``world``-th image and rank 0 gathers the per-image records; the summary depends only on
the records, never on how they were sharded. ``--against METHOD`` adds every other method minus
METHOD image by image, with paired intervals (:mod:`ttame.paired`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ttame.errors import ImageError, TTameError
from ttame.explainer import Explainer, UntrainedHeadWarning, bundled_head
from ttame.images import load_image, preprocess
from ttame.methods import METHODS, MapMaker, MethodOptions, build_method, parse_methods
from ttame.metrics.localisation import box_mask, coverage, energy_in_mask, pointing_game
from ttame.metrics.perturbation import (
    DEFAULT_PERCENTS,
    drop_per_image,
    increase_per_image,
    masked_confidence,
)
from ttame.metrics.sanity import cascading_randomization

ROAD_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
ROAD_ORDERS: tuple[str, ...] = ("MoRF", "LeRF")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
REGIONS = ("mask", "box")


@dataclass(frozen=True)
class Item:
    """One image of the run, with its place in the full (unsharded) list."""

    index: int
    path: Path
    mask: Path | None = None
    box: tuple[int, int, int, int] | None = None


@dataclass
class Settings:
    """What one evaluation run computes."""

    percents: tuple[float, ...] = DEFAULT_PERCENTS
    fractions: tuple[float, ...] = ROAD_FRACTIONS
    road_indices: frozenset[int] | None = None
    """Images (by index) that get ROAD, the costly metric; None: all of them."""
    batch_size: int = 8
    seed: int = 0
    options: MethodOptions = field(default_factory=MethodOptions)


def spread(count: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(count)`` (all of them when it is None).

    A subset taken from the start of a sorted folder would be one source's photos; spread
    evenly, it samples every part of the list.
    """
    if limit is None or limit >= count:
        return list(range(count))
    return [i * count // limit for i in range(limit)]


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively, by suffix, hidden files skipped), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise ImageError(f"'{root}' is not a folder of images.")
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def build_items(images: Sequence[Path], groundtruth: str | Path | None = None) -> list[Item]:
    """Number the images; attach mask and box from a ground-truth set's ``manifest.json``.

    The layout is ``images/``, ``masks/`` and a manifest of entries with ``image``, ``mask``
    (paths relative to the set's folder) and ``box`` (x0, y0, x1, y1, exclusive ends), matched
    to the images by file name. Images the manifest does not list get no localisation.
    """
    regions: dict[str, dict] = {}
    if groundtruth is not None:
        root = Path(groundtruth)
        manifest = root / "manifest.json"
        if not manifest.is_file():
            raise TTameError(f"No manifest.json in the ground-truth folder '{root}'.")
        for entry in json.loads(manifest.read_text()):
            regions[Path(entry["image"]).name] = {
                "mask": root / entry["mask"],
                "box": tuple(int(v) for v in entry["box"]),
            }
    return [
        Item(i, path, regions.get(path.name, {}).get("mask"), regions.get(path.name, {}).get("box"))
        for i, path in enumerate(images)
    ]


def shard(items: Sequence[Item], rank: int, world: int) -> list[Item]:
    """The images rank ``rank`` of ``world`` evaluates: every ``world``-th, from ``rank``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world}")
    return list(items[rank::world])


def merge(parts: Sequence[Sequence[dict]]) -> list[dict]:
    """Per-image records of all ranks, back in the order of the full image list."""
    records = sorted((r for part in parts for r in part), key=lambda r: r["index"])
    indices = [r["index"] for r in records]
    if len(set(indices)) != len(indices):
        raise ValueError("two ranks returned a record for the same image")
    return records


def _region(array: np.ndarray, input_size: int, resize_size: int) -> torch.Tensor:
    """A boolean region over the original image, cropped and resized like the image."""
    picture = load_image(np.where(array, 255, 0).astype(np.uint8))
    tensor, _ = preprocess(picture, input_size, resize_size)
    return tensor[0] >= 0.5


@dataclass
class Batch:
    """Loaded images of one batch, their regions and the items that failed to load."""

    items: list[Item]
    images: torch.Tensor
    regions: dict[str, torch.Tensor]
    failed: list[dict]


def load_batches(
    items: Sequence[Item], input_size: int, resize_size: int, batch_size: int
) -> Iterator[Batch]:
    """Batches of preprocessed images; an image that cannot be read is reported, not fatal."""
    for start in range(0, len(items), batch_size):
        ok: list[Item] = []
        images: list[torch.Tensor] = []
        regions: dict[str, list[torch.Tensor]] = {name: [] for name in REGIONS}
        failed: list[dict] = []
        for item in items[start : start + batch_size]:
            try:
                picture = load_image(item.path)
                tensor, _ = preprocess(picture, input_size, resize_size)
                if item.mask is not None and item.box is not None:
                    mask = np.asarray(load_image(item.mask).convert("L")) >= 128
                    if mask.shape != (picture.height, picture.width):
                        raise ImageError(f"mask {item.mask} does not match the image's size")
                    box = box_mask(item.box, mask.shape).numpy()
                    regions["mask"].append(_region(mask, input_size, resize_size))
                    regions["box"].append(_region(box, input_size, resize_size))
            except (TTameError, OSError) as exc:
                failed.append({"file": str(item.path), "error": str(exc)})
                continue
            ok.append(item)
            images.append(tensor)
        if not ok:
            yield Batch([], torch.empty(0), {}, failed)
            continue
        has_regions = all(item.mask is not None and item.box is not None for item in ok)
        stacked = {k: torch.stack(v) for k, v in regions.items()} if has_regions else {}
        yield Batch(ok, torch.stack(images), stacked, failed)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate_items(
    explainer: Explainer,
    methods: dict[str, MapMaker],
    items: Sequence[Item],
    settings: Settings,
    progress: bool = False,
) -> tuple[list[dict], list[dict]]:
    """Per-image records (all methods, all metrics) and the images that failed to load."""
    from tqdm import tqdm

    from ttame.metrics.road import road_scores

    device = next(explainer.parameters()).device
    spec = explainer.spec
    records: list[dict] = []
    failures: list[dict] = []
    bar = tqdm(total=len(items), desc="evaluate", unit="image", disable=not progress)
    batches = load_batches(items, spec.input_size, spec.resize_size, settings.batch_size)
    for batch in batches:
        failures.extend(batch.failed)
        bar.update(len(batch.items) + len(batch.failed))
        if not batch.items:
            continue
        images = batch.images.to(device)
        regions = {k: v.to(device) for k, v in batch.regions.items()}
        rows: list[dict] = [
            {"index": item.index, "file": str(item.path), "methods": {}} for item in batch.items
        ]
        for name, maker in methods.items():
            _synchronize(device)
            start = time.perf_counter()
            explanation = maker.explain(images)
            _synchronize(device)
            seconds = (time.perf_counter() - start) / len(images)
            maps, classes = explanation.maps, explanation.classes
            clean = explanation.scores
            with torch.no_grad():
                masked = masked_confidence(
                    explainer.backbone, images, maps, classes, settings.percents
                )
            localisation = {
                region: {
                    "pointing": pointing_game(maps, mask).tolist(),
                    "energy": energy_in_mask(maps, mask).tolist(),
                }
                for region, mask in regions.items()
            }
            for i, (row, item) in enumerate(zip(rows, batch.items, strict=True)):
                row["class"] = int(classes[i])
                entry: dict = {
                    "clean": float(clean[i]),
                    "masked": masked[i].tolist(),
                    "seconds": seconds,
                }
                if settings.road_indices is None or item.index in settings.road_indices:
                    road = road_scores(
                        explainer.backbone,
                        images[i : i + 1],
                        maps[i : i + 1],
                        settings.fractions,
                        ROAD_ORDERS,
                        labels=classes[i : i + 1],
                        seed=settings.seed * 1_000_003 + item.index,
                    )
                    entry["road"] = {o: road[o]["correct"][:, 0].tolist() for o in ROAD_ORDERS}
                for region, scores in localisation.items():
                    entry[region] = {k: v[i] for k, v in scores.items()}
                row["methods"][name] = entry
        for region, mask in regions.items():
            for row, share in zip(rows, coverage(mask).tolist(), strict=True):
                row.setdefault("coverage", {})[region] = share
        records.extend(rows)
    bar.close()
    return records, failures


def bootstrap_interval(
    values: np.ndarray, resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per image).

    Resampling images with replacement says how much the mean would move with another draw
    of equally many images: with tens of images, that is most of the uncertainty.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _key(value: float) -> str:
    """``100`` for 100.0, ``12.5`` for 12.5: JSON keys for percentages."""
    return str(int(value)) if float(value).is_integer() else str(value)


def summarise(
    records: Sequence[dict], methods: Sequence[str], settings: Settings, resamples: int = 1000
) -> dict:
    """The per-method summary: AD, IC, ROAD, localisation, time, with bootstrap intervals."""
    seed = settings.seed
    summary: dict = {}
    for name in methods:
        rows = [r["methods"][name] for r in records]
        clean = torch.tensor([r["clean"] for r in rows], dtype=torch.float64)
        masked = torch.tensor([r["masked"] for r in rows], dtype=torch.float64)
        masked = masked.reshape(len(rows), len(settings.percents))
        drops = drop_per_image(clean, masked).numpy()
        increases = increase_per_image(clean, masked).numpy()
        result: dict = {"AD": {}, "IC": {}, "AD_CI95": {}, "IC_CI95": {}}
        for j, percent in enumerate(settings.percents):
            key = _key(percent)
            result["AD"][key] = float(drops[:, j].mean()) if len(rows) else math.nan
            result["IC"][key] = float(increases[:, j].mean()) if len(rows) else math.nan
            result["AD_CI95"][key] = bootstrap_interval(drops[:, j], resamples, seed)
            result["IC_CI95"][key] = bootstrap_interval(increases[:, j], resamples, seed)
        road_rows = [r["road"] for r in rows if "road" in r]
        if road_rows:
            result["ROAD"], result["ROAD_CI95"] = {}, {}
            for order in ROAD_ORDERS:
                correct = np.array([r[order] for r in road_rows], dtype=np.float64)
                curve = {
                    _key(round(f * 100, 6)): float(c)
                    for f, c in zip(settings.fractions, correct.mean(axis=0), strict=True)
                }
                curve["mean"] = float(correct.mean())
                result["ROAD"][order] = curve
                result["ROAD_CI95"][order] = bootstrap_interval(
                    correct.mean(axis=1), resamples, seed
                )
            result["n_images_road"] = len(road_rows)
        for region in REGIONS:
            scored = [r[region] for r in rows if region in r]
            if scored:
                block: dict = {"n_images": len(scored)}
                for metric in ("pointing", "energy"):
                    values = np.array([s[metric] for s in scored])
                    block[metric] = float(values.mean())
                    block[f"{metric}_CI95"] = bootstrap_interval(values, resamples, seed)
                result.setdefault("localisation", {})[region] = block
        result["seconds_per_image"] = float(np.mean([r["seconds"] for r in rows])) if rows else 0.0
        summary[name] = result
    return summary


def chance_levels(records: Sequence[dict]) -> dict[str, float]:
    """Mean share of the image covered by each region kind: the localisation chance level."""
    levels = {}
    for region in REGIONS:
        shares = [r["coverage"][region] for r in records if region in r.get("coverage", {})]
        if shares:
            levels[region] = float(np.mean(shares))
    return levels


def _cell(value: float, interval: Sequence[float] | None = None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if interval is not None and not any(math.isnan(v) for v in interval):
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


def markdown_table(report: dict) -> str:
    """The methods x metrics table (95 % bootstrap intervals in brackets)."""
    methods = report["methods"]
    percents = [_key(p) for p in report["percents"]]
    header = ["method"] + [f"AD {p}% ↓" for p in percents] + [f"IC {p}% ↑" for p in percents]
    header += ["ROAD MoRF ↓", "ROAD LeRF ↑", "s / image"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in methods.items():
        cells = [name]
        cells += [_cell(m["AD"][p], m["AD_CI95"][p]) for p in percents]
        cells += [_cell(m["IC"][p], m["IC_CI95"][p]) for p in percents]
        for order in ROAD_ORDERS:
            road = m.get("ROAD", {}).get(order)
            cells.append(_cell(road["mean"], m["ROAD_CI95"][order], 3) if road else "–")
        cells.append(f"{m['seconds_per_image']:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    chance = report.get("localisation_chance")
    if chance:
        head = ["method"]
        for region in chance:
            head += [f"pointing ({region}) ↑", f"energy ({region}) ↑"]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        chance_row = ["chance (region's share)"]
        for region in chance:
            chance_row += [_cell(chance[region], None, 3)] * 2
        rows.append("| " + " | ".join(chance_row) + " |")
        for name, m in methods.items():
            cells = [name]
            for region in chance:
                block = m.get("localisation", {}).get(region)
                for metric in ("pointing", "energy"):
                    cells.append(_cell(block[metric], block[f"{metric}_CI95"], 3) if block else "–")
            rows.append("| " + " | ".join(cells) + " |")
        text += "\n\n" + "\n".join(rows)
    sanity = report.get("sanity")
    if sanity:
        steps = list(next(iter(sanity["methods"].values())))
        head = ["method"] + [f"ρ after {s}" for s in steps]
        rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, by_step in sanity["methods"].items():
            rows.append(
                "| " + " | ".join([name] + [_cell(by_step[s], None, 2) for s in steps]) + " |"
            )
        text += "\n\n" + "\n".join(rows)
    return text


def plot_curves(report: dict, path: str | Path) -> None:
    """AD and IC against the kept %, ROAD accuracy against the removed %, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    percents = [_key(p) for p in report["percents"]]
    x_kept = [float(p) for p in percents]
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    panels = [
        (axes[0, 0], "AD", "Average Drop (%) ↓", "kept (%)"),
        (axes[0, 1], "IC", "Increase in Confidence (%) ↑", "kept (%)"),
        (axes[1, 0], "MoRF", "ROAD MoRF accuracy ↓", "removed (%)"),
        (axes[1, 1], "LeRF", "ROAD LeRF accuracy ↑", "removed (%)"),
    ]
    for name, m in report["methods"].items():
        for ax, metric, _, _ in panels:
            if metric in ("AD", "IC"):
                ax.plot(x_kept, [m[metric][p] for p in percents], marker="o", label=name)
            elif "ROAD" in m:
                curve = {k: v for k, v in m["ROAD"][metric].items() if k != "mean"}
                ax.plot([float(k) for k in curve], list(curve.values()), marker="o", label=name)
    for ax, _, title, xlabel in panels:
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0, 0].invert_xaxis()
    axes[0, 1].invert_xaxis()
    axes[0, 0].legend(fontsize=8)
    head = report.get("head", "")
    fig.suptitle(f"{report['backbone']} ({head} head), {report['n_images']} images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _distributed(device: str) -> tuple[int, int, torch.device]:
    """Rank, world size and device; joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and world > 1:
        device = f"cuda:{local}"
    target = torch.device(device)
    if world > 1:
        import torch.distributed as dist

        if target.type == "cuda":
            torch.cuda.set_device(target)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return rank, world, target


def gather(records: list[dict], failures: list[dict], rank: int, world: int) -> tuple:
    """Every rank's records and failures on rank 0 (merged in image order); others get []."""
    if world == 1:
        return merge([records]), failures
    import torch.distributed as dist

    parts: list | None = [None] * world if rank == 0 else None
    dist.gather_object((records, failures), parts, dst=0)
    if rank != 0:
        return [], []
    assert parts is not None
    return merge([p[0] for p in parts]), [f for p in parts for f in p[1]]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ttame evaluate``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score explanation methods on a folder of images",
        description=(
            "AD/IC (SPEC section 3), ROAD and, with --masks, pointing game and energy-in-mask, "
            "for T-TAME and the baselines, with 95 % bootstrap intervals over images. "
            "Shard over GPUs with torchrun --nproc-per-node N -m ttame evaluate ..."
        ),
    )
    parser.add_argument("--backbone", default=None, help="backbone name (default: the head's)")
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
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
        "--limit", type=int, default=None, help="only N images, spread evenly over the sorted list"
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


def head_provenance(head: str | None, backbone: str, trained: bool) -> dict[str, str | None]:
    """Which head was scored: its source and, for a local folder, its weights' SHA-256.

    The hash ties a results table to the exact head file, so a later head cannot be mistaken
    for the one that was measured.
    """
    if not trained:
        return {"head": "untrained", "head_sha256": None}
    folder = Path(head) if head is not None else bundled_head(backbone)
    label = str(head) if head is not None else f"bundled checkpoints/{folder.name}"
    weights = folder / "model.safetensors" if folder is not None else None
    if weights is None or not weights.is_file():
        return {"head": label, "head_sha256": None}
    return {"head": label, "head_sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}


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
    rank, world, device = _distributed(args.device)
    explainer = Explainer.from_pretrained(args.head, args.backbone, args.weights, device)
    if rank == 0 and not explainer.trained:
        print("WARNING: untrained T-TAME head: its scores are not T-TAME's.", file=sys.stderr)
    every = list_images(args.images)
    paths = [every[i] for i in spread(len(every), args.limit)]
    if not paths:
        raise ImageError(f"No images found in '{args.images}'.")
    items = build_items(paths, args.masks)
    options = MethodOptions(rise_masks=args.rise_masks, seed=args.seed)
    road_limit = 0 if args.no_road else args.road_limit
    settings = Settings(
        road_indices=None if road_limit is None else frozenset(spread(len(items), road_limit)),
        batch_size=args.batch_size,
        seed=args.seed,
        options=options,
    )
    methods = {name: build_method(name, explainer, options) for name in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadWarning)
        records, failures = evaluate_items(
            explainer, methods, shard(items, rank, world), settings, progress=rank == 0
        )
    records, failures = gather(records, failures, rank, world)
    if rank != 0:
        return 0
    for failure in failures:
        print(f"skipped {failure['file']}: {failure['error']}", file=sys.stderr)
    if not records:
        raise ImageError("None of the images could be read.")
    report = {
        "backbone": explainer.spec.name,
        **head_provenance(args.head, explainer.spec.name, explainer.trained),
        "images": str(args.images),
        "n_images": len(records),
        "skipped": failures,
        "percents": list(settings.percents),
        "road_fractions": list(settings.fractions),
        "bootstrap": {"resamples": args.bootstrap, "level": 0.95, "seed": args.seed},
        "options": {"rise_masks": args.rise_masks, "seed": args.seed, "world_size": world},
        "methods": summarise(records, names, settings, args.bootstrap),
    }
    chance = chance_levels(records)
    if chance:
        report["localisation_chance"] = chance
    if args.sanity > 0:
        chosen = [items[i] for i in spread(len(items), args.sanity)]
        report["sanity"] = sanity_report(explainer, names, chosen, options)
    if against is not None:
        from ttame.paired import paired_block, paired_table

        resamples, seed = args.bootstrap, args.seed
        report["paired"] = paired_block(records, names, against, settings, resamples, seed)
    report["records"] = records
    print(markdown_table(report))
    if "paired" in report:
        print("\n" + paired_table(report["paired"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.plot:
        plot_curves(report, args.plot)
    return 0


def sanity_report(
    explainer: Explainer, names: Sequence[str], items: Sequence[Item], options: MethodOptions
) -> dict:
    """Mean Spearman correlation of intact vs randomised maps, per method and cascade step."""
    spec = explainer.spec
    device = next(explainer.parameters()).device
    loaded = [b.images for b in load_batches(items, spec.input_size, spec.resize_size, len(items))]
    images = torch.cat([x for x in loaded if x.numel()]).to(device)
    result: dict = {"n_images": len(images), "methods": {}}
    for name in names:
        steps = cascading_randomization(explainer, METHODS[name], images, options, options.seed)
        result["methods"][name] = {
            step: float(np.nanmean(rho.numpy())) if np.isfinite(rho.numpy()).any() else math.nan
            for step, rho in steps.items()
        }
    return result

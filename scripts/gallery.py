r"""A gallery of held-out photos: T-TAME's map beside Grad-CAM's, Grad-CAM++'s and RISE's.

    python scripts/gallery.py --backbones mobilenet_v2,efficientnet_lite0 \
        --images data/eval_photos/test --n 12 --rise-masks 2000 --out docs/gallery

Tables of means hide what the maps look like; this page shows them, photo by photo, with the
numbers that say how they differ. ``--n`` photos are spread evenly over the sorted folder
(unreadable files skipped), each explained for the backbone's top-1 class by every method, drawn
the same way over the backbone's centre crop (what the backbone saw), one PNG row per photo in
``--out``; ``--markdown`` (default ``<out>.md``) gets the page: per photo the row and one
generated line (AD at 15 % kept per method, the overlap of T-TAME's and Grad-CAM's top-15 %
regions and the distance between their peaks), then a summary over the photos. Photo credits
come from the ``manifest.json`` in or above the image folder. Rerunning replaces the page and
this backbone's rows.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ttame.errors import TTameError
from ttame.evaluation.inputs import spread
from ttame.evaluation.run import head_provenance
from ttame.explainer import Explainer, UntrainedHeadWarning
from ttame.images import find_images, load_image, overlay, preprocess
from ttame.methods.registry import MapMaker, MethodOptions, build_method
from ttame.metrics.perturbation import drop_per_image, keep_top, masked_confidence

METHODS: dict[str, str] = {
    "ttame": "T-TAME",
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "rise": "RISE",
}
"""Registry name -> label, in the order of the panels."""
KEPT = 15
"""The kept share (%) of AD and of the compared regions."""
WARM_UP = ("ttame", "gradcam", "gradcampp")
"""Methods run once before timing: their first call pays imports and allocations, not maps."""
COLORMAP = "jet"
ALPHA = 0.5


@dataclass
class Row:
    """One photo's maps and the numbers the page reports about them."""

    path: Path
    crop: torch.Tensor
    """The backbone's input, ``3 x S x S`` raw RGB in [0, 1]."""
    label: int
    class_name: str
    probability: float
    maps: dict[str, np.ndarray]
    drop: dict[str, float]
    """AD(15 %) term of this photo, per method, in %."""
    seconds: dict[str, float]
    iou: float
    """IoU of T-TAME's and Grad-CAM's top-15 % regions."""
    peak_distance: float
    """Distance between T-TAME's and Grad-CAM's peaks, pixels of the crop."""


def pick_photos(folder: str | Path, n: int) -> tuple[list[Path], list[str]]:
    """``n`` readable photos spread evenly over the sorted folder, and why others were skipped.

    Readability is checked first, so one broken file changes the pick only near itself.
    """
    readable: list[Path] = []
    skipped: list[str] = []
    for path in find_images(folder):
        try:
            load_image(path)
        except (TTameError, OSError) as exc:
            skipped.append(f"{path.name}: {exc}")
            continue
        readable.append(path)
    return [readable[i] for i in spread(len(readable), n)], skipped


def region_iou(a: torch.Tensor, b: torch.Tensor, percent: float = KEPT) -> float:
    """IoU of the pixels two ``H x W`` maps keep at ``percent`` (those with a value left)."""
    kept = keep_top(torch.stack([a, b]), percent) > 0
    union = (kept[0] | kept[1]).sum()
    return float((kept[0] & kept[1]).sum() / union) if union else 0.0


def peak(saliency: torch.Tensor) -> tuple[int, int]:
    """The ``H x W`` map's maximum as (x, y) pixels."""
    y, x = divmod(int(saliency.reshape(-1).argmax()), saliency.shape[-1])
    return x, y


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def explain_photo(explainer: Explainer, makers: dict[str, MapMaker], path: Path) -> Row:
    """Every method's map of one photo for the top-1 class, timed, with AD(15 %) of each."""
    spec = explainer.spec
    device = next(explainer.parameters()).device
    crop, _ = preprocess(load_image(path), spec.input_size, spec.resize_size)
    images = crop[None].to(device)
    with torch.no_grad():
        probabilities = explainer.backbone(images).float().softmax(dim=1)[0]
    label = int(probabilities.argmax())
    classes = torch.tensor([label], device=device)
    maps: dict[str, torch.Tensor] = {}
    drop: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for name, maker in makers.items():
        _synchronize(device)
        start = time.perf_counter()
        explanation = maker.explain(images, classes)
        _synchronize(device)
        seconds[name] = time.perf_counter() - start
        maps[name] = explanation.maps[0].float()
        masked = masked_confidence(explainer.backbone, images, explanation.maps, classes, (KEPT,))
        drop[name] = float(drop_per_image(explanation.scores.float(), masked)[0, 0])
    (ax, ay), (bx, by) = peak(maps["ttame"]), peak(maps["gradcam"])
    return Row(
        path=path,
        crop=crop,
        label=label,
        class_name=explainer.categories[label],
        probability=float(probabilities[label]),
        maps={k: v.cpu().numpy() for k, v in maps.items()},
        drop=drop,
        seconds=seconds,
        iou=region_iou(maps["ttame"].cpu(), maps["gradcam"].cpu()),
        peak_distance=float(np.hypot(ax - bx, ay - by)),
    )


def _tile(picture: Image.Image, size: int) -> np.ndarray:
    return np.asarray(picture.resize((size, size), Image.Resampling.LANCZOS))


def seconds_text(seconds: float) -> str:
    """Seconds with two significant digits, never in exponent notation (0.047, 3.1, 160)."""
    return f"{seconds:.2g}" if seconds < 10 else f"{seconds:.0f}"


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def draw_row(row: Row, path: Path, tile: int = 160) -> Path:
    """The photo and each method's map over it, one colour map, one opacity, as a small PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crop = Image.fromarray(
        (row.crop.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    )
    panels = [(f"photo ({crop.width} px crop)", _tile(crop, tile))]
    for name, heat in row.maps.items():
        title = (
            f"{METHODS.get(name, name)}\nAD({KEPT} %) {row.drop[name]:.1f} %"
            f" · {seconds_text(row.seconds[name])} s"
        )
        panels.append((title, _tile(overlay(crop, heat, ALPHA, COLORMAP), tile)))
    dpi = 100
    head, titles = 0.2, 0.34
    width, height = len(panels) * tile / dpi, tile / dpi + head + titles
    fig, axes = plt.subplots(1, len(panels), figsize=(width, height), dpi=dpi)
    fig.subplots_adjust(
        left=0.005, right=0.995, bottom=0.01, top=1 - (head + titles) / height, wspace=0.04
    )
    for ax, (title, picture) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=7, pad=2)
        ax.axis("off")
    header = f"top-1: {row.class_name} ({row.probability:.0%}) · {_short(row.path.name)}"
    fig.suptitle(header, fontsize=8, y=1 - 0.05 / height, va="top")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    buffer.seek(0)
    picture = Image.open(buffer).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, optimize=True)
    return path


def photo_line(row: Row) -> str:
    """One generated sentence on how the maps of a photo differ."""
    drops = ", ".join(f"{METHODS.get(k, k)} {v:.1f}" for k, v in row.drop.items())
    best = min(row.drop, key=row.drop.__getitem__)
    return (
        f"AD({KEPT} %) {drops} (lowest: {METHODS.get(best, best)}); T-TAME vs Grad-CAM: "
        f"top-{KEPT} % regions overlap IoU {row.iou:.2f}, peaks {row.peak_distance:.0f} px apart."
    )


def summary_lines(rows: Sequence[Row]) -> list[str]:
    """Mean AD(15 %) and median time per method, and how often T-TAME beats Grad-CAM."""
    names = list(rows[0].drop)
    lines = [
        f"| method | mean AD({KEPT} %) ↓ | median s / map |",
        "|---|---:|---:|",
    ]
    for name in names:
        mean = np.mean([r.drop[name] for r in rows])
        seconds = np.median([r.seconds[name] for r in rows])
        lines.append(f"| {METHODS.get(name, name)} | {mean:.1f} | {seconds_text(seconds)} |")
    wins = sum(r.drop["ttame"] < r.drop["gradcam"] for r in rows)
    ties = sum(r.drop["ttame"] == r.drop["gradcam"] for r in rows)
    lines += [
        "",
        f"T-TAME's AD({KEPT} %) is lower than Grad-CAM's on {wins} of {len(rows)} photos"
        + (f" ({ties} tied)" if ties else "")
        + f"; their top-{KEPT} % regions overlap with mean IoU "
        f"{np.mean([r.iou for r in rows]):.2f} and their peaks lie a median "
        f"{np.median([r.peak_distance for r in rows]):.0f} px apart.",
    ]
    return lines


def load_credits(folder: str | Path, manifest: str | Path | None = None) -> dict[Path, dict]:
    """Manifest entries by resolved photo path, from ``manifest`` or one in or above ``folder``."""
    if manifest is None:
        root = Path(folder).resolve()
        found = [
            p / "manifest.json" for p in (root, root.parent) if (p / "manifest.json").is_file()
        ]
        if not found:
            return {}
        manifest = found[0]
    manifest = Path(manifest)
    entries = json.loads(manifest.read_text())
    return {(manifest.parent / e["file"]).resolve(): e for e in entries if "file" in e}


def credit_line(entry: dict | None) -> str:
    """The photo's author, licence and source, as the manifest records them."""
    if entry is None:
        return "Photo: source not recorded in a manifest."
    origin = entry.get("origin", "")
    link = f" ([origin](<{origin}>))" if origin.startswith("http") else ""
    return (
        f"Photo: {entry.get('credit', 'unknown')}, {entry.get('licence', 'licence unknown')}, "
        f"via {entry.get('source', 'unknown')}{link}."
    )


def machine_line(device: torch.device) -> str:
    """Where and when the page was made: the timings mean nothing without it."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Made on {date} with {where}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), Python {platform.python_version()}."
    )


@dataclass
class Section:
    """One backbone's part of the page."""

    explainer: Explainer
    rows: list[Row]
    pngs: list[Path]


def build_section(
    explainer: Explainer,
    photos: Sequence[Path],
    out: Path,
    options: MethodOptions,
    tile: int = 160,
    progress: bool = False,
) -> Section:
    """Explain and draw every photo for one backbone; its old rows in ``out`` are replaced."""
    torch.manual_seed(options.seed)
    makers = {name: build_method(name, explainer, options) for name in METHODS}
    backbone = explainer.spec.name.replace("/", "--")
    for old in out.glob(f"{backbone}_[0-9][0-9]_*.png"):
        old.unlink()
    rows: list[Row] = []
    pngs: list[Path] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadWarning)
        if photos:
            explain_photo(explainer, {k: makers[k] for k in WARM_UP}, photos[0])
        for i, path in enumerate(photos, start=1):
            row = explain_photo(explainer, makers, path)
            rows.append(row)
            pngs.append(draw_row(row, out / f"{backbone}_{i:02d}_{path.stem[:40]}.png", tile))
            if progress:
                print(f"{backbone} {i}/{len(photos)} {path.name}: {photo_line(row)}", flush=True)
    return Section(explainer, rows, pngs)


def write_markdown(
    sections: Sequence[Section],
    path: Path,
    command: str,
    machine: str,
    credits: dict[Path, dict],
    skipped: Sequence[str] = (),
) -> Path:
    """The page: what it shows, how it was made, one row and line per photo, a summary."""
    lines = [
        "# Gallery: T-TAME beside Grad-CAM, Grad-CAM++ and RISE",
        "",
        "Held-out photos (never trained on), each explained for the backbone's own top-1 class. "
        "Every row shows the backbone's centre crop (what it saw) and each method's map over it, "
        f"all drawn the same way ({COLORMAP} colour map, red high, blue low, opacity {ALPHA}). "
        f"Panel titles give the method's AD({KEPT} %) on that photo and the seconds the map took "
        "(wall-clock, one photo at a time, on the machine named below: on a shared machine "
        "compare them within a row). "
        f"AD({KEPT} %) is the share of the class's confidence lost when only the top {KEPT} % of "
        "the map is kept (soft values, the rest blacked out): lower is better. Below each row, "
        f"one generated line: AD({KEPT} %) per method, the overlap (IoU) of T-TAME's and "
        f"Grad-CAM's top-{KEPT} % regions, and the distance between their peaks in pixels of "
        "the crop. The maps come from grids of different sizes (Grad-CAM's from the last "
        "stage, 7 x 7 cells of 32 px for mobilenet_v2 and efficientnet_lite0; T-TAME's from "
        "its finest tap), so peaks a few pixels apart (under half a cell) mark the same spot. "
        "One photo is a small sample: read it for what the maps look like, the "
        "summary for a tendency, and `docs/results.md` for numbers with intervals.",
        "",
        "Made with:",
        "",
        "```",
        command,
        "```",
        "",
        machine,
    ]
    if skipped:
        lines += ["", "Skipped (unreadable): " + "; ".join(skipped) + "."]
    for section in sections:
        spec = section.explainer.spec
        provenance = head_provenance(section.explainer)
        sha = provenance["head_sha256"]
        lines += ["", f"## {spec.name}", ""]
        lines.append(
            f"T-TAME head: {provenance['head']}"
            + (f" (model.safetensors SHA-256 `{sha[:16]}…`)" if sha else "")
            + "."
        )
        if not section.explainer.trained:
            lines.append("**WARNING: untrained T-TAME head: its maps are not T-TAME's.**")
        for i, (row, png) in enumerate(zip(section.rows, section.pngs, strict=True), start=1):
            image = Path(os.path.relpath(png, path.parent)).as_posix()
            lines += [
                "",
                f"### {spec.name} {i}. {row.class_name} ({row.probability:.0%})",
                "",
                f"![{spec.name}: {row.path.name}, maps of {', '.join(METHODS.values())}]({image})",
                "",
                photo_line(row),
                "",
                credit_line(credits.get(row.path.resolve())) + f" File `{row.path.name}`.",
            ]
        if section.rows:
            lines += ["", f"### {spec.name}: summary over {len(section.rows)} photos", ""]
            lines += summary_lines(section.rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--backbone", default=None, help="one backbone (default mobilenet_v2)")
    parser.add_argument("--backbones", default=None, help="comma-separated: one section each")
    parser.add_argument("--head", default=None, help="head folder (one backbone only)")
    parser.add_argument("--images", default="data/eval_photos/test", help="folder of photos")
    parser.add_argument("--n", type=int, default=12, help="photos, spread over the folder")
    parser.add_argument("--rise-masks", type=int, default=2000, help="RISE's masks")
    parser.add_argument("--seed", type=int, default=0, help="seeds RISE's masks")
    parser.add_argument("--batch-size", type=int, default=64, help="RISE's images per pass")
    parser.add_argument("--tile", type=int, default=160, help="pixels per panel")
    parser.add_argument("--out", default="docs/gallery", help="folder of the PNG rows")
    parser.add_argument("--markdown", default=None, help="the page (default <out>.md)")
    parser.add_argument("--manifest", default=None, help="photo credits (default: found)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.backbone and args.backbones:
        parser.error("give --backbone or --backbones, not both")
    names = (args.backbones or args.backbone or "mobilenet_v2").split(",")
    args.names = [n.strip() for n in names if n.strip()]
    if args.head and len(args.names) != 1:
        parser.error("--head needs exactly one backbone")
    if min(args.n, args.rise_masks, args.batch_size, args.tile) < 1:
        parser.error("--n, --rise-masks, --batch-size and --tile must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Pick the photos, build one section per backbone, write the page."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    start = time.perf_counter()
    photos, skipped = pick_photos(args.images, args.n)
    if not photos:
        raise SystemExit(f"no readable photos in '{args.images}'")
    for reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    out = Path(args.out)
    markdown = Path(args.markdown) if args.markdown else out.with_suffix(".md")
    options = MethodOptions(rise_masks=args.rise_masks, batch_size=args.batch_size, seed=args.seed)
    device = torch.device(args.device)
    sections = []
    for name in args.names:
        explainer = Explainer.from_pretrained(args.head, name, device=device)
        if not explainer.trained:
            print(f"WARNING: untrained T-TAME head for {name}.", file=sys.stderr)
        sections.append(build_section(explainer, photos, out, options, args.tile, progress=True))
    command = "python scripts/gallery.py " + shlex.join(argv)
    write_markdown(
        sections,
        markdown,
        command,
        machine_line(device),
        load_credits(args.images, args.manifest),
        skipped,
    )
    size = sum(p.stat().st_size for s in sections for p in s.pngs)
    print(
        f"wrote {markdown} and {sum(len(s.pngs) for s in sections)} PNGs "
        f"({size / 2**20:.2f} MiB) in {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

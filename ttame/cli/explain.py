"""``ttame explain IMAGE...``: maps of one photo, a folder, a glob, many files or a clip.

One photo prints one line (or ``--json``) and ``--out FILE`` draws its overlay. A folder
(searched recursively), a glob or several files are explained in batches (one backbone pass
per batch, decoding in threads alongside), with a progress bar on stderr; ``--out DIR`` then
mirrors the inputs' relative paths and ``--jsonl FILE`` gets one JSON line per file. A file
that cannot be read gets a line with ``error`` and the run goes on; the exit status is then 1.
A clip (``CLIP.mp4``, any suffix of :data:`ttame.video.VIDEO_SUFFIXES`) is explained frame by
frame: ``--out OVERLAY.mp4`` gets the overlay of every frame, ``--jsonl`` each frame's top-1.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import sys
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from ttame.batch import explain_files
from ttame.errors import ClassIndexError, ImageError, UntrainedHeadWarning, VideoError
from ttame.explainer import Explainer
from ttame.explanation import Explanation, ImageExplanation
from ttame.images import Geometry, find_images, load_image, peak_xy
from ttame.video import explain_video, is_video

GLOB_CHARACTERS = re.compile(r"[*?\[]")
TOP_K = re.compile(r"^top(\d+)$", re.IGNORECASE)


def register(subparsers: Any) -> None:
    """Add ``ttame explain``."""
    parser = subparsers.add_parser(
        "explain",
        help="explain images (a file, a folder, a glob, many files)",
        description="Explain images with T-TAME.",
    )
    parser.add_argument(
        "images", nargs="+", help="image files, folders (searched recursively) or globs"
    )
    parser.add_argument("--backbone", default=None, help="backbone name (default: the head's)")
    parser.add_argument(
        "--head",
        default=None,
        help="head folder, Hub repo id, hf://OWNER/NAME/FILE.ckpt or .ckpt "
        "(default: the backbone's known head, docs/hub.md)",
    )
    parser.add_argument("--weights", default=None, help="local backbone weights file")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--class",
        dest="target",
        default=None,
        help="class index or name to explain (default: the top-1)",
    )
    which.add_argument(
        "--classes",
        default=None,
        help="several maps from one pass: topK (e.g. top5) or a comma list of names or indices",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="one image: the overlay file (PNG/JPEG); many: a folder of overlays",
    )
    parser.add_argument("--jsonl", default=None, help="write one JSON line per file here")
    parser.add_argument("--batch", type=int, default=16, help="images per backbone pass")
    parser.add_argument("--workers", type=int, default=2, help="threads decoding images (0: none)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1]")
    parser.add_argument("--colormap", default="jet", help="matplotlib colour map")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per file)")
    parser.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    """One photo as before; anything more in batches."""
    if args.batch < 1:
        raise ImageError(f"--batch must be at least 1; got {args.batch}.")
    clip = len(args.images) == 1 and is_video(args.images[0])
    if clip:
        check_clip_options(args)
    single = not clip and len(args.images) == 1 and args.jsonl is None
    single = single and not _expands(args.images[0])
    image = load_image(args.images[0]) if single else None
    roots, paths = ([], []) if single else find_inputs(args.images)
    explainer = Explainer.from_pretrained(
        head=args.head, backbone=args.backbone, weights=args.weights, device=args.device
    )
    classes, top = parse_classes(args, explainer)
    if not explainer.trained:
        print(
            "WARNING: no trained head for this backbone; the map is NOT an explanation.",
            file=sys.stderr,
        )
    provenance = explainer.provenance
    if provenance is not None and provenance.terms:
        print(f"Head {provenance.source}: {provenance.terms}", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedHeadWarning)
        if clip:
            return explain_clip(args, explainer)
        if image is not None:
            return explain_one(args, explainer, image, classes, top)
        return explain_many(args, explainer, roots, paths, classes, top)


def _expands(text: str) -> bool:
    """Whether an argument names more than one file: a folder, or a glob that is no file."""
    path = Path(text)
    return path.is_dir() or (not path.exists() and bool(GLOB_CHARACTERS.search(text)))


def find_inputs(arguments: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """The roots the inputs' relative paths start from, and every file, each once, in order.

    A folder is its own root (its images, recursively); a glob's or a file's root is its
    folder. A named file that does not exist is kept: it becomes an error line, not a stop.
    """
    roots: list[Path] = []
    paths: list[Path] = []
    for text in arguments:
        path = Path(text)
        if path.is_dir():
            roots.append(path)
            paths.extend(find_images(path))
        elif not path.exists() and GLOB_CHARACTERS.search(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            paths.extend(m for m in matches if m.is_file())
        else:
            paths.append(path)
    unique: dict[Path, Path] = {}
    for path in paths:
        unique.setdefault(path.resolve(), path)
    if not unique:
        raise ImageError(f"No image files found in {', '.join(arguments)}.")
    return roots, list(unique.values())


def overlay_names(paths: Sequence[Path], roots: Sequence[Path]) -> dict[Path, Path]:
    """Each input's overlay path under ``--out``: its path below the inputs' common folder.

    The input's own name is kept and ``.png`` added (``a/cat.jpg`` -> ``a/cat.jpg.png``), so
    two inputs never share an overlay, not even ``cat.jpg`` and ``cat.png``.
    """
    resolved = [p.resolve() for p in paths]
    folders = [r.resolve() for r in roots] + [p.parent for p in resolved]
    common = Path(os.path.commonpath(folders))
    return {
        path: full.relative_to(common).with_name(full.name + ".png")
        for path, full in zip(paths, resolved, strict=True)
    }


def parse_classes(
    args: argparse.Namespace, explainer: Explainer
) -> tuple[int | list[int] | None, int | None]:
    """``--class`` / ``--classes`` as (classes, top) for :func:`ttame.batch.explain_files`."""
    if args.target is not None:
        return explainer.class_index(args.target), None
    if args.classes is None:
        return None, None
    match = TOP_K.match(args.classes.strip())
    if match:
        top = int(match.group(1))
        if not 1 <= top <= len(explainer.categories):
            raise ClassIndexError(
                f"--classes top{top}: k must be between 1 and {len(explainer.categories)}."
            )
        return None, top
    names = [name for name in args.classes.split(",") if name.strip()]
    if not names:
        raise ClassIndexError("--classes takes topK or a comma list of class names or indices.")
    return [explainer.class_index(name) for name in names], None


def check_clip_options(args: argparse.Namespace) -> None:
    """Refuse, before any work, options a clip cannot take."""
    if not Path(args.images[0]).is_file():
        raise VideoError(f"No such video file: {args.images[0]}")
    if args.target is not None or args.classes is not None:
        raise VideoError("A clip's frames are explained for their top-1; drop --class/--classes.")
    if args.out and not is_video(args.out):
        raise VideoError(f"--out for a clip is a video file (e.g. OVERLAY.mp4); got '{args.out}'.")


def explain_clip(args: argparse.Namespace, explainer: Explainer) -> int:
    """Explain every frame of a clip; the overlay clip to ``--out``, each top-1 to ``--jsonl``."""
    source = Path(args.images[0])
    start = time.perf_counter()
    frames = explain_video(
        explainer, source, args.out, args.batch, alpha=args.alpha, colormap=args.colormap
    )
    seconds = time.perf_counter() - start
    records = [{"file": str(source), **frame.as_json()} for frame in frames]
    if args.jsonl:
        Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
        Path(args.jsonl).write_text("".join(json.dumps(r) + "\n" for r in records))
    if args.json:
        print("\n".join(json.dumps(r) for r in records))
    names = [frame.class_name for frame in frames]
    common = max(set(names), key=names.count) if names else "none"
    line = f"{source}: {len(frames)} frames in {seconds:.1f} s; most often {common}"
    print(line + (f"; overlay -> {args.out}" if args.out else ""), file=sys.stderr)
    return 0


def explain_one(
    args: argparse.Namespace,
    explainer: Explainer,
    image: Image.Image,
    classes: int | list[int] | None,
    top: int | None,
) -> int:
    """Explain one photo; print its line or JSON; write its overlay(s) to ``--out``."""
    tensor, geometry = explainer.preprocess(image)
    target = torch.tensor([classes]) if isinstance(classes, list) else classes
    start = time.perf_counter()
    result = explainer.explain(tensor[None].to(args.device), target, top=top)
    seconds = time.perf_counter() - start
    if args.out:
        write_overlays(explainer, image, result, geometry, Path(args.out), args)
    report = summary(explainer, result, geometry, seconds)
    print(json.dumps(report) if args.json else describe(report, args.out))
    return 0


def explain_many(
    args: argparse.Namespace,
    explainer: Explainer,
    roots: list[Path],
    paths: list[Path],
    classes: int | list[int] | None,
    top: int | None,
) -> int:
    """Explain files in batches; a line per file to stdout and ``--jsonl``; 1 if any failed."""
    if args.out and Path(args.out).is_file():
        raise ImageError(f"--out '{args.out}' is a file; for many images give a folder.")
    names = overlay_names(paths, roots) if args.out else {}
    failed = 0
    if args.jsonl:
        Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        lines = stack.enter_context(open(args.jsonl, "w", encoding="utf-8")) if args.jsonl else None
        writer = stack.enter_context(ThreadPoolExecutor(max(1, args.workers), "overlay"))
        writing: deque[Future[None]] = deque()
        results = explain_files(
            explainer,
            paths,
            batch=args.batch,
            classes=classes,
            top=top,
            workers=args.workers,
            keep_images=bool(args.out),
        )
        for item in tqdm(results, total=len(paths), unit="img", file=sys.stderr):
            if item.error is not None or item.explanation is None or item.geometry is None:
                report: dict[str, Any] = {"file": str(item.path), "error": item.error}
                failed += 1
            else:
                report = {
                    "file": str(item.path),
                    **summary(explainer, item.explanation, item.geometry, item.seconds),
                }
                if args.out and item.image is not None:
                    base = Path(args.out) / names[item.path]
                    base.parent.mkdir(parents=True, exist_ok=True)
                    draw = (explainer, item.image, item.explanation, item.geometry, base, args)
                    writing.append(writer.submit(write_overlays, *draw))
                    while len(writing) > 2 * args.batch:  # bounded: photos wait in memory
                        writing.popleft().result()
            line = json.dumps(report)
            if lines is not None:
                lines.write(line + "\n")
                lines.flush()
            tqdm.write(line if args.json else f"{item.path}: {describe(report, None)}")
        for done in writing:
            done.result()
    print(f"{len(paths) - failed} explained, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def per_class(result: Explanation) -> Iterator[Explanation]:
    """A one-image result as one single-class result per explained class."""
    if result.maps.dim() == 3:
        yield result
        return
    for j in range(result.maps.shape[1]):
        yield Explanation(result.maps[:, j], result.classes[:, j], result.probabilities)


def write_overlays(
    explainer: Explainer,
    image: Image.Image,
    result: Explanation,
    geometry: Geometry,
    base: Path,
    args: argparse.Namespace,
) -> None:
    """Write each map's overlay: to ``base``, or ``stem.<class>.suffix`` for many classes."""
    many = result.maps.dim() == 4
    for one in per_class(result):
        shown = ImageExplanation.of(image, one, geometry, explainer.categories)
        path = base.with_name(f"{base.stem}.{shown.index}{base.suffix}") if many else base
        shown.overlay(args.alpha, args.colormap).save(path)


def summary(
    explainer: Explainer, result: Explanation, geometry: Geometry, seconds: float
) -> dict[str, Any]:
    """The JSON of one photo: its class (or ``maps``, one per class), top-5, peak, time."""
    probabilities = result.probabilities[0]
    top = torch.topk(probabilities, k=min(5, probabilities.numel()))
    maps = [_map_summary(explainer, one, geometry) for one in per_class(result)]
    provenance = explainer.provenance
    head = {
        "backbone": explainer.spec.name,
        "head": "trained" if explainer.trained else "untrained",
        "head_source": provenance.source if provenance is not None else None,
        "head_license": provenance.license if provenance is not None else None,
    }
    top5 = [
        [int(i), explainer.categories[int(i)], float(p)]
        for p, i in zip(top.values, top.indices, strict=True)
    ]
    if result.maps.dim() == 4:
        return {**head, "maps": maps, "top5": top5, "seconds": round(seconds, 4)}
    peak = maps[0].pop("peak_xy")
    return {**head, **maps[0], "top5": top5, "peak_xy": peak, "seconds": round(seconds, 4)}


def _map_summary(explainer: Explainer, one: Explanation, geometry: Geometry) -> dict[str, Any]:
    """One map's class, its probability and where the map peaks on the photo."""
    index = int(one.classes[0])
    x, y = peak_xy(one.maps[0], geometry)
    return {
        "class_index": index,
        "class_name": explainer.categories[index],
        "probability": float(one.probabilities[0, index]),
        "peak_xy": [round(x, 1), round(y, 1)],
    }


def describe(report: dict[str, Any], out: str | None) -> str:
    """A report as one line for people."""
    if "error" in report:
        return f"error: {report['error']}"
    maps = report.get("maps", [report])
    classes = "; ".join(
        f"{m['class_name']} (class {m['class_index']}) p={m['probability']:.3f}; "
        f"peak at x={m['peak_xy'][0]:.0f}, y={m['peak_xy'][1]:.0f}"
        for m in maps
    )
    return f"{classes}; {report['seconds'] * 1000:.0f} ms" + (f"; overlay -> {out}" if out else "")

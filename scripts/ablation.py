"""The training ablation: each head variant against Grad-CAM, paired, on the dev images.

    python scripts/ablation.py --backbone mobilenet_v2 --out docs/ablation/mobilenet_v2 \
        --variant "paper recipe, 296 steps=checkpoints/mobilenet_v2" \
        --variant "shared + AdamW + mix, step 612=runs/abl_A/checkpoint_612.pt" ...

Each variant is a head folder (with ``progress.json`` when scripts/checkpoint_head.py wrote
it) or a training checkpoint (``checkpoint.pt``; its head is exported first, with the step,
images seen and training seconds read from it). Every variant is scored
with ``ttame evaluate --against gradcam`` on the dev photos and the dev ground-truth composites
(never the test part: the recipe is chosen here), and one markdown row per variant gives the
paired differences T-TAME minus Grad-CAM with their 95 % intervals.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttame.hub.heads import save_head
from ttame.training.checkpoint import head_from_checkpoint, load_checkpoint

COLUMNS = (
    ("photos", "AD", "15", "AD 15 %"),
    ("photos", "AD", "50", "AD 50 %"),
    ("photos", "IC", "15", "IC 15 % (pp)"),
    ("composites", "AD", "15", "composites AD 15 %"),
    ("composites", "pointing", "mask", "composites pointing"),
)


def head_of(source: Path, work: Path) -> tuple[Path, dict]:
    """A head folder for ``source`` and what is known of its training (step, images, seconds)."""
    if source.is_dir():  # a head folder; scripts/checkpoint_head.py leaves progress.json
        progress = source / "progress.json"
        return source, json.loads(progress.read_text()) if progress.is_file() else {}
    saved = load_checkpoint(source)
    progress, config = saved["progress"], saved["config"]
    folder = save_head(head_from_checkpoint(source), work / f"step_{progress['step']}")
    return folder, {
        "steps": progress["step"],
        "images": progress["step"] * config["batch"],
        "seconds": round(progress["seconds"]),
    }


def evaluate(backbone: str, head: Path, images: str, masks: str | None, out: Path) -> dict:
    """``ttame evaluate --against gradcam`` on one image set; returns the paired block.

    A report already at ``out`` for the same head file (same SHA-256) and images is reused, so
    adding a variant re-scores only that one.
    """
    digest = hashlib.sha256((head / "model.safetensors").read_bytes()).hexdigest()
    if out.is_file():
        old = json.loads(out.read_text())
        if old.get("head_sha256") == digest and old.get("images") == images:
            return old["paired"]["methods"]["ttame"]
    command = [
        sys.executable,
        "-m",
        "ttame",
        "evaluate",
        "--backbone",
        backbone,
        "--head",
        str(head),
        "--images",
        images,
        "--methods",
        "ttame,gradcam",
        "--against",
        "gradcam",
        "--no-road",
        "--json",
        str(out),
    ]
    if masks:
        command += ["--masks", masks]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["paired"]["methods"]["ttame"]


def cell(block: dict, metric: str, key: str) -> str:
    """``mean [low, high]`` of one paired statistic, with a mark when the interval excludes 0."""
    stat = block["localisation"]["mask"][metric] if metric == "pointing" else block[metric][key]
    low, high = stat["CI95"]
    digits = 3 if metric == "pointing" else 1
    mark = {"better": " ✓", "worse": " ✗"}.get(stat["verdict"], "")
    return f"{stat['mean']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]{mark}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--images", default="data/eval_photos/dev")
    parser.add_argument("--groundtruth", default="data/groundtruth/dev")
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON reports")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, spec in enumerate(args.variant):
        name, _, path = spec.partition("=")
        head, trained = head_of(Path(path), args.out / f"heads_{i}")
        photos = evaluate(args.backbone, head, args.images, None, args.out / f"{i}_photos.json")
        composites = evaluate(
            args.backbone,
            head,
            f"{args.groundtruth}/images",
            args.groundtruth,
            args.out / f"{i}_composites.json",
        )
        rows.append(
            {"variant": name, "source": path, **trained, "photos": photos, "composites": composites}
        )
    (args.out / "ablation.json").write_text(json.dumps(rows, indent=1) + "\n")
    header = ["variant", "images seen", "train s"] + [c[3] for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["variant"], str(row.get("images", "–")), str(row.get("seconds", "–"))]
        cells += [cell(row[kind], metric, key) for kind, metric, key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    n_photos, n_comp = rows[0]["photos"]["n_images"], rows[0]["composites"]["n_images"]
    print(
        f"T-TAME minus Grad-CAM, paired 95 % intervals; {n_photos} dev photos, "
        f"{n_comp} dev composites (✓ better, ✗ worse, interval excluding 0)\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

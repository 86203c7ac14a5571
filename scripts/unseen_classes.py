r"""Score a head's maps for classes its training data never showed.

    python scripts/unseen_classes.py --backbone mobilenet_v2 \
        --seen runs/mobilenet_v2/summary.json --head random=runs/mobilenet_v2_random/head \
        --head cam=checkpoints/mobilenet_v2 --head cam0

A head trained on a few thousand photos only ever sees the classes the backbone predicts for
them. This script splits held-out images (the pool's evaluation photos and ground-truth
composites, never trained on) by whether the backbone's top-1 class was a training label
(``label_counts`` of the run's ``summary.json``), and scores each head's map for that class on
both groups: Average Drop and Increase in Confidence at 50 % and 15 % of the map kept
(docs/method.md, "Evaluation"), and, on the composites whose top-1 is the object's class, the
pointing game (is the map's peak on the object's exact mask). ``--head cam0`` is the CAM
initialisation before any training (the classifier's class activation maps).
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ttame.explainer import Explainer, fresh_head
from ttame.hub.load import load_head
from ttame.images import load_image, preprocess
from ttame.model.registry import get_spec
from ttame.model.taps import Backbone, build_backbone

KEPT = (50, 15)


@dataclass
class HeldOut:
    """Held-out images as one batch, with an object mask where there is one."""

    images: torch.Tensor
    masks: list[np.ndarray | None]
    labels: list[int | None]
    """The object's class for composites (from their manifest), None for photos."""


def load_held_out(photos: Path, groundtruth: Path, size: int, resize: int) -> HeldOut:
    """The evaluation photos (resized and centre-cropped) and the 224 px composites as they are."""
    tensors, masks, labels = [], [], []
    for path in sorted(
        p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")
    ):
        tensors.append(preprocess(load_image(path), size, resize)[0])
        masks.append(None)
        labels.append(None)
    for entry in json.loads((groundtruth / "manifest.json").read_text()):
        image = load_image(groundtruth / entry["image"])
        mask = np.asarray(Image.open(groundtruth / entry["mask"])) > 127
        if image.size != (size, size):
            raise SystemExit(f"composites are {image.size}, the backbone wants {size} px")
        tensors.append(preprocess(image, size, size)[0])
        masks.append(mask)
        labels.append(int(entry["label"]))
    return HeldOut(torch.stack(tensors), masks, labels)


def keep_top(maps: torch.Tensor, percent: float) -> torch.Tensor:
    """Zero every value below each map's (100 - percent)th percentile; the rest stay soft."""
    flat = maps.flatten(1)
    threshold = torch.quantile(flat, 1 - percent / 100, dim=1, keepdim=True)
    return (flat * (flat >= threshold)).view_as(maps)


@torch.no_grad()
def score(explainer: Explainer, data: HeldOut, batch: int = 16) -> dict[str, np.ndarray]:
    """Per image: predicted class, clean and masked probabilities, and the peak's position."""
    top1, clean, peaks = [], [], []
    masked = {p: [] for p in KEPT}
    for start in range(0, len(data.images), batch):
        x = data.images[start : start + batch]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = explainer.explain(x)
        top1.append(result.classes)
        clean.append(result.scores)
        flat = result.maps.flatten(1).argmax(1)
        peaks.append(torch.stack([flat // x.shape[-1], flat % x.shape[-1]], 1))
        for p in KEPT:
            kept = keep_top(result.maps, p)[:, None]
            probs = explainer.backbone(x * kept).softmax(1)
            masked[p].append(probs.gather(1, result.classes[:, None])[:, 0])
    out = {
        "top1": torch.cat(top1).numpy(),
        "clean": torch.cat(clean).numpy(),
        "peak": torch.cat(peaks).numpy(),
    }
    out.update({f"masked{p}": torch.cat(v).numpy() for p, v in masked.items()})
    return out


def summarise(s: dict[str, np.ndarray], data: HeldOut, rows: np.ndarray) -> dict[str, float]:
    """AD / IC at each kept share and the pointing game, over the selected images."""
    result: dict[str, float] = {"n": int(rows.sum())}
    y = s["clean"][rows]
    for p in KEPT:
        o = s[f"masked{p}"][rows]
        result[f"AD{p}"] = float(100 * np.mean(np.maximum(0, y - o) / y)) if len(y) else np.nan
        result[f"IC{p}"] = float(100 * np.mean(o > y)) if len(y) else np.nan
    hits = [
        bool(data.masks[i][tuple(s["peak"][i])])
        for i in np.flatnonzero(rows)
        if data.masks[i] is not None and data.labels[i] == s["top1"][i]
    ]
    result["pointing_n"] = len(hits)
    result["pointing"] = float(100 * np.mean(hits)) if hits else np.nan
    return result


def build_explainer(body: Backbone, source: str) -> Explainer:
    """``cam0``: the CAM initialisation, untrained; anything else: a head folder."""
    if source == "cam0":
        head = fresh_head(body)
        classifier = dict(body.model.named_modules())[body.spec.cam_classifier]
        head.init_from_classifier(classifier.weight, classifier.bias)
        return Explainer(body, head.eval())
    return Explainer(body, load_head(source))


def main() -> None:
    """Score every head on held-out images of seen and of unseen classes; print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument(
        "--seen",
        required=True,
        type=Path,
        help="summary.json of the training run (its label_counts)",
    )
    parser.add_argument(
        "--head",
        action="append",
        required=True,
        help="NAME=FOLDER, or cam0 (untrained CAM initialisation); repeatable",
    )
    parser.add_argument("--photos", type=Path, default=Path("data/eval_photos/dev"))
    parser.add_argument("--groundtruth", type=Path, default=Path("data/groundtruth/dev"))
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    seen = {int(k) for k in json.loads(args.seen.read_text())["label_counts"]}
    spec = get_spec(args.backbone)
    body = build_backbone(spec)
    data = load_held_out(args.photos, args.groundtruth, spec.input_size, spec.resize_size)
    figures = {}
    for item in args.head:
        name, _, source = item.partition("=")
        s = score(build_explainer(body, source or name), data)
        unseen = np.array([c not in seen for c in s["top1"]])
        figures[name] = {"unseen": summarise(s, data, unseen), "seen": summarise(s, data, ~unseen)}
    print(f"{spec.name}: {len(data.images)} held-out images, {len(seen)} training classes")
    columns = ["n", "AD50", "IC50", "AD15", "IC15", "pointing_n", "pointing"]
    print("| head | classes | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for name, groups in figures.items():
        for group, values in groups.items():
            cells = [f"{values[c]:.0f}" if c.endswith("n") else f"{values[c]:.1f}" for c in columns]
            print(f"| {name} | {group} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()

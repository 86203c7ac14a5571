"""The evaluation side of the offline pool: ground-truth composites and evaluation photos.

Evaluation sees the other half of the stamps (as composites with exact object masks, kept only
when the classifier's answer is driven by the object) and the evaluation photos, each divided
into a dev part (to tune on) and a test part (for the final numbers).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ttame.data.pool.composites import GREY, Box, Layout, composite, load_background, load_stamp, square
from ttame.data.pool.sources.collect import collect_sources
from ttame.data.pool.sources.common import DEFAULT_CACHE, Background, Part, PoolSources, Stamp
from ttame.errors import SourceError

PARTS: tuple[Part, ...] = ("dev", "test")


@dataclass(frozen=True)
class GroundTruthStats:
    """How the ground-truth set was built: what was kept and why the rest was not."""

    kept: int
    candidates: int
    rejected: dict[str, int]


def _to_batch(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL RGB images -> float tensor B x 3 x H x W in [0, 1]."""
    array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(255)


def _forget_previous(out_dir: Path, keys: Sequence[str]) -> None:
    """Delete the files an earlier run listed in ``manifest.json``, so reruns leave no strays."""
    manifest = out_dir / "manifest.json"
    if manifest.exists():
        for entry in json.loads(manifest.read_text()):
            for key in keys:
                (out_dir / entry[key]).unlink(missing_ok=True)
        manifest.unlink()


@dataclass(frozen=True)
class _Candidate:
    """One ground-truth candidate and the two control views the filter classifies."""

    stamp: Stamp
    background: Background
    layout: Layout
    image: Image.Image
    mask: np.ndarray
    box: Box
    on_grey: Image.Image
    background_alone: Image.Image

    @classmethod
    def make(
        cls, stamp: Stamp, backgrounds: Sequence[Background], layout: Layout, size: int
    ) -> _Candidate:
        """Render the composite, the same object on plain grey, and the background alone."""
        background = backgrounds[layout.background]
        crop = layout.background_crop(load_background(background.path))
        picture = load_stamp(stamp.path)
        image, mask, box = composite(picture, crop, layout.scale, layout.position, size)
        grey = Image.new("RGB", (size, size), GREY)
        on_grey, _, _ = composite(picture, grey, layout.scale, layout.position, size)
        return cls(stamp, background, layout, image, mask, box, on_grey, square(crop, size))

    def save(self, out_dir: Path, name: str, label: int, confidence: float) -> dict:
        """Write the image and its 0/255 mask; return the manifest entry."""
        self.image.save(out_dir / "images" / f"{name}.png")
        Image.fromarray(self.mask.astype(np.uint8) * 255).save(out_dir / "masks" / f"{name}.png")
        return {
            "image": f"images/{name}.png",
            "mask": f"masks/{name}.png",
            "box": list(self.box),
            "stamp": self.stamp.key,
            "background": self.background.key,
            "label": label,
            "confidence": round(confidence, 4),
            "scale": round(self.layout.scale, 4),
            "position": [round(p, 4) for p in self.layout.position],
        }


def build_groundtruth_set(
    out_dir: Path,
    classify: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    seed: int,
    *,
    sources: PoolSources | None = None,
    cache_dir: Path = DEFAULT_CACHE,
    size: int = 224,
    min_confidence: float = 0.3,
    max_per_stamp: int = 3,
    max_draws: int | None = None,
    batch_size: int = 16,
    class_names: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
    part: Part | None = None,
) -> GroundTruthStats:
    """Write up to ``n`` composites whose predicted class is driven by the pasted object.

    A candidate (an evaluation-half stamp on a random background crop at a random scale and
    position) is kept only when the classifier's top-1 is the same on a plain grey background,
    different on the background alone, and its confidence exceeds ``min_confidence``: then a
    good explanation must point at the object, and the mask says exactly where it is. Stamps are
    tried in a seeded round-robin, at most ``max_per_stamp`` kept each, so no few easy objects
    dominate. ``classify`` maps a B x 3 x size x size batch in raw [0, 1] RGB to logits
    (normalise inside it). Writes ``images/NAME.png``, ``masks/NAME.png`` (0/255) and
    ``manifest.json``; the result depends only on ``seed`` and the classifier. ``progress`` is
    called with the number of composites kept after each batch. At most ``max_draws`` (default
    ``20 * n``) candidates are drawn, so a classifier that rejects everything cannot loop forever.
    ``part`` (``"dev"`` or ``"test"``) limits the stamps to that part of the evaluation half, so
    the two sets never show the same object; None uses the whole half.
    """
    if sources is None:
        sources = collect_sources(cache_dir, download=False)
    stamps = sources.stamps_in("eval", part)
    backgrounds = sources.backgrounds
    if not stamps or not backgrounds:
        which = f"{part} " if part else ""
        raise SourceError(f"no {which}evaluation stamps or backgrounds; run scripts/build_pool.py")
    out_dir = Path(out_dir)
    _forget_previous(out_dir, ("image", "mask"))
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    limit = max_draws if max_draws is not None else 20 * n
    order = np.random.default_rng(seed).permutation(len(stamps))
    per_stamp: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    manifest: list[dict] = []
    draws = examined = 0
    while len(manifest) < n and draws < limit:
        batch: list[_Candidate] = []
        while len(batch) < batch_size and draws < limit:
            stamp = stamps[int(order[draws % len(stamps)])]
            rng = np.random.default_rng([seed, draws])
            draws += 1
            if per_stamp[stamp.key] < max_per_stamp:
                layout = Layout.draw(rng, len(backgrounds))
                batch.append(_Candidate.make(stamp, backgrounds, layout, size))
        if not batch:
            break
        views = [view for c in batch for view in (c.image, c.on_grey, c.background_alone)]
        with torch.inference_mode():
            probs = torch.softmax(classify(_to_batch(views)).float(), dim=1)
        confidence, top1 = probs.max(dim=1)
        for i, candidate in enumerate(batch):
            if len(manifest) == n:
                break
            examined += 1
            label, grey_label, alone_label = (int(t) for t in top1[3 * i : 3 * i + 3])
            score = float(confidence[3 * i])
            if score <= min_confidence:
                rejected["low confidence"] += 1
            elif grey_label != label:
                rejected["object alone disagrees"] += 1
            elif alone_label == label:
                rejected["background alone agrees"] += 1
            elif per_stamp[candidate.stamp.key] == max_per_stamp:
                rejected["stamp used enough"] += 1
            else:
                per_stamp[candidate.stamp.key] += 1
                name = f"{len(manifest):04d}_{candidate.stamp.path.stem}"
                entry = candidate.save(out_dir, name, label, score)
                if class_names is not None:
                    entry["class_name"] = class_names[label]
                manifest.append(entry)
        if progress is not None:
            progress(len(manifest))
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return GroundTruthStats(len(manifest), examined, dict(rejected))


def _file_name(key: str) -> str:
    """A flat file name for a source key (Scratch project names hold spaces)."""
    return re.sub(r"[/\s]", "_", key)


def export_eval_photos(
    out_dir: Path, sources: PoolSources | None = None, *, cache_dir: Path = DEFAULT_CACHE
) -> list[dict[str, str]]:
    """Copy the evaluation-split photos, unchanged, into ``out_dir/dev`` and ``out_dir/test``.

    Tune on ``dev``; keep ``test`` for the final numbers. Writes one ``manifest.json`` (file,
    part, key, source, licence, credit, origin per photo; ``file`` is relative to ``out_dir``)
    and a human-readable ``SOURCES.md``; returns the manifest entries.
    """
    if sources is None:
        sources = collect_sources(cache_dir, download=False)
    out_dir = Path(out_dir)
    _forget_previous(out_dir, ("file",))
    entries = []
    for part in PARTS:
        (out_dir / part).mkdir(parents=True, exist_ok=True)
        for photo in sources.photos_in("eval", part):
            name = f"{part}/{_file_name(photo.key)}"
            (out_dir / name).write_bytes(photo.data)
            entries.append(
                {
                    "file": name,
                    "part": part,
                    "key": photo.key,
                    "source": photo.source,
                    "licence": photo.licence,
                    "credit": photo.credit,
                    "origin": photo.origin,
                }
            )
    (out_dir / "manifest.json").write_text(json.dumps(entries, indent=1) + "\n")
    lines = [
        "# Evaluation photos",
        "",
        "Never used for training. Tune on `dev/`; `test/` is for the final numbers only.",
        "Rebuild with `python scripts/build_pool.py`.",
        "",
        "| file | part | source | licence | credit | origin |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {e['file']} | {e['part']} | {e['source']} | {e['licence']} | {e['credit']} "
        f"| {e['origin']} |"
        for e in entries
    ]
    (out_dir / "SOURCES.md").write_text("\n".join(lines) + "\n")
    return entries

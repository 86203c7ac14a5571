"""The images of an evaluation: found, numbered, sharded, loaded in batches with their regions.

Ground truth comes as a folder with ``images/``, ``masks/`` and a ``manifest.json`` (written by
:func:`ttame.data.pool.groundtruth.build_groundtruth_set`); an image that cannot be read is
reported, never fatal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ttame.errors import ImageError, TTameError
from ttame.images import load_image, preprocess
from ttame.metrics.localisation import box_mask

REGIONS = ("mask", "box")
"""The kinds of ground-truth region: the object's exact mask and its bounding box."""
LOCALISATION = ("pointing", "energy")
"""The localisation metrics scored in each region."""


@dataclass(frozen=True)
class Item:
    """One image of the run, with its place in the full (unsharded) list."""

    index: int
    path: Path
    mask: Path | None = None
    box: tuple[int, int, int, int] | None = None


def spread(count: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(count)`` (all of them when it is None).

    A subset taken from the start of a sorted folder would be one source's photos; spread
    evenly, it samples every part of the list.
    """
    if limit is None or limit >= count:
        return list(range(count))
    return [i * count // limit for i in range(limit)]


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

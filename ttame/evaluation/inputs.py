"""The images of an evaluation: found, numbered, sharded, loaded in batches with their regions.

The images are a folder's, or those a labelled list file names (the paper's
``Evaluation_2000.txt``: ``relative/path label`` per line, local or ``hf://OWNER/NAME/PATH``),
in the list's order, each with its ground-truth label. Ground truth regions come as a folder
with ``images/``, ``masks/`` and a ``manifest.json`` (written by
:func:`ttame.data.pool.groundtruth.build_groundtruth_set`); an image that cannot be read is
reported, never fatal, but a listed image that does not exist stops the run before it starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ttame.data.folders import read_list_file
from ttame.errors import DataError, HeadError, ImageError, TTameError
from ttame.hub.client import HF_SCHEME, HubRef, hub_file
from ttame.images import load_image, preprocess
from ttame.metrics.localisation import box_mask

REGIONS = ("mask", "box")
"""The kinds of ground-truth region: the object's exact mask and its bounding box."""
LOCALISATION = ("pointing", "energy")
"""The localisation metrics scored in each region."""
SHOWN_MISSING = 5
"""How many missing listed images an error names."""


@dataclass(frozen=True)
class Item:
    """One image of the run, with its place in the full (unsharded) list."""

    index: int
    path: Path
    mask: Path | None = None
    box: tuple[int, int, int, int] | None = None
    label: int | None = None
    """The ground-truth class, when a labelled list named the image."""


def spread(count: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(count)`` (all of them when it is None).

    A subset taken from the start of a sorted folder would be one source's photos; spread
    evenly, it samples every part of the list.
    """
    if limit is None or limit >= count:
        return list(range(count))
    return [i * count // limit for i in range(limit)]


def fetch_list(reference: str) -> Path:
    """The list file ``reference`` names: a local path, or ``hf://OWNER/NAME[@REV]/PATH``.

    A Hub file comes from the Hugging Face cache, else is downloaded if the Hub answers
    (:func:`ttame.hub.client.hub_file`), so a list fetched once works offline.
    """
    if not reference.startswith(HF_SCHEME):
        path = Path(reference)
        if not path.is_file():
            raise DataError(f"List file '{reference}' does not exist.")
        return path
    malformed = f"'{reference}': write {HF_SCHEME}OWNER/NAME[@REVISION]/PATH/LIST.txt."
    try:
        ref = HubRef.parse(reference)
    except HeadError as exc:
        raise DataError(malformed) from exc
    if ref.filename is None:
        raise DataError(malformed)
    return hub_file(ref.repo_id, ref.filename, revision=ref.revision, error=DataError)


def listed_images(reference: str, root: str | Path) -> tuple[list[Path], list[int]]:
    """The images a labelled list names under ``root``, in the list's order, and their labels.

    Every line needs a label (a line without one is an error naming its number), and every
    image must exist: a run over part of the list would not be the list's numbers, so the
    missing images are counted and the first few named before anything is computed.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DataError(f"Image folder '{folder}' does not exist.")
    entries = read_list_file(fetch_list(reference), folder, require_labels=True)
    missing = [path for path, _ in entries if not path.is_file()]
    if missing:
        shown = ", ".join(str(p.relative_to(folder)) for p in missing[:SHOWN_MISSING])
        more = ", ..." if len(missing) > SHOWN_MISSING else ""
        raise DataError(
            f"{len(missing)} of the {len(entries)} images listed in '{reference}' are missing "
            f"under '{folder}': {shown}{more}. --imagenet-val must be the folder the list's "
            "paths are relative to."
        )
    labels = [label for _, label in entries if label is not None]  # every line has one
    return [path for path, _ in entries], labels


def check_labels(items: Sequence[Item], num_classes: int) -> None:
    """Fail on a label the backbone has no class for, naming the first such image."""
    for item in items:
        if item.label is not None and not 0 <= item.label < num_classes:
            raise DataError(
                f"'{item.path}' is labelled {item.label}, but the backbone has classes "
                f"0 to {num_classes - 1}."
            )


def build_items(
    images: Sequence[Path],
    groundtruth: str | Path | None = None,
    labels: Sequence[int] | None = None,
) -> list[Item]:
    """Number the images, with their ``labels``; attach mask and box from ``manifest.json``.

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
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    return [
        Item(
            i,
            path,
            regions.get(path.name, {}).get("mask"),
            regions.get(path.name, {}).get("box"),
            None if labels is None else labels[i],
        )
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

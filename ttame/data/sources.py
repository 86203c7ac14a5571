"""What a training run learns from: a folder, list files, or the offline pool, with validation.

Exactly one source is chosen (``--data``, ``--train-list`` or ``--pool``); each gives PIL images
to train on, optionally images to validate on, and a line saying where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Subset

from ttame.data.folders import (
    ImageFiles,
    find_training_images,
    hash_split,
    imagenet_layout,
    read_list_file,
)
from ttame.data.pool.composites import CompositeMix
from ttame.data.pool.sources.collect import collect_sources
from ttame.data.pool.training import TrainingPool
from ttame.data.sampling import Images
from ttame.errors import DataError, SourceError


@dataclass
class DataSources:
    """What to train and validate on (PIL images), and a line saying where they came from."""

    train: Images
    val: Images | None
    description: str


def pool_sources(
    pool_dir: str | Path,
    composites_per_epoch: int,
    size: int,
    val_composites: int,
    seed: int,
    mix: CompositeMix | None = None,
) -> DataSources:
    """The offline pool's training side: its photos plus composites drawn anew every epoch.

    Validation uses ``val_composites`` fixed composites of the same training-half stamps (a
    different seed, new backgrounds crops and placements), so the evaluation half of the pool
    stays unseen by anything that happens during training. ``mix`` shapes the training
    composites only; validation keeps single stamps, so runs with other mixes compare.
    """
    folder = Path(pool_dir)
    cache = folder / "cache" if (folder / "cache").is_dir() else folder
    try:
        sources = collect_sources(cache, download=False)
        train = TrainingPool(
            sources, composites_per_epoch=composites_per_epoch, size=size, seed=seed, mix=mix
        )
        val: Images | None = None
        if val_composites:
            held = TrainingPool(
                sources, composites_per_epoch=val_composites, size=size, seed=seed + 1
            )
            val = Subset(held, range(len(held.photos), len(held)))
    except SourceError as exc:
        raise DataError(f"Offline pool at '{folder}': {exc}") from exc
    description = (
        f"offline pool {folder}: {len(train.photos)} photos + {composites_per_epoch} composites "
        f"of {len(train.stamps)} stamps per epoch; validation {val_composites} fixed composites"
    )
    return DataSources(train, val, description)


def folder_sources(root: str | Path, val_fraction: float) -> DataSources:
    """A folder of images: the ImageNet layout if it has one, else every image under it.

    Without a ``val`` folder, a stable ``val_fraction`` of the files (by a hash of their names)
    is held out for validation.
    """
    root = Path(root)
    layout = imagenet_layout(root)
    if layout is not None:
        train_dir, val_dir = layout
        train = find_training_images(train_dir)
        if val_dir is not None:
            val = find_training_images(val_dir)
            return DataSources(
                ImageFiles(train),
                ImageFiles(val),
                f"ImageNet layout {root}: {len(train)} train, {len(val)} val images",
            )
        root, paths = train_dir, train
    else:
        paths = find_training_images(root)
    train, val = hash_split(paths, root, val_fraction)
    if not train:
        raise DataError(f"All {len(paths)} images under '{root}' fell in the validation split.")
    return DataSources(
        ImageFiles(train),
        ImageFiles(val) if val else None,
        f"folder {root}: {len(train)} train, {len(val)} validation images (hash split)",
    )


def list_sources(
    train_list: str | Path, val_list: str | Path | None, root: str | Path | None
) -> DataSources:
    """Images named by list files in the reference format (labels are ignored)."""
    train = [p for p, _ in read_list_file(train_list, root)]
    val = [p for p, _ in read_list_file(val_list, root)] if val_list else []
    missing = [p for p in train[:1] + val[:1] if not p.is_file()]
    if missing:
        raise DataError(
            f"'{missing[0]}' from the list file does not exist; pass the folder the paths are "
            "relative to with --data-root."
        )
    return DataSources(
        ImageFiles(train),
        ImageFiles(val) if val else None,
        f"list files {train_list} ({len(train)})" + (f", {val_list} ({len(val)})" if val else ""),
    )

"""Training data: image folders, the ImageNet layout, list files and the offline pool.

No labels are needed: the head learns from the backbone's own top-1 on each clean image, so every
source only yields images. Items are addressed as ``(epoch, index)`` and each item's augmentation
is seeded by ``(seed, epoch, index)``: an epoch's batches are the same whatever the number of
DataLoader workers or processes, and a run resumed in the middle of an epoch sees exactly the
batches the interrupted run would have seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler, Sampler, Subset
from torchvision import transforms

from ttame.errors import TTameError
from ttame.images import load_image

if TYPE_CHECKING:
    from ttame.pool import CompositeMix

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class DataError(TTameError, ValueError):
    """A data folder, list file or pool that cannot be used for training."""


class ImageFiles(Dataset):
    """Images read from files (EXIF-aware, any mode to RGB); items are PIL images."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        return load_image(self.paths[index])


def find_images(root: str | Path) -> list[Path]:
    """Every image file under ``root``, recursively, in a stable (sorted) order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Data folder '{root}' does not exist.")
    paths = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not paths:
        raise DataError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) were found under '{root}'."
        )
    return paths


def read_list_file(
    path: str | Path, root: str | Path | None = None
) -> list[tuple[Path, int | None]]:
    """Parse the reference list format: one ``relative/path [label]`` per line.

    Paths are relative to ``root`` (default: the list file's folder); blank lines and ``#``
    comments are skipped. The label, when present, must be an integer; training ignores it (the
    backbone's top-1 is the label), so it is returned for reporting only. A path may contain
    spaces when the line ends with a label.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Cannot read list file '{path}': {exc}") from exc
    entries: list[tuple[Path, int | None]] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.rsplit(maxsplit=1)
        label: int | None = None
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            name, label = parts[0], int(parts[1])
        else:
            name = text
        if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(
                f"{path}:{number}: '{name}' is not an image path (expected 'relative/path "
                "label' per line)."
            )
        entries.append((base / name, label))
    if not entries:
        raise DataError(f"List file '{path}' names no images.")
    return entries


def imagenet_layout(root: str | Path) -> tuple[Path, Path | None] | None:
    """``(root/train, root/val)`` when ``root`` has the ImageNet layout, else None.

    The layout is a ``train`` folder (class sub-folders, or any tree of images) and optionally a
    ``val`` folder beside it.
    """
    root = Path(root)
    train, val = root / "train", root / "val"
    if not train.is_dir():
        return None
    return train, val if val.is_dir() else None


def hash_split(paths: Sequence[Path], root: Path, fraction: float) -> tuple[list[Path], list[Path]]:
    """Split files into (train, validation) by a hash of their path relative to ``root``.

    The split depends on nothing but the names, so adding files never moves the others.
    """
    train, val = [], []
    for p in paths:
        key = p.relative_to(root).as_posix().encode("utf-8")
        bucket = int(hashlib.sha1(key).hexdigest()[:8], 16) / 2**32
        (val if bucket < fraction else train).append(p)
    return train, val


def eval_transform(input_size: int, resize_size: int) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the shorter side and centre-crop: the view the explainer itself uses."""
    return transforms.Compose(
        [transforms.Resize(resize_size), transforms.CenterCrop(input_size), transforms.ToTensor()]
    )


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch, index)``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0] >> 1)


class SeededItems(Dataset):
    """Items addressed by ``(epoch, index)``, augmented with a seed of their own.

    ``images[index]`` must give a PIL image; sources with a ``set_epoch`` method (the offline
    pool draws new composites every epoch) are told the epoch first, so this works in persistent
    DataLoader workers too. The global torch RNG is restored afterwards.
    """

    def __init__(
        self,
        images: Dataset,
        transform: Callable[[Image.Image], torch.Tensor],
        seed: int = 0,
    ) -> None:
        self.images = images
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        epoch, index = key
        set_epoch = getattr(self.images, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, index))
            return self.transform(self.images[index])


class EpochSampler(Sampler[tuple[int, int]]):
    """One process's share of an epoch as ``(epoch, index)`` keys, resumable mid-epoch.

    The order is :class:`~torch.utils.data.DistributedSampler`'s (a permutation seeded by
    ``seed + epoch``, dealt round-robin to the processes); ``set_epoch(epoch, skip)`` starts
    after the first ``skip`` keys, which is how a resumed run skips the batches already done.
    ``drop_last`` leaves out the remainder rather than repeating images to fill the processes'
    shares, so a run takes the same number of steps on any number of processes.
    """

    def __init__(
        self,
        length: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        self._order = DistributedSampler(
            range(length), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
            drop_last=drop_last,
        )
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Choose the epoch and how many of its leading keys to leave out."""
        self.epoch = epoch
        self.skip = skip
        self._order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self._order) - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(self._order)[self.skip :]
        return iter([(self.epoch, int(i)) for i in indices])


@dataclass
class DataSources:
    """What to train and validate on (PIL images), and a line saying where they came from."""

    train: Dataset
    val: Dataset | None
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
    from ttame.pool import TrainingPool
    from ttame.pool_sources import SourceError, collect_sources

    folder = Path(pool_dir)
    cache = folder / "cache" if (folder / "cache").is_dir() else folder
    try:
        sources = collect_sources(cache, download=False)
        train = TrainingPool(
            sources, composites_per_epoch=composites_per_epoch, size=size, seed=seed, mix=mix
        )
        val: Dataset | None = None
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
        train = find_images(train_dir)
        if val_dir is not None:
            val = find_images(val_dir)
            return DataSources(
                ImageFiles(train),
                ImageFiles(val),
                f"ImageNet layout {root}: {len(train)} train, {len(val)} val images",
            )
        root, paths = train_dir, train
    else:
        paths = find_images(root)
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

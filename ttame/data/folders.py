"""Training images on disk: folders (searched recursively), the ImageNet layout, list files.

No labels are needed: the head learns from the backbone's own top-1 on each clean image, so
every source only yields images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from ttame.errors import DataError, ImageError
from ttame.images import IMAGE_SUFFIXES, find_images, is_image_file, load_image


class ImageFiles(Dataset):
    """Images read from files (EXIF-aware, any mode to RGB); items are PIL images."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        return load_image(self.paths[index])


def find_training_images(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (:func:`ttame.images.find_images`); none is an error."""
    root = Path(root)
    try:
        paths = find_images(root)
    except ImageError as exc:
        raise DataError(f"Data folder '{root}' does not exist.") from exc
    if not paths:
        raise DataError(f"No images ({', '.join(IMAGE_SUFFIXES)}) were found under '{root}'.")
    return paths


def read_list_file(
    path: str | Path, root: str | Path | None = None, require_labels: bool = False
) -> list[tuple[Path, int | None]]:
    """Parse the reference list format: one ``relative/path [label]`` per line.

    Paths are relative to ``root`` (default: the list file's folder); blank lines and ``#``
    comments are skipped. The label, when present, must be an integer; training ignores it (the
    backbone's top-1 is the label), so it is returned for reporting only, while an evaluation
    against the labels sets ``require_labels``. A path may contain spaces when the line ends
    with a label.
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
        if not is_image_file(Path(name)):
            raise DataError(
                f"{path}:{number}: '{name}' is not an image path (expected 'relative/path "
                "label' per line)."
            )
        if require_labels and label is None:
            raise DataError(
                f"{path}:{number}: '{name}' has no integer label (expected 'relative/path "
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
    train: list[Path] = []
    val: list[Path] = []
    for p in paths:
        key = p.relative_to(root).as_posix().encode("utf-8")
        bucket = int(hashlib.sha1(key).hexdigest()[:8], 16) / 2**32
        (val if bucket < fraction else train).append(p)
    return train, val

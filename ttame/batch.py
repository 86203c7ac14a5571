"""Many image files explained in batches, with decoding overlapping the backbone's passes.

Threads decode and crop the next files while the backbone runs on the current batch (PIL
releases the GIL while it decodes and resizes), so a folder is explained at close to the
backbone's own batched speed. Each batch costs one backbone pass (:meth:`Explainer.explain`).
A file that cannot be read becomes a result with an ``error`` and the others go on.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ttame.errors import ImageError
from ttame.explainer import Explainer
from ttame.explanation import Explanation
from ttame.images import Geometry, load_image


@dataclass
class Decoded:
    """One file ready for the backbone (its input, its geometry), or why it is not."""

    path: Path
    tensor: torch.Tensor | None = None
    geometry: Geometry | None = None
    image: Image.Image | None = None
    error: str | None = None


@dataclass
class FileExplanation:
    """The explanation of one file, or the one-line ``error`` that stopped it.

    ``explanation`` keeps a batch axis of 1 (maps ``1 x H x W``, or ``1 x M x H x W`` when
    several classes were asked for); ``seconds`` is this file's share of its batch's
    ``explain`` call; ``image`` is the decoded photo when it was kept (for overlays).
    """

    path: Path
    explanation: Explanation | None = None
    geometry: Geometry | None = None
    image: Image.Image | None = None
    seconds: float = 0.0
    error: str | None = None


def one_line(error: Exception) -> str:
    """An error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def decode(explainer: Explainer, path: Path, keep_image: bool) -> Decoded:
    """Read and crop one file for ``explainer``; an unreadable file gives its error."""
    try:
        picture = load_image(path)
    except ImageError as exc:
        return Decoded(path, error=one_line(exc))
    tensor, geometry = explainer.preprocess(picture)
    return Decoded(path, tensor, geometry, picture if keep_image else None)


def in_order(
    work: Callable[[Path], Decoded], paths: Iterable[Path], workers: int, ahead: int
) -> Iterator[Decoded]:
    """``work`` on every path in threads, results in the paths' order, ``ahead`` in flight."""
    if workers < 1:
        yield from map(work, paths)
        return
    remaining = iter(paths)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[Future[Decoded]] = deque(
            pool.submit(work, path) for path in itertools.islice(remaining, ahead)
        )
        while pending:
            done = pending.popleft().result()
            pending.extend(pool.submit(work, path) for path in itertools.islice(remaining, 1))
            yield done


def explain_files(
    explainer: Explainer,
    paths: Sequence[Path],
    *,
    batch: int = 16,
    classes: int | Sequence[int] | None = None,
    top: int | None = None,
    workers: int = 2,
    keep_images: bool = False,
) -> Iterator[FileExplanation]:
    """Explain image files in batches of ``batch``, one result per path, in order.

    ``classes``: None (each image's top-1), one index for every image, or a list of indices
    explained for every image (maps ``M`` per image); ``top=k``: each image's k most
    probable classes. ``workers`` threads decode ahead of the backbone (0: decode inline).
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1; got {batch}.")
    if isinstance(classes, Sequence) and not classes:
        raise ValueError("Give at least one class.")
    files = in_order(
        lambda path: decode(explainer, path, keep_images), paths, workers, ahead=2 * batch
    )
    while chunk := list(itertools.islice(files, batch)):
        good = [d for d in chunk if d.error is None]
        results: dict[int, FileExplanation] = {}
        if good:
            images = torch.stack([d.tensor for d in good if d.tensor is not None])
            start = time.perf_counter()
            answer = explainer.explain(
                images.to(explainer.device), _per_image(classes, len(good)), top=top
            )
            share = (time.perf_counter() - start) / len(good)
            for i, item in enumerate(good):
                one = Explanation(
                    answer.maps[i : i + 1],
                    answer.classes[i : i + 1],
                    answer.probabilities[i : i + 1],
                )
                results[id(item)] = FileExplanation(
                    item.path, one, item.geometry, item.image, share
                )
        for item in chunk:
            yield results.get(id(item)) or FileExplanation(item.path, error=item.error)


def _per_image(classes: int | Sequence[int] | None, count: int) -> int | torch.Tensor | None:
    """A list of classes for every image as the ``count x M`` tensor ``explain`` takes."""
    if classes is None or isinstance(classes, int):
        return classes
    return torch.tensor(list(classes)).expand(count, -1)

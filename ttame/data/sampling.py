"""Items addressed by ``(epoch, index)``: the same batches on any number of workers or processes.

Each item's augmentation is seeded by ``(seed, epoch, index)``: an epoch's batches are the same
whatever the number of DataLoader workers or processes, and a run resumed in the middle of an
epoch sees exactly the batches the interrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, cast

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler, Sampler


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch, index)``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0] >> 1)


class Images(Protocol):
    """A sized collection of pictures by index: a folder, the pool, a subset of either."""

    def __len__(self) -> int:
        """How many pictures."""
        ...

    def __getitem__(self, index: int) -> Any:
        """Picture ``index`` (a PIL image)."""
        ...


class SeededItems(Dataset[torch.Tensor]):
    """Items addressed by ``(epoch, index)``, augmented with a seed of their own.

    ``images[index]`` must give a PIL image; sources with a ``set_epoch`` method (the offline
    pool draws new composites every epoch) are told the epoch first, so this works in persistent
    DataLoader workers too. The global torch RNG is restored afterwards.
    """

    def __init__(
        self,
        images: Images,
        transform: Callable[[Image.Image], torch.Tensor],
        seed: int = 0,
    ) -> None:
        self.images = images
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        with self.seeded(key):
            return self.transform(self.images[key[1]])

    @contextmanager
    def seeded(self, key: tuple[int, int]) -> Iterator[None]:
        """Item ``key``'s epoch set on the images and its seed on torch's RNG, restored after."""
        epoch, index = key
        set_epoch = getattr(self.images, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, index))
            yield


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
        self._order: DistributedSampler[int] = DistributedSampler(
            cast(Dataset[int], range(length)),  # it only takes the length and the indices
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
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

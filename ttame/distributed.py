"""One process of a ``torchrun`` job, or the only one: rank, world size, device.

Training and evaluation both start here: a run launched by ``torchrun`` joins the process
group (gloo on CPUs, NCCL on GPUs) and takes the GPU of its local rank; a plain run is rank 0
of a world of one and never touches ``torch.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ttame.errors import TTameError


@dataclass
class Runtime:
    """Rank, number of processes and device of the current process."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and shows progress."""
        return self.rank == 0


def setup_runtime(device: str | None = None) -> Runtime:
    """Join the process group when launched by ``torchrun`` and choose this process's device.

    ``device`` None or ``"auto"``: the local rank's GPU when there is one, else the CPU;
    ``"cuda"`` under ``torchrun`` means the local rank's GPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = "cuda" if device in (None, "auto") and torch.cuda.is_available() else device
    chosen = torch.device("cpu" if name in (None, "auto") else str(name))
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise TTameError(f"--device {name}: no CUDA device is available.")
        if world_size > 1 and chosen.index is None:
            chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if world_size == 1:
        return Runtime(0, 1, chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Runtime(dist.get_rank(), world_size, chosen)


def reduce_sum(values: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum a tensor over the processes, in place (identity on one)."""
    if runtime.world_size > 1:
        dist.all_reduce(values)
    return values


def gather_to_main(value: object, runtime: Runtime) -> list[object] | None:
    """Every rank's ``value`` on rank 0, in rank order; None on the other ranks."""
    if runtime.world_size == 1:
        return [value]
    parts: list[object] | None = [None] * runtime.world_size if runtime.is_main else None
    dist.gather_object(value, parts, dst=0)
    return parts


def shutdown(runtime: Runtime) -> None:
    """Leave the process group, if this run joined one."""
    if runtime.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()

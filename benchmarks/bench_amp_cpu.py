"""Is bfloat16 autocast faster than float32 on this CPU? One ratio, measured in one run.

``train.py --amp`` pays off only where the CPU has bfloat16 instructions (AVX512-BF16, AMX);
elsewhere PyTorch emulates them and a step gets several times slower. Run this before a long
CPU run with ``--amp``:

    python benchmarks/bench_amp_cpu.py [--batch 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torchvision


def seconds_per_batch(
    model: torch.nn.Module, batch: torch.Tensor, amp: bool, repeats: int
) -> float:
    """Mean wall time of one forward pass, after one warm-up pass."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        model(batch)
        start = time.perf_counter()
        for _ in range(repeats):
            model(batch)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2().eval()
    batch = torch.rand(args.batch, 3, 224, 224)
    fp32 = seconds_per_batch(model, batch, False, args.repeats)
    bf16 = seconds_per_batch(model, batch, True, args.repeats)
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(
        f"mobilenet_v2 forward, batch {args.batch}: float32 {fp32:.3f} s, "
        f"bfloat16 autocast {bf16:.3f} s; bfloat16 / float32 = {bf16 / fp32:.2f}"
    )


if __name__ == "__main__":
    main()

"""Explanation throughput of T-TAME against the bare backbone forward, on the paper's backbones.

    python benchmarks/bench_explain_throughput.py --batch 1,16 --dtype fp32,bf16
    python benchmarks/bench_explain_throughput.py --device cuda --batch 256 --dtype bf16 \
        --channels-last [--compile]

Random weights (throughput does not depend on them) and a fresh head. ``explain`` is the whole
call a user makes (input checks, one backbone pass with the taps, the head for each image's top-1
class, normalisation and upsampling to the input size); the bare forward is the same backbone's
logits alone. The two are interleaved so that machine noise hits both alike; the ratio
``explain / forward`` (throughputs) is the figure to quote: 1.0 means explaining is free.
``bf16`` runs both under ``torch.autocast``; ``--channels-last`` converts the model and the input;
``--compile`` compiles the backbone network with ``torch.compile`` for both.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ttame.errors import UntrainedHeadWarning
from ttame.explainer import Explainer

PAPER_BACKBONES = "vgg16,resnet50,vit_b_16"
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def machine(device: torch.device) -> str:
    """One line naming the processor (or GPU), threads and versions, for the record."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        cpuinfo = Path("/proc/cpuinfo")
        lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
        models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        name = f"{models[0] if models else platform.processor()} ({len(models)} logical CPUs)"
    return (
        f"{name}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{datetime.date.today().isoformat()}"
    )


def seconds_per_call(
    calls: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, float]:
    """Median wall seconds of each call, interleaved, after ``warmup`` rounds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + repeats):
        for name, call in calls.items():
            sync()
            start = time.perf_counter()
            call()
            sync()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(
    name: str,
    batch: int,
    dtype: str,
    device: torch.device,
    channels_last: bool,
    compile_model: bool,
    warmup: int,
    repeats: int,
) -> tuple[float, float]:
    """Throughput (images/s) of the bare forward and of ``explain`` for one configuration."""
    warnings.simplefilter("ignore", UntrainedHeadWarning)
    torch.manual_seed(0)
    explainer = Explainer.from_pretrained(backbone=name, pretrained_backbone=False).to(device)
    size = explainer.spec.input_size
    images = torch.rand(batch, 3, size, size, device=device)
    if channels_last:
        explainer = explainer.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if compile_model:
        explainer.backbone.model = torch.compile(explainer.backbone.model)
    autocast = (
        torch.autocast(device.type, dtype=DTYPES[dtype])
        if DTYPES[dtype] is not None
        else contextlib.nullcontext()
    )

    def forward() -> object:
        return explainer.backbone(images)

    def explain() -> object:
        return explainer.explain(images)

    with torch.inference_mode(), autocast:
        calls = {"forward": forward, "explain": explain}
        seconds = seconds_per_call(calls, device, warmup, repeats)
    return batch / seconds["forward"], batch / seconds["explain"]


def main() -> None:
    """Parse the options, run every configuration, print one markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default=PAPER_BACKBONES, help="comma-separated names")
    parser.add_argument("--batch", default="1,16", help="comma-separated batch sizes")
    parser.add_argument("--dtype", default="fp32", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels-last", action="store_true", help="NHWC model and input")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # Random weights give denormal floats that slow CPU arithmetic several-fold; trained weights
    # rarely do. Flushing them to zero measures the arithmetic a real model costs.
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    dtypes = args.dtype.split(",")
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"unknown dtype {', '.join(unknown)}; choose from {', '.join(DTYPES)}")
    layout = "channels-last" if args.channels_last else "contiguous"
    print(f"Machine: {machine(device)}")
    print(
        f"Layout: {layout}; torch.compile: {'yes' if args.compile else 'no'}; "
        f"median of {args.repeats} after {args.warmup} warm-up rounds"
    )
    print()
    print("| backbone | batch | dtype | forward (img/s) | explain (img/s) | explain / forward |")
    print("|---|---|---|---|---|---|")
    for name in args.backbones.split(","):
        for batch in (int(b) for b in args.batch.split(",")):
            for dtype in dtypes:
                forward, explain = measure(
                    name,
                    batch,
                    dtype,
                    device,
                    args.channels_last,
                    args.compile,
                    args.warmup,
                    args.repeats,
                )
                print(
                    f"| {name} | {batch} | {dtype} | {forward:.1f} | {explain:.1f} "
                    f"| {explain / forward:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()

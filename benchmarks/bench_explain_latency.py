"""Latency of one explanation on the CPU: ``explain`` vs the bare backbone forward, and the CLI.

    python benchmarks/bench_explain_latency.py [--backbones mobilenet_v2,efficientnet_lite0]

In-process figures interleave the two calls so that machine noise hits both alike; the ratio
is what to quote. The CLI figure is the whole ``ttame explain --json`` process (Python start,
imports, weights, head) measured from outside, with the explanation's own ``seconds`` beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from ttame.explainer import Explainer
from ttame.images import load_image, preprocess

PHOTO = Path(__file__).parent.parent / "examples" / "chelsea.jpg"


def cpu_name() -> str:
    """The processor's model name, for the record."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def in_process(name: str, repeats: int) -> tuple[float, float]:
    """Median seconds of ``explain`` and of the bare forward, batch 1, interleaved."""
    warnings.simplefilter("ignore")
    explainer = Explainer.from_pretrained(backbone=name)
    spec = explainer.spec
    x, _ = preprocess(load_image(PHOTO), spec.input_size, spec.resize_size)
    x = x[None]
    explain_times, forward_times = [], []
    with torch.no_grad():
        for _ in range(3):
            explainer.explain(x)
            explainer.backbone(x)
        for _ in range(repeats):
            start = time.perf_counter()
            explainer.explain(x)
            explain_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            explainer.backbone(x)
            forward_times.append(time.perf_counter() - start)
    return statistics.median(explain_times), statistics.median(forward_times)


def cli(name: str, repeats: int) -> tuple[float, float]:
    """Median wall seconds of the whole CLI process, and of its reported ``seconds``."""
    walls, own = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "ttame", "explain", str(PHOTO), "--backbone", name, "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        walls.append(time.perf_counter() - start)
        own.append(json.loads(out)["seconds"])
    return statistics.median(walls), statistics.median(own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="mobilenet_v2,efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--cli-repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(
        "| backbone | explain (ms) | bare forward (ms) | explain / forward | CLI process (s) "
        "| CLI `seconds` (ms) |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.backbones.split(","):
        explain, forward = in_process(name, args.repeats)
        wall, own = cli(name, args.cli_repeats)
        print(
            f"| {name} | {explain * 1e3:.1f} | {forward * 1e3:.1f} | {explain / forward:.2f} "
            f"| {wall:.2f} | {own * 1e3:.1f} |"
        )


if __name__ == "__main__":
    main()

"""Cost of each explanation method, as a multiple of one bare backbone forward.

    python benchmarks/bench_explainers.py [--backbones mobilenet_v2,efficientnet_lite0]
        [--methods ttame,gradcam,...] [--batch 1] [--repeats 5] [--rise-masks 4000]

Each method's ``explain`` is timed on the example photos (batch ``--batch``), with a bare
forward of the same batch timed right before each call, so that load on a shared machine
hits both alike; the median ratio is the figure to quote. The methods that cost hundreds of
forwards (Score-CAM, RISE) run once, without a warm-up. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from ttame.explainer import Explainer
from ttame.images import load_image, preprocess
from ttame.methods.registry import METHODS, MethodOptions, build_method, parse_methods

PHOTOS = Path(__file__).parent.parent / "examples"
SLOW = {"scorecam", "rise"}


def cpu_name() -> str:
    """The processor's model name, for the record."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def timed(fn, images: torch.Tensor) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn(images)
    return time.perf_counter() - start


def bench(name: str, methods: list[str], batch: int, repeats: int, rise_masks: int) -> list:
    """(method, median seconds per image, median ratio to the bare forward) for one backbone."""
    warnings.simplefilter("ignore")
    explainer = Explainer.from_pretrained(backbone=name)
    spec = explainer.spec
    photos = sorted(PHOTOS.glob("*.jpg"))
    tensors = [preprocess(load_image(p), spec.input_size, spec.resize_size)[0] for p in photos]
    images = torch.stack([tensors[i % len(tensors)] for i in range(batch)])
    rows = []
    with torch.no_grad():
        forward_alone = [timed(explainer.backbone, images) for _ in range(repeats + 2)][2:]
    rows.append(("bare forward", statistics.median(forward_alone) / batch, 1.0))
    options = MethodOptions(rise_masks=rise_masks)
    for method in methods:
        maker = build_method(method, explainer, options)
        if method not in SLOW:  # warm-up: first-call costs (imports, allocations) excluded
            maker.explain(images)
        ratios, seconds = [], []
        for _ in range(1 if method in SLOW else repeats):
            with torch.no_grad():
                forward = timed(explainer.backbone, images)
            spent = timed(maker.explain, images)
            seconds.append(spent)
            ratios.append(spent / forward)
        rows.append((method, statistics.median(seconds) / batch, statistics.median(ratios)))
    return rows


def main() -> None:
    """Time every method on every backbone and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="mobilenet_v2,efficientnet_lite0")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rise-masks", type=int, default=4000)
    args = parser.parse_args()
    methods = parse_methods(args.methods)
    print(f"{datetime.date.today()}; CPU: {cpu_name()}, {torch.get_num_threads()} threads, ")
    print(f"torch {torch.__version__}; command: python {' '.join(sys.argv)}\n")
    print("| backbone | method | ms / image | × one forward |")
    print("|---|---|---|---|")
    for name in args.backbones.split(","):
        for method, seconds, ratio in bench(
            name, methods, args.batch, args.repeats, args.rise_masks
        ):
            print(f"| {name} | {method} | {seconds * 1e3:.1f} | {ratio:.1f} |", flush=True)


if __name__ == "__main__":
    main()

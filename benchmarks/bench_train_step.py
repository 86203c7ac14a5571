"""Time one T-TAME training step against the passes no implementation can avoid.

    python benchmarks/bench_train_step.py [--backbones resnet50,vit_b_16] [--batch 64]
        [--device cpu|cuda] [--dtype bf16|fp32] [--repeats 5]

A step is: the backbone's forward without gradients (labels and taps), the head for the batch's
labels only, the masked forward and the backward through it into the head, and the optimiser
update. Its floor is one backbone forward without gradients plus one forward and backward to the
input on the masked batch: the ratio ``step / floor`` is the overhead of everything T-TAME adds
(head, masks, loss, update). Backbones have random weights (``pretrained=False``), so nothing is
downloaded; their clean top-1 is spread so that every image of the batch has its own label (the
most classes the head ever fuses in a step). The step and the floor are timed alternately and the
medians are reported.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ttame.explainer import fresh_head
from ttame.model.registry import get_spec
from ttame.model.taps import Backbone, build_backbone
from ttame.training.losses import TTameLoss
from ttame.training.step import compute_loss, masked_forward, parameter_groups


def cpu_name() -> str:
    """The processor's model name, for the record."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def distinct_labels(backbone: Backbone) -> None:
    """Make every image's top-1 a different class, as in real batches.

    A backbone with random weights answers one class for the whole batch, which would time the
    head's fusion for a single class; real batches of B images carry up to B labels.
    """
    forward = backbone.forward_features

    def spread(images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits, maps = forward(images)
        classes = torch.arange(len(images), device=logits.device) * 997 % logits.shape[1]
        return logits + 1e4 * F.one_hot(classes, logits.shape[1]).to(logits.dtype), maps

    backbone.forward_features = spread  # type: ignore[method-assign]


def measure(
    name: str, batch: int, device: torch.device, amp: bool, repeats: int, warmup: int
) -> dict[str, float]:
    """Median seconds of a training step and of its floor, and the batch's distinct labels."""
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    backbone = build_backbone(get_spec(name), pretrained=False).to(device)
    backbone.model.to(memory_format=memory_format)
    distinct_labels(backbone)
    head = fresh_head(backbone).to(device, memory_format=memory_format).train()
    optimizer = torch.optim.SGD(parameter_groups(head, 5e-4), lr=1e-3, momentum=0.9, nesterov=True)
    loss_fn = TTameLoss()
    size = backbone.spec.input_size
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, size, size, generator=generator).to(
        device, memory_format=memory_format
    )
    masks = torch.rand(batch, 1, size, size, generator=generator).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    labels_seen: list[int] = []

    def step() -> None:
        terms, labels = compute_loss(backbone, head, loss_fn, images, amp)
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        labels_seen.append(int(torch.unique(labels).numel()))

    def floor() -> None:
        with torch.no_grad(), autocast:
            logits = backbone(images)
        soft = masks.clone().requires_grad_(True)
        with autocast:
            masked = masked_forward(backbone, images, soft)
        F.cross_entropy(masked.float(), logits.argmax(1)).backward()

    timings: dict[str, list[float]] = {"step": [], "floor": []}
    runs: list[tuple[str, Callable[[], None]]] = [("step", step), ("floor", floor)]
    for i in range(warmup + repeats):
        for key, fn in runs:
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if i >= warmup:
                timings[key].append(time.perf_counter() - start)
    step_s = statistics.median(timings["step"])
    floor_s = statistics.median(timings["floor"])
    return {"step": step_s, "floor": floor_s, "unique": statistics.median(labels_seen)}


def main() -> None:
    """Parse options, time each backbone, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="resnet50,vit_b_16", help="comma-separated")
    parser.add_argument("--batch", type=int, default=64, help="images per step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype",
        choices=("bf16", "fp32"),
        default="bf16",
        help="bf16: autocast to bfloat16; fp32: no autocast",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{cpu_name()}, {torch.get_num_threads()} threads"
    )
    print(
        f"{machine}; torch {torch.__version__}; {datetime.date.today()}; batch {args.batch}, "
        f"{args.dtype}, median of {args.repeats}"
    )
    print("| backbone | step (s) | images/s | floor (s) | step / floor | labels in batch |")
    print("|---|---|---|---|---|---|")
    for name in args.backbones.split(","):
        r = measure(name, args.batch, device, args.dtype == "bf16", args.repeats, args.warmup)
        print(
            f"| {name} | {r['step']:.3f} | {args.batch / r['step']:.1f} | {r['floor']:.3f} | "
            f"{r['step'] / r['floor']:.2f} | {r['unique']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

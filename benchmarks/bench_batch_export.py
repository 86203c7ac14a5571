"""Folders explained in batches, and the exported ONNX graph, against their baselines.

    python benchmarks/bench_batch_export.py            # --threads 2 --images 64 --batch 32

(a) ``ttame explain FOLDER``'s library path (:func:`ttame.batch.explain_files`: decoding and
cropping the JPEGs in threads, one ``explain`` per batch) on generated 640x480 JPEGs, against
the bare batched backbone forward on the same images already decoded: the ratio of their
throughputs is the figure (1.0: explaining a folder costs no more than classifying tensors).
(b) The graph ``ttame export`` writes, run by onnxruntime, against the same computation in
PyTorch eager (:class:`ttame.export.onnx.ExplanationGraph`) and under ``torch.compile``
(``--no-compile`` skips it: inductor needs a C++ compiler, and compiling cold takes a while on
a small CPU), at batch 1 and 32. MobileNetV2 at 224 px with its bundled head; calls are
interleaved, medians reported.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ttame.batch import explain_files
from ttame.explainer import Explainer
from ttame.export.onnx import ExplanationGraph, export_onnx


def machine() -> str:
    """One line naming the processor, threads and versions, for the record."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    name = f"{models[0] if models else platform.processor()} ({len(models)} logical CPUs)"
    import onnxruntime

    return (
        f"{name}; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"{torch.get_num_threads()} threads; load average {load()}; "
        f"{datetime.date.today().isoformat()}"
    )


def load() -> str:
    """The machine's one-minute load average: other work running beside the benchmark."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "unknown"


def medians(calls: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, float]:
    """Median wall seconds of each call, interleaved round by round, after ``warmup`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def write_jpegs(folder: Path, count: int) -> list[Path]:
    """``count`` 640x480 JPEGs of smooth random content (photo-like sizes and compression)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        picture = Image.fromarray(coarse).resize((640, 480), Image.Resampling.BICUBIC)
        path = folder / f"{i // 16}" / f"photo{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.save(path, quality=90)
        paths.append(path)
    return paths


def folder_throughput(
    explainer: Explainer, count: int, batch: int, workers: int, warmup: int, repeats: int
) -> dict[str, float]:
    """Images per second: the bare forward on decoded tensors, the folder path with and
    without decoding threads."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), count)
        decoded = torch.stack([explainer.preprocess(p)[0] for p in paths])

        def forward() -> None:
            with torch.no_grad():
                for chunk in decoded.split(batch):
                    explainer.backbone(chunk)

        def folder(threads: int) -> Callable[[], None]:
            return lambda: list(explain_files(explainer, paths, batch=batch, workers=threads))

        calls = {"forward": forward, "folder": folder(workers), "inline": folder(0)}
        seconds = medians(calls, warmup, repeats)
    return {name: count / s for name, s in seconds.items()}


def onnx_session(explainer: Explainer, threads: int) -> object:
    """An onnxruntime session on the graph ``ttame export`` writes for ``explainer``."""
    import onnxruntime

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(explainer, Path(tmp) / "graph.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle onnxruntime threads otherwise spin after each run, taking the CPU from the
        # PyTorch call measured next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graph_throughput(
    graph: torch.nn.Module,
    session: object,
    compiled: Callable[[torch.Tensor], object] | None,
    batch: int,
    warmup: int,
    repeats: int,
) -> dict[str, float]:
    """Images per second of the explanation graph: eager, onnxruntime (and compiled)."""
    size = int(graph.backbone.spec.input_size)
    images = torch.rand(batch, 3, size, size)
    feed = {"images": images.numpy()}

    def run(function: Callable[[torch.Tensor], object]) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad():
                return function(images)

        return call

    calls = {"eager": run(graph), "onnxruntime": lambda: session.run(None, feed)}  # type: ignore[attr-defined]
    if compiled is not None:
        calls["compile"] = run(compiled)
    seconds = medians(calls, warmup, repeats)
    return {name: batch / s for name, s in seconds.items()}


def main() -> None:
    """Run both parts and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    parser.add_argument("--images", type=int, default=64, help="JPEGs in the folder")
    parser.add_argument("--batch", type=int, default=32, help="the folder's batch size")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads")
    parser.add_argument("--graph-batches", default="1,32", help="batches of part (b)")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the graph under torch.compile (needs a C++ compiler)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    explainer = Explainer.from_pretrained("mobilenet_v2")
    print(f"Machine: {machine()}")
    print()
    rates = folder_throughput(
        explainer, args.images, args.batch, args.workers, args.warmup, args.repeats
    )
    print(f"(a) {args.images} JPEGs (640x480), batch {args.batch}, median of {args.repeats}")
    print()
    print("| path | images/s | / bare forward |")
    print("|---|---|---|")
    for name, label in (
        ("forward", "bare batched forward, decoded tensors"),
        ("folder", f"`ttame explain FOLDER` path, {args.workers} decoding threads"),
        ("inline", "the same, decoding inline (no threads)"),
    ):
        print(f"| {label} | {rates[name]:.1f} | {rates[name] / rates['forward']:.2f} |")
    print()
    graph = ExplanationGraph(explainer).eval()
    session = onnx_session(explainer, args.threads)
    compiled = torch.compile(graph) if args.compile else None
    if compiled is not None:
        size = explainer.spec.input_size
        start = time.perf_counter()
        with torch.no_grad():
            compiled(torch.rand(1, 3, size, size))
        print(f"torch.compile: the first call (compiling) took {time.perf_counter() - start:.0f} s")
        print()
    print(f"(b) explanation graph, mobilenet_v2, 224 px, median of {args.repeats}")
    print()
    print("| batch | eager (img/s) | onnxruntime (img/s) | onnxruntime / eager |", end="")
    print(" compile / eager | onnxruntime / compile |" if args.compile else "")
    print("|---|---|---|---|" + ("---|---|" if args.compile else ""))
    for batch in (int(b) for b in args.graph_batches.split(",")):
        rates = graph_throughput(graph, session, compiled, batch, args.warmup, args.repeats)
        row = (
            f"| {batch} | {rates['eager']:.1f} | {rates['onnxruntime']:.1f} "
            f"| {rates['onnxruntime'] / rates['eager']:.2f} |"
        )
        if args.compile:
            row += (
                f" {rates['compile'] / rates['eager']:.2f} "
                f"| {rates['onnxruntime'] / rates['compile']:.2f} |"
            )
        print(row, flush=True)
    print()
    print(f"Load average at the end: {load()}")


if __name__ == "__main__":
    main()

"""Click-to-overlay time of the app against the backbone's own forward pass, on the CPU.

    python benchmarks/bench_app.py [--repeats 30] [--threads 1] [--photo examples/chelsea.jpg]

Starts ``app.py`` (the default backbone) in its own process on a free loopback port, then
times ``gradio_client``'s ``/explain`` call: the photo's upload, the queue, the explanation,
the overlay and bare map encoded and sent back, and both files downloaded. The bare forward
of the same backbone on the same photo is timed in this process, interleaved with the calls
so that machine noise hits both alike, with the same torch threads as the app (``--threads``,
the app's default 1). What the app adds is the difference of the medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import date
from pathlib import Path

import torch

from tests.loadgen import free_port
from ttame.explainer import Explainer
from ttame.images import load_image, preprocess
from ttame.model.registry import DEFAULT_BACKBONE

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    """The processor's model name, for the record."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def start_app(port: int, threads: int) -> subprocess.Popen:
    """``python app.py`` on ``port``, offline, returned once it answers."""
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "TTAME_PORT": str(port),
        "TTAME_THREADS": str(threads),
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return process
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError("the app did not start within 120 s")


def main() -> None:
    """Time both, print the record for docs/benchmarks.md."""
    from gradio_client import Client, handle_file

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, app and forward")
    parser.add_argument("--pause", type=float, default=0.2, help="idle seconds between the two")
    parser.add_argument("--photo", default=str(ROOT / "examples" / "chelsea.jpg"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    explainer = Explainer.from_pretrained(backbone=DEFAULT_BACKBONE)
    spec = explainer.spec
    x, _ = preprocess(load_image(args.photo), spec.input_size, spec.resize_size)
    port = free_port()
    process = start_app(port, args.threads)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        call = (handle_file(args.photo), DEFAULT_BACKBONE, "", "top-1", 0.5, "jet")
        clicks, forwards, inside = [], [], []
        with torch.no_grad():
            for round_ in range(args.repeats + 3):
                start = time.perf_counter()
                text = client.predict(*call, api_name="/explain")[2]
                click = time.perf_counter() - start
                time.sleep(args.pause)
                start = time.perf_counter()
                explainer.backbone(x[None])
                forward = time.perf_counter() - start
                if round_ >= 3:  # warm-up
                    clicks.append(click)
                    forwards.append(forward)
                    inside.append(float(re.search(r"map in (\d+) ms", text).group(1)) / 1e3)
    finally:
        process.terminate()
        process.wait(timeout=10)
    click, forward, own = (statistics.median(v) for v in (clicks, forwards, inside))
    size = load_image(args.photo).size
    print(
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} torch thread(s)"
    )
    print(f"Date: {date.today().isoformat()}")
    print(f"Photo: {Path(args.photo).name} ({size[0]}x{size[1]}); median of {args.repeats}\n")
    print(
        "| backbone | click-to-overlay (ms) | backbone forward (ms) | app adds (ms) "
        "| explanation inside the app (ms) |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {DEFAULT_BACKBONE} | {click * 1e3:.0f} | {forward * 1e3:.1f} "
        f"| {(click - forward) * 1e3:.0f} | {own * 1e3:.0f} |"
    )


if __name__ == "__main__":
    main()

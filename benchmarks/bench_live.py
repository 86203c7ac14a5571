"""Frames per second of the app's live path, and where a frame's time goes.

    python benchmarks/bench_live.py [--threads 2] [--frames 150] [--size 640x480]

The live path is the function the webcam stream calls, :meth:`ttame.app.live.LiveView.frame`
(frame in, overlay out, with the default MobileNetV2 and its bundled head), called back to
back on the example photos at webcam size. Its parts are timed alone, interleaved: the crop and
resize to the backbone's input, the backbone pass and the head (``explain``), and the overlay
drawn with OpenCV; beside them, the same overlay drawn the photo way (the map put back on the
frame with :func:`ttame.images.map_to_original`, blended in floats by
:func:`ttame.images.overlay` through PIL). Medians; the ratios are what to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ttame.app.callbacks import TTameApp
from ttame.app.live import LiveView
from ttame.app.state import AppConfig
from ttame.images import crop_geometry, map_to_original, overlay
from ttame.video import frames_input, overlay_frames

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def cpu_name() -> str:
    """The processor's model name, for the record."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def webcam_frames(width: int, height: int) -> list[np.ndarray]:
    """The example photos at webcam size, as the stream hands them over (RGB uint8)."""
    photos = sorted(EXAMPLES.glob("*.jpg"))
    return [np.asarray(Image.open(p).convert("RGB").resize((width, height))) for p in photos]


def seconds(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--frames", type=int, default=150, help="frames per measurement")
    parser.add_argument("--size", default="640x480", help="webcam frame size, WxH")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    width, height = (int(v) for v in args.size.split("x"))
    frames = webcam_frames(width, height)
    view = LiveView(TTameApp(AppConfig()))
    explainer = view.loaded().explainer
    spec = explainer.spec
    geometry = crop_geometry((width, height), spec.resize_size, spec.input_size)

    for frame in frames * 3:  # warm-up
        view.frame(frame)
    clock = None
    start = time.perf_counter()
    for i in range(args.frames):
        clock = view.frame(frames[i % len(frames)], 0.5, "jet", clock).clock
    live_fps = args.frames / (time.perf_counter() - start)

    parts: dict[str, list[float]] = {
        "live": [],
        "input": [],
        "explain": [],
        "overlay_cv2": [],
        "overlay_pil": [],
    }
    for i in range(args.frames):
        frame = frames[i % len(frames)]
        parts["live"].append(seconds(lambda frame=frame: view.frame(frame)))
        x, box = frames_input(explainer, frame)
        parts["input"].append(seconds(lambda frame=frame: frames_input(explainer, frame)))
        maps = explainer.explain(x).maps
        parts["explain"].append(seconds(lambda x=x: explainer.explain(x)))
        parts["overlay_cv2"].append(
            seconds(lambda f=frame, m=maps, b=box: overlay_frames(f, m, b, 0.5, "jet"))
        )

        def photo_way(frame: np.ndarray = frame, maps: torch.Tensor = maps) -> np.ndarray:
            heat = map_to_original(maps[0], geometry, outside=float("nan"))
            return np.asarray(overlay(Image.fromarray(frame), heat, 0.5, "jet"))

        parts["overlay_pil"].append(seconds(photo_way))
    median = {name: statistics.median(values) * 1000 for name, values in parts.items()}
    inside = median["input"] + median["explain"] + median["overlay_cv2"]
    record = {
        "machine": cpu_name(),
        "torch": torch.__version__,
        "threads": args.threads,
        "size": args.size,
        "backbone": spec.name,
        "trained_head": explainer.trained,
        "frames": args.frames,
        "live_fps_back_to_back": round(live_fps, 1),
        "live_fps_from_median": round(1000 / median["live"], 1),
        "median_ms": {k: round(v, 2) for k, v in median.items()},
        "share_explain": round(median["explain"] / inside, 3),
        "share_overlay": round(median["overlay_cv2"] / inside, 3),
        "share_input": round(median["input"] / inside, 3),
        "overlay_pil_over_cv2": round(median["overlay_pil"] / median["overlay_cv2"], 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(record, indent=2))
    print(
        "\n| frame | threads | live fps (back to back) | live ms (median) | input ms | "
        "explain ms | overlay ms (OpenCV) | overlay ms (PIL, floats) |\n|---|---|---|---|---|---|"
        f"---|---|\n| {args.size} | {args.threads} | {record['live_fps_back_to_back']} | "
        f"{median['live']:.1f} | {median['input']:.1f} | {median['explain']:.1f} | "
        f"{median['overlay_cv2']:.1f} | {median['overlay_pil']:.1f} |"
    )


if __name__ == "__main__":
    main()

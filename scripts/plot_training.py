"""Plot the loss curves of training runs from their CSV logs into one small PNG.

    python scripts/plot_training.py runs/mobilenet_v2 runs/efficientnet_lite0 \
        --out docs/img/training_loss.png

One column per loss term (total, cross-entropy, area, smoothness, and the cross-entropy on the
image the map's top share keeps when a run used it): the training loss per step
(thin, smoothed over 10 steps) and the validation loss per epoch (dots), one colour per run.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

TERMS = (
    ("loss", "total"),
    ("ce", "cross-entropy"),
    ("area", "area"),
    ("tv", "smoothness"),
    ("kept", "kept-share cross-entropy"),
)


def read(path: Path) -> dict[str, np.ndarray]:
    """A CSV log as one float array per column."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) for r in rows]) for key in rows[0]}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps (shorter at the start)."""
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(0, ends - window)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def main() -> None:
    """Read each run folder's steps.csv and epochs.csv and draw the four panels."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (train.py --out)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--window", type=int, default=10, help="smoothing window in steps")
    args = parser.parse_args()
    logs = [(run, read(run / "steps.csv"), read(run / "epochs.csv")) for run in args.runs]
    terms = [t for t in TERMS if any(t[0] in steps and steps[t[0]].any() for _, steps, _ in logs)]
    figure, axes = plt.subplots(1, len(terms), figsize=(3 * len(terms), 3), dpi=80)
    for index, (run, steps, epochs) in enumerate(logs):
        per_epoch = steps["step"].max() / epochs["epoch"].max()
        colour = f"C{index}"
        for axis, (key, title) in zip(axes, terms, strict=True):
            if key not in steps:
                continue
            axis.plot(
                steps["step"] / per_epoch,
                smooth(steps[key], args.window),
                colour,
                linewidth=1,
                label=f"{run.name} train",
            )
            axis.plot(
                epochs["epoch"],
                epochs[f"val_{key}"],
                colour,
                marker="o",
                linestyle="--",
                markersize=4,
                label=f"{run.name} validation",
            )
            axis.set_title(title)
            axis.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out)


if __name__ == "__main__":
    main()

r"""How many images a paired comparison needs, from the spread seen in a saved report.

    python scripts/photos_needed.py docs/results/mobilenet_v2_photos.json \
        --method ttame --against gradcam --effect 3 --effect 6

For each AD share of a ``ttame evaluate`` report (its per-image records), prints the paired
difference ``method`` minus ``against`` (mean, 95 % interval, n), the standard deviation of the
per-image differences, and how many images a true difference of each ``--effect`` (in AD
points) would need to be found with 80 % power at the 95 % level
(:func:`ttame.evaluation.paired.images_needed`). A target stated as a difference that the
evaluation set is too small to show is then visible before any training is spent on it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttame.evaluation.paired import images_needed, paired_from_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="a ttame evaluate --json report")
    parser.add_argument("--method", default="ttame")
    parser.add_argument("--against", default="gradcam")
    parser.add_argument(
        "--effect", type=float, action="append", help="true AD difference to detect (points)"
    )
    parser.add_argument("--power", type=float, default=0.8)
    args = parser.parse_args()
    effects = args.effect or [3.0]
    report = json.loads(args.report.read_text())
    paired = paired_from_report(report, args.against, [args.method])["methods"][args.method]
    header = ["AD at", "n", "mean [95 % interval]", "SD per image"] + [
        f"images for {e:g} points" for e in effects
    ]
    print(f"{args.method} minus {args.against}, {report['backbone']}, {report['images']}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for share, stat in paired["AD"].items():
        low, high = stat["CI95"]
        needed = [str(images_needed(stat["sd"], e, args.power)) for e in effects]
        cells = [f"{share} %", str(stat["n"]), f"{stat['mean']:.1f} [{low:.1f}, {high:.1f}]"]
        print("| " + " | ".join([*cells, f"{stat['sd']:.1f}", *needed]) + " |")


if __name__ == "__main__":
    main()

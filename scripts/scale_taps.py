r"""Scale how much the earlier (finer) taps weigh in a head's maps.

    python scripts/scale_taps.py checkpoints/mobilenet_v2 --factor 2 --out runs/x2_mobilenet_v2

A head's map is a 1x1 fusion of its tapped layers' branches. Trained with the class rows frozen
(``train.py --freeze-class-rows``), the earlier taps' part of every class's row is the one row
shared by all classes, and the last tap's part starts as the class's CAM. Multiplying the
earlier taps' fusion weights by ``--factor`` makes the finer maps count more (``> 1``) or less
(``< 1``; ``0`` leaves the last tap alone, a CAM on the trained branch) without training: the
head's architecture, file and cost are unchanged. The result is an ordinary head folder,
scored like any other (``scripts/ablation.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttame.hub.heads import read_head, save_head
from ttame.model.head import AttentionHead


def scale_earlier_taps(head: AttentionHead, factor: float) -> AttentionHead:
    """``head`` with the fusion weights of every tap but the last multiplied by ``factor``."""
    earlier = sum(head.in_channels[:-1])
    with torch.no_grad():
        head.fuser.weight[:, :earlier] *= factor
    return head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("head", help="head folder")
    parser.add_argument("--factor", type=float, required=True, help="multiplier (0 or more)")
    parser.add_argument("--out", required=True, type=Path, help="folder of the scaled head")
    args = parser.parse_args()
    if args.factor < 0:
        sys.exit("scale_taps: --factor must be 0 or more")
    print(save_head(scale_earlier_taps(read_head(args.head), args.factor), args.out))


if __name__ == "__main__":
    main()

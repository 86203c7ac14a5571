r"""Average the weights of heads fine-tuned from one another (a "model soup").

    python scripts/average_heads.py checkpoints/mobilenet_v2 runs/T_mobilenet_v2/head \
        --out runs/soup_mobilenet_v2

Heads that share a starting point (``train.py --init-from``) can often be averaged weight by
weight; the average sometimes keeps what each is good at. Every head must have the same
config (backbone, taps, classes). The result is an ordinary head folder, scored like any
other (``scripts/ablation.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttame.hub.heads import read_head, save_head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("heads", nargs="+", help="head folders")
    parser.add_argument("--out", required=True, type=Path, help="folder of the averaged head")
    args = parser.parse_args()
    heads = [read_head(folder) for folder in args.heads]
    if any(head.config != heads[0].config for head in heads):
        sys.exit("average_heads: the heads' configs differ; only heads of one backbone and taps")
    states = [head.state_dict() for head in heads]
    averaged = {
        key: torch.stack([state[key].double() for state in states]).mean(0).to(value.dtype)
        for key, value in states[0].items()
    }
    heads[0].load_state_dict(averaged)
    print(save_head(heads[0], args.out))


if __name__ == "__main__":
    main()

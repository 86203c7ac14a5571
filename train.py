"""Train a T-TAME head: ``python train.py --help`` (or ``torchrun --nproc_per_node=N train.py``)."""

import sys

from ttame.cli.train import main

if __name__ == "__main__":
    sys.exit(main())

"""Write the head inside a training checkpoint as a head folder, e.g. to evaluate a run midway.

    python scripts/checkpoint_head.py runs/mobilenet_v2/checkpoint.pt runs/mobilenet_v2/step_head

The head is written as the run would write it at the end (a shared fusion row folded in), with
``progress.json`` (steps, images seen, training seconds) beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ttame.hub.heads import save_head
from ttame.training.checkpoint import head_from_checkpoint, load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--fp16", action="store_true", help="store the weights in float16")
    args = parser.parse_args()
    saved = load_checkpoint(args.checkpoint)
    progress, batch = saved["progress"], saved["config"]["batch"]
    folder = save_head(head_from_checkpoint(args.checkpoint), args.out, fp16=args.fp16)
    trained = {
        "steps": progress["step"],
        "images": progress["step"] * batch,
        "seconds": round(progress["seconds"]),
    }
    (folder / "progress.json").write_text(json.dumps(trained) + "\n")
    print(f"step {progress['step']}: head written to {folder}")


if __name__ == "__main__":
    main()

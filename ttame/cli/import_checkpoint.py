"""``ttame import-checkpoint``: a reference T-TAME checkpoint as a ttame head folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ttame.errors import HeadError
from ttame.hub.client import HF_SCHEME, HubRef, hub_file
from ttame.hub.convert import import_checkpoint


def register(subparsers: Any) -> None:
    """Add ``ttame import-checkpoint``."""
    parser = subparsers.add_parser(
        "import-checkpoint",
        help="convert a reference T-TAME checkpoint into a head folder",
        description=(
            "Convert a T-TAME checkpoint of the reference implementation (a Lightning .ckpt) "
            "into a ttame head folder: config.json, model.safetensors and a model card. The file "
            "is read without running pickled code. The authors' heads are for academic, "
            "non-commercial use."
        ),
    )
    parser.add_argument("file", nargs="?", help="local checkpoint (.ckpt / .pt / .pth)")
    parser.add_argument("--repo", help="Hugging Face Hub repo id holding the checkpoint")
    parser.add_argument("--filename", help="the checkpoint's path inside --repo")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of --repo")
    parser.add_argument(
        "--backbone", default=None, help="backbone name (default: from the checkpoint)"
    )
    parser.add_argument("--prefix", default=None, help="key prefix of the head (default: found)")
    parser.add_argument("--out", required=True, help="head folder to write")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(handler=run_import)


def run_import(args: argparse.Namespace) -> int:
    """Fetch (if from the Hub), convert, write, report."""
    if (args.file is None) == (args.repo is None):
        raise HeadError("Give either a checkpoint FILE or --repo OWNER/NAME --filename FILE.")
    source = args.file
    if args.repo is not None:
        if not args.filename:
            raise HeadError("--repo needs --filename: the checkpoint's path inside the repo.")
        ref = HubRef.parse(f"{HF_SCHEME}{args.repo}/{args.filename}")
        path = hub_file(ref.repo_id, args.filename, revision=args.revision)
        source = f"{HF_SCHEME}{args.repo}/{args.filename}"
    else:
        path = Path(args.file)
    report = import_checkpoint(path, args.out, args.backbone, args.prefix, source=source)
    print(json.dumps(report.__dict__) if args.json else report.summary())
    return 0

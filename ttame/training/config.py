"""Every training option, in one dataclass from which the command line is generated.

Defaults are the paper's schedule (docs/method.md, "Training"); the options marked runtime may
change when a run is resumed, the others would change the result and are refused then.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ttame.errors import TrainingError
from ttame.model.registry import DEFAULT_BACKBONE


def _option(
    default: Any,
    help: str,
    *,
    type: Any = None,
    choices: Sequence[str] | None = None,
    runtime: bool = False,
) -> Any:
    """A config field that is also a command-line option (``runtime``: may change on resume)."""
    meta = {"help": help, "type": type, "choices": choices, "runtime": runtime}
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every training option; the command line is generated from these fields."""

    backbone: str = _option(DEFAULT_BACKBONE, "backbone name (registry name or timm/<model>)")
    layers: str | None = _option(
        None, "comma-separated layers to tap (default: the backbone's)", type=str
    )
    weights: str | None = _option(None, "local backbone weights file", type=str)
    data: str | None = _option(
        None,
        "folder of images, searched recursively; with train/ (and val/) sub-folders it is read "
        "as the ImageNet layout",
        type=str,
    )
    train_list: str | None = _option(
        None, "list file, one 'relative/path label' per line (the label is ignored)", type=str
    )
    val_list: str | None = _option(None, "validation list file (same format)", type=str)
    data_root: str | None = _option(
        None,
        "folder the list files' paths are relative to (default: the list's folder)",
        type=str,
    )
    val_fraction: float = _option(
        0.05, "share of a plain folder held out for validation (stable hash of the file names)"
    )
    pool: str | None = _option(
        None, "offline pool folder (scripts/build_pool.py output, e.g. data)", type=str
    )
    pool_composites: int = _option(1000, "pool composites per epoch, drawn anew each epoch")
    pool_size: int = _option(256, "side of the pool composites in pixels")
    pool_val: int = _option(128, "fixed pool composites used for validation (0: none)")
    pool_max_stamps: int = _option(1, "pool composites paste 1 to N stamps each")
    pool_mosaic: float = _option(0.0, "share of pool composites that are mosaics of 4 photos")
    pool_min_scale: float = _option(0.4, "smallest stamp, as a share of the composite's side")
    out: str = _option("runs/ttame", "run folder: checkpoint, CSV logs, final head", runtime=True)
    head_dir: str | None = _option(
        None, "where to write the final head (default: OUT/head)", type=str, runtime=True
    )
    epochs: int = _option(8, "epochs")
    optimizer: str = _option(
        "sgd", "sgd (the paper's, Nesterov) or adamw", choices=("sgd", "adamw")
    )
    shared_fusion: bool = _option(
        False,
        "train a fusion part shared by every class beside the per-class rows, folded into the "
        "fusion layer at the end (same head file and cost; helps when classes have few images)",
    )
    freeze_class_rows: bool = _option(
        False,
        "keep every class's own fusion row at its initialisation (the CAM) and train only the "
        "branches and the shared row (needs --shared-fusion; nothing per class to overfit)",
    )
    class_transfer: bool = _option(
        False,
        "also learn one matrix, shared by every class, from each class's last-tap fusion row "
        "(its CAM weights) to its rows for the earlier taps, so the finer taps become "
        "class-specific without anything learnt per class; folded in at the end (needs "
        "--shared-fusion)",
    )
    low_res: int = _option(
        0,
        "train the first --low-res-share of the steps at this input side "
        "(0: off); cheaper steps, the last ones at full size",
    )
    low_res_share: float = _option(0.7, "share of the steps trained at --low-res")
    batch: int = _option(32, "global batch size (split evenly across processes)")
    lr: float = _option(1e-3, "peak learning rate of the one-cycle schedule")
    momentum: float = _option(0.9, "SGD momentum")
    nesterov: bool = _option(True, "Nesterov momentum")
    weight_decay: float = _option(5e-4, "weight decay on weights (not biases or BatchNorm)")
    pct_start: float = _option(0.3, "share of the steps spent raising the learning rate")
    div_factor: float = _option(25.0, "initial learning rate = lr / div_factor")
    final_div_factor: float = _option(1e4, "final learning rate = initial / final_div_factor")
    ce_weight: float = _option(1.5, "weight of the cross-entropy on the masked image")
    area_weight: float = _option(2.0, "weight of the area term mean((a + 0.0005) ** power)")
    area_power: float = _option(0.3, "power of the area term")
    tv_weight: float = _option(0.01, "weight of the smoothness (total variation) term")
    kept_weight: float = _option(
        0.0,
        "weight of a cross-entropy on the image kept by the top --kept-share of the map, "
        "as AD/IC score it (0: off, the paper's loss; costs one more backbone pass)",
    )
    kept_share: str = _option(
        "0.15",
        "share of the image the --kept-weight term keeps; a comma list (e.g. 0.15,0.5) is "
        "cycled over each batch's images, so every step asks for all of them",
        type=str,
    )
    kept_softness: float = _option(
        0.0,
        "also pass the --kept-weight term's gradient through its threshold, as if it were a "
        "sigmoid of this width in map units (e.g. 0.05), so that training learns which pixels "
        "are kept, not only their values; the loss's value is unchanged (0: values only)",
    )
    teacher: str | None = _option(
        None,
        "a teacher file of maps fitted to the training photos by the AD protocol "
        "(scripts/fit_masks.py --training-photos --out FILE); the head is asked to rank each "
        "photo's pixels as its teacher does (--pool only; the photos' crops are the paper's)",
        type=str,
    )
    teacher_weight: float = _option(1.0, "weight of the --teacher term (a KL divergence)")
    border: float = _option(0.3, "weight of the border values inside the smoothness term")
    color_jitter: float = _option(0.0, "brightness/contrast/saturation jitter (0: off)")
    crop_scale: float = _option(
        1.0,
        "smallest share of a picture's area a training crop may cover (e.g. 0.2: random "
        "resized crops, so that each photo is seen at many zooms); 1: the paper's resize to "
        "256 and random 224 crop",
    )
    init: str | None = _option(
        None,
        "fusion initialisation: 'cam' starts every class from the backbone classifier's class "
        "activation map (default when the backbone has one), 'random' from PyTorch's default",
        type=str,
        choices=("cam", "random"),
    )
    init_from: str | None = _option(
        None,
        "start the head from a trained one instead, with a fresh optimiser and schedule "
        "(fine-tuning): a run's checkpoint.pt (shared parts folded in), a head folder, a Hub "
        "repo id or a reference checkpoint, as `ttame explain --head` takes",
        type=str,
    )
    fused_size: int = _option(
        56,
        "largest side of the fused map (the head's max_size): the tapped maps are resized to "
        "the largest one, capped at this; smaller gives coarser, more CAM-like maps",
    )
    seed: int = _option(0, "seed of the head's initialisation, the data order and augmentation")
    device: str | None = _option(
        None, "cpu, cuda, cuda:1 ... (default: cuda if available)", type=str, runtime=True
    )
    amp: bool | None = _option(
        None, "bfloat16 autocast (default: on for GPUs, off for CPUs)", type=bool
    )
    channels_last: bool | None = _option(
        None, "channels-last memory format (default: on for GPUs)", type=bool, runtime=True
    )
    threads: int | None = _option(
        None, "CPU threads per process (torch.set_num_threads)", type=int, runtime=True
    )
    workers: int = _option(
        2, "DataLoader worker processes per process (0: load in-process)", runtime=True
    )
    checkpoint_every: int = _option(
        200, "also checkpoint every N steps (0: only at the end of each epoch)", runtime=True
    )
    resume: bool = _option(False, "continue from OUT/checkpoint.pt", runtime=True)
    fp16_head: bool = _option(
        False,
        "store the final head in float16 (half the size; loads back as float32)",
        runtime=True,
    )
    push_to_hub: str | None = _option(
        None,
        "also upload the final head to this Hugging Face Hub repo id",
        type=str,
        runtime=True,
    )

    @property
    def out_dir(self) -> Path:
        """The run folder."""
        return Path(self.out)

    @property
    def kept_shares(self) -> tuple[float, ...]:
        """The kept shares of ``--kept-share``, each in (0, 1]."""
        try:
            shares = tuple(float(x) for x in self.kept_share.split(","))
        except ValueError:
            shares = ()
        if not shares or not all(0 < x <= 1 for x in shares):
            raise TrainingError(
                f"--kept-share takes shares in (0, 1], comma-separated; got '{self.kept_share}'."
            )
        return shares

    @property
    def checkpoint_path(self) -> Path:
        """The resumable checkpoint inside the run folder."""
        return self.out_dir / "checkpoint.pt"


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add one option per :class:`TrainConfig` field, with its default in the help text."""
    for item in fields(TrainConfig):
        meta = item.metadata
        flag = "--" + item.name.replace("_", "-")
        default = item.default
        text = meta["help"] if default is None else f"{meta['help']} (default: {default})"
        if meta["type"] is bool or isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=text
            )
        else:
            parser.add_argument(
                flag,
                type=meta["type"] or type(default),
                default=default,
                choices=meta["choices"],
                help=text,
            )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config a parsed command line asks for."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def check_resume(saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to resume with options that would change the result."""
    current = asdict(config)
    # An option added after the checkpoint was written counts as having had its default.
    was = {f.name: saved.get(f.name, f.default) for f in fields(TrainConfig)}
    changed = [
        f"--{f.name.replace('_', '-')} {was[f.name]!r} -> {current[f.name]!r}"
        for f in fields(TrainConfig)
        if not f.metadata["runtime"] and was[f.name] != current[f.name]
    ]
    if changed:
        raise TrainingError(
            "The checkpoint was made with other options; resume with the same ones or start "
            "a new run folder. Changed: " + "; ".join(changed)
        )

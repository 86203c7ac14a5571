"""Train a T-TAME head on a frozen backbone (SPEC section 2).

Each step: one backbone pass without gradients gives the labels (its own top-1) and the tapped
maps; the head computes masks for the batch's labels only; each image is multiplied by the mask
of its label and passed through the backbone again, and the loss goes back through that pass
into the head. Runs on one CPU or GPU, or on several processes with ``torchrun`` (DDP on the
head; gloo on CPUs, NCCL on GPUs; only rank 0 writes). Checkpoints are written atomically and
carry a checksum, so an interrupted run resumes exactly where it stopped and a damaged file is
never loaded.

    python train.py --pool data --backbone mobilenet_v2 --out runs/mobilenet_v2
    torchrun --nproc_per_node=4 train.py --data /imagenet --backbone resnet50 --out runs/r50
"""

from __future__ import annotations

import argparse
import copy
import csv
import glob
import hashlib
import io
import json
import os
import random
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader
from tqdm import tqdm

from ttame.backbones import DEFAULT_BACKBONE, get_spec
from ttame.data import (
    DataError,
    DataSources,
    EpochSampler,
    SeededItems,
    eval_transform,
    folder_sources,
    list_sources,
    pool_sources,
)
from ttame.errors import TTameError
from ttame.explainer import fresh_head
from ttame.head import AttentionHead
from ttame.losses import LossTerms, TTameLoss
from ttame.pool import SCALE_RANGE, CompositeMix, default_train_transform
from ttame.taps import Backbone, build_backbone


class TrainingError(TTameError, RuntimeError):
    """Training cannot go on: the loss diverged, a checkpoint is damaged or does not fit."""


def _option(default: Any, help: str, *, type: Any = None, choices: Sequence[str] | None = None,
            runtime: bool = False) -> Any:
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
        None, "folder the list files' paths are relative to (default: the list's folder)",
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
    optimizer: str = _option("sgd", "sgd (the paper's, Nesterov) or adamw",
                             choices=("sgd", "adamw"))
    shared_fusion: bool = _option(
        False,
        "train a fusion part shared by every class beside the per-class rows, folded into the "
        "fusion layer at the end (same head file and cost; helps when classes have few images)",
    )
    low_res: int = _option(0, "train the first --low-res-share of the steps at this input side "
                           "(0: off); cheaper steps, the last ones at full size")
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
        0.0, "weight of a cross-entropy on the image kept by the top --kept-share of the map, "
        "as AD/IC score it (0: off, the paper's loss; costs one more backbone pass)"
    )
    kept_share: float = _option(0.15, "share of the image the --kept-weight term keeps")
    border: float = _option(0.3, "weight of the border values inside the smoothness term")
    color_jitter: float = _option(0.0, "brightness/contrast/saturation jitter (0: off)")
    init: str | None = _option(
        None,
        "fusion initialisation: 'cam' starts every class from the backbone classifier's class "
        "activation map (default when the backbone has one), 'random' from PyTorch's default",
        type=str,
        choices=("cam", "random"),
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
    workers: int = _option(2, "DataLoader worker processes per process (0: load in-process)",
                           runtime=True)
    checkpoint_every: int = _option(
        200, "also checkpoint every N steps (0: only at the end of each epoch)", runtime=True
    )
    resume: bool = _option(False, "continue from OUT/checkpoint.pt", runtime=True)
    fp16_head: bool = _option(
        False, "store the final head in float16 (half the size; loads back as float32)",
        runtime=True,
    )
    push_to_hub: str | None = _option(
        None, "also upload the final head to this Hugging Face Hub repo id", type=str,
        runtime=True,
    )

    @property
    def out_dir(self) -> Path:
        """The run folder."""
        return Path(self.out)

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
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=text)
        else:
            parser.add_argument(flag, type=meta["type"] or type(default), default=default,
                                choices=meta["choices"], help=text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config a parsed command line asks for."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


# --- one step ---------------------------------------------------------------------------------


def masked_forward(backbone: Backbone, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Logits of the masked images: CNNs mask the raw image, ViTs the normalised one."""
    if backbone.spec.kind == "vit":
        return backbone.forward_normalized(backbone.normalize(images) * masks)
    return backbone(images * masks)


def compute_loss(
    backbone: Backbone,
    head: nn.Module,
    loss_fn: TTameLoss,
    images: torch.Tensor,
    amp: bool = False,
    share: float = 0.15,
) -> tuple[LossTerms, torch.Tensor]:
    """The loss of one batch of raw [0, 1] images, and the labels (the backbone's top-1).

    The head's fusion runs for the batch's unique labels only (``U <= B`` of the K classes);
    the area and smoothness terms then see the ``B x B`` set of every image's mask for every
    image's label, as the reference does, by indexing those ``U`` maps.
    """
    autocast = torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp)
    with torch.no_grad(), autocast:
        logits, maps = backbone.forward_features(images)
    labels = logits.argmax(dim=1)
    unique, inverse = torch.unique(labels, return_inverse=True)
    with autocast:
        class_maps = head(maps, unique)
    masks = torch.sigmoid(class_maps.float())  # B x U x h x w
    own = masks[torch.arange(len(labels), device=labels.device), inverse]
    upsampled = F.interpolate(
        own[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False
    )
    with autocast:
        masked_logits = masked_forward(backbone, images, upsampled)
    kept_logits = None
    if loss_fn.kept_weight > 0:
        kept = kept_image(class_maps[torch.arange(len(labels), device=labels.device), inverse],
                          images.shape[-2:], share)
        with autocast:
            kept_logits = masked_forward(backbone, images, kept[:, None])
    return loss_fn(masked_logits, labels, masks[:, inverse], kept_logits), labels


def kept_image(class_maps: torch.Tensor, size: torch.Size, share: float) -> torch.Tensor:
    """What the AD/IC protocol keeps of each image at ``share`` kept: ``B x H x W`` weights.

    Each map (``B x h x w`` logits) is min-max normalised, upsampled to ``size`` and zeroed
    below its ``1 - share`` quantile, exactly as the explanation is scored; the threshold is
    not differentiated, the kept values are. Training on it asks the top of the map, not only
    the soft mask, to hold what the backbone needs.
    """
    low = class_maps.float().amin(dim=(-2, -1), keepdim=True)
    high = class_maps.float().amax(dim=(-2, -1), keepdim=True)
    maps = (class_maps.float() - low) / (high - low).clamp_min(1e-6)
    maps = F.interpolate(maps[:, None], size=tuple(size), mode="bilinear",
                         align_corners=False)[:, 0]
    threshold = torch.quantile(maps.detach().flatten(1), 1 - share, dim=1)
    return maps * (maps >= threshold[:, None, None])


class SharedFusion(nn.Module):
    """The head plus a fusion row shared by every class, for training on small data.

    A class's own fusion row learns only from the images the backbone predicts as that class,
    a handful each in a small pool, so the rows of the earlier taps (which start at zero) hardly
    move. The shared row learns from every image: which channels of each tap mark the object
    the backbone looks at, whatever its class. It is added to every class's row, so
    :meth:`folded` gives a plain :class:`AttentionHead` with exactly the same maps: the head's
    architecture, file format and inference cost do not change.
    """

    def __init__(self, head: AttentionHead) -> None:
        super().__init__()
        self.head = head
        self.shared = nn.Parameter(torch.zeros(sum(head.in_channels)))

    def forward(self, maps: list[torch.Tensor], classes: torch.Tensor) -> torch.Tensor:
        """Class maps of ``classes`` (1-D), as the folded head would give them."""
        weight = self.head.fuser.weight.flatten(1)[classes] + self.shared
        return self.head.fuse(maps, weight, self.head.fuser.bias[classes])

    @torch.no_grad()
    def folded(self) -> AttentionHead:
        """A copy of the head with the shared row added to every class's fusion row."""
        head = copy.deepcopy(self.head)
        head.fuser.weight += self.shared[None, :, None, None].to(head.fuser.weight.dtype)
        return head


@torch.no_grad()
def init_from_cam(head: AttentionHead, backbone: Backbone, images: torch.Tensor) -> float:
    """Initialise the fusion from the backbone's classifier (see ``init_from_classifier``).

    The CAM's scale is set from ``images`` (a batch of training images): the maps of their
    labels are standardised to mean 0 and standard deviation 1, so the masks start in the
    sigmoid's sensitive range instead of saturated at 0 or 1. Returns the scale.
    """
    name = backbone.spec.cam_classifier
    classifier = dict(backbone.model.named_modules()).get(name or "")
    if not isinstance(classifier, nn.Linear):
        raise TrainingError(
            f"Backbone '{backbone.spec.name}' has no linear classifier over its last tap to "
            "start from; use --init random."
        )
    weight, bias = classifier.weight.float(), classifier.bias.float()
    head.init_from_classifier(weight, bias)
    logits, maps = backbone.forward_features(images)
    was_training = head.training
    head.eval()
    cams = head(maps, logits.argmax(dim=1)[:, None]).float()
    head.train(was_training)
    std = float(cams.std().clamp_min(1e-6))
    scale = 1.0 / std
    head.init_from_classifier(weight, bias, scale, -float(cams.mean()) * scale)
    return scale


# --- processes, checkpoints, logs -------------------------------------------------------------


@dataclass
class Runtime:
    """Rank, number of processes and device of the current process."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files and shows progress."""
        return self.rank == 0


def setup_runtime(device: str | None) -> Runtime:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, NCCL on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(name)
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {name}: no CUDA device is available.")
        if world_size > 1:
            chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if world_size == 1:
        return Runtime(0, 1, chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return Runtime(dist.get_rank(), world_size, chosen)


_MAGIC = b"TTAME-CHECKPOINT-1\n"


def _publish(tmp: str | Path, path: Path) -> None:
    """Give a finished temporary file the usual permissions (0666 less the umask), move it in.

    Temporary files are created private (0600); the files they become should not be.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temporary file, fsync, rename) with a SHA-256 of its bytes.

    A crash mid-write leaves only a temporary file, never a half-written checkpoint; the next
    write removes such leftovers.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode("ascii")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(_MAGIC + digest + b"\n" + payload)
            out.flush()
            os.fsync(out.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint, refusing any file whose checksum does not match its contents."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrainingError(f"Cannot read checkpoint '{path}': {exc}") from exc
    header = len(_MAGIC) + 64 + 1
    digest = data[len(_MAGIC) : header - 1]
    payload = data[header:]
    if not data.startswith(_MAGIC) or hashlib.sha256(payload).hexdigest().encode() != digest:
        raise TrainingError(
            f"Checkpoint '{path}' is damaged or incomplete (checksum mismatch); it was not "
            "loaded. Delete it to start over."
        )
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(
            f"Checkpoint '{path}' holds more than tensors and plain data ({type(exc).__name__}); "
            "it was not loaded: pickled objects are refused, as reading them could run code."
        ) from exc


def head_from_checkpoint(path: Path) -> AttentionHead:
    """The head a checkpoint holds, as the run would write it (a shared fusion row folded in).

    Lets a run's intermediate heads be evaluated while it goes on.
    """
    saved = load_checkpoint(path)
    head = AttentionHead(**saved["head_config"])
    head.load_state_dict(saved["head"])
    if "shared" in saved:
        wrapper = SharedFusion(head)
        wrapper.shared.data.copy_(saved["shared"])
        head = wrapper.folded()
    return head.eval()


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, NumPy and Python random states (saved with each checkpoint)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


class CsvLog:
    """A CSV file that is appended row by row; on resume, rows past the checkpoint are dropped."""

    def __init__(self, path: Path, columns: list[str], keep_until: int | None, key: str) -> None:
        self.path = path
        self.columns = columns
        rows: list[dict[str, str]] = []
        if keep_until is not None and path.is_file():
            with path.open(newline="") as old:
                rows = [r for r in csv.DictReader(old) if int(r[key]) <= keep_until]
        self._file = path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        self._writer.writeheader()
        self._writer.writerows(rows)
        self._file.flush()

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (floats with 6 significant digits) and flush."""
        self._writer.writerow(
            {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}
        )
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


TERMS = ["loss", "ce", "area", "tv", "kept"]
"""Column names of :meth:`LossTerms.stacked` (``loss`` is the total)."""
STEP_COLUMNS = ["epoch", "step", "lr", *TERMS, "images_per_s", "seconds"]
EPOCH_COLUMNS = [
    "epoch", "step", *TERMS, *(f"val_{t}" for t in TERMS), "images_per_s", "seconds",
]


# --- the run ----------------------------------------------------------------------------------


def select_data(config: TrainConfig) -> DataSources:
    """The data source the options name (exactly one of --pool, --data, --train-list)."""
    chosen = [n for n in ("pool", "data", "train_list") if getattr(config, n)]
    if len(chosen) != 1:
        raise DataError("Give exactly one of --pool DIR, --data DIR or --train-list FILE.")
    if config.pool:
        mix = CompositeMix(config.pool_max_stamps, config.pool_mosaic,
                           (config.pool_min_scale, max(config.pool_min_scale, SCALE_RANGE[1])))
        return pool_sources(config.pool, config.pool_composites, config.pool_size,
                            config.pool_val, config.seed, mix)
    if config.data:
        return folder_sources(config.data, config.val_fraction)
    return list_sources(config.train_list, config.val_list, config.data_root)


def parameter_groups(head: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on convolution weights only; none on biases and BatchNorm parameters."""
    decay = [p for p in head.parameters() if p.ndim > 1]
    no_decay = [p for p in head.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _reduce(values: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum a tensor over the processes (identity on one)."""
    if runtime.world_size > 1:
        dist.all_reduce(values)
    return values


@torch.no_grad()
def validate(backbone: Backbone, head: nn.Module, loss_fn: TTameLoss, loader: DataLoader,
             runtime: Runtime, amp: bool, memory_format: torch.memory_format,
             share: float = 0.15) -> torch.Tensor:
    """Mean loss terms (:data:`TERMS`) over the validation set, head in eval mode."""
    head.eval()
    n = len(TERMS)
    sums = torch.zeros(n + 1, dtype=torch.float64, device=runtime.device)
    for images in loader:
        images = images.to(runtime.device, non_blocking=True, memory_format=memory_format)
        terms, _ = compute_loss(backbone, head, loss_fn, images, amp, share)
        sums[:n] += terms.stacked().double() * len(images)
        sums[n] += len(images)
    head.train()
    sums = _reduce(sums, runtime)
    return sums[:n] / sums[n].clamp_min(1)


def _head_config(head: AttentionHead) -> dict[str, Any]:
    return {"backbone": head.backbone, "layers": head.layers, "in_channels": head.in_channels,
            "num_classes": head.num_classes, "max_size": head.max_size}


def _check_resume(saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to resume with options that would change the result."""
    current = asdict(config)
    changed = [
        f"--{f.name.replace('_', '-')} {saved.get(f.name)!r} -> {current[f.name]!r}"
        for f in fields(TrainConfig)
        if not f.metadata["runtime"] and saved.get(f.name) != current[f.name]
    ]
    if changed:
        raise TrainingError(
            "The checkpoint was made with other options; resume with the same ones or start "
            "a new run folder. Changed: " + "; ".join(changed)
        )


def write_head(head: AttentionHead, folder: Path, fp16: bool) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``folder`` (other files are kept).

    Both files are written to a temporary folder first and moved in, so a crash never leaves
    a head with one new and one old file half-written. A head with NaN or infinite weights
    (a last step that diverged) is refused: it would explain nothing.
    """
    broken = [k for k, v in head.state_dict().items() if v.is_floating_point()
              and not torch.isfinite(v).all()]
    if broken:
        raise TrainingError(
            f"The trained head has NaN or infinite values in {', '.join(broken[:4])}; it was not "
            "written. Lower --lr, or train without --amp."
        )
    folder.mkdir(parents=True, exist_ok=True)
    copy = AttentionHead(**_head_config(head))
    copy.load_state_dict(head.state_dict())
    if fp16:
        copy = copy.half()
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        copy.save_pretrained(tmp)
        for name in ("config.json", "model.safetensors"):
            _publish(Path(tmp) / name, folder / name)
    return folder


@dataclass
class Progress:
    """Where a run stands; saved with every checkpoint."""

    epoch: int = 0
    """The epoch under way, or the next to start."""
    step_in_epoch: int = 0
    """Steps of that epoch already done."""
    step: int = 0
    """Steps done in all."""
    seconds: float = 0.0
    """Training wall time so far (data loading included, validation not)."""


class Trainer:
    """One training run in one process: set up from a config, then :meth:`run`."""

    def __init__(self, config: TrainConfig, runtime: Runtime, command: str | None) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.batch % runtime.world_size:
            raise TrainingError(
                f"--batch {config.batch} does not split evenly over {runtime.world_size} "
                "processes."
            )
        self.config, self.runtime, self.command = config, runtime, command
        device = self.device = runtime.device
        on_gpu = device.type == "cuda"
        self.amp = on_gpu if config.amp is None else config.amp
        channels_last = on_gpu if config.channels_last is None else config.channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        torch.manual_seed(config.seed)

        self.spec = spec = get_spec(config.backbone)
        layers = tuple(config.layers.split(",")) if config.layers else None
        self.backbone = build_backbone(spec, config.weights, layers=layers).to(device)
        self.backbone.model.to(memory_format=self.memory_format)
        self.head = fresh_head(self.backbone).to(device, memory_format=self.memory_format)
        self.head.train()
        self.trainable: AttentionHead | SharedFusion = (
            SharedFusion(self.head).to(device) if config.shared_fusion else self.head
        )
        if config.low_res and spec.kind == "vit":
            raise TrainingError("--low-res needs a CNN: a ViT's patch grid is fixed.")
        self.init = config.init or ("cam" if spec.cam_classifier else "random")

        self.sources = select_data(config)
        self.plain = eval_transform(spec.input_size, spec.resize_size)
        augment = default_train_transform(spec.input_size, spec.resize_size, config.color_jitter)
        items = SeededItems(self.sources.train, augment, config.seed)
        self.per_rank = config.batch // runtime.world_size
        self.sampler = EpochSampler(len(items), runtime.rank, runtime.world_size, True,
                                    config.seed)
        self.steps_per_epoch = len(self.sampler) // self.per_rank
        if self.steps_per_epoch == 0:
            raise DataError(f"{len(items)} training images make no full batch of {config.batch}.")
        options: dict[str, Any] = {"num_workers": config.workers, "pin_memory": on_gpu,
                                   "persistent_workers": config.workers > 0}
        self.loader = DataLoader(items, batch_size=self.per_rank, sampler=self.sampler,
                                 drop_last=True, **options)
        self.val_loader = None
        if self.sources.val is not None and len(self.sources.val):
            val_items = SeededItems(self.sources.val, self.plain, config.seed)
            val_sampler = EpochSampler(len(val_items), runtime.rank, runtime.world_size,
                                       shuffle=False, drop_last=False)
            self.val_loader = DataLoader(val_items, batch_size=self.per_rank,
                                         sampler=val_sampler, **options)

        groups = parameter_groups(self.trainable, config.weight_decay)
        self.optimizer: torch.optim.Optimizer = (
            torch.optim.AdamW(groups, lr=config.lr) if config.optimizer == "adamw"
            else torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                 nesterov=config.nesterov)
        )
        self.scheduler = OneCycleLR(
            self.optimizer, max_lr=config.lr, total_steps=config.epochs * self.steps_per_epoch,
            pct_start=config.pct_start, div_factor=config.div_factor,
            final_div_factor=config.final_div_factor, cycle_momentum=False,
        )
        self.loss_fn = TTameLoss(config.ce_weight, config.area_weight, config.tv_weight,
                                 config.area_power, config.border, config.kept_weight)
        self.progress = Progress()
        self.label_counts = torch.zeros(self.head.num_classes, dtype=torch.float64,
                                        device=device)
        self.epoch_sums = torch.zeros(len(TERMS) + 1, dtype=torch.float64, device=device)
        self.model: nn.Module = self.trainable
        self.resumed = False
        self.cam_scale: float | None = None

    # -- state -------------------------------------------------------------------------------

    def start(self) -> None:
        """Resume from the checkpoint, or initialise the head; then wrap it for DDP."""
        path = self.config.checkpoint_path
        if self.config.resume:
            if not path.is_file():
                raise TrainingError(f"--resume: there is no checkpoint at '{path}'.")
            self.restore(load_checkpoint(path))
        elif self.init == "cam":
            count = min(len(self.sources.train), max(self.config.batch, 8))
            picks = torch.linspace(0, len(self.sources.train) - 1, count).long().tolist()
            images = torch.stack([self.plain(self.sources.train[i]) for i in picks])
            self.cam_scale = init_from_cam(self.head, self.backbone, images.to(self.device))
        if self.runtime.world_size > 1:
            on_gpu = self.device.type == "cuda"
            self.model = DistributedDataParallel(
                self.trainable, device_ids=[self.device.index] if on_gpu else None
            )

    def restore(self, saved: dict[str, Any]) -> None:
        """Load everything :meth:`checkpoint` saved."""
        _check_resume(saved["config"], self.config)
        self.head.load_state_dict(saved["head"])
        if isinstance(self.trainable, SharedFusion):
            self.trainable.shared.data.copy_(saved["shared"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.progress = Progress(**saved["progress"])
        self.label_counts = saved["label_counts"].to(self.device)
        self.epoch_sums = saved["epoch_sums"].to(self.device)
        set_rng_state(saved["rng"])
        self.resumed = True

    def checkpoint(self) -> None:
        """Save the whole state (rank 0 only), atomically."""
        if not self.runtime.is_main:
            return
        save_checkpoint(self.config.checkpoint_path, {
            "config": asdict(self.config), "head_config": _head_config(self.head),
            "head": self.head.state_dict(), "optimizer": self.optimizer.state_dict(),
            **({"shared": self.trainable.shared.detach().cpu()}
               if isinstance(self.trainable, SharedFusion) else {}),
            "scheduler": self.scheduler.state_dict(), "progress": asdict(self.progress),
            "label_counts": self.label_counts.cpu(), "epoch_sums": self.epoch_sums.cpu(),
            "rng": rng_state(),
        })

    # -- training ----------------------------------------------------------------------------

    def step(self, images: torch.Tensor) -> torch.Tensor:
        """One optimisation step; returns the loss terms averaged over the processes.

        The terms are checked on every process at once, before the backward pass, so a
        non-finite loss stops all of them together and never reaches the head.
        """
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        side = self.input_side()
        if side is not None and side != images.shape[-1]:
            images = F.interpolate(images, size=(side, side), mode="bilinear",
                                   align_corners=False, antialias=True)
            images = images.contiguous(memory_format=self.memory_format)
        terms, labels = compute_loss(self.backbone, self.model, self.loss_fn, images, self.amp,
                                     self.config.kept_share)
        stats = torch.cat([
            terms.stacked().double(),
            torch.bincount(labels, minlength=self.head.num_classes).double(),
        ])
        stats = _reduce(stats, self.runtime)
        values = stats[: len(TERMS)] / self.runtime.world_size
        if not torch.isfinite(values).all():
            names = ", ".join(
                f"{n}={float(v):.4g}" for n, v in zip(LossTerms.names(), values, strict=True)
            )
            raise TrainingError(
                f"The loss is not finite at step {self.progress.step + 1} (epoch "
                f"{self.progress.epoch + 1}): {names}. Training stopped and no head was "
                f"written; the last good checkpoint is '{self.config.checkpoint_path}'. Lower "
                "--lr, or train without --amp."
            )
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.label_counts += stats[len(TERMS) :]
        self.epoch_sums += torch.cat([values, values.new_ones(1)])
        return values

    def input_side(self) -> int | None:
        """The input side of the next step: ``--low-res`` early in the run, else the full one."""
        config = self.config
        low_steps = round(config.low_res_share * config.epochs * self.steps_per_epoch)
        return config.low_res if config.low_res and self.progress.step < low_steps else None

    def train_epoch(self, log: CsvLog | None) -> None:
        """The rest of the current epoch, checkpointing every ``checkpoint_every`` steps."""
        progress, config = self.progress, self.config
        skip = progress.step_in_epoch
        self.sampler.set_epoch(progress.epoch, skip * self.per_rank)
        interval = 1.0 if sys.stderr.isatty() else 30.0
        bar = tqdm(total=self.steps_per_epoch, initial=skip, mininterval=interval,
                   desc=f"epoch {progress.epoch + 1}/{config.epochs}", dynamic_ncols=True,
                   disable=not self.runtime.is_main)
        started = last = time.perf_counter()
        for images in self.loader:
            lr = self.scheduler.get_last_lr()[0]
            values = self.step(images)
            now = time.perf_counter()
            progress.seconds += now - last
            last = now
            progress.step += 1
            progress.step_in_epoch += 1
            rate = (progress.step_in_epoch - skip) * config.batch / (now - started)
            if log is not None:
                row = dict(zip(TERMS, values.tolist(), strict=True))
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items()} | {"img/s": f"{rate:.1f}"},
                                refresh=False)
                bar.update()
                log.write({"epoch": progress.epoch + 1, "step": progress.step, "lr": lr, **row,
                           "images_per_s": rate, "seconds": progress.seconds})
            if (config.checkpoint_every and progress.step % config.checkpoint_every == 0
                    and progress.step_in_epoch < self.steps_per_epoch):
                self.checkpoint()
        bar.close()

    def validation(self) -> list[float]:
        """Mean validation loss terms (NaN without a validation set)."""
        if self.val_loader is None:
            return [float("nan")] * len(TERMS)
        return validate(self.backbone, self.trainable, self.loss_fn, self.val_loader,
                        self.runtime, self.amp, self.memory_format,
                        self.config.kept_share).tolist()

    def log_epoch(self, log: CsvLog | None, train: list[float], val: list[float]) -> None:
        """One row of ``epochs.csv`` and one printed line for the epoch just finished."""
        if log is None:
            return
        progress = self.progress
        log.write({
            "epoch": progress.epoch, "step": progress.step,
            **dict(zip(TERMS, train, strict=True)),
            **dict(zip([f"val_{t}" for t in TERMS], val, strict=True)),
            "images_per_s": progress.step * self.config.batch / max(progress.seconds, 1e-9),
            "seconds": progress.seconds,
        })
        def terms(values: list[float]) -> str:
            parts = ", ".join(f"{t} {v:.4f}" for t, v in zip(TERMS[1:], values[1:], strict=True))
            return f"{values[0]:.4f} ({parts})"

        print(f"epoch {progress.epoch}: train loss {terms(train)}; validation loss "
              f"{terms(val)}; {progress.seconds:.0f} s", flush=True)

    def end_epoch(self, log: CsvLog | None) -> None:
        """Validate, log the epoch's means, move on to the next epoch and checkpoint."""
        n = len(TERMS)
        means = (self.epoch_sums[:n] / self.epoch_sums[n].clamp_min(1)).tolist()
        self.epoch_sums.zero_()
        val = self.validation()
        self.progress.epoch += 1
        self.progress.step_in_epoch = 0
        self.log_epoch(log, means, val)
        self.checkpoint()

    def run(self) -> Path | None:
        """Train every remaining epoch; write the head on rank 0 and return its folder."""
        self.start()
        config, main = self.config, self.runtime.is_main
        steps_log = epochs_log = None
        if main:
            config.out_dir.mkdir(parents=True, exist_ok=True)
            resumed = self.resumed
            steps_log = CsvLog(config.out_dir / "steps.csv", STEP_COLUMNS,
                               self.progress.step if resumed else None, "step")
            epochs_log = CsvLog(config.out_dir / "epochs.csv", EPOCH_COLUMNS,
                                self.progress.epoch if resumed else None, "epoch")
            print(self.describe(), flush=True)
        if not self.resumed:  # epoch 0: the starting point, before any step
            self.log_epoch(epochs_log, [float("nan")] * len(TERMS), self.validation())
        try:
            while self.progress.epoch < config.epochs:
                self.train_epoch(steps_log)
                self.end_epoch(epochs_log)
        finally:
            for log in (steps_log, epochs_log):
                if log is not None:
                    log.close()
        return self.finish() if main else None

    def describe(self) -> str:
        """One line about the run, printed at its start."""
        text = (
            f"ttame train: {self.spec.name} taps {list(self.head.layers)}, "
            f"{self.head.num_classes} classes; {self.sources.description}; "
            f"{self.runtime.world_size} process(es) on {self.device}, batch {self.config.batch},"
            f" {self.config.epochs} epochs x {self.steps_per_epoch} steps; init {self.init}"
        )
        if self.cam_scale is not None:
            text += f" (CAM scale {self.cam_scale:.3g})"
        if self.resumed:
            text += f"; resumed at step {self.progress.step}"
        return text

    def finish(self) -> Path:
        """Write the head, ``summary.json``, and upload the head if asked."""
        config = self.config
        head = self.trainable.folded() if isinstance(self.trainable, SharedFusion) else self.head
        folder = write_head(head, Path(config.head_dir or config.out_dir / "head"),
                            config.fp16_head)
        counts = self.label_counts.cpu()
        seen = {int(i): int(counts[i]) for i in torch.nonzero(counts).flatten()}
        summary = {
            "backbone": self.spec.name, "layers": list(self.head.layers), "init": self.init,
            "data": self.sources.description, "command": self.command, "epochs": config.epochs,
            "steps": self.progress.step, "batch": config.batch,
            "processes": self.runtime.world_size, "device": str(self.device),
            "threads": torch.get_num_threads(), "train_seconds": round(self.progress.seconds, 1),
            "fp16_head": config.fp16_head, "classes_seen": len(seen), "label_counts": seen,
        }
        (config.out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"head written to {folder} ({len(seen)} classes seen in training)", flush=True)
        if config.push_to_hub:
            try:
                head.push_to_hub(config.push_to_hub)
            except Exception as exc:  # any Hub failure is reported the same way
                raise TrainingError(
                    f"The head was saved to {folder} but the upload to "
                    f"'{config.push_to_hub}' failed: {type(exc).__name__}: {str(exc)[:300]}"
                ) from exc
        return folder


def train(config: TrainConfig, command: str | None = None) -> Path | None:
    """Run (or resume) a training; return the final head's folder on rank 0, else None."""
    runtime = setup_runtime(config.device)
    try:
        return Trainer(config, runtime, command).run()
    finally:
        if runtime.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


# --- command line -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Handler of ``ttame train`` and ``train.py``."""
    train(config_from_args(args), shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    return 0


DESCRIPTION = (
    "Train a T-TAME head on a frozen backbone. Labels are the backbone's own top-1, so any "
    "unlabelled images do. Multi-GPU: torchrun --nproc_per_node=N train.py ..."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ttame train``."""
    parser = subparsers.add_parser("train", help="train a head", description=DESCRIPTION)
    add_options(parser)
    parser.set_defaults(handler=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train.py``."""
    parser = argparse.ArgumentParser(prog="train.py", description=DESCRIPTION)
    add_options(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TTameError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


"""Train a T-TAME head on a frozen backbone: one run, on one process or several.

Runs on one CPU or GPU, or on several processes with ``torchrun`` (DDP on the head; gloo on
CPUs, NCCL on GPUs; only rank 0 writes). Checkpoints are written atomically and carry a
checksum, so an interrupted run resumes exactly where it stopped and a damaged file is never
loaded.

    python train.py --pool data --backbone mobilenet_v2 --out runs/mobilenet_v2
    torchrun --nproc_per_node=4 train.py --data /imagenet --backbone resnet50 --out runs/r50
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ttame.distributed import Runtime, reduce_sum, setup_runtime, shutdown
from ttame.errors import HeadError, TrainingError, TTameError
from ttame.explainer import fresh_head
from ttame.hub.heads import push_head, save_head
from ttame.model.registry import get_spec
from ttame.model.taps import build_backbone
from ttame.training.checkpoint import (
    EPOCH_COLUMNS,
    STEP_COLUMNS,
    CsvLog,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from ttame.training.config import TrainConfig, check_resume
from ttame.training.losses import LossTerms
from ttame.training.setup import (
    load_trained_head,
    make_batches,
    make_loss,
    make_optimizer,
    make_trainable,
)
from ttame.training.step import (
    TERMS,
    SharedFusion,
    compute_loss,
    init_from_cam,
    validate,
)


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
                f"--batch {config.batch} does not split evenly over {runtime.world_size} processes."
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
        if config.fused_size < 1:
            raise TrainingError(f"--fused-size takes a size of 1 or more; got {config.fused_size}.")
        self.head = fresh_head(self.backbone, max_size=config.fused_size)
        self.head.to(device).to(memory_format=self.memory_format)
        self.head.train()
        self.trainable = make_trainable(config, self.head).to(device)
        self.kept_shares = config.kept_shares  # a malformed --kept-share fails before any work
        if config.low_res and spec.kind == "vit":
            raise TrainingError("--low-res needs a CNN: a ViT's patch grid is fixed.")
        if config.init and config.init_from:
            raise TrainingError("--init and --init-from exclude each other: give one.")
        if config.init_from:
            self.init = f"from {config.init_from}"
        else:
            self.init = config.init or ("cam" if spec.cam_classifier else "random")

        data = make_batches(config, spec, runtime)
        self.sources, self.plain, self.sampler = data.sources, data.plain, data.sampler
        self.loader, self.val_loader = data.loader, data.val_loader
        self.per_rank, self.steps_per_epoch = data.per_rank, data.steps_per_epoch
        total = config.epochs * self.steps_per_epoch
        self.optimizer, self.scheduler = make_optimizer(config, self.trainable, total)
        self.loss_fn = make_loss(config)
        self.progress = Progress()
        self.label_counts = torch.zeros(self.head.num_classes, dtype=torch.float64, device=device)
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
        elif self.config.init_from:
            load_trained_head(self.head, self.config.init_from)
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
        check_resume(saved["config"], self.config)
        self.head.load_state_dict(saved["head"])
        if isinstance(self.trainable, SharedFusion):
            self.trainable.load_extra_state(saved)
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
        save_checkpoint(
            self.config.checkpoint_path,
            {
                "config": asdict(self.config),
                "head_config": self.head.config,
                "head": self.head.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                **(
                    self.trainable.extra_state() if isinstance(self.trainable, SharedFusion) else {}
                ),
                "scheduler": self.scheduler.state_dict(),
                "progress": asdict(self.progress),
                "label_counts": self.label_counts.cpu(),
                "epoch_sums": self.epoch_sums.cpu(),
                "rng": rng_state(),
            },
        )

    # -- training ----------------------------------------------------------------------------

    def step(self, batch: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """One optimisation step; returns the loss terms averaged over the processes.

        ``batch``: the images, or (with ``--teacher``) images, teacher maps, teacher classes.

        The terms are checked on every process at once, before the backward pass, so a
        non-finite loss stops all of them together and never reaches the head.
        """
        images, teachers = (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch)
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        side = self.input_side()
        if side is not None and side != images.shape[-1]:
            images = F.interpolate(
                images, size=(side, side), mode="bilinear", align_corners=False, antialias=True
            )
            images = images.contiguous(memory_format=self.memory_format)
        taught = None
        if teachers is not None:
            maps = teachers[1].to(self.device)
            if maps.shape[-1] != images.shape[-1]:
                maps = F.interpolate(maps[:, None], size=images.shape[-2:], mode="nearest")[:, 0]
            taught = (maps, teachers[2].to(self.device))
        terms, labels = compute_loss(
            self.backbone, self.model, self.loss_fn, images, self.amp, self.kept_shares, taught
        )
        stats = torch.cat(
            [
                terms.stacked().double(),
                torch.bincount(labels, minlength=self.head.num_classes).double(),
            ]
        )
        stats = reduce_sum(stats, self.runtime)
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
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=skip,
            mininterval=interval,
            desc=f"epoch {progress.epoch + 1}/{config.epochs}",
            dynamic_ncols=True,
            disable=not self.runtime.is_main,
        )
        started = last = time.perf_counter()
        for batch in self.loader:
            lr = self.scheduler.get_last_lr()[0]
            values = self.step(batch)
            now = time.perf_counter()
            progress.seconds += now - last
            last = now
            progress.step += 1
            progress.step_in_epoch += 1
            rate = (progress.step_in_epoch - skip) * config.batch / (now - started)
            if log is not None:
                row = dict(zip(TERMS, values.tolist(), strict=True))
                bar.set_postfix(
                    {k: f"{v:.3f}" for k, v in row.items()} | {"img/s": f"{rate:.1f}"},
                    refresh=False,
                )
                bar.update()
                log.write(
                    {
                        "epoch": progress.epoch + 1,
                        "step": progress.step,
                        "lr": lr,
                        **row,
                        "images_per_s": rate,
                        "seconds": progress.seconds,
                    }
                )
            if (
                config.checkpoint_every
                and progress.step % config.checkpoint_every == 0
                and progress.step_in_epoch < self.steps_per_epoch
            ):
                self.checkpoint()
        bar.close()

    def validation(self) -> list[float]:
        """Mean validation loss terms (NaN without a validation set)."""
        if self.val_loader is None:
            return [float("nan")] * len(TERMS)
        return validate(
            self.backbone,
            self.trainable,
            self.loss_fn,
            self.val_loader,
            self.runtime,
            self.amp,
            self.memory_format,
            self.kept_shares,
        ).tolist()

    def log_epoch(self, log: CsvLog | None, train: list[float], val: list[float]) -> None:
        """One row of ``epochs.csv`` and one printed line for the epoch just finished."""
        if log is None:
            return
        progress = self.progress
        log.write(
            {
                "epoch": progress.epoch,
                "step": progress.step,
                **dict(zip(TERMS, train, strict=True)),
                **dict(zip([f"val_{t}" for t in TERMS], val, strict=True)),
                "images_per_s": progress.step * self.config.batch / max(progress.seconds, 1e-9),
                "seconds": progress.seconds,
            }
        )

        def terms(values: list[float]) -> str:
            parts = ", ".join(f"{t} {v:.4f}" for t, v in zip(TERMS[1:], values[1:], strict=True))
            return f"{values[0]:.4f} ({parts})"

        trained = f"train loss {terms(train)}" if progress.step else "before the first step"
        print(
            f"epoch {progress.epoch}: {trained}; validation loss {terms(val)}; "
            f"{progress.seconds:.0f} s",
            flush=True,
        )

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
            steps_log = CsvLog(
                config.out_dir / "steps.csv",
                STEP_COLUMNS,
                self.progress.step if resumed else None,
                "step",
            )
            epochs_log = CsvLog(
                config.out_dir / "epochs.csv",
                EPOCH_COLUMNS,
                self.progress.epoch if resumed else None,
                "epoch",
            )
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
        try:
            folder = save_head(
                head, Path(config.head_dir or config.out_dir / "head"), fp16=config.fp16_head
            )
        except HeadError as exc:
            raise TrainingError(f"{exc} Lower --lr, or train without --amp.") from exc
        counts = self.label_counts.cpu()
        seen = {int(i): int(counts[i]) for i in torch.nonzero(counts).flatten()}
        summary = {
            "backbone": self.spec.name,
            "layers": list(self.head.layers),
            "init": self.init,
            "data": self.sources.description,
            "command": self.command,
            "epochs": config.epochs,
            "steps": self.progress.step,
            "batch": config.batch,
            "processes": self.runtime.world_size,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "train_seconds": round(self.progress.seconds, 1),
            "fp16_head": config.fp16_head,
            "classes_seen": len(seen),
            "label_counts": seen,
        }
        (config.out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"head written to {folder} ({len(seen)} classes seen in training)", flush=True)
        if config.push_to_hub:
            try:
                push_head(head, config.push_to_hub)
            except Exception as exc:  # any Hub failure is reported the same way
                raise TrainingError(
                    f"The head was saved to {folder} but the upload to "
                    f"'{config.push_to_hub}' failed: {type(exc).__name__}: {str(exc)[:300]}"
                ) from exc
        return folder


def train(config: TrainConfig, command: str | None = None) -> Path | None:
    """Run (or resume) a training; return the final head's folder on rank 0, else None."""
    try:
        runtime = setup_runtime(config.device)
    except TTameError as exc:
        raise TrainingError(str(exc)) from exc
    try:
        return Trainer(config, runtime, command).run()
    finally:
        shutdown(runtime)

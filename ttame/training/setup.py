"""Setting a run up from its config: the data, the batches, what trains, the optimiser, the loss."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR
from torch.utils.data import DataLoader

from ttame.data.pool.composites import SCALE_RANGE, CompositeMix
from ttame.data.sampling import EpochSampler, SeededItems
from ttame.data.sources import DataSources, folder_sources, list_sources, pool_sources
from ttame.data.transforms import default_train_transform, eval_transform
from ttame.distributed import Runtime
from ttame.errors import DataError, HeadError, TrainingError
from ttame.hub.load import open_head
from ttame.model.backbones import BackboneSpec
from ttame.model.head import AttentionHead
from ttame.training.checkpoint import head_from_checkpoint, is_checkpoint
from ttame.training.config import TrainConfig
from ttame.training.losses import TTameLoss
from ttame.training.step import SharedFusion, parameter_groups
from ttame.training.teacher import Teacher, TeacherItems


def select_data(config: TrainConfig) -> DataSources:
    """The data source the options name (exactly one of --pool, --data, --train-list)."""
    chosen = [n for n in ("pool", "data", "train_list") if getattr(config, n)]
    if len(chosen) != 1:
        raise DataError("Give exactly one of --pool DIR, --data DIR or --train-list FILE.")
    if config.pool:
        mix = CompositeMix(
            config.pool_max_stamps,
            config.pool_mosaic,
            (config.pool_min_scale, max(config.pool_min_scale, SCALE_RANGE[1])),
        )
        return pool_sources(
            config.pool, config.pool_composites, config.pool_size, config.pool_val, config.seed, mix
        )
    if config.data:
        return folder_sources(config.data, config.val_fraction)
    return list_sources(str(config.train_list), config.val_list, config.data_root)


@dataclass
class Batches:
    """The share of the data one process trains and validates on, as the loops read it."""

    sources: DataSources
    plain: Any
    """The explainer's own view of a picture (no augmentation): validation, CAM scale."""
    sampler: EpochSampler
    loader: DataLoader[Any]
    val_loader: DataLoader[Any] | None
    per_rank: int
    steps_per_epoch: int


def make_batches(config: TrainConfig, spec: BackboneSpec, runtime: Runtime) -> Batches:
    """The training and validation loaders of this process, seeded per item."""
    sources = select_data(config)
    plain = eval_transform(spec.input_size, spec.resize_size)
    try:
        augment = default_train_transform(
            spec.input_size, spec.resize_size, config.color_jitter, config.crop_scale
        )
    except ValueError as error:  # the transform checks its arguments; name the flags here
        raise TrainingError(f"--color-jitter or --crop-scale out of range: {error}.") from error
    items = (
        teacher_items(config, spec, sources, augment)
        if config.teacher
        else SeededItems(sources.train, augment, config.seed)
    )
    per_rank = config.batch // runtime.world_size
    sampler = EpochSampler(len(items), runtime.rank, runtime.world_size, True, config.seed)
    steps_per_epoch = len(sampler) // per_rank
    if steps_per_epoch == 0:
        raise DataError(f"{len(items)} training images make no full batch of {config.batch}.")
    options: dict[str, Any] = {
        "num_workers": config.workers,
        "pin_memory": runtime.device.type == "cuda",
        "persistent_workers": config.workers > 0,
    }
    loader = DataLoader(items, batch_size=per_rank, sampler=sampler, drop_last=True, **options)
    val_loader = None
    if sources.val is not None and len(sources.val):
        val_items = SeededItems(sources.val, plain, config.seed)
        val_sampler = EpochSampler(
            len(val_items), runtime.rank, runtime.world_size, shuffle=False, drop_last=False
        )
        val_loader = DataLoader(val_items, batch_size=per_rank, sampler=val_sampler, **options)
    return Batches(sources, plain, sampler, loader, val_loader, per_rank, steps_per_epoch)


def teacher_items(
    config: TrainConfig, spec: BackboneSpec, sources: DataSources, augment: Any
) -> TeacherItems:
    """Training items with the teacher's maps of the pool's photos (``--teacher``)."""
    photos = getattr(sources.train, "photos", None)
    if not config.pool or photos is None:
        raise TrainingError("--teacher needs --pool: its maps belong to the pool's photos.")
    if config.crop_scale != 1:
        raise TrainingError("--teacher keeps the paper's crops: leave --crop-scale at 1.")
    teacher = Teacher.load(str(config.teacher))
    if teacher.backbone != spec.name:
        raise TrainingError(
            f"--teacher: '{config.teacher}' was fitted for {teacher.backbone}, not {spec.name}."
        )
    keys = [photo.key for photo in photos]
    if not set(keys) & set(teacher.keys):
        raise TrainingError(f"--teacher: '{config.teacher}' has none of this pool's photos.")
    return TeacherItems(
        sources.train,
        augment,
        teacher,
        keys,
        spec.input_size,
        spec.resize_size,
        config.seed,
    )


def make_optimizer(
    config: TrainConfig, trainable: nn.Module, total_steps: int
) -> tuple[torch.optim.Optimizer, OneCycleLR]:
    """SGD with Nesterov momentum (the paper's) or AdamW, and the one-cycle schedule."""
    groups = parameter_groups(trainable, config.weight_decay)
    optimizer: torch.optim.Optimizer = (
        torch.optim.AdamW(groups, lr=config.lr)
        if config.optimizer == "adamw"
        else torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
        )
    )
    scheduler = OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=total_steps,
        pct_start=config.pct_start,
        div_factor=config.div_factor,
        final_div_factor=config.final_div_factor,
        cycle_momentum=False,
    )
    return optimizer, scheduler


def make_loss(config: TrainConfig) -> TTameLoss:
    """The loss with the config's weights (the paper's by default)."""
    return TTameLoss(
        config.ce_weight,
        config.area_weight,
        config.tv_weight,
        config.area_power,
        config.border,
        config.kept_weight,
        config.kept_softness,
        config.teacher_weight if config.teacher else 0.0,
    )


def make_trainable(config: TrainConfig, head: AttentionHead) -> AttentionHead | SharedFusion:
    """What the optimiser trains: the head, or the head with its parts shared by every class.

    Refuses combinations in which nothing, or nothing new, would learn.
    """
    if config.freeze_class_rows and not config.shared_fusion:
        raise TrainingError("--freeze-class-rows needs --shared-fusion: nothing would learn.")
    if config.class_transfer and not (config.shared_fusion and len(head.layers) > 1):
        raise TrainingError("--class-transfer needs --shared-fusion and two taps or more.")
    if config.freeze_class_rows:
        head.fuser.requires_grad_(False)
    if config.shared_fusion:
        return SharedFusion(head, transfer=config.class_transfer)
    return head


def load_trained_head(head: AttentionHead, source: str) -> None:
    """Copy a trained head's weights into a run's head (``--init-from``: fine-tuning).

    ``source`` is a run's ``checkpoint.pt`` (its shared parts folded into the class rows
    first, so the run's own shared parts start at zero and learn a change on top of them) or
    anything a head is opened from (:func:`ttame.hub.load.open_head`: a head folder, a Hub
    repo, the reference's checkpoints).
    """
    if is_checkpoint(Path(source)):
        trained = head_from_checkpoint(Path(source))
    else:
        try:
            trained = open_head(source, backbone=head.backbone).head
        except HeadError as exc:
            raise TrainingError(f"--init-from: {exc}") from exc
    if {**trained.config, "max_size": head.max_size} != head.config:  # any fused size fits
        raise TrainingError(
            f"--init-from: the head in '{source}' does not fit this run's backbone and taps "
            f"({trained.config} against {head.config})."
        )
    head.load_state_dict(trained.state_dict())

import csv
import dataclasses
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.helpers import TINY_CNN, TinyCNN, _seeded
from ttame.cli import train as train_cli
from ttame.data.folders import ImageFiles, imagenet_layout, read_list_file
from ttame.data.sampling import EpochSampler, SeededItems
from ttame.data.sources import folder_sources, list_sources
from ttame.data.transforms import default_train_transform
from ttame.distributed import setup_runtime
from ttame.errors import DataError, TrainingError
from ttame.explainer import fresh_head
from ttame.hub.load import load_head
from ttame.model import registry
from ttame.model.registry import get_spec
from ttame.model.taps import build_backbone
from ttame.model.weights import WeightsSource
from ttame.training import step, trainer
from ttame.training.checkpoint import load_checkpoint, save_checkpoint
from ttame.training.config import TrainConfig, check_resume
from ttame.training.losses import TTameLoss
from ttame.training.step import compute_loss, init_from_cam
from ttame.training.trainer import train

REPO = Path(__file__).resolve().parent.parent


def varied_cnn() -> torch.nn.Module:
    """The tiny CNN with its classifier centred on typical features, so top-1 labels vary.

    (The plain tiny CNN answers the same class for every image, which hides label bugs.)
    """
    model = _seeded(TinyCNN)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.fc.weight.normal_(0, 1, generator=generator)
        model.fc.weight -= model.fc.weight.mean(0, keepdim=True)
        probe = F.interpolate(
            torch.rand(32, 3, 5, 5, generator=generator), size=32, mode="bilinear"
        )
        features = model.stage3(model.stage2(model.stage1(probe))).mean((2, 3))
        model.fc.bias.copy_(-(model.fc.weight @ features.mean(0)))
    return model


VARIED_CNN = dataclasses.replace(
    TINY_CNN,
    name="tiny_cnn_varied",
    build=varied_cnn,
    weights=WeightsSource(download=lambda: varied_cnn().state_dict()),
)


@pytest.fixture(autouse=True)
def varied_backbone(monkeypatch):
    monkeypatch.setitem(registry.REGISTRY, "tiny_cnn_varied", lambda: VARIED_CNN)


def write_images(folder: Path, count: int, seed: int = 0, size: int = 40) -> list[Path]:
    """Random-texture PNGs (blurred noise, so the tiny CNN's top-1 varies between images)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(5, 5, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR)
        path = folder / f"img_{i:02d}.png"
        image.save(path)
        paths.append(path)
    return paths


def tiny_config(tmp_path: Path, **overrides) -> TrainConfig:
    options = dict(
        backbone="tiny_cnn_varied",
        data=str(tmp_path / "images"),
        out=str(tmp_path / "run"),
        epochs=2,
        batch=4,
        lr=0.05,
        workers=0,
        device="cpu",
        checkpoint_every=0,
        val_fraction=0.2,
        seed=3,
    )
    options.update(overrides)
    return TrainConfig(**options)


def tiny_batch(name: str = "tiny_cnn_varied", count: int = 6, seed: int = 0):
    backbone = build_backbone(get_spec(name))
    torch.manual_seed(seed)
    head = fresh_head(backbone).train()
    coarse = torch.rand(count, 3, 5, 5, generator=torch.Generator().manual_seed(seed))
    images = F.interpolate(coarse, size=32, mode="bilinear").clamp(0, 1)
    return backbone, head, images


def head_state(folder: Path) -> dict[str, torch.Tensor]:
    return load_head(folder).state_dict()


# --- the step -----------------------------------------------------------------------------


def test_loss_fuses_only_the_batch_labels_and_sees_the_b_by_b_set(monkeypatch):
    backbone, head, images = tiny_batch(count=8)
    asked = []
    forward = type(head).forward
    monkeypatch.setattr(
        type(head), "forward", lambda self, m, c=None: asked.append(c) or forward(self, m, c)
    )
    loss_fn = TTameLoss()
    terms, labels = compute_loss(backbone, head, loss_fn, images)
    unique = torch.unique(labels)
    assert len(asked) == 1 and asked[0].dim() == 1 and torch.equal(asked[0], unique)
    assert len(unique) > 1  # the test needs a batch with several labels

    # Reference computation: all K maps, each image's mask for every image's label.
    with torch.no_grad():
        logits, maps = backbone.forward_features(images)
        all_masks = torch.sigmoid(head(maps))
        own = all_masks[torch.arange(8), labels][:, None]
        up = F.interpolate(own, size=(32, 32), mode="bilinear", align_corners=False)
        expected = loss_fn(backbone(images * up), labels, all_masks[:, labels])
    assert torch.equal(labels, logits.argmax(1))
    for name in ("total", "ce", "area", "tv"):
        assert getattr(terms, name).item() == pytest.approx(
            getattr(expected, name).item(), rel=1e-5
        )


def test_vit_masks_the_normalised_image_and_cnn_the_raw_one(monkeypatch):
    for name, kind in (("tiny_vit", "vit"), ("tiny_cnn_varied", "cnn")):
        backbone, head, images = tiny_batch(name)
        seen = []
        forward = backbone.model.forward
        monkeypatch.setattr(
            backbone.model, "forward", lambda x, f=forward, s=seen: s.append(x) or f(x)
        )
        compute_loss(backbone, head, TTameLoss(), images)
        clean, masked = seen
        with torch.no_grad():
            mask = masked / clean
        if kind == "vit":  # normalised image times a mask in (0, 1): same sign, smaller
            assert torch.equal(clean, backbone.normalize(images))
            assert ((mask > 0) & (mask < 1)).float().mean() > 0.99
        else:  # (raw * mask - mean) / std: not a per-pixel scaling of the normalised image
            raw_mask = (masked * backbone.std + backbone.mean) / images
            assert ((raw_mask > 0) & (raw_mask < 1)).float().mean() > 0.99
            assert not ((mask > 0) & (mask < 1)).all()


def test_gradients_reach_only_the_head_and_a_step_lowers_the_loss():
    backbone, head, images = tiny_batch(count=8, seed=1)
    loss_fn = TTameLoss()
    terms, _ = compute_loss(backbone, head, loss_fn, images)
    terms.total.backward()
    assert all(p.grad is None for p in backbone.parameters())
    grads = [p.grad for p in head.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        for p in head.parameters():
            p -= 0.05 * p.grad
    after, _ = compute_loss(backbone, head, loss_fn, images)
    assert after.total.item() < terms.total.item() - 1e-4


def test_cam_init_gives_class_activation_maps():
    backbone, head, images = tiny_batch(count=8)
    scale = init_from_cam(head, backbone, images)
    head.eval()
    with torch.no_grad():
        logits, maps = backbone.forward_features(images)
        c = head(maps, torch.tensor([0, 3]))
        fc = backbone.model.fc
        last = F.interpolate(maps[-1], size=c.shape[-2:], mode="bilinear", align_corners=False)
        cam = torch.einsum("kc,bchw->bkhw", fc.weight[[0, 3]], F.relu(last))
        cam = cam + fc.bias[[0, 3], None, None]
    assert scale > 0
    assert torch.allclose(c, scale * cam + (c - scale * cam).flatten().mean(), atol=1e-4)
    # Standardised over the calibration batch's own labels.
    own = head(maps, logits.argmax(1)[:, None])
    assert own.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert own.std().item() == pytest.approx(1.0, rel=1e-3)


def test_cam_init_needs_a_classifier():
    backbone, head, images = tiny_batch("tiny_vit")
    with pytest.raises(TrainingError, match="--init random"):
        init_from_cam(head, backbone, images)


# --- data ---------------------------------------------------------------------------------


def test_list_file_format(tmp_path):
    (tmp_path / "n01").mkdir()
    listing = tmp_path / "train.txt"
    listing.write_text("# comment\nn01/a.JPEG 0\n\nn01/with space.png 12\nn01/nolabel.jpg\n")
    entries = read_list_file(listing)
    assert entries == [
        (tmp_path / "n01/a.JPEG", 0),
        (tmp_path / "n01/with space.png", 12),
        (tmp_path / "n01/nolabel.jpg", None),
    ]
    other = read_list_file(listing, root=tmp_path / "elsewhere")
    assert other[0][0] == tmp_path / "elsewhere/n01/a.JPEG"
    listing.write_text("n01/a.JPEG 0\nnot an image line 3\n")
    with pytest.raises(DataError, match=r"train.txt:2"):
        read_list_file(listing)


def test_list_sources_read_images(tmp_path):
    paths = write_images(tmp_path / "imgs" / "n01", 3)
    (tmp_path / "train.txt").write_text("".join(f"n01/{p.name} 7\n" for p in paths[:2]))
    (tmp_path / "val.txt").write_text(f"n01/{paths[2].name} 7\n")
    sources = list_sources(tmp_path / "train.txt", tmp_path / "val.txt", tmp_path / "imgs")
    assert len(sources.train) == 2 and len(sources.val) == 1
    assert sources.train[0].size == (40, 40)
    with pytest.raises(DataError, match="--data-root"):
        list_sources(tmp_path / "train.txt", None, None)


def test_imagenet_layout_and_plain_folder(tmp_path):
    write_images(tmp_path / "inet" / "train" / "n01", 3)
    write_images(tmp_path / "inet" / "train" / "n02", 2, seed=1)
    write_images(tmp_path / "inet" / "val" / "n01", 2, seed=2)
    assert imagenet_layout(tmp_path / "inet") == (
        tmp_path / "inet" / "train",
        tmp_path / "inet" / "val",
    )
    sources = folder_sources(tmp_path / "inet", val_fraction=0.5)
    assert (len(sources.train), len(sources.val)) == (5, 2)

    write_images(tmp_path / "plain" / "a" / "b", 20)
    (tmp_path / "plain" / "notes.txt").write_text("not an image")
    assert imagenet_layout(tmp_path / "plain") is None
    split = folder_sources(tmp_path / "plain", val_fraction=0.3)
    train_names = {p.name for p in split.train.paths}
    val_names = {p.name for p in split.val.paths}
    assert len(train_names) + len(val_names) == 20 and not train_names & val_names
    assert 0 < len(val_names) < 20
    again = folder_sources(tmp_path / "plain", val_fraction=0.3)
    assert {p.name for p in again.val.paths} == val_names
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No images"):
        folder_sources(tmp_path / "empty", 0.1)


def test_items_are_seeded_by_epoch_and_index(tmp_path):
    paths = write_images(tmp_path / "images", 4, size=60)
    items = SeededItems(ImageFiles(paths), default_train_transform(32, 36), seed=5)
    torch.manual_seed(0)
    first = items[(0, 1)]
    state = torch.get_rng_state()
    assert torch.equal(first, items[(0, 1)])
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    assert any(not torch.equal(first, items[(e, 1)]) for e in range(1, 5))


def test_epoch_sampler_splits_and_skips():
    whole = EpochSampler(10, seed=1)
    whole.set_epoch(2)
    keys = list(whole)
    assert sorted(i for _, i in keys) == list(range(10)) and {e for e, _ in keys} == {2}
    whole.set_epoch(2, skip=4)
    assert list(whole) == keys[4:] and len(whole) == 6
    shards = [EpochSampler(10, rank=r, world_size=2, seed=1) for r in range(2)]
    for s in shards:
        s.set_epoch(2)
    assert sorted(i for s in shards for _, i in s) == list(range(10))
    whole.set_epoch(3)
    assert list(whole) != keys


# --- runs ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_writes_a_head_logs_and_changes_the_head(tmp_path):
    write_images(tmp_path / "images", 12)
    config = tiny_config(tmp_path, init="random")
    folder = train(config)
    assert folder == tmp_path / "run" / "head"
    trained = head_state(folder)
    torch.manual_seed(config.seed)
    start = fresh_head(build_backbone(get_spec("tiny_cnn_varied"))).state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in start if k.endswith("weight"))
    with (tmp_path / "run" / "steps.csv").open() as f:
        steps = list(csv.DictReader(f))
    with (tmp_path / "run" / "epochs.csv").open() as f:
        epochs = list(csv.DictReader(f))
    assert [int(r["step"]) for r in steps] == list(range(1, len(steps) + 1))
    assert [int(r["epoch"]) for r in epochs] == [0, 1, 2]  # epoch 0: before any step
    assert all(np.isfinite(float(r["val_loss"])) for r in epochs)
    assert np.isnan(float(epochs[0]["loss"])) and np.isfinite(float(epochs[1]["loss"]))
    lrs = [float(r["lr"]) for r in steps]
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)  # one cycle: up, then down


@pytest.mark.slow
def test_training_lowers_the_loss_on_its_data(tmp_path):
    write_images(tmp_path / "images", 16)
    config = tiny_config(tmp_path, epochs=6, lr=0.2, val_fraction=0.0, init="random")
    backbone = build_backbone(get_spec("tiny_cnn_varied"))
    images = torch.stack(
        [
            SeededItems(folder_sources(config.data, 0.0).train, default_train_transform(32, 36))[
                (0, i)
            ]
            for i in range(16)
        ]
    )
    torch.manual_seed(config.seed)
    before = fresh_head(backbone).eval()
    after = load_head(train(config))
    loss_fn = TTameLoss()
    with torch.no_grad():
        start = compute_loss(backbone, before, loss_fn, images)[0].total.item()
        end = compute_loss(backbone, after, loss_fn, images)[0].total.item()
    assert end < start - 0.05


class Killed(Exception):
    pass


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_head(tmp_path, monkeypatch):
    write_images(tmp_path / "images", 20)
    whole = tiny_config(tmp_path, out=str(tmp_path / "whole"), checkpoint_every=1)
    train(whole)
    per_epoch = len(folder_sources(whole.data, whole.val_fraction).train) // whole.batch
    assert per_epoch >= 3
    kill_at = per_epoch + 3  # the third step of the second epoch

    calls = {"n": 0}
    real = trainer.compute_loss

    def dies_mid_epoch(*args, **kwargs):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == kill_at:
                raise Killed
        return real(*args, **kwargs)

    cut = tiny_config(tmp_path, out=str(tmp_path / "cut"), checkpoint_every=1)
    monkeypatch.setattr(trainer, "compute_loss", dies_mid_epoch)
    with pytest.raises(Killed):
        train(cut)
    monkeypatch.setattr(trainer, "compute_loss", real)
    saved = load_checkpoint(Path(cut.out) / "checkpoint.pt")
    progress = saved["progress"]
    assert (progress["step"], progress["epoch"], progress["step_in_epoch"]) == (kill_at - 1, 1, 2)
    assert not list(Path(cut.out).glob("*.tmp"))

    train(tiny_config(tmp_path, out=str(tmp_path / "cut"), checkpoint_every=1, resume=True))
    a, b = head_state(Path(whole.out) / "head"), head_state(Path(cut.out) / "head")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name, columns in (
        ("steps.csv", ("step", "loss", "lr")),
        ("epochs.csv", ("epoch", "step", "loss", "val_loss")),
    ):
        rows = []
        for run in (whole, cut):
            with (Path(run.out) / name).open() as f:
                rows.append([tuple(r[c] for c in columns) for r in csv.DictReader(f)])
        assert rows[0] == rows[1]


@pytest.mark.slow
def test_resume_refuses_other_options_and_damaged_checkpoints(tmp_path):
    write_images(tmp_path / "images", 10)
    config = tiny_config(tmp_path, epochs=1, checkpoint_every=1)
    train(config)
    with pytest.raises(TrainingError, match="--lr"):
        train(tiny_config(tmp_path, epochs=1, lr=0.3, resume=True))
    path = Path(config.out) / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TrainingError, match="damaged"):
        train(tiny_config(tmp_path, epochs=1, resume=True))
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(TrainingError, match="damaged"):
        load_checkpoint(path)
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(tiny_config(tmp_path, out=str(tmp_path / "none"), resume=True))


class HalfWritten:
    """A file that writes the first half of what it is given, then calls ``stop``."""

    def __init__(self, file, stop) -> None:
        self.file, self.stop = file, stop

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def write(self, data: bytes) -> None:
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        self.stop()


def train_until_stopped(argv: list[str], stop_in: str, stop_at: int, stopped) -> None:
    """``train.py``'s main in a forked process that halts at its ``stop_at``-th step or
    checkpoint write (``stop_in``), sets ``stopped`` and waits there for its SIGKILL."""

    def stop() -> None:
        stopped.set()
        time.sleep(600)

    count = itertools.count(1)
    if stop_in == "step":
        real_loss = trainer.compute_loss

        def compute_loss(*args, **kwargs):
            if torch.is_grad_enabled() and next(count) == stop_at:  # not the validation
                stop()
            return real_loss(*args, **kwargs)

        trainer.compute_loss = compute_loss
    elif stop_in == "checkpoint write":
        real_fdopen = os.fdopen

        def fdopen(fd, mode="r", *args, **kwargs):
            file = real_fdopen(fd, mode, *args, **kwargs)
            return HalfWritten(file, stop) if mode == "wb" and next(count) == stop_at else file

        os.fdopen = fdopen
    sys.exit(train_cli.main(argv))


def launch(tmp_path: Path, out: str, *options: str, stop_in: str = "", stop_at: int = 0):
    """A training run on the tiny data in its own (forked) process; returns it and its flag."""
    argv = [
        "--backbone",
        "tiny_cnn_varied",
        "--data",
        str(tmp_path / "images"),
        "--out",
        str(tmp_path / out),
        "--epochs",
        "2",
        "--batch",
        "4",
        "--lr",
        "0.05",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--checkpoint-every",
        "1",
        "--val-fraction",
        "0.2",
        "--seed",
        "3",
        *options,
    ]
    context = multiprocessing.get_context("fork")
    stopped = context.Event()
    process = context.Process(target=train_until_stopped, args=(argv, stop_in, stop_at, stopped))
    process.start()
    return process, stopped


def kill_when_stopped(process, stopped) -> None:
    """SIGKILL the run once it is where it was told to stop."""
    deadline = time.monotonic() + 60
    while not stopped.wait(0.05):
        assert process.is_alive() and time.monotonic() < deadline, "the run did not stop"
    os.kill(process.pid, signal.SIGKILL)
    process.join(10)
    assert process.exitcode == -signal.SIGKILL


def finished(process, _stopped) -> bool:
    process.join(60)
    return process.exitcode == 0


@pytest.mark.slow
@pytest.mark.integration
def test_sigkill_mid_step_or_mid_checkpoint_write_then_resume_gives_the_same_head(tmp_path):
    write_images(tmp_path / "images", 20)
    steps = len(folder_sources(tmp_path / "images", 0.2).train) // 4
    assert steps >= 3
    whole = launch(tmp_path, "whole")  # the uninterrupted run, alongside the others
    at = steps + 2  # the second step of the second epoch
    mid_step = launch(tmp_path, "step", stop_in="step", stop_at=at)
    mid_write = launch(tmp_path, "write", stop_in="checkpoint write", stop_at=at)
    kill_when_stopped(*mid_step)
    kill_when_stopped(*mid_write)
    for run in ("step", "write"):
        progress = load_checkpoint(tmp_path / run / "checkpoint.pt")["progress"]
        assert (progress["step"], progress["epoch"], progress["step_in_epoch"]) == (at - 1, 1, 1)
    (temporary,) = (tmp_path / "write").glob("checkpoint.pt.*.tmp")  # the write cut in half
    with pytest.raises(TrainingError, match="damaged or incomplete"):
        load_checkpoint(temporary)

    resumed = [launch(tmp_path, run, "--resume") for run in ("step", "write")]
    assert all(finished(*run) for run in (*resumed, whole))
    assert not temporary.exists()  # the next write removed the leftover
    a = head_state(tmp_path / "whole" / "head")
    for run in ("step", "write"):
        b = head_state(tmp_path / run / "head")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        for name in ("steps.csv", "epochs.csv"):
            rows = []
            for folder in ("whole", run):
                with (tmp_path / folder / name).open() as f:
                    rows.append([(r["step"], r["loss"]) for r in csv.DictReader(f)])
            assert rows[0] == rows[1]


@pytest.mark.slow
def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path) == {"step": 1}
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.slow
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_loss_stops_without_writing_a_head(value, tmp_path, monkeypatch):
    write_images(tmp_path / "images", 12)
    real = TTameLoss.forward
    calls = {"n": 0}

    def explodes_at_step_two(self, *args):
        terms = real(self, *args)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 2:
                terms.total = terms.total * float(value)
        return terms

    monkeypatch.setattr(TTameLoss, "forward", explodes_at_step_two)
    config = tiny_config(tmp_path, checkpoint_every=1)
    with pytest.raises(TrainingError, match=rf"not finite at step 2 \(epoch 1\).*total={value}"):
        train(config)
    assert not (Path(config.out) / "head").exists()
    assert load_checkpoint(Path(config.out) / "checkpoint.pt")["progress"]["step"] == 1


@pytest.mark.slow
def test_a_head_with_non_finite_weights_is_never_written(tmp_path, monkeypatch):
    write_images(tmp_path / "images", 4)
    real = torch.optim.SGD.step

    def poisons_the_head(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", poisons_the_head)
    config = tiny_config(tmp_path, epochs=1, val_fraction=0.0, init="random")  # one step
    with pytest.raises(TrainingError, match=r"NaN or infinite values in branches\.0\.conv\.weight"):
        train(config)
    assert not (Path(config.out) / "head").exists()


@pytest.mark.slow
def test_fp16_head_is_stored_in_half_and_loads_as_float32(tmp_path):
    write_images(tmp_path / "images", 10)
    full = train(tiny_config(tmp_path, epochs=1, head_dir=str(tmp_path / "fp32")))
    half = train(
        tiny_config(
            tmp_path,
            epochs=1,
            out=str(tmp_path / "run16"),
            head_dir=str(tmp_path / "fp16"),
            fp16_head=True,
        )
    )
    from safetensors import safe_open

    for folder, dtype in ((full, torch.float32), (half, torch.float16)):
        with safe_open(folder / "model.safetensors", "pt") as stored:
            assert stored.get_tensor("fuser.weight").dtype == dtype
    assert (half / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size
    umask = os.umask(0)
    os.umask(umask)
    for path in (
        half / "model.safetensors",
        half / "config.json",
        tmp_path / "run16" / "checkpoint.pt",
    ):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    a, b = load_head(full).state_dict(), load_head(half).state_dict()
    assert b["fuser.weight"].dtype == torch.float32
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-3) for k in a)


def test_help_documents_every_option(capsys):
    from ttame.cli import main as cli_main

    for entry in (train_cli.main, lambda argv: cli_main(["train", *argv])):
        with pytest.raises(SystemExit):
            entry(["--help"])
        text = capsys.readouterr().out
        for item in dataclasses.fields(TrainConfig):
            flag = "--" + item.name.replace("_", "-")
            assert flag in text
            assert item.metadata["help"].split()[0] in text.split(flag, 1)[1]


def test_data_options_are_exclusive(tmp_path):
    with pytest.raises(DataError, match="exactly one"):
        train(tiny_config(tmp_path, pool=str(tmp_path)))


@pytest.mark.slow
@pytest.mark.integration
def test_two_processes_with_gloo(tmp_path):
    write_images(tmp_path / "images", 12)
    script = tmp_path / "launch.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_training import VARIED_CNN
        from ttame.model import registry
        registry.REGISTRY["tiny_cnn_varied"] = lambda: VARIED_CNN
        from ttame.cli.train import main
        sys.exit(main())
    """)
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        "--backbone",
        "tiny_cnn_varied",
        "--data",
        str(tmp_path / "images"),
        "--out",
        str(tmp_path / "ddp"),
        "--epochs",
        "2",
        "--batch",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--val-fraction",
        "0.2",
        "--checkpoint-every",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A generous limit: two processes start torch, and a shared machine may be busy.
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("head written") == 1  # only rank 0 writes and logs
    head = load_head(tmp_path / "ddp" / "head")
    assert head.backbone == "tiny_cnn_varied"
    with (tmp_path / "ddp" / "steps.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2 * (
            len(folder_sources(tmp_path / "images", 0.2).train) // 4
        )


# --- training made for small data -----------------------------------------------------------


@pytest.mark.parametrize("transfer", [False, True])
def test_shared_fusion_folds_into_a_plain_head_with_the_same_maps(transfer):
    backbone, head, images = tiny_batch(count=4)
    shared = step.SharedFusion(head, transfer=transfer)
    with torch.no_grad():
        shared.shared.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        head.fuser.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
        if shared.transfer is not None:
            shared.transfer.normal_(0, 0.5, generator=torch.Generator().manual_seed(3))
    classes = torch.tensor([0, 3, 7])
    head.eval()
    _, maps = backbone.forward_features(images)
    with torch.no_grad():
        expected = shared(maps, classes)
        folded = shared.folded().eval()
        assert torch.allclose(folded(maps, classes), expected, atol=1e-5)
        assert not torch.allclose(head(maps, classes), expected, atol=1e-3)  # head untouched
    assert type(folded) is type(head) and folded.state_dict().keys() == head.state_dict().keys()


@pytest.mark.slow
def test_shared_fusion_learns_from_every_image_and_the_head_file_holds_it(tmp_path):
    write_images(tmp_path / "images", 12)
    config = tiny_config(tmp_path, shared_fusion=True, optimizer="adamw", lr=0.01, init="random")
    run = trainer.Trainer(config, setup_runtime("cpu"), None)
    folder = run.run()
    assert run.trainable.shared.abs().sum() > 0
    assert isinstance(run.optimizer, torch.optim.AdamW)
    written = load_head(folder)
    expected = run.trainable.folded().state_dict()
    assert all(torch.equal(written.state_dict()[k], expected[k]) for k in expected)


def test_frozen_class_rows_keep_their_initialisation_while_the_rest_learns(tmp_path):
    write_images(tmp_path / "images", 12)
    config = tiny_config(
        tmp_path, shared_fusion=True, freeze_class_rows=True, optimizer="adamw", lr=0.01
    )
    initial = trainer.Trainer(config, setup_runtime("cpu"), None)
    initial.start()
    rows = initial.head.fuser.weight.detach()
    branch = initial.head.branches[0].conv.weight.detach()
    run = trainer.Trainer(config, setup_runtime("cpu"), None)
    run.run()
    assert torch.equal(run.head.fuser.weight, rows)
    assert not torch.equal(run.head.branches[0].conv.weight, branch)
    assert run.trainable.shared.abs().sum() > 0


def test_class_transfer_makes_the_earlier_taps_class_specific_and_resumes(tmp_path):
    write_images(tmp_path / "images", 12)
    config = tiny_config(
        tmp_path,
        shared_fusion=True,
        freeze_class_rows=True,
        class_transfer=True,
        optimizer="adamw",
        lr=0.01,
        epochs=1,
    )
    run = trainer.Trainer(config, setup_runtime("cpu"), None)
    run.run()
    assert run.trainable.transfer is not None and run.trainable.transfer.abs().sum() > 0
    last = run.head.in_channels[-1]
    earlier = run.trainable.folded().fuser.weight.flatten(1)[:, :-last]
    shared = run.trainable.shared[:-last]
    assert not torch.allclose(earlier, shared.expand_as(earlier), atol=1e-6)  # differs by class
    again = trainer.Trainer(config, setup_runtime("cpu"), None)
    again.restore(load_checkpoint(config.checkpoint_path))
    assert again.trainable.transfer is not None
    assert torch.equal(again.trainable.transfer, run.trainable.transfer)
    written = load_head(Path(config.out) / "head").state_dict()
    assert torch.allclose(written["fuser.weight"], run.trainable.folded().fuser.weight)


def test_class_transfer_needs_the_shared_row(tmp_path):
    write_images(tmp_path / "images", 4)
    with pytest.raises(TrainingError, match="--class-transfer"):
        train(tiny_config(tmp_path, class_transfer=True))


def test_frozen_class_rows_need_the_shared_row(tmp_path):
    write_images(tmp_path / "images", 4)
    with pytest.raises(TrainingError, match="--shared-fusion"):
        train(tiny_config(tmp_path, freeze_class_rows=True))


def test_init_from_starts_from_a_trained_head_folder_or_checkpoint(tmp_path, capsys):
    write_images(tmp_path / "images", 12)
    first = trainer.Trainer(
        tiny_config(tmp_path, shared_fusion=True, optimizer="adamw", lr=0.01),
        setup_runtime("cpu"),
        None,
    )
    folder = first.run()
    printed = capsys.readouterr().out
    assert "epoch 0: before the first step; validation loss" in printed and "nan" not in printed
    folded = first.trainable.folded().state_dict()
    for source in (folder, first.config.checkpoint_path):  # the shared row folded in, both ways
        config = tiny_config(tmp_path, out=str(tmp_path / "again"), init_from=str(source))
        run = trainer.Trainer(config, setup_runtime("cpu"), None)
        run.start()
        assert all(torch.allclose(run.head.state_dict()[k], v) for k, v in folded.items())
        assert run.progress.step == 0 and run.init == f"from {source}"


def test_init_from_refuses_a_head_of_other_taps_or_a_missing_file(tmp_path):
    write_images(tmp_path / "images", 12)
    folder = train(tiny_config(tmp_path, epochs=1, layers="stage2,stage3"))
    config = tiny_config(tmp_path, out=str(tmp_path / "again"), init_from=str(folder))
    with pytest.raises(TrainingError, match="does not fit"):
        trainer.Trainer(config, setup_runtime("cpu"), None).start()
    missing = tiny_config(tmp_path, init_from=str(tmp_path / "nowhere.pt"))
    with pytest.raises(TrainingError, match=r"--init-from: .*nowhere\.pt"):
        trainer.Trainer(missing, setup_runtime("cpu"), None).start()
    with pytest.raises(TrainingError, match="exclude each other"):
        trainer.Trainer(
            tiny_config(tmp_path, init="cam", init_from=str(folder)), setup_runtime("cpu"), None
        )


def test_fused_size_caps_the_trained_heads_map_and_fine_tunes_any_head(tmp_path):
    write_images(tmp_path / "images", 12)
    folder = train(tiny_config(tmp_path, epochs=1))
    config = tiny_config(
        tmp_path, out=str(tmp_path / "coarse"), fused_size=2, init_from=str(folder)
    )
    coarse = trainer.Trainer(config, setup_runtime("cpu"), None).run()
    head = load_head(coarse)
    assert head.max_size == 2 and load_head(folder).max_size == 56
    body = build_backbone(get_spec("tiny_cnn_varied"), layers=tuple(head.layers))
    maps = body.forward_features(torch.rand(1, 3, 32, 32))[1]
    assert max(m.shape[-1] for m in maps) > 2 and head(maps).shape[-2:] == (2, 2)
    with pytest.raises(TrainingError, match="--fused-size"):
        trainer.Trainer(tiny_config(tmp_path, fused_size=0), setup_runtime("cpu"), None)


@pytest.mark.slow
def test_low_res_steps_come_first_then_full_size(tmp_path, monkeypatch):
    write_images(tmp_path / "images", 12)
    config = tiny_config(tmp_path, low_res=24, low_res_share=0.5, epochs=2)
    sides = []
    real = trainer.compute_loss

    def record(backbone, head, loss_fn, images, *args):
        if torch.is_grad_enabled():
            sides.append(images.shape[-1])
        return real(backbone, head, loss_fn, images, *args)

    monkeypatch.setattr(trainer, "compute_loss", record)
    train(config)
    half = len(sides) // 2
    assert sides == [24] * half + [32] * (len(sides) - half)


@pytest.mark.slow
def test_resume_is_exact_with_the_small_data_options(tmp_path, monkeypatch):
    write_images(tmp_path / "images", 20)
    options = dict(
        checkpoint_every=1,
        shared_fusion=True,
        optimizer="adamw",
        lr=0.01,
        low_res=24,
        low_res_share=0.5,
    )
    whole = tiny_config(tmp_path, out=str(tmp_path / "whole"), **options)
    train(whole)
    calls = {"n": 0}
    real = trainer.compute_loss

    def dies(*args, **kwargs):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 5:
                raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "compute_loss", dies)
    with pytest.raises(Killed):
        train(tiny_config(tmp_path, out=str(tmp_path / "cut"), **options))
    monkeypatch.setattr(trainer, "compute_loss", real)
    train(tiny_config(tmp_path, out=str(tmp_path / "cut"), resume=True, **options))
    a, b = head_state(Path(whole.out) / "head"), head_state(tmp_path / "cut" / "head")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_low_res_is_refused_for_a_vit(tmp_path):
    write_images(tmp_path / "images", 8)
    with pytest.raises(TrainingError, match="ViT"):
        train(tiny_config(tmp_path, backbone="tiny_vit", low_res=16))


def test_kept_image_keeps_the_top_share_as_the_protocol_scores_it():
    maps = torch.arange(16.0).reshape(1, 4, 4)
    kept = step.kept_image(maps, torch.Size([4, 4]), [0.25])
    normalised = maps / 15
    assert torch.allclose(kept, normalised * (maps >= 12))
    assert (kept > 0).float().mean() == 0.25


def test_kept_softness_lets_pixels_trade_places_without_changing_the_values():
    maps = torch.arange(16.0).reshape(1, 4, 4)
    worth = torch.ones(1, 4, 4)
    worth[0, 2, 3] = 5.0  # pixel 11, just below the threshold, would be worth keeping
    grads = []
    for softness in (0.0, 0.05):
        logits = (maps / 15).requires_grad_(True)  # already in [0, 1]: normalising is a no-op
        kept = step.kept_image(logits, torch.Size([4, 4]), [0.25], softness)
        assert torch.allclose(kept, maps / 15 * (maps >= 12))  # the protocol's values, both ways
        (kept * worth).sum().backward()
        grads.append(logits.grad[0].flatten())
    hard, soft = grads
    through_gate = soft - hard
    assert hard[11] == 0 and through_gate[11] > 0  # the pixel left out is pushed to enter ...
    assert through_gate[12:].sum() < 0  # ... and the kept ones to make room for it
    assert through_gate.sum() == pytest.approx(0, abs=1e-4)  # a trade, not a rise of the map
    assert through_gate[5].abs() < 1e-2 * through_gate[11]  # far below: next to nothing


def test_several_kept_shares_cycle_over_the_batch():
    maps = torch.rand(5, 6, 6)
    kept = step.kept_image(maps, torch.Size([6, 6]), [0.25, 0.5])
    for i, share in enumerate([0.25, 0.5, 0.25, 0.5, 0.25]):
        alone = step.kept_image(maps[i : i + 1], torch.Size([6, 6]), [share])[0]
        assert torch.equal(kept[i], alone)
        assert (kept[i] > 0).float().mean() == pytest.approx(share, abs=1 / 36)


@pytest.mark.parametrize("bad", ["0", "0.15,1.5", "half", ""])
def test_a_malformed_kept_share_is_refused(tmp_path, bad):
    write_images(tmp_path / "images", 4)
    with pytest.raises(TrainingError, match="--kept-share"):
        train(tiny_config(tmp_path, kept_share=bad))


@pytest.mark.parametrize(
    ("option", "bad"), [("crop_scale", 0.0), ("crop_scale", 1.5), ("color_jitter", -0.1)]
)
def test_augmentation_options_out_of_range_are_refused(tmp_path, option, bad):
    write_images(tmp_path / "images", 4)
    with pytest.raises(TrainingError, match="--color-jitter or --crop-scale out of range"):
        train(tiny_config(tmp_path, **{option: bad}))


def test_kept_term_adds_a_pass_and_reaches_the_head():
    backbone, head, images = tiny_batch(count=4)
    loss_fn = TTameLoss(kept_weight=1.0)
    terms, _ = compute_loss(backbone, head, loss_fn, images, shares=[0.3])
    assert terms.kept > 0
    plain = TTameLoss()(*_masked_parts(backbone, head, images))
    assert torch.allclose(terms.total, plain.total + terms.kept, atol=1e-5)
    terms.kept.backward()
    assert head.fuser.weight.grad.abs().sum() > 0


def _masked_parts(backbone, head, images):
    """The paper's loss inputs for ``images`` (to compare a loss with and without extras)."""
    captured = {}

    class Capture(TTameLoss):
        def forward(self, masked_logits, labels, masks, kept_logits=None, teacher=None):
            captured["args"] = (masked_logits, labels, masks)
            return super().forward(masked_logits, labels, masks, kept_logits, teacher)

    compute_loss(backbone, head, Capture(), images)
    return captured["args"]


def test_a_checkpoint_older_than_an_option_resumes_with_its_default():
    saved = dataclasses.asdict(TrainConfig())
    del saved["crop_scale"]
    check_resume(saved, TrainConfig())
    with pytest.raises(TrainingError, match="--crop-scale"):
        check_resume(saved, TrainConfig(crop_scale=0.5))

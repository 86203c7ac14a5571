"""What a run leaves on disk: checksummed, atomic checkpoints and CSV logs that resume.

A crash mid-write leaves only a temporary file, never a half-written checkpoint; a damaged or
pickled one is refused, never loaded; a resumed run drops the log rows past its checkpoint.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ttame._files import publish
from ttame.errors import TrainingError
from ttame.model.head import AttentionHead
from ttame.model.weights import read_tensors
from ttame.training.step import TERMS, SharedFusion

_MAGIC = b"TTAME-CHECKPOINT-1\n"


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
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f"{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)


def is_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a file written by :func:`save_checkpoint` (it starts with the marker)."""
    try:
        with path.open("rb") as file:
            return file.read(len(_MAGIC)) == _MAGIC
    except OSError:
        return False


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
        state = read_tensors(io.BytesIO(payload))
    except Exception as exc:
        raise TrainingError(
            f"Checkpoint '{path}' holds more than tensors and plain data ({type(exc).__name__}); "
            "it was not loaded: pickled objects are refused, as reading them could run code."
        ) from exc
    if not isinstance(state, dict):
        raise TrainingError(f"Checkpoint '{path}' does not hold a training state.")
    return state


def head_from_checkpoint(path: Path) -> AttentionHead:
    """The head a checkpoint holds, as the run would write it (a shared fusion row folded in).

    Lets a run's intermediate heads be evaluated while it goes on.
    """
    saved = load_checkpoint(path)
    head = AttentionHead(**saved["head_config"])
    head.load_state_dict(saved["head"])
    if "shared" in saved:
        wrapper = SharedFusion(head, transfer="transfer" in saved)
        wrapper.load_extra_state(saved)
        head = wrapper.folded()
    return head.eval()


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, NumPy and Python random states (saved with each checkpoint)."""
    kind, keys, pos, has_gauss, gauss = cast(NumpyState, np.random.get_state())
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


NumpyState = tuple[str, np.ndarray, int, int, float]
"""What ``np.random.get_state()`` returns (the legacy tuple)."""
STEP_COLUMNS = ["epoch", "step", "lr", *TERMS, "images_per_s", "seconds"]
"""Columns of ``steps.csv``."""
EPOCH_COLUMNS = [
    "epoch",
    "step",
    *TERMS,
    *(f"val_{t}" for t in TERMS),
    "images_per_s",
    "seconds",
]
"""Columns of ``epochs.csv``."""

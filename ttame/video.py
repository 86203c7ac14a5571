"""Explanations of video frames: webcam frames one at a time, or whole clips in batches.

A frame costs one backbone pass and the head, as a photo does; what differs is the way in and
out. Frames are arrays, all of one size, so the crop is computed once and the batch is cut and
resized in one tensor operation, and the overlay is drawn on the frame's own pixels with
OpenCV (a lookup table and a weighted sum in 8 bits) rather than in floats through PIL, which
at 640x480 costs 15 times as much, nearly a backbone pass (docs/benchmarks.md, Live view).
The colours are :func:`ttame.images.colour_table`'s, those of :func:`ttame.images.overlay`.
Clips are read and written with PyAV (any format its FFmpeg reads; H.264 out where
available, else MPEG-4 Part 2).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ttame._files import publish
from ttame.errors import ImageError, VideoError
from ttame.explainer import Explainer
from ttame.explanation import Explanation
from ttame.images import COLOUR_LEVELS, colour_table, crop_geometry, seen_box

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) of the region the backbone sees, in whole frame pixels, ends exclusive."""
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ogv", ".wmv", ".flv"}
)
"""File suffixes ``ttame explain`` treats as clips (PyAV reads many more; these are named)."""


def is_video(path: str | Path) -> bool:
    """Whether a path names a clip by its suffix (the CLI then explains it frame by frame)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


CODECS = ("libx264", "mpeg4")
"""Encoders for the overlay clip, the first one PyAV's FFmpeg has being used."""


class Overlays(NamedTuple):
    """Frames with their maps drawn on (``B x H x W x 3`` uint8) and the explanation."""

    frames: np.ndarray
    explanation: Explanation


@dataclass(frozen=True)
class FrameResult:
    """The top-1 class of one frame of a clip: where it is, what the backbone said."""

    index: int
    time: float
    """Seconds from the start of the clip (the frame's timestamp)."""
    class_index: int
    class_name: str
    probability: float

    def as_json(self) -> dict[str, Any]:
        """One JSON Lines record: frame, time, class, name, probability."""
        return {
            "frame": self.index,
            "time": round(self.time, 6),
            "class_index": self.class_index,
            "class_name": self.class_name,
            "probability": self.probability,
        }


def check_frames(frames: np.ndarray) -> np.ndarray:
    """RGB frames as a ``B x H x W x 3`` uint8 batch (one ``H x W x 3`` frame gets a batch axis)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not frames.size:
        raise ImageError(
            "Frames must be RGB arrays B x H x W x 3 (or one H x W x 3) of uint8; got shape "
            f"{frames.shape}, dtype {frames.dtype}."
        )
    return frames


def frame_box(explainer: Explainer, height: int, width: int) -> Box:
    """Where the backbone's centre crop lies in a frame of this size (whole pixels)."""
    spec = explainer.spec
    return seen_box(crop_geometry((width, height), spec.resize_size, spec.input_size))


def frames_input(explainer: Explainer, frames: np.ndarray) -> tuple[torch.Tensor, Box]:
    """The backbone's input for a batch of frames (``B x 3 x S x S`` in [0, 1]) and the crop.

    Like :func:`ttame.images.preprocess` (shorter side to ``resize_size``, centre
    ``input_size`` square, antialiased bilinear), on the whole batch at once.
    """
    frames = check_frames(frames)
    x0, y0, x1, y1 = box = frame_box(explainer, *frames.shape[1:3])
    crop = torch.from_numpy(np.ascontiguousarray(frames[:, y0:y1, x0:x1])).permute(0, 3, 1, 2)
    side = explainer.spec.input_size
    x = F.interpolate(
        crop.float(), size=(side, side), mode="bilinear", antialias=True, align_corners=False
    )
    return x.div_(255.0).clamp_(0.0, 1.0).to(explainer.device), box


def overlay_frames(
    frames: np.ndarray, maps: torch.Tensor, box: Box, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend each ``S x S`` map over its frame's ``box``; pixels outside it stay as they were."""
    import cv2

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    table = np.round(colour_table(colormap) * 255).astype(np.uint8).reshape(COLOUR_LEVELS, 1, 3)
    x0, y0, x1, y1 = box
    drawn = check_frames(frames).copy()
    for frame, saliency in zip(drawn, maps.detach().float().cpu().numpy(), strict=True):
        heat = cv2.resize(saliency, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        index = np.minimum(heat * COLOUR_LEVELS, COLOUR_LEVELS - 1).clip(0).astype(np.uint8)
        colours = cv2.LUT(cv2.merge([index, index, index]), table)
        region = frame[y0:y1, x0:x1]
        cv2.addWeighted(region, 1.0 - alpha, colours, alpha, 0.0, dst=region)
    return drawn


def explain_frames(
    explainer: Explainer, frames: np.ndarray, alpha: float = 0.5, colormap: str = "jet"
) -> Overlays:
    """Each frame's top-1 map drawn on it: one backbone pass for the batch, the head, the blend."""
    x, box = frames_input(explainer, frames)
    explanation = explainer.explain(x)
    return Overlays(overlay_frames(frames, explanation.maps, box, alpha, colormap), explanation)


def _open(source: Path) -> Any:
    """The container of a readable video with at least one video stream."""
    import av

    if not source.is_file():
        raise VideoError(f"No such video file: {source}")
    try:
        container = av.open(str(source))
    except av.FFmpegError as exc:
        raise VideoError(f"'{source}' is not a video we can read: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"'{source}' has no video stream.")
    return container


def _batches(
    container: Any, size: int, max_frames: int | None, source: Path
) -> Iterator[tuple[np.ndarray, list[float]]]:
    """The clip's frames as RGB arrays, ``size`` at a time, with their timestamps."""
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    frames: list[np.ndarray] = []
    times: list[float] = []
    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            if max_frames is not None and count > max_frames:
                raise VideoError(
                    f"'{source.name}' has more than {max_frames} frames, the most allowed here."
                )
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time) if frame.time is not None else (count - 1) / rate)
            if len(frames) == size:
                yield np.stack(frames), times
                frames, times = [], []
    except av.FFmpegError as exc:
        raise VideoError(f"'{source.name}' is corrupt after frame {count - 1}: {exc}") from exc
    if frames:
        yield np.stack(frames), times
    if count == 0:
        raise VideoError(f"'{source.name}' has no frames we can decode.")


class _Writer:
    """The overlay clip, written to a temporary file beside ``out`` and moved there when done.

    H.264 (or MPEG-4) in 4:2:0 at the source's frame rate, one frame after the other. 4:2:0
    needs even sizes: a frame of odd width or height gets its last column or row repeated.
    """

    def __init__(self, out: Path, rate: Fraction) -> None:
        self.out, self.rate = out, rate
        self.partial: Path | None = None
        self.container: Any = None
        self.stream: Any = None
        self.pad = ((0, 0), (0, 0), (0, 0))
        self.count = 0

    def _start(self, height: int, width: int) -> None:
        import av

        self.out.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(
            prefix=f".{self.out.stem}.", suffix=self.out.suffix, dir=self.out.parent
        )
        os.close(handle)
        self.partial = Path(name)
        try:
            self.container = av.open(name, mode="w")
        except av.FFmpegError as exc:
            raise VideoError(f"Cannot write a video to '{self.out}': {exc}") from exc
        codec = next(c for c in CODECS if c in av.codecs_available)
        self.stream = self.container.add_stream(codec, rate=self.rate)
        self.stream.width, self.stream.height = width + width % 2, height + height % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = 1 / self.rate
        self.pad = ((0, height % 2), (0, width % 2), (0, 0))

    def write(self, picture: np.ndarray) -> None:
        """Encode one ``H x W x 3`` overlay as the next frame."""
        import av

        if self.container is None:
            self._start(*picture.shape[:2])
        frame = av.VideoFrame.from_ndarray(np.pad(picture, self.pad, mode="edge"), format="rgb24")
        frame.pts = self.count
        self.count += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def finish(self) -> None:
        """Flush the encoder and move the finished clip to ``out``."""
        if self.container is None or self.partial is None:
            return
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.container = None
        publish(self.partial, self.out)
        self.partial = None

    def discard(self) -> None:
        """Drop whatever was written (after a failure): nothing half-written is left."""
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.close()
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)


def explain_video(
    explainer: Explainer,
    source: str | Path,
    out: str | Path | None = None,
    batch: int = 16,
    progress: bool = True,
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
    max_frames: int | None = None,
    lock: contextlib.AbstractContextManager[Any] | None = None,
) -> list[FrameResult]:
    """Explain every frame of a clip, ``batch`` frames per backbone pass; each frame's top-1.

    With ``out``, the overlays are written there as a video of the same size and frame rate
    (sound is dropped; the container follows the suffix, e.g. ``.mp4``), complete or not at
    all. ``max_frames`` refuses longer clips; ``lock`` is held around each batch's pass when
    the explainer is shared between threads. A file PyAV cannot read raises
    :class:`~ttame.errors.VideoError`.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1; got {batch}.")
    source = Path(source)
    names = explainer.categories
    results: list[FrameResult] = []
    container = _open(source)
    stream = container.streams.video[0]
    if max_frames is not None and stream.frames > max_frames:
        container.close()
        raise VideoError(
            f"'{source.name}' has {stream.frames} frames; at most {max_frames} are allowed here."
        )
    writer = None
    if out is not None:
        writer = _Writer(Path(out), stream.average_rate or stream.guessed_rate or Fraction(25))
    try:
        with tqdm(
            total=stream.frames or None, unit="frame", desc=source.name, disable=not progress
        ) as bar:
            for frames, times in _batches(container, batch, max_frames, source):
                with lock or contextlib.nullcontext():
                    drawn, explanation = explain_frames(explainer, frames, alpha, colormap)
                for time, cls, score in zip(
                    times, explanation.classes.tolist(), explanation.scores.tolist(), strict=True
                ):
                    results.append(FrameResult(len(results), time, cls, names[cls], score))
                if writer is not None:
                    for picture in drawn:
                        writer.write(picture)
                bar.update(len(frames))
        if writer is not None:
            writer.finish()
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    finally:
        container.close()
    return results

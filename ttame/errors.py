"""Every error ttame raises on purpose, and the warning of an untrained head.

Every failure a user can cause (a bad image, an unknown backbone, missing weights, a head that
does not fit its backbone, a class out of range, an unreachable Hub repo, a request past its
time budget, training data or a training run that cannot go on, an unknown method, an image
source, a video that cannot be read, a graph that cannot be exported) raises a subclass of
:class:`TTameError` with a message that says what to do; the CLI prints it and exits 2, the
app shows it and keeps serving. Each class also derives from the built-in exception it
refines (``ValueError``, ``KeyError``...), so code that catches those keeps working.
"""

from __future__ import annotations

__all__ = [
    "BackboneError",
    "ClassIndexError",
    "DataError",
    "ExportError",
    "HeadError",
    "ImageError",
    "SourceError",
    "TTameError",
    "TimeBudgetError",
    "TrainingError",
    "UnknownMethodError",
    "UntrainedHeadWarning",
    "VideoError",
    "WeightsUnavailableError",
]


class TTameError(Exception):
    """Base class of every error ttame raises on purpose."""


class ImageError(TTameError, ValueError):
    """The input is not an image we can read, or breaks a size limit."""


class BackboneError(TTameError, KeyError):
    """Unknown backbone name or a layer it does not have."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        """The message, unquoted."""
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(TTameError, FileNotFoundError):
    """No backbone weights could be found locally, in a package, or downloaded."""


class HeadError(TTameError, ValueError):
    """A head file or repo is missing, malformed, or does not fit its backbone."""


class ClassIndexError(TTameError, IndexError):
    """A target class index or name does not exist for this backbone."""


class TimeBudgetError(TTameError, TimeoutError):
    """A request ran past its time budget and was stopped (the app's slow measurements)."""


class UnknownMethodError(TTameError, ValueError):
    """A method name that is not in the method registry."""


class DataError(TTameError, ValueError):
    """A data folder, list file or pool that cannot be used for training."""


class TrainingError(TTameError, RuntimeError):
    """Training cannot go on: the loss diverged, a checkpoint is damaged or does not fit."""


class SourceError(TTameError, RuntimeError):
    """An image source of the offline pool could not be fetched or read."""


class VideoError(TTameError, ValueError):
    """A video file that cannot be read or written, or one longer than the caller allows."""


class ExportError(TTameError, RuntimeError):
    """An explainer could not be written as a graph (a missing exporter package, a bad option)."""


class UntrainedHeadWarning(UserWarning):
    """The head was never trained: its maps mean nothing yet."""

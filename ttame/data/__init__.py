"""Training data: image folders, list files, the offline pool, and how items are sampled.

:mod:`~.folders` reads images on disk, :mod:`~.pool` makes the offline pool, :mod:`~.sources`
picks what a run trains on, :mod:`~.sampling` addresses items reproducibly and
:mod:`~.transforms` prepares them.
"""

"""The offline pool's image sources, one module per family, and :func:`collect_sources`.

:mod:`~.common` holds the types and the split; :mod:`~.fetch` downloads packages;
:mod:`~.tuxpaint`, :mod:`~.gcompris`, :mod:`~.scratch`, :mod:`~.debian` and :mod:`~.packages`
read them; :mod:`~.collect` reads them all.
"""

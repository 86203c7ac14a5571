"""Methods x metrics over a folder of images, and what the numbers say.

:mod:`~ttame.evaluation.inputs` finds and loads the images, :mod:`~ttame.evaluation.run`
scores them, :mod:`~ttame.evaluation.summary` and :mod:`~ttame.evaluation.paired` summarise
the per-image records, :mod:`~ttame.evaluation.sanity` randomises the model,
:mod:`~ttame.evaluation.report` writes the tables and curves.
"""

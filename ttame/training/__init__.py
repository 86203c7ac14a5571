"""Training a T-TAME head on a frozen backbone (``ttame train``, ``train.py``).

:mod:`~.config` holds every option, :mod:`~.losses` the paper's loss, :mod:`~.step` one step,
:mod:`~.checkpoint` what a run writes, :mod:`~.trainer` the run itself.
"""

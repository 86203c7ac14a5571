"""The frozen classifier and the head: weights, backbones and their registry, taps, the head.

:mod:`~.weights` finds a backbone's weights, :mod:`~.backbones` and :mod:`~.timm` describe
backbones, :mod:`~.registry` names them, :mod:`~.taps` records their feature maps (and probes
their shapes), :mod:`~.head` is the T-TAME attention head.
"""

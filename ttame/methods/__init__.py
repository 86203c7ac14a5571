"""Map-makers behind one interface: T-TAME itself and the baselines it is compared with.

:mod:`~ttame.methods.registry` names them; :mod:`~ttame.methods.cam` (Grad-CAM & co.),
:mod:`~ttame.methods.rise` and :mod:`~ttame.methods.floors` implement the baselines.
"""

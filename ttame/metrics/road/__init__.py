"""ROAD: remove the pixels a map ranks first (or last), impute them, ask the classifier again.

:mod:`~ttame.metrics.road.procedure` is the metric; :mod:`~ttame.metrics.road.torch_solver`
(GPUs) and :mod:`~ttame.metrics.road.cpu_solver` (Numba, CPUs) fill the removed pixels.
"""

from ttame.metrics.road.constants import ROAD_FRACTIONS, ROAD_ORDERS
from ttame.metrics.road.procedure import noisy_linear_impute, removal_masks, road_scores

__all__ = ["ROAD_FRACTIONS", "ROAD_ORDERS", "noisy_linear_impute", "removal_masks", "road_scores"]

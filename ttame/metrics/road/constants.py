"""The numbers ROAD is defined by, and those both of its solvers share (docs/road.md)."""

from __future__ import annotations

ROAD_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
"""Shares of the pixels removed, as in the paper."""
ROAD_ORDERS: tuple[str, ...] = ("MoRF", "LeRF")
"""Most relevant first (lower accuracy is better), least relevant first (higher is better)."""
ROW_SUM_SHARE = 0.7
"""Share of the Galerkin row-sum excess added to a coarse grid's diagonal."""
Z_RESIDUAL = 0.1
"""z stops once A z >= 0.9: its bound of ||A^-1||_inf is then within 11 %."""

r"""Linearised apparent-power limit :math:`P^2 + Q^2 \le S^2` (R6.5.1.2, R7.1.3).

The circle is replaced by a regular K-gon inscribed in it, with edge normals at
:math:`\phi_k = (2k+1)\pi/K`, :math:`k = 0..K-1`:

.. math::  \cos\phi_k\,P + \sin\phi_k\,Q \le S\cos(\pi/K)

Every vertex lies on the circle, at angles :math:`2\pi k/K`, so the polygon lies inside
it (an inner approximation: any feasible point respects the rating) and, for K
divisible by 4, has vertices at :math:`(\pm S, 0)` and :math:`(0, \pm S)`: a unit may
still run at its full active (or reactive) rating. The largest radial gap to the circle
is :math:`S(1-\cos(\pi/K))` (3.4 % for K = 12).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optev.errors import DataError
from optev.lp.expr import LinExpr, as_expr, stack

MIN_SIDES = 4


def apparent_power_rows(p: Any, q: Any, s_max: Any, sides: int) -> tuple[LinExpr, np.ndarray]:
    """Left-hand sides (stacked on a new first axis of length K) and bound ``S cos(π/K)``.

    Parameters
    ----------
    p, q : VarArray or LinExpr
        Active and reactive power, same shape.
    s_max : array
        Rating, broadcastable against ``p``.
    sides : int
        Number of sides K (at least 4).
    """
    k = int(sides)
    if k < MIN_SIDES:
        raise DataError(f"polygon_sides must be at least {MIN_SIDES}, got {sides!r}")
    phi = (2 * np.arange(k) + 1) * np.pi / k
    p, q = as_expr(p), as_expr(q)
    rows = stack([p * np.cos(f) + q * np.sin(f) for f in phi])
    return rows, np.asarray(s_max, float) * np.cos(np.pi / k)

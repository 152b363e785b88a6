"""Travel distances and times between road nodes, as the charging simulation needs them.

The event simulation (:mod:`optev.mobility.core`) needs the distance and time from a
point to a fast charging station and on to the destination when a driver considers an
en-route detour, and for trips whose ``distance_m``/``travel_time_s`` are not yet routed.
It asks a *router* for them through one small protocol, so that any routing engine can be
plugged in (the network router of :mod:`optev.mobility.routing`, a cache, a stub in a
test):

Router protocol
---------------
A router is either a callable ``router(origins, destinations)`` or an object with a
method ``travel(origins, destinations)``. ``origins`` and ``destinations`` are equal-length
1-D numpy arrays of road-node ids (``str``, as in ``road_nodes.node_id``); the result is a
pair ``(distance_m, time_s)`` of float arrays of the same length: the route length in
metres and the travel time in seconds from each origin to its destination. A pair that
cannot be travelled is reported as ``inf``. Calls are vectorised: the simulation passes a
few pairs per decision (one per candidate station), never one call per pair.

:class:`StraightLineRouter` is the default: straight-line distance between node
coordinates times a detour factor, at an average speed. It needs no graph search and
works on any instance whose road nodes have coordinates.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from optev.errors import DataError

DEFAULT_DETOUR_FACTOR = 1.3
"""Ratio of road distance to straight-line distance. Circuity factors of road networks are
mostly between 1.2 and 1.4 (Ballou, Rahardja & Sakai, "Selected country circuity factors
for road travel distance estimation", Transportation Research Part A 36(9), 2002); 1.3 is
an assumption in that range."""

DEFAULT_SPEED_M_S = 30.0 / 3.6
"""Average urban driving speed including stops, 30 km/h (8.33 m/s): an assumption for
congested city traffic (the Nanjing case's links have a 13.89 m/s = 50 km/h limit)."""


@runtime_checkable
class TravelRouter(Protocol):
    """An object with a vectorised ``travel`` method (see the module docstring)."""

    def travel(self, origins: np.ndarray, destinations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance (m) and time (s) from each origin node to its destination node."""
        ...


RouterLike = TravelRouter | Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""What the simulation accepts as a router: a :class:`TravelRouter` or a plain callable."""


class StraightLineRouter:
    """Straight-line distance between node coordinates × a detour factor, at a constant speed.

    ``distance_m = detour_factor · ‖(x_o, y_o) − (x_d, y_d)‖₂`` and
    ``time_s = distance_m / speed_m_s``.

    Parameters
    ----------
    nodes : DataFrame
        Road nodes with columns ``node_id``, ``x``, ``y`` (metres, projected).
    detour_factor : float
        Road distance per straight-line distance (≥ 1), default :data:`DEFAULT_DETOUR_FACTOR`.
    speed_m_s : float
        Average speed, m/s (> 0), default :data:`DEFAULT_SPEED_M_S`.

    Raises
    ------
    DataError
        When asked about a node that is not in ``nodes`` or has no coordinates.
    """

    def __init__(self, nodes: pd.DataFrame, *, detour_factor: float = DEFAULT_DETOUR_FACTOR,
                 speed_m_s: float = DEFAULT_SPEED_M_S) -> None:
        if not detour_factor >= 1.0:
            raise DataError(f"detour_factor must be at least 1, got {detour_factor}")
        if not speed_m_s > 0.0:
            raise DataError(f"speed_m_s must be positive, got {speed_m_s}")
        ids = nodes["node_id"].astype(str).to_numpy()
        self._index = {v: k for k, v in enumerate(ids)}
        self._x = nodes["x"].to_numpy(float)
        self._y = nodes["y"].to_numpy(float)
        self.detour_factor = float(detour_factor)
        self.speed_m_s = float(speed_m_s)

    def _positions(self, node_ids: np.ndarray, role: str) -> np.ndarray:
        index = self._index
        pos = np.fromiter((index.get(v, -1) for v in node_ids), dtype=np.int64, count=len(node_ids))
        if (pos < 0).any():
            bad = np.asarray(node_ids, dtype=object)[pos < 0][0]
            raise DataError(f"{role} node {bad!r} is not a road node", table="road_nodes", column="node_id")
        bad_xy = ~(np.isfinite(self._x[pos]) & np.isfinite(self._y[pos]))
        if bad_xy.any():
            bad = np.asarray(node_ids, dtype=object)[bad_xy][0]
            raise DataError(f"{role} node {bad!r} has no coordinates; the straight-line router needs x and y",
                            table="road_nodes", column="x")
        return pos

    def travel(self, origins: np.ndarray, destinations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance (m) and time (s) between each origin and destination node."""
        o = self._positions(origins, "origin")
        d = self._positions(destinations, "destination")
        dist = self.detour_factor * np.hypot(self._x[o] - self._x[d], self._y[o] - self._y[d])
        return dist, dist / self.speed_m_s

    __call__ = travel


def as_travel_function(router: RouterLike) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The ``(origins, destinations) -> (distance_m, time_s)`` function of a router.

    Accepts an object with a ``travel`` method or a plain callable; the returned function
    checks the shape of the answer and returns float arrays.
    """
    fn = router.travel if hasattr(router, "travel") else router
    if not callable(fn):
        raise DataError(f"router {router!r} is neither callable nor has a travel(origins, destinations) method")

    def travel(origins: np.ndarray, destinations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist, time = fn(origins, destinations)
        dist = np.asarray(dist, dtype=float).reshape(-1)
        time = np.asarray(time, dtype=float).reshape(-1)
        if dist.shape != (len(origins),) or time.shape != (len(origins),):
            raise DataError(f"router returned arrays of shape {dist.shape}/{time.shape} "
                            f"for {len(origins)} origin-destination pairs")
        return dist, time

    return travel

"""Logistics vehicles: delivery tours from depots (R5.1.3).

(:class:`LogisticsOptions`) ``ceil(n / vans_per_depot)`` depots at uniformly drawn
eligible nodes; van *j* belongs to depot ``j mod n_depots``. A depot's service area is
its ``ceil(area_share × m)`` nearest eligible nodes by travel time (at least
``min(10, m − 1)``; *m* = eligible nodes). A van visits a uniform number of stops in
``[stops_min, stops_max]`` (capped by the area size), distinct and uniform in the area,
in the order of their bearing around the depot starting from a random direction (a
sweep tour; by travel time from the depot if coordinates are missing). It leaves the
depot at Normal(``first_depart_mean_s``, ``first_depart_sd_s``) clipped to
[06:00, 10:00], spends U(``dwell_min_s``, ``dwell_max_s``) at each stop and returns to
the depot. Purposes: ``delivery``, ``depot``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from optev.errors import DataError
from optev.mobility.routing import Router
from optev.mobility.trip_log import TripLog


@dataclass(frozen=True)
class LogisticsOptions:
    """Options of the logistics depot tours (see the module docstring)."""

    vans_per_depot: int = 25
    area_share: float = 0.15
    stops_min: int = 3
    stops_max: int = 8
    first_depart_mean_s: float = 8 * 3600.0
    first_depart_sd_s: float = 1800.0
    dwell_min_s: float = 600.0
    dwell_max_s: float = 1800.0


@dataclass(frozen=True)
class _Depots:
    """Drawn depots and their service areas."""

    nodes: np.ndarray
    """Node position of each depot."""
    areas: np.ndarray
    """``areas[i]``: node positions of depot ``i``'s service area, nearest first."""
    times_s: np.ndarray
    """``times_s[i, j]``: travel time from depot ``i`` to eligible node ``j``, s."""


def _draw_depots(n: int, eligible: np.ndarray, router: Router, rng: np.random.Generator,
                 opt: LogisticsOptions) -> _Depots:
    """Depots for ``n`` vans, uniform over ``eligible``, with their service areas."""
    m = len(eligible)
    n_dep = math.ceil(n / opt.vans_per_depot)
    depots = eligible[rng.choice(m, size=n_dep, replace=n_dep > m)]
    area_n = min(m - 1, max(min(10, m - 1), math.ceil(opt.area_share * m)))
    _, t_tab = router.table(depots, eligible)
    areas = np.empty((n_dep, area_n), dtype=np.int64)
    for i in range(n_dep):
        t = np.where(eligible == depots[i], np.inf, t_tab[i])
        areas[i] = eligible[np.lexsort((np.arange(m), t))[:area_n]]
    return _Depots(depots, areas, t_tab)


def _draw_stops(dep_idx: np.ndarray, depots: _Depots, eligible: np.ndarray, xy: np.ndarray,
                rng: np.random.Generator, opt: LogisticsOptions) -> tuple[np.ndarray, np.ndarray]:
    """Each van's stops in sweep order (padded past its number of stops) and that number."""
    n = len(dep_idx)
    area_n = depots.areas.shape[1]
    depot = depots.nodes[dep_idx]
    n_stops = np.minimum(rng.integers(opt.stops_min, opt.stops_max + 1, size=n), area_n)
    smax = int(n_stops.max())
    pick = np.argsort(rng.random((n, area_n)), axis=1)[:, :smax]
    stops = depots.areas[dep_idx[:, None], pick]
    if np.isfinite(xy).all():
        ang0 = rng.uniform(0, 2 * np.pi, size=n)
        dx = xy[stops, 0] - xy[depot, 0][:, None]
        dy = xy[stops, 1] - xy[depot, 1][:, None]
        key = np.mod(np.arctan2(dy, dx) - ang0[:, None], 2 * np.pi)
    else:
        key = depots.times_s[dep_idx[:, None], np.searchsorted(eligible, stops)]
    key = np.where(np.arange(smax)[None, :] < n_stops[:, None], key, np.inf)
    return np.take_along_axis(stops, np.argsort(key, axis=1, kind="stable"), axis=1), n_stops


def _add_tours(depot: np.ndarray, stops: np.ndarray, n_stops: np.ndarray, router: Router,
               rng: np.random.Generator, opt: LogisticsOptions, out: TripLog, offset: int) -> None:
    """Add each van's tour (depot, its stops in order, depot) to ``out``."""
    n = len(depot)
    smax = stops.shape[1]
    depart = np.clip(rng.normal(opt.first_depart_mean_s, opt.first_depart_sd_s, size=n), 6 * 3600.0, 10 * 3600.0)
    veh = np.arange(n)
    cur = depot.copy()
    for s in range(smax + 1):
        back = s >= n_stops[veh]
        dest = np.where(back, depot[veh], stops[veh, np.minimum(s, smax - 1)])
        dist, time = router.route(cur, dest)
        out.add(veh + offset, s, depart, cur, dest, np.where(back, "depot", "delivery").astype(object), dist, time)
        dwell = rng.uniform(opt.dwell_min_s, opt.dwell_max_s, size=len(veh))
        go_on = ~back
        veh, cur, depart = veh[go_on], dest[go_on], (depart + time + dwell)[go_on]
        if len(veh) == 0:
            break


def logistics_tours(n: int, eligible: np.ndarray, xy: np.ndarray, router: Router,
                    rng: np.random.Generator, opt: LogisticsOptions, out: TripLog,
                    offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw depots and tours for ``n`` logistics vehicles and add their trips to ``out``.

    Depots, stops and tours use only the ``eligible`` nodes (sorted positions: the
    largest strongly connected component); ``xy`` (coordinates of every road node, NaN
    if unknown) gives the sweep order. The vehicles draw from ``rng`` (their own stream)
    and get the vehicle indices ``offset, offset + 1, …`` in ``out``.

    Returns
    -------
    depot, depot_number : ndarray of int64
        Each vehicle's depot node position and depot number.

    Raises
    ------
    DataError
        Fewer than two eligible nodes, or invalid :class:`LogisticsOptions`.
    """
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if len(eligible) < 2:
        raise DataError("logistics tours need at least two connected road nodes")
    if not (1 <= opt.stops_min <= opt.stops_max and opt.vans_per_depot >= 1 and 0 < opt.area_share <= 1
            and 0 <= opt.dwell_min_s <= opt.dwell_max_s):
        raise DataError("logistics options: need 1 <= stops_min <= stops_max, vans_per_depot >= 1, "
                        "0 < area_share <= 1, 0 <= dwell_min_s <= dwell_max_s")
    depots = _draw_depots(n, eligible, router, rng, opt)
    dep_idx = np.arange(n) % len(depots.nodes)
    depot = depots.nodes[dep_idx]
    stops, n_stops = _draw_stops(dep_idx, depots, eligible, xy, rng, opt)
    _add_tours(depot, stops, n_stops, router, rng, opt, out, offset)
    return depot, dep_idx


__all__ = ["LogisticsOptions", "logistics_tours"]

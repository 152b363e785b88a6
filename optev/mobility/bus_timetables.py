"""Buses: fixed routes between a depot and a terminal, with timetables (R5.1.3).

(:class:`BusOptions`) Routes are made one at a time until every bus has one. A route
joins a depot (uniform over eligible nodes) and a terminal drawn uniformly from the
eligible nodes whose free-flow time from the depot lies between the 50th and 90th
percentile of the depot's times to all eligible nodes (a long cross-town line, whatever
the network's size). The scheduled running time of each direction is the route's
length at the bus's commercial speed ``commercial_speed_kmh`` (default 18 km/h, a
typical operating speed of city buses including stops; assumption), or its free-flow
time if that is longer. A route gets
``k = ceil(C_min / headway_s)`` buses, ``C_min`` = both running times + 2 ×
``min_layover_s``, and its headway is ``h = ceil(C_min / k)`` rounded up to whole
minutes, so a bus's round trip takes exactly ``C = k·h`` (the slack is layover, split
evenly between the two ends). Bus *j* leaves the depot at ``service_start_s + j·h`` and
then every ``C``; so departures from the depot of a route follow each other exactly every
``h`` seconds. A bus's last departure from the depot is the last one not after
``service_end_s``, and every bus ends the day back at the depot. The last route gets
the remaining buses (fewer than it would need; its headway is longer). Trips carry the
free-flow ``travel_time_s`` of the route; the timetable's extra running time appears as
waiting at the next terminal. Purposes: ``terminal`` (depot → terminal), ``depot``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from optev.errors import DataError
from optev.mobility.routing import Router
from optev.mobility.trip_log import TripLog


@dataclass(frozen=True)
class BusOptions:
    """Options of the bus routes and timetables (see the module docstring)."""

    headway_s: float = 600.0
    service_start_s: float = 6 * 3600.0
    service_end_s: float = 22 * 3600.0
    min_layover_s: float = 300.0
    commercial_speed_kmh: float = 18.0
    terminal_quantiles: tuple[float, float] = (0.5, 0.9)


@dataclass(frozen=True)
class _Route:
    """A drawn route: its two ends (node positions) and each direction's length and time."""

    depot: int
    terminal: int
    dist_m: tuple[float, float]
    """Free-flow route length out (depot → terminal) and back, m."""
    time_s: tuple[float, float]
    """Free-flow travel time out and back, s."""


def _draw_route(eligible: np.ndarray, router: Router, rng: np.random.Generator, opt: BusOptions) -> _Route:
    """A depot uniform over ``eligible`` and a terminal within the quantile band of times."""
    depot = int(eligible[rng.integers(len(eligible))])
    _, t_row = router.table([depot], eligible)
    t_row = t_row[0]
    others = eligible != depot
    q_lo, q_hi = np.quantile(t_row[others], opt.terminal_quantiles)
    cand = eligible[others & (t_row >= q_lo) & (t_row <= q_hi)]
    if len(cand) == 0:
        cand = eligible[others]
    terminal = int(cand[rng.integers(len(cand))])
    (d_out, d_back), (t_out, t_back) = router.route([depot, terminal], [terminal, depot])
    return _Route(depot, terminal, (d_out, d_back), (t_out, t_back))


def _add_timetable(route: _Route, n_left: int, opt: BusOptions, out: TripLog, first_veh: int) -> int:
    """Add the trips of the buses of ``route`` (at most ``n_left``) to ``out``; returns their number."""
    (d_out, d_back), (t_out, t_back) = route.dist_m, route.time_s
    v_c = opt.commercial_speed_kmh / 3.6
    run_out, run_back = max(t_out, d_out / v_c), max(t_back, d_back / v_c)
    cycle_min = run_out + run_back + 2 * opt.min_layover_s
    k = min(n_left, max(1, math.ceil(cycle_min / opt.headway_s)))
    h = 60.0 * math.ceil(cycle_min / k / 60.0)
    cycle = k * h
    lay_t = (cycle - run_out - run_back) / 2.0
    for j in range(k):
        first = opt.service_start_s + j * h
        m = int((opt.service_end_s - first) // cycle) + 1 if first <= opt.service_end_s else 0
        if m == 0:  # first departure after the service end (cycle longer than the span): no trips
            continue
        starts = first + cycle * np.arange(m)
        deps = np.empty(2 * m)
        deps[0::2] = starts
        deps[1::2] = starts + run_out + lay_t
        orig = np.tile([route.depot, route.terminal], m)
        dest = np.tile([route.terminal, route.depot], m)
        purpose = np.tile(np.array(["terminal", "depot"], dtype=object), m)
        out.add(np.full(2 * m, first_veh + j), np.arange(2 * m), deps, orig, dest, purpose,
                np.tile([d_out, d_back], m), np.tile([t_out, t_back], m))
    return k


def bus_timetables(n: int, eligible: np.ndarray, router: Router, rng: np.random.Generator,
                   opt: BusOptions, out: TripLog, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw routes for ``n`` buses and add their timetabled trips to ``out``.

    Parameters
    ----------
    n : int
        Number of buses.
    eligible : ndarray
        Sorted positions of the nodes routes may use (the largest strongly connected
        component).
    router : Router
        Router of the road network.
    rng : Generator
        The buses' random stream.
    opt : BusOptions
        Route and timetable options.
    out : TripLog
        Receives the trips.
    offset : int
        Vehicle index of the first bus in ``out``.

    Returns
    -------
    depot, route : ndarray of int64
        Each bus's depot node position and route number.

    Raises
    ------
    DataError
        Fewer than two eligible nodes, or invalid options.
    """
    depot_of = np.empty(n, dtype=np.int64)
    route_of = np.empty(n, dtype=np.int64)
    if n == 0:
        return depot_of, route_of
    if len(eligible) < 2:
        raise DataError("bus routes need at least two connected road nodes")
    if not (opt.headway_s > 0 and opt.commercial_speed_kmh > 0 and opt.service_end_s >= opt.service_start_s):
        raise DataError("bus options: headway_s and commercial_speed_kmh must be > 0, "
                        "service_end_s >= service_start_s")
    done = 0
    r = 0
    while done < n:
        route = _draw_route(eligible, router, rng, opt)
        k = _add_timetable(route, n - done, opt, out, offset + done)
        depot_of[done:done + k] = route.depot
        route_of[done:done + k] = r
        done += k
        r += 1
    return depot_of, route_of


__all__ = ["BusOptions", "bus_timetables"]

"""Private cars' daily activity chains drawn from V2Sim's trip statistics (R5.1.3).

With the tables of :class:`~optev.mobility.trip_statistics.TripStatistics`
(:class:`CarOptions` sets the limits):

1. Each car gets a home node (uniform over home-type nodes) and a fixed work node
   (uniform over work-type nodes); every trip "to work" goes to it (a work → work trip
   goes to another work node).
2. First departure from home: V2Sim's fitted shifted gamma
   (:func:`~optev.mobility.trip_statistics.sample_first_departure`).
3. Destination type of a trip leaving a place of type *f* at time *t*: drawn from column
   ``floor(t / 15 min)`` of ``space_transfer_probability/<f>_spr_<day>.csv`` (rows: home,
   work, relax, other). For the first trip the "home" row is dropped (a car leaves home
   to go somewhere) and the rest renormalised; if that leaves nothing (no observation in
   the slot), the first departure time is drawn again, as V2Sim does. For later trips an
   empty column means "go home" (also as V2Sim does).
4. A car returning home ends its day. Otherwise it parks for a duration drawn from
   ``duration_of_parking/<type>_spr_<day>.csv``: bin *k* (probability ``15 × value``),
   then uniformly within ``[15k, 15k + 15)`` minutes. The next departure is
   arrival + parking, where arrival = departure + routed travel time.
5. The day closes at ``last_depart_s`` (default 23:30): the parking duration is drawn
   from the table's distribution truncated to the time left until then
   (:func:`~optev.mobility.trip_statistics.sample_parking_s`); a car arriving less than
   ``min_park_s`` (5 min) before the close leaves after ``min_park_s`` and goes home. The
   ``max_trips``-th trip (default 6) always goes home. So every chain starts and ends at
   home, departures strictly increase, and no departure is later than the close except
   those forced ``min_park_s`` after a late arrival.
6. Relax/other destinations are uniform over the nodes of that type, never the node the
   car is at (unless it is the only node of the type).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optev.errors import DataError
from optev.mobility.routing import Router
from optev.mobility.trip_log import TripLog
from optev.mobility.trip_statistics import (ACTIVITY_TYPES, HOME, N_SLOTS, OTHER, RELAX, SLOT_S, WORK,
                                            TripStatistics, sample_first_departure, sample_parking_s)

_FIRST_DEPARTURE_MAX_DRAWS = 100


@dataclass(frozen=True)
class CarOptions:
    """Options of the private-car activity chains (see the module docstring)."""

    max_trips: int = 6
    last_depart_s: float = 23.5 * 3600.0
    min_park_s: float = 300.0


def _draw_other(pool: np.ndarray, exclude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform draw from ``pool`` (sorted node positions) avoiding ``exclude`` where possible."""
    m = len(pool)
    pos = np.searchsorted(pool, exclude)
    inside = (pos < m) & (pool[np.minimum(pos, m - 1)] == exclude)
    span = np.where(inside & (m > 1), m - 1, m)
    j = np.floor(rng.random(len(exclude)) * span).astype(np.int64)
    j = np.where(inside & (m > 1) & (j >= pos), j + 1, j)
    return pool[np.minimum(j, m - 1)]


def _first_departures(n: int, stats: TripStatistics, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """First departure times (s) and the destination-type probabilities of the first trip.

    Home is never the first destination; a car whose departure slot leaves no other
    observed destination draws its departure again (step 3 of the module docstring).

    Raises
    ------
    DataError
        Some car found no observed destination in :data:`_FIRST_DEPARTURE_MAX_DRAWS` draws.
    """
    depart = sample_first_departure(n, rng, weekday=stats.weekday)
    probs = np.zeros((n, 4))
    todo = np.arange(n)
    for _ in range(_FIRST_DEPARTURE_MAX_DRAWS):
        slot = np.minimum((depart[todo] // SLOT_S).astype(np.int64), N_SLOTS - 1)
        p = stats.transfer[HOME][:, slot].T.copy()
        p[:, HOME] = 0.0
        probs[todo] = p
        todo = todo[p.sum(axis=1) <= 0]
        if len(todo) == 0:
            break
        depart[todo] = sample_first_departure(len(todo), rng, weekday=stats.weekday)
    else:
        raise DataError("could not draw a first departure with observed destinations; "
                        "the home transfer table is (almost) empty")
    return depart, probs


def _chains(home: np.ndarray, work: np.ndarray, pools: list[np.ndarray], stats: TripStatistics,
            router: Router, rng: np.random.Generator, opt: CarOptions, out: TripLog, offset: int) -> None:
    """Add the activity chains of cars with the given home and work nodes to ``out``."""
    n = len(home)
    depart, probs = _first_departures(n, stats, rng)
    veh = np.arange(n)
    cur = home.copy()
    cur_type = np.full(n, HOME)
    forced = np.zeros(n, dtype=bool)
    for k in range(opt.max_trips):
        m = len(veh)
        if k > 0:
            slot = np.minimum((depart // SLOT_S).astype(np.int64), N_SLOTS - 1)
            probs = stats.transfer[cur_type, :, slot]
        total = probs.sum(axis=1)
        cum = np.cumsum(probs, axis=1)
        u = rng.random(m) * total
        dest_type = np.minimum((u[:, None] >= cum).sum(axis=1), 3)
        dest_type = np.where((total <= 0) | forced | (k == opt.max_trips - 1), HOME, dest_type)
        dest = np.empty(m, dtype=np.int64)
        is_home = dest_type == HOME
        dest[is_home] = home[veh[is_home]]
        to_work = dest_type == WORK
        own = to_work & (work[veh] != cur)
        dest[own] = work[veh[own]]
        for t, sel in ((WORK, to_work & ~own), (RELAX, dest_type == RELAX), (OTHER, dest_type == OTHER)):
            if sel.any():
                dest[sel] = _draw_other(pools[t], cur[sel], rng)
        dist, time = router.route(cur, dest)
        out.add(veh + offset, k, depart, cur, dest, np.array(ACTIVITY_TYPES, dtype=object)[dest_type], dist, time)
        arrive = depart + time
        room = opt.last_depart_s - arrive
        late = room < opt.min_park_s
        park = sample_parking_s(dest_type, stats, rng, limit_s=np.maximum(room, 0.0))
        nxt = np.where(late, arrive + opt.min_park_s, arrive + park)
        go_on = ~is_home
        veh, cur, cur_type, depart, forced = veh[go_on], dest[go_on], dest_type[go_on], nxt[go_on], late[go_on]
        # probs: recomputed from the table at the next departure (k > 0)
        if len(veh) == 0:
            break


def car_trips(n: int, pools: list[np.ndarray], stats: TripStatistics, router: Router, rng: np.random.Generator,
              opt: CarOptions, out: TripLog, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` cars' home and work nodes and add their daily activity chains to ``out``.

    Parameters
    ----------
    n : int
        Number of cars.
    pools : list of ndarray
        Reachable node positions per activity type
        (:func:`~optev.mobility.activity_nodes.activity_pools`); none empty if ``n > 0``.
    stats : TripStatistics
        V2Sim's trip statistics.
    router : Router
        Router of the road network.
    rng : Generator
        The cars' random stream.
    opt : CarOptions
        Limits of the chains.
    out : TripLog
        Receives the trips.
    offset : int
        Vehicle index of the first car in ``out``.

    Returns
    -------
    home, work : ndarray of int64
        Each car's home and work node position.
    """
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    home = pools[HOME][np.floor(rng.random(n) * len(pools[HOME])).astype(np.int64)]
    work = pools[WORK][np.floor(rng.random(n) * len(pools[WORK])).astype(np.int64)]
    _chains(home, work, pools, stats, router, rng, opt, out, offset)
    return home, work


__all__ = ["CarOptions", "car_trips"]

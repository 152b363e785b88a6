"""Fleet and trip generation on a road network (R5.1.3, R6.1.1, R6.1.3).

:func:`generate_fleet` turns an :class:`~optev.data.Instance` with a road network into a
city fleet of passenger cars, buses and logistics vehicles: the ``vehicle_types``,
``evs`` and ``trips`` tables plus the private charging stations (home, workplace and
depot chargers, R6.1.3) and their charger models. :func:`add_fleet` puts them into an
instance. Every random draw comes from one seed (the same seed gives identical tables);
each part of the fleet draws from its own child stream of
:class:`numpy.random.SeedSequence`, so that, for example, changing the number of buses
leaves the cars' trips unchanged.

Activity locations
------------------
Road nodes carry a type (``road_nodes.node_type``: home, work, relax, other). V2Sim cases
with a ``node_type.txt`` (ux_12nodes, ux_37nodes) have it for some nodes; untyped nodes
(there: the charging-station nodes) are never activity locations of cars. A network with
no typed node at all (ux_Nanjing) gets types from :func:`assign_node_types`, a seeded
rule documented there. Only nodes of the largest strongly connected component
(:meth:`Router.largest_component`) are used, so every trip is routable.

Private cars: daily activity chains from V2Sim's trip statistics
----------------------------------------------------------------
The tables are V2Sim's ``probtable`` (copied with licence and attribution to
``instances/data/v2sim_probtable``; see its README for the file layout); optev reads them
as follows (:class:`TripStatistics`):

1. Each car gets a home node (uniform over home-type nodes) and a fixed work node
   (uniform over work-type nodes); every trip "to work" goes to it (a work → work trip
   goes to another work node).
2. First departure from home: V2Sim's fitted shifted gamma, minutes after midnight:
   weekday Gamma(6.63, 65.76) + 114.54 (mean 9:10), weekend Gamma(3.45, 84.37) + 197.53.
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
   (:func:`sample_parking_s`); a car arriving less than ``min_park_s`` (5 min) before
   the close leaves after ``min_park_s`` and goes home. The ``max_trips``-th trip
   (default 6) always goes home. So every chain starts and ends at home, departures
   strictly increase, and no departure is later than the close except those forced
   ``min_park_s`` after a late arrival.
6. Relax/other destinations are uniform over the nodes of that type, never the node the
   car is at (unless it is the only node of the type).

Buses: fixed routes with timetables
-----------------------------------
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

Logistics vehicles: depot tours
-------------------------------
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

Initial state of charge
-----------------------
Cars: V2Sim's ``soc_dist.csv`` histogram, bin *b* drawn with probability ∝ ``freq``,
SOC uniform in ``[b, b+1)`` percent (capped at 1). Buses and logistics vehicles: U(0.9,
1.0) (charged overnight at the depot; assumption).

Private chargers (R6.1.3)
-------------------------
``round(private_share × n_cars)`` cars (drawn at random) get a home charger and
``round(workplace_share × n_cars)`` (drawn independently) a workplace charger. Chargers
of one kind at one road node form one station (``home_<node>``, ``work_<node>``) whose
``n_chargers`` equals the number of EVs assigned to it, so an EV always finds its own
charger free. With ``depot_chargers`` (default), every bus and logistics vehicle has a
charger at its depot (station ``depot_bus_<node>`` / ``depot_log_<node>``, kind
``workplace``, one charger per vehicle), written to ``evs.home_station``. Default
charger models (:func:`private_charger_models`):

===================  ==========  =====  ====  ================================================
model_id             technology  kW     V2G   source
===================  ==========  =====  ====  ================================================
``home_ac_7kw``      ac          7      no    GB/T 18487.1 mode-3 wallbox, 220 V × 32 A ≈ 7 kW,
                                              the common Chinese home charger (and V2Sim's slow
                                              charging power)
``workplace_ac_7kw`` ac          7      no    as home (workplace car parks in China are mostly
                                              7 kW AC)
``depot_dc_150kw``   dc          150    no    assumption: a common DC depot-charger rating for
                                              12 m buses
``depot_dc_60kw``    dc          60     no    assumption: a common GB/T DC charger rating for
                                              light commercial vehicles
===================  ==========  =====  ====  ================================================

``private_v2g=True`` makes them bidirectional at their charging power. A private
station's feeder bus is that of the public station nearest by road travel time (from
the station's node); without public stations, the feeder bus nearest by coordinates.

Tables
------
``trips`` has, besides the schema columns, ``energy_kwh`` = the vehicle type's
``kwh_per_km`` × ``distance_m`` / 1000. ``evs`` has the extra columns
``vehicle_class``, ``work_node`` (cars) and ``route_id`` (buses: ``R<k>``; logistics:
``D<k>``, the depot).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.data.stations import CHARGER_MODELS, STATIONS
from optev.data.validate import validate
from optev.data.vehicles import EVS, TRIPS, VEHICLE_CLASSES, VEHICLE_TYPES
from optev.errors import DataError
from optev.mobility.routing import Router
from optev.mobility.vehicles import (PreferenceModel, Seed, as_rng, default_vehicle_types, sample_preferences,
                                     sample_vehicle_types)
from optev.resources import instances_dir

DEFAULT_PROBTABLE = instances_dir() / "data" / "v2sim_probtable"
"""The copy of V2Sim's ``probtable`` shipped with optev (package data, :mod:`optev.resources`)."""

ACTIVITY_TYPES = ("home", "work", "relax", "other")
"""Node (activity) types, in the row order of V2Sim's transfer tables."""

HOME, WORK, RELAX, OTHER = range(4)

SLOT_S = 900.0
"""Width of a time slot of the transfer and parking tables, s (15 min)."""

N_SLOTS = 96
N_PARK_BINS = 95
DAY_S = 86400.0

FIRST_DEPARTURE_GAMMA = {True: (6.63, 65.76, 114.54), False: (3.45, 84.37, 197.53)}
"""V2Sim's first-departure fit (shape, scale min, shift min) for weekday (True) / weekend."""

_FIRST_DEPARTURE_MAX_DRAWS = 100


# ---------------------------------------------------------------------------------------
# Trip statistics (V2Sim probtable)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TripStatistics:
    """V2Sim's trip statistics for one kind of day, as arrays.

    Attributes
    ----------
    transfer : ndarray, shape (4, 4, 96)
        ``transfer[f, k, t]``: probability that a trip leaving a place of type ``f`` in
        slot ``t`` goes to a place of type ``k`` (types in :data:`ACTIVITY_TYPES` order);
        a column of zeros means no observation.
    parking : ndarray, shape (4, 95)
        ``parking[k, b]``: probability that parking at type ``k`` lasts ``[15b, 15b+15)``
        minutes (row ``home`` is zero: a chain ends at home).
    soc : ndarray, shape (100,)
        Probability of an initial SOC in ``[b, b+1)`` percent.
    weekday : bool
        Whether the tables are the weekday (True) or weekend ones.
    """

    transfer: np.ndarray
    parking: np.ndarray
    soc: np.ndarray
    weekday: bool


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, index_col=0)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read trip statistics ({exc})") from None


def load_trip_statistics(path: str | Path = DEFAULT_PROBTABLE, *, weekday: bool = True) -> TripStatistics:
    """Read V2Sim's ``probtable`` folder (see ``instances/data/v2sim_probtable/README.md``).

    Raises
    ------
    DataError
        A file is missing, has the wrong shape, negative values, or columns/bins that do
        not sum to 1 (within 1e-6).
    """
    root = Path(path)
    day = "weekday" if weekday else "weekend"
    transfer = np.zeros((4, 4, N_SLOTS))
    for f, name in enumerate(ACTIVITY_TYPES):
        p = root / "space_transfer_probability" / f"{name[0].upper()}_spr_{day}.csv"
        arr = _read_csv(p).to_numpy(dtype=float)
        if arr.shape != (4, N_SLOTS):
            raise DataError(f"{p}: expected 4 rows × {N_SLOTS} columns, got {arr.shape}")
        sums = arr.sum(axis=0)
        if (arr < 0).any() or (np.abs(sums[sums > 0] - 1.0) > 1e-6).any():
            raise DataError(f"{p}: probabilities must be >= 0 and each non-empty column must sum to 1")
        transfer[f] = arr
    parking = np.zeros((4, N_PARK_BINS))
    for k in (WORK, RELAX, OTHER):
        p = root / "duration_of_parking" / f"{ACTIVITY_TYPES[k][0].upper()}_spr_{day}.csv"
        arr = _read_csv(p).to_numpy(dtype=float).ravel() * (SLOT_S / 60.0)
        if arr.shape != (N_PARK_BINS,) or (arr < 0).any() or abs(arr.sum() - 1.0) > 1e-6:
            raise DataError(f"{p}: expected {N_PARK_BINS} non-negative densities per minute whose bins "
                            "(× 15 min) sum to 1")
        parking[k] = arr / arr.sum()
    p = root / "soc_dist.csv"
    try:
        soc_tab = pd.read_csv(p)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{p}: cannot read ({exc})") from None
    if list(soc_tab.columns) != ["range", "freq"] or len(soc_tab) != 100 or \
            (soc_tab["range"].to_numpy() != np.arange(100)).any() or (soc_tab["freq"] < 0).any():
        raise DataError(f"{p}: expected columns range,freq with range = 0..99 and freq >= 0")
    freq = soc_tab["freq"].to_numpy(dtype=float)
    return TripStatistics(transfer=transfer, parking=parking, soc=freq / freq.sum(), weekday=weekday)


def sample_first_departure(n: int, seed: Seed, *, weekday: bool = True) -> np.ndarray:
    """First departure from home, s after midnight (V2Sim's shifted gamma fit)."""
    shape, scale, shift = FIRST_DEPARTURE_GAMMA[bool(weekday)]
    return 60.0 * (as_rng(seed).gamma(shape, scale, size=n) + shift)


def sample_parking_s(types: np.ndarray, stats: TripStatistics, rng: np.random.Generator,
                     limit_s: np.ndarray | float = np.inf) -> np.ndarray:
    """Parking durations (s) at places of the given types (work, relax, other).

    The duration has the table's distribution, uniform within each 15-minute bin (a
    piecewise-linear CDF F), truncated to ``[0, limit_s]``: it is ``F⁻¹(u · F(limit_s))``
    with u uniform, so without a limit it is the table's distribution itself. Entries
    of other types get 0.
    """
    types = np.asarray(types)
    n = len(types)
    limit = np.broadcast_to(np.asarray(limit_s, dtype=float), (n,))
    out = np.zeros(n)
    u = rng.random(n)
    for k in (WORK, RELAX, OTHER):
        sel = np.flatnonzero(types == k)
        if len(sel) == 0:
            continue
        pmf = stats.parking[k]
        edges = np.concatenate([[0.0], np.cumsum(pmf)])
        edges /= edges[-1]
        x = np.clip(limit[sel] / SLOT_S, 0.0, N_PARK_BINS)
        b = np.minimum(np.floor(x).astype(np.int64), N_PARK_BINS - 1)
        f_lim = edges[b] + (edges[b + 1] - edges[b]) * (x - b)
        target = u[sel] * f_lim
        j = np.clip(np.searchsorted(edges, target, side="right") - 1, 0, N_PARK_BINS - 1)
        width = edges[j + 1] - edges[j]
        frac = np.where(width > 0, (target - edges[j]) / np.where(width > 0, width, 1.0), 0.0)
        out[sel] = np.minimum((j + np.clip(frac, 0.0, 1.0)) * SLOT_S, np.maximum(limit[sel], 0.0))
    return out


def sample_initial_soc(n: int, stats: TripStatistics, seed: Seed) -> np.ndarray:
    """Initial SOC of cars from V2Sim's histogram, uniform within each 1 % bin."""
    rng = as_rng(seed)
    b = rng.choice(100, size=n, p=stats.soc)
    return np.minimum((b + rng.random(n)) / 100.0, 1.0)


# ---------------------------------------------------------------------------------------
# Node types
# ---------------------------------------------------------------------------------------

NODE_TYPE_WEIGHTS = {"home": (0.25, 0.30), "work": (0.40, -0.30), "relax": (0.20, 0.0), "other": (0.15, 0.0)}
"""(a, b) of the rule ``weight = a + b·r`` of :func:`assign_node_types` (r: 0 centre, 1 edge)."""


def assign_node_types(x: np.ndarray, y: np.ndarray, seed: Seed) -> np.ndarray:
    """Activity types for untyped nodes: a seeded rule with a centre–periphery gradient.

    Each node's type is drawn with weights ``a + b·r`` (:data:`NODE_TYPE_WEIGHTS`), where
    ``r`` in [0, 1] is the node's rank of Euclidean distance from the median point of all
    nodes (0 = most central): home 0.25 + 0.30 r, work 0.40 − 0.30 r, relax 0.20,
    other 0.15 (sum 1 everywhere; city-wide shares home 40 %, work 25 %, relax 20 %,
    other 15 %). Without coordinates every node has r = 0.5. With at least 4 nodes each
    type gets at least one node: a missing type takes the node with the highest weight
    for it among the nodes of the most frequent type.

    Returns
    -------
    ndarray of str (object)
    """
    rng = as_rng(seed)
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    if n == 0:
        return np.empty(0, dtype=object)
    if np.isfinite(x).all() and np.isfinite(y).all() and n > 1:
        d = np.hypot(x - np.median(x), y - np.median(y))
        rank = np.empty(n)
        rank[np.lexsort((np.arange(n), d))] = np.arange(n)
        r = rank / (n - 1)
    else:
        r = np.full(n, 0.5)
    w = np.stack([a + b * r for a, b in NODE_TYPE_WEIGHTS.values()], axis=1)
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    k = np.minimum((rng.random(n)[:, None] >= cum).sum(axis=1), 3)
    if n >= 4:
        for t in range(4):
            if not (k == t).any():
                big = np.bincount(k, minlength=4).argmax()
                cand = np.flatnonzero(k == big)
                k[cand[np.argmax(w[cand, t])]] = t
    return np.array(ACTIVITY_TYPES, dtype=object)[k]


# ---------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CarOptions:
    """Options of the private-car activity chains (see the module docstring)."""

    max_trips: int = 6
    last_depart_s: float = 23.5 * 3600.0
    min_park_s: float = 300.0


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


# ---------------------------------------------------------------------------------------
# Generators (node positions in, trip arrays out)
# ---------------------------------------------------------------------------------------


class _Trips:
    """Accumulates trips as arrays of vehicle index, order, time, nodes, purpose."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []

    def add(self, veh: np.ndarray, k: np.ndarray | int, depart: np.ndarray, orig: np.ndarray,
            dest: np.ndarray, purpose: np.ndarray | str, dist: np.ndarray, time: np.ndarray) -> None:
        n = len(veh)
        self.parts.append((veh, np.broadcast_to(np.asarray(k, dtype=np.int64), (n,)), depart, orig, dest,
                           np.broadcast_to(np.asarray(purpose, dtype=object), (n,)), dist, time))

    def arrays(self) -> tuple[np.ndarray, ...]:
        if not self.parts:
            return (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64),
                    np.empty(0, np.int64), np.empty(0, object), np.empty(0), np.empty(0))
        return tuple(np.concatenate([p[i] for p in self.parts]) for i in range(8))


def _draw_other(pool: np.ndarray, exclude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform draw from ``pool`` (sorted node positions) avoiding ``exclude`` where possible."""
    m = len(pool)
    pos = np.searchsorted(pool, exclude)
    inside = (pos < m) & (pool[np.minimum(pos, m - 1)] == exclude)
    span = np.where(inside & (m > 1), m - 1, m)
    j = np.floor(rng.random(len(exclude)) * span).astype(np.int64)
    j = np.where(inside & (m > 1) & (j >= pos), j + 1, j)
    return pool[np.minimum(j, m - 1)]


def _car_chains(home: np.ndarray, work: np.ndarray, pools: list[np.ndarray], stats: TripStatistics,
                router: Router, rng: np.random.Generator, opt: CarOptions, out: _Trips,
                offset: int = 0) -> None:
    n = len(home)
    if n == 0:
        return
    # first departure and a destination type other than home
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


def _bus_timetables(n: int, eligible: np.ndarray, router: Router, rng: np.random.Generator,
                    opt: BusOptions, out: _Trips, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns each bus's depot node and route number."""
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
        v_c = opt.commercial_speed_kmh / 3.6
        run_out, run_back = max(t_out, d_out / v_c), max(t_back, d_back / v_c)
        cycle_min = run_out + run_back + 2 * opt.min_layover_s
        k = min(n - done, max(1, math.ceil(cycle_min / opt.headway_s)))
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
            orig = np.tile([depot, terminal], m)
            dest = np.tile([terminal, depot], m)
            purpose = np.tile(np.array(["terminal", "depot"], dtype=object), m)
            out.add(np.full(2 * m, offset + done + j), np.arange(2 * m), deps, orig, dest, purpose,
                    np.tile([d_out, d_back], m), np.tile([t_out, t_back], m))
        depot_of[done:done + k] = depot
        route_of[done:done + k] = r
        done += k
        r += 1
    return depot_of, route_of


def _logistics_tours(n: int, eligible: np.ndarray, xy: np.ndarray, router: Router,
                     rng: np.random.Generator, opt: LogisticsOptions, out: _Trips,
                     offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns each vehicle's depot node and depot number."""
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    if len(eligible) < 2:
        raise DataError("logistics tours need at least two connected road nodes")
    if not (1 <= opt.stops_min <= opt.stops_max and opt.vans_per_depot >= 1 and 0 < opt.area_share <= 1
            and 0 <= opt.dwell_min_s <= opt.dwell_max_s):
        raise DataError("logistics options: need 1 <= stops_min <= stops_max, vans_per_depot >= 1, "
                        "0 < area_share <= 1, 0 <= dwell_min_s <= dwell_max_s")
    m = len(eligible)
    n_dep = math.ceil(n / opt.vans_per_depot)
    depots = eligible[rng.choice(m, size=n_dep, replace=n_dep > m)]
    area_n = min(m - 1, max(min(10, m - 1), math.ceil(opt.area_share * m)))
    _, t_tab = router.table(depots, eligible)
    areas = np.empty((n_dep, area_n), dtype=np.int64)
    for i in range(n_dep):
        t = np.where(eligible == depots[i], np.inf, t_tab[i])
        areas[i] = eligible[np.lexsort((np.arange(m), t))[:area_n]]
    dep_idx = np.arange(n) % n_dep
    depot = depots[dep_idx]
    n_stops = np.minimum(rng.integers(opt.stops_min, opt.stops_max + 1, size=n), area_n)
    smax = int(n_stops.max())
    pick = np.argsort(rng.random((n, area_n)), axis=1)[:, :smax]
    stops = areas[dep_idx[:, None], pick]
    if np.isfinite(xy).all():
        ang0 = rng.uniform(0, 2 * np.pi, size=n)
        dx = xy[stops, 0] - xy[depot, 0][:, None]
        dy = xy[stops, 1] - xy[depot, 1][:, None]
        key = np.mod(np.arctan2(dy, dx) - ang0[:, None], 2 * np.pi)
    else:
        key = t_tab[dep_idx[:, None], np.searchsorted(eligible, stops)]
    key = np.where(np.arange(smax)[None, :] < n_stops[:, None], key, np.inf)
    stops = np.take_along_axis(stops, np.argsort(key, axis=1, kind="stable"), axis=1)
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
    return depot, dep_idx


# ---------------------------------------------------------------------------------------
# Private chargers
# ---------------------------------------------------------------------------------------


def private_charger_models(*, v2g: bool = False) -> pd.DataFrame:
    """Charger models of private stations (module docstring gives the sources)."""
    rows = [("home_ac_7kw", "ac", 7.0), ("workplace_ac_7kw", "ac", 7.0),
            ("depot_dc_150kw", "dc", 150.0), ("depot_dc_60kw", "dc", 60.0)]
    return CHARGER_MODELS.conform(pd.DataFrame({
        "model_id": [r[0] for r in rows], "technology": [r[1] for r in rows],
        "p_ch_max_kw": [r[2] for r in rows], "p_dis_max_kw": [r[2] if v2g else 0.0 for r in rows],
        "v2g": [v2g] * len(rows)}))


def _node_bus(instance: Instance, router: Router, nodes: np.ndarray) -> np.ndarray:
    """Feeder bus of each node (positions): the bus of the public station nearest by road."""
    st = instance.stations
    pub = st[st["kind"].isin(["fcs", "scs"]) & st["road_node"].notna()]
    if len(pub):
        st_pos = router.index(pub["road_node"])
        # the first station (table order) at each node decides that node's bus
        first = pd.Series(pub["bus_id"].to_numpy(dtype=object)).groupby(st_pos).first()
        _, target = router.nearest(st_pos)
        tgt = target[nodes]
        if (tgt >= 0).all():
            return first.reindex(tgt).to_numpy(dtype=object)
    buses = instance.feeder.buses
    bx, by = buses["x"].to_numpy(dtype=float), buses["y"].to_numpy(dtype=float)
    nx_ = instance.road.nodes["x"].to_numpy(dtype=float)[nodes]
    ny_ = instance.road.nodes["y"].to_numpy(dtype=float)[nodes]
    ok = np.isfinite(bx) & np.isfinite(by)
    if len(buses) == 0 or not ok.any() or not (np.isfinite(nx_).all() and np.isfinite(ny_).all()):
        raise DataError("cannot connect private chargers to the feeder: no public station is reachable by road "
                        "and feeder buses or road nodes lack coordinates", table="stations", column="bus_id")
    ids = buses["bus_id"].to_numpy(dtype=object)[ok]
    d2 = (nx_[:, None] - bx[ok][None, :]) ** 2 + (ny_[:, None] - by[ok][None, :]) ** 2
    return ids[np.argmin(d2, axis=1)]


def _private_stations(instance: Instance, router: Router, groups: list[tuple[str, str, str, np.ndarray]]
                      ) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """One station per (prefix, node). ``groups``: (prefix, kind, model, node per assigned EV)."""
    frames = []
    ids_per_group = []
    xs = instance.road.nodes["x"].to_numpy(dtype=float)
    ys = instance.road.nodes["y"].to_numpy(dtype=float)
    for prefix, kind, model, nodes in groups:
        uniq, inv, counts = np.unique(nodes, return_inverse=True, return_counts=True)
        sid = np.array([f"{prefix}_{router.node_ids[u]}" for u in uniq], dtype=object)
        ids_per_group.append(sid[inv] if len(nodes) else np.empty(0, dtype=object))
        if len(uniq) == 0:
            continue
        frames.append(pd.DataFrame({
            "station_id": sid, "kind": kind, "model_id": model, "n_chargers": counts,
            "bus_id": _node_bus(instance, router, uniq), "road_node": router.node_ids[uniq],
            "x": xs[uniq], "y": ys[uniq]}))
    stations = STATIONS.conform(pd.concat(frames, ignore_index=True) if frames else None)
    clash = stations["station_id"][stations["station_id"].isin(instance.stations["station_id"])]
    if len(clash):
        raise DataError(f"private station id {clash.iloc[0]!r} is already used by the instance", table="stations",
                        column="station_id")
    return stations, ids_per_group


# ---------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------


class Fleet(NamedTuple):
    """A generated fleet: the tables to put into an instance (see :func:`add_fleet`)."""

    vehicle_types: pd.DataFrame
    evs: pd.DataFrame
    trips: pd.DataFrame
    stations: pd.DataFrame
    """Private stations only (home, workplace, depot)."""
    charger_models: pd.DataFrame
    """Models of the private stations."""


def class_counts(n_evs: int, mix: dict[str, float]) -> dict[str, int]:
    """Vehicles per class: ``n × share`` rounded by largest remainder (sums to ``n``).

    Raises
    ------
    DataError
        Unknown class, negative share, or shares that do not sum to 1 (within 1e-9).
    """
    if int(n_evs) != n_evs or n_evs < 0:
        raise DataError(f"n_evs must be a non-negative whole number, got {n_evs!r}")
    bad = [k for k in mix if k not in VEHICLE_CLASSES]
    if bad:
        raise DataError(f"unknown vehicle class {bad[0]!r} in mix; expected {list(VEHICLE_CLASSES)}")
    share = np.array([float(mix.get(c, 0.0)) for c in VEHICLE_CLASSES])
    if (share < 0).any() or abs(share.sum() - 1.0) > 1e-9:
        raise DataError(f"mix shares must be >= 0 and sum to 1, got {dict(mix)}")
    exact = share * int(n_evs)
    counts = np.floor(exact).astype(int)
    rest = int(n_evs) - counts.sum()
    order = np.lexsort((np.arange(3), -(exact - counts)))
    counts[order[:rest]] += 1
    return dict(zip(VEHICLE_CLASSES, (int(c) for c in counts)))


def trip_energy_kwh(trips: pd.DataFrame, evs: pd.DataFrame, vehicle_types: pd.DataFrame) -> np.ndarray:
    """Energy used per trip, kWh: the EV type's ``kwh_per_km`` × ``distance_m`` / 1000."""
    per_km = evs["vtype_id"].map(vehicle_types.set_index("vtype_id")["kwh_per_km"])
    k = trips["ev_id"].map(pd.Series(per_km.to_numpy(), index=evs["ev_id"].to_numpy()))
    if k.isna().any():
        raise DataError(f"trip of unknown EV or vehicle type: {trips['ev_id'][k.isna()].iloc[0]!r}", table="trips",
                        column="ev_id")
    return k.to_numpy(dtype=float) * trips["distance_m"].to_numpy(dtype=float) / 1000.0


def generate_fleet(instance: Instance, n_evs: int, *,
                   mix: dict[str, float] | None = None,
                   v2g_share: float = 0.3,
                   private_share: float = 0.5,
                   workplace_share: float = 0.1,
                   depot_chargers: bool = True,
                   private_v2g: bool = False,
                   weekday: bool = True,
                   seed: int = 0,
                   vehicle_types: pd.DataFrame | None = None,
                   preferences: dict[str, PreferenceModel] | None = None,
                   statistics: TripStatistics | str | Path | None = None,
                   cars: CarOptions = CarOptions(),
                   buses: BusOptions = BusOptions(),
                   logistics: LogisticsOptions = LogisticsOptions(),
                   router: Router | None = None) -> Fleet:
    """Generate a city fleet with its daily trips on the instance's road network.

    Parameters
    ----------
    instance : Instance
        Needs a road network; its public stations and feeder place the private chargers.
    n_evs : int
        Number of vehicles.
    mix : dict, optional
        Share per class (``car``, ``bus``, ``logistics``), summing to 1; default
        ``{"car": 0.9, "bus": 0.03, "logistics": 0.07}``. Counts: :func:`class_counts`.
    v2g_share : float
        Share of V2G-capable vehicles whose users opt in (R6.2.3.1).
    private_share, workplace_share : float
        Share of cars with a home charger, and with a workplace charger (R6.1.3).
    depot_chargers : bool
        Give every bus and logistics vehicle a charger at its depot.
    private_v2g : bool
        Make the private chargers bidirectional.
    weekday : bool
        Use V2Sim's weekday (True) or weekend statistics.
    seed : int
        Seed of every random draw.
    vehicle_types : DataFrame, optional
        Vehicle types (default :func:`~optev.mobility.vehicles.default_vehicle_types`);
        an optional ``weight`` column sets the mix within a class.
    preferences : dict, optional
        :class:`PreferenceModel` per class overriding the defaults.
    statistics : TripStatistics or path, optional
        Trip statistics (default: the shipped copy of V2Sim's probtable).
    cars, buses, logistics : options
        Generator options (module docstring).
    router : Router, optional
        A router of ``instance.road`` to reuse (its cache makes repeated calls fast).

    Returns
    -------
    Fleet
        ``(vehicle_types, evs, trips, stations, charger_models)``; ``trips`` sorted by EV
        then ``trip_index``, with ``distance_m``, ``travel_time_s`` and ``energy_kwh``.

    Raises
    ------
    DataError
        Bad arguments, a road network without the needed node types, or private
        chargers that cannot be placed on the feeder.
    """
    mix = {"car": 0.9, "bus": 0.03, "logistics": 0.07} if mix is None else mix
    counts = class_counts(n_evs, mix)
    for name, v in (("private_share", private_share), ("workplace_share", workplace_share)):
        if not 0.0 <= v <= 1.0:
            raise DataError(f"{name} must be within [0, 1], got {v!r}")
    as_rng(seed)  # refuses a seed that is not a non-negative integer
    if cars.max_trips < 1:
        raise DataError("cars.max_trips must be at least 1")
    vt = default_vehicle_types() if vehicle_types is None else VEHICLE_TYPES.conform(vehicle_types)
    if isinstance(statistics, TripStatistics):
        stats = statistics
        if stats.weekday != weekday:
            raise DataError(f"statistics are for {'weekdays' if stats.weekday else 'weekends'} "
                            f"but weekday={weekday}")
    else:
        stats = load_trip_statistics(statistics if statistics is not None else DEFAULT_PROBTABLE,
                                     weekday=weekday)
    router = Router(instance.road) if router is None else router
    if len(router.node_ids) != len(instance.road.nodes) or \
            (router.node_ids != instance.road.nodes["node_id"].to_numpy(dtype=object)).any():
        raise DataError("the router was built for a different road network")
    streams = np.random.SeedSequence(int(seed)).spawn(8)
    rng_types, rng_car, rng_bus, rng_log, rng_vt, rng_pref, rng_soc, rng_priv = \
        (np.random.default_rng(s) for s in streams)

    scc = router.largest_component()
    nodes = instance.road.nodes
    ntype = nodes["node_type"].to_numpy(dtype=object)
    if all(t is None for t in ntype):
        ntype = np.full(len(nodes), None, dtype=object)
        ntype[scc] = assign_node_types(nodes["x"].to_numpy(dtype=float)[scc],
                                       nodes["y"].to_numpy(dtype=float)[scc], rng_types)
    in_scc = np.zeros(len(nodes), dtype=bool)
    in_scc[scc] = True
    pools = [np.flatnonzero(in_scc & (ntype == t)) for t in ACTIVITY_TYPES]
    n_car, n_bus, n_log = counts["car"], counts["bus"], counts["logistics"]
    if n_car:
        missing = [t for t, p in zip(ACTIVITY_TYPES, pools) if len(p) == 0]
        if missing:
            raise DataError(f"no reachable road node of type {missing} for car trips (largest strongly connected "
                            f"component: {len(scc)} nodes)", table="road_nodes", column="node_type")

    out = _Trips()
    # cars
    home = pools[HOME][np.floor(rng_car.random(n_car) * len(pools[HOME])).astype(np.int64)] if n_car else \
        np.empty(0, np.int64)
    work = pools[WORK][np.floor(rng_car.random(n_car) * len(pools[WORK])).astype(np.int64)] if n_car else \
        np.empty(0, np.int64)
    _car_chains(home, work, pools, stats, router, rng_car, cars, out, offset=0)
    # buses and logistics
    bus_depot, bus_route = _bus_timetables(n_bus, scc, router, rng_bus, buses, out, offset=n_car)
    xy = nodes[["x", "y"]].to_numpy(dtype=float)
    log_depot, log_dep = _logistics_tours(n_log, scc, xy, router, rng_log, logistics, out, offset=n_car + n_bus)

    # EVs
    cls = np.array(["car"] * n_car + ["bus"] * n_bus + ["logistics"] * n_log, dtype=object)
    n = len(cls)
    ev_id = np.array([f"car{i:05d}" for i in range(n_car)] + [f"bus{i:05d}" for i in range(n_bus)]
                     + [f"log{i:05d}" for i in range(n_log)], dtype=object)
    vtype = sample_vehicle_types(cls, vt, rng_vt)
    p_dis = pd.Series(vt["p_dis_max_kw"].to_numpy(), index=vt["vtype_id"].to_numpy()).reindex(vtype).to_numpy()
    prefs = sample_preferences(cls, p_dis > 0, rng_pref, v2g_share=v2g_share, models=preferences)
    soc = np.concatenate([sample_initial_soc(n_car, stats, rng_soc), rng_soc.uniform(0.9, 1.0, size=n_bus + n_log)])
    home_node = np.concatenate([home, bus_depot, log_depot]).astype(np.int64)

    # private chargers
    has_home = np.zeros(n, dtype=bool)
    has_work = np.zeros(n, dtype=bool)
    if n_car:
        has_home[rng_priv.choice(n_car, size=int(round(private_share * n_car)), replace=False)] = True
        has_work[rng_priv.choice(n_car, size=int(round(workplace_share * n_car)), replace=False)] = True
    groups = [("home", "home", "home_ac_7kw", home[has_home[:n_car]]),
              ("work", "workplace", "workplace_ac_7kw", work[has_work[:n_car]])]
    if depot_chargers:
        groups += [("depot_bus", "workplace", "depot_dc_150kw", bus_depot),
                   ("depot_log", "workplace", "depot_dc_60kw", log_depot)]
    stations, sids = _private_stations(instance, router, groups)
    home_station = np.full(n, None, dtype=object)
    work_station = np.full(n, None, dtype=object)
    home_station[np.flatnonzero(has_home)] = sids[0]
    work_station[np.flatnonzero(has_work)] = sids[1]
    if depot_chargers:
        home_station[n_car:n_car + n_bus] = sids[2]
        home_station[n_car + n_bus:] = sids[3]
    models = private_charger_models(v2g=private_v2g)
    models = models[models["model_id"].isin(stations["model_id"])].reset_index(drop=True)

    work_node = np.full(n, None, dtype=object)
    work_node[:n_car] = router.node_ids[work]
    route_id = np.full(n, None, dtype=object)
    route_id[n_car:n_car + n_bus] = [f"R{r}" for r in bus_route]
    route_id[n_car + n_bus:] = [f"D{d}" for d in log_dep]
    evs = EVS.conform(pd.DataFrame({
        "ev_id": ev_id, "vtype_id": vtype, "soc_init": soc, "soc_min": 0.2,
        "v2g_opt_in": prefs["v2g_opt_in"].to_numpy(),
        "v2g_reservation_price_per_kwh": prefs["v2g_reservation_price_per_kwh"].to_numpy(),
        "soc_charge_threshold": prefs["soc_charge_threshold"].to_numpy(),
        "price_weight": prefs["price_weight"].to_numpy(),
        "home_node": router.node_ids[home_node] if n else np.empty(0, dtype=object),
        "home_station": home_station, "work_station": work_station,
        "vehicle_class": cls, "work_node": work_node, "route_id": route_id}))

    # trips
    veh, k, depart, orig, dest, purpose, dist, time = out.arrays()
    order = np.lexsort((k, veh))
    veh, k, depart, orig, dest, purpose, dist, time = (a[order] for a in (veh, k, depart, orig, dest, purpose,
                                                                          dist, time))
    per_km = pd.Series(vt["kwh_per_km"].to_numpy(), index=vt["vtype_id"].to_numpy()).reindex(vtype).to_numpy()
    trips = TRIPS.conform(pd.DataFrame({
        "ev_id": ev_id[veh], "trip_index": k, "depart_s": depart, "origin_node": router.node_ids[orig],
        "destination_node": router.node_ids[dest], "purpose": purpose, "distance_m": dist,
        "travel_time_s": time, "energy_kwh": per_km[veh] * dist / 1000.0}))
    return Fleet(vt, evs, trips, stations, models)


def add_fleet(instance: Instance, fleet: Fleet) -> Instance:
    """A copy of ``instance`` with the fleet's tables and private stations added, validated.

    ``vehicle_types``, ``evs`` and ``trips`` are replaced; private stations and their
    charger models are appended (a model id already in the instance must be identical).
    """
    models = instance.charger_models
    new = fleet.charger_models[~fleet.charger_models["model_id"].isin(models["model_id"])]
    same = fleet.charger_models[fleet.charger_models["model_id"].isin(models["model_id"])]
    if len(same):
        old = models.set_index("model_id").loc[same["model_id"], ["p_ch_max_kw", "p_dis_max_kw"]]
        if not np.allclose(old.to_numpy(dtype=float), same[["p_ch_max_kw", "p_dis_max_kw"]].to_numpy(dtype=float)):
            raise DataError(f"charger model {same['model_id'].iloc[0]!r} already exists with other ratings",
                            table="charger_models", column="model_id")
    result = dataclasses.replace(
        instance,
        charger_models=pd.concat([models, new], ignore_index=True),
        stations=pd.concat([instance.stations, fleet.stations], ignore_index=True),
        vehicle_types=fleet.vehicle_types, evs=fleet.evs, trips=fleet.trips)
    return validate(result)


__all__ = ["ACTIVITY_TYPES", "DEFAULT_PROBTABLE", "BusOptions", "CarOptions", "Fleet", "LogisticsOptions",
           "TripStatistics", "add_fleet", "assign_node_types", "class_counts", "generate_fleet",
           "load_trip_statistics", "private_charger_models", "sample_first_departure", "sample_initial_soc",
           "sample_parking_s", "trip_energy_kwh"]

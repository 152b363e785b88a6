"""Event core of the charging simulation: EVs driving trip chains and charging at stations.

One core serves both uses of the simulation: :class:`optev.mobility.plant.Plant` advances
it interval by interval under a controller's setpoints, and
:func:`optev.mobility.simulate.simulate_day` is that plant advanced through the day with
no setpoints (uncontrolled charging at full power, the baseline).

Why event-driven
----------------
The station rules of R5.1.4 are about the order and exact times of events: FIFO queues at
fast stations, a car leaving *as soon as* it is charged, a slow station found full at the
moment of arrival. An event-driven core (one ``heapq`` over trip departures, arrivals and
"charging limit reached" instants) gets these exactly: waits, plug-in and departure times
are exact to floating point, not rounded to a time step, and the hand-made scenarios of the
tests can be checked with pencil and paper. Between events every plugged EV charges at a
constant power, so its energy is integrated exactly and lazily (only when something
happens to the EV), and the time at which it reaches its target is known in closed form —
the event count is O(trips + sessions), independent of the time resolution. A vectorised
time-stepped core would need a step of a few seconds to resolve queue order and
leave-when-charged, i.e. 17,280 steps a day over arrays of 100,000 EVs, and still round
every time. The per-station time series and the 5-s telemetry are derived afterwards from
the logged power changes (:mod:`optev.mobility.series`, :mod:`optev.mobility.telemetry`),
vectorised. State lives in plain Python lists (scalar access to lists is several times
faster than to numpy arrays); tables are assembled with numpy at the end.

Measured (2-core machine shared with other jobs, uncontrolled day, 15-min series): the
synthetic grid city of :mod:`optev.mobility.gridcity` with 100,000 EVs (316,000 trips,
31,000 stations, 69,000 chargers, 11,000 FCS stops) simulates in 11–13 s at ~0.75 GB
peak (10,000 EVs: 0.8 s; 1,000,000 EVs on the same city: 150 s, 5.4 GB); ux_Nanjing
with 100,000 EVs from :func:`optev.mobility.trips.generate_fleet` and its network
router: 11 s.

The day of an EV
----------------
An EV starts the day parked at the origin of its first trip (or at ``evs.home_node`` if it
has no trip) and makes its trips in ``trip_index`` order. A trip departs at
``max(depart_s, arrival of the previous trip)`` (a late arrival delays the next trip, it
never skips it), uses ``kwh_per_km · distance`` of battery energy and takes
``travel_time_s``. A trip whose origin differs from the previous destination starts at its
own origin (the chain is taken as given).

* **Fast charging en route.** If the SOC on arrival would be below the user's
  ``soc_charge_threshold``, the driver detours via the fast station chosen by
  :mod:`optev.mobility.choice` (score on detour, expected wait, charging time and price,
  weighted by ``price_weight``): drive origin → station, charge, drive station →
  destination. Legs come from the router (protocol in :mod:`optev.mobility.travel`).
  Charging target: ``max(fcs_soc_target, SOC needed for the second leg + threshold)``,
  at most 1. No reachable station: the EV drives on directly.
* **FCS rules (R5.1.4).** A car arriving at a fast station with a free charger plugs in at
  once; otherwise it joins the station's FIFO queue. It leaves as soon as it reaches its
  target SOC, and the first car of the queue takes the freed charger at that instant.
* **Slow charging at a stop.** Parked at a trip destination (or, with
  ``PlantConfig.charge_at_start``, where it starts the day) for a time ``> 0``, the EV
  first uses its own private charger if one is at this node
  (``evs.home_station``/``work_station``; a private station is located at its ``road_node``,
  a home station without one at ``evs.home_node``) and its SOC is below
  ``slow_soc_target``. Otherwise, if it parks at least ``min_park_s``, it may plug in at
  the public SCS serving the node (:func:`optev.mobility.choice.scs_for_nodes`) with the
  SOC-dependent willingness of :func:`optev.mobility.choice.willingness`, drawn with the
  seeded generator, one draw per stop.
* **SCS rules (R5.1.4).** No queue: a car that finds all chargers busy is turned away
  (a ``rejected`` session is recorded) and continues its chain without charging. A car
  stays plugged after it reaches its target until its next trip departs (or the end).
  Private chargers follow the same rule and are used only by the EVs that own them
  (R6.1.3); an EV turned away from a full shared private charger (workplace) tries the
  public SCS as above.
* **Charging power** is limited by the vehicle — its DC rate ``p_ch_max_kw`` at an FCS or
  any charger of at least 30 kW, its AC rate ``p_ch_ac_max_kw`` otherwise — and by the
  charger (``charger_models.p_ch_max_kw``), constant up to the target (no CC-CV taper: the
  taper above ~80 % SOC is not modelled, which makes the closed-form completion time exact).
  Grid power ``p`` gives the battery ``η_ch · p`` with ``η_ch`` = vehicle × charger
  efficiency; discharging ``p < 0`` takes ``|p| / η_dis`` from the battery (as in
  :mod:`optev.blocks.window`).
* **Stranded EVs.** An EV whose battery empties on a leg is recorded as stranded at the
  point it ran out (time interpolated along the leg) and takes no further part in the day.

Setpoints (plant)
-----------------
With setpoints (:class:`optev.mobility.state.Setpoints`) for an interval:

* an EV setpoint applies to an EV plugged in at the start of the interval; it is clipped
  to ``[−p_dis, p_ch]`` (discharge only for an opted-in V2G vehicle at a V2G charger) and
  honoured until the battery is full (SOC 1; at an FCS: until the FCS target, when the car
  leaves) or, discharging, until the SOC floor ``soc_min`` (R6.1.5);
* a station setpoint is shared by the station's other plugged EVs (also those arriving
  during the interval), in proportion to their charging (or, for a negative setpoint,
  discharging) limits, re-shared at every arrival, departure or limit reached;
* an EV with neither charges at full power up to its session target (the baseline).

A station's site caps ``p_site_max_kw`` / ``p_site_dis_max_kw`` bound the power of the EVs
without an EV setpoint (EV setpoints are the controller's responsibility).
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.data.stations import FAST_CHARGER_MIN_KW, PRIVATE_KINDS
from optev.errors import DataError
from optev.mobility.choice import Tariffs, expected_wait_s, fcs_scores, nearest_detour, scs_for_nodes
from optev.mobility.travel import RouterLike, StraightLineRouter, as_travel_function
from optev.tolerances import SNAP_KWH as SNAP_KWH


# station kinds
FCS, SCS, PRIVATE = 0, 1, 2
# EV status
PARKED, DRIVING, QUEUED, PLUGGED, STRANDED = 0, 1, 2, 3, 4
# event kinds, and their priority at equal times: limits free chargers before departures,
# which free chargers before arrivals
K_LIMIT, K_DEPART, K_ARR_FCS, K_ARR_DEST, K_START, K_STRAND = 0, 1, 2, 3, 4, 5
_PRIO = {K_LIMIT: 0, K_DEPART: 1, K_ARR_FCS: 2, K_ARR_DEST: 2, K_START: 2, K_STRAND: 2}
# control modes of a plugged EV
FREE, EV_SET, STATION_SET = 0, 1, 2


@dataclass(frozen=True)
class PlantConfig:
    """Behaviour parameters of the simulation (units in the names; documented defaults).

    Attributes
    ----------
    horizon_s : float
        End of the simulated day, s after the instance start (sessions still open then
        are reported as ``censored``). It is also the expected departure of a car parked at
        its last stop of the day (no next trip), which the plant reports to a controller.
    fcs_soc_target : float
        SOC at which a car leaves a fast station (raised when the rest of the trip needs
        more). 0.8: fast charging usually stops at 80 %, where DC power tapers off.
    slow_soc_target : float
        SOC to which a car charges at a slow station or private charger, 1.0.
    slow_willing_soc_low, slow_willing_soc_high : float
        SOC-dependent willingness to plug in at a public SCS: always at or below ``low``,
        never at or above ``high``, linear in between (0.3 / 0.8).
    min_park_s : float
        Shortest stop for which a driver considers a public SCS, 1800 s (30 min).
    private_min_park_s : float
        Shortest stop for which a driver plugs in at their own charger, 0 s (always).
    scs_max_walk_m : float
        Largest straight-line distance from a destination node to an SCS serving it, 500 m.
    fcs_candidates : int
        Fast stations routed and scored per decision (smallest straight-line detour), 8.
    fcs_service_s : float
        Typical service time of an FCS charger for the expected wait, 1800 s.
    value_of_time_per_h : float
        Value of a driver's time in the FCS score, currency/h. 30: an assumption of about
        half an urban hourly wage in a large Chinese city (order 50–60 CNY/h), following the
        common practice of valuing personal travel time at 30–50 % of the wage.
    charge_at_start : bool
        Whether the EV may plug in where it is parked at the start of the day, before its
        first trip (False: ``soc_init`` is taken as the SOC at the first departure, and
        charging starts with the first arrival; True plugs a whole fleet in at time 0,
        which makes a spike that a day starting at midnight does not have in reality).
    seed : int
        Seed of the willingness draws; the same seed gives the same day.
    """

    horizon_s: float = 86400.0
    fcs_soc_target: float = 0.8
    slow_soc_target: float = 1.0
    slow_willing_soc_low: float = 0.3
    slow_willing_soc_high: float = 0.8
    min_park_s: float = 1800.0
    private_min_park_s: float = 0.0
    scs_max_walk_m: float = 500.0
    fcs_candidates: int = 8
    fcs_service_s: float = 1800.0
    value_of_time_per_h: float = 30.0
    charge_at_start: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("fcs_soc_target", "slow_soc_target", "slow_willing_soc_low", "slow_willing_soc_high"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise DataError(f"PlantConfig.{name} must be in [0, 1], got {v}")
        for name in ("horizon_s", "min_park_s", "private_min_park_s", "scs_max_walk_m", "fcs_service_s",
                     "value_of_time_per_h"):
            v = getattr(self, name)
            if not v >= 0.0:
                raise DataError(f"PlantConfig.{name} must be at least 0, got {v}")
        if self.fcs_candidates < 1:
            raise DataError(f"PlantConfig.fcs_candidates must be at least 1, got {self.fcs_candidates}")


def _willingness(soc: float, low: float, high: float) -> float:
    """Scalar :func:`optev.mobility.choice.willingness` (this is called once per stop)."""
    if high <= low:
        return 1.0 if soc < high else 0.0
    return min(max((high - soc) / (high - low), 0.0), 1.0)


def _take(values: np.ndarray, idx: np.ndarray, fill: float | int) -> np.ndarray:
    """``values[idx]`` where ``idx ≥ 0``, ``fill`` elsewhere (also for an empty ``values``)."""
    out = np.full(idx.shape, fill, dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
    ok = idx >= 0
    out[ok] = values[idx[ok]]
    return out


def _node_positions(values: pd.Series, index: dict[str, int]) -> np.ndarray:
    """Index of each node id in ``index`` (-1 for None/empty)."""
    return np.fromiter((index.get(v, -1) if isinstance(v, str) and v else -1 for v in values),
                       dtype=np.int64, count=len(values))


class EventCore:
    """The event-driven simulation state (see the module docstring).

    Parameters
    ----------
    instance : Instance
        Stations, charger models, tariffs, vehicle types, EVs, trips and road nodes.
    config : PlantConfig
    router : router, optional
        Travel distances/times between nodes (protocol in :mod:`optev.mobility.travel`);
        default :class:`~optev.mobility.travel.StraightLineRouter` on the road nodes.
    telemetry_stations : array of bool, optional
        Stations whose per-charger power changes are logged for telemetry.
    """

    def __init__(self, instance: Instance, config: PlantConfig, router: RouterLike | None = None,
                 telemetry_stations: np.ndarray | None = None) -> None:
        self.config = config
        self.instance = instance
        if router is None:
            router = StraightLineRouter(instance.road.nodes)
        self.travel: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] = as_travel_function(router)
        self._compile_nodes(instance)
        self._compile_stations(instance)
        self._compile_evs(instance)
        self._compile_trips(instance)
        self._init_state(telemetry_stations)

    # ------------------------------------------------------------------ compile
    def _compile_nodes(self, inst: Instance) -> None:
        nodes = inst.road.nodes
        ids = [str(v) for v in nodes["node_id"]]
        xs = list(nodes["x"].to_numpy(float))
        ys = list(nodes["y"].to_numpy(float))
        index = {v: k for k, v in enumerate(ids)}
        extra = []
        for col in (inst.trips["origin_node"], inst.trips["destination_node"], inst.stations["road_node"],
                    inst.evs["home_node"]):
            for v in pd.unique(col.to_numpy(object)):
                if isinstance(v, str) and v and v not in index:
                    index[v] = len(ids)
                    ids.append(v)
                    extra.append(v)
        xs += [np.nan] * len(extra)
        ys += [np.nan] * len(extra)
        self.node_ids = np.array(ids, dtype=object)
        self.node_index = index
        self.node_x = np.array(xs, dtype=float)
        self.node_y = np.array(ys, dtype=float)

    def _compile_stations(self, inst: Instance) -> None:
        st = inst.stations
        models = inst.charger_models.set_index("model_id")
        missing = ~st["model_id"].isin(models.index)
        if missing.any():
            k = int(np.flatnonzero(missing.to_numpy())[0])
            raise DataError(f"unknown charger model {st['model_id'].iloc[k]!r}", table="stations",
                            row=st["station_id"].iloc[k], column="model_id")
        m = models.reindex(st["model_id"])
        self.st_ids = st["station_id"].astype(str).to_numpy(object)
        self.st_index = {s: k for k, s in enumerate(self.st_ids)}
        kind = st["kind"].to_numpy(object)
        self.st_kind_name = kind
        self.st_kind = np.where(kind == "fcs", FCS, np.where(kind == "scs", SCS, PRIVATE)).astype(np.int64)
        self.st_n = st["n_chargers"].to_numpy(np.int64)
        p_ch = m["p_ch_max_kw"].to_numpy(float)
        v2g = m["v2g"].fillna(False).to_numpy(bool)
        p_dis = np.where(v2g, m["p_dis_max_kw"].to_numpy(float), 0.0)
        self.st_p_ch = p_ch
        self.st_p_dis = p_dis
        self.st_eff_ch = m["eff_ch"].to_numpy(float)
        self.st_eff_dis = m["eff_dis"].to_numpy(float)
        self.st_fast = (self.st_kind == FCS) | (p_ch >= FAST_CHARGER_MIN_KW)
        self.st_site_ch = st["p_site_max_kw"].to_numpy(float)
        site_dis = st["p_site_dis_max_kw"].to_numpy(float)
        self.st_site_dis = np.minimum(site_dis, self.st_n * p_dis)
        # stations whose EVs' powers must be shared under a site cap (a cap given by the user)
        self.st_static_alloc = np.isfinite(self.st_site_ch) | (np.isfinite(site_dis) & (p_dis > 0))
        self.st_node = _node_positions(st["road_node"], self.node_index)
        sx = st["x"].to_numpy(float)
        sy = st["y"].to_numpy(float)
        has_node = self.st_node >= 0
        nx = _take(self.node_x, self.st_node, np.nan)
        ny = _take(self.node_y, self.st_node, np.nan)
        # where vehicles reach a station: its road node's coordinates; else its own
        self.st_x = np.where(np.isfinite(nx), nx, sx)
        self.st_y = np.where(np.isfinite(ny), ny, sy)
        self.st_charger_offset = np.concatenate([[0], np.cumsum(self.st_n)])
        self.tariff_buy = Tariffs(inst.station_tariffs, self.st_ids, "buy")
        # fast stations a driver can choose: reachable on the road and with chargers
        self.fcs = np.flatnonzero((self.st_kind == FCS) & has_node & (self.st_n > 0))
        self.fcs_xy = bool(np.isfinite(self.st_x[self.fcs]).all() and np.isfinite(self.st_y[self.fcs]).all())
        scs = np.flatnonzero((self.st_kind == SCS) & (self.st_n > 0))
        serve = scs_for_nodes(self.node_x, self.node_y, self.st_node[scs], self.st_x[scs], self.st_y[scs],
                              self.config.scs_max_walk_m)
        self.scs_of_node = _take(scs, serve, -1).tolist()

    def _compile_evs(self, inst: Instance) -> None:
        evs = inst.evs
        vt = inst.vehicle_types.set_index("vtype_id")
        missing = ~evs["vtype_id"].isin(vt.index)
        if missing.any():
            k = int(np.flatnonzero(missing.to_numpy())[0])
            raise DataError(f"unknown vehicle type {evs['vtype_id'].iloc[k]!r}", table="evs",
                            row=evs["ev_id"].iloc[k], column="vtype_id")
        v = vt.reindex(evs["vtype_id"])
        self.ev_ids = evs["ev_id"].astype(str).to_numpy(object)
        self.ev_index = {e: k for k, e in enumerate(self.ev_ids)}
        n = len(evs)
        self.n_ev = n
        cap = v["battery_kwh"].to_numpy(float)
        if (cap <= 0).any():
            k = int(np.flatnonzero(cap <= 0)[0])
            raise DataError("battery_kwh must be positive to simulate", table="vehicle_types",
                            row=evs["vtype_id"].iloc[k], column="battery_kwh")
        p_dc = v["p_ch_max_kw"].to_numpy(float)
        p_ac = v["p_ch_ac_max_kw"].to_numpy(float)
        p_ac = np.where(np.isnan(p_ac), p_dc, p_ac)
        p_vdis = v["p_dis_max_kw"].to_numpy(float)
        self.cap = cap.tolist()
        self.kwh_per_m = (v["kwh_per_km"].to_numpy(float) / 1000.0).tolist()
        self.p_dc = p_dc.tolist()
        self.p_ac = p_ac.tolist()
        self.p_vdis = p_vdis.tolist()
        self.eff_v_ch = v["eff_ch"].to_numpy(float).tolist()
        self.eff_v_dis = v["eff_dis"].to_numpy(float).tolist()
        self.v2g_user = (evs["v2g_opt_in"].to_numpy(bool) & (p_vdis > 0)).tolist()
        self.soc_min = evs["soc_min"].to_numpy(float).tolist()
        self.threshold = evs["soc_charge_threshold"].to_numpy(float).tolist()
        self.price_weight = evs["price_weight"].to_numpy(float).tolist()
        self.soc_init = evs["soc_init"].to_numpy(float)
        self.home_node = _node_positions(evs["home_node"], self.node_index)

        def private(col: str) -> np.ndarray:
            idx = np.full(n, -1, dtype=np.int64)
            for k, sid in enumerate(evs[col].to_numpy(object)):
                if isinstance(sid, str) and sid:
                    s = self.st_index.get(sid)
                    if s is None:
                        raise DataError(f"unknown station {sid!r}", table="evs", row=self.ev_ids[k], column=col)
                    if self.st_kind_name[s] not in PRIVATE_KINDS:
                        raise DataError(f"station {sid!r} is of kind {self.st_kind_name[s]!r}, not a private "
                                        f"charger ({'/'.join(PRIVATE_KINDS)})", table="evs", row=self.ev_ids[k],
                                        column=col)
                    idx[k] = s
            return idx

        home = private("home_station")
        work = private("work_station")
        home_at = _take(self.st_node, home, -1)
        home_at = np.where((home >= 0) & (home_at < 0), self.home_node, home_at)
        work_at = _take(self.st_node, work, -1)
        self.private_st = [((int(h), int(hn)) if h >= 0 and hn >= 0 else None,
                            (int(w), int(wn)) if w >= 0 and wn >= 0 else None)
                           for h, hn, w, wn in zip(home, home_at, work, work_at)]

    def _compile_trips(self, inst: Instance) -> None:
        trips = inst.trips
        ev_pos_mapped = trips["ev_id"].astype(str).map(self.ev_index)
        if ev_pos_mapped.isna().any():
            k = int(np.flatnonzero(ev_pos_mapped.isna().to_numpy())[0])
            raise DataError(f"unknown EV {trips['ev_id'].iloc[k]!r}", table="trips", row=k, column="ev_id")
        ev_pos = ev_pos_mapped.to_numpy(np.int64)
        order = np.lexsort((trips["trip_index"].to_numpy(np.int64), ev_pos))
        t = trips.iloc[order].reset_index(drop=True)
        ev = ev_pos[order]
        o = _node_positions(t["origin_node"], self.node_index)
        d = _node_positions(t["destination_node"], self.node_index)
        for col, arr in (("origin_node", o), ("destination_node", d)):
            if (arr < 0).any():
                k = int(np.flatnonzero(arr < 0)[0])
                raise DataError("trip without a road node", table="trips", row=int(order[k]), column=col)
        dep = t["depart_s"].to_numpy(float)
        if not np.isfinite(dep).all():
            k = int(np.flatnonzero(~np.isfinite(dep))[0])
            raise DataError("departure time is not a finite number", table="trips", row=int(order[k]),
                            column="depart_s")
        dist = t["distance_m"].to_numpy(float).copy()
        time = t["travel_time_s"].to_numpy(float).copy()
        todo = np.flatnonzero(np.isnan(dist) | np.isnan(time))
        if todo.size:
            rd, rt = self.travel(self.node_ids[o[todo]], self.node_ids[d[todo]])
            dist[todo] = np.where(np.isnan(dist[todo]), rd, dist[todo])
            time[todo] = np.where(np.isnan(time[todo]), rt, time[todo])
        bad = ~(np.isfinite(dist) & np.isfinite(time))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise DataError("trip cannot be travelled (no route between its nodes)", table="trips",
                            row=int(order[k]), column="distance_m")
        n_trips = len(t)
        nxt = np.arange(1, n_trips + 1, dtype=np.int64)
        if n_trips:
            nxt[-1] = -1
            nxt[:-1][ev[1:] != ev[:-1]] = -1
        first = np.full(self.n_ev, -1, dtype=np.int64)
        if n_trips:
            starts = np.flatnonzero(np.concatenate([[True], ev[1:] != ev[:-1]]))
            first[ev[starts]] = starts
        self.trip_row = order  # position of each sorted trip in instance.trips
        self.trip_ev = ev
        self.trip_index = t["trip_index"].to_numpy(np.int64)
        self.t_dep = t["depart_s"].to_numpy(float).tolist()
        self.t_o = o.tolist()
        self.t_d = d.tolist()
        self.t_dist = dist.tolist()
        self.t_time = time.tolist()
        self.t_next = nxt.tolist()
        self.first_trip = first.tolist()
        rng = np.random.default_rng(self.config.seed)
        self.u_start = rng.random(self.n_ev).tolist()
        self.u_trip = rng.random(n_trips).tolist()

    def _init_state(self, telemetry_stations: np.ndarray | None) -> None:
        n, ns = self.n_ev, len(self.st_ids)
        cap = self.cap
        self.e = (self.soc_init * np.asarray(cap)).tolist()
        self.e_init = list(self.e)
        self.efl = (np.asarray(self.soc_min) * np.asarray(cap)).tolist()
        self.status = [PARKED] * n
        self.st = [-1] * n
        self.slot = [-1] * n
        self.sess = [-1] * n
        self.p = [0.0] * n
        self.tl = [0.0] * n
        self.ver = [0] * n
        self.mode = [FREE] * n
        self.sp = [0.0] * n
        self.eup = [0.0] * n
        self.pch = [0.0] * n
        self.pdis = [0.0] * n
        self.ech = [1.0] * n
        self.edis = [1.0] * n
        self.trip_now = [-1] * n
        self.leg2 = [(0.0, 0.0)] * n
        self.fcs_target = [1.0] * n
        self.strand_t = [np.nan] * n
        self.drive_kwh = [0.0] * n
        self.drive_m = [0.0] * n
        self.ch_batt = [0.0] * n
        self.dis_batt = [0.0] * n
        self.grid_in = [0.0] * n
        self.grid_out = [0.0] * n
        # stations
        self.busy = [0] * ns
        self.free_slots: list[list[int] | None] = [None] * ns
        self.queue: dict[int, deque[int]] = {}
        self.plugged_at: list[set[int] | None] = [None] * ns
        self.plugged_all: set[int] = set()
        self.st_p = [0.0] * ns
        self.st_gin = [0.0] * ns
        self.st_gout = [0.0] * ns
        self.station_sp: dict[int, float] = {}
        self.controlled: set[int] = set()
        self.static_alloc = self.st_static_alloc.tolist()
        self.n_chargers = self.st_n.tolist()
        self.kind = self.st_kind.tolist()
        # sessions (columns)
        self.s_id: list[str] = []  # session ids, one string per session (reports share it)
        self.s_ev: list[int] = []
        self.s_st: list[int] = []
        self.s_arr: list[float] = []
        self.s_plug: list[float] = []
        self.s_dep: list[float] = []
        self.s_e_arr: list[float] = []
        self.s_soc_tgt: list[float] = []
        self.s_ch: list[float] = []
        self.s_dis: list[float] = []
        self.s_gin: list[float] = []
        self.s_gout: list[float] = []
        self.s_rej: list[bool] = []
        self.s_expdep: list[float] = []
        self.s_trip: list[int] = []
        self.s_e_dep: list[float] = []
        # logs of station changes (for the time series)
        self.lg_t = array("d")
        self.lg_s = array("q")
        self.lg_dp = array("d")
        self.lg_docc = array("b")
        self.lg_dq = array("b")
        # per-charger log for telemetry
        self.tele = None if telemetry_stations is None else np.asarray(telemetry_stations, bool).tolist()
        self.cg_t = array("d")
        self.cg_c = array("q")
        self.cg_p = array("d")
        self.cg_ev = array("q")
        # events of the current interval for reports: (kind, t, ev, station, session, soc)
        self.record_events = False
        self.events: list[tuple[str, float, int, int, int, float]] = []
        self.heap: list[tuple] = []
        self.seq = 0
        self.now = 0.0
        start = []
        for i in range(self.n_ev):
            k = self.first_trip[i]
            if self.config.charge_at_start:
                if k >= 0 or self.home_node[i] >= 0:
                    start.append((0.0, _PRIO[K_START], i, K_START, i, 0))
            elif k >= 0:
                start.append((max(self.t_dep[k], 0.0), _PRIO[K_DEPART], i, K_DEPART, i, k))
        heapq.heapify(start)
        self.heap = start
        self.seq = self.n_ev

    # ------------------------------------------------------------------ helpers
    def _push(self, t: float, kind: int, i: int, data: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, _PRIO[kind], self.seq, kind, i, data))

    def _log(self, t: float, s: int, dp: float, docc: int, dq: int) -> None:
        self.lg_t.append(t)
        self.lg_s.append(s)
        self.lg_dp.append(dp)
        self.lg_docc.append(docc)
        self.lg_dq.append(dq)

    def _tlog(self, t: float, i: int, s: int, ev: int) -> None:
        if self.tele is not None and self.tele[s]:
            self.cg_t.append(t)
            self.cg_c.append(int(self.st_charger_offset[s]) + self.slot[i])
            self.cg_p.append(self.p[i] if ev >= 0 else 0.0)
            self.cg_ev.append(ev)

    def clear_charger_log(self) -> None:
        """Forget the per-charger changes (after the telemetry writer took them)."""
        self.cg_t = array("d")
        self.cg_c = array("q")
        self.cg_p = array("d")
        self.cg_ev = array("q")

    def _event(self, kind: str, t: float, i: int, s: int, ses: int) -> None:
        if self.record_events:
            self.events.append((kind, t, i, s, ses, self.e[i] / self.cap[i]))

    def needs_alloc(self, s: int) -> bool:
        return self.static_alloc[s] or s in self.station_sp

    def settle(self, i: int, t: float) -> None:
        """Integrate EV ``i``'s energy up to ``t`` at its current power."""
        dt = t - self.tl[i]
        pi = self.p[i]
        if dt > 0.0 and pi != 0.0:
            e = self.e[i]
            ses = self.sess[i]
            s = self.st[i]
            if pi > 0.0:
                ech = self.ech[i]
                de = pi * ech * dt / 3600.0
                room = self.eup[i] - e
                if de > room - SNAP_KWH:
                    de = room if room > 0.0 else 0.0
                g = de / ech
                self.ch_batt[i] += de
                self.grid_in[i] += g
                self.s_ch[ses] += de
                self.s_gin[ses] += g
                self.st_gin[s] += g
            else:
                edis = self.edis[i]
                de = pi * dt / 3600.0 / edis
                room = self.efl[i] - e
                if de < room + SNAP_KWH:
                    de = room if room < 0.0 else 0.0
                g = -de * edis
                self.dis_batt[i] -= de
                self.grid_out[i] += g
                self.s_dis[ses] -= de
                self.s_gout[ses] += g
                self.st_gout[s] += g
            self.e[i] = e + de
        self.tl[i] = t

    def set_power(self, i: int, pnew: float, t: float, force: bool = False) -> None:
        """Set the power of plugged EV ``i`` (settled at ``t``) and schedule its limit."""
        old = self.p[i]
        if pnew == old and not force:
            return
        s = self.st[i]
        if pnew != old:
            self.st_p[s] += pnew - old
            self._log(t, s, pnew - old, 0, 0)
            self.p[i] = pnew
            self._tlog(t, i, s, i)
        self.ver[i] += 1
        if pnew > 0.0:
            room = self.eup[i] - self.e[i]
            self._push(t + room / (pnew * self.ech[i]) * 3600.0, K_LIMIT, i, self.ver[i])
        elif pnew < 0.0:
            room = self.e[i] - self.efl[i]
            self._push(t + room * self.edis[i] / (-pnew) * 3600.0, K_LIMIT, i, self.ver[i])

    def caps(self, i: int) -> tuple[float, float]:
        """Charge and discharge limits of plugged EV ``i`` now (0 at the target / floor), kW."""
        e = self.e[i]
        c = self.pch[i] if self.eup[i] - e > SNAP_KWH else 0.0
        d = self.pdis[i] if e - self.efl[i] > SNAP_KWH else 0.0
        return c, d

    def _eup(self, i: int) -> float:
        """Upper energy limit of plugged EV ``i`` in its mode."""
        s = self.st[i]
        if self.kind[s] == FCS or self.mode[i] == FREE:
            return self.s_soc_tgt[self.sess[i]] * self.cap[i]
        return self.cap[i]

    def _own_power(self, i: int) -> float:
        c, d = self.caps(i)
        if self.mode[i] == EV_SET:
            return min(max(self.sp[i], -d), c)
        return c

    def realloc(self, s: int, t: float) -> None:
        """Recompute the powers of all EVs at station ``s`` (setpoint sharing, site caps)."""
        members = sorted(self.plugged_at[s] or ())
        if not members:
            return
        fixed_ch = fixed_dis = 0.0
        shared = []
        new = {}
        for i in members:
            self.settle(i, t)
            c, d = self.caps(i)
            if self.mode[i] == EV_SET:
                q = min(max(self.sp[i], -d), c)
                new[i] = q
                if q > 0:
                    fixed_ch += q
                else:
                    fixed_dis -= q
            else:
                shared.append((i, c, d))
        if shared:
            sum_c = sum(c for _, c, _ in shared)
            sum_d = sum(d for _, _, d in shared)
            target = self.station_sp.get(s)
            total = sum_c if target is None else min(max(target, -sum_d), sum_c)
            if total > 0.0:
                total = min(total, max(float(self.st_site_ch[s]) - fixed_ch, 0.0))
                for i, c, _ in shared:
                    new[i] = c if total >= sum_c else total * c / sum_c
            elif total < 0.0:
                total = max(total, -max(float(self.st_site_dis[s]) - fixed_dis, 0.0))
                for i, _, d in shared:
                    new[i] = -d if -total >= sum_d else total * d / sum_d
            else:
                for i, _, _ in shared:
                    new[i] = 0.0
        for i in members:
            self.set_power(i, new[i], t, force=True)

    def _update_power(self, i: int, t: float, force: bool = False) -> None:
        """After a change to EV ``i`` at its station: re-share or set its own power."""
        s = self.st[i]
        if self.needs_alloc(s):
            self.realloc(s, t)
        else:
            self.settle(i, t)
            self.set_power(i, self._own_power(i), t, force=force)

    # ------------------------------------------------------------------ sessions
    def _new_session(self, i: int, s: int, t: float, soc_target: float, expdep: float, trip: int) -> int:
        self.s_id.append(f"s{len(self.s_ev):07d}")
        self.s_ev.append(i)
        self.s_st.append(s)
        self.s_arr.append(t)
        self.s_plug.append(np.nan)
        self.s_dep.append(np.nan)
        self.s_e_arr.append(self.e[i])
        self.s_soc_tgt.append(soc_target)
        self.s_ch.append(0.0)
        self.s_dis.append(0.0)
        self.s_gin.append(0.0)
        self.s_gout.append(0.0)
        self.s_rej.append(False)
        self.s_expdep.append(expdep)
        self.s_trip.append(trip)
        self.s_e_dep.append(np.nan)
        return len(self.s_ev) - 1

    def _reject(self, i: int, ses: int, t: float) -> None:
        self.s_rej[ses] = True
        self.s_dep[ses] = t
        self.s_e_dep[ses] = self.e[i]
        self._event("rejection", t, i, self.s_st[ses], ses)

    def plug_in(self, i: int, s: int, t: float, ses: int) -> bool:
        """Plug EV ``i`` in at station ``s`` (a charger is free). False if it left at once (FCS)."""
        slots = self.free_slots[s]
        if slots is None:
            slots = self.free_slots[s] = list(range(self.n_chargers[s]))
        self.slot[i] = heapq.heappop(slots)
        self.busy[s] += 1
        members = self.plugged_at[s]
        if members is None:
            members = self.plugged_at[s] = set()
        members.add(i)
        self.plugged_all.add(i)
        self.st[i] = s
        self.sess[i] = ses
        self.tl[i] = t
        self.p[i] = 0.0
        self.status[i] = PLUGGED
        fast = self.st_fast[s]
        p_v = self.p_dc[i] if fast else self.p_ac[i]
        self.pch[i] = min(p_v, float(self.st_p_ch[s]))
        self.pdis[i] = min(self.p_vdis[i], float(self.st_p_dis[s])) if self.v2g_user[i] else 0.0
        self.ech[i] = self.eff_v_ch[i] * float(self.st_eff_ch[s])
        self.edis[i] = self.eff_v_dis[i] * float(self.st_eff_dis[s])
        if s in self.station_sp:
            self.mode[i] = STATION_SET
            self.controlled.add(i)
        else:
            self.mode[i] = FREE
        self.eup[i] = self._eup(i)
        self.s_plug[ses] = t
        self._log(t, s, 0.0, 1, 0)
        self._tlog(t, i, s, i)
        self._event("plug_in", t, i, s, ses)
        if self.kind[s] == FCS and self.caps(i)[0] <= 0.0:
            self.unplug(i, t)  # nothing to charge (target reached or no power): leave at once
            return False
        self._update_power(i, t, force=True)
        return True

    def unplug(self, i: int, t: float) -> None:
        """Unplug EV ``i`` (settled at ``t``), close its session, free the charger."""
        s = self.st[i]
        self.settle(i, t)
        self.set_power(i, 0.0, t, force=True)
        self._tlog(t, i, s, -1)
        self.busy[s] -= 1
        heapq.heappush(self.free_slots[s], self.slot[i])  # type: ignore[arg-type]
        self.plugged_at[s].discard(i)  # type: ignore[union-attr]
        self.plugged_all.discard(i)
        self.controlled.discard(i)
        ses = self.sess[i]
        self.s_dep[ses] = t
        self.s_e_dep[ses] = self.e[i]
        self._log(t, s, 0.0, -1, 0)
        self._event("departure", t, i, s, ses)
        self.st[i] = -1
        self.slot[i] = -1
        self.mode[i] = FREE
        self.status[i] = PARKED
        if self.needs_alloc(s):
            self.realloc(s, t)

    # ------------------------------------------------------------------ driving
    def _drive(self, i: int, t: float, dist_m: float, time_s: float) -> bool:
        """Use the energy of a leg; False (and a stranding event) if the battery empties."""
        need = dist_m * self.kwh_per_m[i]
        e = self.e[i]
        self.status[i] = DRIVING
        if need <= e:
            self.e[i] = e - need
            self.drive_kwh[i] += need
            self.drive_m[i] += dist_m
            return True
        frac = e / need
        self.drive_kwh[i] += e
        self.drive_m[i] += dist_m * frac
        self.e[i] = 0.0
        self.status[i] = STRANDED
        self.strand_t[i] = t + frac * time_s
        self._push(t + frac * time_s, K_STRAND, i, self.trip_now[i])
        return False

    def _choose_fcs(self, i: int, k: int, t: float) -> tuple[int, float, float, float, float] | None:
        """The fast station for an en-route stop on trip ``k``: (station, d1, t1, d2, t2)."""
        cfg = self.config
        o, d = self.t_o[k], self.t_d[k]
        fcs = self.fcs
        if self.fcs_xy and np.isfinite(self.node_x[o] + self.node_y[o] + self.node_x[d] + self.node_y[d]):
            cand = nearest_detour(self.node_x[o], self.node_y[o], self.node_x[d], self.node_y[d],
                                  self.st_x[fcs], self.st_y[fcs], cfg.fcs_candidates)
        else:
            cand = np.arange(fcs.size)  # no coordinates to pre-select with: route them all
        st = fcs[cand]
        nodes = self.node_ids[self.st_node[st]]
        d1, t1 = self.travel(np.full(st.size, self.node_ids[o], dtype=object), nodes)
        d2, t2 = self.travel(nodes, np.full(st.size, self.node_ids[d], dtype=object))
        kpm, cap, e = self.kwh_per_m[i], self.cap[i], self.e[i]
        e_at = e - d1 * kpm
        ok = np.isfinite(d1) & np.isfinite(d2) & (e_at > 0.0)
        if not ok.any():
            return None
        st, d1, t1, d2, t2, e_at = st[ok], d1[ok], t1[ok], d2[ok], t2[ok], e_at[ok]
        target = np.minimum(1.0, np.maximum(cfg.fcs_soc_target, d2 * kpm / cap + self.threshold[i]))
        p = np.minimum(self.p_dc[i], self.st_p_ch[st])
        eff = self.eff_v_ch[i] * self.st_eff_ch[st]
        e_buy = np.maximum(target * cap - e_at, 0.0) / eff
        charge_s = np.where(p > 0, e_buy / np.where(p > 0, p, 1.0) * 3600.0, np.inf)
        queued = np.array([len(self.queue.get(int(s), ())) for s in st], dtype=float)
        busy = np.array([self.busy[int(s)] for s in st], dtype=float)
        wait = expected_wait_s(busy, queued, self.st_n[st], cfg.fcs_service_s)
        price = np.array([self.tariff_buy.price(int(s), t + float(tt)) for s, tt in zip(st, t1)])
        score = fcs_scores(price_weight=self.price_weight[i], value_of_time_per_h=cfg.value_of_time_per_h,
                           price=price, energy_kwh=e_buy, detour_s=t1 + t2 - self.t_time[k], wait_s=wait,
                           charge_s=charge_s)
        j = int(np.argmin(score))
        self.fcs_target[i] = float(target[j])
        return int(st[j]), float(d1[j]), float(t1[j]), float(d2[j]), float(t2[j])

    def _continue_trip(self, i: int, t: float) -> None:
        """Drive the second leg (FCS → destination) of the current trip."""
        k = self.trip_now[i]
        d2, t2 = self.leg2[i]
        if self._drive(i, t, d2, t2):
            self._push(t + t2, K_ARR_DEST, i, k)

    def _stop(self, i: int, node: int, t: float, dep: float, u: float, trip: int) -> None:
        """EV ``i`` parks at ``node`` from ``t`` until ``dep``: private or public slow charging."""
        cfg = self.config
        park = dep - t
        # the last stop of the day has no next trip: the day's end is its expected departure, as in the
        # sessions table of optev generate (a controller then knows when the energy is due)
        expdep = dep if dep != np.inf else max(cfg.horizon_s, t)
        cap = self.cap[i]
        e = self.e[i]
        if park > 0.0 and park >= cfg.private_min_park_s and e < cfg.slow_soc_target * cap - SNAP_KWH:
            for ps in self.private_st[i]:
                if ps is not None and ps[1] == node:
                    s = ps[0]
                    ses = self._new_session(i, s, t, cfg.slow_soc_target, expdep, trip)
                    self._event("arrival", t, i, s, ses)
                    if self.busy[s] < self.n_chargers[s]:
                        self.plug_in(i, s, t, ses)
                        return
                    self._reject(i, ses, t)
                    break
        if park > 0.0 and park >= cfg.min_park_s:
            s = self.scs_of_node[node]
            if s >= 0 and u < _willingness(e / cap, cfg.slow_willing_soc_low, cfg.slow_willing_soc_high):
                ses = self._new_session(i, s, t, cfg.slow_soc_target, expdep, trip)
                self._event("arrival", t, i, s, ses)
                if self.busy[s] < self.n_chargers[s]:
                    self.plug_in(i, s, t, ses)
                else:
                    self._reject(i, ses, t)

    def _serve_queue(self, s: int, t: float) -> None:
        q = self.queue.get(s)
        while q and self.busy[s] < self.n_chargers[s]:
            j = q.popleft()
            self._log(t, s, 0.0, 0, -1)
            if not self.plug_in(j, s, t, self.sess[j]):
                self._continue_trip(j, t)

    # ------------------------------------------------------------------ handlers
    def _on_start(self, i: int, t: float) -> None:
        k = self.first_trip[i]
        if k >= 0:
            dep = max(self.t_dep[k], t)
            self._push(dep, K_DEPART, i, k)
            node = self.t_o[k]
        else:
            dep = np.inf
            node = int(self.home_node[i])
        self._stop(i, node, t, dep, self.u_start[i], -1)

    def _on_depart(self, i: int, k: int, t: float) -> None:
        if self.status[i] == STRANDED:
            return
        if self.status[i] == PLUGGED:
            self.unplug(i, t)
        self.trip_now[i] = k
        dist, tt = self.t_dist[k], self.t_time[k]
        e_after = self.e[i] - dist * self.kwh_per_m[i]
        if self.fcs.size and e_after < self.threshold[i] * self.cap[i]:
            choice = self._choose_fcs(i, k, t)
            if choice is not None:
                s, d1, t1, d2, t2 = choice
                self.leg2[i] = (d2, t2)
                if self._drive(i, t, d1, t1):
                    self._push(t + t1, K_ARR_FCS, i, s)
                return
        if self._drive(i, t, dist, tt):
            self._push(t + tt, K_ARR_DEST, i, k)

    def _on_arrive_fcs(self, i: int, s: int, t: float) -> None:
        ses = self._new_session(i, s, t, self.fcs_target[i], np.nan, self.trip_now[i])
        self._event("arrival", t, i, s, ses)
        self.sess[i] = ses
        if self.busy[s] < self.n_chargers[s] and not self.queue.get(s):
            if not self.plug_in(i, s, t, ses):
                self._continue_trip(i, t)
        else:
            self.queue.setdefault(s, deque()).append(i)
            self.status[i] = QUEUED
            self._log(t, s, 0.0, 0, 1)

    def _on_arrive_dest(self, i: int, k: int, t: float) -> None:
        self.status[i] = PARKED
        nk = self.t_next[k]
        if nk >= 0:
            dep = max(self.t_dep[nk], t)
            self._push(dep, K_DEPART, i, nk)
        else:
            dep = np.inf
        self._stop(i, self.t_d[k], t, dep, self.u_trip[k], k)

    def _on_limit(self, i: int, t: float) -> None:
        self.settle(i, t)
        s = self.st[i]
        if self.kind[s] == FCS and self.p[i] > 0.0:
            self.unplug(i, t)
            self._continue_trip(i, t)
            self._serve_queue(s, t)
        else:
            self._update_power(i, t, force=True)

    def run_until(self, t_end: float) -> None:
        """Process every event before ``t_end`` (events at ``t_end`` belong to the next interval)."""
        heap = self.heap
        pop = heapq.heappop
        ver = self.ver
        while heap and heap[0][0] < t_end:
            t, _, _, kind, i, data = pop(heap)
            if kind == K_LIMIT:
                if data == ver[i]:
                    self._on_limit(i, t)
            elif kind == K_DEPART:
                self._on_depart(i, data, t)
            elif kind == K_ARR_DEST:
                self._on_arrive_dest(i, data, t)
            elif kind == K_ARR_FCS:
                self._on_arrive_fcs(i, data, t)
            elif kind == K_START:
                self._on_start(i, t)
            else:  # K_STRAND
                self._event("stranded", t, i, -1, -1)
        self.now = max(self.now, t_end)

    # ------------------------------------------------------------------ control
    def apply_setpoints(self, ev_sp: dict[int, float], st_sp: dict[int, float], t: float) -> tuple[
            list[int], dict[int, float]]:
        """Install the setpoints of an interval starting at ``t``.

        Returns the EVs whose setpoint was ignored (not plugged in) and, for the others
        whose setpoint could not be honoured now, the power applied instead.
        """
        touched_st: set[int] = set(self.station_sp) | set(st_sp)
        touched_ev: set[int] = set(self.controlled)
        for i in self.controlled:
            self.mode[i] = FREE
        self.controlled = set()
        self.station_sp = dict(st_sp)
        ignored = []
        for i, v in ev_sp.items():
            if self.status[i] != PLUGGED:
                ignored.append(i)
                continue
            self.mode[i] = EV_SET
            self.sp[i] = v
            self.controlled.add(i)
            touched_ev.add(i)
        for s in st_sp:
            for i in self.plugged_at[s] or ():
                if self.mode[i] != EV_SET:
                    self.mode[i] = STATION_SET
                    self.controlled.add(i)
                    touched_ev.add(i)
        for i in touched_ev:
            if self.status[i] == PLUGGED:
                self.settle(i, t)
                self.eup[i] = self._eup(i)
                touched_st.add(self.st[i])
        for s in sorted(touched_st):
            if self.needs_alloc(s):
                self.realloc(s, t)
            else:
                for i in sorted(self.plugged_at[s] or ()):
                    if i in touched_ev:
                        self.set_power(i, self._own_power(i), t, force=True)
        clipped = {}
        for i, v in ev_sp.items():
            if self.status[i] == PLUGGED and abs(self.p[i] - v) > 1e-9:
                clipped[i] = self.p[i]
        # an FCS car already at its target leaves now
        for i in sorted(touched_ev):
            if self.status[i] == PLUGGED and self.kind[self.st[i]] == FCS and self.caps(i)[0] <= 0.0:
                s = self.st[i]
                self.unplug(i, t)
                self._continue_trip(i, t)
                self._serve_queue(s, t)
        return sorted(ignored), clipped

    def settle_all(self, t: float) -> None:
        """Integrate every plugged EV up to ``t`` (no change of state)."""
        for i in sorted(self.plugged_all):
            self.settle(i, t)

"""Synthetic radial feeders, fleets and charging sessions for tests and benchmarks (seeded, reproducible)."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from optev.data.battery import charge_limit_kw, floor_to_quantum, is_fast_charger
from optev.data.feeder import Feeder
from optev.data.instance import Instance, Metadata
from optev.data.timeseries import TimeSeries
from optev.errors import DataError


def synthetic_radial_feeder(n_bus: int, *, seed: int = 0, base_kv: float = 12.66, base_mva: float = 10.0,
                            max_children: int = 3, total_load_kw: float = 3700.0) -> Feeder:
    """A random radial feeder with ``n_bus`` buses rooted at bus ``"0"``.

    Each new bus attaches to a random earlier bus that has fewer than
    ``max_children`` children, preferring recent buses so the tree has long laterals
    like a real feeder. Line impedances are those of a typical 12.66 kV overhead line
    (0.2–0.5 Ω and 0.1–0.4 Ω per section, scaled down for large trees so the feeder
    stays loadable: the longest path has the impedance of about 17 sections, like the IEEE 33-bus
    feeder); loads are random, sum to ``total_load_kw`` and have power factor 0.9.

    Parameters
    ----------
    n_bus : int
        Number of buses (≥ 2).
    seed : int
        Random seed; the same seed gives the same feeder.
    """
    if n_bus < 2:
        raise ValueError("n_bus must be at least 2")
    rng = np.random.default_rng(seed)
    parent = np.empty(n_bus - 1, dtype=np.int64)
    children = np.zeros(n_bus, dtype=np.int64)
    for k in range(1, n_bus):
        while True:
            lo = max(0, k - 1 - int(rng.integers(1, 50)))
            p = int(rng.integers(lo, k))
            if children[p] < max_children:
                break
        parent[k - 1] = p
        children[p] += 1
    depth = np.zeros(n_bus, dtype=np.int64)
    for k in range(1, n_bus):
        depth[k] = depth[parent[k - 1]] + 1
    # keep the electrical length of the longest path near that of the IEEE 33-bus feeder (17 sections)
    scale = min(1.0, 17.0 / float(depth.max()))
    ids = np.arange(n_bus).astype(str)
    p_kw = rng.uniform(0.5, 1.5, n_bus)
    p_kw[0] = 0.0
    p_kw *= total_load_kw / p_kw.sum()
    buses = pd.DataFrame({"bus_id": ids, "base_kv": base_kv, "v_min_pu": 0.9, "v_max_pu": 1.1,
                          "p_load_kw": p_kw, "q_load_kvar": p_kw * np.tan(np.arccos(0.9))})
    lines = pd.DataFrame({"line_id": [f"l{k}" for k in range(1, n_bus)], "from_bus": ids[parent],
                          "to_bus": ids[1:], "r_ohm": rng.uniform(0.2, 0.5, n_bus - 1) * scale,
                          "x_ohm": rng.uniform(0.1, 0.4, n_bus - 1) * scale, "ampacity_a": 400.0})
    subs = pd.DataFrame({"substation_id": ["sub"], "bus_id": ["0"], "vm_pu": [1.0]})
    return Feeder(base_mva=base_mva, buses=buses, lines=lines, substations=subs, name=f"synthetic_{n_bus}")


TOU_PRICES = ((0, 0.35), (8 * 3600, 1.10), (11 * 3600, 0.70), (18 * 3600, 1.10), (23 * 3600, 0.70))
"""A three-level time-of-use tariff (valley / peak / flat, currency/kWh by second of day),
the shape used by Chinese provincial tariffs and V2Sim's example grid."""

SYNTHETIC_VEHICLE_TYPES = pd.DataFrame({
    "vtype_id": ["car_50kwh", "car_60kwh", "car_75kwh"], "vehicle_class": "car",
    "battery_kwh": [50.0, 60.0, 75.0], "p_ch_max_kw": [60.0, 90.0, 120.0], "p_ch_ac_max_kw": [7.0, 11.0, 11.0],
    "p_dis_max_kw": [7.0, 7.0, 11.0], "kwh_per_km": [0.14, 0.15, 0.17]})
"""The three passenger-car types of the synthetic fleets (battery, DC and AC charging,
V2G discharge limits); each synthetic EV draws one with equal probability."""

CHARGER_MODES = ("sessions", "peak", "keep")
"""How :func:`synthetic_sessions` treats the stations' charger counts."""


def synthetic_sessions(instance: Instance, n_evs: int, *, seed: int | np.random.Generator = 0,
                       fast_share: float = 0.2, v2g_share: float = 0.5, hours: float | None = None,
                       step_minutes: float | None = None, chargers: str = "peak",
                       slow_stay_h: tuple[float, float] = (2.0, 10.0),
                       fast_stay_h: tuple[float, float] = (0.25, 1.0)) -> Instance:
    """A copy of ``instance`` with a seeded synthetic fleet charging at its existing stations.

    One EV and one charging session per draw. Each session picks a station by kind
    (R5.1.4):

    - *slow* (every station whose kind is not ``fcs``): arrives around 08:00 or 18:00
      (normal, σ = 1.5 h, at the latest 3 h before the horizon ends), stays
      ``slow_stay_h`` hours (uniform, within the horizon);
    - *fast* (``fcs``; a share ``fast_share`` of the sessions when the instance has both
      kinds, all of them when it has only fast stations): arrives around 13:00 (normal,
      σ = 4 h, at the latest 1 h before the horizon ends), stays ``fast_stay_h`` hours,
      arrives with 15–40 % SOC.

    Times are rounded to whole control steps (arrival up, departure down, at least one
    step plugged), as a plant reports them. Slow sessions arrive with 20–60 % SOC. The
    target SOC is drawn in 70–100 % and capped at 95 % of what the session can reach
    charging at full power: ``floor(min(charger, vehicle limit))`` kW (the vehicle's DC
    limit at a fast charger, its AC limit at a slow one; 1 kW setpoint grid, R6.5.2) times
    the vehicle and charger efficiencies over the stay; never below the arrival SOC.
    Vehicle types are :data:`SYNTHETIC_VEHICLE_TYPES` (added if the instance lacks them);
    a share ``v2g_share`` of the EVs opt in to V2G with reservation prices of
    0.05–0.30 currency/kWh; ``soc_min`` is 0.20 (R6.1.5).

    Parameters
    ----------
    instance : Instance
        Provides the stations (with their charger models), the time zone, the start and
        the step. Its own EVs and sessions are kept; the new ones are appended with ids
        ``ev{k:06d}`` and ``s{k:06d}`` (k counting on from the existing sessions).
    n_evs : int
        Number of EVs (and sessions) drawn.
    seed : int or numpy.random.Generator
        Seed, or a generator to continue (the draws then follow the caller's).
    fast_share : float
        Share of sessions at fast stations when both kinds exist.
    v2g_share : float
        Share of EVs that opt in to V2G.
    hours : float, optional
        Horizon, h (default: the span of the instance's time series, else 24 h).
    step_minutes : float, optional
        Control step of the rounding (default: ``instance.metadata.step_minutes``).
    chargers : {"peak", "sessions", "keep"}
        ``peak``: raise each station's ``n_chargers`` to its highest number of sessions
        plugged at once (never lowered); ``sessions``: raise it to the number of sessions
        at the station (one charger each); ``keep``: keep the charger counts — a session
        that finds every charger busy is turned away at a slow station and waits (first in,
        first out, keeping its stay) at a fast station; sessions that no longer fit in the
        horizon are dropped, so fewer than ``n_evs`` EVs may remain.
    slow_stay_h, fast_stay_h : (float, float)
        Range of the stay at slow and fast stations, hours.

    Returns
    -------
    Instance
        A new instance; the input is not modified. Its feeder, road network, charger
        models, tariffs, trips and time series are the input's objects (shared, not copied).

    Raises
    ------
    DataError
        No station, an unknown ``chargers`` mode, or new ids that collide with existing ones.
    """
    if chargers not in CHARGER_MODES:
        raise DataError(f"chargers must be one of {', '.join(CHARGER_MODES)}, got {chargers!r}")
    if n_evs < 0:
        raise DataError(f"n_evs must be non-negative, got {n_evs}")
    st = instance.station_power()
    if n_evs and not len(st):
        raise DataError("synthetic_sessions needs at least one station", table="stations")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    step_s = float(step_minutes if step_minutes is not None else instance.metadata.step_minutes) * 60.0
    horizon_s = _horizon_h(instance, hours) * 3600.0
    fast_station = (st["kind"] == "fcs").to_numpy(bool)
    d = _draw_sessions(rng, n_evs, fast_station, fast_share, v2g_share, horizon_s, step_s, slow_stay_h, fast_stay_h)
    keep = np.ones(n_evs, bool)
    n_ch = st["n_chargers"].to_numpy(np.int64).copy()
    if chargers == "keep":
        d.arrival, d.departure, keep = _admit(d.station, d.arrival, d.departure, fast_station, n_ch, horizon_s,
                                              step_s)
    elif chargers == "sessions":
        n_ch = np.maximum(n_ch, np.bincount(d.station, minlength=len(st)))
    else:
        n_ch = np.maximum(n_ch, _peak_plugged(d.station, d.arrival, d.departure, len(st)))
    soc_target = _reachable_targets(d, st)
    evs, sessions = _new_rows(instance, d, soc_target, st["station_id"].to_numpy())
    known = set(instance.vehicle_types["vtype_id"])
    vtypes = SYNTHETIC_VEHICLE_TYPES[~SYNTHETIC_VEHICLE_TYPES["vtype_id"].isin(known)]
    stations = instance.stations.copy()
    stations["n_chargers"] = n_ch
    return Instance(metadata=replace(instance.metadata, extra=dict(instance.metadata.extra)), feeder=instance.feeder,
                    road=instance.road, charger_models=instance.charger_models, stations=stations,
                    station_tariffs=instance.station_tariffs,
                    vehicle_types=_concat(instance.vehicle_types, vtypes), evs=_concat(instance.evs, evs[keep]),
                    trips=instance.trips, sessions=_concat(instance.sessions, sessions[keep]),
                    timeseries=instance.timeseries)


def _horizon_h(instance: Instance, hours: float | None) -> float:
    """The given horizon, else the span of the instance's time series, else 24 h."""
    if hours is not None:
        return hours
    ts = instance.timeseries
    span = (ts.index[-1] - ts.index[0] + (ts.index[1] - ts.index[0])) if len(ts.index) > 1 else None
    return span.total_seconds() / 3600.0 if span is not None else 24.0


@dataclass
class _Draws:
    """The seeded draws of :func:`synthetic_sessions`, one entry per session (times in s)."""

    station: np.ndarray
    arrival: np.ndarray
    departure: np.ndarray
    capacity: np.ndarray
    soc_arr: np.ndarray
    target_draw: np.ndarray
    v2g_opt_in: np.ndarray
    reservation: np.ndarray


def _draw_sessions(rng: np.random.Generator, n_evs: int, fast_station: np.ndarray, fast_share: float,
                   v2g_share: float, horizon_s: float, step_s: float, slow_stay_h: tuple[float, float],
                   fast_stay_h: tuple[float, float]) -> _Draws:
    """Stations, times, batteries and SOCs (the order of the draws is part of the seeded output)."""
    slow_idx = np.flatnonzero(~fast_station)
    fast_idx = np.flatnonzero(fast_station)
    slot = rng.integers(0, max(slow_idx.size, 1), size=n_evs)
    morning = rng.random(n_evs) < 0.5
    arrival = np.where(morning, rng.normal(8.0, 1.5, n_evs), rng.normal(18.0, 1.5, n_evs)) * 3600.0
    arrival = np.clip(arrival, 0.0, horizon_s - 3 * 3600.0)
    duration = rng.uniform(*slow_stay_h, n_evs) * 3600.0
    capacity = rng.choice([50.0, 60.0, 75.0], size=n_evs)
    soc_arr = rng.uniform(0.2, 0.6, n_evs)
    target_draw = rng.uniform(0.7, 1.0, n_evs)
    v2g_opt_in = rng.random(n_evs) < v2g_share
    reservation = rng.uniform(0.05, 0.3, n_evs).round(3)
    station = slow_idx[slot] if slow_idx.size else np.zeros(n_evs, np.int64)
    if fast_idx.size:
        # fast sessions: drawn after the slow ones, so instances without fast stations keep their draws
        fast = rng.random(n_evs) < fast_share if slow_idx.size else np.ones(n_evs, bool)
        k = int(fast.sum())
        station[fast] = fast_idx[rng.integers(0, fast_idx.size, size=k)]
        arrival[fast] = np.clip(rng.normal(13.0, 4.0, k) * 3600.0, 0.0, horizon_s - 3600.0)
        duration[fast] = rng.uniform(*fast_stay_h, k) * 3600.0
        soc_arr[fast] = rng.uniform(0.15, 0.4, k)
    departure = np.minimum(arrival + duration, horizon_s)
    arrival = np.ceil(arrival / step_s) * step_s  # whole control steps, as a plant reports them
    departure = np.maximum(np.floor(departure / step_s) * step_s, arrival + step_s)
    return _Draws(station, arrival, departure, capacity, soc_arr, target_draw, v2g_opt_in, reservation)


def _reachable_targets(d: _Draws, st: pd.DataFrame) -> np.ndarray:
    """Target SOCs capped at 95 % of what full power reaches: floor(min(charger, vehicle limit)) kW
    through both efficiencies over the stay; never below the arrival SOC."""
    vt = SYNTHETIC_VEHICLE_TYPES.set_index("battery_kwh")
    ac = vt["p_ch_ac_max_kw"].reindex(d.capacity).to_numpy(float)
    dc = vt["p_ch_max_kw"].reindex(d.capacity).to_numpy(float)
    charger_kw = st["p_ch_max_kw"].to_numpy(float)[d.station]
    fast = is_fast_charger(st["kind"].to_numpy(object)[d.station], charger_kw)
    p_kw = floor_to_quantum(charge_limit_kw(fast, dc, ac, charger_kw), 1.0)
    eff = 0.95 * st["eff_ch"].to_numpy(float)[d.station]  # vehicle (0.95, the types' default) × charger
    reachable = d.soc_arr + eff * p_kw * (d.departure - d.arrival) / 3600.0 / d.capacity
    soc_target = np.minimum(d.target_draw, np.floor(reachable * 0.95 * 100) / 100)
    return np.maximum(soc_target, d.soc_arr)


def _new_rows(instance: Instance, d: _Draws, soc_target: np.ndarray,
              station_ids: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``evs`` and ``sessions`` rows of the draws, with ids counting on from the instance's."""
    first = len(instance.sessions)
    ids = np.arange(first, first + d.station.size)
    ev_ids = np.array([f"ev{k:06d}" for k in ids], dtype=object)
    session_ids = np.array([f"s{k:06d}" for k in ids], dtype=object)
    for label, new, old in (("ev_id", ev_ids, instance.evs["ev_id"]),
                            ("session_id", session_ids, instance.sessions["session_id"])):
        clash = np.intersect1d(new.astype(str), old.to_numpy(str))
        if clash.size:
            raise DataError(f"synthetic {label} {clash[0]!r} already exists in the instance", table=label[:-3] + "s")
    evs = pd.DataFrame({"ev_id": ev_ids, "vtype_id": [f"car_{int(c)}kwh" for c in d.capacity],
                        "soc_init": d.soc_arr, "soc_min": 0.2, "v2g_opt_in": d.v2g_opt_in,
                        "v2g_reservation_price_per_kwh": d.reservation})
    sessions = pd.DataFrame({"session_id": session_ids, "ev_id": ev_ids, "station_id": station_ids[d.station],
                             "arrival_s": d.arrival, "departure_s": d.departure, "soc_arrival": d.soc_arr,
                             "soc_target": soc_target})
    return evs, sessions


def _concat(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``old`` then ``new`` (``new`` alone when ``old`` is empty, keeping its dtypes)."""
    if not len(old):
        return new.reset_index(drop=True)
    return pd.concat([old, new], ignore_index=True)


def _peak_plugged(station: np.ndarray, arrival: np.ndarray, departure: np.ndarray, n_stations: int) -> np.ndarray:
    """Highest number of sessions plugged at once at each station (a departure frees its
    charger for an arrival at the same instant)."""
    n = station.size
    if not n:
        return np.zeros(n_stations, np.int64)
    st = np.r_[station, station]
    t = np.r_[arrival, departure]
    delta = np.r_[np.ones(n, np.int64), -np.ones(n, np.int64)]
    order = np.lexsort((delta, t, st))                  # by station, then time, departures first
    level = np.cumsum(delta[order])                     # each station's events sum to 0: no reset needed
    peak = np.zeros(n_stations, np.int64)
    np.maximum.at(peak, st[order], level)
    return peak


def _admit(station: np.ndarray, arrival: np.ndarray, departure: np.ndarray, fast_station: np.ndarray,
           n_chargers: np.ndarray, horizon_s: float, step_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-come first-served admission at stations with fixed charger counts (R5.1.4):
    a slow station turns a session away when all its chargers are busy, a fast station
    queues it until a charger frees (the stay keeps its length). Returns the new arrival
    and departure times and which sessions were admitted within the horizon."""
    arrival, departure = arrival.copy(), departure.copy()
    keep = np.ones(station.size, bool)
    busy: list[list[float]] = [[] for _ in range(n_chargers.size)]  # departure times of occupied chargers
    for k in np.lexsort((np.arange(station.size), arrival)):
        s = int(station[k])
        heap = busy[s]
        while heap and heap[0] <= arrival[k]:
            heapq.heappop(heap)
        if len(heap) >= n_chargers[s]:
            if not fast_station[s] or not n_chargers[s]:
                keep[k] = False
                continue
            wait = heapq.heappop(heap) - arrival[k]
            arrival[k] += wait
            departure[k] = min(departure[k] + wait, np.floor(horizon_s / step_s) * step_s)
            if departure[k] < arrival[k] + step_s:
                keep[k] = False
                continue
        heapq.heappush(heap, float(departure[k]))
    return arrival, departure, keep


def synthetic_charging_instance(n_evs: int, *, feeder: Feeder | None = None, n_stations: int = 4,
                                seed: int = 0, v2g_share: float = 0.5, hours: float = 24.0,
                                step_minutes: float = 15.0, charger_kw: float = 7.0, site_limit_kw: float | None = None,
                                timezone: str = "Asia/Shanghai") -> Instance:
    """A seeded instance of EV charging sessions at slow stations on a feeder.

    Stations (slow, ``charger_kw`` AC chargers, V2G-capable) sit on random load buses
    of ``feeder`` (a 33-bus-like synthetic feeder when None), each with one charger per
    session. The sessions are those of :func:`synthetic_sessions` at slow stations
    (arrivals around 08:00 or 18:00, stays of 2–10 h within the horizon, 20–60 % SOC at
    arrival, 70–100 % needed at departure, capped at what the charger can deliver); a
    share ``v2g_share`` of EVs opt in to V2G. Prices follow :data:`TOU_PRICES` (sell
    price = 80 % of buy price).
    """

    rng = np.random.default_rng(seed)
    fd = feeder if feeder is not None else synthetic_radial_feeder(33, seed=seed)
    load_buses = fd.buses.loc[fd.buses["p_load_kw"] > 0, "bus_id"].to_numpy()
    st_bus = rng.choice(load_buses, size=n_stations, replace=n_stations > load_buses.size)
    stations = pd.DataFrame({"station_id": [f"scs{k:03d}" for k in range(n_stations)], "kind": "scs",
                             "model_id": "ac_v2g", "n_chargers": 1, "bus_id": st_bus,
                             "p_site_max_kw": site_limit_kw if site_limit_kw is not None else np.inf})
    models = pd.DataFrame({"model_id": ["ac_v2g"], "technology": ["ac"], "p_ch_max_kw": [charger_kw],
                           "p_dis_max_kw": [charger_kw], "v2g": [True]})
    steps = int(round(horizon_s / (step_minutes * 60.0))) if (horizon_s := hours * 3600.0) else 0
    index = pd.date_range("2026-01-01T00:00", periods=steps, freq=f"{step_minutes:g}min", tz=timezone,
                          unit="ns")
    seconds = (index - index.normalize()).total_seconds().to_numpy()
    starts = np.array([s for s, _ in TOU_PRICES], float)
    prices = np.array([p for _, p in TOU_PRICES])[np.searchsorted(starts, seconds, side="right") - 1]
    ts = TimeSeries(index=index, price=pd.DataFrame({"buy_per_kwh": prices, "sell_per_kwh": 0.8 * prices},
                                                    index=index))
    meta = Metadata(name=f"synthetic_{n_evs}ev", source=f"optev.data.synthetic seed={seed}", licence="BSD-3-Clause",
                    timezone=timezone, step_minutes=step_minutes, start="2026-01-01T00:00:00")
    fleetless = Instance(metadata=meta, feeder=fd, charger_models=models, stations=stations, timeseries=ts)
    return synthetic_sessions(fleetless, n_evs, seed=rng, v2g_share=v2g_share, hours=hours,
                              step_minutes=step_minutes, chargers="sessions")

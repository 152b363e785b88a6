"""Synthetic radial feeders for tests and benchmarks (seeded, reproducible)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from optev.data.feeder import Feeder


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


def synthetic_charging_instance(n_evs: int, *, feeder: Feeder | None = None, n_stations: int = 4,
                                seed: int = 0, v2g_share: float = 0.5, hours: float = 24.0,
                                step_minutes: float = 15.0, charger_kw: float = 7.0, site_limit_kw: float | None = None,
                                timezone: str = "Asia/Shanghai") -> "Instance":
    """A seeded instance of EV charging sessions at slow stations on a feeder.

    Stations (slow, ``charger_kw`` AC chargers, V2G-capable) sit on random load buses
    of ``feeder`` (a 33-bus-like synthetic feeder when None), each with enough chargers
    for its sessions. Sessions arrive around 08:00 or 18:00 and stay 2–10 h (within the
    horizon), arrive with 20–60 % SOC and need 70–100 % at departure, capped at what the
    charger can deliver; a share ``v2g_share`` of EVs opt in to V2G. Prices follow
    :data:`TOU_PRICES` (sell price = 80 % of buy price).
    """
    from optev.data.instance import Instance, Metadata
    from optev.data.timeseries import TimeSeries

    rng = np.random.default_rng(seed)
    fd = feeder if feeder is not None else synthetic_radial_feeder(33, seed=seed)
    load_buses = fd.buses.loc[fd.buses["p_load_kw"] > 0, "bus_id"].to_numpy()
    st_bus = rng.choice(load_buses, size=n_stations, replace=n_stations > load_buses.size)
    station_of = rng.integers(0, n_stations, size=n_evs)
    horizon_s = hours * 3600.0
    morning = rng.random(n_evs) < 0.5
    arrival = np.where(morning, rng.normal(8.0, 1.5, n_evs), rng.normal(18.0, 1.5, n_evs)) * 3600.0
    arrival = np.clip(arrival, 0.0, horizon_s - 3 * 3600.0)
    duration = rng.uniform(2.0, 10.0, n_evs) * 3600.0
    departure = np.minimum(arrival + duration, horizon_s)
    step_s = step_minutes * 60.0
    arrival = np.ceil(arrival / step_s) * step_s  # whole control steps, as a plant reports them
    departure = np.maximum(np.floor(departure / step_s) * step_s, arrival + step_s)
    capacity = rng.choice([50.0, 60.0, 75.0], size=n_evs)
    eff = 0.95 * 0.95
    soc_arr = rng.uniform(0.2, 0.6, n_evs)
    reachable = soc_arr + eff * np.floor(charger_kw) * (departure - arrival) / 3600.0 / capacity
    soc_target = np.minimum(rng.uniform(0.7, 1.0, n_evs), np.floor(reachable * 0.95 * 100) / 100)
    soc_target = np.maximum(soc_target, soc_arr)
    vtypes = pd.DataFrame({"vtype_id": [f"car_{int(c)}kwh" for c in (50, 60, 75)], "vehicle_class": "car",
                           "battery_kwh": [50.0, 60.0, 75.0], "p_ch_max_kw": [60.0, 90.0, 120.0],
                           "p_ch_ac_max_kw": [7.0, 11.0, 11.0], "p_dis_max_kw": [7.0, 7.0, 11.0],
                           "kwh_per_km": [0.14, 0.15, 0.17]})
    ev_ids = np.array([f"ev{k:06d}" for k in range(n_evs)], dtype=object)
    evs = pd.DataFrame({"ev_id": ev_ids, "vtype_id": [f"car_{int(c)}kwh" for c in capacity],
                        "soc_init": soc_arr, "soc_min": 0.2, "v2g_opt_in": rng.random(n_evs) < v2g_share,
                        "v2g_reservation_price_per_kwh": rng.uniform(0.05, 0.3, n_evs).round(3)})
    counts = np.bincount(station_of, minlength=n_stations)
    stations = pd.DataFrame({"station_id": [f"scs{k:03d}" for k in range(n_stations)], "kind": "scs",
                             "model_id": "ac_v2g", "n_chargers": np.maximum(counts, 1), "bus_id": st_bus,
                             "p_site_max_kw": site_limit_kw if site_limit_kw is not None else np.inf})
    models = pd.DataFrame({"model_id": ["ac_v2g"], "technology": ["ac"], "p_ch_max_kw": [charger_kw],
                           "p_dis_max_kw": [charger_kw], "v2g": [True]})
    sessions = pd.DataFrame({"session_id": [f"s{k:06d}" for k in range(n_evs)], "ev_id": ev_ids,
                             "station_id": stations["station_id"].to_numpy()[station_of], "arrival_s": arrival,
                             "departure_s": departure, "soc_arrival": soc_arr, "soc_target": soc_target})
    steps = int(round(horizon_s / (step_minutes * 60.0)))
    index = pd.date_range("2026-01-01T00:00", periods=steps, freq=f"{step_minutes:g}min", tz=timezone)
    seconds = (index - index.normalize()).total_seconds().to_numpy()
    starts = np.array([s for s, _ in TOU_PRICES], float)
    prices = np.array([p for _, p in TOU_PRICES])[np.searchsorted(starts, seconds, side="right") - 1]
    ts = TimeSeries(index=index, price=pd.DataFrame({"buy_per_kwh": prices, "sell_per_kwh": 0.8 * prices},
                                                    index=index))
    meta = Metadata(name=f"synthetic_{n_evs}ev", source=f"optev.data.synthetic seed={seed}", licence="BSD-3-Clause",
                    timezone=timezone, step_minutes=step_minutes, start="2026-01-01T00:00:00")
    return Instance(metadata=meta, feeder=fd, charger_models=models, stations=stations, vehicle_types=vtypes,
                    evs=evs, sessions=sessions, timeseries=ts)

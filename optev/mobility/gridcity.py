"""A synthetic grid city for tests and benchmarks of the charging simulation (seeded).

:func:`grid_city` builds an :class:`~optev.data.Instance` with a square grid road network,
a public slow station at every node, fast stations at random nodes, private home chargers
for a share of the fleet and a day of routed trips per EV — the shape of the Nanjing case
(3,888 nodes, 315 FCS, an SCS at every node) without its data, so the simulation can be
measured at any fleet size on its own. Trips are routed on the grid exactly (Manhattan
distance, free-flow time at :data:`optev.mobility.travel.DEFAULT_SPEED_M_S`).

Fleet: cars (60 kWh), buses (250 kWh) and logistics vans (80 kWh) in the proportions of
``mix``. A car drives home → work in the morning, work → home in the evening and, with
probability 1/2, home → other → home at night; buses and vans make 6 or 4 trips between
random nodes from their depot and back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optev.data.instance import Instance, Metadata
from optev.data.road import RoadNetwork
from optev.mobility.travel import DEFAULT_SPEED_M_S


def grid_city(n_evs: int, *, seed: int = 0, side: int = 62, spacing_m: float = 500.0, n_fcs: int = 315,
              fcs_chargers: int = 10, scs_chargers: int = 10, private_share: float = 0.3,
              v2g_share: float = 0.2, mix: tuple[float, float, float] = (0.9, 0.03, 0.07)) -> Instance:
    """A seeded grid-city instance with ``n_evs`` EVs (see the module docstring).

    Parameters
    ----------
    n_evs : int
        Fleet size.
    seed : int
        Random seed; the same seed gives the same instance.
    side : int
        Nodes per side of the square grid (``side²`` nodes; 62² = 3,844 ≈ Nanjing's 3,888).
    spacing_m : float
        Distance between neighbouring nodes, m.
    n_fcs, fcs_chargers : int
        Fast stations (120 kW DC chargers) and chargers per fast station.
    scs_chargers : int
        Chargers (7 kW AC, V2G-capable) of the slow station at every node.
    private_share : float
        Share of cars with a private 7 kW home charger at their home node.
    v2g_share : float
        Share of EVs whose users opt in to V2G.
    mix : (car, bus, logistics)
        Fleet shares.
    """
    rng = np.random.default_rng(seed)
    n_nodes = side * side
    ix, iy = np.divmod(np.arange(n_nodes), side)
    node_ids = np.array([f"n{k}" for k in range(n_nodes)], dtype=object)
    nodes = pd.DataFrame({"node_id": node_ids, "x": ix * spacing_m, "y": iy * spacing_m})
    right = np.flatnonzero(ix < side - 1)
    up = np.flatnonzero(iy < side - 1)
    a = np.concatenate([right, up])
    b = np.concatenate([right + side, up + 1])
    frm = np.concatenate([a, b])
    to = np.concatenate([b, a])
    links = pd.DataFrame({"link_id": [f"l{k}" for k in range(frm.size)], "from_node": node_ids[frm],
                          "to_node": node_ids[to], "length_m": spacing_m, "lanes": 2,
                          "speed_limit_m_s": DEFAULT_SPEED_M_S})
    road = RoadNetwork(nodes=nodes, links=links)

    models = pd.DataFrame({"model_id": ["dc120", "ac7_v2g", "home7"], "technology": ["dc", "ac", "ac"],
                           "p_ch_max_kw": [120.0, 7.0, 7.0], "p_dis_max_kw": [0.0, 7.0, 0.0],
                           "v2g": [False, True, False]})
    fcs_nodes = rng.choice(n_nodes, size=min(n_fcs, n_nodes), replace=False)
    bus_of = lambda k: np.char.add("b", (np.asarray(k) % 33).astype(str))  # noqa: E731
    st_frames = [
        pd.DataFrame({"station_id": [f"fcs{k}" for k in range(fcs_nodes.size)], "kind": "fcs", "model_id": "dc120",
                      "n_chargers": fcs_chargers, "bus_id": bus_of(fcs_nodes), "road_node": node_ids[fcs_nodes]}),
        pd.DataFrame({"station_id": [f"scs{k}" for k in range(n_nodes)], "kind": "scs", "model_id": "ac7_v2g",
                      "n_chargers": scs_chargers, "bus_id": bus_of(np.arange(n_nodes)), "road_node": node_ids}),
    ]
    # fleet
    cls = rng.choice(3, size=n_evs, p=np.asarray(mix) / np.sum(mix))
    vtypes = pd.DataFrame({"vtype_id": ["car60", "bus250", "van80"], "vehicle_class": ["car", "bus", "logistics"],
                           "battery_kwh": [60.0, 250.0, 80.0], "p_ch_max_kw": [90.0, 150.0, 60.0],
                           "p_ch_ac_max_kw": [7.0, 22.0, 11.0], "p_dis_max_kw": [7.0, 0.0, 7.0],
                           "kwh_per_km": [0.16, 1.2, 0.25], "length_m": [4.7, 12.0, 6.0]})
    ev_ids = np.array([f"ev{k:07d}" for k in range(n_evs)], dtype=object)
    home = rng.integers(0, n_nodes, n_evs)
    private = (cls == 0) & (rng.random(n_evs) < private_share)
    priv_idx = np.flatnonzero(private)
    st_frames.append(pd.DataFrame({"station_id": np.char.add("home_", ev_ids[priv_idx].astype(str)), "kind": "home",
                                   "model_id": "home7", "n_chargers": 1, "bus_id": bus_of(home[priv_idx]),
                                   "road_node": node_ids[home[priv_idx]]}))
    stations = pd.concat(st_frames, ignore_index=True)
    home_station = np.full(n_evs, None, dtype=object)
    home_station[priv_idx] = np.char.add("home_", ev_ids[priv_idx].astype(str))
    evs = pd.DataFrame({"ev_id": ev_ids, "vtype_id": np.array(["car60", "bus250", "van80"])[cls],
                        "soc_init": rng.uniform(0.25, 0.9, n_evs), "soc_min": 0.2,
                        "v2g_opt_in": (rng.random(n_evs) < v2g_share) & (cls != 1),
                        "soc_charge_threshold": rng.uniform(0.15, 0.3, n_evs),
                        "price_weight": rng.uniform(0.0, 1.0, n_evs),
                        "home_node": node_ids[home], "home_station": home_station})
    # trips: node sequences and departure times per EV
    rows_ev, rows_o, rows_d, rows_t = [], [], [], []
    cars = np.flatnonzero(cls == 0)
    work = rng.integers(0, n_nodes, cars.size)
    other = rng.integers(0, n_nodes, cars.size)
    t_work = np.clip(rng.normal(8.0, 1.0, cars.size), 5.0, 11.0) * 3600
    t_home = np.clip(rng.normal(17.5, 1.0, cars.size), 14.0, 20.0) * 3600
    t_other = np.clip(rng.normal(20.0, 0.7, cars.size), t_home / 3600 + 1.5, 22.5) * 3600
    t_back = t_other + rng.uniform(0.75, 2.0, cars.size) * 3600
    night = rng.random(cars.size) < 0.5
    for ev, o, d, t, keep in ((cars, home[cars], work, t_work, True), (cars, work, home[cars], t_home, True),
                              (cars, home[cars], other, t_other, night), (cars, other, home[cars], t_back, night)):
        sel = np.ones(cars.size, bool) & keep
        rows_ev.append(ev[sel]); rows_o.append(np.asarray(o)[sel]); rows_d.append(np.asarray(d)[sel])
        rows_t.append(np.asarray(t)[sel])
    for c, n_trips in ((1, 6), (2, 4)):
        fleet = np.flatnonzero(cls == c)
        if fleet.size == 0:
            continue
        seq = np.column_stack([home[fleet], rng.integers(0, n_nodes, (fleet.size, n_trips - 1)), home[fleet]])
        start = rng.uniform(6.0, 8.0, fleet.size) * 3600
        gap = (14.0 * 3600) / n_trips
        for k in range(n_trips):
            rows_ev.append(fleet); rows_o.append(seq[:, k]); rows_d.append(seq[:, k + 1])
            rows_t.append(start + k * gap)
    ev = np.concatenate(rows_ev)
    o = np.concatenate(rows_o)
    d = np.concatenate(rows_d)
    t = np.concatenate(rows_t)
    order = np.lexsort((t, ev))
    ev, o, d, t = ev[order], o[order], d[order], t[order]
    first = np.concatenate([[True], ev[1:] != ev[:-1]])
    trip_index = np.arange(ev.size) - np.maximum.accumulate(np.where(first, np.arange(ev.size), 0))
    dist = (np.abs(ix[o] - ix[d]) + np.abs(iy[o] - iy[d])) * spacing_m
    trips = pd.DataFrame({"ev_id": ev_ids[ev], "trip_index": trip_index, "depart_s": np.round(t, 1),
                          "origin_node": node_ids[o], "destination_node": node_ids[d], "distance_m": dist,
                          "travel_time_s": dist / DEFAULT_SPEED_M_S})
    tariffs = pd.DataFrame({"station_id": np.repeat(stations.loc[stations["kind"] == "fcs", "station_id"], 3),
                            "direction": "buy", "start_s": np.tile([0.0, 8 * 3600.0, 22 * 3600.0], fcs_nodes.size),
                            "price_per_kwh": np.tile([0.8, 1.6, 0.8], fcs_nodes.size)
                            + np.repeat(rng.uniform(-0.2, 0.2, fcs_nodes.size).round(2), 3)})
    meta = Metadata(name=f"grid_city_{n_evs}", source=f"optev.mobility.gridcity seed={seed}", licence="CC0-1.0",
                    timezone="Asia/Shanghai", step_minutes=15.0)
    return Instance(metadata=meta, road=road, charger_models=models, stations=stations, station_tariffs=tariffs,
                    vehicle_types=vtypes, evs=evs, trips=trips)

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

from dataclasses import dataclass

import numpy as np
import pandas as pd

from optev.data.instance import Instance, Metadata
from optev.data.road import RoadNetwork
from optev.mobility.travel import DEFAULT_SPEED_M_S

_VTYPE_IDS = np.array(["car60", "bus250", "van80"])
"""Vehicle type of each fleet class (0 car, 1 bus, 2 logistics van)."""


@dataclass(frozen=True)
class _Grid:
    """The square grid: node k at column ``ix[k]``, row ``iy[k]`` (``divmod(k, side)``), with its id."""

    side: int
    spacing_m: float
    ix: np.ndarray
    iy: np.ndarray
    node_ids: np.ndarray

    @property
    def n_nodes(self) -> int:
        """Number of nodes, ``side²``."""
        return self.side * self.side


@dataclass
class _Legs:
    """Trips as parallel lists of arrays: EV position, origin and destination node, departure (s)."""

    ev: list[np.ndarray]
    origin: list[np.ndarray]
    destination: list[np.ndarray]
    depart_s: list[np.ndarray]

    def add(self, ev: np.ndarray, origin: np.ndarray, destination: np.ndarray, depart_s: np.ndarray) -> None:
        """Append one leg for each EV of ``ev``."""
        self.ev.append(ev)
        self.origin.append(origin)
        self.destination.append(destination)
        self.depart_s.append(depart_s)


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
    # the steps draw from one generator: their order is part of what a seed reproduces
    rng = np.random.default_rng(seed)
    ix, iy = np.divmod(np.arange(side * side), side)
    grid = _Grid(side, spacing_m, ix, iy, np.array([f"n{k}" for k in range(side * side)], dtype=object))
    fcs_nodes = rng.choice(grid.n_nodes, size=min(n_fcs, grid.n_nodes), replace=False)
    cls = rng.choice(3, size=n_evs, p=np.asarray(mix) / np.sum(mix))
    ev_ids = np.array([f"ev{k:07d}" for k in range(n_evs)], dtype=object)
    home = rng.integers(0, grid.n_nodes, n_evs)
    private = (cls == 0) & (rng.random(n_evs) < private_share)
    priv_idx = np.flatnonzero(private)
    home_ids = np.char.add("home_", ev_ids[priv_idx].astype(str))
    stations = _stations(grid, fcs_nodes, fcs_chargers, scs_chargers, home_ids, home[priv_idx])
    evs = _evs(rng, grid, ev_ids, cls, home, priv_idx, home_ids, v2g_share)
    legs = _Legs([], [], [], [])
    _car_legs(rng, grid.n_nodes, np.flatnonzero(cls == 0), home, legs)
    _depot_legs(rng, grid.n_nodes, cls, home, legs)
    trips = _trip_table(legs, grid, ev_ids)
    tariffs = _fcs_tariffs(rng, stations, fcs_nodes.size)
    meta = Metadata(name=f"grid_city_{n_evs}", source=f"optev.mobility.gridcity seed={seed}", licence="CC0-1.0",
                    timezone="Asia/Shanghai", step_minutes=15.0)
    return Instance(metadata=meta, road=_road(grid), charger_models=_charger_models(), stations=stations,
                    station_tariffs=tariffs, vehicle_types=_vehicle_types(), evs=evs, trips=trips)


def _road(grid: _Grid) -> RoadNetwork:
    """Road network of the grid: a two-lane link each way between neighbouring nodes."""
    nodes = pd.DataFrame({"node_id": grid.node_ids, "x": grid.ix * grid.spacing_m, "y": grid.iy * grid.spacing_m})
    right = np.flatnonzero(grid.ix < grid.side - 1)
    up = np.flatnonzero(grid.iy < grid.side - 1)
    a = np.concatenate([right, up])
    b = np.concatenate([right + grid.side, up + 1])
    frm = np.concatenate([a, b])
    to = np.concatenate([b, a])
    links = pd.DataFrame({"link_id": [f"l{k}" for k in range(frm.size)], "from_node": grid.node_ids[frm],
                          "to_node": grid.node_ids[to], "length_m": grid.spacing_m, "lanes": 2,
                          "speed_limit_m_s": DEFAULT_SPEED_M_S})
    return RoadNetwork(nodes=nodes, links=links)


def _charger_models() -> pd.DataFrame:
    """The three charger models: fast DC, public slow AC with V2G, private home AC."""
    return pd.DataFrame({"model_id": ["dc120", "ac7_v2g", "home7"], "technology": ["dc", "ac", "ac"],
                         "p_ch_max_kw": [120.0, 7.0, 7.0], "p_dis_max_kw": [0.0, 7.0, 0.0],
                         "v2g": [False, True, False]})


def _vehicle_types() -> pd.DataFrame:
    """The three vehicle types, in the order of :data:`_VTYPE_IDS`."""
    return pd.DataFrame({"vtype_id": _VTYPE_IDS.tolist(), "vehicle_class": ["car", "bus", "logistics"],
                         "battery_kwh": [60.0, 250.0, 80.0], "p_ch_max_kw": [90.0, 150.0, 60.0],
                         "p_ch_ac_max_kw": [7.0, 22.0, 11.0], "p_dis_max_kw": [7.0, 0.0, 7.0],
                         "kwh_per_km": [0.16, 1.2, 0.25], "length_m": [4.7, 12.0, 6.0]})


def _bus_of(nodes: np.ndarray) -> np.ndarray:
    """Feeder bus id of road nodes (33 buses, ``"b0"``..``"b32"``, assigned round robin)."""
    return np.char.add("b", (np.asarray(nodes) % 33).astype(str))


def _stations(grid: _Grid, fcs_nodes: np.ndarray, fcs_chargers: int, scs_chargers: int, home_ids: np.ndarray,
              home_nodes: np.ndarray) -> pd.DataFrame:
    """Stations: the fast ones at ``fcs_nodes``, a slow one at every node, the private home chargers."""
    node_ids = grid.node_ids
    return pd.concat([
        pd.DataFrame({"station_id": [f"fcs{k}" for k in range(fcs_nodes.size)], "kind": "fcs", "model_id": "dc120",
                      "n_chargers": fcs_chargers, "bus_id": _bus_of(fcs_nodes), "road_node": node_ids[fcs_nodes]}),
        pd.DataFrame({"station_id": [f"scs{k}" for k in range(grid.n_nodes)], "kind": "scs", "model_id": "ac7_v2g",
                      "n_chargers": scs_chargers, "bus_id": _bus_of(np.arange(grid.n_nodes)), "road_node": node_ids}),
        pd.DataFrame({"station_id": home_ids, "kind": "home", "model_id": "home7", "n_chargers": 1,
                      "bus_id": _bus_of(home_nodes), "road_node": node_ids[home_nodes]}),
    ], ignore_index=True)


def _evs(rng: np.random.Generator, grid: _Grid, ev_ids: np.ndarray, cls: np.ndarray, home: np.ndarray,
         priv_idx: np.ndarray, home_ids: np.ndarray, v2g_share: float) -> pd.DataFrame:
    """The EV table: type by class, random initial SOC and preferences, home node and charger."""
    n_evs = ev_ids.size
    home_station = np.full(n_evs, None, dtype=object)
    home_station[priv_idx] = home_ids
    return pd.DataFrame({"ev_id": ev_ids, "vtype_id": _VTYPE_IDS[cls],
                         "soc_init": rng.uniform(0.25, 0.9, n_evs), "soc_min": 0.2,
                         "v2g_opt_in": (rng.random(n_evs) < v2g_share) & (cls != 1),
                         "soc_charge_threshold": rng.uniform(0.15, 0.3, n_evs),
                         "price_weight": rng.uniform(0.0, 1.0, n_evs),
                         "home_node": grid.node_ids[home], "home_station": home_station})


def _car_legs(rng: np.random.Generator, n_nodes: int, cars: np.ndarray, home: np.ndarray, legs: _Legs) -> None:
    """Add the cars' legs: home → work → home and, for half of them, home → other → home at night."""
    work = rng.integers(0, n_nodes, cars.size)
    other = rng.integers(0, n_nodes, cars.size)
    t_work = np.clip(rng.normal(8.0, 1.0, cars.size), 5.0, 11.0) * 3600
    t_home = np.clip(rng.normal(17.5, 1.0, cars.size), 14.0, 20.0) * 3600
    t_other = np.clip(rng.normal(20.0, 0.7, cars.size), t_home / 3600 + 1.5, 22.5) * 3600
    t_back = t_other + rng.uniform(0.75, 2.0, cars.size) * 3600
    night = rng.random(cars.size) < 0.5
    for o, d, t, keep in ((home[cars], work, t_work, True), (work, home[cars], t_home, True),
                          (home[cars], other, t_other, night), (other, home[cars], t_back, night)):
        sel = np.ones(cars.size, bool) & keep
        legs.add(cars[sel], np.asarray(o)[sel], np.asarray(d)[sel], np.asarray(t)[sel])


def _depot_legs(rng: np.random.Generator, n_nodes: int, cls: np.ndarray, home: np.ndarray, legs: _Legs) -> None:
    """Add the legs of buses (6) and vans (4): from the depot through random nodes back, evenly spaced."""
    for c, n_trips in ((1, 6), (2, 4)):
        fleet = np.flatnonzero(cls == c)
        if fleet.size == 0:
            continue
        seq = np.column_stack([home[fleet], rng.integers(0, n_nodes, (fleet.size, n_trips - 1)), home[fleet]])
        start = rng.uniform(6.0, 8.0, fleet.size) * 3600
        gap = (14.0 * 3600) / n_trips
        for k in range(n_trips):
            legs.add(fleet, seq[:, k], seq[:, k + 1], start + k * gap)


def _trip_table(legs: _Legs, grid: _Grid, ev_ids: np.ndarray) -> pd.DataFrame:
    """The trips table: legs sorted by EV and departure, numbered per EV, routed on the grid."""
    ev = np.concatenate(legs.ev)
    o = np.concatenate(legs.origin)
    d = np.concatenate(legs.destination)
    t = np.concatenate(legs.depart_s)
    order = np.lexsort((t, ev))
    ev, o, d, t = ev[order], o[order], d[order], t[order]
    first = np.concatenate([[True], ev[1:] != ev[:-1]])
    trip_index = np.arange(ev.size) - np.maximum.accumulate(np.where(first, np.arange(ev.size), 0))
    dist = (np.abs(grid.ix[o] - grid.ix[d]) + np.abs(grid.iy[o] - grid.iy[d])) * grid.spacing_m
    return pd.DataFrame({"ev_id": ev_ids[ev], "trip_index": trip_index, "depart_s": np.round(t, 1),
                         "origin_node": grid.node_ids[o], "destination_node": grid.node_ids[d], "distance_m": dist,
                         "travel_time_s": dist / DEFAULT_SPEED_M_S})


def _fcs_tariffs(rng: np.random.Generator, stations: pd.DataFrame, n_fcs: int) -> pd.DataFrame:
    """Time-of-use buy tariffs of the fast stations (off-peak, peak 08–22 h, off-peak), each shifted at random."""
    return pd.DataFrame({"station_id": np.repeat(stations.loc[stations["kind"] == "fcs", "station_id"], 3),
                         "direction": "buy", "start_s": np.tile([0.0, 8 * 3600.0, 22 * 3600.0], n_fcs),
                         "price_per_kwh": np.tile([0.8, 1.6, 0.8], n_fcs)
                         + np.repeat(rng.uniform(-0.2, 0.2, n_fcs).round(2), 3)})

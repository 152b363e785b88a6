"""Private chargers of a generated fleet: home, workplace and depot stations (R6.1.3).

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
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.data.stations import CHARGER_MODELS, STATIONS
from optev.errors import DataError
from optev.mobility.routing import Router


class PrivateChargers(NamedTuple):
    """The private stations of a fleet and the stations its vehicles use."""

    stations: pd.DataFrame
    """Private stations (home, workplace, depot)."""
    charger_models: pd.DataFrame
    """Models of the private stations."""
    home_station: np.ndarray
    """Home (or depot) station of each vehicle, None if it has none."""
    work_station: np.ndarray
    """Workplace station of each vehicle, None if it has none."""


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


def place_private_chargers(instance: Instance, router: Router, rng: np.random.Generator, *,
                           car_home: np.ndarray, car_work: np.ndarray, bus_depot: np.ndarray,
                           log_depot: np.ndarray, private_share: float, workplace_share: float,
                           depot_chargers: bool, v2g: bool) -> PrivateChargers:
    """Draw which cars have home and workplace chargers and build the private stations.

    Vehicles are indexed cars first, then buses, then logistics vehicles.

    Parameters
    ----------
    instance : Instance
        Its public stations and feeder connect the private stations.
    router : Router
        Router of ``instance.road``.
    rng : Generator
        The private chargers' random stream.
    car_home, car_work : ndarray
        Each car's home and work node position.
    bus_depot, log_depot : ndarray
        Each bus's and logistics vehicle's depot node position.
    private_share, workplace_share : float
        Share of cars with a home charger, and with a workplace charger.
    depot_chargers : bool
        Give every bus and logistics vehicle a charger at its depot.
    v2g : bool
        Make the private chargers bidirectional.

    Raises
    ------
    DataError
        A station cannot be connected to the feeder, or its id is already used.
    """
    n_car, n_bus = len(car_home), len(bus_depot)
    n = n_car + n_bus + len(log_depot)
    has_home = np.zeros(n, dtype=bool)
    has_work = np.zeros(n, dtype=bool)
    if n_car:
        has_home[rng.choice(n_car, size=int(round(private_share * n_car)), replace=False)] = True
        has_work[rng.choice(n_car, size=int(round(workplace_share * n_car)), replace=False)] = True
    groups = [("home", "home", "home_ac_7kw", car_home[has_home[:n_car]]),
              ("work", "workplace", "workplace_ac_7kw", car_work[has_work[:n_car]])]
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
    models = private_charger_models(v2g=v2g)
    models = models[models["model_id"].isin(stations["model_id"])].reset_index(drop=True)
    return PrivateChargers(stations, models, home_station, work_station)


__all__ = ["PrivateChargers", "place_private_chargers", "private_charger_models"]

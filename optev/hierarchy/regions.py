r"""Regions of a city: the middle level of the city → region → station → EV hierarchy (R6.2.3.2).

A *region* is a part of the city that the network-level optimisation can solve on its own:

``by="feeder"`` (default)
    one radial feeder — a connected component of the in-service lines and transformers
    with its substation (every component has exactly one, :func:`optev.data.validate.check_radial`).
    Two feeders share nothing but the upstream grid, so their LinDistFlow OPFs are
    independent; only a city target (:mod:`optev.hierarchy.city`) couples them.
``by="subtree"``
    one subtree hanging off a substation: each branch leaving a substation bus starts a
    region made of the buses behind it plus the substation bus itself. The substation
    voltage is a fixed set point in LinDistFlow and in the AC power flow, so the subtrees
    of one substation are electrically independent as well; what they share is the
    substation's import and export limits, which are split among them in proportion to
    each subtree's *weight* — its nominal conventional load plus its installed charger
    power, kW — a static, documented share (their sum never exceeds the limit). Load,
    shunts, stations and DER at the substation bus itself go to the substation's first
    subtree (lowest bus position), so nothing is counted twice.
``"copperplate"`` region
    stations whose ``bus_id`` is empty or not a bus of the feeder (for example an instance
    without a feeder) form one region without a network: a copper plate with an
    unlimited grid connection at the instance's prices.

Every station belongs to the region of its bus; every session to the region of its
station. :func:`region_instance` cuts an :class:`~optev.data.Instance` down to one region —
its buses, branches, substation, generators, PV, wind, storage, stations, charger
models, tariffs, EVs, sessions and the time-series columns of its buses — so that a
region can be shipped to a worker process (an Instance pickles; a compiled
:class:`~optev.blocks.window.Window` does not, it holds a SuperLU factor) and solved
there with the ordinary one-window pipeline (:func:`optev.compose.solve.solve_window`).
The road network is not needed by the optimisation and is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from optev.blocks.window import take_rows
from optev.data.feeder import Feeder
from optev.data.instance import Instance
from optev.data.road import RoadNetwork
from optev.data.timeseries import TimeSeries
from optev.errors import DataError

SPLITS = ("feeder", "subtree")
"""Ways of splitting a feeder into regions (see module docstring)."""

COPPERPLATE_ID = "copperplate"
"""Region id of the stations without a feeder bus."""


@dataclass(frozen=True)
class Region:
    """One region of a city (see module docstring).

    Attributes
    ----------
    region_id : str
        ``<substation_id>`` (feeder), ``<substation_id>/<first bus>`` (subtree) or
        ``"copperplate"``.
    kind : str
        ``"feeder"``, ``"subtree"`` or ``"copperplate"``.
    bus_ids : tuple of str
        Buses of the region in feeder order (the substation bus first is not required).
    substation_ids : tuple of str
        Its substation (empty for the copper-plate region).
    station_ids : tuple of str
        Stations connected to its buses (or without a bus, copper plate).
    owns_root : bool
        Whether the load, shunts and units at the substation bus belong to this region
        (always True except for the second and later subtrees of a substation).
    limit_share : float
        Share of the substation's import/export limits given to the region (1 except for
        subtrees).
    """

    region_id: str
    kind: str
    bus_ids: tuple[str, ...]
    substation_ids: tuple[str, ...]
    station_ids: tuple[str, ...]
    owns_root: bool = True
    limit_share: float = 1.0

    @property
    def n_stations(self) -> int:
        return len(self.station_ids)


def _adjacency(feeder: Feeder) -> tuple[sp.csr_matrix, dict[str, int]]:
    """Undirected bus adjacency of the in-service lines and transformers."""
    index = feeder.bus_index()
    n = len(index)
    lines = feeder.lines[feeder.lines["in_service"].to_numpy(bool)]
    tr = feeder.transformers[feeder.transformers["in_service"].to_numpy(bool)]
    a = np.array([index[b] for b in np.r_[lines["from_bus"].to_numpy(object), tr["hv_bus"].to_numpy(object)]],
                 dtype=np.int64)
    b = np.array([index[x] for x in np.r_[lines["to_bus"].to_numpy(object), tr["lv_bus"].to_numpy(object)]],
                 dtype=np.int64)
    adj = sp.coo_matrix((np.ones(a.size), (a, b)), shape=(n, n)).tocsr()
    return (adj + adj.T).tocsr(), index


def split_regions(instance: Instance, *, by: str = "feeder") -> list[Region]:
    """Split an instance into regions (see module docstring).

    Parameters
    ----------
    instance : Instance
    by : {"feeder", "subtree"}
        One region per radial feeder, or one per subtree leaving a substation.

    Returns
    -------
    list of Region
        Feeder or subtree regions in the order of their substations (then of their first
        bus), then the copper-plate region if some stations have no feeder bus. Regions
        without a station are kept (their load still counts towards a city target).

    Raises
    ------
    DataError
        Unknown ``by``; a connected part of the feeder without a substation or with more
        than one.
    """
    if by not in SPLITS:
        raise DataError(f"regions: by must be one of {', '.join(SPLITS)}, got {by!r}")
    feeder = instance.feeder
    st = instance.stations
    bus_ids = np.asarray(feeder.bus_ids, dtype=object)
    regions: list[Region] = []
    station_bus = st["bus_id"].to_numpy(object)
    on_feeder = np.isin(station_bus.astype(str), bus_ids.astype(str)) & pd.notna(station_bus)
    if bus_ids.size:
        adj, index = _adjacency(feeder)
        subs = feeder.substations
        roots = np.array([index.get(b, -1) for b in subs["bus_id"]], dtype=np.int64)
        if (roots < 0).any():
            k = int(np.flatnonzero(roots < 0)[0])
            raise DataError(f"substation {subs['substation_id'].iloc[k]!r} sits at unknown bus "
                            f"{subs['bus_id'].iloc[k]!r}", table="substations")
        n_comp, comp = connected_components(adj, directed=False)
        count = np.bincount(comp[roots], minlength=n_comp)
        if (count == 0).any():
            c = int(np.flatnonzero(count == 0)[0])
            bus = bus_ids[np.flatnonzero(comp == c)[0]]
            raise DataError(f"regions: bus {bus!r} is in a part of the feeder without a substation", table="buses")
        if (count > 1).any():
            c = int(np.flatnonzero(count > 1)[0])
            names = subs["substation_id"].to_numpy(object)[comp[roots] == c]
            raise DataError(f"regions: substations {', '.join(map(str, names))} feed one connected network; a "
                            "radial feeder has one substation", table="substations")
        st_pos = np.array([index.get(b, -1) if ok else -1 for b, ok in zip(station_bus, on_feeder)], dtype=np.int64)
        weight = _weights(instance, index, st_pos)
        for k, root in enumerate(roots):
            sub_id = str(subs["substation_id"].iloc[k])
            members = np.flatnonzero(comp == comp[root])
            if by == "feeder":
                regions.append(_region(sub_id, "feeder", members, (sub_id,), st_pos, st, bus_ids))
                continue
            # subtrees: components of the feeder without its root bus
            keep = np.setdiff1d(members, [root])
            if not keep.size:
                regions.append(_region(sub_id, "subtree", members, (sub_id,), st_pos, st, bus_ids))
                continue
            sub_adj = adj[keep][:, keep]
            n_sub, label = connected_components(sub_adj, directed=False)
            first = np.array([keep[label == j].min() for j in range(n_sub)])
            order = np.argsort(first, kind="stable")
            w = np.array([weight[keep[label == j]].sum() for j in range(n_sub)], float)
            share = w / w.sum() if w.sum() > 0 else np.full(n_sub, 1.0 / n_sub)
            for rank, j in enumerate(order):
                buses = np.r_[root, keep[label == j]]
                owns = rank == 0
                stations_here = st_pos.copy()
                if not owns:
                    stations_here[stations_here == root] = -2  # root stations go to the first subtree only
                regions.append(_region(f"{sub_id}/{bus_ids[first[j]]}", "subtree", np.sort(buses), (sub_id,),
                                       stations_here, st, bus_ids, owns_root=owns, limit_share=float(share[j])))
    loose = st["station_id"].to_numpy(object)[~on_feeder]
    if loose.size:
        regions.append(Region(COPPERPLATE_ID, "copperplate", (), (), tuple(str(s) for s in loose)))
    return regions


def _weights(instance: Instance, index: dict[str, int], st_pos: np.ndarray) -> np.ndarray:
    """Nominal conventional load plus installed charger power at each bus, kW (subtree shares)."""
    w = instance.feeder.buses["p_load_kw"].to_numpy(float).clip(min=0.0).copy()
    power = instance.station_power()
    kw = (power["n_chargers"].to_numpy(float) * power["p_ch_max_kw"].to_numpy(float))
    ok = st_pos >= 0
    np.add.at(w, st_pos[ok], np.nan_to_num(kw[ok]))
    return w


def _region(region_id: str, kind: str, members: np.ndarray, subs: tuple[str, ...], st_pos: np.ndarray,
            stations: pd.DataFrame, bus_ids: np.ndarray, *, owns_root: bool = True,
            limit_share: float = 1.0) -> Region:
    members = np.sort(members)
    in_region = np.isin(st_pos, members)
    return Region(region_id, kind, tuple(str(b) for b in bus_ids[members]), subs,
                  tuple(str(s) for s in stations["station_id"].to_numpy(object)[in_region]), owns_root, limit_share)


def station_regions(instance: Instance, regions: list[Region]) -> np.ndarray:
    """Region index of every station of ``instance`` (−1 when in none), shape (n_stations,)."""
    pos = {s: k for k, r in enumerate(regions) for s in r.station_ids}
    return np.array([pos.get(s, -1) for s in instance.stations["station_id"]], dtype=np.int64)


def region_instance(instance: Instance, region: Region, *, fleet: bool = True) -> Instance:
    """The part of ``instance`` that belongs to ``region`` (see module docstring).

    The result is a plain :class:`~optev.data.Instance` (picklable): a worker process
    builds the region's window from it. Subtree regions that do not own their substation
    bus get that bus with zero load and shunts, and every subtree gets its share of the
    substation's import and export limits.

    With ``fleet=False`` the EVs, trips and sessions are left out (empty tables): enough
    for a region whose window is already built (:func:`region_window`), which reads only
    the feeder, stations and metadata, and independent of the sessions, so it can be
    reused while only the sessions change (an MPC controller's windows).
    """
    feeder = instance.feeder
    buses = set(region.bus_ids)
    stations = instance.stations[instance.stations["station_id"].isin(region.station_ids)].reset_index(drop=True)
    if region.kind == "copperplate":
        fd = Feeder(base_mva=feeder.base_mva, name=f"{feeder.name}/{region.region_id}")
    else:
        b = feeder.buses[feeder.buses["bus_id"].isin(buses)].reset_index(drop=True)
        subs = feeder.substations[feeder.substations["substation_id"].isin(region.substation_ids)].copy()
        roots = set(subs["bus_id"])
        if not region.owns_root:
            at_root = b["bus_id"].isin(roots)
            for col in ("p_load_kw", "q_load_kvar", "g_shunt_kw", "b_shunt_kvar"):
                b.loc[at_root, col] = 0.0
        if region.limit_share != 1.0:
            for col in ("p_import_max_kw", "p_export_max_kw"):
                subs[col] = subs[col].to_numpy(float) * region.limit_share
        lines = feeder.lines[feeder.lines["from_bus"].isin(buses) & feeder.lines["to_bus"].isin(buses)]
        tr = feeder.transformers[feeder.transformers["hv_bus"].isin(buses) & feeder.transformers["lv_bus"].isin(buses)]

        def units(table: pd.DataFrame) -> pd.DataFrame:
            here = table["bus_id"].isin(buses)
            if not region.owns_root:
                here &= ~table["bus_id"].isin(roots)
            return table[here].reset_index(drop=True)

        fd = Feeder(base_mva=feeder.base_mva, buses=b, lines=lines.reset_index(drop=True),
                    transformers=tr.reset_index(drop=True), substations=subs.reset_index(drop=True),
                    generators=units(feeder.generators), pv=units(feeder.pv), wind=units(feeder.wind),
                    storage=units(feeder.storage), name=f"{feeder.name}/{region.region_id}")
    if fleet:
        sessions = instance.sessions[instance.sessions["station_id"].isin(region.station_ids)].reset_index(drop=True)
        ev_ids = set(sessions["ev_id"])
        evs = instance.evs[instance.evs["ev_id"].isin(ev_ids)].reset_index(drop=True)
        trips = instance.trips[instance.trips["ev_id"].isin(ev_ids)].reset_index(drop=True) \
            if "ev_id" in instance.trips.columns else instance.trips
    else:
        sessions, evs, trips = instance.sessions.iloc[0:0], instance.evs.iloc[0:0], instance.trips.iloc[0:0]
    tariffs = instance.station_tariffs[instance.station_tariffs["station_id"].isin(region.station_ids)]
    ts = instance.timeseries

    def columns(frame: pd.DataFrame) -> pd.DataFrame:
        keep = [c for c in frame.columns if c in buses]
        out = frame[keep].copy()
        if not region.owns_root:
            root_cols = [c for c in keep if c in set(fd.substations["bus_id"])]
            out[root_cols] = 0.0
        return out

    series = TimeSeries(index=ts.index, price=ts.price, load_p_kw=columns(ts.load_p_kw),
                        load_q_kvar=columns(ts.load_q_kvar), availability=ts.availability)
    meta = replace(instance.metadata, name=f"{instance.metadata.name}/{region.region_id}",
                   extra={**instance.metadata.extra, "region": region.region_id})
    return Instance(metadata=meta, feeder=fd, road=RoadNetwork(), charger_models=instance.charger_models,
                    stations=stations, station_tariffs=tariffs.reset_index(drop=True),
                    vehicle_types=instance.vehicle_types, evs=evs, trips=trips, sessions=sessions, timeseries=series)


def region_window(window: Any, region: Region, instance: Instance | None = None) -> tuple[Any, np.ndarray, np.ndarray]:
    """Cut a city :class:`~optev.blocks.window.Window` down to one region.

    For callers that build (and adjust) the city's window themselves — an MPC controller
    applies forecasts, measured energies and storage states to it — this gives each
    region's window without rebuilding it from the instance: the region's sessions and
    stations (re-indexed, station buses mapped to the region's buses), the load columns
    of its buses (zero at a subtree's substation bus it does not own), its PV and wind
    rows, and ``network=None`` (the compiled network holds a SuperLU factor, which does
    not pickle; the worker compiles the region's own).

    Parameters
    ----------
    window : Window
        The city's window.
    region : Region
    instance : Instance, optional
        The region's part of ``window.instance`` (default: :func:`region_instance`).

    Returns
    -------
    (Window, ndarray, ndarray)
        The region's window and the positions of its sessions and stations in the city
        window (to put its plan back in the city's order).
    """
    inst = instance if instance is not None else region_instance(window.instance, region)
    feeder = window.instance.feeder
    station_pos = np.flatnonzero(np.isin(window.stations.station_id.astype(str), np.array(region.station_ids, str)))
    session_pos = np.flatnonzero(np.isin(window.evs.station, station_pos))
    bus_index = feeder.bus_index()
    bus_pos = np.array(sorted(bus_index[b] for b in region.bus_ids), dtype=np.int64) if region.bus_ids else \
        np.zeros(0, dtype=np.int64)
    new_bus = np.full(max(window.n_bus, 1), -1, dtype=np.int64)
    new_bus[bus_pos] = np.arange(bus_pos.size)

    stations = take_rows(window.stations, station_pos)
    on_bus = stations.bus >= 0
    stations = replace(stations, bus=np.where(on_bus, new_bus[np.maximum(stations.bus, 0)], -1))
    remap = np.full(window.stations.n, -1, dtype=np.int64)
    remap[station_pos] = np.arange(station_pos.size)
    evs = take_rows(window.evs, session_pos)
    evs = replace(evs, station=remap[evs.station])
    load_p = window.load_p_kw[:, bus_pos].copy()
    load_q = window.load_q_kvar[:, bus_pos].copy()
    roots = set(feeder.substations["bus_id"])
    if not region.owns_root:
        at_root = np.array([b in roots for b in np.asarray(feeder.bus_ids, object)[bus_pos]], bool)
        load_p[:, at_root] = 0.0
        load_q[:, at_root] = 0.0

    def unit_rows(table: pd.DataFrame) -> np.ndarray:
        here = table["bus_id"].isin(set(region.bus_ids)).to_numpy(bool, copy=True)  # written below
        if not region.owns_root:
            here &= ~table["bus_id"].isin(roots).to_numpy(bool)
        return np.flatnonzero(here)

    T = window.steps
    pv = window.pv_avail_kw[unit_rows(feeder.pv)] if len(feeder.pv) else np.zeros((0, T))
    wind = window.wind_avail_kw[unit_rows(feeder.wind)] if len(feeder.wind) else np.zeros((0, T))
    extra = dict(window.extra)
    if extra.get("station_first_step_kw") is not None:  # per station of the window: the region's rows
        extra["station_first_step_kw"] = np.asarray(extra["station_first_step_kw"], float)[station_pos]
    sub = replace(window, instance=inst, load_p_kw=load_p, load_q_kvar=load_q, evs=evs,
                  stations=stations, network=None, pv_avail_kw=pv, wind_avail_kw=wind, extra=extra)
    return sub, session_pos, station_pos

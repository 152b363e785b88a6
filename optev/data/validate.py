"""Cross-table validation of feeders and instances.

Column-level rules (required columns, types, bounds, unique ids) are enforced by
:meth:`optev.data.schema.TableSchema.conform` when a table is built. This module adds
the rules that span rows and tables: references to unknown buses, stations, models or
road nodes, radial topology with one substation per feeder, consistent limits, the
30 kW station rule (R5.1.4) and the 20 % SOC floor for V2G (R6.1.5). Each failure
raises one :class:`~optev.errors.DataError` naming the table, row and column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from optev.data.feeder import Feeder
from optev.data.instance import Instance
from optev.data.stations import FAST_CHARGER_MIN_KW, PRIVATE_KINDS, PUBLIC_KINDS
from optev.data.vehicles import SOC_FLOOR_V2G
from optev.errors import DataError


def _label(df: pd.DataFrame, pos: int, key: str | None) -> object:
    if key is not None:
        return f"{pos} ({key}={df[key].iloc[pos]!r})"
    return pos


def _check_refs(df: pd.DataFrame, column: str, known: set[str] | pd.Index, table: str,
                key: str | None, what: str, allow_empty: bool = False) -> None:
    values = df[column]
    mask = ~values.isin(known)
    if allow_empty:
        mask &= values.notna()
    if mask.any():
        pos = int(np.flatnonzero(mask.to_numpy())[0])
        raise DataError(f"unknown {what} {values.iloc[pos]!r}", table=table, row=_label(df, pos, key),
                        column=column)


def _check_le(df: pd.DataFrame, low: str, high: str, table: str, key: str | None) -> None:
    bad = np.flatnonzero((df[low] > df[high]).to_numpy())
    if bad.size:
        pos = int(bad[0])
        raise DataError(f"{low}={float(df[low].iloc[pos])!r} exceeds {high}={float(df[high].iloc[pos])!r}",
                        table=table, row=_label(df, pos, key), column=low)


def validate_feeder(feeder: Feeder, *, require_radial: bool = True) -> Feeder:
    """Check a feeder's cross-table rules; return it unchanged or raise :class:`DataError`.

    Rules: at least one bus; v_min ≤ v_max (value ranges, such as positive base voltages,
    are column rules of the schemas); every line,
    transformer, substation, generator, PV, wind and storage bus exists; no branch from
    a bus to itself; storage e_min ≤ e_init ≤ e_max; generator p_min ≤ p_max and
    q_min ≤ q_max; and, when ``require_radial``, every connected component of in-service
    branches is a tree (no loop, no parallel branch) with exactly one substation.
    """
    buses = feeder.buses
    if not len(buses):
        raise DataError("the feeder has no buses", table="buses")
    _check_le(buses, "v_min_pu", "v_max_pu", "buses", "bus_id")
    known = pd.Index(buses["bus_id"])
    for table, key, cols in (("lines", "line_id", ("from_bus", "to_bus")),
                             ("transformers", "transformer_id", ("hv_bus", "lv_bus")),
                             ("substations", "substation_id", ("bus_id",)),
                             ("generators", "gen_id", ("bus_id",)),
                             ("pv", "pv_id", ("bus_id",)),
                             ("wind", "wind_id", ("bus_id",)),
                             ("storage", "storage_id", ("bus_id",))):
        df = getattr(feeder, table)
        for col in cols:
            _check_refs(df, col, known, table, key, "bus")
    for table, key, a, b in (("lines", "line_id", "from_bus", "to_bus"),
                             ("transformers", "transformer_id", "hv_bus", "lv_bus")):
        df = getattr(feeder, table)
        same = np.flatnonzero((df[a] == df[b]).to_numpy())
        if same.size:
            raise DataError(f"connects bus {df[a].iloc[same[0]]!r} to itself", table=table,
                            row=_label(df, int(same[0]), key), column=b)
    dup_sub = feeder.substations["bus_id"].duplicated()
    if dup_sub.any():
        pos = int(np.flatnonzero(dup_sub.to_numpy())[0])
        raise DataError("two substations on one bus", table="substations",
                        row=_label(feeder.substations, pos, "substation_id"), column="bus_id")
    _check_le(feeder.generators, "p_min_kw", "p_max_kw", "generators", "gen_id")
    _check_le(feeder.generators, "q_min_kvar", "q_max_kvar", "generators", "gen_id")
    _check_le(feeder.storage, "e_min_kwh", "e_init_kwh", "storage", "storage_id")
    _check_le(feeder.storage, "e_init_kwh", "e_max_kwh", "storage", "storage_id")
    if require_radial:
        check_radial(feeder)
    return feeder


def branch_arrays(feeder: Feeder) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """In-service branches as bus positions.

    Returns
    -------
    from_pos, to_pos : ndarray of int
        Positions of the end buses in the feeder's bus order.
    names : list of (table, id)
        Which table and id each branch comes from.
    """
    index = feeder.bus_index()
    lines = feeder.lines[feeder.lines["in_service"]]
    trafos = feeder.transformers[feeder.transformers["in_service"]]
    f = np.array([index[b] for b in lines["from_bus"]] + [index[b] for b in trafos["hv_bus"]], dtype=np.int64)
    t = np.array([index[b] for b in lines["to_bus"]] + [index[b] for b in trafos["lv_bus"]], dtype=np.int64)
    names = [("lines", i) for i in lines["line_id"]] + [("transformers", i) for i in trafos["transformer_id"]]
    return f, t, names


def check_radial(feeder: Feeder) -> None:
    """Raise :class:`DataError` unless every feeder component is a tree with one substation.

    A component with ``n`` buses must have exactly ``n − 1`` in-service branches; the
    message names a branch that closes a loop, or the buses without a substation, or the
    extra substations.
    """
    n = len(feeder.buses)
    f, t, names = branch_arrays(feeder)
    adj = coo_matrix((np.ones(f.size), (f, t)), shape=(n, n))
    n_comp, label = connected_components(adj, directed=False)
    bus_ids = np.asarray(feeder.bus_ids, dtype=object)
    nodes_per = np.bincount(label, minlength=n_comp)
    edges_per = np.bincount(label[f], minlength=n_comp) if f.size else np.zeros(n_comp, int)
    looped = np.flatnonzero(edges_per > nodes_per - 1)
    if looped.size:
        table, branch = _loop_branch(f, t, names, n)
        raise DataError("closes a loop, but a radial feeder is required (open a tie switch with "
                        "in_service=false)", table=table, row=repr(branch))
    index = feeder.bus_index()
    sub_comp = np.array([label[index[b]] for b in feeder.substations["bus_id"]], dtype=np.int64)
    subs_per = np.bincount(sub_comp, minlength=n_comp) if sub_comp.size else np.zeros(n_comp, int)
    orphan = np.flatnonzero(subs_per == 0)
    if orphan.size:
        members = bus_ids[np.isin(label, orphan)]
        raise DataError(f"bus(es) {list(members[:5])}{' ...' if members.size > 5 else ''} are not connected "
                        "to any substation", table="buses", column="bus_id")
    multi = np.flatnonzero(subs_per > 1)
    if multi.size:
        subs = feeder.substations["substation_id"].to_numpy()[sub_comp == multi[0]]
        raise DataError(f"substations {list(subs)} are connected to each other; each radial feeder "
                        "needs exactly one", table="substations", column="bus_id")


def _loop_branch(f: np.ndarray, t: np.ndarray, names: list[tuple[str, str]], n: int) -> tuple[str, str]:
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for k in range(f.size):
        ra, rb = find(int(f[k])), find(int(t[k]))
        if ra == rb:
            return names[k]
        parent[ra] = rb
    raise AssertionError("no loop found")  # unreachable: caller found one by counting


def _check_no_bus_users(instance: Instance) -> None:
    """Raise :class:`DataError` when an instance without buses has feeder rows or bus loads.

    Stations may exist without a feeder (mobility studies); a solve then needs the feeder.
    """
    feeder = instance.feeder
    users = [(name, len(getattr(feeder, name))) for name in
             ("lines", "transformers", "substations", "generators", "pv", "wind", "storage")]
    users += [(name, len(getattr(instance.timeseries, name).columns)) for name in ("load_p_kw", "load_q_kvar")]
    for name, n in users:
        if n:
            raise DataError(f"the feeder has no buses, but table {name!r} has {n} {'columns' if 'load' in name else 'rows'} "
                            "that need one (is the buses table missing, for example from [tables]?)", table="buses")


def validate(instance: Instance, *, require_radial: bool = True) -> Instance:
    """Check every cross-table rule of an instance; return it unchanged or raise :class:`DataError`.

    Rules (in addition to :func:`validate_feeder` when the instance has a feeder):

    - stations: charger model exists; bus exists in the feeder; road node exists in the
      road network (when both are given); kind agrees with the 30 kW rule of R5.1.4 unless
      ``power_class_override``; a model with ``p_dis_max_kw > 0`` must have ``v2g``.
    - station tariffs: station exists.
    - road links: both nodes exist.
    - EVs: vehicle type exists; home/work stations exist and are private; an EV that can
      discharge (opted in and a type with ``p_dis_max_kw > 0``) has ``soc_min ≥ 0.20``
      unless ``soc_floor_override`` (R6.1.5); ``soc_min ≤ soc_init`` is not required
      (an EV may arrive below its floor) but ``soc_min < 1``.
    - trips: EV and road nodes exist.
    - sessions: EV and station exist; departure after arrival.
    - without buses: no other feeder table and no bus load may be given (a
      ``[tables]`` map that leaves out the buses is an error, not an instance without a grid).
    - time series: load columns name known buses; PV/wind profiles exist when an
      availability series is given (without one, PV and wind are available at their rated
      power); the step equals the metadata step.
    """
    feeder = instance.feeder
    has_feeder = len(feeder.buses) > 0
    if not has_feeder:
        _check_no_bus_users(instance)
    if has_feeder:
        validate_feeder(feeder, require_radial=require_radial)
    road = instance.road
    _check_refs(road.links, "from_node", pd.Index(road.nodes["node_id"]), "road_links", "link_id", "road node")
    _check_refs(road.links, "to_node", pd.Index(road.nodes["node_id"]), "road_links", "link_id", "road node")
    _check_stations(instance, has_feeder)
    _check_evs(instance)
    _check_trips_and_sessions(instance)
    _check_timeseries(instance, has_feeder)
    return instance


def _check_stations(instance: Instance, has_feeder: bool) -> None:
    """The station rules of :func:`validate`: charger models, references, the 30 kW rule, tariffs."""
    models = instance.charger_models
    bad = np.flatnonzero(((models["p_dis_max_kw"] > 0) & ~models["v2g"]).to_numpy())
    if bad.size:
        raise DataError("p_dis_max_kw > 0 but v2g is false", table="charger_models",
                        row=_label(models, int(bad[0]), "model_id"), column="p_dis_max_kw")
    st = instance.stations
    road = instance.road
    _check_refs(st, "model_id", pd.Index(models["model_id"]), "stations", "station_id", "charger model")
    if has_feeder:
        _check_refs(st, "bus_id", pd.Index(instance.feeder.buses["bus_id"]), "stations", "station_id", "bus")
    if len(road.nodes):
        _check_refs(st, "road_node", pd.Index(road.nodes["node_id"]), "stations", "station_id", "road node",
                    allow_empty=True)
    if len(st):
        _check_power_class(st, models)
    _check_refs(instance.station_tariffs, "station_id", pd.Index(st["station_id"]), "station_tariffs", None,
                "station")


def _check_power_class(st: pd.DataFrame, models: pd.DataFrame) -> None:
    """A station's kind agrees with its chargers' power (R5.1.4) unless ``power_class_override``."""
    p = st["model_id"].map(models.set_index("model_id")["p_ch_max_kw"]).to_numpy()
    fast_wrong = (st["kind"] == "fcs").to_numpy() & (p < FAST_CHARGER_MIN_KW)
    slow_wrong = (st["kind"] == "scs").to_numpy() & (p >= FAST_CHARGER_MIN_KW)
    wrong = (fast_wrong | slow_wrong) & ~st["power_class_override"].to_numpy()
    if wrong.any():
        pos = int(np.flatnonzero(wrong)[0])
        rule = ("an FCS needs chargers of at least" if fast_wrong[pos] else "an SCS needs chargers below")
        raise DataError(f"kind {st['kind'].iloc[pos]!r} with {p[pos]:g} kW chargers: {rule} "
                        f"{FAST_CHARGER_MIN_KW:g} kW (R5.1.4); set power_class_override=true to accept",
                        table="stations", row=_label(st, pos, "station_id"), column="kind")


def _check_evs(instance: Instance) -> None:
    """The EV rules of :func:`validate`: vehicle type, private home/work stations, SOC floors."""
    evs = instance.evs
    vt = instance.vehicle_types
    st = instance.stations
    _check_refs(evs, "vtype_id", pd.Index(vt["vtype_id"]), "evs", "ev_id", "vehicle type")
    kind_of = st.set_index("station_id")["kind"]
    for col in ("home_station", "work_station"):
        _check_refs(evs, col, pd.Index(st["station_id"]), "evs", "ev_id", "station", allow_empty=True)
        public = np.flatnonzero(evs[col].map(kind_of).isin(PUBLIC_KINDS).to_numpy())
        if public.size:
            pos = int(public[0])
            sid = evs[col].iloc[pos]
            raise DataError(f"station {sid!r} is a public {kind_of[sid]!r} station, but {col} must name a "
                            f"private one ({', '.join(PRIVATE_KINDS)})", table="evs",
                            row=_label(evs, pos, "ev_id"), column=col)
    if len(evs):
        _check_soc_floors(evs, vt)


def _check_soc_floors(evs: pd.DataFrame, vt: pd.DataFrame) -> None:
    """An EV that can discharge has ``soc_min`` ≥ the V2G floor (R6.1.5) unless ``soc_floor_override``;
    every ``soc_min`` is below 1."""
    p_dis = evs["vtype_id"].map(vt.set_index("vtype_id")["p_dis_max_kw"]).to_numpy()
    can_discharge = evs["v2g_opt_in"].to_numpy() & (p_dis > 0)
    low = can_discharge & (evs["soc_min"].to_numpy() < SOC_FLOOR_V2G - 1e-12) & \
        ~evs["soc_floor_override"].to_numpy()
    if low.any():
        pos = int(np.flatnonzero(low)[0])
        raise DataError(f"soc_min={evs['soc_min'].iloc[pos]:g} is below the V2G floor {SOC_FLOOR_V2G:g} "
                        "(R6.1.5); set soc_floor_override=true to accept", table="evs",
                        row=_label(evs, pos, "ev_id"), column="soc_min")
    full = np.flatnonzero(evs["soc_min"].to_numpy() >= 1.0)
    if full.size:
        raise DataError("soc_min must be below 1", table="evs", row=_label(evs, int(full[0]), "ev_id"),
                        column="soc_min")


def _check_trips_and_sessions(instance: Instance) -> None:
    """The trip and session rules of :func:`validate`: known EVs, road nodes and stations; departure
    after arrival."""
    evs, road = instance.evs, instance.road
    trips = instance.trips
    _check_refs(trips, "ev_id", pd.Index(evs["ev_id"]), "trips", None, "EV")
    if len(road.nodes):
        for col in ("origin_node", "destination_node"):
            _check_refs(trips, col, pd.Index(road.nodes["node_id"]), "trips", None, "road node")
    ses = instance.sessions
    _check_refs(ses, "ev_id", pd.Index(evs["ev_id"]), "sessions", "session_id", "EV")
    _check_refs(ses, "station_id", pd.Index(instance.stations["station_id"]), "sessions", "session_id", "station")
    bad = np.flatnonzero((ses["departure_s"] <= ses["arrival_s"]).to_numpy())
    if bad.size:
        raise DataError("departure_s must be after arrival_s", table="sessions",
                        row=_label(ses, int(bad[0]), "session_id"), column="departure_s")


def _check_timeseries(instance: Instance, has_feeder: bool) -> None:
    """The time-series rules of :func:`validate`: load buses, availability profiles, the step."""
    feeder, ts = instance.feeder, instance.timeseries
    if has_feeder:
        known = set(feeder.buses["bus_id"])
        for name in ("load_p_kw", "load_q_kvar"):
            unknown = [c for c in getattr(ts, name).columns if c not in known]
            if unknown:
                raise DataError(f"unknown bus {unknown[0]!r}", table=name, column=unknown[0])
    for table, key in (("pv", "pv_id"), ("wind", "wind_id")):
        df = getattr(feeder, table)
        profiles = df["profile"].where(df["profile"].notna(), df[key])
        # no availability series at all: PV and wind produce their rated power (see optev.blocks.der)
        given = ts.steps and len(ts.availability.columns)
        missing: np.ndarray | list[int] = (np.flatnonzero(~profiles.isin(ts.availability.columns).to_numpy())
                                           if given else [])
        if len(missing):
            pos = int(missing[0])
            raise DataError(f"availability profile {profiles.iloc[pos]!r} is not in the time series",
                            table=table, row=_label(df, pos, key), column="profile")
    step = ts.step
    if step is not None:
        diffs = np.diff(ts.index.asi8)
        if (diffs != diffs[0]).any():
            raise DataError("time index does not have a fixed step", table="timeseries")
        minutes = step.total_seconds() / 60.0
        if abs(minutes - instance.metadata.step_minutes) > 1e-9:
            raise DataError(f"time series step is {minutes:g} min but metadata says "
                            f"{instance.metadata.step_minutes:g} min", table="timeseries")


def finite_float(text: str) -> float:
    """``float(text)`` for a finite number; ``ValueError`` for text that is not one (``nan``, ``inf``, ``1e999``)."""
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value

"""Instances with a city fleet and its uncontrolled baseline (``optev generate`` / ``optev simulate``).

:func:`generate_instance` turns a case (a V2Sim case or an optev instance with a road
network) into an instance ready for the optimiser:

1. :func:`~optev.mobility.fleet.generate_fleet` draws the fleet (vehicle types, EVs,
   routed trips, private chargers) and :func:`~optev.mobility.fleet.add_fleet` adds it;
2. :func:`~optev.mobility.simulate.simulate_day` runs the uncontrolled day (every EV
   charges at full power as soon as it plugs in) with the network's
   :class:`~optev.mobility.routing.Router`, seeded with the same seed;
3. :func:`optimiser_sessions` turns the plugged sessions of that baseline into the
   instance's ``sessions`` table, which the optimiser then schedules.

The ``sessions`` table of a generated instance
----------------------------------------------
One row per session of the uncontrolled baseline that plugged in (sessions turned away
at a full SCS are not in it; nor are zero-length ones). ``arrival_s``/``departure_s`` are
the baseline's plug-in and unplug times: at a slow station or private charger the car
stays until its next trip departs (or the end of the day), so this interval is the
flexibility the optimiser may use; at a fast station the car leaves as soon as it is
charged, so the interval is exactly its full-power charging time (no flexibility).
``soc_arrival`` is the baseline's SOC at plug-in.

``soc_target`` is what the driver asked for (``soc_requested``: the FCS target, or the slow
target 1.0 at SCS and private chargers), capped at what charging at full power can reach
on the optimiser's step grid: the whole steps of length ``step_s`` (aligned to the
instance start) inside the plugged interval, at the EV's charging power on that charger
rounded down to the 1 kW setpoint quantum (:data:`SESSION_QUANTUM_KW`), times the vehicle
× charger charging efficiency — the same rule as the optimiser's window
(``optev.blocks.window``) — less the energy of one quantum for one step (the rounding
margin the window plans above each need where it can), so that each session's departure
need is reachable and a ``departure = "hard"`` formulation is feasible per EV (grid
limits aside). A session with no whole step keeps ``soc_target = soc_arrival``. The requested
SOC is kept in ``soc_requested``; ``energy_baseline_kwh`` is the energy the baseline put
into the battery (in continuous time, hence possibly more than the cap allows on whole
steps) and ``grid_baseline_kwh`` what it drew from the grid.

Caveat: the sessions are those of the uncontrolled day. An optimiser that charges an EV
less in one session does not change the SOC at which it arrives at its next session
(the table is not re-simulated); the rolling-horizon controller, which drives
:class:`~optev.mobility.plant.Plant`, does not have this limitation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from optev.data.battery import floor_to_quantum, pair_limits
from optev.data.feeder import Feeder
from optev.data.instance import Instance
from optev.data.stations import PRIVATE_KINDS
from optev.data.validate import branch_arrays, validate
from optev.data.vehicles import SESSIONS
from optev.errors import DataError
from optev.io.outdir import output_folder
from optev.mobility.core import PlantConfig
from optev.mobility.fleet import add_fleet, generate_fleet
from optev.mobility.private_chargers import private_charger_models
from optev.mobility.routing import Router
from optev.mobility.simulate import SimulationResult, simulate_day
from optev.mobility.vehicles import PreferenceModel
from optev.tolerances import TIME_ATOL_S

SESSION_QUANTUM_KW = 1.0
"""Setpoint quantum the sessions' targets are made reachable with, kW (the optimiser's
``optev.blocks.disaggregate.QUANTUM_KW``, R6.5.2)."""

DEFAULT_STEP_S = 900.0
"""Default control step of the sessions' grid, s (15 min)."""

GENERATE_KEY = "generate"
"""Key of ``metadata.extra`` recording how an instance was generated (its seed, shares...)."""

SESSION_EXTRA_COLUMNS = ("station_kind", "arrival", "wait_min", "soc_requested", "energy_baseline_kwh",
                         "grid_baseline_kwh", "censored")
"""Columns of a generated ``sessions`` table beyond :data:`optev.data.SESSIONS` (module docstring)."""

UNASSIGNED_FEEDER = "(no feeder)"
"""Feeder label of stations whose bus is not a bus of the feeder."""


@dataclass
class GeneratedInstance:
    """What :func:`generate_instance` produced.

    Attributes
    ----------
    instance : Instance
        The instance with fleet, private stations and (unless disabled) sessions.
    baseline : SimulationResult or None
        The uncontrolled day whose plugged sessions are the ``sessions`` table.
    timings_s : dict
        Wall-clock seconds of each stage (``fleet``, ``simulate``, ``sessions``).
    """

    instance: Instance
    baseline: SimulationResult | None
    timings_s: dict[str, float] = field(default_factory=dict)


def strip_fleet(instance: Instance) -> Instance:
    """A copy without fleet: no vehicle types, EVs, trips or sessions, and without the private
    stations that the old EVs owned (``evs.home_station``/``work_station`` of kind home or
    workplace) nor the charger models only they used (so that a generated instance can be
    generated again)."""
    evs = instance.evs
    owned: set[str] = set()
    for col in ("home_station", "work_station"):
        if col in evs:
            owned.update(str(s) for s in evs[col].dropna())
    st = instance.stations
    drop = st["station_id"].astype(str).isin(owned) & st["kind"].isin(PRIVATE_KINDS)
    stations = st.loc[~drop].reset_index(drop=True)
    models = instance.charger_models
    private_models = set(private_charger_models()["model_id"])
    unused = ~models["model_id"].isin(stations["model_id"]) & models["model_id"].isin(private_models)
    empty = Instance()
    return dataclasses.replace(instance, stations=stations, charger_models=models.loc[~unused].reset_index(drop=True),
                               vehicle_types=empty.vehicle_types, evs=empty.evs, trips=empty.trips,
                               sessions=empty.sessions)


def generate_instance(instance: Instance, n_evs: int, *, seed: int = 0, mix: dict[str, float] | None = None,
                      v2g_share: float = 0.3, private_share: float = 0.5, workplace_share: float = 0.1,
                      step_s: float = DEFAULT_STEP_S, sessions: bool = True, name: str | None = None,
                      case: str | None = None, router: Router | None = None,
                      preferences: dict[str, PreferenceModel] | None = None,
                      private_v2g: bool = False) -> GeneratedInstance:
    """Add a generated fleet and the uncontrolled baseline's sessions to ``instance``.

    Parameters
    ----------
    instance : Instance
        A case with a road network (and stations, feeder, time series); an existing
        fleet is replaced (:func:`strip_fleet`).
    n_evs : int
        Number of vehicles (at least 1).
    seed : int
        Seed of the fleet and of the baseline simulation's draws.
    mix, v2g_share, private_share, workplace_share
        As in :func:`~optev.mobility.fleet.generate_fleet`.
    step_s : float
        Control step the sessions' targets are made reachable on, s (module docstring).
    sessions : bool
        Run the uncontrolled day and store its sessions (False: no ``sessions`` table).
    name : str, optional
        Instance name (default ``<case name>_<n_evs>ev``; the case name is that of the
        instance the fleet was first generated on, when ``instance`` is itself generated).
    case : str, optional
        How to name the input in the metadata (default: the input's metadata name).
    router : Router, optional
        A router of ``instance.road`` to reuse.
    preferences : dict of str to PreferenceModel, optional
        User-preference models per vehicle class (price weight, charging willingness, V2G
        reservation price; :mod:`optev.mobility.vehicles`); missing classes use the defaults.
    private_v2g : bool
        Home and workplace chargers can discharge (V2G) as well as charge.

    Returns
    -------
    GeneratedInstance

    Raises
    ------
    DataError
        No road network, bad shares, or a step that does not divide the day.
    """
    if int(n_evs) != n_evs or n_evs < 1:
        raise DataError(f"the number of EVs must be a whole number of at least 1, got {n_evs!r}")
    check_step(step_s)
    if len(instance.road.nodes) == 0 or len(instance.road.links) == 0:
        raise DataError(f"{instance.metadata.name!r} has no road network (road_nodes/road_links); a fleet needs "
                        "one: give a V2Sim case or an instance folder with a road network")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    base = strip_fleet(instance)
    router = Router(base.road) if router is None else router
    fleet = generate_fleet(base, int(n_evs), mix=mix, v2g_share=v2g_share, private_share=private_share,
                           workplace_share=workplace_share, seed=int(seed), router=router,
                           preferences=preferences, private_v2g=private_v2g)
    result = add_fleet(base, fleet)
    timings["fleet"] = time.perf_counter() - t0
    case_name = case if case is not None else instance.metadata.name
    previous = instance.metadata.extra.get(GENERATE_KEY)
    base_name = str(previous.get("base_name", instance.metadata.name)) if isinstance(previous, dict) else \
        instance.metadata.name
    record: dict[str, Any] = {
        "case": case_name, "base_name": base_name, "evs": int(n_evs), "seed": int(seed),
        "mix": {k: float(v) for k, v in (mix or {"car": 0.9, "bus": 0.03, "logistics": 0.07}).items()},
        "v2g_share": float(v2g_share), "private_share": float(private_share),
        "workplace_share": float(workplace_share), "step_minutes": float(step_s) / 60.0,

        "sessions": ("uncontrolled baseline: plug-in intervals and needs of the sessions of an uncontrolled "
                     "day (optev.mobility.build)") if sessions else "none",
    }
    if private_v2g:
        record["private_v2g"] = True
    if preferences:
        record["preferences"] = {k: dataclasses.asdict(v) for k, v in sorted(preferences.items())}
    meta = dataclasses.replace(
        result.metadata, name=name or f"{base_name}_{int(n_evs)}ev",
        source=f"{base_name}{'' if case_name == base_name else f' ({case_name})'} with a fleet generated by "
               f"optev generate "
               f"(see extra.{GENERATE_KEY})",
        extra={**dict(result.metadata.extra), GENERATE_KEY: record})
    result = dataclasses.replace(result, metadata=meta)
    baseline = None
    if sessions:
        t0 = time.perf_counter()
        baseline = simulate_day(result, config=PlantConfig(seed=int(seed)), router=router)
        timings["simulate"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = validate(dataclasses.replace(result, sessions=optimiser_sessions(baseline, result, step_s)))
        timings["sessions"] = time.perf_counter() - t0
    return GeneratedInstance(result, baseline, timings)


def check_step(step_s: float) -> None:
    """Raise :class:`DataError` unless ``step_s`` is 1 to 60 minutes of whole seconds dividing the day."""
    if not (60.0 <= step_s <= 3600.0) or step_s != int(step_s) or 86400 % int(step_s):
        raise DataError(f"the control step must be 1 to 60 minutes of whole seconds dividing the day, "
                        f"got {step_s:g} s")


def whole_steps(arrival_s: np.ndarray, departure_s: np.ndarray, step_s: float) -> np.ndarray:
    """Number of whole steps ``[k·step, (k+1)·step]`` inside each interval ``[arrival, departure]``.

    Same test as the optimiser's window (``arrival ≤ start + ε`` and ``departure ≥ end − ε``,
    ε = :data:`optev.tolerances.TIME_ATOL_S`), with steps aligned to time 0.
    """
    arr = np.asarray(arrival_s, dtype=float)
    dep = np.asarray(departure_s, dtype=float)
    k_first = np.ceil((arr - TIME_ATOL_S) / step_s)
    k_last = np.floor((dep + TIME_ATOL_S) / step_s) - 1.0
    return np.maximum(k_last - k_first + 1.0, 0.0).astype(np.int64)


def optimiser_sessions(result: SimulationResult, instance: Instance, step_s: float = DEFAULT_STEP_S) -> pd.DataFrame:
    """The ``sessions`` table for the optimiser from an uncontrolled day (module docstring).

    Parameters
    ----------
    result : SimulationResult
        The uncontrolled day of ``instance``.
    instance : Instance
        The simulated instance (vehicle types, EVs, stations, charger models).
    step_s : float
        Control step, s.

    Returns
    -------
    DataFrame
        :data:`optev.data.SESSIONS` columns plus :data:`SESSION_EXTRA_COLUMNS`.
    """
    check_step(step_s)
    s = result.plugged_sessions
    s = s.loc[s["departure_s"].to_numpy(float) > s["arrival_s"].to_numpy(float)].reset_index(drop=True)
    ev = instance.evs.set_index("ev_id")
    vt = instance.vehicle_types.set_index("vtype_id")
    st = instance.station_power().set_index("station_id")
    vtype = ev["vtype_id"].reindex(s["ev_id"]).to_numpy(object)
    vrow = vt.reindex(vtype)
    srow = st.reindex(s["station_id"])
    cap = vrow["battery_kwh"].to_numpy(float)
    limits = pair_limits(vrow, srow)
    p = floor_to_quantum(limits.p_ch_max_kw, SESSION_QUANTUM_KW)
    eff = limits.eff_ch
    n = whole_steps(s["arrival_s"].to_numpy(float), s["departure_s"].to_numpy(float), step_s)
    soc_arr = s["soc_arrival"].to_numpy(float)
    step_h = step_s / 3600.0
    # full power on every whole step, less one quantum-step of energy: the optimiser plans
    # that much above the need as a rounding margin where it can (optev.blocks.window)
    gain = eff * p * step_h * n - eff * SESSION_QUANTUM_KW * step_h
    reach = np.minimum(soc_arr + np.maximum(gain, 0.0) / cap, 1.0)
    requested = s["soc_target"].to_numpy(float)
    out = pd.DataFrame({
        "session_id": s["session_id"], "ev_id": s["ev_id"], "station_id": s["station_id"],
        "arrival_s": s["arrival_s"], "departure_s": s["departure_s"], "soc_arrival": soc_arr,
        "soc_target": np.minimum(requested, reach),
        "station_kind": s["station_kind"], "arrival": s["arrival"], "wait_min": s["wait_min"],
        "soc_requested": requested, "energy_baseline_kwh": s["energy_delivered_kwh"],
        "grid_baseline_kwh": s["grid_import_kwh"], "censored": s["censored"].astype(bool),
    })
    return SESSIONS.conform(out)


# ------------------------------------------------------------------------------ feeders

def bus_feeders(feeder: Feeder) -> pd.Series:
    """The feeder of every bus: the substation id of its connected component.

    Components are those of the in-service lines and transformers; a component with
    several substations is named by their ids joined with ``+``, one without by
    ``island:<first bus>``.

    Returns
    -------
    Series
        Feeder label indexed by ``bus_id``.
    """
    n = len(feeder.buses)
    if n == 0:
        return pd.Series([], dtype=object, index=pd.Index([], name="bus_id"), name="feeder")
    f, t, _ = branch_arrays(feeder)
    _, label = connected_components(coo_matrix((np.ones(f.size), (f, t)), shape=(n, n)), directed=False)
    bus_ids = np.asarray(feeder.bus_ids, dtype=object)
    index = feeder.bus_index()
    names: dict[int, list[str]] = {}
    for sid, bus in zip(feeder.substations["substation_id"], feeder.substations["bus_id"]):
        if bus in index:
            names.setdefault(int(label[index[bus]]), []).append(str(sid))
    first = {int(c): str(bus_ids[np.flatnonzero(label == c)[0]]) for c in np.unique(label)}
    comp = np.array(["+".join(sorted(names[c])) if c in names else f"island:{first[c]}" for c in label.tolist()],
                    dtype=object)
    return pd.Series(comp, index=pd.Index(bus_ids, name="bus_id"), name="feeder")


def _base_load_kw(instance: Instance, t_s: np.ndarray) -> pd.DataFrame:
    """Feeder base load per bus at the bin starts ``t_s`` (s after the instance start), kW."""
    feeder = instance.feeder
    bus_ids = feeder.bus_ids
    out = np.broadcast_to(feeder.buses["p_load_kw"].to_numpy(float), (t_s.size, len(bus_ids))).copy()
    frame = instance.timeseries.load_p_kw
    if len(frame.columns) and len(frame.index):
        meta = instance.metadata
        origin = pd.Timestamp(meta.start)
        origin = origin.tz_localize(meta.timezone) if origin.tzinfo is None else origin
        times = origin + pd.to_timedelta(t_s, unit="s")
        idx = frame.index
        if not isinstance(idx, pd.DatetimeIndex):
            raise DataError(f"index must be a DatetimeIndex, got {type(idx).__name__}", table="load_p_kw")
        if idx.tz is None:
            times = times.tz_localize(None)
        else:
            times = times.tz_convert(idx.tz)
        pos = idx.searchsorted(times, side="right") - 1  # the value in force at each bin start
        valid = pos >= 0
        pos_map = {b: i for i, b in enumerate(bus_ids)}
        cols = [c for c in frame.columns if c in pos_map]
        values = frame[cols].to_numpy(float)[np.maximum(pos, 0)]
        target = np.array([pos_map[c] for c in cols], dtype=np.intp)
        out[np.ix_(np.flatnonzero(valid), target)] = values[valid]
    return pd.DataFrame(out, columns=bus_ids)


def feeder_load(result: SimulationResult, instance: Instance) -> pd.DataFrame:
    """EV charging load and base load per feeder and time bin.

    Returns
    -------
    DataFrame
        Long table ``feeder, t_s, ev_load_kw, base_load_kw, total_kw`` (mean EV load over
        the bin; base load at the bin start, from ``load_p_kw`` or the buses' static
        loads), sorted by feeder then time. Stations on buses outside the feeder count
        under :data:`UNASSIGNED_FEEDER`.
    """
    feeders = bus_feeders(instance.feeder)
    series = result.series
    t_s = np.asarray(series.t_s, dtype=float)
    st_bus = pd.Series(result.station_bus).reindex(series.station_id.astype(str)).to_numpy(object)
    st_feeder = pd.Series(st_bus).map(feeders).fillna(UNASSIGNED_FEEDER).to_numpy(object)
    labels = sorted(set(feeders.tolist()) | set(st_feeder.tolist()))
    code = {f: i for i, f in enumerate(labels)}
    ev = np.zeros((t_s.size, len(labels)))
    st_code = np.array([code[f] for f in st_feeder], dtype=np.int64)
    for k in range(len(labels)):
        cols = np.flatnonzero(st_code == k)
        if cols.size:
            ev[:, k] = series.load_kw[:, cols].sum(axis=1)
    base = np.zeros_like(ev)
    if len(feeders):
        per_bus = _base_load_kw(instance, t_s)
        bus_code = np.array([code[f] for f in feeders.to_numpy(object)], dtype=np.int64)
        values = per_bus.to_numpy(float)
        for k in np.unique(bus_code):
            base[:, k] = values[:, bus_code == k].sum(axis=1)
    n_f = len(labels)
    return pd.DataFrame({
        "feeder": np.repeat(np.array(labels, dtype=object), t_s.size),
        "t_s": np.tile(t_s, n_f),
        "ev_load_kw": ev.T.reshape(-1), "base_load_kw": base.T.reshape(-1),
        "total_kw": (ev + base).T.reshape(-1),
    })


def feeder_peaks(load: pd.DataFrame) -> pd.DataFrame:
    """Peak EV load and peak total load of each feeder from :func:`feeder_load`.

    Returns
    -------
    DataFrame
        ``feeder, ev_peak_kw, ev_peak_t_s, total_peak_kw, total_peak_t_s, ev_energy_kwh``
        (first bin of each peak; energy = mean EV load × bin length summed).
    """
    rows = []
    for name, g in load.groupby("feeder", sort=True):
        t = g["t_s"].to_numpy(float)
        ev = g["ev_load_kw"].to_numpy(float)
        tot = g["total_kw"].to_numpy(float)
        width = float(t[1] - t[0]) if t.size > 1 else 0.0
        rows.append({"feeder": name, "ev_peak_kw": float(ev.max()) if ev.size else 0.0,
                     "ev_peak_t_s": float(t[int(np.argmax(ev))]) if ev.size else 0.0,
                     "total_peak_kw": float(tot.max()) if tot.size else 0.0,
                     "total_peak_t_s": float(t[int(np.argmax(tot))]) if tot.size else 0.0,
                     "ev_energy_kwh": float(ev.sum() * width / 3600.0)})
    return pd.DataFrame(rows, columns=["feeder", "ev_peak_kw", "ev_peak_t_s", "total_peak_kw", "total_peak_t_s",
                                       "ev_energy_kwh"])


def simulation_summary(result: SimulationResult, peaks: pd.DataFrame) -> dict[str, Any]:
    """Headline figures of an uncontrolled day (JSON-ready; no timings, so deterministic)."""
    s = result.sessions
    summary = dict(result.summary())
    plugged = ~s["rejected"].to_numpy(bool) & s["plug_in"].notna().to_numpy()
    summary.update({
        "energy_delivered_kwh": float(s.loc[plugged, "energy_delivered_kwh"].sum()),
        "energy_discharged_kwh": float(s.loc[plugged, "energy_discharged_kwh"].sum()),
        "grid_export_kwh": float(s["grid_export_kwh"].sum()),
        "sessions_scs": int((plugged & (s["station_kind"] == "scs").to_numpy()).sum()),
        "sessions_private": int((plugged & s["station_kind"].isin(PRIVATE_KINDS).to_numpy()).sum()),
        "censored": int((plugged & s["censored"].to_numpy(bool)).sum()),
        "resolution_s": float(result.series.resolution_s),
        "seed": int(result.config.seed),
        "feeders": [{k: (v if isinstance(v, str) else float(v)) for k, v in row.items()}
                    for row in peaks.to_dict(orient="records")],
    })
    return {k: summary[k] for k in sorted(summary)}


def clock(t_s: float) -> str:
    """``HH:MM`` of a time in seconds after the instance start (``+1d`` past midnight)."""
    days, rest = divmod(int(math.floor(t_s + 1e-9)), 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}"
    return text + (f"+{days}d" if days else "")


def write_simulation(result: SimulationResult, load: pd.DataFrame, summary: dict[str, Any],
                     out_dir: str | Path, *, inputs: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write the session table, EV energy accounts, station series, feeder load and summary.

    Files: ``sessions.parquet``, ``ev_summary.parquet``, ``station_series.parquet``
    (:meth:`SimulationResult.write`), ``feeder_load.csv`` and ``summary.json``; the same
    result gives byte-identical files. The folder is written aside and swapped in when
    complete (:func:`optev.io.outdir.output_folder`, kind ``simulation``); ``inputs`` are
    paths it may not be, contain or lie inside.
    """
    out = Path(os.path.abspath(out_dir))
    with output_folder(out, "simulation", inputs=inputs) as tmp:
        result.write(tmp)
        load.to_csv(tmp / "feeder_load.csv", index=False, lineterminator="\n", float_format="%.6f")
        with open(tmp / "summary.json", "w", encoding="utf-8", newline="\n") as fh:
            json.dump(summary, fh, indent=1, sort_keys=True, allow_nan=False)
            fh.write("\n")
    names = {"sessions": "sessions.parquet", "evs": "ev_summary.parquet", "series": "station_series.parquet",
             "feeder_load": "feeder_load.csv", "summary": "summary.json"}
    return {key: out / name for key, name in names.items()}


__all__ = ["DEFAULT_STEP_S", "GENERATE_KEY", "GeneratedInstance", "SESSION_EXTRA_COLUMNS", "SESSION_QUANTUM_KW",
           "UNASSIGNED_FEEDER", "bus_feeders", "check_step", "clock", "feeder_load", "feeder_peaks",
           "generate_instance", "optimiser_sessions", "simulation_summary", "strip_fleet", "whole_steps",
           "write_simulation"]

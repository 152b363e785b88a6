"""Closed-loop simulation: controller + plant + AC power-flow check, step by step (R6.3.2, R6.3.3).

:func:`simulate` runs ``steps`` control intervals from ``start``:

1. the plant's measured state (plugged EVs with their energy, expected departure and
   need; outage flags; storage energies) becomes a :class:`~optev.mpc.state.ControlState`;
2. the :class:`~optev.mpc.controller.Controller` decides (it knows only *forecast*
   arrivals);
3. stations that dispatch does not reach (``outages``) run autonomously
   (:mod:`optev.mpc.edge`: hold their last valid schedule, then the safe local policy);
   the others apply the decision;
4. the plant realises the interval with the *real* arrivals and departures: the event
   simulation :class:`optev.mobility.Plant` for an instance with trips (routed with a
   :class:`~optev.mobility.Router` of its road network), the sessions replay
   :class:`~optev.mpc.replay.ReplayPlant` for an instance with only a sessions table;
   stationary storage follows the decision's first-step power (energy integrated,
   clipped to its limits). Before ``start`` the event plant runs uncontrolled from the
   instance start; the replay plant starts at ``start`` with every session plugged in
   then at its arrival SOC (nothing before ``start`` is replayed);
5. after the last step, the AC power flow checks every applied step at once (batched):
   realised base load (the instance's own series, not the forecast) plus the applied
   station powers, the storage power and the DER output of each decision's first step
   (stations' reactive power from the plan for stations under central control).

The uncontrolled baseline is the same plant without setpoints over the same steps
(:func:`optev.mobility.simulate_day` for trip instances; the replay without setpoints
otherwise), with base load and renewables at their available power but no storage or
dispatchable generation, checked by the same AC power flow.

Result: :class:`MPCRun` (stable API for ``optev run`` and studies).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from optev.blocks.window import instance_origin, window_times
from optev.compose.formulation import Formulation, load_formulation
from optev.data.instance import Instance
from optev.errors import DataError
from optev.mobility.core import PlantConfig
from optev.mobility.plant import Plant
from optev.mobility.simulate import simulate_day
from optev.mobility.state import Setpoints, StepReport
from optev.mpc.controller import Controller, parse_step
from optev.mpc.edge import EdgePolicy, HeldSchedule, OutageSchedule, ev_station_params, local_setpoints
from optev.mpc.forecast import SeasonalProfileForecaster, actual_series
from optev.mpc.replay import ReplayPlant
from optev.mpc.state import ControlDecision, ControlState, EVState
from optev.powerflow import run_powerflow, violations
from optev.powerflow.checks import VIOLATION_COLUMNS, count_by_kind
from optev.testing import LIMIT_ATOL_KW, SETPOINT_GRID_ATOL, SOC_ATOL

STEP_COLUMNS = ("time", "step", "status", "termination", "objective", "warm", "iterations", "build_s", "solve_s",
                "check_s", "wall_s", "evs", "forecast_arrivals", "arrivals", "departures", "needs_clipped",
                "stations_hold", "stations_fallback", "plant_clipped", "ignored_setpoints", "ev_kw", "storage_kw",
                "import_kw", "baseline_import_kw", "vm_min_pu", "vm_max_pu", "ac_violations", "price_buy_per_kwh")
"""Columns of ``MPCRun.tables["steps"]``: one row per applied step (times in the instance's
time zone; powers kW; durations s; ``status``/``termination``/``warm`` from
:class:`~optev.mpc.state.SolveStats`; ``import_kw`` the substation import of the applied
step — AC when the feeder is checked, else the copper-plate sum; ``ac_violations`` the
number of AC-check violations of the step)."""

MODE_COLUMNS = ("station_id", "time", "mode", "request_kw", "applied_kw")
"""Columns of ``MPCRun.tables["mode"]``: the mode of every station in every step
(``central``/``hold``/``fallback``), the power it was asked for (the central setpoint,
the held schedule's value or the fallback total, kW) and the net power its EVs were
commanded (kW)."""

SESSION_RESULT_COLUMNS = ("session_id", "ev_id", "station_id", "arrival_s", "departure_s", "soc_arrival",
                          "soc_target", "soc_departure", "need_kwh", "e_departure_kwh", "shortfall_kwh", "censored")
"""Columns of ``MPCRun.sessions`` / ``baseline_sessions``: sessions that plugged in during the
run; ``shortfall_kwh = max(soc_target·C − E_departure, 0)`` for sessions that left
(``censored`` ones are still plugged in at the end and have no shortfall)."""


@dataclass
class MPCRun:
    """Result of :func:`simulate` (stable: ``optev run`` and studies build on it).

    Attributes
    ----------
    tables : dict of DataFrame
        Applied steps, with the schemas of ``optev solve`` (:mod:`optev.compose.results`):
        ``ev`` (ev_id, session_id, station_id, time, p_kw, soc) — one row per EV commanded
        in a step, ``p_kw`` the applied setpoint (1 kW grid), ``soc`` at the end of the step
        (at departure for an EV that left during it); ``station`` (station_id, time,
        p_ch_kw, p_dis_kw, q_kvar) — sums of the applied EV setpoints, reactive power of
        the plan under central control; ``bus`` (bus_id, time, vm_pu_lindistflow,
        vm_pu_ac_model — both of the plan's first step, NaN without LinDistFlow / AC
        check — and vm_pu_ac of the applied step); ``line`` (line_id, time, p_kw, q_kvar,
        current_a, loading of the applied step); plus ``mode`` (:data:`MODE_COLUMNS`),
        ``steps`` (:data:`STEP_COLUMNS`) and, with storage, ``storage`` (storage_id,
        bus_id, time, p_ch_kw, p_dis_kw, q_kvar, e_kwh at the end of the step).
    violations : DataFrame
        AC-check violations of the applied steps (time, kind, element_id, value, limit,
        excess, unit).
    baseline : dict of DataFrame
        The uncontrolled day over the same steps: ``station`` (same schema as above) and
        ``steps`` (time, ev_kw, import_kw, vm_min_pu, vm_max_pu, ac_violations).
    sessions, baseline_sessions : DataFrame
        Sessions of the controlled and of the baseline run (:data:`SESSION_RESULT_COLUMNS`).
    summary : dict
        JSON-ready figures (see :func:`simulate`).
    decisions : list of ControlDecision
        Every decision, when ``keep_decisions=True``.
    """

    tables: dict[str, pd.DataFrame]
    violations: pd.DataFrame
    baseline: dict[str, pd.DataFrame]
    sessions: pd.DataFrame
    baseline_sessions: pd.DataFrame
    summary: dict[str, Any]
    decisions: list[ControlDecision] = field(default_factory=list, repr=False)
    controller: Controller | None = field(default=None, repr=False)

    def write(self, out_dir: str | Path, table_format: str = "csv") -> Path:
        """Write the tables and ``summary.json`` (:func:`optev.io.results.write_results`)."""
        from optev.io.results import write_results

        return write_results(self, out_dir, table_format)


def _start_seconds(instance: Instance, start: Any, step: pd.Timedelta) -> float:
    t0 = window_times(instance, start, 1, step)[0]
    return float((t0 - instance_origin(instance)).total_seconds())


def _empty_report(t: float) -> StepReport:
    return StepReport(t_start_s=t, t_end_s=t)


def _state_evs(report: StepReport, caps: Mapping[str, float], arrivals: Mapping[str, tuple[float, float]],
               now: float) -> list[EVState]:
    out = []
    for p in report.plugged:
        cap = caps[p.ev_id]
        arr, soc_a = arrivals.get(p.session_id, (now, None))
        out.append(EVState(ev_id=p.ev_id, session_id=p.session_id, station_id=p.station_id, energy_kwh=p.soc * cap,
                           soc=p.soc, arrival_s=min(arr, now), departure_s=p.departure_s, soc_target=p.soc_target,
                           soc_arrival=soc_a, p_ch_max_kw=p.p_ch_max_kw, p_dis_max_kw=p.p_dis_max_kw))
    return out


def _held(decision: ControlDecision | None, station: str, session_station: Mapping[str, str]) -> HeldSchedule | None:
    if decision is None or decision.stats.status == "failed" or station not in decision.station_plan_kw:
        return None
    ev = {sid: plan for sid, plan in decision.ev_plan_kw.items() if session_station.get(sid) == station}
    return HeldSchedule(start_s=decision.plan_start_s, step_s=decision.plan_step_s,
                        station_kw=decision.station_plan_kw[station], ev_kw=ev, received_s=decision.time_s)


def _first_step(table: pd.DataFrame | None, t0: pd.Timestamp) -> pd.DataFrame | None:
    if table is None or not len(table):
        return None
    times = pd.DatetimeIndex(table["time"])
    return table.loc[times == t0]


def simulate(instance: Instance, formulation: Formulation | str, *, start: Any = None, steps: int = 96,
             step: str | pd.Timedelta = "15min", horizon: str | pd.Timedelta | int | None = None,
             forecaster: Any = None, outages: Iterable[Any] | None = None, controller: Controller | None = None,
             ac_check: bool = True, progress: Callable[[int, int, dict[str, Any]], None] | None = None,
             edge: EdgePolicy | None = None, regions: Mapping[str, Sequence[str]] | None = None,
             plant_config: PlantConfig | None = None, router: Any = None, keep_decisions: bool = False) -> MPCRun:
    """Run the controller against the plant for ``steps`` intervals (module docstring).

    Parameters
    ----------
    instance : Instance
        With trips (event-simulation plant) or with only a sessions table (replay plant).
    formulation : Formulation or str
        The controller's formulation (a name or path is loaded).
    start : str or Timestamp, optional
        First step: ISO timestamp, ``"HH:MM"`` on the instance's first day, or None for
        the instance start. With trips it must fall on the control-step grid from the
        instance start (the plant runs uncontrolled before it).
    steps : int
        Number of applied control steps.
    step : str or Timedelta
        Control interval, 1–15 minutes (R6.2.2.2).
    horizon : str, Timedelta or int, optional
        Controller horizon (duration or steps; default: the formulation's window).
    forecaster : forecaster, optional
        Default: the seasonal profile of the instance's sessions — for an instance with
        trips and no sessions table, of the uncontrolled baseline day's sessions.
    outages : iterable of (target, start, end), optional
        Dispatch outages (:mod:`optev.mpc.edge`).
    controller : Controller, optional
        A prepared controller (its step must equal ``step``); ``horizon``,
        ``forecaster`` and ``edge`` are then taken from it.
    ac_check : bool
        AC power flow of the applied steps and of the controller's plans.
    progress : callable, optional
        ``progress(done, steps, info)`` after every step (``info``: time, status, solve_s,
        wall_s, modes).
    edge : EdgePolicy, optional
        Hold time and fallback policy of stations without dispatch.
    regions : mapping of str to list of str, optional
        Region name → station ids, for outage targets.
    plant_config : PlantConfig, optional
        Behaviour of the event-simulation plant (its horizon is extended to cover the run).
    router : router, optional
        Travel router of the event plant (default: a :class:`~optev.mobility.Router` of
        the road network when it has links).
    keep_decisions : bool
        Keep every :class:`ControlDecision` in the result.

    Returns
    -------
    MPCRun
        Its ``summary`` holds: ``cost`` and ``baseline_cost`` (grid import cost of the
        applied steps at the realised prices, currency), ``peak_import_kw``,
        ``baseline_peak_import_kw``, ``peak_reduction_kw``; ``energy_delivered_kwh`` /
        ``energy_discharged_kwh`` (grid side), ``energy_unmet_kwh`` and
        ``sessions_with_shortfall`` (sessions that left, against ``soc_target``), and the
        baseline's; ``soc_floor_violations`` and ``limit_violations`` (by kind and
        ``limit_violations_total``: setpoint grid, EV charge/discharge limits, station site
        caps, setpoints the plant clipped — all must be 0); ``energy_continuity_max_err_kwh``
        (measured energy change vs the applied setpoint, per commanded EV-step; a battery
        stops charging when full);
        ``ac_violations`` (by kind), ``ac_violation_steps``; ``lindistflow_error_pu``
        (max |LinDistFlow − AC| voltage of the plans' first steps) and
        ``lindistflow_vs_applied_pu`` (against the applied AC power flow); ``solve_s``
        (median, mean, max, total) and ``solve_s_per_step``, ``wall_s_per_step``;
        ``warm_steps``, ``soft_limit_steps``, ``failed_steps``, ``needs_clipped``;
        ``modes`` (station-steps per mode); ``wall_s``.
    """
    t_wall = time.perf_counter()
    form = load_formulation(formulation) if isinstance(formulation, str) else formulation
    step_td = parse_step(step)
    step_s = step_td.total_seconds()
    if steps < 1:
        raise DataError(f"steps must be at least 1, got {steps}")
    t_start = _start_seconds(instance, start, step_td)
    t_end = t_start + steps * step_s
    origin = instance_origin(instance)
    times = pd.date_range(origin + pd.Timedelta(seconds=t_start), periods=steps, freq=step_td)
    trips = len(instance.trips) > 0
    station_ids = instance.stations["station_id"].astype(str).to_numpy(object)
    st_index = {s: i for i, s in enumerate(station_ids)}
    n_st = station_ids.size

    # ---- baseline (also the history of the default forecaster for trip instances)
    cfg = None
    if trips:
        k0 = t_start / step_s
        if abs(k0 - round(k0)) > 1e-9:
            raise DataError(f"start must lie on the {step_td} grid from the instance start for an instance with trips")
        cfg = plant_config or PlantConfig()
        cfg = dataclasses.replace(cfg, horizon_s=max(cfg.horizon_s, t_end))
        if router is None and len(instance.road.links):
            from optev.mobility.routing import Router

            router = Router(instance.road)
        base = simulate_day(instance, config=cfg, router=router, step_s=step_s, resolution_s=step_s)
        k = int(round(k0))
        pos = pd.Index(base.series.station_id.astype(str)).get_indexer(station_ids)
        load = base.series.load_kw[k:k + steps]
        base_station_kw = np.zeros((steps, n_st))
        base_station_kw[:load.shape[0]][:, pos >= 0] = load[:, pos[pos >= 0]]
        base_sessions = _plant_sessions(base.sessions, instance, t_start, t_end)
        history = base.plugged_sessions
    else:
        bplant = ReplayPlant(instance, start_s=t_start)
        base_station_kw = np.zeros((steps, n_st))
        for k in range(steps):
            rep = bplant.advance(step_s, None)
            for s in rep.stations:
                base_station_kw[k, st_index[s.station_id]] = s.mean_kw
        base_sessions = _replay_sessions(bplant.sessions(), instance)
        history = None

    if controller is None:
        fc = forecaster
        if (fc is None or (isinstance(fc, str) and fc == "seasonal")) and trips and not len(instance.sessions):
            fc = SeasonalProfileForecaster(history=history)
        controller = Controller(form, instance, step=step_td, horizon=horizon, forecaster=fc, edge=edge,
                                ac_check=None if ac_check else False)
    elif abs(controller.step_s - step_s) > 1e-9:
        raise DataError(f"the controller's step ({controller.step_s:g} s) differs from step ({step_s:g} s)")
    policy = controller.edge
    schedule = OutageSchedule(outages, instance, regions)

    # ---- the plant
    if trips:
        plant: Any = Plant(instance, cfg, router=router)
        report = _empty_report(0.0)
        arrivals: dict[str, tuple[float, float]] = {}
        while plant.time_s < t_start - 1e-9:
            report = plant.advance(min(step_s, t_start - plant.time_s), None)
            for ev in report.plug_ins:
                arrivals[str(ev.session_id)] = (ev.time_s, ev.soc)
    else:
        plant = ReplayPlant(instance, start_s=t_start)
        report = plant.report_now()
        arrivals = {}
    evs_tab = instance.evs.set_index("ev_id")
    vt_cap = instance.vehicle_types.set_index("vtype_id")["battery_kwh"]
    caps = dict(zip(evs_tab.index.astype(str), vt_cap.reindex(evs_tab["vtype_id"]).to_numpy(float)))
    soc_min = dict(zip(evs_tab.index.astype(str), evs_tab["soc_min"].to_numpy(float)))
    storage = instance.feeder.storage
    sto_ids = storage["storage_id"].astype(str).tolist() if len(storage) else []
    sto_e = {s: float(v) for s, v in zip(sto_ids, storage["e_init_kwh"].to_numpy(float))} if sto_ids else {}

    ev_rows: list[tuple] = []
    mode_rows: list[tuple] = []
    step_rows: list[dict[str, Any]] = []
    sto_rows: list[tuple] = []
    station_net = np.zeros((steps, n_st))
    station_ch = np.zeros((steps, n_st))
    station_dis = np.zeros((steps, n_st))
    station_q = np.zeros((steps, n_st))
    feeder = instance.feeder
    bus_ids = feeder.bus_ids
    bus_pos = {b: i for i, b in enumerate(bus_ids)}
    n_bus = len(bus_ids)
    vm_lin = np.full((steps, n_bus), np.nan)
    vm_model = np.full((steps, n_bus), np.nan)
    der_p = np.zeros((steps, n_bus))
    der_q = np.zeros((steps, n_bus))
    sto_p = np.zeros((steps, n_bus))
    sto_q = np.zeros((steps, n_bus))
    decisions: list[ControlDecision] = []
    frozen: dict[str, HeldSchedule | None] = {}
    prev: ControlDecision | None = None
    prev_session_station: dict[str, str] = {}
    clipped_total = ignored_total = 0
    mode_count = {"central": 0, "hold": 0, "fallback": 0}
    for k in range(steps):
        now = t_start + k * step_s
        t_k = times[k]
        offline = schedule.offline(now)
        evs = _state_evs(report, caps, arrivals, now)
        state = ControlState(time_s=now, evs=evs, offline_stations=offline, storage_e_kwh=dict(sto_e))
        decision = controller.step(state)
        if keep_decisions:
            decisions.append(decision)
        # edge autonomy: stations without dispatch
        for s in list(frozen):
            if s not in offline:
                del frozen[s]  # reconnected: central control again
        modes: dict[str, str] = {}
        for s, since in offline.items():
            if s not in frozen:
                frozen[s] = _held(prev, s, prev_session_station)
            sched = frozen[s]
            covers = sched is not None and sched.index(now) is not None
            modes[s] = policy.mode(now - since, covers)
        local_kw, request = local_setpoints(instance, evs, now, step_s, modes, frozen, policy) if modes else ({}, {})
        applied = {e.ev_id: (local_kw.get(e.ev_id, 0.0) if e.station_id in modes
                             else float(decision.setpoints.ev_kw.get(e.ev_id, 0.0))) for e in evs}
        # storage follows the central decision's first step, within its limits
        sto_applied: dict[str, float] = {}
        if sto_ids:
            for j, sid in enumerate(sto_ids):
                row = storage.iloc[j]
                p = float(decision.storage_kw.get(sid, 0.0))
                p = min(max(p, -float(row["p_dis_max_kw"])), float(row["p_ch_max_kw"]))
                dt_h = step_s / 3600.0
                if p >= 0:
                    p = min(p, max(float(row["e_max_kwh"]) - sto_e[sid], 0.0) / (float(row["eff_ch"]) * dt_h))
                    sto_e[sid] += float(row["eff_ch"]) * p * dt_h
                else:
                    p = max(p, -max(sto_e[sid] - float(row["e_min_kwh"]), 0.0) * float(row["eff_dis"]) / dt_h)
                    sto_e[sid] += p * dt_h / float(row["eff_dis"])
                sto_applied[sid] = p
        # EVs arriving during the interval have no setpoint yet: with no station setpoint they
        # charge at full power within the site cap until the next decision (departure needs first)
        new = plant.advance(step_s, Setpoints(ev_kw=applied, station_kw={}))
        for ev in new.plug_ins:
            arrivals[str(ev.session_id)] = (ev.time_s, ev.soc)
        clipped_total += len(new.clipped_ev_setpoints)
        ignored_total += len(new.ignored_ev_setpoints)
        soc_end = {p.session_id: p.soc for p in new.plugged}
        stayed = set(soc_end)
        soc_end.update({str(d.session_id): d.soc for d in new.departures})
        for e in evs:
            p = applied[e.ev_id]
            ev_rows.append((e.ev_id, e.session_id, e.station_id, t_k, p, soc_end.get(e.session_id, np.nan),
                            e.energy_kwh, e.p_ch_max_kw, e.p_dis_max_kw, e.session_id in stayed))
            s = st_index[e.station_id]
            station_net[k, s] += p
            station_ch[k, s] += max(p, 0.0)
            station_dis[k, s] += max(-p, 0.0)
        # the plan's first step: station q, bus voltages, DER and storage injections
        res = controller.last_result
        if res is not None and decision.stats.status != "failed":
            t0 = controller.last_window.times[0]
            st_tab = _first_step(res.tables.get("station"), t0)
            if st_tab is not None:
                q = np.zeros(n_st)
                q[[st_index[s] for s in st_tab["station_id"].astype(str)]] = st_tab["q_kvar"].to_numpy(float)
                central = np.array([s not in modes for s in station_ids])
                station_q[k] = np.where(central, q, 0.0)
            bus_tab = _first_step(res.tables.get("bus"), t0)
            if bus_tab is not None and len(bus_tab):
                cols = [bus_pos[b] for b in bus_tab["bus_id"].astype(str)]
                vm_lin[k, cols] = bus_tab["vm_pu_lindistflow"].to_numpy(float)
                vm_model[k, cols] = bus_tab["vm_pu_ac_model"].to_numpy(float)
            der_tab = _first_step(res.tables.get("der"), t0)
            if der_tab is not None and len(der_tab):
                cols = np.array([bus_pos.get(b, -1) for b in der_tab["bus_id"].astype(str)])
                ok = cols >= 0
                np.add.at(der_p[k], cols[ok], der_tab["p_kw"].to_numpy(float)[ok])
                np.add.at(der_q[k], cols[ok], der_tab["q_kvar"].fillna(0.0).to_numpy(float)[ok])
            s_tab = _first_step(res.tables.get("storage"), t0)
            if s_tab is not None and len(s_tab):
                qmap = dict(zip(s_tab["storage_id"].astype(str), s_tab["q_kvar"].fillna(0.0).to_numpy(float)))
                for sid in sto_ids:
                    b = bus_pos.get(str(storage.loc[storage["storage_id"].astype(str) == sid, "bus_id"].iloc[0]), -1)
                    if b >= 0:
                        sto_q[k, b] -= qmap.get(sid, 0.0)  # storage q is an injection; net load is −q
        for j, sid in enumerate(sto_ids):
            b = bus_pos.get(str(storage.iloc[j]["bus_id"]), -1)
            p = sto_applied.get(sid, 0.0)
            if b >= 0:
                sto_p[k, b] += p
            q_inj = 0.0 - float(sto_q[k, b]) if b >= 0 else 0.0
            sto_rows.append((sid, str(storage.iloc[j]["bus_id"]), t_k, max(p, 0.0), max(-p, 0.0), q_inj, sto_e[sid]))
        for s_i, s in enumerate(station_ids):
            mode = modes.get(s, "central")
            mode_count[mode] += 1
            req = request.get(s) if s in modes else float(decision.setpoints.station_kw.get(s, 0.0))
            mode_rows.append((s, t_k, mode, req, station_net[k, s_i]))
        st = decision.stats
        step_rows.append({
            "time": t_k, "step": k, "status": st.status, "termination": st.termination, "objective": st.objective,
            "warm": st.warm, "iterations": st.iterations, "build_s": st.build_s, "solve_s": st.solve_s,
            "check_s": st.check_s, "wall_s": st.wall_s, "evs": st.evs, "forecast_arrivals": st.forecast_arrivals,
            "arrivals": int(new.counts.get("arrivals", 0)), "departures": int(new.counts.get("departures", 0)),
            "needs_clipped": st.needs_clipped, "stations_hold": sum(m == "hold" for m in modes.values()),
            "stations_fallback": sum(m == "fallback" for m in modes.values()),
            "plant_clipped": len(new.clipped_ev_setpoints), "ignored_setpoints": len(new.ignored_ev_setpoints),
            "ev_kw": float(station_net[k].sum()), "storage_kw": float(sum(sto_applied.values()))})
        if progress is not None:
            progress(k + 1, steps, {"time": t_k, "status": st.status, "solve_s": st.solve_s, "wall_s": st.wall_s,
                                    "modes": dict(modes)})
        if decision.stats.status != "failed":
            prev = decision
            prev_session_station = {e.session_id: e.station_id for e in evs}
        report = new

    # ---- realised data, AC check of the applied steps and of the baseline
    actual = actual_series(instance, times)
    st_bus = instance.stations["bus_id"].astype(str).map(bus_pos).fillna(-1).to_numpy(np.int64)
    on_bus = st_bus >= 0

    def to_bus(per_station: np.ndarray) -> np.ndarray:
        out = np.zeros((steps, n_bus))
        if on_bus.any():
            np.add.at(out.T, st_bus[on_bus], per_station[:, on_bus].T)
        return out

    p_net = actual.load_p_kw + to_bus(station_net) + sto_p - der_p
    q_net = actual.load_q_kvar - to_bus(station_q) - der_q + sto_q
    base_p = actual.load_p_kw + to_bus(base_station_kw) - _renewables(instance, actual, n_bus, bus_pos, steps)
    base_q = actual.load_q_kvar
    check = ac_check and n_bus > 0 and len(feeder.substations) > 0
    ac = base_ac = None
    if check:
        ac = run_powerflow(feeder, pd.DataFrame(p_net, index=times, columns=bus_ids),
                           pd.DataFrame(q_net, index=times, columns=bus_ids), raise_on_failure=False)
        base_ac = run_powerflow(feeder, pd.DataFrame(base_p, index=times, columns=bus_ids),
                                pd.DataFrame(base_q, index=times, columns=bus_ids), raise_on_failure=False)
        viol = violations(ac, feeder)
        base_viol = violations(base_ac, feeder)
        # a step whose AC power flow did not converge (reported as a violation) falls back to the copper plate
        imp = np.where(ac.converged, ac.substation_p_kw.sum(axis=1), p_net.sum(axis=1))
        base_imp = np.where(base_ac.converged, base_ac.substation_p_kw.sum(axis=1), base_p.sum(axis=1))
    else:
        viol = pd.DataFrame({c: pd.Series(dtype=object if c in ("kind", "element_id", "unit") else float)
                             for c in VIOLATION_COLUMNS})
        base_viol = viol
        imp = p_net.sum(axis=1)
        base_imp = base_p.sum(axis=1)
    viol_per_step = _per_step(viol, times)
    dt_h = step_s / 3600.0
    cost = float(np.sum(dt_h * (actual.price_buy * np.maximum(imp, 0.0) - actual.price_sell * np.maximum(-imp, 0.0))))
    base_cost = float(np.sum(dt_h * (actual.price_buy * np.maximum(base_imp, 0.0)
                                     - actual.price_sell * np.maximum(-base_imp, 0.0))))

    # ---- tables
    ev_df = pd.DataFrame(ev_rows, columns=["ev_id", "session_id", "station_id", "time", "p_kw", "soc", "_e0", "_pch",
                                           "_pdis", "_stayed"])
    checks = _ev_checks(ev_df, instance, soc_min, caps, dt_h)
    ev_table = ev_df[["ev_id", "session_id", "station_id", "time", "p_kw", "soc"]].reset_index(drop=True)
    station_table = _station_table(station_ids, times, station_ch, station_dis, station_q)
    tables: dict[str, pd.DataFrame] = {"ev": ev_table, "station": station_table}
    vm_ac = ac.vm_pu if ac is not None else np.full((steps, n_bus), np.nan)
    tables["bus"] = pd.DataFrame({
        "bus_id": np.tile(np.asarray(bus_ids, dtype=object), steps), "time": np.repeat(times, n_bus),
        "vm_pu_lindistflow": vm_lin.ravel(), "vm_pu_ac_model": vm_model.ravel(), "vm_pu_ac": vm_ac.ravel()})
    if ac is not None:
        frame = ac.line_frame()
        tables["line"] = frame[["line_id", "time", "p_kw", "q_kvar", "current_a", "loading"]].reset_index(drop=True)
    else:
        tables["line"] = pd.DataFrame(columns=["line_id", "time", "p_kw", "q_kvar", "current_a", "loading"])
    tables["mode"] = pd.DataFrame(mode_rows, columns=list(MODE_COLUMNS))
    steps_df = pd.DataFrame(step_rows)
    steps_df["import_kw"] = imp
    steps_df["baseline_import_kw"] = base_imp
    steps_df["vm_min_pu"] = _row_min(vm_ac)
    steps_df["vm_max_pu"] = -_row_min(-vm_ac)
    steps_df["ac_violations"] = viol_per_step
    steps_df["price_buy_per_kwh"] = actual.price_buy
    tables["steps"] = steps_df[list(STEP_COLUMNS)]
    if sto_ids:
        tables["storage"] = pd.DataFrame(sto_rows, columns=["storage_id", "bus_id", "time", "p_ch_kw", "p_dis_kw",
                                                            "q_kvar", "e_kwh"])
    base_ch = np.maximum(base_station_kw, 0.0)
    baseline = {
        "station": _station_table(station_ids, times, base_ch, np.maximum(-base_station_kw, 0.0),
                                  np.zeros_like(base_ch)),
        "steps": pd.DataFrame({
            "time": times, "ev_kw": base_station_kw.sum(axis=1), "import_kw": base_imp,
            "vm_min_pu": _row_min(base_ac.vm_pu if base_ac is not None else np.full((steps, n_bus), np.nan)),
            "vm_max_pu": -_row_min(-(base_ac.vm_pu if base_ac is not None else np.full((steps, n_bus), np.nan))),
            "ac_violations": _per_step(base_viol, times)})}
    sessions = (_plant_sessions(plant.sessions(), instance, t_start, t_end) if trips
                else _replay_sessions(plant.sessions(), instance))

    # ---- summary
    solve = steps_df["solve_s"].to_numpy(float)
    lin_err = np.abs(vm_lin - vm_model)
    lin_app = np.abs(vm_lin - vm_ac)
    limit = dict(checks["limits"])
    limit["plant_clipped"] = int(clipped_total)
    limit["station_site_cap"] = int((station_net > _site_cap(instance, station_ids)[None, :] + LIMIT_ATOL_KW).sum())
    limit["station_discharge_cap"] = int((station_dis > _site_dis_cap(instance, station_ids)[None, :]
                                          + LIMIT_ATOL_KW).sum())
    left = sessions[~sessions["censored"]]
    base_left = base_sessions[~base_sessions["censored"]]
    summary: dict[str, Any] = {
        "instance": instance.metadata.name, "formulation": controller.formulation.name,
        "plant": "event" if trips else "replay",
        "forecaster": getattr(controller.forecaster, "name", type(controller.forecaster).__name__),
        "start": times[0].isoformat(), "steps": int(steps), "step_minutes": step_s / 60.0,
        "horizon_steps": int(controller.steps), "evs": int(len(instance.evs)),
        "cost": cost, "baseline_cost": base_cost,
        "peak_import_kw": float(np.nanmax(imp)), "baseline_peak_import_kw": float(np.nanmax(base_imp)),
        "peak_reduction_kw": float(np.nanmax(base_imp) - np.nanmax(imp)),
        "energy_delivered_kwh": float(station_ch.sum() * dt_h),
        "energy_discharged_kwh": float(station_dis.sum() * dt_h),
        "baseline_energy_kwh": float(base_ch.sum() * dt_h),
        "energy_unmet_kwh": float(left["shortfall_kwh"].sum()),
        "sessions_with_shortfall": int((left["shortfall_kwh"] > 0).sum()),
        "sessions_departed": int(len(left)),
        "baseline_energy_unmet_kwh": float(base_left["shortfall_kwh"].sum()),
        "baseline_sessions_with_shortfall": int((base_left["shortfall_kwh"] > 0).sum()),
        "soc_floor_violations": int(checks["soc_floor"]),
        "limit_violations": limit, "limit_violations_total": int(sum(limit.values())),
        "ignored_setpoints": int(ignored_total),
        "energy_continuity_max_err_kwh": float(checks["continuity"]),
        "ac_violations": count_by_kind(viol) if len(viol) else {},
        "ac_violation_steps": int((viol_per_step > 0).sum()),
        "baseline_ac_violations": count_by_kind(base_viol) if len(base_viol) else {},
        "lindistflow_error_pu": float(np.nanmax(lin_err)) if np.isfinite(lin_err).any() else None,
        "lindistflow_vs_applied_pu": float(np.nanmax(lin_app)) if np.isfinite(lin_app).any() else None,
        "solve_s": {"median": float(np.median(solve)), "mean": float(solve.mean()), "max": float(solve.max()),
                    "total": float(solve.sum())},
        "solve_s_per_step": [float(v) for v in solve],
        "wall_s_per_step": [float(v) for v in steps_df["wall_s"]],
        "warm_steps": int(steps_df["warm"].sum()),
        "soft_limit_steps": int((steps_df["status"] == "soft_limits").sum()),
        "failed_steps": int((steps_df["status"] == "failed").sum()),
        "needs_clipped": int(steps_df["needs_clipped"].sum()),
        "modes": mode_count, "outages": [dataclasses.asdict(o) for o in schedule.outages],
        "wall_s": time.perf_counter() - t_wall,
    }
    return MPCRun(tables=tables, violations=viol, baseline=baseline, sessions=sessions,
                  baseline_sessions=base_sessions, summary=summary, decisions=decisions, controller=controller)


# ---------------------------------------------------------------------------------------------- helpers

def _row_min(a: np.ndarray) -> np.ndarray:
    """Minimum of each row ignoring NaN (NaN for an all-NaN or empty row), without warnings."""
    if a.ndim != 2 or a.shape[1] == 0:
        return np.full(a.shape[0], np.nan)
    filled = np.where(np.isnan(a), np.inf, a).min(axis=1)
    return np.where(np.isfinite(filled), filled, np.nan)


def _per_step(viol: pd.DataFrame, times: pd.DatetimeIndex) -> np.ndarray:
    if not len(viol):
        return np.zeros(len(times), dtype=np.int64)
    idx = times.get_indexer(pd.DatetimeIndex(viol["time"]))
    return np.bincount(idx[idx >= 0], minlength=len(times)).astype(np.int64)


def _renewables(instance: Instance, actual: Any, n_bus: int, bus_pos: Mapping[str, int], steps: int) -> np.ndarray:
    """Available PV and wind power per bus (steps × buses), kW."""
    out = np.zeros((steps, n_bus))
    for table, avail in ((instance.feeder.pv, actual.pv_avail_kw), (instance.feeder.wind, actual.wind_avail_kw)):
        if len(table) and avail is not None and avail.size:
            b = table["bus_id"].astype(str).map(bus_pos).fillna(-1).to_numpy(np.int64)
            ok = b >= 0
            np.add.at(out.T, b[ok], avail[ok])
    return out


def _site_cap(instance: Instance, station_ids: np.ndarray) -> np.ndarray:
    st = instance.station_power().set_index("station_id").reindex(station_ids)
    return np.minimum(st["p_site_max_kw"].to_numpy(float),
                      st["n_chargers"].to_numpy(float) * st["p_ch_max_kw"].to_numpy(float))


def _site_dis_cap(instance: Instance, station_ids: np.ndarray) -> np.ndarray:
    st = instance.station_power().set_index("station_id").reindex(station_ids)
    dis = np.where(st["v2g"].fillna(False).to_numpy(bool), st["p_dis_max_kw"].to_numpy(float), 0.0)
    return np.minimum(st["p_site_dis_max_kw"].to_numpy(float), st["n_chargers"].to_numpy(float) * dis)


def _station_table(station_ids: np.ndarray, times: pd.DatetimeIndex, ch: np.ndarray, dis: np.ndarray,
                   q: np.ndarray) -> pd.DataFrame:
    T, n = ch.shape
    return pd.DataFrame({"station_id": np.repeat(station_ids, T), "time": np.tile(times, n),
                         "p_ch_kw": ch.T.ravel(), "p_dis_kw": dis.T.ravel(), "q_kvar": q.T.ravel()})


def _ev_checks(ev: pd.DataFrame, instance: Instance, soc_min: Mapping[str, float], caps: Mapping[str, float],
               dt_h: float) -> dict[str, Any]:
    """Limit, SOC-floor and energy-continuity checks of the applied EV setpoints."""
    if not len(ev):
        return {"limits": {"setpoint_grid": 0, "ev_charge_limit": 0, "ev_discharge_limit": 0}, "soc_floor": 0,
                "continuity": 0.0}
    from optev.blocks.disaggregate import QUANTUM_KW

    p = ev["p_kw"].to_numpy(float)
    cap = ev["ev_id"].map(caps).to_numpy(float)
    _, p_ch, eff_ch, eff_dis = ev_station_params(instance, ev["ev_id"].tolist(), ev["station_id"].tolist())
    pch = ev["_pch"].astype(float).fillna(pd.Series(p_ch, index=ev.index)).to_numpy(float)
    pdis = ev["_pdis"].astype(float).fillna(0.0).to_numpy(float)
    grid = np.abs(p / QUANTUM_KW - np.round(p / QUANTUM_KW)) > SETPOINT_GRID_ATOL
    soc = ev["soc"].to_numpy(float)
    floor = ev["ev_id"].map(soc_min).to_numpy(float)
    below = (p < 0) & (soc < floor - SOC_ATOL)
    e_end = soc * cap
    e0 = ev["_e0"].to_numpy(float)
    # a battery stops charging when full (the top-off rule of optev.blocks.disaggregate)
    expected = np.minimum(e0 + dt_h * eff_ch * np.maximum(p, 0.0), np.maximum(cap, e0)) \
        - dt_h * np.maximum(-p, 0.0) / eff_dis
    # whole-step continuity (an EV that left during the step was plugged for part of it only)
    err = np.where(ev["_stayed"].to_numpy(bool), np.abs(e_end - expected), 0.0)
    return {"limits": {"setpoint_grid": int(grid.sum()), "ev_charge_limit": int((p > pch + LIMIT_ATOL_KW).sum()),
                       "ev_discharge_limit": int((p < -pdis - LIMIT_ATOL_KW).sum())},
            "soc_floor": int(below.sum()), "continuity": float(np.nanmax(err)) if np.isfinite(err).any() else 0.0}


def _capacity(table: pd.DataFrame, instance: Instance) -> np.ndarray:
    cap = instance.evs.set_index("ev_id")["vtype_id"].reindex(table["ev_id"]).map(
        instance.vehicle_types.set_index("vtype_id")["battery_kwh"]).to_numpy(float)
    return cap


def _replay_sessions(table: pd.DataFrame, instance: Instance) -> pd.DataFrame:
    cap = _capacity(table, instance)
    need = table["soc_target"].to_numpy(float) * cap
    e_dep = table["soc_departure"].to_numpy(float) * cap
    short = np.where(table["censored"].to_numpy(bool), 0.0, np.maximum(need - e_dep, 0.0))
    short[short < 1e-6] = 0.0
    out = table[["session_id", "ev_id", "station_id", "arrival_s", "departure_s", "soc_arrival", "soc_target",
                 "soc_departure"]].copy()
    out["need_kwh"] = need
    out["e_departure_kwh"] = e_dep
    out["shortfall_kwh"] = short
    out["censored"] = table["censored"].to_numpy(bool)
    return out[list(SESSION_RESULT_COLUMNS)].reset_index(drop=True)


def _plant_sessions(table: pd.DataFrame, instance: Instance, t_start: float, t_end: float) -> pd.DataFrame:
    """Sessions of the event plant that were plugged in during ``[t_start, t_end)``."""
    keep = (~table["rejected"].to_numpy(bool) & table["plug_in"].notna().to_numpy()
            & (table["departure_s"].to_numpy(float) > t_start) & (table["arrival_s"].to_numpy(float) < t_end))
    t = table.loc[keep].reset_index(drop=True).copy()
    t["censored"] = t["censored"].to_numpy(bool) | (t["departure_s"].to_numpy(float) > t_end)
    return _replay_sessions(t, instance)

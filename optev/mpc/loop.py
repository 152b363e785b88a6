"""The controlled day, step by step: state → decision → edge autonomy → plant → records.

Every step of :func:`controlled_day`:

1. the plant's measured state (plugged EVs with their energy, expected departure and
   need; outage flags; storage energies) becomes a :class:`~optev.mpc.state.ControlState`;
2. the controller decides (it knows only *forecast* arrivals);
3. stations that dispatch does not reach run autonomously (:mod:`optev.mpc.edge`: hold the
   last valid schedule, then the safe local policy); the others apply the decision;
4. storage follows the decision's first step within its limits, DER the plan's first step
   (:mod:`optev.mpc.injections`);
5. the plant realises the interval with the real arrivals and departures; EVs that arrive
   during it have no setpoint: at a central slow or private station they share the power
   the plan reserved for arrivals there (``decision.arrival_allowance_kw``), elsewhere they
   charge under the plant's local rule (full power within the site cap) until the next
   decision — what they draw is recorded like every other session's
   (:mod:`optev.mpc.accounting`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.mpc.controller import Controller
from optev.mpc.edge import EdgePolicy, HeldSchedule, OutageSchedule, local_setpoints
from optev.mpc.injections import DerRecord, StorageRecord, first_step
from optev.mpc.plantrun import PlantRun
from optev.mpc.state import ControlDecision, ControlState, EVState


@dataclass
class LoopRecord:
    """What the controlled day recorded besides the plant's session steps."""

    step_rows: list[dict[str, Any]] = field(default_factory=list)
    mode_rows: list[tuple] = field(default_factory=list)
    mode_count: dict[str, int] = field(default_factory=lambda: {"central": 0, "hold": 0, "fallback": 0})
    decisions: list[ControlDecision] = field(default_factory=list)
    station_q: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    vm_lin: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    vm_model: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


def _held(decision: ControlDecision | None, station: str, session_station: Mapping[str, str]) -> HeldSchedule | None:
    if decision is None or decision.stats.status == "failed" or station not in decision.station_plan_kw:
        return None
    ev = {sid: plan for sid, plan in decision.ev_plan_kw.items() if session_station.get(sid) == station}
    return HeldSchedule(start_s=decision.plan_start_s, step_s=decision.plan_step_s,
                        station_kw=decision.station_plan_kw[station], ev_kw=ev, received_s=decision.time_s)


class _Edge:
    """Stations without dispatch: their mode and the setpoints they apply themselves."""

    def __init__(self, instance: Instance, policy: EdgePolicy, schedule: OutageSchedule, step_s: float) -> None:
        self.instance, self.policy, self.schedule, self.step_s = instance, policy, schedule, step_s
        self.frozen: dict[str, HeldSchedule | None] = {}
        self.prev: ControlDecision | None = None
        self.prev_session_station: dict[str, str] = {}

    def modes(self, now: float) -> tuple[dict[str, str], dict[str, float]]:
        offline = self.schedule.offline(now)
        for s in list(self.frozen):
            if s not in offline:
                del self.frozen[s]  # reconnected: central control again
        modes: dict[str, str] = {}
        for s, since in offline.items():
            if s not in self.frozen:
                self.frozen[s] = _held(self.prev, s, self.prev_session_station)
            sched = self.frozen[s]
            covers = sched is not None and sched.index(now) is not None
            modes[s] = self.policy.mode(now - since, covers)
        return modes, offline

    def local(self, evs: list[EVState], now: float, modes: dict[str, str]) -> tuple[dict[str, float], dict[str, float]]:
        if not modes:
            return {}, {}
        held = {s: h for s, h in self.frozen.items() if h is not None}
        return local_setpoints(self.instance, evs, now, self.step_s, modes, held, self.policy)

    def remember(self, decision: ControlDecision, evs: list[EVState]) -> None:
        if decision.stats.status != "failed":
            self.prev = decision
            self.prev_session_station = {e.session_id: e.station_id for e in evs}


def controlled_day(instance: Instance, controller: Controller, run: PlantRun, times: pd.DatetimeIndex,
                   schedule: OutageSchedule, der: DerRecord, storage: StorageRecord, *,
                   progress: Callable[[int, int, dict[str, Any]], None] | None = None,
                   keep_decisions: bool = False) -> LoopRecord:
    """Run the controlled day (module docstring) on ``run``'s plant; fill ``der`` and ``storage``."""
    steps, step_s = len(times), run.step_s
    dt_h = step_s / 3600.0
    station_ids = run.station_ids
    st_index = {s: i for i, s in enumerate(station_ids)}
    bus_ids = instance.feeder.bus_ids
    bus_pos = {b: i for i, b in enumerate(bus_ids)}
    rec = LoopRecord(station_q=np.zeros((steps, station_ids.size)),
                     vm_lin=np.full((steps, len(bus_ids)), np.nan), vm_model=np.full((steps, len(bus_ids)), np.nan))
    edge = _Edge(instance, controller.edge, schedule, step_s)
    for k in range(steps):
        now = run.t_start + k * step_s
        modes, offline = edge.modes(now)
        evs = run.state_evs()
        decision = controller.step(ControlState(time_s=now, evs=evs, offline_stations=offline,
                                                storage_e_kwh=dict(storage.bank.e_kwh)))
        if keep_decisions:
            rec.decisions.append(decision)
        local_kw, request = edge.local(evs, now, modes)
        applied = {e.ev_id: (local_kw.get(e.ev_id, 0.0) if e.station_id in modes
                             else float(decision.setpoints.ev_kw.get(e.ev_id, 0.0))) for e in evs}
        sto_applied = storage.bank.apply(decision.storage_kw, dt_h)
        # EVs arriving during the step share the plan's allowance at central stations (fast
        # stations and stations without dispatch: full power within the site cap)
        allowance = {s: v for s, v in decision.arrival_allowance_kw.items() if s not in modes}
        new = run.advance(k, evs, applied, modes, allowance)
        res = controller.last_result if decision.stats.status != "failed" else None
        window = controller.last_window
        t0 = window.times[0] if res is not None and window is not None else times[k]
        _plan_first_step(rec, k, res, t0, st_index, bus_pos, modes, station_ids, der, storage, sto_applied)
        commanded = np.zeros(station_ids.size)
        for e in evs:
            commanded[st_index[e.station_id]] += applied[e.ev_id]
        for s_i, s in enumerate(station_ids):
            mode = modes.get(s, "central")
            rec.mode_count[mode] += 1
            req = request.get(s) if s in modes else float(decision.setpoints.station_kw.get(s, 0.0))
            rec.mode_rows.append((s, times[k], mode, req, commanded[s_i]))
        rec.step_rows.append(_step_row(k, times[k], decision, new, modes, commanded, sto_applied))
        if progress is not None:
            st = decision.stats
            progress(k + 1, steps, {"time": times[k], "status": st.status, "solve_s": st.solve_s, "wall_s": st.wall_s,
                                    "modes": dict(modes)})
        edge.remember(decision, evs)
    return rec


def _plan_first_step(rec: LoopRecord, k: int, res: Any, t0: pd.Timestamp, st_index: Mapping[str, int],
                     bus_pos: Mapping[str, int], modes: Mapping[str, str], station_ids: np.ndarray, der: DerRecord,
                     storage: StorageRecord, sto_applied: Mapping[str, float]) -> None:
    """Station q, bus voltages of the plan, DER and storage of the plan's first step."""
    q_plan: dict[str, float] = {}
    if res is not None:
        st_tab = first_step(res.tables.get("station"), t0)
        if st_tab is not None:
            q = np.zeros(station_ids.size)
            q[[st_index[s] for s in st_tab["station_id"].astype(str)]] = st_tab["q_kvar"].to_numpy(float)
            central = np.array([s not in modes for s in station_ids])
            rec.station_q[k] = np.where(central, q, 0.0)
        bus_tab = first_step(res.tables.get("bus"), t0)
        if bus_tab is not None and len(bus_tab):
            cols = [bus_pos[b] for b in bus_tab["bus_id"].astype(str)]
            rec.vm_lin[k, cols] = bus_tab["vm_pu_lindistflow"].to_numpy(float)
            rec.vm_model[k, cols] = bus_tab["vm_pu_ac_model"].to_numpy(float)
        der.follow(k, first_step(res.tables.get("der"), t0))
        s_tab = first_step(res.tables.get("storage"), t0)
        if s_tab is not None and len(s_tab):
            q_plan = dict(zip(s_tab["storage_id"].astype(str), s_tab["q_kvar"].fillna(0.0).to_numpy(float)))
    storage.record(k, sto_applied, q_plan)


def _step_row(k: int, t_k: pd.Timestamp, decision: ControlDecision, new: Any, modes: Mapping[str, str],
              commanded: np.ndarray, sto_applied: Mapping[str, float]) -> dict[str, Any]:
    st = decision.stats
    return {
        "time": t_k, "step": k, "status": st.status, "termination": st.termination, "objective": st.objective,
        "warm": st.warm, "iterations": st.iterations, "build_s": st.build_s, "solve_s": st.solve_s,
        "check_s": st.check_s, "wall_s": st.wall_s, "evs": st.evs, "forecast_arrivals": st.forecast_arrivals,
        "arrivals": int(new.counts.get("arrivals", 0)), "departures": int(new.counts.get("departures", 0)),
        "needs_clipped": st.needs_clipped, "stations_hold": sum(m == "hold" for m in modes.values()),
        "stations_fallback": sum(m == "fallback" for m in modes.values()),
        "plant_clipped": len(new.clipped_ev_setpoints), "ignored_setpoints": len(new.ignored_ev_setpoints),
        "ev_set_kw": float(commanded.sum()), "storage_kw": float(sum(sto_applied.values())),
        "loss_converged": getattr(st, "loss_converged", None), "loss_error_pu": getattr(st, "loss_error_pu", None)}

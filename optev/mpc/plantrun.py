"""One day of a plant, stepped and recorded: the part the controlled day and its uncontrolled
baseline share (:mod:`optev.mpc.simulate`).

:class:`PlantRun` wraps the event simulation (:class:`optev.mobility.Plant`, instances with
trips) or the sessions replay (:class:`optev.mpc.replay.ReplayPlant`, instances with only a
sessions table):

* before ``t_start`` the event plant runs uncontrolled from the instance start (the replay
  starts at ``t_start`` with every session plugged in then at its arrival SOC);
* :meth:`PlantRun.state_evs` returns the EVs of the last report: the plant reports them as the
  controller measures them (:class:`optev.mobility.state.EVState`), nothing to convert;
* :meth:`PlantRun.advance` applies one interval's setpoints and records what every session
  realised (:class:`optev.mpc.accounting.SessionSteps`) and what the plant metered per
  station;
* :meth:`PlantRun.session_results` is the session table at the end of the run
  (:data:`SESSION_RESULT_COLUMNS`; sessions still plugged in are ``censored``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.mobility.core import PlantConfig
from optev.mobility.plant import Plant
from optev.mobility.state import EVState, Setpoints, StepReport
from optev.mpc.accounting import SessionSteps
from optev.mpc.replay import ReplayPlant
from optev.tolerances import SHORTFALL_ATOL_KWH, TIME_ATOL_S

SESSION_RESULT_COLUMNS = ("session_id", "ev_id", "station_id", "arrival_s", "departure_s", "due_s", "soc_arrival",
                          "soc_target", "soc_departure", "need_kwh", "e_arrival_kwh", "e_departure_kwh",
                          "charged_kwh", "discharged_kwh", "shortfall_kwh", "trip_index", "censored", "settled")
"""Columns of ``MPCRun.sessions`` / ``baseline_sessions``: sessions plugged in during the run;
``due_s`` the expected departure (the next trip; the end of the simulated day at the last
stop; NaN at a fast station, where the car leaves when charged); energies at the battery,
kWh: ``need_kwh = soc_target·C``, ``e_arrival_kwh``, ``e_departure_kwh`` (at the end of the
run for a ``censored`` session, still plugged in), ``charged_kwh``/``discharged_kwh`` in
the session; ``settled`` for a session that left or was due by the end of the run, and
``shortfall_kwh = max(need − E_departure, 0)`` for settled sessions (0 for the others);
``trip_index`` the trip the session follows (event plant; −1 for the sessions replay and
the stop at the start of the day)."""


def battery_capacity(instance: Instance, ev_ids: Any) -> np.ndarray:
    """Usable battery capacity (kWh) of each EV id."""
    vt = instance.evs.set_index("ev_id")["vtype_id"].reindex(pd.Index(ev_ids))
    return vt.map(instance.vehicle_types.set_index("vtype_id")["battery_kwh"]).to_numpy(float)


class PlantRun:
    """A plant stepped over ``[t_start, t_start + steps·step_s)`` and recorded (module docstring).

    Parameters
    ----------
    instance : Instance
    t_start, step_s : float
        First step and interval, s after the instance start.
    steps : int
    config : PlantConfig, optional
        Event plant behaviour (its horizon must cover the run).
    router : router, optional
        Event plant travel router.
    """

    def __init__(self, instance: Instance, t_start: float, step_s: float, steps: int, *,
                 config: PlantConfig | None = None, router: Any = None) -> None:
        self.instance = instance
        self.t_start, self.step_s, self.steps = float(t_start), float(step_s), int(steps)
        self.trips = len(instance.trips) > 0
        self.records = SessionSteps()
        self.station_ids = instance.stations["station_id"].astype(str).to_numpy(object)
        self._st_index = {s: i for i, s in enumerate(self.station_ids)}
        self.metered_kwh = np.zeros((self.steps, self.station_ids.size))
        evs = instance.evs
        self.caps = dict(zip(evs["ev_id"].astype(str), battery_capacity(instance, evs["ev_id"])))
        self.clipped = 0
        self.ignored = 0
        if self.trips:
            self.plant: Any = Plant(instance, config or PlantConfig(), router=router)
            self.report = StepReport(t_start_s=0.0, t_end_s=0.0)
            while self.plant.time_s < self.t_start - 1e-9:
                self.report = self.plant.advance(min(self.step_s, self.t_start - self.plant.time_s), None)
        else:
            self.plant = ReplayPlant(instance, start_s=self.t_start)
            self.report = self.plant.report_now()

    def state_evs(self) -> list[EVState]:
        """The EVs plugged in now (at the end of the last interval), as the controller measures them."""
        return list(self.report.plugged)

    def advance(self, k: int, evs: list[EVState], ev_kw: Mapping[str, float] | None,
                modes: Mapping[str, str], station_kw: Mapping[str, float] | None = None) -> StepReport:
        """Realise step ``k`` with the EV setpoints ``ev_kw`` (None: uncontrolled) and record it.

        ``evs`` are the EVs of the state the setpoints were decided for; ``modes`` the mode
        of every commanded EV's station (central, hold, fallback); ``station_kw`` the
        station setpoints that EVs without an EV setpoint (arrivals during the step) share.
        """
        sp = None if ev_kw is None else Setpoints(ev_kw=dict(ev_kw), station_kw=dict(station_kw or {}))
        new = self.plant.advance(self.step_s, sp)
        self.clipped += len(new.clipped_ev_setpoints)
        self.ignored += len(new.ignored_ev_setpoints)
        set_by = {e.session_id: float(ev_kw.get(e.ev_id, 0.0)) for e in evs} if ev_kw is not None else {}
        mode_by = {e.session_id: modes.get(e.station_id, "central") for e in evs} if ev_kw is not None else {}
        e_start = {e.session_id: e.energy_kwh for e in evs}
        for ev in new.plug_ins:
            e_start.setdefault(str(ev.session_id), ev.soc * self.caps[ev.ev_id])
        limits = {e.session_id: (_nan(e.p_ch_max_kw), _nan(e.p_dis_max_kw)) for e in evs} if ev_kw is not None else {}
        self.records.add(k, new, set_by, mode_by, e_start, limits)
        for s in new.stations:
            self.metered_kwh[k, self._st_index[s.station_id]] = s.energy_kwh
        self.report = new
        return new

    def session_results(self) -> pd.DataFrame:
        """Sessions plugged in during the run so far (:data:`SESSION_RESULT_COLUMNS`)."""
        table = self.plant.sessions()
        t_end = self.plant.time_s
        if self.trips:
            keep = (~table["rejected"].to_numpy(bool) & table["plug_in"].notna().to_numpy()
                    & (table["departure_s"].to_numpy(float) > self.t_start)
                    & (table["arrival_s"].to_numpy(float) < t_end))
            table = table.loc[keep].reset_index(drop=True)
        return session_results(table, self.instance, t_end)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def session_results(table: pd.DataFrame, instance: Instance, t_end: float) -> pd.DataFrame:
    """A plant's session table (event plant or sessions replay) at the end of a run ``t_end``,
    in :data:`SESSION_RESULT_COLUMNS`."""
    cap = battery_capacity(instance, table["ev_id"])
    censored = table["censored"].to_numpy(bool)
    due = table["expected_departure"].to_numpy(float) if "expected_departure" in table else \
        table["departure_s"].to_numpy(float)
    if "expected_departure" not in table:  # replay: a censored session's departure_s is "now"
        due = np.where(censored, instance.sessions.set_index("session_id")["departure_s"].reindex(
            table["session_id"]).to_numpy(float), due)
    with np.errstate(invalid="ignore"):
        settled = ~censored | (due <= t_end + TIME_ATOL_S)
    need = table["soc_target"].to_numpy(float) * cap
    e_dep = table["soc_departure"].to_numpy(float) * cap
    short = np.where(settled, np.maximum(need - e_dep, 0.0), 0.0)
    short[short < SHORTFALL_ATOL_KWH] = 0.0
    out = table[["session_id", "ev_id", "station_id", "arrival_s", "departure_s"]].copy()
    out["due_s"] = due
    for c in ("soc_arrival", "soc_target", "soc_departure"):
        out[c] = table[c].to_numpy(float)
    out["need_kwh"] = need
    out["e_arrival_kwh"] = table["soc_arrival"].to_numpy(float) * cap
    out["e_departure_kwh"] = e_dep
    out["charged_kwh"] = table["energy_delivered_kwh"].to_numpy(float)
    out["discharged_kwh"] = table["energy_discharged_kwh"].to_numpy(float)
    out["shortfall_kwh"] = short
    out["trip_index"] = table["trip_index"].to_numpy(np.int64) if "trip_index" in table else -1
    out["censored"] = censored
    out["settled"] = settled
    return out[list(SESSION_RESULT_COLUMNS)].reset_index(drop=True)

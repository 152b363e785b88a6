"""The uncontrolled baseline of a closed-loop day, run by the same rules as the controlled day.

Two parts (:func:`uncontrolled_day`, :func:`dispatch_der`):

1. **EVs** — the same plant over the same steps without setpoints: every EV charges at full
   power as soon as it plugs in (within its station's site cap), recorded session by
   session like the controlled day (:class:`optev.mpc.plantrun.PlantRun`). For an instance
   with trips the plant then runs on to the end of its horizon; its plugged sessions are
   the history of the default (seasonal-profile) forecaster.
2. **DER and storage** — like for like (:mod:`optev.mpc.injections`): components the
   formulation dispatches are dispatched for the baseline by the *same* formulation in the
   *same* rolling horizon (step, horizon, forecaster of prices, base loads and
   availability), with the EV load fixed at the uncontrolled profile. The baseline's
   dispatcher is told that profile exactly (the realised uncontrolled load at the stations'
   buses; beyond the last run step it repeats by time of day when the run covers a day,
   else it is 0) and plans no EV: it is the best DER dispatch a grid operator could make for
   uncontrolled charging. Uncontrolled chargers give no reactive power either, so the
   baseline's formulation has the station block's ``reactive`` option off
   (:func:`baseline_formulation`). Its windows are solved with soft limits from the start
   (:class:`~optev.mpc.controller.Controller` ``soft_limits=True``): the uncontrolled load may
   break a limit the DER cannot relieve, and the dispatcher then keeps the violation as
   small as its DER allows. Components the formulation does not model follow the fixed
   rule in both days.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.window import instance_origin
from optev.compose.formulation import Formulation
from optev.data.instance import Instance
from optev.mobility.core import PlantConfig
from optev.mpc.controller import Controller
from optev.mpc.forecast import Forecast, actual_series, empty_sessions
from optev.mpc.injections import DerRecord, StorageRecord, first_step
from optev.mpc.plantrun import PlantRun
from optev.mpc.state import ControlState

DAY = pd.Timedelta(days=1)


@dataclass
class UncontrolledDay:
    """The EV side of the baseline: the recorded plant run and the forecaster's history."""

    run: PlantRun
    sessions: pd.DataFrame
    history: pd.DataFrame | None


def uncontrolled_day(instance: Instance, t_start: float, step_s: float, steps: int, *,
                     config: PlantConfig | None = None, router: Any = None) -> UncontrolledDay:
    """Run the plant without setpoints over the steps (module docstring, part 1)."""
    run = PlantRun(instance, t_start, step_s, steps, config=config, router=router)
    for k in range(steps):
        run.advance(k, run.state_evs(), None, {})
    sessions = run.session_results()
    history = None
    if run.trips:
        plant = run.plant
        horizon = plant.config.horizon_s
        while plant.time_s < horizon - 1e-9:
            plant.advance(min(step_s, max(horizon - plant.time_s, 60.0)), None, report=False)
        table = plant.sessions()
        history = table.loc[~table["rejected"].to_numpy(bool) & table["plug_in"].notna().to_numpy()]
        history = history.reset_index(drop=True)
    return UncontrolledDay(run=run, sessions=sessions, history=history)


class FixedEVLoadForecaster:
    """A forecaster whose windows carry a known EV load at the buses and no EV sessions.

    Prices, base loads and availability come from ``inner`` (the controlled day's
    forecaster, copied before the day); ``ev_bus_kw`` (steps × buses, kW) is added to the
    base load of the steps ``times`` (module docstring, part 2).
    """

    def __init__(self, inner: Any, times: pd.DatetimeIndex, ev_bus_kw: np.ndarray) -> None:
        self.inner = inner
        self.times = times
        self.ev_bus_kw = np.asarray(ev_bus_kw, float)
        self.name = f"{getattr(inner, 'name', type(inner).__name__)}+fixed EV load"
        step = times[1] - times[0] if len(times) > 1 else DAY
        self.wrap = len(times) > 1 and (times[-1] - times[0] + step) >= DAY
        self.per_day = int(round(DAY / step)) if self.wrap else 0

    def observe(self, state: ControlState) -> None:
        self.inner.observe(state)

    def _ev_load(self, times: pd.DatetimeIndex) -> np.ndarray:
        pos = self.times.get_indexer(times)
        if self.wrap:
            step = self.times[1] - self.times[0]
            day_pos = np.asarray(((times - self.times[0]) // step) % self.per_day, dtype=np.int64)
            pos = np.where(pos >= 0, pos, day_pos)
        out = np.zeros((len(times), self.ev_bus_kw.shape[1]))
        ok = (pos >= 0) & (pos < self.ev_bus_kw.shape[0])
        out[ok] = self.ev_bus_kw[pos[ok]]
        return out

    def forecast(self, instance: Instance, times: pd.DatetimeIndex, state: ControlState) -> Forecast:
        series = getattr(self.inner, "forecast_series", None)
        fc = copy.copy(series(instance, times) if series is not None else self.inner.forecast(instance, times, state))
        load = fc.load_p_kw if fc.load_p_kw is not None else actual_series(instance, times).load_p_kw
        fc.load_p_kw = np.asarray(load, float) + self._ev_load(times)
        fc.arrivals = empty_sessions()
        fc.source = self.name
        return fc


def baseline_formulation(formulation: Formulation) -> Formulation:
    """The formulation that dispatches the baseline's DER: the same, with the stations'
    reactive power off (uncontrolled chargers are not dispatched, in P or in Q)."""
    variant, options = formulation.blocks.get("station", ("per_ev", {}))
    if not options.get("reactive"):
        return formulation
    blocks = dict(formulation.blocks)
    blocks["station"] = (variant, {**options, "reactive": False})
    return dataclasses.replace(formulation, blocks=blocks)


def dispatch_der(instance: Instance, formulation: Formulation, forecaster: Any, times: pd.DatetimeIndex,
                 step: pd.Timedelta, horizon: Any, ev_bus_kw: np.ndarray, der: DerRecord, storage: StorageRecord,
                 *, ac_check: bool | None = None) -> dict[str, Any]:
    """Dispatch the baseline's DER and storage in the rolling horizon (module docstring, part 2).

    Fills ``der`` and ``storage`` step by step; returns solve statistics (``statuses``:
    count per status).
    """
    ctl = Controller(baseline_formulation(formulation), instance, step=step, horizon=horizon,
                     forecaster=FixedEVLoadForecaster(forecaster, times, ev_bus_kw),
                     ac_check=ac_check, arrival_reserve=False, soft_limits=True)
    origin_s = (times[0] - _origin(instance)).total_seconds()
    dt_h = step.total_seconds() / 3600.0
    statuses: dict[str, int] = {}
    for k in range(len(times)):
        state = ControlState(time_s=origin_s + k * step.total_seconds(), evs=[],
                             storage_e_kwh=dict(storage.bank.e_kwh))
        decision = ctl.step(state)
        statuses[decision.stats.status] = statuses.get(decision.stats.status, 0) + 1
        res = ctl.last_result if decision.stats.status != "failed" else None
        t0 = times[k]
        der.follow(k, first_step(res.tables.get("der"), t0) if res is not None else None)
        applied = storage.bank.apply(decision.storage_kw, dt_h)
        q_plan = _storage_q(first_step(res.tables.get("storage"), t0) if res is not None else None)
        storage.record(k, applied, q_plan)
    return {"statuses": statuses}


def _storage_q(rows: pd.DataFrame | None) -> dict[str, float]:
    if rows is None or not len(rows):
        return {}
    return dict(zip(rows["storage_id"].astype(str), rows["q_kvar"].fillna(0.0).to_numpy(float)))


def _origin(instance: Instance) -> pd.Timestamp:
    return instance_origin(instance)

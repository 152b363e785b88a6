"""Closed-loop simulation: controller + plant + AC power-flow check, step by step (R6.3.2, R6.3.3).

:func:`simulate` runs ``steps`` control intervals from ``start`` and reports what the plant
*did* (design.md, "Plan vs realised"):

1. the **uncontrolled baseline** (:mod:`optev.mpc.baseline`): the same plant over the same
   steps without setpoints; for an instance with trips its day is also the history of the
   default forecaster;
2. the **controlled day** (:mod:`optev.mpc.loop`): every step the plant's measured state
   goes to the :class:`~optev.mpc.controller.Controller`, stations without dispatch run
   autonomously (:mod:`optev.mpc.edge`), the plant realises the interval with the real
   arrivals and departures — the event simulation :class:`optev.mobility.Plant` for an
   instance with trips (before ``start`` it runs uncontrolled from the instance start), the
   sessions replay :class:`~optev.mpc.replay.ReplayPlant` otherwise;
3. **DER and storage** of both days by one rule (:mod:`optev.mpc.injections`): what the
   formulation dispatches follows its plans — the baseline's by the same formulation with
   the EV load fixed at the uncontrolled profile —, the rest runs by the fixed rule;
4. **realised accounting** (:mod:`optev.mpc.accounting`): every session's energy in every
   step, including EVs that arrived during an interval and charged under the local rule;
   the ``ev`` and ``station`` tables, the identities;
5. **AC check** (:mod:`optev.mpc.gridcheck`) of every applied step of both days at once:
   realised base load + realised EV power + storage − DER; steps that do not converge have
   no grid figure and are excluded, by name, from every comparison;
6. the summary (:mod:`optev.mpc.summary`).

Result: :class:`MPCRun` (stable API for ``optev run`` and studies).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from optev.blocks.window import check_in_data, instance_origin, window_times
from optev.compose.formulation import Formulation, load_formulation
from optev.data.instance import Instance
from optev.errors import DataError
from optev.mobility.core import PlantConfig
from optev.mpc.accounting import station_arrays
from optev.mpc.baseline import dispatch_der, uncontrolled_day
from optev.mpc.controller import Controller, horizon_steps, parse_step
from optev.mpc.edge import EdgePolicy, OutageSchedule
from optev.mpc.forecast import SeasonalProfileForecaster, actual_series
from optev.mpc.gridcheck import check_day, to_buses
from optev.mpc.injections import DerRecord, StorageBank, StorageRecord, dispatched_components
from optev.mpc.loop import controlled_day
from optev.mpc.plantrun import PlantRun
from optev.mpc.result import (BASELINE_STEP_COLUMNS, MODE_COLUMNS, SESSION_RESULT_COLUMNS, STEP_COLUMNS, DayRecord,
                               MPCRun)
from optev.options import size_guard, start_option, steps_option

__all__ = ["MPCRun", "simulate", "STEP_COLUMNS", "MODE_COLUMNS", "BASELINE_STEP_COLUMNS", "SESSION_RESULT_COLUMNS"]


def _start_seconds(instance: Instance, start: Any, step: pd.Timedelta) -> float:
    t0 = window_times(instance, start, 1, step)[0]
    return float((t0 - instance_origin(instance)).total_seconds())


def _controller(instance: Instance, form: Formulation, controller: Controller | None, step_td: pd.Timedelta,
                horizon: Any, forecaster: Any, edge: EdgePolicy | None, ac_check: bool,
                history: pd.DataFrame | None) -> Controller:
    if controller is not None:
        if abs(controller.step_s - step_td.total_seconds()) > 1e-9:
            raise DataError(f"the controller's step ({controller.step_s:g} s) differs from step "
                            f"({step_td.total_seconds():g} s)")
        return controller
    fc = forecaster
    if (fc is None or (isinstance(fc, str) and fc == "seasonal")) and history is not None \
            and not len(instance.sessions):
        fc = SeasonalProfileForecaster(history=history)
    return Controller(form, instance, step=step_td, horizon=horizon, forecaster=fc, edge=edge,
                      ac_check=None if ac_check else False)


def _checked_options(instance: Instance, formulation: Formulation | str, start: Any, steps: Any, step: Any,
                     horizon: Any, check_horizon: bool, wrap: bool, allow_large: bool
                     ) -> tuple[pd.Timedelta, int, Formulation, float, pd.DatetimeIndex]:
    """:func:`simulate`'s options checked (:mod:`optev.options`) before anything is simulated:
    the step, the number of steps, the formulation, the start (s from the instance start) and
    the applied steps' times."""
    step_td = parse_step(step)
    steps = steps_option(steps)
    start = start_option(start)
    size_guard(steps, step_td, allow_large)
    form = load_formulation(formulation) if isinstance(formulation, str) else formulation
    if check_horizon:  # a controller given by the caller brings its own horizon
        size_guard(horizon_steps(horizon, step_td, form), step_td, allow_large, name="horizon")
    t_start = _start_seconds(instance, start, step_td)
    times = pd.date_range(instance_origin(instance) + pd.Timedelta(seconds=t_start), periods=steps, freq=step_td, unit="ns")
    check_in_data(instance, times, step_td, wrap=wrap)
    return step_td, steps, form, t_start, times


def simulate(instance: Instance, formulation: Formulation | str, *, start: Any = None, steps: int = 96,
             step: str | pd.Timedelta = "15min", horizon: str | pd.Timedelta | int | None = None,
             forecaster: Any = None, outages: Iterable[Any] | None = None, controller: Controller | None = None,
             ac_check: bool = True, progress: Callable[[int, int, dict[str, Any]], None] | None = None,
             edge: EdgePolicy | None = None, regions: Mapping[str, Sequence[str]] | None = None,
             plant_config: PlantConfig | None = None, router: Any = None, keep_decisions: bool = False,
             wrap: bool = False, allow_large: bool = False) -> MPCRun:
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
        ``progress(done, steps, info)`` after every controlled step (``info``: time,
        status, solve_s, wall_s, modes).
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
    wrap : bool
        Allow applied steps outside the instance's time series, which then repeats (whole
        days; :func:`optev.blocks.window.check_in_data`). The controller's look-ahead past
        the end of the data always sees the repeated series: that is its forecast.
    allow_large : bool
        Allow runs longer than the size guard :data:`optev.options.LARGE_SPAN`.

    Returns
    -------
    MPCRun
        Its ``summary`` is a :class:`optev.summaries.DaySummary` (every key documented there).
    """
    from optev.mpc.summary import summarise

    t_wall = time.perf_counter()
    step_td, steps, form, t_start, times = _checked_options(instance, formulation, start, steps, step, horizon,
                                                            controller is None, wrap, allow_large)
    step_s = step_td.total_seconds()
    t_end = t_start + steps * step_s
    cfg = None
    if len(instance.trips):
        k0 = t_start / step_s
        if abs(k0 - round(k0)) > 1e-9:
            raise DataError(f"start must lie on the {step_td} grid from the instance start for an instance with trips")
        cfg = plant_config or PlantConfig()
        cfg = dataclasses.replace(cfg, horizon_s=max(cfg.horizon_s, t_end))
        if router is None and len(instance.road.links):
            from optev.mobility.routing import Router

            router = Router(instance.road)
    base = uncontrolled_day(instance, t_start, step_s, steps, config=cfg, router=router)
    ctl = _controller(instance, form, controller, step_td, horizon, forecaster, edge, ac_check, base.history)
    baseline_forecaster = copy.deepcopy(ctl.forecaster)
    schedule = OutageSchedule(outages, instance, regions)
    actual = actual_series(instance, times)
    comps = dispatched_components(ctl.formulation)

    def new_der() -> tuple[DerRecord, StorageRecord]:
        return (DerRecord(instance, times, np.asarray(actual.pv_avail_kw, float), np.asarray(actual.wind_avail_kw, float),
                          comps["der"]),
                StorageRecord(StorageBank.of(instance, comps["storage"]), times))

    der, storage = new_der()
    dt_h = step_s / 3600.0
    feeder = instance.feeder
    st_bus_mapped = instance.stations["bus_id"].astype(str).map({b: i for i, b in enumerate(feeder.bus_ids)})
    st_bus = st_bus_mapped.fillna(-1).to_numpy(np.int64)
    base_der, base_sto = new_der()
    # the baseline's DER dispatch depends on the uncontrolled day only: it runs in a second thread
    # while the controlled day runs (HiGHS releases the GIL; the results do not depend on timing)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="optev-baseline") as pool:
        dispatch = None
        if comps["der"] or comps["storage"]:
            base_arrays = station_arrays(base.run.records.frame(), base.run.station_ids, steps, dt_h)
            ev_bus = to_buses(base_arrays["ch"] - base_arrays["dis"], st_bus, len(feeder.bus_ids))
            dispatch = pool.submit(dispatch_der, instance, ctl.formulation, baseline_forecaster, times, step_td,
                                   ctl.steps, ev_bus, base_der, base_sto, ac_check=None if ac_check else False)
        run = PlantRun(instance, t_start, step_s, steps, config=cfg, router=router)
        loop = controlled_day(instance, ctl, run, times, schedule, der, storage, progress=progress,
                              keep_decisions=keep_decisions)
        dispatch_stats = dispatch.result() if dispatch is not None else None
    day = _realise(instance, run, der, storage, loop.station_q, st_bus, times, actual, dt_h, ac_check)
    base_day = _realise(instance, base.run, base_der, base_sto, np.zeros_like(loop.station_q), st_bus, times,
                        actual, dt_h, ac_check, sessions=base.sessions)
    return summarise(instance, ctl, form, times, step_s, day, base_day, loop, schedule, dispatch_stats,
                     t_wall=t_wall, keep_decisions=keep_decisions)


def _realise(instance: Instance, run: PlantRun, der: DerRecord, storage: StorageRecord, station_q: np.ndarray,
             st_bus: np.ndarray, times: pd.DatetimeIndex, actual: Any, dt_h: float, ac_check: bool, *,
             sessions: pd.DataFrame | None = None) -> DayRecord:
    """A day's realised records and its AC check."""
    records = run.records.frame()
    arrays = station_arrays(records, run.station_ids, len(times), dt_h)
    n_bus = len(instance.feeder.bus_ids)
    bus_pos = {b: i for i, b in enumerate(instance.feeder.bus_ids)}
    der_p, der_q = der.bus_injections(bus_pos, n_bus)
    sto_p, sto_q = storage.bus_injections(bus_pos, n_bus)
    net_p = actual.load_p_kw + to_buses(arrays["ch"] - arrays["dis"], st_bus, n_bus) + sto_p - der_p
    net_q = actual.load_q_kvar - to_buses(station_q, st_bus, n_bus) + sto_q - der_q
    grid = check_day(instance.feeder, times, net_p, net_q, enabled=ac_check)
    off = (arrays["ch"] - arrays["dis"])[:, st_bus < 0].sum(axis=1)
    return DayRecord(records=records, arrays=arrays, metered_kwh=run.metered_kwh, der=der, storage=storage, grid=grid,
                     off_feeder_kw=off,
                     sessions=run.session_results() if sessions is None else sessions, clipped=run.clipped,
                     ignored=run.ignored)

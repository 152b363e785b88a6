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
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from optev.blocks.service import WindowService
from optev.blocks.window import check_in_data, instance_origin, window_times
from optev.compose.formulation import Formulation, load_formulation
from optev.data.instance import Instance
from optev.errors import DataError
from optev.mobility.core import PlantConfig
from optev.mobility.days import repeat_fleet_days
from optev.mobility.routing import Router
from optev.mpc.accounting import station_arrays
from optev.mpc.baseline import UncontrolledDay, dispatch_der, uncontrolled_day
from optev.mpc.controller import Controller, horizon_steps, parse_step
from optev.mpc.edge import EdgePolicy, OutageSchedule
from optev.mpc.forecast import Forecast, SeasonalProfileForecaster, actual_series
from optev.mpc.gridcheck import check_day, to_buses
from optev.mpc.injections import DerRecord, StorageBank, StorageRecord, dispatched_components
from optev.mpc.loop import LoopRecord, controlled_day
from optev.mpc.plantrun import PlantRun
from optev.mpc.result import (BASELINE_STEP_COLUMNS, MODE_COLUMNS, SESSION_RESULT_COLUMNS, STEP_COLUMNS, DayRecord,
                               MPCRun)
from optev.mpc.summary import summarise
from optev.options import size_guard, start_option, steps_option

__all__ = ["MPCRun", "simulate", "STEP_COLUMNS", "MODE_COLUMNS", "BASELINE_STEP_COLUMNS", "SESSION_RESULT_COLUMNS"]


def _start_seconds(instance: Instance, start: Any, step: pd.Timedelta) -> float:
    t0 = window_times(instance, start, 1, step)[0]
    return float((t0 - instance_origin(instance)).total_seconds())


def _controller(instance: Instance, form: Formulation, controller: Controller | None, step_td: pd.Timedelta,
                horizon: Any, forecaster: Any, edge: EdgePolicy | None, ac_check: bool,
                history: pd.DataFrame | None, arrival_quantile: float | None = None) -> Controller:
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
                      ac_check=None if ac_check else False, arrival_quantile=arrival_quantile)


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
             wrap: bool = False, allow_large: bool = False,
             service_limits: Callable[[pd.DataFrame], Sequence[WindowService]] | None = None,
             arrival_quantile: float | None = None) -> MPCRun:
    """Run the controller against the plant for ``steps`` intervals (module docstring).

    Parameters
    ----------
    instance : Instance
        With trips (event-simulation plant) or with only a sessions table (replay plant).
        A run longer than the days the trips span repeats them day by day, the plant's
        state carried over (:mod:`optev.mobility.days`; ``trip_days_repeated`` in the
        summary).
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
    service_limits : callable, optional
        ``service_limits(baseline)`` → the limits of grid services
        (:class:`optev.blocks.service.ServiceLimit`), from the uncontrolled day's net EV
        power per station (DataFrame: step start times × station ids, kW); the
        controller's formulation must have a ``service`` block (:mod:`optev.services`).
    arrival_quantile : float, optional
        The controller reserves for the arrivals of each interval at this quantile of their
        count (:class:`~optev.mpc.controller.Controller`; default the mean).

    Returns
    -------
    MPCRun
        Its ``summary`` is a :class:`optev.summaries.DaySummary` (every key documented there).
    """
    t_wall = time.perf_counter()
    step_td, steps, form, t_start, times = _checked_options(instance, formulation, start, steps, step, horizon,
                                                            controller is None, wrap, allow_large)
    instance, repeats = repeat_fleet_days(instance, t_start + steps * step_td.total_seconds())
    cfg, router = _event_plant(instance, t_start, step_td, steps, plant_config, router)
    base = uncontrolled_day(instance, t_start, step_td.total_seconds(), steps, config=cfg, router=router)
    ctl = _controller(instance, form, controller, step_td, horizon, forecaster, edge, ac_check, base.history,
                      arrival_quantile)
    if service_limits is not None:
        if "service" not in ctl.formulation.blocks:
            raise DataError(f"service limits need a service block in formulation {ctl.formulation.name!r}")
        base_arrays = station_arrays(base.run.records.frame(), base.run.station_ids, steps, step_td.total_seconds()
                                     / 3600.0)
        net = pd.DataFrame(base_arrays["ch"] - base_arrays["dis"], index=times,
                           columns=pd.Index(base.run.station_ids).astype(str))
        ctl.service_limits = list(service_limits(net))
    days = _Days(instance=instance, ctl=ctl, times=times, step_td=step_td, t_start=t_start, cfg=cfg, router=router,
                 baseline_forecaster=copy.deepcopy(ctl.forecaster), schedule=OutageSchedule(outages, instance, regions),
                 actual=actual_series(instance, times), comps=dispatched_components(ctl.formulation),
                 st_bus=_station_buses(instance), ac_check=ac_check)
    (der, storage), (base_der, base_sto) = _der_records(days), _der_records(days)
    run, loop, dispatch_stats = _controlled_day_and_dispatch(days, base, der, storage, base_der, base_sto, progress,
                                                             keep_decisions)
    day = _realise(days, run, der, storage, loop.station_q)
    base_day = _realise(days, base.run, base_der, base_sto, np.zeros_like(loop.station_q), sessions=base.sessions)
    result = summarise(instance, ctl, form, times, days.step_s, day, base_day, loop, days.schedule, dispatch_stats,
                       t_wall=t_wall, keep_decisions=keep_decisions)
    result.summary["trip_days_repeated"] = repeats
    return result


def _event_plant(instance: Instance, t_start: float, step_td: pd.Timedelta, steps: int,
                 plant_config: PlantConfig | None, router: Any) -> tuple[PlantConfig | None, Any]:
    """Configuration and router of the event plant for an instance with trips; (None, ``router``) without trips."""
    if not len(instance.trips):
        return None, router
    step_s = step_td.total_seconds()
    k0 = t_start / step_s
    if abs(k0 - round(k0)) > 1e-9:
        raise DataError(f"start must lie on the {step_td} grid from the instance start for an instance with trips")
    cfg = plant_config or PlantConfig()
    cfg = dataclasses.replace(cfg, horizon_s=max(cfg.horizon_s, t_start + steps * step_s))
    if router is None and len(instance.road.links):
        router = Router(instance.road)
    return cfg, router


def _station_buses(instance: Instance) -> np.ndarray:
    """Feeder bus position of every station (−1 for a station off the feeder)."""
    bus_pos = {b: i for i, b in enumerate(instance.feeder.bus_ids)}
    return instance.stations["bus_id"].astype(str).map(bus_pos).fillna(-1).to_numpy(np.int64)


@dataclass
class _Days:
    """What the controlled and the uncontrolled day of :func:`simulate` share."""

    instance: Instance
    ctl: Controller
    times: pd.DatetimeIndex
    """Times of the applied steps."""
    step_td: pd.Timedelta
    t_start: float
    """First step, s from the instance start."""
    cfg: PlantConfig | None
    router: Any
    baseline_forecaster: Any
    """The controller's forecaster as it was before the controlled day (the baseline's DER dispatch uses it)."""
    schedule: OutageSchedule
    actual: Forecast
    """The realised series of the steps (:func:`optev.mpc.forecast.actual_series`)."""
    comps: dict[str, bool]
    """DER and storage the formulation dispatches (:func:`optev.mpc.injections.dispatched_components`)."""
    st_bus: np.ndarray
    """Feeder bus position of every station (−1: off the feeder)."""
    ac_check: bool

    @property
    def step_s(self) -> float:
        """Control interval, s."""
        return float(self.step_td.total_seconds())

    @property
    def dt_h(self) -> float:
        """Control interval, h."""
        return self.step_s / 3600.0


def _der_records(days: _Days) -> tuple[DerRecord, StorageRecord]:
    """Fresh records of a day's DER and storage."""
    a = days.actual
    return (DerRecord(days.instance, days.times, np.asarray(a.pv_avail_kw, float), np.asarray(a.wind_avail_kw, float),
                      days.comps["der"]),
            StorageRecord(StorageBank.of(days.instance, days.comps["storage"]), days.times))


def _controlled_day_and_dispatch(days: _Days, base: UncontrolledDay, der: DerRecord, storage: StorageRecord,
                                 base_der: DerRecord, base_sto: StorageRecord,
                                 progress: Callable[[int, int, dict[str, Any]], None] | None, keep_decisions: bool
                                 ) -> tuple[PlantRun, LoopRecord, dict[str, Any] | None]:
    """The controlled day, and the baseline's DER dispatch beside it: (plant run, loop result, dispatch stats)."""
    instance, ctl, steps = days.instance, days.ctl, len(days.times)
    # the baseline's DER dispatch depends on the uncontrolled day only: it runs in a second thread
    # while the controlled day runs (HiGHS releases the GIL; the results do not depend on timing)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="optev-baseline") as pool:
        dispatch = None
        if days.comps["der"] or days.comps["storage"]:
            base_arrays = station_arrays(base.run.records.frame(), base.run.station_ids, steps, days.dt_h)
            ev_bus = to_buses(base_arrays["ch"] - base_arrays["dis"], days.st_bus, len(instance.feeder.bus_ids))
            dispatch = pool.submit(dispatch_der, instance, ctl.formulation, days.baseline_forecaster, days.times,
                                   days.step_td, ctl.steps, ev_bus, base_der, base_sto,
                                   ac_check=None if days.ac_check else False)
        run = PlantRun(instance, days.t_start, days.step_s, steps, config=days.cfg, router=days.router)
        loop = controlled_day(instance, ctl, run, days.times, days.schedule, der, storage, progress=progress,
                              keep_decisions=keep_decisions)
        dispatch_stats = dispatch.result() if dispatch is not None else None
    return run, loop, dispatch_stats


def _realise(days: _Days, run: PlantRun, der: DerRecord, storage: StorageRecord, station_q: np.ndarray, *,
             sessions: pd.DataFrame | None = None) -> DayRecord:
    """A day's realised records and its AC check."""
    feeder, st_bus = days.instance.feeder, days.st_bus
    records = run.records.frame()
    arrays = station_arrays(records, run.station_ids, len(days.times), days.dt_h)
    n_bus = len(feeder.bus_ids)
    bus_pos = {b: i for i, b in enumerate(feeder.bus_ids)}
    der_p, der_q = der.bus_injections(bus_pos, n_bus)
    sto_p, sto_q = storage.bus_injections(bus_pos, n_bus)
    net_p = days.actual.load_p_kw + to_buses(arrays["ch"] - arrays["dis"], st_bus, n_bus) + sto_p - der_p
    net_q = days.actual.load_q_kvar - to_buses(station_q, st_bus, n_bus) + sto_q - der_q
    grid = check_day(feeder, days.times, net_p, net_q, enabled=days.ac_check)
    off = (arrays["ch"] - arrays["dis"])[:, st_bus < 0].sum(axis=1)
    return DayRecord(records=records, arrays=arrays, metered_kwh=run.metered_kwh, der=der, storage=storage, grid=grid,
                     off_feeder_kw=off,
                     sessions=run.session_results() if sessions is None else sessions, clipped=run.clipped,
                     ignored=run.ignored)

"""A closed-loop day with a grid service: plan against the baseline, deliver, measure (R6.5.1).

:func:`run_service` runs :func:`optev.mpc.simulate` with the request's limits in every
window (:mod:`optev.blocks.service`), then measures what the plant realised against the
baseline (:mod:`optev.services.evaluate`).

Before the window starts the request is checked against what the participants can do
(R6.5.1, issue "service requests that cannot be met are refused or partially accepted
with the reason"): a reduction is accepted up to the participants' lowest baseline power
in the window plus the discharge power of the V2G EVs expected plugged in at their stations
then (they cannot go lower; :func:`_discharge_kw`); a
request with nothing to reduce is refused and the day runs without it.

Supported products: peak regulation, valley filling, demand response, renewable smoothing,
voltage support and frequency regulation (reserve in the plan, the signal followed every
few seconds by :mod:`optev.services.follow`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.service import ServiceLimit, ServiceRamp, ServiceReserve, ServiceVoltage
from optev.blocks.window import instance_origin, window_times
from optev.compose.formulation import Formulation, load_formulation
from optev.data.battery import charger_discharge_kw, pair_limits
from optev.data.instance import Instance
from optev.errors import DataError
from optev.mobility.days import DAY_S, trip_days
from optev.mpc.controller import parse_step
from optev.mpc.result import MPCRun
from optev.mpc.simulate import simulate
from optev.options import LARGE_SPAN, start_option, steps_option
from optev.services.baseline import WORKDAYS, read_history, realtime_baseline, workdays_baseline
from optev.services.evaluate import (ServiceOutcome, evaluate_limit_service, evaluate_smoothing, evaluate_voltage,
                                     net_power, nothing_delivered, renewable_power)
from optev.services.follow import ranges
from optev.services.frequency import evaluate_frequency, fleet_at_step
from optev.services.limits import participant_stations, service_limits
from optev.services.offer import reserve_share, run_window
from optev.services.request import HISTORY_FROM_RUN, ServiceRequest, ServiceWindow

LIMIT_PRODUCTS = ("peak_regulation", "valley_filling", "demand_response")
RUNNABLE = (*LIMIT_PRODUCTS, "renewable_smoothing", "voltage_support", "frequency_primary", "frequency_secondary")


@dataclass(frozen=True)
class Acceptance:
    """The aggregator's answer to a request before its window (R6.5.1).

    Attributes
    ----------
    status : str
        ``accepted``, ``partial`` or ``refused``.
    requested_kw, accepted_kw : float
        The power asked for and the power the fleet commits to, kW.
    reason : str
        Why less was accepted ("" when all was).
    """

    status: str
    requested_kw: float
    accepted_kw: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ServiceRun:
    """A closed-loop day with a service: the run, the answer to the request and what it delivered."""

    run: MPCRun
    request: ServiceRequest
    acceptance: Acceptance
    outcome: ServiceOutcome

    def summary(self) -> dict[str, Any]:
        """The ``service`` and ``appendix_a`` objects of ``summary.json``; ``service`` also has the
        feeder losses in the service window, controlled and uncontrolled (AC check, kWh; None
        without one): a service must not be bought with losses unseen."""
        return {"service": {"id": self.request.id, "product": self.request.product, "rule": self.request.rule.key,
                            "baseline": self.request.baseline, **self.acceptance.to_dict(), **self._losses(),
                            "tolerance_kw": self._tolerance_kw()},
                "appendix_a": dict(self.outcome.metrics)}

    def _tolerance_kw(self) -> float | None:
        """A.4's δ of a frequency product (the band η counts within), kW; None for other products."""
        series = self.outcome.series
        if "p_tolerance_kw" not in series or not len(series):
            return None
        return float(series["p_tolerance_kw"].iloc[0])

    def _losses(self) -> dict[str, float | None]:
        steps, base = self.run.tables["steps"], self.run.baseline["steps"]
        inside = self.request.window.mask(pd.DatetimeIndex(steps["time"])).to_numpy(bool)
        dt_h = float(self.run.summary["step_minutes"]) / 60.0
        out: dict[str, float | None] = {}
        for key, frame in (("window_loss_kwh", steps), ("baseline_window_loss_kwh", base)):
            loss = frame["loss_kw"].to_numpy(float)[inside] if "loss_kw" in frame else np.array([np.nan])
            out[key] = float(loss.sum() * dt_h) if loss.size and np.isfinite(loss).all() else None
        return out


def with_service_block(formulation: Formulation | str) -> Formulation:
    """The formulation with a ``service`` block (added when it has none)."""
    form = load_formulation(formulation) if isinstance(formulation, str) else formulation
    if "service" in form.blocks:
        return form
    return dataclasses.replace(form, blocks={**form.blocks, "service": ("default", {})})


def _discharge_kw(instance: Instance, stations: tuple[str, ...], times: pd.DatetimeIndex) -> float:
    """The participants' V2G discharge power the window can count on, kW: the lowest, over the
    window's steps ``times``, of the discharge limits of the V2G opt-in EVs plugged in at their
    stations then in the instance's sessions table (its uncontrolled day, by time of day);
    without a sessions table, every V2G charger in use (an upper bound)."""
    sessions = instance.sessions
    sessions = sessions[sessions["station_id"].astype(str).isin(stations)]
    if not len(instance.sessions):
        power = instance.station_power()
        power = power[power["station_id"].astype(str).isin(stations)]
        per = charger_discharge_kw(power["v2g"].to_numpy(object), power["p_dis_max_kw"].to_numpy(float))
        site = power["p_site_dis_max_kw"].to_numpy(float)
        return float(np.minimum(per * power["n_chargers"].to_numpy(float), site).sum())
    if not len(sessions) or not len(times):
        return 0.0
    evs = instance.evs.set_index("ev_id").reindex(sessions["ev_id"])
    vehicles = instance.vehicle_types.set_index("vtype_id").reindex(evs["vtype_id"])
    chargers = instance.station_power().set_index("station_id").reindex(sessions["station_id"])
    p_dis = pair_limits(vehicles, chargers, evs["v2g_opt_in"].fillna(False).to_numpy(bool)).p_dis_max_kw
    arrival, departure = sessions["arrival_s"].to_numpy(float), sessions["departure_s"].to_numpy(float)
    span = max(trip_days(pd.DataFrame({"depart_s": arrival})), 1) * DAY_S  # sessions repeat with the fleet's days
    at = ((times - instance_origin(instance)).total_seconds().to_numpy(float)) % span
    plugged = (arrival[None, :] <= at[:, None]) & (departure[None, :] > at[:, None])
    return float((plugged * np.nan_to_num(p_dis)[None, :]).sum(axis=1).min())


def accept(request: ServiceRequest, baseline_kw: pd.Series, floor_kw: pd.Series | float) -> Acceptance:
    """Accept, partially accept or refuse a request (module docstring); an increase is refused when
    nothing is plugged in the window, and otherwise accepted with its shortfall measured.

    ``floor_kw`` is the lowest power the participants can draw in the window's steps (a series
    by step, or one value; negative with V2G discharge): a reduction is accepted up to the
    smallest gap between the baseline and it."""
    q = request.quantity
    inside = baseline_kw.dropna()
    if "increase_kw" in q:
        wanted = float(q["increase_kw"])
        if not len(inside) or float(inside.abs().max()) <= 0.0:
            return Acceptance("refused", wanted, 0.0, "no EV of the participants is plugged in the window in the "
                                                      "baseline day: there is no charging to add")
        return Acceptance("accepted", wanted, wanted)
    if "reduction_kw" not in q:  # an import target: checked by the optimiser, shortfall reported
        value = float(q.get("target_import_kw", q.get("target_min_import_kw", float("nan"))))
        return Acceptance("accepted", value, value)
    wanted = float(q["reduction_kw"])
    floor = floor_kw.reindex(inside.index).fillna(0.0) if isinstance(floor_kw, pd.Series) else \
        pd.Series(float(floor_kw), index=inside.index)
    gap = inside - floor
    room = float(gap.min()) if len(gap) else 0.0
    if room <= 0:
        return Acceptance("refused", wanted, 0.0, "the participants cannot draw less than their baseline in the "
                                                  "window (departure needs, arrivals, no V2G discharge)")
    if room + 1e-9 < wanted:
        k = int(np.argmin(gap.to_numpy(float)))
        at = gap.index[k]
        when = at.strftime("%H:%M") if isinstance(at, pd.Timestamp) else str(at)
        return Acceptance("partial", wanted, room,
                          f"at {when} the participants' baseline is {float(inside.iloc[k]):.0f} kW and the least "
                          f"they can draw is {float(floor.iloc[k]):.0f} kW (departure needs, arrivals, V2G discharge)")
    return Acceptance("accepted", wanted, wanted)


def run_service(instance: Instance, request: ServiceRequest, formulation: Formulation | str = "city_dispatch",
                **simulate_options: Any) -> ServiceRun:
    """Run a closed-loop day delivering ``request`` (module docstring).

    Parameters
    ----------
    instance : Instance
    request : ServiceRequest
    formulation : Formulation or str
        The controller's formulation; a ``service`` block is added.
    **simulate_options
        Passed to :func:`optev.mpc.simulate` (``start``, ``steps``, ``step``, ``horizon``, ...).

    Returns
    -------
    ServiceRun
    """
    if request.product not in RUNNABLE:
        raise DataError(f"service {request.id!r}: {request.product} cannot be run yet (supported: "
                        f"{', '.join(RUNNABLE)})")
    stations = participant_stations(instance, request)
    _check_covered(instance, request, simulate_options)
    if request.product == "renewable_smoothing":
        return _run_smoothing(instance, request, stations, formulation, simulate_options)
    if request.product == "voltage_support":
        return _run_voltage(instance, request, stations, formulation, simulate_options)
    if request.product in FREQUENCY_PRODUCTS:
        return _run_frequency(instance, request, stations, formulation, simulate_options)
    state: dict[str, Any] = {}
    history = _run_history(instance, request, stations, formulation, simulate_options)

    def limits(base_net: pd.DataFrame) -> list[ServiceLimit]:
        times = pd.DatetimeIndex(base_net.index)
        dt_h = (times[1] - times[0]).total_seconds() / 3600.0 if len(times) > 1 else 0.25
        load = base_net[list(stations)].sum(axis=1)
        mask = request.window.mask(times)
        baseline = _baseline(request, load, times, mask, None if history is None else history[0])
        if history is None:
            floor: pd.Series | float = -_discharge_kw(instance, stations, times[mask.to_numpy(bool)])
        else:  # the lowest power of the same working days as the baseline, on the least flexible of them
            floor = workdays_baseline(history[1], times, mask, request.holidays, reduce="max")
        ok = accept(request, baseline, floor)
        accepted = dataclasses.replace(request, quantity={**request.quantity, "reduction_kw": ok.accepted_kw}) \
            if "reduction_kw" in request.quantity else request
        state.update(acceptance=ok, baseline=baseline, base_stations=base_net, dt_h=dt_h)
        if ok.status == "refused":
            state["limits"] = []
            return []
        state["limits"] = service_limits(instance, accepted, baseline, dt_h, station_share(base_net[list(stations)]))
        return list(state["limits"])

    run = simulate(instance, with_service_block(formulation), service_limits=limits, **simulate_options)
    times = pd.DatetimeIndex(run.tables["steps"]["time"])
    p_act = net_power(run.tables["station"], stations, times)
    baseline = state["baseline"]
    if request.baseline == "t0_minus_15min":  # the rule measures against the load actually metered before
        baseline = realtime_baseline(p_act.sum(axis=1), request.window.mask(times))
    lim = state["limits"][0] if state["limits"] else None
    p_limit = (lim.upper_kw if lim.upper_kw is not None else lim.lower_kw) if lim is not None else None
    outcome = evaluate_limit_service(request, times, state["dt_h"], p_act, baseline,
                                     p_limit if p_limit is not None else pd.Series(np.nan, index=times),
                                     state["base_stations"] if request.baseline == "uncontrolled" else None)
    return ServiceRun(run, request, state["acceptance"], outcome)


def station_share(load_kw: pd.DataFrame) -> pd.DataFrame:
    """Each station's share of the participants' load per step (rows sum to 1; NaN where they draw
    nothing): how a limit is shared among regions (:mod:`optev.hierarchy.services`). Taken from
    the uncontrolled day, the only per-station baseline every rule has."""
    load = load_kw.clip(lower=0.0)
    total = load.sum(axis=1)
    return load.div(total.where(total > 0), axis=0)


def _run_history(instance: Instance, request: ServiceRequest, stations: tuple[str, ...],
                 formulation: Formulation | str, options: dict[str, Any]) -> tuple[pd.Series, pd.Series] | None:
    """The participants' realised net load and its floor (kW by step; :func:`power_floor`) over the
    run's steps, operated as usual: the same run without the service (``[baseline] history =
    "run"``; None for any other baseline). Only its days before each service day enter the
    ``workdays_5`` baseline (and the acceptance's room), and up to the controller's look-ahead
    into the window they are the days the service run realises too."""
    if request.baseline != "workdays_5" or request.baseline_history != HISTORY_FROM_RUN:
        return None
    _check_history_days(instance, request, options)
    run = simulate(instance, formulation, **options)
    times = pd.DatetimeIndex(run.tables["steps"]["time"])
    return net_power(run.tables["station"], stations, times).sum(axis=1), \
        power_floor(instance, run, stations, request.window)


def power_floor(instance: Instance, run: MPCRun, stations: tuple[str, ...], window: Any) -> pd.Series:
    """The lowest net power the participants could have drawn in each step of ``run`` whose clock
    time is in ``window`` (NaN elsewhere), kW: every EV plugged in for the whole step at its least
    power — full power where its departure need requires it, its V2G discharge limit where it
    opted in and is above its SOC floor, else 0 (:func:`optev.services.follow.ranges`) — plus
    what EVs arriving during the step drew under the local rule (out of the plan's reach)."""
    times = pd.DatetimeIndex(run.tables["steps"]["time"])
    step_s = float(run.summary["step_minutes"]) * 60.0
    ev = run.tables["ev"]
    ev = ev[ev["station_id"].astype(str).isin(stations)]
    arriving = ev[ev["plugged_s"].to_numpy(float) < step_s - 1e-6].groupby("time")["p_kw"].sum()
    origin = instance_origin(instance)
    out = np.full(times.size, np.nan)
    clock = window.mask(times).to_numpy(bool) if window.daily else \
        ServiceWindow(window_clock(window.start), window_clock(window.end)).mask(times).to_numpy(bool)
    for k in np.flatnonzero(clock).tolist():
        fleet, _ = fleet_at_step(instance, run, stations, times[k], step_s)
        lo, _ = ranges(fleet, (times[k] - origin).total_seconds(), step_s)
        out[k] = float(lo.sum()) + float(arriving.get(times[k], 0.0))
    return pd.Series(out, index=times)


def window_clock(stamp: str) -> str:
    """``HH:MM`` of an ISO window bound (a daily bound is returned as is)."""
    return stamp if "T" not in stamp else pd.Timestamp(stamp).strftime("%H:%M")


def _check_history_days(instance: Instance, request: ServiceRequest, options: dict[str, Any]) -> None:
    """A one-line error naming the start the run needs when it holds fewer than 5 working days
    before a service day (before the history run is spent)."""
    step = parse_step(options.get("step", "15min"))
    times = window_times(instance, start_option(options.get("start")), steps_option(options.get("steps", 96)), step)
    inside = request.window.mask(times).to_numpy(bool)
    first = times[inside][0].normalize()
    skip = {pd.Timestamp(h).date() for h in request.holidays}
    day, found = first, 0
    while found < WORKDAYS:
        day -= pd.Timedelta(days=1)
        found += int(day.weekday() < 5 and day.date() not in skip)
    if times[0] > day:
        days = int((times[-1].normalize() - day) / pd.Timedelta(days=1)) + 1
        large = " --allow-large" if days * pd.Timedelta(days=1) > LARGE_SPAN else ""
        raise DataError(f"service {request.id!r}: the workdays_5 baseline of {first.date()} takes the run's own "
                        f"{WORKDAYS} earlier working days, but the run starts on {times[0].date()}; start it on "
                        f"{day.date()} (e.g. --start {day.date()}T00:00 --steps {days * int(pd.Timedelta(days=1) / step)}"
                        f" --wrap{large})")


def _baseline(request: ServiceRequest, load: pd.Series, times: pd.DatetimeIndex, mask: pd.Series,
              history: pd.Series | None = None) -> pd.Series:
    """The participants' planning baseline in the window (NaN outside), kW; ``history`` the run's
    own load for ``workdays_5`` from the run (:func:`_run_history`)."""
    if request.baseline in ("uncontrolled", "import_target"):  # a target is met, but A.2 measures against a load
        return load.where(mask.to_numpy(bool))
    if request.baseline == "t0_minus_15min":
        return realtime_baseline(load, mask)
    if request.baseline == "workdays_5":
        if request.baseline_history is None:
            raise DataError(f"service {request.id!r}: the workdays_5 baseline needs a history file")
        metered = history if history is not None else read_history(request.baseline_history)
        return workdays_baseline(metered, times, mask, request.holidays)
    raise DataError(f"service {request.id!r}: a {request.product} request needs a baseline, not {request.baseline!r}")


def _run_smoothing(instance: Instance, request: ServiceRequest, stations: tuple[str, ...],
                   formulation: Formulation | str, simulate_options: dict[str, Any]) -> ServiceRun:
    """Renewable smoothing: the ramp of PV + wind − EV power priced in the window (R6.5.1.4, A.5)."""
    weight = float(request.quantity["ramp_weight"])

    def ramps(base_net: pd.DataFrame) -> list[ServiceRamp]:
        mask = request.window.mask(pd.DatetimeIndex(base_net.index))
        return [ServiceRamp(request.id, stations, mask, weight)]

    run = simulate(instance, with_service_block(formulation), service_limits=ramps, **simulate_options)
    times = pd.DatetimeIndex(run.tables["steps"]["time"])
    der = run.tables.get("der")
    outcome = evaluate_smoothing(request, times, net_power(run.tables["station"], stations, times),
                                 renewable_power(der, times, "p_avail_kw"), renewable_power(der, times))
    return ServiceRun(run, request, Acceptance("accepted", float("nan"), float("nan")), outcome)


def supported_buses(instance: Instance, request: ServiceRequest, stations: tuple[str, ...]) -> list[str]:
    """The buses a voltage request supports: every bus (city), the listed buses, or the buses
    of the participating stations."""
    if request.participants.scope == "city":
        return [str(b) for b in instance.feeder.bus_ids]
    if request.participants.scope == "buses":
        return list(request.participants.ids)
    st = instance.stations
    return list(dict.fromkeys(st.loc[st["station_id"].astype(str).isin(stations), "bus_id"].dropna().astype(str)))


def _run_voltage(instance: Instance, request: ServiceRequest, stations: tuple[str, ...],
                 formulation: Formulation | str, simulate_options: dict[str, Any]) -> ServiceRun:
    """Voltage support: bus voltages outside the band priced in the window (R6.5.1.2, A.3)."""
    q = request.quantity
    buses = supported_buses(instance, request, stations)

    def targets(base_net: pd.DataFrame) -> list[ServiceVoltage]:
        mask = request.window.mask(pd.DatetimeIndex(base_net.index))
        return [ServiceVoltage(request.id, tuple(buses), mask, float(q.get("v_target_pu", 1.0)),
                               float(q.get("v_deadband_pu", 0.0)), float(q["weight_per_pu_h"]))]

    run = simulate(instance, with_service_block(formulation), service_limits=targets, **simulate_options)
    times = pd.DatetimeIndex(run.tables["steps"]["time"])
    dt_h = (times[1] - times[0]).total_seconds() / 3600.0 if len(times) > 1 else 0.25
    outcome = evaluate_voltage(request, times, dt_h, run.tables["station"], stations, run.tables["bus"],
                               run.baseline["bus"], buses)
    return ServiceRun(run, request, Acceptance("accepted", float("nan"), float("nan")), outcome)


HOLD_PRICE_PER_KWH = 3.0
"""Price of a kWh of frequency reserve the plan does not hold, currency/kWh: of the order of the
demand-response energy prices of ``china_rules.md`` §2.1 (3–4 CNY/kWh), well above the value of
shifting charging in time, so the plan keeps the reserve wherever the fleet can."""

FREQUENCY_PRODUCTS = ("frequency_primary", "frequency_secondary")
DEFAULT_DURATION_MIN = 15.0
"""How long a frequency reserve must be sustainable when the request does not say, min (the
15 min of ENTSO-E's FCR and of a secondary reserve until tertiary reserve takes over)."""


def _reserve_kw(request: ServiceRequest) -> tuple[float, float]:
    q = request.quantity
    if request.product == "frequency_primary":
        return float(q["reserve_kw"]), float(q["reserve_kw"])
    return float(q.get("reserve_up_kw", 0.0)), float(q.get("reserve_down_kw", 0.0))


def _run_frequency(instance: Instance, request: ServiceRequest, stations: tuple[str, ...],
                   formulation: Formulation | str, simulate_options: dict[str, Any]) -> ServiceRun:
    """Frequency regulation: reserve in the plan, then the signal followed every few seconds (R6.5.1.3, A.4)."""
    up, down = _reserve_kw(request)

    def reserves(base_net: pd.DataFrame) -> list[ServiceReserve]:
        mask = request.window.mask(pd.DatetimeIndex(base_net.index))
        return [ServiceReserve(request.id, stations, mask, up, down, HOLD_PRICE_PER_KWH,
                               duration_h=float(request.quantity.get("duration_min", DEFAULT_DURATION_MIN)) / 60.0)]

    wanted = max(up, down)
    share, reason = reserve_share(instance, request, stations, up, down, simulate_options, formulation)
    up, down = up * share, down * share
    if share <= 0.0:
        run = simulate(instance, formulation, **simulate_options)
        return ServiceRun(run, request, Acceptance("refused", wanted, 0.0, reason), nothing_delivered())
    run = simulate(instance, with_service_block(formulation), service_limits=reserves, **simulate_options)
    outcome = evaluate_frequency(instance, request, run, stations, up, down)
    status = "accepted" if share >= 1.0 else "partial"
    return ServiceRun(run, request, Acceptance(status, wanted, max(up, down), reason), outcome)


def _check_covered(instance: Instance, request: ServiceRequest, options: dict[str, Any]) -> None:
    """Refuse a run whose steps miss the service window altogether (a user mistake, not a refusal
    of the request: nothing could be measured)."""
    times, inside = run_window(instance, request, options)
    if not inside.any():
        end = times[-1] + parse_step(options.get("step", "15min"))
        raise DataError(f"service {request.id!r}: its window {request.window.start}–{request.window.end} lies "
                        f"outside the run ({times[0]} to {end}); start earlier or run more steps")

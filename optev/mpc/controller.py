r"""The rolling-horizon controller: one call per control interval (R6.2.2.2, R6.3.2).

::

    ctl = Controller(load_formulation("station_v2g"), instance, step="15min", horizon="8h")
    decision = ctl.step(state)                  # ControlState -> ControlDecision
    plant.advance(900, decision.plant_setpoints())

Each :meth:`Controller.step`

1. asks the forecaster for prices, base loads, renewable availability and expected
   arrivals over the horizon (:mod:`optev.mpc.forecast`; or takes ``forecasts``);
2. builds the window: the EVs plugged in now (from the state, with their measured
   energy, expected departure and need) plus the forecast arrivals, over ``horizon``
   steps of ``step`` from the state's time (:func:`optev.blocks.window.build_window`);
   the forecast replaces the instance's prices, loads and availability; measured storage
   energies go to ``window.extra["storage_e_kwh"]``;
3. solves it with the solve strategy — by default :class:`MonolithicStrategy`, one
   :class:`~optev.compose.solve.WindowSolver` kept for the controller's life, so when
   the window's LP has the same structure as the previous call's (same EVs and plugged
   steps, only data changed: prices, energies, forecasts, bounds) HiGHS receives only the
   changed costs and bounds and restarts from its previous basis
   (``decision.stats.warm``); a changed structure (an arrival, a departure, the horizon
   moving past a plugged step) is passed as a new model to the same HiGHS instance;
4. returns the setpoints of the first interval (per EV on the 1 kW grid and per
   station), the planned horizon per station and per EV, and solve statistics. The
   station powers are shared among the EVs again with hard departure protection
   (``protect_departures``); an EV that leaves during the interval — the window plans
   whole steps only — is asked for what its need requires in the time left (at most
   full power, within the site cap left by the plan).

Arrivals during an interval
---------------------------
The window plans whole steps, so an EV expected to arrive during the first interval is
plugged in from the second step on; the controller gives it no setpoint (it does not know
it yet). With ``arrival_reserve`` (default) the controller plans for it: every forecast session
arriving at :math:`a \in (t_0, t_0 + \Delta t)` is expected to draw

.. math::
    \bar p = \min\Bigl(\bar P^{ch}, \frac{\max(E^{need} - E^{arr}, 0)}{\eta^{ch}\,\tau}\Bigr)
    \frac{\tau}{\Delta t},\qquad \tau = \min(t_0 + \Delta t, d) - a,

with :math:`d` its departure (a short stop leaving within the interval counts too), on
average over the first step (kW, grid side); the sum per station (at most its site cap)
is added to the first step's load at the station's bus, so the network, the substation
limits and the generators of the plan account for it, and those sessions start the
second step with the energy it gives them (:math:`E^{arr} + \eta^{ch}\bar p\,\Delta t`).
With ``arrival_quantile`` :math:`q` the reserve of a station whose forecast has :math:`n`
arrivals in the interval is scaled by :math:`F^{-1}_n(q)/n`, the :math:`q`-quantile of a Poisson
count of mean :math:`n` over its mean (:func:`optev.mpc.forecast.count_quantile_factor`), at
most the site cap: the plan keeps room for more arrivals than expected where the forecast is
uncertain (the sessions in the window keep the mean's energy).
The total is ``stats.arrival_reserve_kw``. The EVs plugged in now that leave during the
interval are not in the window either; their setpoints (what their need asks for in the
time left, at most full power) are known before the solve, so their mean power over the
interval is reserved in the same way (``stats.leaving_reserve_kw``).

What the EVs that really arrive during the interval draw is the plant's business until the
next decision. Two policies (``limit_arrivals``):

* ``False`` (default, drivers first): they charge at full power within the site cap. The
  plan's reserve and the network block's voltage margin cover them as far as the forecast
  is right; where more arrive than forecast the applied step may exceed the plan, and the
  closed loop's realised accounting and AC check show it.
* ``True`` (grid first): each slow or private station's share of the reserve is its
  ``decision.arrival_allowance_kw``, the station setpoint that the EVs arriving during the
  interval share (:meth:`~optev.mpc.state.ControlDecision.plant_setpoints`; what OCPP calls
  a default charging profile for new transactions), so that they draw at most what the plan
  reserved and the plan's grid limits hold in the applied step. A station with no expected
  arrival has an allowance of 0: an EV arriving there waits for the next decision (at most
  one interval), which can leave a short stop with less energy than uncontrolled charging
  gives it. Fast stations get no allowance: a driver waiting at a fast charger charges at
  full power.

The controller itself keeps no plant state between calls: everything measured comes in
the :class:`~optev.mpc.state.ControlState`; only the solver (its model and basis), the
forecaster's observations and the last window/result (for inspection) persist.

Control interval and horizon
----------------------------
``step`` is 1 to 15 minutes (R6.2.2.2, default 15). ``horizon`` is a duration
(``"24h"``, ``"8h"``) rounded up to whole steps, or a number of steps; default: the
formulation's ``[window]`` duration (``steps · step``, 24 h in the shipped files).

Terminal conditions
-------------------
* **EVs leaving after the horizon**: the window asks at its last step only for the
  energy that cannot be made up afterwards by charging at full power in the whole steps
  between the horizon end and the departure (``optev.blocks.window``, "Departure
  requirement and terminal condition"), so a rolling horizon never leaves an EV unable
  to reach its need, and energy is not bought early at a high price for a departure the
  next windows can still serve.
* **EVs leaving within the horizon**: their full departure need (R6.2.2.3). A need that
  full-power charging from the measured energy can no longer reach in the whole steps
  left (a late arrival, a shortfall left by an outage, a fast-station estimate) is
  lowered to what can be reached, so that the window stays feasible; this is reported in
  ``stats.needs_clipped`` / ``needs_clipped_kwh`` and the realised shortfall in the
  simulation results — never silent.
* **Forecast arrivals** are estimates (a profile may place more sessions at a station at
  once than its site cap can serve at full power): each forecast session's need is also
  lowered to what it can reach with an equal share of the site cap left after the EVs
  plugged in now charge at full power, so that forecast arrivals alone never make a
  window infeasible (they are not counted in ``needs_clipped``).
* **Storage**: the storage block's ``terminal`` option — ``"initial"`` (default of the
  shipped files: end every window at least as full as it started, so a finite horizon
  does not drain the battery) or ``"free"``. ``storage_terminal=`` overrides the
  formulation's choice for the controller.

Infeasible windows
------------------
A dispatch loop must never crash. If the window is infeasible as formulated
(:class:`~optev.errors.InfeasibleError`, for example a site cap below the EVs' protected
needs, or voltage limits the base load alone breaks), it is re-solved at once with soft
limits (the formulation's hard limits become slacks priced at ``slack_penalty``); the
decision's ``stats.status`` is then ``"soft_limits"``, ``stats.message`` holds the
infeasibility diagnosis and ``stats.slack_used`` the slack per limit. If that fails too,
or the solver fails for another reason (:class:`~optev.errors.OptevError`), every station
gets the safe local policy of :mod:`optev.mpc.edge` (no discharge, departure needs
first, within site caps), ``stats.status`` is ``"failed"`` and the modes are
``"fallback"``. Invalid *input* (an unknown EV or station in the state) still raises
:class:`~optev.errors.DataError`: that is the caller's mistake, not a solver outcome.

Solve strategies
----------------
The window is solved by a *strategy*: any object with
``solve(window, *, soft_limits=None, ac_check=True) -> WindowResult`` whose result has
``plan`` (a :class:`~optev.blocks.disaggregate.Disaggregation` whose rows are
``window.evs`` in order and whose station rows are ``window.stations``), ``summary``
(with ``termination``, ``objective``, ``build_s``, ``solve_s``, ``check_s``, optionally
``warm``, ``iterations``, ``slack_used``, ``max_abs_dv_pu``) and ``tables`` (``station``
with ``q_kvar``; ``bus``; ``storage``/``der`` when those blocks exist). The default is
:class:`MonolithicStrategy`; a hierarchical (region-decomposed) strategy plugs in through
``Controller(strategy=...)`` or a factory ``strategy=lambda formulation: ...``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from optev.blocks.disaggregate import QUANTUM_KW, disaggregate
from optev.blocks.service import ServiceRamp, WindowService
from optev.blocks.window import Window, build_window, instance_origin
from optev.compose.formulation import Formulation, load_formulation
from optev.compose.solve import WindowResult
from optev.data.baseload import renewable_availability
from optev.data.battery import ceil_to_quantum, floor_to_quantum
from optev.data.instance import Instance
from optev.errors import DataError, InfeasibleError, OptevError
from optev.mpc.edge import EdgePolicy, ev_station_params, local_setpoints, sessions_of, with_sessions
from optev.mpc.forecast import Forecast, count_quantile_factor, resolve_forecaster
from optev.mpc.state import ControlDecision, ControlState, SolveStats
from optev.mobility.state import Setpoints
from optev.options import CONTROL_STEP_MAX, CONTROL_STEP_MIN, control_step_option, horizon_option
from optev.mpc.strategy import MonolithicStrategy, WindowStrategy

MIN_STEP = CONTROL_STEP_MIN
MAX_STEP = CONTROL_STEP_MAX
"""Control interval limits (R6.2.2.2)."""


def parse_step(step: str | pd.Timedelta | float, name: str = "step") -> pd.Timedelta:
    """A control interval of 1–15 minutes (R6.2.2.2); numbers are seconds
    (:func:`optev.options.control_step_option`).

    Raises
    ------
    OptionError
        ``step`` is not a duration, or outside 1–15 minutes.
    """
    return control_step_option(step, name)


def horizon_steps(horizon: str | pd.Timedelta | int | None, step: pd.Timedelta, formulation: Formulation,
                  name: str = "horizon") -> int:
    """Number of window steps of a horizon (duration rounded up to whole steps, or steps;
    :func:`optev.options.horizon_option`)."""
    return horizon_option(horizon, step, formulation.window, name)


@dataclasses.dataclass
class PreparedWindow:
    """A window :meth:`Controller.window` built for a state, before the solve.

    Attributes
    ----------
    window : Window
        The window the controller optimises.
    plugged : ndarray of bool
        Per session of the window: plugged in now (True) or a forecast arrival (False).
    arrival_reserve_kw, leaving_reserve_kw : ndarray
        Per station, the power held back for EVs arriving or leaving during the first interval, kW.
    needs_clipped : int
        Plugged sessions whose departure need was lowered to what full power reaches.
    needs_clipped_kwh : float
        Energy those needs were lowered by, kWh.
    """

    window: Window
    plugged: np.ndarray
    arrival_reserve_kw: np.ndarray
    leaving_reserve_kw: np.ndarray
    needs_clipped: int
    needs_clipped_kwh: float


class Controller:
    """Rolling-horizon controller of one instance with one formulation (module docstring).

    Parameters
    ----------
    formulation : Formulation or str
        A formulation, or the name/path of one (:func:`~optev.compose.formulation.load_formulation`).
    instance : Instance
        Feeder, stations, fleet data (vehicle types, EVs), tariffs and time series. Its
        ``sessions`` table is *not* read by the controller (only by forecasters).
    step : str or Timedelta
        Control interval, 1–15 minutes (default 15 min, R6.2.2.2).
    horizon : str, Timedelta or int, optional
        Window length: a duration or a number of steps (default: the formulation's window).
    forecaster : forecaster, optional
        :mod:`optev.mpc.forecast` protocol; default the seasonal profile.
    quantum_kw : float
        Setpoint grid, kW (R6.5.2, default 1 kW).
    strategy : WindowStrategy or callable, optional
        The solve strategy, or a factory ``formulation -> strategy``; default
        :class:`MonolithicStrategy`.
    edge : EdgePolicy, optional
        Behaviour of stations without dispatch (used for the expected modes and for the
        local policy when a solve fails).
    ac_check : bool, optional
        Run the AC power flow on each window's plan (LinDistFlow's loss correction and
        its voltage error need it). Default: only for formulations whose network block is
        LinDistFlow (a copper-plate plan's AC check costs more than its solve).
    soft_limits : bool, optional
        Solve every window with soft limits (hard limits as penalised slacks) from the
        start; default: the formulation's ``[solver] soft_limits``. For a dispatcher that
        cannot change the load that breaks a limit (the uncontrolled baseline's DER
        dispatch, :mod:`optev.mpc.baseline`) soft limits are the formulation, not a fallback.
    soft_fallback : bool
        Re-solve an infeasible window with soft limits (default True).
    storage_terminal : {"initial", "free"}, optional
        Override the storage block's terminal condition.
    protect_departures : bool
        Share each planned station power among its EVs again with hard departure
        protection (:func:`~optev.blocks.disaggregate.disaggregate` with
        ``enforce_departure=True``, guided by the plan): rounding the per-EV optimum to the
        1 kW grid may otherwise leave an EV that needs full power in every remaining step
        a fraction of a quantum short; with protection it gets the quantum (default True).
    ev_plan : bool
        Put the per-EV plan of the horizon into each decision (the guide a station uses
        in hold; False saves memory for very large fleets).
    arrival_reserve : bool
        Reserve the expected power of the forecast EVs arriving during the first interval,
        and the power of the plugged EVs leaving during it, in the window's first step
        (module docstring, "Arrivals during an interval"; default True).
    limit_arrivals : bool
        EVs arriving during an interval share the power the plan reserved for them at their
        (slow or private) station, instead of charging at full power until the next decision
        (module docstring, "Arrivals during an interval"; default False).
    arrival_quantile : float, optional
        Reserve for the arrivals of the first interval at this quantile of their count rather
        than its mean (module docstring, "Arrivals during an interval"; e.g. 0.9; default None:
        the mean).
    log : bool
        Show HiGHS output.
    """

    def __init__(self, formulation: Formulation | str, instance: Instance, *, step: str | pd.Timedelta = "15min",
                 horizon: str | pd.Timedelta | int | None = None, forecaster: Any = None,
                 quantum_kw: float = QUANTUM_KW, strategy: WindowStrategy | Callable[[Formulation], Any] | None = None,
                 edge: EdgePolicy | None = None, ac_check: bool | None = None, soft_limits: bool | None = None,
                 soft_fallback: bool = True,
                 storage_terminal: str | None = None, protect_departures: bool = True, ev_plan: bool = True,
                 arrival_reserve: bool = True, limit_arrivals: bool = False, arrival_quantile: float | None = None,
                 log: bool = False) -> None:
        form = load_formulation(formulation) if isinstance(formulation, str) else formulation
        if storage_terminal is not None:
            if "storage" not in form.blocks:
                raise DataError("storage_terminal given but the formulation has no storage block")
            variant, opts = form.blocks["storage"]
            blocks = dict(form.blocks)
            blocks["storage"] = (variant, {**opts, "terminal": storage_terminal})
            form = dataclasses.replace(form, blocks=blocks)
        self.formulation = form
        self.instance = instance
        self.step_td = parse_step(step)
        self.step_s = self.step_td.total_seconds()
        self.steps = horizon_steps(horizon, self.step_td, form)
        if not quantum_kw > 0:
            raise DataError(f"quantum_kw must be positive, got {quantum_kw}")
        self.quantum_kw = float(quantum_kw)
        if arrival_quantile is not None:
            count_quantile_factor(np.ones(1), arrival_quantile)  # checks the level
        self.arrival_quantile = arrival_quantile
        self.forecaster = resolve_forecaster(forecaster)
        if strategy is None:
            self.strategy: Any = MonolithicStrategy(form, log=log)
        elif hasattr(strategy, "solve"):
            self.strategy = strategy
        else:
            self.strategy = strategy(form)
        self.edge = edge or EdgePolicy(quantum_kw=self.quantum_kw)
        lindistflow = form.blocks.get("network", ("copperplate", {}))[0] == "lindistflow"
        self.ac_check = lindistflow if ac_check is None else bool(ac_check)
        self.protect_departures = bool(protect_departures)
        self.soft_fallback = bool(soft_fallback)
        self.soft_limits = soft_limits
        self.ev_plan = bool(ev_plan)
        self.arrival_reserve = bool(arrival_reserve)
        self.limit_arrivals = bool(limit_arrivals)
        self.origin = instance_origin(instance)
        self._network: Any = None
        self._station_power = instance.station_power()
        self._power_by_id = self._station_power.set_index("station_id")
        self.station_ids = instance.stations["station_id"].astype(str).tolist()
        self._station_kinds = instance.stations["kind"].astype(str).tolist()
        self._tariffed = {d: set(instance.station_tariffs.loc[instance.station_tariffs["direction"] == d, "station_id"])
                          for d in ("buy", "sell")}
        self.service_limits: list[WindowService] = []
        """Limits of grid services (:mod:`optev.blocks.service`); the formulation needs a ``service`` block."""
        self.last_window: Window | None = None
        self.last_result: WindowResult | None = None
        self.last_forecast: Forecast | None = None

    # ------------------------------------------------------------------ helpers
    def _window_services(self, state: ControlState, times: pd.DatetimeIndex) -> list[WindowService]:
        """The service limits of a window; a smoothing ramp gets the combined output applied in the
        step before (PV + wind available then, less the participants' measured EV power), or None
        when the EVs' power was not measured or the step lies before the data."""
        out: list[WindowService] = []
        for item in self.service_limits:
            if isinstance(item, ServiceRamp):
                item = dataclasses.replace(item, previous_kw=self._previous_output(state, times, item.station_ids))
            out.append(item)
        return out

    def _previous_output(self, state: ControlState, times: pd.DatetimeIndex,
                         stations: tuple[str, ...]) -> float | None:
        members = set(stations)
        powers = [e.p_kw for e in state.evs if e.station_id in members]
        if any(p is None for p in powers):
            return None
        before = pd.DatetimeIndex([times[0] - self.step_td])
        if before[0] < self.origin:
            return None
        pv, wind = renewable_availability(self.instance, before)
        return float(pv.sum() + wind.sum() - sum(float(p or 0.0) for p in powers))

    def window_times(self, time_s: float) -> pd.DatetimeIndex:
        """The window's step start times for a decision at ``time_s``."""
        return pd.date_range(self.origin + pd.Timedelta(seconds=float(time_s)), periods=self.steps, freq=self.step_td,
                             unit="ns")

    def _check_state(self, state: ControlState) -> None:
        known = set(self.station_ids)
        bad = sorted({e.station_id for e in state.evs} - known)
        if bad:
            raise DataError(f"state names unknown station(s) {bad[:5]}", table="stations", column="station_id")
        ids = [e.ev_id for e in state.evs]
        if len(set(ids)) != len(ids):
            dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
            raise DataError(f"state lists EV {dup!r} twice", table="evs", column="ev_id")
        sids = [e.session_id for e in state.evs]
        if len(set(sids)) != len(sids):
            raise DataError("state lists a session twice", table="sessions", column="session_id")
        bad = sorted((set(state.unavailable_stations) | set(state.offline_stations)) - known)
        if bad:
            raise DataError(f"state flags unknown station(s) {bad[:5]}", table="stations", column="station_id")

    def _apply_forecast(self, w: Window, fc: Forecast) -> None:
        T = w.steps
        st = w.stations
        for name, shape in (("price_buy", (T,)), ("price_sell", (T,)), ("load_p_kw", w.load_p_kw.shape),
                            ("load_q_kvar", w.load_q_kvar.shape), ("pv_avail_kw", w.pv_avail_kw.shape),
                            ("wind_avail_kw", w.wind_avail_kw.shape)):
            value = getattr(fc, name)
            if value is None:
                continue
            arr = np.asarray(value, float)
            if arr.shape != shape:
                raise DataError(f"forecast {name} has shape {arr.shape}, the window needs {shape}")
            getattr(w, name)[...] = arr
        for direction, grid, table in (("buy", fc.price_buy, st.price_buy), ("sell", fc.price_sell, st.price_sell)):
            if grid is None or not st.n:
                continue
            plain = ~pd.Index(st.station_id).isin(self._tariffed[direction])  # hashed: np.isin on objects is O(n·m)
            table[plain] = np.asarray(grid, float)[None, :]

    def _reserve_arrivals(self, w: Window, arrivals: pd.DataFrame, now: float) -> np.ndarray:
        """Reserve the first-interval power of forecast arrivals (module docstring, "Arrivals
        during an interval"); return it per station of the window, kW.

        Every forecast session arriving during the interval counts, also one that leaves
        before the interval ends (a short stop at a fast station has no whole step in the
        window, but draws power in this one): :math:`\tau` is the part of the interval it is
        plugged in, its need is its target minus its arrival energy.
        """
        st = w.stations
        none = np.zeros(st.n)
        if not len(arrivals) or not st.n:
            return none
        t1 = now + self.step_s
        arr = arrivals["arrival_s"].to_numpy(float)
        soon = (arr > now) & (arr < t1)
        if not soon.any():
            return none
        fc = arrivals.loc[soon]
        station = pd.Index(st.station_id).get_indexer(fc["station_id"].astype(str).to_numpy(object))
        cap, p_ch, eff, _ = ev_station_params(self.instance, fc["ev_id"].astype(str).tolist(),
                                              fc["station_id"].astype(str).tolist(), power_by_id=self._power_by_id)
        tau_h = (np.minimum(fc["departure_s"].to_numpy(float), t1) - arr[soon]) / 3600.0
        ok = (station >= 0) & (tau_h > 0)
        need = np.maximum(fc["soc_target"].to_numpy(float) - fc["soc_arrival"].to_numpy(float), 0.0) * cap
        p = np.where(ok, np.minimum(p_ch, np.divide(need, eff * tau_h, out=np.zeros_like(need), where=ok)), 0.0)
        mean_kw = np.bincount(station[ok], weights=(p * tau_h / w.dt_h)[ok], minlength=st.n)
        scale = np.divide(np.minimum(mean_kw, st.p_site_max_kw), mean_kw, out=np.zeros(st.n), where=mean_kw > 0)
        reserve_kw = mean_kw * scale
        if self.arrival_quantile is not None:  # the count's quantile: more (or fewer) of the same arrivals
            count = np.bincount(station[ok], minlength=st.n)
            reserve_kw = np.minimum(mean_kw * count_quantile_factor(count, self.arrival_quantile), st.p_site_max_kw)
        # those in the window start its second step with what they charged in the first
        ev = w.evs
        rows = pd.Index(ev.session_id).get_indexer(fc["session_id"].astype(str).to_numpy(object)) if ev.n \
            else np.full(len(fc), -1)
        inw = (rows >= 0) & ok
        ev.e_init_kwh[rows[inw]] = np.minimum(
            ev.e_init_kwh[rows[inw]] + eff[inw] * p[inw] * tau_h[inw] * scale[station[inw]], ev.capacity_kwh[rows[inw]])
        _add_first_step_load(w, reserve_kw)
        return reserve_kw

    def _allowances(self, w: Window, reserve: np.ndarray, state: ControlState) -> dict[str, float]:
        """Per slow or private station, the power reserved for EVs arriving during the
        interval (module docstring, "Arrivals during an interval"); none for fast stations,
        unavailable ones, or without ``limit_arrivals`` and the arrival reserve."""
        if not (self.arrival_reserve and self.limit_arrivals):
            return {}
        st = w.stations
        by_station = dict(zip(st.station_id, reserve))
        down = set(state.unavailable_stations)
        return {s: float(by_station.get(s, 0.0)) for s, kind in zip(self.station_ids, self._station_kinds)
                if kind != "fcs" and s not in down}

    @staticmethod
    def _clip_needs(w: Window, real: np.ndarray, counted: np.ndarray | None = None) -> tuple[int, float]:
        """Lower needs that full-power charging can no longer reach (see "Terminal conditions");
        ``real`` marks the sessions plugged in now (the others are forecast); the count and
        energy returned are those of the ``counted`` sessions (default: the real ones)."""
        ev = w.evs
        if not ev.n:
            return 0, 0.0
        reach = ev.e_init_kwh + ev.eff_ch * ev.p_ch_max_kw * w.dt_h * ev.plugged.sum(axis=1)
        reach = np.minimum(reach, ev.capacity_kwh)
        over = ev.e_need_kwh > reach + 1e-9
        lowered = np.where(over, ev.e_need_kwh - reach, 0.0)
        fc = ~np.asarray(real, bool)
        if fc.any():
            # forecast sessions: an equal share of the site cap the plugged EVs leave at full power
            st = w.stations
            a = ev.plugged > 0
            taken = np.zeros((st.n, w.steps))
            np.add.at(taken, ev.station[~fc], a[~fc] * ev.p_ch_max_kw[~fc, None])
            count = np.zeros((st.n, w.steps))
            np.add.at(count, ev.station[fc], a[fc].astype(float))
            room = np.maximum(st.p_site_max_kw[:, None] - taken, 0.0)
            share = np.divide(room, count, out=np.zeros_like(room), where=count > 0)
            p_fc = np.minimum(ev.p_ch_max_kw[fc, None], share[ev.station[fc]]) * a[fc]
            reach[fc] = np.minimum(reach[fc], np.maximum(ev.e_init_kwh[fc] + ev.eff_ch[fc] * w.dt_h * p_fc.sum(axis=1),
                                                         ev.e_min_kwh[fc]))
        ev.e_need_kwh = np.minimum(ev.e_need_kwh, reach)
        ev.e_req_kwh = np.minimum(ev.e_req_kwh, reach)
        counted = real if counted is None else counted
        return int((over & counted).sum()), float(lowered[counted].sum())

    def _solve(self, w: Window) -> tuple[WindowResult | None, str, str]:
        if self.soft_limits:
            try:
                return self.strategy.solve(w, soft_limits=True, ac_check=self.ac_check), "soft_limits", ""
            except OptevError as exc:
                return None, "failed", str(exc)
        try:
            return self.strategy.solve(w, soft_limits=self.soft_limits, ac_check=self.ac_check), "optimal", ""
        except InfeasibleError as exc:
            if not self.soft_fallback:
                return None, "failed", str(exc)
            try:
                return self.strategy.solve(w, soft_limits=True, ac_check=self.ac_check), "soft_limits", str(exc)
            except OptevError as exc2:
                return None, "failed", f"{exc}; with soft limits: {exc2}"
        except OptevError as exc:
            return None, "failed", str(exc)

    # ------------------------------------------------------------------ the call
    def window(self, state: ControlState, forecasts: Forecast | None = None) -> PreparedWindow:
        """The window :meth:`step` optimises for ``state``, built but not solved: the plugged EVs,
        the forecast arrivals, the arrival and leaving reserves and the needs clipped to what full
        power reaches (adjustable-capacity curves read it, :mod:`optev.forecast.flex`). Asks the
        forecaster as :meth:`step` does (``observe`` then ``forecast``) unless ``forecasts`` is given."""
        self._check_state(state)
        now = float(state.time_s)
        times = self.window_times(now)
        self.forecaster.observe(state)
        fc = forecasts if forecasts is not None else self.forecaster.forecast(self.instance, times, state)
        self.last_forecast = fc
        down = set(state.unavailable_stations)
        live = [e for e in state.evs if e.station_id not in down]
        plugged = sessions_of(self.instance, live, now, self.step_s, power_by_id=self._power_by_id)
        arrivals = fc.arrivals
        if len(arrivals):
            ok = (~arrivals["station_id"].isin(down) & arrivals["station_id"].isin(self.station_ids)
                  & arrivals["ev_id"].isin(self.instance.evs["ev_id"]) & (arrivals["arrival_s"] > now)
                  & ~arrivals["session_id"].isin(plugged["session_id"]))
            arrivals = arrivals[ok]
        sessions = pd.concat([plugged, arrivals], ignore_index=True) if len(arrivals) else plugged
        work = with_sessions(self.instance, sessions)
        w = build_window(work, start=times[0], steps=self.steps, step=self.step_td, station_power=self._station_power,
                         ev_energy_kwh={e.session_id: e.energy_kwh for e in live}, quantum_kw=self.quantum_kw,
                         network=self._network)
        self._network = w.network  # the feeder does not change between calls: compile it once
        self._apply_forecast(w, fc)
        if state.storage_e_kwh:
            w.extra["storage_e_kwh"] = dict(state.storage_e_kwh)
        if self.service_limits:
            w.extra["service_limits"] = self._window_services(state, times)
        real = pd.Index(w.evs.session_id).isin(plugged["session_id"])  # hashed: np.isin on objects is O(n·m)
        reserve = self._reserve_arrivals(w, arrivals, now) if self.arrival_reserve else np.zeros(w.stations.n)
        leaving_kw = self._leaving_reserve(w, live, now) if self.arrival_reserve else np.zeros(w.stations.n)
        # an unknown departure (fast station) is estimated so that full power is needed: not a clipped need
        waiting = pd.Index(w.evs.session_id).isin([e.session_id for e in live if e.departure_s is None])
        n_clip, clip_kwh = self._clip_needs(w, real, counted=real & ~waiting)
        self.last_window = w
        return PreparedWindow(w, np.asarray(real, bool), reserve, leaving_kw, n_clip, clip_kwh)

    def step(self, state: ControlState, forecasts: Forecast | None = None) -> ControlDecision:
        """Decide the setpoints of ``[state.time_s, state.time_s + step)`` (module docstring).

        Parameters
        ----------
        state : ControlState
            Measured plugged EVs, station flags and storage energies now.
        forecasts : Forecast, optional
            Forecast for this window; default: ask the controller's forecaster.

        Returns
        -------
        ControlDecision
        """
        t_wall = time.perf_counter()
        prep = self.window(state, forecasts)
        w, real = prep.window, prep.plugged
        result, status, message = self._solve(w)
        self.last_result = result
        if result is None:
            decision = self._local_decision(state, message)
        else:
            decision = self._decision(state, w, result, real, status, message)
        decision.stats.needs_clipped = prep.needs_clipped
        decision.stats.needs_clipped_kwh = prep.needs_clipped_kwh
        decision.stats.arrival_reserve_kw = float(prep.arrival_reserve_kw.sum())
        decision.stats.leaving_reserve_kw = float(prep.leaving_reserve_kw.sum())
        if result is not None:
            decision.arrival_allowance_kw = self._allowances(w, prep.arrival_reserve_kw, state)
        decision.stats.evs = int(real.sum())
        decision.stats.forecast_arrivals = int(w.evs.n - real.sum())
        decision.stats.wall_s = time.perf_counter() - t_wall
        return decision

    def expected_modes(self, state: ControlState, schedule_covers: bool = True) -> dict[str, str]:
        """Mode of every station as the state's outage flags imply (:class:`EdgePolicy`)."""
        modes = {s: "central" for s in self.station_ids}
        for s, since in state.offline_stations.items():
            modes[s] = self.edge.mode(float(state.time_s) - float(since), schedule_covers)
        return modes

    def _decision(self, state: ControlState, w: Window, result: WindowResult, real: np.ndarray, status: str,
                  message: str) -> ControlDecision:
        ev, st = w.evs, w.stations
        plan = result.plan
        if plan.ev_p_kw.shape != (ev.n, w.steps) or plan.station_p_kw.shape != (st.n, w.steps):
            raise DataError(f"solve strategy returned a plan of shape {plan.ev_p_kw.shape}/{plan.station_p_kw.shape}, "
                            f"the window has {ev.n} sessions, {st.n} stations and {w.steps} steps")
        ev_p, st_p, short = plan.ev_p_kw, plan.station_p_kw, plan.shortfall_kwh
        if ev.n and (self.protect_departures or abs(self.quantum_kw - QUANTUM_KW) > 1e-12):
            re = disaggregate(ev, w.dt_h, st_p, guide_kw=ev_p, quantum_kw=self.quantum_kw,
                              enforce_departure=self.protect_departures, site_max_kw=st.p_site_max_kw,
                              site_dis_max_kw=st.p_site_dis_max_kw)
            ev_p, st_p, short = re.ev_p_kw, re.station_p_kw, re.shortfall_kwh
        row = {str(s): i for i, s in enumerate(ev.session_id)}
        ev_kw: dict[str, float] = {}
        ev_plan: dict[str, list[float]] = {}
        shortfall: dict[str, float] = {}
        leaving = []
        for e in state.evs:
            i = row.get(e.session_id)
            if e.station_id in state.unavailable_stations:
                ev_kw[e.ev_id] = 0.0
                continue
            if i is None or ev.plugged[i, 0] <= 0:
                ev_kw[e.ev_id] = 0.0
                leaving.append(e)
                continue
            ev_kw[e.ev_id] = float(ev_p[i, 0])
            if self.ev_plan:
                ev_plan[e.session_id] = [float(v) for v in ev_p[i]]
            if short[i] > 0:
                shortfall[e.session_id] = float(short[i])
        station_kw = {s: 0.0 for s in self.station_ids}
        for e in state.evs:
            station_kw[e.station_id] += ev_kw[e.ev_id]
        if leaving:
            self._leaving_setpoints(leaving, float(state.time_s), ev_kw, station_kw, st)
        station_plan = {str(s): [float(v) for v in st_p[k]] for k, s in enumerate(st.station_id)}
        for s in state.unavailable_stations:
            station_plan[s] = [0.0] * w.steps
        for s, plan_s in station_plan.items():
            plan_s[0] = station_kw[s]  # the first entry is the setpoint (with EVs leaving during the interval)
        storage_kw, storage_plan = _storage_plan(result, w)
        summ = result.summary
        stats = SolveStats(
            status=status, termination=str(summ.get("termination", result.termination)),
            objective=_finite(summ.get("objective", result.objective)), message=message,
            build_s=float(summ.get("build_s", 0.0)), solve_s=float(summ.get("solve_s", 0.0)),
            check_s=float(summ.get("check_s", 0.0)), warm=bool(summ.get("warm", False)),
            iterations=int(summ.get("iterations", 0)),
            planned_shortfall_kwh=float(short[real].sum()) if ev.n else 0.0,
            slack_used={str(k): float(v) for k, v in (summ.get("slack_used") or {}).items() if v},
            max_abs_dv_pu=_finite(summ.get("max_abs_dv_pu")),
            loss_converged=_flag(summ.get("loss_correction_converged")),
            loss_error_pu=_finite(summ.get("loss_error_pu")), loss_rounds=_loss_rounds(summ),
            mapped_basis=bool(summ.get("mapped_basis", False)))
        if stats.loss_converged is False:
            note = (f"loss correction did not converge: LinDistFlow and AC voltages differ by "
                    f"{stats.loss_error_pu if stats.loss_error_pu is not None else float('nan'):.2g} p.u.")
            stats.message = f"{message}; {note}" if message else note
        return ControlDecision(time_s=float(state.time_s), step_s=self.step_s, setpoints=Setpoints(ev_kw, station_kw),
                               storage_kw=storage_kw, plan_start_s=float(state.time_s), plan_step_s=self.step_s,
                               station_plan_kw=station_plan, ev_plan_kw=ev_plan, storage_plan_kw=storage_plan,
                               modes=self.expected_modes(state), shortfall_kwh=shortfall, stats=stats)

    def _leaving_power(self, leaving: list, now: float) -> tuple[np.ndarray, np.ndarray]:
        r"""Setpoints of the EVs that leave during the interval (not in the window) before any
        site cap, kW on the quantum grid, and their mean power over the interval, kW.

        An EV charges what its need asks for in the time :math:`\tau` it has left, at most
        full power (mean :math:`p\,\tau/\Delta t`); an EV whose departure is unknown (a
        driver waiting at a fast station) gets full power until its target (mean
        :math:`\bar P^{ch}\min(\Delta t, E^{need}/(\eta^{ch}\bar P^{ch}))/\Delta t`).
        """
        q = self.quantum_kw
        cap, p_ch, eff, _ = ev_station_params(self.instance, [e.ev_id for e in leaving],
                                              [e.station_id for e in leaving], power_by_id=self._power_by_id)
        energy = np.array([e.energy_kwh for e in leaving], float)
        dep = np.array([now if e.departure_s is None else e.departure_s for e in leaving], float)
        tau_h = np.clip(dep - now, 0.0, self.step_s) / 3600.0
        need = np.maximum(np.array([e.soc_target for e in leaving], float) * cap - energy, 0.0)
        ok = tau_h > 0
        p_need = np.divide(need, eff * tau_h, out=np.zeros(len(leaving)), where=ok)
        p_max = np.minimum(p_ch, np.divide(np.maximum(cap - energy, 0.0), eff * tau_h, out=np.zeros(len(leaving)),
                                           where=ok))
        p = np.minimum(ceil_to_quantum(p_need, q), np.where(p_max >= p_ch, p_ch, floor_to_quantum(p_max, q)))
        p = np.where(ok, np.maximum(p, 0.0), 0.0)
        waiting = np.array([e.departure_s is None for e in leaving], bool) & (need > 0)
        p = np.where(waiting, p_ch, p)
        step_h = self.step_s / 3600.0
        t_full_h = np.divide(need, eff * p_ch, out=np.zeros(len(leaving)), where=p_ch > 0)
        mean = np.where(waiting, p_ch * np.minimum(step_h, t_full_h), p * tau_h) / step_h
        return p, mean

    def _leaving_reserve(self, w: Window, live: list, now: float) -> np.ndarray:
        """Reserve the mean power of the plugged EVs leaving during the interval in the
        window's first step at their stations' buses (as the arrival reserve); per station, kW."""
        st = w.stations
        rows = pd.Index(w.evs.session_id).get_indexer([e.session_id for e in live]) if w.evs.n \
            else np.full(len(live), -1)
        leaving = [e for e, i in zip(live, rows) if i < 0 or w.evs.plugged[i, 0] <= 0]
        if not leaving or not st.n:
            return np.zeros(st.n)
        _, mean = self._leaving_power(leaving, now)
        station = pd.Index(st.station_id).get_indexer([e.station_id for e in leaving])
        ok = station >= 0
        per_station = np.minimum(np.bincount(station[ok], weights=mean[ok], minlength=st.n), st.p_site_max_kw)
        _add_first_step_load(w, per_station)
        return per_station

    def _leaving_setpoints(self, leaving: list, now: float, ev_kw: dict[str, float], station_kw: dict[str, float],
                           st: Any) -> None:
        """EVs that leave during the interval (not in the window): their setpoints
        (:meth:`_leaving_power`) within the site cap left by the plan."""
        q = self.quantum_kw
        p, _ = self._leaving_power(leaving, now)
        site = dict(zip(st.station_id, st.p_site_max_kw))
        for k, e in enumerate(leaving):
            head = float(floor_to_quantum(max(site.get(e.station_id, np.inf) - station_kw[e.station_id], 0.0), q))
            v = float(min(p[k], head))
            ev_kw[e.ev_id] = v
            station_kw[e.station_id] += v

    def _local_decision(self, state: ControlState, message: str) -> ControlDecision:
        """Every station on the safe local policy (the solve failed)."""
        modes = {s: "fallback" for s in self.station_ids}
        down = set(state.unavailable_stations)
        live = [e for e in state.evs if e.station_id not in down]
        ev_kw, _ = local_setpoints(self.instance, live, float(state.time_s), self.step_s, modes, {}, self.edge)
        ev_kw = {e.ev_id: float(ev_kw.get(e.ev_id, 0.0)) for e in state.evs}
        station_kw = {s: 0.0 for s in self.station_ids}
        for e in state.evs:
            station_kw[e.station_id] += ev_kw[e.ev_id]
        storage = self.instance.feeder.storage
        zero = {str(s): 0.0 for s in storage["storage_id"]} if len(storage) else {}
        return ControlDecision(time_s=float(state.time_s), step_s=self.step_s, setpoints=Setpoints(ev_kw, station_kw),
                               storage_kw=zero, plan_start_s=float(state.time_s), plan_step_s=self.step_s,
                               modes=modes, stats=SolveStats(status="failed", message=message))


def _add_first_step_load(w: Window, per_station_kw: np.ndarray) -> None:
    """Add a power per station of the window to the first step's load at the stations' buses, kW
    (nothing without a network), and keep the stations' total in ``w.extra["station_first_step_kw"]``,
    which grid services add to the participants' power of the first step (:mod:`optev.blocks.service`)."""
    on_bus = w.stations.bus >= 0
    if w.n_bus and on_bus.any():
        np.add.at(w.load_p_kw[0], w.stations.bus[on_bus], per_station_kw[on_bus])
    before = w.extra.get("station_first_step_kw")
    w.extra["station_first_step_kw"] = np.asarray(per_station_kw, float) + (0.0 if before is None else before)


def _loss_rounds(summary: Mapping[str, Any]) -> int:
    """LP solves of the loss correction (0 when the window had none)."""
    if summary.get("loss_correction_converged") is None:
        return 0
    return int(summary.get("loss_correction_rounds", 0))


def _flag(v: Any) -> bool | None:
    """A summary's yes/no entry as bool, None when absent."""
    return None if v is None else bool(v)


def _finite(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _storage_plan(result: WindowResult, w: Window) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Net charging power of each storage unit: first step and horizon, from the ``storage`` table."""
    table = result.tables.get("storage")
    if table is None or not len(table):
        return {}, {}
    net = (table["p_ch_kw"] - table["p_dis_kw"]).to_numpy(float)
    codes, ids = pd.factorize(table["storage_id"].astype(str).to_numpy(object), sort=True)
    k = w.times.get_indexer(pd.DatetimeIndex(table["time"]))
    wide = np.zeros((ids.size, w.steps))
    ok = k >= 0
    np.add.at(wide, (codes[ok], k[ok]), net[ok])
    plan = {str(sid): wide[i].tolist() for i, sid in enumerate(ids)}
    return {sid: values[0] for sid, values in plan.items()}, plan

r"""Service limits of a window: peak regulation, valley filling, demand response and renewable smoothing
(R6.5.1.1, R6.5.1.4, R6.5.1.5).

A service request (:mod:`optev.services`) becomes, for the steps of its window, an upper
or a lower limit on a measured power: the participants' net EV charging power (a set of
stations) or the feeder's grid import (the whole city). The services layer computes the
limits from the request's baseline and hands them to each window as
``window.extra["service_limits"]`` (a list of :class:`ServiceLimit`); this block declares
them. Without limits the block declares nothing.

Sets
    :math:`j` service limits; :math:`t \in \mathcal{T}_j` the window's steps where limit
    :math:`j` is active (finite).

Measured power of limit :math:`j` (kW)
    :math:`P_{j,t} = \sum_{s \in S_j} (P^{ch}_{s,t} - P^{dis}_{s,t})` over its stations
    (``station_p_ch``, ``station_p_dis``), plus in the first step the power the MPC controller
    reserved at those stations for EVs arriving or leaving during the interval
    (``window.extra["station_first_step_kw"]``), or the grid import ``grid_import_kw`` when
    :math:`S_j` is the whole city's import.

Variables
    ``service_shortfall_<j>[t]`` :math:`u_{j,t} \ge 0` kW: how far the limit is missed.

Constraints
    ``service_upper_<j>``: :math:`P_{j,t} - u_{j,t} \le \bar P_{j,t}` (peak regulation,
    demand response: the baseline less the requested reduction, or an import cap);
    ``service_lower_<j>``: :math:`P_{j,t} + u_{j,t} \ge \underline P_{j,t}` (valley filling).

Objective
    ``service_shortfall`` :math:`\sum_{j,t} \pi_j\,\Delta t\,u_{j,t}` with :math:`\pi_j` the
    price of an unmet kWh (``penalty_per_kwh`` of the limit). The limits are soft on
    purpose: a request the fleet cannot meet (EVs must still reach their departure need,
    R6.5.1.5 "basic travel needs are kept") is met as far as possible and the shortfall is
    reported, never turned into an infeasible window.

Renewable smoothing (:class:`ServiceRamp`, R6.5.1.4)
    :math:`z_{j,t} \ge |X_t - X_{t-1}|` with :math:`X_t = \sum P^{pv}_t + \sum P^{wind}_t - P_{j,t}`
    over the active steps, objective ``service_ramp_<j>`` :math:`w_j \sum_t z_{j,t}` (the ramp of
    A.5's combined series :math:`P_{RES+EV}`).

Source
    The load-side peak-regulation and demand-response products of ``china_rules.md`` §2.1–§2.2
    (reduction below a baseline in a window, penalty per unit shortfall).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.context import ModelContext
from optev.blocks.envelope import session_energy_bounds
from optev.errors import DataError
from optev.lp.expr import LinExpr, as_expr

OPTIONS: dict[str, tuple[Any, str]] = {}


@dataclass(frozen=True)
class ServiceLimit:
    """A power limit of a service over time.

    Attributes
    ----------
    name : str
        The service id (names the limit's variables and results).
    station_ids : tuple of str or None
        The participating stations; None: the feeder's grid import.
    upper_kw, lower_kw : Series or None
        Limit by step start time (tz-aware index); NaN or a missing time: no limit then.
    penalty_per_kwh : float
        Price of one kWh by which the limit is missed, currency/kWh (> 0).
    station_share : DataFrame or None
        Each participating station's share of the limit by step start time (times ×
        station ids, rows summing to 1), used to share it among regions
        (:mod:`optev.hierarchy.services`); None: by plugged charging power.
    """

    name: str
    station_ids: tuple[str, ...] | None
    upper_kw: pd.Series | None
    lower_kw: pd.Series | None
    penalty_per_kwh: float
    station_share: pd.DataFrame | None = None


@dataclass(frozen=True)
class ServiceRamp:
    """Renewable smoothing (R6.5.1.4): a price on the step-to-step change of PV + wind − EV power.

    Attributes
    ----------
    name : str
        The service id.
    station_ids : tuple of str
        The participating stations (their net EV power offsets the renewables).
    active : Series of bool
        Steps (by start time) whose change from the previous step is priced.
    weight_per_kw : float
        Price of 1 kW of change per step, currency/kW (> 0).
    """

    name: str
    station_ids: tuple[str, ...]
    active: pd.Series
    weight_per_kw: float
    previous_kw: float | None = None
    """:math:`X` of the step before the window (measured), kW: ties the window's first step to
    what was applied; None (unknown) leaves the first step's change unpriced."""


@dataclass(frozen=True)
class ServiceVoltage:
    r"""Voltage support (R6.5.1.2): a price on bus voltages outside a band around a target.

    Attributes
    ----------
    name : str
        The service id.
    bus_ids : tuple of str or None
        Buses whose voltage is supported; None: every bus of the feeder.
    active : Series of bool
        Steps (by start time) of the service window.
    v_target_pu, deadband_pu : float
        Target :math:`V^*` and the band :math:`\pm b` around it without cost, p.u.
    weight_per_pu_h : float
        Price of 1 p.u. outside the band at one bus for one hour, currency (> 0).
    """

    name: str
    bus_ids: tuple[str, ...] | None
    active: pd.Series
    v_target_pu: float
    deadband_pu: float
    weight_per_pu_h: float


@dataclass(frozen=True)
class ServiceReserve:
    r"""Frequency reserve (R6.5.1.3): up and down headroom held by the participants' EVs.

    In the active steps the participants' net power :math:`P_t` must leave room to move by
    :math:`R^{up}` down and :math:`R^{down}` up within what their plugged EVs can do:
    :math:`P_t + D_t \ge R^{up}` and :math:`P_t \le C_t - R^{down}`, with
    :math:`C_t = \sum_e \mathbb 1^{plugged}_{e,t}ar P^{ch}_e` and
    :math:`D_t = \sum_{e\,V2G} \mathbb 1^{plugged}_{e,t}ar P^{dis}_e` over the participants'
    EVs (site caps bound :math:`C_t`); shortfalls are priced at ``penalty_per_kwh``.

    Attributes
    ----------
    name : str
    station_ids : tuple of str
    active : Series of bool
    up_kw, down_kw : float
        Reserve held, kW.
    penalty_per_kwh : float
        Price of a kWh of reserve not held, currency.
    duration_h : float
        How long the reserve must be sustainable, h (0: power headroom only). In every
        active step the participants' batteries keep the energy for it (:func:`declare_reserve_energy`).
    """

    name: str
    station_ids: tuple[str, ...]
    active: pd.Series
    up_kw: float
    down_kw: float
    penalty_per_kwh: float
    duration_h: float = 0.0


WindowService = ServiceLimit | ServiceRamp | ServiceVoltage | ServiceReserve
"""What ``window.extra["service_limits"]`` holds: limits and ramps."""


def _on_window(series: pd.Series | None, times: pd.DatetimeIndex) -> np.ndarray:
    if series is None:
        return np.full(times.size, np.nan)
    return series.reindex(times).to_numpy(float)


def measured_power(ctx: ModelContext, limit: ServiceLimit) -> LinExpr:
    """The power a limit constrains, shape (T,), kW (module docstring)."""
    if limit.station_ids is None:
        return as_expr(ctx.require("grid_import_kw", f"service {limit.name!r}"))
    st = ctx.window.stations
    pos = pd.Index(st.station_id).get_indexer(list(limit.station_ids))
    if (pos < 0).any():
        missing = [s for s, k in zip(limit.station_ids, pos) if k < 0][:5]
        raise DataError(f"service {limit.name!r}: unknown station(s) {missing}", table="stations",
                        column="station_id")
    p_ch = as_expr(ctx.require("station_p_ch", f"service {limit.name!r}"))
    p_dis = as_expr(ctx.require("station_p_dis", f"service {limit.name!r}"))
    power = (p_ch[pos] - p_dis[pos]).sum(axis=0)
    reserved = ctx.window.extra.get("station_first_step_kw")
    if reserved is not None and np.shape(reserved) == (st.n,):
        # EVs arriving or leaving during the first interval draw what the controller reserved
        # for them (optev.mpc.controller, "Arrivals during an interval") outside the plan's variables
        first = np.zeros(ctx.window.steps)
        first[0] = float(np.asarray(reserved, float)[pos].sum())
        power = power + first
    return power


def build(ctx: ModelContext, options: dict[str, Any], variant: str = "default") -> None:
    """Declare the service limits of ``window.extra["service_limits"]`` (module docstring)."""
    if variant != "default":
        raise ValueError(f"unknown service variant {variant!r}")
    w = ctx.window
    for j, limit in enumerate(w.extra.get("service_limits", ()) or ()):
        if isinstance(limit, ServiceRamp):
            _declare_ramp(ctx, j, limit)
            continue
        if isinstance(limit, ServiceVoltage):
            _declare_voltage(ctx, j, limit)
            continue
        if isinstance(limit, ServiceReserve):
            declare_reserve_energy(ctx, j, limit)
            limit = reserve_limit(ctx, limit)
        if not (np.isfinite(limit.penalty_per_kwh) and limit.penalty_per_kwh > 0):
            raise DataError(f"service {limit.name!r}: penalty_per_kwh must be positive, got {limit.penalty_per_kwh!r}")
        upper, lower = _on_window(limit.upper_kw, w.times), _on_window(limit.lower_kw, w.times)
        active = np.flatnonzero(np.isfinite(upper) | np.isfinite(lower))
        if not active.size:
            continue
        p = measured_power(ctx, limit)[active]
        short = ctx.lp.add_variables(f"service_shortfall_{j}", active.size, 0.0, np.inf, block="service",
                                     description=f"shortfall of service {limit.name!r}, kW")
        up = np.isfinite(upper[active])
        if up.any():
            ctx.lp.add_constraints(f"service_upper_{j}", p[np.flatnonzero(up)] - short[np.flatnonzero(up)], "<=",
                                   upper[active][up], block="service")
        lo = np.isfinite(lower[active])
        if lo.any():
            ctx.lp.add_constraints(f"service_lower_{j}", p[np.flatnonzero(lo)] + short[np.flatnonzero(lo)], ">=",
                                   lower[active][lo], block="service")
        ctx.lp.add_objective(f"service_shortfall_{j}", short * (limit.penalty_per_kwh * w.dt_h), block="service",
                             description=f"unmet service {limit.name!r}, currency")
        ctx.handles[f"service_shortfall_{j}"] = (active, short)


def _declare_ramp(ctx: ModelContext, j: int, ramp: ServiceRamp) -> None:
    r"""``service_ramp_<j>``: :math:`z_t \ge |X_t - X_{t-1}|` for the active steps t ≥ 1 of the
    window, :math:`X = \sum P^{pv} + \sum P^{wind} - P_{EV}` (kW), priced at ``weight_per_kw`` per kW."""
    if not (np.isfinite(ramp.weight_per_kw) and ramp.weight_per_kw > 0):
        raise DataError(f"service {ramp.name!r}: weight_per_kw must be positive, got {ramp.weight_per_kw!r}")
    w = ctx.window
    active = ramp.active.reindex(w.times, fill_value=False).to_numpy(bool)
    t = np.flatnonzero(active[1:]) + 1
    first = bool(active[0]) and ramp.previous_kw is not None and np.isfinite(ramp.previous_kw)
    if not (t.size or first):
        return
    x = -measured_power(ctx, ServiceLimit(ramp.name, ramp.station_ids, None, None, 1.0))
    for unit in ("pv_p", "wind_p"):
        if unit in ctx.handles:
            x = x + as_expr(ctx.handles[unit]).sum(axis=0)
    if t.size:
        _priced_change(ctx, f"service_ramp_{j}", x[t] - x[t - 1], ramp)
    if first:  # the change from the step applied before the window
        _priced_change(ctx, f"service_ramp_first_{j}", x[np.array([0])] - float(ramp.previous_kw or 0.0), ramp)


def _priced_change(ctx: ModelContext, name: str, change: LinExpr, ramp: ServiceRamp) -> None:
    """``z ≥ |change|`` and ``weight · Σ z`` in the objective."""
    z = ctx.lp.add_variables(name, change.shape[0], 0.0, np.inf, block="service",
                             description=f"|change| of PV + wind - EV power, service {ramp.name!r}, kW")
    ctx.lp.add_constraints(f"{name}_up", change - z, "<=", 0.0, block="service")
    ctx.lp.add_constraints(f"{name}_down", change + z, ">=", 0.0, block="service")
    ctx.lp.add_objective(name, z * ramp.weight_per_kw, block="service",
                         description=f"ramp of PV + wind - EV power, service {ramp.name!r}, currency")


def _declare_voltage(ctx: ModelContext, j: int, service: ServiceVoltage) -> None:
    r"""``service_voltage_<j>``: :math:`d_{k,t} \ge |v_{k,t} - V^{*2}| - 2V^*b` for the buses and
    active steps (``bus_v2`` of LinDistFlow is :math:`|V|^2`; near :math:`V^*` a band of
    :math:`\pm b` p.u. is :math:`\pm 2V^*b` in :math:`|V|^2`, and :math:`d/(2V^*)` p.u.), priced at
    ``weight_per_pu_h`` · Δt / (2V*) per unit of :math:`d`."""
    if not (np.isfinite(service.weight_per_pu_h) and service.weight_per_pu_h > 0):
        raise DataError(f"service {service.name!r}: the voltage weight must be positive, "
                        f"got {service.weight_per_pu_h!r}")
    w = ctx.window
    if "bus_v2" not in ctx.handles or w.network is None:
        raise DataError(f"service {service.name!r}: voltage support needs the LinDistFlow network "
                        "(network variant lindistflow)")
    t = np.flatnonzero(service.active.reindex(w.times, fill_value=False).to_numpy(bool))
    if not t.size:
        return
    bus_ids = list(w.instance.feeder.bus_ids)  # the network keeps the feeder's bus order
    wanted = bus_ids if service.bus_ids is None else list(service.bus_ids)
    rows = pd.Index(bus_ids).get_indexer(pd.Index(wanted))
    if (rows < 0).any():
        raise DataError(f"service {service.name!r}: unknown bus(es) {[b for b, r in zip(wanted, rows) if r < 0][:5]}",
                        table="buses", column="bus_id")
    v2 = as_expr(ctx.handles["bus_v2"])[rows][:, t]
    target = service.v_target_pu ** 2
    band = 2.0 * service.v_target_pu * service.deadband_pu
    d = ctx.lp.add_variables(f"service_voltage_{j}", (rows.size, t.size), 0.0, np.inf, block="service",
                             description=f"|V|² outside the band of service {service.name!r}, p.u.²")
    ctx.lp.add_constraints(f"service_voltage_above_{j}", v2 - d, "<=", target + band, block="service")
    ctx.lp.add_constraints(f"service_voltage_below_{j}", v2 + d, ">=", target - band, block="service")
    price = service.weight_per_pu_h * w.dt_h / (2.0 * service.v_target_pu)
    ctx.lp.add_objective(f"service_voltage_{j}", d * price, block="service",
                         description=f"voltage outside the band, service {service.name!r}, currency")


def reserve_limit(ctx: ModelContext, reserve: ServiceReserve) -> ServiceLimit:
    """The reserve as a :class:`ServiceLimit` on the participants' power (:class:`ServiceReserve`):
    upper :math:`C_t - R^{down}`, lower :math:`R^{up} - D_t` in the active steps."""
    w = ctx.window
    st = w.stations
    members = np.isin(np.asarray(st.station_id).astype(str), list(reserve.station_ids))
    ev_in = members[w.evs.station]
    plugged = w.evs.plugged * ev_in[:, None]
    charge = np.minimum(plugged.T @ w.evs.p_ch_max_kw, st.p_site_max_kw[members].sum())
    discharge = np.minimum((plugged * w.evs.v2g[:, None]).T @ w.evs.p_dis_max_kw,
                           st.p_site_dis_max_kw[members].sum())
    active = reserve.active.reindex(w.times, fill_value=False).to_numpy(bool)
    upper = np.where(active, charge - reserve.down_kw, np.nan)
    lower = np.where(active, reserve.up_kw - discharge, np.nan)
    return ServiceLimit(reserve.name, reserve.station_ids, pd.Series(upper, index=w.times),
                        pd.Series(lower, index=w.times), reserve.penalty_per_kwh)


def _participant_energy(ctx: ModelContext, reserve: ServiceReserve, t: np.ndarray, k: np.ndarray
                        ) -> tuple[LinExpr, np.ndarray, np.ndarray]:
    r"""The participants' planned battery energy at steps ``k`` and its bounds :math:`L`, :math:`U`
    there, over the sessions plugged in at steps ``t`` (kWh, shape (len(t),) each;
    :func:`declare_reserve_energy`).

    Per-EV variables (``ev_e``): sums over the participants' sessions plugged in at t of the
    energy at k and of the latest- and earliest-charging trajectories at k
    (:func:`optev.blocks.envelope.session_energy_bounds`: the least energy from which every
    departure need and SOC floor can still be met, the most that can have been charged).
    Station envelopes (``station_e``): the participants' stations' cumulative energy at k and
    their envelope bounds (the aggregate's own approximation: every session of the station).
    """
    w = ctx.window
    members = np.isin(np.asarray(w.stations.station_id).astype(str), list(reserve.station_ids))
    if "station_e" in ctx.handles:
        env = ctx.handles["station_envelope"]
        rows = np.flatnonzero(members)
        e = as_expr(ctx.handles["station_e"])[rows][:, k].sum(axis=0)
        return e, env.e_lower_kwh[rows][:, k].sum(axis=0), env.e_upper_kwh[rows][:, k].sum(axis=0)
    evs = ctx.handles["ev_arrays"]
    lower, upper = session_energy_bounds(evs, w.dt_h)
    sel = ((np.asarray(evs.plugged) > 0) & members[evs.station][:, None])[:, t].astype(float)
    e = (as_expr(ctx.require("ev_e", f"service {reserve.name!r}"))[:, k] * sel).sum(axis=0)
    e0 = evs.e_init_kwh[:, None]
    return e, (sel * (e0 + lower[:, k])).sum(axis=0), (sel * (e0 + upper[:, k])).sum(axis=0)


def declare_reserve_energy(ctx: ModelContext, j: int, reserve: ServiceReserve) -> None:
    r"""``service_reserve_energy_{up,down}_<j>``: the energy to sustain the reserve for its duration d.

    A reserve called at the start of active step t and deployed for d hours ends at step
    :math:`k = \min(t + \lceil d/\Delta t \rceil, T) - 1` (the window's last step at the latest);
    on top of the plan it has moved :math:`R^{up} d / \bar\eta^{dis}` kWh out of the batteries
    (less charging costs only :math:`\eta^{ch} R^{up} d`: the bound is conservative) or
    :math:`\bar\eta^{ch} R^{down} d` kWh into them. Both must leave the participants within
    their energy envelope at k:

    .. math::
        E_k - L_k + s^{up}_t \ge R^{up} d / \bar\eta^{dis}, \qquad
        U_k - E_k + s^{down}_t \ge \bar\eta^{ch} R^{down} d

    with :math:`L` the latest trajectory that still meets every departure need and SOC floor
    (R6.5.1.3 "never below its SOC floor or past its departure need") and :math:`U` the most
    that can have been charged (power and capacity), summed over the participants' sessions
    plugged in at t; :math:`\bar\eta` are their mean efficiencies. The shortfalls
    :math:`s \ge 0` (kWh) are priced at the reserve's ``penalty_per_kwh``.
    """
    if reserve.duration_h <= 0 or not (reserve.up_kw > 0 or reserve.down_kw > 0):
        return
    w = ctx.window
    t = np.flatnonzero(reserve.active.reindex(w.times, fill_value=False).to_numpy(bool))
    if not t.size or "ev_arrays" not in ctx.handles:
        return
    k = np.minimum(t + int(np.ceil(reserve.duration_h / w.dt_h - 1e-9)), w.steps) - 1
    evs = ctx.handles["ev_arrays"]
    members = np.isin(np.asarray(w.stations.station_id).astype(str), list(reserve.station_ids))[evs.station]
    eff_ch = float(evs.eff_ch[members].mean()) if members.any() else 1.0
    eff_dis = float(evs.eff_dis[members].mean()) if members.any() else 1.0
    e, low, high = _participant_energy(ctx, reserve, t, k)
    for side, kw, room, need in (("up", reserve.up_kw, e - low, reserve.duration_h / eff_dis),
                                 ("down", reserve.down_kw, -e + high, reserve.duration_h * eff_ch)):
        if kw <= 0:
            continue
        name = f"service_reserve_energy_{side}_{j}"
        short = ctx.lp.add_variables(name, t.size, 0.0, np.inf, block="service",
                                     description=f"{side} reserve energy not held, service {reserve.name!r}, kWh")
        ctx.lp.add_constraints(name, room + short, ">=", kw * need, block="service")
        ctx.lp.add_objective(name, short * reserve.penalty_per_kwh, block="service",
                             description=f"{side} reserve energy not held, service {reserve.name!r}, currency")

r"""EV flexibility, one set of variables per charging session (R6.1.5, R6.2.2.3, R6.2.3.1).

Sets
    :math:`e \in \mathcal{E}` EV sessions of the window, :math:`t \in \{0..T-1\}` steps of
    length :math:`\Delta t` h.

Parameters (from :class:`~optev.blocks.window.EVArrays`)
    :math:`a_{e,t}\in\{0,1\}` plugged in for the whole step; :math:`\bar P^{ch}_e, \bar P^{dis}_e` kW
    (:math:`\bar P^{dis}_e = 0` unless the user opted in to V2G); :math:`\eta^{ch}_e,
    \eta^{dis}_e`; :math:`E^0_e` kWh at window start; :math:`\underline E_e` kWh floor
    (:math:`\ge 0.2\,C_e` for V2G EVs, R6.1.5); :math:`C_e` capacity; :math:`E^{req}_e`
    energy required at the EV's last step in the window (departure need or terminal
    condition, see the window module).

Variables (declared only for the steps :math:`t` in which EV :math:`e` is plugged in,
:math:`a_{e,t} = 1`, and discharge only for V2G EVs — a day of 5-minute steps has about
four times fewer variables than a dense EV × step array; the block exposes dense
EV × step expressions to other blocks, zero where no variable exists)
    ``ev_p_ch[e,t]`` :math:`p^{ch}_{e,t}\in[0, \bar P^{ch}_e]` kW (grid side),
    ``ev_p_dis[e,t]`` :math:`p^{dis}_{e,t}\in[0, \bar P^{dis}_e]` kW (grid side),
    ``ev_e[e,t]`` :math:`E_{e,t}\in[\underline E_e, C_e]` kWh at the end of step t,
    ``ev_shortfall[e]`` :math:`s_e \ge 0` kWh (soft departure only),
    ``ev_mode[e,t]`` binary (variant ``exclusive`` only).

Constraints
    ``ev_energy_balance_first`` (first plugged step, from :math:`E^0_e`) and ``ev_energy_balance``:
    :math:`E_{e,t} = E_{e,t-1} + \Delta t\,(\eta^{ch}_e p^{ch}_{e,t} - p^{dis}_{e,t}/\eta^{dis}_e)`,
    :math:`E_{e,-1} = E^0_e`.

    ``ev_departure``: :math:`E_{e,\tau_e} + s_e \ge E^{req}_e` at the last plugged step
    :math:`\tau_e` (hard: :math:`s_e = 0`).

    ``ev_charge_mode``/``ev_discharge_mode`` (``exclusive``):
    :math:`p^{ch} \le a\bar P^{ch} m`, :math:`p^{dis} \le a\bar P^{dis}(1-m)`.

Objective contributions
    ``ev_shortfall_penalty`` :math:`\pi^{short}\sum_e s_e`;
    ``ev_v2g_reservation`` :math:`\sum_{e,t} r_e\,p^{dis}_{e,t}\Delta t` — V2G happens only
    when it earns more than the user's reservation price (R6.2.3.1).

Variants
    ``per_ev`` (LP, default) and ``exclusive`` (MIP without simultaneous charge and
    discharge). The LP may charge and discharge in the same step only when that is
    profitable (for example at negative prices); :func:`simultaneous_use` reports it.

Station variant ``aggregate``
    When the formulation's station block uses the ``aggregate`` variant
    (``ctx.variants["station"]``), this block declares no variables, constraints or
    objective terms: it only publishes the window's per-EV data (``ev_arrays``, with the
    ``v2g`` option applied) and its diagnostics, and :mod:`optev.blocks.envelope` models
    the EVs through each station's flexibility envelope. The ``departure`` and
    ``shortfall_penalty_per_kwh`` options then apply to the envelope's energy floor.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from optev.blocks.context import ModelContext
from optev.blocks.window import EVArrays
from optev.errors import DataError
from optev.lp.expr import scatter

OPTIONS: dict[str, tuple[Any, str]] = {
    "departure": ("hard", "`hard`: departure energy is a constraint; `soft`: shortfall priced by the penalty"),
    "shortfall_penalty_per_kwh": (10.0, "price of each kWh missing at departure (soft departure), currency/kWh"),
    "v2g": (True, "allow discharging for EVs that opted in (false: charging only)"),
}


def without_discharge(ev: EVArrays) -> EVArrays:
    """The sessions with option ``v2g = false``: no discharge power, no V2G flag, and an energy
    floor no higher than the energy at arrival (an EV that cannot discharge cannot be held above
    its arrival energy by a floor it arrived below)."""
    n = ev.n
    return replace(ev, p_dis_max_kw=np.zeros(n), v2g=np.zeros(n, dtype=bool),
                   e_min_kwh=np.minimum(ev.e_init_kwh, ev.capacity_kwh))


def build(ctx: ModelContext, options: dict[str, Any], variant: str = "per_ev") -> None:
    """Declare the EV block (see module docstring)."""
    w = ctx.window
    ev = w.evs
    lp = ctx.lp
    n, T = ev.n, w.steps
    dt = w.dt_h
    if options["departure"] not in ("hard", "soft"):
        raise DataError(f"ev option departure must be 'hard' or 'soft', got {options['departure']!r}")
    if not options["v2g"]:
        ev = without_discharge(ev)
    p_dis_max = ev.p_dis_max_kw
    ctx.handles["ev_arrays"] = ev
    if ctx.variants.get("station") == "aggregate":
        # the station's flexibility envelope (optev.blocks.envelope) replaces per-EV variables;
        # this block still provides the per-EV data (ev_arrays) and its diagnostics
        if variant != "per_ev":
            raise DataError(f"ev variant {variant!r} needs per-EV variables, which the station variant "
                            "'aggregate' does not declare; use ev variant 'per_ev'")
        ctx.diagnostics.append(diagnose)
        return
    # variables exist only in plugged steps: entry k is (EV e_idx[k], step t_idx[k]), sorted by EV then
    # step; a session is one contiguous run of steps, so consecutive entries of an EV are consecutive steps
    e_idx, t_idx = np.nonzero(ev.plugged > 0)
    K = e_idx.size
    first = np.r_[True, e_idx[1:] != e_idx[:-1]] if K else np.zeros(0, bool)
    last_k = np.flatnonzero(np.r_[e_idx[1:] != e_idx[:-1], True]) if K else np.zeros(0, np.int64)
    can_dis = np.flatnonzero(p_dis_max[e_idx] > 0)
    p_ch_k = lp.add_variables("ev_p_ch", K, 0.0, ev.p_ch_max_kw[e_idx],
                              description="charging power, grid side, kW (plugged steps only)")
    p_dis_k = lp.add_variables("ev_p_dis", can_dis.size, 0.0, p_dis_max[e_idx[can_dis]],
                               description="discharging power, grid side, kW (plugged steps of V2G EVs only)")
    e_k = lp.add_variables("ev_e", K, ev.e_min_kwh[e_idx], ev.capacity_kwh[e_idx],
                           description="battery energy at the end of each plugged step, kWh")
    p_dis_all = scatter(p_dis_k, (can_dis,), (K,))
    delta = p_ch_k * (dt * ev.eff_ch[e_idx]) - p_dis_all * (dt / ev.eff_dis[e_idx])
    k1 = np.flatnonzero(first)
    kn = np.flatnonzero(~first)
    lp.add_constraints("ev_energy_balance_first", e_k[k1] - delta[k1], "==", ev.e_init_kwh[e_idx[k1]])
    if kn.size:
        lp.add_constraints("ev_energy_balance", e_k[kn] - e_k[kn - 1] - delta[kn], "==", 0.0)
    has = np.zeros(n, bool)
    has[e_idx] = True
    owner = e_idx[last_k]  # EVs with at least one plugged step (all, after the window's filter)
    last = e_k[last_k]
    req = ev.e_req_kwh[owner]
    if options["departure"] == "soft":
        short = lp.add_variables("ev_shortfall", n, 0.0, ev.e_req_kwh, description="energy missing at departure")
        lp.add_constraints("ev_departure", last + short[owner], ">=", req)
        lp.add_objective("ev_shortfall_penalty", short, float(options["shortfall_penalty_per_kwh"]))
        ctx.handles["ev_shortfall"] = short
    else:
        slack = ctx.slack("ev_departure", (owner.size,))
        lp.add_constraints("ev_departure", last if slack is None else last + slack, ">=", req)
    if variant == "exclusive":
        ub_ch = ev.p_ch_max_kw[e_idx[can_dis]]
        ub_dis = p_dis_max[e_idx[can_dis]]
        mode = lp.add_variables("ev_mode", can_dis.size, 0.0, 1.0, integer=True, description="1 = charging mode")
        lp.add_constraints("ev_charge_mode", p_ch_k[can_dis] - mode * ub_ch, "<=", 0.0)
        lp.add_constraints("ev_discharge_mode", p_dis_k + mode * ub_dis, "<=", ub_dis)
    elif variant != "per_ev":
        raise ValueError(f"unknown ev variant {variant!r}")
    if can_dis.size:
        lp.add_objective("ev_v2g_reservation", p_dis_k * (dt * ev.reservation_price[e_idx[can_dis]]))
    # dense (EV × step) views for other blocks and results: power 0 when unplugged; energy e_init
    # before arrival and the last plugged value after departure
    p_ch = scatter(p_ch_k, (e_idx, t_idx), (n, T))
    p_dis = scatter(p_dis_k, (e_idx[can_dis], t_idx[can_dis]), (n, T))
    steps = np.arange(T)
    arrival = np.where(has, ev.arrival_step, T)
    pos = np.full((n, T), -1, dtype=np.int64)
    pos[e_idx, t_idx] = np.arange(K)
    pos = np.maximum.accumulate(np.where(pos >= 0, pos, -1), axis=1)  # carry the last entry forward
    before = steps[None, :] < arrival[:, None]
    e = scatter(e_k[np.where(pos >= 0, pos, 0)[~before]], (~before).nonzero(), (n, T),
                fill=ev.e_init_kwh[:, None])
    ctx.handles.update(ev_p_ch=p_ch, ev_p_dis=p_dis, ev_e=e)
    ctx.diagnostics.append(diagnose)


def diagnose(ctx: ModelContext) -> list[str]:
    """Likely causes of infeasibility in the EV block, most specific first."""
    w = ctx.window
    ev = w.evs
    reachable = ev.e_init_kwh + w.dt_h * ev.eff_ch * ev.p_ch_max_kw * ev.plugged.sum(axis=1)
    reachable = np.minimum(reachable, ev.capacity_kwh)
    short = np.flatnonzero(reachable < ev.e_req_kwh - 1e-6)
    out = []
    for k in short[:5]:
        # an EV plugged in before the window starts from the window's estimate of its energy then
        # (its arrival energy plus uncontrolled charging since, or a given state), not from its arrival
        first = int(ev.arrival_step[k])
        since = (f"its energy at the window start ({w.times[0]}; SOC {ev.e_init_kwh[k] / ev.capacity_kwh[k]:.2f})"
                 if first == 0 else f"its arrival energy when plugged in at step {first} ({w.times[first]})")
        out.append(f"EV session {ev.session_id[k]} (ev {ev.ev_id[k]}) cannot reach its departure energy "
                   f"{ev.e_req_kwh[k]:.1f} kWh even charging at full power ({ev.p_ch_max_kw[k]:g} kW) from "
                   f"{ev.e_init_kwh[k]:.1f} kWh, {since}: at most {reachable[k]:.1f} kWh")
    if short.size > 5:
        out.append(f"... and {short.size - 5} more EV sessions")
    return out


def simultaneous_use(p_ch: np.ndarray, p_dis: np.ndarray, tol_kw: float = 1e-6) -> int:
    """Number of (EV, step) pairs that charge and discharge at once."""
    return int(((p_ch > tol_kw) & (p_dis > tol_kw)).sum())

r"""Station setpoints → EV setpoints on the 1 kW grid (R6.2.3.3, R6.5.2, R6.1.5, R6.2.2.3).

For each step, in time order, every EV session at a station gets a setpoint
:math:`p_{e,t}` (charge positive, discharge negative, kW) such that

- it is a whole number of quanta (1 kW by default, R6.5.2);
- it respects the EV's power limits in that step, :math:`-a\bar P^{dis} \le p \le a\bar P^{ch}`;
- it never takes the EV below its SOC floor nor above its capacity; a charging
  setpoint may round the last step before a full battery *up* to a whole quantum
  (top-off): the battery management system stops at full charge, so the energy of
  that step is :math:`\min(E + \eta^{ch} p\,\Delta t, \bar E)` and the grid draws less
  than the setpoint (both plants, :mod:`optev.mobility` and :mod:`optev.mpc.replay`,
  behave this way). Without it a target of a full battery would be missed by up to one
  quantum-step of energy whenever the remaining room is not a whole number of quanta;
- it first protects departure needs: an EV that could otherwise no longer reach its
  required energy by charging at full power afterwards gets quanta first (and, without
  a guide, at least that charge even beyond the station setpoint);
- the station's net power stays within its site caps (physical limits win over
  departure protection; a need that the cap prevents is reported as shortfall);
- the EV setpoints of a station sum to the station setpoint rounded to the quantum
  (clipped to what the EVs can physically do), so they differ from the requested
  station setpoint by less than one quantum whenever the request is feasible.

Allocation within a station starts from a wish per EV: with a guide (the per-EV
optimum) the guide plus what the EV lags behind the guide's energy trajectory, so
rounding errors are caught up; without one, a share of each EV's range proportional to
the station's position between its minimum and maximum. Wishes are rounded down to the
grid; missing quanta go first to EVs whose departure need requires them, then to the
EVs furthest below their wish; surplus quanta are taken from the EVs furthest above it,
never first from one at its need.
Everything is vectorised over EVs; the loop runs over steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optev.blocks.window import EVArrays

QUANTUM_KW = 1.0
"""Setpoint resolution (R6.5.2: V2G adjustment step ≤ 1 kW)."""

TOP_OFF_MIN_KWH = 1e-9
"""Room below full charge under which a battery counts as full (no top-off quantum), kWh:
the plants' snap of a battery to its capacity (``optev.mobility.core.SNAP_KWH``)."""


@dataclass(frozen=True)
class Disaggregation:
    """Per-EV plan and its station totals.

    Attributes
    ----------
    ev_p_kw : ndarray (n_ev, T)
        Setpoints, charge positive, multiples of the quantum.
    ev_e_kwh : ndarray (n_ev, T)
        Battery energy at the end of each step under those setpoints.
    station_p_kw : ndarray (n_st, T)
        Sum of the EV setpoints per station.
    shortfall_kwh : ndarray (n_ev,)
        Energy missing at the last plugged step against the need (departure energy, or
        the window's terminal condition), 0 when met.
    """

    ev_p_kw: np.ndarray
    ev_e_kwh: np.ndarray
    station_p_kw: np.ndarray
    shortfall_kwh: np.ndarray


def _fill(group: np.ndarray, priority: np.ndarray, room: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Give each group ``need[g]`` quanta from its members' ``room`` in order of priority."""
    out = np.zeros_like(room)
    # only members with room in groups that need something can receive (the others get 0 and,
    # with no room, take nothing from the members after them): sort just those
    take = np.flatnonzero((need[group] > 0) & (room > 0))
    if not take.size:
        return out
    order = take[np.lexsort((-priority[take], group[take]))]
    g = group[order]
    r = room[order]
    csum = np.cumsum(r)
    starts = np.searchsorted(g, g, side="left")
    before = csum - r - np.where(starts > 0, csum[starts - 1], 0)
    give = np.clip(need[g] - before, 0, r)
    out[order] = give
    return out


def disaggregate(evs: EVArrays, dt_h: float, station_p_kw: np.ndarray, *, guide_kw: np.ndarray | None = None,
                 quantum_kw: float = QUANTUM_KW, enforce_departure: bool | None = None,
                 site_max_kw: np.ndarray | None = None, site_dis_max_kw: np.ndarray | None = None
                 ) -> Disaggregation:
    """Share each station's net setpoint (n_st × T, charge positive) among its EVs.

    Parameters
    ----------
    evs : EVArrays
        The window's EV sessions (limits, energies, requirements).
    dt_h : float
        Step length, h.
    station_p_kw : ndarray (n_st, T)
        Requested net station power per step (charge positive).
    guide_kw : ndarray (n_ev, T), optional
        Preferred per-EV net power (for example the per-EV optimum).
    quantum_kw : float
        Setpoint resolution.
    enforce_departure : bool, optional
        Make the departure protection a hard lower bound, even if the station then draws
        more than requested. Default: True without a guide (a station setpoint from an
        aggregate model may under-provide), False with one (the guide already meets every
        need, so protection only sets priorities and any rounding shortfall, at most about
        one quantum-step of energy, is reported).
    site_max_kw, site_dis_max_kw : ndarray (n_st,), optional
        Station caps on net charging and on net discharging (R7.2.2). They are physical
        limits and win over departure protection: at a station whose protected needs
        exceed its cap, protection only sets priorities and the shortfall is reported.
    """
    enforce = guide_kw is None if enforce_departure is None else enforce_departure
    n, T = evs.plugged.shape
    n_st = station_p_kw.shape[0]
    q = float(quantum_kw)
    st = evs.station
    e = evs.e_init_kwh.astype(float).copy()
    e_guide = e.copy()
    p_out = np.zeros((n, T))
    e_out = np.zeros((n, T))
    steps_left = np.cumsum(evs.plugged[:, ::-1], axis=1)[:, ::-1]  # plugged steps from t to the end
    eta_c, eta_d = evs.eff_ch, evs.eff_dis
    tiny = 1e-9
    carry = np.zeros(n_st)
    cap_q = None if site_max_kw is None else np.floor(np.asarray(site_max_kw, float) / q + tiny)
    dis_cap_q = None if site_dis_max_kw is None else np.floor(np.asarray(site_dis_max_kw, float) / q + tiny)
    for t in range(T):
        a = evs.plugged[:, t]
        room = np.maximum(evs.capacity_kwh - e, 0.0)
        hi = np.minimum(a * evs.p_ch_max_kw, room / (eta_c * dt_h))
        lo = -np.minimum(a * evs.p_dis_max_kw, np.maximum(e - evs.e_min_kwh, 0.0) * eta_d / dt_h)
        lo_physical = lo
        later = (steps_left[:, t] - a) * evs.p_ch_max_kw * eta_c * dt_h  # full power in later steps, kWh
        # least power that still reaches the need: battery-side energy → grid-side power
        # (charging stores η_ch·p·Δt, discharging removes p·Δt/η_dis)
        gap = evs.e_need_kwh - e - later
        must = np.minimum(np.maximum(np.where(gap > 0, gap / (eta_c * dt_h), gap * eta_d / dt_h), lo), hi)
        if enforce:
            lo = must
            if cap_q is not None:
                # a cap is physical: where protected needs exceed it, protection only sets priorities
                need_q = np.bincount(st, weights=np.maximum(np.ceil(must / q - tiny), 0.0), minlength=n_st)
                over = need_q > cap_q
                if over.any():
                    lo = np.where(over[st], lo_physical, must)
        # top-off (module docstring): the last partial quantum before a full battery is allowed
        hi_q = np.minimum(np.floor(a * evs.p_ch_max_kw / q + tiny),
                          np.ceil(np.where(room > TOP_OFF_MIN_KWH, hi, 0.0) / q - tiny))
        lo_q = np.minimum(np.ceil(lo / q - tiny), hi_q)
        must_q = np.minimum(np.ceil(must / q - tiny), hi_q)
        sum_lo = np.bincount(st, weights=lo_q, minlength=n_st)
        sum_hi = np.bincount(st, weights=hi_q, minlength=n_st)
        # station-level sigma-delta: carry the rounding error so the station's energy tracks the request
        wanted = station_p_kw[:, t] / q + carry
        rounded = np.round(wanted)
        target = np.clip(rounded, sum_lo, sum_hi)
        if cap_q is not None:
            target = np.minimum(target, np.maximum(cap_q, sum_lo))
        if dis_cap_q is not None:
            target = np.maximum(target, np.minimum(-dis_cap_q, sum_hi))
        # only the rounding error is carried (at most half a quantum), so each setpoint lies within
        # one quantum of its request; what the EVs could not deliver in a clipped step is dropped
        carry = np.where(target == rounded, wanted - target, 0.0)
        if guide_kw is not None:
            # follow the guide's energy trajectory: catch up what rounding left behind
            wish = (guide_kw[:, t] + (e_guide - e) / (eta_c * dt_h)) / q
        else:
            span = np.where(sum_hi > sum_lo, sum_hi - sum_lo, 1.0)
            frac = np.clip((target - sum_lo) / span, 0.0, 1.0)
            wish = lo_q + (hi_q - lo_q) * frac[st]
        base = np.floor(np.clip(wish, lo_q, hi_q) + tiny)
        diff = target - np.bincount(st, weights=base, minlength=n_st)
        # departure needs first: an EV whose need requires more than its base gets missing quanta
        # first and loses surplus quanta last; otherwise the furthest from its wish goes first
        needy = (must_q > base).astype(float)
        at_need = (must_q >= base).astype(float)
        up = _fill(st, (wish - base) + 1e3 * needy, hi_q - base, np.clip(diff, 0, None))
        down = _fill(st, (base - wish) - 1e3 * at_need, base - lo_q, np.clip(-diff, 0, None))
        p = (base + up - down) * q
        p_out[:, t] = p
        e = np.minimum(e + dt_h * eta_c * np.maximum(p, 0.0), np.maximum(evs.capacity_kwh, e)) \
            - dt_h * np.maximum(-p, 0.0) / eta_d
        if guide_kw is not None:
            gk = guide_kw[:, t]
            e_guide = e_guide + dt_h * (eta_c * np.maximum(gk, 0.0) - np.maximum(-gk, 0.0) / eta_d)
        e_out[:, t] = e
    station = np.zeros((n_st, T))
    np.add.at(station, st, p_out)
    last = e_out[np.arange(n), evs.departure_step] if n else np.zeros(0)
    shortfall = np.maximum(evs.e_need_kwh - last, 0.0)
    shortfall[shortfall < 1e-6] = 0.0
    return Disaggregation(p_out, e_out, station, shortfall)

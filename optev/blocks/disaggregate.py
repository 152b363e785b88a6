r"""Station setpoints → EV setpoints on the 1 kW grid (R6.2.3.3, R6.5.2, R6.1.5, R6.2.2.3).

For each step, in time order, every EV session at a station gets a setpoint
:math:`p_{e,t}` (charge positive, discharge negative, kW) such that

- it is a whole number of quanta :math:`q` (1 kW by default, R6.5.2) — or exactly the
  EV's own power limit, :math:`a\bar P^{ch}` or :math:`-a\bar P^{dis}` (*full power*,
  :func:`on_setpoint_grid`): an EV whose limit is not a whole number of quanta (a 5.98 kW
  on-board charger, a 6.6 kW wallbox) planned at its limit gets it, not the grid value below
  (:func:`_planned_full_power`: the other EVs of the station then share the rest of the
  request on the grid; without a per-EV plan, :func:`_full_power` raises EVs at their grid
  limit while the station stays within one quantum of its request and its caps) —
  uncontrolled charging gives it that power, so rounding it down would leave the driver
  worse off than no control at all;
- it respects the EV's power limits in that step, :math:`-a\bar P^{dis} \le p \le a\bar P^{ch}`;
- it never takes the EV below its SOC floor nor above its capacity; a charging
  setpoint may round the last step before a full battery *up* to a whole quantum
  (top-off): the battery management system stops at full charge, so the energy of
  that step is :math:`\min(E + \eta^{ch} p\,\Delta t, \bar E)` and the grid draws less
  than the setpoint (both plants, :mod:`optev.mobility` and :mod:`optev.mpc.replay`,
  behave this way). Without it a target of a full battery would be missed by up to one
  quantum-step of energy whenever the remaining room is not a whole number of quanta;
- **each EV rounds its own plan.** With a guide :math:`g_{e,t}` (a per-EV plan such as the
  per-EV LP optimum or a controller's plan; ``rounding="per_ev"``, the default), within
  the limits above,

  .. math::
      \lfloor g_{e,t}/q \rfloor q \;\le\; p_{e,t} \;\le\;
      \max\bigl(\lceil g_{e,t}/q \rceil,\ \lceil p^{must}_{e,t}/q \rceil\bigr)\, q .

  Rounding never moves from one EV onto another: an EV whose guide is ≥ 0 is never
  discharged, one whose guide is ≤ 0 never charged, and one planned at exactly 0 stays at
  0, unless its *own* departure need requires charge. A guide within
  :data:`GUIDE_GRID_ATOL` quanta of the grid counts as on it;
- departure needs: :math:`p^{must}_{e,t}`, the least power that still reaches the EV's
  need :math:`E^{need}_e` charging at full power in every later plugged step, is a
  priority (with a guide, a tie-breaker) and, with ``enforce_departure``, a lower bound
  even beyond the station setpoint;
- site caps are physical and win: the station's net power stays within its charging cap
  and, with a guide, the sum of its EVs' discharges within its discharging cap (as in
  the LP). Where the protected needs exceed the charging cap, protection only sets
  priorities (the shortfall is reported); where even the plans' floors exceed it (a guide
  that breaks the cap), the EVs move towards 0, never across it.

**Station total, with a guide** (:func:`_per_ev_target`): each EV *aims* at its guide plus
what it lags behind the guide's energy trajectory, within its range; the lags are the
station's accumulated rounding error split by EV (a per-EV sigma-delta). The station total
is the rounded sum of the aims, kept within one quantum of what the EVs can follow of the
request (the request itself unless an EV cannot follow its plan) and, where that allows,
in the band where every EV gets the floor or the ceiling of its aim; the quanta go to the
largest remainders. What the EVs cannot absorb within their ranges and the caps stays at
the station (the result's ``station_p_kw`` then differs from the request): it is never
pushed onto another EV. A request below what the plans' floors sum to (a limit, such as a
fallback cap) moves the EVs towards 0.

**Shortfall bound.** Every EV gets the floor or the ceiling of its aim, so its lag stays
within one quantum-step, and an EV whose guide meets its need ends at most one
quantum-step of energy, :math:`q\,\Delta t\,\eta^{ch}_e`, short of it (reported in
``shortfall_kwh``); the window plans that much above the need where it can
(:mod:`optev.blocks.window`, ``e_req``). The bound can fail only where a cap forces a
station below its EVs' aims (a cap that is not a whole number of quanta), or where hard
protection of one EV at a station at its cap takes a quantum a neighbour would have rounded
up to (within that neighbour's own range).

**A guide that is only a preference** (``rounding="station"``: the envelope split of
:func:`optev.blocks.envelope.disaggregation_guide`, which may exceed an EV's limits): the
station setpoint comes first, rounded with the rounding error carried to the next step
(:func:`_station_target`). Per station the EVs keep their own ranges when those can hold
that total, else widen to their guide's side of 0, and only where even that cannot to
their physical limits (:func:`_pick_range`). **Without a guide** each EV starts from the
same fraction of its physical range. In both cases the wishes are rounded down; missing
quanta go first to EVs whose departure need requires them, then to the EVs furthest below
their wish; surplus quanta are taken from the EVs furthest above it, last from one at its
need.

Everything is vectorised over EVs; the loop runs over steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optev.blocks.window import EVArrays
from optev.data.battery import energy_after_step
from optev.errors import DataError
from optev.tolerances import GUIDE_GRID_ATOL as GUIDE_GRID_ATOL
from optev.tolerances import SETPOINT_GRID_ATOL, SHORTFALL_ATOL_KWH
from optev.tolerances import TOP_OFF_MIN_KWH as TOP_OFF_MIN_KWH

QUANTUM_KW = 1.0
"""Setpoint resolution (R6.5.2: V2G adjustment step ≤ 1 kW)."""

GRID_ATOL = SETPOINT_GRID_ATOL
"""Distance from the quantum grid, in quanta, under which a limit or a need counts as on it
(floating-point rounding only; :data:`optev.tolerances.SETPOINT_GRID_ATOL`, which the
invariant checks accept too)."""

SHORTFALL_MIN_KWH = SHORTFALL_ATOL_KWH
"""Shortfall below which an EV counts as at its need, kWh (float rounding of the energy
balance; :data:`optev.tolerances.SHORTFALL_ATOL_KWH`, which the invariant checks accept too)."""

ROUNDINGS = ("per_ev", "station")
"""Values of ``disaggregate(rounding=)``: what a guide means (see :func:`disaggregate`)."""

PRIORITY_TIE = 1e-6
"""Priority bonus, in quanta, of EVs whose departure need requires a quantum when each EV
rounds its own plan: a tie-breaker only (largest remainder first)."""

PRIORITY_FIRST = 1e3
"""Priority bonus, in quanta, that puts EVs whose departure need requires a quantum ahead
of any wish difference (wishes lie within a few quanta of the setpoint range)."""


@dataclass(frozen=True)
class Disaggregation:
    """Per-EV plan and its station totals.

    Attributes
    ----------
    ev_p_kw : ndarray (n_ev, T)
        Setpoints, charge positive: multiples of the quantum, or an EV's full power
        (:func:`on_setpoint_grid`).
    ev_e_kwh : ndarray (n_ev, T)
        Battery energy at the end of each step under those setpoints.
    station_p_kw : ndarray (n_st, T)
        Sum of the EV setpoints per station; its difference from the requested station
        setpoint is the residual the EVs could not absorb within their ranges and the caps.
    shortfall_kwh : ndarray (n_ev,)
        Energy missing at the last plugged step against the need (departure energy, or
        the window's terminal condition), 0 when met.
    """

    ev_p_kw: np.ndarray
    ev_e_kwh: np.ndarray
    station_p_kw: np.ndarray
    shortfall_kwh: np.ndarray


@dataclass(frozen=True)
class _StepLimits:
    """One step's per-EV limits, in quanta (see :func:`_step_limits`)."""

    lo: np.ndarray    # lowest setpoint: discharge limit and SOC floor, rounded up
    hi: np.ndarray    # highest setpoint: charge limit and capacity, with the top-off quantum
    must: np.ndarray  # least setpoint that still reaches the need, rounded up, within [lo, hi]


def _step_limits(evs: EVArrays, e: np.ndarray, a: np.ndarray, later_kwh: np.ndarray, dt_h: float,
                 q: float) -> _StepLimits:
    r"""Per-EV setpoint limits of one step on the quantum grid.

    With :math:`E` the energy at the start of the step,

    .. math::
        \overline p = \min\bigl(a\bar P^{ch},\ (C - E)/(\eta^{ch}\Delta t)\bigr),\quad
        \underline p = -\min\bigl(a\bar P^{dis},\ (E - \underline E)\,\eta^{dis}/\Delta t\bigr),

    :math:`hi = \min(\lfloor a\bar P^{ch}/q\rfloor, \lceil \overline p/q\rceil)` (the ceiling is
    the top-off quantum; 0 for a full battery), :math:`lo = \min(\lceil\underline p/q\rceil, hi)`.
    The need gap :math:`G = E^{need} - E - L` (:math:`L` = ``later_kwh``, energy stored at full
    power in the later plugged steps) gives :math:`p^{must} = G/(\eta^{ch}\Delta t)` if
    :math:`G > 0` (charge now) else :math:`G\,\eta^{dis}/\Delta t` (the discharge still
    affordable), clipped to :math:`[\underline p, \overline p]`, and
    :math:`must = \min(\lceil p^{must}/q\rceil, hi)`.
    """
    eta_c, eta_d = evs.eff_ch, evs.eff_dis
    room = np.maximum(evs.capacity_kwh - e, 0.0)
    hi = np.minimum(a * evs.p_ch_max_kw, room / (eta_c * dt_h))
    lo = -np.minimum(a * evs.p_dis_max_kw, np.maximum(e - evs.e_min_kwh, 0.0) * eta_d / dt_h)
    must = np.minimum(np.maximum(_need_kw(evs, e, later_kwh, dt_h), lo), hi)
    hi_q = np.minimum(np.floor(a * evs.p_ch_max_kw / q + GRID_ATOL),
                      np.ceil(np.where(room > TOP_OFF_MIN_KWH, hi, 0.0) / q - GRID_ATOL))
    return _StepLimits(np.minimum(np.ceil(lo / q - GRID_ATOL), hi_q), hi_q,
                       np.minimum(np.ceil(must / q - GRID_ATOL), hi_q))


def _need_kw(evs: EVArrays, e: np.ndarray, later_kwh: np.ndarray, dt_h: float) -> np.ndarray:
    r"""Each EV's departure need as a power this step, kW, before any limit (:func:`_step_limits`).

    With the need gap :math:`G = E^{need} - E - L` (:math:`E` the energy at the start of the
    step, :math:`L` = ``later_kwh`` the energy stored at full power in the later plugged
    steps): :math:`G/(\eta^{ch}\Delta t)` if :math:`G > 0` (charge now), else
    :math:`G\,\eta^{dis}/\Delta t` (the discharge still affordable).
    """
    gap = evs.e_need_kwh - e - later_kwh
    return np.where(gap > 0, gap / (evs.eff_ch * dt_h), gap * evs.eff_dis / dt_h)


def _guide_range(guide_q: np.ndarray, lim: _StepLimits) -> tuple[np.ndarray, np.ndarray]:
    r"""Each EV's own rounding range around its guide, in quanta.

    .. math::
        L = \min\bigl(\max(\lfloor g/q \rfloor, lo),\ hi\bigr),\qquad
        U = \max\bigl(\min(\max(\lceil g/q \rceil, must),\ hi),\ L\bigr)

    (:math:`g/q` snapped to the grid within :data:`GUIDE_GRID_ATOL`). Since :math:`lo \le 0
    \le hi`, a guide ≥ 0 gives :math:`L \ge 0`, a guide ≤ 0 gives :math:`U \le \max(0, must)`.
    """
    lower = np.minimum(np.maximum(np.floor(guide_q + GUIDE_GRID_ATOL), lim.lo), lim.hi)
    upper = np.maximum(np.minimum(np.maximum(np.ceil(guide_q - GUIDE_GRID_ATOL), lim.must), lim.hi), lower)
    return lower, upper


def _sign_range(guide_q: np.ndarray, lim: _StepLimits, lower: np.ndarray, upper: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    r"""The widest range on the guide's side of 0, in quanta (``rounding="station"``).

    A guide > 0 may take :math:`[0, hi]`, a guide < 0 :math:`[lo, 0]`, a guide of 0 only 0
    (the EV's own range :math:`[L, U]` stays inside: it may include its departure need).
    """
    pos = guide_q > GUIDE_GRID_ATOL
    neg = guide_q < -GUIDE_GRID_ATOL
    return np.minimum(np.where(neg, lim.lo, 0.0), lower), np.maximum(np.where(pos, lim.hi, 0.0), upper)


def _station_sum(st: np.ndarray, values: np.ndarray, n_st: int) -> np.ndarray:
    """Per-station sums of a per-EV array."""
    return np.bincount(st, weights=values, minlength=n_st)


def _protected(st: np.ndarray, n_st: int, must: np.ndarray, planned: np.ndarray, cap_q: np.ndarray | None
               ) -> np.ndarray:
    r"""Per EV: is its departure need a hard lower bound (``enforce_departure``)?

    Yes unless its station's protected charging :math:`\sum_e \max(must_e, P_e)` exceeds the
    charging cap :math:`\bar P^q` (``planned`` :math:`P`: the guide's floor, or 0 without a
    guide): a cap is physical, and there protection only sets priorities.
    """
    if cap_q is None:
        return np.ones(st.size, dtype=bool)
    return ~(_station_sum(st, np.maximum(must, planned), n_st) > cap_q)[st]


def _protect(lower: np.ndarray, upper: np.ndarray, must: np.ndarray, protect: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    r"""Departure protection as a hard bound: protected EVs get :math:`L \leftarrow \max(L, must)`."""
    lower = np.where(protect, np.maximum(lower, must), lower)
    return lower, np.maximum(upper, lower)


def _capped_range(st: np.ndarray, n_st: int, lower: np.ndarray, upper: np.ndarray, cap_q: np.ndarray | None,
                  dis_cap_q: np.ndarray | None, priority: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    r"""The EVs' ranges within the site caps, in quanta.

    With a ``priority`` (a guide), where the EVs' deepest discharges exceed the discharging
    cap, :math:`-\sum_e \min(L_e, 0) > \underline P^q`, the excess quanta are taken off the
    discharging EVs' lower ends in order of priority (up to 0), so no setpoint in the ranges
    discharges the station beyond its cap (the LP's cap is on the sum of discharges). Where
    the lower ends sum above the charging cap :math:`\bar P^q` (a guide that breaks the cap,
    or protected needs), they drop to :math:`\min(L, 0)`. EVs move towards 0, never across
    it, so both caps can be met.
    """
    if dis_cap_q is not None and priority is not None:
        excess = -dis_cap_q - _station_sum(st, np.minimum(lower, 0.0), n_st)
        if (excess > 0).any():
            room = np.where(lower < 0, np.minimum(upper, 0.0) - lower, 0.0)
            lower = lower + _fill(st, priority, room, np.maximum(excess, 0.0))
    if cap_q is not None:
        over = _station_sum(st, lower, n_st) > cap_q
        if over.any():
            lower = np.where(over[st], np.minimum(lower, 0.0), lower)
    return lower, upper


def _pick_range(st: np.ndarray, n_st: int, ranges: list[tuple[np.ndarray, np.ndarray]], target: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per station, the first of ``ranges`` (narrowest first) whose sums hold ``target``;
    the last one where none does."""
    lower, upper = ranges[-1]
    for lo, hi in reversed(ranges[:-1]):
        fits = (_station_sum(st, lo, n_st) <= target) & (target <= _station_sum(st, hi, n_st))
        lower = np.where(fits[st], lo, lower)
        upper = np.where(fits[st], hi, upper)
    return lower, upper


def _per_ev_target(st: np.ndarray, n_st: int, wish: np.ndarray, guide_q: np.ndarray, followable: np.ndarray,
                   lower: np.ndarray, upper: np.ndarray, request_q: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Station totals and the EVs' ranges, in quanta, when each EV rounds its own plan
    (``rounding="per_ev"``).

    ``wish`` :math:`w_e` is EV e's guide :math:`g_e` plus its lag behind the guide's energy
    trajectory; the lags are the station's accumulated rounding error split by EV. With
    :math:`o = r - \sum_e g_e` the part of the request :math:`r` outside the EVs' plans (0 for a
    per-EV optimum), the *window* :math:`[\lceil \hat r - 1\rceil, \lfloor \hat r + 1\rfloor]`
    surrounds what the EVs can follow, :math:`\hat r = o + \sum_e \min(\max(g_e, \hat L_e), \hat U_e)`
    (``followable``: their own ranges before the site caps) — the request, unless an EV cannot
    follow its plan. A window below the EVs' lowest sum (a request that limits the plans,
    such as a fallback cap) lowers their ranges to :math:`\min(L_e, 0)`, one above their
    highest sum raises them to :math:`\max(U_e, 0)`: towards 0, never across it. With the aims
    :math:`a_e = \min(\max(w_e, L_e), U_e)` the station total is the sigma-delta value
    :math:`\operatorname{round}(o + \sum_e a_e)`, clipped to

    - the *band* :math:`[\sum_e \lfloor a_e\rfloor, \sum_e \lceil a_e\rceil]`, in which
      largest-remainder rounding gives every EV the floor or the ceiling of its aim, so no
      lag grows beyond one quantum-step, where it meets the window;
    - the window alone where they do not meet;

    then to :math:`[\sum_e L_e, \sum_e U_e]`. So what one EV cannot do stays at the station
    instead of being made up by the others (R6.2.3.3: within one quantum of the request
    wherever the EVs can follow their plans).
    """
    offset = request_q - _station_sum(st, guide_q, n_st)
    win_lo = np.ceil(offset + followable - 1.0 - GRID_ATOL)
    win_hi = np.floor(offset + followable + 1.0 + GRID_ATOL)
    limited = (_station_sum(st, lower, n_st) > win_hi)[st]
    lower = np.where(limited, np.minimum(lower, 0.0), lower)
    limited = (_station_sum(st, upper, n_st) < win_lo)[st]
    upper = np.where(limited, np.maximum(upper, 0.0), upper)
    aim = np.clip(wish, lower, upper)
    value = np.round(offset + _station_sum(st, aim, n_st))
    lo = np.maximum(win_lo, _station_sum(st, np.floor(aim + GRID_ATOL), n_st))
    hi = np.minimum(win_hi, _station_sum(st, np.ceil(aim - GRID_ATOL), n_st))
    meet = lo <= hi
    target = np.clip(value, np.where(meet, lo, win_lo), np.where(meet, hi, win_hi))
    return np.clip(target, _station_sum(st, lower, n_st), _station_sum(st, upper, n_st)), lower, upper


def _station_target(st: np.ndarray, n_st: int, lower: np.ndarray, upper: np.ndarray, wanted: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    r"""Station totals, in quanta, and the next carry, when the station setpoint comes first.

    Sigma-delta: the request plus the carried rounding error, :math:`w`, is rounded and
    clipped to what the EVs can do, :math:`[\sum_e L_e, \sum_e U_e]`; only the rounding error
    :math:`w - \operatorname{round}(w)` is carried (at most half a quantum), what the EVs could
    not absorb in a clipped step stays at the station and is dropped.
    """
    rounded = np.round(wanted)
    target = np.clip(rounded, _station_sum(st, lower, n_st), _station_sum(st, upper, n_st))
    return target, np.where(target == rounded, wanted - target, 0.0)


def _within_caps(target: np.ndarray, sum_lo: np.ndarray, sum_hi: np.ndarray, cap_q: np.ndarray | None,
                 dis_cap_q: np.ndarray | None) -> np.ndarray:
    """Station totals clipped to the site caps (unless the EVs' lowest or highest sum is beyond them)."""
    if cap_q is not None:
        target = np.minimum(target, np.maximum(cap_q, sum_lo))
    if dis_cap_q is not None:
        target = np.maximum(target, np.minimum(-dis_cap_q, sum_hi))
    return target


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


def _ranges(st: np.ndarray, n_st: int, lim: _StepLimits, guide_q: np.ndarray | None, rounding: str, enforce: bool,
            cap_q: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The candidate ranges of the EVs, narrowest first, in quanta, before the site caps:
    the physical one without a guide; with one, the EV's own range (``"per_ev"``) and for
    ``"station"`` also the guide's side of 0 and the physical one; with ``enforce`` the
    departure needs raise them (:func:`_protected`)."""
    if guide_q is None:
        ranges, planned = [(lim.lo, lim.hi)], np.zeros(lim.lo.size)
    else:
        own = _guide_range(guide_q, lim)
        ranges, planned = [own], own[0]
        if rounding == "station":
            ranges += [_sign_range(guide_q, lim, *own), (lim.lo, lim.hi)]
    if enforce:
        protect = _protected(st, n_st, lim.must, planned, cap_q)
        ranges = [_protect(lo, hi, lim.must, protect) for lo, hi in ranges]
    return ranges


def _proportional_wish(st: np.ndarray, n_st: int, lower: np.ndarray, upper: np.ndarray, target: np.ndarray
                       ) -> np.ndarray:
    """Without a guide: each EV wishes the same fraction of its range as the station target
    is of the station's."""
    sum_lo, sum_hi = _station_sum(st, lower, n_st), _station_sum(st, upper, n_st)
    span = np.where(sum_hi > sum_lo, sum_hi - sum_lo, 1.0)
    frac = np.clip((target - sum_lo) / span, 0.0, 1.0)
    return lower + (upper - lower) * frac[st]


def on_setpoint_grid(p_kw: np.ndarray, p_ch_max_kw: np.ndarray, p_dis_max_kw: np.ndarray,
                     quantum_kw: float = QUANTUM_KW, atol: float = GRID_ATOL) -> np.ndarray:
    """Whether each setpoint is one the plant may receive (R6.5.2): a whole number of quanta,
    or exactly the EV's own charge limit ``p_ch_max_kw`` or discharge limit ``−p_dis_max_kw``
    (full power; module docstring). Limits may be NaN (unknown: only the grid counts)."""
    p = np.asarray(p_kw, float)
    q = float(quantum_kw)
    grid = np.abs(p / q - np.round(p / q)) <= atol
    with np.errstate(invalid="ignore"):
        full = (np.abs(p - np.asarray(p_ch_max_kw, float)) <= atol * q) \
            | (np.abs(p + np.asarray(p_dis_max_kw, float)) <= atol * q)
    return grid | full


def _fill_amounts(group: np.ndarray, priority: np.ndarray, amount: np.ndarray, budget: np.ndarray) -> np.ndarray:
    """Which candidates (``amount`` > 0) get their whole ``amount``: per group, in order of
    ``priority``, as long as the running sum stays within the group's ``budget``."""
    take = np.flatnonzero(amount > 0)
    out = np.zeros(amount.size, dtype=bool)
    if not take.size:
        return out
    order = take[np.lexsort((-priority[take], group[take]))]
    g = group[order]
    csum = np.cumsum(amount[order])
    starts = np.searchsorted(g, g, side="left")
    running = csum - np.where(starts > 0, csum[starts - 1], 0.0)
    out[order] = running <= budget[g] + GRID_ATOL
    return out


def _planned_full_power(evs: EVArrays, lim: _StepLimits, a: np.ndarray, e: np.ndarray, dt_h: float, q: float,
                        guide_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EVs whose plan is their exact charge (discharge) limit, when that limit lies off the
    quantum grid and the battery can take (give) it for the whole step: they get it."""
    full_ch = a * evs.p_ch_max_kw
    full_dis = a * evs.p_dis_max_kw
    room_ch = np.maximum(evs.capacity_kwh - e, 0.0) / (evs.eff_ch * dt_h)
    room_dis = np.maximum(e - evs.e_min_kwh, 0.0) * evs.eff_dis / dt_h
    up = (full_ch > 0) & (guide_q >= full_ch / q - GUIDE_GRID_ATOL) & (full_ch / q > lim.hi + GRID_ATOL) \
        & (room_ch >= full_ch)
    down = (full_dis > 0) & (guide_q <= -full_dis / q + GUIDE_GRID_ATOL) & (-full_dis / q < lim.lo - GRID_ATOL) \
        & (room_dis >= full_dis)
    return up, down


def _full_power(evs: EVArrays, st: np.ndarray, n_st: int, p_q: np.ndarray, wish: np.ndarray, lim: _StepLimits,
                a: np.ndarray, e: np.ndarray, dt_h: float, q: float, request_kw: np.ndarray,
                site_max_kw: np.ndarray | None, site_dis_max_kw: np.ndarray | None) -> np.ndarray:
    r"""Setpoints in kW: the quanta ``p_q`` times :math:`q`, with EVs at the top (bottom) of
    their grid range that wish for more (less) raised to their exact charge (discharge)
    limit when it lies off the grid and the battery has room for it (module docstring).
    Per station the raises keep the station within one quantum of its requested power and
    within the site caps, largest wish first: full power never takes a station further from
    its request than the grid rounding may."""
    p = p_q * q
    full_ch = a * evs.p_ch_max_kw
    full_dis = a * evs.p_dis_max_kw
    room_ch = np.maximum(evs.capacity_kwh - e, 0.0) / (evs.eff_ch * dt_h)
    room_dis = np.maximum(e - evs.e_min_kwh, 0.0) * evs.eff_dis / dt_h
    up = (p_q >= lim.hi) & (p_q > 0) & (wish > p_q + GRID_ATOL) & (full_ch > p + GRID_ATOL * q) & (room_ch >= full_ch)
    down = (p_q <= lim.lo) & (p_q < 0) & (wish < p_q - GRID_ATOL) & (full_dis > -p + GRID_ATOL * q) \
        & (room_dis >= full_dis)
    if not (up.any() or down.any()):
        return p
    total = _station_sum(st, p, n_st)
    # up to one quantum beyond the request, as far as the grid rounding itself may go
    room_up = np.maximum(np.asarray(request_kw, float) + q - total, 0.0)
    if site_max_kw is not None:
        room_up = np.minimum(room_up, np.maximum(np.asarray(site_max_kw, float) - total, 0.0))
    room_down = np.maximum(total - np.asarray(request_kw, float) + q, 0.0)
    if site_dis_max_kw is not None:
        dis = _station_sum(st, np.maximum(-p, 0.0), n_st)
        room_down = np.minimum(room_down, np.maximum(np.asarray(site_dis_max_kw, float) - dis, 0.0))
    raise_up = _fill_amounts(st, wish - p_q, np.where(up, full_ch - p, 0.0), room_up)
    raise_down = _fill_amounts(st, p_q - wish, np.where(down, p + full_dis, 0.0), room_down)
    return np.where(raise_up, full_ch, np.where(raise_down, -full_dis, p))


def _allocate(st: np.ndarray, n_st: int, wish: np.ndarray, lower: np.ndarray, upper: np.ndarray,
              target: np.ndarray, must: np.ndarray, need_bonus: float) -> np.ndarray:
    """Setpoints in quanta: each wish rounded down onto its range, then the missing quanta to
    the EVs furthest below their wish and the surplus quanta from those furthest above it
    (largest remainder); an EV whose departure need requires more than its base gets
    ``need_bonus`` of priority for a missing quantum and keeps its quanta last."""
    base = np.floor(np.clip(wish, lower, upper) + GRID_ATOL)
    diff = target - _station_sum(st, base, n_st)
    needy = (must > base).astype(float)
    at_need = (must >= base).astype(float)
    up = _fill(st, (wish - base) + need_bonus * needy, upper - base, np.clip(diff, 0, None))
    down = _fill(st, (base - wish) - need_bonus * at_need, base - lower, np.clip(-diff, 0, None))
    return base + up - down


def disaggregate(evs: EVArrays, dt_h: float, station_p_kw: np.ndarray, *, guide_kw: np.ndarray | None = None,
                 quantum_kw: float = QUANTUM_KW, enforce_departure: bool | None = None,
                 site_max_kw: np.ndarray | None = None, site_dis_max_kw: np.ndarray | None = None,
                 rounding: str = "per_ev") -> Disaggregation:
    """Share each station's net setpoint (n_st × T, charge positive) among its EVs.

    The rule is the module docstring's: with a guide, each EV rounds its own guide (never
    a sign flip, never another EV's rounding); the station total follows the request as
    closely as those ranges and the site caps allow, and the rest stays at the station.
    The state (battery energies, lags) is carried from step to step; the loop runs over
    steps, everything else is vectorised over EVs.

    Parameters
    ----------
    evs : EVArrays
        The window's EV sessions (limits, energies, requirements).
    dt_h : float
        Step length, h.
    station_p_kw : ndarray (n_st, T)
        Requested net station power per step (charge positive).
    guide_kw : ndarray (n_ev, T), optional
        Per-EV plan (for example the per-EV optimum): each setpoint is a rounding of it.
    quantum_kw : float
        Setpoint resolution.
    enforce_departure : bool, optional
        Make the departure protection a hard lower bound, even if the station then draws
        more than requested. Default: True without a guide (a station setpoint from an
        aggregate model may under-provide), False with one (the guide already meets every
        need, so protection only sets priorities and any rounding shortfall, at most one
        quantum-step of energy, is reported).
    site_max_kw, site_dis_max_kw : ndarray (n_st,), optional
        Station caps on net charging and on discharging (R7.2.2; with a guide the sum of
        the EVs' discharges, as in the LP, without one the net discharge). They are physical
        limits and win over departure protection: at a station whose protected needs
        exceed its cap, protection only sets priorities and the shortfall is reported.
    rounding : {"per_ev", "station"}
        What the guide is. ``"per_ev"`` (default): a per-EV plan that sums to the station
        setpoint (the per-EV LP optimum, a controller's plan); each EV rounds its own guide
        and whatever the EVs cannot absorb within those ranges stays at the station.
        ``"station"``: a preference only (the envelope split of
        :func:`optev.blocks.envelope.disaggregation_guide`, which may exceed an EV's limits);
        the station setpoint comes first. Per station, the EVs keep their own ranges when
        those can hold the station total, else they widen to their guide's side of 0
        (:math:`[0, hi]` for a guide > 0, :math:`[lo, 0]` for one < 0, 0 for a guide of 0),
        and only where even that cannot to their physical limits. Ignored without a guide.

    Raises
    ------
    DataError
        For an unknown ``rounding``.
    """
    if rounding not in ROUNDINGS:
        raise DataError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    n, T = evs.plugged.shape
    n_st = station_p_kw.shape[0]
    if n == 0:  # nothing to share: every station at 0
        return Disaggregation(np.zeros((0, T)), np.zeros((0, T)), np.zeros((n_st, T)), np.zeros(0))
    q = float(quantum_kw)
    rule = _Rule(evs=evs, n_st=n_st, dt_h=dt_h, q=q, rounding=rounding,
                 enforce=guide_kw is None if enforce_departure is None else enforce_departure,
                 cap_q=None if site_max_kw is None else np.floor(np.asarray(site_max_kw, float) / q + GRID_ATOL),
                 dis_cap_q=(None if site_dis_max_kw is None
                            else np.floor(np.asarray(site_dis_max_kw, float) / q + GRID_ATOL)),
                 site_max_kw=site_max_kw, site_dis_max_kw=site_dis_max_kw)
    p_out, e_out = _run_steps(rule, station_p_kw, guide_kw)
    station = np.zeros((n_st, T))
    np.add.at(station, evs.station, p_out)
    last = e_out[np.arange(n), evs.departure_step] if n else np.zeros(0)
    shortfall = np.maximum(evs.e_need_kwh - last, 0.0)
    shortfall[shortfall < SHORTFALL_MIN_KWH] = 0.0
    return Disaggregation(p_out, e_out, station, shortfall)


@dataclass(frozen=True)
class _Rule:
    """What every step of :func:`disaggregate` shares: the sessions, the options and the site caps."""

    evs: EVArrays
    n_st: int
    dt_h: float
    q: float                          # quantum, kW
    rounding: str
    enforce: bool                     # departure needs as a hard lower bound
    cap_q: np.ndarray | None          # site charging caps, whole quanta
    dis_cap_q: np.ndarray | None      # site discharging caps, whole quanta
    site_max_kw: np.ndarray | None
    site_dis_max_kw: np.ndarray | None

    @property
    def st(self) -> np.ndarray:
        """Each EV's station."""
        return self.evs.station


def _run_steps(rule: _Rule, station_p_kw: np.ndarray, guide_kw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The setpoints and battery energies of every step, (n_ev, T): the limits of each step from the
    energies the steps before left, then its setpoints under the rule of the guide."""
    evs, dt_h, q = rule.evs, rule.dt_h, rule.q
    n, T = evs.plugged.shape
    e = evs.e_init_kwh.astype(float).copy()
    e_guide = e.copy()
    p_out = np.zeros((n, T))
    e_out = np.zeros((n, T))
    steps_left = np.cumsum(evs.plugged[:, ::-1], axis=1)[:, ::-1]  # plugged steps from t to the end
    carry = np.zeros(rule.n_st)
    for t in range(T):
        a = evs.plugged[:, t]
        later = (steps_left[:, t] - a) * evs.p_ch_max_kw * evs.eff_ch * dt_h  # full power in later steps, kWh
        lim = _step_limits(evs, e, a, later, dt_h, q)
        if guide_kw is not None and rule.rounding == "per_ev":
            p = _per_ev_step(rule, lim, a, e, e_guide, guide_kw[:, t] / q, station_p_kw[:, t])
        else:
            gq = None if guide_kw is None else guide_kw[:, t] / q
            p, carry = _station_step(rule, lim, a, e, e_guide, gq, station_p_kw[:, t], carry)
        p_out[:, t] = p
        e = energy_after_step(e, p, dt_h, evs.capacity_kwh, evs.eff_ch, evs.eff_dis)
        if guide_kw is not None:
            gk = guide_kw[:, t]
            e_guide = e_guide + dt_h * (evs.eff_ch * np.maximum(gk, 0.0) - np.maximum(-gk, 0.0) / evs.eff_dis)
        e_out[:, t] = e
    return p_out, e_out


def _lagged_wish(rule: _Rule, guide_q: np.ndarray, e: np.ndarray, e_guide: np.ndarray) -> np.ndarray:
    """Each EV's wish, in quanta: its guide plus what rounding left it behind the guide's energy
    trajectory (to be caught up within its range)."""
    return guide_q + (e_guide - e) / (rule.evs.eff_ch * rule.dt_h * rule.q)


def _capped_ranges(rule: _Rule, ranges: list[tuple[np.ndarray, np.ndarray]], wish: np.ndarray | None
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The candidate ranges within the site caps (:func:`_capped_range`); with a wish, each EV's
    priority for the discharging cap is how far its wish lies above its range's lower end."""
    return [_capped_range(rule.st, rule.n_st, lo, hi, rule.cap_q, rule.dis_cap_q, None if wish is None else wish - lo)
            for lo, hi in ranges]


def _per_ev_step(rule: _Rule, lim: _StepLimits, a: np.ndarray, e: np.ndarray, e_guide: np.ndarray,
                 guide_q: np.ndarray, request_kw: np.ndarray) -> np.ndarray:
    """One step's setpoints, kW, when each EV rounds its own plan (``rounding="per_ev"``): EVs planned
    at their off-grid full power get it, the others track the rest of the request (:func:`_per_ev_target`)."""
    evs, st, n_st, q = rule.evs, rule.st, rule.n_st, rule.q
    full_up, full_down = _planned_full_power(evs, lim, a, e, rule.dt_h, q, guide_q)
    extra = np.where(full_up, a * evs.p_ch_max_kw / q - lim.hi, 0.0) \
        - np.where(full_down, a * evs.p_dis_max_kw / q + lim.lo, 0.0)
    request_q = request_kw / q - _station_sum(st, extra, n_st)
    gq = np.where(full_up, lim.hi, np.where(full_down, lim.lo, guide_q))
    ranges = _ranges(st, n_st, lim, gq, rule.rounding, rule.enforce, rule.cap_q)
    wish = _lagged_wish(rule, gq, e, e_guide)
    followable = _station_sum(st, np.clip(gq, *ranges[0]), n_st)
    ranges = _capped_ranges(rule, ranges, wish)
    wish = np.where(full_up, lim.hi, np.where(full_down, lim.lo, wish))
    target, lower, upper = _per_ev_target(st, n_st, wish, gq, followable, *ranges[0], request_q)
    target = _within_caps(target, _station_sum(st, lower, n_st), _station_sum(st, upper, n_st), rule.cap_q,
                          rule.dis_cap_q)
    p_q = _allocate(st, n_st, wish, lower, upper, target, lim.must, PRIORITY_TIE)
    return np.where(full_up, a * evs.p_ch_max_kw, np.where(full_down, -a * evs.p_dis_max_kw, p_q * q))


def _station_step(rule: _Rule, lim: _StepLimits, a: np.ndarray, e: np.ndarray, e_guide: np.ndarray,
                  guide_q: np.ndarray | None, request_kw: np.ndarray, carry: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One step's setpoints, kW, and the next carry, when the station setpoint comes first (a guide
    that is only a preference, ``rounding="station"``, or none): :func:`_station_target`, then the
    narrowest ranges that hold it (:func:`_pick_range`) and full power (:func:`_full_power`)."""
    st, n_st, q = rule.st, rule.n_st, rule.q
    ranges = _ranges(st, n_st, lim, guide_q, rule.rounding, rule.enforce, rule.cap_q)
    wish = None if guide_q is None else _lagged_wish(rule, guide_q, e, e_guide)
    ranges = _capped_ranges(rule, ranges, wish)
    target, carry = _station_target(st, n_st, *ranges[-1], request_kw / q + carry)
    target = _within_caps(target, _station_sum(st, ranges[-1][0], n_st), _station_sum(st, ranges[-1][1], n_st),
                          rule.cap_q, rule.dis_cap_q)
    lower, upper = _pick_range(st, n_st, ranges, target)
    if wish is None:
        wish = _proportional_wish(st, n_st, lower, upper, target)
    p_q = _allocate(st, n_st, wish, lower, upper, target, lim.must, PRIORITY_FIRST)
    # without a per-EV plan, EVs at their grid limit wish more when the station asks for more
    excess = request_kw / q - _station_sum(st, p_q, n_st)
    wish = np.where(excess[st] > GRID_ATOL, p_q + 1.0, np.where(excess[st] < -GRID_ATOL, p_q - 1.0, wish))
    p = _full_power(rule.evs, st, n_st, p_q, wish, lim, a, e, rule.dt_h, q, request_kw, rule.site_max_kw,
                    rule.site_dis_max_kw)
    return p, carry

"""Invariants of a solved window: the checks every plan must pass, as production code.

:func:`check_window` raises :class:`InvariantViolation` at the first invariant of a solved
:class:`~optev.compose.solve.WindowResult` that does not hold; :func:`invariant_violations`
returns its message in a list instead (empty when all hold), which the hierarchical solve
reports in ``summary["invariant_violations"]`` (:mod:`optev.hierarchy.solve`). The tests use
the same checks through :func:`optev.testing.check_invariants`, which turns a violation into
an ``AssertionError``. The accepted errors are the named tolerances of
:mod:`optev.tolerances`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from optev.blocks.disaggregate import (
    QUANTUM_KW,
    _need_kw,
    _step_limits,
    on_setpoint_grid,
)
from optev.compose.results import station_setpoints
from optev.data.battery import energy_after_step
from optev.tolerances import (
    ENERGY_BALANCE_ATOL_KWH,
    LIMIT_ATOL_KW,
    LP_FEAS_ATOL_KW,
    SETPOINT_GRID_ATOL,
    SETPOINT_TRACKING_QUANTA,
    SHORTFALL_ATOL_KWH,
    SOC_ATOL,
    SUM_ATOL_KW,
)

if TYPE_CHECKING:
    from optev.blocks.context import ModelContext
    from optev.blocks.window import EVArrays, StationArrays
    from optev.compose.solve import WindowResult


class InvariantViolation(Exception):
    """An invariant of a solved window does not hold: a bug in optev, not a user error (so not
    an :class:`~optev.errors.OptevError`). The message names the invariant, how many items
    violate it and the first few (session or station id, time, value, limit)."""


def invariant_violations(result: WindowResult) -> list[str]:
    """The invariant violations of a solved window: ``[]`` when every invariant of
    :func:`check_window` holds, else the message of the first one violated."""
    try:
        check_window(result)
    except InvariantViolation as exc:
        return [str(exc)]
    return []


def _first(mask: np.ndarray, limit: int = 3) -> list[tuple[int, ...]]:
    """Indices of the first ``limit`` True entries of ``mask``."""
    return [tuple(int(i) for i in idx) for idx in np.argwhere(mask)[:limit]]


@dataclass(frozen=True)
class _Checked:
    """The solved window under check, with its per-EV data as the LP saw it: what every step shares."""

    result: WindowResult
    evs: EVArrays

    @property
    def ctx(self) -> ModelContext:
        """The window's model context."""
        return self.result.context

    @property
    def stations(self) -> StationArrays:
        """The window's stations."""
        return self.ctx.window.stations

    @property
    def times(self) -> pd.DatetimeIndex:
        """The window's step start times."""
        return self.ctx.window.times

    @property
    def plugged(self) -> np.ndarray:
        """Whether each EV is plugged in, (n_ev, T) bool."""
        return self.evs.plugged > 0

    @property
    def per_ev(self) -> bool:
        """Whether the LP has per-EV variables (each EV then rounds its own plan)."""
        return "ev_p_ch" in self.ctx.handles

    def by_station(self, ev_values: np.ndarray) -> np.ndarray:
        """Per-station sums of an (n_ev, T) array, (n_st, T)."""
        out = np.zeros((self.stations.n, self.ctx.window.steps))
        np.add.at(out, self.evs.station, ev_values)
        return out

    def ev_plan(self) -> np.ndarray:
        """The LP's per-EV net power :math:`g = p^{ch} - p^{dis}`, (n_ev, T) kW (per-EV LP variables only)."""
        lp, x = self.ctx.lp, self.result.x
        return lp.evaluate(self.ctx.handles["ev_p_ch"], x) - lp.evaluate(self.ctx.handles["ev_p_dis"], x)

    def where(self, kind: str, idx: tuple[int, ...]) -> str:
        """Name an (EV, step) or (station, step) item of a violation message."""
        if kind == "ev":
            e, t = idx
            return f"session {self.evs.session_id[e]} (ev {self.evs.ev_id[e]}) at {self.times[t]}"
        s, t = idx
        return f"station {self.stations.station_id[s]} at {self.times[t]}"

    def check(self, name: str, mask: np.ndarray, kind: str, detail: Callable[[tuple[int, ...]], str]) -> None:
        """Raise :class:`InvariantViolation` for invariant ``name`` if any item of ``mask`` is True."""
        if mask.any():
            items = "; ".join(f"{self.where(kind, i)}: {detail(i)}" for i in _first(mask))
            raise InvariantViolation(f"invariant '{name}' violated in {int(mask.sum())} case(s): {items}")


def check_window(result: WindowResult) -> None:
    """Check the invariants every solved window must satisfy (design.md, "Testing").


    Checks the ``ev`` and ``station`` tables and the plan of ``result`` against the
    window's per-EV data (``ctx.handles["ev_arrays"]``, i.e. with the formulation's
    ``v2g`` option applied):

    1. the ``ev`` table has one row per plugged (session, step) and the right station;
    2. setpoints lie on the quantum grid (1 kW, R6.5.2) within :data:`SETPOINT_GRID_ATOL`, or
       are exactly the EV's own power limit (full power);
    3. charger/vehicle limits: :math:`-a\\bar P^{dis} \\le p \\le a\\bar P^{ch}`;
    4. SOC within [floor, 1] (floor ``e_min / capacity``, R6.1.5);
    5. energy balance between consecutive plugged steps from the table's ``p_kw``:
       :math:`E_t = \\min(E_{t-1} + \\Delta t\\,\\eta^{ch} p^+, \\bar E) - \\Delta t\\,p^-/\\eta^{dis}`,
       starting from the window's initial energy (a battery stops charging when full: the
       top-off rule of :mod:`optev.blocks.disaggregate`);
    6. departure energy met or the shortfall reported: the plan's per-EV shortfall equals
       :math:`\\max(E^{need} - E_{last}, 0)` and ``summary["shortfall_kwh"]`` /
       ``summary["evs_with_shortfall"]`` agree with it;
    7. ``station`` table = sums of the EV setpoints (charge and discharge parts);
    8. station site caps (net power ≤ site cap, discharge ≤ discharge cap), relaxed only by
       slack the LP reports in soft-limit mode;
    9. the EV setpoints of a station sum to the LP's station power within
       :data:`SETPOINT_TRACKING_QUANTA` quanta in every step where the EVs, in the state the
       plan left them, can realise it (between the sum of their lowest and highest grid
       setpoints, the lowest including protected departure needs when the disaggregation
       enforces them); otherwise the sum is at that range's nearest end. With per-EV LP
       variables each EV rounds its own plan, so the station follows the sum of the EVs'
       plans clipped to what each can realise (what one EV cannot do stays at the station);
    10. with per-EV LP variables, no setpoint flips sign against the EV's own plan
        :math:`g = p^{ch} - p^{dis}` (:mod:`optev.blocks.disaggregate`: each EV rounds its
        own plan): no discharge where :math:`g \\ge 0`, no charge where :math:`g \\le 0` beyond
        the EV's own departure need (the least power that still reaches :math:`E^{need}`
        charging at full power in its later plugged steps), within :data:`LP_FEAS_ATOL_KW`.

    Raises
    ------
    InvariantViolation
        At the first invariant that does not hold, naming it, how many items violate it, and the first few (session or
        station id, time, value, limit).
    """
    w = _Checked(result, result.context.handles.get("ev_arrays", result.context.window.evs))
    p, e_tab = _ev_table(w)
    _check_setpoints(w, p)
    _check_soc(w, e_tab)
    e0 = _start_energy(w, e_tab)
    _check_energy_balance(w, p, e_tab, e0)
    _check_shortfall(w, e_tab)
    net, dis = _check_station_table(w, p)
    cap, dcap = _check_site_caps(w, net, dis)
    _check_tracking(w, e0, net, cap, dcap)
    if w.per_ev:
        _check_sign_flips(w, p, e0)


def _ev_table(w: _Checked) -> tuple[np.ndarray, np.ndarray]:
    """Invariant 1, the ``ev`` table's layout; returns its setpoints and energies as (n_ev, T) arrays."""
    evs, st, times = w.evs, w.stations, w.times
    ev_t = w.result.tables["ev"]
    ei = pd.Index(evs.session_id).get_indexer(ev_t["session_id"])
    ti = times.get_indexer(pd.DatetimeIndex(ev_t["time"]))
    if (ei < 0).any() or (ti < 0).any():
        raise InvariantViolation("invariant 'ev_table_rows' violated: rows with unknown session or time "
                             f"({int((ei < 0).sum())} sessions, {int((ti < 0).sum())} times)")
    shape = (evs.n, w.ctx.window.steps)
    rows = np.zeros(shape, dtype=np.int64)
    np.add.at(rows, (ei, ti), 1)
    plugged = w.plugged
    w.check("ev_table_rows", rows != plugged.astype(np.int64), "ev",
            lambda i: f"{rows[i]} row(s), plugged = {bool(plugged[i])}")
    wrong_st = ev_t["station_id"].to_numpy(object) != st.station_id[evs.station[ei]]
    if wrong_st.any():
        k = int(np.flatnonzero(wrong_st)[0])
        raise InvariantViolation(f"invariant 'ev_station' violated in {int(wrong_st.sum())} row(s): session "
                             f"{evs.session_id[ei[k]]} listed at {ev_t['station_id'].iloc[k]}, plugged at "
                             f"{st.station_id[evs.station[ei[k]]]}")
    p = np.zeros(shape)
    p[ei, ti] = ev_t["p_kw"].to_numpy(float)
    e_tab = np.full(shape, np.nan)
    e_tab[ei, ti] = ev_t["soc"].to_numpy(float) * evs.capacity_kwh[ei]
    return p, e_tab


def _check_setpoints(w: _Checked, p: np.ndarray) -> None:
    """Invariants 2 and 3: setpoints on the quantum grid (or at full power) and within the EVs' limits."""
    evs, q = w.evs, QUANTUM_KW
    # the rule of optev.blocks.disaggregate.on_setpoint_grid: a multiple of the quantum, or the EV's full power
    off = ~on_setpoint_grid(p, evs.plugged * evs.p_ch_max_kw[:, None], evs.plugged * evs.p_dis_max_kw[:, None], q,
                            SETPOINT_GRID_ATOL)
    w.check("setpoint_grid", off, "ev",
            lambda i: f"p = {p[i]!r} kW is neither a multiple of {q:g} kW nor the EV's limit")
    hi = evs.plugged * evs.p_ch_max_kw[:, None]
    lo = -evs.plugged * evs.p_dis_max_kw[:, None]
    w.check("ev_charge_limit", p > hi + LIMIT_ATOL_KW, "ev", lambda i: f"p = {p[i]:g} kW > {hi[i]:g} kW")
    w.check("ev_discharge_limit", p < lo - LIMIT_ATOL_KW, "ev", lambda i: f"p = {p[i]:g} kW < {lo[i]:g} kW")


def _check_soc(w: _Checked, e_tab: np.ndarray) -> None:
    """Invariant 4: the SOC of plugged EVs within [floor, 1]."""
    evs, plugged = w.evs, w.plugged
    soc = e_tab / evs.capacity_kwh[:, None]
    floor = (evs.e_min_kwh / evs.capacity_kwh)[:, None]
    w.check("soc_floor", plugged & (soc < floor - SOC_ATOL), "ev",
            lambda i: f"soc = {soc[i]:.6f} < floor {floor[i[0], 0]:.6f}")
    w.check("soc_ceiling", plugged & (soc > 1.0 + SOC_ATOL), "ev", lambda i: f"soc = {soc[i]:.9f} > 1")


def _start_energy(w: _Checked, e_tab: np.ndarray) -> np.ndarray:
    """Each EV's energy at the start of each step, (n_ev, T) kWh: the table's energy at the end of
    its last earlier plugged step (energy is frozen while unplugged), else the window's initial energy."""
    n, T = w.evs.n, w.ctx.window.steps
    last_idx = np.maximum.accumulate(np.where(w.plugged, np.arange(T)[None, :], -1), axis=1)
    prev_idx = np.concatenate([np.full((n, 1), -1), last_idx[:, :-1]], axis=1)
    return np.where(prev_idx >= 0, np.take_along_axis(np.nan_to_num(e_tab), np.maximum(prev_idx, 0), axis=1),
                    w.evs.e_init_kwh[:, None])


def _check_energy_balance(w: _Checked, p: np.ndarray, e_tab: np.ndarray, e0: np.ndarray) -> None:
    """Invariant 5: the energy balance of every plugged step, with the top-off rule at full charge."""
    evs, dt = w.evs, w.ctx.window.dt_h
    cap_e = evs.capacity_kwh[:, None]
    expected = energy_after_step(e0, p, dt, cap_e, evs.eff_ch[:, None], evs.eff_dis[:, None])
    resid = np.where(w.plugged, e_tab - expected, 0.0)
    w.check("ev_energy_balance", np.abs(resid) > ENERGY_BALANCE_ATOL_KWH, "ev",
            lambda i: f"E = {e_tab[i]:.9f} kWh, expected {expected[i]:.9f} kWh")


def _check_shortfall(w: _Checked, e_tab: np.ndarray) -> None:
    """Invariant 6: each EV's departure shortfall as the plan reports it, and the summary's totals."""
    evs, plan, summary = w.evs, w.result.plan, w.result.summary
    n = evs.n
    e_last = np.where(w.plugged.any(axis=1), e_tab[np.arange(n), evs.departure_step], evs.e_init_kwh)
    short = np.maximum(evs.e_need_kwh - e_last, 0.0)
    short = np.where(short < SHORTFALL_ATOL_KWH, 0.0, short)
    bad = np.abs(short - plan.shortfall_kwh) > SHORTFALL_ATOL_KWH
    if bad.any():
        first = np.flatnonzero(bad)[:3]
        raise InvariantViolation(
            f"invariant 'departure_shortfall' violated for {int(bad.sum())} session(s): " + "; ".join(
                f"session {evs.session_id[j]}: E at departure {e_last[j]:.6f} kWh, need {evs.e_need_kwh[j]:.6f} kWh, "
                f"shortfall {short[j]:.6f} kWh but {plan.shortfall_kwh[j]:.6f} kWh reported" for j in first))
    total = float(summary["shortfall_kwh"])
    if abs(total - float(plan.shortfall_kwh.sum())) > SHORTFALL_ATOL_KWH * max(n, 1):
        raise InvariantViolation(f"invariant 'shortfall_summary' violated: summary shortfall_kwh = {total} but the "
                             f"plan's shortfalls sum to {float(plan.shortfall_kwh.sum())}")
    if int(summary["evs_with_shortfall"]) != int((plan.shortfall_kwh > 0).sum()):
        raise InvariantViolation(f"invariant 'shortfall_summary' violated: summary evs_with_shortfall = "
                             f"{summary['evs_with_shortfall']} but {int((plan.shortfall_kwh > 0).sum())} "
                             "sessions have a shortfall")


def _check_station_table(w: _Checked, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invariant 7: the ``station`` table and the plan's station power are the sums of the EV setpoints;
    returns those sums' net power and discharge, (n_st, T) kW."""
    st, times, T = w.stations, w.times, w.ctx.window.steps
    st_t = w.result.tables["station"]
    si = pd.Index(st.station_id).get_indexer(st_t["station_id"])
    sti = times.get_indexer(pd.DatetimeIndex(st_t["time"]))
    if (si < 0).any() or (sti < 0).any() or len(st_t) != st.n * T:
        raise InvariantViolation(f"invariant 'station_table_rows' violated: {len(st_t)} rows for {st.n} stations × "
                             f"{T} steps, {int((si < 0).sum())} unknown stations, {int((sti < 0).sum())} unknown times")
    tab_ch = np.zeros((st.n, T))
    tab_dis = np.zeros((st.n, T))
    tab_ch[si, sti] = st_t["p_ch_kw"].to_numpy(float)
    tab_dis[si, sti] = st_t["p_dis_kw"].to_numpy(float)
    sum_ch = w.by_station(np.maximum(p, 0.0))
    sum_dis = w.by_station(np.maximum(-p, 0.0))
    w.check("station_sum_charge", np.abs(tab_ch - sum_ch) > SUM_ATOL_KW, "station",
            lambda i: f"p_ch_kw = {tab_ch[i]:g} but its EVs charge {sum_ch[i]:g} kW")
    w.check("station_sum_discharge", np.abs(tab_dis - sum_dis) > SUM_ATOL_KW, "station",
            lambda i: f"p_dis_kw = {tab_dis[i]:g} but its EVs discharge {sum_dis[i]:g} kW")
    net = sum_ch - sum_dis
    plan_kw = w.result.plan.station_p_kw
    w.check("station_plan_sum", np.abs(plan_kw - net) > SUM_ATOL_KW, "station",
            lambda i: f"plan total {plan_kw[i]:g} kW, EV sum {net[i]:g} kW")
    return net, sum_dis


def _check_site_caps(w: _Checked, net: np.ndarray, dis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invariant 8: station net power and discharge within the site caps (plus LP slack in soft-limit
    mode); returns the charging caps, (n_st, T), and the discharging caps, (n_st, 1), kW."""
    st, ctx = w.stations, w.ctx
    cap = np.broadcast_to(st.p_site_max_kw[:, None], (st.n, ctx.window.steps)).copy()
    if "station_site_cap" in ctx.slacks:
        idx = np.flatnonzero(np.isfinite(st.p_site_max_kw))
        cap[idx] += ctx.lp.values(ctx.slacks["station_site_cap"].name, w.result.x)
    w.check("station_site_cap", net > cap + LIMIT_ATOL_KW, "station",
            lambda i: f"net power {net[i]:g} kW > site cap {cap[i]:g} kW")
    dcap = st.p_site_dis_max_kw[:, None]
    w.check("station_discharge_cap", dis > dcap + LIMIT_ATOL_KW, "station",
            lambda i: f"discharge {dis[i]:g} kW > cap {dcap[i[0], 0]:g} kW")
    return cap, dcap


def _later_full_kwh(w: _Checked) -> np.ndarray:
    """Energy each EV stores charging at full power in its plugged steps after each step, (n_ev, T) kWh."""
    evs, a = w.evs, w.evs.plugged
    after = np.cumsum(a[:, ::-1], axis=1)[:, ::-1] - a
    return after * (evs.p_ch_max_kw * evs.eff_ch)[:, None] * w.ctx.window.dt_h


def _realisable_setpoints(w: _Checked, e0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest setpoint each EV can take in each step from the energy the plan left it
    with, (n_ev, T) kW: the disaggregation's own limits (:func:`optev.blocks.disaggregate._step_limits`),
    the lowest including the departure need where the disaggregation enforces it, the highest the EV's
    full power where that lies off the grid and the battery can take it for the whole step."""
    evs, ctx, dt, q = w.evs, w.ctx, w.ctx.window.dt_h, QUANTUM_KW
    a = evs.plugged
    # _step_limits works on one step's (n_ev,) arrays: all steps at once as (T, n_ev)
    lim = _step_limits(evs, e0.T, a.T, _later_full_kwh(w).T, dt, q)
    enforced = not w.per_ev and ctx.options.get("ev", {}).get("departure", "hard") == "hard"
    low = (lim.must if enforced else lim.lo).T * q
    full = a * evs.p_ch_max_kw[:, None]
    room = np.maximum(evs.capacity_kwh[:, None] - e0, 0.0) / (evs.eff_ch[:, None] * dt)
    high = np.where((lim.hi.T * q < full) & (room >= full), full, lim.hi.T * q)
    return low, high


def _check_tracking(w: _Checked, e0: np.ndarray, net: np.ndarray, cap: np.ndarray, dcap: np.ndarray) -> None:
    """Invariant 9: the EV setpoints of a station follow the LP's station power where the EVs can
    realise it within the site caps (with per-EV LP variables: the part of each EV's plan it can realise)."""
    lp_ch, lp_dis = station_setpoints(w.ctx, w.result.x)
    lp_net = lp_ch - lp_dis
    low, high = _realisable_setpoints(w, e0)
    range_hi = w.by_station(high)
    range_lo = w.by_station(low)
    target = np.clip(lp_net, range_lo, range_hi)
    if w.per_ev:
        # each EV rounds its own plan (optev.blocks.disaggregate): what one EV cannot realise of
        # its plan stays at the station, the others do not make it up — the station follows
        # the plan of what its EVs can realise, Σ clip(plan, realisable range)
        own = np.clip(w.ev_plan(), low, high)
        target = w.by_station(np.where(w.evs.plugged > 0, own, 0.0))
    # site caps are physical and win over departure protection in the disaggregation
    target = np.maximum(np.minimum(target, cap), -dcap)
    miss = np.abs(net - target) > SETPOINT_TRACKING_QUANTA * QUANTUM_KW + LP_FEAS_ATOL_KW
    w.check("station_setpoint_tracking", miss, "station",
            lambda i: f"EV setpoints sum to {net[i]:g} kW, LP station power {lp_net[i]:.4f} kW, EVs can realise "
                      f"[{range_lo[i]:g}, {range_hi[i]:g}] kW")


def _check_sign_flips(w: _Checked, p: np.ndarray, e0: np.ndarray) -> None:
    """Invariant 10 (per-EV LP variables): no setpoint flips sign against the EV's own plan beyond its own
    departure need."""
    plugged, q = w.plugged, QUANTUM_KW
    g = w.ev_plan()
    own = _need_kw(w.evs, e0.T, _later_full_kwh(w).T, w.ctx.window.dt_h).T
    own_q = np.maximum(np.ceil(own / q - SETPOINT_GRID_ATOL), 0.0) * q
    w.check("no_sign_flip_discharge", plugged & (g >= -LP_FEAS_ATOL_KW) & (p < -LIMIT_ATOL_KW), "ev",
            lambda i: f"p = {p[i]:g} kW against a plan of {g[i]:.6f} kW")
    w.check("no_sign_flip_charge", plugged & (g <= LP_FEAS_ATOL_KW) & (p > own_q + LIMIT_ATOL_KW), "ev",
            lambda i: f"p = {p[i]:g} kW against a plan of {g[i]:.6f} kW (own need {own_q[i]:g} kW)")

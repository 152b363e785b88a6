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

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from optev.blocks.disaggregate import QUANTUM_KW, on_setpoint_grid
from optev.compose.results import station_setpoints
from optev.tolerances import (
    ENERGY_BALANCE_ATOL_KWH,
    LIMIT_ATOL_KW,
    LP_FEAS_ATOL_KW,
    SETPOINT_GRID_ATOL,
    SETPOINT_TRACKING_QUANTA,
    SHORTFALL_ATOL_KWH,
    SOC_ATOL,
    SUM_ATOL_KW,
    TOP_OFF_MIN_KWH,
)

if TYPE_CHECKING:
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
    ctx = result.context
    w = ctx.window
    evs = ctx.handles.get("ev_arrays", w.evs)
    st = w.stations
    plan = result.plan
    times = w.times
    T, n, dt = w.steps, evs.n, w.dt_h
    q = QUANTUM_KW
    plugged = evs.plugged > 0

    def where(kind: str, idx: tuple[int, ...]) -> str:
        if kind == "ev":
            e, t = idx
            return f"session {evs.session_id[e]} (ev {evs.ev_id[e]}) at {times[t]}"
        s, t = idx
        return f"station {st.station_id[s]} at {times[t]}"

    def check(name: str, mask: np.ndarray, kind: str, detail: Any) -> None:
        if mask.any():
            items = "; ".join(f"{where(kind, i)}: {detail(i)}" for i in _first(mask))
            raise InvariantViolation(f"invariant '{name}' violated in {int(mask.sum())} case(s): {items}")

    # 1. table layout
    ev_t = result.tables["ev"]
    ei = pd.Index(evs.session_id).get_indexer(ev_t["session_id"])
    ti = times.get_indexer(pd.DatetimeIndex(ev_t["time"]))
    if (ei < 0).any() or (ti < 0).any():
        raise InvariantViolation("invariant 'ev_table_rows' violated: rows with unknown session or time "
                             f"({int((ei < 0).sum())} sessions, {int((ti < 0).sum())} times)")
    rows = np.zeros((n, T), dtype=np.int64)
    np.add.at(rows, (ei, ti), 1)
    check("ev_table_rows", rows != plugged.astype(np.int64), "ev",
          lambda i: f"{rows[i]} row(s), plugged = {bool(plugged[i])}")
    wrong_st = ev_t["station_id"].to_numpy(object) != st.station_id[evs.station[ei]]
    if wrong_st.any():
        k = int(np.flatnonzero(wrong_st)[0])
        raise InvariantViolation(f"invariant 'ev_station' violated in {int(wrong_st.sum())} row(s): session "
                             f"{evs.session_id[ei[k]]} listed at {ev_t['station_id'].iloc[k]}, plugged at "
                             f"{st.station_id[evs.station[ei[k]]]}")
    p = np.zeros((n, T))
    p[ei, ti] = ev_t["p_kw"].to_numpy(float)
    e_tab = np.full((n, T), np.nan)
    e_tab[ei, ti] = ev_t["soc"].to_numpy(float) * evs.capacity_kwh[ei]

    # 2. quantum grid, or the EV's full power (optev.blocks.disaggregate.on_setpoint_grid)
    off = ~on_setpoint_grid(p, evs.plugged * evs.p_ch_max_kw[:, None], evs.plugged * evs.p_dis_max_kw[:, None], q,
                            SETPOINT_GRID_ATOL)
    check("setpoint_grid", off, "ev", lambda i: f"p = {p[i]!r} kW is neither a multiple of {q:g} kW nor the EV's limit")

    # 3. charger and vehicle limits
    hi = evs.plugged * evs.p_ch_max_kw[:, None]
    lo = -evs.plugged * evs.p_dis_max_kw[:, None]
    check("ev_charge_limit", p > hi + LIMIT_ATOL_KW, "ev", lambda i: f"p = {p[i]:g} kW > {hi[i]:g} kW")
    check("ev_discharge_limit", p < lo - LIMIT_ATOL_KW, "ev", lambda i: f"p = {p[i]:g} kW < {lo[i]:g} kW")

    # 4. SOC within [floor, 1]
    soc = e_tab / evs.capacity_kwh[:, None]
    floor = (evs.e_min_kwh / evs.capacity_kwh)[:, None]
    check("soc_floor", plugged & (soc < floor - SOC_ATOL), "ev",
          lambda i: f"soc = {soc[i]:.6f} < floor {floor[i[0], 0]:.6f}")
    check("soc_ceiling", plugged & (soc > 1.0 + SOC_ATOL), "ev", lambda i: f"soc = {soc[i]:.9f} > 1")

    # 5. energy balance between consecutive plugged steps (energy frozen while unplugged)
    last_idx = np.maximum.accumulate(np.where(plugged, np.arange(T)[None, :], -1), axis=1)
    prev_idx = np.concatenate([np.full((n, 1), -1), last_idx[:, :-1]], axis=1)
    e_prev = np.where(prev_idx >= 0, np.take_along_axis(np.nan_to_num(e_tab), np.maximum(prev_idx, 0), axis=1),
                      evs.e_init_kwh[:, None])
    cap_e = evs.capacity_kwh[:, None]
    expected = np.minimum(e_prev + dt * evs.eff_ch[:, None] * np.maximum(p, 0.0), np.maximum(cap_e, e_prev)) \
        - dt * np.maximum(-p, 0.0) / evs.eff_dis[:, None]
    resid = np.where(plugged, e_tab - expected, 0.0)
    check("ev_energy_balance", np.abs(resid) > ENERGY_BALANCE_ATOL_KWH, "ev",
          lambda i: f"E = {e_tab[i]:.9f} kWh, expected {expected[i]:.9f} kWh")

    # 6. departure energy met or shortfall reported
    e_last = np.where(plugged.any(axis=1), e_tab[np.arange(n), evs.departure_step], evs.e_init_kwh)
    short = np.maximum(evs.e_need_kwh - e_last, 0.0)
    short = np.where(short < SHORTFALL_ATOL_KWH, 0.0, short)
    bad = np.abs(short - plan.shortfall_kwh) > SHORTFALL_ATOL_KWH
    if bad.any():
        first = np.flatnonzero(bad)[:3]
        raise InvariantViolation(
            f"invariant 'departure_shortfall' violated for {int(bad.sum())} session(s): " + "; ".join(
                f"session {evs.session_id[j]}: E at departure {e_last[j]:.6f} kWh, need {evs.e_need_kwh[j]:.6f} kWh, "
                f"shortfall {short[j]:.6f} kWh but {plan.shortfall_kwh[j]:.6f} kWh reported" for j in first))
    total = float(result.summary["shortfall_kwh"])
    if abs(total - float(plan.shortfall_kwh.sum())) > SHORTFALL_ATOL_KWH * max(n, 1):
        raise InvariantViolation(f"invariant 'shortfall_summary' violated: summary shortfall_kwh = {total} but the "
                             f"plan's shortfalls sum to {float(plan.shortfall_kwh.sum())}")
    if int(result.summary["evs_with_shortfall"]) != int((plan.shortfall_kwh > 0).sum()):
        raise InvariantViolation(f"invariant 'shortfall_summary' violated: summary evs_with_shortfall = "
                             f"{result.summary['evs_with_shortfall']} but {int((plan.shortfall_kwh > 0).sum())} "
                             "sessions have a shortfall")

    # 7. station table = sums of the EV setpoints
    st_t = result.tables["station"]
    si = pd.Index(st.station_id).get_indexer(st_t["station_id"])
    sti = times.get_indexer(pd.DatetimeIndex(st_t["time"]))
    if (si < 0).any() or (sti < 0).any() or len(st_t) != st.n * T:
        raise InvariantViolation(f"invariant 'station_table_rows' violated: {len(st_t)} rows for {st.n} stations × "
                             f"{T} steps, {int((si < 0).sum())} unknown stations, {int((sti < 0).sum())} unknown times")
    tab_ch = np.zeros((st.n, T))
    tab_dis = np.zeros((st.n, T))
    tab_ch[si, sti] = st_t["p_ch_kw"].to_numpy(float)
    tab_dis[si, sti] = st_t["p_dis_kw"].to_numpy(float)
    sum_ch = np.zeros((st.n, T))
    sum_dis = np.zeros((st.n, T))
    np.add.at(sum_ch, evs.station, np.maximum(p, 0.0))
    np.add.at(sum_dis, evs.station, np.maximum(-p, 0.0))
    check("station_sum_charge", np.abs(tab_ch - sum_ch) > SUM_ATOL_KW, "station",
          lambda i: f"p_ch_kw = {tab_ch[i]:g} but its EVs charge {sum_ch[i]:g} kW")
    check("station_sum_discharge", np.abs(tab_dis - sum_dis) > SUM_ATOL_KW, "station",
          lambda i: f"p_dis_kw = {tab_dis[i]:g} but its EVs discharge {sum_dis[i]:g} kW")
    net = sum_ch - sum_dis
    check("station_plan_sum", np.abs(plan.station_p_kw - net) > SUM_ATOL_KW, "station",
          lambda i: f"plan total {plan.station_p_kw[i]:g} kW, EV sum {net[i]:g} kW")

    # 8. station site caps (LP slack allowed only in soft-limit mode)
    cap = np.broadcast_to(st.p_site_max_kw[:, None], (st.n, T)).copy()
    if "station_site_cap" in ctx.slacks:
        idx = np.flatnonzero(np.isfinite(st.p_site_max_kw))
        cap[idx] += ctx.lp.values(ctx.slacks["station_site_cap"].name, result.x)
    check("station_site_cap", net > cap + LIMIT_ATOL_KW, "station",
          lambda i: f"net power {net[i]:g} kW > site cap {cap[i]:g} kW")
    dcap = st.p_site_dis_max_kw[:, None]
    check("station_discharge_cap", sum_dis > dcap + LIMIT_ATOL_KW, "station",
          lambda i: f"discharge {sum_dis[i]:g} kW > cap {dcap[i[0], 0]:g} kW")

    # 9. setpoints follow the LP's station power where the EVs can realise it within the site caps
    #    (with a per-EV plan: the part of it the EVs can realise, EV by EV)
    lp_ch, lp_dis = station_setpoints(ctx, result.x)
    lp_net = lp_ch - lp_dis
    e0 = np.where(prev_idx >= 0, e_prev, evs.e_init_kwh[:, None])  # energy at the start of each step
    a = evs.plugged
    up = np.minimum(a * evs.p_ch_max_kw[:, None], np.maximum(evs.capacity_kwh[:, None] - e0, 0.0)
                    / (evs.eff_ch[:, None] * dt))
    down = -np.minimum(a * evs.p_dis_max_kw[:, None], np.maximum(e0 - evs.e_min_kwh[:, None], 0.0)
                       * evs.eff_dis[:, None] / dt)
    enforced = "ev_p_ch" not in ctx.handles and ctx.options.get("ev", {}).get("departure", "hard") == "hard"
    if enforced:
        after = np.cumsum(a[:, ::-1], axis=1)[:, ::-1] - a  # plugged steps after t
        gap = evs.e_need_kwh[:, None] - e0 - after * (evs.p_ch_max_kw * evs.eff_ch)[:, None] * dt
        need = np.where(gap > 0, gap / (evs.eff_ch[:, None] * dt), gap * evs.eff_dis[:, None] / dt)
        down = np.minimum(np.maximum(down, need), up)
    up_q = np.minimum(np.floor(a * evs.p_ch_max_kw[:, None] / q + SETPOINT_GRID_ATOL),
                      np.ceil(np.where(cap_e - e0 > TOP_OFF_MIN_KWH, up, 0.0) / q - SETPOINT_GRID_ATOL))
    down_q = np.minimum(np.ceil(down / q - SETPOINT_GRID_ATOL), up_q)
    # an EV may also get its exact limit (full power) where that lies off the grid
    up_kw = np.where((up_q * q < a * evs.p_ch_max_kw[:, None]) & (up >= a * evs.p_ch_max_kw[:, None]),
                     a * evs.p_ch_max_kw[:, None], up_q * q)
    range_hi = np.zeros((st.n, T))
    range_lo = np.zeros((st.n, T))
    np.add.at(range_hi, evs.station, up_kw)
    np.add.at(range_lo, evs.station, down_q * q)
    target = np.clip(lp_net, range_lo, range_hi)
    if "ev_p_ch" in ctx.handles:
        # each EV rounds its own plan (optev.blocks.disaggregate): what one EV cannot realise of
        # its plan stays at the station, the others do not make it up — the station follows
        # the plan of what its EVs can realise, Σ clip(plan, realisable range)
        g = ctx.lp.evaluate(ctx.handles["ev_p_ch"], result.x) - ctx.lp.evaluate(ctx.handles["ev_p_dis"], result.x)
        own = np.clip(g, down_q * q, up_kw)
        target = np.zeros((st.n, T))
        np.add.at(target, evs.station, np.where(a > 0, own, 0.0))
    # site caps are physical and win over departure protection in the disaggregation
    target = np.maximum(np.minimum(target, cap), -dcap)
    miss = np.abs(net - target) > SETPOINT_TRACKING_QUANTA * q + LP_FEAS_ATOL_KW
    check("station_setpoint_tracking", miss, "station",
          lambda i: f"EV setpoints sum to {net[i]:g} kW, LP station power {lp_net[i]:.4f} kW, EVs can realise "
                    f"[{range_lo[i]:g}, {range_hi[i]:g}] kW")

    # 10. no sign flip against the per-EV plan (each EV rounds its own plan)
    if "ev_p_ch" in ctx.handles:
        g = ctx.lp.evaluate(ctx.handles["ev_p_ch"], result.x) - ctx.lp.evaluate(ctx.handles["ev_p_dis"], result.x)
        after = np.cumsum(a[:, ::-1], axis=1)[:, ::-1] - a
        gap = evs.e_need_kwh[:, None] - e0 - after * (evs.p_ch_max_kw * evs.eff_ch)[:, None] * dt
        own = np.where(gap > 0, gap / (evs.eff_ch[:, None] * dt), gap * evs.eff_dis[:, None] / dt)
        own_q = np.maximum(np.ceil(own / q - SETPOINT_GRID_ATOL), 0.0) * q
        check("no_sign_flip_discharge", plugged & (g >= -LP_FEAS_ATOL_KW) & (p < -LIMIT_ATOL_KW), "ev",
              lambda i: f"p = {p[i]:g} kW against a plan of {g[i]:.6f} kW")
        check("no_sign_flip_charge", plugged & (g <= LP_FEAS_ATOL_KW) & (p > own_q + LIMIT_ATOL_KW), "ev",
              lambda i: f"p = {p[i]:g} kW against a plan of {g[i]:.6f} kW (own need {own_q[i]:g} kW)")

r"""Station level of the hierarchy: per-EV station problems against the region's plan (R6.2.3.3).

The region's LP sees each station as one flexibility envelope
(:mod:`optev.blocks.envelope`), a relaxation: a station profile feasible for the envelope
is not always realisable by its EVs, and the envelope prices V2G at a mean reservation
price. Sharing the region's station setpoints among the EVs directly
(:func:`~optev.blocks.disaggregate.disaggregate` with the envelope's guide) therefore
loses cost. The *station refinement* instead solves, for each station, the exact per-EV
problem of its EVs against the region's plan — the station's setpoint shared among its
chargers (one session per charger) — and only then rounds to the 1 kW grid.

Station problem of station s (all its sessions e, steps t)
    the EV block (variant ``per_ev``, the formulation's ``departure`` and ``v2g`` options:
    energy balance, SOC floor and capacity, departure energy, power limits; V2G
    reservation prices of each EV) and the station block (variant ``per_ev``: site caps),
    plus the tracking variables ``station_p_over[s,t]`` :math:`o \in [0, a_{s,t}]`,
    ``station_p_excess[s,t]`` :math:`x \ge 0`, ``station_p_under[s,t]`` :math:`u \ge 0` kW,
    constraint ``station_setpoint_tracking``:
    :math:`P^{ch}_{s,t} - P^{dis}_{s,t} - o_{s,t} - x_{s,t} + u_{s,t} = P^*_{s,t}` (the region's
    station setpoint), and objective

    .. math::
        \sum_t \Delta t\,\bigl[\lambda_{s,t}(P^{ch}_{s,t}-P^{dis}_{s,t})
        + w\,(o_{s,t}+u_{s,t}) + W\,x_{s,t}\bigr]
        + \sum_{e,t} r_e\,p^{dis}_{e,t}\Delta t

    - :math:`\lambda_{s,t}` (currency/kWh): the region LP's *marginal price of power at the
      station's bus* — the dual of the copper-plate balance ``grid_balance`` or of the
      station bus's LinDistFlow balance ``bus_p_balance``, divided by :math:`\Delta t`. It
      contains the energy price, any city price adder, and the shadow prices of the
      region's coupling constraints (peak, voltage, line and import limits), so the station
      moves energy only where the region values it less (price coordination inside the
      region). Without duals (a MIP region model) the region's import price is used.
    - :math:`w` = ``tracking`` × the window's highest absolute grid price: a small
      tie-breaker (default 10⁻³) that keeps the station on the region's setpoint among
      equally cheap schedules — LP prices are flat over long periods, and the region's plan
      is what spreads load within them.
    - :math:`a_{s,t}` (kW): the station's *allowance* above its setpoint — where the region's
      import is limited (substation limit or share of a city target), the room left under
      the limit in the region's plan, shared among the stations in proportion to the
      charging power of their plugged EVs; unlimited elsewhere. Beyond it a station pays
      :math:`W` = the formulation's ``slack_penalty`` (currency/kWh), so it exceeds its
      allowance only if its EVs cannot be served otherwise, and the stations of a region
      together stay within its limit.
    - Grid services (:mod:`optev.hierarchy.services`): where a service is active, the
      participants' stations get no allowance above their setpoint (and, under a lower
      limit, none below it: ``station_p_deficit`` :math:`y \ge 0` priced at :math:`W`): the
      region plan meets the service, its stations keep to it.

Stations are solved in batches of at most ``batch_evs`` sessions: one LP per batch, made
of the (independent) station problems of the batch — small LPs, independent of the size
of the region. The per-EV solution is then the guide of the disaggregation to the 1 kW
grid, with the station totals as setpoints, as for a per-EV formulation.

Only the EVs plugged in now (``sessions``)
    A controller applies only the first step, to the EVs plugged in now. The station
    problems may then be restricted to those sessions (and their stations): the other
    sessions — forecast arrivals — keep the region's plan (the envelope's guide), and their
    planned power is taken off the setpoint :math:`P^*` that the plugged EVs track. The
    first step is exact with respect to the site caps (no forecast session is plugged in
    then); in later steps the plugged EVs no longer see the site cap shared with forecast
    arrivals (a plan, re-optimised at the next step).

Bus aggregates (:func:`bus_aggregates`)
    The region LP can see the stations of each bus as one aggregate (the envelope of all
    their sessions; site caps, chargers and discharge caps summed; user prices and charger
    ratings charger-weighted) instead of one per station: LinDistFlow needs nothing finer
    (stations at a bus share its voltage and its marginal price), and the region LP's size
    then depends on the buses, not on the stations. The bus's energy trajectory is shared
    among its sessions with the envelope's guide; each station's setpoint :math:`P^*` is the
    sum over its sessions (:func:`split_group_power`), and the station problems above
    restore every station's own site cap and its EVs' exact constraints.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from optev.blocks.context import ModelContext
from optev.blocks.disaggregate import Disaggregation, disaggregate
from optev.blocks.window import EVArrays, StationArrays, Window, take_rows
from optev.compose.formulation import BLOCKS, Formulation
from optev.compose.results import result_tables, station_setpoints
from optev.compose.solve import WindowResult
from optev.errors import InfeasibleError, SolverError
from optev.lp.expr import as_expr
from optev.solvers.highs import HighsSession
from optev.summaries import WindowSummary

TRACKING = 1e-3
"""Default tie-breaking tracking price, as a fraction of the window's highest absolute grid price."""

BATCH_EVS = 1000
"""Default largest number of sessions in one batch of station problems."""


@dataclass
class StationRefinement:
    """Result of the station problems of one region.

    Attributes
    ----------
    plan : Disaggregation
        Per-EV setpoints on the 1 kW grid for the whole region (region's session order).
    results : list
        One :class:`~optev.compose.solve.WindowResult` per batch (its ``context`` is the
        batch's station LP; :func:`optev.compose.invariants.check_window` applies to it), with
        ``keep_results``.
    station_kw : ndarray (n_st, T)
        Station net power of the station problems (before rounding), kW.
    solve_s, build_s : float
        HiGHS time and model build time over all batches, s.
    refined_stations : int
        Stations whose problems were solved.
    problems : int
        Batch LPs solved (``results`` is empty with ``keep_results=False``).
    """

    plan: Disaggregation
    results: list[Any]
    station_kw: np.ndarray
    solve_s: float
    build_s: float
    refined_stations: int = 0
    problems: int = 0


def _station_sum(plan: Disaggregation, evs: EVArrays, rows: np.ndarray, group: np.ndarray, n_st: int) -> np.ndarray:
    """Net power of ``rows`` of ``plan`` summed by station, for the stations ``group``."""
    out = np.zeros((n_st, plan.ev_p_kw.shape[1]))
    np.add.at(out, evs.station[rows], np.asarray(plan.ev_p_kw, float)[rows])
    return out[group]


def sub_window(window: Window, evs: EVArrays, stations: np.ndarray) -> tuple[Window, np.ndarray]:
    """The window restricted to ``stations`` (indices) and their sessions, without network
    or conventional load. Returns the window and the sessions' positions in ``evs``."""
    keep = np.flatnonzero(np.isin(evs.station, stations))
    remap = np.full(window.stations.n, -1, dtype=np.int64)
    remap[stations] = np.arange(stations.size)
    sub_evs = take_rows(evs, keep)
    sub_evs = dataclasses.replace(sub_evs, station=remap[sub_evs.station])
    sub_st: StationArrays = take_rows(window.stations, stations)
    T = window.steps
    sub = dataclasses.replace(window, evs=sub_evs, stations=sub_st, network=None, load_p_kw=np.zeros((T, 0)),
                              load_q_kvar=np.zeros((T, 0)), pv_avail_kw=np.zeros((0, T)),
                              wind_avail_kw=np.zeros((0, T)), extra={})
    return sub, keep


def bus_aggregates(window: Window) -> tuple[Window, np.ndarray]:
    """The window with the stations of each bus merged into one aggregate station
    (module docstring, "Bus aggregates"); stations without a bus stay on their own.

    Returns the window (its sessions' ``station`` is the aggregate's index) and the
    aggregate of every station of ``window``, shape (n_st,).
    """
    st = window.stations
    key = np.where(st.bus >= 0, st.bus, -1 - np.arange(st.n))
    _, group = np.unique(key, return_inverse=True)
    group = group.astype(np.int64)
    n_g = int(group.max()) + 1 if st.n else 0
    first = np.zeros(n_g, dtype=np.int64)
    first[group[::-1]] = np.arange(st.n)[::-1]

    def total(x: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=np.asarray(x, float), minlength=n_g)

    n_ch = st.n_chargers.astype(float)
    chargers = total(n_ch)
    per = np.where(chargers > 0, chargers, 1.0)
    weight = (n_ch / per[group])[:, None]
    prices = {name: np.zeros((n_g, window.steps)) for name in ("price_buy", "price_sell")}
    for name, arr in prices.items():
        np.add.at(arr, group, weight * getattr(st, name))
    bus_ids = np.asarray(window.instance.feeder.bus_ids, dtype=object)
    ids = np.array([f"bus:{bus_ids[st.bus[k]]}" if st.bus[k] >= 0 else str(st.station_id[k]) for k in first],
                   dtype=object)
    kinds = np.array([st.kind[k] if np.all(st.kind[group == g] == st.kind[k]) else "mixed"
                      for g, k in enumerate(first)], dtype=object)
    merged = StationArrays(
        station_id=ids, kind=kinds, bus=st.bus[first], n_chargers=chargers.astype(np.int64),
        p_ch_max_kw=total(n_ch * st.p_ch_max_kw) / per, p_dis_max_kw=total(n_ch * st.p_dis_max_kw) / per,
        s_max_kva=total(n_ch * st.s_max_kva) / per, p_site_max_kw=total(st.p_site_max_kw),
        p_site_dis_max_kw=total(st.p_site_dis_max_kw), price_buy=prices["price_buy"], price_sell=prices["price_sell"])
    evs = dataclasses.replace(window.evs, station=group[window.evs.station])
    return dataclasses.replace(window, stations=merged, evs=evs), group


def split_group_power(evs: EVArrays, group: np.ndarray, guide_kw: np.ndarray, group_kw: np.ndarray) -> np.ndarray:
    """Share each aggregate's power among its stations (n_st × T, kW).

    ``evs.station`` are the stations, ``group`` the aggregate of each station, ``guide_kw``
    the sessions' share of their aggregate's trajectory (:func:`optev.blocks.envelope.disaggregation_guide`)
    and ``group_kw`` the aggregates' net power (G × T). A station gets its sessions' guide;
    what the guides miss of the aggregate's power (efficiency averaging, clipping) is
    shared in proportion to the stations' plugged charging power, so the stations of an
    aggregate sum to its power exactly.
    """
    n_st, T = group.size, group_kw.shape[1]
    out = np.zeros((n_st, T))
    np.add.at(out, evs.station, guide_kw)
    cap = np.zeros((n_st, T))
    np.add.at(cap, evs.station, evs.plugged * evs.p_ch_max_kw[:, None])
    n_g = group_kw.shape[0]
    g_sum = np.zeros((n_g, T))
    np.add.at(g_sum, group, out)
    g_cap = np.zeros((n_g, T))
    np.add.at(g_cap, group, cap)
    rest = group_kw - g_sum
    share = np.divide(cap, g_cap[group], out=np.zeros_like(cap), where=g_cap[group] > 0)
    # an aggregate without plugged EVs: whatever is left goes to its first station
    first = np.zeros(n_g, dtype=np.int64)
    first[group[::-1]] = np.arange(n_st)[::-1]
    lone = np.zeros((n_st, T))
    lone[first] = (g_cap <= 0).astype(float)
    return out + rest[group] * (share + lone)


def batches(evs: EVArrays, n_stations: int, batch_evs: int, only: np.ndarray | None = None) -> list[np.ndarray]:
    """Stations (indices) with sessions, grouped in order into batches of at most
    ``batch_evs`` sessions (a station with more sessions is a batch of its own);
    ``only`` (boolean, n_stations) restricts them."""
    count = np.bincount(evs.station, minlength=n_stations)
    chosen = count > 0 if only is None else (count > 0) & np.asarray(only, bool)
    out: list[np.ndarray] = []
    current: list[int] = []
    size = 0
    for s in np.flatnonzero(chosen):
        if current and size + count[s] > batch_evs:
            out.append(np.array(current, dtype=np.int64))
            current, size = [], 0
        current.append(int(s))
        size += int(count[s])
    if current:
        out.append(np.array(current, dtype=np.int64))
    return out


def refine_stations(formulation: Formulation, window: Window, evs: EVArrays, setpoint_kw: np.ndarray,
                    price: np.ndarray, *, allowance_kw: np.ndarray | None = None,
                    under_allowance_kw: np.ndarray | None = None, tracking: float = TRACKING,
                    batch_evs: int = BATCH_EVS, soft_limits: bool = False, stations: np.ndarray | None = None,
                    fallback: Disaggregation | None = None, sessions: np.ndarray | None = None,
                    keep_results: bool = True) -> StationRefinement:
    """Solve the station problems of a region (see module docstring).

    Parameters
    ----------
    formulation : Formulation
        The region's formulation (its ``ev`` options and ``slack_penalty`` are used).
    window : Window
        The region's window.
    evs : EVArrays
        Its sessions as the EV block saw them (``ctx.handles["ev_arrays"]``).
    setpoint_kw : ndarray (n_st, T)
        The region LP's station net power :math:`P^*`, kW (charge positive).
    price : ndarray (n_st, T)
        Marginal price of power at each station :math:`\\lambda`, currency/kWh.
    allowance_kw : ndarray (n_st, T), optional
        How far each station may exceed its setpoint before paying the penalty :math:`W`,
        kW (``inf``: unlimited, the default).
    under_allowance_kw : ndarray (n_st, T), optional
        How far each station may fall below its setpoint before paying :math:`W`, kW
        (``inf``: unlimited, the default; 0 where a grid service needs the station's planned
        power, :func:`optev.hierarchy.services.service_allowances`).
    tracking : float
        Tie-breaking tracking price as a fraction of the highest absolute grid price.
    batch_evs : int
        Largest number of sessions per LP.
    soft_limits : bool
        Departure energies and site caps as penalised slacks (``slack_penalty``), as in a
        region LP solved with soft limits.
    stations : ndarray of bool (n_st,), optional
        Solve only these stations' problems (default: every station with sessions); the
        sessions and stations left out take their rows of ``fallback`` (required then),
        and their ``station_kw`` is ``setpoint_kw``.
    fallback : Disaggregation, optional
        Plan of the stations not solved (for example the region plan shared with the
        envelope's guide), in ``evs`` and station order.
    sessions : ndarray of bool (n,), optional
        Put only these sessions into the station problems (module docstring, "Only the EVs
        plugged in now"); the others keep their ``fallback`` rows (required then), whose
        power is taken off their station's setpoint.
    keep_results : bool
        Keep a :class:`~optev.compose.solve.WindowResult` (with its result tables) per batch
        in ``results`` — what :func:`optev.compose.invariants.check_window` checks; False computes
        only the plan (faster).
    """
    T, n_st = window.steps, window.stations.n
    ev_options = dict(formulation.block_options("ev"))
    w_track = tracking * max(float(np.abs(window.price_buy).max(initial=0.0)), 1e-9)
    w_hard = float(formulation.solver["slack_penalty"])
    allow = np.full((n_st, T), np.inf) if allowance_kw is None else np.asarray(allowance_kw, float)
    allow_under = np.full((n_st, T), np.inf) if under_allowance_kw is None else np.asarray(under_allowance_kw, float)
    if (stations is not None or sessions is not None) and fallback is None:
        raise ValueError("refine_stations: stations or sessions given without a fallback plan for the others")
    target, solve_evs, pos = _plugged_now(evs, setpoint_kw, sessions, fallback)
    problem = _Problem(formulation, window, ev_options, price, allow, allow_under, target, w_track, w_hard,
                       bool(soft_limits))
    acc = _Assembly.start(evs, window, setpoint_kw, fallback)
    for group in batches(solve_evs, n_st, batch_evs, stations):
        acc.refined += int(group.size)
        t0 = time.perf_counter()
        sub, keep_sub = sub_window(window, solve_evs, group)
        keep = pos[keep_sub]
        ctx, net = _station_lp(problem, sub, group)
        arrays = ctx.lp.compile()
        acc.build_s += time.perf_counter() - t0
        out = _solve_batch(problem, ctx, arrays)
        acc.solve_s += out.solve_s
        acc.problems += 1
        # disaggregation with the per-EV solution as guide, as for a per-EV formulation
        plan = _batch_plan(acc, ctx, sub, group, out, keep_results)
        acc.ev_p[keep] = plan.ev_p_kw
        acc.ev_e[keep] = plan.ev_e_kwh
        acc.shortfall[keep] = plan.shortfall_kwh
        acc.station_p[group] = plan.station_p_kw + (
            acc.station_p[group] - _station_sum(fallback, evs, keep, group, n_st)
            if sessions is not None and fallback is not None else 0.0)
        acc.station_lp[group] = ctx.lp.evaluate(net, out.x) + (setpoint_kw[group] - target[group])
    return StationRefinement(Disaggregation(acc.ev_p, acc.ev_e, acc.station_p, acc.shortfall), acc.results,
                             acc.station_lp, acc.solve_s, acc.build_s, acc.refined, acc.problems)


@dataclass(frozen=True)
class _Problem:
    """What the station problems of every batch share (module docstring, "Station problem")."""

    formulation: Formulation
    window: Window
    ev_options: dict[str, Any]
    price: np.ndarray        # marginal price of power at each station, currency/kWh
    allow: np.ndarray        # allowance above the setpoint, kW (inf: unlimited)
    allow_under: np.ndarray  # allowance below the setpoint, kW (inf: unlimited)
    target: np.ndarray       # setpoint the solved sessions track, kW
    w_track: float           # tie-breaking tracking price, currency/kWh
    w_hard: float            # penalty beyond the allowance (and of soft limits), currency/kWh
    soft_limits: bool


@dataclass
class _Assembly:
    """The region's plan as the batches fill it in, and the batches' statistics so far."""

    ev_p: np.ndarray
    ev_e: np.ndarray
    station_p: np.ndarray
    station_lp: np.ndarray
    shortfall: np.ndarray
    results: list[Any] = field(default_factory=list)
    solve_s: float = 0.0
    build_s: float = 0.0
    refined: int = 0
    problems: int = 0

    @classmethod
    def start(cls, evs: EVArrays, window: Window, setpoint_kw: np.ndarray, fallback: Disaggregation | None
              ) -> _Assembly:
        """Before any batch: the fallback plan, or every EV idle at its initial energy without one."""
        T, n_st = window.steps, window.stations.n
        if fallback is not None:
            return cls(np.array(fallback.ev_p_kw, float), np.array(fallback.ev_e_kwh, float),
                       np.array(fallback.station_p_kw, float), np.array(setpoint_kw, float),
                       np.array(fallback.shortfall_kwh, float))
        return cls(np.zeros((evs.n, T)), np.repeat(evs.e_init_kwh[:, None], T, axis=1) if evs.n else np.zeros((0, T)),
                   np.zeros((n_st, T)), np.zeros((n_st, T)), np.zeros(evs.n))


def _plugged_now(evs: EVArrays, setpoint_kw: np.ndarray, sessions: np.ndarray | None,
                 fallback: Disaggregation | None) -> tuple[np.ndarray, EVArrays, np.ndarray]:
    """The sessions of the station problems (module docstring, "Only the EVs plugged in now"):
    the setpoint they track (the others' fallback power taken off), their arrays and their
    positions in ``evs``."""
    target = np.asarray(setpoint_kw, float)
    if sessions is None or fallback is None:  # (sessions come with a fallback: checked by the caller)
        return target, evs, np.arange(evs.n)
    keep_mask = np.asarray(sessions, bool)
    pos = np.flatnonzero(keep_mask)
    other = np.flatnonzero(~keep_mask)
    target = target.copy()
    np.add.at(target, evs.station[other], -np.asarray(fallback.ev_p_kw, float)[other])
    return target, take_rows(evs, pos), pos


def _station_lp(problem: _Problem, sub: Window, group: np.ndarray) -> tuple[ModelContext, Any]:
    """The LP of one batch: the EV and station blocks of its sessions and stations (variant
    ``per_ev``), the tracking of the region's setpoint and the objective; returns its context and
    the stations' net power expression."""
    T, dt, allow = sub.steps, sub.dt_h, problem.allow
    ctx = ModelContext(sub, soft_limits=problem.soft_limits, slack_penalty=problem.w_hard)
    ctx.lp.name = f"{problem.formulation.name}/stations"
    ctx.variants = {"ev": "per_ev", "station": "per_ev"}
    ctx.options["ev"] = problem.ev_options
    ctx.options["station"] = {"reactive": False, "polygon_sides": 12}
    BLOCKS["ev"].load().build(ctx, problem.ev_options, "per_ev")
    BLOCKS["station"].load().build(ctx, ctx.options["station"], "per_ev")
    lp = ctx.lp
    net = as_expr(ctx.handles["station_p_ch"]) - as_expr(ctx.handles["station_p_dis"])
    over = lp.add_variables("station_p_over", (group.size, T), 0.0, allow[group],
                            description="station power above the region's setpoint, within its allowance, kW")
    under = lp.add_variables("station_p_under", (group.size, T), 0.0, problem.allow_under[group],
                             description="station power below the region's setpoint, within its allowance, kW")
    limited = np.isfinite(allow[group])
    gap = over - under
    if limited.any():
        excess = lp.add_variables("station_p_excess", (group.size, T), 0.0, np.where(limited, np.inf, 0.0),
                                  description="station power above its setpoint beyond its allowance, kW")
        gap = gap + excess
        lp.add_objective("station_limit_excess", excess * (dt * problem.w_hard), block="objective")
    limited_under = np.isfinite(problem.allow_under[group])
    if limited_under.any():
        deficit = lp.add_variables("station_p_deficit", (group.size, T), 0.0, np.where(limited_under, np.inf, 0.0),
                                   description="station power below its setpoint beyond its allowance, kW")
        gap = gap - deficit
        lp.add_objective("station_limit_deficit", deficit * (dt * problem.w_hard), block="objective")
    lp.add_constraints("station_setpoint_tracking", net - gap, "==", problem.target[group])
    lp.add_objective("station_marginal_energy_cost", net * (dt * problem.price[group]), block="objective")
    lp.add_objective("station_tracking", (over + under) * (dt * problem.w_track), block="objective")
    return ctx, net


def _solve_batch(problem: _Problem, ctx: ModelContext, arrays: Any) -> Any:
    """Solve one batch's compiled LP with HiGHS; raise unless optimal.

    Raises
    ------
    InfeasibleError
        The batch's station problems are infeasible (with the diagnosed causes).
    SolverError
        HiGHS stopped without an optimum for another reason.
    """
    solver = problem.formulation.solver
    session = HighsSession(time_limit_s=solver.get("time_limit_s"), threads=solver.get("threads"))
    session.load(arrays, ctx.lp)
    out = session.solve()
    if not out.optimal:
        if "infeasible" in out.status.lower():
            causes = [c for diagnose in ctx.diagnostics for c in diagnose(ctx)]
            raise InfeasibleError(f"station problems of {problem.window.instance.metadata.name!r} are infeasible: "
                                  + ("; ".join(causes) or "no single cause found"))
        raise SolverError(f"HiGHS stopped with status {out.status!r} on the station problems")
    return out


def _batch_plan(acc: _Assembly, ctx: ModelContext, sub: Window, group: np.ndarray, out: Any,
                keep_results: bool) -> Disaggregation:
    """One batch's plan on the 1 kW grid, its per-EV solution the guide; with ``keep_results`` also
    its :class:`~optev.compose.solve.WindowResult` (appended to ``acc.results``)."""
    lp, x = ctx.lp, out.x
    if not keep_results:  # the plan alone, as result_tables computes it (no tables)
        p_ch, p_dis = station_setpoints(ctx, x)
        guide = lp.evaluate(ctx.handles["ev_p_ch"], x) - lp.evaluate(ctx.handles["ev_p_dis"], x)
        return disaggregate(ctx.handles.get("ev_arrays", sub.evs), sub.dt_h, p_ch - p_dis, guide_kw=guide,
                            site_max_kw=sub.stations.p_site_max_kw, site_dis_max_kw=sub.stations.p_site_dis_max_kw)
    tables, extra = result_tables(ctx, x, None, None)
    plan: Disaggregation = extra.pop("plan")
    extra.pop("ac_applied", None)
    terms = lp.objective_values(x)
    slack_use = {name: float(lp.values(var.name, x).sum()) for name, var in ctx.slacks.items()}
    # cast: result_tables' figures vary with the formulation (keys in WindowSummary)
    summary = cast(WindowSummary, {
        "formulation": ctx.lp.name, "termination": out.status, "objective": float(out.objective),
        "objective_terms": terms, "evs": sub.evs.n, "stations": int(group.size),
        "variables": lp.n_cols, "constraints": lp.n_rows, "slack_used": slack_use, **extra})
    empty = pd.DataFrame(columns=["time", "kind", "element_id", "value", "limit", "excess", "unit"])
    # build_s: the build time of all batches so far
    acc.results.append(WindowResult(out.status, float(out.objective), terms, acc.build_s, out.solve_s, 0.0, tables,
                                    empty, summary, ctx, x, None, plan, None))
    return plan

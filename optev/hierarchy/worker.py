"""The region solve, run in a worker: region LP, station level, EV setpoints, re-dispatch, check.

:func:`solve_region` takes a :class:`~optev.hierarchy.task.RegionTask` through the steps
listed in :mod:`optev.hierarchy.solve` (per region 1–5), each a function here:

- :func:`task_window` — the region's window (built, or the one given, compiled), with the
  city's price adder and import cap;
- :func:`solve_region_lp` — the region LP (:class:`~optev.compose.solve.WindowSolver`),
  mapped back from bus aggregates to stations;
- :func:`station_level` — the station problems (:mod:`optev.hierarchy.station`) or the
  pipeline's own disaggregation;
- :func:`applied_grid` — the region's import with the applied setpoints, the re-dispatch
  (:mod:`optev.hierarchy.redispatch`) and the AC check of the applied setpoints, with the
  tables and the AC power flow of :mod:`optev.compose` (:func:`~optev.compose.results.plan_tables`,
  :func:`~optev.compose.results.applied_ac_tables`,
  :func:`~optev.compose.solve.applied_powerflow`);
- :func:`region_summary` — the region's summary and its invariant check.

:func:`run_region` is the executor's entry point (module-level, picklable).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.disaggregate import Disaggregation
from optev.blocks.envelope import disaggregation_guide, envelope
from optev.blocks.window import Window, build_window
from optev.compose.formulation import Formulation
from optev.compose.invariants import invariant_violations
from optev.compose.results import applied_ac_tables, plan_tables, station_setpoints
from optev.compose.solve import WindowResult, WindowSolver, applied_powerflow
from optev.errors import InfeasibleError
from optev.hierarchy.redispatch import redispatch
from optev.hierarchy.services import aggregate_services, service_allowances
from optev.hierarchy.station import StationRefinement, bus_aggregates, refine_stations, split_group_power
from optev.hierarchy.task import VIOLATION_COLUMNS, RegionSolution, RegionTask, check_options, copperplate_formulation
from optev.lp.expr import as_expr
from optev.powerflow import PowerFlowResult, violations
from optev.powerflow.checks import count_by_kind
from optev.powerflow.network import compile_network


@dataclass
class RegionLP:
    """The solved region LP, in the region's stations (step 1)."""

    window: Window
    """The region's window."""
    lp_window: Window
    """The window of the LP: ``window``, or one station per bus with ``aggregate = "bus"``."""
    group: np.ndarray | None
    """Bus aggregate of each station of ``window`` (``aggregate = "bus"``), else None."""
    solver: WindowSolver
    res: WindowResult
    evs: Any
    """The LP's sessions; their ``station`` indexes ``window.stations``."""
    station_kw: np.ndarray
    """The LP's net power of each station of ``window``, kW (n_st × T)."""
    plan: Disaggregation
    """The LP's own plan (the pipeline's disaggregation) in ``window``'s stations."""
    prices: np.ndarray | None
    """Marginal price of power at each station (computed here for bus aggregates)."""

    @property
    def aggregate(self) -> bool:
        """Whether the LP has station envelopes (a station level to refine)."""
        return "station_envelope" in self.res.context.handles


@dataclass
class StationLevel:
    """The plan the region applies (step 2–3)."""

    plan: Disaggregation
    refinement: StationRefinement | None
    only: np.ndarray | None
    """Stations the station level solved (``refine_scope = "first_step"``), else None."""
    seconds: float


@dataclass
class AppliedGrid:
    """The region's grid with the applied setpoints (steps 4–5)."""

    import_kw: np.ndarray
    tables: dict[str, pd.DataFrame]
    violations: pd.DataFrame
    ac: PowerFlowResult | None
    station_q: np.ndarray
    redispatch: str = "not_run"
    redispatch_message: str = ""
    redispatch_s: float = 0.0
    redispatch_objective: float | None = None


def _station_prices(solver: Any, ctx: Any, window: Any) -> np.ndarray:
    """Marginal price of power at each station (n_st × T, currency/kWh) from the region LP's
    duals; the window's import price where HiGHS has no duals."""
    st = window.stations
    T = window.steps
    fallback = np.broadcast_to(window.price_buy, (st.n, T)).copy()
    try:
        sol = solver.session.h.getSolution()
    except Exception:  # noqa: BLE001 - no solution object: use the import price
        return fallback
    if not getattr(sol, "dual_valid", False):
        return fallback
    y = np.asarray(sol.row_dual, float)
    lp = ctx.lp
    if "grid_balance" in lp.constraints:
        lam = lp.row_values("grid_balance", y) / window.dt_h
        return np.broadcast_to(lam, (st.n, T)).copy()
    if "bus_p_balance" in lp.constraints:
        lam = lp.row_values("bus_p_balance", y) / window.dt_h  # (n_bus, T)
        return np.where((st.bus >= 0)[:, None], lam[np.maximum(st.bus, 0)], fallback)
    return fallback


def _has_dispatch(form: Formulation, window: Any) -> bool:
    """Whether the region has units the formulation dispatches (generators, PV/wind, storage)."""
    feeder = window.instance.feeder
    der = "der" in form.blocks and (len(feeder.generators) or window.pv_avail_kw.size or window.wind_avail_kw.size)
    storage = "storage" in form.blocks and len(feeder.storage)
    return bool(der or storage)


def _allowances(ctx: Any, x: np.ndarray, evs: Any, n_stations: int | None = None) -> np.ndarray:
    """How far each station may exceed its setpoint (n_st × T, kW): the room left under
    the region's import limits in its plan, shared by the stations' plugged charging
    power; ``inf`` in steps without a limit (:mod:`optev.hierarchy.station`). ``evs.station``
    indexes ``n_stations`` stations (default: the LP's)."""
    w = ctx.window
    lp = ctx.lp
    n_st, T = (w.stations.n if n_stations is None else int(n_stations)), w.steps
    fam = lp.variables.get("grid_p_buy")
    if fam is None:
        return np.full((n_st, T), np.inf)
    ub = np.asarray(ctx.handles.get("grid_import_max_kw", fam.upper.reshape(fam.shape)), float)
    room = np.where(np.isfinite(ub), np.maximum(ub - lp.values("grid_p_buy", x), 0.0), np.inf).sum(axis=0)
    cap = np.zeros((n_st, T))
    np.add.at(cap, evs.station, evs.plugged * evs.p_ch_max_kw[:, None])
    total = cap.sum(axis=0)
    share = np.where(total > 0, cap / np.where(total > 0, total, 1.0), 0.0)
    return np.where(np.isfinite(room)[None, :], share * np.where(np.isfinite(room), room, 0.0)[None, :], np.inf)


def _soft_limits(task: RegionTask, form: Formulation) -> bool:
    """The task's ``soft_limits``, the formulation's when not given."""
    return bool(form.solver["soft_limits"] if task.soft_limits is None else task.soft_limits)


def task_window(task: RegionTask) -> Window:
    """The region's window: built from its instance part, or the task's window compiled
    (its network does not pickle); with the city's price adder and import cap."""
    if task.window is not None:
        window = task.window
        if window.network is None and task.region.kind != "copperplate" and window.n_bus:
            window = dataclasses.replace(window, network=compile_network(window.instance.feeder))
        window = dataclasses.replace(window, extra=dict(window.extra))
    else:
        window = build_window(task.instance, start=task.start, steps=task.steps, step=task.step,
                              ev_energy_kwh=task.ev_energy_kwh, with_network=task.region.kind != "copperplate")
    if task.price_adder is not None:
        lam = np.asarray(task.price_adder, float)
        window = dataclasses.replace(window, price_buy=window.price_buy + lam, price_sell=window.price_sell + lam)
    if task.import_cap_kw is not None:
        window.extra["grid_import_max_kw"] = np.asarray(task.import_cap_kw, float)
    return window


def solve_region_lp(task: RegionTask, form: Formulation, window: Window) -> RegionLP:
    """Step 1: the region LP, over stations or bus aggregates; with bus aggregates, each
    station's share of its bus's plan and prices."""
    group = None
    lp_window = window
    if task.aggregate == "bus" and form.blocks["station"][0] == "aggregate":
        lp_window, group = bus_aggregates(window)
        if window.extra.get("service_limits"):
            extra = {**window.extra, "service_limits": aggregate_services(
                window.extra["service_limits"], window.stations.station_id, group, lp_window.stations.station_id)}
            if extra.get("station_first_step_kw") is not None:
                extra["station_first_step_kw"] = np.bincount(group, weights=np.asarray(
                    extra["station_first_step_kw"], float), minlength=lp_window.stations.n)
            lp_window = dataclasses.replace(lp_window, extra=extra)
    solver = WindowSolver(form)
    try:
        res = solver.solve(lp_window, soft_limits=task.soft_limits, ac_check=task.ac_check)
    except InfeasibleError as exc:
        cap = "" if task.import_cap_kw is None else " under its share of the city target"
        raise InfeasibleError(f"region {task.region.region_id!r}{cap}: {exc}") from None
    ctx = res.context
    evs = ctx.handles.get("ev_arrays", lp_window.evs)
    p_ch, p_dis = station_setpoints(ctx, res.x)
    station_kw = p_ch - p_dis
    plan = res.plan
    prices = None
    if group is not None:
        # back from bus aggregates to stations: each station's share of its bus's plan
        env = ctx.handles["station_envelope"]
        guide = disaggregation_guide(evs, window.dt_h, ctx.lp.values(ctx.handles["station_e"].name, res.x),
                                     departed_at_need=env.departed_at_need)
        prices = _station_prices(solver, ctx, lp_window)[group]
        evs = dataclasses.replace(evs, station=window.evs.station)
        station_kw = split_group_power(evs, group, guide, station_kw)
        st_p = np.zeros((window.stations.n, window.steps))
        np.add.at(st_p, evs.station, res.plan.ev_p_kw)
        plan = Disaggregation(res.plan.ev_p_kw, res.plan.ev_e_kwh, st_p, res.plan.shortfall_kwh)
    return RegionLP(window, lp_window, group, solver, res, evs, station_kw, plan, prices)


def station_level(task: RegionTask, form: Formulation, rl: RegionLP, *, keep: bool) -> StationLevel:
    """Steps 2–3: the station problems against the region's station setpoints (aggregate
    formulations with ``refine``), else the region LP's own plan."""
    window, evs = rl.window, rl.evs
    t0 = time.perf_counter()
    only = now = None
    if task.refine_scope == "first_step" and evs.n:
        now = evs.plugged[:, 0] > 0
        only = np.zeros(window.stations.n, dtype=bool)
        only[evs.station[now]] = True
    refinement = None
    plan = rl.plan
    if task.refine and rl.aggregate and evs.n:
        ctx = rl.res.context
        prices = rl.prices if rl.prices is not None else _station_prices(rl.solver, ctx, window)
        above, below = service_allowances(window.extra.get("service_limits") or [], window,
                                          _allowances(ctx, rl.res.x, evs, window.stations.n))
        refinement = refine_stations(form, window, evs, rl.station_kw, prices, allowance_kw=above,
                                     under_allowance_kw=below,
                                     tracking=task.tracking, batch_evs=task.batch_evs,
                                     soft_limits=_soft_limits(task, form), stations=only,
                                     fallback=None if only is None else rl.plan, sessions=now,
                                     keep_results=task.check or keep)
        plan = refinement.plan
    return StationLevel(plan, refinement, only, time.perf_counter() - t0)


def station_reactive_power(rl: RegionLP) -> np.ndarray:
    """Reactive power of the region's stations in its LP, kvar (n_st × T): with bus
    aggregates, a bus's shared by its stations' V2G inverter ratings."""
    ctx, lp_window = rl.res.context, rl.lp_window
    q = ctx.lp.evaluate(as_expr(ctx.handles["station_q"]), rl.res.x) if "station_q" in ctx.handles \
        else np.zeros((lp_window.stations.n, lp_window.steps))
    if rl.group is None:
        return q
    group = rl.group
    st = rl.window.stations
    rating = np.where(st.p_dis_max_kw > 0, st.n_chargers * st.s_max_kva, 0.0)
    total = np.bincount(group, weights=rating, minlength=lp_window.stations.n)
    return q[group] * np.divide(rating, total[group], out=np.zeros(st.n), where=total[group] > 0)[:, None]


def applied_grid(task: RegionTask, form: Formulation, rl: RegionLP, level: StationLevel) -> AppliedGrid:
    """Steps 4–5: the region's import with the applied setpoints, the re-dispatch of its
    grid and DER, and (when the plan is not the LP's own) the plan's tables and the AC
    check of the applied setpoints."""
    res, window, plan = rl.res, rl.window, level.plan
    ctx = res.context
    lp_import = ctx.lp.evaluate(as_expr(ctx.handles["grid_import_kw"]), res.x) if "grid_import_kw" in ctx.handles \
        else np.zeros(window.steps)
    shift = plan.station_p_kw - rl.station_kw
    grid = AppliedGrid(lp_import + shift.sum(axis=0), dict(res.tables), res.violations, res.ac,
                       station_reactive_power(rl))
    if level.refinement is not None and task.redispatch and _has_dispatch(form, window):
        _redispatch(task, form, window, plan, grid)
    if level.refinement is not None or rl.group is not None:
        grid.tables.update(plan_tables(window, rl.evs, plan, grid.station_q))
        if task.ac_check and window.network is not None and grid.redispatch in ("not_run", "failed"):
            grid.ac = applied_powerflow(ctx, res.x, window, shift)
            grid.tables.update(applied_ac_tables(grid.tables["bus"], grid.ac, window.times))
            grid.violations = violations(grid.ac, window.instance.feeder)
    if grid.violations is None or not len(grid.violations):
        grid.violations = pd.DataFrame(columns=VIOLATION_COLUMNS)
    return grid


def _redispatch(task: RegionTask, form: Formulation, window: Window, plan: Disaggregation, grid: AppliedGrid) -> None:
    """Step 4: re-solve the region's grid and DER for the plan's station load; its import,
    ``der``, ``storage``, ``bus`` and ``line`` tables, AC check and violations replace the
    region LP's in ``grid`` (kept when it fails)."""
    t0 = time.perf_counter()
    rd, grid.redispatch, grid.redispatch_message = redispatch(
        form, window, plan.station_p_kw, grid.station_q, ac_check=task.ac_check, soft_limits=_soft_limits(task, form))
    grid.redispatch_s = time.perf_counter() - t0
    if rd is not None:
        grid.redispatch_objective = float(rd.objective)
        grid.import_kw = rd.context.lp.evaluate(as_expr(rd.context.handles["grid_import_kw"]), rd.x)
        grid.tables.update({k: v for k, v in rd.tables.items() if k in ("der", "storage", "bus", "line")})
        grid.ac, grid.violations = rd.ac, rd.violations


def invariant_problems(task: RegionTask, rl: RegionLP, level: StationLevel) -> list[str]:
    """Invariant violations of every LP solved for the region (``check = True``)."""
    if not task.check:
        return []
    refinement = level.refinement
    if refinement is None:
        solved = [rl.res]
    else:
        partial = level.only is not None
        solved = ([rl.res] if partial else []) + refinement.results
    return [f"region {task.region.region_id}: {v}" for r in solved for v in invariant_violations(r)]


def region_summary(task: RegionTask, rl: RegionLP, level: StationLevel, grid: AppliedGrid,
                   reservation: float) -> dict[str, Any]:
    """The region's summary: the region LP's, with the applied plan's figures."""
    res, window, plan, refinement = rl.res, rl.window, level.plan, level.refinement
    viol = grid.violations
    summary: dict[str, Any] = {k: v for k, v in res.summary.items() if k not in ("loss_correction_dv_pu",)}
    summary.update({
        "region": task.region.region_id, "region_kind": task.region.kind,
        "stations": int(window.stations.n), "lp_stations": int(rl.lp_window.stations.n),
        "energy_delivered_kwh": float(np.maximum(plan.ev_p_kw, 0).sum() * window.dt_h),
        "energy_discharged_kwh": float(np.maximum(-plan.ev_p_kw, 0).sum() * window.dt_h),
        "shortfall_kwh": float(plan.shortfall_kwh.sum()), "evs_with_shortfall": int((plan.shortfall_kwh > 0).sum()),
        "max_station_setpoint_gap_kw": float(np.abs(plan.station_p_kw - rl.station_kw).max()) if window.stations.n
        else 0.0,
        "peak_import_kw": float(grid.import_kw.max()) if window.steps else 0.0,
        "violations": count_by_kind(viol) if len(viol) else {},
        "refined": refinement is not None, "refine_s": level.seconds,
        "station_problems": refinement.problems if refinement is not None else 0,
        "refined_stations": int(refinement.refined_stations) if refinement is not None else 0,
        "station_solve_s": refinement.solve_s if refinement is not None else 0.0,
        "v2g_reservation_cost": reservation,
        "redispatch": grid.redispatch, "redispatch_message": grid.redispatch_message,
        "redispatch_s": grid.redispatch_s, "redispatch_objective": grid.redispatch_objective,
        "loss_correction_rounds": len(res.summary.get("loss_correction_dv_pu", [])),
    })
    return summary


def solve_region(task: RegionTask, *, keep: bool = False) -> RegionSolution:
    """Solve one region: region LP, station problems, EV setpoints, AC check (module docstring
    of :mod:`optev.hierarchy.solve`).

    ``keep=True`` keeps the solved :class:`~optev.compose.solve.WindowResult` objects in
    ``detail`` (they do not pickle: use it only in-process).
    """
    t_start = time.perf_counter()
    form = copperplate_formulation(task.formulation) if task.region.kind == "copperplate" else task.formulation
    window = task_window(task)
    check_options(task.refine_scope, task.aggregate)
    rl = solve_region_lp(task, form, window)
    level = station_level(task, form, rl, keep=keep)
    grid = applied_grid(task, form, rl, level)
    evs, plan, T = rl.evs, level.plan, window.steps
    import_ac = np.asarray(grid.ac.substation_p_kw.sum(axis=1), float) if grid.ac is not None else None

    ch_max = (evs.plugged * evs.p_ch_max_kw[:, None]).sum(axis=0) if evs.n else np.zeros(T)
    dis_max = (evs.plugged * evs.p_dis_max_kw[:, None]).sum(axis=0) if evs.n else np.zeros(T)
    ev_net = plan.ev_p_kw.sum(axis=0) if evs.n else np.zeros(T)
    active = np.zeros((window.stations.n, T), bool)
    if evs.n:
        np.logical_or.at(active, evs.station, evs.plugged > 0)
    reservation = float((window.dt_h * evs.reservation_price[:, None] * np.maximum(-plan.ev_p_kw, 0.0)).sum()) \
        if evs.n else 0.0

    problems = invariant_problems(task, rl, level)
    summary = region_summary(task, rl, level, grid, reservation)
    summary["region_s"] = time.perf_counter() - t_start
    res = rl.res
    env = envelope(evs, window.dt_h, 1, np.zeros(evs.n, dtype=np.int64)) if evs.n else None
    return RegionSolution(
        task.region.region_id, res.termination, float(res.objective), dict(res.objective_terms), window.times,
        window.dt_h, grid.import_kw, import_ac, flex_down_kw=np.clip(ev_net + dis_max, 0, None),
        flex_up_kw=np.clip(ch_max - ev_net, 0, None), active_stations=active.sum(axis=0),
        v2g_reservation_cost=reservation, tables=grid.tables if task.tables else {}, violations=grid.violations,
        summary=summary, invariant_violations=problems,
        detail={"region": res, "stations": level.refinement, "window": window} if keep else None,
        ev_net_kw=ev_net, envelope=env, reservation_per_kwh=None if env is None else env.reservation_mean[0],
        plan=plan, station_q_kvar=grid.station_q)


def run_region(task: RegionTask) -> RegionSolution:
    """Executor entry point: :func:`solve_region` without the in-process details."""
    return solve_region(task, keep=False)

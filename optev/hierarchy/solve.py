r"""City → region → station → EV: solving one window hierarchically (R6.1.2, R6.2.3.2, R6.2.3.3).

:func:`solve_hierarchical` splits the instance into regions
(:mod:`optev.hierarchy.regions`), solves every region through an executor
(:mod:`optev.hierarchy.executor`: local processes by default, Dask as an option), shares a
city target out to the regions when one is given (:mod:`optev.hierarchy.city`), and
combines the regions' tables and summaries.

Per region (:func:`solve_region`, run in a worker)
    1. *Region level.* The region's window is built in the worker from its
       :class:`~optev.data.Instance` part and solved with the formulation by
       :class:`~optev.compose.solve.WindowSolver` — typically a LinDistFlow OPF or a
       copper plate over station aggregates (station variant ``aggregate``: each station
       one flexibility envelope of the EVs present and expected, :mod:`optev.blocks.envelope`).
       The city's price adder raises the window's import and export prices; the city's
       cap bounds the substation import (``window.extra["grid_import_max_kw"]``).
    2. *Station level* (``refine = True``, aggregate formulations). Each station's per-EV
       problem is solved against the region's station setpoint at the region's marginal
       price of power at the station's bus (:mod:`optev.hierarchy.station`): the station's
       setpoint is shared among its chargers exactly, not through the envelope's
       relaxation. With ``refine = False`` the pipeline's own disaggregation (envelope
       guide) is used.
    3. *EV level.* Setpoints on the 1 kW grid, departure needs first, never below the SOC
       floor (:func:`optev.blocks.disaggregate.disaggregate`).
    4. *Re-dispatch* (``redispatch = True``, after a station level, regions with
       generators, PV/wind or storage). The region's grid and DER are solved once more for
       the load the station level's plan really draws (:mod:`optev.hierarchy.redispatch`),
       so generators, not the substation alone, cover what the EVs' own constraints add to
       the region plan; its ``der``, ``storage``, ``bus`` and ``line`` tables and import
       replace the region LP's (``summary["redispatch"]``: ``optimal``, ``soft_limits``,
       ``failed`` — then the region LP's dispatch is kept — or ``not_run``).
    5. *Check.* The AC power flow of the applied setpoints (EV plan on the 1 kW grid) gives
       the ``bus`` and ``line`` tables and the violations; the invariants of
       :func:`optev.compose.invariants.check_window` are checked on every solved LP's plan
       (``check = True``) and any failure is reported in ``summary["invariant_violations"]``.

A region formulation with per-EV stations (``per_ev``) is solved as it is (no station
level), which is also how a hierarchical run can be compared with a monolithic one.

Combining
    ``tables`` (``ev``, ``station``, ``bus``, ``line``, and ``der``/``storage`` when the
    formulation has those blocks: the schemas of
    :class:`~optev.compose.solve.WindowResult`) are the regions' tables one after the other
    (a bus at the root of several subtree regions appears once per subtree); ``region``
    lists each region's import per step with its cap and price adder. The summary sums
    energies, shortfalls, violations and objectives, reports the city's peak import
    (the sum of the regions' imports with the applied setpoints), and the time split:
    wall time of the whole call, and the sum and maximum over regions of their solve
    times (the maximum is the critical path with enough workers).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypedDict

import numpy as np
import pandas as pd

from optev.blocks.window import build_window
from optev.compose.formulation import Formulation, parse_formulation
from optev.data.instance import Instance
from optev.errors import DataError, InfeasibleError
from optev.hierarchy.city import (CAP_ATOL_KW, CityTarget, check_feasible_shares, envelope_allocation,
                                  price_update, share_cap)
from optev.hierarchy.executor import Executor, LocalProcessExecutor, SerialExecutor
from optev.hierarchy.redispatch import redispatch
from optev.hierarchy.regions import Region, region_instance, split_regions
from optev.hierarchy.station import BATCH_EVS, TRACKING, bus_aggregates, refine_stations, split_group_power

VIOLATION_COLUMNS = ["time", "kind", "element_id", "value", "limit", "excess", "unit"]
REFINE_SCOPES = ("all", "first_step")
"""Values of :attr:`RegionTask.refine_scope`."""
AGGREGATES = ("station", "bus")
"""Values of :attr:`RegionTask.aggregate`."""
NETWORK_TERMS = ("network_losses", "voltage_deviation")


@dataclass(frozen=True)
class RegionTask:
    """Everything a worker needs to solve one region (picklable)."""

    formulation: Formulation
    instance: Instance
    region: Region
    start: Any
    steps: int
    step: str
    ev_energy_kwh: dict[str, float] | None = None
    import_cap_kw: np.ndarray | None = None
    price_adder: np.ndarray | None = None
    refine: bool = True
    ac_check: bool = True
    soft_limits: bool | None = None
    check: bool = True
    tables: bool = True
    tracking: float = TRACKING
    batch_evs: int = BATCH_EVS
    window: Any = None
    """A region window already built (without its compiled network, which does not
    pickle: the worker compiles it); then ``instance``, ``start``, ``steps``, ``step`` and
    ``ev_energy_kwh`` are not used (:func:`region_window`)."""
    refine_scope: str = "all"
    """What the station level solves (``refine = True``): ``"all"`` (every session of every
    station) or ``"first_step"`` (only the sessions plugged in the window's first step —
    all an MPC step applies; forecast arrivals keep the region plan shared with the
    envelope's guide, :mod:`optev.hierarchy.station`)."""
    redispatch: bool = True
    """After the station level, re-solve the region's grid and DER for the load its plan
    really draws (:mod:`optev.hierarchy.redispatch`); only for regions with generators,
    PV/wind or storage to re-dispatch."""
    aggregate: str = "station"
    """Granularity of the region LP with an aggregate station variant: ``"station"`` (one
    envelope per station) or ``"bus"`` (one per bus, :func:`~optev.hierarchy.station.bus_aggregates`;
    the station level then restores each station)."""


@dataclass
class RegionSolution:
    """What a worker sends back for one region (plain arrays and frames, picklable).

    Attributes
    ----------
    region_id : str
    termination : str
        HiGHS status of the region LP.
    objective : float
        Region LP objective (with the city price adder, if any).
    objective_terms : dict
    times : pandas.DatetimeIndex
    dt_h : float
    import_kw : ndarray (T,)
        Region import with the applied (1 kW) setpoints: the LP's import plus the applied
        minus the LP's station power, kW.
    import_ac_kw : ndarray (T,) or None
        Substation power of the AC power flow of the applied setpoints, kW.
    flex_down_kw, flex_up_kw : ndarray (T,)
        How far the region's EVs could lower / raise its import in each step (city
        allocation), kW.
    active_stations : ndarray (T,)
        Stations with at least one plugged EV in each step.
    v2g_reservation_cost : float
        :math:`\\sum r_e p^{dis}_{e,t}\\Delta t` of the applied setpoints, currency.
    tables : dict of DataFrame
    violations : DataFrame
    summary : dict
    invariant_violations : list of str
    detail : object
        With ``keep=True`` (in-process only): ``{"region": WindowResult, "stations":
        StationRefinement or None}``.
    """

    region_id: str
    termination: str
    objective: float
    objective_terms: dict[str, float]
    times: pd.DatetimeIndex
    dt_h: float
    import_kw: np.ndarray
    import_ac_kw: np.ndarray | None
    flex_down_kw: np.ndarray
    flex_up_kw: np.ndarray
    active_stations: np.ndarray
    v2g_reservation_cost: float
    tables: dict[str, pd.DataFrame]
    violations: pd.DataFrame
    summary: dict[str, Any]
    invariant_violations: list[str] = field(default_factory=list)
    detail: Any = field(default=None, repr=False)
    ev_net_kw: np.ndarray | None = None
    """Net power of the region's EVs with the applied setpoints, kW (T,)."""
    envelope: Any = None
    """Flexibility envelope of all the region's sessions as one group
    (:class:`~optev.blocks.envelope.Envelope`, G = 1), for the city's allocation."""
    reservation_per_kwh: np.ndarray | None = None
    """Mean V2G reservation price of the region's plugged V2G sessions per step, currency/kWh."""
    plan: Any = None
    """The region's :class:`~optev.blocks.disaggregate.Disaggregation` (its window's session
    and station order)."""
    station_q_kvar: np.ndarray | None = None
    """Reactive power of the region's stations in its LP, kvar (n_st × T)."""


def copperplate_formulation(formulation: Formulation) -> Formulation:
    """The formulation with a copper-plate network (for regions without a feeder)."""
    if formulation.blocks["network"][0] == "copperplate":
        return formulation
    data = formulation.to_dict()
    data["blocks"]["network"] = {"variant": "copperplate"}
    data["objective"] = {k: v for k, v in data["objective"].items() if k not in NETWORK_TERMS}
    data["name"] = f"{formulation.name}+copperplate"
    return parse_formulation(data, formulation.source or formulation.name)


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


def _ev_tables(window: Any, evs: Any, plan: Any, q_kvar: np.ndarray) -> dict[str, pd.DataFrame]:
    """``ev`` and ``station`` tables of a plan (schemas of :mod:`optev.compose.results`)."""
    st = window.stations
    T = window.steps
    times = window.times
    ei, ti = np.nonzero(evs.plugged > 0)
    ev_table = pd.DataFrame({
        "ev_id": evs.ev_id[ei], "session_id": evs.session_id[ei], "station_id": st.station_id[evs.station[ei]],
        "time": times[ti], "p_kw": plan.ev_p_kw[ei, ti], "soc": plan.ev_e_kwh[ei, ti] / evs.capacity_kwh[ei],
    })
    st_ch = np.zeros((st.n, T))
    st_dis = np.zeros((st.n, T))
    np.add.at(st_ch, evs.station, np.maximum(plan.ev_p_kw, 0.0))
    np.add.at(st_dis, evs.station, np.maximum(-plan.ev_p_kw, 0.0))
    station_table = pd.DataFrame({
        "station_id": np.repeat(st.station_id, T), "time": np.tile(times, st.n),
        "p_ch_kw": st_ch.ravel(), "p_dis_kw": st_dis.ravel(), "q_kvar": q_kvar.ravel(),
    })
    return {"ev": ev_table, "station": station_table}


def solve_region(task: RegionTask, *, keep: bool = False) -> RegionSolution:
    """Solve one region: region LP, station problems, EV setpoints, AC check (module docstring).

    ``keep=True`` keeps the solved :class:`~optev.compose.solve.WindowResult` objects in
    ``detail`` (they do not pickle: use it only in-process).
    """
    from optev.compose.invariants import invariant_violations
    from optev.compose.results import station_setpoints
    from optev.compose.solve import WindowSolver, bus_injections
    from optev.lp.expr import as_expr
    from optev.powerflow import run_powerflow, violations
    from optev.powerflow.checks import count_by_kind

    t_start = time.perf_counter()
    form = task.formulation
    if task.region.kind == "copperplate":
        form = copperplate_formulation(form)
    if task.window is not None:
        from optev.powerflow.network import compile_network

        window = task.window
        if window.network is None and task.region.kind != "copperplate" and window.n_bus:
            window = dataclasses.replace(window, network=compile_network(window.instance.feeder))
        window = dataclasses.replace(window, extra=dict(window.extra))
    else:
        window = build_window(task.instance, start=task.start, steps=task.steps, step=task.step,
                              ev_energy_kwh=task.ev_energy_kwh, with_network=task.region.kind != "copperplate")
    T = window.steps
    if task.price_adder is not None:
        lam = np.asarray(task.price_adder, float)
        window = dataclasses.replace(window, price_buy=window.price_buy + lam, price_sell=window.price_sell + lam)
    if task.import_cap_kw is not None:
        window.extra["grid_import_max_kw"] = np.asarray(task.import_cap_kw, float)
    if task.refine_scope not in REFINE_SCOPES:
        raise DataError(f"refine_scope must be one of {REFINE_SCOPES}, got {task.refine_scope!r}")
    if task.aggregate not in AGGREGATES:
        raise DataError(f"aggregate must be one of {AGGREGATES}, got {task.aggregate!r}")
    group = None
    lp_window = window
    if task.aggregate == "bus" and form.blocks["station"][0] == "aggregate":
        lp_window, group = bus_aggregates(window)
    solver = WindowSolver(form)
    try:
        res = solver.solve(lp_window, soft_limits=task.soft_limits, ac_check=task.ac_check)
    except InfeasibleError as exc:
        cap = "" if task.import_cap_kw is None else " under its share of the city target"
        raise InfeasibleError(f"region {task.region.region_id!r}{cap}: {exc}") from None
    ctx = res.context
    evs = ctx.handles.get("ev_arrays", lp_window.evs)
    lp = ctx.lp
    p_ch, p_dis = station_setpoints(ctx, res.x)
    lp_station = p_ch - p_dis
    aggregate = "station_envelope" in ctx.handles
    region_plan = res.plan
    prices = None
    if group is not None:
        # back from bus aggregates to stations: each station's share of its bus's plan
        from optev.blocks.disaggregate import Disaggregation
        from optev.blocks.envelope import disaggregation_guide

        env = ctx.handles["station_envelope"]
        guide = disaggregation_guide(evs, window.dt_h, lp.values(ctx.handles["station_e"].name, res.x),
                                     departed_at_need=env.departed_at_need)
        prices = _station_prices(solver, ctx, lp_window)[group]
        evs = dataclasses.replace(evs, station=window.evs.station)
        lp_station = split_group_power(evs, group, guide, lp_station)
        st_p = np.zeros((window.stations.n, T))
        np.add.at(st_p, evs.station, res.plan.ev_p_kw)
        region_plan = Disaggregation(res.plan.ev_p_kw, res.plan.ev_e_kwh, st_p, res.plan.shortfall_kwh)
    refinement = None
    t_refine = time.perf_counter()
    only = now = None
    if task.refine_scope == "first_step" and evs.n:
        now = evs.plugged[:, 0] > 0
        only = np.zeros(window.stations.n, dtype=bool)
        only[evs.station[now]] = True
    if task.refine and aggregate and evs.n:
        if prices is None:
            prices = _station_prices(solver, ctx, window)
        refinement = refine_stations(form, window, evs, lp_station, prices,
                                     allowance_kw=_allowances(ctx, res.x, evs, window.stations.n),
                                     tracking=task.tracking, batch_evs=task.batch_evs,
                                     soft_limits=bool(form.solver["soft_limits"] if task.soft_limits is None
                                                      else task.soft_limits),
                                     stations=only, fallback=None if only is None else region_plan, sessions=now,
                                     keep_results=task.check or keep)
        plan = refinement.plan
    else:
        plan = region_plan
    refine_s = time.perf_counter() - t_refine
    lp_import = lp.evaluate(as_expr(ctx.handles["grid_import_kw"]), res.x) if "grid_import_kw" in ctx.handles \
        else np.zeros(T)
    shift = plan.station_p_kw - lp_station
    import_kw = lp_import + shift.sum(axis=0)

    tables = dict(res.tables)
    viol = res.violations
    ac = res.ac
    station_q = lp.evaluate(as_expr(ctx.handles["station_q"]), res.x) if "station_q" in ctx.handles \
        else np.zeros((lp_window.stations.n, T))
    if group is not None:
        # a bus's reactive power shared by its stations' V2G inverter ratings
        st = window.stations
        rating = np.where(st.p_dis_max_kw > 0, st.n_chargers * st.s_max_kva, 0.0)
        total = np.bincount(group, weights=rating, minlength=lp_window.stations.n)
        station_q = station_q[group] * np.divide(rating, total[group], out=np.zeros(st.n),
                                                 where=total[group] > 0)[:, None]
    rd_status, rd_message, rd_s, rd_objective = "not_run", "", 0.0, None
    if refinement is not None and task.redispatch and _has_dispatch(form, window):
        t_rd = time.perf_counter()
        rd, rd_status, rd_message = redispatch(
            form, window, plan.station_p_kw, station_q, ac_check=task.ac_check,
            soft_limits=bool(form.solver["soft_limits"] if task.soft_limits is None else task.soft_limits))
        rd_s = time.perf_counter() - t_rd
        if rd is not None:
            rd_objective = float(rd.objective)
            import_kw = rd.context.lp.evaluate(as_expr(rd.context.handles["grid_import_kw"]), rd.x)
            tables.update({k: v for k, v in rd.tables.items() if k in ("der", "storage", "bus", "line")})
            ac, viol = rd.ac, rd.violations
    if refinement is not None or group is not None:
        tables.update(_ev_tables(window, evs, plan, station_q))
        if task.ac_check and window.network is not None and rd_status in ("not_run", "failed"):
            p_bus, q_bus = bus_injections(ctx, res.x)
            moved = np.zeros((T, window.n_bus))
            on_bus = window.stations.bus >= 0
            np.add.at(moved.T, window.stations.bus[on_bus], shift[on_bus])
            ac = run_powerflow(window.instance.feeder, window.load_p_kw - (p_bus - moved), window.load_q_kvar - q_bus,
                               network=window.network, raise_on_failure=False)
            bus = tables["bus"].copy()
            bus["vm_pu_ac"] = ac.vm_pu.ravel()
            tables["bus"] = bus
            frame = ac.line_frame()
            frame["time"] = np.repeat(window.times, len(ac.line_ids))
            tables["line"] = frame[["line_id", "time", "p_kw", "q_kvar", "current_a", "loading"]]
            viol = violations(ac, window.instance.feeder)
    if viol is None or not len(viol):
        viol = pd.DataFrame(columns=VIOLATION_COLUMNS)
    import_ac = np.asarray(ac.substation_p_kw.sum(axis=1), float) if ac is not None else None

    plugged = evs.plugged > 0
    ch_max = (evs.plugged * evs.p_ch_max_kw[:, None]).sum(axis=0) if evs.n else np.zeros(T)
    dis_max = (evs.plugged * evs.p_dis_max_kw[:, None]).sum(axis=0) if evs.n else np.zeros(T)
    ev_net = plan.ev_p_kw.sum(axis=0) if evs.n else np.zeros(T)
    active = np.zeros((window.stations.n, T), bool)
    if evs.n:
        np.logical_or.at(active, evs.station, plugged)
    reservation = float((window.dt_h * evs.reservation_price[:, None] * np.maximum(-plan.ev_p_kw, 0.0)).sum()) \
        if evs.n else 0.0

    problems: list[str] = []
    if task.check:
        partial = refinement is not None and only is not None
        for r in (([res] if partial else []) + refinement.results if refinement is not None else [res]):
            problems.extend(f"region {task.region.region_id}: {v}" for v in invariant_violations(r))
    summary = {k: v for k, v in res.summary.items() if k not in ("loss_correction_dv_pu",)}
    summary.update({
        "region": task.region.region_id, "region_kind": task.region.kind,
        "stations": int(window.stations.n), "lp_stations": int(lp_window.stations.n),
        "energy_delivered_kwh": float(np.maximum(plan.ev_p_kw, 0).sum() * window.dt_h),
        "energy_discharged_kwh": float(np.maximum(-plan.ev_p_kw, 0).sum() * window.dt_h),
        "shortfall_kwh": float(plan.shortfall_kwh.sum()), "evs_with_shortfall": int((plan.shortfall_kwh > 0).sum()),
        "max_station_setpoint_gap_kw": float(np.abs(plan.station_p_kw - lp_station).max()) if window.stations.n
        else 0.0,
        "peak_import_kw": float(import_kw.max()) if T else 0.0,
        "violations": count_by_kind(viol) if len(viol) else {},
        "refined": refinement is not None, "refine_s": refine_s,
        "station_problems": refinement.problems if refinement is not None else 0,
        "refined_stations": int(refinement.refined_stations) if refinement is not None else 0,
        "station_solve_s": refinement.solve_s if refinement is not None else 0.0,
        "v2g_reservation_cost": reservation,
        "redispatch": rd_status, "redispatch_message": rd_message, "redispatch_s": rd_s,
        "redispatch_objective": rd_objective,
        "loss_correction_rounds": len(res.summary.get("loss_correction_dv_pu", [])),
        "region_s": time.perf_counter() - t_start,
    })
    if not task.tables:
        tables = {}
    detail = {"region": res, "stations": refinement, "window": window} if keep else None
    from optev.blocks.envelope import envelope

    env = envelope(evs, window.dt_h, 1, np.zeros(evs.n, dtype=np.int64)) if evs.n else None
    return RegionSolution(task.region.region_id, res.termination, float(res.objective), dict(res.objective_terms),
                          window.times, window.dt_h, import_kw, import_ac, np.clip(ev_net + dis_max, 0, None),
                          np.clip(ch_max - ev_net, 0, None), active.sum(axis=0), reservation, tables, viol, summary,
                          problems, detail, ev_net, env, None if env is None else env.reservation_mean[0], plan,
                          station_q)


def run_region(task: RegionTask) -> RegionSolution:
    """Executor entry point: :func:`solve_region` without the in-process details."""
    return solve_region(task, keep=False)


@dataclass
class HierarchicalResult:
    """Result of :func:`solve_hierarchical`.

    Attributes
    ----------
    tables : dict of DataFrame
        ``ev``, ``station``, ``bus``, ``line`` and, with those blocks, ``der`` and
        ``storage`` (the schemas of :class:`~optev.compose.solve.WindowResult`), all
        regions, plus ``region``
        (region_id, time, import_kw, import_ac_kw, cap_kw, price_adder_per_kwh).
    summary : dict
        Plain, JSON-serialisable summary (see the module docstring).
    regions : list of RegionSolution
    violations : DataFrame
        AC-check violations of all regions (with a ``region_id`` column).
    city_cap_kw : ndarray (T,) or None
        The city cap in force (``inf`` where none).
    """

    tables: dict[str, pd.DataFrame]
    summary: dict[str, Any]
    regions: list[RegionSolution]
    violations: pd.DataFrame
    city_cap_kw: np.ndarray | None = None
    plan: Any = None
    """With :class:`HierarchicalStrategy`: the city's
    :class:`~optev.blocks.disaggregate.Disaggregation` in the window's session and station order."""

    @property
    def termination(self) -> str:
        return str(self.summary["termination"])

    @property
    def objective(self) -> float:
        return float(self.summary["objective"])

    @property
    def import_kw(self) -> np.ndarray:
        """The city's total import with the applied setpoints, kW (T,)."""
        return np.sum([r.import_kw for r in self.regions], axis=0)

    def setpoints(self, step: int = 0) -> tuple[dict[str, float], dict[str, float]]:
        """Per-EV and per-station setpoints (kW, charge positive) of one step of the plan:
        ``(ev_kw by ev_id, station_kw by station_id)`` — the content of
        :class:`optev.mobility.state.Setpoints`."""
        ev = self.tables["ev"]
        st = self.tables["station"]
        times = self.regions[0].times if self.regions else pd.DatetimeIndex([])
        if not len(times):
            return {}, {}
        t = times[step]
        e = ev[ev["time"] == t]
        s = st[st["time"] == t]
        return (dict(zip(e["ev_id"].astype(str), e["p_kw"].astype(float))),
                dict(zip(s["station_id"].astype(str), (s["p_ch_kw"] - s["p_dis_kw"]).astype(float))))


def _tasks(formulation: Formulation, parts: list[tuple[Region, Instance]], *, start: Any, steps: int, step: str,
           energy: dict[str, float] | None, caps: np.ndarray | None, lam: np.ndarray | None, tables: bool,
           **kw: Any) -> list[RegionTask]:
    out = []
    for k, (region, inst) in enumerate(parts):
        e = None
        if energy:
            ids = set(inst.sessions["session_id"])
            e = {s: v for s, v in energy.items() if s in ids}
        out.append(RegionTask(formulation, inst, region, start, steps, step, e,
                              None if caps is None else caps[k], lam, tables=tables, **kw))
    return out


def solve_hierarchical(formulation: Formulation, instance: Instance, *, start: Any = None, steps: int | None = None,
                       step: str | None = None, executor: Executor | None = None,
                       city_target: CityTarget | None = None, regions: Sequence[Region] | str = "feeder",
                       ev_energy_kwh: dict[str, float] | None = None, refine: bool = True, ac_check: bool = True,
                       soft_limits: bool | None = None, check: bool = True, tracking: float = TRACKING,
                       batch_evs: int = BATCH_EVS, quantum_kw: float = 1.0) -> HierarchicalResult:
    """Solve one window of ``instance`` city → region → station → EV.

    Parameters
    ----------
    formulation : Formulation
        The region formulation (for example ``region_dispatch`` or
        ``station_v2g_aggregate``: station aggregates; per-EV formulations work too).
    instance : Instance
    start, steps, step
        The window (defaults from the formulation's ``[window]``), as for
        :func:`optev.compose.solve.solve_window`.
    executor : Executor, optional
        Where regions are solved. Default: a :class:`LocalProcessExecutor` started for
        this call and closed after it when there are several regions, else serial. Pass
        one (and close it yourself) to reuse its workers across calls.
    city_target : CityTarget, optional
        Citywide target shared out to the regions (:mod:`optev.hierarchy.city`).
    regions : list of Region or {"feeder", "subtree"}
        The regions, or how to split the instance (:func:`split_regions`).
    ev_energy_kwh : dict, optional
        Measured energy by session id at the window start (MPC state).
    refine : bool
        Solve the station level's per-EV problems (aggregate formulations).
    ac_check, soft_limits
        As for :meth:`optev.compose.solve.WindowSolver.solve`.
    check : bool
        Check the invariants of every plan in the workers (reported in
        ``summary["invariant_violations"]``).
    tracking, batch_evs
        Station-level options (:func:`optev.hierarchy.station.refine_stations`).
    quantum_kw : float
        Setpoint quantum, for the rounding reserve of city caps.

    Raises
    ------
    InfeasibleError
        A region (or its share of the city target) is infeasible.
    """
    t0 = time.perf_counter()
    steps = int(steps or formulation.window["steps"])
    step = str(step or formulation.window["step"])
    region_list = split_regions(instance, by=regions) if isinstance(regions, str) else list(regions)
    if not region_list:
        raise DataError("solve_hierarchical: the instance has no region (no feeder and no station)")
    t_split = time.perf_counter()
    parts = [(r, region_instance(instance, r)) for r in region_list]
    split_s = time.perf_counter() - t_split
    own = executor is None
    ex: Any = executor if executor is not None else (
        LocalProcessExecutor(min(len(parts), _cores())) if len(parts) > 1 else SerialExecutor())
    opts = dict(refine=refine, ac_check=ac_check, soft_limits=soft_limits, check=check, tracking=tracking,
                batch_evs=batch_evs)
    rounds: list[dict[str, Any]] = []
    cap_kw = caps = lam = None
    try:
        if city_target is None:
            sols = ex.map(run_region, _tasks(formulation, parts, start=start, steps=steps, step=step,
                                             energy=ev_energy_kwh, caps=None, lam=None, tables=True, **opts))
        else:
            def make(caps: np.ndarray | None, lam: np.ndarray | None, tables: bool) -> list[RegionTask]:
                return _tasks(formulation, parts, start=start, steps=steps, step=step, energy=ev_energy_kwh,
                              caps=caps, lam=lam, tables=tables, **opts)

            sols, cap_kw, caps, lam = _coordinate(ex, make, city_target,
                                                  lambda: _window_prices(parts, start, steps, step),
                                                  quantum_kw=quantum_kw, rounds=rounds)
    finally:
        if own:
            ex.close()
    return _combine(formulation, region_list, sols, cap_kw, caps, lam, rounds, wall_s=time.perf_counter() - t0,
                    split_s=split_s, executor=type(ex).__name__)


def _cores() -> int:
    from optev.hierarchy.executor import default_workers

    return default_workers()


def _coordinate(ex: Any, make: Callable[[np.ndarray | None, np.ndarray | None, bool], list[RegionTask]],
                target: CityTarget, prices: Callable[[], tuple[np.ndarray, np.ndarray]], *, quantum_kw: float,
                rounds: list[dict[str, Any]]) -> tuple[list[RegionSolution], np.ndarray, np.ndarray | None, np.ndarray]:
    """Price iteration and allocation of a city target (:mod:`optev.hierarchy.city`).

    ``make(caps, price_adder, tables)`` gives the region tasks (caps: one row per region);
    ``prices()`` the window's grid import and export prices."""
    def solve(caps: np.ndarray | None, lam: np.ndarray | None, tables: bool) -> list[RegionSolution]:
        return ex.map(run_region, make(caps, lam, tables))

    def record(kind: str, sols: list[RegionSolution], lam: np.ndarray) -> None:
        total = np.sum([s.import_kw for s in sols], axis=0)
        excess = np.where(np.isfinite(cap), total - np.where(np.isfinite(cap), cap, 0.0), 0.0)
        rounds.append({"kind": kind, "max_excess_kw": float(max(excess.max(), 0.0)),
                       "max_price_adder": float(lam.max()) if lam.size else 0.0,
                       "objective": float(sum(s.objective for s in sols))})

    sols = solve(None, None, False)
    times = sols[0].times
    T = len(times)
    base = np.sum([s.import_kw for s in sols], axis=0)
    cap = target.cap(times, base)
    lam = np.zeros(T)
    record("baseline", sols, lam)
    total = base
    excess0 = float(np.max(np.where(np.isfinite(cap), total - np.where(np.isfinite(cap), cap, 0.0), 0.0)))
    if excess0 <= CAP_ATOL_KW:
        return solve(None, None, True), cap, None, lam
    buy, sell = prices()
    price_max = float(np.abs(np.r_[buy, sell]).max(initial=0.0))
    if target.rule == "price":
        for k in range(1, target.iterations + 1):
            lam = price_update(lam, total, cap, k=k, price_max=price_max, first_excess_kw=excess0,
                               step_size=target.step_size)
            sols = solve(None, lam, False)
            total = np.sum([s.import_kw for s in sols], axis=0)
            record("price", sols, lam)
            if rounds[-1]["max_excess_kw"] <= CAP_ATOL_KW:
                return solve(None, lam, True), cap, None, lam
    imports = np.array([s.import_kw for s in sols])
    down = np.array([s.flex_down_kw for s in sols])
    up = np.array([s.flex_up_kw for s in sols])
    reserve = quantum_kw * np.array([s.active_stations for s in sols], float)
    eff_cap = cap - reserve.sum(axis=0)
    check_feasible_shares(eff_cap, imports, down, times)
    if target.rule == "proportional":
        caps = share_cap(eff_cap, imports, down, up)
    else:
        caps = envelope_allocation(eff_cap, sols, (buy, sell), up)
    final = solve(caps, lam, True)
    record("allocation", final, lam)
    return final, cap, caps, lam


def _window_prices(parts: list[tuple[Region, Instance]], start: Any, steps: int, step: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Grid import and export prices of the window, currency/kWh (T,) each."""
    w = build_window(parts[0][1], start=start, steps=steps, step=step, with_network=False)
    return w.price_buy, w.price_sell


def _combine(formulation: Formulation, regions: list[Region], sols: list[RegionSolution], cap_kw: np.ndarray | None,
             caps: np.ndarray | None, lam: np.ndarray | None, rounds: list[dict[str, Any]], *, wall_s: float,
             split_s: float, executor: str) -> HierarchicalResult:
    tables: dict[str, pd.DataFrame] = {}
    # der and storage (the DER and storage blocks' tables) when the regions have them: the
    # controller applies their first step (generator and storage dispatch)
    extra = [name for name in ("der", "storage") if any(name in s.tables for s in sols)]
    for name in ("ev", "station", "bus", "line", *extra):
        frames = [s.tables[name] for s in sols if name in s.tables and len(s.tables[name])]
        if frames:
            tables[name] = pd.concat(frames, ignore_index=True)
        else:
            template = next((s.tables[name] for s in sols if name in s.tables), pd.DataFrame())
            tables[name] = template.iloc[0:0].copy()
    times = sols[0].times
    T = len(times)
    region_rows = []
    for k, s in enumerate(sols):
        region_rows.append(pd.DataFrame({
            "region_id": s.region_id, "time": times, "import_kw": s.import_kw,
            "import_ac_kw": s.import_ac_kw if s.import_ac_kw is not None else np.full(T, np.nan),
            "cap_kw": caps[k] if caps is not None else np.full(T, np.inf),
            "price_adder_per_kwh": lam if lam is not None else np.zeros(T)}))
    tables["region"] = pd.concat(region_rows, ignore_index=True)
    viol_frames = [s.violations.assign(region_id=s.region_id) for s in sols if len(s.violations)]
    viol = pd.concat(viol_frames, ignore_index=True) if viol_frames else pd.DataFrame(
        columns=VIOLATION_COLUMNS + ["region_id"])
    total = np.sum([s.import_kw for s in sols], axis=0)
    counts: dict[str, int] = {}
    for s in sols:
        for kind, n in s.summary.get("violations", {}).items():
            counts[kind] = counts.get(kind, 0) + int(n)
    terms: dict[str, float] = {}
    for s in sols:
        for name, v in s.objective_terms.items():
            terms[name] = terms.get(name, 0.0) + float(v)
    solve_times = [float(s.summary.get("region_s", 0.0)) for s in sols]
    excess = None
    if cap_kw is not None:
        finite = np.isfinite(cap_kw)
        excess = float(np.max(np.where(finite, total - np.where(finite, cap_kw, 0.0), -np.inf), initial=-np.inf))
    ss = [s.summary for s in sols]
    summary: dict[str, Any] = {
        "formulation": formulation.name, "executor": executor, "regions": len(sols),
        "region_ids": [s.region_id for s in sols],
        "termination": ", ".join(sorted({s.termination for s in sols})),
        "objective": float(sum(s.objective for s in sols)), "objective_terms": terms,
        "steps": T, "step_minutes": sols[0].dt_h * 60.0, "start": str(times[0]) if T else "",
        "evs": int(sum(x.get("evs", 0) for x in ss)), "stations": int(sum(x.get("stations", 0) for x in ss)),
        "energy_delivered_kwh": float(sum(x["energy_delivered_kwh"] for x in ss)),
        "energy_discharged_kwh": float(sum(x["energy_discharged_kwh"] for x in ss)),
        "shortfall_kwh": float(sum(x["shortfall_kwh"] for x in ss)),
        "evs_with_shortfall": int(sum(x["evs_with_shortfall"] for x in ss)),
        "v2g_reservation_cost": float(sum(s.v2g_reservation_cost for s in sols)),
        "peak_import_kw": float(total.max()) if T else 0.0,
        "violations": counts,
        "invariant_violations": [p for s in sols for p in s.invariant_violations],
        "refined": all(x.get("refined", False) for x in ss),
        "wall_s": wall_s, "split_s": split_s,
        "build_s": float(sum(x.get("build_s", 0.0) for x in ss)),
        "solve_s": float(sum(x.get("solve_s", 0.0) + x.get("station_solve_s", 0.0) for x in ss)),
        "check_s": float(sum(x.get("check_s", 0.0) for x in ss)),
        "slack_used": {k: float(sum((x.get("slack_used") or {}).get(k, 0.0) for x in ss))
                       for k in sorted({k for x in ss for k in (x.get("slack_used") or {})})},
        "region_s_sum": float(sum(solve_times)), "region_s_max": float(max(solve_times)),
        "city": None if cap_kw is None else {
            "cap_kw_min": float(np.min(cap_kw)), "steps_capped": int(np.isfinite(cap_kw).sum()),
            "max_excess_kw": excess, "rounds": rounds, "allocated": caps is not None,
        },
        "per_region": {s.region_id: {k: s.summary.get(k) for k in (
            "evs", "stations", "objective", "termination", "peak_import_kw", "shortfall_kwh", "region_s",
            "refine_s", "solve_s", "build_s", "check_s", "station_problems", "violations", "redispatch",
            "redispatch_s")} for s in sols},
    }
    return HierarchicalResult(tables, summary, sols, viol, cap_kw)


class _StrategyOptions(TypedDict):
    """The options of :class:`HierarchicalStrategy` passed on to every :class:`RegionTask`."""

    refine: bool
    check: bool
    tracking: float
    batch_evs: int
    refine_scope: str
    aggregate: str
    redispatch: bool


class _TaskOptions(_StrategyOptions):
    """:class:`_StrategyOptions` and the per-solve ones."""

    soft_limits: bool | None
    ac_check: bool


class HierarchicalStrategy:
    """Hierarchical solve as the pluggable solve strategy of the MPC controller.

    :class:`optev.mpc.controller.Controller` calls ``strategy.solve(window, soft_limits=...,
    ac_check=...)`` once per control step with the city window it built (forecast arrivals,
    measured energies, prices and storage states applied). This strategy splits that
    window into regions (:func:`~optev.hierarchy.regions.region_window`; the split follows
    the window's feeder and stations), solves them through its executor — region LP,
    station problems, EV setpoints, as in :func:`solve_hierarchical`, with the city target
    if one is given — and returns a :class:`HierarchicalResult` whose ``plan`` is in the
    window's session and station order, whose ``summary`` has ``termination``,
    ``objective``, ``build_s``, ``solve_s``, ``check_s`` and ``slack_used``, and whose
    ``tables`` have the schemas of :class:`~optev.compose.solve.WindowResult`::

        from optev.mpc.controller import Controller
        strategy = HierarchicalStrategy(load_formulation("station_v2g_aggregate"))
        ctl = Controller(strategy.formulation, instance, strategy=strategy)
        ...
        strategy.close()

    Parameters
    ----------
    formulation : Formulation
        Region formulation (station aggregates, or per-EV).
    executor : Executor, optional
        Default: a :class:`LocalProcessExecutor` (one worker per region, at most the
        cores), started at the first call with several regions and kept until
        :meth:`close`; serial with one region.
    regions : {"feeder", "subtree"}
        How to split the window's instance.
    city_target, refine, check, tracking, batch_evs, quantum_kw
        As for :func:`solve_hierarchical` (``check`` defaults to False here: the
        controller checks the applied plan itself).
    refine_scope : {"all", "first_step"}
        What the station level solves (:attr:`RegionTask.refine_scope`). A controller
        applies only the first step, and only to the EVs plugged in now: ``"first_step"``
        puts only those EVs into the station problems (forecast arrivals keep the region's
        envelope plan, their planned power taken off the station setpoints), which
        skips every station problem while only forecast arrivals are expected and halves
        them when half of a window's sessions are forecasts (default ``"all"``).
    aggregate : {"station", "bus"}
        Region LP over one envelope per station or per bus (:attr:`RegionTask.aggregate`;
        default ``"station"``).
    redispatch : bool
        Re-solve each region's grid and DER for the station level's plan
        (:attr:`RegionTask.redispatch`, :mod:`optev.hierarchy.redispatch`; default True).

    Workers are stateless: each region's LP is built and solved cold at every call (a
    warm re-solve would need a region pinned to a worker). The regions and their parts of
    the instance (feeder, stations, tariffs, series — not the fleet) are cut once and
    reused while the window's instance shares those tables (the controller's windows
    differ only in their sessions).
    """

    def __init__(self, formulation: Formulation, *, executor: Executor | None = None, regions: str = "feeder",
                 city_target: CityTarget | None = None, refine: bool = True, check: bool = False,
                 tracking: float = TRACKING, batch_evs: int = BATCH_EVS, quantum_kw: float = 1.0,
                 refine_scope: str = "all", aggregate: str = "station", redispatch: bool = True) -> None:
        if refine_scope not in REFINE_SCOPES:
            raise DataError(f"refine_scope must be one of {REFINE_SCOPES}, got {refine_scope!r}")
        if aggregate not in AGGREGATES:
            raise DataError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.formulation = formulation
        self.by = regions
        self.executor: Any = executor
        self._own = executor is None
        self.city_target = city_target
        self.quantum_kw = float(quantum_kw)
        self.options = _StrategyOptions(refine=refine, check=check, tracking=tracking, batch_evs=batch_evs,
                                        refine_scope=refine_scope, aggregate=aggregate, redispatch=redispatch)
        self._parts: tuple[tuple[Any, ...], list[Region], list[Instance]] | None = None

    def _regions(self, inst: Instance) -> tuple[list[Region], list[Instance]]:
        """Regions of a window's instance and their parts without the fleet
        (:func:`~optev.hierarchy.regions.region_instance` with ``fleet=False``), reused while
        the tables they are cut from are the same objects — an MPC controller's windows
        differ only in their sessions."""
        key = (inst.feeder, inst.stations, inst.station_tariffs, inst.timeseries, inst.metadata,
               inst.charger_models, inst.vehicle_types)
        if self._parts is None or len(self._parts[0]) != len(key) or \
                any(a is not b for a, b in zip(self._parts[0], key)):
            region_list = split_regions(inst, by=self.by)
            self._parts = (key, region_list, [region_instance(inst, r, fleet=False) for r in region_list])
        return self._parts[1], self._parts[2]

    def _executor(self, n_regions: int) -> Any:
        if self.executor is None:
            self.executor = LocalProcessExecutor(min(n_regions, _cores())) if n_regions > 1 else SerialExecutor()
        return self.executor

    def solve(self, window: Any, *, soft_limits: bool | None = None, ac_check: bool = True) -> HierarchicalResult:
        """Solve one city window hierarchically (see the class docstring)."""
        from optev.blocks.disaggregate import Disaggregation
        from optev.hierarchy.regions import region_window

        t0 = time.perf_counter()
        region_list, parts = self._regions(window.instance)
        pieces = [region_window(window, r, part) for r, part in zip(region_list, parts)]
        ex = self._executor(len(region_list))
        opts: _TaskOptions = {**self.options, "soft_limits": soft_limits, "ac_check": ac_check}

        def make(caps: np.ndarray | None, lam: np.ndarray | None, tables: bool) -> list[RegionTask]:
            return [RegionTask(self.formulation, w.instance, r, None, window.steps, "", None,
                               None if caps is None else caps[k], lam, tables=tables, window=w, **opts)
                    for k, (r, (w, _, _)) in enumerate(zip(region_list, pieces))]

        rounds: list[dict[str, Any]] = []
        cap_kw = caps = lam = None
        if self.city_target is None:
            sols = ex.map(run_region, make(None, None, True))
        else:
            sols, cap_kw, caps, lam = _coordinate(ex, make, self.city_target,
                                                  lambda: (window.price_buy, window.price_sell),
                                                  quantum_kw=self.quantum_kw, rounds=rounds)
        n, T, n_st = window.evs.n, window.steps, window.stations.n
        ev_p, ev_e = np.zeros((n, T)), np.repeat(window.evs.e_init_kwh[:, None], T, axis=1)
        st_p, short = np.zeros((n_st, T)), np.zeros(n)
        for sol, (_, sessions, stations) in zip(sols, pieces):
            if sol.plan is None:
                continue
            ev_p[sessions] = sol.plan.ev_p_kw
            ev_e[sessions] = sol.plan.ev_e_kwh
            short[sessions] = sol.plan.shortfall_kwh
            st_p[stations] = sol.plan.station_p_kw
        result = _combine(self.formulation, region_list, sols, cap_kw, caps, lam, rounds,
                          wall_s=time.perf_counter() - t0, split_s=0.0, executor=type(ex).__name__)
        result.plan = Disaggregation(ev_p, ev_e, st_p, short)
        return result

    def close(self) -> None:
        """Stop the executor's workers if the strategy started them."""
        if self._own and self.executor is not None:
            self.executor.close()
            self.executor = None

    def __enter__(self) -> "HierarchicalStrategy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

r"""City → region → station → EV: solving one window hierarchically (R6.1.2, R6.2.3.2, R6.2.3.3).

:func:`solve_hierarchical` splits the instance into regions
(:mod:`optev.hierarchy.regions`), solves every region through an executor
(:mod:`optev.hierarchy.executor`: local processes by default, Dask as an option), shares a
city target out to the regions when one is given (:mod:`optev.hierarchy.city`), and
combines the regions' tables and summaries.

Modules: :mod:`optev.hierarchy.task` (what a worker gets and gives back:
:class:`RegionTask`, :class:`RegionSolution`), :mod:`optev.hierarchy.worker` (the region
solve, :func:`solve_region`, steps 1–5 below), :mod:`optev.hierarchy.coordinate` (the
rounds of a city target), :mod:`optev.hierarchy.combine` (:class:`HierarchicalResult`),
:mod:`optev.hierarchy.strategy` (:class:`HierarchicalStrategy`, the MPC controller's
strategy); this module has :func:`solve_hierarchical` and re-exports those names.

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

import time
from typing import Any, Sequence

import numpy as np

from optev.blocks.window import build_window
from optev.compose.formulation import Formulation
from optev.data.instance import Instance
from optev.errors import DataError
from optev.hierarchy.city import CityTarget
from optev.hierarchy.combine import HierarchicalResult, combine
from optev.hierarchy.coordinate import coordinate, cores
from optev.hierarchy.executor import Executor, LocalProcessExecutor, SerialExecutor
from optev.hierarchy.regions import Region, region_instance, split_regions
from optev.hierarchy.station import BATCH_EVS, TRACKING
from optev.hierarchy.strategy import HierarchicalStrategy
from optev.hierarchy.task import (AGGREGATES, NETWORK_TERMS, REFINE_SCOPES, VIOLATION_COLUMNS, RegionSolution,
                                  RegionTask, copperplate_formulation)
from optev.hierarchy.worker import run_region, solve_region

__all__ = ["AGGREGATES", "HierarchicalResult", "HierarchicalStrategy", "NETWORK_TERMS", "REFINE_SCOPES",
           "RegionSolution", "RegionTask", "VIOLATION_COLUMNS", "copperplate_formulation", "run_region",
           "solve_hierarchical", "solve_region"]


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
        LocalProcessExecutor(min(len(parts), cores())) if len(parts) > 1 else SerialExecutor())
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

            sols, cap_kw, caps, lam = coordinate(ex, make, city_target,
                                                 lambda: _window_prices(parts, start, steps, step),
                                                 quantum_kw=quantum_kw, rounds=rounds)
    finally:
        if own:
            ex.close()
    return combine(formulation, region_list, sols, cap_kw, caps, lam, rounds, wall_s=time.perf_counter() - t0,
                   split_s=split_s, executor=type(ex).__name__)


def _window_prices(parts: list[tuple[Region, Instance]], start: Any, steps: int, step: str
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Grid import and export prices of the window, currency/kWh (T,) each."""
    w = build_window(parts[0][1], start=start, steps=steps, step=step, with_network=False)
    return w.price_buy, w.price_sell

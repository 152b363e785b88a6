"""Hierarchical solve as the pluggable solve strategy of the MPC controller.

:class:`HierarchicalStrategy` splits each city window the controller builds into regions,
solves them through its executor (:mod:`optev.hierarchy.worker`), shares a city target
out to them (:mod:`optev.hierarchy.coordinate`) and combines them
(:mod:`optev.hierarchy.combine`), the plan in the window's session and station order.
"""

from __future__ import annotations

import time
from typing import Any, TypedDict

import numpy as np

from optev.blocks.disaggregate import Disaggregation
from optev.compose.formulation import Formulation
from optev.data.instance import Instance
from optev.errors import DataError
from optev.hierarchy.city import CityTarget
from optev.hierarchy.combine import HierarchicalResult, combine
from optev.hierarchy.coordinate import coordinate, cores
from optev.hierarchy.executor import Executor, LocalProcessExecutor, SerialExecutor
from optev.hierarchy.regions import Region, region_instance, region_window, split_regions
from optev.hierarchy.services import city_import_target, region_services
from optev.hierarchy.station import BATCH_EVS, TRACKING
from optev.hierarchy.task import RegionTask, check_options
from optev.hierarchy.worker import run_region


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
        check_options(refine_scope, aggregate)
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
            self.executor = LocalProcessExecutor(min(n_regions, cores())) if n_regions > 1 else SerialExecutor()
        return self.executor

    def solve(self, window: Any, *, soft_limits: bool | None = None, ac_check: bool = True) -> HierarchicalResult:
        """Solve one city window hierarchically (see the class docstring)."""
        t0 = time.perf_counter()
        region_list, parts = self._regions(window.instance)
        pieces = [region_window(window, r, part) for r, part in zip(region_list, parts)]
        target = self.city_target
        services = window.extra.get("service_limits") or []
        if services:  # each region its part; an import cap becomes the city target
            for w, _, stations in pieces:
                w.extra["service_limits"] = region_services(services, window, w, stations)
            from_services = city_import_target(services, window.times)
            if from_services is not None and target is not None:
                raise DataError("an import-cap service and the strategy's city target at once: give one of them")
            target = target or from_services
        ex = self._executor(len(region_list))
        opts: _TaskOptions = {**self.options, "soft_limits": soft_limits, "ac_check": ac_check}

        def make(caps: np.ndarray | None, lam: np.ndarray | None, tables: bool) -> list[RegionTask]:
            return [RegionTask(self.formulation, w.instance, r, None, window.steps, "", None,
                               None if caps is None else caps[k], lam, tables=tables, window=w, **opts)
                    for k, (r, (w, _, _)) in enumerate(zip(region_list, pieces))]

        rounds: list[dict[str, Any]] = []
        cap_kw = caps = lam = None
        if target is None:
            sols = ex.map(run_region, make(None, None, True))
        else:
            sols, cap_kw, caps, lam = coordinate(ex, make, target,
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
        result = combine(self.formulation, region_list, sols, cap_kw, caps, lam, rounds,
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

"""Sharing a city target out to the regions: the rounds of region solves it takes.

:func:`coordinate` runs the regions through an executor for a
:class:`~optev.hierarchy.city.CityTarget`: a baseline round, then the price iteration
(``rule = "price"``) and, when the price adder alone does not bring the city under its
cap, an allocation of the cap among the regions (:mod:`optev.hierarchy.city`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from optev.hierarchy.city import (CAP_ATOL_KW, CityTarget, check_feasible_shares, envelope_allocation,
                                  price_update, share_cap)
from optev.hierarchy.executor import default_workers
from optev.hierarchy.task import RegionSolution, RegionTask
from optev.hierarchy.worker import run_region


def cores() -> int:
    """Workers for a local executor (:func:`optev.hierarchy.executor.default_workers`)."""
    return default_workers()


def coordinate(ex: Any, make: Callable[[np.ndarray | None, np.ndarray | None, bool], list[RegionTask]],
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

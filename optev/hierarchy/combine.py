"""Combining the regions of a hierarchical solve into one result.

:func:`combine` puts the regions' :class:`~optev.hierarchy.task.RegionSolution` together
into a :class:`HierarchicalResult`: the regions' tables one after the other
(:func:`combined_tables`), the ``region`` table of imports, caps and price adders
(:func:`region_table`), the violations, and the summary (:func:`combined_summary`,
described in :mod:`optev.hierarchy.solve`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optev.compose.formulation import Formulation
from optev.hierarchy.regions import Region
from optev.hierarchy.task import VIOLATION_COLUMNS, RegionSolution

PER_REGION_KEYS = ("evs", "stations", "objective", "termination", "peak_import_kw", "shortfall_kwh", "region_s",
                   "refine_s", "solve_s", "build_s", "check_s", "station_problems", "violations", "redispatch",
                   "redispatch_s")
"""Entries of each region's summary repeated under ``summary["per_region"]``."""


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


def combined_tables(sols: list[RegionSolution]) -> dict[str, pd.DataFrame]:
    """The regions' ``ev``, ``station``, ``bus``, ``line`` (and ``der``/``storage``) tables
    one after the other (an empty table of the same schema when no region has rows)."""
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
    return tables


def region_table(sols: list[RegionSolution], caps: np.ndarray | None, lam: np.ndarray | None) -> pd.DataFrame:
    """Each region's import per step, with its AC import, cap and price adder."""
    times = sols[0].times
    T = len(times)
    region_rows = []
    for k, s in enumerate(sols):
        region_rows.append(pd.DataFrame({
            "region_id": s.region_id, "time": times, "import_kw": s.import_kw,
            "import_ac_kw": s.import_ac_kw if s.import_ac_kw is not None else np.full(T, np.nan),
            "cap_kw": caps[k] if caps is not None else np.full(T, np.inf),
            "price_adder_per_kwh": lam if lam is not None else np.zeros(T)}))
    return pd.concat(region_rows, ignore_index=True)


def combined_violations(sols: list[RegionSolution]) -> pd.DataFrame:
    """The regions' AC-check violations, with a ``region_id`` column."""
    viol_frames = [s.violations.assign(region_id=s.region_id) for s in sols if len(s.violations)]
    return pd.concat(viol_frames, ignore_index=True) if viol_frames else pd.DataFrame(
        columns=VIOLATION_COLUMNS + ["region_id"])


def _city_figures(total: np.ndarray, cap_kw: np.ndarray | None, caps: np.ndarray | None,
                  rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    """``summary["city"]``: the city cap in force and how far the total import exceeds it."""
    if cap_kw is None:
        return None
    finite = np.isfinite(cap_kw)
    excess = float(np.max(np.where(finite, total - np.where(finite, cap_kw, 0.0), -np.inf), initial=-np.inf))
    return {"cap_kw_min": float(np.min(cap_kw)), "steps_capped": int(np.isfinite(cap_kw).sum()),
            "max_excess_kw": excess, "rounds": rounds, "allocated": caps is not None}


def combined_summary(formulation: Formulation, sols: list[RegionSolution], cap_kw: np.ndarray | None,
                     caps: np.ndarray | None, rounds: list[dict[str, Any]], *, wall_s: float, split_s: float,
                     executor: str) -> dict[str, Any]:
    """Sums of the regions' energies, shortfalls, violations, objectives and times; the
    city's peak import and target figures (module docstring of :mod:`optev.hierarchy.solve`)."""
    times = sols[0].times
    T = len(times)
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
    ss = [s.summary for s in sols]
    return {
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
        "city": _city_figures(total, cap_kw, caps, rounds),
        "per_region": {s.region_id: {k: s.summary.get(k) for k in PER_REGION_KEYS} for s in sols},
    }


def combine(formulation: Formulation, regions: list[Region], sols: list[RegionSolution], cap_kw: np.ndarray | None,
            caps: np.ndarray | None, lam: np.ndarray | None, rounds: list[dict[str, Any]], *, wall_s: float,
            split_s: float, executor: str) -> HierarchicalResult:
    """The :class:`HierarchicalResult` of the regions' solutions ``sols`` (``caps``: each
    region's share of the city cap ``cap_kw``, ``lam``: the city's price adder)."""
    tables = combined_tables(sols)
    tables["region"] = region_table(sols, caps, lam)
    summary = combined_summary(formulation, sols, cap_kw, caps, rounds, wall_s=wall_s, split_s=split_s,
                               executor=executor)
    return HierarchicalResult(tables, summary, sols, combined_violations(sols), cap_kw)

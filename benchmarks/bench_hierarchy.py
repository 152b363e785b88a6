"""Hierarchy benchmark (issue 5): city → region → station → EV against a monolithic per-EV LP.

Run from the repository root::

    python benchmarks/bench_hierarchy.py                 # full run (200, 500, 1,000, 2,000 EVs)
    python benchmarks/bench_hierarchy.py --smoke         # tiny version, a few seconds
    python benchmarks/bench_hierarchy.py --out results.json --workers 2

What is compared (figures and discussion in ``benchmarks/README.md`` (section "Hierarchy")), on one window
of one day (96 steps of 15 minutes), for each case and fleet size:

- **monolithic**: ``formulations/station_v2g.toml`` (per-EV charging with V2G above the
  20 % SOC floor, copper plate over the whole city, energy cost + 0.01 × peak import)
  solved as one LP by :class:`~optev.compose.solve.WindowSolver`;
- **hierarchy**: :func:`optev.hierarchy.solve_hierarchical` with
  ``formulations/station_v2g_aggregate.toml`` (the same data, objective and network, with
  stations as flexibility envelopes) per region, regions in parallel worker processes
  (:class:`~optev.hierarchy.LocalProcessExecutor`), station-level per-EV problems at the
  region's marginal prices (``refine=True``), EV setpoints on the 1 kW grid;
- **hierarchy, envelope only**: the same without the station level (``refine=False``):
  the region's station setpoints shared among the EVs with the envelope's guide.

Cases: ``ux37`` — V2Sim's ``ux_37nodes`` (two feeders, so two regions; 47 stations, fast
and slow) with :func:`optev.data.synthetic.synthetic_sessions`; ``feeders4`` — four
33-bus synthetic feeders, each with its own substation (four regions), with 16 slow V2G
stations of :func:`optev.data.synthetic.synthetic_charging_instance`.

Cost gap (:func:`evaluate`)
    Every plan is evaluated the same way on what would be **applied** — the EV setpoints
    on the 1 kW grid after disaggregation — with the monolithic formulation's objective
    terms: :math:`C = \\sum_t \\Delta t(\\pi^{buy}_t P^+_t - \\pi^{sell}_t P^-_t) + 0.01\\max_t P_t
    + \\sum_{e,t} r_e p^{dis}_{e,t}\\Delta t`, with :math:`P_t` the city's total import
    (conventional load plus the applied EV power; copper plate, so exact) and :math:`r_e`
    each EV's own V2G reservation price. ``gap`` = :math:`(C_H - C_M)/|C_M|`; since
    :math:`C` includes the cost of the conventional load, which no plan can change,
    ``gap_ev`` = :math:`(C_H - C_M)/|C_M - C_0|` relates the same difference to the
    EV-attributable cost (:math:`C_0`: the load alone, no EVs).

Constraint check: :func:`optev.compose.invariants.invariant_violations` on the monolithic result and on
every plan of the hierarchy (SOC floor and ceiling, energy balance, charger, station and
site limits, 1 kW grid, departure energy met or reported), plus the total departure
shortfall of each.

Times (``time.perf_counter``, wall): monolithic = window arrays + build + HiGHS + check
(no AC power flow); hierarchy = the whole :func:`solve_hierarchical` call (splitting,
sending each region to a worker, building its window there, region LP, station LPs,
disaggregation, gathering), with a worker pool started before the timed calls and
reused. Each is the median of ``repeats`` runs after one warm-up.

The module is importable: :func:`run_benchmarks` returns the results as a dict,
:func:`markdown_table` formats them; ``tests/test_hierarchy.py`` runs the smoke mode.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file (tests/paths.py): not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

SHARED = harness.SHARED
_median = harness.median
_t = harness.ms_or_s  # durations in the table
_json_default = harness.json_default  # the results' JSON encoder, by the name tests/test_hierarchy.py uses

SEED = 20260807

GOAL_GAP = 0.01
"""Goal on the cost gap (issue 5): ≤ 1 %."""

PEAK_WEIGHT = 0.01
"""Weight of the peak term in station_v2g (evaluation uses the same)."""

FULL: dict[str, Any] = {"cases": ("ux37", "feeders4"), "sizes": (200, 500, 1000, 2000), "steps": 96,
                        "step": "15min", "repeats": 3, "workers": 2}
SMOKE: dict[str, Any] = {"cases": ("feeders4",), "sizes": (40,), "steps": 16, "step": "15min", "repeats": 1,
                         "workers": 2, "hours": 4.0}


def multi_feeder(n_feeders: int = 4, n_bus: int = 33, *, seed: int = SEED) -> Any:
    """``n_feeders`` synthetic radial feeders of ``n_bus`` buses side by side, each with its
    own substation (bus ids ``f<k>_<bus>``), so one region per feeder."""
    from optev.data.feeder import Feeder
    from optev.data.synthetic import synthetic_radial_feeder

    parts = [synthetic_radial_feeder(n_bus, seed=seed + k) for k in range(n_feeders)]
    buses, lines, subs = [], [], []
    for k, f in enumerate(parts):
        tag = f"f{k}_"
        b = f.buses.copy()
        b["bus_id"] = tag + b["bus_id"]
        ln = f.lines.copy()
        ln["line_id"] = tag + ln["line_id"]
        ln["from_bus"] = tag + ln["from_bus"]
        ln["to_bus"] = tag + ln["to_bus"]
        s = f.substations.copy()
        s["substation_id"] = f"sub{k}"
        s["bus_id"] = tag + s["bus_id"]
        buses.append(b)
        lines.append(ln)
        subs.append(s)
    return Feeder(base_mva=parts[0].base_mva, buses=pd.concat(buses, ignore_index=True),
                  lines=pd.concat(lines, ignore_index=True), substations=pd.concat(subs, ignore_index=True),
                  name=f"{n_feeders}x{n_bus}")


def case_instance(case: str, n_evs: int, *, hours: float | None = None, seed: int = SEED) -> Any:
    """The instance of a benchmark case (module docstring)."""
    from optev.data.synthetic import synthetic_charging_instance, synthetic_sessions

    if case == "ux37":
        from optev.io import read_v2sim

        base = read_v2sim(SHARED / "v2sim" / "ux_37nodes")
        return synthetic_sessions(base, n_evs, seed=seed, chargers="peak", hours=hours)
    if case == "feeders4":
        return synthetic_charging_instance(n_evs, feeder=multi_feeder(4, seed=seed), n_stations=16, seed=seed,
                                           hours=hours or 24.0)
    raise ValueError(f"unknown case {case!r}; valid: ux37, feeders4")


def _formulation(name: str) -> Any:
    from optev.compose.formulation import load_formulation

    return load_formulation(name)


def evaluate(import_kw: np.ndarray, price_buy: np.ndarray, price_sell: np.ndarray, dt_h: float,
             reservation_cost: float, *, peak_weight: float = PEAK_WEIGHT) -> dict[str, float]:
    """Objective of an applied plan (module docstring): energy cost, peak term, V2G
    reservation cost and their sum, currency."""
    imp = np.asarray(import_kw, float)
    energy = float((dt_h * (price_buy * np.maximum(imp, 0.0) - price_sell * np.maximum(-imp, 0.0))).sum())
    peak = float(imp.max()) if imp.size else 0.0
    return {"energy_cost": energy, "peak_kw": peak, "peak_term": peak_weight * peak,
            "v2g_reservation": float(reservation_cost), "total": energy + peak_weight * peak + float(reservation_cost)}


def window_import(result: Any) -> tuple[np.ndarray, float]:
    """City import with the applied setpoints (T,) and the applied V2G reservation cost of a
    monolithic :class:`~optev.compose.solve.WindowResult` (copper plate: exact)."""
    from optev.compose.results import station_setpoints
    from optev.lp.expr import as_expr

    ctx = result.context
    w = ctx.window
    evs = ctx.handles["ev_arrays"]
    p_ch, p_dis = station_setpoints(ctx, result.x)
    lp_import = ctx.lp.evaluate(as_expr(ctx.handles["grid_import_kw"]), result.x)
    imp = lp_import + (result.plan.station_p_kw - (p_ch - p_dis)).sum(axis=0)
    res = float((w.dt_h * evs.reservation_price[:, None] * np.maximum(-result.plan.ev_p_kw, 0.0)).sum())
    return imp, res


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, list[float]]:
    """One warm-up call, then ``repeats`` timed calls; the last result and the times."""
    out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def compare(case: str, n_evs: int, cfg: dict[str, Any], executor: Any) -> dict[str, Any]:
    """One row: monolithic vs hierarchy (refined and envelope-only) on one instance."""
    from optev.blocks.window import build_window
    from optev.compose.solve import WindowSolver
    from optev.hierarchy import solve_hierarchical
    from optev.compose.invariants import invariant_violations

    inst = case_instance(case, n_evs, hours=cfg.get("hours"))
    steps, step, repeats = int(cfg["steps"]), str(cfg["step"]), int(cfg["repeats"])
    mono_form = _formulation("station_v2g")
    agg_form = _formulation("station_v2g_aggregate")

    def mono() -> Any:
        return WindowSolver(mono_form).solve(build_window(inst, steps=steps, step=step), ac_check=False)

    mres, mtimes = _timed(mono, repeats)
    w = mres.context.window
    m_imp, m_res = window_import(mres)
    mcost = evaluate(m_imp, w.price_buy, w.price_sell, w.dt_h, m_res)
    base_cost = evaluate(w.load_p_kw.sum(axis=1), w.price_buy, w.price_sell, w.dt_h, 0.0)["total"]
    m_viol = invariant_violations(mres)
    row: dict[str, Any] = {
        "case": case, "n_evs": n_evs, "evs_in_window": int(mres.summary["evs"]), "stations": int(w.stations.n),
        "steps": steps, "monolithic": {"time_s": _median(mtimes), "times": mtimes, "cost": mcost,
                                       "lp_objective": float(mres.objective),
                                       "variables": int(mres.context.lp.n_cols),
                                       "shortfall_kwh": float(mres.summary["shortfall_kwh"]),
                                       "invariant_violations": m_viol},
        "load_only_cost": base_cost,
    }
    for label, refine in (("hierarchy", True), ("envelope_only", False)):
        def hier(refine: bool = refine) -> Any:
            return solve_hierarchical(agg_form, inst, steps=steps, step=step, executor=executor, refine=refine,
                                      ac_check=False)

        hres, htimes = _timed(hier, repeats)
        cost = evaluate(hres.import_kw, w.price_buy, w.price_sell, w.dt_h, hres.summary["v2g_reservation_cost"])
        gap = (cost["total"] - mcost["total"]) / abs(mcost["total"])
        gap_ev = (cost["total"] - mcost["total"]) / max(abs(mcost["total"] - base_cost), 1e-9)
        row[label] = {"time_s": _median(htimes), "times": htimes, "cost": cost,
                      "lp_objective": float(hres.summary["objective"]), "regions": int(hres.summary["regions"]),
                      "region_s_max": float(hres.summary["region_s_max"]),
                      "region_s_sum": float(hres.summary["region_s_sum"]),
                      "shortfall_kwh": float(hres.summary["shortfall_kwh"]),
                      "invariant_violations": list(hres.summary["invariant_violations"]),
                      "gap": gap, "gap_ev": gap_ev, "goal_met": bool(gap <= GOAL_GAP)}
    return row


def run_benchmarks(smoke: bool = False, *, workers: int | None = None, sizes: tuple[int, ...] | None = None,
                   cases: tuple[str, ...] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the comparison (or its smoke version) and return the results as a dict."""
    from optev.hierarchy import LocalProcessExecutor

    cfg = dict(SMOKE if smoke else FULL)
    if workers is not None:
        cfg["workers"] = int(workers)
    if sizes:
        cfg["sizes"] = tuple(sizes)
    if cases:
        cfg["cases"] = tuple(cases)
    say = log or (lambda _msg: None)
    out: dict[str, Any] = {"mode": "smoke" if smoke else "full", "machine": harness.machine_record(),
                           "config": harness.plain(cfg), "goal_gap": GOAL_GAP, "rows": []}
    t0 = time.perf_counter()
    with LocalProcessExecutor(int(cfg["workers"])) as ex:
        for case in cfg["cases"]:
            if case == "ux37" and not (SHARED / "v2sim" / "ux_37nodes").is_dir():
                out["rows"].append({"case": case, "status": "data not found"})
                continue
            for n in cfg["sizes"]:
                say(f"{case} {n} EVs ...")
                t = time.perf_counter()
                row = compare(case, int(n), cfg, ex)
                row["status"] = "ok"
                out["rows"].append(row)
                say(f"  {time.perf_counter() - t:.1f} s, gap {100 * row['hierarchy']['gap']:.3f} %")
    out["elapsed_s"] = time.perf_counter() - t0
    harness.close_machine_record(out["machine"])
    rows = [r for r in out["rows"] if r.get("status") == "ok"]
    out["goal_met"] = all(r["hierarchy"]["goal_met"] for r in rows) if rows else None
    out["violations"] = sum(len(r[k]["invariant_violations"]) for r in rows
                            for k in ("monolithic", "hierarchy", "envelope_only"))
    return out


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| case | EVs | stations | regions | monolithic cost | hierarchy cost | **gap** | gap / EV cost "
        "| envelope only: gap | monolithic time | hierarchy time (max region) | envelope only time "
        "| shortfall kWh (mono / hier) | violations |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results["rows"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['case']} | {r.get('status')} |")
            continue
        m, h, e = r["monolithic"], r["hierarchy"], r["envelope_only"]
        viol = sum(len(x["invariant_violations"]) for x in (m, h, e))
        lines.append(
            f"| {r['case']} | {r['n_evs']:,} | {r['stations']} | {h['regions']} | {m['cost']['total']:,.1f} "
            f"| {h['cost']['total']:,.1f} | **{100 * h['gap']:+.3f} %** | {100 * h['gap_ev']:+.2f} % "
            f"| {100 * e['gap']:+.3f} % | {_t(m['time_s'])} | {_t(h['time_s'])} ({_t(h['region_s_max'])}) "
            f"| {_t(e['time_s'])} | {m['shortfall_kwh']:.2f} / {h['shortfall_kwh']:.2f} "
            f"| {'none' if not viol else viol} |")
    rows = [r for r in results["rows"] if r.get("status") == "ok"]
    if rows:
        worst = max(rows, key=lambda r: r["hierarchy"]["gap"])
        worst_ev = max(rows, key=lambda r: r["hierarchy"]["gap_ev"])
        met = {True: "met", False: "NOT met", None: "n/a"}[results.get("goal_met")]
        lines += ["", f"Largest cost gap {100 * worst['hierarchy']['gap']:+.3f} % ({worst['case']}, "
                      f"{worst['n_evs']:,} EVs; goal ≤ {100 * results['goal_gap']:g} %: {met}); largest gap / EV cost "
                      f"{100 * worst_ev['hierarchy']['gap_ev']:+.2f} %; invariant violation messages (last column, "
                      f"all plans): {results['violations']}."]
    return "\n".join(lines)


markdown_tables = markdown_table
"""What the script prints for ``results`` (:func:`markdown_table`; the name ``benchmarks/quote.py`` uses)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (after ``--smoke`` and ``--out``)."""
    parser.add_argument("--workers", type=int, help="worker processes (default 2)")
    parser.add_argument("--size", type=int, action="append", help="fleet size (repeatable; default all)")
    parser.add_argument("--case", action="append", choices=("ux37", "feeders4"), help="case (repeatable)")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_benchmarks` for the parsed command line."""
    return run_benchmarks(args.smoke, workers=args.workers, sizes=tuple(args.size or ()),
                          cases=tuple(args.case or ()), log=harness.progress)


COMMAND = harness.Command(__doc__, add_arguments, run_from_args, markdown_table)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); the table on stdout, the results as JSON with ``--out``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())

"""Formulation benchmarks (issue 3): model build, HiGHS solve and check of optev's formulations.

Run from the repository root::

    python benchmarks/bench_formulations.py              # full run (a few minutes)
    python benchmarks/bench_formulations.py --smoke      # tiny version, a few seconds
    python benchmarks/bench_formulations.py --out results.json
    python benchmarks/bench_formulations.py --only ordered --only resolve

What is measured (figures and discussion in ``benchmarks/README.md`` (section "Formulation benchmarks")):

1. ``ordered`` — per-EV ordered charging (``formulations/ordered_charging.toml``): 1,000
   EVs of :func:`optev.data.synthetic.synthetic_charging_instance` at one station, one day
   of 5-minute steps (288), with a site limit of ``SITE_FACTOR`` × the lowest site peak
   any feasible schedule reaches (found by an untimed LP that minimises the peak), so that
   the limit binds but the window stays feasible. The untimed solve without the limit
   shows the limit binds (its peak is above the limit).
2. ``acn`` — the same formulation on the 954 real sessions of the Caltech ACN garage,
   March 2019 (``../shared/acn``), re-based onto one day (see :func:`acn_instance`).
3. ``city`` — ``formulations/city_dispatch_aggregate.toml`` (station aggregates, V2G,
   generators, LinDistFlow with loss correction) on V2Sim's ``ux_37nodes`` with a
   synthetic fleet (:func:`optev.data.synthetic.synthetic_sessions`), 96 steps of 15
   minutes; with the generators as read (±30 Mvar each), limited to ±1 Mvar, and at unity
   power factor.
4. ``resolve`` — :class:`optev.compose.solve.WindowSolver` re-solving a window after only
   data changed (prices, departure energies, initial energies, arrivals — in that order,
   each step warm from the previous one): the re-solve's wall time (window arrays, model
   build and compile, in-place update, HiGHS, solution read-back) against HiGHS's own
   solve time of that re-solve and against a cold solve of the same data.
5. ``ieee33`` — loss correction on IEEE 33-bus with charging stations (the set-up of
   ``tests/test_block_lindistflow.py``): max |V_LinDistFlow − V_AC| before and after.

Time split of a solved window (:func:`timed_solve`): ``build`` = window arrays
(:func:`~optev.blocks.window.build_window`) + model build and compile (all compiles, also
those of loss-correction rounds) + passing the model to HiGHS or updating it in place;
``solve`` = ``Highs.run`` (all runs) plus reading the solution back (``highs_s`` is the run
alone); ``check`` = everything else in :meth:`WindowSolver.solve`: disaggregation to EVs
on the 1 kW grid, AC power flows, loss-correction updates and result tables.

Timing: ``time.perf_counter``; the first run in the process is a warm-up (imports,
allocator), then ``repeats`` timed runs, each with a new :class:`WindowSolver`; tables
show the **median** (the JSON has every run).

The module is importable: :func:`run_benchmarks` returns the results as a dict,
:func:`markdown_table` formats them; ``tests/test_benchmarks_formulations_smoke.py`` runs
the smoke mode through these functions.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file (tests/paths.py): not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

SHARED = harness.SHARED
_median = harness.median
_mark = harness.goal_mark  # goals' verdicts in the tables
ACN_FILE = "acn/caltech_20190301T000000_20190401T000000_5m_208V_6.6kW.json.gz"

SEED = 20260807

SITE_FACTOR = 1.10
"""Site limit = this × the lowest site peak of any feasible schedule (binding, feasible)."""

BINDING_ATOL_KW = 1e-6
"""A step is at the site limit when the station's net power is within this of it, kW."""

GOALS = {
    "ordered_build_solve_s": 2.0,   # per-EV, 1,000 EVs × 288 steps, build + solve ≤ 2 s
    "resolve_ratio_max": 1.5,       # re-solve wall time ≤ 1.5 × HiGHS's own solve time
    "ieee33_dv_pu": 1e-4,           # LinDistFlow vs AC after loss correction, p.u.
}

PERTURBATIONS = ("prices", "energies", "initial_energy", "arrivals")
"""Data changes of the re-solve benchmark, applied one after the other."""

FULL: dict[str, Any] = {
    "ordered": {"n_evs": 1000, "n_stations": 1, "step_minutes": 5.0, "steps": 288, "repeats": 5},
    "acn": {"n_sessions": None, "steps": 288, "repeats": 5},
    "city": {"case": "ux_37nodes", "n_evs": 1000, "steps": 96, "step": "15min", "chargers": "peak",
             "generators": ("as_read", 1000.0, "unity_pf"), "repeats": 3},
    "resolve": {"models": ("ordered", "city"), "repeats": 3},
    "ieee33": [{"n_evs": 40, "n_stations": 4, "seed": 1, "steps": 48},
               {"n_evs": 200, "n_stations": 8, "seed": 2, "steps": 96}],
}

SMOKE: dict[str, Any] = {
    "ordered": {"n_evs": 30, "n_stations": 1, "step_minutes": 15.0, "steps": 96, "repeats": 1},
    "acn": {"n_sessions": 30, "steps": 288, "repeats": 1},
    "city": {"case": "ux_37nodes", "n_evs": 40, "hours": 4.0, "steps": 16, "step": "15min", "chargers": "peak",
             "generators": ("as_read", "unity_pf"), "repeats": 1},
    "resolve": {"models": ("ordered", "city"), "repeats": 1},
    "ieee33": [{"n_evs": 10, "n_stations": 2, "seed": 1, "steps": 48}],
}

BENCHMARKS = ("ordered", "acn", "city", "resolve", "ieee33")
"""Names of the benchmarks (``--only``)."""


# -- helpers -------------------------------------------------------------------------------

def _loadavg() -> float | None:
    """The 1-minute load average, or None."""
    avg = harness.loadavg()
    return avg[0] if avg else None


def _formulation(name: str, *, objective: dict[str, float] | None = None) -> Any:
    """A shipped formulation (``formulations/<name>.toml``), optionally with another objective."""
    from optev.compose.formulation import FORMULATIONS_DIR, parse_formulation

    path = FORMULATIONS_DIR / f"{name}.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if objective is not None:
        data["objective"] = objective
    return parse_formulation(data, str(path))


def timed_solve(solver: Any, window: Any, *, window_s: float = 0.0, ac_check: bool = True) -> tuple[Any, dict]:
    """Solve ``window`` with a :class:`~optev.compose.solve.WindowSolver`, splitting its wall time.

    The solver's :class:`~optev.solvers.highs.HighsSession` is wrapped for the call so
    that passing the model (or updating it in place) and running HiGHS are timed
    separately. Returns the :class:`WindowResult` and the split (seconds; see the module
    docstring): ``window_s`` (given), ``model_s``, ``pass_s``, ``build_s`` (their sum),
    ``highs_s``, ``readback_s``, ``solve_s`` (HiGHS + read-back), ``check_s``,
    ``build_solve_s``, ``total_s``, plus ``warm`` (in-place update of every load),
    ``solves`` and ``iterations``.
    """
    session = solver.session
    rec: dict[str, Any] = {"pass_s": 0.0, "solve_wall_s": 0.0, "highs_s": 0.0, "warm": [], "iterations": []}
    load, run = session.load, session.solve

    def timed_load(arrays: Any, program: Any = None) -> bool:
        t0 = time.perf_counter()
        warm = load(arrays, program)
        rec["pass_s"] += time.perf_counter() - t0
        rec["warm"].append(bool(warm))
        return warm

    def timed_run() -> Any:
        t0 = time.perf_counter()
        out = run()
        rec["solve_wall_s"] += time.perf_counter() - t0
        rec["highs_s"] += out.solve_s
        rec["iterations"].append(int(out.iterations))
        return out

    session.load, session.solve = timed_load, timed_run
    try:
        t0 = time.perf_counter()
        result = solver.solve(window, ac_check=ac_check)
        total = time.perf_counter() - t0
    finally:
        del session.load, session.solve  # the instance attributes shadowed the methods
    model_s = float(result.build_s)
    build_s = window_s + model_s + rec["pass_s"]
    solve_s = rec["solve_wall_s"]
    split = {
        "window_s": window_s, "model_s": model_s, "pass_s": rec["pass_s"], "build_s": build_s,
        "highs_s": rec["highs_s"], "readback_s": solve_s - rec["highs_s"], "solve_s": solve_s,
        "check_s": total - model_s - rec["pass_s"] - solve_s, "build_solve_s": build_s + solve_s,
        "total_s": window_s + total, "warm": all(rec["warm"]), "loads_warm": rec["warm"],
        "solves": len(rec["iterations"]), "iterations": rec["iterations"],
    }
    return result, split


def _summarise_runs(runs: list[dict]) -> dict[str, Any]:
    """Median (and best) of each time of the split over the timed runs."""
    keys = ("window_s", "model_s", "pass_s", "build_s", "highs_s", "readback_s", "solve_s", "check_s",
            "build_solve_s", "total_s")
    out: dict[str, Any] = {k: _median([r[k] for r in runs]) for k in keys}
    out["best_build_solve_s"] = min(r["build_solve_s"] for r in runs)
    out["runs"] = runs
    return out


def _repeat_solve(formulation: Any, make_window: Callable[[], Any], repeats: int, *, ac_check: bool = True
                  ) -> tuple[Any, dict[str, Any]]:
    """One warm-up and ``repeats`` timed solves, each with a new window and WindowSolver."""
    from optev.compose.solve import WindowSolver

    runs = []
    result = None
    for k in range(repeats + 1):
        t0 = time.perf_counter()
        window = make_window()
        window_s = time.perf_counter() - t0
        result, split = timed_solve(WindowSolver(formulation), window, window_s=window_s, ac_check=ac_check)
        if k:
            runs.append(split)
    return result, _summarise_runs(runs)


def _lp_size(result: Any) -> dict[str, int]:
    lp = result.context.lp
    return {"variables": int(lp.n_cols), "constraints": int(lp.n_rows)}


def _nnz(result: Any) -> int:
    return int(result.context.lp.compile().matrix.nnz)


def station_net_kw(result: Any) -> np.ndarray:
    """Station net power of the LP solution (n_stations × T, kW, charge positive)."""
    from optev.compose.results import station_setpoints

    p_ch, p_dis = station_setpoints(result.context, result.x)
    return p_ch - p_dis


def min_site_peak(formulation: Any, window: Any) -> float:
    """Lowest common site peak (kW) any feasible schedule reaches: the model of
    ``formulation`` with its objective replaced by ``min z`` s.t. every station's net power
    ≤ z in every step (window built without site limits)."""
    from optev.compose.solve import build_model
    from optev.errors import SolverError
    from optev.lp.expr import as_expr
    from optev.solvers.highs import HighsSession

    ctx = build_model(formulation, window)
    lp = ctx.lp
    lp.objective.clear()
    net = as_expr(ctx.handles["station_p_ch"]) - as_expr(ctx.handles["station_p_dis"])
    top = lp.add_variables("site_peak", 1, 0.0, np.inf, block="objective")
    lp.add_constraints("site_peak_bound", net - top, "<=", 0.0, block="objective")
    lp.add_objective("site_peak", top)
    session = HighsSession()
    session.load(lp.compile())
    out = session.solve()
    if not out.optimal:
        raise SolverError(f"the lowest-peak LP stopped with status {out.status!r}")
    return float(out.objective)


def _with_site_limit(instance: Any, limit_kw: float) -> Any:
    stations = instance.stations.copy()
    stations["p_site_max_kw"] = limit_kw
    return replace(instance, stations=stations)


def _check_figures(result: Any) -> dict[str, Any]:
    """What the check found: shortfall, setpoint gap, voltages and violations.

    ``max_abs_dv_pu``: LinDistFlow vs the AC power flow of the LP's own injections (the
    loss correction's measure); ``dv_applied_pu``: LinDistFlow vs the AC power flow of the
    applied setpoints (EV plan on the 1 kW grid); ``violations`` (by kind) and
    ``max_violation``: of the applied setpoints; ``violations_model``: of the LP's injections.
    """
    from optev.powerflow import violations
    from optev.powerflow.checks import count_by_kind

    s = result.summary
    out = {"termination": result.termination, "objective": float(result.objective),
           "shortfall_kwh": float(s.get("shortfall_kwh", 0.0)),
           "evs_with_shortfall": int(s.get("evs_with_shortfall", 0)),
           "max_station_setpoint_gap_kw": float(s.get("max_station_setpoint_gap_kw", 0.0)),
           "max_abs_dv_pu": float(s.get("max_abs_dv_pu", float("nan"))), "dv_applied_pu": float("nan"),
           "violations": dict(s.get("violations", {})), "max_violation": _max_excess(result.violations),
           "violations_model": {}, "ac_check": result.ac is not None}
    bus = result.tables.get("bus")
    if bus is not None and len(bus) and bus["vm_pu_lindistflow"].notna().any():
        out["dv_applied_pu"] = float(np.nanmax(np.abs(bus["vm_pu_lindistflow"] - bus["vm_pu_ac"])))
    if getattr(result, "ac_model", None) is not None:
        model = violations(result.ac_model, result.context.window.instance.feeder)
        out["violations_model"] = count_by_kind(model) if len(model) else {}
        out["max_violation_model"] = _max_excess(model)
    return out


def _max_excess(viol: pd.DataFrame) -> dict[str, float]:
    """Largest excess over its limit of each violation kind (in the kind's unit)."""
    if not len(viol):
        return {}
    return {str(k): float(v) for k, v in viol.groupby("kind")["excess"].apply(lambda e: e.abs().max()).items()}


# -- case a: per-EV ordered charging ----------------------------------------------------------

def _site_limited_case(label: str, instance: Any, *, steps: int, step: str, repeats: int,
                       formulation: str = "ordered_charging") -> dict[str, Any]:
    """Shared body of ``ordered`` and ``acn``: site limit from the lowest peak, untimed
    unlimited solve (does it bind?), timed solves with the limit."""
    from optev.blocks.window import build_window
    from optev.compose.solve import WindowSolver

    form = _formulation(formulation)
    free_inst = _with_site_limit(instance, float("inf"))
    free_window = build_window(free_inst, steps=steps, step=step)
    lowest = min_site_peak(form, free_window)
    limit = float(np.ceil(SITE_FACTOR * lowest))
    free = WindowSolver(form).solve(free_window, ac_check=False)
    free_peak = float(station_net_kw(free).max())
    inst = _with_site_limit(instance, limit)
    result, times = _repeat_solve(form, lambda: build_window(inst, steps=steps, step=step), repeats)
    net = station_net_kw(result)
    return {
        "case": label, "formulation": formulation, "evs": int(result.summary["evs"]),
        "stations": int(result.summary["stations"]), "steps": steps, "step": step, **_lp_size(result),
        "nnz": _nnz(result), "site_limit_kw": limit, "lowest_feasible_peak_kw": lowest,
        "peak_without_limit_kw": free_peak, "peak_kw": float(net.max()),
        "steps_at_limit": int((net >= limit - BINDING_ATOL_KW).sum()),
        "binds": bool(free_peak > limit + BINDING_ATOL_KW and (net >= limit - BINDING_ATOL_KW).any()),
        "objective_without_limit": float(free.objective), **_check_figures(result), "times": times,
        "goal_met": bool(times["build_solve_s"] <= GOALS["ordered_build_solve_s"]),
    }


def ordered_instance(cfg: dict[str, Any], *, seed: int = 0) -> Any:
    """The synthetic instance of the ``ordered`` case (site limit set later)."""
    from optev.data.synthetic import synthetic_charging_instance

    return synthetic_charging_instance(int(cfg["n_evs"]), n_stations=int(cfg["n_stations"]),
                                       step_minutes=float(cfg["step_minutes"]), seed=seed)


def bench_ordered(cfg: dict[str, Any]) -> dict[str, Any]:
    """Case a: per-EV ordered charging on the synthetic instance."""
    inst = ordered_instance(cfg)
    row = _site_limited_case("synthetic", inst, steps=int(cfg["steps"]), step=f"{cfg['step_minutes']:g}min",
                             repeats=int(cfg["repeats"]))
    row["feeder_buses"] = int(len(inst.feeder.buses))
    return row


def acn_instance(path: Path | None = None, *, n_sessions: int | None = None, quantum_kw: float = 1.0) -> Any:
    """The Caltech ACN sessions of March 2019 re-based onto one day, as an optev Instance.

    Every session keeps its time of day and its stay (5-minute periods from midnight,
    America/Los_Angeles): arrival ``(period mod 288)·5 min`` on 2019-03-01, departure
    arrival + stay (stays past midnight depart after the one-day window, whose terminal
    condition then asks only for what cannot be charged later). The whole month in one
    day is ~1,000 overlapping sessions, the size of the synthetic case. One station
    ``caltech_acn`` (6.6 kW AC chargers, no V2G, lossless like ACN-Sim's ideal battery) with
    as many chargers as sessions plugged at once; no feeder (copper plate, no AC check);
    prices :data:`optev.data.synthetic.TOU_PRICES`. Each session's requested energy is
    capped at what ``floor(6.6 kW)`` on the 1 kW setpoint grid (R6.5.2) delivers over its
    stay. ``n_sessions`` keeps the first sessions of the month (smoke runs).
    """
    from optev.data import Instance, Metadata, TimeSeries
    from optev.data.synthetic import TOU_PRICES

    raw = json.loads(gzip.open(path or SHARED / ACN_FILE).read().decode("utf-8"))
    data = json.loads(raw) if isinstance(raw, str) else raw
    objs = data["context_dict"]
    evs = pd.DataFrame([o["attributes"] for o in objs.values() if o["class"].endswith(".EV")])
    evs = evs.sort_values(["_arrival", "_session_id"], kind="stable").reset_index(drop=True)
    if n_sessions is not None:
        evs = evs.iloc[:n_sessions].reset_index(drop=True)
    max_kw = np.array([objs[b]["attributes"]["_max_power"] for b in evs["_battery"]], float)
    period_s = 300.0
    stay_s = (evs["_departure"] - evs["_arrival"]).to_numpy(float) * period_s
    arrival = (evs["_arrival"].to_numpy() % 288) * period_s
    departure = arrival + stay_s
    usable_kw = np.floor(max_kw / quantum_kw + 1e-9) * quantum_kw
    requested = evs["_requested_energy"].to_numpy(float)
    energy = np.minimum(requested, usable_kw * stay_s / 3600.0)
    battery_kwh = 100.0
    n = len(evs)
    ids = np.array([f"acn{k:04d}" for k in range(n)], dtype=object)
    # peak number of sessions plugged at once (one charger each)
    events = np.r_[arrival, departure]
    delta = np.r_[np.ones(n), -np.ones(n)]
    order = np.lexsort((delta, events))
    n_chargers = int(max(np.cumsum(delta[order]).max(), 1)) if n else 1
    stations = pd.DataFrame({"station_id": ["caltech_acn"], "kind": ["scs"], "model_id": ["acn_6.6kw"],
                             "n_chargers": [n_chargers], "bus_id": ["caltech_acn"]})  # no feeder
    models = pd.DataFrame({"model_id": ["acn_6.6kw"], "technology": ["ac"], "p_ch_max_kw": [float(max_kw.max())],
                           "p_dis_max_kw": [0.0], "eff_ch": [1.0], "eff_dis": [1.0], "v2g": [False]})
    vtypes = pd.DataFrame({"vtype_id": ["acn_ev"], "battery_kwh": [battery_kwh], "p_ch_max_kw": [float(max_kw.max())],
                           "p_ch_ac_max_kw": [float(max_kw.max())], "p_dis_max_kw": [0.0], "eff_ch": [1.0],
                           "eff_dis": [1.0], "kwh_per_km": [0.2]})
    ev_table = pd.DataFrame({"ev_id": ids, "vtype_id": "acn_ev", "soc_init": 0.0, "v2g_opt_in": False})
    sessions = pd.DataFrame({"session_id": evs["_session_id"].astype(str).to_numpy(), "ev_id": ids,
                             "station_id": "caltech_acn", "arrival_s": arrival, "departure_s": departure,
                             "soc_arrival": 0.0, "soc_target": energy / battery_kwh})
    index = pd.date_range("2019-03-01T00:00", periods=288, freq="5min", tz="America/Los_Angeles")
    seconds = (index - index.normalize()).total_seconds().to_numpy()
    starts = np.array([s for s, _ in TOU_PRICES], float)
    prices = np.array([p for _, p in TOU_PRICES])[np.searchsorted(starts, seconds, side="right") - 1]
    ts = TimeSeries(index=index, price=pd.DataFrame({"buy_per_kwh": prices, "sell_per_kwh": 0.8 * prices},
                                                    index=index))
    meta = Metadata(name="acn_caltech_2019_03_one_day", source=f"{ACN_FILE} (re-based onto one day)",
                    licence="BSD-3-Clause", timezone="America/Los_Angeles", step_minutes=5.0,
                    start="2019-03-01T00:00:00",
                    extra={"requested_kwh": float(requested.sum()), "capped_kwh": float((requested - energy).sum()),
                           "capped_sessions": int((energy < requested - 1e-9).sum())})
    return Instance(metadata=meta, charger_models=models, stations=stations, vehicle_types=vtypes, evs=ev_table,
                    sessions=sessions, timeseries=ts)


def bench_acn(cfg: dict[str, Any]) -> dict[str, Any]:
    """Case a with the real ACN sessions (``status`` ``"data not found"`` without the file)."""
    path = SHARED / ACN_FILE
    if not path.exists():
        return {"case": "acn", "status": "data not found", "path": str(path)}
    inst = acn_instance(path, n_sessions=cfg.get("n_sessions"))
    row = _site_limited_case("acn", inst, steps=int(cfg["steps"]), step="5min", repeats=int(cfg["repeats"]))
    row.update(status="ok", sessions=int(len(inst.sessions)), n_chargers=int(inst.stations["n_chargers"].iloc[0]),
               **{k: inst.metadata.extra[k] for k in ("requested_kwh", "capped_kwh", "capped_sessions")})
    return row


# -- case b: city dispatch on station aggregates ---------------------------------------------

def city_instance(cfg: dict[str, Any], *, generators: str | float = "as_read", seed: int = SEED) -> Any:
    """ux_37nodes with a synthetic fleet at its stations (sessions within ``cfg["hours"]``,
    default the case's day). ``generators``: ``"as_read"`` (V2Sim's limits, ±30 Mvar
    each), ``"unity_pf"`` (reactive limits 0) or a number ``q`` (reactive limits ±q kvar)."""
    from optev.data.synthetic import synthetic_sessions
    from optev.io import read_v2sim

    base = read_v2sim(SHARED / "v2sim" / cfg["case"])
    inst = synthetic_sessions(base, int(cfg["n_evs"]), seed=seed, chargers=cfg.get("chargers", "peak"),
                              hours=cfg.get("hours"))
    if generators == "as_read":
        return inst
    if generators == "unity_pf":
        q = 0.0
    elif isinstance(generators, (int, float)) and not isinstance(generators, bool) and generators >= 0:
        q = float(generators)
    else:
        raise ValueError(f"generators must be 'as_read', 'unity_pf' or a reactive limit in kvar, got {generators!r}")
    gens = inst.feeder.generators.copy()
    gens["q_min_kvar"] = np.maximum(gens["q_min_kvar"].to_numpy(float), -q)
    gens["q_max_kvar"] = np.minimum(gens["q_max_kvar"].to_numpy(float), q)
    return replace(inst, feeder=replace(inst.feeder, generators=gens))


def bench_city(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Case b: city_dispatch_aggregate on ux_37nodes, one row per generator variant."""
    from optev.blocks.window import build_window

    if not (SHARED / "v2sim" / cfg["case"]).is_dir():
        return [{"case": cfg["case"], "status": "data not found"}]
    form = _formulation("city_dispatch_aggregate")
    rows = []
    for gens in cfg["generators"]:
        inst = city_instance(cfg, generators=gens)
        result, times = _repeat_solve(form, lambda: build_window(inst, start=cfg.get("start"), steps=int(cfg["steps"]),
                                                                step=cfg["step"]), int(cfg["repeats"]))
        m = result.context.handles["lindistflow"]
        history = [float(v) for v in result.summary["loss_correction_dv_pu"]]
        kinds = inst.stations.set_index("station_id")["kind"]
        ses_kind = inst.sessions["station_id"].map(kinds)
        gen_q = result.context.lp.evaluate(result.context.handles["gen_q"], result.x)
        rows.append({
            "case": cfg["case"], "status": "ok",
            "generators": gens if isinstance(gens, str) else f"q within ±{gens:g} kvar",
            "formulation": "city_dispatch_aggregate",
            "evs": int(result.summary["evs"]), "sessions_fcs": int((ses_kind == "fcs").sum()),
            "sessions_scs": int((ses_kind == "scs").sum()), "stations": int(result.summary["stations"]),
            "buses": int(m.net.n_bus), "steps": int(cfg["steps"]), **_lp_size(result), "nnz": _nnz(result),
            **_check_figures(result), "loss_correction_dv_pu": history, "corrections": int(m.corrections),
            "loss_tolerance_pu": float(m.tolerance_pu), "max_corrections": int(m.max_corrections),
            "converged": bool(history and history[-1] <= m.tolerance_pu),
            "gen_q_abs_max_kvar": float(np.abs(gen_q).max()) if gen_q.size else 0.0,
            "solves": int(times["runs"][-1]["solves"]), "times": times,
        })
    return rows


# -- case c: re-solving after data changes -----------------------------------------------------

def perturb(instance: Any, kind: str, rng: np.random.Generator, energy: dict[str, float] | None
            ) -> tuple[Any, dict[str, float] | None]:
    """The instance (and measured energies) after one data change of :data:`PERTURBATIONS`.

    ``prices``: buy price × U(0.9, 1.1) per step, sell price 80 % of it; ``energies``:
    30 % of sessions need up to 5 % SOC less at departure (never below arrival);
    ``initial_energy``: every session starts the window with × U(1.00, 1.04) of its energy;
    ``arrivals``: 10 % of sessions arrive one step (the instance's step) earlier. Every
    change keeps the window feasible.
    """
    if kind == "prices":
        ts = instance.timeseries
        price = ts.price.copy()
        price["buy_per_kwh"] = price["buy_per_kwh"].to_numpy() * rng.uniform(0.9, 1.1, len(price))
        price["sell_per_kwh"] = 0.8 * price["buy_per_kwh"]
        return replace(instance, timeseries=replace(ts, price=price)), energy
    sessions = instance.sessions.copy()
    pick = rng.random(len(sessions))
    if kind == "energies":
        k = pick < 0.3
        lower = sessions["soc_target"].to_numpy() - rng.uniform(0.0, 0.05, len(sessions))
        sessions.loc[k, "soc_target"] = np.maximum(lower, sessions["soc_arrival"].to_numpy())[k]
        return replace(instance, sessions=sessions), energy
    if kind == "initial_energy":
        cap = instance.vehicle_types.set_index("vtype_id")["battery_kwh"]
        kwh = sessions["ev_id"].map(instance.evs.set_index("ev_id")["vtype_id"]).map(cap).to_numpy(float)
        e0 = np.minimum(sessions["soc_arrival"].to_numpy() * kwh * rng.uniform(1.0, 1.04, len(sessions)), kwh)
        return instance, dict(zip(sessions["session_id"], e0))
    if kind == "arrivals":
        step_s = instance.metadata.step_minutes * 60.0
        k = pick < 0.1
        sessions.loc[k, "arrival_s"] = np.maximum(sessions.loc[k, "arrival_s"].to_numpy() - step_s, 0.0)
        return replace(instance, sessions=sessions), energy
    raise ValueError(f"unknown perturbation {kind!r}; valid: {PERTURBATIONS}")


def _resolve_model(name: str, cfg: dict[str, Any]) -> tuple[Any, Any, Callable[[Any, Any], Any]]:
    """(formulation, instance, window maker) of a re-solve model: ``ordered`` (case a with its
    site limit) or ``city`` (case b, generators at unity power factor)."""
    from optev.blocks.window import build_window

    if name == "ordered":
        c = cfg["ordered"]
        form = _formulation("ordered_charging")
        inst = ordered_instance(c)
        step = f"{c['step_minutes']:g}min"
        lowest = min_site_peak(form, build_window(_with_site_limit(inst, float("inf")), steps=int(c["steps"]),
                                                  step=step))
        inst = _with_site_limit(inst, float(np.ceil(SITE_FACTOR * lowest)))
        return form, inst, lambda i, e: build_window(i, steps=int(c["steps"]), step=step, ev_energy_kwh=e)
    if name == "city":
        c = cfg["city"]
        form = _formulation("city_dispatch_aggregate")
        inst = city_instance(c, generators="unity_pf")
        return form, inst, lambda i, e: build_window(i, start=c.get("start"), steps=int(c["steps"]), step=c["step"],
                                                     ev_energy_kwh=e)
    raise ValueError(f"unknown re-solve model {name!r}")


def bench_resolve(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Case c: warm re-solves with one WindowSolver vs HiGHS's own time and vs cold solves.

    For each model and repeat: a cold solve of the base window, then the perturbations of
    :data:`PERTURBATIONS` one after the other, each re-solved by the same
    :class:`WindowSolver` (timed: window arrays + model + in-place update + HiGHS +
    read-back) and, for comparison, by a new WindowSolver (cold). No AC check (the check
    is not part of the re-solve; ``city`` then runs no loss correction). One row per
    model and perturbation, medians over the repeats.
    """
    from optev.compose.solve import WindowSolver

    rows = []
    c = cfg["resolve"]
    for name in c["models"]:
        if name == "city" and not (SHARED / "v2sim" / cfg["city"]["case"]).is_dir():
            continue
        form, base, make = _resolve_model(name, cfg)
        per: dict[str, list[dict[str, Any]]] = {k: [] for k in PERTURBATIONS}
        for rep in range(int(c["repeats"]) + 1):           # the first sequence is a warm-up
            rng = np.random.default_rng(SEED + rep)
            solver = WindowSolver(form)
            inst, energy = base, None
            first, _ = timed_solve(solver, make(inst, energy), ac_check=False)
            size = {**_lp_size(first), "evs": int(first.summary["evs"])}
            for kind in PERTURBATIONS:
                inst, energy = perturb(inst, kind, rng, energy)
                t0 = time.perf_counter()
                window = make(inst, energy)
                window_s = time.perf_counter() - t0
                warm_res, warm = timed_solve(solver, window, window_s=window_s, ac_check=False)
                cold_res, cold = timed_solve(WindowSolver(form), window, window_s=window_s, ac_check=False)
                if rep:
                    per[kind].append({
                        "resolve_s": warm["build_solve_s"], "highs_s": warm["highs_s"], "window_s": window_s,
                        "model_s": warm["model_s"], "update_s": warm["pass_s"], "readback_s": warm["readback_s"],
                        "warm": warm["warm"], "iterations": warm["iterations"][0],
                        "cold_highs_s": cold["highs_s"], "cold_s": cold["build_solve_s"],
                        "cold_iterations": cold["iterations"][0],
                        "objective_rel_diff": abs(warm_res.objective - cold_res.objective)
                        / max(1.0, abs(cold_res.objective)),
                    })
        for kind in PERTURBATIONS:
            runs = per[kind]
            med = {k: _median([r[k] for r in runs]) for k in ("resolve_s", "highs_s", "window_s", "model_s",
                                                               "update_s", "readback_s", "cold_highs_s", "cold_s")}
            ratio = med["resolve_s"] / med["highs_s"] if med["highs_s"] > 0 else float("inf")
            rows.append({
                "model": name, "perturbation": kind, **size, **med,
                "overhead_s": med["resolve_s"] - med["highs_s"], "ratio": ratio,
                "speedup_vs_cold": med["cold_s"] / med["resolve_s"] if med["resolve_s"] > 0 else float("nan"),
                "warm": all(r["warm"] for r in runs), "iterations": int(_median([r["iterations"] for r in runs])),
                "cold_iterations": int(_median([r["cold_iterations"] for r in runs])),
                "objective_rel_diff_max": max(r["objective_rel_diff"] for r in runs),
                "goal_met": bool(ratio <= GOALS["resolve_ratio_max"]), "runs": runs,
            })
    return rows


# -- IEEE 33-bus loss correction ----------------------------------------------------------------

def bench_ieee33(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LinDistFlow vs AC voltages before and after loss correction on IEEE 33-bus with stations
    (``lindistflow_opf``, synthetic sessions as in ``tests/test_block_lindistflow.py``)."""
    from optev.blocks.window import build_window
    from optev.data.synthetic import synthetic_charging_instance
    from optev.io import read_matpower

    path = SHARED / "reference_feeders" / "case33bw.m"
    if not path.exists():
        return [{"case": "case33bw", "status": "data not found"}]
    feeder = read_matpower(path)
    form = _formulation("lindistflow_opf")
    rows = []
    for c in cases:
        inst = synthetic_charging_instance(int(c["n_evs"]), feeder=feeder, n_stations=int(c["n_stations"]),
                                           seed=int(c["seed"]))
        result, times = _repeat_solve(form, lambda: build_window(inst, steps=int(c["steps"]), step="15min"), 1)
        history = [float(v) for v in result.summary["loss_correction_dv_pu"]]
        after = float(result.summary["max_abs_dv_pu"])
        rows.append({
            "case": "case33bw", "status": "ok", **c, **_lp_size(result), "evs_in_window": int(result.summary["evs"]),
            "dv_before_pu": history[0] if history else float("nan"), "dv_after_pu": after,
            "loss_correction_dv_pu": history, "corrections": max(len(history) - 1, 0),
            "station_energy_kwh": float(result.summary.get("energy_delivered_kwh", float("nan"))),
            **_check_figures(result), "times": times, "goal_met": bool(after <= GOALS["ieee33_dv_pu"]),
        })
    return rows


# -- driver ------------------------------------------------------------------------------------

def run_benchmarks(smoke: bool = False, *, only: tuple[str, ...] = BENCHMARKS,
                   log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmarks (or their smoke versions) and return the results as a dict."""
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; valid: {BENCHMARKS}")
    cfg = SMOKE if smoke else FULL
    say = log or (lambda _msg: None)
    out: dict[str, Any] = {"mode": "smoke" if smoke else "full", "machine": harness.machine_record(),
                           "config": {"benchmarks": list(only), "seed": SEED, "site_factor": SITE_FACTOR,
                                      "statistic": "median", **harness.plain(cfg)},
                           "goals": GOALS, "ordered": None, "acn": None, "city": [], "resolve": [], "ieee33": [],
                           "loadavg_during": {}}
    t_start = time.perf_counter()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("ordered", lambda: bench_ordered(cfg["ordered"])),
        ("acn", lambda: bench_acn(cfg["acn"])),
        ("city", lambda: bench_city(cfg["city"])),
        ("resolve", lambda: bench_resolve(cfg)),
        ("ieee33", lambda: bench_ieee33(cfg["ieee33"])),
    ]
    for name, fn in steps:
        if name not in only:
            continue
        say(f"{name} ...")
        before = _loadavg()
        t0 = time.perf_counter()
        out[name] = fn()
        out["loadavg_during"][name] = {"start": before, "end": _loadavg(), "elapsed_s": time.perf_counter() - t0}
        say(f"  {time.perf_counter() - t0:.1f} s")
    out["elapsed_s"] = time.perf_counter() - t_start
    harness.close_machine_record(out["machine"])
    out["goals_met"] = goals_met(out)
    return out


def goals_met(results: dict[str, Any]) -> dict[str, bool | None]:
    """Which goals the results meet (None: not measured; speed goals only on full runs)."""
    full = results.get("mode") == "full"
    ordered = results.get("ordered") or {}
    resolve = results.get("resolve") or []
    ieee = [r for r in results.get("ieee33") or [] if r.get("status") == "ok"]
    return {
        "ordered_build_solve": bool(ordered["goal_met"]) if (full and ordered) else None,
        "resolve_ratio": {f"{r['model']}/{r['perturbation']}": bool(r["goal_met"]) for r in resolve} if full and resolve
        else None,
        "ieee33_dv": all(r["goal_met"] for r in ieee) if ieee else None,
    }


def _fmt_time(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "–"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def _fmt_viol(counts: dict[str, int], largest: dict[str, float] | None) -> str:
    if not counts:
        return "none"
    largest = largest or {}
    return ", ".join(f"{k} {v}" + (f" ({largest[k]:.1e})" if k in largest else "") for k, v in counts.items())


def markdown_table(results: dict[str, Any]) -> str:
    """The results as Markdown tables (one per benchmark, then the goals)."""
    lines: list[str] = []
    solved = [r for r in (results.get("ordered"), results.get("acn")) if r and r.get("status", "ok") == "ok"]
    if solved:
        lines += [
            "| per-EV ordered charging | EVs | steps | variables | constraints | window | model + compile | pass "
            "| HiGHS | build + solve | check | site limit kW (lowest feasible peak; peak without limit) "
            "| steps at limit | shortfall kWh | AC violations of applied setpoints |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
        ]
        for r in solved:
            t = r["times"]
            lines.append(
                f"| {r['case']} | {r['evs']:,} | {r['steps']} | {r['variables']:,} | {r['constraints']:,} "
                f"| {_fmt_time(t['window_s'])} | {_fmt_time(t['model_s'])} | {_fmt_time(t['pass_s'])} "
                f"| {_fmt_time(t['solve_s'])} | **{_fmt_time(t['build_solve_s'])}** | {_fmt_time(t['check_s'])} "
                f"| {r['site_limit_kw']:,.0f} ({r['lowest_feasible_peak_kw']:,.1f}; {r['peak_without_limit_kw']:,.1f}) "
                f"| {r['steps_at_limit']} | {r['shortfall_kwh']:.2f} "
                f"| {_fmt_viol(r['violations'], r['max_violation']) if r['ac_check'] else 'no feeder'} |")
        lines.append("")
    city = [r for r in results.get("city") or [] if r.get("status") == "ok"]
    if city:
        lines += [
            "| city_dispatch_aggregate | generators | EVs (FCS / SCS sessions) | variables | constraints | build "
            "| solve (HiGHS runs) | check | loss-correction rounds | max abs(ΔV) LinDistFlow vs AC, p.u., by round "
            "| vs AC of applied setpoints | AC violations: LP injections; applied setpoints (largest) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
        ]
        for r in city:
            t = r["times"]
            hist = ", ".join(f"{v:.1e}" for v in r["loss_correction_dv_pu"])
            lines.append(
                f"| {r['case']} | {r['generators']} | {r['evs']:,} ({r['sessions_fcs']} / {r['sessions_scs']}) "
                f"| {r['variables']:,} | {r['constraints']:,} | {_fmt_time(t['build_s'])} "
                f"| {_fmt_time(t['solve_s'])} ({r['solves']}) "
                f"| {_fmt_time(t['check_s'])} | {r['corrections']}{'' if r['converged'] else ' (not converged)'} "
                f"| {hist} | {r['dv_applied_pu']:.1e} "
                f"| {_fmt_viol(r['violations_model'], r.get('max_violation_model'))}; "
                f"{_fmt_viol(r['violations'], r['max_violation'])} |")
        lines.append("")
    resolve = results.get("resolve") or []
    if resolve:
        lines += [
            "| re-solve | change | variables | warm | window | model + compile | update | HiGHS | read-back "
            "| re-solve wall | ratio to HiGHS | cold HiGHS | cold wall |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in resolve:
            lines.append(
                f"| {r['model']} | {r['perturbation']} | {r['variables']:,} | {'yes' if r['warm'] else 'no'} "
                f"| {_fmt_time(r['window_s'])} | {_fmt_time(r['model_s'])} | {_fmt_time(r['update_s'])} "
                f"| {_fmt_time(r['highs_s'])} | {_fmt_time(r['readback_s'])} | {_fmt_time(r['resolve_s'])} "
                f"| **{r['ratio']:.2f}×** | {_fmt_time(r['cold_highs_s'])} | {_fmt_time(r['cold_s'])} |")
        lines.append("")
    ieee = [r for r in results.get("ieee33") or [] if r.get("status") == "ok"]
    if ieee:
        lines += [
            "| IEEE 33-bus + stations | EVs | stations | steps | rounds | max abs(ΔV) before, p.u. | after, p.u. "
            "| vs AC of applied setpoints, p.u. | build | solve | check |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ieee:
            t = r["times"]
            lines.append(
                f"| case33bw | {r['n_evs']} | {r['n_stations']} | {r['steps']} | {r['corrections']} "
                f"| {r['dv_before_pu']:.2e} | {r['dv_after_pu']:.2e} | {r['dv_applied_pu']:.2e} "
                f"| {_fmt_time(t['build_s'])} | {_fmt_time(t['solve_s'])} | {_fmt_time(t['check_s'])} |")
        lines.append("")
    g = results["goals_met"]
    res = g["resolve_ratio"]
    res_txt = "n/a" if res is None else ", ".join(f"{k}: {_mark(v)}" for k, v in res.items())
    lines += [
        "| goal | result |",
        "|---|---|",
        f"| per-EV ordered charging, 1,000 EVs × 288 steps: build + solve ≤ {GOALS['ordered_build_solve_s']:g} s "
        f"| {_mark(g['ordered_build_solve'])} |",
        f"| re-solve after data changes ≤ {GOALS['resolve_ratio_max']:g} × HiGHS's own solve time | {res_txt} |",
        f"| IEEE 33-bus: LinDistFlow vs AC within {GOALS['ieee33_dv_pu']:g} p.u. after loss correction "
        f"| {_mark(g['ieee33_dv'])} |",
    ]
    return "\n".join(lines)


markdown_tables = markdown_table
"""What the script prints for ``results`` (:func:`markdown_table`; the name ``benchmarks/quote.py`` uses)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (after ``--smoke`` and ``--out``)."""
    parser.add_argument("--only", action="append", choices=BENCHMARKS,
                        help="run only this benchmark (repeatable; default: all)")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_benchmarks` for the parsed command line."""
    return run_benchmarks(args.smoke, only=tuple(args.only or BENCHMARKS), log=harness.progress)


COMMAND = harness.Command(__doc__, add_arguments, run_from_args, markdown_table)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); the tables on stdout, the results as JSON with ``--out``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())

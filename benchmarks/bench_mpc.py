"""Closed-loop MPC benchmark (issue 5): Nanjing, 100,000 EVs, 96 steps of 15 minutes.

Run from the repository root::

    sh instances/recipes/nanjing_100k.sh                # once: the instance (git-ignored)
    python benchmarks/bench_mpc.py                      # full run: closed loop + re-solve scenario
    python benchmarks/bench_mpc.py --smoke              # tiny version (embedded instance), seconds
    python benchmarks/bench_mpc.py --out mpc.json       # also write the results as JSON
    python benchmarks/bench_mpc.py --horizon 12h --steps 32 --start 16:00
    python benchmarks/bench_mpc.py --only resolve       # the fixed-shape re-solve scenario only

What is measured (figures and discussion in ``benchmarks/README.md``, "Closed-loop MPC (issue 5)"):

1. **Closed loop** — :func:`optev.mpc.simulate` of ``--steps`` control steps of 15 minutes:
   every step the plant's measured state goes to the :class:`~optev.mpc.Controller`, which
   solves its window with :class:`~optev.hierarchy.HierarchicalStrategy` (one region per
   feeder — Nanjing has 5 — each a LinDistFlow OPF over station flexibility envelopes,
   then the station-level per-EV problems, then EV setpoints on the 1 kW grid, then the
   re-dispatch of the region's grid and generators for that plan; regions in a
   :class:`~optev.hierarchy.LocalProcessExecutor` of ``--workers`` processes); the event
   simulation plant (:class:`optev.mobility.Plant`, routed on the road network) realises
   the step with the real arrivals; the AC power flow checks every applied step (batched
   after the last step, as ``simulate`` does). The region formulation is
   ``formulations/city_dispatch_aggregate.toml`` with the overrides of
   :data:`FORMULATION_OVERRIDES` (see README.md for why). The uncontrolled baseline is the
   same plant without setpoints (``simulate``'s baseline).
   Figures: wall time of the whole run and of each part (instance read, baseline and
   pre-roll, the loop, the batched AC check and result tables); per step the closed-loop
   time (controller + edge + plant, from one step's start to the next), the controller
   call (``decision.stats.wall_s``), HiGHS's own time summed over the regions (region LP
   plus station LPs) and the slowest region's time in its worker; peak memory; the
   peak reduction against the baseline.
2. **Fixed-shape re-solve** — a :class:`~optev.mpc.Controller` with the default
   :class:`~optev.mpc.controller.MonolithicStrategy` called repeatedly at one decision time
   with the same plugged EVs and new price forecasts (every step's price moved by a seeded
   random factor in [0.8, 1.2]; no arrivals): the window's LP keeps
   its structure, so HiGHS gets only the changed costs and restarts from its basis
   (``warm``). Controller wall time against HiGHS's own time, cold first call vs warm
   re-solves; the same with the hierarchical strategy (stateless workers: always cold).

Memory: the closed loop runs in a child process (this script with ``--child``); its peak
resident set (``ru_maxrss``) is exact; the worker processes' and the total (parent of the
loop + workers) are sampled every 0.5 s with psutil (RSS, so pages the forkserver workers
share are counted in each: an upper bound).

The module is importable: :func:`run_benchmarks` returns the results as a dict and
:func:`markdown_tables` formats them; ``tests/test_benchmarks_mpc_smoke.py`` runs the smoke
mode (no timing assertions).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file (tests/paths.py): not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

_t = harness.ms_or_s  # durations in the tables
NANJING = harness.REPO / "instances" / "nanjing_100k"

GOALS = {"step_median_s": 10.0, "day_s": 15 * 60.0, "peak_memory_gb": 8.0}
"""Issue 5: per-step median ≤ 10 s, whole day ≤ 15 min, peak memory ≤ 8 GB (2 cores)."""

FORMULATION = "city_dispatch_aggregate"
FORMULATION_OVERRIDES: dict[str, dict[str, Any]] = {"station": {"intervals": "none", "reactive": False}}
"""Changes to the region formulation for 100,000 EVs (README.md, "Configuration"): no interval
bounds in the station envelopes (the station level's exact per-EV problems remove the
looseness they address) and no reactive power at the stations (its polygon is 6 rows per
station and step, 2/3 of the region LP, and was not used in the runs that had it)."""

FULL: dict[str, Any] = {"instance": str(NANJING), "steps": 96, "start": "00:00", "horizon": "8h", "workers": 2,
                        "refine_scope": "first_step", "aggregate": "bus", "batch_evs": 250,
                        "resolve_evs": 2000, "resolve_repeats": 5, "resolve_horizon": "8h"}
SMOKE: dict[str, Any] = {"instance": "embedded", "steps": 3, "start": "08:00", "horizon": "2h", "workers": 2,
                         "refine_scope": "first_step", "aggregate": "bus", "batch_evs": 250,
                         "resolve_evs": 60, "resolve_repeats": 2, "resolve_horizon": "2h"}
"""Benchmark configurations (README.md, "Configuration"): the region LP over bus aggregates, the
station problems of the EVs plugged in now, 250 sessions per station-problem LP."""


# ------------------------------------------------------------------------------ configuration

def bench_formulation(name: str = FORMULATION, overrides: dict[str, dict[str, Any]] | None = None) -> Any:
    """The region formulation: ``name`` with block options replaced by ``overrides``."""
    from optev.compose.formulation import load_formulation, parse_formulation

    base = load_formulation(name)
    data = base.to_dict()
    for block, options in (FORMULATION_OVERRIDES if overrides is None else overrides).items():
        data["blocks"][block].update(options)
    return parse_formulation(data, base.source or name)


# ------------------------------------------------------------------------------ memory sampler

class MemorySampler:
    """Samples the resident memory of this process and its descendants every ``every_s``.

    ``peak_total_mb`` is the largest sum over the process tree (RSS: shared pages count in
    every process that maps them), ``peak_workers_mb`` the largest sum over the
    descendants, ``peak_self_mb`` this process alone.
    """

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.peak_total_mb = self.peak_workers_mb = self.peak_self_mb = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        import psutil

        me = psutil.Process(os.getpid())
        own = me.memory_info().rss / 1e6
        kids = 0.0
        for child in me.children(recursive=True):
            try:
                kids += child.memory_info().rss / 1e6
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.peak_self_mb = max(self.peak_self_mb, own)
        self.peak_workers_mb = max(self.peak_workers_mb, kids)
        self.peak_total_mb = max(self.peak_total_mb, own + kids)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, float)
    if not a.size:
        return {"median": float("nan"), "mean": float("nan"), "max": float("nan"), "min": float("nan"),
                "p90": float("nan"), "total": 0.0}
    return {"median": float(np.median(a)), "mean": float(a.mean()), "max": float(a.max()), "min": float(a.min()),
            "p90": float(np.percentile(a, 90)), "total": float(a.sum())}


# ------------------------------------------------------------------------------ stages (in the child)

def closed_loop(instance: str, *, steps: int, start: str, horizon: str, workers: int, refine_scope: str = "all",
                aggregate: str = "station", batch_evs: int = 1000, formulation: str = FORMULATION,
                overrides: dict[str, dict[str, Any]] | None = None, limit_arrivals: bool = False,
                log: bool = False, service: str | None = None) -> dict[str, Any]:
    """The closed loop in this process (module docstring, 1); timings, stats and summary.
    ``service``: a service request file delivered on top (:func:`optev.services.run.run_service`;
    ``bench_services.py``), its ``service`` and ``appendix_a`` summary in the record."""
    t_all = time.perf_counter()
    from optev.hierarchy import HierarchicalStrategy, LocalProcessExecutor
    from optev.io import read
    from optev.mpc import Controller, simulate

    t0 = time.perf_counter()
    inst = read(harness.instance_path(instance))
    read_s = time.perf_counter() - t0
    form = bench_formulation(formulation, overrides)
    if service:
        from optev.services.run import with_service_block
        form = with_service_block(form)
    marks: list[float] = []
    ends: list[float] = []
    per_step: list[dict[str, Any]] = []
    with MemorySampler() as mem, LocalProcessExecutor(workers) as ex:
        strategy = HierarchicalStrategy(form, executor=ex, refine_scope=refine_scope, aggregate=aggregate,
                                        batch_evs=batch_evs)
        ctl = Controller(form, inst, step="15min", horizon=horizon, strategy=strategy, ev_plan=False,
                         limit_arrivals=limit_arrivals)
        step = ctl.step

        reserves: list[tuple[float, float]] = []

        def timed_step(state: Any, forecasts: Any = None) -> Any:
            marks.append(time.perf_counter())
            decision = step(state, forecasts)
            reserves.append((float(decision.stats.arrival_reserve_kw), float(decision.stats.leaving_reserve_kw)))
            return decision

        ctl.step = timed_step  # type: ignore[method-assign]

        def progress(done: int, total: int, info: dict[str, Any]) -> None:
            ends.append(time.perf_counter())
            step_s = ends[-1] - marks[-1] if len(ends) == 1 else ends[-1] - ends[-2]
            row = _step_row(done, info, step_s, ctl.last_result, reserves, mem.peak_total_mb)
            per_step.append(row)
            if log:
                print(f"  step {done:3d}/{total} {row['time'][11:16]} {row['status']:<11} "
                      f"step {row['step_s']:6.2f} s  controller {row['controller_s']:6.2f} s  "
                      f"HiGHS {row['highs_s']:6.2f} s  slowest region {row['region_s_max']:5.2f} s  "
                      f"sessions {row['sessions']:6d}  mem {row['rss_mb'] / 1e3:4.1f} GB", file=sys.stderr,
                      flush=True)

        t_sim = time.perf_counter()
        delivered: dict[str, Any] | None = None
        if service:
            from optev.services.request import load_service
            from optev.services.run import run_service
            served = run_service(inst, load_service(service), form, controller=ctl, start=start, steps=steps,
                                 progress=progress)
            run, delivered = served.run, served.summary()
        else:
            run = simulate(inst, form, start=start, steps=steps, controller=ctl, progress=progress)
        t_done = time.perf_counter()
    wall = {"total": time.perf_counter() - t_all, "read": read_s,
            "before_loop": (marks[0] - t_sim) if marks else float("nan"),
            "loop": (ends[-1] - marks[0]) if ends else float("nan"),
            "after_loop": (t_done - ends[-1]) if ends else float("nan"), "simulate": t_done - t_sim}
    config = {"instance": instance, "regions": len(strategy._parts[1]) if strategy._parts else None,
              "formulation": form.name, "overrides": overrides, "steps": steps, "horizon": horizon,
              "horizon_steps": int(ctl.steps), "workers": workers, "refine_scope": refine_scope,
              "aggregate": aggregate, "batch_evs": batch_evs, "limit_arrivals": limit_arrivals}
    record = _loop_record(inst, run, config, wall, per_step, mem)
    if delivered is not None:
        record["service"] = {"request": service, **delivered}
    return record


def _step_row(done: int, info: dict[str, Any], step_s: float, res: Any, reserves: list[tuple[float, float]],
              rss_mb: float) -> dict[str, Any]:
    """One row of ``per_step``: the step's wall, controller, HiGHS and region times, reserves and memory."""
    summ = getattr(res, "summary", None) or {}
    regions = summ.get("per_region") or {}
    return {"step": done - 1, "time": str(info["time"]), "status": info["status"], "step_s": step_s,
            "controller_s": float(info["wall_s"]), "highs_s": float(info["solve_s"]),
            "region_s_max": float(summ.get("region_s_max", float("nan"))),
            "region_s_sum": float(summ.get("region_s_sum", float("nan"))),
            "region_lp_highs_s": float(sum(float(r.get("solve_s") or 0.0) for r in regions.values())),
            "refine_s_sum": float(sum(float(r.get("refine_s") or 0.0) for r in regions.values())),
            "redispatch_s_sum": float(sum(float(r.get("redispatch_s") or 0.0) for r in regions.values())),
            "redispatch": sorted(str(r.get("redispatch")) for r in regions.values()),
            "strategy_wall_s": float(summ.get("wall_s", float("nan"))),
            "sessions": int(summ.get("evs", 0)),
            "arrival_reserve_kw": reserves[-1][0] if reserves else float("nan"),
            "leaving_reserve_kw": reserves[-1][1] if reserves else float("nan"),
            **_plan_first_step(res), "rss_mb": rss_mb}


def _loop_record(inst: Any, run: Any, c: dict[str, Any], wall: dict[str, float], per_step: list[dict[str, Any]],
                 mem: Any) -> dict[str, Any]:
    """The results record of a closed-loop run (module docstring, 1): configuration ``c``, wall
    times, per-step statistics, memory and the run's summary figures."""
    summ = run.summary
    st = run.tables["steps"]
    base = run.baseline["steps"]
    limit = float(inst.feeder.substations["p_import_max_kw"].sum())  # all substations together, kW
    step_s = [r["step_s"] for r in per_step]
    out = {
        "status": "ok", "instance": c["instance"], "evs": int(len(inst.evs)), "stations": int(len(inst.stations)),
        "regions": c["regions"], "formulation": c["formulation"],
        "formulation_overrides": FORMULATION_OVERRIDES if c["overrides"] is None else c["overrides"],
        "steps": c["steps"], "start": summ["start"], "horizon": c["horizon"], "horizon_steps": c["horizon_steps"],
        "workers": c["workers"], "refine_scope": c["refine_scope"], "aggregate": c["aggregate"],
        "batch_evs": c["batch_evs"], "limit_arrivals": bool(c["limit_arrivals"]),
        "wall_s": wall,
        "step_s": _stats(step_s), "controller_s": _stats([r["controller_s"] for r in per_step]),
        "highs_s": _stats([r["highs_s"] for r in per_step]),
        "region_lp_highs_s": _stats([r["region_lp_highs_s"] for r in per_step]),
        "region_s_max": _stats([r["region_s_max"] for r in per_step]),
        "redispatch_s_sum": _stats([r["redispatch_s_sum"] for r in per_step]),
        "redispatch_statuses": {k: sum(r["redispatch"].count(k) for r in per_step)
                                for k in sorted({x for r in per_step for x in r["redispatch"]})},
        "plant_and_rest_s": _stats([r["step_s"] - r["controller_s"] for r in per_step]),
        "per_step": per_step,
        "memory_mb": {"loop_process_maxrss": harness.peak_rss_mb(),
                      "workers_max_single_maxrss": harness.peak_rss_mb(resource.RUSAGE_CHILDREN),
                      "sampled_total_peak": mem.peak_total_mb, "sampled_workers_peak": mem.peak_workers_mb,
                      "samples": mem.samples},
        "summary": {k: summ[k] for k in (
            "peak_import_kw", "baseline_peak_import_kw", "peak_reduction_kw", "cost", "baseline_cost",
            "energy_delivered_kwh", "baseline_energy_kwh", "energy_discharged_kwh", "energy_unmet_kwh",
            "baseline_energy_unmet_kwh", "sessions_with_shortfall", "baseline_sessions_with_shortfall",
            "sessions_departed", "soc_floor_violations", "limit_violations_total", "limit_violations",
            "ac_violations", "ac_violation_steps", "baseline_ac_violations", "soft_limit_steps", "failed_steps",
            "needs_clipped", "energy_continuity_max_err_kwh", "lindistflow_error_pu", "warm_steps",
            "peak_ev_kw", "baseline_peak_ev_kw", "cost_parts", "baseline_cost_parts", "energy_local_kwh",
            "energy_setpoint_kwh", "energy_by_departure_kwh", "baseline_energy_by_departure_kwh",
            "energy_deferred_kwh", "baseline_energy_deferred_kwh", "sessions_due_at_end",
            "sessions_compared", "sessions_unmatched", "sessions_worse_than_uncontrolled",
            "sessions_v2g_exempt", "worse_than_uncontrolled_kwh", "identities", "identities_ok",
            "compared_steps", "excluded_steps", "nonconverged_steps", "baseline_nonconverged_steps",
            "baseline_ac_violation_steps", "baseline_dispatch")},
        "ev_load_kw": {"peak": float(st["ev_kw"].max()), "baseline_peak": float(base["ev_kw"].max())},
        "shortfall": {"controlled": _shortfall(run.sessions), "baseline": _shortfall(run.baseline_sessions)},
        "import_limit": {"kw": limit, "steps_above": int((st["import_kw"] > limit).sum()),
                         "baseline_steps_above": int((base["import_kw"] > limit).sum()),
                         **_applied_vs_plan(per_step, st, limit)},
        "loadavg_end": harness.loadavg(),
    }
    s = out["summary"]
    s["peak_reduction_pct"] = 100.0 * s["peak_reduction_kw"] / s["baseline_peak_import_kw"] \
        if s["baseline_peak_import_kw"] and s["peak_reduction_kw"] is not None else float("nan")
    ev = out["ev_load_kw"]
    ev["reduction_pct"] = 100.0 * (1.0 - ev["peak"] / ev["baseline_peak"]) if ev["baseline_peak"] else float("nan")
    return out




def _plan_first_step(result: Any) -> dict[str, float]:
    """The plan's first step: city import (sum of the regions' imports after the station level
    and the re-dispatch) and EV power, kW (nan without a hierarchical result)."""
    tables = getattr(result, "tables", None) or {}
    region, station = tables.get("region"), tables.get("station")
    if region is None or station is None or not len(region):
        return {"plan_import_kw": float("nan"), "plan_ev_kw": float("nan")}
    t0 = region["time"].min()
    first = station[station["time"] == t0]
    return {"plan_import_kw": float(region.loc[region["time"] == t0, "import_kw"].sum()),
            "plan_ev_kw": float((first["p_ch_kw"] - first["p_dis_kw"]).sum())}


def _applied_vs_plan(per_step: list[dict[str, Any]], steps: Any, limit_kw: float) -> dict[str, Any]:
    """Applied import and EV power (``simulate``'s steps table) against the plans' first steps, and
    the power of EVs arriving during a step against the plan's arrival reserve, kW; copies the
    applied figures into ``per_step``."""
    plan_imp = np.array([r["plan_import_kw"] for r in per_step], float)
    plan_ev = np.array([r["plan_ev_kw"] for r in per_step], float)
    reserve = np.array([r.get("arrival_reserve_kw", np.nan) for r in per_step], float)
    imp = steps["import_kw"].to_numpy(float)[: plan_imp.size]
    ev = steps["ev_kw"].to_numpy(float)[: plan_ev.size]
    local = steps["ev_local_kw"].to_numpy(float)[: plan_ev.size]
    for r, row in zip(per_step, steps[["ev_kw", "ev_set_kw", "ev_local_kw", "import_kw", "arrivals", "forecast_arrivals"]].to_dict("records")):
        r.update({"applied_" + k: float(v) for k, v in row.items()})
    return {"plan_import_max_kw": float(np.nanmax(plan_imp)) if plan_imp.size else float("nan"),
            "plan_steps_above_limit": int((plan_imp > limit_kw + 1.0).sum()),
            "import_minus_plan_kw": _stats((imp - plan_imp).tolist()),
            "ev_minus_plan_kw": _stats((ev - plan_ev).tolist()),
            "local_minus_reserve_kw": _stats((local - reserve).tolist())}


def _shortfall(sessions: Any) -> dict[str, Any]:
    """Settled sessions (left, or due by the end) with less than their need: counts above 0, 1 and 5 kWh, and the
    median and 90th percentile of the shortfall among them, kWh."""
    left = sessions[sessions["settled"].to_numpy(bool)]  # left, or due by the end of the run
    short = left["shortfall_kwh"].to_numpy(float)
    some = short[short > 0]
    return {"departed": int(len(left)), "above_0": int(some.size), "above_1kwh": int((short > 1.0).sum()),
            "above_5kwh": int((short > 5.0).sum()), "total_kwh": float(short.sum()),
            "median_kwh": float(np.median(some)) if some.size else 0.0,
            "p90_kwh": float(np.percentile(some, 90)) if some.size else 0.0}


def resolve_scenario(n_evs: int, *, repeats: int, horizon: str, workers: int = 2, seed: int = 7) -> dict[str, Any]:
    """Fixed-shape re-solves (module docstring, 2) on a synthetic instance of ``n_evs`` EVs
    on two 33-bus feeders: one decision time, the EVs plugged in then, new prices each call."""
    from optev.compose.formulation import load_formulation
    from optev.hierarchy import HierarchicalStrategy, LocalProcessExecutor
    from optev.mpc import Controller, ReplayPlant
    from optev.mpc.forecast import Forecast, actual_series

    inst = _two_feeder_instance(n_evs, seed)
    t_s = 18 * 3600.0
    state = ReplayPlant(inst, start_s=t_s).control_state()
    rng = np.random.default_rng(seed)

    def run(strategy: Any, form: Any, label: str) -> dict[str, Any]:
        ctl = Controller(form, inst, step="15min", horizon=horizon, strategy=strategy, ev_plan=False)
        times = ctl.window_times(t_s)
        base = actual_series(inst, times)
        rows = []
        for k in range(repeats + 1):
            # a new price forecast: every step's price moved by up to ±20 % (the optimum changes)
            scale = np.ones(len(times)) if k == 0 else rng.uniform(0.8, 1.2, len(times))
            fc = Forecast(price_buy=base.price_buy * scale, price_sell=base.price_sell * scale, source="bench")
            d = ctl.step(state, fc)
            rows.append({"call": k, "warm": bool(d.stats.warm), "controller_s": float(d.stats.wall_s),
                         "build_s": float(d.stats.build_s), "highs_s": float(d.stats.solve_s),
                         "check_s": float(d.stats.check_s), "iterations": int(d.stats.iterations),
                         "status": d.stats.status})
        warm = [r for r in rows[1:]]
        return {"strategy": label, "calls": rows, "sessions": len(state.evs),
                "first": rows[0], "resolve_controller_s": _stats([r["controller_s"] for r in warm]),
                "resolve_highs_s": _stats([r["highs_s"] for r in warm]),
                "warm_calls": int(sum(r["warm"] for r in warm)), "resolves": len(warm)}

    mono = run(None, load_formulation("station_v2g"), "monolithic (station_v2g)")
    with LocalProcessExecutor(workers) as ex:
        form = bench_formulation("station_v2g_aggregate", {"station": {"intervals": "none"}})
        hier = run(HierarchicalStrategy(form, executor=ex), form, "hierarchical (station_v2g_aggregate)")
    return {"status": "ok", "evs": n_evs, "horizon": horizon, "decision_time": "18:00",
            "runs": [mono, hier]}


def _two_feeder_instance(n_evs: int, seed: int) -> Any:
    """``synthetic_charging_instance`` on two synthetic 33-bus feeders (two regions)."""
    import pandas as pd

    from optev.data.feeder import Feeder
    from optev.data.synthetic import synthetic_charging_instance, synthetic_radial_feeder

    parts = [synthetic_radial_feeder(33, seed=seed + k) for k in range(2)]
    buses, lines, subs = [], [], []
    for k, f in enumerate(parts):
        tag = f"f{k}_"
        b = f.buses.copy()
        b["bus_id"] = tag + b["bus_id"]
        ln = f.lines.copy()
        for c in ("line_id", "from_bus", "to_bus"):
            ln[c] = tag + ln[c]
        s = f.substations.copy()
        s["substation_id"] = f"sub{k}"
        s["bus_id"] = tag + s["bus_id"]
        buses.append(b)
        lines.append(ln)
        subs.append(s)
    feeder = Feeder(base_mva=parts[0].base_mva, buses=pd.concat(buses, ignore_index=True),
                    lines=pd.concat(lines, ignore_index=True), substations=pd.concat(subs, ignore_index=True),
                    name="2x33")
    return synthetic_charging_instance(n_evs, feeder=feeder, n_stations=8, seed=seed)


STAGES: dict[str, Callable[..., dict[str, Any]]] = {"closed_loop": closed_loop, "resolve": resolve_scenario}
"""What a child process runs (``--child STAGE KWARGS``, :func:`run_child`)."""


# ------------------------------------------------------------------------------ parent side

def run_child(stage: str, timeout_s: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run one stage in a fresh Python process (its memory is its own); its result plus the
    parent's wall clock and the peak RSS of the largest process of the child's tree.

    A child that fails (out of memory, killed, timeout) gives ``{"status": "failed", ...}``
    instead of raising.
    """
    t0 = time.perf_counter()
    before = harness.peak_rss_mb(resource.RUSAGE_CHILDREN)
    try:
        proc = harness.run_child_process(harness.child_command(__file__, stage, kwargs), timeout_s=timeout_s,
                                         stderr=None if kwargs.get("log") else subprocess.PIPE)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timeout after {timeout_s} s", "stage": stage}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        return {"status": "failed", "reason": f"exit code {proc.returncode}", "stderr": tail, "stage": stage,
                "process_wall_s": wall}
    out = harness.child_result(proc.stdout)
    out["process_wall_s"] = wall
    after = harness.peak_rss_mb(resource.RUSAGE_CHILDREN)
    out["largest_process_maxrss_mb"] = after if after > before else None
    return out


def goals(loop: dict[str, Any]) -> dict[str, Any]:
    """Each goal of the issue against the closed loop's figures (None: not judged)."""
    if loop.get("status") != "ok":
        return {}
    mem_gb = loop["memory_mb"]["sampled_total_peak"] / 1e3
    day = loop["wall_s"]["total"]
    return {
        "step_median_s": {"goal": GOALS["step_median_s"], "value": loop["step_s"]["median"],
                          "met": loop["step_s"]["median"] <= GOALS["step_median_s"]},
        "day_s": {"goal": GOALS["day_s"], "value": day, "met": day <= GOALS["day_s"]},
        "peak_memory_gb": {"goal": GOALS["peak_memory_gb"], "value": mem_gb, "met": mem_gb <= GOALS["peak_memory_gb"]},
    }


def run_benchmarks(smoke: bool = False, *, only: str | None = None, log: bool = False,
                   **overrides: Any) -> dict[str, Any]:
    """Run the benchmarks (or their smoke version) and return the results as a dict.

    ``overrides`` replace entries of :data:`FULL` / :data:`SMOKE` (``steps``, ``start``,
    ``horizon``, ``workers``, ``refine_scope``, ``instance``, ``resolve_evs``, …).
    """
    cfg = dict(SMOKE if smoke else FULL)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    out: dict[str, Any] = {"mode": "smoke" if smoke else "full", "machine": harness.machine_record(),
                           "config": dict(cfg)}
    t0 = time.perf_counter()
    if only in (None, "loop"):
        if cfg["instance"] != "embedded" and not Path(cfg["instance"]).is_dir():
            out["closed_loop"] = {"status": "data not found",
                                  "reason": f"{cfg['instance']}: build it with sh instances/recipes/nanjing_100k.sh"}
        else:
            out["closed_loop"] = run_child("closed_loop", instance=cfg["instance"], steps=int(cfg["steps"]),
                                           start=str(cfg["start"]), horizon=str(cfg["horizon"]),
                                           workers=int(cfg["workers"]), refine_scope=str(cfg["refine_scope"]),
                                           aggregate=str(cfg["aggregate"]), batch_evs=int(cfg["batch_evs"]),
                                           limit_arrivals=bool(cfg.get("limit_arrivals", False)), log=log)
        out["goals"] = goals(out["closed_loop"]) if not smoke else {}
    if only in (None, "resolve"):
        out["resolve"] = run_child("resolve", n_evs=int(cfg["resolve_evs"]), repeats=int(cfg["resolve_repeats"]),
                                   horizon=str(cfg["resolve_horizon"]), workers=int(cfg["workers"]))
    out["elapsed_s"] = time.perf_counter() - t0
    harness.close_machine_record(out["machine"])
    return out


def _kwh(value: Any) -> str:
    return "n/a" if value is None else f"{value:+,.2f} kWh"


def markdown_tables(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    lines: list[str] = []
    loop = results.get("closed_loop")
    if loop is not None:
        if loop.get("status") != "ok":
            lines.append(f"closed loop: {loop.get('status')} ({loop.get('reason', '')})")
        else:
            w, s, m = loop["wall_s"], loop["summary"], loop["memory_mb"]
            lines += [
                f"Closed loop: {loop['evs']:,} EVs, {loop['stations']:,} stations, {loop['regions']} regions, "
                f"{loop['steps']} steps of 15 min from {loop['start'][:16]}, horizon {loop['horizon']} "
                f"({loop['horizon_steps']} steps), {loop['workers']} workers, refine_scope={loop['refine_scope']}, "
                f"aggregate={loop['aggregate']}, batch_evs={loop['batch_evs']}, "
                f"limit_arrivals={loop.get('limit_arrivals', False)}",
                "",
                "| figure | value |", "|---|---:|",
                f"| whole run (read + baseline + loop + AC check) | {w['total']:.0f} s ({w['total'] / 60:.1f} min) |",
                f"| read instance | {w['read']:.1f} s |",
                f"| baseline day + plant pre-roll | {w['before_loop']:.1f} s |",
                f"| control loop ({loop['steps']} steps) | {w['loop']:.1f} s |",
                f"| batched AC check + result tables | {w['after_loop']:.1f} s |",
                f"| step: median / p90 / max | {_t(loop['step_s']['median'])} / {_t(loop['step_s']['p90'])} / "
                f"{_t(loop['step_s']['max'])} |",
                f"| controller call: median / max | {_t(loop['controller_s']['median'])} / "
                f"{_t(loop['controller_s']['max'])} |",
                f"| HiGHS (all regions, region LP + station LPs): median / max | {_t(loop['highs_s']['median'])} / "
                f"{_t(loop['highs_s']['max'])} |",
                f"| slowest region in its worker: median / max | {_t(loop['region_s_max']['median'])} / "
                f"{_t(loop['region_s_max']['max'])} |",
                f"| re-dispatch of grid and DER (all regions): median / max; outcomes | "
                f"{_t(loop['redispatch_s_sum']['median'])} / {_t(loop['redispatch_s_sum']['max'])}; "
                + ", ".join(f"{k} {v}" for k, v in loop["redispatch_statuses"].items()) + " |",
                f"| plant + edge + bookkeeping per step: median | {_t(loop['plant_and_rest_s']['median'])} |",
                f"| peak memory: loop process / workers (sum) / total (sampled RSS) | "
                f"{m['loop_process_maxrss'] / 1e3:.2f}"
                f" / {m['sampled_workers_peak'] / 1e3:.2f} / {m['sampled_total_peak'] / 1e3:.2f} GB |",
                f"| peak import: uncontrolled → controlled | {s['baseline_peak_import_kw'] / 1e3:,.1f} → "
                f"{s['peak_import_kw'] / 1e3:,.1f} MW ({-s['peak_reduction_pct']:+.1f} %) |",
                f"| peak EV load: uncontrolled → controlled | {loop['ev_load_kw']['baseline_peak'] / 1e3:,.1f} → "
                f"{loop['ev_load_kw']['peak'] / 1e3:,.1f} MW ({-loop['ev_load_kw']['reduction_pct']:+.1f} %) |",
                f"| steps with import above the substations' total limit ({loop['import_limit']['kw'] / 1e3:,.0f} MW):"
                f" uncontrolled / controlled | {loop['import_limit']['baseline_steps_above']} / "
                f"{loop['import_limit']['steps_above']} |",
                f"| the plans' first steps: highest city import; steps above the limit | "
                f"{loop['import_limit']['plan_import_max_kw'] / 1e3:,.1f} MW; "
                f"{loop['import_limit']['plan_steps_above_limit']} |",
                f"| applied − planned first step, median / max: EV power; import | "
                f"{loop['import_limit']['ev_minus_plan_kw']['median'] / 1e3:,.1f} / "
                f"{loop['import_limit']['ev_minus_plan_kw']['max'] / 1e3:,.1f} MW; "
                f"{loop['import_limit']['import_minus_plan_kw']['median'] / 1e3:,.1f} / "
                f"{loop['import_limit']['import_minus_plan_kw']['max'] / 1e3:,.1f} MW |",
                f"| energy delivered in the day (realised, grid side): uncontrolled / controlled | "
                f"{s['baseline_energy_kwh'] / 1e3:,.0f} / {s['energy_delivered_kwh'] / 1e3:,.0f} MWh "
                f"(of which by EVs arriving during a step: {s['energy_local_kwh'] / 1e3:,.0f} MWh) |",
                f"| energy into the batteries of sessions that left: uncontrolled / controlled | "
                f"{s['baseline_energy_by_departure_kwh'] / 1e3:,.0f} / {s['energy_by_departure_kwh'] / 1e3:,.0f} MWh |",
                f"| energy still owed to sessions plugged in at the end (deferred past the day): uncontrolled / "
                f"controlled | {s['baseline_energy_deferred_kwh'] / 1e3:,.0f} / "
                f"{s['energy_deferred_kwh'] / 1e3:,.0f} MWh |",
                f"| V2G energy discharged | {s['energy_discharged_kwh'] / 1e3:,.1f} MWh |",
                f"| sessions worse off than uncontrolled (of {s['sessions_compared']:,} compared; beyond one "
                f"quantum-step) | {s['sessions_worse_than_uncontrolled']:,} (lowest "
                f"{_kwh(s['worse_than_uncontrolled_kwh'].get('min'))}, 1st percentile "
                f"{_kwh(s['worse_than_uncontrolled_kwh'].get('p1'))}) |",
                f"| accounting identities (station = Σ EVs, battery energy, import) | "
                f"{'hold' if s['identities_ok'] else 'BROKEN'} |",
                f"| steps excluded from comparisons (AC power flow not converged) | {len(s['excluded_steps'])} |",
                f"| sessions with shortfall (of {s['sessions_departed']:,} departed): uncontrolled / controlled | "
                f"{s['baseline_sessions_with_shortfall']:,} / {s['sessions_with_shortfall']:,} |",
                f"| … of them more than 1 kWh short: uncontrolled / controlled | "
                f"{loop['shortfall']['baseline']['above_1kwh']:,} / {loop['shortfall']['controlled']['above_1kwh']:,} |",
                f"| energy unmet at departure: uncontrolled / controlled | {s['baseline_energy_unmet_kwh']:,.0f} / "
                f"{s['energy_unmet_kwh']:,.0f} kWh |",
                f"| SOC-floor / limit violations; AC-check violation steps | {s['soc_floor_violations']} / "
                f"{s['limit_violations_total']}; {s['ac_violation_steps']} |",
                f"| steps with soft limits / failed | {s['soft_limit_steps']} / {s['failed_steps']} |",
            ]
        g = results.get("goals") or {}
        if g:
            lines += ["", "| goal | measured | met |", "|---|---:|---|"]
            for name, v in g.items():
                lines.append(f"| {name} ≤ {v['goal']:g} | {v['value']:.2f} | {'yes' if v['met'] else 'no'} |")
    res = results.get("resolve")
    if res is not None:
        lines.append("")
        if res.get("status") != "ok":
            lines.append(f"re-solve scenario: {res.get('status')} ({res.get('reason', '')})")
        else:
            lines += [f"Fixed-shape re-solves: {res['evs']:,} EVs, horizon {res['horizon']}, decision at "
                      f"{res['decision_time']}",
                      "", "| strategy | sessions | first call: controller / HiGHS (iterations) | re-solves: "
                      "controller / HiGHS, median (iterations) | warm |", "|---|---:|---:|---:|---:|"]
            for r in res["runs"]:
                its = int(np.median([c["iterations"] for c in r["calls"][1:]])) if r["calls"][1:] else 0
                lines.append(f"| {r['strategy']} | {r['sessions']} | {_t(r['first']['controller_s'])} / "
                             f"{_t(r['first']['highs_s'])} ({r['first']['iterations']}) | "
                             f"{_t(r['resolve_controller_s']['median'])} / {_t(r['resolve_highs_s']['median'])} "
                             f"({its}) | {r['warm_calls']}/{r['resolves']} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (after ``--smoke`` and ``--out``)."""
    parser.add_argument("--only", choices=("loop", "resolve"), help="run one benchmark only")
    parser.add_argument("--instance", help="instance folder (default instances/nanjing_100k; 'embedded')")
    parser.add_argument("--steps", type=int, help="control steps (default 96)")
    parser.add_argument("--start", help="first step, HH:MM (default 00:00)")
    parser.add_argument("--horizon", help="controller horizon (default 8h)")
    parser.add_argument("--workers", type=int, help="worker processes (default 2)")
    parser.add_argument("--refine-scope", choices=("all", "first_step"), help="station level scope")
    parser.add_argument("--aggregate", choices=("station", "bus"), help="region LP over station or bus aggregates")
    parser.add_argument("--batch-evs", type=int, help="sessions per station-problem LP (default 250)")
    parser.add_argument("--limit-arrivals", action="store_true", default=None,
                        help="EVs arriving during a step share the power the plan reserved (Controller limit_arrivals)")
    parser.add_argument("--quiet", action="store_true", help="no per-step progress on stderr")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_benchmarks` for the parsed command line."""
    return run_benchmarks(args.smoke, only=args.only, log=not args.quiet, instance=args.instance, steps=args.steps,
                          start=args.start, horizon=args.horizon, workers=args.workers,
                          refine_scope=args.refine_scope, aggregate=args.aggregate, batch_evs=args.batch_evs,
                          limit_arrivals=args.limit_arrivals)


COMMAND = harness.Command(__doc__, add_arguments, run_from_args, markdown_tables,
                          smoke_help="tiny version on the embedded instance (seconds)", stages=STAGES)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); the tables on stdout, the results as JSON with ``--out``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())

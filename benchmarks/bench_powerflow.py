"""Power-flow benchmark: batched optev ``run_powerflow`` against pandapower ``runpp``.

Run from the repository root::

    python benchmarks/bench_powerflow.py              # full run (~20 s on 2 cores)
    python benchmarks/bench_powerflow.py --smoke      # tiny version, a few seconds
    python benchmarks/bench_powerflow.py --out results.json
    python benchmarks/bench_powerflow.py --only powerflow --cases case69 --steps 96
    python benchmarks/bench_powerflow.py --only synthetic --only v2sim

What is measured (see ``benchmarks/README.md`` for the method and the figures):

1. ``case33bw``, ``case69``, ``case141`` (``../shared/reference_feeders``) at 96 and
   10,000 snapshots. Snapshot ``s`` loads every bus at ``nominal × f_s × e_{s,b}`` with
   ``f_s ~ U(0.3, 1.2)`` and per-bus noise ``e_{s,b} ~ U(0.95, 1.05)`` (seed fixed).
   optev solves all snapshots in one ``run_powerflow`` call (network compilation and
   result building included); pandapower ``runpp`` (Newton-Raphson, numba, warm start
   ``init="results"``, ``tolerance_mva=1e-9``) solves them one by one, on the same
   net object, updating ``net.load`` between calls (the update is not timed). At
   10,000 snapshots pandapower solves only the first ``FULL["pp_subset"]`` (200) of them. The
   largest complex voltage difference ``max |V_optev − V_pp|`` (p.u.) over the
   snapshots both solved must be ≤ ``DV_LIMIT_PU``.
2. One snapshot of a 10,000-bus synthetic radial feeder, with and without network
   compilation (``compile_network``).
3. Reading the V2Sim Nanjing case with ``optev.io.read_v2sim``.

Timing: ``time.perf_counter``; every solver is warmed up first (numba compilation and
caches excluded). optev figures are the **median** of ``repeats`` timed calls;
pandapower figures are the **median** of the per-call times over the snapshots it
solved (the mean is in the JSON too).

The module is importable: :func:`run_benchmarks` returns the results as a dict,
:func:`markdown_table` formats them; ``tests/test_benchmarks_smoke.py`` runs the smoke
mode through these functions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file (tests/paths.py): not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

SHARED = harness.SHARED
_mark = harness.goal_mark  # goals' verdicts in the tables

DV_LIMIT_PU = 1e-6
"""Largest accepted |V_optev − V_pandapower| on any bus of any snapshot, p.u."""

PP_TOLERANCE_MVA = 1e-9
"""pandapower's Newton-Raphson mismatch tolerance (MVA)."""

SCALE_RANGE = (0.3, 1.2)
"""Range of the per-snapshot load factor."""

NOISE_RANGE = (0.95, 1.05)
"""Range of the per-bus, per-snapshot multiplicative noise."""

SEED = 20260807

GOALS = {
    "speedup_min": 300.0,          # optev per-snapshot time ≥ 300× faster than pandapower
    "dv_max_pu": DV_LIMIT_PU,      # voltages equal within 1e-6 p.u.
    "synthetic_snapshot_s": 0.050,  # one snapshot of a 10,000-bus feeder < 50 ms
    "v2sim_read_s": 5.0,           # reading the Nanjing case < 5 s
}

FULL = {
    "cases": ["case33bw", "case69", "case141"],
    "steps": [96, 10_000],
    "pp_subset": 200,          # pandapower solves at most this many snapshots per run
    "optev_repeats": {96: 21, 10_000: 9},
    "synthetic_buses": 10_000,
    "synthetic_repeats": 11,
    "v2sim_case": "ux_Nanjing",
    "v2sim_repeats": 3,
}

SMOKE = {
    "cases": ["case33bw"],
    "steps": [5],
    "pp_subset": 2,
    "optev_repeats": {5: 3},
    "synthetic_buses": 500,
    "synthetic_repeats": 3,
    "v2sim_case": None,        # not read in smoke mode (see bench_v2sim for the status values)
    "v2sim_repeats": 1,
}


# -- helpers -------------------------------------------------------------------------------

def _timeit(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    """Call ``fn`` ``repeats`` times; return the wall-clock times (s) and the last result."""
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def make_snapshots(feeder: Any, n_steps: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Load snapshots (steps × buses, kW and kvar) in the feeder's bus order.

    ``p[s, b] = p_nominal[b] · f_s · e_{s,b}`` with ``f_s ~ U(SCALE_RANGE)`` and
    ``e_{s,b} ~ U(NOISE_RANGE)``; the same factors scale ``q``.
    """
    rng = np.random.default_rng(seed)
    n_bus = len(feeder.buses)
    factor = rng.uniform(*SCALE_RANGE, size=(n_steps, 1)) * rng.uniform(*NOISE_RANGE, size=(n_steps, n_bus))
    p = factor * feeder.buses["p_load_kw"].to_numpy(float)
    q = factor * feeder.buses["q_load_kvar"].to_numpy(float)
    return p, q


def _with_numba_threads(n: int, fn: Callable[[], Any]) -> Any:
    """Call ``fn`` with numba limited to ``n`` threads (None if numba is missing)."""
    try:
        import numba
    except ImportError:
        return None
    before = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        return fn()
    finally:
        numba.set_num_threads(before)


# -- pandapower ------------------------------------------------------------------------------

def feeder_to_pandapower(feeder: Any) -> Any:
    """Build a pandapower net from an optev :class:`~optev.data.Feeder` (already converted units).

    Bus ``k`` of the net is ``feeder.bus_ids[k]``; one load per bus (``p_mw = p_kw / 1000``);
    lines in ohm as 1-km lines with ``c_nf_per_km`` from ``b_us`` (zero for the MATPOWER
    distribution cases) and no thermal limit; bus shunts as pandapower shunts; an ext_grid
    at each substation bus. Transformers are not converted (the benchmark feeders have none).
    """
    import pandapower as pp

    if len(feeder.transformers):
        raise NotImplementedError("feeder_to_pandapower does not convert transformers")
    net = pp.create_empty_network(name=feeder.name, sn_mva=float(feeder.base_mva), f_hz=50.0)
    buses = feeder.buses
    index = feeder.bus_index()
    n = len(buses)
    pp.create_buses(net, n, vn_kv=buses["base_kv"].to_numpy(float), index=np.arange(n),
                    name=buses["bus_id"].astype(str).tolist())
    lines = feeder.lines
    b_us = lines["b_us"].to_numpy(float) if "b_us" in lines else np.zeros(len(lines))
    in_service = lines["in_service"].to_numpy(bool) if "in_service" in lines else np.ones(len(lines), bool)
    pp.create_lines_from_parameters(
        net, [index[b] for b in lines["from_bus"]], [index[b] for b in lines["to_bus"]], length_km=1.0,
        r_ohm_per_km=lines["r_ohm"].to_numpy(float), x_ohm_per_km=lines["x_ohm"].to_numpy(float),
        c_nf_per_km=b_us * 1e3 / (2 * np.pi * 50.0), max_i_ka=1e6, in_service=in_service,
        name=lines["line_id"].astype(str).tolist())
    pp.create_loads(net, np.arange(n), p_mw=buses["p_load_kw"].to_numpy(float) / 1e3,
                    q_mvar=buses["q_load_kvar"].to_numpy(float) / 1e3)
    g = buses["g_shunt_kw"].to_numpy(float) if "g_shunt_kw" in buses else np.zeros(n)
    b = buses["b_shunt_kvar"].to_numpy(float) if "b_shunt_kvar" in buses else np.zeros(n)
    for k in np.flatnonzero((g != 0) | (b != 0)):
        # optev: g_shunt_kw drawn, b_shunt_kvar injected at 1 p.u.; pandapower: p_mw, q_mvar consumed
        pp.create_shunt(net, int(k), p_mw=g[k] / 1e3, q_mvar=-b[k] / 1e3)
    for _, sub in feeder.substations.iterrows():
        pp.create_ext_grid(net, index[sub["bus_id"]], vm_pu=float(sub["vm_pu"]),
                           va_degree=float(sub.get("va_deg", 0.0)))
    return net


def _pp_voltage(net: Any) -> np.ndarray:
    vm = net.res_bus["vm_pu"].to_numpy(float)
    va = np.deg2rad(net.res_bus["va_degree"].to_numpy(float))
    return vm * np.exp(1j * va)


def _optev_voltage(res: Any) -> np.ndarray:
    return res.vm_pu * np.exp(1j * np.deg2rad(res.va_deg))


def run_pandapower(net: Any, p_kw: np.ndarray, q_kvar: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Solve each snapshot with ``runpp`` (warm start from the previous result).

    Returns the complex bus voltages (steps × buses, NaN where ``runpp`` did not
    converge) and the time of each ``runpp`` call (s). Only ``runpp`` is timed.
    """
    import pandapower as pp

    v = np.full(p_kw.shape, np.nan, dtype=complex)
    times = []
    for s in range(p_kw.shape[0]):
        net.load["p_mw"] = p_kw[s] / 1e3
        net.load["q_mvar"] = q_kvar[s] / 1e3
        t0 = time.perf_counter()
        try:
            pp.runpp(net, algorithm="nr", init="results", tolerance_mva=PP_TOLERANCE_MVA, numba=True)
        except pp.LoadflowNotConverged:
            times.append(time.perf_counter() - t0)
            continue
        times.append(time.perf_counter() - t0)
        v[s] = _pp_voltage(net)
    return v, times


def check_conversion(feeder: Any, net: Any) -> float:
    """max |V_optev − V_pp| (p.u.) at the feeder's nominal load, solved from a flat start."""
    import pandapower as pp

    from optev.powerflow import run_powerflow

    net.load["p_mw"] = feeder.buses["p_load_kw"].to_numpy(float) / 1e3
    net.load["q_mvar"] = feeder.buses["q_load_kvar"].to_numpy(float) / 1e3
    pp.runpp(net, algorithm="nr", init="flat", tolerance_mva=PP_TOLERANCE_MVA, numba=True)
    return float(np.abs(_optev_voltage(run_powerflow(feeder))[0] - _pp_voltage(net)).max())


# -- benchmarks ------------------------------------------------------------------------------

def bench_case(case: str, n_steps: int, *, pp_subset: int, repeats: int, seed: int = SEED) -> dict[str, Any]:
    """optev (all ``n_steps`` snapshots, batched) vs pandapower (first ``pp_subset``) on one feeder."""
    from optev.io import read_matpower
    from optev.powerflow import compile_network, run_powerflow

    feeder = read_matpower(SHARED / "reference_feeders" / f"{case}.m")
    p, q = make_snapshots(feeder, n_steps, seed)

    # warm-up at full size: numba compilation (or cache load), and the memory allocator, whose
    # first large allocations in a fresh process are page-faulted in (2–4× slower calls)
    run_powerflow(feeder, p, q)
    times, res = _timeit(lambda: run_powerflow(feeder, p, q), repeats)
    v_optev = _optev_voltage(res)
    optev_step = statistics.median(times) / n_steps
    network = compile_network(feeder)
    pre_times, _ = _timeit(lambda: run_powerflow(feeder, p, q, network=network), repeats)
    one_thread = _with_numba_threads(1, lambda: _timeit(lambda: run_powerflow(feeder, p, q), repeats)[0])

    net = feeder_to_pandapower(feeder)
    nominal_dv = check_conversion(feeder, net)  # also the pandapower warm-up (numba compilation)
    n_pp = min(pp_subset, n_steps)
    v_pp, pp_times = run_pandapower(net, p[:n_pp], q[:n_pp])
    pp_step = statistics.median(pp_times)

    both = res.converged[:n_pp] & np.isfinite(v_pp).all(axis=1)
    dv = float(np.abs(v_optev[:n_pp][both] - v_pp[both]).max()) if both.any() else float("nan")
    dvm = float(np.abs(np.abs(v_optev[:n_pp][both]) - np.abs(v_pp[both])).max()) if both.any() else float("nan")
    return {
        "case": case, "n_bus": len(feeder.buses), "steps": n_steps,
        "optev_converged": int(res.converged.sum()), "optev_iterations_max": int(res.iterations.max()),
        "optev_batch_s": {"median": statistics.median(times), "best": min(times), "all": times},
        "optev_per_step_s": optev_step,
        "optev_precompiled_batch_s": pre_times, "optev_1thread_batch_s": one_thread,
        "optev_precompiled_per_step_s": statistics.median(pre_times) / n_steps,
        "optev_1thread_per_step_s": statistics.median(one_thread) / n_steps if one_thread else None,
        "pp_steps": n_pp, "pp_converged": int(np.isfinite(v_pp).all(axis=1).sum()),
        "pp_per_step_s": pp_step, "pp_per_step_mean_s": statistics.fmean(pp_times),
        "pp_per_step_best_s": min(pp_times),
        "speedup": pp_step / optev_step,
        "speedup_precompiled": pp_step * n_steps / statistics.median(pre_times),
        "speedup_1thread": pp_step * n_steps / statistics.median(one_thread) if one_thread else None,
        "compared_steps": int(both.sum()),
        "max_dv_pu": dv, "max_dvm_pu": dvm, "nominal_dv_pu": nominal_dv,
        "dv_ok": bool(both.all() and dv <= DV_LIMIT_PU and nominal_dv <= DV_LIMIT_PU),
    }


def bench_synthetic(n_bus: int, *, repeats: int, seed: int = 0) -> dict[str, Any]:
    """One snapshot (nominal loads) of a synthetic radial feeder, with and without compilation."""
    from optev.data.synthetic import synthetic_radial_feeder
    from optev.powerflow import compile_network, run_powerflow

    feeder = synthetic_radial_feeder(n_bus, seed=seed)
    run_powerflow(feeder)  # warm-up
    with_compile, res = _timeit(lambda: run_powerflow(feeder), repeats)
    compile_only, net = _timeit(lambda: compile_network(feeder), repeats)
    solve_only, res2 = _timeit(lambda: run_powerflow(feeder, network=net), repeats)
    return {
        "n_bus": n_bus, "repeats": repeats, "converged": bool(res.converged.all() and res2.converged.all()),
        "iterations": int(res.iterations[0]), "vmin_pu": float(np.nanmin(res.vm_pu)),
        "with_compile_s": statistics.median(with_compile), "with_compile_best_s": min(with_compile),
        "compile_s": statistics.median(compile_only),
        "without_compile_s": statistics.median(solve_only), "without_compile_best_s": min(solve_only),
    }


def bench_v2sim(case: str | None, *, repeats: int) -> dict[str, Any]:
    """Time ``optev.io.read_v2sim`` on a V2Sim case folder.

    ``status`` is ``"ok"``, ``"skipped"`` (``case`` is None), ``"data not found"`` (no
    such folder) or ``"not available"`` (the reader raises ``NotImplementedError``).
    """
    if case is None:
        return {"case": None, "status": "skipped"}
    path = SHARED / "v2sim" / case
    if not path.is_dir():
        return {"case": case, "status": "data not found", "path": str(path)}
    from optev.io import read_v2sim

    try:
        t0 = time.perf_counter()
        inst = read_v2sim(path)
        first = time.perf_counter() - t0
    except NotImplementedError as exc:
        return {"case": case, "status": "not available", "error": str(exc)}
    times, inst = _timeit(lambda: read_v2sim(path), repeats)
    return {
        "case": case, "status": "ok", "first_s": first, "read_s": statistics.median(times), "best_s": min(times),
        "repeats": repeats, "n_bus": len(inst.feeder.buses), "n_stations": len(inst.stations),
        "n_road_nodes": len(inst.road.nodes),
    }


BENCHMARKS = ("powerflow", "synthetic", "v2sim")
"""Names of the three benchmarks (``--only``)."""


def run_benchmarks(smoke: bool = False, *, only: tuple[str, ...] = BENCHMARKS, cases: list[str] | None = None,
                   steps: list[int] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark (or its smoke version) and return the results as a dict.

    ``only`` selects among :data:`BENCHMARKS`; ``cases`` and ``steps`` override the
    feeders and snapshot counts of the power-flow comparison.
    """
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; valid: {BENCHMARKS}")
    cfg = dict(SMOKE if smoke else FULL)
    cfg["cases"] = cases or cfg["cases"]
    cfg["steps"] = steps or cfg["steps"]
    repeats = cfg["optev_repeats"]
    cfg["optev_repeats"] = {n: repeats.get(n, 21 if n <= 1000 else 9) for n in cfg["steps"]}
    say = log or (lambda _msg: None)
    out: dict[str, Any] = {"mode": "smoke" if smoke else "full", "machine": harness.machine_record(), "config": {
        "benchmarks": list(only), "seed": SEED, "scale_range": SCALE_RANGE, "noise_range": NOISE_RANGE,
        "pp_subset": cfg["pp_subset"], "pp_tolerance_mva": PP_TOLERANCE_MVA,
        "pp_options": {"algorithm": "nr", "init": "results", "numba": True}, "dv_limit_pu": DV_LIMIT_PU,
        "optev_repeats": {str(k): v for k, v in cfg["optev_repeats"].items()}, "statistic": "median"},
        "goals": GOALS, "cases": [], "synthetic": None, "v2sim": None}
    t_start = time.perf_counter()
    if "powerflow" in only:
        for case in cfg["cases"]:
            for n_steps in cfg["steps"]:
                say(f"{case}: {n_steps} snapshots ...")
                row = bench_case(case, n_steps, pp_subset=cfg["pp_subset"], repeats=cfg["optev_repeats"][n_steps])
                out["cases"].append(row)
                say(f"  optev {row['optev_per_step_s'] * 1e6:.2f} µs/snapshot, pandapower "
                    f"{row['pp_per_step_s'] * 1e3:.2f} ms/snapshot, speed-up {row['speedup']:.0f}×, "
                    f"max|ΔV| {row['max_dv_pu']:.1e}")
    if "synthetic" in only:
        say(f"synthetic {cfg['synthetic_buses']}-bus feeder ...")
        out["synthetic"] = bench_synthetic(cfg["synthetic_buses"], repeats=cfg["synthetic_repeats"])
    if "v2sim" in only:
        say(f"V2Sim {cfg['v2sim_case']} ...")
        out["v2sim"] = bench_v2sim(cfg["v2sim_case"], repeats=cfg["v2sim_repeats"])
    out["elapsed_s"] = time.perf_counter() - t_start
    harness.close_machine_record(out["machine"])
    out["goals_met"] = goals_met(out)
    return out


def goals_met(results: dict[str, Any]) -> dict[str, bool | None]:
    """Which goals the results meet (None: not measured)."""
    cases = results["cases"]
    syn = results.get("synthetic") or {}
    v2 = results.get("v2sim") or {}
    full_size = syn.get("n_bus") == 10_000
    timed = bool(cases) and results.get("mode") == "full"  # speed goals are judged on full runs only
    return {
        "speedup": all(c["speedup"] >= GOALS["speedup_min"] for c in cases) if timed else None,
        "speedup_precompiled": (all(c["speedup_precompiled"] >= GOALS["speedup_min"] for c in cases)
                                if timed else None),
        "dv": all(c["dv_ok"] for c in cases) if cases else None,
        "synthetic_snapshot": (syn["with_compile_s"] < GOALS["synthetic_snapshot_s"]) if full_size else None,
        "v2sim_read": (v2["read_s"] < GOALS["v2sim_read_s"]) if v2.get("status") == "ok" else None,
    }


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def markdown_table(results: dict[str, Any]) -> str:
    """The results as Markdown tables (per-snapshot times, synthetic feeder, V2Sim read, goals)."""
    lines: list[str] = []
    if results["cases"]:
        lines += [
            "| case | buses | snapshots | optev / snapshot | pandapower / snapshot (snapshots solved) | speed-up "
            "| speed-up, precompiled network | speed-up, 1 numba thread | max abs(ΔV) p.u. |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in results["cases"]:
            one = f"{c['speedup_1thread']:,.0f}×" if c.get("speedup_1thread") else "–"
            lines.append(
                f"| {c['case']} | {c['n_bus']} | {c['steps']:,} | {_fmt_time(c['optev_per_step_s'])} "
                f"| {_fmt_time(c['pp_per_step_s'])} ({c['pp_steps']}) | {c['speedup']:,.0f}× "
                f"| {c['speedup_precompiled']:,.0f}× | {one} | {c['max_dv_pu']:.1e} |")
        lines.append("")
    syn = results.get("synthetic")
    if syn:
        lines += [
            "| single snapshot | buses | with compilation | without compilation | compilation alone |",
            "|---|---:|---:|---:|---:|",
            f"| synthetic radial feeder | {syn['n_bus']:,} | {_fmt_time(syn['with_compile_s'])} "
            f"| {_fmt_time(syn['without_compile_s'])} | {_fmt_time(syn['compile_s'])} |",
            "",
        ]
    v2 = results.get("v2sim")
    if v2:
        lines += ["| V2Sim case | status | read time (median) | first read |", "|---|---|---:|---:|"]
        if v2.get("status") == "ok":
            lines.append(f"| {v2['case']} | ok | {_fmt_time(v2['read_s'])} | {_fmt_time(v2['first_s'])} |")
        else:
            lines.append(f"| {v2.get('case')} | {v2['status']} | – | – |")
        lines.append("")
    g = results["goals_met"]
    cases = results["cases"]
    lowest = f"lowest {min(c['speedup'] for c in cases):,.0f}×" if cases else "–"
    lowest_pre = f"lowest {min(c['speedup_precompiled'] for c in cases):,.0f}×" if cases else "–"
    largest_dv = f"largest {max(c['max_dv_pu'] for c in cases):.1e} p.u." if cases else "–"
    snapshot = f"{syn['n_bus']:,} buses: {_fmt_time(syn['with_compile_s'])}" if syn else "–"
    read = _fmt_time(v2["read_s"]) if v2 and v2.get("status") == "ok" else "–"
    lines += [
        "| goal | measured | result |",
        "|---|---:|---|",
        f"| ≥ {GOALS['speedup_min']:.0f}× faster per snapshot than pandapower (every row, one call "
        f"including compilation) | {lowest} | {_mark(g['speedup'])} |",
        f"| ≥ {GOALS['speedup_min']:.0f}× faster per snapshot than pandapower (every row, precompiled network) "
        f"| {lowest_pre} | {_mark(g['speedup_precompiled'])} |",
        f"| voltages equal within {GOALS['dv_max_pu']:g} p.u. | {largest_dv} | {_mark(g['dv'])} |",
        f"| 10,000-bus snapshot < {GOALS['synthetic_snapshot_s'] * 1e3:.0f} ms (with compilation) "
        f"| {snapshot} | {_mark(g['synthetic_snapshot'])} |",
        f"| Nanjing read < {GOALS['v2sim_read_s']:.0f} s | {read} | {_mark(g['v2sim_read'])} |",
    ]
    return "\n".join(lines)


markdown_tables = markdown_table
"""What the script prints for ``results`` (:func:`markdown_table`; the name ``benchmarks/quote.py`` uses)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (after ``--smoke`` and ``--out``)."""
    parser.add_argument("--only", action="append", choices=BENCHMARKS,
                        help="run only this benchmark (repeatable; default: all three)")
    parser.add_argument("--cases", help="comma-separated MATPOWER cases of the power-flow comparison "
                        "(default: case33bw,case69,case141)")
    parser.add_argument("--steps", help="comma-separated snapshot counts (default: 96,10000)")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_benchmarks` for the parsed command line."""
    return run_benchmarks(args.smoke, only=tuple(args.only or BENCHMARKS),
                          cases=args.cases.split(",") if args.cases else None,
                          steps=[int(x) for x in args.steps.split(",")] if args.steps else None, log=harness.progress)


def exit_code(results: dict[str, Any]) -> int:
    """1 when optev and pandapower disagree by more than :data:`DV_LIMIT_PU` in some case, else 0."""
    return 0 if all(c["dv_ok"] for c in results["cases"]) else 1


COMMAND = harness.Command(__doc__, add_arguments, run_from_args, markdown_table, exit_code=exit_code)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); the tables on stdout, the results as JSON with ``--out``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())

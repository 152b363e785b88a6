"""City-fleet benchmark: ``optev generate`` and ``optev simulate`` on V2Sim's Nanjing case.

Run from the repository root::

    python benchmarks/bench_fleet.py                        # headline + scaling (10k/100k/1M EVs), minutes
    python benchmarks/bench_fleet.py --smoke                # tiny version on ux_12nodes, seconds
    python benchmarks/bench_fleet.py --out fleet.json       # also write the results as JSON
    python benchmarks/bench_fleet.py --sizes 10000,100000   # scaling table for these sizes only

It prints the scaling table in Markdown (as in ``benchmarks/README.md`` (section "City fleet")).

What is measured (figures and method in ``benchmarks/README.md`` (section "City fleet")):

1. **generate** — what ``optev generate --case ux_Nanjing --evs N --seed 1 --out DIR`` does:
   read the V2Sim case, generate the fleet (vehicle types, EVs, routed trips, private
   chargers), simulate its uncontrolled day (the baseline whose sessions are stored),
   build the ``sessions`` table, write the instance folder.
2. **simulate** — what ``optev simulate DIR --out OUT`` does: read the instance folder,
   simulate the uncontrolled day with the road network's router, aggregate per feeder,
   write sessions, EV energy accounts, station series, feeder load and summary.

Each stage runs in a fresh Python process (this script with ``--child``), so that its
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the child at its
end: the high-water mark of the whole process, imports included) is its own. Times are
``time.perf_counter`` per step inside the child, plus the parent's wall clock of the
whole child process (interpreter start and imports included). One run per size; on a
machine shared with other jobs the times vary by tens of per cent between runs, the
memory does not (see benchmarks/README.md, "City fleet").

The module is importable: :func:`run_benchmarks` returns the results as a dict and
:func:`markdown_tables` formats them; ``tests/test_benchmarks_fleet_smoke.py`` runs the
smoke mode through these functions (no timing assertions).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file (tests/paths.py): not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

SHARED = harness.SHARED

SEED = 1
"""Seed of every generated fleet (as ``instances/recipes/nanjing_100k.sh``)."""

GOALS = {"generate_plus_simulate_s": 120.0, "peak_rss_gb": 4.0, "evs": 100_000}
"""Issue 4: generate + simulate one uncontrolled day of 100,000 EVs on Nanjing in ≤ 120 s and
≤ 4 GB peak memory on 2 cores."""

FULL = {"case": "ux_Nanjing", "headline_evs": 100_000, "sizes": [10_000, 100_000, 1_000_000]}
SMOKE = {"case": "ux_12nodes", "headline_evs": 100, "sizes": [50, 100]}


# ------------------------------------------------------------------------------ child stages

def stage_generate(case: str, evs: int, seed: int, out: str) -> dict[str, Any]:
    """``optev generate`` in this process, timed by step."""
    t0 = time.perf_counter()
    from optev.io import read, write_instance
    from optev.mobility.build import generate_instance
    t_import = time.perf_counter() - t0

    t0 = time.perf_counter()
    inst = read(case)
    t_read = time.perf_counter() - t0
    gen = generate_instance(inst, evs, seed=seed, case=Path(case).name)
    t0 = time.perf_counter()
    write_instance(gen.instance, out, overwrite=True)
    t_write = time.perf_counter() - t0
    steps = {"import": t_import, "read": t_read, **gen.timings_s, "write": t_write}
    base = gen.baseline.summary() if gen.baseline is not None else {}
    size = sum(p.stat().st_size for p in Path(out).iterdir())
    return {"steps_s": steps, "total_s": sum(v for k, v in steps.items() if k != "import"),
            "peak_rss_mb": harness.peak_rss_mb(), "evs": len(gen.instance.evs), "trips": len(gen.instance.trips),
            "sessions": len(gen.instance.sessions), "stations": len(gen.instance.stations),
            "chargers_public": int(gen.instance.stations.loc[gen.instance.stations["kind"].isin(["fcs", "scs"]),
                                                             "n_chargers"].sum()),
            "rejections": base.get("rejections"), "folder_mb": size / 1e6}


def stage_simulate(instance: str, out: str) -> dict[str, Any]:
    """``optev simulate INSTANCE --out OUT`` in this process, timed by step."""
    t0 = time.perf_counter()
    from optev.io import read
    from optev.mobility.build import GENERATE_KEY, feeder_load, feeder_peaks, simulation_summary, write_simulation
    from optev.mobility.core import PlantConfig
    from optev.mobility.routing import Router
    from optev.mobility.simulate import simulate_day
    t_import = time.perf_counter() - t0

    t0 = time.perf_counter()
    inst = read(instance)
    t_read = time.perf_counter() - t0
    seed = int(inst.metadata.extra.get(GENERATE_KEY, {}).get("seed", 0))
    t0 = time.perf_counter()
    res = simulate_day(inst, config=PlantConfig(seed=seed), router=Router(inst.road))
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    load = feeder_load(res, inst)
    summary = simulation_summary(res, feeder_peaks(load))
    t_feeders = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_simulation(res, load, summary, out)
    t_write = time.perf_counter() - t0
    steps = {"import": t_import, "read": t_read, "simulate": t_sim, "feeders": t_feeders, "write": t_write}
    return {"steps_s": steps, "total_s": sum(v for k, v in steps.items() if k != "import"),
            "peak_rss_mb": harness.peak_rss_mb(), "sessions": summary["sessions"], "rejections": summary["rejections"],
            "peak_load_kw": summary["peak_load_kw"], "fcs_wait_p95_min": summary["fcs_wait_p95_min"]}


STAGES: dict[str, Callable[..., dict[str, Any]]] = {"generate": stage_generate, "simulate": stage_simulate}
"""What a child process runs (``--child STAGE KWARGS``, :func:`run_child`)."""


def run_child(stage: str, timeout_s: float | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run one stage in a fresh Python process; its result plus the parent's wall clock.

    A child that fails (out of memory, killed, timeout) gives ``{"status": "failed", ...}``
    with the reason instead of raising, so that a scaling run reports what happened.
    """
    t0 = time.perf_counter()
    try:
        proc = harness.run_child_process(harness.child_command(__file__, stage, kwargs), timeout_s=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timeout after {timeout_s:g} s", "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"status": "failed", "reason": f"exit code {proc.returncode}: {tail}", "wall_s": wall}
    return {"status": "ok", **harness.child_result(proc.stdout), "wall_s": wall}


# ------------------------------------------------------------------------------ benchmark

def bench_size(case: Path, evs: int, work: Path, *, timeout_s: float | None = None) -> dict[str, Any]:
    """generate then simulate ``evs`` EVs on ``case`` (each in its own process)."""
    inst = work / f"inst_{evs}"
    gen = run_child("generate", timeout_s, case=str(case), evs=evs, seed=SEED, out=str(inst))
    row: dict[str, Any] = {"evs": evs, "generate": gen}
    if gen["status"] == "ok":
        row["simulate"] = run_child("simulate", timeout_s, instance=str(inst), out=str(work / f"sim_{evs}"))
    else:
        row["simulate"] = {"status": "skipped", "reason": "generate failed"}
    ok = gen["status"] == "ok" and row["simulate"]["status"] == "ok"
    row["generate_plus_simulate_s"] = gen["total_s"] + row["simulate"]["total_s"] if ok else None
    row["generate_plus_simulate_wall_s"] = gen["wall_s"] + row["simulate"]["wall_s"] if ok else None
    row["peak_rss_mb"] = max(gen["peak_rss_mb"], row["simulate"]["peak_rss_mb"]) if ok else None
    shutil.rmtree(inst, ignore_errors=True)
    shutil.rmtree(work / f"sim_{evs}", ignore_errors=True)
    return row


def run_benchmarks(*, smoke: bool = False, sizes: list[int] | None = None, timeout_s: float | None = None,
                   work_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the benchmark; the results as a JSON-ready dict.

    Parameters
    ----------
    smoke : bool
        Tiny run on ux_12nodes (seconds), for the test suite.
    sizes : list of int, optional
        Fleet sizes of the scaling table (default 10,000 / 100,000 / 1,000,000; smoke 50 / 100).
        The headline (100,000 EVs) is the scaling row of that size.
    timeout_s : float, optional
        Give up a stage after this long (reported as failed).
    work_dir : path, optional
        Where instances are written (default: a temporary folder, removed at the end).
    """
    config = SMOKE if smoke else FULL
    case = SHARED / "v2sim" / config["case"]
    if not case.exists():
        return {"mode": "smoke" if smoke else "full", "status": "data not found", "case": str(case)}
    sizes = list(sizes) if sizes else list(config["sizes"])
    headline = config["headline_evs"]
    if headline not in sizes:
        sizes.append(headline)
    sizes = sorted(set(sizes))
    tmp = tempfile.mkdtemp(prefix="optev_bench_fleet_", dir=work_dir)
    try:
        rows = [bench_size(case, n, Path(tmp), timeout_s=timeout_s) for n in sizes]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    head = next(r for r in rows if r["evs"] == headline)
    met = None
    if not smoke and head["generate_plus_simulate_s"] is not None:
        met = {"time": head["generate_plus_simulate_wall_s"] <= GOALS["generate_plus_simulate_s"],
               "memory": head["peak_rss_mb"] / 1e3 <= GOALS["peak_rss_gb"]}
    return {"mode": "smoke" if smoke else "full", "status": "ok", "case": config["case"], "seed": SEED,
            "machine": harness.machine_record(), "goals": GOALS, "headline": head, "scaling": rows, "goals_met": met,
            "commands": {"generate": f"optev generate --case ../shared/v2sim/{config['case']} --evs N --seed {SEED} "
                                     "--out DIR",
                         "simulate": "optev simulate DIR --out OUT"}}


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown_tables(results: dict[str, Any]) -> str:
    """The scaling table (and the goal line) in Markdown."""
    lines = [f"Case {results['case']}, seed {results['seed']}; {results['machine']['nproc']} cores "
             f"({results['machine']['cpu_model']}), Python {results['machine']['python']}.", "",
             "| EVs | trips | sessions | generate: fleet | baseline day | sessions | write | generate total "
             "| generate peak RSS | simulate: read | day | write | simulate total | simulate peak RSS "
             "| generate + simulate (wall) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results["scaling"]:
        g, s = r["generate"], r["simulate"]
        if g["status"] != "ok":
            lines.append(f"| {r['evs']:,} | generate failed: {g['reason']} |" + " |" * 13)
            continue
        gs = g["steps_s"]
        cells = [f"{r['evs']:,}", f"{g['trips']:,}", f"{g['sessions']:,}", f"{gs['fleet']:.1f} s",
                 f"{gs.get('simulate', 0.0):.1f} s", f"{gs.get('sessions', 0.0):.1f} s", f"{gs['write']:.1f} s",
                 f"{g['total_s']:.1f} s", f"{g['peak_rss_mb'] / 1e3:.2f} GB"]
        if s["status"] == "ok":
            ss = s["steps_s"]
            cells += [f"{ss['read']:.1f} s", f"{ss['simulate']:.1f} s", f"{ss['write']:.1f} s",
                      f"{s['total_s']:.1f} s", f"{s['peak_rss_mb'] / 1e3:.2f} GB",
                      f"{r['generate_plus_simulate_wall_s']:.1f} s"]
        else:
            cells += [f"simulate {s['status']}: {s.get('reason', '')}"] + ["—"] * 5
        lines.append("| " + " | ".join(cells) + " |")
    met = results.get("goals_met")
    if met is not None:
        h = results["headline"]
        verdict = {True: "met", False: "NOT met"}
        lines += ["", f"Headline ({h['evs']:,} EVs): generate + simulate {h['generate_plus_simulate_wall_s']:.1f} s "
                      f"wall (goal ≤ {GOALS['generate_plus_simulate_s']:.0f} s: {verdict[met['time']]}), "
                      f"peak {h['peak_rss_mb'] / 1e3:.2f} GB (goal ≤ {GOALS['peak_rss_gb']:.0f} GB: "
                      f"{verdict[met['memory']]})."]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (after ``--smoke`` and ``--out``)."""
    parser.add_argument("--sizes", help="comma-separated fleet sizes of the scaling table")
    parser.add_argument("--timeout", type=float, help="give up a stage after this many seconds")
    parser.add_argument("--work-dir", help="folder for the temporary instances (default: system temp)")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_benchmarks` for the parsed command line."""
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else None
    return run_benchmarks(smoke=args.smoke, sizes=sizes, timeout_s=args.timeout, work_dir=args.work_dir)


COMMAND = harness.Command(__doc__, add_arguments, run_from_args, markdown_tables,
                          smoke_help="tiny run on ux_12nodes (seconds)", stages=STAGES)


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); the tables on stdout, the results as JSON with ``--out``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())

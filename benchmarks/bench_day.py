"""Closed-loop day with LinDistFlow in the loop (issue 9, deliverable 5): ``optev run``.

Run from the repository root::

    python benchmarks/bench_day.py                          # the default day: embedded instance, city_dispatch
    python benchmarks/bench_day.py --instance path/to/inst  # another instance folder
    python benchmarks/bench_day.py --formulation lindistflow_opf --horizon 8h
    python benchmarks/bench_day.py --smoke                  # a few steps of the embedded instance (seconds)
    python benchmarks/bench_day.py --out day.json           # also write the results as JSON

What is measured (a section of ``benchmarks/README.md`` describes it):

1. **``optev run`` as a user runs it** — ``optev run INSTANCE --formulation F --horizon H
   --out TMP --json`` in a child process (this interpreter running ``optev.cli:main``):
   interpreter start and imports, reading the instance, the closed loop (controller,
   plant, edge autonomy), the uncontrolled baseline, the AC check of every applied step,
   the result files and (unless ``--no-plots``) the plots. Figure: its wall time, against
   the issue's goal
   (:data:`GOALS`: the default day in at most 20 s on 2 cores).
2. **Where the time goes** — the same run in this process through
   :func:`optev.report.run.run`, with every :meth:`optev.mpc.Controller.step` timed and
   its :class:`~optev.mpc.state.SolveStats` kept. Figures: the run's own timings (read,
   simulate), per controller (the controlled loop, and the baseline's DER dispatch when
   it has one): the controller's wall time per step and in total, HiGHS's time, model
   build (with the basis translation) and check (AC power flows, tables), the steps whose
   first HiGHS run was an in-place update (``warm``) or started from the previous
   window's translated basis (``mapped_basis``), loss-correction rounds per step, steps
   whose loss correction did not converge; the controlled run's AC-check violations and
   LinDistFlow error (``lindistflow_error_pu``; the issue asks for 0 violations and at
   most 1e-4 p.u.).

The module is importable: :func:`run_benchmarks` returns the results as a dict and
:func:`markdown_tables` formats them; ``tests/test_benchmarks_day_smoke.py`` runs the
smoke mode (no timing assertions, design.md "Testing").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file (tests/paths.py): not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

_t = harness.ms_or_s  # durations in the tables

GOALS = {"day_s": 20.0, "ac_violations": 0, "lindistflow_error_pu": 1e-4}
"""Issue 9: the default day in at most 20 s on 2 cores (``optev run`` end to end), no AC-check
violation of the controlled run, LinDistFlow within 1e-4 p.u. of the AC power flow."""

FULL: dict[str, Any] = {"instance": "embedded", "formulation": "city_dispatch", "steps": None, "start": None,
                        "horizon": "8h", "plots": True}
SMOKE: dict[str, Any] = {"instance": "embedded", "formulation": "city_dispatch", "steps": 3, "start": "08:00",
                         "horizon": "1h", "plots": False}
"""Benchmark configurations: the whole default day, or three steps of it (``steps`` None: a day)."""


CLI = "import sys; from optev.cli import main; sys.exit(main(sys.argv[1:]))"
"""What the ``optev`` console script runs (``optev.cli:main``), for this interpreter."""


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, float)
    if not a.size:
        return {"median": float("nan"), "mean": float("nan"), "max": float("nan"), "total": 0.0}
    return {"median": float(np.median(a)), "mean": float(a.mean()), "max": float(a.max()), "total": float(a.sum())}


# ------------------------------------------------------------------------------ 1. optev run end to end

def cli_day(instance: str, formulation: str, *, steps: int | None, start: str | None, horizon: str,
            plots: bool) -> dict[str, Any]:
    """``optev run …`` in a child process (module docstring, 1): wall time and summary."""
    with tempfile.TemporaryDirectory() as tmp:
        path = harness.instance_path(instance)
        cmd = [sys.executable, "-c", CLI, "run", str(path), "--formulation", formulation, "--horizon", horizon,
               "--out", str(Path(tmp) / "run"), "--json"]
        if steps is not None:
            cmd += ["--steps", str(steps)]
        if start is not None:
            cmd += ["--start", start]
        if not plots:
            cmd.append("--no-plots")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=harness.REPO)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"status": "failed", "reason": f"exit code {proc.returncode}: {proc.stderr.strip()[-500:]}",
                "wall_s": wall}
    try:
        summary = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"status": "failed", "reason": "optev run --json did not print one JSON object", "wall_s": wall}
    keep = ("steps", "evs", "ac_violations", "ac_violation_steps", "lindistflow_error_pu", "warm_steps",
            "soft_limit_steps", "failed_steps", "wall_s")
    return {"status": "ok", "wall_s": wall, "plots": plots, "summary": {k: summary.get(k) for k in keep}}


# ------------------------------------------------------------------------------ 2. where the time goes

class StepRecorder:
    """Times every :meth:`Controller.step` of the process and keeps its stats, per controller."""

    def __init__(self) -> None:
        self.calls: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self._original: Any = None

    def __enter__(self) -> "StepRecorder":
        from optev.mpc.controller import Controller

        original = self._original = Controller.step
        calls = self.calls

        def step(ctl: Any, state: Any, forecasts: Any = None) -> Any:
            t0 = time.perf_counter()
            decision = original(ctl, state, forecasts)
            st = decision.stats
            calls[id(ctl)].append({
                "wall_s": time.perf_counter() - t0, "highs_s": st.solve_s, "build_s": st.build_s,
                "check_s": st.check_s, "status": st.status, "warm": st.warm,
                "mapped_basis": bool(getattr(st, "mapped_basis", False)), "iterations": st.iterations,
                "loss_rounds": int(getattr(st, "loss_rounds", 0)),
                "loss_converged": getattr(st, "loss_converged", None),
                "loss_error_pu": getattr(st, "loss_error_pu", None), "evs": st.evs})
            return decision

        Controller.step = step  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        from optev.mpc.controller import Controller

        Controller.step = self._original  # type: ignore[method-assign]

    def controllers(self) -> list[dict[str, Any]]:
        """One summary per controller: the controlled loop first (the one that saw EVs)."""
        out = []
        for calls in sorted(self.calls.values(), key=lambda c: -sum(r["evs"] for r in c)):
            rounds = [r["loss_rounds"] for r in calls]
            out.append({
                "steps": len(calls), "evs_seen": int(sum(r["evs"] for r in calls)),
                "wall_s": _stats([r["wall_s"] for r in calls]), "highs_s": _stats([r["highs_s"] for r in calls]),
                "build_s": _stats([r["build_s"] for r in calls]), "check_s": _stats([r["check_s"] for r in calls]),
                "iterations": int(sum(r["iterations"] for r in calls)),
                "warm_steps": int(sum(r["warm"] for r in calls)),
                "mapped_basis_steps": int(sum(r["mapped_basis"] for r in calls)),
                "loss_rounds": {str(k): rounds.count(k) for k in sorted(set(rounds))},
                "loss_unconverged_steps": int(sum(r["loss_converged"] is False for r in calls)),
                "loss_error_pu_max": max((r["loss_error_pu"] for r in calls if r["loss_error_pu"] is not None),
                                         default=None),
                "statuses": {s: sum(r["status"] == s for r in calls) for s in sorted({r["status"] for r in calls})}})
        return out


def inprocess_day(instance: str, formulation: str, *, steps: int | None, start: str | None,
                  horizon: str) -> dict[str, Any]:
    """:func:`optev.report.run.run` with every controller call recorded (module docstring, 2)."""
    from optev.report.run import run

    t0 = time.perf_counter()
    with StepRecorder() as rec:
        result = run(str(harness.instance_path(instance)), formulation, steps=steps, start=start, horizon=horizon)
    wall = time.perf_counter() - t0
    summary = {k: v for k, v in result.summary().items() if k not in PER_STEP_KEYS}
    return {"status": "ok", "wall_s": wall, "timings_s": dict(result.timings_s),
            "controllers": rec.controllers(), "summary": summary}


PER_STEP_KEYS = ("solve_s_per_step", "wall_s_per_step")
"""Summary keys left out of the results file (one value per step; the tables hold them)."""


# ------------------------------------------------------------------------------ driver

def goals(cli: dict[str, Any], day: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal of :data:`GOALS` with the measured value (full runs only)."""
    out: dict[str, dict[str, Any]] = {}
    if cli.get("status") == "ok":
        out["day_s"] = {"goal": GOALS["day_s"], "value": cli["wall_s"], "met": cli["wall_s"] <= GOALS["day_s"]}
    if day.get("status") == "ok":
        s = day["summary"]
        n = int(sum((s.get("ac_violations") or {}).values()))
        out["ac_violations"] = {"goal": GOALS["ac_violations"], "value": n, "met": n <= GOALS["ac_violations"]}
        err = s.get("lindistflow_error_pu")
        if err is not None:
            out["lindistflow_error_pu"] = {"goal": GOALS["lindistflow_error_pu"], "value": err,
                                           "met": err <= GOALS["lindistflow_error_pu"]}
    return out


def run_benchmarks(smoke: bool = False, *, log: bool = False, **overrides: Any) -> dict[str, Any]:
    """Run the benchmark (or its smoke version); ``overrides`` replace entries of :data:`FULL`/:data:`SMOKE`."""
    cfg = dict(SMOKE if smoke else FULL)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    out: dict[str, Any] = {"mode": "smoke" if smoke else "full", "machine": harness.machine_record(),
                           "config": dict(cfg)}
    t0 = time.perf_counter()
    args = {"steps": cfg["steps"], "start": cfg["start"], "horizon": str(cfg["horizon"])}
    if log:
        print("optev run (child process) …", file=sys.stderr, flush=True)
    out["cli"] = cli_day(cfg["instance"], cfg["formulation"], plots=bool(cfg["plots"]), **args)
    if log:
        print("the same day in process, with the controller calls recorded …", file=sys.stderr, flush=True)
    try:
        out["day"] = inprocess_day(cfg["instance"], cfg["formulation"], **args)
    except Exception as exc:  # a benchmark reports a broken run, it does not hide the other figures
        out["day"] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    out["goals"] = goals(out["cli"], out["day"]) if not smoke else {}
    out["elapsed_s"] = time.perf_counter() - t0
    harness.close_machine_record(out["machine"])
    return out


def markdown_tables(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    cfg = results["config"]
    span = "one day" if cfg["steps"] is None else f"{cfg['steps']} steps"
    lines = [f"Closed-loop day: {cfg['instance']}, {cfg['formulation']}, horizon {cfg['horizon']}, {span}",
             "", "| figure | value |", "|---|---:|"]
    cli = results["cli"]
    lines.append(f"| `optev run` wall time{' (with plots)' if cli.get('plots') else ''} | "
                 + (_t(cli["wall_s"]) if cli.get("status") == "ok" else f"{cli.get('status')}: {cli.get('reason')}")
                 + " |")
    day = results["day"]
    if day.get("status") != "ok":
        lines.append(f"| in-process run | {day.get('status')}: {day.get('reason')} |")
        return "\n".join(lines)
    for k, v in day["timings_s"].items():
        lines.append(f"| in process: {k} | {_t(v)} |")
    s = day["summary"]
    lines += [f"| AC-check violations (steps) | {sum((s.get('ac_violations') or {}).values())} "
              f"({s.get('ac_violation_steps')}) |",
              f"| LinDistFlow error of the plans | {s.get('lindistflow_error_pu')} p.u. |"]
    lines += ["", "| controller | steps | wall: total / median | HiGHS: total / median | build | check | "
              "warm / mapped basis | loss rounds (steps) | unconverged |",
              "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for i, c in enumerate(day["controllers"]):
        name = "controlled" if i == 0 and c["evs_seen"] else "baseline DER dispatch"
        rounds = ", ".join(f"{k}: {v}" for k, v in c["loss_rounds"].items())
        lines.append(f"| {name} | {c['steps']} | {_t(c['wall_s']['total'])} / {_t(c['wall_s']['median'])} | "
                     f"{_t(c['highs_s']['total'])} / {_t(c['highs_s']['median'])} | {_t(c['build_s']['total'])} | "
                     f"{_t(c['check_s']['total'])} | {c['warm_steps']} / {c['mapped_basis_steps']} | {rounds} | "
                     f"{c['loss_unconverged_steps']} |")
    lines += ["", *achieved_table(s)]
    g = results.get("goals") or {}
    if g:
        lines += ["", "| goal | measured | met |", "|---|---:|---|"]
        for name, v in g.items():
            lines.append(f"| {name} ≤ {v['goal']:g} | {v['value']:.4g} | {'yes' if v['met'] else 'no'} |")
    return "\n".join(lines)


def _n(value: Any, fmt: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def achieved_table(s: dict[str, Any]) -> list[str]:
    """What the controlled day achieved against the uncontrolled one (realised figures)."""
    cur = f" {s['currency']}" if s.get("currency") else ""
    parts, base = s.get("cost_parts") or {}, s.get("baseline_cost_parts") or {}
    v2g = s.get("v2g") or {}
    worse = s.get("worse_than_uncontrolled_kwh") or {}
    ac = sum((s.get("ac_violations") or {}).values())
    base_ac = sum((s.get("baseline_ac_violations") or {}).values())
    return [
        "| realised figure | uncontrolled | controlled |", "|---|---:|---:|",
        f"| cost: grid import + generation{cur} | {_n(s.get('baseline_cost'), ',.0f')} | {_n(s.get('cost'), ',.0f')} |",
        f"| … grid import{cur} | {_n(base.get('import'), ',.0f')} | {_n(parts.get('import'), ',.0f')} |",
        f"| … generation{cur} | {_n(base.get('generation'), ',.0f')} | {_n(parts.get('generation'), ',.0f')} |",
        f"| EV load at grid prices{cur} | {_n(s.get('baseline_ev_energy_cost'), ',.0f')} | "
        f"{_n(s.get('ev_energy_cost'), ',.0f')} |",
        f"| peak substation import (AC), kW | {_n(s.get('baseline_peak_import_kw'), ',.0f')} | "
        f"{_n(s.get('peak_import_kw'), ',.0f')} |",
        f"| peak EV power, kW | {_n(s.get('baseline_peak_ev_kw'), ',.0f')} | {_n(s.get('peak_ev_kw'), ',.0f')} |",
        f"| EV energy charged (grid side), kWh | {_n(s.get('baseline_energy_kwh'), ',.0f')} | "
        f"{_n(s.get('energy_delivered_kwh'), ',.0f')} |",
        f"| … by EVs arriving during a step (local rule), kWh | | {_n(s.get('energy_local_kwh'), ',.0f')} |",
        f"| V2G energy discharged, kWh | 0 | {_n(v2g.get('energy_kwh'), ',.1f')} |",
        f"| energy unmet at departure or the day's end, kWh | {_n(s.get('baseline_energy_unmet_kwh'), ',.0f')} | "
        f"{_n(s.get('energy_unmet_kwh'), ',.0f')} |",
        f"| sessions worse off than uncontrolled (of {s.get('sessions_compared', 0)}) | | "
        f"{s.get('sessions_worse_than_uncontrolled')} (lowest {_n(worse.get('min'), '+.2f', ' kWh')}) |",
        f"| AC-check violations (steps) | {base_ac} ({s.get('baseline_ac_violation_steps')}) | "
        f"{ac} ({s.get('ac_violation_steps')}) |",
        f"| SOC-floor / limit violations; identities | | {s.get('soc_floor_violations')} / "
        f"{s.get('limit_violations_total')}; {'hold' if s.get('identities_ok') else 'BROKEN'} |"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (after ``--smoke`` and ``--out``)."""
    parser.add_argument("--instance", help="instance folder (default: the embedded instance)")
    parser.add_argument("--formulation", help="formulation name or file (default city_dispatch)")
    parser.add_argument("--steps", type=int, help="control steps (default: one day)")
    parser.add_argument("--start", help="first step, HH:MM (default: the instance start)")
    parser.add_argument("--horizon", help="controller horizon (default 8h)")
    parser.add_argument("--no-plots", action="store_true", help="time optev run without its plots")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_benchmarks` for the parsed command line."""
    return run_benchmarks(args.smoke, log=not args.quiet, instance=args.instance, formulation=args.formulation,
                          steps=args.steps, start=args.start, horizon=args.horizon,
                          plots=False if args.no_plots else None)


COMMAND = harness.Command(__doc__, add_arguments, run_from_args, markdown_tables,
                          smoke_help="three steps of the embedded instance (seconds)")


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); the tables on stdout, the results as JSON with ``--out``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())

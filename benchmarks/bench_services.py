"""Rolling horizon with a frequency reserve on Nanjing (issue 12): per-step time with and without.

Run from the repository root::

    sh instances/recipes/nanjing_100k.sh                # once: the instance (git-ignored)
    python benchmarks/bench_services.py                 # Nanjing, 16 steps from 12:00, both runs
    python benchmarks/bench_services.py --smoke         # the embedded instance, 3 steps (seconds)
    python benchmarks/bench_services.py --out benchmarks/results/bench_services.json

What is measured: the closed loop of ``bench_mpc.py`` (hierarchical controller, regions in 2
worker processes, the same configuration :data:`bench_mpc.FULL`) over the same ``--steps``
from ``--start``, twice in fresh processes: without a service, and delivering the request
``benchmarks/requests/nanjing_reserve.toml`` (10 MW of secondary reserve up and down over the
whole run, with the energy to sustain it 15 min; :func:`optev.services.run.run_service`: each
region holds its share, the station level does not exceed the region plan, and after the run the
fleet follows the seeded random AGC signal every 4 s). Figures: per-step wall time (median,
max) of both runs and their ratio, the reserve's A.4 tracking (η, MAE), the realised peak and
cost of both, and the wall time of the whole run including the 4-s following.
``tests/test_benchmarks_services_smoke.py`` runs the smoke mode (no timing assertions).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file (tests/paths.py): not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_mpc  # noqa: E402
import harness  # noqa: E402

REQUESTS = Path(__file__).resolve().parent / "requests"
FULL: dict[str, Any] = {**bench_mpc.FULL, "steps": 16, "start": "12:00", "request": str(REQUESTS / "nanjing_reserve.toml")}
SMOKE: dict[str, Any] = {**bench_mpc.SMOKE, "steps": 3, "start": "08:00",
                         "request": str(REQUESTS / "embedded_reserve.toml")}


def run_benchmarks(smoke: bool = False, *, log: bool = True, **overrides: Any) -> dict[str, Any]:
    """Both closed loops (module docstring) as a JSON-ready dict."""
    cfg = dict(SMOKE if smoke else FULL)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    out: dict[str, Any] = {"mode": "smoke" if smoke else "full", "machine": harness.machine_record(),
                           "config": {k: cfg[k] for k in ("instance", "steps", "start", "horizon", "workers",
                                                          "refine_scope", "aggregate", "batch_evs", "request")}}
    if cfg["instance"] != "embedded" and not Path(cfg["instance"]).is_dir():
        out["status"] = "data not found"
        return out
    t0 = time.perf_counter()
    common = {k: cfg[k] for k in ("instance", "steps", "start", "horizon", "workers", "refine_scope", "aggregate",
                                  "batch_evs")}
    for name, service in (("without", None), ("with_reserve", cfg["request"])):
        if log:
            print(f"closed loop {name.replace('_', ' ')}", file=sys.stderr, flush=True)
        out[name] = bench_mpc.run_child("closed_loop", log=log, service=service, **common)
    ok = all(out[k].get("status") == "ok" for k in ("without", "with_reserve"))
    out["status"] = "ok" if ok else "failed"
    if ok:
        a, b = out["without"]["step_s"], out["with_reserve"]["step_s"]
        out["step_ratio_median"] = b["median"] / a["median"] if a["median"] else float("nan")
    out["elapsed_s"] = time.perf_counter() - t0
    harness.close_machine_record(out["machine"])
    return out


def markdown_tables(results: dict[str, Any]) -> str:
    """The results as Markdown."""
    if results.get("status") != "ok":
        return f"status: {results.get('status')}"
    a, b = results["without"], results["with_reserve"]
    service = b.get("service", {})
    metrics = service.get("appendix_a", {})
    lines = [f"| {a['evs']:,} EVs, {a['steps']} steps from {a['start'][11:16]} | without service | with reserve |",
             "|---|---:|---:|"]
    for label, key in (("step time, median", "median"), ("step time, max", "max")):
        lines.append(f"| {label} | {a['step_s'][key]:.1f} s | {b['step_s'][key]:.1f} s |")
    lines.append(f"| whole run (with the 4-s following) | {a['wall_s']['total']:.0f} s | {b['wall_s']['total']:.0f} s |")
    lines.append(f"| realised peak import | {a['summary']['peak_import_kw']:,.0f} kW | "
                 f"{b['summary']['peak_import_kw']:,.0f} kW |")
    lines.append(f"| realised cost | {a['summary']['cost']:,.0f} | {b['summary']['cost']:,.0f} |")
    lines.append(f"| reserve tracking η / MAE | | {metrics.get('eta', float('nan')):.1f} % / "
                 f"{metrics.get('mae_kw', float('nan')):.1f} kW |")
    lines.append(f"| peak memory (sampled total) | {a['memory_mb']['sampled_total_peak'] / 1e3:.1f} GB | "
                 f"{b['memory_mb']['sampled_total_peak'] / 1e3:.1f} GB |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (after ``--smoke`` and ``--out``)."""
    parser.add_argument("--instance", help="instance folder (default instances/nanjing_100k; 'embedded')")
    parser.add_argument("--steps", type=int, help="control steps (default 16)")
    parser.add_argument("--start", help="first step, HH:MM (default 12:00)")
    parser.add_argument("--request", help="service request file (default benchmarks/requests/nanjing_reserve.toml)")
    parser.add_argument("--quiet", action="store_true", help="no per-step progress on stderr")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_benchmarks` for the parsed command line."""
    return run_benchmarks(args.smoke, log=not args.quiet, instance=args.instance, steps=args.steps, start=args.start,
                          request=args.request)


COMMAND = harness.Command(__doc__, add_arguments, run_from_args, markdown_tables,
                          smoke_help="the embedded instance, 3 steps (seconds)")


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); the tables on stdout, the results as JSON with ``--out``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())

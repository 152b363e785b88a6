"""Command-line interface: ``optev pf``, ``optev info``, ``optev solve``.

User mistakes (missing file, bad format, unknown option, invalid data, an infeasible
window) print one line on stderr and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from optev.errors import OptevError

EXIT_USAGE = 2
DEFAULT_FEEDER = "case33bw.m"
"""The embedded default feeder, in the repository's ``instances/`` folder."""


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, raised instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


def instances_dir() -> Path:
    """The repository's ``instances/`` folder (embedded default instances)."""
    return Path(__file__).resolve().parents[1] / "instances"


def default_feeder() -> Path:
    path = instances_dir() / DEFAULT_FEEDER
    if not path.exists():
        raise OptevError(f"embedded default feeder not found at {path}; give a FEEDER path")
    return path


def _cmd_pf(args: argparse.Namespace) -> int:
    from optev.errors import PowerFlowError
    from optev.io import read
    from optev.powerflow import run_powerflow

    path = Path(args.feeder) if args.feeder else default_feeder()
    instance = read(path)
    feeder = instance.feeder
    if not len(feeder.buses):
        raise OptevError(f"{path}: has no feeder")
    try:
        res = run_powerflow(feeder, load_scale=args.load_scale)
    except PowerFlowError as exc:
        if len(feeder.generators):
            raise PowerFlowError(f"{exc}; note: a plain power flow does not dispatch the feeder's "
                                 f"{len(feeder.generators)} generator(s), try --load-scale below 1") from None
        raise
    s = res.summary().iloc[0]
    out = {"loss_kw": float(s.loss_kw), "loss_kvar": float(s.loss_kvar), "vmin_pu": float(s.vmin_pu),
           "vmin_bus": str(s.vmin_bus), "converged": bool(s.converged), "iterations": int(s.iterations)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"feeder      {path} ({len(feeder.buses)} buses, load scale {args.load_scale:g})")
        print(f"losses      {out['loss_kw']:.3f} kW, {out['loss_kvar']:.3f} kvar")
        print(f"min voltage {out['vmin_pu']:.5f} p.u. at bus {out['vmin_bus']}")
        print(f"converged   {'yes' if out['converged'] else 'no'} in {out['iterations']} iterations")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from optev.io import read

    instance = read(Path(args.path))
    counts = instance.counts()
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"{instance.metadata.name} ({args.path})")
        width = max(len(k) for k in counts)
        for key, value in counts.items():
            shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
            print(f"  {key:<{width}}  {shown}")
    return 0


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Send what native code writes to file descriptor 1 to the null device meanwhile.

    HiGHS prints a banner on the process's standard output when its first instance is
    created, whatever its options say; ``optev solve`` keeps standard output for its own
    report (one JSON object with ``--json``).
    """
    import ctypes

    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no standard output to protect
        yield
        return
    try:
        libc: Any = ctypes.CDLL(None)
    except OSError:  # no C library to flush (not a POSIX system)
        libc = None
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        if libc is not None:
            libc.fflush(None)  # whatever native code left in C's stdout buffer goes to the null device
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


def _window_start(text: str | None) -> str | None:
    """``--start``: ``HH:MM`` on the instance's first day, or an ISO timestamp."""
    import pandas as pd

    if text is None:
        return None
    match = _CLOCK.match(text)
    if match:
        hours, minutes = int(match.group(1)), int(match.group(2))
        if hours > 23 or minutes > 59:
            raise _UsageError(f"optev solve: --start {text!r} is not a time of day (HH:MM)")
        return f"{hours:02d}:{minutes:02d}"
    try:
        pd.Timestamp(text)
    except (ValueError, TypeError):
        raise _UsageError(f"optev solve: --start {text!r} is neither HH:MM nor an ISO timestamp "
                          "(for example 2026-01-01T08:00)") from None
    return text


def _window_step(text: str | None) -> str | None:
    """``--step``: a positive duration such as ``15min``, ``5min``, ``1h``."""
    import pandas as pd

    if text is None:
        return None
    try:
        step = pd.Timedelta(text)
    except (ValueError, TypeError):
        raise _UsageError(f"optev solve: --step {text!r} is not a duration (for example 15min, 1h)") from None
    if step <= pd.Timedelta(0):
        raise _UsageError(f"optev solve: --step must be positive, got {text!r}")
    return text


def _cmd_solve(args: argparse.Namespace) -> int:
    from optev.blocks.window import build_window
    from optev.compose.formulation import load_formulation
    from optev.compose.solve import WindowSolver
    from optev.errors import InfeasibleError
    from optev.io import read
    from optev.io.results import check_results_target, jsonable, write_results

    start = _window_start(args.start)
    step = _window_step(args.step)
    if args.steps is not None and args.steps < 1:
        raise _UsageError(f"optev solve: --steps must be at least 1, got {args.steps}")
    mps = Path(args.export_mps) if args.export_mps else None
    if mps is not None and mps.suffix.lower() != ".mps":
        raise _UsageError(f"optev solve: --export-mps needs a file name ending in .mps, got {str(mps)!r}")
    formulation = load_formulation(args.formulation)
    instance = read(Path(args.instance))
    out = check_results_target(Path(args.out) if args.out else Path.cwd() / f"optev_solve_{formulation.name}")
    window = build_window(instance, start=start, steps=int(args.steps or formulation.window["steps"]),
                          step=step or formulation.window["step"])
    soft = True if args.soft_limits else None
    with _native_stdout_silenced():
        solver = WindowSolver(formulation)
        try:
            result = solver.solve(window, soft_limits=soft)
        except InfeasibleError as exc:
            if mps is None:
                raise
            _export_mps(solver, mps)
            raise InfeasibleError(f"{exc}; the infeasible LP was written to {mps}") from None
        if mps is not None:
            _export_mps(solver, mps)
    inputs = {"formulation_file": formulation.source, "instance": str(args.instance),
              "soft_limits": bool(result.context.soft_limits), "mps": str(mps) if mps else None}
    folder = write_results(result, out, args.format, extra={"inputs": inputs})
    summary = jsonable({**result.summary, "inputs": inputs, "out": str(folder)})
    if args.json:
        print(json.dumps(summary))
    else:
        _print_report(summary, args.format, folder)
    return 0


def _export_mps(solver: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    solver.session.write_mps(path)


def _print_report(s: dict[str, Any], table_format: str, folder: Path) -> None:
    """The short text report of ``optev solve`` from its (JSON-ready) summary."""
    def num(value: Any, fmt: str, unit: str = "") -> str:
        return "n/a" if value is None else f"{value:{fmt}}{unit}"

    minutes = s["step_minutes"]
    inputs = s["inputs"]
    print(f"formulation  {s['formulation']} ({inputs['formulation_file']})")
    print(f"window       {s['steps']} steps of {minutes:g} min from {s['start']}: {s['evs']} EV sessions, "
          f"{s['stations']} stations; {s['variables']:,} variables, {s['constraints']:,} constraints")
    print(f"termination  {s['termination']}")
    print(f"objective    {num(s['objective'], '.4f')}")
    print(f"times        build {s['build_s']:.3f} s, solve {s['solve_s']:.3f} s, check {s['check_s']:.3f} s")
    print(f"energy       {s.get('energy_delivered_kwh', 0.0):,.1f} kWh delivered, "
          f"{s.get('energy_discharged_kwh', 0.0):,.1f} kWh discharged (V2G)")
    print(f"shortfall    {s.get('shortfall_kwh', 0.0):,.1f} kWh ({s.get('evs_with_shortfall', 0)} EV sessions)")
    print(f"peak import  {num(s.get('peak_import_kw'), ',.1f', ' kW')}")
    dv = s.get("max_abs_dv_pu")
    if dv is not None:
        print(f"LinDistFlow  max |V_lin − V_ac| = {dv:.2e} p.u.")
    viol = s.get("violations") or {}
    print("violations   " + (", ".join(f"{k}: {v}" for k, v in viol.items()) if viol else "none"))
    if inputs["soft_limits"]:
        used = {k: v for k, v in (s.get("slack_used") or {}).items() if v}
        print("slack used   " + (", ".join(f"{k}: {v:.4g}" for k, v in used.items()) if used else "none"))
    print(f"results      {folder} (ev, station, bus, line as {table_format}; summary.json)")
    if inputs["mps"]:
        print(f"LP written   {inputs['mps']}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="optev", description="Optimisation toolkit for large-scale EV aggregation "
                                               "and vehicle-grid interaction (T/JES 012-2026).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    pf = sub.add_parser("pf", help="AC power flow of a feeder (MATPOWER file, V2Sim case or instance folder)")
    pf.add_argument("feeder", nargs="?", help=f"input path (default: the embedded {DEFAULT_FEEDER})")
    pf.add_argument("--load-scale", type=float, default=1.0, help="factor applied to every load (default 1)")
    pf.add_argument("--json", action="store_true", help="print one JSON object")
    pf.set_defaults(func=_cmd_pf)
    info = sub.add_parser("info", help="counts and totals of any readable input")
    info.add_argument("path", help="MATPOWER file, V2Sim case folder or instance folder")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(func=_cmd_info)
    solve = sub.add_parser("solve", help="solve one window of an instance with a formulation and check it with "
                                         "an AC power flow")
    solve.add_argument("formulation", help="formulation file, or the name of a shipped one (e.g. station_v2g)")
    solve.add_argument("instance", help="instance folder, V2Sim case folder or MATPOWER file")
    solve.add_argument("--start", help="first step: HH:MM on the instance's first day or an ISO timestamp "
                                       "(default: the instance start)")
    solve.add_argument("--steps", type=int, help="number of steps (default: the formulation's window)")
    solve.add_argument("--step", help="step length such as 15min or 5min (default: the formulation's window)")
    solve.add_argument("--out", help="results folder (default: ./optev_solve_<formulation>); replaced if it is "
                                     "already a results folder")
    solve.add_argument("--format", choices=("csv", "parquet"), default="csv", help="table format (default csv)")
    solve.add_argument("--export-mps", metavar="FILE", help="also write the LP as an MPS file (solver benchmarking)")
    solve.add_argument("--soft-limits", action="store_true",
                       help="turn hard limits into penalised slacks and report their use")
    solve.add_argument("--json", action="store_true", help="print one JSON object")
    solve.set_defaults(func=_cmd_solve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optev`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        code: Any = args.func(args)
        return int(code)
    except _UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except OptevError as exc:
        print(f"optev: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())

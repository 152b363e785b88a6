"""Command-line interface: ``optev pf``, ``optev info``, ``optev solve``, ``optev generate``,
``optev simulate``, ``optev run``, ``optev flex`` (:mod:`optev.cli_flex`), ``optev forecast backtest``
(:mod:`optev.cli_forecast`), ``optev settle`` (:mod:`optev.cli_settle`), ``optev audit verify``
(:mod:`optev.cli_audit`), ``optev serve`` (:mod:`optev.cli_serve`); ``optev --version``.

User mistakes (missing file, bad format, unknown option, invalid data, an infeasible
window) print one line on stderr and exit with code 2, never a traceback. Standard output
holds only what a command prints (with ``--json``, one JSON object): HiGHS's start-up
banner is kept off it where the solver is created (:func:`optev.solvers.highs.new_highs`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from optev import package_version
from optev.blocks.window import build_window
from optev.clean_exit import run_cleanly
from optev.cli_audit import add_audit_parser
from optev.cli_flex import add_flex_parser
from optev.cli_forecast import add_forecast_parser
from optev.cli_serve import add_serve_parser
from optev.cli_settle import add_ledger_parser, add_settle_parser
from optev.compose.formulation import load_formulation
from optev.compose.solve import WindowSolver, checked_window
from optev.data.stations import PRIVATE_KINDS
from optev.data.vehicles import VEHICLE_CLASSES
from optev.errors import InfeasibleError, OptevError, PowerFlowError
from optev.io import read, write_instance
from optev.io.embedded import DEFAULT_FEEDER, DEFAULT_INSTANCE, default_feeder, default_instance
from optev.io.outdir import claim_target
from optev.io.results import jsonable, write_results
from optev.mobility.build import (GENERATE_KEY, clock, feeder_load, feeder_peaks, generate_instance,
                                  simulation_summary, write_simulation)
from optev.mobility.core import PlantConfig
from optev.mobility.routing import Router
from optev.mobility.simulate import simulate_day
from optev.mpc.forecast import BUILTIN_FORECASTERS
from optev.options import (MIX_SUM_ATOL, control_step_option, count_option, generate_step_option, horizon_option,
                           outage_option, output_file_option, share_option, size_guard, start_option,
                           window_options)
from optev.options import mix_option as parse_mix
from optev.powerflow import run_powerflow
from optev.powerflow.adequacy import adequacy_summary, grid_verdict
from optev.report.progress import ProgressLine, wanted
from optev.report.run import day_steps, resolve_formulation
from optev.report.run import run as run_day
from optev.services.request import load_service
from optev.summaries import SolveSummary

__all__ = ["EXIT_USAGE", "MIX_SUM_ATOL", "build_parser", "main", "package_version", "parse_mix"]

EXIT_USAGE = 2


class _UsageError(Exception):
    pass


class _Exit(Exception):
    """``--help`` or ``--version`` has printed its text: leave with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, raised instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            print(message.rstrip(), file=sys.stderr)
        raise _Exit(status)


def _cmd_pf(args: argparse.Namespace) -> int:
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


def _fleet_counts(instance: Any) -> dict[str, int]:
    """EVs per vehicle class and public chargers, for ``optev info`` on an instance with a fleet."""
    evs = instance.evs
    if not len(evs):
        return {}
    if "vehicle_class" in evs:
        cls = evs["vehicle_class"]
    else:
        cls = evs["vtype_id"].map(instance.vehicle_types.set_index("vtype_id")["vehicle_class"])
    out = {f"evs_{c}": int((cls == c).sum()) for c in VEHICLE_CLASSES}
    st = instance.stations
    out["chargers_public"] = int(st.loc[~st["kind"].isin(PRIVATE_KINDS), "n_chargers"].sum())
    out["trips"] = int(len(instance.trips))
    out["sessions"] = int(len(instance.sessions))
    return out


def _cmd_info(args: argparse.Namespace) -> int:
    instance = read(Path(args.path))
    counts = {**instance.counts(), **_fleet_counts(instance)}
    grid, grid_line = grid_verdict(instance)
    if args.json:
        print(json.dumps({**counts, **adequacy_summary(grid)}, allow_nan=False))
    else:
        print(f"{instance.metadata.name} ({args.path})")
        width = max(len(k) for k in counts)
        for key, value in counts.items():
            shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
            print(f"  {key:<{width}}  {shown}")
        if grid_line is not None:
            print(grid_line)
    return 0


def _cmd_solve(args: argparse.Namespace) -> int:
    names, flags = ("--start", "--steps", "--step"), ("--wrap", "--allow-large")
    mps = Path(args.export_mps) if args.export_mps else None
    if mps is not None and mps.suffix.lower() != ".mps":
        raise _UsageError(f"optev solve: --export-mps needs a file name ending in .mps, got {str(mps)!r}")
    formulation = load_formulation(args.formulation)
    window_options(args.start, args.steps, args.step, formulation.window, allow_large=args.allow_large,
                   names=names, flag=flags[1])  # before the instance is read
    instance = read(Path(args.instance))
    paths = {"instance": args.instance, "formulation file": formulation.source, "--export-mps file": mps}
    out = claim_target(args.out or Path.cwd() / f"optev_solve_{formulation.name}", "results", inputs=paths)
    times, step = checked_window(instance, start=args.start, steps=args.steps, step=args.step,
                                 window=formulation.window, wrap=args.wrap, allow_large=args.allow_large,
                                 names=names, flags=flags)
    window = build_window(instance, start=times[0], steps=len(times), step=step)
    grid = adequacy_summary(grid_verdict(instance, times=window.times)[0])
    soft = True if args.soft_limits else None
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
    folder = write_results(result, out, args.format, extra={"inputs": inputs, **grid}, inputs=paths)
    summary: SolveSummary = jsonable({**result.summary, **grid, "inputs": inputs, "out": str(folder)})
    if args.json:
        print(json.dumps(summary))
    else:
        _print_report(summary, args.format, folder)
    return 0


def _export_mps(solver: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    solver.session.write_mps(path)


def _print_report(s: SolveSummary, table_format: str, folder: Path) -> None:
    """The short text report of ``optev solve`` from its (JSON-ready) summary."""
    def num(value: Any, fmt: str, unit: str = "") -> str:
        return "n/a" if value is None else f"{value:{fmt}}{unit}"

    minutes = s["step_minutes"]
    inputs = s["inputs"]
    print(f"formulation  {s['formulation']} ({inputs['formulation_file']})")
    print(f"window       {s['steps']} steps of {minutes:g} min from {s['start']}: {s['evs']} EV sessions, "
          f"{s['stations']} stations; {s['variables']:,} variables, {s['constraints']:,} constraints")
    print(f"grid         {(s.get('grid_adequacy') or {}).get('text', 'n/a (no feeder)')}")
    print(f"termination  {s['termination']}")
    print(f"objective    {num(s['objective'], '.4f', ' ' + (s.get('currency') or ''))}".rstrip())
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


def _cmd_generate(args: argparse.Namespace) -> int:
    count_option(args.evs, "--evs")
    count_option(args.seed, "--seed", minimum=0)
    mix = parse_mix(args.mix) if args.mix is not None else None
    v2g = share_option(args.v2g_share, "--v2g-share")
    private = share_option(args.private_share, "--private-share")
    workplace = share_option(args.workplace_share, "--workplace-share")
    step_s = generate_step_option(args.step)
    out = claim_target(args.out, "instance", inputs={"case": args.case})
    t0 = time.perf_counter()
    case = read(Path(args.case))
    t_read = time.perf_counter() - t0
    gen = generate_instance(case, args.evs, seed=args.seed, mix=mix, v2g_share=v2g, private_share=private,
                            workplace_share=workplace, step_s=step_s, sessions=not args.no_sessions,
                            name=args.name, case=Path(args.case).name)
    t0 = time.perf_counter()
    folder = write_instance(gen.instance, out, overwrite=True, inputs={"case": args.case})
    t_write = time.perf_counter() - t0
    inst = gen.instance
    report = {**inst.counts(), **_fleet_counts(inst), "name": inst.metadata.name, "out": str(folder),
              "seed": args.seed,
              "timings_s": {"read": t_read, **gen.timings_s, "write": t_write}}
    if gen.baseline is not None:
        base = gen.baseline.summary()
        report["baseline"] = {k: base[k] for k in ("sessions", "rejections", "grid_import_kwh", "stranded")}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"instance   {inst.metadata.name} -> {folder}")
        print(f"fleet      {report['evs']:,} EVs ({report['evs_car']:,} car(s), {report['evs_bus']:,} bus(es), "
              f"{report['evs_logistics']:,} logistics), {report['trips']:,} trips, seed {args.seed}")
        print(f"stations   {report['stations_fcs']:,} FCS, {report['stations_scs']:,} SCS, "
              f"{report['stations_private']:,} private; {report['chargers']:,} chargers "
              f"({report['chargers_public']:,} public)")
        if gen.baseline is not None:
            b = report["baseline"]
            print(f"sessions   {report['sessions']:,} from the uncontrolled baseline ({b['rejections']:,} "
                  f"rejection(s), {b['grid_import_kwh']:,.1f} kWh from the grid)")
        else:
            print("sessions   none (--no-sessions)")
        times = ", ".join(f"{k} {v:.2f} s" for k, v in report["timings_s"].items())
        print(f"times      {times}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    if args.seed is not None:
        count_option(args.seed, "--seed", minimum=0)
    telemetry = output_file_option(args.telemetry, "--telemetry", ".parquet") if args.telemetry else None
    path = Path(args.instance) if args.instance else default_instance()
    paths = {"instance": path, "--telemetry file": telemetry}
    out = claim_target(args.out, "simulation", inputs=paths) if args.out else None
    instance = read(path)
    if not len(instance.evs) or not len(instance.trips):
        raise OptevError(f"{path}: has no fleet (evs and trips); make one with optev generate")
    if not len(instance.road.nodes):
        raise OptevError(f"{path}: has no road network to route the fleet on")
    seed = args.seed
    if seed is None:
        seed = int(instance.metadata.extra.get(GENERATE_KEY, {}).get("seed", 0))
    t0 = time.perf_counter()
    result = simulate_day(instance, config=PlantConfig(seed=seed), router=Router(instance.road),
                          telemetry=telemetry)
    elapsed = time.perf_counter() - t0
    load = feeder_load(result, instance)
    peaks = feeder_peaks(load)
    summary = simulation_summary(result, peaks)
    if out is not None:
        write_simulation(result, load, summary, out, inputs=paths)
    report = {**summary, "instance": str(path), "simulate_s": elapsed, "out": str(out) if out else None,
              "telemetry": str(telemetry) if telemetry else None}
    if args.json:
        print(json.dumps(report))
        return 0
    s = report
    print(f"instance   {instance.metadata.name} ({path}): {s['evs']:,} EVs, seed {seed}")
    print(f"sessions   {s['sessions']:,} plugged in ({s['sessions_fcs']:,} FCS, {s['sessions_scs']:,} SCS, "
          f"{s['sessions_private']:,} private), {s['censored']:,} still plugged at the end")
    print(f"rejections {s['rejections']:,} at full SCS; {s['stranded']:,} EVs stranded")
    print(f"energy     {s['grid_import_kwh']:,.1f} kWh from the grid, {s['energy_delivered_kwh']:,.1f} kWh into "
          f"batteries, {s['grid_export_kwh']:,.1f} kWh V2G; {s['driving_kwh']:,.1f} kWh driven")
    print(f"FCS wait   mean {s['fcs_wait_mean_min']:.2f} min, 95th percentile {s['fcs_wait_p95_min']:.2f} min")
    print(f"EV peak    {s['peak_load_kw']:,.1f} kW at {clock(s['peak_load_t_s'])} (all stations, "
          f"{s['resolution_s'] / 60:g}-min means)")
    width = max([len("feeder")] + [len(f["feeder"]) for f in s["feeders"]])
    print(f"  {'feeder':<{width}}  {'EV peak kW':>12}  {'at':>5}  {'EV+base kW':>12}  {'at':>5}")
    for f in s["feeders"]:
        print(f"  {f['feeder']:<{width}}  {f['ev_peak_kw']:>12,.1f}  {clock(f['ev_peak_t_s']):>5}  "
              f"{f['total_peak_kw']:>12,.1f}  {clock(f['total_peak_t_s']):>5}")
    print(f"time       {elapsed:.2f} s")
    if out is not None:
        print(f"results    {out} (sessions, ev_summary, station_series .parquet; feeder_load.csv; summary.json)")
    if telemetry is not None:
        print(f"telemetry  {telemetry}")
    return 0


EXIT_INVARIANT = 1
"""Exit code of ``optev run`` when its SOC-floor or limit checks found a violation (a bug:
they must be 0); the results are still written."""


def _cmd_run(args: argparse.Namespace) -> int:
    start = start_option(args.start, "--start")  # every option before anything is read
    step = control_step_option(args.step, "--step")
    if args.steps is not None:
        count_option(args.steps, "--steps")
    size_guard(args.steps or day_steps(step), step, args.allow_large, name="--steps", flag="--allow-large")
    outages = [outage_option(text) for text in args.outage or []]
    formulation = resolve_formulation(args.formulation)
    size_guard(horizon_option(args.horizon, step, formulation.window, "--horizon"), step, args.allow_large,
               name="--horizon", flag="--allow-large")
    service = load_service(args.service) if args.service else None
    path = Path(args.instance) if args.instance else default_instance()
    if not path.exists():
        raise OptevError(f"no instance at {str(path)!r}")
    out = claim_target(args.out or Path.cwd() / f"optev_run_{path.stem}_{formulation.name}", "run",
                       inputs={"instance": path, "formulation file": formulation.source})
    steps = args.steps if args.steps is not None else day_steps(args.step)
    bar = ProgressLine(steps, label="optev run", force=True) if wanted(json_mode=args.json,
                                                                       force=args.progress) else None

    def announce(line: str) -> None:
        """The grid's base-load verdict on stderr at the start, above the progress line."""
        if bar is not None:
            bar.close()
        print(line, file=sys.stderr)
        if bar is not None:
            bar.start()

    if bar is not None:
        bar.start()
    try:
        result = run_day(str(path), formulation, start=start, steps=steps, step=args.step, horizon=args.horizon,
                     outages=outages, progress=bar.update if bar is not None else False,
                     announce=None if args.json else announce, wrap=args.wrap, allow_large=args.allow_large,
                     service=service, **_controller_flags(args))
    finally:
        if bar is not None:
            bar.close()
    folder = result.write(out, args.format, plots=not args.no_plots)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary, allow_nan=False))
    else:
        print(result.report(folder))
    broken = int(summary.get("soc_floor_violations") or 0) + int(summary.get("limit_violations_total") or 0)
    if broken:
        print(f"optev run: {summary.get('soc_floor_violations')} SOC-floor and {summary.get('limit_violations_total')} "
              "limit violation(s) in the applied setpoints (must be 0; please report this)", file=sys.stderr)
        return EXIT_INVARIANT
    return 0


def _controller_flags(args: argparse.Namespace) -> dict[str, Any]:
    """``--forecaster`` and ``--arrival-quantile`` of ``optev run``, where given."""
    flags: dict[str, Any] = {}
    if args.forecaster:
        flags["forecaster"] = args.forecaster
    if args.history:
        flags["history"] = args.history
    if args.arrival_quantile is not None:
        flags["arrival_quantile"] = args.arrival_quantile
    return flags


def _window_flags(parser: argparse.ArgumentParser) -> None:
    """``--wrap`` and ``--allow-large`` (:mod:`optev.options`)."""
    parser.add_argument("--wrap", action="store_true",
                        help="allow a window outside the instance's time series, which then repeats (whole days)")
    parser.add_argument("--allow-large", action="store_true",
                        help="allow a window, run or horizon longer than the 7-day size guard")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="optev", description="Optimisation toolkit for large-scale EV aggregation "
                                               "and vehicle-grid interaction (T/JES 012-2026).")
    parser.add_argument("--version", action="version", version=f"optev {package_version()}",
                        help="print the version and exit")
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
    _window_flags(solve)
    solve.add_argument("--json", action="store_true", help="print one JSON object")
    solve.set_defaults(func=_cmd_solve)
    gen = sub.add_parser("generate", help="generate a city fleet on a case and write an instance folder with the "
                                          "uncontrolled baseline's sessions")
    gen.add_argument("--case", required=True, help="V2Sim case folder or instance folder with a road network")
    gen.add_argument("--evs", type=int, required=True, help="number of vehicles")
    gen.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    gen.add_argument("--mix", help="shares per class, summing to 1 (default car=0.9,bus=0.03,logistics=0.07)")
    gen.add_argument("--v2g-share", default="0.3", help="share of V2G-capable vehicles whose users opt in "
                                                         "(default 0.3)")
    gen.add_argument("--private-share", default="0.5", help="share of cars with a home charger (default 0.5)")
    gen.add_argument("--workplace-share", default="0.1", help="share of cars with a workplace charger "
                                                              "(default 0.1)")
    gen.add_argument("--step", default="15min", help="control step the sessions' targets are made reachable on "
                                                     "(default 15min)")
    gen.add_argument("--name", help="instance name (default <case>_<N>ev)")
    gen.add_argument("--no-sessions", action="store_true",
                     help="do not run the uncontrolled day (no sessions table)")
    gen.add_argument("--out", required=True, help="instance folder to write; replaced if it is already one")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.set_defaults(func=_cmd_generate)
    sim = sub.add_parser("simulate", help="simulate an uncontrolled day of an instance's fleet")
    sim.add_argument("instance", nargs="?", help=f"instance folder with a fleet (default: the embedded "
                                                 f"{DEFAULT_INSTANCE})")
    sim.add_argument("--seed", type=int, help="seed of the drivers' draws (default: the instance's generate seed)")
    sim.add_argument("--out", help="folder for sessions, EV energy accounts, station series, feeder load and "
                                   "summary; replaced if it is already a results folder")
    sim.add_argument("--telemetry", metavar="FILE", help="also write 5-s telemetry per charger to this "
                                                         ".parquet file")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.set_defaults(func=_cmd_simulate)
    run = sub.add_parser("run", help="the main job: a day of rolling-horizon control of an instance (default: the "
                                     f"embedded {DEFAULT_INSTANCE}) against its simulated fleet, checked by AC "
                                     "power flow; tables, summary, plots and a report")
    run.add_argument("instance", nargs="?", help=f"instance folder, V2Sim case or MATPOWER file with EV sessions or "
                                                 f"trips (default: the embedded {DEFAULT_INSTANCE})")
    run.add_argument("--formulation", help="formulation file, or the name of a shipped one (default city_dispatch)")
    run.add_argument("--out", help="results folder (default: ./optev_run_<instance>_<formulation>); replaced if it "
                                   "is already a results folder")
    run.add_argument("--start", help="first step: HH:MM on the instance's first day or an ISO timestamp (default: "
                                     "the instance start)")
    run.add_argument("--steps", type=int, help="number of control steps (default: one day)")
    run.add_argument("--step", default="15min", help="control interval, 1 to 15 minutes (default 15min)")
    run.add_argument("--horizon", default="8h", help="controller horizon, a duration (default 8h)")
    run.add_argument("--outage", action="append", metavar="STATION,START,END",
                     help="dispatch outage of a station (or site, or * for all) from START to END (HH:MM, ISO or "
                          "seconds); repeat for more")
    run.add_argument("--service", metavar="FILE",
                     help="deliver a grid service: a service request file, or the name of a shipped example "
                          "(formulations/services: peak_regulation, valley_filling, demand_response, ...)")
    run.add_argument("--forecaster", choices=(*BUILTIN_FORECASTERS, "learned"),
                     help="what the controller expects of the arrivals, prices and loads: seasonal (the default: "
                          "the mean day of the history), persistence (the same hours of the day before; on the "
                          "first day only the EVs plugged in) or learned (the seasonal shape at the level the "
                          "learned model forecasts from --history, default 56 simulated earlier days)")
    run.add_argument("--history", nargs="+", metavar="SESSIONS",
                     help="the learned forecaster's history: the site's past sessions (ACN CSV or an optev "
                          "sessions table), before the instance's first day")
    run.add_argument("--arrival-quantile", type=float, metavar="Q",
                     help="reserve power for the EVs arriving during each interval at this quantile of their "
                          "forecast count (e.g. 0.9; default: the mean)")
    run.add_argument("--format", choices=("csv", "parquet"), default="csv", help="table format (default csv)")
    _window_flags(run)
    run.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    run.add_argument("--progress", action="store_true",
                     help="show the progress line even when standard error is not a terminal or with --json")
    run.add_argument("--json", action="store_true", help="print one JSON object (the summary)")
    run.set_defaults(func=_cmd_run)
    add_flex_parser(sub)
    add_forecast_parser(sub)
    add_settle_parser(sub)
    add_ledger_parser(sub)
    add_audit_parser(sub)
    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optev`` console script; returns the exit code.

    Interrupts, signals, I/O errors and internal faults end as one line on stderr too
    (:mod:`optev.clean_exit`: 130, 143, 2, 1).
    """
    return run_cleanly(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        code: Any = args.func(args)
        return int(code)
    except _Exit as exc:
        return exc.code
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

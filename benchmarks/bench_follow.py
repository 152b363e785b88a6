"""Frequency-regulation signal following every 4 s for a city fleet (issue 12): time per update.

Run from the repository root::

    python benchmarks/bench_follow.py                  # Nanjing, 100,000 EVs (instances/nanjing_100k, its recipe)
    python benchmarks/bench_follow.py --instance DIR   # another instance with a sessions table
    python benchmarks/bench_follow.py --smoke          # 2,000 synthetic EVs, a few samples (seconds)
    python benchmarks/bench_follow.py --out follow.json

What is measured: the fleet plugged in at ``--at`` (default 12:00, the busiest hour) — every
session of the instance's ``sessions`` table that has arrived and not left, with its arrival
energy, need, departure and charger limits (:func:`optev.data.battery.pair_limits`), planned
in the middle of what it may do (its departure need and SOC floor respected, on the 1 kW grid),
as a plan that holds reserve would — follows one control step (15 min, 225
samples of 4 s) of the regulation test signal and of the seeded random signal with a reserve
of 10 % of its planned power each way (:func:`optev.services.follow.follow`: sharing by room,
1 kW grid, ramp, 2-s delay, battery integration, SOC floor and departure protection). Figures:
wall time per 4-s update (median and maximum over the step's samples), against the issue's goal
(:data:`GOALS`: ≤ 0.5 s per update on 2 cores), and the tracking that results (A.4 η at δ = 2 %
of the reserve, MAE). ``tests/test_benchmarks_follow_smoke.py`` runs the smoke mode (no timing
assertions). The sessions table holds the uncontrolled day's sessions, so fewer EVs are
plugged at any instant than the city has (Nanjing: about 35,000 at noon); the issue's size is
timed on :data:`SYNTHETIC_EVS` synthetic EVs as well (7 kW chargers, 30 % V2G).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file (tests/paths.py): not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

GOALS = {"update_s": 0.5}
"""Issue 12: one 4-s signal-following update of 100,000 EVs in at most 0.5 s on 2 cores."""

INTERVAL_S = 4.0
STEP_S = 900.0
RESERVE_SHARE = 0.10
DEFAULT_INSTANCE = "instances/nanjing_100k"
SYNTHETIC_EVS = 100_000


def _fleet_from_instance(path: str, at_s: float) -> tuple[Any, dict[str, Any]]:
    """The sessions plugged in at ``at_s`` as a :class:`~optev.services.follow.FleetState`."""
    from optev.data.battery import pair_limits
    from optev.io import read
    from optev.services.follow import FleetState

    inst = read(harness.instance_path(path))
    ses = inst.sessions
    plugged = ses[(ses["arrival_s"] <= at_s) & (ses["departure_s"] > at_s)]
    evs = inst.evs.set_index("ev_id").reindex(plugged["ev_id"])
    vt = inst.vehicle_types.set_index("vtype_id").reindex(evs["vtype_id"])
    power = inst.station_power().set_index("station_id").reindex(plugged["station_id"])
    lim = pair_limits(vt, power, evs["v2g_opt_in"].to_numpy(bool))
    cap = vt["battery_kwh"].to_numpy(float)
    e = plugged["soc_arrival"].to_numpy(float) * cap
    need = plugged["soc_target"].to_numpy(float) * cap
    fleet = FleetState(e_kwh=e, capacity_kwh=cap, floor_kwh=evs["soc_min"].to_numpy(float) * cap, need_kwh=need,
                       departure_s=plugged["departure_s"].to_numpy(float), p_ch_max_kw=lim.p_ch_max_kw,
                       p_dis_max_kw=lim.p_dis_max_kw, eff_ch=lim.eff_ch, eff_dis=lim.eff_dis,
                       p0_kw=np.zeros(e.size))
    return fleet, {"instance": path, "evs_in_instance": int(len(inst.evs)), "at_s": at_s}


def _synthetic_fleet(n: int, at_s: float, seed: int = 0) -> Any:
    from optev.services.follow import FleetState

    rng = np.random.default_rng(seed)
    cap = np.full(n, 60.0)
    e = rng.uniform(15.0, 50.0, n)
    need = np.minimum(e + rng.uniform(0.0, 25.0, n), cap)
    p_ch = np.full(n, 7.0)
    return FleetState(e_kwh=e, capacity_kwh=cap, floor_kwh=0.2 * cap, need_kwh=need,
                      departure_s=at_s + rng.uniform(3600.0, 30000.0, n), p_ch_max_kw=p_ch,
                      p_dis_max_kw=np.where(rng.random(n) < 0.3, 7.0, 0.0), eff_ch=np.full(n, 0.9),
                      eff_dis=np.full(n, 0.9), p0_kw=np.zeros(n))


def _timed_follow(fleet: Any, signal: np.ndarray, reserve_kw: float, t0_s: float) -> dict[str, Any]:
    """Follow ``signal`` over the step, timing each 4-s update."""
    from optev.services import appendix_a as A
    from optev.services.follow import follow

    times: list[float] = []
    out = follow(fleet, signal, reserve_kw, reserve_kw, t0_s=t0_s, interval_s=INTERVAL_S, delay_s=2.0,
                 ramp_kw_per_s=1.0, timings=times)
    return {"update_s": {"median": float(np.median(times)), "max": float(np.max(times)),
                         "total": float(np.sum(times))},
            "samples": int(signal.size), "eta_pct": A.eta_pct(out.p_act_kw, out.p_cmd_kw, 0.02 * reserve_kw),
            "mae_kw": A.mae_kw(out.p_act_kw, out.p_cmd_kw), "soc_floor_margin_kwh": out.min_floor_margin_kwh}


def _plan_with_headroom(fleet: Any, at_s: float) -> None:
    """Plan each EV in the middle of what it may do now (its departure need and floor respected),
    as a plan that holds reserve would: room to move both ways."""
    from optev.services.follow import ranges

    lo, hi = ranges(fleet, at_s, INTERVAL_S)
    fleet.p0_kw = np.round((np.maximum(lo, 0.0) + hi) / 2.0)


def run_benchmarks(smoke: bool = False, *, instance: str | None = None, at: str = "12:00",
                   log: bool = True) -> dict[str, Any]:
    """The benchmark (module docstring) as a JSON-ready dict."""
    from optev.services.signals import random_signal, regulation_test

    t_all = time.perf_counter()
    hh, mm = (int(x) for x in at.split(":"))
    at_s = hh * 3600.0 + mm * 60.0
    if smoke:
        fleet, source = _synthetic_fleet(2000, at_s), {"instance": "synthetic", "at_s": at_s}
        samples = 10
    else:
        path = instance or DEFAULT_INSTANCE
        if not harness.instance_path(path).exists():
            return {"status": "data not found", "instance": path}
        fleet, source = _fleet_from_instance(path, at_s)
        samples = int(STEP_S / INTERVAL_S)
    _plan_with_headroom(fleet, at_s)
    reserve = RESERVE_SHARE * float(fleet.p0_kw.sum())
    out: dict[str, Any] = {"status": "ok", "mode": "smoke" if smoke else "full", **source, "evs_plugged": int(fleet.e_kwh.size),
                           "planned_kw": float(fleet.p0_kw.sum()), "reserve_kw": reserve,
                           "interval_s": INTERVAL_S, "machine": harness.machine_record()}
    for name, signal in (("regulation_test", regulation_test(STEP_S, INTERVAL_S)[120 // 4:120 // 4 + samples]),
                         ("random", random_signal(STEP_S, INTERVAL_S, seed=0)[:samples])):
        out[name] = _timed_follow(fleet, signal, reserve, at_s)
        if log:
            print(f"  {name}: {out[name]['update_s']['median'] * 1e3:.1f} ms per update "
                  f"({fleet.e_kwh.size} EVs)", file=sys.stderr, flush=True)
    # the size: 100,000 plugged EVs (more than any instant of the Nanjing day has)
    big = _synthetic_fleet(SYNTHETIC_EVS if not smoke else 2000, at_s, seed=1)
    _plan_with_headroom(big, at_s)
    out["synthetic_100k"] = {"evs": int(big.e_kwh.size),
                             **_timed_follow(big, random_signal(STEP_S, INTERVAL_S, seed=0)[:samples],
                                             RESERVE_SHARE * float(big.p0_kw.sum()), at_s)}
    worst = max(out["regulation_test"]["update_s"]["max"], out["random"]["update_s"]["max"],
                out["synthetic_100k"]["update_s"]["max"])
    out["goals"] = {"update_s": {"goal": GOALS["update_s"], "value": worst, "met": worst <= GOALS["update_s"]}}
    out["elapsed_s"] = time.perf_counter() - t_all
    harness.close_machine_record(out["machine"])
    return out


def markdown_tables(results: dict[str, Any]) -> str:
    """The results as Markdown."""
    lines = [f"| {results['instance']} at {results['at_s'] / 3600:.2f} h: {results['evs_plugged']:,} EVs plugged, "
             f"reserve ±{results['reserve_kw']:,.0f} kW | regulation test | random |", "|---|---:|---:|"]
    rt, rnd = results["regulation_test"], results["random"]
    lines.append(f"| update time, median / max | {rt['update_s']['median'] * 1e3:.1f} / "
                 f"{rt['update_s']['max'] * 1e3:.1f} ms | {rnd['update_s']['median'] * 1e3:.1f} / "
                 f"{rnd['update_s']['max'] * 1e3:.1f} ms |")
    lines.append(f"| tracking η (δ = 2 % of the reserve) / MAE | {rt['eta_pct']:.1f} % / {rt['mae_kw']:.1f} kW | "
                 f"{rnd['eta_pct']:.1f} % / {rnd['mae_kw']:.1f} kW |")
    big = results["synthetic_100k"]
    lines.append(f"| {big['evs']:,} synthetic EVs (random signal): update median / max | "
                 f"{big['update_s']['median'] * 1e3:.1f} / {big['update_s']['max'] * 1e3:.1f} ms | |")
    g = results["goals"]["update_s"]
    lines += ["", "| goal | measured | met |", "|---|---:|---|",
              f"| update_s ≤ {g['goal']} | {g['value']:.4f} | {'yes' if g['met'] else 'no'} |"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (after ``--smoke`` and ``--out``)."""
    parser.add_argument("--instance", help=f"instance folder with a sessions table (default {DEFAULT_INSTANCE})")
    parser.add_argument("--at", default="12:00", help="the plugged fleet at this time, HH:MM (default 12:00)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_benchmarks` for the parsed command line."""
    return run_benchmarks(args.smoke, instance=args.instance, at=args.at, log=not args.quiet)


COMMAND = harness.Command(__doc__, add_arguments, run_from_args, markdown_tables,
                          smoke_help="2,000 synthetic EVs, ten samples (seconds)")


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); the tables on stdout, the results as JSON with ``--out``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())

"""Settling a month of a city fleet into the ledger (issue 14): time and database size.

Run from the repository root::

    python benchmarks/bench_settle.py                  # Nanjing, 30 days (instances/nanjing_100k, its recipe)
    python benchmarks/bench_settle.py --days 3         # fewer days
    python benchmarks/bench_settle.py --smoke          # the default instance, 2 days (seconds)
    python benchmarks/bench_settle.py --out settle.json

What is measured: ``--days`` days of the instance's sessions table (Nanjing: 156,727 sessions of
100,000 EVs a day), each day a new seeded draw — every arrival and departure moved by a normal
jitter of 30 min, clipped to the day —, charging uncontrolled (full charger power from arrival
until the session's uncontrolled grid energy is in) on 15-min steps at the instance's grid
prices: the per-EV power table of an optev run day (a row for every plugged EV and step), built in
memory. Each day is settled (:func:`optev.settle.settle.settle_tables`: meters, lines, prices,
postings, one transaction, reconciliation) into one SQLite ledger in a temporary folder, as
``optev settle`` does after reading a run folder. Figures: seconds per day and for the month,
the ledger's size on disk, postings and entries, the rows settled; against the issue's goal
(:data:`GOALS`: ≤ 60 s per month on 2 cores). Reading a run folder's CSV files is not in the
timing (one day's ``ev.csv`` of Nanjing would be about 300 MB).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by file (tests/paths.py): not a package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

GOALS = {"month_s": 60.0}
"""Issue 14: one month of the Nanjing fleet settled in at most 60 s on 2 cores."""

STEP_S = 900.0
JITTER_S = 1800.0
DEFAULT_INSTANCE = "instances/nanjing_100k"


def _day_tables(inst: Any, power_kw: np.ndarray, day: int) -> Any:
    """The run tables of simulated day ``day`` (module docstring)."""
    from optev.blocks.window import instance_origin
    from optev.mpc.forecast import actual_series
    from optev.settle.run import RunTables

    ses = inst.sessions
    rng = np.random.default_rng(day)
    n = len(ses)
    arr = np.clip(ses["arrival_s"].to_numpy(float) + rng.normal(0.0, JITTER_S, n), 0.0, 86400.0 - STEP_S)
    dep = np.clip(ses["departure_s"].to_numpy(float) + rng.normal(0.0, JITTER_S, n), arr + STEP_S, 86400.0)
    energy = ses["grid_baseline_kwh"].to_numpy(float) if "grid_baseline_kwh" in ses else np.full(n, 10.0)
    first, last = np.floor(arr / STEP_S).astype(np.int64), np.ceil(dep / STEP_S).astype(np.int64)
    steps = np.maximum(last - first, 1)
    row = np.repeat(np.arange(n), steps)
    k = np.arange(row.size) - np.repeat(np.cumsum(steps) - steps, steps)
    step = first[row] + k
    start = np.maximum(arr[row], step * STEP_S)
    end = np.minimum(dep[row], (step + 1) * STEP_S)
    room = np.maximum(end - start, 0.0) / 3600.0 * power_kw[row]  # kWh the charger can draw in the step
    before = np.cumsum(room) - room
    before -= np.repeat(before[np.cumsum(steps) - steps], steps)  # per session
    kwh = np.clip(energy[row] - before, 0.0, room)
    origin = instance_origin(inst) + pd.Timedelta(days=day)
    times = origin + pd.to_timedelta(step * STEP_S, unit="s")
    ev = pd.DataFrame({"ev_id": ses["ev_id"].to_numpy(object)[row],
                       "session_id": (ses["session_id"].astype(str) + f"-d{day}").to_numpy(object)[row],
                       "station_id": ses["station_id"].to_numpy(object)[row], "time": times,
                       "p_kw": kwh / (STEP_S / 3600.0)})
    grid_times = pd.date_range(origin, periods=96, freq="15min")
    prices = actual_series(inst, grid_times - pd.Timedelta(days=day))
    steps_frame = pd.DataFrame({"time": grid_times, "price_buy_per_kwh": prices.price_buy,
                                "price_sell_per_kwh": prices.price_sell})
    cost = float((steps_frame.set_index("time")["price_buy_per_kwh"].reindex(ev["time"]).to_numpy()
                  * ev["p_kw"].to_numpy()).sum() * STEP_S / 3600.0)
    summary = {"step_minutes": 15, "currency": inst.metadata.currency, "start": origin.isoformat(),
               "energy_delivered_kwh": float(kwh.sum()), "ev_energy_cost": cost}
    return RunTables(folder=Path(f"day{day:02d}"), digest=f"bench-day{day:02d}", summary=summary, ev=ev,
                     steps=steps_frame, baseline_ev=None, step=pd.Timedelta(seconds=STEP_S))


def run_benchmarks(smoke: bool = False, *, instance: str | None = None, days: int = 30,
                   log: bool = True) -> dict[str, Any]:
    """The benchmark (module docstring) as a JSON-ready dict."""
    from optev.data.battery import pair_limits
    from optev.io import read
    from optev.io.embedded import default_instance
    from optev.settle.ledger import Ledger
    from optev.settle.settle import settle_tables

    path = str(default_instance()) if smoke else harness.instance_path(instance or DEFAULT_INSTANCE)
    days = 2 if smoke else days
    inst = read(path)
    vehicles = inst.vehicle_types.set_index("vtype_id").reindex(
        inst.evs.set_index("ev_id")["vtype_id"].reindex(inst.sessions["ev_id"]).to_numpy(object)).reset_index(drop=True)
    chargers = inst.station_power().set_index("station_id").reindex(inst.sessions["station_id"]).reset_index(drop=True)
    power = pair_limits(vehicles, chargers).p_ch_max_kw
    out: dict[str, Any] = {"status": "ok", "mode": "smoke" if smoke else "full", "machine": harness.machine_record(),
                           "instance": inst.metadata.name, "sessions_per_day": int(len(inst.sessions)), "days": days,
                           "per_day": []}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ledger.db"
        ledger = Ledger(db)
        total = 0.0
        for d in range(days):
            tables = _day_tables(inst, power, d)
            t0 = time.perf_counter()
            s = settle_tables(tables, ledger)
            wall = time.perf_counter() - t0
            total += wall
            out["per_day"].append({"day": d, "rows": int(len(tables.ev)), "postings": s.postings, "settle_s": wall,
                                   "difference_wh": s.reconciliation["difference_wh"],
                                   "difference_fen": s.reconciliation["difference_fen"]})
            if log:
                print(f"  day {d + 1}/{days}: {len(tables.ev):,} rows, {s.postings:,} postings, {wall:.1f} s",
                      file=sys.stderr, flush=True)
        counts = ledger.row_counts()
        files = [db, db.with_name(db.name + "-wal")]  # what is not yet checkpointed is in the journal
        out.update(month_s=total, db_mb=sum(f.stat().st_size for f in files if f.exists()) / 1e6,
                   postings=counts["postings"],
                   entries=counts["entries"], user_lines=counts["user_lines"], users=counts["users"],
                   rows=sum(r["rows"] for r in out["per_day"]), median_day_s=float(np.median(
                       [r["settle_s"] for r in out["per_day"]])),
                   max_abs_difference_wh=max(abs(r["difference_wh"]) for r in out["per_day"]),
                   max_abs_difference_fen=max(abs(r["difference_fen"] or 0) for r in out["per_day"]))
    out["goals"] = {"month_s": {"goal": GOALS["month_s"], "value": out["month_s"] * 30 / days,
                                "met": out["month_s"] * 30 / days <= GOALS["month_s"]}}
    harness.close_machine_record(out["machine"])
    return out


def markdown_tables(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    r = results
    return "\n".join([
        "| instance | sessions a day | days | rows settled | postings | entries | user lines | median s per day | "
        "month s (30 days) | ledger MB | goal ≤ 60 s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {r['instance']} | {r['sessions_per_day']:,} | {r['days']} | {r['rows']:,} | {r['postings']:,} | "
        f"{r.get('entries', 0):,} | {r.get('user_lines', 0):,} | "
        f"{r['median_day_s']:.1f} | {r['goals']['month_s']['value']:.0f} | {r['db_mb'] * 30 / r['days']:,.0f} | "
        f"{'met' if r['goals']['month_s']['met'] else 'not met'} |"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark (after ``--smoke`` and ``--out``)."""
    parser.add_argument("--instance", help=f"instance with a sessions table (default {DEFAULT_INSTANCE})")
    parser.add_argument("--days", type=int, default=30, help="days to settle (default 30)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`run_benchmarks` for the parsed command line."""
    return run_benchmarks(args.smoke, instance=args.instance, days=args.days, log=not args.quiet)


COMMAND = harness.Command(__doc__, add_arguments, run_from_args, markdown_tables,
                          smoke_help="the default instance, 2 days (seconds)")


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); the table on stdout, the results as JSON with ``--out``."""
    return COMMAND.main(argv)


if __name__ == "__main__":
    sys.exit(main())

"""``optev flex``: adjustable-capacity curves of an instance at a decision time (R6.2.1).

::

    optev flex [INSTANCE] --at 19:00 [--horizon 24h] [--step 15min] [--scope city|region|station]
               [--id ID] [--formulation NAME] [--quantiles 0.05,0.95] [--arrival-bin 1h] [--out DIR] [--json]

Computes :func:`optev.forecast.flex.flex_curves` (every station, region and the city; the EVs of
the instance's ``sessions`` table plugged in at ``--at`` with the energy of the uncontrolled day,
plus the seasonal forecast of the arrivals) and writes into ``--out`` (default
``./optev_flex_<instance>``, a results folder replaced only if optev wrote it):

``flex.csv``      the whole table (:data:`optev.forecast.flex.COLUMNS`, times ISO 8601);
``flex.png``      the curve of ``--scope``/``--id`` (:func:`optev.report.flex_plot.flex_figure`);
``summary.json``  the headline of that curve (or of every id of the scope), the counts and options.

Standard output: a few lines ("city: can shed X kW at 19:00 for Y h …"), or one JSON object with
``--json``. Without ``--id``, a region or station scope reports its ids by the power they can shed
now (the first :data:`SHOWN` lines) and plots the first. Mistakes (a bad time, an unknown id, an
instance without sessions) are one line on stderr and exit code 2 (:mod:`optev.cli`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from optev.errors import OptionError
from optev.forecast.flex import SCOPES, flex_curves, flex_headline, flex_headlines
from optev.io import read
from optev.io.embedded import DEFAULT_INSTANCE, default_instance
from optev.io.outdir import _fsync, claim_target, output_folder
from optev.io.results import jsonable, summary_json, write_tables
from optev.options import control_step_option, duration_option, horizon_option, size_guard, start_option
from optev.report.flex_plot import flex_png
from optev.report.plots import MW_ABOVE_KW
from optev.report.run import resolve_formulation

__all__ = ["SHOWN", "add_flex_parser"]

SHOWN = 10
"""Ids listed on standard output for a region or station scope without ``--id``."""


def add_flex_parser(sub: Any) -> None:
    """Add the ``flex`` command to the sub-parsers of :func:`optev.cli.build_parser`."""
    flex = sub.add_parser("flex", help="adjustable-capacity curves: how much charging each station, region and the "
                                       "city can shed or add over the next hours, and for how long")
    flex.add_argument("instance", nargs="?", help=f"instance folder with a sessions table (default: the embedded "
                                                  f"{DEFAULT_INSTANCE})")
    flex.add_argument("--at", required=True, help="decision time: HH:MM on the instance's first day or an ISO "
                                                  "timestamp")
    flex.add_argument("--horizon", default="24h", help="length of the curves, a duration (default 24h)")
    flex.add_argument("--step", default="15min", help="step, 1 to 15 minutes (default 15min)")
    flex.add_argument("--scope", choices=SCOPES, default="city", help="curve to plot and summarise (default city)")
    flex.add_argument("--id", help="region or station id of --scope (default: every id, the largest shed plotted)")
    flex.add_argument("--formulation", help="formulation whose EV and station options apply (default "
                                            "station_v2g_aggregate)")
    flex.add_argument("--quantiles", default="0.05,0.95", metavar="LOW,HIGH",
                      help="quantiles of the forecast arrival counts of the low and high cases (default 0.05,0.95)")
    flex.add_argument("--arrival-bin", default="1h", help="time bin of the arrival counts (default 1h)")
    flex.add_argument("--out", help="results folder (default: ./optev_flex_<instance>); replaced if it is already "
                                    "a results folder")
    flex.add_argument("--allow-large", action="store_true", help="allow a horizon longer than the 7-day size guard")
    flex.add_argument("--json", action="store_true", help="print one JSON object")
    flex.set_defaults(func=_cmd_flex)


def _quantiles(text: str) -> tuple[float, float]:
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2:
        raise OptionError(f"--quantiles must be two probabilities LOW,HIGH such as 0.05,0.95, got {text!r}")
    return values[0], values[1]


def _cmd_flex(args: argparse.Namespace) -> int:
    at = start_option(args.at, "--at")  # every option before anything is read
    step = control_step_option(args.step, "--step")
    size_guard(horizon_option(args.horizon, step, {}, "--horizon"), step, args.allow_large, name="--horizon",
               flag="--allow-large")
    quantiles = _quantiles(args.quantiles)
    duration_option(args.arrival_bin, "--arrival-bin", "1h, 30min")
    formulation = resolve_formulation(args.formulation or "station_v2g_aggregate")
    path = Path(args.instance) if args.instance else default_instance()
    if not path.exists():
        raise OptionError(f"no instance at {str(path)!r}")
    inputs: dict[str, str | os.PathLike[str] | None] = {"instance": path, "formulation file": formulation.source}
    out = claim_target(args.out or Path.cwd() / f"optev_flex_{path.stem}", "results", inputs=inputs)
    instance = read(path)
    table = flex_curves(instance, at, horizon=args.horizon, step=step, arrival_quantiles=quantiles,
                        arrival_bin=args.arrival_bin, formulation=formulation)
    heads = _headlines(table, args.scope, args.id)
    png = flex_png(table, args.scope, heads[0]["id"])
    report = {"instance": str(path), "name": instance.metadata.name, **jsonable(dict(table.attrs)),
              "scope": args.scope, "headlines": heads, "plot": {"scope": args.scope, "id": heads[0]["id"]},
              "out": str(out), "files": {"flex.csv": len(table), "flex.png": 1, "summary.json": 1}}
    with output_folder(out, "results", inputs=inputs) as tmp:
        write_tables({"flex": table}, tmp, {"flex": "flex.csv"}, summary_json(report), "csv")
        (tmp / "flex.png").write_bytes(png)
        _fsync(tmp / "flex.png")
    if args.json:
        print(json.dumps(jsonable(report), allow_nan=False))
    else:
        print(_text(report))
    return 0


def _headlines(table: pd.DataFrame, scope: str, id: str | None) -> list[dict[str, Any]]:
    """The headline of ``--id`` (checked), or of every id of the scope, the largest shed first."""
    if id is not None or scope == "city":
        return [flex_headline(table, scope, id)]  # an unknown id is an OptionError naming the known ones
    heads = flex_headlines(table, scope)
    if not heads:
        raise OptionError(f"the instance has no {scope}")
    return heads


def _power(kw: float) -> str:
    return f"{kw / 1000.0:,.2f} MW" if abs(kw) > MW_ABOVE_KW else f"{kw:,.1f} kW"


def _hours(h: float) -> str:
    """A hold time; 0 (the shed lasts less than one step) as ``< 1 step``."""
    return f"{h:g} h" if h > 0 else "< 1 step"


def _span(h: dict[str, Any], key: str, show: Any) -> str:
    """``a–b`` over the low and high arrival cases (one value when they agree)."""
    lo, hi = sorted((h[f"{key}_low"], h[f"{key}_high"]))
    if abs(hi - lo) < 1e-9:
        return str(show(lo))
    low, high = str(show(lo)), str(show(hi))
    same_unit = low.split()[-1] == high.split()[-1] and low[0].isdigit()
    return f"{low.split()[0]}–{high}" if same_unit else f"{low} – {high}"


def _line(h: dict[str, Any], band: str) -> str:
    at = pd.Timestamp(h["time"]).strftime("%H:%M")
    name = "city" if h["scope"] == "city" else f"{h['scope']} {h['id']}"
    text = (f"{name}: can shed {_power(h['shed_kw'])} at {at} for {_hours(h['shed_duration_h'])} "
            f"({band}: {_span(h, 'shed_kw', _power)} for {_span(h, 'shed_duration_h', _hours)}); "
            f"raise to {_power(h['p_uncontrolled_kw'] + h['raise_kw'])} "
            f"(uncontrolled {_power(h['p_uncontrolled_kw'])}, limit {_power(h['p_ch_max_kw'])})")
    if h["p_dis_max_kw"] > 0:
        text += f"; V2G discharge up to {_power(h['p_dis_max_kw'])}"
    return text


def _text(report: dict[str, Any]) -> str:
    heads = report["headlines"]
    at = pd.Timestamp(report["at"])
    hours = report["steps"] * report["step_minutes"] / 60.0
    lines = [(f"flex       {report['name']} at {at.strftime('%Y-%m-%d %H:%M %Z')}: {report['plugged_sessions']:,} "
              f"EV session(s) plugged in, {report['forecast_sessions']:,} forecast arrival(s) "
              f"({report['forecaster']}) over {hours:g} h of {report['step_minutes']:g} min")]
    q = report["arrival_quantiles"]
    band = f"arrivals {100 * q[0]:g}–{100 * q[1]:g} %"
    lines += [_line(h, band) for h in heads[:SHOWN]]
    if len(heads) > SHOWN:
        lines.append(f"... and {len(heads) - SHOWN} more {report['scope']} id(s) in summary.json")
    top = heads[0]
    lines.append(f"need       {top['e_need_kwh']:,.1f} kWh still to charge into the EVs plugged in now "
                 f"({'city' if top['scope'] == 'city' else top['id']}); largest shed "
                 f"{_power(top['peak_shed_kw'])} at {pd.Timestamp(top['peak_shed_time']).strftime('%H:%M')} for "
                 f"{_hours(top['peak_shed_duration_h'])}")
    plot = report["plot"]
    shown = "city" if plot["scope"] == "city" else f"{plot['scope']} {plot['id']}"
    lines.append(f"results    {report['out']} (flex.csv: {report['files']['flex.csv']:,} rows; flex.png: {shown}; "
                 "summary.json)")
    return "\n".join(lines)

"""``optev forecast backtest``: rolling-origin backtest of the forecasters on a session table (R6.2.1).

::

    optev forecast backtest SESSIONS [SESSIONS ...] [--train-until DATE] [--horizon 24h[,1h]]
                            [--step 15min] [--target load|arrivals|arrival_energy]
                            [--stations ID,ID | --region ID] [--models a,b]
                            [--power-kw 6.6] [--timezone ZONE] [--country auto|US|CN|none]
                            [--refit-every 7D] --out DIR [--json]

``SESSIONS``: ACN-Data session tables (``../shared/acn/sessions/*.csv.gz``) or optev inputs with a
sessions table (:func:`optev.forecast.series.read_sessions`); ``--stations`` or ``--region``
narrows the target to those stations (a region of an optev input: one per radial feeder). Every
model of :data:`optev.forecast.models.MODELS` is trained on data strictly before each forecast origin
(:mod:`optev.forecast.backtest`). ``--out`` (a results folder, replaced only if optev wrote it)
receives:

``scores.csv``     ``model, horizon, mae, rmse, pinball, coverage_90, width_90`` (one row per
                   model and horizon; the series' unit, kW for the load);
``forecasts.csv``  every forecast: model, horizon, origin, time, lead, y, q05, q50, q95;
``series.csv``     the target series (time, value; empty where nothing was observed);
``backtest.json``  options, origins scored and skipped, fit and predict times, the learned
                   model's skill over the best naive model per horizon;
``backtest.png``   the last scored week: truth, the learned model's median and 90 % interval,
                   and the best naive model.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from optev.errors import DataError
from optev.forecast.backtest import Backtest, backtest
from optev.forecast.catalog import KNOWN_MODELS, MODELS, NAIVE
from optev.forecast.neural import torch_available
from optev.forecast.series import (ACN_POWER_KW, TARGETS, read_sessions, region_station_ids, select_stations,
                                  target_series)
from optev.io.outdir import claim_target, output_folder
from optev.io.results import jsonable
from optev.report.forecast_plot import backtest_png


def add_forecast_parser(sub: Any) -> None:
    """Register ``optev forecast backtest`` on the sub-command parsers of :mod:`optev.cli`."""
    fc = sub.add_parser("forecast", help="forecasting: backtest the forecasters on a session table")
    fsub = fc.add_subparsers(dest="forecast_command", required=True, parser_class=type(fc))
    bt = fsub.add_parser("backtest", help="rolling-origin backtest (training strictly before each origin): "
                                          "scores.csv, forecasts, plot")
    bt.add_argument("sessions", nargs="+", help="ACN-Data session table(s) (.csv/.csv.gz) or an optev input with "
                                                "a sessions table")
    bt.add_argument("--train-until", help="first forecast origin, a date or timestamp on the site's clock "
                                          "(default: the first midnight after 60 %% of the observed bins)")
    bt.add_argument("--horizon", default="24h", help="forecast horizon(s), comma-separated, each at most 24h "
                                                     "(default 24h: day-ahead from every midnight)")
    bt.add_argument("--step", default="15min", help="time bin (default 15min)")
    bt.add_argument("--target", default="load", choices=TARGETS,
                    help="aggregate uncontrolled load (kW, default), arrivals per bin, or their energy need (kWh)")
    bt.add_argument("--stations", help="forecast these stations only (comma-separated ids)")
    bt.add_argument("--region", help="forecast this region only (an optev input's region id, one per radial feeder)")
    bt.add_argument("--models", help=f"comma-separated models of {','.join(KNOWN_MODELS)} (default: "
                                     f"{','.join(MODELS)}; tcn needs the neural extra)")
    bt.add_argument("--power-kw", type=float, default=ACN_POWER_KW,
                    help=f"charging power of an ACN session, kW (default {ACN_POWER_KW})")
    bt.add_argument("--timezone", help="site time zone (default: each timestamp's own UTC offset)")
    bt.add_argument("--country", default="auto", help="holiday calendar: auto, none or a country code (US, CN, ...)")
    bt.add_argument("--refit-every", default="7D", help="time between refits (default 7D)")
    bt.add_argument("--out", required=True, help="results folder; replaced only if optev wrote it")
    bt.add_argument("--json", action="store_true", help="print one JSON object")
    bt.set_defaults(func=_cmd_backtest)


def _list(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if text is None:
        return default
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    if not items:
        raise DataError(f"empty list {text!r}")
    return items


def _cmd_backtest(args: argparse.Namespace) -> int:
    inputs = {f"sessions {i}": p for i, p in enumerate(args.sessions)}
    out = claim_target(args.out, "results", inputs=inputs)
    models = _list(args.models, MODELS)
    unknown = [m for m in models if m not in KNOWN_MODELS]
    if unknown:
        raise DataError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(KNOWN_MODELS)}")
    if "tcn" in models and not torch_available():
        raise DataError('the tcn model needs PyTorch: pip install "optev[neural]" (or leave tcn out of --models)')
    try:
        step = pd.Timedelta(args.step)
        train_until = None if args.train_until is None else pd.Timestamp(args.train_until)
        pd.Timedelta(args.refit_every)
    except ValueError as exc:
        raise DataError(f"bad --step, --train-until or --refit-every ({exc})") from None
    country = None if args.country == "none" else args.country
    sessions = read_sessions(args.sessions, power_kw=args.power_kw, timezone=args.timezone, country=country)
    if args.stations and args.region:
        raise DataError("give --stations or --region, not both")
    if args.stations:
        sessions = select_stations(sessions, _list(args.stations, ()))
    elif args.region:
        sessions = select_stations(sessions, region_station_ids(args.sessions[0], args.region))
    series = target_series(sessions, args.target, step)
    result = backtest(series, horizons=_list(args.horizon, ("24h",)), train_until=train_until, models=models,
                      country=sessions.country, refit_every=args.refit_every)
    summary = _summary(result, args, sessions.country, series)
    _write(out, result, series, summary, inputs)
    if args.json:
        print(json.dumps(jsonable(summary), indent=1, sort_keys=True, allow_nan=False))
    else:
        print(_report(result, summary))
    return 0


def _summary(result: Backtest, args: argparse.Namespace, country: str | None, series: pd.Series) -> dict[str, Any]:
    skill = {}
    for h in result.scores["horizon"].unique():
        present = set(result.scores.loc[result.scores["horizon"] == h, "model"])
        if "gbm" in present and present & set(NAIVE):
            skill[str(h)] = result.skill(str(h))
    return {"sessions": [str(Path(p)) for p in args.sessions], "stations": args.stations, "region": args.region,
            "target": args.target, "unit": _unit(args.target),
            "step": args.step, "horizons": _list(args.horizon, ("24h",)), "country": country,
            "train_until": str(result.train_until), "refit_every": args.refit_every,
            "observed_bins": int(series.notna().sum()), "origins": result.origins, "timings_s": result.timings,
            "skill_over_best_naive": skill, "scores": result.scores.to_dict(orient="records")}


def _unit(target: str) -> str:
    return {"load": "kW", "arrivals": "sessions per bin", "arrival_energy": "kWh per bin"}[target]


def _write(out: Path, result: Backtest, series: pd.Series, summary: dict[str, Any], inputs: dict[str, str]) -> None:
    with output_folder(out, "results", inputs=inputs) as tmp:
        result.scores.to_csv(tmp / "scores.csv", index=False, lineterminator="\n", float_format="%.6g")
        result.forecasts.to_csv(tmp / "forecasts.csv", index=False, lineterminator="\n", float_format="%.6g")
        series.rename("value").rename_axis("time").reset_index().to_csv(
            tmp / "series.csv", index=False, lineterminator="\n", float_format="%.6g")
        (tmp / "backtest.png").write_bytes(backtest_png(result, series, str(summary["unit"])))
        with open(tmp / "backtest.json", "w", encoding="utf-8", newline="\n") as fh:
            json.dump(jsonable(summary), fh, indent=1, sort_keys=True, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())


def _report(result: Backtest, summary: dict[str, Any]) -> str:
    lines = [f"backtest of {summary['target']} ({summary['unit']}), first origin {summary['train_until']}, "
             f"calendar {summary['country'] or 'none'}"]
    for h, group in result.scores.groupby("horizon", sort=False):
        n = result.origins[str(h)]
        lines.append(f"horizon {h}: {n['scored']} origins scored ({n['skipped']} skipped for missing data)")
        for row in group.to_dict("records"):
            lines.append(f"  {str(row['model']):<19} MAE {float(row['mae']):8.3f}  RMSE {float(row['rmse']):8.3f}  "
                         f"pinball {float(row['pinball']):7.3f}  90% coverage {100 * float(row['coverage_90']):5.1f} %  "
                         f"width {float(row['width_90']):8.3f}")
        if str(h) in summary["skill_over_best_naive"]:
            lines.append(f"  gbm skill over the best naive model: {100 * summary['skill_over_best_naive'][str(h)]:+.1f} % "
                         f"in pinball loss (positive: lower loss)")
    return "\n".join(lines)

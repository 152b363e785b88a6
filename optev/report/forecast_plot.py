"""Plot of a forecast backtest (``backtest.png`` of ``optev forecast backtest``).

One panel per horizon: the last :data:`DAYS_SHOWN` days of scored origins — the observed series,
the learned model's median with its calibrated 90 % interval, and the best naive model's median
(lowest pinball loss at that horizon) — so that a reader sees where the intervals are wide and
where the learned model departs from the naive one.
"""

from __future__ import annotations

import io

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from optev.forecast.backtest import Backtest
from optev.forecast.catalog import NAIVE

DAYS_SHOWN = 7
"""Days of scored forecasts shown per horizon."""

DPI = 110


def backtest_png(result: Backtest, series: pd.Series, unit: str, model: str = "gbm") -> bytes:
    """PNG bytes of the backtest plot (module docstring)."""
    horizons = list(dict.fromkeys(result.forecasts["horizon"]))
    fig = Figure(figsize=(10, 3.4 * max(len(horizons), 1)), layout="constrained")
    axes = fig.subplots(max(len(horizons), 1), 1, squeeze=False)[:, 0]
    for ax, h in zip(axes, horizons):
        fc = result.forecasts[result.forecasts["horizon"] == h]
        end = pd.Timestamp(fc["time"].max())
        shown = fc[pd.to_datetime(fc["time"]) > end - pd.Timedelta(days=DAYS_SHOWN)]
        truth = series[(series.index > end - pd.Timedelta(days=DAYS_SHOWN)) & (series.index <= end)]
        ax.plot(truth.index, truth.to_numpy(float), color="black", lw=1.0, label="observed")
        table = result.scores[result.scores["horizon"] == h].set_index("model")
        scores = table["pinball"]
        naive = [m for m in NAIVE if m in table.index]
        if naive:  # the lowest pinball loss; by MAE when no naive model has an interval yet
            best = min(naive, key=lambda m: (not np.isfinite(scores[m]), float(scores[m]) if np.isfinite(scores[m])
                                             else float(table.loc[m, "mae"])))
            b = shown[shown["model"] == best]
            ax.plot(pd.to_datetime(b["time"]), b["q50"], color="#ff7f0e", lw=1.0, ls="--",
                    label=f"{best} (pinball {scores[best]:.3g}, MAE {table.loc[best, 'mae']:.3g})")
        m = shown[shown["model"] == model]
        if len(m):
            t = pd.to_datetime(m["time"])
            ax.fill_between(t, m["q05"], m["q95"], color="#1f77b4", alpha=0.25, lw=0,
                            label=f"{model} 90 % interval (coverage {100 * _coverage(result, h, model):.1f} %)")
            ax.plot(t, m["q50"], color="#1f77b4", lw=1.3, label=f"{model} median (pinball {scores[model]:.3g})")
        ax.set_title(f"horizon {h}: the last {DAYS_SHOWN} days of forecasts", fontsize=9)
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b"))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _coverage(result: Backtest, horizon: str, model: str) -> float:
    row = result.scores[(result.scores["horizon"] == horizon) & (result.scores["model"] == model)]
    return float(row["coverage_90"].iloc[0]) if len(row) else float(np.nan)

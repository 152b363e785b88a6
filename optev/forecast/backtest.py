r"""Rolling-origin backtest of the forecasters, with no look-ahead (R6.2.1).

Origins
    Every ``horizon`` bins from the first bin at or after ``train_until`` (default: the first
    midnight after 60 % of the observed bins), each forecasting the next ``horizon`` bins. An
    origin is scored when its targets are all observed and every model can forecast it (at least
    a week of history: the weekly lag). A one-day horizon thus forecasts each day at its
    midnight (day-ahead); a one-hour horizon each hour from the hour before.

Training
    Every model is refitted at the first origin and then whenever ``refit_every`` has passed, on
    the observed series *strictly before that origin* (``y[:o]``); between refits it keeps its
    parameters and forecasts each origin from ``y[:o]`` only (:mod:`optev.forecast.features`
    cannot read past the slice it is given). The forecasts of an origin therefore do not change
    when anything at or after it changes (tested).

Scores (:data:`SCORE_COLUMNS`, one row per model and horizon, over every scored target bin)
    ``mae`` and ``rmse`` of the median; ``pinball`` the mean pinball loss over the quantile
    levels :data:`~optev.forecast.models.QUANTILES`,
    :math:`\frac{1}{3}\sum_q \overline{\max(q (y - \hat y_q), (q - 1)(y - \hat y_q))}`;
    ``coverage_90`` the share of bins inside the 5–95 % interval and ``width_90`` its mean width;
    the three are NaN for a model with no interval (a naive model refitted before it had the
    history to calibrate one).
    Errors are in the series' unit (kW for the load). Per-cent errors are not reported: the
    aggregate load of a car park is zero every night.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.forecast.features import Calendar
from optev.forecast.catalog import MODELS, NAIVE, make_model
from optev.forecast.models import QUANTILES, SeriesModel

SCORE_COLUMNS = ("model", "horizon", "mae", "rmse", "pinball", "coverage_90", "width_90")
"""Columns of ``scores.csv`` (the issue's interface)."""

FORECAST_COLUMNS = ("model", "horizon", "origin", "time", "lead", "y", "q05", "q50", "q95")
"""Columns of the forecasts table."""

DEFAULT_TRAIN_SHARE = 0.6
"""Share of the observed bins before the default first origin."""


@dataclass
class Backtest:
    """What :func:`backtest` measured.

    Attributes
    ----------
    scores : DataFrame
        :data:`SCORE_COLUMNS`.
    forecasts : DataFrame
        :data:`FORECAST_COLUMNS`, one row per model, origin and lead.
    timings : dict
        Per model: ``fit_s`` (all refits) and ``predict_s`` (all origins), s.
    origins : dict
        Per horizon: number of origins scored and skipped (missing data).
    train_until : Timestamp
        First origin time allowed.
    """

    scores: pd.DataFrame
    forecasts: pd.DataFrame
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    origins: dict[str, dict[str, int]] = field(default_factory=dict)
    train_until: pd.Timestamp | None = None

    def skill(self, horizon: str, model: str = "gbm") -> float:
        """1 − pinball(model) / pinball(best naive model) at ``horizon`` (0.10: 10 % lower loss)."""
        s = self.scores[self.scores["horizon"] == horizon].set_index("model")["pinball"]
        naive = [float(s[m]) for m in NAIVE if m in s.index and np.isfinite(s[m])]
        best = min(naive) if naive else float("nan")
        return 1.0 - float(s[model]) / best if best > 0 else float("nan")


def pinball(y: np.ndarray, q: np.ndarray) -> float:
    """Mean pinball loss of quantile forecasts ``q`` (n, len(QUANTILES)) of ``y`` (n,)."""
    levels = np.asarray(QUANTILES)[None, :]
    diff = y[:, None] - q
    return float(np.mean(np.maximum(levels * diff, (levels - 1.0) * diff)))


def score(y: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, pinball, coverage and width of quantile forecasts (module docstring)."""
    if not y.size:
        return {k: float("nan") for k in SCORE_COLUMNS[2:]}
    err = y - q[:, 1]
    out = {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err ** 2)))}
    if not np.isfinite(q[:, [0, 2]]).all():  # an uncalibrated naive model has no interval
        return {**out, "pinball": float("nan"), "coverage_90": float("nan"), "width_90": float("nan")}
    return {**out, "pinball": pinball(y, q), "coverage_90": float(np.mean((y >= q[:, 0]) & (y <= q[:, 2]))),
            "width_90": float(np.mean(q[:, 2] - q[:, 0]))}


def default_train_until(series: pd.Series) -> pd.Timestamp:
    """The first midnight after :data:`DEFAULT_TRAIN_SHARE` of the observed bins."""
    seen = np.flatnonzero(np.isfinite(series.to_numpy(float)))
    if not seen.size:
        raise DataError("the series has no observed bin")
    at = series.index[seen[int(DEFAULT_TRAIN_SHARE * (seen.size - 1))]]
    return at.normalize() + pd.Timedelta(days=1)


def backtest(series: pd.Series, *, horizons: Sequence[str] = ("24h",), train_until: pd.Timestamp | None = None,
             models: Sequence[str] = MODELS, country: str | None = None, refit_every: str = "7D",
             progress: bool = False) -> Backtest:
    """Rolling-origin backtest of ``models`` on ``series`` (module docstring).

    Parameters
    ----------
    series : Series
        Regular bins from a midnight (local wall clock), NaN where nothing was observed.
    horizons : sequence of str
        Forecast horizons, each at most a day and a whole number of bins.
    train_until : Timestamp, optional
        First origin (default :func:`default_train_until`).
    models : sequence of str
        Names of :data:`~optev.forecast.models.MODELS`.
    country : str, optional
        Holiday calendar.
    refit_every : str
        Time between refits.
    """
    if len(series) < 2:
        raise DataError("the series needs at least two bins")
    times = pd.DatetimeIndex(series.index)
    step = times[1] - times[0]
    cal = Calendar(times, country)
    y = series.to_numpy(float)
    first = default_train_until(series) if train_until is None else pd.Timestamp(train_until)
    if first.tz is not None:
        first = first.tz_localize(None)
    refit = pd.Timedelta(refit_every)
    scores, frames = [], []
    result = Backtest(pd.DataFrame(), pd.DataFrame(), train_until=first)
    for label in horizons:
        h = _horizon_bins(label, step, cal.per_day)
        origins, skipped = _origins(y, times, first, h, cal.per_day)
        result.origins[label] = {"scored": int(origins.size), "skipped": skipped}
        if not origins.size:
            raise DataError(f"horizon {label}: no origin after {first} has a week of history and observed targets "
                            f"(the data covers {times[0]} to {times[-1] + step})")
        for name in models:
            q = _run_model(make_model(name), y, cal, origins, h, times, refit, result.timings.setdefault(name, {}),
                           progress)
            tau = origins[:, None] + np.arange(h)[None, :]
            truth = y[tau].ravel()
            scores.append({"model": name, "horizon": label, **score(truth, q.reshape(-1, 3))})
            frames.append(pd.DataFrame({
                "model": name, "horizon": label, "origin": np.repeat(times[origins], h), "time": times[tau.ravel()],
                "lead": np.tile(np.arange(1, h + 1), origins.size), "y": truth,
                "q05": q[..., 0].ravel(), "q50": q[..., 1].ravel(), "q95": q[..., 2].ravel()}))
    result.scores = pd.DataFrame(scores, columns=list(SCORE_COLUMNS))
    result.forecasts = pd.concat(frames, ignore_index=True)[list(FORECAST_COLUMNS)]
    return result


def _horizon_bins(label: str, step: pd.Timedelta, per_day: int) -> int:
    try:
        span = pd.Timedelta(label)
    except ValueError:
        raise DataError(f"forecast horizon {label!r} is not a duration such as 24h or 1h") from None
    h = span / step
    if span <= pd.Timedelta(0) or h != int(h) or int(h) > per_day:
        raise DataError(f"forecast horizon {label!r} must be a whole number of {step} steps, at most one day")
    return int(h)


def _origins(y: np.ndarray, times: pd.DatetimeIndex, first: pd.Timestamp, h: int, per_day: int) -> tuple[np.ndarray, int]:
    """Origins every ``h`` bins from ``first`` whose targets are observed and that have a week of
    history before them; and how many were skipped."""
    start = int(times.searchsorted(first))
    cand = np.arange(start, y.size - h + 1, h)
    if not cand.size:
        return cand, 0
    seen = np.isfinite(y)
    window = np.lib.stride_tricks.sliding_window_view(seen, h)[cand].all(axis=1)
    week = cand >= 7 * per_day
    history = np.array([seen[max(o - 7 * per_day, 0):o].all() for o in cand]) & week
    keep = window & history
    return cand[keep], int((~keep).sum())


def _run_model(model: SeriesModel, y: np.ndarray, cal: Calendar, origins: np.ndarray, h: int,
               times: pd.DatetimeIndex, refit: pd.Timedelta, timing: dict[str, float], progress: bool) -> np.ndarray:
    """Quantile forecasts (origins, h, 3), refitting on ``y[:o]`` every ``refit``."""
    out = np.empty((origins.size, h, 3))
    fitted_at: pd.Timestamp | None = None
    fit_s = predict_s = 0.0
    for i, o in enumerate(origins):
        if fitted_at is None or times[o] - fitted_at >= refit:
            t0 = time.perf_counter()
            model.fit(y[:o], cal, h)
            fit_s += time.perf_counter() - t0
            fitted_at = times[o]
            if progress:
                print(f"  {model.name}: refit at {times[o]}", flush=True)
        t0 = time.perf_counter()
        out[i] = model.predict(y[:o], cal, h)
        predict_s += time.perf_counter() - t0
    timing["fit_s"] = timing.get("fit_s", 0.0) + fit_s
    timing["predict_s"] = timing.get("predict_s", 0.0) + predict_s
    return out

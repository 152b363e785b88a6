r"""Forecasters of an aggregate series behind one interface, with calibrated 90 % intervals.

Interface (:class:`SeriesModel`)
    ``fit(y_past, cal, horizon)`` learns from the observed bins ``y_past`` (everything before
    the first origin it will forecast from); ``predict(y_past, cal, horizon)`` forecasts the
    ``horizon`` bins after the end of ``y_past``: an array (horizon, 3) of the quantiles
    :data:`QUANTILES` (5 %, median, 95 %). The median is the point forecast.

Models (by name in :mod:`optev.forecast.catalog`; features in :mod:`optev.forecast.features`)
    ``persistence``
        the last observed value, held.
    ``seasonal_naive``
        the same time one week earlier.
    ``seasonal_naive_day``
        the same time on the latest day of the same day type (working day / weekend or holiday).
    ``seasonal_profile``
        the mean, at the same time of day, of the last 28 days of the same day type: the series
        counterpart of :class:`optev.mpc.forecast.SeasonalProfileForecaster`.
    ``gbm`` (the learned default)
        gradient-boosted trees (LightGBM) with the quantile (pinball) loss, one model per
        quantile, on every feature; trained on pairs (origin, target) of the training data,
        :data:`LEADS_PER_TARGET` random leads per target bin (seeded). Scale-free: the target
        and the features in the series' unit are divided by the series' recent level :math:`L_o`
        (the mean of the week before the origin, at least :data:`SCALE_FLOOR` × the training
        mean; :func:`~optev.forecast.features.recent_level`) and the forecasts multiplied back, so
        that a site whose use collapses or grows (the COVID-19 months at the ACN garages) is
        forecast from its new level at once rather than from the months before.
    ``tcn`` (optional, PyTorch)
        a small temporal convolutional network on the week before the origin, scale-free the
        same way (:mod:`optev.forecast.neural`).

Calibration (split conformal, Romano, Patterson and Candès, "Conformalized quantile
regression", NeurIPS 2019, with a local scale)
    The last :data:`CALIBRATION_DAYS` days of ``y_past`` are held out of training. On them every
    model forecasts from origins every ``horizon`` bins (as the backtest does) and scores
    :math:`s = \max(\hat q_{lo} - y,\ y - \hat q_{hi}) / \sigma_\tau` (a naive model has
    :math:`\hat q_{lo} = \hat q_{hi}` = its forecast), where :math:`\sigma_\tau` is the standard
    deviation of the same time of day over the last 28 days of the same day type plus
    :data:`SCALE_FLOOR` × the mean of the series (night bins of a car park are zero every day:
    the floor keeps their scale honest). Per lead bucket (:data:`LEAD_BUCKETS`) the interval
    becomes :math:`[\hat q_{lo} - \hat c\,\sigma_\tau,\ \hat q_{hi} + \hat c\,\sigma_\tau]` with
    :math:`\hat c` the :math:`\lceil (n+1)\,0.9\rceil / n` empirical quantile of its :math:`n`
    scores; the bounds are clipped at 0 (every target is non-negative) and the median kept
    inside them. With no calibration data (a history shorter than the calibration window plus
    a week) the learned model's raw quantiles are returned uncalibrated, and a naive model,
    which has no interval of its own, returns NaN bounds (its interval is unknown, not zero).
"""

from __future__ import annotations

import math
from typing import Any

import lightgbm
import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.forecast.features import FEATURES, SCALED, Calendar, pair_features, recent_level, spread

QUANTILES = (0.05, 0.5, 0.95)
"""Quantile levels of every forecast (a central 90 % interval and the median)."""

CALIBRATION_DAYS = 28
"""Days at the end of the training data held out for conformal calibration."""

SCALE_FLOOR = 0.1
"""Floor of the conformal scale, as a share of the series mean."""

LEAD_BUCKETS = ("1h", "4h", "12h", "24h")
"""Upper ends of the lead buckets calibrated separately."""

LEADS_PER_TARGET = 4
"""Leads drawn per target bin for the learned model's training pairs."""

MIN_TRAIN_DAYS = 14
"""Fewest observed days before the calibration window the learned model trains on."""


class SeriesModel:
    """Base of every model: the conformal calibration (module docstring) around ``_raw``."""

    name = "model"
    point_only = False
    """True for a model with no quantiles of its own (its interval comes from calibration only)."""

    def __init__(self) -> None:
        self._buckets: np.ndarray = np.zeros(0, np.int64)
        self._widths: np.ndarray = np.zeros(0)
        self._floor = 0.0
        self.calibrated = False

    def fit(self, y_past: np.ndarray, cal: Calendar, horizon: int) -> None:
        """Train on ``y_past`` less its calibration window, then calibrate on that window."""
        d = cal.per_day
        if not 1 <= horizon <= d:
            raise DataError(f"forecast horizon must be 1 to {d} bins (one day), got {horizon}")
        split = y_past.size - CALIBRATION_DAYS * d
        self._floor = SCALE_FLOOR * float(np.nanmean(y_past)) if np.isfinite(y_past).any() else 0.0
        self._floor = max(self._floor, 1e-9)
        train_end = split if split >= 7 * d else y_past.size
        self._fit_core(y_past[:train_end], cal, horizon)
        self._buckets = lead_buckets(cal, horizon)
        self._widths = np.zeros(int(self._buckets.max()) + 1)
        self.calibrated = False
        if split >= 7 * d:
            origins = np.arange(split, y_past.size - horizon + 1, horizon)
            self._calibrate(y_past, cal, origins, horizon)
            self.calibrated = origins.size > 0

    def _calibrate(self, y: np.ndarray, cal: Calendar, origins: np.ndarray, horizon: int) -> None:
        if not origins.size:
            return
        raw = self._raw(y[:origins.max()], cal, origins, horizon)
        tau = origins[:, None] + np.arange(horizon)[None, :]
        truth = y[tau]
        scale = self._scale(y[:origins.max()], cal, tau.ravel()).reshape(tau.shape)
        score = np.maximum(raw[..., 0] - truth, truth - raw[..., 2]) / scale
        for b in range(self._widths.size):
            s = score[:, self._buckets == b].ravel()
            s = s[np.isfinite(s)]
            if s.size:
                level = min(math.ceil((s.size + 1) * 0.9) / s.size, 1.0)
                self._widths[b] = float(np.quantile(s, level, method="higher"))

    def _scale(self, y_past: np.ndarray, cal: Calendar, tau: np.ndarray) -> np.ndarray:
        sd = spread(y_past, cal, tau)
        return np.where(np.isfinite(sd), sd, 0.0) + self._floor

    def predict(self, y_past: np.ndarray, cal: Calendar, horizon: int) -> np.ndarray:
        """Quantiles (horizon, 3) of the ``horizon`` bins after ``y_past`` (calibrated)."""
        origin = y_past.size
        raw = self._raw(y_past, cal, np.array([origin]), horizon)[0]
        tau = origin + np.arange(horizon)
        width = self._widths[self._buckets] * self._scale(y_past, cal, tau)
        lo = np.maximum(raw[:, 0] - width, 0.0)
        hi = np.maximum(raw[:, 2] + width, lo)
        mid = np.clip(raw[:, 1], lo, hi)
        if self.point_only and not self.calibrated:
            lo = hi = np.full(horizon, np.nan)
        return np.column_stack([lo, mid, hi])

    def _fit_core(self, y_train: np.ndarray, cal: Calendar, horizon: int) -> None:
        """Learn from ``y_train`` (nothing for a naive model)."""

    def _raw(self, y_past: np.ndarray, cal: Calendar, origins: np.ndarray, horizon: int) -> np.ndarray:
        """Uncalibrated quantiles (origins, horizon, 3); reads ``y_past`` only before each origin."""
        raise NotImplementedError


def lead_buckets(cal: Calendar, horizon: int) -> np.ndarray:
    """Bucket (index into :data:`LEAD_BUCKETS`) of each lead 1..horizon."""
    step = cal.times[1] - cal.times[0]
    ends = np.array([pd.Timedelta(b) / step for b in LEAD_BUCKETS])
    return np.searchsorted(ends, np.arange(1, horizon + 1), side="left").clip(0, len(LEAD_BUCKETS) - 1)


def pairs(origins: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (origin, target) pair of ``origins`` and the ``horizon`` bins after each, flattened."""
    tau = (origins[:, None] + np.arange(horizon)[None, :]).ravel()
    return np.repeat(origins, horizon), tau


class NaiveModel(SeriesModel):
    """A naive forecast: one feature column of :mod:`optev.forecast.features` as the forecast."""

    point_only = True

    def __init__(self, name: str, feature: str) -> None:
        super().__init__()
        self.name = name
        self.column = FEATURES.index(feature)

    def _raw(self, y_past: np.ndarray, cal: Calendar, origins: np.ndarray, horizon: int) -> np.ndarray:
        o, tau = pairs(origins, horizon)
        value = pair_features(y_past, cal, o, tau)[:, self.column].reshape(origins.size, horizon)
        return np.repeat(value[..., None], 3, axis=2)


class ScaleFreeModel(SeriesModel):
    r"""Base of the learned models: the target and the features in the series' unit over the recent
    level :math:`L_o` of each origin (module docstring, ``gbm``), and the training pairs."""

    seed = 0

    def _level(self, y_past: np.ndarray, cal: Calendar, origins: np.ndarray) -> np.ndarray:
        level = recent_level(y_past, origins, cal.per_day)
        return np.maximum(np.where(np.isfinite(level), level, self._floor), self._floor)

    @staticmethod
    def _scale_features(x: np.ndarray, level: np.ndarray) -> np.ndarray:
        cols = [FEATURES.index(f) for f in SCALED]
        x = x.copy()
        x[:, cols] /= level[:, None]
        return x

    def _training_pairs(self, y_train: np.ndarray, cal: Calendar, horizon: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pairs of the training data: origins, targets, scaled features, scaled targets and levels
        (:data:`LEADS_PER_TARGET` seeded random leads per observed target bin after the first day)."""
        d = cal.per_day
        if np.isfinite(y_train).sum() < MIN_TRAIN_DAYS * d:
            raise DataError(f"the learned model ({self.name}) needs at least {MIN_TRAIN_DAYS} observed days before "
                            f"its {CALIBRATION_DAYS}-day calibration window: start the forecasts later "
                            "(--train-until) or leave it out (--models persistence,seasonal_naive,...)")
        rng = np.random.default_rng(self.seed)
        tau = np.flatnonzero(np.isfinite(y_train))
        tau = np.repeat(tau[tau >= d], LEADS_PER_TARGET)
        origin = tau - rng.integers(1, horizon + 1, size=tau.size) + 1
        keep = origin >= 1
        origin, tau = origin[keep], tau[keep]
        level = self._level(y_train, cal, origin)
        x = self._scale_features(pair_features(y_train, cal, origin, tau), level)
        return origin, tau, x, y_train[tau] / level, level


class GradientBoostedModel(ScaleFreeModel):
    """LightGBM with the quantile loss, one booster per level of :data:`QUANTILES`."""

    name = "gbm"

    def __init__(self, *, n_estimators: int = 300, learning_rate: float = 0.05, num_leaves: int = 31,
                 seed: int = 0, threads: int = 2) -> None:
        super().__init__()
        self.params: dict[str, Any] = dict(objective="quantile", learning_rate=learning_rate, num_leaves=num_leaves,
                                           min_data_in_leaf=20, bagging_fraction=0.8, bagging_freq=1,
                                           feature_fraction=0.9, seed=seed, num_threads=threads, verbose=-1,
                                           deterministic=True)
        self.rounds = n_estimators
        self.seed = seed
        self._models: list[Any] = []

    def _fit_core(self, y_train: np.ndarray, cal: Calendar, horizon: int) -> None:
        _, _, x, target, _ = self._training_pairs(y_train, cal, horizon)
        self._models = []
        for q in QUANTILES:
            data = lightgbm.Dataset(x, label=target, feature_name=list(FEATURES), free_raw_data=False)
            self._models.append(lightgbm.train({**self.params, "alpha": q}, data, num_boost_round=self.rounds))

    def _raw(self, y_past: np.ndarray, cal: Calendar, origins: np.ndarray, horizon: int) -> np.ndarray:
        o, tau = pairs(origins, horizon)
        level = self._level(y_past, cal, o)
        x = self._scale_features(pair_features(y_past, cal, o, tau), level)
        out = np.column_stack([np.asarray(m.predict(x), float) for m in self._models]) * level[:, None]
        out.sort(axis=1)  # quantile boosters can cross
        return out.reshape(origins.size, horizon, 3)

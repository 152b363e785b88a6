"""The forecast models by name: the built-in set, the optional ones and :func:`make_model`."""

from __future__ import annotations

from optev.errors import DataError
from optev.forecast.models import GradientBoostedModel, NaiveModel, SeriesModel
from optev.forecast.neural import TemporalConvModel

MODELS = ("persistence", "seasonal_naive", "seasonal_naive_day", "seasonal_profile", "gbm")
"""Names of the built-in models, every one run by default (the learned default last)."""

OPTIONAL_MODELS = ("tcn",)
"""Models run only when asked for: ``tcn`` needs PyTorch (the ``neural`` extra)."""

KNOWN_MODELS = MODELS + OPTIONAL_MODELS
"""Every model name :func:`make_model` accepts."""

NAIVE = ("persistence", "seasonal_naive", "seasonal_naive_day")
"""The naive baselines the learned model is judged against."""

_NAIVE_FEATURE = {"persistence": "last", "seasonal_naive": "lag_week", "seasonal_naive_day": "lag_same_type",
                  "seasonal_profile": "profile"}


def make_model(name: str) -> SeriesModel:
    """A new, unfitted model of :data:`KNOWN_MODELS` by name."""
    if name in _NAIVE_FEATURE:
        return NaiveModel(name, _NAIVE_FEATURE[name])
    if name == "gbm":
        return GradientBoostedModel()
    if name == "tcn":
        return TemporalConvModel()
    raise DataError(f"unknown forecast model {name!r}; known: {', '.join(KNOWN_MODELS)}")

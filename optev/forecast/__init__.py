"""Forecasting and adjustable capacity (R6.2.1, R6.2.2.2): aggregate-series forecasters behind one
interface, a rolling-origin backtest with no look-ahead, and adjustable-capacity curves.

- :mod:`optev.forecast.series` — sessions (ACN or optev tables) → aggregate series per time bin;
- :mod:`optev.forecast.models` — persistence, seasonal naive, seasonal profile and the learned
  gradient-boosted quantile model, with conformal intervals;
- :mod:`optev.forecast.backtest` — rolling-origin backtests and their scores;
- :mod:`optev.forecast.flex` — adjustable-capacity curves per station, region and city.
"""

"""The optional neural forecaster (optev.forecast.neural, ``tcn``): runs only with PyTorch installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optev import cli_forecast
from optev.cli import main
from optev.errors import DataError
from optev.forecast import backtest as backtest_module
from optev.forecast import neural
from optev.forecast.backtest import backtest
from optev.forecast.catalog import make_model
from optev.forecast.features import Calendar
from optev.forecast.models import SeriesModel

from test_forecast_backtest import _weekly_series

needs_torch = pytest.mark.skipif(not neural.torch_available(), reason="PyTorch (optev[neural]) not installed")
FAST: dict[str, int] = dict(epochs=3, channels=4)


@needs_torch
def test_the_network_learns_a_weekly_pattern_and_its_quantiles_never_cross(monkeypatch: pytest.MonkeyPatch) -> None:
    def small(name: str) -> SeriesModel:
        return neural.TemporalConvModel(**FAST) if name == "tcn" else make_model(name)

    monkeypatch.setattr(backtest_module, "make_model", small)
    y = _weekly_series(8, seed=2)
    result = backtest(y, horizons=("24h",), train_until=pd.Timestamp("2024-02-19"),
                      models=("persistence", "seasonal_naive", "seasonal_naive_day", "tcn"), refit_every="30D")
    f = result.forecasts[result.forecasts["model"] == "tcn"]
    assert len(f) == 7 * 96
    assert (f["q05"] <= f["q50"]).all() and (f["q50"] <= f["q95"]).all() and (f["q05"] >= 0).all()
    scores = result.scores.set_index("model")
    assert scores.loc["tcn", "mae"] < scores.loc["persistence", "mae"]  # it learned the days, not the last bin
    assert 0.75 <= scores.loc["tcn", "coverage_90"] <= 1.0


@needs_torch
def test_the_network_reads_nothing_at_or_after_the_origin() -> None:
    y = _weekly_series(7, seed=3)
    cal = Calendar(pd.date_range(y.index[0], periods=len(y) + 96, freq="15min"), None)
    model = neural.TemporalConvModel(**FAST)
    v = y.to_numpy()
    origin = 6 * 7 * 96
    model.fit(v[:origin], cal, 96)
    a = model.predict(v[:origin], cal, 96)
    changed = v.copy()
    changed[origin:] = 1e6
    b = model.predict(changed[:origin], cal, 96)
    np.testing.assert_array_equal(a, b)
    c = model.predict(np.r_[v[:origin - 4], np.full(4, 500.0)], cal, 96)  # the last hour does change it
    assert not np.allclose(a, c)


def test_without_torch_the_model_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(neural, "HAVE_TORCH", False)
    with pytest.raises(DataError, match=r"optev\[neural\]"):
        make_model("tcn")


def test_cli_without_torch_refuses_tcn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli_forecast, "torch_available", lambda: False)
    src = tmp_path / "s.csv"
    src.write_text("arrival,departure,delivered_energy (kWh),station_id\n"
                   "2019-05-01 08:00-07:00,2019-05-01 09:00-07:00,1,A\n")
    assert main(["forecast", "backtest", str(src), "--models", "gbm,tcn", "--out", str(tmp_path / "o")]) == 2
    assert "optev[neural]" in capsys.readouterr().err

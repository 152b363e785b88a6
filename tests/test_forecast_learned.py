"""The learned aggregate forecast as the controller's arrival forecaster (optev.forecast.learned)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import optev
from optev.cli import main
from optev.data.instance import Instance
from optev.errors import DataError
from optev.forecast.learned import LearnedForecaster, learned_forecaster
from optev.io import read
from optev.io.embedded import default_instance
from optev.mpc.forecast import SeasonalProfileForecaster
from optev.mpc.state import ControlState, EVState

BIN = pd.Timedelta("30min")


@pytest.fixture(scope="module")
def inst() -> Instance:
    return read(str(default_instance()))


def _day_counts(inst: Instance) -> np.ndarray:
    """The instance's own arrivals per 30-min bin of its day."""
    b = (inst.sessions["arrival_s"].to_numpy(float) // BIN.total_seconds()).astype(int)
    return np.bincount(b[b < 48], minlength=48).astype(float)


def _history(inst: Instance, days: int = 50, factor: float = 1.0, seed: int = 0) -> pd.Series:
    """``days`` days before the instance of its own daily arrival shape × ``factor`` (Poisson noise)."""
    rng = np.random.default_rng(seed)
    day0 = pd.Timestamp(inst.metadata.start).normalize()
    times = pd.date_range(day0 - pd.Timedelta(days=days), day0, freq=BIN, inclusive="left")
    values = rng.poisson(np.tile(_day_counts(inst) * factor, days)).astype(float)
    return pd.Series(values, index=times, name="arrivals")


class _Scaled(SeasonalProfileForecaster):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def _bin_scale(self, instance: Instance, bin_start_s: np.ndarray, state: ControlState) -> np.ndarray:
        return np.full(np.asarray(bin_start_s).size, self.factor)


def _window(inst: Instance, hours: float = 8.0, at_s: float = 8 * 3600.0) -> tuple[pd.DatetimeIndex, ControlState]:
    origin = pd.Timestamp(inst.metadata.start).tz_localize(inst.metadata.timezone)
    times = pd.date_range(origin + pd.Timedelta(seconds=at_s), periods=int(hours * 4), freq="15min")
    return times, ControlState(time_s=at_s, evs=[])


def test_a_scale_of_one_is_the_seasonal_profile_and_a_scale_multiplies_the_arrivals(inst: Instance) -> None:
    times, state = _window(inst)
    plain = SeasonalProfileForecaster().forecast(inst, times, state).arrivals
    one = _Scaled(1.0).forecast(inst, times, state).arrivals
    pd.testing.assert_frame_equal(plain.reset_index(drop=True), one.reset_index(drop=True))
    double = _Scaled(2.0).forecast(inst, times, state).arrivals
    assert abs(len(double) - 2 * len(plain)) <= inst.stations.shape[0]  # one rounding per station at most
    assert double["session_id"].is_unique
    assert (double["arrival_s"] > state.time_s).all()


def test_the_model_level_moves_the_arrivals_and_keeps_the_shape(inst: Instance) -> None:
    times, state = _window(inst)
    seasonal = SeasonalProfileForecaster().forecast(inst, times, state).arrivals
    fc = LearnedForecaster(_history(inst, factor=1.5), model="seasonal_profile")
    fc.observe(state)
    site = fc.site_forecast(inst, state)
    hours = (site.index >= 8 * 3600) & (site.index < 16 * 3600)
    expected = _day_counts(inst)[16:32].sum() * 1.5
    assert site[hours].sum() == pytest.approx(expected, rel=0.1)
    learned = fc.forecast(inst, times, state).arrivals
    assert len(learned) == pytest.approx(1.5 * len(seasonal), rel=0.1)
    assert set(learned["station_id"]) <= set(seasonal["station_id"]) | set(inst.sessions["station_id"])


def test_the_forecast_reads_what_was_observed_and_nothing_later(inst: Instance) -> None:
    fc = LearnedForecaster(_history(inst), model="persistence")
    ev = EVState(ev_id=str(inst.evs["ev_id"].iloc[0]), station_id=str(inst.stations["station_id"].iloc[0]),
                 session_id="s1", arrival_s=8 * 3600 + 60.0, departure_s=12 * 3600.0, soc=0.4, soc_target=0.8, energy_kwh=50.0)
    fc.observe(ControlState(time_s=7 * 3600.0, evs=[]))
    fc.observe(ControlState(time_s=9 * 3600.0, evs=[ev]))
    observed = fc._observed(18)  # up to 09:00
    assert np.isnan(observed[:14]).all()  # before the first state (07:00): unknown
    assert observed[16] == 1 and np.nansum(observed) == 1
    at_9 = fc.site_forecast(inst, ControlState(time_s=9 * 3600.0, evs=[ev]))
    assert at_9.iloc[0] == 0.0  # persistence of the last observed bin (08:30, empty)
    at_830 = fc.site_forecast(inst, ControlState(time_s=8.5 * 3600.0, evs=[ev]))
    assert at_830.iloc[0] == 1.0  # the bin 08:00-08:30 holds the one arrival


@pytest.mark.parametrize("change, message", [
    (lambda h: h.tz_localize("UTC"), "local clock"),
    (lambda h: h.where(h.index != h.index[5], -1.0), "must be finite"),
    (lambda h: h.shift(30, freq="min"), "start at a midnight"),
])
def test_bad_histories_are_refused(inst: Instance, change, message: str) -> None:
    with pytest.raises(DataError, match=message):
        LearnedForecaster(change(_history(inst)))


@pytest.mark.parametrize("history, message", [
    (lambda h: h.loc[h.index < h.index[-1] - pd.Timedelta(days=10)], "more than 7 days"),
    (lambda h: h.iloc[-20 * 48:], "needs at least 42"),
])
def test_a_history_too_old_or_too_short_is_one_error(inst: Instance, history, message: str) -> None:
    fc = LearnedForecaster(history(_history(inst)))
    with pytest.raises(DataError, match=message):
        fc.site_forecast(inst, ControlState(time_s=0.0, evs=[]))


def test_the_run_uses_the_learned_forecaster(inst: Instance) -> None:
    res = optev.run(inst, forecaster="learned", history=_history(inst, days=45), steps=2, start="08:00")
    assert res.summary()["forecaster"] == "learned"
    with pytest.raises(DataError, match="learned forecaster only"):
        optev.run(inst, history=_history(inst), steps=1)


def test_cli_history_needs_the_learned_forecaster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "h.csv"
    csv.write_text("arrival,departure,delivered_energy (kWh),station_id\n"
                   "2025-12-30 08:00+08:00,2025-12-30 09:00+08:00,5,A\n")
    assert main(["run", "--history", str(csv), "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    assert "learned forecaster only" in capsys.readouterr().err
    assert main(["run", "--forecaster", "learned", "--history", str(csv), "--steps", "1",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "needs at least 42" in err and "grid:" not in err  # refused before the day is simulated


def test_cli_learned_on_simulated_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With no --history a trip-based instance gets 56 simulated earlier days of its city."""
    out = tmp_path / "run"
    assert main(["run", "--forecaster", "learned", "--steps", "1", "--start", "08:00", "--no-plots", "--json",
                 "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["forecaster"] == "learned"

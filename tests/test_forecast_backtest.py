"""Issue 13: forecasting targets from sessions, the rolling-origin backtest (no look-ahead),
calibrated intervals on held-out real data, and ``optev forecast backtest``."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optev.cli import main
from optev.errors import DataError
from optev.forecast.backtest import SCORE_COLUMNS, backtest, pinball
from optev.forecast.features import Calendar, pair_features
from optev.forecast.catalog import MODELS
from optev.forecast.series import aggregate_load, arrival_series, read_sessions
from optev.forecast.simulated import simulated_sessions
from optev.io import read
from paths import V2SIM, need

ACN = Path(__file__).resolve().parents[2] / "shared" / "acn" / "sessions"
CALTECH_SUMMER = ACN / "caltech_2019-05-01_to_2019-08-31.csv.gz"
needs_acn = pytest.mark.skipif(not CALTECH_SUMMER.exists(), reason="ACN sessions not available")


def _acn_file(tmp_path: Path, rows: list[str], name: str = "s.csv") -> Path:
    path = tmp_path / name
    path.write_text("arrival,departure,delivered_energy (kWh),station_id\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_load_holds_every_session_energy_and_follows_the_local_clock(tmp_path: Path) -> None:
    path = _acn_file(tmp_path, ["2019-05-01 08:00:00-07:00,2019-05-01 12:00:00-07:00,6.6,A",  # 1 h at 6.6 kW
                                "2019-05-01 08:30:00-07:00,2019-05-01 09:00:00-07:00,2.2,B",  # 20 min at 6.6 kW
                                "2019-05-01 10:07:30-07:00,2019-05-01 18:00:00-07:00,100.0,11900388"])
    s = read_sessions([path])
    load = aggregate_load(s, "15min")
    assert load.index[0] == pd.Timestamp("2019-05-01 00:00") and len(load) == 96
    # A: 08:00-09:00 at 6.6 kW; B: 6.6 kW from 08:30 to 08:50
    assert load["2019-05-01 08:00"] == pytest.approx(6.6)
    assert load["2019-05-01 08:30"] == pytest.approx(13.2) and load["2019-05-01 08:45"] == pytest.approx(6.6 + 6.6 / 3)
    assert load["2019-05-01 09:00"] == pytest.approx(0.0)
    # the third starts mid-bin; 100 kWh in 7.875 h needs more than 6.6 kW: a DC session at its mean power
    assert load["2019-05-01 10:00"] == pytest.approx(100 / 7.875 * 0.5, abs=1e-3)  # rounded to 1 W
    assert load.sum() * 0.25 == pytest.approx(6.6 + 2.2 + 100.0, abs=0.01)
    assert arrival_series(s, "1h")["2019-05-01 08:00"] == 2


def test_bad_session_rows_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="row 1.*delivered_energy"):
        read_sessions([_acn_file(tmp_path, ["2019-05-01 08:00-07:00,2019-05-01 09:00-07:00,1,A",
                                            "2019-05-01 08:00-07:00,2019-05-01 09:00-07:00,nan,A"])])
    with pytest.raises(DataError, match="departure before arrival"):
        read_sessions([_acn_file(tmp_path, ["2019-05-01 08:00-07:00,2019-05-01 07:00-07:00,1,A"])])
    with pytest.raises(DataError, match="not a timestamp"):
        read_sessions([_acn_file(tmp_path, ["yesterday,2019-05-01 07:00-07:00,1,A"])])
    with pytest.raises(DataError, match="missing column"):
        path = tmp_path / "x.csv"
        path.write_text("a,b\n1,2\n", encoding="utf-8")
        read_sessions([path])


def test_bins_between_files_are_unknown_not_zero(tmp_path: Path) -> None:
    a = _acn_file(tmp_path, ["2019-05-01 08:00-07:00,2019-05-01 09:00-07:00,1,A"], "a.csv")
    b = _acn_file(tmp_path, ["2019-05-04 08:00-07:00,2019-05-04 09:00-07:00,1,A"], "b.csv")
    load = aggregate_load(read_sessions([a, b]), "1h")
    assert load["2019-05-01"].notna().all() and load["2019-05-02":"2019-05-03"].isna().all()
    assert load["2019-05-04"].notna().all()


def _weekly_series(weeks: int = 9, seed: int = 0) -> pd.Series:
    times = pd.date_range("2024-01-01", periods=weeks * 7 * 96, freq="15min")
    hour = times.hour.to_numpy() + times.minute.to_numpy() / 60
    day = np.exp(-0.5 * ((hour - 10.0) / 2.5) ** 2) * np.where(times.dayofweek < 5, 60.0, 15.0)
    rng = np.random.default_rng(seed)
    return pd.Series(np.maximum(day * rng.lognormal(0.0, 0.25, len(times)), 0.0), index=times)


def test_no_look_ahead_the_future_cannot_change_a_forecast() -> None:
    """Forecasts made at origins before T must not change when everything from T on changes."""
    y = _weekly_series()
    cut = pd.Timestamp("2024-02-26")  # a Monday after the first origins
    z = y.copy()
    z[z.index >= cut] = z[z.index >= cut] * 5.0 + 100.0
    kw = dict(horizons=("24h", "1h"), train_until=pd.Timestamp("2024-02-19"), refit_every="3D")
    a, b = backtest(y, **kw), backtest(z, **kw)  # type: ignore[arg-type]
    for frame in (a.forecasts, b.forecasts):
        assert set(frame["model"]) == set(MODELS)
    before = a.forecasts["origin"] < cut
    assert before.sum() > 0 and (~before).sum() > 0
    cols = ["q05", "q50", "q95"]
    np.testing.assert_array_equal(a.forecasts.loc[before, cols].to_numpy(), b.forecasts.loc[before, cols].to_numpy())
    # and the test can fail: forecasts from origins after T do see the change
    assert not np.allclose(a.forecasts.loc[~before, "q50"].to_numpy(), b.forecasts.loc[~before, "q50"].to_numpy())


def test_the_learned_model_is_scale_free() -> None:
    """The same site at ten times the load gets ten times the forecasts and interval: the learned
    model works on the series over its recent level (a site whose use collapses is forecast from
    its new level)."""
    y = _weekly_series(8, seed=1)
    kw = dict(horizons=("24h",), train_until=pd.Timestamp("2024-02-19"), models=("gbm",), refit_every="30D")
    a, b = backtest(y, **kw), backtest(10.0 * y, **kw)  # type: ignore[arg-type]
    cols = ["q05", "q50", "q95"]
    np.testing.assert_allclose(b.forecasts[cols].to_numpy(), 10.0 * a.forecasts[cols].to_numpy(), rtol=1e-6,
                               atol=1e-9)


def test_features_cannot_read_at_or_after_the_origin() -> None:
    y = _weekly_series(3).to_numpy()
    cal = Calendar(_weekly_series(3).index, None)
    o = 14 * 96
    ok = pair_features(y[:o], cal, np.array([o]), np.array([o + 95]))
    assert ok.shape == (1, 11)
    with pytest.raises(IndexError):
        pair_features(y[:o], cal, np.array([o + 1]), np.array([o + 1]))


def test_pinball_of_a_perfect_forecast_is_zero_and_grows_with_error() -> None:
    y = np.array([1.0, 2.0])
    assert pinball(y, np.repeat(y[:, None], 3, axis=1)) == 0.0
    # the median off by 1: 0.5 per point; the 5 % quantile 1 above: 0.95; the 95 % 1 below: 0.95
    assert pinball(np.array([0.0]), np.array([[1.0, 1.0, -1.0]])) == pytest.approx((0.95 + 0.5 + 0.95) / 3)


@needs_acn
def test_calibrated_intervals_cover_90_percent_of_a_held_out_month() -> None:
    """Issue 13 acceptance: a calibrated 90 % interval covers 85-95 % of a held-out period (August
    2019 at Caltech, trained on May-July), and the learned model beats the naive ones day-ahead."""
    s = read_sessions([CALTECH_SUMMER])
    result = backtest(aggregate_load(s), horizons=("24h",), train_until=pd.Timestamp("2019-08-01"),
                      country=s.country, refit_every="60D")
    scores = result.scores.set_index("model")
    assert list(result.scores.columns) == list(SCORE_COLUMNS)
    assert result.origins["24h"]["scored"] == 31
    for model in MODELS:
        assert 0.85 <= scores.loc[model, "coverage_90"] <= 0.95, (model, scores.loc[model].to_dict())
    assert result.skill("24h") >= 0.10, scores  # the goal


@needs_acn
def test_cli_writes_the_scores_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bt"
    args = ["forecast", "backtest", str(CALTECH_SUMMER), "--train-until", "2019-08-20", "--horizon", "24h,1h",
            "--models", "persistence,seasonal_naive", "--out", str(out)]
    assert main(args) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns) == list(SCORE_COLUMNS) and len(scores) == 4
    assert set(scores["horizon"]) == {"24h", "1h"}
    assert "horizon 1h" in capsys.readouterr().out
    assert (out / "backtest.png").read_bytes()[:4] == b"\x89PNG"
    forecasts = pd.read_csv(out / "forecasts.csv")
    assert (pd.to_datetime(forecasts["time"]) >= pd.to_datetime(forecasts["origin"])).all()
    assert main(args) == 0  # its own folder is replaced


@pytest.mark.parametrize("extra, message", [(["--horizon", "48h"], "at most one day"),
                                            (["--models", "oracle"], "unknown model"),
                                            (["--train-until", "2030-01-01"], "no origin")])
@needs_acn
def test_cli_mistakes_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                           message: str) -> None:
    code = main(["forecast", "backtest", str(CALTECH_SUMMER), "--out", str(tmp_path / "o"),
                 "--models", "persistence", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_a_folder_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "s.csv.gz"
    with gzip.open(src, "wt", encoding="utf-8") as fh:
        fh.write("arrival,departure,delivered_energy (kWh),station_id\n2019-05-01 08:00-07:00,2019-05-01 09:00-07:00,1,A\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep", encoding="utf-8")
    assert main(["forecast", "backtest", str(src), "--out", str(mine)]) == 2
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep"


def test_a_station_target_keeps_the_covered_days(tmp_path: Path) -> None:
    path = _acn_file(tmp_path, ["2019-05-01 08:00-07:00,2019-05-01 09:00-07:00,6.6,A",
                                "2019-05-03 08:00-07:00,2019-05-03 09:00-07:00,6.6,B"])
    from optev.forecast.series import select_stations

    s = select_stations(read_sessions([path]), ["A"])
    load = aggregate_load(s, "1h")
    assert load.sum() == pytest.approx(6.6) and load["2019-05-03"].notna().all()  # B's day: zero, not unknown
    with pytest.raises(DataError, match="no session at station"):
        select_stations(read_sessions([path]), ["Z"])


def test_simulated_days_vary_and_follow_the_calendar() -> None:
    """Each simulated day is its own draw of the fleet's travel (weekday or weekend statistics)."""
    case = read(str(need(V2SIM / "ux_12nodes")))  # skips where the shared data is not beside the clone
    s = simulated_sessions(case, 150, 3, start="2026-01-09", seed=3)  # Friday, Saturday, Sunday
    load = aggregate_load(s, "1h")
    assert len(load) == 72 and load.notna().all() and (load >= 0).all()
    days = [load[f"2026-01-{d:02d}"].to_numpy() for d in (9, 10, 11)]
    assert not np.allclose(days[1], days[2])  # two weekend days, two draws
    assert s.table["energy_kwh"].gt(0).all() and (s.table["departure"] >= s.table["arrival"]).all()
    assert s.country == "CN"


def test_an_optev_instance_is_a_session_source() -> None:
    """An optev instance's sessions: the grid energy from arrival to target SOC over the pair's
    charging efficiency, the EV-charger pair's power limit, the Chinese calendar."""
    from optev.data.battery import pair_limits
    from optev.io import read
    from optev.io.embedded import default_instance

    path = default_instance()
    s = read_sessions([path])
    inst = read(str(path))
    ses = inst.sessions
    assert s.country == "CN" and len(s.table) == len(ses)
    vt = inst.vehicle_types.set_index("vtype_id").reindex(
        inst.evs.set_index("ev_id").loc[ses["ev_id"], "vtype_id"].to_numpy()).reset_index(drop=True)
    ch = inst.station_power().set_index("station_id").reindex(ses["station_id"]).reset_index(drop=True)
    lim = pair_limits(vt, ch)
    want = (ses["soc_target"] - ses["soc_arrival"]).clip(lower=0).to_numpy() * vt["battery_kwh"].to_numpy() / lim.eff_ch
    # the table is sorted by arrival: compare as multisets
    np.testing.assert_allclose(np.sort(s.table["energy_kwh"].to_numpy()), np.sort(want))
    np.testing.assert_allclose(np.sort(s.table["p_max_kw"].to_numpy()), np.sort(lim.p_ch_max_kw))
    with pytest.raises(DataError, match="no origin"):  # one day: no week of history before any origin
        backtest(aggregate_load(s), horizons=("24h",), models=("persistence",))

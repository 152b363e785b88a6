"""Frequency regulation: signals, the 4-s follower, the AGC indices, and a run end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from optev.data.synthetic import synthetic_charging_instance
from optev.errors import DataError
from optev.services.follow import FleetState, follow, ramp, ranges, round_to_grid
from optev.services.market import performance
from optev.services.presets import preset
from optev.services.request import parse_service
from optev.services.run import run_service
from optev.services.signals import droop_signal, make_frequency, random_signal, read_signal, regulation_test
from optev.tolerances import ABS_TOL_KW


def test_regulation_test_signal_shape() -> None:
    s = regulation_test(3600.0, 4.0)
    assert s.size == 900 and np.abs(s).max() <= 1.0
    assert s[0] == 0.0 and s[int(300 / 4)] == 1.0 and s[int(700 / 4)] == -1.0
    # the ramps run at 100 % per minute: one 4-s sample moves the signal by 1/15
    ramp = np.diff(s[int(120 / 4):int(180 / 4)])
    assert np.allclose(ramp, 4.0 / 60.0)
    assert set(np.round(s[int(1200 / 4):int(1800 / 4)], 6)) == {0.5, -0.5}


def test_random_signal_is_seeded_and_bounded() -> None:
    a, b = random_signal(600.0, 4.0, seed=3), random_signal(600.0, 4.0, seed=3)
    assert np.array_equal(a, b) and np.abs(a).max() <= 1.0 and not np.array_equal(a, random_signal(600.0, 4.0, 4))


def test_signal_csv_is_validated_and_sampled(tmp_path: Path) -> None:
    good = tmp_path / "s.csv"
    good.write_text("time_s,signal\n0,0.0\n10,0.5\n20,-1.0\n", encoding="utf-8")
    assert read_signal(good, 24.0, 4.0).tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, -1.0]
    bad = tmp_path / "b.csv"
    bad.write_text("time_s,signal\n0,0.0\n10,1.5\n", encoding="utf-8")
    with pytest.raises(DataError, match="signal must lie in"):
        read_signal(bad, 20.0)


def _fleet(n: int = 10, p0: float = 3.0) -> FleetState:
    return FleetState(e_kwh=np.full(n, 30.0), capacity_kwh=np.full(n, 60.0), floor_kwh=np.full(n, 12.0),
                      need_kwh=np.full(n, 40.0), departure_s=np.full(n, 8 * 3600.0), p_ch_max_kw=np.full(n, 7.0),
                      p_dis_max_kw=np.full(n, 7.0), eff_ch=np.full(n, 0.9), eff_dis=np.full(n, 0.9),
                      p0_kw=np.full(n, p0))


def test_ranges_protect_the_departure_need_and_the_floor() -> None:
    f = _fleet(3)
    f.departure_s = np.array([8 * 3600.0, 1800.0, 8 * 3600.0])  # the second leaves in half an hour
    f.e_kwh = np.array([30.0, 34.0, 12.0])                        # the third sits at its floor
    lo, hi = ranges(f, 0.0, 4.0)
    assert lo[0] == -7.0 and hi[0] == 7.0
    assert lo[1] == 7.0  # 6 kWh short and 3.15 kWh in half an hour at full power: full power now
    assert lo[2] == 0.0  # no discharge below the floor (R6.1.5)


def test_ranges_hold_for_the_whole_sample_near_the_floor_and_full() -> None:
    """A battery 2 Wh above its floor cannot discharge 7 kW for 4 s (7.8 Wh): the range is what
    reaches the floor exactly, so the shared setpoint is never clipped by the plant."""
    f = _fleet(2)
    f.e_kwh = np.array([12.002, 59.999])
    lo, hi = ranges(f, 0.0, 4.0)
    assert lo[0] == pytest.approx(-0.002 * 0.9 * 3600.0 / 4.0)   # -1.62 kW
    assert hi[1] == pytest.approx(0.001 / 0.9 * 3600.0 / 4.0)    # 1.0 kW fills it
    assert hi[0] == 7.0 and lo[1] == -7.0


def test_round_to_grid_keeps_the_total() -> None:
    target = np.array([2.4, 2.4, 2.4, 6.6])
    out = round_to_grid(target, np.zeros(4), np.array([7.0, 7.0, 7.0, 6.6]), 13.8)
    assert np.isclose(out.sum(), 13.6, atol=1.0) and out[3] == 6.6 and np.allclose(out[:3] % 1.0, 0.0)


def test_the_fleet_follows_a_slow_signal_within_the_band() -> None:
    f = _fleet(20)
    signal = 0.5 * np.sin(np.linspace(0.0, 2.0 * np.pi, 225))  # slow: 15 min per period
    out = follow(f, signal, 40.0, 40.0, t0_s=0.0, interval_s=4.0, delay_s=0.0, ramp_kw_per_s=1.0)
    assert np.abs(out.p_act_kw - out.p_cmd_kw).max() <= 1.0 + ABS_TOL_KW  # one quantum
    assert out.min_floor_margin_kwh > 0.0


def test_a_delay_costs_tracking_on_steps() -> None:
    f = _fleet(20)
    signal = np.r_[np.zeros(10), np.ones(10) * 0.5]  # a 20 kW step down at sample 10
    kw = dict(t0_s=0.0, interval_s=4.0, ramp_kw_per_s=10.0)
    on_time = follow(f, signal, 40.0, 40.0, delay_s=0.0, **kw)
    late = follow(f, signal, 40.0, 40.0, delay_s=2.0, judge_s=5.0, **kw)
    early = follow(f, signal, 40.0, 40.0, delay_s=2.0, judge_s=1.0, **kw)
    err = lambda p, o: np.abs(p - o.p_cmd_kw)  # noqa: E731
    assert err(on_time.p_act_kw, on_time).max() <= 1.0 + ABS_TOL_KW
    # the command arrives 2 s into its 4-s sample: the sample's mean power misses half the step ...
    assert err(late.p_mean_kw, late)[10] == pytest.approx(10.0, abs=1.0)
    # ... judged T0 = 5 s after the command (at the end of its sample) the fleet has moved
    assert err(late.p_act_kw, late).max() <= 1.0 + ABS_TOL_KW
    # judged 1 s after the command, before it arrived, the whole step is missed
    assert err(early.p_act_kw, early)[10] == pytest.approx(20.0, abs=1.0)


def test_ramp_is_linear_then_flat() -> None:
    end, mean = ramp(np.array([0.0, 0.0, 5.0]), np.array([4.0, 10.0, 5.0]), 2.0, 4.0)
    assert end.tolist() == [4.0, 8.0, 5.0]
    # 0 → 4 in 2 s (mean 2), then 2 s at 4: mean 3; 0 → 8 over 4 s: mean 4; no change: 5
    assert mean == pytest.approx([3.0, 4.0, 5.0])


def test_agc_indices() -> None:
    rule = preset("hn_fr_2025")
    rule = rule.with_overrides({"price": 10.0})
    perf = performance(rule, offered_kw=100.0, ramp_kw_per_min=200.0, response_s=5.0, mae_kw=1.0,
                       mileage_kw=2000.0)
    assert perf.k1 == pytest.approx(2.0) and perf.k2 == pytest.approx(1.0) and perf.k3 == pytest.approx(2.0)
    assert perf.k == pytest.approx(min(0.4 * 2 + 0.3 * 1 + 0.3 * 2, 2.0))
    assert perf.pay == pytest.approx(2.0 * 10.0 * perf.k)
    product = preset("js_fr").with_overrides({"price": 10.0})
    assert performance(product, offered_kw=100.0, ramp_kw_per_min=100.0, response_s=10.0, mae_kw=1.0,
                       mileage_kw=1000.0).k == pytest.approx(1.0 * 0.5)


def test_a_regulation_hour_end_to_end() -> None:
    inst = synthetic_charging_instance(40, seed=2, hours=24.0)
    req = parse_service({"service": {"id": "f", "product": "frequency_secondary", "rule": "hn_fr_2025"},
                         "window": {"start": "19:00", "end": "20:00"},
                         "quantity": {"reserve_up_kw": 20.0, "reserve_down_kw": 20.0, "signal": "random",
                                      "seed": 1}, "rule": {"price": 8.0}})
    sr = run_service(inst, req, "station_v2g", start="18:00", steps=12, horizon="4h", ac_check=False)
    a = sr.summary()["appendix_a"]
    assert a["mae_kw"] is not None and a["eta"] is not None and 0.0 <= a["eta"] <= 100.0
    assert len(sr.outcome.series) == 900  # one hour of 4-s samples
    rec = sr.outcome.records.iloc[0]
    assert "K=" in rec["data_quality"] and "soc_floor_margin_kwh=" in rec["data_quality"]
    margin = float(rec["data_quality"].split("soc_floor_margin_kwh=")[1])
    assert margin >= 0.0  # never below an SOC floor (R6.1.5)
    series = pd.DataFrame(sr.outcome.series)
    assert series["time"].is_monotonic_increasing


def test_droop_response_to_a_frequency_trace() -> None:
    hz = np.array([50.0, 49.98, 49.8, 49.5, 50.1, 50.3])
    s = droop_signal(hz, 0.2, 0.033)
    assert s[0] == 0.0 and s[1] == 0.0  # inside the dead band
    assert s[2] == pytest.approx((0.2 - 0.033) / 0.2)  # low frequency: less consumption
    assert s[3] == 1.0 and s[5] == -1.0  # the whole reserve, clipped
    assert s[4] == pytest.approx(-(0.1 - 0.033) / 0.2)


def test_frequency_trace_csv(tmp_path: Path) -> None:
    good = tmp_path / "f.csv"
    good.write_text("time_s,frequency_hz\n0,50.0\n8,49.9\n", encoding="utf-8")
    assert make_frequency(str(good), 16.0, 4.0).tolist() == [50.0, 50.0, 49.9, 49.9]
    bad = tmp_path / "g.csv"
    bad.write_text("time_s,frequency_hz\n0,60.0\n", encoding="utf-8")
    with pytest.raises(DataError, match="not a frequency near 50 Hz"):
        make_frequency(str(bad), 8.0)


def test_the_default_fleet_passes_the_regulation_test() -> None:
    """Issue 12 acceptance: one hour of the regulation test signal on the embedded default fleet,
    η ≥ 95 % at δ = 2 % of the offered reserve, never below an SOC floor."""
    from optev.io import read
    from optev.io.embedded import default_instance
    from optev.services.request import load_service

    inst = read(default_instance())
    sr = run_service(inst, load_service("frequency_secondary"), "city_dispatch", start="13:00", steps=12,
                     horizon="4h")
    a = sr.summary()["appendix_a"]
    assert a["eta"] >= 95.0, a
    margin = float(sr.outcome.records.iloc[0]["data_quality"].split("soc_floor_margin_kwh=")[1])
    assert margin >= 0.0 and sr.run.summary["soc_floor_violations"] == 0
    _assert_the_plot_shows_the_tolerance_band(sr)


def _assert_the_plot_shows_the_tolerance_band(sr: Any) -> None:
    """Issue 12 deliverable 7: signal vs response with A.4's band command ± δ, δ = E0 × offered reserve."""
    import matplotlib.pyplot as plt

    from optev.report.plots import service_response

    q = sr.request.quantity
    delta = sr.request.rule.error_band_pct / 100.0 * max(q["reserve_up_kw"], q["reserve_down_kw"])
    summary = sr.summary()
    assert summary["service"]["tolerance_kw"] == pytest.approx(delta)
    fig = service_response({"service_series": sr.outcome.series}, summary)
    try:
        bands = [c for c in fig.axes[0].collections if str(c.get_label()).startswith("tolerance ±δ")]
        assert len(bands) == 1
        path = bands[0].get_paths()[0].vertices
        cmd = sr.outcome.series["p_base_kw"].to_numpy(float)
        scale = 1000.0 if "MW" in bands[0].get_label() else 1.0
        assert path[:, 1].max() == pytest.approx((cmd.max() + delta) / scale)
        assert path[:, 1].min() == pytest.approx((cmd.min() - delta) / scale)
        # the error panel: ±δ around zero, and the samples outside it are the ones η does not count
        error_band = [c for c in fig.axes[1].collections if str(c.get_label()).startswith("tolerance ±δ")]
        assert np.abs(error_band[0].get_paths()[0].vertices[:, 1]).max() == pytest.approx(delta)
        outside = [ln.get_label() for ln in fig.axes[1].lines if ln.get_label().startswith("outside the band")]
        n = len(sr.outcome.series)
        missed = int(outside[0].split(": ")[1].split(" of ")[0]) if outside else 0
        assert 100.0 * (n - missed) / n == pytest.approx(summary["appendix_a"]["eta"])
    finally:
        plt.close(fig)

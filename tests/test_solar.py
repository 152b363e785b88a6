"""Clear-sky PV availability (optev.data.solar), the PV profile of the embedded default city."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optev.data.solar import clear_sky_pv
from optev.errors import DataError

NANJING = (32.06, 118.78)


def test_nanjing_winter_day() -> None:
    times = pd.date_range("2026-01-01T00:00", periods=96, freq="15min", tz="Asia/Shanghai")
    a = clear_sky_pv(times, *NANJING)
    hours = times.hour + times.minute / 60.0 + 0.125  # middle of each step
    assert np.all(a[(hours < 7.0) | (hours > 17.5)] == 0.0)  # night (sunrise ~07:05, sunset ~17:15)
    assert np.all((a >= 0.0) & (a <= 1.0))
    noon = hours[np.argmax(a)]
    assert 11.5 < noon < 12.75  # solar noon: 12:00 + 4 min × (120° − 118.78°) − equation of time
    # winter noon: zenith ≈ 32° + 23° = 55°, Haurwitz ≈ 1098·cos·e^(−0.057/cos) ≈ 570 W/m², × PR 0.8
    assert a.max() == pytest.approx(0.8 * 1098 * np.cos(np.deg2rad(55.1)) * np.exp(-0.057 / np.cos(np.deg2rad(55.1)))
                                    / 1000.0, rel=0.03)


def test_summer_gives_more_than_winter_and_the_equator_more_than_the_north() -> None:
    june = pd.date_range("2026-06-21T00:00", periods=96, freq="15min", tz="Asia/Shanghai")
    jan = pd.date_range("2026-01-01T00:00", periods=96, freq="15min", tz="Asia/Shanghai")
    assert clear_sky_pv(june, *NANJING).sum() > 1.5 * clear_sky_pv(jan, *NANJING).sum()
    assert clear_sky_pv(jan, 0.0, 120.0).sum() > clear_sky_pv(jan, 50.0, 120.0).sum()


def test_bad_arguments() -> None:
    naive = pd.date_range("2026-01-01", periods=4, freq="1h")
    with pytest.raises(DataError, match="timezone"):
        clear_sky_pv(naive, *NANJING)
    aware = naive.tz_localize("UTC")
    with pytest.raises(DataError, match="latitude"):
        clear_sky_pv(aware, 95.0, 0.0)
    with pytest.raises(DataError, match="performance_ratio"):
        clear_sky_pv(aware, 30.0, 0.0, performance_ratio=1.5)

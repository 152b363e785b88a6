"""Window arrays: time-of-use station tariffs, whole-step plugging, terminal condition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optev.blocks.window import build_window
from optev.data.synthetic import synthetic_charging_instance
from optev.testing import RTOL_EXACT


def test_station_tariffs_follow_time_of_use_items() -> None:
    inst = synthetic_charging_instance(4, seed=0, n_stations=2)
    sid = inst.stations["station_id"].tolist()
    inst.station_tariffs = pd.DataFrame({
        "station_id": [sid[0], sid[0], sid[0]], "direction": ["buy", "buy", "sell"],
        "start_s": [8 * 3600.0, 20 * 3600.0, 0.0], "price_per_kwh": [1.5, 0.9, 0.4]})
    from optev.data.instance import Instance
    inst = Instance(**{k: getattr(inst, k) for k in inst.__dataclass_fields__})
    w = build_window(inst, steps=96, step="15min")
    hours = np.arange(96) / 4
    # before the first item (00:00–08:00) the first item applies: the profile repeats daily
    expected = np.where(hours < 20, 1.5, 0.9)
    np.testing.assert_allclose(w.stations.price_buy[0], expected, rtol=RTOL_EXACT)
    np.testing.assert_allclose(w.stations.price_sell[0], 0.4, rtol=RTOL_EXACT)
    # a station without items pays the grid price
    np.testing.assert_allclose(w.stations.price_buy[1], w.price_buy, rtol=RTOL_EXACT)


def test_sessions_count_only_whole_steps() -> None:
    inst = synthetic_charging_instance(1, seed=0)
    inst.sessions.loc[0, ["arrival_s", "departure_s"]] = [10 * 60.0, 70 * 60.0]  # 00:10–01:10
    w = build_window(inst, steps=8, step="15min")
    # whole steps inside [00:10, 01:10]: 00:15, 00:30, 00:45
    assert w.evs.plugged[0].tolist() == [0, 1, 1, 1, 0, 0, 0, 0]
    assert (w.evs.arrival_step[0], w.evs.departure_step[0]) == (1, 3)


def test_terminal_condition_for_an_ev_leaving_after_the_window() -> None:
    inst = synthetic_charging_instance(1, seed=0)
    inst.sessions.loc[0, ["arrival_s", "departure_s", "soc_arrival", "soc_target"]] = [0.0, 4 * 3600.0, 0.2, 0.9]
    w = build_window(inst, steps=8, step="15min", quantum_kw=None)  # 2 h window, EV stays 2 h more
    ev = w.evs
    after_h = 2.0
    expected = 0.9 * ev.capacity_kwh[0] - ev.eff_ch[0] * ev.p_ch_max_kw[0] * after_h
    assert ev.e_need_kwh[0] == pytest.approx(max(expected, ev.e_min_kwh[0]), rel=RTOL_EXACT)
    assert not ev.departs_in_window[0]

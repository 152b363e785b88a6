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


def _plugged_before(soc_arrival: float, soc_target: float, arrival_h: float) -> pd.DataFrame:
    inst = synthetic_charging_instance(1, seed=0)
    inst.sessions.loc[0, ["arrival_s", "departure_s", "soc_arrival", "soc_target"]] = [
        arrival_h * 3600.0, 20 * 3600.0, soc_arrival, soc_target]
    return inst


@pytest.mark.parametrize(("soc_arrival", "soc_target", "arrival_h"), [
    (0.2, 1.0, 7.0),    # charging all along: arrival energy + one hour at full power
    (0.2, 0.3, 7.0),    # reached its target before the window: stops there
    (0.6, 0.4, 7.0),    # arrived above its target: keeps its arrival energy
    (0.2, 1.0, 8.0),    # arrives at the window start: its arrival energy
])
def test_mid_day_window_starts_from_the_uncontrolled_baseline(soc_arrival: float, soc_target: float,
                                                             arrival_h: float) -> None:
    inst = _plugged_before(soc_arrival, soc_target, arrival_h)
    ev = build_window(inst, start="08:00", steps=8, step="15min", quantum_kw=None).evs
    cap = ev.capacity_kwh[0]
    charged = soc_arrival * cap + ev.eff_ch[0] * ev.p_ch_max_kw[0] * (8.0 - arrival_h)  # full power since arrival
    expected = min(max(soc_arrival * cap, min(charged, soc_target * cap)), cap)
    assert ev.e_init_kwh[0] == pytest.approx(expected, rel=RTOL_EXACT)


def test_the_setpoint_grid_keeps_full_power() -> None:
    """The limits stay exact whatever the quantum (full power is a valid setpoint), and so does
    the baseline energy of a mid-day window."""
    inst = _plugged_before(0.1, 1.0, 6.0)
    inst.stations["p_site_max_kw"] = np.inf
    exact = build_window(inst, start="08:00", steps=4, step="15min", quantum_kw=None).evs
    gridded = build_window(inst, start="08:00", steps=4, step="15min", quantum_kw=4.0).evs
    assert gridded.p_ch_max_kw[0] == exact.p_ch_max_kw[0] and exact.p_ch_max_kw[0] % 4.0 != 0.0
    assert gridded.e_init_kwh[0] == pytest.approx(exact.e_init_kwh[0], rel=RTOL_EXACT)
    # under a site cap below the chargers' total the usable limit is rounded down to the grid
    # (a realisable plan)
    inst.stations["p_site_max_kw"] = 5.0
    capped = build_window(inst, start="08:00", steps=4, step="15min", quantum_kw=4.0).evs
    assert capped.p_ch_max_kw[0] == 4.0 * np.floor(exact.p_ch_max_kw[0] / 4.0)


def test_a_given_state_wins_over_the_baseline() -> None:
    inst = _plugged_before(0.2, 1.0, 6.0)
    sid = inst.sessions.loc[0, "session_id"]
    w = build_window(inst, start="08:00", steps=8, step="15min", ev_energy_kwh={sid: 12.5})
    assert w.evs.e_init_kwh[0] == pytest.approx(12.5, rel=RTOL_EXACT)


def test_an_unreachable_need_at_a_mid_day_start_is_named() -> None:
    from optev.compose.formulation import load_formulation
    from optev.compose.solve import WindowSolver
    from optev.errors import InfeasibleError

    inst = _plugged_before(0.2, 1.0, 6.0)
    inst.sessions.loc[0, "departure_s"] = 9 * 3600.0  # one hour left after the window start
    sid = inst.sessions.loc[0, "session_id"]
    w = build_window(inst, start="08:00", steps=4, step="15min", ev_energy_kwh={sid: 5.0})
    with pytest.raises(InfeasibleError, match=rf"EV session {sid} .* from 5\.0 kWh, its energy at the window start"):
        WindowSolver(load_formulation("station_v2g")).solve(w, ac_check=False)

"""Several days (issue 12, deliverable 5): a fleet's trips repeated day after day, a run across
midnight with its state carried over, and the 5-workday baseline taken from the run itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from optev.errors import DataError
from optev.mobility.days import DAY_S, repeat_trips, trip_days
from optev.mpc import simulate
from optev.services.request import parse_service
from optev.services.run import run_service
from paths import V2SIM, need


def _trips() -> pd.DataFrame:
    return pd.DataFrame({"ev_id": ["a", "a", "b"], "trip_index": [0, 1, 0], "depart_s": [8 * 3600.0, 18 * 3600.0,
                                                                                          9 * 3600.0],
                         "origin_node": ["n1", "n2", "n1"], "destination_node": ["n2", "n1", "n3"]})


def test_trips_repeat_whole_days_in_order() -> None:
    trips = _trips()
    assert trip_days(trips) == 1 and trip_days(trips.iloc[:0]) == 0
    same, copies = repeat_trips(trips, DAY_S)
    assert copies == 0 and same is trips  # a one-day run of a one-day fleet is unchanged
    out, copies = repeat_trips(trips, 2.5 * DAY_S)
    assert copies == 2 and len(out) == 9
    a = out[out["ev_id"] == "a"].sort_values("trip_index")
    assert a["depart_s"].tolist() == [8 * 3600.0, 18 * 3600.0, DAY_S + 8 * 3600.0, DAY_S + 18 * 3600.0,
                                      2 * DAY_S + 8 * 3600.0, 2 * DAY_S + 18 * 3600.0]
    assert a["depart_s"].is_monotonic_increasing and a["trip_index"].is_unique
    two_day = trips.assign(depart_s=trips["depart_s"] + np.array([0.0, DAY_S, 0.0]))
    assert trip_days(two_day) == 2
    out, copies = repeat_trips(two_day, 3 * DAY_S)  # a two-day fleet repeats every two days
    assert copies == 1 and out["depart_s"].max() == 2 * DAY_S + DAY_S + 18 * 3600.0


@pytest.fixture(scope="module")
def fleet():
    from optev.io.v2sim import read_v2sim
    from optev.mobility import add_fleet, generate_fleet

    inst = read_v2sim(need(V2SIM / "ux_12nodes"))
    return add_fleet(inst, generate_fleet(inst, 60, seed=3))


def test_a_run_across_midnight_carries_the_fleet_into_the_next_day(fleet) -> None:
    run = simulate(fleet, "station_v2g", start="22:00", steps=40, horizon="3h", ac_check=False, wrap=True)
    s = run.summary
    assert s["trip_days_repeated"] == 1
    assert s["soc_floor_violations"] == 0 and s["limit_violations_total"] == 0
    assert s["sessions_worse_than_uncontrolled"] == 0
    sessions = run.sessions
    assert (sessions["arrival_s"] > DAY_S).any()  # the second day's trips plug EVs in again
    # a car parked overnight is due at its next morning's trip, not at midnight
    overnight = sessions[(sessions["arrival_s"] < DAY_S) & (sessions["due_s"] > DAY_S)]
    assert len(overnight) > 0
    assert simulate(fleet, "station_v2g", start="10:00", steps=4, horizon="1h",
                    ac_check=False).summary["trip_days_repeated"] == 0


def test_a_workday_baseline_from_the_run_needs_its_days(fleet) -> None:
    data = {"service": {"id": "dr", "product": "demand_response", "rule": "zj_dr_energy"},
            "window": {"start": "2026-01-12T18:00", "end": "2026-01-12T20:00"},
            "quantity": {"reduction_kw": 10.0}, "baseline": {"rule": "workdays_5", "history": "run"}}
    req = parse_service(data)
    assert req.baseline_history == "run"
    with pytest.raises(DataError, match=r"start it on 2026-01-05 \(e.g. --start 2026-01-05T00:00 --steps 768 "
                                        r"--wrap --allow-large\)"):
        run_service(fleet, req, "station_v2g", start="2026-01-08T00:00", steps=480, wrap=True, allow_large=True)
    daily = {**data, "window": {"start": "18:00", "end": "20:00"}}
    with pytest.raises(DataError, match="on one date"):
        parse_service(daily)

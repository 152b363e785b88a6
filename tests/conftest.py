"""Shared pytest fixtures of the optev test suite.

Fixtures
--------
small_instance
    A small but complete :class:`~optev.data.Instance` that passes
    :func:`optev.data.validate` (see :func:`build_small_instance`).
"""

from __future__ import annotations

import pandas as pd
import pytest

from optev.data import Feeder, Instance, Metadata, RoadNetwork, TimeSeries

SMALL_TIMEZONE = "Asia/Shanghai"
SMALL_STEPS = 4
SMALL_STEP_MINUTES = 15.0


def build_small_instance() -> Instance:
    """A small complete instance touching every table of the data model.

    Feeder: 3 buses with numeric-looking ids ``"1"``, ``"2"``, ``"3"`` (radial chain
    1–2–3), 2 lines, a substation at bus ``"1"``, a PV unit and a storage. Road: 3
    nodes (``"0012"``, ``"0013"``, ``"A"``) and 4 links. Charger models for fast DC,
    slow AC and home AC charging; one FCS, one SCS and one home station with
    time-of-use tariffs; 2 vehicle types, 3 EVs and 4 trips; 4 steps of 15 min
    (Asia/Shanghai) of prices, bus loads and PV availability.
    """
    feeder, road = _small_feeder(), _small_road()
    charger_models, stations, station_tariffs = _small_stations()
    vehicle_types, evs, trips = _small_fleet()
    timeseries = _small_timeseries()
    metadata = Metadata(name="small", source="optev test suite", licence="CC0-1.0", timezone=SMALL_TIMEZONE,
                        step_minutes=SMALL_STEP_MINUTES, start="2026-01-01T00:00:00")
    return Instance(metadata=metadata, feeder=feeder, road=road, charger_models=charger_models,
                    stations=stations, station_tariffs=station_tariffs, vehicle_types=vehicle_types,
                    evs=evs, trips=trips, timeseries=timeseries)


def _small_feeder() -> Feeder:
    """Three buses ``"1"``–``"2"``–``"3"`` in a chain, a substation at ``"1"``, PV at ``"3"``, storage at ``"2"``."""
    return Feeder(
        base_mva=1.0,
        name="small feeder",
        buses=pd.DataFrame({
            "bus_id": ["1", "2", "3"],
            "base_kv": [10.0, 10.0, 10.0],
            "p_load_kw": [0.0, 120.5, 80.25],
            "q_load_kvar": [0.0, 30.1, 20.2],
            "x": [0.0, 100.0, float("nan")],
            "y": [0.0, 0.0, float("nan")],
        }),
        lines=pd.DataFrame({
            "line_id": ["L1", "L2"],
            "from_bus": ["1", "2"],
            "to_bus": ["2", "3"],
            "r_ohm": [0.123456789012345, 0.2],
            "x_ohm": [0.1, 1 / 3],
            "ampacity_a": [400.0, float("inf")],
        }),
        substations=pd.DataFrame({
            "substation_id": ["S1"], "bus_id": ["1"], "p_import_max_kw": [2000.0],
            "price_buy_per_kwh": [0.6], "price_sell_per_kwh": [0.3],
        }),
        pv=pd.DataFrame({"pv_id": ["pv_1"], "bus_id": ["3"], "p_rated_kw": [50.0]}),
        storage=pd.DataFrame({
            "storage_id": ["bat_1"], "bus_id": ["2"], "e_max_kwh": [200.0], "e_init_kwh": [100.0],
            "p_ch_max_kw": [50.0], "p_dis_max_kw": [50.0],
        }),
    )


def _small_road() -> RoadNetwork:
    """Three nodes (two of them numeric-looking ids) and four links."""
    return RoadNetwork(
        nodes=pd.DataFrame({
            "node_id": ["0012", "0013", "A"],
            "x": [0.0, 1500.0, 750.0],
            "y": [0.0, 0.0, 800.0],
            "node_type": ["home", "work", None],
        }),
        links=pd.DataFrame({
            "link_id": ["l1", "l2", "l3", "l4"],
            "from_node": ["0012", "A", "0013", "A"],
            "to_node": ["A", "0013", "A", "0012"],
            "length_m": [1100.0, 1100.0, 1100.0, 1100.0],
            "lanes": [2, 2, 1, 1],
            "signal_delay_s": [0.0, 15.0, 0.0, 15.0],
        }),
    )


def _small_stations() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Charger models, stations (FCS, SCS, home) and their time-of-use tariffs."""
    charger_models = pd.DataFrame({
        "model_id": ["dc60", "ac7", "ac11_v2g"],
        "technology": ["dc", "ac", "ac"],
        "p_ch_max_kw": [60.0, 7.0, 11.0],
        "p_dis_max_kw": [0.0, 0.0, 11.0],
        "v2g": [False, False, True],
    })
    stations = pd.DataFrame({
        "station_id": ["fcs_1", "scs_1", "home_1"],
        "kind": ["fcs", "scs", "home"],
        "model_id": ["dc60", "ac7", "ac11_v2g"],
        "n_chargers": [4, 10, 1],
        "bus_id": ["2", "3", "3"],
        "road_node": ["A", "0013", None],
        "p_site_max_kw": [200.0, float("inf"), 11.0],
    })
    station_tariffs = pd.DataFrame({
        "station_id": ["fcs_1", "fcs_1", "fcs_1", "scs_1"],
        "direction": ["buy", "buy", "sell", "buy"],
        "start_s": [0.0, 28800.0, 0.0, 0.0],
        "price_per_kwh": [1.2, 1.5, 0.8, 0.9],
    })
    return charger_models, stations, station_tariffs


def _small_fleet() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Vehicle types, EVs and trips."""
    vehicle_types = pd.DataFrame({
        "vtype_id": ["car_std", "bus_std"],
        "vehicle_class": ["car", "bus"],
        "battery_kwh": [60.0, 300.0],
        "p_ch_max_kw": [90.0, 150.0],
        "p_ch_ac_max_kw": [11.0, float("nan")],
        "p_dis_max_kw": [11.0, 0.0],
        "kwh_per_km": [0.15, 1.1],
    })
    evs = pd.DataFrame({
        "ev_id": ["ev1", "ev2", "ev3"],
        "vtype_id": ["car_std", "car_std", "bus_std"],
        "soc_init": [0.8, 0.45, 0.9],
        "soc_min": [0.2, 0.1, 0.15],
        "v2g_opt_in": [True, False, False],
        "home_station": ["home_1", None, None],
    })
    trips = pd.DataFrame({
        "ev_id": ["ev1", "ev1", "ev2", "ev3"],
        "trip_index": [0, 1, 0, 0],
        "depart_s": [28800.0, 64800.0, 30600.0, 21600.0],
        "origin_node": ["0012", "0013", "A", "0013"],
        "destination_node": ["0013", "0012", "0013", "A"],
        "purpose": ["work", "home", "relax", "depot"],
    })
    return vehicle_types, evs, trips


def _small_timeseries() -> TimeSeries:
    """Four steps of 15 min (:data:`SMALL_TIMEZONE`) of prices, bus loads and PV availability."""
    index = pd.date_range("2026-01-01T00:00", periods=SMALL_STEPS, freq=f"{SMALL_STEP_MINUTES:g}min",
                          tz=SMALL_TIMEZONE, unit="ns")  # pandas 3 would infer "us"
    return TimeSeries(
        index=index,
        price=pd.DataFrame({"buy_per_kwh": [0.3, 0.3, 0.6, 0.9], "sell_per_kwh": [0.1, 0.1, 0.2, 0.25]},
                           index=index),
        load_p_kw=pd.DataFrame({"2": [100.0, 110.0, 120.5, 90.0], "3": [60.0, 70.1, 80.25, 75.0]},
                               index=index),
        load_q_kvar=pd.DataFrame({"2": [25.0, 27.5, 30.1, 22.5], "3": [15.0, 17.5, 20.2, 18.75]},
                                 index=index),
        availability=pd.DataFrame({"pv_1": [0.0, 0.1, 0.35, 0.5]}, index=index),
    )


@pytest.fixture
def small_instance() -> Instance:
    """A fresh :func:`build_small_instance` for each test (tests may modify it)."""
    return build_small_instance()

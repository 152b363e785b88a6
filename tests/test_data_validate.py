"""Cross-table rules of :func:`validate_feeder`, :func:`check_radial` and :func:`validate`.

Every rule has a test that shows its full error message: the table, the offending row
(position and id) and the column, where the rule names them. Each test starts from one
small valid instance (:func:`tables`), breaks one thing and checks the message.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from optev.data import (FAST_CHARGER_MIN_KW, SOC_FLOOR_V2G, Feeder, Instance, Metadata, RoadNetwork, TimeSeries,
                        check_radial, validate, validate_feeder)
from optev.errors import DataError

Tables = dict[str, Any]


def esc(message: str) -> str:
    """The exact message as a ``pytest.raises(match=...)`` pattern."""
    return re.escape(message)


def tables() -> Tables:
    """A small valid city case as plain rows, to be changed by each test.

    Feeder: B1 (substation S1) – B2 – B3, 12.66 kV, with a generator, PV, wind and a
    battery. Road: N1 → N2 → N3 → N1. Stations: a 50 kW FCS, a 7 kW SCS, a home charger.
    Fleet: E1 (V2G car, home H1) and E2 (no V2G). Time series: four 15-min steps.
    """
    index = pd.date_range("2026-01-01", periods=4, freq="15min", tz="UTC")
    return {
        "buses": [{"bus_id": "B1", "base_kv": 12.66}, {"bus_id": "B2", "base_kv": 12.66},
                  {"bus_id": "B3", "base_kv": 12.66}],
        "lines": [{"line_id": "L1", "from_bus": "B1", "to_bus": "B2", "r_ohm": 0.1, "x_ohm": 0.05},
                  {"line_id": "L2", "from_bus": "B2", "to_bus": "B3", "r_ohm": 0.1, "x_ohm": 0.05}],
        "transformers": [],
        "substations": [{"substation_id": "S1", "bus_id": "B1"}],
        "generators": [{"gen_id": "G1", "bus_id": "B2", "p_max_kw": 100}],
        "pv": [{"pv_id": "PV1", "bus_id": "B3", "p_rated_kw": 50}],
        "wind": [{"wind_id": "W1", "bus_id": "B2", "p_rated_kw": 80, "profile": "wind_site"}],
        "storage": [{"storage_id": "ES1", "bus_id": "B3", "e_max_kwh": 100, "e_init_kwh": 50,
                     "p_ch_max_kw": 25, "p_dis_max_kw": 25}],
        "road_nodes": [{"node_id": "N1"}, {"node_id": "N2"}, {"node_id": "N3"}],
        "road_links": [{"link_id": "A", "from_node": "N1", "to_node": "N2", "length_m": 1000},
                       {"link_id": "B", "from_node": "N2", "to_node": "N3", "length_m": 1000},
                       {"link_id": "C", "from_node": "N3", "to_node": "N1", "length_m": 1000}],
        "charger_models": [{"model_id": "DC50", "technology": "dc", "p_ch_max_kw": 50},
                           {"model_id": "AC7", "p_ch_max_kw": 7, "p_dis_max_kw": 7, "v2g": True}],
        "stations": [{"station_id": "F1", "kind": "fcs", "model_id": "DC50", "n_chargers": 4, "bus_id": "B2",
                      "road_node": "N1"},
                     {"station_id": "SL1", "kind": "scs", "model_id": "AC7", "n_chargers": 10, "bus_id": "B3",
                      "road_node": "N2"},
                     {"station_id": "H1", "kind": "home", "model_id": "AC7", "n_chargers": 1, "bus_id": "B3"}],
        "station_tariffs": [{"station_id": "F1", "direction": "buy", "price_per_kwh": 1.2}],
        "vehicle_types": [{"vtype_id": "v2g_car", "battery_kwh": 60, "p_ch_max_kw": 100, "p_dis_max_kw": 7,
                           "kwh_per_km": 0.15},
                          {"vtype_id": "plain_car", "battery_kwh": 40, "p_ch_max_kw": 50, "kwh_per_km": 0.14}],
        "evs": [{"ev_id": "E1", "vtype_id": "v2g_car", "v2g_opt_in": True, "soc_min": 0.2, "home_station": "H1"},
                {"ev_id": "E2", "vtype_id": "plain_car"}],
        "trips": [{"ev_id": "E1", "trip_index": 0, "depart_s": 28800, "origin_node": "N1", "destination_node": "N2"},
                  {"ev_id": "E2", "trip_index": 0, "depart_s": 30000, "origin_node": "N2",
                   "destination_node": "N3"}],
        "index": index,
        "price": pd.DataFrame({"buy_per_kwh": [0.5] * 4, "sell_per_kwh": [0.3] * 4}),
        "load_p_kw": pd.DataFrame({"B2": [10.0, 12, 11, 9]}),
        "load_q_kvar": pd.DataFrame({"B2": [2.0, 2, 2, 2]}),
        "availability": pd.DataFrame({"PV1": [0.0, 0.2, 0.5, 0.4], "wind_site": [0.3] * 4}),
        "base_mva": 1.0,
        "step_minutes": 15.0,
    }


def make_feeder(t: Tables) -> Feeder:
    return Feeder(base_mva=t["base_mva"], buses=t["buses"], lines=t["lines"], transformers=t["transformers"],
                  substations=t["substations"], generators=t["generators"], pv=t["pv"], wind=t["wind"],
                  storage=t["storage"])


def make_instance(t: Tables) -> Instance:
    ts = TimeSeries(index=t["index"], price=t["price"], load_p_kw=t["load_p_kw"], load_q_kvar=t["load_q_kvar"],
                    availability=t["availability"])
    return Instance(metadata=Metadata(step_minutes=t["step_minutes"]), feeder=make_feeder(t),
                    road=RoadNetwork(nodes=t["road_nodes"], links=t["road_links"]),
                    charger_models=t["charger_models"], stations=t["stations"],
                    station_tariffs=t["station_tariffs"], vehicle_types=t["vehicle_types"], evs=t["evs"],
                    trips=t["trips"], timeseries=ts)


def with_rows(table: str, *new_rows: dict[str, Any]) -> Tables:
    """The base case with rows appended to ``table``."""
    t = tables()
    t[table] = t[table] + list(new_rows)
    return t


def edit(table: str, pos: int, **values: Any) -> Tables:
    """The base case with row ``pos`` of ``table`` changed."""
    t = tables()
    t[table][pos].update(values)
    return t


# --------------------------------------------------------------------------- the base case


def test_base_case_is_valid() -> None:
    inst = make_instance(tables())
    assert validate(inst) is inst
    assert validate_feeder(inst.feeder) is inst.feeder
    check_radial(inst.feeder)


def test_empty_instance_is_valid() -> None:
    inst = Instance()
    assert validate(inst) is inst


# --------------------------------------------------------------------------- feeder: column rules


def test_duplicate_bus_id() -> None:
    t = with_rows("buses", {"bus_id": "B2", "base_kv": 0.4})
    with pytest.raises(DataError, match=esc("table 'buses', row 3 (bus_id='B2'), column 'bus_id': "
                                            "duplicate id 'B2'")):
        make_feeder(t)


@pytest.mark.parametrize("table, pos, column, unit", [
    ("storage", 0, "e_max_kwh", "kWh"),
    ("storage", 0, "p_ch_max_kw", "kW"),
    ("pv", 0, "p_rated_kw", "kW"),
    ("generators", 0, "p_max_kw", "kW"),
    ("lines", 1, "ampacity_a", "A"),
])
def test_negative_capacity_in_feeder(table: str, pos: int, column: str, unit: str) -> None:
    t = edit(table, pos, **{column: -1})
    key = {"storage": "storage_id", "pv": "pv_id", "generators": "gen_id", "lines": "line_id"}[table]
    row_id = t[table][pos][key]
    with pytest.raises(DataError, match=esc(f"table '{table}', row {pos} ({key}={row_id!r}), "
                                            f"column '{column}': value -1.0 is below the minimum 0.0 {unit}")):
        make_feeder(t)


def test_negative_charger_power() -> None:
    t = edit("charger_models", 1, p_ch_max_kw=-7)
    with pytest.raises(DataError, match=esc("table 'charger_models', row 1 (model_id='AC7'), "
                                            "column 'p_ch_max_kw': value -7.0 is below the minimum 0.0 kW")):
        make_instance(t)


# --------------------------------------------------------------------------- validate_feeder


def test_feeder_without_buses() -> None:
    with pytest.raises(DataError, match=esc("table 'buses': the feeder has no buses")):
        validate_feeder(Feeder())


def test_zero_base_voltage() -> None:
    t = edit("buses", 2, base_kv=0.0)
    with pytest.raises(DataError, match=esc("table 'buses', row 2 (bus_id='B3'), column 'base_kv': "
                                            "value 0.0 must be above 0.0 kV")):
        validate_feeder(make_feeder(t))


def test_v_min_above_v_max() -> None:
    t = edit("buses", 1, v_min_pu=1.06, v_max_pu=1.04)
    with pytest.raises(DataError, match=esc("table 'buses', row 1 (bus_id='B2'), column 'v_min_pu': "
                                            "v_min_pu=1.06 exceeds v_max_pu=1.04")):
        validate_feeder(make_feeder(t))


@pytest.mark.parametrize("table, pos, key, column", [
    ("lines", 1, "line_id", "from_bus"),
    ("lines", 1, "line_id", "to_bus"),
    ("substations", 0, "substation_id", "bus_id"),
    ("generators", 0, "gen_id", "bus_id"),
    ("pv", 0, "pv_id", "bus_id"),
    ("wind", 0, "wind_id", "bus_id"),
    ("storage", 0, "storage_id", "bus_id"),
])
def test_unknown_bus(table: str, pos: int, key: str, column: str) -> None:
    t = edit(table, pos, **{column: "B9"})
    row_id = t[table][pos][key]
    with pytest.raises(DataError, match=esc(f"table '{table}', row {pos} ({key}={row_id!r}), "
                                            f"column '{column}': unknown bus 'B9'")):
        validate_feeder(make_feeder(t))


@pytest.mark.parametrize("column", ["hv_bus", "lv_bus"])
def test_unknown_transformer_bus(column: str) -> None:
    t = with_rows("buses", {"bus_id": "B4", "base_kv": 0.4})
    t["transformers"] = [{"transformer_id": "T1", "hv_bus": "B3", "lv_bus": "B4", "r_pu": 0.01, "x_pu": 0.04,
                          column: "B9"}]
    with pytest.raises(DataError, match=esc(f"table 'transformers', row 0 (transformer_id='T1'), "
                                            f"column '{column}': unknown bus 'B9'")):
        validate_feeder(make_feeder(t))


def test_line_from_a_bus_to_itself() -> None:
    t = with_rows("lines", {"line_id": "L3", "from_bus": "B3", "to_bus": "B3", "r_ohm": 0.1, "x_ohm": 0.1})
    with pytest.raises(DataError, match=esc("table 'lines', row 2 (line_id='L3'), column 'to_bus': "
                                            "connects bus 'B3' to itself")):
        validate_feeder(make_feeder(t), require_radial=False)


def test_transformer_from_a_bus_to_itself() -> None:
    t = tables()
    t["transformers"] = [{"transformer_id": "T1", "hv_bus": "B2", "lv_bus": "B2", "r_pu": 0.01, "x_pu": 0.04}]
    with pytest.raises(DataError, match=esc("table 'transformers', row 0 (transformer_id='T1'), "
                                            "column 'lv_bus': connects bus 'B2' to itself")):
        validate_feeder(make_feeder(t))


def test_two_substations_on_one_bus() -> None:
    t = with_rows("substations", {"substation_id": "S2", "bus_id": "B1"})
    with pytest.raises(DataError, match=esc("table 'substations', row 1 (substation_id='S2'), "
                                            "column 'bus_id': two substations on one bus")):
        validate_feeder(make_feeder(t))


def test_generator_p_min_above_p_max() -> None:
    t = edit("generators", 0, p_min_kw=150)
    with pytest.raises(DataError, match=esc("table 'generators', row 0 (gen_id='G1'), column 'p_min_kw': "
                                            "p_min_kw=150.0 exceeds p_max_kw=100.0")):
        validate_feeder(make_feeder(t))


def test_generator_q_min_above_q_max() -> None:
    t = edit("generators", 0, q_min_kvar=20, q_max_kvar=10)
    with pytest.raises(DataError, match=esc("table 'generators', row 0 (gen_id='G1'), "
                                            "column 'q_min_kvar': q_min_kvar=20.0 exceeds q_max_kvar=10.0")):
        validate_feeder(make_feeder(t))


def test_storage_e_init_above_e_max() -> None:
    t = edit("storage", 0, e_init_kwh=120)
    with pytest.raises(DataError, match=esc("table 'storage', row 0 (storage_id='ES1'), "
                                            "column 'e_init_kwh': e_init_kwh=120.0 exceeds e_max_kwh=100.0")):
        validate_feeder(make_feeder(t))


def test_storage_e_min_above_e_init() -> None:
    t = edit("storage", 0, e_min_kwh=60)
    with pytest.raises(DataError, match=esc("table 'storage', row 0 (storage_id='ES1'), "
                                            "column 'e_min_kwh': e_min_kwh=60.0 exceeds e_init_kwh=50.0")):
        validate_feeder(make_feeder(t))


# --------------------------------------------------------------------------- radial topology

TIE = {"line_id": "TIE", "from_bus": "B3", "to_bus": "B1", "r_ohm": 0.2, "x_ohm": 0.1}


def test_loop_where_radial_feeder_is_required() -> None:
    feeder = make_feeder(with_rows("lines", TIE))
    message = esc("table 'lines', row 'TIE': closes a loop, but a radial feeder is required "
                  "(open a tie switch with in_service=false)")
    with pytest.raises(DataError, match=message):
        validate_feeder(feeder)
    with pytest.raises(DataError, match=message):
        check_radial(feeder)


def test_open_tie_line_keeps_the_feeder_radial() -> None:
    feeder = make_feeder(with_rows("lines", {**TIE, "in_service": False}))
    assert validate_feeder(feeder) is feeder
    check_radial(feeder)


def test_loop_is_accepted_when_radial_is_not_required() -> None:
    feeder = make_feeder(with_rows("lines", TIE))
    assert validate_feeder(feeder, require_radial=False) is feeder
    inst = make_instance(with_rows("lines", TIE))
    assert validate(inst, require_radial=False) is inst
    with pytest.raises(DataError, match=esc("table 'lines', row 'TIE': closes a loop")):
        validate(inst)


def test_parallel_lines_are_a_loop() -> None:
    t = with_rows("lines", {"line_id": "L2b", "from_bus": "B3", "to_bus": "B2", "r_ohm": 0.1, "x_ohm": 0.05})
    with pytest.raises(DataError, match=esc("table 'lines', row 'L2b': closes a loop")):
        validate_feeder(make_feeder(t))


def test_loop_through_a_transformer() -> None:
    t = with_rows("buses", {"bus_id": "B4", "base_kv": 0.4})
    t["lines"] = t["lines"] + [{"line_id": "L3", "from_bus": "B1", "to_bus": "B4", "r_ohm": 0.1, "x_ohm": 0.1}]
    t["transformers"] = [{"transformer_id": "T1", "hv_bus": "B3", "lv_bus": "B4", "r_pu": 0.01, "x_pu": 0.04}]
    with pytest.raises(DataError, match=esc("table 'transformers', row 'T1': closes a loop")):
        validate_feeder(make_feeder(t))
    t["transformers"][0]["in_service"] = False
    validate_feeder(make_feeder(t))


def test_buses_not_connected_to_any_substation() -> None:
    t = with_rows("buses", {"bus_id": "B4", "base_kv": 0.4}, {"bus_id": "B5", "base_kv": 0.4})
    t["lines"] = t["lines"] + [{"line_id": "L45", "from_bus": "B4", "to_bus": "B5", "r_ohm": 0.1, "x_ohm": 0.1}]
    message = esc("table 'buses', column 'bus_id': bus(es) ['B4', 'B5'] are not connected to any substation")
    with pytest.raises(DataError, match=message):
        validate_feeder(make_feeder(t))
    with pytest.raises(DataError, match=message):
        check_radial(make_feeder(t))


def test_many_orphan_buses_are_abbreviated() -> None:
    t = with_rows("buses", *({"bus_id": f"X{i}", "base_kv": 0.4} for i in range(7)))
    with pytest.raises(DataError, match=esc("bus(es) ['X0', 'X1', 'X2', 'X3', 'X4'] ... are not connected")):
        check_radial(make_feeder(t))


def test_feeder_without_substation() -> None:
    t = tables()
    t["substations"] = []
    with pytest.raises(DataError, match=esc("bus(es) ['B1', 'B2', 'B3'] are not connected to any substation")):
        validate_feeder(make_feeder(t))


def test_two_substations_in_one_component() -> None:
    t = with_rows("substations", {"substation_id": "S3", "bus_id": "B3"})
    message = esc("table 'substations', column 'bus_id': substations ['S1', 'S3'] are connected to each other; "
                  "each radial feeder needs exactly one")
    with pytest.raises(DataError, match=message):
        validate_feeder(make_feeder(t))
    with pytest.raises(DataError, match=message):
        check_radial(make_feeder(t))
    # opening the line between them gives two radial feeders, each with its substation
    t["lines"][1]["in_service"] = False
    validate_feeder(make_feeder(t))


def test_two_separate_radial_feeders_are_valid() -> None:
    t = with_rows("buses", {"bus_id": "C1", "base_kv": 10}, {"bus_id": "C2", "base_kv": 10})
    t["lines"] = t["lines"] + [{"line_id": "M1", "from_bus": "C1", "to_bus": "C2", "r_ohm": 0.1, "x_ohm": 0.1}]
    t["substations"] = t["substations"] + [{"substation_id": "S2", "bus_id": "C1"}]
    check_radial(make_feeder(t))


# --------------------------------------------------------------------------- stations and chargers


def test_discharge_power_without_v2g() -> None:
    t = edit("charger_models", 0, p_dis_max_kw=50)
    with pytest.raises(DataError, match=esc("table 'charger_models', row 0 (model_id='DC50'), "
                                            "column 'p_dis_max_kw': p_dis_max_kw > 0 but v2g is false")):
        validate(make_instance(t))


def test_unknown_charger_model() -> None:
    t = edit("stations", 1, model_id="AC11")
    with pytest.raises(DataError, match=esc("table 'stations', row 1 (station_id='SL1'), column 'model_id': "
                                            "unknown charger model 'AC11'")):
        validate(make_instance(t))


def test_station_on_unknown_bus() -> None:
    t = edit("stations", 2, bus_id="B7")
    with pytest.raises(DataError, match=esc("table 'stations', row 2 (station_id='H1'), column 'bus_id': "
                                            "unknown bus 'B7'")):
        validate(make_instance(t))


def test_station_bus_is_not_checked_without_a_feeder() -> None:
    inst = make_instance(edit("stations", 2, bus_id="B7"))
    inst.feeder = Feeder()
    inst.timeseries = TimeSeries()
    validate(inst)


def test_station_on_unknown_road_node() -> None:
    t = edit("stations", 0, road_node="N9")
    with pytest.raises(DataError, match=esc("table 'stations', row 0 (station_id='F1'), "
                                            "column 'road_node': unknown road node 'N9'")):
        validate(make_instance(t))


def test_fcs_with_slow_chargers() -> None:
    t = with_rows("charger_models", {"model_id": "AC22", "p_ch_max_kw": 22})
    t["stations"][0] = {**t["stations"][0], "model_id": "AC22"}
    with pytest.raises(DataError, match=esc("table 'stations', row 0 (station_id='F1'), column 'kind': "
                                            "kind 'fcs' with 22 kW chargers: an FCS needs chargers of at least "
                                            "30 kW (R5.1.4); set power_class_override=true to accept")):
        validate(make_instance(t))
    t["stations"][0]["power_class_override"] = True
    validate(make_instance(t))


def test_scs_with_fast_chargers() -> None:
    t = edit("stations", 1, model_id="DC50")
    with pytest.raises(DataError, match=esc("table 'stations', row 1 (station_id='SL1'), column 'kind': "
                                            "kind 'scs' with 50 kW chargers: an SCS needs chargers below "
                                            "30 kW (R5.1.4); set power_class_override=true to accept")):
        validate(make_instance(t))
    t["stations"][1]["power_class_override"] = True
    validate(make_instance(t))


def test_30_kw_boundary_is_fast() -> None:
    assert FAST_CHARGER_MIN_KW == 30.0
    t = with_rows("charger_models", {"model_id": "DC30", "p_ch_max_kw": FAST_CHARGER_MIN_KW})
    t["stations"][0] = {**t["stations"][0], "model_id": "DC30"}
    validate(make_instance(t))
    t["stations"][1] = {**t["stations"][1], "model_id": "DC30"}
    with pytest.raises(DataError, match=esc("kind 'scs' with 30 kW chargers: an SCS needs chargers below 30 kW")):
        validate(make_instance(t))


def test_private_stations_have_no_power_class() -> None:
    validate(make_instance(edit("stations", 2, model_id="DC50")))


def test_tariff_of_unknown_station() -> None:
    t = with_rows("station_tariffs", {"station_id": "F9", "direction": "sell", "price_per_kwh": 0.8})
    with pytest.raises(DataError, match=esc("table 'station_tariffs', row 1, column 'station_id': "
                                            "unknown station 'F9'")):
        validate(make_instance(t))


# --------------------------------------------------------------------------- road


@pytest.mark.parametrize("column", ["from_node", "to_node"])
def test_road_link_with_unknown_node(column: str) -> None:
    t = edit("road_links", 2, **{column: "N9"})
    with pytest.raises(DataError, match=esc(f"table 'road_links', row 2 (link_id='C'), column '{column}': "
                                            "unknown road node 'N9'")):
        validate(make_instance(t))


# --------------------------------------------------------------------------- vehicles and EVs


def test_unknown_vehicle_type() -> None:
    t = edit("evs", 1, vtype_id="truck")
    with pytest.raises(DataError, match=esc("table 'evs', row 1 (ev_id='E2'), column 'vtype_id': "
                                            "unknown vehicle type 'truck'")):
        validate(make_instance(t))


@pytest.mark.parametrize("column", ["home_station", "work_station"])
def test_private_station_that_does_not_exist(column: str) -> None:
    t = edit("evs", 1, **{column: "H9"})
    with pytest.raises(DataError, match=esc(f"table 'evs', row 1 (ev_id='E2'), column '{column}': "
                                            "unknown station 'H9'")):
        validate(make_instance(t))


@pytest.mark.parametrize("column, station, kind", [("home_station", "F1", "fcs"), ("work_station", "SL1", "scs")])
def test_private_station_reference_to_a_public_station(column: str, station: str, kind: str) -> None:
    t = edit("evs", 1, **{column: station})
    with pytest.raises(DataError, match=esc(f"table 'evs', row 1 (ev_id='E2'), column '{column}': "
                                            f"station {station!r} is a public {kind!r} station, but {column} "
                                            "must name a private one (home, workplace, campus)")):
        validate(make_instance(t))


def test_work_station_may_be_any_private_kind() -> None:
    t = with_rows("stations", {"station_id": "C1", "kind": "campus", "model_id": "AC7", "n_chargers": 20,
                               "bus_id": "B2"})
    t["evs"] = [{**t["evs"][0], "work_station": "C1"}, t["evs"][1]]
    validate(make_instance(t))


def test_v2g_ev_below_the_soc_floor() -> None:
    assert SOC_FLOOR_V2G == 0.2
    t = edit("evs", 0, soc_min=0.1)
    with pytest.raises(DataError, match=esc("table 'evs', row 0 (ev_id='E1'), column 'soc_min': "
                                            "soc_min=0.1 is below the V2G floor 0.2 (R6.1.5); "
                                            "set soc_floor_override=true to accept")):
        validate(make_instance(t))


def test_v2g_ev_below_the_soc_floor_with_override() -> None:
    validate(make_instance(edit("evs", 0, soc_min=0.1, soc_floor_override=True)))


@pytest.mark.parametrize("ev, values", [
    (1, {"soc_min": 0.1}),                       # plain car: type cannot discharge
    (1, {"soc_min": 0.1, "v2g_opt_in": True}),   # opted in, but the type cannot discharge
    (0, {"soc_min": 0.1, "v2g_opt_in": False}),  # V2G type, but the user has not opted in
])
def test_non_v2g_ev_may_have_a_low_soc_min(ev: int, values: dict[str, Any]) -> None:
    validate(make_instance(edit("evs", ev, **values)))


def test_soc_floor_boundary_is_accepted() -> None:
    validate(make_instance(edit("evs", 0, soc_min=SOC_FLOOR_V2G)))


def test_soc_min_of_one() -> None:
    t = edit("evs", 1, soc_min=1.0)
    with pytest.raises(DataError, match=esc("table 'evs', row 1 (ev_id='E2'), column 'soc_min': "
                                            "soc_min must be below 1")):
        validate(make_instance(t))


def test_trip_of_unknown_ev() -> None:
    t = edit("trips", 1, ev_id="E7")
    with pytest.raises(DataError, match=esc("table 'trips', row 1, column 'ev_id': unknown EV 'E7'")):
        validate(make_instance(t))


@pytest.mark.parametrize("column", ["origin_node", "destination_node"])
def test_trip_with_unknown_road_node(column: str) -> None:
    t = edit("trips", 0, **{column: "N9"})
    with pytest.raises(DataError, match=esc(f"table 'trips', row 0, column '{column}': unknown road node 'N9'")):
        validate(make_instance(t))


# --------------------------------------------------------------------------- time series


@pytest.mark.parametrize("table", ["load_p_kw", "load_q_kvar"])
def test_load_column_naming_unknown_bus(table: str) -> None:
    t = tables()
    t[table] = t[table].assign(B9=1.0)
    with pytest.raises(DataError, match=esc(f"table '{table}', column 'B9': unknown bus 'B9'")):
        validate(make_instance(t))


def test_missing_pv_availability_profile() -> None:
    t = tables()
    t["availability"] = t["availability"].drop(columns="PV1")
    with pytest.raises(DataError, match=esc("table 'pv', row 0 (pv_id='PV1'), column 'profile': "
                                            "availability profile 'PV1' is not in the time series")):
        validate(make_instance(t))


def test_missing_named_wind_profile() -> None:
    t = edit("wind", 0, profile="coast")
    with pytest.raises(DataError, match=esc("table 'wind', row 0 (wind_id='W1'), column 'profile': "
                                            "availability profile 'coast' is not in the time series")):
        validate(make_instance(t))


def test_step_differs_from_metadata() -> None:
    t = tables()
    t["step_minutes"] = 5.0
    with pytest.raises(DataError, match=esc("table 'timeseries': time series step is 15 min but metadata says "
                                            "5 min")):
        validate(make_instance(t))


def test_non_fixed_step() -> None:
    t = tables()
    t["index"] = pd.DatetimeIndex(["2026-01-01 00:00", "2026-01-01 00:15", "2026-01-01 00:30",
                                   "2026-01-01 01:00"], tz="UTC")
    with pytest.raises(DataError, match=esc("table 'timeseries': time index does not have a fixed step")):
        validate(make_instance(t))


def test_naive_time_index() -> None:
    t = tables()
    with pytest.raises(DataError, match=esc("table 'timeseries': time index must be timezone-aware")):
        TimeSeries(index=t["index"].tz_localize(None), price=t["price"])


def test_time_index_must_be_a_datetime_index() -> None:
    with pytest.raises(DataError, match=esc("table 'timeseries': time index must be a pandas DatetimeIndex")):
        TimeSeries(index=pd.RangeIndex(4))  # type: ignore[arg-type]


def test_time_series_length_differs_from_index() -> None:
    t = tables()
    with pytest.raises(DataError, match=esc("table 'load_p_kw': has 3 rows but the time index has 4")):
        TimeSeries(index=t["index"], load_p_kw=t["load_p_kw"].iloc[:3])


def test_non_numeric_time_series() -> None:
    t = tables()
    with pytest.raises(DataError, match=esc("table 'availability': non-numeric value")):
        TimeSeries(index=t["index"], availability=t["availability"].assign(PV1=["a", "b", "c", "d"]))


def test_price_series_missing_a_column() -> None:
    t = tables()
    with pytest.raises(DataError, match=esc("table 'price': missing column(s) ['sell_per_kwh']")):
        TimeSeries(index=t["index"], price=t["price"][["buy_per_kwh"]])


def test_time_series_are_aligned_to_the_index() -> None:
    t = tables()
    ts = TimeSeries(index=t["index"], load_p_kw=pd.DataFrame({7: np.arange(4)}))
    assert ts.steps == 4
    assert ts.step == pd.Timedelta(minutes=15)
    assert list(ts.load_p_kw.columns) == ["7"]  # bus ids are strings
    assert ts.load_p_kw.index.equals(t["index"])
    assert ts.load_p_kw["7"].dtype == np.float64
    assert len(ts.price.columns) == 0 and len(ts.price) == 4
    assert set(ts.tables()) == {"price", "load_p_kw", "load_q_kvar", "availability"}
    assert TimeSeries(index=t["index"][:1]).step is None

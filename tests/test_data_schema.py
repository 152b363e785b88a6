"""Column-level rules of :meth:`TableSchema.conform` and positive behaviour of the data classes.

Every conform rule has a test that shows its full error message (table, row id, column).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optev.data import (ALL_SCHEMAS, BUSES, CHARGER_MODELS, EVS, LINES, PV, REQUIRED, ROAD_LINKS, STATIONS,
                        STORAGE, TRIPS, Feeder, Field, Instance, RoadNetwork, TableSchema, sample_step_profile)
from optev.data.docs import SCHEMAS_MD, main, schema_reference
from optev.errors import DataError
from optev.testing import RTOL_EXACT


def esc(message: str) -> str:
    """The exact message as a ``pytest.raises(match=...)`` pattern."""
    return re.escape(message)


def line(**over: object) -> dict[str, object]:
    row: dict[str, object] = {"line_id": "L1", "from_bus": "B1", "to_bus": "B2", "r_ohm": 0.1, "x_ohm": 0.2}
    row.update(over)
    return row


def station(**over: object) -> dict[str, object]:
    row: dict[str, object] = {"station_id": "F1", "kind": "fcs", "model_id": "DC50", "n_chargers": 4,
                              "bus_id": "B2"}
    row.update(over)
    return row


# --------------------------------------------------------------------------- conform: errors


def test_missing_required_column_names_table_and_columns() -> None:
    with pytest.raises(DataError, match=esc("table 'buses': missing required column(s) ['base_kv']; "
                                            "required: ['bus_id', 'base_kv']")):
        BUSES.conform([{"bus_id": "B1"}])


@pytest.mark.parametrize("empty", [None, float("nan"), "", "   ", pd.NA])
def test_empty_required_string_value(empty: object) -> None:
    with pytest.raises(DataError, match=esc("table 'lines', row 1 (line_id='L2'), column 'to_bus': "
                                            "empty value")):
        LINES.conform([line(), line(line_id="L2", to_bus=empty)])


def test_empty_required_id_names_row_position() -> None:
    # the id itself is empty, so the row is named by its position only
    with pytest.raises(DataError, match=esc("table 'buses', row 1, column 'bus_id': empty value")):
        BUSES.conform([{"bus_id": "B1", "base_kv": 1.0}, {"bus_id": None, "base_kv": 1.0}])


def test_empty_required_id_in_float_column() -> None:
    # an all-numeric id column read from CSV has dtype float64 and NaN for empty cells
    df = pd.DataFrame({"bus_id": [1.0, np.nan], "base_kv": [1.0, 1.0]})
    with pytest.raises(DataError, match=esc("table 'buses', row 1, column 'bus_id': empty value")):
        BUSES.conform(df)


@pytest.mark.parametrize("empty", [None, float("nan"), pd.NA])
def test_empty_required_number(empty: object) -> None:
    with pytest.raises(DataError, match=esc("table 'lines', row 0 (line_id='L1'), column 'r_ohm': "
                                            "empty value")):
        LINES.conform(pd.DataFrame([line(r_ohm=empty)]))


def test_empty_required_int() -> None:
    with pytest.raises(DataError, match=esc("table 'stations', row 0 (station_id='F1'), "
                                            "column 'n_chargers': empty value")):
        STATIONS.conform([station(n_chargers=None)])


def test_empty_int_without_a_default_cannot_be_stored() -> None:
    # an int column cannot hold NaN, so an optional int without a default needs a value
    schema = TableSchema("counts", (Field("count_id", "str", "-", "Id."), Field("n", "int", "-", "N.", None)),
                         key="count_id")
    with pytest.raises(DataError, match=esc("table 'counts', row 1 (count_id='b'), column 'n': empty value")):
        schema.conform([{"count_id": "a", "n": 1}, {"count_id": "b", "n": None}])


@pytest.mark.parametrize("value", ["abc", "1_000", "12 kV"])
def test_non_numeric_value(value: str) -> None:
    rows = [{"bus_id": "B1", "base_kv": 12.66}, {"bus_id": "B2", "base_kv": value}]
    with pytest.raises(DataError, match=esc(f"table 'buses', row 1 (bus_id='B2'), column 'base_kv': "
                                            f"value {value!r} is not a number")):
        BUSES.conform(rows)


def test_below_minimum() -> None:
    rows = [{"storage_id": "ES1", "bus_id": "B2", "e_max_kwh": -5, "p_ch_max_kw": 10, "p_dis_max_kw": 10}]
    with pytest.raises(DataError, match=esc("table 'storage', row 0 (storage_id='ES1'), "
                                            "column 'e_max_kwh': value -5.0 is below the minimum 0.0 kWh")):
        STORAGE.conform(rows)


def test_below_minimum_of_an_int_column() -> None:
    with pytest.raises(DataError, match=esc("table 'road_links', row 0 (link_id='A'), column 'lanes': "
                                            "value 0.0 is below the minimum 1 -")):
        ROAD_LINKS.conform([{"link_id": "A", "from_node": "N1", "to_node": "N2", "length_m": 10, "lanes": 0}])


def test_above_maximum() -> None:
    rows = [{"model_id": "DC50", "p_ch_max_kw": 50}, {"model_id": "AC7", "p_ch_max_kw": 7, "eff_ch": 1.2}]
    with pytest.raises(DataError, match=esc("table 'charger_models', row 1 (model_id='AC7'), "
                                            "column 'eff_ch': value 1.2 is above the maximum 1.0 -")):
        CHARGER_MODELS.conform(rows)


def test_non_whole_int() -> None:
    with pytest.raises(DataError, match=esc("table 'stations', row 0 (station_id='F1'), "
                                            "column 'n_chargers': value 2.5 is not a whole number")):
        STATIONS.conform([station(n_chargers=2.5)])


def test_invalid_choice() -> None:
    with pytest.raises(DataError, match=esc("table 'stations', row 0 (station_id='F1'), column 'kind': "
                                            "value 'ultra' is not one of "
                                            "['fcs', 'scs', 'home', 'workplace', 'campus']")):
        STATIONS.conform([station(kind="ultra")])


@pytest.mark.parametrize("value, shown", [("maybe", "'maybe'"), (2, "2.0"), (0.5, "0.5"), ("ja", "'ja'")])
def test_bad_boolean(value: object, shown: str) -> None:
    with pytest.raises(DataError, match=esc(f"table 'lines', row 1 (line_id='L2'), column 'in_service': "
                                            f"value {shown} is not a boolean")):
        LINES.conform([line(), line(line_id="L2", in_service=value)])


@pytest.mark.parametrize("default", [REQUIRED, None])
def test_empty_boolean_without_default(default: object) -> None:
    schema = TableSchema("flags", (Field("flag_id", "str", "-", "Id."), Field("on", "bool", "-", "On.", default)),
                         key="flag_id")
    with pytest.raises(DataError, match=esc("table 'flags', row 1 (flag_id='b'), column 'on': "
                                            "empty value in a boolean column")):
        schema.conform([{"flag_id": "a", "on": True}, {"flag_id": "b", "on": None}])


def test_duplicate_key_id() -> None:
    rows = [{"bus_id": "B1", "base_kv": 1.0}, {"bus_id": "B2", "base_kv": 1.0}, {"bus_id": "B1", "base_kv": 1.0}]
    with pytest.raises(DataError, match=esc("table 'buses', row 2 (bus_id='B1'), column 'bus_id': "
                                            "duplicate id 'B1'")):
        BUSES.conform(rows)


def test_duplicate_key_after_casting_numbers_to_ids() -> None:
    # 1.0 (numeric CSV column) and "1" are the same bus id
    with pytest.raises(DataError, match=esc("table 'buses', row 1 (bus_id='1'), column 'bus_id': "
                                            "duplicate id '1'")):
        BUSES.conform(pd.DataFrame({"bus_id": [1.0, "1"], "base_kv": [1.0, 1.0]}))


def test_row_without_key_is_named_by_position() -> None:
    rows = [{"ev_id": "E1", "trip_index": 0, "depart_s": 0, "origin_node": "N1", "destination_node": "N2"},
            {"ev_id": "E1", "trip_index": 1, "depart_s": -1, "origin_node": "N2", "destination_node": "N1"}]
    with pytest.raises(DataError, match=esc("table 'trips', row 1, column 'depart_s': "
                                            "value -1.0 is below the minimum 0.0 s")):
        TRIPS.conform(rows)


def test_field_rejects_unknown_dtype() -> None:
    with pytest.raises(ValueError, match=esc("field p: dtype must be one of ['bool', 'float', 'int', 'str']")):
        Field("p", "complex", "kW", "power")


def test_data_classes_conform_their_tables() -> None:
    with pytest.raises(DataError, match=esc("table 'buses', row 1 (bus_id='B1'), column 'bus_id': "
                                            "duplicate id 'B1'")):
        Feeder(buses=[{"bus_id": "B1", "base_kv": 1.0}, {"bus_id": "B1", "base_kv": 1.0}])
    with pytest.raises(DataError, match=esc("table 'charger_models', row 0 (model_id='DC50'), "
                                            "column 'p_ch_max_kw': value -50.0 is below the minimum 0.0 kW")):
        Instance(charger_models=[{"model_id": "DC50", "p_ch_max_kw": -50}])
    with pytest.raises(DataError, match=esc("table 'road_links', row 0 (link_id='A'), column 'length_m': "
                                            "value -1.0 is below the minimum 0.0 m")):
        RoadNetwork(links=[{"link_id": "A", "from_node": "N1", "to_node": "N2", "length_m": -1}])


# --------------------------------------------------------------------------- conform: canonical form


def test_defaults_are_filled() -> None:
    df = LINES.conform([line()])
    assert df["b_us"].tolist() == [0.0]
    assert df["ampacity_a"].tolist() == [math.inf]
    assert df["in_service"].tolist() == [True]
    ev = EVS.conform([{"ev_id": "E1", "vtype_id": "car"}]).iloc[0]
    assert (ev["soc_init"], ev["soc_min"], ev["v2g_opt_in"], ev["home_station"]) == (0.5, 0.2, False, None)


def test_empty_cells_of_optional_columns_take_the_default() -> None:
    df = LINES.conform(pd.DataFrame([line(b_us=np.nan, in_service=None), line(line_id="L2", in_service="")]))
    assert df["b_us"].tolist() == [0.0, 0.0]
    assert df["in_service"].tolist() == [True, True]
    pv = PV.conform(pd.DataFrame({"pv_id": ["P1", "P2"], "bus_id": ["B1", "B1"], "p_rated_kw": [1.0, 1.0],
                                  "profile": pd.array([pd.NA, ""], dtype="string")}))
    assert pv["profile"].tolist() == [None, None]
    assert math.isnan(pv["s_rated_kva"].iloc[0])


def test_columns_in_canonical_order_then_extra_columns_in_their_order() -> None:
    df = BUSES.conform(pd.DataFrame({"zone": ["a"], "base_kv": [1.0], "owner": ["x"], "bus_id": ["B1"]}))
    assert list(df.columns) == BUSES.columns + ["zone", "owner"]
    assert df[["zone", "owner"]].iloc[0].tolist() == ["a", "x"]


def test_dtypes_are_cast() -> None:
    df = BUSES.conform(pd.DataFrame({"bus_id": ["1", 2, 3.0, "007"], "base_kv": ["12.66", 12, 12.5, 1]}))
    assert df["bus_id"].tolist() == ["1", "2", "3", "007"]
    assert all(isinstance(b, str) for b in df["bus_id"])
    assert df["bus_id"].dtype == object
    assert df["base_kv"].dtype == np.float64
    st = STATIONS.conform([station(n_chargers="4"), station(station_id="F2", n_chargers=2.0)])
    assert st["n_chargers"].dtype == np.int64
    assert st["n_chargers"].tolist() == [4, 2]
    assert st["power_class_override"].dtype == np.bool_


@pytest.mark.parametrize("text, value", [("true", True), ("Yes", True), ("1", True), ("T", True),
                                         ("false", False), ("no", False), ("0", False), (" F ", False),
                                         (1, True), (0.0, False), (np.bool_(True), True)])
def test_boolean_spellings(text: object, value: bool) -> None:
    assert LINES.conform([line(in_service=text)])["in_service"].tolist() == [value]


def test_index_is_reset() -> None:
    df = pd.DataFrame([line()], index=[7])
    assert list(LINES.conform(df).index) == [0]


def test_empty_tables_have_canonical_dtypes() -> None:
    for schema in ALL_SCHEMAS.values():
        df = schema.empty()
        assert list(df.columns) == schema.columns
        assert len(df) == 0
        for f in schema.fields:
            expected = {"str": object, "float": np.float64, "int": np.int64, "bool": np.bool_}[f.dtype]
            assert df[f.name].dtype == expected, (schema.name, f.name)


@pytest.mark.parametrize("nothing", [None, [], pd.DataFrame()])
def test_no_rows_is_an_empty_conformed_table(nothing: object) -> None:
    df = BUSES.conform(nothing)  # type: ignore[arg-type]
    assert len(df) == 0
    assert list(df.columns) == BUSES.columns
    schema = TableSchema("t", (Field("a", "float", "kW", "A.", 1.0),))
    assert list(schema.conform(nothing).columns) == ["a"]  # type: ignore[arg-type]


def test_schema_lookup_and_describe() -> None:
    assert BUSES["base_kv"].unit == "kV"
    assert BUSES["bus_id"].required and not BUSES["v_min_pu"].required
    d = BUSES.describe()
    assert d["name"].tolist() == BUSES.columns
    assert d.loc[d["name"] == "bus_id", "default"].item() == "(required)"
    assert d.loc[d["name"] == "v_min_pu", "default"].item() == "0.95"


def test_markdown_lists_every_column_with_unit_default_choices_and_bounds() -> None:
    md = STATIONS.markdown()
    assert md.startswith("### `stations`\n")
    for name in STATIONS.columns:
        assert f"| `{name}` |" in md
    assert "| `kind` | str | - | *required* | Station kind. One of `fcs`, `scs`, `home`, `workplace`, " \
           "`campus`. |" in md
    assert "| `p_site_max_kw` | float | kW | `inf` |" in md
    assert "| `eff_ch` | float | - | `0.95` | Grid-to-battery efficiency of the charger. Range above 0 to 1, finite. |" \
        in CHARGER_MODELS.markdown()
    assert "Range 0 to 1e+07, inf allowed." in md


def test_every_schema_is_documented() -> None:
    for name, schema in ALL_SCHEMAS.items():
        assert schema.name == name
        assert schema.description
        assert schema.key is None or schema.key in schema.columns
        for f in schema.fields:
            assert f.unit and f.description, (name, f.name)
            assert f.choices is None or f.dtype == "str"


# --------------------------------------------------------------------------- data classes


def test_feeder_per_unit_lines() -> None:
    feeder = Feeder(base_mva=10.0,
                    buses=[{"bus_id": "B1", "base_kv": 12.66}, {"bus_id": "B2", "base_kv": 12.66},
                           {"bus_id": "B3", "base_kv": 0.4}],
                    lines=[line(r_ohm=0.0922, x_ohm=0.047, b_us=2.0), line(line_id="L2", from_bus="B3", to_bus="B2",
                                                                        r_ohm=0.01, x_ohm=0.02)])
    lp = feeder.lines_pu()
    z_hv = 12.66 ** 2 / 10.0
    z_lv = 0.4 ** 2 / 10.0  # from-bus base kV
    np.testing.assert_allclose(lp["r_pu"], [0.0922 / z_hv, 0.01 / z_lv], rtol=RTOL_EXACT)
    np.testing.assert_allclose(lp["x_pu"], [0.047 / z_hv, 0.02 / z_lv], rtol=RTOL_EXACT)
    np.testing.assert_allclose(lp["b_pu"], [2.0e-6 * z_hv, 0.0], rtol=RTOL_EXACT)
    np.testing.assert_allclose(feeder.z_base_ohm(["B3", "B1"]), [z_lv, z_hv], rtol=RTOL_EXACT)
    np.testing.assert_allclose(feeder.i_base_a(["B1"]), [10.0 * 1e3 / (math.sqrt(3) * 12.66)], rtol=RTOL_EXACT)
    assert list(feeder.lines.columns) == LINES.columns  # lines_pu works on a copy
    assert feeder.bus_ids == ["B1", "B2", "B3"]
    assert feeder.bus_index() == {"B1": 0, "B2": 1, "B3": 2}


def test_feeder_totals() -> None:
    feeder = Feeder(buses=[{"bus_id": "B1", "base_kv": 1.0, "p_load_kw": 10, "q_load_kvar": 2},
                           {"bus_id": "B2", "base_kv": 1.0, "p_load_kw": 5.5}])
    assert math.isclose(feeder.total_load_kw(), 15.5, rel_tol=RTOL_EXACT)
    assert math.isclose(feeder.total_load_kvar(), 2.0, rel_tol=RTOL_EXACT)


def test_road_graph_travel_time() -> None:
    road = RoadNetwork(
        nodes=[{"node_id": "N1", "x": 0, "y": 0}, {"node_id": "N2", "x": 1000, "y": 0}, {"node_id": "N3"}],
        links=[{"link_id": "A", "from_node": "N1", "to_node": "N2", "length_m": 1000, "speed_limit_m_s": 10,
                "signal_delay_s": 5, "road_class": "primary"},
               {"link_id": "B", "from_node": "N2", "to_node": "N3", "length_m": 500},
               {"link_id": "C", "from_node": "N3", "to_node": "N1", "length_m": 500, "speed_limit_m_s": 0}])
    g = road.graph
    assert g is road.graph  # built once
    assert len(road) == 3 and g.number_of_nodes() == 3 and g.number_of_edges() == 3
    assert math.isclose(g["N1"]["N2"]["time_s"], 1000 / 10 + 5, rel_tol=RTOL_EXACT)
    assert math.isclose(g["N2"]["N3"]["time_s"], 500 / 13.89, rel_tol=RTOL_EXACT)
    assert g["N3"]["N1"]["time_s"] == math.inf  # closed road
    assert g["N1"]["N2"]["road_class"] == "primary"  # extra columns reach the graph
    assert g["N1"]["N2"]["lanes"] == 1
    assert g.nodes["N2"]["x"] == 1000.0
    assert not g.has_edge("N2", "N1")


def test_instance_counts_and_station_power() -> None:
    inst = Instance(
        charger_models=[{"model_id": "DC50", "p_ch_max_kw": 50}, {"model_id": "AC7", "p_ch_max_kw": 7}],
        stations=[station(), station(station_id="S1", kind="scs", model_id="AC7", n_chargers=10),
                  station(station_id="H1", kind="home", model_id="AC7", n_chargers=1),
                  station(station_id="W1", kind="workplace", model_id="AC7", n_chargers=2)],
        evs=[{"ev_id": "E1", "vtype_id": "car"}, {"ev_id": "E2", "vtype_id": "car"}],
        road=RoadNetwork(nodes=[{"node_id": "N1"}, {"node_id": "N2"}],
                         links=[{"link_id": "A", "from_node": "N1", "to_node": "N2", "length_m": 1}]),
        feeder=Feeder(buses=[{"bus_id": "B1", "base_kv": 1.0}, {"bus_id": "B2", "base_kv": 1.0}],
                      lines=[line()]))
    counts = inst.counts()
    assert counts == {"buses": 2, "lines": 1, "road_nodes": 2, "road_links": 1, "stations_fcs": 1,
                      "stations_scs": 1, "stations_private": 2, "chargers": 17,
                      "charger_kw_total": pytest.approx(4 * 50 + 10 * 7 + 7 + 2 * 7, rel=RTOL_EXACT), "evs": 2}
    power = inst.station_power()
    assert power["p_ch_total_kw"].tolist() == pytest.approx([200.0, 70.0, 7.0, 14.0], rel=RTOL_EXACT)


def test_empty_instance_counts() -> None:
    assert Instance().counts() == {"buses": 0, "lines": 0, "road_nodes": 0, "road_links": 0, "stations_fcs": 0,
                                   "stations_scs": 0, "stations_private": 0, "chargers": 0,
                                   "charger_kw_total": 0.0, "evs": 0}


def test_sample_step_profile() -> None:
    index = pd.date_range("2026-01-01 00:00", periods=6, freq="4h", tz="Asia/Shanghai")
    # value 1 from 06:00, 3 from 18:00; before 06:00 the first value holds
    out = sample_step_profile(np.array([18 * 3600.0, 6 * 3600.0]), np.array([3.0, 1.0]), index)
    assert out.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 3.0]
    assert sample_step_profile(np.array([]), np.array([]), index).tolist() == [0.0] * 6


# --------------------------------------------------------------------------- schema reference


def test_schemas_md_is_up_to_date() -> None:
    assert SCHEMAS_MD.read_text(encoding="utf-8") == schema_reference(), \
        "optev/data/SCHEMAS.md is out of date: run `python -m optev.data.docs`"


def test_schema_reference_covers_every_schema_and_the_unit_conventions() -> None:
    text = schema_reference()
    for name, schema in ALL_SCHEMAS.items():
        assert schema.markdown() in text, name
        assert text.count(f"### `{name}`\n") == 1
    assert "Z_base [Ω]  = V_base[kV]² / S_base[MVA]" in text
    assert "The 30 kW rule (R5.1.4)" in text
    assert "timezone-aware" in text
    assert ":class:" not in text


def test_docs_main_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "SCHEMAS.md"
    assert main(["--check", "--output", str(out)]) == 1  # missing
    assert main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == schema_reference()
    assert main(["--check", "--output", str(out)]) == 0
    out.write_text("stale\n", encoding="utf-8")
    assert main(["--check", "--output", str(out)]) == 1

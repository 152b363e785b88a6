"""Reader of V2Sim case folders (:func:`optev.io.read_v2sim`).

Two kinds of tests:

- the shipped cases in ``../shared/v2sim`` (``ux_12nodes``, ``ux_37nodes``, ``ux_Nanjing``):
  exact counts, unit conversions of known values, time-of-use prices and load profiles
  sampled at 15 and 60 minutes; skipped when the shared folder is absent;
- a small synthetic case written by :func:`write_case`, which exercises what the shipped
  cases do not contain (``<pv>``, ``<wind>``, ``<ess>``, ``<genmodel>``, empty price
  profiles, edge-bound stations, ``max_pc``/``max_pd``, multi-item tariffs) and every
  error path.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optev.data import FAST_CHARGER_MIN_KW, Instance
from optev.errors import DataError, FormatError
from optev.io import read, read_v2sim
from optev.io.v2sim import V2SIM_LICENCE, Bases, parse_quantity
from optev.testing import ABS_TOL_KW, ABS_TOL_PRICE, RTOL_EXACT

V2SIM = Path(__file__).resolve().parents[2] / "shared" / "v2sim"
needs_shared = pytest.mark.skipif(not V2SIM.is_dir(), reason=f"shared V2Sim data not found at {V2SIM} "
                                  "(the CI checks out shared/ beside the repository)")

HOUR = 3600


def row(df: pd.DataFrame, key: str, value: str) -> pd.Series:
    """The single row of ``df`` whose ``key`` column equals ``value``."""
    match = df[df[key] == value]
    assert len(match) == 1, f"{key}={value!r}: {len(match)} rows"
    return match.iloc[0]


def at(index: pd.DatetimeIndex, hh_mm: str) -> int:
    """Position of the first step at local time ``hh_mm`` on the first day."""
    stamp = index[0].normalize() + pd.Timedelta(f"{hh_mm}:00")
    return int(index.get_loc(stamp))


# ---------------------------------------------------------------------------------------
# Shipped cases
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nanjing() -> Instance:
    return read_v2sim(V2SIM / "ux_Nanjing")


@pytest.fixture(scope="module")
def nodes12() -> Instance:
    return read_v2sim(V2SIM / "ux_12nodes")


@pytest.fixture(scope="module")
def nodes37() -> Instance:
    return read_v2sim(V2SIM / "ux_37nodes")


@needs_shared
def test_nanjing_counts(nanjing: Instance) -> None:
    counts = nanjing.counts()
    assert counts["road_nodes"] == 3888
    assert counts["road_links"] == 8312
    assert counts["stations_fcs"] == 315
    assert counts["stations_scs"] == 3888
    assert counts["chargers"] == 42030
    assert counts["buses"] == 165
    assert counts["lines"] == 160
    assert len(nanjing.feeder.substations) == 5
    assert len(nanjing.feeder.generators) == 20  # 25 <gen>, 5 of them on slack buses
    assert counts["evs"] == 0


@needs_shared
def test_nanjing_feeders_and_stations(nanjing: Instance) -> None:
    subs = nanjing.feeder.substations
    assert list(subs["bus_id"]) == ["B0_1", "B1_1", "B2_1", "B3_1", "B4_1"]
    np.testing.assert_allclose(subs["vm_pu"], 1.1, rtol=RTOL_EXACT)
    np.testing.assert_allclose(subs["p_import_max_kw"], 30000.0, rtol=RTOL_EXACT)  # Pmax 30 MW
    np.testing.assert_allclose(subs["p_export_max_kw"], 0.0, atol=ABS_TOL_KW)  # Pmin 0 MW
    np.testing.assert_allclose(subs["price_buy_per_kwh"], 1.0, atol=ABS_TOL_PRICE)  # CostB 1.0 $/kWh
    np.testing.assert_allclose(nanjing.feeder.buses["base_kv"], 35.0, rtol=RTOL_EXACT)
    # station bound by node="cluster_..." keeps the node id
    st = row(nanjing.stations, "station_id", "scs_cluster_1157142184_1157142346")
    assert st["road_node"] == "cluster_1157142184_1157142346"
    assert st["bus_id"] == "B3_26"
    # Nanjing SCS all have <psell price=0>: V2G-capable 7 kW model
    assert set(nanjing.stations.loc[nanjing.stations["kind"] == "scs", "model_id"]) == {
        "v2sim_slow_7kw_v2g_20kw"}
    assert set(nanjing.stations.loc[nanjing.stations["kind"] == "fcs", "model_id"]) == {"v2sim_fast_120kw"}
    sell = nanjing.station_tariffs[nanjing.station_tariffs["direction"] == "sell"]
    assert len(sell) == 3888
    np.testing.assert_allclose(sell["price_per_kwh"], 0.0, atol=ABS_TOL_PRICE)


@needs_shared
def test_nanjing_metadata(nanjing: Instance) -> None:
    meta = nanjing.metadata
    assert meta.name == "ux_Nanjing"
    assert meta.source == str(V2SIM / "ux_Nanjing")
    assert meta.licence == V2SIM_LICENCE
    assert meta.timezone == "Asia/Shanghai"
    assert meta.step_minutes == 15.0
    assert meta.start == "2026-01-01T00:00:00"
    assert meta.extra["v2sim_files"]["net"] == "Nanjing.net.xml.gz"
    assert meta.extra["road_location"]["projParameter"].startswith("+proj=utm +zone=50")


@needs_shared
def test_12nodes(nodes12: Instance) -> None:
    counts = nodes12.counts()
    assert (counts["road_nodes"], counts["road_links"]) == (24, 64)
    assert (counts["stations_fcs"], counts["stations_scs"], counts["chargers"]) == (12, 12, 240)
    assert (counts["buses"], counts["lines"]) == (3, 2)
    feeder = nodes12.feeder
    assert list(feeder.substations["bus_id"]) == ["b0"]
    assert list(feeder.generators["gen_id"]) == ["g1"]  # g0 sits on the slack bus b0
    gen = row(feeder.generators, "gen_id", "g1")
    assert gen["p_max_kw"] == pytest.approx(100_000.0, rel=RTOL_EXACT)          # 100.0MW
    assert gen["q_min_kvar"] == pytest.approx(-100_000.0, rel=RTOL_EXACT)       # -100.0Mvar
    assert gen["cost_a_per_kw2h"] == pytest.approx(2500.0e-6, rel=RTOL_EXACT)   # 2500.0$/MWh2
    assert gen["cost_b_per_kwh"] == pytest.approx(0.4, rel=RTOL_EXACT)          # 400.0$/MWh
    assert gen["cost_c_per_h"] == pytest.approx(15.0, rel=RTOL_EXACT)           # 15.0$
    sub = feeder.substations.iloc[0]
    assert sub["price_buy_per_kwh"] == pytest.approx(0.3, rel=RTOL_EXACT)       # g0 CostB 300.0$/MWh
    assert sub["p_import_max_kw"] == pytest.approx(100_000.0, rel=RTOL_EXACT)
    assert sub["gen_id"] == "g0"
    b1 = row(feeder.buses, "bus_id", "b1")
    assert b1["p_load_kw"] == pytest.approx(10_200.0, abs=ABS_TOL_KW)          # 10.2MW const
    assert b1["q_load_kvar"] == pytest.approx(3_200.0, abs=ABS_TOL_KW)         # 3.2Mvar const
    assert (b1["v_min_pu"], b1["v_max_pu"]) == (0.8, 1.2)
    assert row(feeder.lines, "line_id", "l1")["r_ohm"] == pytest.approx(0.008, rel=RTOL_EXACT)
    assert np.isinf(feeder.lines["ampacity_a"]).all()                         # MaxIkA="inf"
    np.testing.assert_allclose(nodes12.timeseries.load_p_kw["b1"], 10_200.0, atol=ABS_TOL_KW)


@needs_shared
def test_12nodes_road_and_stations(nodes12: Instance) -> None:
    nodes = nodes12.road.nodes.set_index("node_id")
    assert nodes.loc["T1", "node_type"] == "home"
    assert nodes.loc["T6", "node_type"] == "work"
    assert nodes.loc["T12", "node_type"] == "relax"
    assert nodes.loc["T11", "node_type"] == "other"
    assert nodes.loc["CS1", "node_type"] is None
    link = row(nodes12.road.links, "link_id", "CS11")
    assert (link["from_node"], link["to_node"], link["length_m"], link["speed_limit_m_s"]) == (
        "T11", "CS11", 100.0, 5.0)
    # bind="CS1" names both a node and the link T1 -> CS1: the same road node
    assert row(nodes12.stations, "station_id", "fcs_CS1")["road_node"] == "CS1"
    assert row(nodes12.stations, "station_id", "scs_T1")["road_node"] == "T1"
    tariffs = nodes12.station_tariffs
    scs_t1 = tariffs[tariffs["station_id"] == "scs_T1"].set_index("direction")
    assert scs_t1.loc["buy", "price_per_kwh"] == pytest.approx(0.3, abs=ABS_TOL_PRICE)
    assert scs_t1.loc["sell", "price_per_kwh"] == pytest.approx(1.5, abs=ABS_TOL_PRICE)
    assert bool(scs_t1.loc["sell", "is_service_fee"]) is True
    assert not nodes12.stations["power_class_override"].any()
    assert bool(row(nodes12.stations, "station_id", "scs_T1")["allow_queuing"]) is False


@needs_shared
def test_37nodes(nodes37: Instance) -> None:
    counts = nodes37.counts()
    assert (counts["road_nodes"], counts["road_links"]) == (47, 150)
    assert (counts["stations_fcs"], counts["stations_scs"], counts["chargers"]) == (10, 37, 470)
    assert (counts["buses"], counts["lines"]) == (66, 64)
    assert list(nodes37.feeder.substations["bus_id"]) == ["b0_1", "b1_1"]
    assert len(nodes37.feeder.generators) == 8
    gen = row(nodes37.feeder.generators, "gen_id", "g0_2")
    assert gen["cost_a_per_kw2h"] == pytest.approx(0.0005, rel=RTOL_EXACT)      # 0.0005$/kWh2
    assert gen["p_max_kw"] == pytest.approx(30_000.0, rel=RTOL_EXACT)
    assert row(nodes37.stations, "station_id", "fcs_CS1")["road_node"] == "CS1"  # bind names a node
    assert row(nodes37.feeder.lines, "line_id", "l0_1")["x_ohm"] == pytest.approx(0.047, rel=RTOL_EXACT)


@needs_shared
@pytest.mark.parametrize("case", ["ux_12nodes", "ux_37nodes", "ux_Nanjing"])
def test_time_of_use_grid_price(case: str, nodes12: Instance, nodes37: Instance, nanjing: Instance) -> None:
    inst = {"ux_12nodes": nodes12, "ux_37nodes": nodes37, "ux_Nanjing": nanjing}[case]
    price = inst.timeseries.price
    expected = {"00:00": 0.35, "07:45": 0.35, "08:00": 1.10, "10:45": 1.10, "11:00": 0.70, "17:45": 0.70,
                "18:00": 1.10, "22:45": 1.10, "23:00": 0.70, "23:45": 0.70}
    for hh_mm, value in expected.items():
        k = at(price.index, hh_mm)
        assert price["buy_per_kwh"].iloc[k] == pytest.approx(value, abs=ABS_TOL_PRICE), hh_mm
        assert price["sell_per_kwh"].iloc[k] == pytest.approx(value, abs=ABS_TOL_PRICE), hh_mm
    assert inst.metadata.extra["price_source"] == "cprice, dprice"


B0_2_P_MW = [0.0700, 0.0650, 0.0625, 0.0625, 0.0625, 0.0600, 0.0725, 0.0900, 0.1150, 0.1600, 0.2025, 0.2200,
             0.2250, 0.1800, 0.1000, 0.1725, 0.1975, 0.2300, 0.2425, 0.2500, 0.1950, 0.1400, 0.1000, 0.0800]
"""Hourly <Pd> items of bus b0_2 in ux_37nodes.grid.xml (MW, from 00:00)."""


@needs_shared
def test_load_profile_15_min(nodes37: Instance) -> None:
    load = nodes37.timeseries.load_p_kw["b0_2"].to_numpy()
    assert load.size == 96
    np.testing.assert_allclose(load, np.repeat(B0_2_P_MW, 4) * 1000.0, rtol=0, atol=ABS_TOL_KW)
    q = nodes37.timeseries.load_q_kvar["b0_2"]
    assert q.iloc[at(q.index, "19:00")] == pytest.approx(150.0, abs=ABS_TOL_KW)  # 0.1500Mvar
    assert q.iloc[at(q.index, "18:45")] == pytest.approx(145.5, abs=ABS_TOL_KW)  # 0.1455Mvar
    bus = row(nodes37.feeder.buses, "bus_id", "b0_2")
    assert bus["p_load_kw"] == pytest.approx(250.0, abs=ABS_TOL_KW)  # snapshot = daily peak (19:00)
    assert bus["q_load_kvar"] == pytest.approx(150.0, abs=ABS_TOL_KW)
    slack = nodes37.timeseries.load_p_kw["b0_1"]  # const 0.0MW: a flat column
    np.testing.assert_allclose(slack, 0.0, atol=ABS_TOL_KW)


@needs_shared
def test_load_profile_60_min_two_days() -> None:
    inst = read_v2sim(V2SIM / "ux_37nodes", step_minutes=60.0, days=2, start="2026-03-02T00:00:00")
    load = inst.timeseries.load_p_kw["b0_2"].to_numpy()
    assert load.size == 48
    np.testing.assert_allclose(load, np.tile(B0_2_P_MW, 2) * 1000.0, rtol=0, atol=ABS_TOL_KW)
    assert inst.timeseries.step == pd.Timedelta(hours=1)
    assert inst.metadata.step_minutes == 60.0
    assert str(inst.timeseries.index.tz) == "Asia/Shanghai"


@needs_shared
def test_start_mid_day_uses_clock_time() -> None:
    inst = read_v2sim(V2SIM / "ux_37nodes", step_minutes=60.0, start="2026-03-02T08:00:00")
    load = inst.timeseries.load_p_kw["b0_2"].to_numpy()
    expected = np.array(B0_2_P_MW[8:] + B0_2_P_MW[:8]) * 1000.0  # 08:00 today .. 07:00 tomorrow
    np.testing.assert_allclose(load, expected, rtol=0, atol=ABS_TOL_KW)


@needs_shared
def test_read_dispatches_to_v2sim() -> None:
    assert read(V2SIM / "ux_12nodes").counts() == read_v2sim(V2SIM / "ux_12nodes").counts()


# ---------------------------------------------------------------------------------------
# Unit parsing
# ---------------------------------------------------------------------------------------

GRID_BASES = Bases(sb_mva=1.0, ub_kv=10.0)


@pytest.mark.parametrize("text, quantity, default_unit, expected", [
    ("0.07MW", "power", "pu", 70.0),
    ("70kW", "power", "pu", 70.0),
    ("3.2Mvar", "power", "pu", 3200.0),
    ("-100.0kvar", "power", "pu", -100.0),
    ("0.5MVA", "power", "pu", 500.0),
    ("0.25", "power", "pu", 250.0),             # bare = pu of Sb = 1 MVA
    ("0.25pu", "power", None, 250.0),
    ("1.05", "voltage", "pu", 1.05),
    ("9.5kV", "voltage", "pu", 0.95),            # ÷ Ub = 10 kV
    ("10500V", "voltage", "pu", 1.05),
    ("0.092200ohm", "impedance", "pu", 0.0922),
    ("0.01pu", "impedance", None, 1.0),          # × Ub²/Sb = 100 Ω
    ("0.4", "current", "kA", 400.0),
    ("250A", "current", None, 250.0),
    ("inf", "current", "kA", float("inf")),
    ("1.10$/kWh", "price", None, 1.10),
    ("300.0$/MWh", "price", None, 0.3),
    ("2000.0$/MWh2", "price2", None, 0.002),
    ("0.0005$/kWh2", "price2", None, 0.0005),
    ("10.0$", "money", None, 10.0),
    ("1MWh", "energy", None, 1000.0),
    ("1.0MVA", "base_power", None, 1.0),
    ("500kVA", "base_power", None, 0.5),
    ("12.66kV", "base_voltage", None, 12.66),
    (" 1e-3 MW ", "power", None, 1.0),
])
def test_parse_quantity(text: str, quantity: str, default_unit: str | None, expected: float) -> None:
    value = parse_quantity(text, quantity, default_unit=default_unit, bases=GRID_BASES)
    assert value == pytest.approx(expected, rel=RTOL_EXACT)


def test_parse_quantity_pu_on_a_different_base() -> None:
    bases = Bases(sb_mva=10.0, ub_kv=35.0)
    assert parse_quantity("0.1", "power", default_unit="pu", bases=bases) == pytest.approx(1000.0, rel=RTOL_EXACT)
    assert parse_quantity("1$/puh", "price", bases=bases) == pytest.approx(1e-4, rel=RTOL_EXACT)
    assert parse_quantity("1pu", "current", bases=bases) == pytest.approx(10e3 / (3 ** 0.5 * 35.0),
                                                                          rel=RTOL_EXACT)


@pytest.mark.parametrize("text, quantity, message", [
    ("0.07GW", "power", "x.xml: <bus ID='b1'>, attribute 'Pd': unknown unit 'GW' in '0.07GW'; power units "
                        "are MW, kW, MVA, kVA, Mvar, kvar, pu"),
    ("1.0$/kWh", "power", "unknown unit '$/kWh'"),
    ("0.3ohm", "current", "unknown unit 'ohm'"),
    ("10.0", "base_voltage", "'10.0' needs a unit (kV, V)"),
    ("abc", "power", "'abc' is not a number with an optional unit"),
    (None, "power", "value is missing"),
])
def test_parse_quantity_errors(text: str | None, quantity: str, message: str) -> None:
    with pytest.raises(FormatError, match=re.escape(message)):
        parse_quantity(text, quantity, where="x.xml: <bus ID='b1'>, attribute 'Pd'")


# ---------------------------------------------------------------------------------------
# Synthetic case
# ---------------------------------------------------------------------------------------

NET = """<roadnet v2simfmtver="1.0">
  <node id="n1" x="0" y="0"/>
  <node id="n2" x="1000" y="0"/>
  <node id="n3" x="1000" y="1000"/>
  <edge id="e12" from="n1" to="n2" length="1000.0" lanes="2" speed="13.89"/>
  <edge id="e23" from="n2" to="n3" length="1000.0"/>
  <edge id="e31" from="n3" to="n1" length="1414.2" speed="20.0"/>
</roadnet>
"""

NODE_TYPE = "Home:n1\nWork:n2,n3\n"

GRID = """<grid Sb="1.0MVA" Ub="10.0kV">
<bus ID="s" x="0" y="0" V="1.02"><Pd const="0.0MW"/><Qd const="0.0Mvar"/></bus>
<bus ID="a" MinV="9.5kV" MaxV="1.05">
  <Pd repeat="8" period="86400"><item time="0" value="100kW"/><item time="43200" value="0.3MW"/></Pd>
  <Qd const="50kvar"/>
</bus>
<bus ID="b"><Pd const="0.2" unit="MW"/><Qd const="0.01"/></bus>
<line ID="l1" From="s" To="a" R="0.5ohm" X="0.01pu" MaxIkA="0.4"/>
<line ID="l2" From="a" To="b" R="0.3ohm" X="0.2ohm"/>
<genmodel name="small">
  <Pmin const="0kW"/><Pmax const="500kW"/><Qmin const="-100kvar"/><Qmax const="100kvar"/>
  <CostA const="0.0001$/kWh2"/><CostB const="400$/MWh"/><CostC const="2$"/>
</genmodel>
<gen ID="g_s" Bus="s">
  <Pmin const="-1MW"/><Pmax const="5MW"/><Qmin const="-5Mvar"/><Qmax const="5Mvar"/>
  <CostA const="0$/kWh2"/><CostB const="0.5$/kWh"/><CostC const="0$"/>
</gen>
<gen ID="g_b" Bus="b" model="small"><Pmax const="0.25MW"/></gen>
<pv ID="pv1" Bus="a" pf="0.95" cc="1.0$/kWh">
  <P repeat="8" period="86400">
    <item time="0" value="0MW"/><item time="21600" value="0.1MW"/>
    <item time="43200" value="0.4MW"/><item time="64800" value="0MW"/>
  </P>
</pv>
<wind ID="w1" Bus="b" pf="0.9" cc="900$/MWh"><P const="200kW"/></wind>
<ess ID="e1" Bus="b" cap="1MWh" ec="0.9" ed="0.92" pc_max="100kW" pd_max="0.2MW" pf="0.95"
     init_elec="0.1MWh" policy="2" cprice="0.8$/kWh" dprice="1.2$/kWh"/>
<cprice repeat="8" period="86400">
</cprice>
<dprice/>
</grid>
"""

FCS = """<?xml version='1.0' encoding='utf8'?>
<root>
<fcs name="f_edge" edge="e12" slots="4" bus="a" x="1.5" y="2.5">
  <pbuy><item btime="0" price="0.8"/><item btime="79200" price="0.8"/><item btime="28800" price="1.4"/></pbuy>
</fcs>
<fcs name="f_small" node="n3" slots="2" bus="b" max_pc="22"><pbuy value="1.0" type="const"/></fcs>
</root>
"""

SCS = """<?xml version='1.0' encoding='utf8'?>
<root>
<!-- a comment between stations -->
<scs name="s_node" bind="n1" slots="10" bus="b" allow_queuing="False" psell_is_service_fee="True">
  <pbuy value="0.3" type="const"/>
  <psell type="tou_queue" queue_threshold="3"><item btime="0" price="0.2"/><item btime="36000" price="0.6"/></psell>
</scs>
<scs name="s_edge" bind="e23" slots="6" bus="a" max_pc="11" max_pd="11kW">
  <pbuy value="0.3" type="const"/><psell value="0.5"/>
</scs>
<scs name="s_uni" bind="n2" slots="3" bus="a" max_pd="15"><pbuy value="0.3" type="const"/></scs>
</root>
"""


def write_case(folder: Path, *, name: str = "synth", net: str | None = NET, grid: str | None = GRID,
               fcs: str | None = FCS, scs: str | None = SCS, node_type: str | None = NODE_TYPE) -> Path:
    """Write a small V2Sim case folder ``folder/name``; ``None`` leaves a file out."""
    case = folder / name
    case.mkdir(parents=True)
    for suffix, text in ((".net.xml", net), (".grid.xml", grid), (".fcs.xml", fcs), (".scs.xml", scs)):
        if text is not None:
            (case / f"{name}{suffix}").write_text(text, encoding="utf-8")
    if node_type is not None:
        (case / "node_type.txt").write_text(node_type, encoding="utf-8")
    return case


@pytest.fixture
def synth(tmp_path: Path) -> Instance:
    return read_v2sim(write_case(tmp_path))


def test_synthetic_road(synth: Instance) -> None:
    nodes = synth.road.nodes.set_index("node_id")
    assert list(nodes["node_type"]) == ["home", "work", "work"]
    links = synth.road.links.set_index("link_id")
    assert links.loc["e12", "lanes"] == 2
    assert links.loc["e23", "lanes"] == 1                                   # default
    assert links.loc["e23", "speed_limit_m_s"] == pytest.approx(13.89, rel=RTOL_EXACT)  # default
    assert links.loc["e31", "speed_limit_m_s"] == pytest.approx(20.0, rel=RTOL_EXACT)


def test_synthetic_buses_and_lines(synth: Instance) -> None:
    buses = synth.feeder.buses.set_index("bus_id")
    assert buses.loc["a", "v_min_pu"] == pytest.approx(0.95, rel=RTOL_EXACT)   # 9.5kV / 10 kV
    assert buses.loc["a", "p_load_kw"] == pytest.approx(300.0, abs=ABS_TOL_KW)  # peak of 100 kW / 0.3 MW
    assert buses.loc["b", "p_load_kw"] == pytest.approx(200.0, abs=ABS_TOL_KW)  # const="0.2" unit="MW"
    assert buses.loc["b", "q_load_kvar"] == pytest.approx(10.0, abs=ABS_TOL_KW)  # bare 0.01 pu of 1 MVA
    assert (buses.loc["b", "v_min_pu"], buses.loc["b", "v_max_pu"]) == (0.8, 1.2)  # V2Sim defaults
    assert (buses.loc["s", "v_min_pu"], buses.loc["s", "v_max_pu"]) == (1.02, 1.02)
    lines = synth.feeder.lines.set_index("line_id")
    assert lines.loc["l1", "x_ohm"] == pytest.approx(1.0, rel=RTOL_EXACT)        # 0.01 pu × 100 Ω
    assert lines.loc["l1", "ampacity_a"] == pytest.approx(400.0, rel=RTOL_EXACT)  # 0.4 kA
    assert np.isinf(lines.loc["l2", "ampacity_a"])                               # absent
    load = synth.timeseries.load_p_kw["a"]
    assert load.iloc[at(load.index, "11:45")] == pytest.approx(100.0, abs=ABS_TOL_KW)
    assert load.iloc[at(load.index, "12:00")] == pytest.approx(300.0, abs=ABS_TOL_KW)


def test_synthetic_generators_and_substation(synth: Instance) -> None:
    sub = synth.feeder.substations.iloc[0]
    assert (sub["substation_id"], sub["bus_id"], sub["vm_pu"]) == ("sub_s", "s", 1.02)
    assert sub["p_import_max_kw"] == pytest.approx(5000.0, rel=RTOL_EXACT)
    assert sub["p_export_max_kw"] == pytest.approx(1000.0, rel=RTOL_EXACT)     # Pmin = -1 MW
    assert sub["price_buy_per_kwh"] == pytest.approx(0.5, abs=ABS_TOL_PRICE)
    gens = synth.feeder.generators
    assert list(gens["gen_id"]) == ["g_b"]
    gen = gens.iloc[0]
    assert gen["p_max_kw"] == pytest.approx(250.0, rel=RTOL_EXACT)             # own <Pmax> wins
    assert (gen["q_min_kvar"], gen["q_max_kvar"]) == (-100.0, 100.0)           # from the genmodel
    assert gen["cost_a_per_kw2h"] == pytest.approx(1e-4, rel=RTOL_EXACT)
    assert gen["cost_b_per_kwh"] == pytest.approx(0.4, rel=RTOL_EXACT)
    assert gen["cost_c_per_h"] == pytest.approx(2.0, rel=RTOL_EXACT)


def test_synthetic_pv_wind_storage(synth: Instance) -> None:
    pv = synth.feeder.pv.iloc[0]
    assert (pv["pv_id"], pv["bus_id"], pv["profile"]) == ("pv1", "a", "pv1")
    assert pv["p_rated_kw"] == pytest.approx(400.0, rel=RTOL_EXACT)
    assert pv["curtailment_cost_per_kwh"] == pytest.approx(1.0, abs=ABS_TOL_PRICE)
    assert pv["pf"] == 0.95
    avail = synth.timeseries.availability
    for hh_mm, value in {"05:45": 0.0, "06:00": 0.25, "12:00": 1.0, "17:45": 1.0, "18:00": 0.0}.items():
        assert avail["pv1"].iloc[at(avail.index, hh_mm)] == pytest.approx(value, rel=RTOL_EXACT), hh_mm
    wind = synth.feeder.wind.iloc[0]
    assert wind["p_rated_kw"] == pytest.approx(200.0, rel=RTOL_EXACT)
    assert wind["curtailment_cost_per_kwh"] == pytest.approx(0.9, abs=ABS_TOL_PRICE)  # 900$/MWh
    np.testing.assert_allclose(avail["w1"], 1.0, rtol=RTOL_EXACT)
    ess = synth.feeder.storage.iloc[0]
    assert (ess["e_max_kwh"], ess["e_init_kwh"]) == pytest.approx((1000.0, 100.0), rel=RTOL_EXACT)
    assert (ess["p_ch_max_kw"], ess["p_dis_max_kw"]) == pytest.approx((100.0, 200.0), rel=RTOL_EXACT)
    assert (ess["eff_ch"], ess["eff_dis"]) == (0.9, 0.92)


def test_synthetic_empty_prices_fall_back_to_flat(synth: Instance) -> None:
    price = synth.timeseries.price
    np.testing.assert_allclose(price["buy_per_kwh"], 0.5, atol=ABS_TOL_PRICE)  # CostB of the slack gen
    np.testing.assert_allclose(price["sell_per_kwh"], 0.0, atol=ABS_TOL_PRICE)
    assert synth.metadata.extra["price_source"] == "flat buy_per_kwh, flat sell_per_kwh"


def test_synthetic_stations_and_models(synth: Instance) -> None:
    st = synth.stations.set_index("station_id")
    assert st.loc["f_edge", "road_node"] == "n2"       # edge e12 -> its to-node
    assert st.loc["f_small", "road_node"] == "n3"      # node attribute
    assert st.loc["s_node", "road_node"] == "n1"       # bind names a node
    assert st.loc["s_edge", "road_node"] == "n3"       # bind names a link -> its to-node
    assert dict(st["model_id"]) == {
        "f_edge": "v2sim_fast_120kw", "f_small": "v2sim_fast_22kw", "s_node": "v2sim_slow_7kw_v2g_20kw",
        "s_edge": "v2sim_slow_11kw_v2g_11kw", "s_uni": "v2sim_slow_7kw"}
    assert dict(st["power_class_override"]) == {
        "f_edge": False, "f_small": True, "s_node": False, "s_edge": False, "s_uni": False}
    assert (st.loc["f_edge", "x"], st.loc["f_edge", "y"]) == (1.5, 2.5)
    assert dict(st["allow_queuing"]) == {
        "f_edge": True, "f_small": True, "s_node": False, "s_edge": True, "s_uni": True}
    models = synth.charger_models.set_index("model_id")
    assert models.loc["v2sim_fast_22kw", "p_ch_max_kw"] < FAST_CHARGER_MIN_KW
    assert models.loc["v2sim_slow_7kw_v2g_20kw", ["p_ch_max_kw", "p_dis_max_kw"]].tolist() == [7.0, 20.0]
    assert models.loc["v2sim_slow_11kw_v2g_11kw", ["p_ch_max_kw", "p_dis_max_kw"]].tolist() == [11.0, 11.0]
    assert models.loc["v2sim_slow_7kw", "p_dis_max_kw"] == 0.0            # no <psell>: max_pd ignored
    assert not models.loc["v2sim_slow_7kw", "v2g"]
    assert dict(models["technology"]) == {
        "v2sim_fast_120kw": "dc", "v2sim_fast_22kw": "dc", "v2sim_slow_7kw_v2g_20kw": "ac",
        "v2sim_slow_11kw_v2g_11kw": "ac", "v2sim_slow_7kw": "ac"}


def test_synthetic_time_of_use_tariffs(synth: Instance) -> None:
    t = synth.station_tariffs
    f_edge = t[t["station_id"] == "f_edge"]
    assert list(f_edge["direction"]) == ["buy"] * 3
    assert list(f_edge["start_s"]) == [0.0, 8 * HOUR, 22 * HOUR]       # sorted by btime
    np.testing.assert_allclose(f_edge["price_per_kwh"], [0.8, 1.4, 0.8], atol=ABS_TOL_PRICE)
    sell = t[(t["station_id"] == "s_node") & (t["direction"] == "sell")]
    assert list(sell["start_s"]) == [0.0, 10 * HOUR]
    np.testing.assert_allclose(sell["price_per_kwh"], [0.2, 0.6], atol=ABS_TOL_PRICE)
    assert sell["is_service_fee"].all()
    assert not t.loc[t["station_id"] == "f_edge", "is_service_fee"].any()
    assert len(t[t["station_id"] == "s_uni"]) == 1
    s_edge_sell = t[(t["station_id"] == "s_edge") & (t["direction"] == "sell")]  # value without type: const
    assert list(s_edge_sell["start_s"]) == [0.0]
    assert s_edge_sell["price_per_kwh"].iloc[0] == pytest.approx(0.5, abs=ABS_TOL_PRICE)


def test_synthetic_non_daily_period(tmp_path: Path) -> None:
    grid = GRID.replace('<Pd repeat="8" period="86400"><item time="0" value="100kW"/>'
                        '<item time="43200" value="0.3MW"/></Pd>',
                        '<Pd repeat="24" period="7200"><item time="0" value="100kW"/>'
                        '<item time="3600" value="0.3MW"/></Pd>')
    inst = read_v2sim(write_case(tmp_path, grid=grid), step_minutes=60.0)
    np.testing.assert_allclose(inst.timeseries.load_p_kw["a"], [100.0, 300.0] * 12, atol=ABS_TOL_KW)


def test_synthetic_gzip_net_and_no_stations(tmp_path: Path) -> None:
    import gzip
    case = write_case(tmp_path, net=None, fcs=None, scs=None, node_type=None)
    with gzip.open(case / "synth.net.xml.gz", "wt", encoding="utf-8") as fh:
        fh.write(NET)
    inst = read_v2sim(case)
    assert len(inst.road.nodes) == 3 and len(inst.stations) == 0 and len(inst.charger_models) == 0
    assert inst.road.nodes["node_type"].isna().all()


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


def test_error_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="no such V2Sim case folder"):
        read_v2sim(tmp_path / "nope")


def test_error_path_is_a_file(tmp_path: Path) -> None:
    case = write_case(tmp_path)
    with pytest.raises(FormatError, match="a V2Sim case is a folder, not a file"):
        read_v2sim(case / "synth.grid.xml")


@pytest.mark.parametrize("left_out, message", [
    ("grid", "V2Sim case has no grid file (*.grid.xml)"),
    ("net", "V2Sim case has no road network file (*.net.xml or *.net.xml.gz)"),
])
def test_error_missing_file(tmp_path: Path, left_out: str, message: str) -> None:
    with pytest.raises(FormatError, match=re.escape(message)):
        read_v2sim(write_case(tmp_path, **{left_out: None}))


def test_error_ambiguous_files(tmp_path: Path) -> None:
    case = write_case(tmp_path)
    (case / "other.grid.xml").write_text(GRID, encoding="utf-8")
    (case / "synth.grid.xml").rename(case / "third.grid.xml")
    with pytest.raises(FormatError, match=re.escape("several grid files ['other.grid.xml', 'third.grid.xml']")):
        read_v2sim(case)


def test_prefers_file_named_after_folder(tmp_path: Path) -> None:
    case = write_case(tmp_path)
    (case / "old.fcs.xml").write_text("<root/>", encoding="utf-8")
    assert len(read_v2sim(case).stations) == 5


def test_error_xml_syntax(tmp_path: Path) -> None:
    broken = GRID.replace('<line ID="l2" From="a" To="b" R="0.3ohm" X="0.2ohm"/>',
                          '<line ID="l2" From="a" To="b" R="0.3ohm" X="0.2ohm">')
    with pytest.raises(FormatError, match=r"^synth\.grid\.xml: XML syntax error at line \d+, column \d+$"):
        read_v2sim(write_case(tmp_path, grid=broken))


def test_error_xml_syntax_in_station_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"synth\.scs\.xml: XML syntax error at line 3"):
        read_v2sim(write_case(tmp_path, scs="<root>\n<scs name='x'\n</root>"))


def test_error_unknown_unit(tmp_path: Path) -> None:
    grid = GRID.replace('R="0.3ohm"', 'R="0.3furlong"')
    with pytest.raises(FormatError, match=re.escape(
            "synth.grid.xml: <line ID='l2'>, attribute 'R': unknown unit 'furlong' in '0.3furlong'; "
            "impedance units are ohm, Ohm, Ω, pu")):
        read_v2sim(write_case(tmp_path, grid=grid))


def test_error_unknown_unit_in_profile_item(tmp_path: Path) -> None:
    grid = GRID.replace('value="0.3MW"', 'value="0.3MJ"')
    with pytest.raises(FormatError, match=re.escape(
            "synth.grid.xml: <bus ID='a'> <Pd> <item> 2, attribute 'value': unknown unit 'MJ'")):
        read_v2sim(write_case(tmp_path, grid=grid))


@pytest.mark.parametrize("old, new, message", [
    ('<line ID="l2" From="a" To="b"', '<line ID="l2" From="a" To="zz"',
     "synth.grid.xml: <line ID='l2'>, attribute 'To': unknown bus 'zz'"),
    ('<gen ID="g_b" Bus="b"', '<gen ID="g_b" Bus="zz"',
     "synth.grid.xml: <gen ID='g_b'>, attribute 'Bus': unknown bus 'zz'"),
    ('<gen ID="g_b" Bus="b" model="small">', '<gen ID="g_b" Bus="b" model="big">',
     "synth.grid.xml: <gen ID='g_b'>, attribute 'model': unknown <genmodel name='big'>"),
    ('<Pmax const="5MW"/>', '<Pmax><item time="0" value="5MW"/><item time="3600" value="4MW"/></Pmax>',
     "synth.grid.xml: <gen ID='g_s'> <Pmax>: time-varying generator limits and costs are not supported"),
    ('<grid Sb="1.0MVA" Ub="10.0kV">', '<grid Sb="1.0MVA" Ub="10.0kV" model="ieee33">',
     "grid templates (<grid model='ieee33'>) are not supported"),
    ('<grid Sb="1.0MVA"', '<grid Sb="1.0"', "synth.grid.xml: <grid>, attribute 'Sb': '1.0' needs a unit (MVA, kVA)"),
    ('<line ID="l1" From="s"', '<line From="s"', "synth.grid.xml: <line>: missing attribute 'ID'"),
    ('<Qd const="50kvar"/>', '<Qd/>', "synth.grid.xml: <bus ID='a'> <Qd>: needs a 'const' attribute or <item"),
])
def test_error_grid(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GRID
    with pytest.raises(FormatError, match=re.escape(message)):
        read_v2sim(write_case(tmp_path, grid=GRID.replace(old, new)))


@pytest.mark.parametrize("which, old, new, message", [
    ("fcs", 'bus="a" x="1.5"', 'bus="zz" x="1.5"',
     "synth.fcs.xml: <fcs name='f_edge'>, attribute 'bus': unknown bus 'zz'"),
    ("fcs", 'node="n3"', 'node="n9"', "synth.fcs.xml: <fcs name='f_small'>, attribute 'node': unknown road node 'n9'"),
    ("fcs", 'edge="e12"', 'edge="n1"', "synth.fcs.xml: <fcs name='f_edge'>, attribute 'edge': unknown road link 'n1'"),
    ("scs", 'bind="e23"', 'bind="x"',
     "synth.scs.xml: <scs name='s_edge'>, attribute 'bind': unknown road node or link 'x'"),
    ("scs", 'bind="n2" ', '', "synth.scs.xml: <scs name='s_uni'>: needs a 'bind', 'edge' or 'node' attribute"),
    ("fcs", 'btime="79200"', 'btime="90000"',
     "synth.fcs.xml: <fcs name='f_edge'> <pbuy> <item> 2: btime=90000 s is outside one day"),
    ("fcs", '<pbuy value="1.0" type="const"/>', '<pbuy value="1.0" type="auction"/>',
     "synth.fcs.xml: <fcs name='f_small'> <pbuy>, attribute 'type': unknown price type 'auction'"),
    ("fcs", 'max_pc="22"', 'max_pc="22MJ"', "synth.fcs.xml: <fcs name='f_small'>, attribute 'max_pc': unknown unit 'MJ'"),
    ("fcs", 'slots="2"', 'slots="2.5"', "synth.fcs.xml: <fcs name='f_small'>, attribute 'slots': '2.5' is not a number"),
    ("scs", '<scs name="s_uni" bind="n2" slots="3" bus="a" max_pd="15"><pbuy value="0.3" type="const"/>'
            '</scs>',
     '<fcs name="s_uni" bind="n2" slots="3" bus="a"><pbuy value="0.3" type="const"/></fcs>',
     "synth.scs.xml: <fcs> found in a SCS file (expected <scs>)"),
    ("scs", 'name="s_uni"', 'name="f_edge"', "synth: station name 'f_edge' is used twice"),
])
def test_error_stations(tmp_path: Path, which: str, old: str, new: str, message: str) -> None:
    text = {"fcs": FCS, "scs": SCS}[which]
    assert old in text
    with pytest.raises(FormatError, match=re.escape(message)):
        read_v2sim(write_case(tmp_path, **{which: text.replace(old, new)}))


@pytest.mark.parametrize("old, new, message", [
    ('to="n2" length', 'to="n7" length', "synth.net.xml: <edge id='e12'>, attribute 'to': unknown road node 'n7'"),
    ('length="1000.0" lanes="2"', 'lanes="2"', "synth.net.xml: <edge id='e12'>: missing attribute 'length'"),
    ("roadnet", "net", "synth.net.xml: root element is <net>, expected <roadnet>"),
])
def test_error_road(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in NET
    with pytest.raises(FormatError, match=re.escape(message)):
        read_v2sim(write_case(tmp_path, net=NET.replace(old, new)))


def test_error_node_type_unknown_node(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=re.escape("node_type.txt, line 2: unknown road node 'n9'")):
        read_v2sim(write_case(tmp_path, node_type="Home:n1\nWork:n2,n9\n"))


def test_error_loop_is_caught_by_validate(tmp_path: Path) -> None:
    grid = GRID.replace('<line ID="l2"', '<line ID="l3" From="b" To="s" R="0.1ohm" X="0.1ohm"/>\n<line ID="l2"')
    with pytest.raises(DataError, match="closes a loop"):
        read_v2sim(write_case(tmp_path, grid=grid))


@pytest.mark.parametrize("kwargs, message", [
    ({"step_minutes": 7.0}, "step_minutes=7 does not divide 1 day(s) into whole steps"),
    ({"step_minutes": 0.0}, "step_minutes must be positive"),
    ({"days": 0}, "days must be a positive whole number"),
    ({"timezone": "Mars/Olympus"}, "bad start '2026-01-01T00:00:00' or timezone 'Mars/Olympus'"),
])
def test_error_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(DataError, match=re.escape(message)):
        read_v2sim(write_case(tmp_path), **kwargs)

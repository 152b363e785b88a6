"""Vehicle types, preferences, routing and trip generation (issue 4, deliverables 1 and 2)."""

from __future__ import annotations

import hashlib
import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from optev.data import Feeder, Instance, RoadNetwork
from optev.errors import DataError
from optev.io import read_v2sim
from optev.mobility import (ACTIVITY_TYPES, DEFAULT_PROBTABLE, BusOptions, PreferenceModel, Router, add_fleet,
                            assign_node_types, class_counts, default_vehicle_types, generate_fleet,
                            load_trip_statistics, sample_price_weight, sample_soc_charge_threshold, sample_v2g,
                            trip_energy_kwh, willingness_to_charge)
from optev.mobility import routing as routing_mod
from optev.mobility.trip_statistics import TripStatistics, sample_first_departure, sample_parking_s
from optev.testing import RTOL_EXACT, ROUTE_LENGTH_ATOL_M, ROUTE_TIME_RTOL, SAMPLE_SHARE_ATOL

from paths import V2SIM, need

# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ux12() -> Instance:
    return read_v2sim(need(V2SIM / "ux_12nodes"))


@pytest.fixture(scope="module")
def ux37() -> Instance:
    return read_v2sim(need(V2SIM / "ux_37nodes"))


@pytest.fixture(scope="module")
def fleet37(ux37: Instance):
    return generate_fleet(ux37, 600, seed=7)


def _tiny_road() -> RoadNetwork:
    """A→B 1000 m @ 10 m/s (100 s); B→C 1000 m @ 10 m/s (100 s); A→C 3000 m @ 20 m/s + 60 s
    signal (210 s); C→A, B→A back links; a second, faster A→B link 1500 m @ 30 m/s (50 s);
    C→E only (E is a dead end, outside the strongly connected component)."""
    nodes = pd.DataFrame({"node_id": ["A", "B", "C", "E"], "x": [0.0, 1000.0, 2000.0, 3000.0],
                          "y": [0.0, 0.0, 0.0, 0.0], "node_type": ["home", "work", "relax", "home"]})
    links = pd.DataFrame({
        "link_id": ["ab", "bc", "ac", "ca", "ba", "ab_fast", "ce"],
        "from_node": ["A", "B", "A", "C", "B", "A", "C"],
        "to_node": ["B", "C", "C", "A", "A", "B", "E"],
        "length_m": [1000.0, 1000.0, 3000.0, 2000.0, 1000.0, 1500.0, 500.0],
        "speed_limit_m_s": [10.0, 10.0, 20.0, 10.0, 10.0, 30.0, 10.0],
        "signal_delay_s": [0.0, 0.0, 60.0, 0.0, 0.0, 0.0, 0.0]})
    return RoadNetwork(nodes=nodes, links=links)


def _tiny_instance() -> Instance:
    road = _tiny_road()
    road.nodes.loc[3, "node_type"] = "other"  # every type present; E is still unreachable back
    road.nodes.loc[2, "node_type"] = "relax"
    nodes = pd.concat([road.nodes, pd.DataFrame({"node_id": ["F"], "x": [0.0], "y": [1000.0],
                                                  "node_type": ["other"]})], ignore_index=True)
    links = pd.concat([road.links, pd.DataFrame({"link_id": ["af", "fa"], "from_node": ["A", "F"],
                                                 "to_node": ["F", "A"], "length_m": [1000.0, 1000.0]})],
                      ignore_index=True)
    feeder = Feeder(buses=pd.DataFrame({"bus_id": ["b0", "b1"], "base_kv": [10.0, 10.0]}),
                    lines=pd.DataFrame({"line_id": ["l1"], "from_bus": ["b0"], "to_bus": ["b1"],
                                        "r_ohm": [0.1], "x_ohm": [0.1]}),
                    substations=pd.DataFrame({"substation_id": ["s"], "bus_id": ["b0"]}))
    models = pd.DataFrame({"model_id": ["slow"], "p_ch_max_kw": [7.0]})
    stations = pd.DataFrame({"station_id": ["scs_C", "scs_A"], "kind": ["scs", "scs"], "model_id": ["slow", "slow"],
                             "n_chargers": [2, 2], "bus_id": ["b1", "b0"], "road_node": ["C", "A"]})
    return Instance(feeder=feeder, road=RoadNetwork(nodes=nodes, links=links), charger_models=models,
                    stations=stations)


# ---------------------------------------------------------------------------------------
# routing
# ---------------------------------------------------------------------------------------


def test_router_hand_network() -> None:
    r = Router(_tiny_road())
    # A→C: via the fast A→B link (50 s) and B→C (100 s) = 150 s, 1500 + 1000 m; the direct
    # link costs 3000/20 + 60 = 210 s
    dist, time = r.route(["A", "A", "C", "B"], ["C", "B", "B", "B"])
    assert np.allclose(time, [150.0, 50.0, 250.0, 0.0], rtol=RTOL_EXACT, atol=0)
    assert np.allclose(dist, [2500.0, 1500.0, 3500.0, 0.0], rtol=RTOL_EXACT, atol=0)
    assert r.path("A", "C") == ["A", "B", "C"]
    assert r.path("C", "B") == ["C", "A", "B"]
    assert r.path_length(r.index(["C", "A", "B"])) == pytest.approx((3500.0, 250.0), rel=RTOL_EXACT)
    with pytest.raises(DataError, match="no route from road node 'E' to 'A'"):
        r.route(["E"], ["A"])
    d_inf, t_inf = r.route(["E", "A"], ["A", "E"], unreachable="inf")
    assert np.isinf(d_inf[0]) and np.isinf(t_inf[0])
    d_tr, t_tr = r.travel(np.array(["E", "A"], dtype=object), np.array(["A", "E"], dtype=object))
    assert np.array_equal(d_tr, d_inf) and np.array_equal(t_tr, t_inf)
    assert t_inf[1] == pytest.approx(150.0 + 50.0, rel=RTOL_EXACT)  # A→B→C→E
    with pytest.raises(DataError, match="no route"):
        r.path("E", "A")
    with pytest.raises(DataError, match="unknown road node 'Z'"):
        r.route(["Z"], ["A"])
    assert list(r.node_ids[r.largest_component()]) == ["A", "B", "C"]
    # time to the nearest of {C}: A 150 s, B 100 s, C 0, E none
    t_near, which = r.nearest(["C"])
    assert np.allclose(t_near[:3], [150.0, 100.0, 0.0], rtol=RTOL_EXACT, atol=0)
    assert np.isinf(t_near[3]) and which[3] == -1 and list(which[:3]) == [2, 2, 2]
    dist_t, time_t = r.table(["A", "C"], ["B", "C"])
    assert np.allclose(time_t, [[50.0, 150.0], [250.0, 0.0]], rtol=RTOL_EXACT, atol=0)
    assert np.allclose(dist_t, [[1500.0, 2500.0], [3500.0, 0.0]], rtol=RTOL_EXACT, atol=0)


@pytest.mark.parametrize("case", ["ux_12nodes", "ux_37nodes"])
def test_router_matches_networkx(case: str) -> None:
    inst = read_v2sim(need(V2SIM / case))
    g = inst.road.graph
    r = Router(inst.road)
    ids = list(r.node_ids)
    dist, time = r.table(ids)
    for i, o in enumerate(ids):
        ref = nx.single_source_dijkstra_path_length(g, o, weight="time_s")
        for j, d in enumerate(ids):
            if d not in ref:
                assert np.isinf(time[i, j])
                continue
            assert time[i, j] == pytest.approx(ref[d], rel=ROUTE_TIME_RTOL, abs=0)
            if i == j:
                assert dist[i, j] == 0.0
                continue
            # the distance is that of one of the shortest-time routes networkx finds
            lengths = [sum(g.edges[a, b]["length_m"] for a, b in zip(p, p[1:]))
                       for p in nx.all_shortest_paths(g, o, d, weight="time_s")]
            assert min(abs(dist[i, j] - L) for L in lengths) <= ROUTE_LENGTH_ATOL_M
            p = r.path(o, d)
            assert p[0] == o and p[-1] == d
            length, t = r.path_length(r.index(p))
            assert length == pytest.approx(dist[i, j], abs=ROUTE_LENGTH_ATOL_M)
            assert t == pytest.approx(ref[d], rel=ROUTE_TIME_RTOL)


def test_router_chunks_cache_and_kernels_agree(ux37: Instance) -> None:
    rng = np.random.default_rng(3)
    o = rng.integers(0, len(ux37.road.nodes), 3000)
    d = rng.integers(0, len(ux37.road.nodes), 3000)
    a = Router(ux37.road).route(o, d)
    b = Router(ux37.road, cache_bytes=0, chunk_bytes=1).route(o, d)  # one origin per chunk, no cache
    small = Router(ux37.road, cache_bytes=16 * 47 * 5)  # room for 5 rows: evictions on the way
    c = small.route(o[:4], d[:4]), small.route(o, d)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(a[0], c[1][0]) and np.array_equal(a[1], c[1][1])
    assert np.array_equal(a[0][:4], c[0][0])
    # the compiled tree kernel and the numpy pointer jumping give the same lengths
    r = Router(ux37.road)
    from scipy.sparse.csgraph import dijkstra
    t, pred = dijkstra(r.graph, indices=np.arange(r.n), return_predecessors=True)
    ref = routing_mod._tree_length_numpy(pred, r._key, r._len)
    ref[~np.isfinite(t)] = np.inf
    if routing_mod._tree_length_numba is not None:
        assert np.allclose(r._tree_length(pred, t), ref, rtol=0, atol=ROUTE_LENGTH_ATOL_M)
    r.use_numba = False
    assert np.allclose(r._tree_length(pred, t), ref, rtol=0, atol=ROUTE_LENGTH_ATOL_M)


# ---------------------------------------------------------------------------------------
# vehicle types and preferences
# ---------------------------------------------------------------------------------------


def test_default_vehicle_types() -> None:
    vt = default_vehicle_types().set_index("vtype_id")
    assert set(vt["vehicle_class"]) == {"car", "bus", "logistics"}
    assert vt["source"].str.len().gt(0).all() and (vt["weight"] > 0).all()
    # V2Sim's first model: 100 kWh / 630 km, 200 kW DC, 5.98 kW AC, 20 kW V2G
    car = vt.loc["car_v2sim_1"]
    assert car["kwh_per_km"] == pytest.approx(100.0 / 630.0, rel=RTOL_EXACT)
    assert (car["p_ch_max_kw"], car["p_ch_ac_max_kw"], car["p_dis_max_kw"]) == (200.0, 5.98, 20.0)
    bus = vt.loc["bus_12m"]
    assert (bus["battery_kwh"], bus["length_m"], bus["top_speed_kmh"]) == (324.0, 12.0, 70.0)
    every = ["battery_kwh", "p_ch_max_kw", "p_ch_ac_max_kw", "p_dis_max_kw", "eff_ch", "eff_dis", "kwh_per_km",
             "max_accel_m_s2", "top_speed_kmh", "length_m"]
    assert vt[every].notna().all().all() and (vt[every] > 0).all().all()


def test_soc_threshold_follows_truncated_logistic() -> None:
    m = PreferenceModel(threshold_mid=0.3, threshold_scale=0.05, threshold_lo=0.1, threshold_hi=0.5)
    theta = sample_soc_charge_threshold(200_000, 11, m)
    assert theta.min() >= 0.1 and theta.max() <= 0.5
    # symmetric truncation around s50: half the users want to charge at SOC 0.3
    assert (theta > 0.3).mean() == pytest.approx(0.5, abs=SAMPLE_SHARE_ATOL)
    assert willingness_to_charge(0.3, 0.3, 0.05) == 0.5
    # elsewhere, P(θ > s) is the willingness curve renormalised to [lo, hi]
    f = lambda s: 1.0 / (1.0 + math.exp(-(s - 0.3) / 0.05))  # noqa: E731 - logistic CDF
    for s in (0.2, 0.25, 0.35, 0.42):
        expected = (f(0.5) - f(s)) / (f(0.5) - f(0.1))
        assert (theta > s).mean() == pytest.approx(expected, abs=SAMPLE_SHARE_ATOL)
    # willingness falls with SOC
    w = willingness_to_charge(np.array([0.1, 0.2, 0.3, 0.5]), 0.3, 0.05)
    assert (np.diff(w) < 0).all()


def test_price_weight_and_v2g_samplers() -> None:
    pw = sample_price_weight(100_000, 1, PreferenceModel(price_weight_a=4.0, price_weight_b=2.0))
    assert pw.min() >= 0.0 and pw.max() <= 1.0
    assert pw.mean() == pytest.approx(4.0 / 6.0, abs=SAMPLE_SHARE_ATOL)
    capable = np.arange(1000) % 4 != 0  # 750 capable
    opt_in, price = sample_v2g(capable, 0.3, 5)
    assert opt_in.sum() == 225 and not opt_in[~capable].any()
    assert (price[opt_in] > 0).all() and (price[~opt_in] == 0).all()
    assert np.median(price[opt_in]) == pytest.approx(0.8, rel=0.1)
    with pytest.raises(DataError, match="v2g_share"):
        sample_v2g(capable, 1.5, 5)
    with pytest.raises(DataError, match="seed"):
        sample_price_weight(3, None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# trip statistics
# ---------------------------------------------------------------------------------------


def test_probtable_copy_is_unchanged_and_attributed() -> None:
    src = need(V2SIM / "probtable")
    copied = sorted(p for p in DEFAULT_PROBTABLE.rglob("*") if p.suffix in (".csv", ".xml"))
    assert len(copied) == 16
    for p in copied:
        rel = p.relative_to(DEFAULT_PROBTABLE)
        assert hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256((src / rel).read_bytes()).digest(), rel
    assert (DEFAULT_PROBTABLE / "LICENSE-V2Sim.txt").read_text().startswith("BSD 3-Clause")
    readme = (DEFAULT_PROBTABLE / "README.md").read_text()
    assert "Qian" in readme and "16(4):3167" in readme and "BSD-3" in readme


def test_trip_statistics_interpretation() -> None:
    st = load_trip_statistics()
    sums = st.transfer.sum(axis=1)  # (from type, slot)
    assert np.all((np.abs(sums - 1.0) < 1e-9) | (sums == 0.0))
    assert np.allclose(st.parking[1:].sum(axis=1), 1.0, rtol=0, atol=1e-12) and st.parking[0].sum() == 0
    # home → work at 07:00-07:15 (slot 28) is the most likely morning destination on weekdays
    assert st.transfer[0, :, 28].argmax() == 1
    assert st.soc.sum() == pytest.approx(1.0, abs=1e-12) and st.soc[:10].sum() == 0.0
    weekend = load_trip_statistics(weekday=False)
    assert not np.array_equal(weekend.transfer, st.transfer)
    # V2Sim's first departure: weekday mean 6.63 × 65.76 + 114.54 min ≈ 9:10
    t = sample_first_departure(200_000, 2)
    assert t.mean() / 60.0 == pytest.approx(6.63 * 65.76 + 114.54, rel=SAMPLE_SHARE_ATOL)
    assert t.min() >= 114.54 * 60.0


def test_parking_sampler_bins_and_truncation() -> None:
    parking = np.zeros((4, 95))
    parking[1, 2] = 1.0  # work: always 30-45 min
    parking[2, 0] = parking[2, 10] = 0.5  # relax: 0-15 min or 150-165 min, even odds
    st = TripStatistics(transfer=np.zeros((4, 4, 96)), parking=parking, soc=np.ones(100) / 100, weekday=True)
    rng = np.random.default_rng(0)
    work = sample_parking_s(np.full(50_000, 1), st, rng)
    assert work.min() >= 1800.0 and work.max() < 2700.0
    assert work.mean() == pytest.approx(2250.0, rel=SAMPLE_SHARE_ATOL)
    relax = sample_parking_s(np.full(100_000, 2), st, rng)
    assert (relax < 900.0).mean() == pytest.approx(0.5, abs=SAMPLE_SHARE_ATOL)
    # truncated at 20 min: only the first bin is left
    cut = sample_parking_s(np.full(10_000, 2), st, rng, limit_s=1200.0)
    assert cut.max() < 900.0
    # truncated inside the only bin: uniform on [1800, 2000]
    cut = sample_parking_s(np.full(10_000, 1), st, rng, limit_s=2000.0)
    assert cut.min() >= 1800.0 and cut.max() <= 2000.0


def test_assign_node_types_rule() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-1, 1, 20_000), rng.uniform(-1, 1, 20_000)
    t1 = assign_node_types(x, y, 9)
    assert np.array_equal(t1, assign_node_types(x, y, 9))
    assert not np.array_equal(t1, assign_node_types(x, y, 10))
    assert set(t1) == set(ACTIVITY_TYPES)
    d = np.hypot(x - np.median(x), y - np.median(y))
    inner, outer = d < np.quantile(d, 0.2), d > np.quantile(d, 0.8)
    # weights at r ≈ 0.1 and r ≈ 0.9: work 0.37 vs 0.13, home 0.28 vs 0.52
    assert (t1[inner] == "work").mean() == pytest.approx(0.37, abs=2 * SAMPLE_SHARE_ATOL + 0.01)
    assert (t1[outer] == "home").mean() == pytest.approx(0.52, abs=2 * SAMPLE_SHARE_ATOL + 0.01)
    assert set(assign_node_types(np.zeros(4), np.zeros(4), 0)) == set(ACTIVITY_TYPES)


# ---------------------------------------------------------------------------------------
# fleet generation
# ---------------------------------------------------------------------------------------


def test_class_counts() -> None:
    assert class_counts(1000, {"car": 0.9, "bus": 0.03, "logistics": 0.07}) == {"car": 900, "bus": 30,
                                                                                  "logistics": 70}
    # 3.5, 1.75, 1.75 → floors 3, 1, 1; the two largest remainders (0.75) get the 2 left
    assert class_counts(7, {"car": 0.5, "bus": 0.25, "logistics": 0.25}) == {"car": 3, "bus": 2, "logistics": 2}
    with pytest.raises(DataError, match="sum to 1"):
        class_counts(10, {"car": 0.5})
    with pytest.raises(DataError, match="unknown vehicle class 'truck'"):
        class_counts(10, {"car": 0.5, "truck": 0.5})


def _csv_bytes(fleet) -> bytes:
    return b"".join(t.to_csv(index=False).encode() for t in fleet)


def test_same_seed_same_fleet_other_seed_differs(ux37: Instance, fleet37) -> None:
    again = generate_fleet(ux37, 600, seed=7)
    assert _csv_bytes(again) == _csv_bytes(fleet37)
    other = generate_fleet(ux37, 600, seed=8)
    assert not other.trips["depart_s"].equals(fleet37.trips["depart_s"])
    assert not other.evs["home_node"].equals(fleet37.evs["home_node"])
    # each class draws from its own stream: more buses leave the cars' trips unchanged
    more_buses = generate_fleet(ux37, 600, seed=7, mix={"car": 0.9, "bus": 0.1})
    cars = lambda f: f.trips[f.trips["ev_id"].str.startswith("car")].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(cars(more_buses), cars(fleet37))


def test_class_mix_and_tables(ux37: Instance, fleet37) -> None:
    evs, trips = fleet37.evs, fleet37.trips
    assert evs["vehicle_class"].value_counts().to_dict() == {"car": 540, "logistics": 42, "bus": 18}
    vclass = evs["vtype_id"].map(fleet37.vehicle_types.set_index("vtype_id")["vehicle_class"])
    assert (vclass == evs["vehicle_class"]).all()
    assert set(trips["ev_id"]) == set(evs["ev_id"])
    assert trips[["distance_m", "travel_time_s", "energy_kwh"]].notna().all().all()
    assert np.allclose(trips["energy_kwh"], trip_energy_kwh(trips, evs, fleet37.vehicle_types), rtol=RTOL_EXACT)
    per_km = trips["ev_id"].map(evs.set_index("ev_id")["vtype_id"]).map(
        fleet37.vehicle_types.set_index("vtype_id")["kwh_per_km"])
    assert np.allclose(trips["energy_kwh"], per_km * trips["distance_m"] / 1000.0, rtol=RTOL_EXACT)
    # routed values are the router's
    d, t = Router(ux37.road).route(trips["origin_node"], trips["destination_node"])
    assert np.array_equal(d, trips["distance_m"].to_numpy()) and np.array_equal(t, trips["travel_time_s"].to_numpy())
    # car activity places have the right node type; homes and work places are typed nodes
    ntype = ux37.road.nodes.set_index("node_id")["node_type"]
    car_trips = trips[trips["ev_id"].str.startswith("car")]
    assert (car_trips["destination_node"].map(ntype) == car_trips["purpose"]).all()
    # preferences in range, soc_init from V2Sim's histogram (≥ 10 %) for cars, ≥ 0.9 for fleets
    assert evs["price_weight"].between(0, 1).all() and evs["soc_charge_threshold"].between(0.1, 0.5).all()
    cars = evs["vehicle_class"] == "car"
    assert evs.loc[cars, "soc_init"].between(0.10, 1.0).all() and (evs.loc[~cars, "soc_init"] >= 0.9).all()
    assert evs["v2g_opt_in"].sum() == round(0.3 * 600)  # every default type can discharge
    validated = add_fleet(ux37, fleet37)
    assert len(validated.evs) == 600 and len(validated.stations) == len(ux37.stations) + len(fleet37.stations)


def _chains(fleet):
    trips = fleet.trips
    evs = fleet.evs.set_index("ev_id")
    for ev_id, g in trips.groupby("ev_id", sort=False):
        yield ev_id, evs.loc[ev_id], g.sort_values("trip_index")


def test_chains_are_consistent(fleet37) -> None:
    n_car = 0
    for ev_id, ev, g in _chains(fleet37):
        assert list(g["trip_index"]) == list(range(len(g)))
        assert (g["origin_node"].iloc[1:].to_numpy() == g["destination_node"].iloc[:-1].to_numpy()).all()
        arrive = (g["depart_s"] + g["travel_time_s"]).to_numpy()
        assert (g["depart_s"].iloc[1:].to_numpy() >= arrive[:-1]).all()
        assert (np.diff(g["depart_s"].to_numpy()) > 0).all()
        assert g["origin_node"].iloc[0] == ev["home_node"] == g["destination_node"].iloc[-1]
        if ev["vehicle_class"] == "car":
            n_car += 1
            assert 2 <= len(g) <= 6
            assert (g["purpose"].iloc[:-1] != "home").all() and g["purpose"].iloc[-1] == "home"
            assert (g.loc[g["purpose"] == "work", "destination_node"].isin([ev["work_node"]]) |
                    (g["origin_node"] == ev["work_node"])).loc[g["purpose"] == "work"].all()
            assert g["depart_s"].iloc[0] >= 114.54 * 60.0
            # no departure after 23:30 unless forced home 5 min after a later arrival
            late = g["depart_s"].to_numpy()[1:] > 23.5 * 3600
            forced = np.isclose(g["depart_s"].to_numpy()[1:], arrive[:-1] + 300.0, rtol=RTOL_EXACT, atol=0)
            assert (~late | forced).all() and (g["purpose"].to_numpy()[1:][late] == "home").all()
        elif ev["vehicle_class"] == "logistics":
            assert 4 <= len(g) <= 9 and set(g["purpose"].iloc[:-1]) == {"delivery"}
            assert g["purpose"].iloc[-1] == "depot"
            assert g["destination_node"].iloc[:-1].nunique() == len(g) - 1  # distinct stops
    assert n_car == 540


def test_bus_timetables_follow_headways(ux37: Instance, fleet37) -> None:
    trips, evs = fleet37.trips, fleet37.evs
    bus = trips[trips["ev_id"].str.startswith("bus")].merge(evs[["ev_id", "route_id"]], on="ev_id")
    assert bus["route_id"].notna().all()
    for route, g in bus.groupby("route_id"):
        out = g[g["purpose"] == "terminal"]
        assert out["origin_node"].nunique() == 1 and out["destination_node"].nunique() == 1
        deps = np.sort(out["depart_s"].to_numpy())
        gaps = np.diff(deps)
        buses = g["ev_id"].nunique()
        if buses > 1:
            h = gaps[0]
            assert h % 60.0 == 0.0 and np.all(gaps == h), route  # exact headway, whole minutes
        assert deps[0] == 6 * 3600.0 and deps[-1] <= 22 * 3600.0
        for _, b in g.groupby("ev_id"):
            starts = np.sort(b.loc[b["purpose"] == "terminal", "depart_s"].to_numpy())
            if len(starts) > 1:
                assert np.all(np.diff(starts) == starts[1] - starts[0])  # one cycle = buses × headway
                if buses > 1:
                    assert starts[1] - starts[0] == buses * gaps[0]
            # the timetable leaves time for the run at the commercial speed
            run = max(b["travel_time_s"].iloc[0], b["distance_m"].iloc[0] / (18.0 / 3.6))
            assert b["depart_s"].iloc[1] - b["depart_s"].iloc[0] >= run + 150.0 - 1e-9
    # a longer target headway means fewer buses per route
    sparse = generate_fleet(ux37, 600, seed=7, buses=BusOptions(headway_s=3600.0))
    assert sparse.evs["route_id"].str.startswith("R").sum() == 18
    assert sparse.evs.loc[sparse.evs["vehicle_class"] == "bus", "route_id"].nunique() > \
        evs.loc[evs["vehicle_class"] == "bus", "route_id"].nunique()


def test_private_chargers_for_the_private_share(ux37: Instance) -> None:
    fleet = generate_fleet(ux37, 400, seed=3, mix={"car": 0.9, "bus": 0.05, "logistics": 0.05},
                           private_share=0.25, workplace_share=0.1)
    evs, st = fleet.evs, fleet.stations.set_index("station_id")
    cars = evs[evs["vehicle_class"] == "car"]
    assert cars["home_station"].notna().sum() == 90 and cars["work_station"].notna().sum() == 36
    homes = cars[cars["home_station"].notna()]
    assert (homes["home_station"].map(st["road_node"]) == homes["home_node"]).all()
    assert (homes["home_station"].map(st["kind"]) == "home").all()
    works = cars[cars["work_station"].notna()]
    assert (works["work_station"].map(st["road_node"]) == works["work_node"]).all()
    # one charger per assigned EV
    assigned = pd.concat([evs["home_station"], evs["work_station"]]).dropna().value_counts()
    assert (st.loc[assigned.index, "n_chargers"] == assigned).all() and st["n_chargers"].sum() == assigned.sum()
    fleets = evs[evs["vehicle_class"] != "car"]
    assert fleets["home_station"].str.startswith("depot_").all()
    assert set(st.loc[fleets["home_station"], "kind"]) == {"workplace"}
    assert set(st["bus_id"]) <= set(ux37.feeder.buses["bus_id"])
    models = fleet.charger_models.set_index("model_id")
    assert models.loc["home_ac_7kw", "p_ch_max_kw"] == 7.0 and not models["v2g"].any()
    none = generate_fleet(ux37, 100, seed=3, private_share=0.0, workplace_share=0.0, depot_chargers=False)
    assert len(none.stations) == 0 and none.evs["home_station"].isna().all()


def test_hand_instance_uses_only_the_strong_component() -> None:
    inst = _tiny_instance()
    fleet = generate_fleet(inst, 60, seed=1, mix={"car": 0.8, "bus": 0.1, "logistics": 0.1})
    used = set(fleet.trips["origin_node"]) | set(fleet.trips["destination_node"])
    assert "E" not in used  # E has no way back: never a home, stop or depot
    assert set(fleet.evs.loc[fleet.evs["vehicle_class"] == "car", "home_node"]) == {"A"}
    # a private station takes the feeder bus of the public station nearest by road: A and
    # F (72 s to A) → scs_A on b0, C → scs_C on b1 (B is equidistant, 100 s, and not checked)
    st = fleet.stations
    expected = {"A": "b0", "F": "b0", "C": "b1"}
    checked = st[st["road_node"].isin(list(expected))]
    assert "home_A" in set(st["station_id"]) and len(checked) >= 2
    assert (checked["bus_id"] == checked["road_node"].map(expected)).all()
    add_fleet(inst, fleet)


def test_nanjing_untyped_network_smoke() -> None:
    inst = read_v2sim(need(V2SIM / "ux_Nanjing"))
    assert inst.road.nodes["node_type"].isna().all()
    fleet = generate_fleet(inst, 2000, seed=5)
    counts = fleet.evs["vehicle_class"].value_counts().to_dict()
    assert counts == {"car": 1800, "logistics": 140, "bus": 60}
    assert np.isfinite(fleet.trips["travel_time_s"]).all()
    car = fleet.trips[fleet.trips["ev_id"].str.startswith("car")]
    assert set(car["purpose"]) == {"home", "work", "relax", "other"}


def test_bad_arguments(ux12: Instance) -> None:
    with pytest.raises(DataError, match="private_share"):
        generate_fleet(ux12, 10, private_share=1.2)
    with pytest.raises(DataError, match="seed"):
        generate_fleet(ux12, 10, seed=-1)
    with pytest.raises(DataError, match="n_evs"):
        generate_fleet(ux12, 2.5)  # type: ignore[arg-type]
    road = ux12.road.nodes.copy()
    road["node_type"] = road["node_type"].where(road["node_type"] != "relax", "other")
    inst = Instance(feeder=ux12.feeder, road=RoadNetwork(nodes=road, links=ux12.road.links),
                    charger_models=ux12.charger_models, stations=ux12.stations)
    with pytest.raises(DataError, match="type \\['relax'\\]"):
        generate_fleet(inst, 10)

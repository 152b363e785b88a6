"""Charging event simulation and plant (issue 4, deliverables 3 and 4).

Tiny hand-made scenarios on a straight road whose expected results are computed by hand
in the comments: FCS FIFO queue and leave-when-charged, SCS rejection and staying
plugged, private chargers, energy conservation, determinism, plant setpoints (V2G, SOC
floor, absent EVs), 5-s telemetry in chunks.

The road of the hand-made scenarios: nodes on a line at x (m); the test router gives the
distance |x_o − x_d| and the time distance / 10 m/s. Efficiencies are 1 unless stated.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from optev.data import SESSIONS, Instance, RoadNetwork
from optev.errors import DataError
from optev.mobility.choice import willingness
from optev.mobility.core import PlantConfig
from optev.mobility.gridcity import grid_city
from optev.mobility.plant import Plant
from optev.mobility.simulate import simulate_day
from optev.mobility.state import Setpoints, StepReport
from optev.mobility.travel import StraightLineRouter
from optev.testing import (DAY_ENERGY_ATOL_KWH, LIMIT_ATOL_KW, SERIES_ENERGY_RTOL, SERIES_MEAN_ATOL,
                           SIM_ENERGY_ATOL_KWH, SIM_TIME_ATOL_S, SOC_ATOL)

X = {"A": 0.0, "F": 10_000.0, "G": 4_000.0, "B": 20_000.0, "C": 30_000.0}
SPEED = 10.0  # m/s


class LineRouter:
    """Distance |x_o − x_d| and time distance / 10 m/s between the nodes of :data:`X`."""

    def __init__(self) -> None:
        self.calls = 0

    def travel(self, origins: np.ndarray, destinations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        d = np.array([abs(X[o] - X[e]) for o, e in zip(origins, destinations)], dtype=float)
        return d, d / SPEED


def line_instance(stations: list[dict], evs: list[dict], trips: list[dict], *, vtype: dict | None = None) -> Instance:
    """An instance on the line road with the given stations, EVs and trips.

    Charger models: ``dc50`` (50 kW DC), ``ac7`` (7 kW AC), ``ac7v2g`` (7 kW, V2G 7 kW);
    all efficiencies 1. Vehicle ``car``: 50 kWh, 100 kW DC, 7 kW AC, 7 kW V2G,
    0.2 kWh/km, efficiencies 1.
    """
    nodes = pd.DataFrame({"node_id": list(X), "x": list(X.values()), "y": 0.0})
    models = pd.DataFrame({"model_id": ["dc50", "ac7", "ac7v2g"], "technology": ["dc", "ac", "ac"],
                           "p_ch_max_kw": [50.0, 7.0, 7.0], "p_dis_max_kw": [0.0, 0.0, 7.0],
                           "v2g": [False, False, True], "eff_ch": 1.0, "eff_dis": 1.0})
    vt = {"vtype_id": "car", "battery_kwh": 50.0, "p_ch_max_kw": 100.0, "p_ch_ac_max_kw": 7.0,
          "p_dis_max_kw": 7.0, "kwh_per_km": 0.2, "eff_ch": 1.0, "eff_dis": 1.0}
    vt.update(vtype or {})
    st = pd.DataFrame([{"bus_id": "1", **s} for s in stations])
    ev = pd.DataFrame([{"vtype_id": "car", **e} for e in evs])
    tr = pd.DataFrame(trips) if trips else None
    if tr is not None:
        tr["distance_m"] = [abs(X[o] - X[d]) for o, d in zip(tr["origin_node"], tr["destination_node"])]
        tr["travel_time_s"] = tr["distance_m"] / SPEED
    return Instance(road=RoadNetwork(nodes=nodes), charger_models=models, stations=st,
                    vehicle_types=pd.DataFrame([vt]), evs=ev, trips=tr)


def trip(ev: str, k: int, t: float, o: str, d: str) -> dict:
    return {"ev_id": ev, "trip_index": k, "depart_s": t, "origin_node": o, "destination_node": d}


ALWAYS = PlantConfig(slow_willing_soc_low=1.0, slow_willing_soc_high=1.0)
"""Drivers plug in at a slow station whenever their SOC is below 1 (no random draw matters)."""


def run(inst: Instance, config: PlantConfig = ALWAYS, **kw):
    return simulate_day(inst, config=config, router=LineRouter(), **kw)


def by_ev(sessions: pd.DataFrame) -> dict[str, pd.Series]:
    return {r.ev_id: r for r in sessions.itertuples()}


# --------------------------------------------------------------------------- FCS rules

def fcs_queue_instance() -> Instance:
    """Three EVs drive A → B (20 km, 4 kWh) at 3600, 3660, 3720 s with SOC 0.3 (15 kWh) and
    threshold 0.25: arrival SOC 0.22 < 0.25, so each detours via the one fast station F1 at F
    (x = 10 km, one 50 kW charger). Leg A → F: 10 km, 1000 s, 2 kWh → at F at 4600, 4660,
    4720 s with 13 kWh. Target max(0.8, 2 kWh/50 + 0.25) = 0.8 → 40 kWh: 27 kWh at 50 kW =
    1944 s. FIFO: e1 plugs 4600 → leaves 6544; e2 waits 4660 → 6544 (31.4 min), leaves 8488;
    e3 waits 4720 → 8488 (62.8 min), leaves 10432. Each then drives F → B (1000 s)."""
    evs = [{"ev_id": e, "soc_init": 0.3, "soc_charge_threshold": 0.25} for e in ("e1", "e2", "e3")]
    trips = [trip(e, 0, t, "A", "B") for e, t in (("e1", 3600.0), ("e2", 3660.0), ("e3", 3720.0))]
    return line_instance([{"station_id": "F1", "kind": "fcs", "model_id": "dc50", "n_chargers": 1,
                           "road_node": "F"}], evs, trips)


def test_fcs_queue_is_fifo_with_exact_waits() -> None:
    res = run(fcs_queue_instance())
    s = by_ev(res.sessions)
    expect = {"e1": (4600.0, 4600.0, 6544.0), "e2": (4660.0, 6544.0, 8488.0), "e3": (4720.0, 8488.0, 10432.0)}
    for ev, (arr, plug, dep) in expect.items():
        r = s[ev]
        assert r.station_id == "F1" and not r.rejected
        assert r.arrival == pytest.approx(arr, abs=SIM_TIME_ATOL_S)
        assert r.plug_in == pytest.approx(plug, abs=SIM_TIME_ATOL_S)
        assert r.departure == pytest.approx(dep, abs=SIM_TIME_ATOL_S)
        assert r.wait_min == pytest.approx((plug - arr) / 60.0, abs=SIM_TIME_ATOL_S)
        assert r.energy_needed_kwh == pytest.approx(27.0, abs=SIM_ENERGY_ATOL_KWH)
        assert r.energy_delivered_kwh == pytest.approx(27.0, abs=SIM_ENERGY_ATOL_KWH)
    assert s["e2"].wait_min == pytest.approx(31.4, abs=SIM_TIME_ATOL_S)
    assert s["e3"].wait_min == pytest.approx(62.8, abs=SIM_TIME_ATOL_S)
    # queue: 1 on [4660, 4720), 2 on [4720, 6544), 1 on [6544, 8488); mean over [3600, 7200):
    # (60 + 2·1824 + 656) / 3600; the charger draws 50 kW from 4600 on: 50·2600/3600
    series = Plant(fcs_queue_instance(), ALWAYS, router=LineRouter())
    while series.time_s < 12 * 3600:
        series.advance(900.0, report=False)
    ss = series.station_series(3600.0)
    assert ss.queue[1, 0] == pytest.approx((60 + 2 * 1824 + 656) / 3600, abs=SERIES_MEAN_ATOL)
    assert ss.load_kw[1, 0] == pytest.approx(50 * 2600 / 3600, abs=SERIES_MEAN_ATOL)
    assert ss.occupancy[1, 0] == pytest.approx(2600 / 3600, abs=SERIES_MEAN_ATOL)
    assert ss.queue[3, 0] == pytest.approx(0.0, abs=SERIES_MEAN_ATOL)


def test_fcs_car_leaves_when_charged_and_continues_its_trip() -> None:
    res = run(fcs_queue_instance())
    s = by_ev(res.sessions)
    evs = res.evs.set_index("ev_id")
    for ev in ("e1", "e2", "e3"):
        assert s[ev].soc_departure == pytest.approx(0.8, abs=SOC_ATOL)
        assert s[ev].departure - s[ev].plug_in == pytest.approx(1944.0, abs=SIM_TIME_ATOL_S)
        # 15 − 4 (driving) + 27 (charging) = 38 kWh at the end of the day: 0.76
        assert evs.loc[ev, "e_end_kwh"] == pytest.approx(38.0, abs=SIM_ENERGY_ATOL_KWH)
        assert evs.loc[ev, "driven_km"] == pytest.approx(20.0, abs=SIM_ENERGY_ATOL_KWH)
    # the plant reports the queue while it exists and the arrival at B 1000 s after leaving F
    plant = Plant(fcs_queue_instance(), ALWAYS, router=LineRouter())
    reports = [plant.advance(900.0) for _ in range(13)]  # up to 11700 s
    at_5400 = next(r for r in reports if r.t_end_s == 5400.0)
    assert at_5400.queues == {"F1": 2}
    assert [e.ev_id for e in at_5400.arrivals] == ["e1", "e2", "e3"]
    deps = [(e.ev_id, e.time_s) for r in reports for e in r.departures]
    assert [d[0] for d in deps] == ["e1", "e2", "e3"]
    assert plant.core.status[plant.core.ev_index["e3"]] == 0  # parked at B


def test_fcs_choice_trades_price_against_time() -> None:
    """Two fast stations for a trip A → B (20 km, SOC 0.3, threshold 0.25, target 0.8):
    F1 at F (10 km, on the way, no detour) at 2.0/kWh and G1 at G (4 km, also on the way)
    at 0.5/kWh. Both have no detour and a free charger, so only price and charging time
    differ: from G the EV arrives with 14.2 kWh (needs 25.8 kWh), from F with 13 (27).
    G1's charger gives only 7 kW. w = 1 (only money): G1, 0.5·25.8 < 2·27. w = 0 (only
    time): F1, charging 27/50 h < 25.8/7 h."""
    stations = [{"station_id": "F1", "kind": "fcs", "model_id": "dc50", "n_chargers": 1, "road_node": "F"},
                {"station_id": "G1", "kind": "fcs", "model_id": "ac7", "n_chargers": 1, "road_node": "G",
                 "power_class_override": True}]
    inst_tar = pd.DataFrame({"station_id": ["F1", "G1"], "direction": "buy", "start_s": 0.0,
                             "price_per_kwh": [2.0, 0.5]})
    picks = {}
    for w in (0.0, 1.0):
        inst = line_instance(stations, [{"ev_id": "e1", "soc_init": 0.3, "soc_charge_threshold": 0.25,
                                         "price_weight": w}], [trip("e1", 0, 3600.0, "A", "B")])
        inst.station_tariffs = inst_tar
        picks[w] = run(inst).sessions["station_id"].tolist()
    assert picks[1.0] == ["G1"]
    assert picks[0.0] == ["F1"]


# --------------------------------------------------------------------------- SCS rules

def scs_instance() -> Instance:
    """One SCS S at B with one 7 kW charger. e1 (SOC 0.5) drives A → B at 0 s, arrives 2000 s
    with 21 kWh, charges 29 kWh to 50 kWh in 29/7 h = 14914.29 s (done 16914.29 s) and stays
    plugged until its next trip B → A at 30000 s. e2 arrives at B at 2000 + 6000 = 8000 s (full:
    rejected) and drives on at 20000 s as planned. e3 arrives at 32000 s, after e1 left: plugs in."""
    evs = [{"ev_id": e, "soc_init": 0.5} for e in ("e1", "e2", "e3")]
    trips = [trip("e1", 0, 0.0, "A", "B"), trip("e1", 1, 30000.0, "B", "A"),
             trip("e2", 0, 6000.0, "A", "B"), trip("e2", 1, 20000.0, "B", "C"),
             trip("e3", 0, 30000.0, "A", "B")]
    return line_instance([{"station_id": "S", "kind": "scs", "model_id": "ac7", "n_chargers": 1,
                           "road_node": "B"}], evs, trips)


def test_full_scs_turns_car_away_and_it_continues_its_chain() -> None:
    res = run(scs_instance())
    s = res.sessions
    rej = s[s["rejected"]]
    assert rej["ev_id"].tolist() == ["e2"]
    r = rej.iloc[0]
    assert r.arrival == pytest.approx(8000.0, abs=SIM_TIME_ATOL_S) and math.isnan(r.plug_in)
    assert r.energy_delivered_kwh == 0.0 and r.departure == r.arrival
    # e2 made its next trip B → C on time and ends with 25 − 4 − 2 = 19 kWh
    ev = res.evs.set_index("ev_id")
    assert ev.loc["e2", "e_end_kwh"] == pytest.approx(25.0 - 4.0 - 2.0, abs=SIM_ENERGY_ATOL_KWH)
    assert ev.loc["e2", "rejections"] == 1 and ev.loc["e2", "sessions"] == 0
    # e3 arrives at 32000 s, after e1 unplugged at 30000 s: plugged in
    e3 = s[s["ev_id"] == "e3"].iloc[0]
    assert not e3.rejected and e3.plug_in == pytest.approx(32000.0, abs=SIM_TIME_ATOL_S)
    # and the sessions satisfy the optimiser's schema
    SESSIONS.conform(res.plugged_sessions[SESSIONS.columns])


def test_scs_car_stays_plugged_after_charging_until_departure() -> None:
    res = run(scs_instance())
    e1 = res.sessions[res.sessions["ev_id"] == "e1"].iloc[0]
    assert e1.plug_in == pytest.approx(2000.0, abs=SIM_TIME_ATOL_S)
    assert e1.departure == pytest.approx(30000.0, abs=SIM_TIME_ATOL_S)
    assert e1.expected_departure == pytest.approx(30000.0, abs=SIM_TIME_ATOL_S)
    assert e1.energy_delivered_kwh == pytest.approx(29.0, abs=SIM_ENERGY_ATOL_KWH)
    assert e1.soc_departure == pytest.approx(1.0, abs=SOC_ATOL)
    assert e1.departure_s == e1.departure and e1.arrival_s == e1.plug_in
    # occupancy 1 over [3600, 28800) while the load falls to 0 after 16914.29 s
    ser = res.series
    t = ser.t_s
    full = 2000.0 + 29.0 / 7.0 * 3600.0
    steps = (t >= 3600.0) & (t + ser.resolution_s <= 28800.0)
    assert steps.sum() == 28 and np.allclose(ser.occupancy[steps, 0], 1.0, atol=SERIES_MEAN_ATOL)
    charging = steps & (t + ser.resolution_s <= full)
    idle = steps & (t >= full)
    assert charging.any() and idle.any()
    assert np.allclose(ser.load_kw[charging, 0], 7.0, atol=SERIES_MEAN_ATOL)
    assert np.allclose(ser.load_kw[idle, 0], 0.0, atol=SERIES_MEAN_ATOL)


def test_slow_station_needs_a_long_enough_stop() -> None:
    """e1 reaches B at 2000 s. A 20-minute stop (< min_park_s = 30 min) does not use the SCS
    there, a 40-minute stop does."""
    for stop_s, n_sessions in ((1200.0, 0), (2400.0, 1)):
        inst = line_instance([{"station_id": "S", "kind": "scs", "model_id": "ac7", "n_chargers": 1,
                               "road_node": "B"}], [{"ev_id": "e1", "soc_init": 0.5}],
                             [trip("e1", 0, 0.0, "A", "B"), trip("e1", 1, 2000.0 + stop_s, "B", "A")])
        assert len(run(inst).sessions) == n_sessions


# --------------------------------------------------------------------------- private chargers

def test_private_chargers_are_used_only_by_their_evs() -> None:
    """H (home charger at B) belongs to e1. e2 parks at B too (no public station there) and
    does not charge although H is free; e3 owns H2 at C and parks at B: does not use H."""
    stations = [{"station_id": "H", "kind": "home", "model_id": "ac7", "n_chargers": 1, "road_node": "B"},
                {"station_id": "H2", "kind": "home", "model_id": "ac7", "n_chargers": 1, "road_node": "C"}]
    evs = [{"ev_id": "e1", "soc_init": 0.5, "home_station": "H"},
           {"ev_id": "e2", "soc_init": 0.5},
           {"ev_id": "e3", "soc_init": 0.5, "home_station": "H2"}]
    trips = [trip("e2", 0, 0.0, "A", "B"), trip("e3", 0, 100.0, "A", "B"), trip("e1", 0, 5000.0, "A", "B")]
    res = run(line_instance(stations, evs, trips))
    s = res.sessions
    assert s["ev_id"].tolist() == ["e1"] and s["station_id"].tolist() == ["H"]
    assert s["plug_in"].iloc[0] == pytest.approx(7000.0, abs=SIM_TIME_ATOL_S)
    assert not s["rejected"].any()
    # a private charger must be of a private kind
    bad = line_instance([{"station_id": "S", "kind": "scs", "model_id": "ac7", "n_chargers": 1, "road_node": "B"}],
                        [{"ev_id": "e1", "home_station": "S"}], [])
    with pytest.raises(DataError, match="home_station"):
        Plant(bad, router=LineRouter())


# --------------------------------------------------------------------------- energy, stranding

def test_stranded_ev_is_recorded_not_crashed() -> None:
    """SOC 0.02 (1 kWh) for a 20 km trip needing 4 kWh and no fast station: the battery
    empties a quarter of the way, at 0 + 2000/4 = 500 s."""
    inst = line_instance([], [{"ev_id": "e1", "soc_init": 0.02, "soc_charge_threshold": 0.0}],
                         [trip("e1", 0, 0.0, "A", "B"), trip("e1", 1, 9000.0, "B", "A")])
    ev = run(inst).evs.iloc[0]
    assert ev.stranded and ev.stranded_s == pytest.approx(500.0, abs=SIM_TIME_ATOL_S)
    assert ev.driving_kwh == pytest.approx(1.0, abs=SIM_ENERGY_ATOL_KWH) and ev.e_end_kwh == 0.0
    assert ev.driven_km == pytest.approx(5.0, abs=SIM_ENERGY_ATOL_KWH)


def _conservation(evs: pd.DataFrame) -> np.ndarray:
    return (evs["e_end_kwh"] - evs["e_init_kwh"] - (evs["charged_kwh"] - evs["discharged_kwh"]
                                                     - evs["driving_kwh"])).to_numpy()


def test_energy_is_conserved_per_ev_across_the_day() -> None:
    inst = grid_city(400, seed=3, side=12, n_fcs=4, fcs_chargers=2, scs_chargers=2)
    res = simulate_day(inst)
    assert len(res.sessions) > 100 and (res.sessions["station_kind"] == "fcs").any()
    assert np.abs(_conservation(res.evs)).max() <= DAY_ENERGY_ATOL_KWH
    # the sessions account for all charging, and the station series for all grid energy
    per_ev = res.sessions.groupby("ev_id")["energy_delivered_kwh"].sum()
    charged = res.evs.set_index("ev_id")["charged_kwh"]
    assert np.allclose(per_ev.reindex(charged.index, fill_value=0.0), charged, rtol=0, atol=DAY_ENERGY_ATOL_KWH)
    series_kwh = res.series.load_kw.sum() * res.series.resolution_s / 3600.0
    grid_kwh = res.sessions["grid_import_kwh"].sum() - res.sessions["grid_export_kwh"].sum()
    assert series_kwh == pytest.approx(grid_kwh, rel=SERIES_ENERGY_RTOL)


def test_energy_is_conserved_with_efficiencies_and_v2g_setpoints() -> None:
    """A controlled day: every plugged V2G EV is told to discharge in odd quarter-hours and
    charge in even ones; efficiencies 0.9 × 0.95."""
    inst = grid_city(300, seed=5, side=10, n_fcs=3, v2g_share=1.0)
    inst.charger_models["eff_ch"] = 0.95
    inst.charger_models["eff_dis"] = 0.95
    inst.vehicle_types["eff_ch"] = 0.9
    inst.vehicle_types["eff_dis"] = 0.9
    plant = Plant(inst)
    sp: dict[str, float] = {}
    k = 0
    discharged = False
    while plant.time_s < 86400.0:
        rep = plant.advance(900.0, Setpoints(ev_kw=sp))
        discharged |= any(p.p_kw < 0 for p in rep.plugged)
        sp = {p.ev_id: (-5.0 if k % 2 == 0 else 5.0) for p in rep.plugged}
        k += 1
    evs = plant.ev_summary()
    assert discharged and evs["discharged_kwh"].sum() > 0
    assert np.abs(_conservation(evs)).max() <= DAY_ENERGY_ATOL_KWH
    # never below the SOC floor when discharging
    assert (evs["soc_end"] >= 0.2 - SOC_ATOL)[evs["discharged_kwh"] > 0].all()


# --------------------------------------------------------------------------- determinism

def test_same_seed_gives_byte_identical_files(tmp_path) -> None:
    inst = grid_city(300, seed=2, side=10, n_fcs=3, scs_chargers=1)
    outs = []
    for k, seed in enumerate((7, 7, 8)):
        res = simulate_day(inst, config=PlantConfig(seed=seed), telemetry=tmp_path / f"tele{k}.parquet",
                           telemetry_stations=["fcs0", "scs0", "scs1"])
        paths = res.write(tmp_path / f"run{k}")
        outs.append({name: p.read_bytes() for name, p in paths.items()}
                    | {"telemetry": (tmp_path / f"tele{k}.parquet").read_bytes()})
    assert outs[0] == outs[1]
    assert outs[0]["sessions"] != outs[2]["sessions"]


# --------------------------------------------------------------------------- plant

def v2g_instance(soc: float = 0.6, v2g: bool = True) -> Instance:
    """e1 (and e2) arrive at B at 2000 s and park until 80000 s at the V2G SCS S (2 chargers)."""
    evs = [{"ev_id": "e1", "soc_init": soc, "v2g_opt_in": v2g, "soc_min": 0.2},
           {"ev_id": "e2", "soc_init": soc, "v2g_opt_in": False, "soc_min": 0.2},
           {"ev_id": "e3", "soc_init": soc}]
    trips = [trip(e, 0, 0.0, "A", "B") for e in ("e1", "e2")] + \
            [trip(e, 1, 80000.0, "B", "A") for e in ("e1", "e2")] + [trip("e3", 0, 50000.0, "A", "C")]
    return line_instance([{"station_id": "S", "kind": "scs", "model_id": "ac7v2g", "n_chargers": 2,
                           "road_node": "B"}], evs, trips)


def _plant_at(inst: Instance, t: float, config: PlantConfig = ALWAYS) -> Plant:
    plant = Plant(inst, config, router=LineRouter())
    while plant.time_s < t:
        plant.advance(900.0, report=False)
    return plant


def test_plant_reports_arrivals_and_energy_of_a_partial_interval() -> None:
    """e1 and e2 reach S at 2000 s and charge at 7 kW: in [1800, 2700) each got 7·700/3600 kWh."""
    plant = _plant_at(v2g_instance(), 1800.0)
    rep = plant.advance(900.0)
    assert [(e.ev_id, e.time_s) for e in rep.plug_ins] == [("e1", 2000.0), ("e2", 2000.0)]
    assert [e.kind for e in rep.arrivals] == ["arrival", "arrival"]
    for p in rep.plugged:
        assert p.interval_grid_kwh == pytest.approx(7.0 * 700.0 / 3600.0, abs=SIM_ENERGY_ATOL_KWH)
        assert p.departure_s == 80000.0 and p.p_ch_max_kw == 7.0
    assert {p.ev_id: p.p_dis_max_kw for p in rep.plugged} == {"e1": 7.0, "e2": 0.0}
    assert rep.counts["plugged"] == 2 and rep.counts["plug_ins"] == 2
    rep = plant.advance(900.0)
    assert [p.interval_grid_kwh for p in rep.plugged] == pytest.approx([1.75, 1.75], abs=SIM_ENERGY_ATOL_KWH)
    assert rep.plug_ins == [] and rep.counts["plug_ins"] == 0


def test_plant_honours_ev_setpoints_and_reports_soc() -> None:
    # both arrive with 30 − 4 = 26 kWh (SOC 0.52) at 2000 s; at 3600 s they have charged 1600 s at 7 kW
    plant = _plant_at(v2g_instance(), 3600.0)
    soc0 = plant.plugged_evs()
    assert soc0["e1"] == pytest.approx((26.0 + 7.0 * 1600 / 3600) / 50.0, abs=SOC_ATOL)
    rep = plant.advance(900.0, Setpoints(ev_kw={"e1": -6.0, "e2": 3.0, "e3": 5.0}))
    soc = rep.soc()
    assert soc["e1"] == pytest.approx(soc0["e1"] - 6.0 * 0.25 / 50.0, abs=SOC_ATOL)   # V2G 6 kW for 15 min
    assert soc["e2"] == pytest.approx(soc0["e2"] + 3.0 * 0.25 / 50.0, abs=SOC_ATOL)   # 3 kW for 15 min
    p = {x.ev_id: x for x in rep.plugged}
    assert p["e1"].p_kw == pytest.approx(-6.0, abs=LIMIT_ATOL_KW)
    assert p["e1"].interval_grid_kwh == pytest.approx(-1.5, abs=SIM_ENERGY_ATOL_KWH)
    # the report is the controller's state: battery energy now, plug-in time and SOC
    assert p["e1"].energy_kwh == pytest.approx(soc["e1"] * 50.0, abs=SIM_ENERGY_ATOL_KWH)
    assert (p["e1"].arrival_s, p["e1"].soc_arrival) == (2000.0, pytest.approx(0.52, abs=SOC_ATOL))
    assert rep.ignored_ev_setpoints == ["e3"]  # e3 is not plugged in (parked at A, no station)
    assert rep.clipped_ev_setpoints == {}
    st = {s.station_id: s for s in rep.stations}["S"]
    assert st.energy_kwh == pytest.approx(-1.5 + 0.75, abs=SIM_ENERGY_ATOL_KWH)
    # no setpoints: back to full power (baseline)
    rep = plant.advance(600.0)
    assert {x.ev_id: x.p_kw for x in rep.plugged} == {"e1": 7.0, "e2": 7.0}
    # JSON round trip
    again = StepReport.from_dict(json.loads(rep.to_json()))
    assert again == rep


def test_plant_clips_setpoints_to_limits_and_v2g_ability() -> None:
    plant = _plant_at(v2g_instance(), 3600.0)
    rep = plant.advance(900.0, Setpoints(ev_kw={"e1": 20.0, "e2": -5.0}))
    # e1 at most 7 kW (charger and vehicle AC rate); e2 did not opt in to V2G: 0
    assert rep.clipped_ev_setpoints == {"e1": 7.0, "e2": 0.0}
    assert {x.ev_id: x.p_kw for x in rep.plugged} == {"e1": 7.0, "e2": 0.0}
    with pytest.raises(DataError, match="unknown EV"):
        plant.advance(900.0, Setpoints(ev_kw={"nobody": 1.0}))
    with pytest.raises(DataError, match="unknown station"):
        plant.advance(900.0, Setpoints(station_kw={"nowhere": 1.0}))
    for bad in (30.0, 901.0):
        with pytest.raises(DataError, match="1 to 15 minutes"):
            plant.advance(bad)


def test_plant_discharge_stops_at_the_soc_floor() -> None:
    """e1 arrives with 0.3·50 − 4 = 11 kWh (SOC 0.22), 1 kWh above its floor (0.2·50 = 10 kWh).
    Charging is held at 0 until 3600 s; discharging at 6 kW then reaches the floor after
    1/6 h = 600 s and stops: SOC 0.2 at the end of the interval, energy −1 kWh."""
    plant = Plant(v2g_instance(soc=0.3), ALWAYS, router=LineRouter())
    plant.advance(900.0)
    plant.advance(900.0)
    plant.advance(900.0, Setpoints(ev_kw={"e1": 0.0}))  # arrives at 2000 s: ignored, charges 7 kW
    # at 2700 s e1 has 11 + 7·700/3600 kWh; hold it at 0 to reach a known state then discharge
    e_now = 11.0 + 7.0 * 700.0 / 3600.0
    plant.advance(900.0, Setpoints(ev_kw={"e1": 0.0}))
    rep = plant.advance(900.0, Setpoints(ev_kw={"e1": -6.0}))
    assert rep.soc()["e1"] == pytest.approx(max(e_now - 1.5, 10.0) / 50.0, abs=SOC_ATOL)
    rep = plant.advance(900.0, Setpoints(ev_kw={"e1": -6.0}))
    # floor reached during the interval: exactly 10 kWh, power 0
    assert rep.soc()["e1"] == pytest.approx(0.2, abs=SOC_ATOL)
    assert {x.ev_id: x.p_kw for x in rep.plugged}["e1"] == 0.0
    rep = plant.advance(900.0, Setpoints(ev_kw={"e1": -6.0}))
    assert rep.soc()["e1"] == pytest.approx(0.2, abs=SOC_ATOL)
    assert rep.clipped_ev_setpoints == {"e1": 0.0}


def test_plant_station_setpoint_is_shared_by_its_evs() -> None:
    plant = _plant_at(v2g_instance(), 3600.0)
    rep = plant.advance(900.0, Setpoints(station_kw={"S": 5.0}))
    assert {x.ev_id: x.p_kw for x in rep.plugged} == {"e1": 2.5, "e2": 2.5}
    st = {s.station_id: s for s in rep.stations}["S"]
    assert st.mean_kw == pytest.approx(5.0, abs=LIMIT_ATOL_KW)
    # a negative station setpoint is taken from the V2G-capable EV only (e1: 7 kW limit)
    rep = plant.advance(900.0, Setpoints(station_kw={"S": -4.0}))
    assert {x.ev_id: x.p_kw for x in rep.plugged} == {"e1": -4.0, "e2": 0.0}
    # an EV setpoint takes its EV out of the station's share
    rep = plant.advance(900.0, Setpoints(ev_kw={"e2": 1.0}, station_kw={"S": 6.0}))
    assert {x.ev_id: x.p_kw for x in rep.plugged} == {"e1": 6.0, "e2": 1.0}


def test_site_cap_shares_power_among_uncontrolled_evs() -> None:
    """S has a 10 kW site cap: the two EVs arriving at 2000 s get 5 kW each, not 7."""
    inst = v2g_instance()
    inst.stations["p_site_max_kw"] = 10.0
    plant = _plant_at(inst, 1800.0)
    plant.advance(900.0)
    rep = plant.advance(900.0)
    assert {x.ev_id: x.p_kw for x in rep.plugged} == {"e1": 5.0, "e2": 5.0}
    assert {s.station_id: s.mean_kw for s in rep.stations}["S"] == pytest.approx(10.0, abs=LIMIT_ATOL_KW)


def test_uncontrolled_plant_is_simulate_day() -> None:
    inst = grid_city(200, seed=4, side=8, n_fcs=2)
    res = simulate_day(inst, step_s=600.0)
    plant = Plant(inst)
    while plant.time_s < 86400.0:
        plant.advance(900.0, Setpoints())
    pd.testing.assert_frame_equal(plant.sessions(), res.sessions)


# --------------------------------------------------------------------------- telemetry

def test_telemetry_is_written_in_chunks_at_5_s(tmp_path) -> None:
    """Two hours of the SCS scenario: the station's one charger, sampled every 5 s:
    1440 rows in 8 row groups (one per 15-min interval, 180 rows each)."""
    path = tmp_path / "tele.parquet"
    cfg = PlantConfig(horizon_s=7200.0, slow_willing_soc_low=1.0, slow_willing_soc_high=1.0)
    run(scs_instance(), cfg, telemetry=path)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 7200 // 5 and meta.num_row_groups == 8
    tab = pq.read_table(path).to_pandas()
    assert tab["time_s"].tolist() == [5.0 * k for k in range(1440)]
    assert (tab["charger_id"] == "S#0").all()
    before = tab[tab["time_s"] < 2000.0]
    after = tab[tab["time_s"] >= 2000.0]
    assert before["ev_id"].isna().all() and (before["power_kw"] == 0.0).all()
    assert (after["ev_id"] == "e1").all() and np.allclose(after["power_kw"], 7.0, atol=LIMIT_ATOL_KW)
    # meter register: 7 kW since 2000 s
    last = tab.iloc[-1]
    assert last["energy_kwh"] == pytest.approx(7.0 * (7195.0 - 2000.0) / 3600.0, abs=SIM_ENERGY_ATOL_KWH)


def test_telemetry_chunks_bound_the_rows_in_memory(tmp_path) -> None:
    inst = grid_city(100, seed=1, side=6, n_fcs=2, scs_chargers=2)
    path = tmp_path / "tele.parquet"
    cfg = PlantConfig(horizon_s=3600.0)
    plant = Plant(inst, cfg, telemetry=path)
    plant.telemetry.chunk_rows = 1000
    n_chargers = int(inst.stations["n_chargers"].sum())
    while plant.time_s < 3600.0:
        plant.advance(300.0, report=False)
    plant.close()
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == n_chargers * 720
    assert max(meta.row_group(k).num_rows for k in range(meta.num_row_groups)) <= 1000


# --------------------------------------------------------------------------- pieces

def test_willingness_is_linear_between_its_thresholds() -> None:
    assert willingness(0.2, 0.3, 0.8) == 1.0
    assert willingness(0.55, 0.3, 0.8) == pytest.approx(0.5, abs=SOC_ATOL)
    assert willingness(0.8, 0.3, 0.8) == 0.0
    assert willingness(0.49, 0.5, 0.5) == 1.0 and willingness(0.5, 0.5, 0.5) == 0.0


def test_straight_line_router_and_unrouted_trips() -> None:
    nodes = pd.DataFrame({"node_id": ["a", "b", "c"], "x": [0.0, 3000.0, np.nan], "y": [0.0, 4000.0, 0.0]})
    r = StraightLineRouter(nodes, detour_factor=1.5, speed_m_s=10.0)
    d, t = r.travel(np.array(["a"], dtype=object), np.array(["b"], dtype=object))
    assert d[0] == pytest.approx(7500.0, abs=SIM_ENERGY_ATOL_KWH) and t[0] == pytest.approx(750.0, abs=SIM_TIME_ATOL_S)
    with pytest.raises(DataError, match="no coordinates"):
        r.travel(np.array(["a"], dtype=object), np.array(["c"], dtype=object))
    with pytest.raises(DataError, match="not a road node"):
        r.travel(np.array(["a"], dtype=object), np.array(["zz"], dtype=object))

"""The battery and charger rules of :mod:`optev.data.battery`, and that every user applies them.

The rule of the EV power at a charger used to be written five times (window, event
plant, replay, edge policy, session generator); these tests pin the rule itself on a
hand-made table, its energy equation by properties (hypothesis), and that the window,
the replay plant, the edge policy and the storage plant give the same numbers as the
rule module on one instance.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optev.blocks.window import build_window
from optev.data.battery import (battery_step, ceil_to_quantum, charge_limit_kw, charger_discharge_kw,
                                discharge_limit_kw, floor_to_quantum, is_fast_charger, pair_limits, top_off_kwh)
from optev.data.synthetic import synthetic_charging_instance
from optev.mobility.gridcity import grid_city
from optev.mobility.simulate import simulate_day
from optev.mpc.edge import ev_station_params
from optev.mpc.injections import StorageBank
from optev.mpc.replay import ReplayPlant
from optev.tolerances import ENERGY_BALANCE_ATOL_KWH


def test_fast_charger_is_an_fcs_or_30_kw_and_up() -> None:
    kind = np.array(["fcs", "scs", "scs", "home", "fcs"], dtype=object)
    p = np.array([22.0, 29.999, 30.0, 7.0, 60.0])
    assert is_fast_charger(kind, p).tolist() == [True, False, True, False, True]


@pytest.mark.parametrize("fast, dc, ac, charger, expected", [
    (True, 120.0, 11.0, 60.0, 60.0),       # DC rating at a fast charger, capped by the charger
    (True, 50.0, 11.0, 60.0, 50.0),        # vehicle below the charger
    (False, 120.0, 11.0, 22.0, 11.0),      # AC rating at a slow charger
    (False, 120.0, 11.0, 7.0, 7.0),        # slow charger below the AC rating
    (False, 40.0, np.nan, 22.0, 22.0),     # no AC rating: the DC rating, capped by the charger
    (False, 6.0, np.nan, 22.0, 6.0),
])
def test_charge_limit_table(fast: bool, dc: float, ac: float, charger: float, expected: float) -> None:
    assert float(charge_limit_kw(fast, dc, ac, charger)) == expected


def test_discharge_needs_opt_in_vehicle_and_charger() -> None:
    opt = np.array([True, False, True, True, True])
    veh = np.array([11.0, 11.0, 0.0, 11.0, 5.0])
    charger = np.array([7.0, 7.0, 7.0, 0.0, 7.0])
    assert discharge_limit_kw(opt, veh, charger).tolist() == [7.0, 0.0, 0.0, 0.0, 5.0]
    flags = np.array([True, None, False, np.nan], dtype=object)
    assert charger_discharge_kw(flags, np.full(4, 10.0)).tolist() == [10.0, 0.0, 0.0, 0.0]


def test_quantum_rounding_keeps_values_on_the_grid() -> None:
    assert floor_to_quantum([6.6, 7.0, 7.0 - 1e-12, 0.4], 1.0).tolist() == [6.0, 7.0, 7.0, 0.0]
    assert ceil_to_quantum([6.2, 7.0, 7.0 + 1e-12, 0.0], 1.0).tolist() == [7.0, 7.0, 7.0, 0.0]
    assert floor_to_quantum(1.05, 0.5) == pytest.approx(1.0)


def test_top_off_is_the_target_uncontrolled_and_the_capacity_under_control() -> None:
    out = top_off_kwh(np.array([True, True, False]), np.array([0.8, 0.5, 0.8]), 50.0, np.array([10.0, 30.0, 10.0]))
    assert out.tolist() == [40.0, 30.0, 50.0]


_finite = st.floats(min_value=-500.0, max_value=500.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(e=st.floats(0.0, 100.0), p=_finite, dt=st.floats(0.0, 2.0), lo=st.floats(0.0, 50.0),
       span=st.floats(0.0, 50.0), eta_ch=st.floats(0.5, 1.0), eta_dis=st.floats(0.5, 1.0))
def test_battery_step_properties(e: float, p: float, dt: float, lo: float, span: float, eta_ch: float,
                                 eta_dis: float) -> None:
    hi = lo + span
    out = battery_step(e, p, dt, lo, hi, eta_ch, eta_dis)
    charged, discharged = float(out.charged_kwh), float(out.discharged_kwh)
    assert charged >= 0.0 and discharged >= 0.0 and charged * discharged == 0.0
    # the grid sees the stored energy through the efficiencies
    assert float(out.grid_import_kwh) * eta_ch == pytest.approx(charged, abs=ENERGY_BALANCE_ATOL_KWH)
    assert float(out.grid_export_kwh) == pytest.approx(discharged * eta_dis, abs=ENERGY_BALANCE_ATOL_KWH)
    # never more power than asked, never through a limit it started inside
    assert float(out.grid_import_kwh) <= max(p, 0.0) * dt + ENERGY_BALANCE_ATOL_KWH
    assert float(out.grid_export_kwh) <= max(-p, 0.0) * dt + ENERGY_BALANCE_ATOL_KWH
    e1 = e + float(out.stored_kwh)
    if lo <= e <= hi:
        assert lo - ENERGY_BALANCE_ATOL_KWH <= e1 <= hi + ENERGY_BALANCE_ATOL_KWH
    # and the full request when the limits do not bind
    if p > 0 and e + eta_ch * p * dt <= hi:
        assert charged == pytest.approx(eta_ch * p * dt)
    if p < 0 and e + p * dt / eta_dis >= lo:
        assert discharged == pytest.approx(-p * dt / eta_dis)


@pytest.fixture(scope="module")
def mixed_instance():
    """Synthetic sessions on slow chargers, one vehicle type without an AC rating, half V2G."""
    inst = synthetic_charging_instance(40, seed=3, charger_kw=11.0)
    vt = inst.vehicle_types.copy()
    vt.loc[vt.index[0], "p_ch_ac_max_kw"] = np.nan
    vt.loc[vt.index[0], "p_ch_max_kw"] = 9.0  # below the charger: the DC rating must bind
    return dataclasses.replace(inst, vehicle_types=vt)


def _expected(inst, ev_ids, station_ids):
    vt = inst.vehicle_types.set_index("vtype_id")
    evs = inst.evs.set_index("ev_id").reindex(ev_ids)
    power = inst.station_power().set_index("station_id").reindex(station_ids)
    return pair_limits(vt.reindex(evs["vtype_id"]), power, evs["v2g_opt_in"].to_numpy(bool))


def test_every_user_applies_the_same_charger_rule(mixed_instance) -> None:
    inst = mixed_instance
    ses = inst.sessions
    limits = _expected(inst, ses["ev_id"].tolist(), ses["station_id"].tolist())
    assert (limits.p_ch_max_kw == 9.0).any() and (limits.p_ch_max_kw == 11.0).any()
    # the replay plant
    plant = ReplayPlant(inst)
    pos = pd.Index(ses["session_id"]).get_indexer(plant.session_ids)
    np.testing.assert_array_equal(plant.pch, limits.p_ch_max_kw[pos])
    np.testing.assert_array_equal(plant.pdis, limits.p_dis_max_kw[pos])
    np.testing.assert_array_equal(plant.eta_ch, limits.eff_ch[pos])
    # the edge policy
    _, p_ch, eff, eff_dis = ev_station_params(inst, ses["ev_id"].tolist(), ses["station_id"].tolist())
    np.testing.assert_array_equal(p_ch, limits.p_ch_max_kw)
    np.testing.assert_array_equal(eff, limits.eff_ch)
    np.testing.assert_array_equal(eff_dis, limits.eff_dis)
    # the window (no site cap: full power is a setpoint, so no rounding to the grid)
    w = build_window(inst, steps=96, step="15min", with_network=False)
    pos = pd.Index(ses["session_id"]).get_indexer(w.evs.session_id)
    np.testing.assert_array_equal(w.evs.p_ch_max_kw, limits.p_ch_max_kw[pos])
    np.testing.assert_array_equal(w.evs.eff_ch, limits.eff_ch[pos])
    v2g = w.evs.v2g
    np.testing.assert_array_equal(w.evs.p_dis_max_kw[v2g], limits.p_dis_max_kw[pos][v2g])


def test_storage_plant_follows_the_battery_step(small_instance) -> None:
    bank = StorageBank.of(small_instance, dispatched=True)
    assert bank.ids
    table = bank.table
    e0 = np.array([bank.e_kwh[s] for s in bank.ids])
    request = {s: 1e6 for s in bank.ids}  # far above every limit
    applied = bank.apply(request, 0.25)
    p = np.minimum(1e6, table["p_ch_max_kw"].to_numpy(float))
    ref = battery_step(e0, p, 0.25, table["e_min_kwh"].to_numpy(float), table["e_max_kwh"].to_numpy(float),
                       table["eff_ch"].to_numpy(float), table["eff_dis"].to_numpy(float))
    np.testing.assert_allclose([applied[s] for s in bank.ids], ref.mean_power_kw(0.25))
    np.testing.assert_allclose([bank.e_kwh[s] for s in bank.ids], e0 + ref.stored_kwh)


def test_event_plant_charges_through_the_pair_efficiency() -> None:
    """The event plant integrates in scalar Python (one EV per event); its sessions must
    show the grid energy through the same vehicle × charger efficiency as the rule."""
    inst = grid_city(200, seed=4, side=8, n_fcs=3, fcs_chargers=2, scs_chargers=2)
    inst.charger_models["eff_ch"] = np.linspace(0.9, 0.97, len(inst.charger_models))
    res = simulate_day(inst)
    ses = res.sessions
    ses = ses[(ses["grid_export_kwh"] == 0.0) & (ses["grid_import_kwh"] > 0.0)]
    assert len(ses) > 50
    limits = _expected(inst, ses["ev_id"].tolist(), ses["station_id"].tolist())
    np.testing.assert_allclose(ses["energy_delivered_kwh"].to_numpy(float),
                               ses["grid_import_kwh"].to_numpy(float) * limits.eff_ch,
                               rtol=0, atol=ENERGY_BALANCE_ATOL_KWH * 1e3)

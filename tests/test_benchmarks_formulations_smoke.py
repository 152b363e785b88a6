"""Smoke run of ``benchmarks/bench_formulations.py``: structure of the results, the time split
and the figures each case reports. No timing assertions (design.md, "Testing")."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import ModuleType

import numpy as np
import pytest

from optev.testing import LDF_AC_VM_ATOL_PU, LIMIT_ATOL_KW, OBJECTIVE_RTOL
from paths import load_benchmark, FEEDERS, SHARED, V2SIM, need

SPLIT = ("window_s", "model_s", "pass_s", "build_s", "highs_s", "readback_s", "solve_s", "check_s", "build_solve_s",
         "total_s")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_formulations")


@pytest.fixture(scope="module")
def smoke(bench: ModuleType) -> dict:
    need(FEEDERS / "case33bw.m")
    need(V2SIM / "ux_37nodes")
    need(SHARED / bench.ACN_FILE)
    return bench.run_benchmarks(smoke=True)


def check_split(times: dict) -> None:
    """Every part of the split is a finite, non-negative time and the parts add up."""
    for key in SPLIT:
        assert math.isfinite(times[key]) and times[key] >= 0.0, key
    assert times["build_s"] == pytest.approx(times["window_s"] + times["model_s"] + times["pass_s"])
    assert times["solve_s"] == pytest.approx(times["highs_s"] + times["readback_s"])
    assert times["build_solve_s"] == pytest.approx(times["build_s"] + times["solve_s"])
    assert times["total_s"] == pytest.approx(times["build_solve_s"] + times["check_s"])
    assert times["runs"], "no timed run"


def test_smoke_results_structure(smoke: dict) -> None:
    assert smoke["mode"] == "smoke"
    assert {"machine", "config", "goals", "ordered", "acn", "city", "resolve", "ieee33", "goals_met",
            "loadavg_during"} <= smoke.keys()
    assert smoke["machine"]["nproc"] >= 1 and smoke["machine"]["versions"]["highs"]
    # speed goals are judged on full runs only
    assert smoke["goals_met"]["ordered_build_solve"] is None and smoke["goals_met"]["resolve_ratio"] is None
    json.dumps(smoke)  # the --out file is plain JSON


@pytest.mark.parametrize("case", ["ordered", "acn"])
def test_site_limit_binds_and_is_feasible(smoke: dict, case: str, bench: ModuleType) -> None:
    row = smoke[case]
    assert row.get("status", "ok") == "ok"
    assert row["termination"] == "Optimal" and row["evs"] > 0
    check_split(row["times"])
    # the limit sits SITE_FACTOR above the lowest feasible peak, below the unlimited optimum's peak,
    # and the solution reaches it
    assert row["site_limit_kw"] == math.ceil(bench.SITE_FACTOR * row["lowest_feasible_peak_kw"])
    assert row["peak_without_limit_kw"] > row["site_limit_kw"]
    assert row["peak_kw"] == pytest.approx(row["site_limit_kw"], abs=LIMIT_ATOL_KW)
    assert row["binds"] and row["steps_at_limit"] >= 1
    assert row["objective"] >= row["objective_without_limit"] * (1 - OBJECTIVE_RTOL)
    assert row["shortfall_kwh"] == 0.0


def test_ordered_runs_the_ac_check_and_acn_has_no_feeder(smoke: dict) -> None:
    assert smoke["ordered"]["ac_check"] is True
    assert smoke["acn"]["ac_check"] is False
    assert smoke["acn"]["sessions"] == smoke["acn"]["evs"] == 30
    assert 0.0 <= smoke["acn"]["capped_kwh"] <= smoke["acn"]["requested_kwh"]


def test_city_rows(smoke: dict) -> None:
    rows = smoke["city"]
    assert [r["generators"] for r in rows] == ["as_read", "unity_pf"]
    for r in rows:
        assert r["status"] == "ok" and r["termination"] == "Optimal"
        check_split(r["times"])
        assert r["sessions_fcs"] > 0 and r["sessions_scs"] > 0  # both kinds of station are used
        history = r["loss_correction_dv_pu"]
        assert len(history) == r["corrections"] + 1 == r["solves"]
        assert r["converged"] == (history[-1] <= r["loss_tolerance_pu"])
        assert r["max_abs_dv_pu"] == pytest.approx(history[-1])
    assert rows[1]["gen_q_abs_max_kvar"] == 0.0  # unity power factor


def test_city_generator_variants(bench: ModuleType) -> None:
    need(V2SIM / "ux_37nodes")
    cfg = bench.SMOKE["city"]
    as_read = bench.city_instance(cfg).feeder.generators
    limited = bench.city_instance(cfg, generators=250.0).feeder.generators
    assert (as_read["q_max_kvar"] > 250.0).all()  # V2Sim's generators: ±30 Mvar
    assert (limited["q_max_kvar"] == 250.0).all() and (limited["q_min_kvar"] == -250.0).all()
    unity = bench.city_instance(cfg, generators="unity_pf").feeder.generators
    assert (unity[["q_min_kvar", "q_max_kvar"]] == 0).all().all()
    with pytest.raises(ValueError, match="generators must be"):
        bench.city_instance(cfg, generators="off")


def test_resolve_rows(smoke: dict, bench: ModuleType) -> None:
    rows = smoke["resolve"]
    assert [(r["model"], r["perturbation"]) for r in rows] == [
        (m, p) for m in ("ordered", "city") for p in bench.PERTURBATIONS]
    for r in rows:
        assert r["highs_s"] > 0 and r["resolve_s"] > r["highs_s"]
        assert r["ratio"] == pytest.approx(r["resolve_s"] / r["highs_s"])
        assert r["objective_rel_diff_max"] <= OBJECTIVE_RTOL  # the warm re-solve finds the cold optimum
    warm = {(r["model"], r["perturbation"]): r["warm"] for r in rows}
    # data-only changes are in-place updates; per-EV variables exist only in plugged steps, so an
    # earlier arrival changes the per-EV model's structure, but not the station envelope's
    assert all(warm[("ordered", p)] for p in ("prices", "energies", "initial_energy"))
    assert warm[("ordered", "arrivals")] is False
    assert all(warm[("city", p)] for p in bench.PERTURBATIONS)


def test_ieee33_loss_correction(smoke: dict) -> None:
    (row,) = smoke["ieee33"]
    assert row["termination"] == "Optimal"
    assert row["dv_before_pu"] > LDF_AC_VM_ATOL_PU >= row["dv_after_pu"]
    assert row["goal_met"] and smoke["goals_met"]["ieee33_dv"] is True


def test_markdown_table_lists_every_case(smoke: dict, bench: ModuleType) -> None:
    table = bench.markdown_table(smoke)
    for heading in ("per-EV ordered charging", "city_dispatch_aggregate", "re-solve", "IEEE 33-bus"):
        assert heading in table
    assert "| synthetic |" in table and "| acn |" in table and "| unity_pf |" in table


def test_perturbations_change_only_data(bench: ModuleType) -> None:
    from optev.data.synthetic import synthetic_charging_instance

    inst = synthetic_charging_instance(20, seed=3)
    rng = np.random.default_rng(0)
    prices, energy = bench.perturb(inst, "prices", rng, None)
    assert energy is None and not np.allclose(prices.timeseries.price["buy_per_kwh"],
                                              inst.timeseries.price["buy_per_kwh"])
    lower, _ = bench.perturb(inst, "energies", rng, None)
    assert (lower.sessions["soc_target"] <= inst.sessions["soc_target"]).all()
    assert (lower.sessions["soc_target"] >= lower.sessions["soc_arrival"]).all()
    same, e0 = bench.perturb(inst, "initial_energy", rng, None)
    assert same is inst and set(e0) == set(inst.sessions["session_id"])
    early, _ = bench.perturb(inst, "arrivals", rng, None)
    moved = early.sessions["arrival_s"] < inst.sessions["arrival_s"]
    assert moved.any() and (early.sessions["arrival_s"] >= 0).all()
    with pytest.raises(ValueError, match="unknown perturbation"):
        bench.perturb(inst, "weather", rng, None)


# -- optev.data.synthetic.synthetic_sessions (the fleet of the city benchmark) -----------------

def _plugged_at_once(sessions, station: str) -> int:
    s = sessions[sessions["station_id"] == station]
    t = np.r_[s["arrival_s"], s["departure_s"]]
    d = np.r_[np.ones(len(s)), -np.ones(len(s))]
    order = np.lexsort((d, t))
    return int(np.cumsum(d[order]).max()) if len(s) else 0


@pytest.fixture(scope="module")
def ux37():
    from optev.io import read_v2sim

    return read_v2sim(need(V2SIM / "ux_37nodes"))


def test_synthetic_sessions_respect_station_kinds(ux37) -> None:
    from optev.blocks.window import build_window
    from optev.data.synthetic import synthetic_sessions

    inst = synthetic_sessions(ux37, 300, seed=4)
    assert len(ux37.sessions) == 0 and len(inst.sessions) == len(inst.evs) == 300  # input untouched
    kind = inst.sessions["station_id"].map(inst.stations.set_index("station_id")["kind"])
    stay_h = (inst.sessions["departure_s"] - inst.sessions["arrival_s"]) / 3600.0
    assert (kind == "fcs").sum() > 0 and (kind == "scs").sum() > 0
    assert stay_h[kind == "fcs"].max() <= 1.0 and stay_h[kind == "scs"].min() >= 1.75  # short vs long stays
    step_s = ux37.metadata.step_minutes * 60.0
    assert (inst.sessions[["arrival_s", "departure_s"]] % step_s == 0).all().all()  # whole control steps
    assert (inst.sessions["soc_target"] >= inst.sessions["soc_arrival"]).all()
    # every session can reach its target charging at full power from arrival (no infeasible needs)
    w = build_window(inst, steps=96, step="15min")
    reach = np.minimum(w.evs.e_init_kwh + w.dt_h * w.evs.eff_ch * w.evs.p_ch_max_kw * w.evs.plugged.sum(axis=1),
                       w.evs.capacity_kwh)
    assert (reach >= w.evs.e_target_kwh - LIMIT_ATOL_KW).all()
    # peak mode: no station has more sessions plugged at once than chargers, and counts never drop
    for sid, n in zip(inst.stations["station_id"], inst.stations["n_chargers"]):
        assert _plugged_at_once(inst.sessions, sid) <= n
    assert (inst.stations["n_chargers"].to_numpy() >= ux37.stations["n_chargers"].to_numpy()).all()


def test_synthetic_sessions_keep_mode_turns_away_or_queues(ux37) -> None:
    from optev.data.synthetic import synthetic_sessions

    inst = synthetic_sessions(ux37, 1500, seed=1, chargers="keep")
    assert (inst.stations["n_chargers"].to_numpy() == ux37.stations["n_chargers"].to_numpy()).all()
    assert 0 < len(inst.sessions) < 1500  # some slow sessions found every charger busy
    for sid, n in zip(inst.stations["station_id"], inst.stations["n_chargers"]):
        assert _plugged_at_once(inst.sessions, sid) <= n


def test_synthetic_sessions_are_seeded_and_checked(ux37) -> None:
    from optev.data.synthetic import synthetic_sessions
    from optev.errors import DataError

    a = synthetic_sessions(ux37, 50, seed=7)
    b = synthetic_sessions(ux37, 50, seed=7)
    assert a.sessions.equals(b.sessions) and a.evs.equals(b.evs)
    assert not a.sessions.equals(synthetic_sessions(ux37, 50, seed=8).sessions)
    with pytest.raises(DataError, match="chargers must be one of"):
        synthetic_sessions(ux37, 5, chargers="all")
    # new ids count on from the existing sessions: with one session left, the next EV id is
    # ev000001, which the 50 EVs of ``a`` already use
    with pytest.raises(DataError, match="already exists"):
        synthetic_sessions(replace(a, sessions=a.sessions.iloc[:1]), 1)

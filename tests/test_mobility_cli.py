"""``optev generate`` / ``optev simulate`` and the embedded default instance (issue 4 acceptance).

generate → simulate on V2Sim's ux_12nodes; same seed → byte-identical instance folder and
simulation outputs, different seeds differ; energy conservation per EV across the day
(driving + charging − V2G = ΔSOC × capacity); ``optev info``; the sessions table the
optimiser gets; CLI mistakes; the committed default instance and its recipe; the
100,000-EV Nanjing recipe (slow).
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optev.cli import main, parse_mix
from optev.io.embedded import DEFAULT_INSTANCE, instances_dir
from optev.io import read
from optev.mobility.build import bus_feeders, optimiser_sessions, whole_steps
from optev.mobility.plant import Plant
from optev.mobility.core import PlantConfig
from optev.mobility.routing import Router
from optev.mobility.simulate import simulate_day
from optev.mobility.state import Setpoints
from optev.testing import DAY_ENERGY_ATOL_KWH, RTOL_EXACT, SIM_ENERGY_ATOL_KWH, SOC_ATOL
from paths import REPO, V2SIM, need

SMALL_EVS = 60


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def small_case() -> Path:
    return need(V2SIM / "ux_12nodes")


@pytest.fixture(scope="module")
def generated(small_case: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ux_12nodes with 60 EVs, seed 2, written by ``optev generate``."""
    out = tmp_path_factory.mktemp("gen") / "inst"
    assert main(["generate", "--case", str(small_case), "--evs", str(SMALL_EVS), "--seed", "2",
                 "--out", str(out)]) == 0
    return out


# ------------------------------------------------------------------ generate → simulate

def test_generate_then_simulate(generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inst = read(generated)
    assert len(inst.evs) == SMALL_EVS
    # default mix 0.9/0.03/0.07 of 60 by largest remainder: 54 cars, 2 buses, 4 vans
    assert inst.evs["vehicle_class"].value_counts().to_dict() == {"car": 54, "logistics": 4, "bus": 2}
    assert (inst.trips["distance_m"] > 0).all() and len(inst.sessions) > 0
    gen = inst.metadata.extra["generate"]
    assert gen["seed"] == 2 and gen["evs"] == SMALL_EVS and gen["case"] == "ux_12nodes"
    assert inst.metadata.name == "ux_12nodes_60ev"

    code, out, err = run(capsys, "simulate", str(generated), "--out", str(tmp_path / "sim"), "--json")
    assert code == 0 and err == ""
    s = json.loads(out)
    assert s["evs"] == SMALL_EVS and s["seed"] == 2
    assert s["sessions"] == s["sessions_fcs"] + s["sessions_scs"] + s["sessions_private"]
    # ux_12nodes has one feeder (3 buses, substation sub_b0): it carries all the EV load
    assert [f["feeder"] for f in s["feeders"]] == ["sub_b0"]
    assert s["feeders"][0]["ev_peak_kw"] == pytest.approx(s["peak_load_kw"], rel=RTOL_EXACT)
    assert s["feeders"][0]["ev_energy_kwh"] == pytest.approx(s["grid_import_kwh"], rel=1e-9)
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == [
        ".optev-output", "ev_summary.parquet", "feeder_load.csv", "sessions.parquet", "station_series.parquet",
        "summary.json"]
    summary = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert summary == {k: v for k, v in s.items() if k in summary} and "simulate_s" not in summary

    # the instance's sessions are the plugged sessions of this (same-seed) uncontrolled day
    sim = pd.read_parquet(tmp_path / "sim" / "sessions.parquet")
    plugged = sim[~sim["rejected"] & sim["plug_in"].notna() & (sim["departure_s"] > sim["arrival_s"])]
    ses = inst.sessions
    assert list(ses["session_id"]) == list(plugged["session_id"])
    for col in ("ev_id", "station_id"):
        assert list(ses[col]) == list(plugged[col])
    for col in ("arrival_s", "departure_s", "soc_arrival"):
        np.testing.assert_allclose(ses[col], plugged[col], rtol=RTOL_EXACT)
    np.testing.assert_allclose(ses["soc_requested"], plugged["soc_target"], rtol=RTOL_EXACT)

    code, out, _ = run(capsys, "simulate", str(generated))
    assert code == 0
    assert "FCS wait   mean" in out and "95th percentile" in out and "sub_b0" in out and "rejections" in out


def test_info_on_a_generated_instance(generated: Path, small_case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "info", str(generated), "--json")
    assert code == 0
    data = json.loads(out)
    case = json.loads(run(capsys, "info", str(small_case), "--json")[1])
    assert data["evs"] == SMALL_EVS == data["evs_car"] + data["evs_bus"] + data["evs_logistics"]
    assert min(data["evs_car"], data["evs_bus"], data["evs_logistics"]) > 0
    assert data["chargers_public"] == case["chargers"] == 240  # the case's 12 FCS + 12 SCS, 10 chargers each
    assert data["stations_private"] > 0 and data["chargers"] > data["chargers_public"]
    assert data["sessions"] == len(read(generated).sessions)
    code, out, _ = run(capsys, "info", str(generated))
    assert code == 0 and "evs_logistics" in out


# ------------------------------------------------------------------ determinism

def test_same_seed_gives_byte_identical_files_and_other_seeds_differ(
        generated: Path, small_case: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    again = tmp_path / "again"
    other = tmp_path / "other"
    assert run(capsys, "generate", "--case", str(small_case), "--evs", str(SMALL_EVS), "--seed", "2",
               "--out", str(again))[0] == 0
    assert run(capsys, "generate", "--case", str(small_case), "--evs", str(SMALL_EVS), "--seed", "3",
               "--out", str(other))[0] == 0
    first, second, third = files_of(generated), files_of(again), files_of(other)
    assert first.keys() == second.keys() and first == second
    for name in ("evs.csv", "trips.csv", "sessions.csv", "instance.toml"):
        assert first[name] != third[name], name
    assert first["buses.csv"] == third["buses.csv"]  # the case's tables are the same

    sims = []
    for k, inst in enumerate((generated, again, other)):
        out = tmp_path / f"sim{k}"
        tele = tmp_path / f"t{k}.parquet"
        assert run(capsys, "simulate", str(inst), "--out", str(out), "--telemetry", str(tele))[0] == 0
        sims.append(files_of(out) | {"telemetry": tele.read_bytes()})
    assert sims[0] == sims[1]
    for name in ("sessions.parquet", "ev_summary.parquet", "station_series.parquet", "summary.json", "telemetry"):
        assert sims[0][name] != sims[2][name], name


def test_simulate_seed_option_changes_the_drivers_draws(generated: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(capsys, "simulate", str(generated), "--out", str(a))[0] == 0
    assert run(capsys, "simulate", str(generated), "--out", str(b), "--seed", "2")[0] == 0  # the instance's seed
    assert files_of(a) == files_of(b)
    assert run(capsys, "simulate", str(generated), "--out", str(b), "--seed", "7")[0] == 0  # replaces b
    assert files_of(a)["sessions.parquet"] != files_of(b)["sessions.parquet"]


# ------------------------------------------------------------------ energy conservation

def test_energy_is_conserved_per_ev_on_a_generated_instance(generated: Path) -> None:
    inst = read(generated)
    res = simulate_day(inst, config=PlantConfig(seed=2), router=Router(inst.road))
    ev = res.evs
    resid = ev["e_end_kwh"] - ev["e_init_kwh"] - (ev["charged_kwh"] - ev["discharged_kwh"] - ev["driving_kwh"])
    assert np.abs(resid).max() <= DAY_ENERGY_ATOL_KWH
    assert (ev["driving_kwh"] > 0).all() and ev["charged_kwh"].sum() > 0
    # driving energy = the trips' energy, for EVs that made no fast-charging detour
    # (nobody strands on ux_12nodes)
    assert not ev["stranded"].any()
    per_ev = inst.trips.groupby("ev_id")["energy_kwh"].sum().reindex(ev["ev_id"]).to_numpy()
    detour = ev["ev_id"].isin(res.sessions.loc[res.sessions["station_kind"] == "fcs", "ev_id"]).to_numpy()
    assert 0 < detour.sum() < len(ev)
    np.testing.assert_allclose(ev["driving_kwh"][~detour], per_ev[~detour], rtol=1e-9)


def test_energy_is_conserved_with_v2g_discharge_on_a_generated_instance(generated: Path) -> None:
    """Drive the plant and ask every plugged V2G user for 10 kW of discharge from 17:00 to 21:00."""
    inst = read(generated)
    v2g = set(inst.evs.loc[inst.evs["v2g_opt_in"], "ev_id"])
    plant = Plant(inst, PlantConfig(seed=2), router=Router(inst.road))
    while plant.time_s < 86400.0 - 1e-9:
        sp = Setpoints()
        if 17 * 3600 <= plant.time_s < 21 * 3600:
            sp = Setpoints(ev_kw={ev: -10.0 for ev in plant.plugged_evs() if ev in v2g})
        plant.advance(900.0, sp, report=False)
    ev = plant.ev_summary()
    assert ev["discharged_kwh"].sum() > 0  # the test exercises V2G
    resid = ev["e_end_kwh"] - ev["e_init_kwh"] - (ev["charged_kwh"] - ev["discharged_kwh"] - ev["driving_kwh"])
    assert np.abs(resid).max() <= DAY_ENERGY_ATOL_KWH


# ------------------------------------------------------------------ the sessions table

def test_whole_steps_match_the_window_rule() -> None:
    # [100, 2000] holds [900, 1800] only; [900, 1800] exactly one; times 1e-6 s off a
    # boundary count as on it (as in the optimiser's window); [0, 86400] all 96 steps
    arr = np.array([100.0, 900.0, 900.0 + 5e-7, 0.0, 1000.0, 0.0])
    dep = np.array([2000.0, 1800.0, 1800.0 - 5e-7, 86400.0, 1700.0, 899.0])
    assert whole_steps(arr, dep, 900.0).tolist() == [1, 1, 1, 96, 0, 0]
    assert whole_steps(np.array([100.0]), np.array([2000.0]), 300.0).tolist() == [5]  # 300, 600, ..., 1500


def test_session_targets_are_reachable_on_the_step_grid(generated: Path) -> None:
    inst = read(generated)
    ses = inst.sessions
    assert (ses["soc_target"] <= ses["soc_requested"] + SOC_ATOL).all()
    assert (ses["soc_target"] >= ses["soc_arrival"] - SOC_ATOL).all()
    assert (ses["departure_s"] > ses["arrival_s"]).all()
    # hand check of one home session: 7 kW home charger, whole 15-min steps, 1 kW quantum
    vt = inst.vehicle_types.set_index("vtype_id")
    evs = inst.evs.set_index("ev_id")
    home = ses[ses["station_kind"] == "home"].iloc[0]
    v = vt.loc[evs.loc[home["ev_id"], "vtype_id"]]
    p = np.floor(min(v["p_ch_ac_max_kw"] if np.isfinite(v["p_ch_ac_max_kw"]) else v["p_ch_max_kw"], 7.0))
    charger_eff = inst.charger_models.set_index("model_id").loc["home_ac_7kw", "eff_ch"]
    eff = v["eff_ch"] * charger_eff
    n = whole_steps(np.array([home["arrival_s"]]), np.array([home["departure_s"]]), 900.0)[0]
    reach = home["soc_arrival"] + max(eff * p * 0.25 * n - eff * 1.0 * 0.25, 0.0) / v["battery_kwh"]
    assert home["soc_target"] == pytest.approx(min(home["soc_requested"], reach, 1.0), abs=SOC_ATOL)


def test_sessions_for_a_coarser_step_are_never_more_demanding(generated: Path) -> None:
    inst = read(generated)
    res = simulate_day(inst, config=PlantConfig(seed=2), router=Router(inst.road))
    fine = optimiser_sessions(res, inst, 300.0).set_index("session_id")
    coarse = optimiser_sessions(res, inst, 3600.0).set_index("session_id")
    assert (coarse["soc_target"] <= fine["soc_target"] + SOC_ATOL).all()
    assert (coarse["soc_target"] < fine["soc_target"] - SOC_ATOL).any()


def test_generating_again_from_a_generated_instance_replaces_the_fleet(
        generated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "again"
    code, text, _ = run(capsys, "generate", "--case", str(generated), "--evs", "10", "--mix", "car=1",
                        "--no-sessions", "--out", str(out), "--json")
    assert code == 0
    inst = read(out)
    assert len(inst.evs) == 10 and (inst.evs["vehicle_class"] == "car").all() and len(inst.sessions) == 0
    owned = set(inst.evs["home_station"].dropna()) | set(inst.evs["work_station"].dropna())
    private = set(inst.stations.loc[inst.stations["kind"].isin(["home", "workplace"]), "station_id"])
    assert private == owned  # the 60-EV fleet's private stations are gone
    assert inst.metadata.name == "ux_12nodes_10ev"
    assert json.loads(text)["evs_car"] == 10


# ------------------------------------------------------------------ feeders

def test_bus_feeders_of_ux37_are_its_two_33_bus_feeders() -> None:
    inst = read(need(V2SIM / "ux_37nodes"))
    feeders = bus_feeders(inst.feeder)
    assert feeders.value_counts().to_dict() == {"sub_b0_1": 33, "sub_b1_1": 33}
    assert feeders["b0_18"] == "sub_b0_1" and feeders["b1_33"] == "sub_b1_1"


def test_parse_mix() -> None:
    assert parse_mix("car=1") == {"car": 1.0, "bus": 0.0, "logistics": 0.0}
    mix = parse_mix("car=0.9, bus=0.03 ,logistics=0.07")
    assert sum(mix.values()) == pytest.approx(1.0, abs=1e-15) and mix["bus"] == pytest.approx(0.03, rel=1e-12)


# ------------------------------------------------------------------ mistakes

@pytest.mark.parametrize("argv, message", [
    (["--mix", "car=0.9,bus=0.2"], "--mix: shares must sum to 1, got 1.1"),
    (["--mix", "car=0.9,truck=0.1"], "unknown vehicle class 'truck'"),
    (["--mix", "car=abc"], "share of car 'abc' is not a number"),
    (["--mix", "car=1.2,bus=-0.2"], "share of bus must be a non-negative number"),
    (["--mix", "car"], "expected class=share pairs"),
    (["--mix", "car=0.5,car=0.5"], "class 'car' given twice"),
    (["--v2g-share", "1.5"], "--v2g-share must be between 0 and 1"),
    (["--private-share", "x"], "--private-share 'x' is not a number"),
    (["--step", "7min"], "--step must be 1 to 60 minutes"),
    (["--step", "soon"], "--step 'soon' is not a duration"),
    (["--seed", "-1"], "--seed must be a non-negative integer"),
    (["--evs", "0"], "--evs must be at least 1"),
    (["--evs", "many"], "invalid int value: 'many'"),
])
def test_generate_mistakes_are_one_line_and_exit_2(small_case: Path, tmp_path: Path, argv: list[str],
                                                   message: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["generate", "--case", str(small_case), "--evs", "5", "--out", str(tmp_path / "x")]
    code, out, err = run(capsys, *base, *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_cli_mistakes_about_inputs_and_outputs(small_case: Path, generated: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["generate", "--case", str(need(REPO / "instances" / "case33bw.m")), "--evs", "5", "--out",
          str(tmp_path / "a")], "has no road network"),
        (["generate", "--case", str(tmp_path / "missing"), "--evs", "5", "--out", str(tmp_path / "a")],
         "no such file or folder"),
        (["generate", "--evs", "5", "--out", str(tmp_path / "a")], "the following arguments are required: --case"),
        (["simulate", str(small_case)], "has no fleet"),
        (["simulate", str(generated), "--telemetry", "t.csv"], "--telemetry needs a file name ending in .parquet"),
        (["simulate", str(generated), "--seed", "-3"], "--seed must be a non-negative integer"),
    ]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    cases += [
        (["generate", "--case", str(small_case), "--evs", "5", "--out", str(tmp_path / "busy")],
         "not an optev instance folder"),
        (["simulate", str(generated), "--out", str(tmp_path / "busy")], "refusing to replace a non-empty folder"),
    ]
    for argv, message in cases:
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "", argv
        assert message in err and err.count("\n") == 1, (argv, err)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------ the embedded default instance

def test_default_instance_is_small_and_complete(capsys: pytest.CaptureFixture[str]) -> None:
    folder = instances_dir() / DEFAULT_INSTANCE
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 500_000
    assert (folder / "LICENSE-V2Sim.txt").is_file() and "V2Sim" in (folder / "README.md").read_text()
    code, out, _ = run(capsys, "info", str(folder), "--json")
    data = json.loads(out)
    assert code == 0 and data["evs"] == 300 and data["buses"] == 66 and data["chargers_public"] == 470
    assert min(data["evs_car"], data["evs_bus"], data["evs_logistics"]) > 0 and data["sessions"] > 0
    code, out, _ = run(capsys, "simulate", "--json")  # no argument: the default instance
    assert code == 0 and json.loads(out)["evs"] == 300


def test_default_instance_matches_its_recipe(tmp_path: Path) -> None:
    """The committed files are what the recipe builds (else: rebuild and commit them)."""
    need(V2SIM / "ux_37nodes")
    out = tmp_path / "ux37_fleet"
    subprocess.run([sys.executable, str(REPO / "instances" / "recipes" / "build_default.py"), "--v2sim", str(V2SIM),
                    "--out", str(out)], check=True, capture_output=True)
    committed = instances_dir() / DEFAULT_INSTANCE
    names = sorted(p.name for p in committed.iterdir())
    assert names == sorted(p.name for p in out.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(committed, out, names, shallow=False)
    # a CSV may differ in the last digits of its floats across pandas/numpy versions (summation
    # order); equal within RECIPE_RTOL / RECIPE_ATOL it is the same instance
    differ = [n for n in mismatch if not (n.endswith(".csv") and _same_table(committed / n, out / n))]
    assert not differ and not errors, (f"{differ} differ from the recipe's output: rebuild with "
                                       "python instances/recipes/build_default.py")


RECIPE_RTOL, RECIPE_ATOL = 1e-12, 1e-6
"""How far a number of a rebuilt default-instance table may be from the committed one
(relative; absolute, in the column's unit: s, kWh, kW)."""


def _same_table(a: Path, b: Path) -> bool:
    x, y = pd.read_csv(a, dtype=object), pd.read_csv(b, dtype=object)
    if list(x.columns) != list(y.columns) or len(x) != len(y):
        return False
    for c in x.columns:
        xn, yn = pd.to_numeric(x[c], errors="coerce"), pd.to_numeric(y[c], errors="coerce")
        text = xn.isna() & x[c].notna()
        if not (x[c][text].equals(y[c][text]) and (xn.isna() == yn.isna()).all()):
            return False
        if not np.allclose(xn.dropna(), yn.dropna(), rtol=RECIPE_RTOL, atol=RECIPE_ATOL):
            return False
    return True


@pytest.mark.parametrize("formulation", ["ordered_charging", "city_dispatch"])
def test_optimiser_solves_the_default_instance(formulation: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "solve", formulation, str(instances_dir() / DEFAULT_INSTANCE), "--out",
                         str(tmp_path / "r"), "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["termination"] == "Optimal" and s["evs"] > 400
    # hard departure needs are met up to the 1 kW disaggregation: at most one quantum-step
    # (1 kW × 15 min × efficiency < 0.25 kWh) per session
    assert s["shortfall_kwh"] <= 0.25 * s["evs_with_shortfall"] + SIM_ENERGY_ATOL_KWH


# ------------------------------------------------------------------ the Nanjing recipe

@pytest.mark.slow
def test_nanjing_recipe_builds_100k_evs_and_10k_public_chargers(tmp_path: Path) -> None:
    need(V2SIM / "ux_Nanjing")
    out = tmp_path / "nanjing_100k"
    env = {**os.environ, "OPTEV_V2SIM": str(V2SIM), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["sh", str(REPO / "instances" / "recipes" / "nanjing_100k.sh"), str(out)], check=True, env=env,
                   capture_output=True)
    info = subprocess.run([sys.executable, "-m", "optev.cli", "info", str(out), "--json"], check=True,
                          capture_output=True, text=True)
    data = json.loads(info.stdout)
    assert data["evs"] == 100_000
    assert (data["evs_car"], data["evs_bus"], data["evs_logistics"]) == (90_000, 3_000, 7_000)
    assert data["chargers_public"] >= 10_000 and data["stations_private"] > 0
    assert data["sessions"] > 100_000

"""Adjustable-capacity curves (issue 13, deliverable 1): ``optev.forecast.flex`` and ``optev flex``.

The envelope table must be the optimiser's envelope on the same state: the expected station rows
are compared with the ``station_envelope`` that the ``aggregate`` station block builds for the
window a real :class:`~optev.mpc.Controller` step optimised.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optev.cli import main
from optev.compose.formulation import Formulation, load_formulation
from optev.compose.solve import build_model
from optev.data.vehicles import SESSIONS
from optev.errors import DataError, OptionError
from optev.forecast.flex import (ADDITIVE, CASES, COLUMNS, METRICS, controller_window, flex_curves, flex_headline,
                                 hold_steps, uncontrolled_state)
from optev.io import read
from optev.io.embedded import default_instance
from optev.mpc.controller import Controller
from optev.mpc.forecast import Forecast
from optev.mpc.state import ControlState
from optev.report.flex_plot import flex_figure

AT = "19:00"
ATOL = 1e-6


@pytest.fixture(scope="module")
def instance():
    return read(default_instance())


@pytest.fixture(scope="module")
def state(instance):
    return uncontrolled_state(instance, AT)


@pytest.fixture(scope="module")
def table(instance, state):
    return flex_curves(instance, AT)


@pytest.fixture(scope="module")
def optimised_window(instance, state):
    """The window a real controller step (solved) optimised for the same state."""
    ctl = Controller("station_v2g_aggregate", instance, step="15min", horizon="24h")
    decision = ctl.step(state)
    assert decision.stats.status == "optimal"
    assert ctl.last_window is not None
    return ctl.last_window


def wide(table: pd.DataFrame, scope: str, case: str, column: str, ids: np.ndarray) -> np.ndarray:
    """(ids × steps) array of one column."""
    rows = table[(table["scope"] == scope) & (table["case"] == case)]
    return rows.pivot(index="id", columns="time", values=column).reindex(ids).to_numpy(float)


def with_options(form: Formulation, ev: dict, station: dict) -> Formulation:
    blocks = dict(form.blocks)
    blocks["ev"] = (blocks["ev"][0], {**blocks["ev"][1], **ev})
    blocks["station"] = (blocks["station"][0], {**blocks["station"][1], **station})
    return dataclasses.replace(form, blocks=blocks)


# ----------------------------------------------------------------------------- (a) one implementation

def test_the_state_is_the_uncontrolled_day_at_the_decision_time(instance, state) -> None:
    ses = instance.sessions
    t = state.time_s
    assert t == pytest.approx(19 * 3600.0)
    plugged = ses[(ses["arrival_s"] <= t) & (ses["departure_s"] > t + 1.0)]
    assert sorted(e.session_id for e in state.evs) == sorted(plugged["session_id"])
    assert all(e.soc_arrival is not None and e.energy_kwh >= 0.0 for e in state.evs)
    # uncontrolled charging since arrival: never below the arrival energy
    assert all(e.soc >= e.soc_arrival - 1e-9 for e in state.evs)


def test_envelope_table_equals_the_optimisers_envelopes(instance, table, optimised_window) -> None:
    w = optimised_window
    env = build_model(load_formulation("station_v2g_aggregate"), w).handles["station_envelope"]
    ids = w.stations.station_id
    for column, expected in (("p_ch_max_kw", env.p_ch_max_kw), ("p_dis_max_kw", env.p_dis_max_kw),
                             ("e_min_kwh", env.e_lower_kwh), ("e_max_kwh", env.e_upper_kwh)):
        got = wide(table, "station", "expected", column, ids)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=ATOL, err_msg=column)
    assert table.attrs["plugged_sessions"] + table.attrs["forecast_sessions"] == w.evs.n
    assert table.attrs["forecast_sessions"] > 0  # the forecast arrivals are part of it


@pytest.mark.parametrize("ev, station", [({"v2g": False}, {}), ({}, {"departed": "need"})])
def test_formulation_options_follow_the_blocks(instance, state, optimised_window, ev, station) -> None:
    form = with_options(load_formulation("station_v2g_aggregate"), ev, station)
    env = build_model(form, optimised_window).handles["station_envelope"]
    got = flex_curves(instance, state=state, formulation=form)
    ids = optimised_window.stations.station_id
    for column, expected in (("p_dis_max_kw", env.p_dis_max_kw), ("e_min_kwh", env.e_lower_kwh),
                             ("e_max_kwh", env.e_upper_kwh)):
        np.testing.assert_allclose(wide(got, "station", "expected", column, ids), expected, atol=ATOL,
                                   err_msg=column)
    if ev.get("v2g") is False:
        assert (got["p_dis_max_kw"] == 0.0).all()


def test_controller_window_marks_the_plugged_sessions(instance, state) -> None:
    w, plugged, fc = controller_window(instance, state)
    assert w.steps == 96 and w.dt_h == pytest.approx(0.25)
    ids = set(w.evs.session_id[plugged])
    assert ids <= {e.session_id for e in state.evs}
    assert all(str(s).startswith("fc-") for s in w.evs.session_id[~plugged])
    assert fc.source == "seasonal"


# ----------------------------------------------------------------------------- (b) additivity

def test_layout(table) -> None:
    assert tuple(table.columns) == COLUMNS
    assert list(pd.unique(table["scope"])) == ["city", "region", "station"]
    assert set(table["case"]) == set(CASES)
    n_ids = table.groupby("scope")["id"].nunique()
    assert len(table) == 96 * len(CASES) * int(n_ids.sum())
    assert table["time"].min() == pd.Timestamp("2026-01-01 19:00", tz="Asia/Shanghai")
    assert np.isfinite(table[list(METRICS)].to_numpy(float)).all()


@pytest.mark.parametrize("case", ["expected", "plugged", "arrivals"])
def test_city_is_the_sum_of_regions_and_of_stations(table, case) -> None:
    rows = table[table["case"] == case]
    by = rows.groupby(["scope", "time"])[list(ADDITIVE)].sum()
    for scope in ("region", "station"):
        np.testing.assert_allclose(by.loc[scope].to_numpy(), by.loc["city"].to_numpy(), rtol=1e-9, atol=1e-5)


def test_expected_is_plugged_plus_arrivals(table) -> None:
    keys = ["scope", "id", "time"]
    parts = {c: table[table["case"] == c].set_index(keys)[list(ADDITIVE)].sort_index() for c in
             ("expected", "plugged", "arrivals")}
    np.testing.assert_allclose(parts["expected"].to_numpy(), (parts["plugged"] + parts["arrivals"]).to_numpy(),
                               rtol=1e-9, atol=1e-5)


# ----------------------------------------------------------------------------- (c) sane bounds

def test_bounds_are_ordered(table) -> None:
    v = {m: table[m].to_numpy(float) for m in METRICS}
    assert (v["p_uncontrolled_kw"] >= -ATOL).all()
    assert (v["p_uncontrolled_kw"] <= v["p_ch_max_kw"] + ATOL).all()
    assert (v["p_dis_max_kw"] >= 0.0).all()
    assert (v["e_min_kwh"] <= v["e_max_kwh"] + ATOL).all()
    assert (v["e_need_kwh"] >= 0.0).all()
    assert (v["raise_kw"] >= 0.0).all() and (v["raise_kw"] <= v["p_ch_max_kw"] - v["p_uncontrolled_kw"] + ATOL).all()
    assert (v["shed_kw"] >= 0.0).all() and (v["shed_kw"] <= v["p_uncontrolled_kw"] + ATOL).all()
    left_h = (table["time"].max() - table["time"]).dt.total_seconds().to_numpy() / 3600.0 + 0.25
    assert (v["shed_duration_h"] >= 0.0).all() and (v["shed_duration_h"] <= left_h + 1e-9).all()
    # a whole step of holding at zero exactly when the whole reference can be shed
    full = v["shed_duration_h"] >= 0.25 - 1e-9
    np.testing.assert_allclose(v["shed_kw"][full], v["p_uncontrolled_kw"][full], atol=1e-6)


def test_low_and_high_bracket_the_expected_arrivals(table) -> None:
    keys = ["scope", "id", "time"]
    case = {c: table[table["case"] == c].set_index(keys).sort_index() for c in ("low", "expected", "high")}
    for column in ("p_ch_max_kw", "p_dis_max_kw", "p_uncontrolled_kw", "e_max_kwh", "e_need_kwh"):
        low, mid, high = (case[c][column].to_numpy() for c in ("low", "expected", "high"))
        assert (low <= mid + ATOL).all() and (mid <= high + ATOL).all(), column
    city = table[table["scope"] == "city"]
    lo = city[city["case"] == "low"]["p_ch_max_kw"].to_numpy()
    hi = city[city["case"] == "high"]["p_ch_max_kw"].to_numpy()
    assert (hi - lo).max() > 1.0  # the forecast arrivals' uncertainty shows


def test_low_is_what_the_lower_quantile_guarantees(instance, state) -> None:
    narrow = flex_curves(instance, state=state, arrival_quantiles=(0.5, 0.5))
    wide_ = flex_curves(instance, state=state, arrival_quantiles=(0.01, 0.99))
    sel = (narrow["scope"] == "city") & (narrow["case"] == "low")
    assert (wide_.loc[sel, "p_ch_max_kw"].to_numpy() <= narrow.loc[sel, "p_ch_max_kw"].to_numpy() + ATOL).all()


def test_without_arrivals_every_case_is_the_plugged_fleet(instance, state) -> None:
    got = flex_curves(instance, state=state, forecaster=NoArrivals())
    assert got.attrs["forecast_sessions"] == 0
    keys = ["scope", "id", "time"]
    plugged = got[got["case"] == "plugged"].set_index(keys).sort_index()[list(METRICS)]
    for case in ("expected", "low", "high"):
        other = got[got["case"] == case].set_index(keys).sort_index()[list(METRICS)]
        np.testing.assert_allclose(other.to_numpy(), plugged.to_numpy(), atol=1e-6, err_msg=case)
    assert (got.loc[got["case"] == "arrivals", list(METRICS)].to_numpy() == 0.0).all()


class NoArrivals:
    """A forecaster that expects no arrivals (the instance's own prices and loads)."""

    def observe(self, state: ControlState) -> None:
        pass

    def forecast(self, instance, times, state) -> Forecast:
        return Forecast(source="none")


def test_hold_steps_against_a_brute_force_count() -> None:
    rng = np.random.default_rng(3)
    G, T = 7, 13
    x_ref = np.cumsum(rng.uniform(0.0, 2.0, (G, T)) * (rng.uniform(size=(G, T)) > 0.3), axis=1)
    x_lower = x_ref - rng.uniform(0.0, 3.0, (G, T))
    x_lower[:, ::4] -= 1.0  # a floor that also steps down
    got = hold_steps(x_ref, x_lower, atol=1e-9)
    for g in range(G):
        for t in range(T):
            held = x_ref[g, t - 1] if t else 0.0
            n = 0
            while t + n < T and x_lower[g, t + n] <= held + 1e-9:
                n += 1
            assert got[g, t] == n, (g, t)
    assert hold_steps(np.array([[1.0, 2.0, 3.0, 3.0]]), np.array([[0.0, 1.0, 2.5, 3.0]])).tolist() == [[1, 1, 0, 1]]


# ----------------------------------------------------------------------------- other inputs

def test_instances_without_sessions_need_a_state(instance) -> None:
    bare = copy.copy(instance)
    bare.sessions = SESSIONS.empty()
    with pytest.raises(DataError, match="sessions"):
        flex_curves(bare, AT)
    got = flex_curves(bare, state=ControlState(time_s=19 * 3600.0))  # no history: nothing plugged or forecast
    assert len(got) and (got[list(METRICS)].to_numpy() == 0.0).all()


def test_mistakes_are_option_errors(instance, state) -> None:
    with pytest.raises(OptionError, match="differs"):
        flex_curves(instance, "08:00", state=state)
    with pytest.raises(OptionError, match="outside"):
        flex_curves(instance, "2026-01-05T08:00")
    with pytest.raises(OptionError, match="arrival_quantiles"):
        flex_curves(instance, AT, arrival_quantiles=(0.9, 0.1))
    with pytest.raises(OptionError, match="step"):
        flex_curves(instance, AT, step="1h")


def test_headline_and_plot(table) -> None:
    head = flex_headline(table)
    city0 = table[(table["scope"] == "city") & (table["case"] == "expected")].iloc[0]
    assert head["shed_kw"] == pytest.approx(city0["shed_kw"])
    assert head["shed_duration_h"] == pytest.approx(city0["shed_duration_h"])
    assert head["peak_shed_kw"] >= head["shed_kw"]
    region = str(table.loc[table["scope"] == "region", "id"].iloc[0])
    fig = flex_figure(table, "region", region)
    assert len(fig.axes) == 4  # three panels and the duration axis
    with pytest.raises(OptionError, match="ids"):
        flex_headline(table, "station")


# ----------------------------------------------------------------------------- (d) the command line

def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_the_table_the_plot_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "flex"
    code, text, err = run(capsys, "flex", "--at", AT, "--out", str(out))
    assert code == 0, err
    assert {p.name for p in out.iterdir()} >= {"flex.csv", "flex.png", "summary.json"}
    assert (out / "flex.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(out / "flex.csv")
    assert tuple(csv.columns) == COLUMNS and len(csv) > 0
    assert "city: can shed" in text and " at 19:00 for " in text
    # --json: one object; the folder it wrote before is replaced
    code, text, err = run(capsys, "flex", "--at", AT, "--out", str(out), "--scope", "region", "--json")
    assert code == 0, err
    report = json.loads(text)
    assert report["plot"]["scope"] == "region" and len(report["headlines"]) >= 1
    assert report["headlines"][0]["shed_kw"] >= report["headlines"][-1]["shed_kw"]
    assert json.loads((out / "summary.json").read_text())["headlines"] == report["headlines"]


@pytest.mark.parametrize("argv", [["--at", "25:00"], ["--at", "19:00", "--step", "2h"],
                                  ["--at", "19:00", "--quantiles", "0.1"]])
def test_cli_mistakes_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv) -> None:
    code, text, err = run(capsys, "flex", *argv, "--out", str(tmp_path / "x"))
    assert code == 2 and text == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("optev")
    assert not (tmp_path / "x").exists()


def test_cli_never_overwrites_a_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = run(capsys, "flex", "--at", AT, "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (out / "notes.txt").read_text() == "keep me"

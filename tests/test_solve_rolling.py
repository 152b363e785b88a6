"""Consecutive windows of a rolling horizon (issue 9, deliverable 5): the next window starts
from the previous one's basis (translated by label) and from its AC operating point (loss
correction), the loss correction reports whether it converged, and the solver-level pieces
behind it (``LinearProgram.compile_data``, ``HighsSession.basis``/``start_from``,
``lp.expr.total``) agree with the plain paths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from optev.blocks.window import build_window
from optev.compose.basis import Labeller
from optev.compose.formulation import load_formulation
from optev.compose.solve import WindowSolver, build_model
from optev.data.synthetic import synthetic_charging_instance
from optev.lp.expr import LinExpr, VarArray, total
from optev.lp.program import LinearProgram
from optev.mpc import Controller, ReplayPlant
from optev.mpc.state import SolveStats
from optev.solvers.highs import BASIC, HighsSession
from optev.testing import LDF_AC_VM_ATOL_PU, LP_ATOL, OBJECTIVE_RTOL

STEPS = 16


@pytest.fixture(scope="module")
def inst50():
    return synthetic_charging_instance(50, seed=0)


def _window(inst, start: str):
    return build_window(inst, start=start, steps=STEPS, step="15min")


class _Runs:
    """Records every HiGHS run of a solver's session."""

    def __init__(self, solver: WindowSolver) -> None:
        self.runs: list = []
        solve = solver.session.solve

        def recording():
            out = solve()
            self.runs.append(out)
            return out

        solver.session.solve = recording


def _with_network(form, **options):
    variant, opts = form.blocks["network"]
    return dataclasses.replace(form, blocks={**form.blocks, "network": (variant, {**opts, **options})})


# -- the next window starts from the previous basis ----------------------------------------------
def test_next_window_starts_from_the_translated_basis(inst50) -> None:
    form = _with_network(load_formulation("lindistflow_opf"), loss_correction=False)  # one LP per window
    rolling = WindowSolver(form, carry_losses=False)
    rolling.solve(_window(inst50, "09:00"))
    runs = _Runs(rolling)
    res = rolling.solve(_window(inst50, "09:15"))
    cold = WindowSolver(form, carry_losses=False, map_basis=False)
    cold_runs = _Runs(cold)
    ref = cold.solve(_window(inst50, "09:15"))
    # an arrival changes the structure: no in-place update, but a start from the old basis
    assert not runs.runs[0].warm and runs.runs[0].from_basis and not cold_runs.runs[0].from_basis
    # the same LP, solved from another start: the same optimum, in fewer simplex iterations
    # (a degenerate LP may end at another optimal vertex: same cost, not necessarily the same plan)
    assert res.objective == pytest.approx(ref.objective, rel=OBJECTIVE_RTOL)
    assert runs.runs[0].iterations < cold_runs.runs[0].iterations


def test_labels_name_the_same_element_one_step_later(inst50) -> None:
    form = load_formulation("lindistflow_opf")
    labeller = Labeller()
    a = build_model(form, _window(inst50, "09:00"))
    b = build_model(form, _window(inst50, "09:15"))
    la, lb = labeller.labels(a), labeller.labels(b)
    # a bus voltage of step t + 1 of the first window is step t of the next one
    va, vb = a.lp.variables["bus_v2"], b.lp.variables["bus_v2"]
    ids_a = va.start + np.arange(va.size).reshape(va.shape)
    ids_b = vb.start + np.arange(vb.size).reshape(vb.shape)
    np.testing.assert_array_equal(la.cols[ids_a[:, 1:]], lb.cols[ids_b[:, :-1]])
    assert not np.isin(lb.cols[ids_b[:, -1]], la.cols).any()
    # an EV's charging power: same session and same time, whatever its position in the LP
    # the handle is an (EV × step) array of the EV's column ids (−1 where it is not plugged in)
    pa, pb = a.handles["ev_p_ch"].ids[..., 0], b.handles["ev_p_ch"].ids[..., 0]
    row_b = {s: i for i, s in enumerate(b.window.evs.session_id)}
    pairs = [(pa[i, t + 1], pb[row_b[s], t]) for i, s in enumerate(a.window.evs.session_id) if s in row_b
             for t in range(STEPS - 1) if pa[i, t + 1] >= 0 and pb[row_b[s], t] >= 0]
    assert pairs
    assert all(la.cols[i] == lb.cols[j] for i, j in pairs)
    # labels are unique within a model
    for labels in (la.cols, la.rows):
        known = labels[labels >= 0]
        assert np.unique(known).size == known.size


# -- the next window starts from the previous operating point -----------------------------------
def test_loss_correction_starts_from_the_previous_window(inst50) -> None:
    form = load_formulation("lindistflow_opf")
    rolling = WindowSolver(form)
    first = rolling.solve(_window(inst50, "09:00"))
    assert first.summary["loss_correction_seeded"] is False
    assert first.summary["loss_correction_rounds"] >= 2      # from ℓ = 0 the first error is large
    second = rolling.solve(_window(inst50, "09:15"))
    fresh = WindowSolver(form).solve(_window(inst50, "09:15"))
    assert second.summary["loss_correction_seeded"] is True
    assert second.summary["loss_correction_converged"] is True
    assert second.summary["loss_correction_dv_pu"][0] < fresh.summary["loss_correction_dv_pu"][0]
    assert second.summary["loss_correction_rounds"] < fresh.summary["loss_correction_rounds"]
    assert second.summary["max_abs_dv_pu"] <= LDF_AC_VM_ATOL_PU
    # both are fixed points within the tolerance: the objectives differ only by what the
    # remaining voltage error moves
    assert second.objective == pytest.approx(fresh.objective, rel=1e-3)
    # a window that does not overlap the last one starts from ℓ = 0
    later = rolling.solve(_window(inst50, "20:00"))
    assert later.summary["loss_correction_seeded"] is False


def test_loss_correction_that_stops_early_says_so(inst50) -> None:
    form = load_formulation("lindistflow_opf")
    window = _window(inst50, "09:00")
    short = WindowSolver(_with_network(form, loss_tolerance_pu=1e-12, max_corrections=1)).solve(window)
    history = short.summary["loss_correction_dv_pu"]
    assert len(history) == 2 and short.summary["loss_correction_rounds"] == 2
    assert short.summary["loss_correction_converged"] is False
    assert short.summary["loss_error_pu"] == pytest.approx(min(history)) and min(history) > 1e-12
    full = WindowSolver(form).solve(window)
    assert full.summary["loss_correction_converged"] is True
    assert full.summary["loss_error_pu"] == pytest.approx(full.summary["loss_correction_dv_pu"][-1])
    assert full.summary["loss_error_pu"] <= form.blocks["network"][1]["loss_tolerance_pu"]
    off = WindowSolver(_with_network(form, loss_correction=False)).solve(window)
    assert off.summary["loss_correction_converged"] is None and off.summary["loss_error_pu"] is None
    copper = WindowSolver(load_formulation("station_v2g")).solve(window)
    assert copper.summary["loss_correction_converged"] is None


def test_controller_reports_the_loss_correction(inst50) -> None:
    form = _with_network(load_formulation("lindistflow_opf"), loss_tolerance_pu=1e-12, max_corrections=1)
    state = ReplayPlant(inst50, start_s=9 * 3600.0).control_state()
    stopped = Controller(form, inst50, horizon="4h").step(state)
    assert stopped.stats.loss_converged is False and stopped.stats.loss_error_pu > 1e-12
    assert "loss correction did not converge" in stopped.stats.message
    assert SolveStats.from_dict(stopped.stats.to_dict()) == stopped.stats
    assert stopped.stats.loss_rounds == 2
    ctl = Controller("lindistflow_opf", inst50, horizon="4h")
    fine = ctl.step(state)
    assert fine.stats.loss_converged is True and fine.stats.loss_error_pu <= LDF_AC_VM_ATOL_PU
    assert fine.stats.message == "" and fine.stats.loss_rounds >= 2 and not fine.stats.mapped_basis
    # the next interval: a new structure started from the translated basis and the carried losses
    nxt = ctl.step(ReplayPlant(inst50, start_s=9 * 3600.0 + 900.0).control_state())
    assert nxt.stats.mapped_basis and not nxt.stats.warm
    assert ctl.last_result.summary["loss_correction_seeded"] is True and nxt.stats.loss_converged is True
    copper = Controller("station_v2g", inst50, horizon="4h").step(state)
    assert copper.stats.loss_converged is None and copper.stats.loss_error_pu is None
    assert copper.stats.loss_rounds == 0


def test_solve_stats_round_trip_the_new_fields() -> None:
    stats = SolveStats(loss_converged=False, loss_error_pu=2.5e-4, loss_rounds=11, mapped_basis=True)
    back = SolveStats.from_dict(stats.to_dict())
    assert back == stats and back.loss_converged is False
    assert SolveStats.from_dict({}).loss_converged is None
    assert SolveStats.from_dict({"loss_error_pu": float("nan")}).loss_error_pu is None


# -- solver-level pieces ----------------------------------------------------------------------------
def _small_lp() -> LinearProgram:
    lp = LinearProgram()
    x = lp.add_variables("x", 3, 0.0, 10.0)
    lp.add_constraints("cap", x[0] + x[1] + x[2], "<=", 12.0)
    lp.add_constraints("need", x[0] + 2.0 * x[1], ">=", 4.0)
    lp.add_objective("cost", x * np.array([1.0, 0.5, 2.0]))
    return lp


def test_compile_data_reuses_the_matrix_and_matches_compile() -> None:
    lp = _small_lp()
    first = lp.compile()
    lp.constraints["need"].lower[...] = 6.0
    lp.variables["x"].upper[1] = 2.0
    again = lp.compile_data(first)
    full = lp.compile()
    assert again.matrix is first.matrix
    for name in ("cost", "col_lower", "col_upper", "row_lower", "row_upper"):
        np.testing.assert_array_equal(getattr(again, name), getattr(full, name))
    session = HighsSession()
    session.load(first)
    assert session.load(again)              # the same matrix object: an in-place update
    assert session.solve().objective == pytest.approx(2.0 + 0.5 * 2.0, abs=LP_ATOL)   # x = (2, 2, 0)
    lp.add_variables("y", 1)
    with pytest.raises(ValueError, match="families were added"):
        lp.compile_data(first)


def test_start_from_repairs_statuses_and_keeps_the_optimum() -> None:
    arrays = _small_lp().compile()
    ref = HighsSession()
    ref.load(arrays)
    optimum = ref.solve()
    cols, rows = ref.basis()
    assert (cols == BASIC).sum() + (rows == BASIC).sum() == arrays.n_rows
    for bad_cols, bad_rows in ((np.full(3, BASIC), np.full(2, BASIC)),     # too many basic
                               (np.zeros(3), np.zeros(2)),                  # none basic
                               (cols, rows)):                               # the optimal basis
        session = HighsSession()
        session.load(arrays)
        assert session.start_from(np.asarray(bad_cols, np.int8), np.asarray(bad_rows, np.int8))
        out = session.solve()
        assert out.from_basis and out.objective == pytest.approx(optimum.objective, abs=LP_ATOL)
    # from the optimal basis nothing is left to do
    assert out.iterations == 0


def test_total_equals_the_chained_sum() -> None:
    lp = LinearProgram()
    x = lp.add_variables("x", (2, 3))
    y = lp.add_variables("y", 3)
    parts = [x * 2.0, -y, LinExpr.constant(np.ones((2, 3))), 5.0, y * 0.5]
    chained = parts[0] + parts[1] + parts[2] + parts[3] + parts[4]
    one = total(parts)
    point = np.arange(lp.n_cols, dtype=float) + 1.0
    np.testing.assert_allclose(lp.evaluate(one, point), lp.evaluate(chained, point))
    assert one.n_terms == chained.n_terms == 3
    # adding a constant expression copies no term arrays and keeps the terms
    const = x + LinExpr.constant(np.full((2, 3), 2.0))
    assert const.n_terms == 1
    np.testing.assert_allclose(lp.evaluate(const, point), point[:6].reshape(2, 3) + 2.0)


def test_redundant_rows_are_left_out_and_come_back_when_they_can_bind() -> None:
    lp = _small_lp()
    x = lp.variables["x"]
    ids = VarArray("x", np.arange(x.start, x.start + x.size))
    lp.add_constraints("loose", ids[0] + ids[1], "<=", 25.0)  # x ≤ 10 each: x0 + x1 ≤ 20 < 25, never binds
    full = lp.compile()
    reduced = lp.compile(drop_redundant=True)
    assert reduced.n_rows == full.n_rows - 1 and list(reduced.row_index) == [0, 1]
    assert reduced.program_rows == 3
    results = []
    for arrays in (full, reduced):
        session = HighsSession()
        session.load(arrays)
        results.append(session.solve())
    assert results[1].objective == pytest.approx(results[0].objective, abs=LP_ATOL)
    np.testing.assert_allclose(reduced.full_rows(results[1].row_activity, np.nan)[:2],
                               results[0].row_activity[:2], atol=LP_ATOL)
    assert np.isnan(reduced.full_rows(results[1].row_activity, np.nan)[2])
    # bounds change: the row stays out while it cannot bind, and comes back when it can
    lp.constraints["need"].lower[...] = 5.0
    same = lp.compile_data(reduced)
    assert same.matrix is reduced.matrix and same.n_rows == 2
    x.upper[...] = 20.0
    back = lp.compile_data(same)
    assert back.matrix is not reduced.matrix and back.row_index is None and back.n_rows == 3
    # a row without terms whose bounds exclude 0 is never left out (the model is infeasible)
    bad = LinearProgram()
    y = bad.add_variables("y", 1, 0.0, 1.0)
    bad.add_constraints("fit", y * 0.0, ">=", 1.0)
    assert bad.compile(drop_redundant=True).n_rows == 1


def test_dropping_redundant_rows_keeps_the_optimum(inst50) -> None:
    form = _with_network(load_formulation("lindistflow_opf"), loss_correction=False)  # one LP, compared exactly
    window = _window(inst50, "10:00")
    full = WindowSolver(form).solve(window)
    reduced_solver = WindowSolver(form, drop_redundant_rows=True)
    runs = _Runs(reduced_solver)
    reduced = reduced_solver.solve(window)
    assert reduced.objective == pytest.approx(full.objective, rel=1e-6)
    assert reduced_solver.session.loaded.n_rows < full.summary["constraints"]
    assert all(r.optimal for r in runs.runs)

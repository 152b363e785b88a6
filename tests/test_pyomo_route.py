"""The Pyomo route and the direct array route build the same LP (issue 3, "if two routes
exist, a test proves they build the same LP").

For models declared by :func:`optev.compose.solve.build_model` from the shipped
formulation files, every row of the Pyomo model (read back with Pyomo's own
``generate_standard_repn``) is compared coefficient by coefficient with the row of
``lp.compile()``, as are the row and column bounds, the integrality and the objective;
then both are solved with HiGHS (through Pyomo's ``appsi_highs`` and through highspy)
and the optima compared.
"""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
import pytest
from pyomo.repn.standard_repn import generate_standard_repn

from optev.blocks.window import Window
from optev.compose.solve import build_model
from optev.lp import LinearProgram, LPArrays
from optev.lp.pyomo_route import (OBJECTIVE_NAME, block_name, column_vars, pyomo_expression, row_constraints,
                                  solution_vector, to_pyomo)
from optev.solvers.highs import HighsSession
from optev.testing import OBJECTIVE_RTOL, RTOL_EXACT
from test_crosscheck_cvxpy import flexible_window, formulation, lindistflow_formulation, weak_feeder_window

FORMULATIONS = ("ordered_charging", "station_v2g")


def _window(seed: int = 0, site_limit_kw: float | None = None) -> Window:
    """5 EVs, 12 quarter-hours with a valley–peak–shoulder price (V2G is worth using)."""
    return flexible_window(5, seed, site_limit_kw=site_limit_kw)


def _compare_structure(lp: LinearProgram, model: pyo.ConcreteModel, arrays: LPArrays) -> None:
    cols = column_vars(model, lp)
    assert len(cols) == arrays.n_cols
    # every Pyomo variable is a column of the LP, and no other variable exists
    all_vars = list(model.component_data_objects(pyo.Var, descend_into=True))
    assert len(all_vars) == arrays.n_cols
    col_of = {id(v): j for j, v in enumerate(cols)}
    assert len(col_of) == arrays.n_cols
    lo = np.array([-np.inf if v.lb is None else v.lb for v in cols])
    hi = np.array([np.inf if v.ub is None else v.ub for v in cols])
    np.testing.assert_array_equal(lo, arrays.col_lower)
    np.testing.assert_array_equal(hi, arrays.col_upper)
    integer = np.array([v.is_integer() for v in cols])
    np.testing.assert_array_equal(integer, arrays.integer if arrays.integer is not None
                                  else np.zeros(arrays.n_cols, bool))

    csr = arrays.matrix.tocsr()
    csr.sort_indices()
    rows = row_constraints(model, lp)
    n_con = sum(1 for _ in model.component_data_objects(pyo.Constraint, active=True, descend_into=True))
    assert n_con == len(rows)
    nonempty = np.flatnonzero(np.diff(csr.indptr) > 0)
    np.testing.assert_array_equal(np.array(sorted(rows)), nonempty)  # empty rows are the only ones skipped
    for r, con in rows.items():
        repn = generate_standard_repn(con.body, compute_values=True)
        assert repn.is_linear()
        got_cols = np.array([col_of[id(v)] for v in repn.linear_vars])
        got_coef = np.array(repn.linear_coefs, float)
        order = np.argsort(got_cols)
        a, b = csr.indptr[r], csr.indptr[r + 1]
        np.testing.assert_array_equal(got_cols[order], csr.indices[a:b], err_msg=lp.row_name(r))
        np.testing.assert_allclose(got_coef[order], csr.data[a:b], rtol=RTOL_EXACT, atol=0, err_msg=lp.row_name(r))
        const = float(repn.constant)
        lb = -np.inf if con.lb is None else con.lb - const
        ub = np.inf if con.ub is None else con.ub - const
        assert lb == arrays.row_lower[r] and ub == arrays.row_upper[r], lp.row_name(r)

    obj = model.component(OBJECTIVE_NAME)
    assert obj.sense == pyo.minimize
    repn = generate_standard_repn(obj.expr, compute_values=True)
    cost = np.zeros(arrays.n_cols)
    np.add.at(cost, [col_of[id(v)] for v in repn.linear_vars], np.array(repn.linear_coefs, float))
    np.testing.assert_allclose(cost, arrays.cost, rtol=RTOL_EXACT, atol=0)
    assert float(repn.constant) == pytest.approx(arrays.offset, rel=RTOL_EXACT, abs=0)


def _solve_both(lp: LinearProgram, model: pyo.ConcreteModel, arrays: LPArrays) -> tuple[float, float]:
    session = HighsSession()
    session.load(arrays)
    direct = session.solve()
    assert direct.optimal
    res = pyo.SolverFactory("appsi_highs").solve(model)
    assert res.solver.termination_condition == pyo.TerminationCondition.optimal
    return direct.objective, pyo.value(model.component(OBJECTIVE_NAME))


@pytest.mark.parametrize("name", FORMULATIONS)
def test_routes_build_the_same_lp_and_optimum(name: str) -> None:
    window = _window()
    assert window.evs.n == 5
    ctx = build_model(formulation(name), window)
    lp = ctx.lp
    model = to_pyomo(lp)
    arrays = lp.compile()
    _compare_structure(lp, model, arrays)
    # one Pyomo block per block name, one component per family, named like the family
    for fam in lp.variables.values():
        assert isinstance(model.component(block_name(fam.block)).component(fam.name), pyo.Var)
    for fam in lp.constraints.values():
        assert isinstance(model.component(block_name(fam.block)).component(fam.name), pyo.Constraint)
    direct, via_pyomo = _solve_both(lp, model, arrays)
    assert via_pyomo == pytest.approx(direct, rel=OBJECTIVE_RTOL)
    # the Pyomo solution read back as a column vector evaluates to the same terms
    x = solution_vector(model, lp)
    assert sum(lp.objective_values(x).values()) == pytest.approx(direct, rel=OBJECTIVE_RTOL)
    for term in lp.objective.values():
        expr = model.component(block_name(term.block)).component(term.name)
        assert pyo.value(expr) * term.weight == pytest.approx(lp.objective_values(x)[term.name],
                                                              rel=OBJECTIVE_RTOL, abs=OBJECTIVE_RTOL)


def test_v2g_window_discharges() -> None:
    """The V2G window is not degenerate: V2G EVs exist and the optimum uses them, so the
    comparison above covers the discharge columns and the reservation term."""
    window = _window()
    ctx = build_model(formulation("station_v2g"), window)
    assert window.evs.v2g.any()
    assert "ev_v2g_reservation" in ctx.lp.objective
    session = HighsSession()
    session.load(ctx.lp.compile())
    out = session.solve()
    assert ctx.lp.values("ev_p_dis", out.x).max() > 1.0


def test_soft_limits_and_binding_site_cap() -> None:
    """Slack families (block ``slack``) and a binding site cap render identically."""
    window = _window(seed=1, site_limit_kw=5.0)  # infeasible without slack
    ctx = build_model(formulation("station_v2g"), window, soft_limits=True)
    lp = ctx.lp
    assert any(f.block == "slack" for f in lp.variables.values())
    model = to_pyomo(lp)
    assert isinstance(model.slack_block, pyo.Block)  # "slack" is a Suffix name for Pyomo's solver interfaces
    arrays = lp.compile()
    _compare_structure(lp, model, arrays)
    direct, via_pyomo = _solve_both(lp, model, arrays)
    assert via_pyomo == pytest.approx(direct, rel=OBJECTIVE_RTOL)


def test_exclusive_variant_has_integer_columns() -> None:
    """The ``exclusive`` EV variant (binary charge/discharge mode) renders as Integers
    with bounds [0, 1] and gives the same MIP optimum."""
    window = _window()
    ctx = build_model(formulation("station_v2g", ev={"variant": "exclusive"}), window)
    lp = ctx.lp
    model = to_pyomo(lp)
    arrays = lp.compile()
    assert arrays.integer is not None and arrays.integer.any()
    _compare_structure(lp, model, arrays)
    mode = model.ev.ev_mode
    assert all(v.domain is pyo.Integers and v.lb == 0.0 and v.ub == 1.0 for v in mode.values())
    direct, via_pyomo = _solve_both(lp, model, arrays)
    assert via_pyomo == pytest.approx(direct, rel=OBJECTIVE_RTOL)


@pytest.mark.parametrize("objective", [None, {"energy_cost": 1.0, "voltage_deviation": 10.0, "peak": 0.05}])
def test_lindistflow_routes_agree(objective: dict[str, float] | None) -> None:
    """LinDistFlow (bus balances built with grouped sums, voltage drops, station reactive
    power, the linearised network-loss and voltage-deviation terms) renders identically."""
    window = weak_feeder_window(0, 0.975)
    form = lindistflow_formulation(reactive=True, objective=objective)
    lp = build_model(form, window).lp
    assert {"bus", "line"} <= {f.block for f in lp.constraints.values()}
    model = to_pyomo(lp)
    arrays = lp.compile()
    _compare_structure(lp, model, arrays)
    direct, via_pyomo = _solve_both(lp, model, arrays)
    assert via_pyomo == pytest.approx(direct, rel=OBJECTIVE_RTOL)


def test_hand_lp_with_offset_and_ranges() -> None:
    """A hand-made LP with an objective constant, a ranged row, a scalar family and an
    empty row: min 2·(1.5 − x0 − x1) s.t. 1 ≤ x0 + 2·x1 ≤ 4, x0 − x1 = 0.5, 0 ≤ x ≤ 5.
    By hand: x1 = 7/6, x0 = 5/3, optimum 2·(3/2 − 17/6) = −8/3."""
    lp = LinearProgram("hand")
    x = lp.add_variables("a_x", 2, 0.0, 5.0)
    lp.add_range("a_range", x[0] + x[1] * 2.0, 1.0, 4.0)
    lp.add_constraints("b_diff", x[0] - x[1], "==", 0.5)
    lp.add_constraints("b_none", x * 0.0, ">=", -1.0)  # no terms: skipped in Pyomo
    lp.add_objective("a_value", 1.5 - x.sum(), 2.0)
    model = to_pyomo(lp)
    arrays = lp.compile()
    assert arrays.offset == 3.0
    _compare_structure(lp, model, arrays)
    direct, via_pyomo = _solve_both(lp, model, arrays)
    assert direct == pytest.approx(-8.0 / 3.0, rel=OBJECTIVE_RTOL)
    assert via_pyomo == pytest.approx(-8.0 / 3.0, rel=OBJECTIVE_RTOL)
    np.testing.assert_allclose(solution_vector(model, lp), [5.0 / 3.0, 7.0 / 6.0], rtol=OBJECTIVE_RTOL)
    assert len(model.b.b_none) == 0


def test_name_clash_is_an_error() -> None:
    lp = LinearProgram("clash")
    x = lp.add_variables("a_x", 2, 0.0, 1.0)
    lp.add_objective("a_x", x)  # an objective term named like a variable of the same block
    with pytest.raises(ValueError, match="used twice"):
        to_pyomo(lp)


def test_empty_infeasible_row_is_an_error() -> None:
    lp = LinearProgram("empty")
    x = lp.add_variables("a_x", 2, 0.0, 1.0)
    lp.add_constraints("a_zero", x * 0.0 + 0.0, ">=", 1.0)
    with pytest.raises(ValueError, match="no terms"):
        to_pyomo(lp)


def test_indexing_is_positional_as_documented() -> None:
    """formulations/README.md §6: components are indexed by position over the family's shape;
    the EV families are 1-D over the plugged (EV, step) entries, and ``pyomo_expression``
    renders an element of the dense EV × step handle (0 where the EV is not plugged in)."""
    window = _window()
    ctx = build_model(formulation("station_v2g"), window)
    lp = ctx.lp
    model = to_pyomo(lp)
    for fam in lp.variables.values():
        var = model.component(block_name(fam.block)).component(fam.name)
        keys = [k if isinstance(k, tuple) else (k,) for k in var.keys()]
        assert keys == list(np.ndindex(*fam.shape)) or fam.shape == (), fam.name
    plugged = window.evs.plugged > 0
    e_idx, t_idx = np.nonzero(plugged)
    assert list(model.ev.ev_p_ch.keys()) == list(range(e_idx.size))
    assert len(model.ev.ev_departure) == len(set(e_idx.tolist()))
    session = HighsSession()
    session.load(lp.compile())
    out = session.solve()
    cols = column_vars(model, lp)
    for v, x in zip(cols, out.x):
        v.set_value(float(x), skip_validation=True)
    dense = lp.evaluate(ctx.handles["ev_p_ch"], out.x)
    k_of = {(int(e), int(t)): k for k, (e, t) in enumerate(zip(e_idx, t_idx))}
    for e, t in np.ndindex(*plugged.shape):
        expr = pyomo_expression(model, lp, ctx.handles["ev_p_ch"], (e, t), columns=cols)
        if plugged[e, t]:
            assert list(expr.linear_vars) == [model.ev.ev_p_ch[k_of[e, t]]]
            assert list(expr.linear_coefs) == [1.0]
        else:
            assert not expr.linear_vars and pyo.value(expr) == 0.0
        assert pyo.value(expr) == pytest.approx(dense[e, t], abs=1e-12)
    with pytest.raises(ValueError, match="one element"):
        pyomo_expression(model, lp, ctx.handles["ev_p_ch"], 0)

"""The Pyomo route: a :class:`~optev.lp.program.LinearProgram` rendered as a Pyomo model.

optev declares each variable family and each constraint family once, vectorised, through
:class:`~optev.lp.program.LinearProgram` (one statement per family in the block modules
of :mod:`optev.blocks`). Two routes lead from those declarations to a solver:

* the **direct array route**, :meth:`LinearProgram.compile` → :mod:`optev.solvers.highs`:
  a few NumPy operations per family produce the CSC matrix, bounds and costs HiGHS takes.
  This is the fast route used by ``optev solve``, the MPC and the benchmarks;
* the **Pyomo route**, :func:`to_pyomo` (this module): the same families become Pyomo
  components, one :class:`pyomo.environ.Block` per block name (``ev``, ``station``,
  ``grid``, ``objective``, ...), with one indexed ``Var`` per variable family and one
  indexed ``Constraint`` per constraint family, named exactly like the family and
  indexed by position over the family's shape (see the conventions below).

Because both routes read the same :class:`~optev.lp.program.VarFamily` and
:class:`~optev.lp.program.ConFamily` objects there is no second declaration of any
constraint to keep in sync; ``tests/test_pyomo_route.py`` checks that the two routes
give the same LP coefficient by coefficient and the same optimum.

The Pyomo route is meant for inspection (``model.ev.ev_departure.pprint()``), for
handing an optev model to the solvers Pyomo supports (Gurobi, CPLEX, ...) and writers
(``model.write("model.lp")``), and for small models. Pyomo builds one Python object per
variable, term and constraint (tens of microseconds per constraint), so on large models
it is orders of magnitude slower than the direct array route; the preparation of every
family (duplicate terms merged, empty slots dropped, bounds converted) is vectorised,
the per-row Pyomo objects are unavoidable.

Conventions of the rendering
----------------------------
* Variable family of shape ``(n, T)`` → ``Var(RangeSet(0, n-1), RangeSet(0, T-1))``
  with the family's element-wise bounds (±inf → unbounded) and domain ``Reals`` or
  ``Integers`` (``family.integer``). A family of shape ``()`` is a scalar ``Var``.
  Indices are positions, as in the family's arrays: a family declared dense over
  (station × step) is ``model.station.station_q[s, t]`` with ``s`` the station's position in
  the window's station table, ``model.bus.bus_v2[b, t]`` likewise. The EV block declares its
  variables only in plugged steps, so ``ev_p_ch``, ``ev_p_dis`` and ``ev_e`` are 1-D families
  over the plugged (EV, step) entries (``model.ev.ev_p_ch[k]``: the k-th plugged step, by EV
  then step) and ``ev_departure`` one row per EV with a plugged step; the EV × step view is
  the block's handle, and :func:`pyomo_expression` renders one of its elements
  (``pyomo_expression(model, lp, ctx.handles["ev_p_ch"], (e, t))``: the Pyomo variable of EV
  ``e`` at step ``t``, 0 when it is not plugged in).
* Constraint family → indexed ``Constraint`` over the family's shape, one row per element:
  ``body == b`` when both bounds agree, otherwise ``lo <= body <= hi`` with infinite sides
  left open. The body is a :class:`~pyomo.core.expr.numeric_expr.LinearExpression`
  without constant (the family's constant is already moved into its bounds). A row
  whose terms all vanish is skipped (it constrains nothing; infeasible empty rows raise).
* Objective: each weighted term becomes an ``Expression`` named after the term in its
  block (``model.objective.energy_cost``, unweighted), and the model-level ``Objective``
  :data:`OBJECTIVE_NAME` minimises ``Σ weight · term``.
* Blocks are named like optev's blocks except names Pyomo reserves at model level
  (:data:`RESERVED_NAMES`, e.g. ``slack`` → ``slack_block``); :func:`block_name` maps them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyomo.environ as pyo
import scipy.sparse as sp
from pyomo.core.expr.numeric_expr import LinearExpression

from optev.lp.expr import LinExpr, VarArray, as_expr
from optev.lp.program import ConFamily, LinearProgram, VarFamily

OBJECTIVE_NAME = "weighted_objective"
"""Name of the model-level Pyomo ``Objective`` (minimise the weighted sum of terms)."""

RESERVED_NAMES = frozenset({"dual", "rc", "lrc", "urc", "slack", "ipopt_zL_in", "ipopt_zU_in", "ipopt_zL_out",
                            "ipopt_zU_out", OBJECTIVE_NAME})
"""Model-level names Pyomo solver interfaces read as ``Suffix`` components (``model.dual``,
``model.slack``, ...) or that hold the objective; a block of that name is renamed
``<name>_block`` (optev's soft-limit slacks live in block ``slack`` → ``slack_block``)."""


def block_name(block: str) -> str:
    """The Pyomo name of optev block ``block`` (see :data:`RESERVED_NAMES`)."""
    return f"{block}_block" if block in RESERVED_NAMES else block


def _index_sets(shape: tuple[int, ...]) -> list[Any]:
    return [pyo.RangeSet(0, n - 1) for n in shape]


def _flat(idx: tuple[int, ...], strides: tuple[int, ...]) -> int:
    return sum(i * s for i, s in zip(idx, strides))


def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    acc = 1
    for n in reversed(shape):
        out.append(acc)
        acc *= n
    return tuple(reversed(out))


def _bound(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def _block(model: pyo.ConcreteModel, name: str) -> pyo.Block:
    name = block_name(name)
    block = model.component(name)
    if block is None:
        model.add_component(name, pyo.Block())
        block = model.component(name)
    elif not isinstance(block, pyo.Block):
        raise ValueError(f"block name {name!r} clashes with the model component {block.name!r}")
    return block


def _add(block: pyo.Block, name: str, component: Any) -> Any:
    if block.component(name) is not None:
        raise ValueError(f"name {name!r} is used twice in Pyomo block {block.name!r} (variable, constraint "
                         f"and objective-term names must differ within a block)")
    block.add_component(name, component)
    return block.component(name)


def _add_var(block: pyo.Block, fam: VarFamily) -> Any:
    lo = fam.lower.ravel()
    hi = fam.upper.ravel()
    domain = pyo.Integers if fam.integer else pyo.Reals
    strides = _strides(fam.shape)

    def bounds(_b: Any, *idx: int) -> tuple[float | None, float | None]:
        k = _flat(idx, strides)
        return _bound(lo[k]), _bound(hi[k])

    return _add(block, fam.name, pyo.Var(*_index_sets(fam.shape), domain=domain, bounds=bounds,
                                         doc=fam.description or None))


def _rows(fam: ConFamily, n_cols: int) -> sp.csr_matrix:
    """The family's rows as a CSR matrix (duplicate terms summed, zeros dropped)."""
    k = fam.expr.n_terms
    ids = np.broadcast_to(fam.expr.ids, fam.shape + (k,)).reshape(fam.size, k)
    co = np.broadcast_to(fam.expr.coeffs, fam.shape + (k,)).reshape(fam.size, k)
    ok = (ids >= 0) & (co != 0)
    rows = np.broadcast_to(np.arange(fam.size)[:, None], ids.shape)[ok]
    m = sp.csr_matrix((co[ok], (rows, ids[ok])), shape=(fam.size, n_cols))
    m.sum_duplicates()
    m.eliminate_zeros()
    return m


def _add_constraints(block: pyo.Block, fam: ConFamily, columns: list[Any], n_cols: int) -> Any:
    m = _rows(fam, n_cols)
    indptr, indices, data = m.indptr, m.indices.tolist(), m.data.tolist()
    lo = fam.lower.ravel()
    hi = fam.upper.ravel()
    empty = np.diff(indptr) == 0
    bad = empty & ((lo > 0) | (hi < 0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        idx = np.unravel_index(k, fam.shape) if fam.shape else ()
        raise ValueError(f"constraint {fam.name}[{','.join(str(int(i)) for i in idx)}] has no terms and "
                         f"bounds [{lo[k]}, {hi[k]}] that exclude 0: the LP is infeasible")
    strides = _strides(fam.shape)
    starts = indptr.tolist()

    def rule(_b: Any, *idx: int) -> Any:
        k = _flat(idx, strides)
        a, b = starts[k], starts[k + 1]
        if a == b:
            return pyo.Constraint.Skip
        body = LinearExpression(constant=0.0, linear_coefs=data[a:b], linear_vars=[columns[j] for j in indices[a:b]])
        low, up = lo[k], hi[k]
        if low == up:
            return body == float(low)
        return (_bound(low), body, _bound(up))

    return _add(block, fam.name, pyo.Constraint(*_index_sets(fam.shape), rule=rule,
                                                doc=fam.description or None))


def column_vars(model: pyo.ConcreteModel, lp: LinearProgram) -> list[Any]:
    """The Pyomo variables of ``model`` (made by :func:`to_pyomo`) in the column order of ``lp``.

    ``column_vars(model, lp)[j]`` is the Pyomo ``VarData`` of column ``j`` of
    ``lp.compile()``, so a Pyomo solution maps back to the array route and back again.
    """
    out: list[Any] = []
    for fam in lp.variables.values():
        var = model.component(block_name(fam.block)).component(fam.name)
        if fam.shape == ():
            out.append(var)
        else:
            out.extend(var[idx if len(idx) > 1 else idx[0]] for idx in np.ndindex(*fam.shape))
    return out


def row_constraints(model: pyo.ConcreteModel, lp: LinearProgram) -> dict[int, Any]:
    """Row id of ``lp.compile()`` → Pyomo ``ConstraintData`` (rows without terms are absent)."""
    out: dict[int, Any] = {}
    for fam in lp.constraints.values():
        con = model.component(block_name(fam.block)).component(fam.name)
        if fam.shape == ():
            if len(con):
                out[fam.start] = con
            continue
        for k, idx in enumerate(np.ndindex(*fam.shape)):
            key = idx if len(idx) > 1 else idx[0]
            if key in con:
                out[fam.start + k] = con[key]
    return out


def pyomo_expression(model: pyo.ConcreteModel, lp: LinearProgram, expr: LinExpr | VarArray, index: Any = (),
                     columns: list[Any] | None = None) -> Any:
    """Element ``index`` of an expression array of ``lp`` as a Pyomo expression of ``model``'s variables.

    Parameters
    ----------
    model, lp
        A model made by :func:`to_pyomo` and its program.
    expr : LinExpr or VarArray
        An expression over ``lp``'s columns, for example a block handle
        (``ctx.handles["ev_p_ch"]``, dense EV × step).
    index
        Position of the element (``(e, t)``); ``()`` for an expression of shape ``()``.
    columns : list, optional
        :func:`column_vars` of the model, to save recomputing it on repeated calls.

    Returns
    -------
    pyomo LinearExpression
        ``Σ coefficient · variable + constant`` (duplicate terms merged, zero ones dropped);
        ``pyo.value`` of it after a Pyomo solve equals ``lp.evaluate(expr, x)[index]``.
    """
    e = as_expr(expr)[index]
    if e.shape:
        raise ValueError(f"index {index!r} selects a sub-array of shape {e.shape}, not one element")
    cols = column_vars(model, lp) if columns is None else columns
    merged: dict[int, float] = {}
    for j, c in zip(e.ids.tolist(), e.coeffs.tolist()):
        if j >= 0:
            merged[j] = merged.get(j, 0.0) + c
    terms = [(j, c) for j, c in merged.items() if c != 0]
    return LinearExpression(constant=float(e.const), linear_coefs=[c for _, c in terms],
                            linear_vars=[cols[j] for j, _ in terms])


def solution_vector(model: pyo.ConcreteModel, lp: LinearProgram) -> np.ndarray:
    """The values of the Pyomo variables as a column vector ``x`` of ``lp`` (NaN if unset), so
    that :meth:`LinearProgram.values` and :meth:`LinearProgram.evaluate` read a Pyomo solution."""
    return np.array([np.nan if v.value is None else float(v.value) for v in column_vars(model, lp)], float)


def to_pyomo(lp: LinearProgram) -> pyo.ConcreteModel:
    """Render every family of ``lp`` as Pyomo components (see module docstring).

    Parameters
    ----------
    lp : LinearProgram
        A program declared by optev's blocks (or by hand).

    Returns
    -------
    pyomo.environ.ConcreteModel
        One ``Block`` per block name holding that block's indexed ``Var`` and
        ``Constraint`` components and objective-term ``Expression`` components, plus the
        model-level ``Objective`` :data:`OBJECTIVE_NAME` (minimise). Use
        :func:`column_vars` / :func:`row_constraints` to relate its components to the
        columns and rows of ``lp.compile()``, and :func:`solution_vector` to read a
        Pyomo solution back as an array.

    Notes
    -----
    This route is for inspection, other Pyomo solvers and small models; the direct
    array route (:meth:`LinearProgram.compile` and :mod:`optev.solvers.highs`) is the
    fast one. Both come from the same family declarations.
    """
    model = pyo.ConcreteModel(name=lp.name)
    for fam in lp.variables.values():
        _add_var(_block(model, fam.block), fam)
    columns = column_vars(model, lp)
    for con in lp.constraints.values():
        _add_constraints(_block(model, con.block), con, columns, lp.n_cols)
    total: list[Any] = []
    for term in lp.objective.values():
        ids = term.expr.ids.ravel()
        co = term.expr.coeffs.ravel()
        ok = (ids >= 0) & (co != 0)
        cols = np.flatnonzero(np.bincount(ids[ok], minlength=lp.n_cols) > 0)
        coef = np.bincount(ids[ok], weights=co[ok], minlength=lp.n_cols)[cols]
        keep = coef != 0
        cols, coef = cols[keep], coef[keep]
        expr = LinearExpression(constant=float(term.expr.const.sum()), linear_coefs=coef.tolist(),
                                linear_vars=[columns[j] for j in cols.tolist()])
        comp = _add(_block(model, term.block), term.name,
                    pyo.Expression(expr=expr, doc=term.description or None))
        total.append(term.weight * comp)
    model.add_component(OBJECTIVE_NAME, pyo.Objective(expr=sum(total) if total else 0.0, sense=pyo.minimize))
    return model

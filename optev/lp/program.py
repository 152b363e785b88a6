"""A linear program assembled from named variable and constraint families.

Every family is declared once, vectorised (see :mod:`optev.lp.expr`); the program then
compiles to the arrays a solver takes (``min cᵀx + c0  s.t.  row_lo ≤ A x ≤ row_hi,
col_lo ≤ x ≤ col_hi``). The same families render as Pyomo blocks
(:mod:`optev.lp.pyomo_route`), so the Pyomo model and the arrays passed to HiGHS come
from one declaration.

Names follow design.md: variables ``<component>_<quantity>`` (``ev_p_ch``), constraints
``<component>_<relation>`` (``ev_energy_balance``); the block of a family is the part of
its name before the first underscore unless given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from optev.lp.expr import LinExpr, VarArray, as_expr

SENSES = ("<=", ">=", "==")
INF = np.inf


@dataclass(frozen=True)
class VarFamily:
    name: str
    block: str
    shape: tuple[int, ...]
    start: int
    lower: np.ndarray
    upper: np.ndarray
    description: str = ""
    integer: bool = False

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class ConFamily:
    name: str
    block: str
    shape: tuple[int, ...]
    start: int
    expr: LinExpr
    lower: np.ndarray
    upper: np.ndarray
    description: str = ""

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class ObjectiveTerm:
    name: str
    block: str
    expr: LinExpr
    weight: float
    description: str = ""


@dataclass(frozen=True)
class LPArrays:
    """A compiled LP in solver form (CSC matrix, minimisation)."""

    cost: np.ndarray
    offset: float
    col_lower: np.ndarray
    col_upper: np.ndarray
    row_lower: np.ndarray
    row_upper: np.ndarray
    matrix: sp.csc_matrix
    integer: np.ndarray | None = None
    """Boolean mask of integer columns, None for a pure LP."""

    @property
    def n_cols(self) -> int:
        return int(self.cost.size)

    @property
    def n_rows(self) -> int:
        return int(self.row_lower.size)


@dataclass
class LinearProgram:
    """Variables, constraints and weighted objective terms, declared by family."""

    name: str = "optev"
    variables: dict[str, VarFamily] = field(default_factory=dict)
    constraints: dict[str, ConFamily] = field(default_factory=dict)
    objective: dict[str, ObjectiveTerm] = field(default_factory=dict)
    n_cols: int = 0
    n_rows: int = 0

    @staticmethod
    def _block(name: str, block: str | None) -> str:
        return block if block is not None else name.split("_", 1)[0]

    def add_variables(self, name: str, shape: tuple[int, ...] | int, lower: Any = 0.0, upper: Any = INF, *,
                      block: str | None = None, description: str = "", integer: bool = False) -> VarArray:
        """Declare a family of variables with element-wise bounds (broadcast to ``shape``);
        ``integer=True`` makes them integer (binary with bounds 0 and 1)."""
        if name in self.variables:
            raise ValueError(f"variable family {name!r} declared twice")
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        size = int(np.prod(shape, dtype=np.int64))
        lo = np.broadcast_to(np.asarray(lower, float), shape).copy()
        hi = np.broadcast_to(np.asarray(upper, float), shape).copy()
        fam = VarFamily(name, self._block(name, block), shape, self.n_cols, lo, hi, description, integer)
        self.variables[name] = fam
        ids = np.arange(self.n_cols, self.n_cols + size, dtype=np.int64).reshape(shape)
        self.n_cols += size
        return VarArray(name, ids)

    def add_constraints(self, name: str, lhs: Any, sense: str, rhs: Any = 0.0, *, block: str | None = None,
                        description: str = "") -> None:
        """Declare the family ``lhs (sense) rhs``, one row per element of the broadcast shape."""
        if name in self.constraints:
            raise ValueError(f"constraint family {name!r} declared twice")
        if sense not in SENSES:
            raise ValueError(f"sense must be one of {SENSES}, got {sense!r}")
        expr = as_expr(lhs) - as_expr(rhs)
        shape = expr.shape
        const = np.broadcast_to(expr.const, shape)
        expr = LinExpr(expr.coeffs, expr.ids, np.zeros(shape)).compact()
        bound = -const
        lower = bound.copy() if sense in (">=", "==") else np.full(shape, -INF)
        upper = bound.copy() if sense in ("<=", "==") else np.full(shape, INF)
        self._add_rows(name, block, shape, expr, lower, upper, description)

    def add_range(self, name: str, expr: Any, lower: Any, upper: Any, *, block: str | None = None,
                  description: str = "") -> None:
        """Declare ``lower ≤ expr ≤ upper`` element-wise."""
        e = as_expr(expr)
        shape = np.broadcast_shapes(e.shape, np.shape(lower), np.shape(upper))
        e = e._broadcast(shape)
        const = np.broadcast_to(e.const, shape)
        lo = np.broadcast_to(np.asarray(lower, float), shape) - const
        hi = np.broadcast_to(np.asarray(upper, float), shape) - const
        self._add_rows(name, block, shape, LinExpr(e.coeffs, e.ids, np.zeros(shape)).compact(), lo, hi,
                       description)

    def _add_rows(self, name: str, block: str | None, shape: tuple[int, ...], expr: LinExpr, lo: np.ndarray,
                  hi: np.ndarray, description: str) -> None:
        fam = ConFamily(name, self._block(name, block), shape, self.n_rows, expr, np.array(lo, float),
                        np.array(hi, float), description)
        self.constraints[name] = fam
        self.n_rows += fam.size

    def add_objective(self, name: str, expr: Any, weight: float = 1.0, *, block: str | None = None,
                      description: str = "") -> None:
        """Add ``weight · Σ expr`` to the objective (minimised)."""
        if name in self.objective:
            raise ValueError(f"objective term {name!r} declared twice")
        self.objective[name] = ObjectiveTerm(name, self._block(name, block), as_expr(expr).sum(), float(weight),
                                             description)

    # -- compilation ----------------------------------------------------------------------
    def compile(self) -> LPArrays:
        """Assemble the solver arrays (duplicate terms in a row are summed, zeros dropped)."""
        cost = np.zeros(self.n_cols)
        offset = 0.0
        for term in self.objective.values():
            ids = term.expr.ids.ravel()
            vals = term.expr.coeffs.ravel() * term.weight
            ok = ids >= 0
            cost += np.bincount(ids[ok], weights=vals[ok], minlength=self.n_cols)
            offset += float(term.expr.const.sum()) * term.weight
        col_lo = np.concatenate([f.lower.ravel() for f in self.variables.values()]) if self.variables \
            else np.zeros(0)
        col_hi = np.concatenate([f.upper.ravel() for f in self.variables.values()]) if self.variables \
            else np.zeros(0)
        rows, cols, vals, lo, hi = [], [], [], [], []
        for fam in self.constraints.values():
            k = fam.expr.n_terms
            ids = np.broadcast_to(fam.expr.ids, fam.shape + (k,)).reshape(fam.size, k)
            co = np.broadcast_to(fam.expr.coeffs, fam.shape + (k,)).reshape(fam.size, k)
            r = np.broadcast_to(np.arange(fam.start, fam.start + fam.size)[:, None], ids.shape)
            ok = (ids >= 0) & (co != 0)
            rows.append(r[ok])
            cols.append(ids[ok])
            vals.append(co[ok])
            lo.append(fam.lower.ravel())
            hi.append(fam.upper.ravel())
        if rows:
            matrix = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                   shape=(self.n_rows, self.n_cols))
            matrix.sum_duplicates()
            matrix.eliminate_zeros()
            row_lo, row_hi = np.concatenate(lo), np.concatenate(hi)
        else:
            matrix = sp.csc_matrix((self.n_rows, self.n_cols))
            row_lo = row_hi = np.zeros(0)
        integer = None
        if any(f.integer for f in self.variables.values()):
            integer = np.concatenate([np.full(f.size, f.integer) for f in self.variables.values()])
        return LPArrays(cost, offset, col_lo, col_hi, row_lo, row_hi, matrix, integer)

    # -- results ----------------------------------------------------------------------------
    def values(self, name: str, x: np.ndarray) -> np.ndarray:
        """Values of variable family ``name`` from a solution vector, in the family's shape."""
        fam = self.variables[name]
        return x[fam.start:fam.start + fam.size].reshape(fam.shape)

    def evaluate(self, expr: LinExpr | VarArray, x: np.ndarray) -> np.ndarray:
        """Value of an expression array at solution ``x``."""
        e = as_expr(expr)
        ids = e.ids
        safe = np.where(ids >= 0, ids, 0)
        return (np.where(ids >= 0, e.coeffs * x[safe], 0.0)).sum(axis=-1) + e.const

    def row_values(self, name: str, y: np.ndarray) -> np.ndarray:
        """Values of a constraint family's rows (activities or duals) in the family's shape."""
        fam = self.constraints[name]
        return y[fam.start:fam.start + fam.size].reshape(fam.shape)

    def objective_values(self, x: np.ndarray) -> dict[str, float]:
        """Weighted value of each objective term at ``x``."""
        return {n: float(self.evaluate(t.expr, x)) * t.weight for n, t in self.objective.items()}

    def column_name(self, col: int) -> str:
        for fam in self.variables.values():
            if fam.start <= col < fam.start + fam.size:
                idx = np.unravel_index(col - fam.start, fam.shape)
                return f"{fam.name}[{','.join(str(int(i)) for i in idx)}]"
        raise IndexError(col)

    def row_name(self, row: int) -> str:
        for fam in self.constraints.values():
            if fam.start <= row < fam.start + fam.size:
                idx = np.unravel_index(row - fam.start, fam.shape)
                return f"{fam.name}[{','.join(str(int(i)) for i in idx)}]"
        raise IndexError(row)

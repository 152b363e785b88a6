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
from optev.tolerances import REDUNDANT_ROW_ATOL as REDUNDANT_ROW_ATOL

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
    row_index: np.ndarray | None = None
    """Rows of the program these arrays hold, in order (None: all of them); see
    :meth:`LinearProgram.compile` with ``drop_redundant``."""
    program_rows: int | None = None
    """Rows of the program (with ``row_index``)."""

    @property
    def n_cols(self) -> int:
        return int(self.cost.size)

    @property
    def n_rows(self) -> int:
        return int(self.row_lower.size)

    def full_rows(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Row values of these arrays (activities, duals) placed at the program's row positions,
        ``fill`` at the rows left out (a redundant row's dual is 0)."""
        if self.row_index is None:
            return np.asarray(values)
        out = np.full(int(self.program_rows or 0), fill, dtype=float)
        out[self.row_index] = values
        return out


def redundant_rows(matrix: sp.csr_matrix | sp.csc_matrix | sp.coo_matrix, col_lower: np.ndarray,
                   col_upper: np.ndarray, row_lower: np.ndarray, row_upper: np.ndarray) -> np.ndarray:
    r"""Rows that the column bounds alone keep within their bounds.

    With :math:`a_i` row i of the matrix and :math:`l \le x \le u`, the activity lies in
    :math:`[\sum_j \min(a_{ij} l_j, a_{ij} u_j), \sum_j \max(a_{ij} l_j, a_{ij} u_j)]`; the
    row is redundant when that interval lies within :math:`[\underline r_i, \bar r_i]` (an
    infinite column bound makes a side infinite unless its coefficient is 0).

    Returns
    -------
    ndarray of bool
        One per row.
    """
    a = sp.csr_matrix(matrix)
    lo = np.asarray(col_lower, float)
    hi = np.asarray(col_upper, float)
    cols = a.indices
    v = a.data
    with np.errstate(invalid="ignore"):  # 0·inf: a zero coefficient contributes nothing
        at_lo, at_hi = v * lo[cols], v * hi[cols]
        at_lo = np.where(v == 0, 0.0, at_lo)
        at_hi = np.where(v == 0, 0.0, at_hi)
    rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    low = np.bincount(rows, weights=np.minimum(at_lo, at_hi), minlength=a.shape[0])
    high = np.bincount(rows, weights=np.maximum(at_lo, at_hi), minlength=a.shape[0])
    rl, ru = np.asarray(row_lower, float), np.asarray(row_upper, float)
    with np.errstate(invalid="ignore"):
        up_ok = ~np.isfinite(ru) | (high <= ru + REDUNDANT_ROW_ATOL * (1.0 + np.abs(ru)))
        lo_ok = ~np.isfinite(rl) | (low >= rl - REDUNDANT_ROW_ATOL * (1.0 + np.abs(rl)))
    return up_ok & lo_ok  # an infinite (or NaN: +inf and −inf terms) side is never within a finite bound


@dataclass
class LinearProgram:
    """Variables, constraints and weighted objective terms, declared by family."""

    name: str = "optev"
    variables: dict[str, VarFamily] = field(default_factory=dict)
    constraints: dict[str, ConFamily] = field(default_factory=dict)
    objective: dict[str, ObjectiveTerm] = field(default_factory=dict)
    n_cols: int = 0
    n_rows: int = 0
    _dropped: tuple[np.ndarray, sp.csr_matrix] | None = field(default=None, repr=False, compare=False)
    """Rows the last ``compile(drop_redundant=True)`` left out, and their terms."""

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
    def column_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bound of every column declared so far, in column order."""
        if not self.variables:
            return np.zeros(0), np.zeros(0)
        return (np.concatenate([f.lower.ravel() for f in self.variables.values()]),
                np.concatenate([f.upper.ravel() for f in self.variables.values()]))

    def compile(self, *, drop_redundant: bool = False) -> LPArrays:
        """Assemble the solver arrays (duplicate terms in a row are summed, zeros dropped).

        Parameters
        ----------
        drop_redundant : bool
            Leave out rows that the column bounds alone satisfy (:func:`redundant_rows`:
            the row's activity cannot leave its bounds whatever the columns do within theirs,
            rows without terms included). The arrays' ``row_index`` names the rows kept. A solver
            given the arrays sees the same feasible set; row activities and duals come back
            for the kept rows only (:meth:`LPArrays.full_rows`). Worth it when a model must
            be solved without presolve (HiGHS started from a given basis): in a city window
            about half the rows are station and line polygon sides that cannot bind.
        """
        cost, offset = self.objective_arrays()
        col_lo, col_hi = self.column_bounds()
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
        self._dropped = None
        if drop_redundant and self.n_rows:
            csr = matrix.tocsr()
            drop = redundant_rows(csr, col_lo, col_hi, row_lo, row_hi)  # empty rows too, if 0 is within bounds
            if drop.any():
                keep = np.flatnonzero(~drop)
                self._dropped = (np.flatnonzero(drop), csr[drop])
                return LPArrays(cost, offset, col_lo, col_hi, row_lo[keep], row_hi[keep], csr[keep].tocsc(), integer,
                                row_index=keep, program_rows=self.n_rows)
        return LPArrays(cost, offset, col_lo, col_hi, row_lo, row_hi, matrix, integer)

    def _n_dropped(self) -> int:
        return 0 if self._dropped is None else int(self._dropped[0].size)

    def row_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bound of every row declared so far, in row order."""
        if not self.constraints:
            return np.zeros(0), np.zeros(0)
        return (np.concatenate([f.lower.ravel() for f in self.constraints.values()]),
                np.concatenate([f.upper.ravel() for f in self.constraints.values()]))

    def objective_arrays(self) -> tuple[np.ndarray, float]:
        """Cost vector and constant offset of the weighted objective."""
        cost = np.zeros(self.n_cols)
        offset = 0.0
        for term in self.objective.values():
            ids = term.expr.ids.ravel()
            vals = term.expr.coeffs.ravel() * term.weight
            ok = ids >= 0
            cost += np.bincount(ids[ok], weights=vals[ok], minlength=self.n_cols)
            offset += float(term.expr.const.sum()) * term.weight
        return cost, offset

    def compile_data(self, prev: LPArrays) -> LPArrays:
        """Arrays after only bounds and objective changed since ``prev`` was compiled.

        Costs, offset and bounds are assembled again; the matrix (and integrality) is
        ``prev``'s own object, which tells :class:`~optev.solvers.highs.HighsSession` that
        the structure is unchanged without comparing it. For in-place updates of
        ``ConFamily.lower``/``upper``, ``VarFamily.lower``/``upper`` and objective terms
        (the loss correction of LinDistFlow); a changed constraint expression needs
        :meth:`compile`.

        With arrays of ``compile(drop_redundant=True)`` the same rows are left out as long
        as they stay redundant under the new bounds; otherwise the program is compiled again
        (a new matrix, so the solver sees a new structure).

        Raises
        ------
        ValueError
            Families were added since ``prev`` (its shape differs).
        """
        kept = self.n_rows if prev.row_index is None else prev.row_index.size + self._n_dropped()
        if prev.n_cols != self.n_cols or kept != self.n_rows:
            raise ValueError(f"compile_data: the program has {self.n_rows} × {self.n_cols}, the previous arrays "
                             f"{prev.n_rows} × {prev.n_cols}; families were added — use compile()")
        cost, offset = self.objective_arrays()
        col_lo, col_hi = self.column_bounds()
        row_lo, row_hi = self.row_bounds()
        if prev.row_index is None:
            return LPArrays(cost, offset, col_lo, col_hi, row_lo, row_hi, prev.matrix, prev.integer)
        if self._dropped is None:  # prev dropped rows, so this program's last compile() recorded them
            raise ValueError("compile_data: the previous arrays dropped rows that this program's last compile() "
                             "did not drop — use compile()")
        dropped, rows = self._dropped
        if redundant_rows(rows, col_lo, col_hi, row_lo[dropped], row_hi[dropped]).all():
            keep = prev.row_index
            return LPArrays(cost, offset, col_lo, col_hi, row_lo[keep], row_hi[keep], prev.matrix, prev.integer,
                            row_index=keep, program_rows=self.n_rows)
        return self.compile(drop_redundant=True)  # a left-out row can bind now: a new structure

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

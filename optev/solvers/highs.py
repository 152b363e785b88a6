"""HiGHS through highspy: pass compiled LP arrays, solve, update data in place, re-solve warm.

:class:`HighsSession` keeps one ``highspy.Highs`` instance. :meth:`HighsSession.load`
passes a model; when the next model has the same sparsity pattern and coefficients
(only costs and bounds changed, as when prices, arrivals or initial energies change
between control steps), only the changed entries are sent and HiGHS restarts from its
previous basis instead of solving from scratch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from optev.errors import SolverError
from optev.lp.program import LPArrays


@dataclass(frozen=True)
class SolveOutcome:
    """Raw result of one HiGHS run.

    Attributes
    ----------
    status : str
        HiGHS model status text (``"Optimal"``, ``"Infeasible"``, …).
    optimal : bool
    objective : float
        Objective value including the constant offset (NaN unless optimal).
    x : ndarray
        Column values.
    row_activity, row_dual : ndarray
        ``A x`` and the row duals (NaN when HiGHS has none), converted from HiGHS's
        solution snapshot on first access: most callers only need ``x``, and the
        conversion of every row costs about as much as a small warm re-solve.
    solve_s : float
        Wall time of ``Highs.run``.
    iterations : int
        Simplex (or IPM) iterations.
    warm : bool
        True when only data was updated in place before this run.
    n_rows : int
        Rows of the model (the length of ``row_activity`` and ``row_dual``).
    solution : highspy.HighsSolution or None
        HiGHS's solution snapshot behind the row arrays.
    """

    status: str
    optimal: bool
    objective: float
    x: np.ndarray
    solve_s: float
    iterations: int
    warm: bool
    n_rows: int = 0
    solution: Any = field(default=None, repr=False, compare=False)
    """The ``highspy.HighsSolution`` snapshot (a copy: later runs do not change it)."""

    @cached_property
    def row_activity(self) -> np.ndarray:
        """Row activities ``A x`` (NaN without a primal solution)."""
        sol = self.solution
        if sol is None or not sol.value_valid:
            return np.full(self.n_rows, np.nan)
        return np.asarray(sol.row_value, float)

    @cached_property
    def row_dual(self) -> np.ndarray:
        """Row duals (NaN without a dual solution)."""
        sol = self.solution
        if sol is None or not sol.dual_valid:
            return np.full(self.n_rows, np.nan)
        return np.asarray(sol.row_dual, float)


class HighsSession:
    """One HiGHS instance reused across solves of models of the same shape."""

    def __init__(self, *, time_limit_s: float | None = None, threads: int | None = None,
                 log: bool = False) -> None:
        import highspy

        self._hs = highspy
        self.h = highspy.Highs()
        self.h.setOptionValue("output_flag", bool(log))
        if time_limit_s is not None:
            self.h.setOptionValue("time_limit", float(time_limit_s))
        if threads is not None:
            self.h.setOptionValue("threads", int(threads))
        self._loaded: LPArrays | None = None
        self._warm = False

    def load(self, arrays: LPArrays) -> bool:
        """Give the model to HiGHS; return True if it was an in-place data update."""
        prev = self._loaded
        if prev is not None and _same_structure(prev, arrays):
            self._update(prev, arrays)
            self._loaded = arrays
            self._warm = True
            return True
        lp = self._hs.HighsLp()
        lp.num_col_ = arrays.n_cols
        lp.num_row_ = arrays.n_rows
        lp.col_cost_ = arrays.cost
        lp.col_lower_ = arrays.col_lower
        lp.col_upper_ = arrays.col_upper
        lp.row_lower_ = arrays.row_lower
        lp.row_upper_ = arrays.row_upper
        lp.offset_ = arrays.offset
        m = arrays.matrix
        lp.a_matrix_.format_ = self._hs.MatrixFormat.kColwise
        lp.a_matrix_.start_ = m.indptr.astype(np.int32)
        lp.a_matrix_.index_ = m.indices.astype(np.int32)
        lp.a_matrix_.value_ = m.data.astype(float)
        if arrays.integer is not None:
            lp.integrality_ = [self._hs.HighsVarType.kInteger if i else self._hs.HighsVarType.kContinuous
                               for i in arrays.integer]
        status = self.h.passModel(lp)
        if status == self._hs.HighsStatus.kError:
            raise SolverError("HiGHS rejected the model (passModel returned an error)")
        self._loaded = arrays
        self._warm = False
        return False

    def _update(self, prev: LPArrays, new: LPArrays) -> None:
        h = self.h
        changed = np.flatnonzero(prev.cost != new.cost)
        if changed.size:
            h.changeColsCost(changed.size, changed.astype(np.int32), new.cost[changed])
        changed = np.flatnonzero((prev.col_lower != new.col_lower) | (prev.col_upper != new.col_upper))
        if changed.size:
            h.changeColsBounds(changed.size, changed.astype(np.int32), new.col_lower[changed],
                               new.col_upper[changed])
        changed = np.flatnonzero((prev.row_lower != new.row_lower) | (prev.row_upper != new.row_upper))
        if changed.size:
            h.changeRowsBounds(changed.size, changed.astype(np.int32), new.row_lower[changed],
                               new.row_upper[changed])
        if prev.offset != new.offset:
            h.changeObjectiveOffset(new.offset)

    def solve(self) -> SolveOutcome:
        """Run HiGHS on the loaded model."""
        if self._loaded is None:
            raise SolverError("no model loaded")
        t0 = time.perf_counter()
        run_status = self.h.run()
        solve_s = time.perf_counter() - t0
        if run_status == self._hs.HighsStatus.kError:
            raise SolverError("HiGHS failed to run (status kError)")
        model_status = self.h.getModelStatus()
        status = self.h.modelStatusToString(model_status)
        optimal = model_status == self._hs.HighsModelStatus.kOptimal
        sol = self.h.getSolution()
        info = self.h.getInfo()
        x = np.asarray(sol.col_value, float) if sol.value_valid else np.full(self._loaded.n_cols, np.nan)
        iterations = int(max(info.simplex_iteration_count, 0) + max(info.ipm_iteration_count, 0)
                         + max(getattr(info, "mip_node_count", 0), 0))
        objective = float(info.objective_function_value) if optimal else float("nan")
        return SolveOutcome(status, optimal, objective, x, solve_s, iterations, self._warm,
                            n_rows=self._loaded.n_rows, solution=sol)

    def write_mps(self, path: str | Path) -> Path:
        """Write the loaded model as MPS (for solver benchmarking)."""
        p = Path(path)
        if self.h.writeModel(str(p)) == self._hs.HighsStatus.kError:
            raise SolverError(f"HiGHS could not write {p}")
        return p


def _same_structure(a: LPArrays, b: LPArrays) -> bool:
    ma, mb = a.matrix, b.matrix
    same_int = (a.integer is None and b.integer is None) or (
        a.integer is not None and b.integer is not None and np.array_equal(a.integer, b.integer))
    return (same_int and ma.shape == mb.shape and ma.nnz == mb.nnz and np.array_equal(ma.indptr, mb.indptr)
            and np.array_equal(ma.indices, mb.indices) and np.array_equal(ma.data, mb.data))

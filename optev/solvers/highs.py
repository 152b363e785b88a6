"""HiGHS through highspy: pass compiled LP arrays, solve, update data in place, re-solve warm.

:class:`HighsSession` keeps one ``highspy.Highs`` instance. :meth:`HighsSession.load`
passes a model; when the next model has the same sparsity pattern and coefficients
(only costs and bounds changed, as when prices, arrivals or initial energies change
between control steps), only the changed entries are sent and HiGHS restarts from its
previous basis instead of solving from scratch.

HiGHS prints a start-up banner on the process's standard output (file descriptor 1) when
the first ``Highs`` instance of a process is created, before any option can turn output
off. :func:`new_highs` creates every instance optev uses and keeps that banner off
standard output, so that a command's (or a script's) standard output holds only what it
prints itself — ``optev solve --json`` prints exactly one JSON object.

Interrupts: ``Highs.run`` releases the GIL, and Python handles signals only between
bytecodes of the main thread, so a solve run there directly would hold Ctrl-C back until
HiGHS finished (up to its time limit). In the main thread :meth:`HighsSession.solve` runs
HiGHS in the session's own worker thread and waits for it; an exception raised meanwhile
(KeyboardInterrupt, or the CLI's SIGTERM exception) subscribes HiGHS's interrupt callbacks,
which stop the solve at its next iteration, and is then re-raised. The callbacks are
subscribed only then: a Python callback at every iteration would wait for the GIL whenever
another thread runs Python code. :func:`cancel_solves` (called by the CLI's signal
handlers) stops the running solves of every thread the same way and makes later ones
raise :class:`SolveInterrupted`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import sys
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import highspy
import numpy as np

from optev.errors import SolverError
from optev.lp.check import check_lp
from optev.lp.program import LinearProgram, LPArrays


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
    from_basis: bool = False
    """True when a new model started from a basis given by :meth:`HighsSession.start_from`."""

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


STOP_WAIT_S = 10.0
"""How long an interrupted solve waits for HiGHS to stop before leaving it behind, s."""

_CANCEL_ALL = threading.Event()


class SolveInterrupted(KeyboardInterrupt):
    """A solve was stopped by :func:`cancel_solves`."""


_RUNNING: weakref.WeakSet[HighsSession] = weakref.WeakSet()
_RUNNING_LOCK = threading.RLock()  # re-entrant: cancel_solves runs in signal handlers


def cancel_solves() -> None:
    """Stop every running solve of this process at its next iteration; later solves raise
    :class:`SolveInterrupted` until :func:`allow_solves`."""
    _CANCEL_ALL.set()
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for session in running:
        session._interrupt()


def allow_solves() -> None:
    """Undo :func:`cancel_solves`."""
    _CANCEL_ALL.clear()


class _Worker:
    """One daemon thread that runs a session's solves (HiGHS keeps its task scheduler per
    thread, so a session keeps its thread); it ends when the worker is garbage-collected."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=_work, args=(self._jobs,), daemon=True, name="optev-highs").start()
        weakref.finalize(self, self._jobs.put, None)

    def submit(self, fn: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((fn, future))
        return future


def _work(jobs: queue.SimpleQueue[Any]) -> None:
    while (job := jobs.get()) is not None:
        fn, future = job
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed to the waiting thread
            future.set_exception(exc)
        del job, fn, future


_BANNER_LOCK = threading.Lock()
_banner_printed = False
"""Whether this process has created its first ``Highs`` instance (the one that prints)."""


@contextlib.contextmanager
def native_stdout_silenced() -> Iterator[None]:
    """Send what is written to file descriptor 1 (by native code too) to the null device meanwhile.

    What Python had buffered for standard output is flushed first; what C's stdio buffered
    meanwhile is flushed into the null device before descriptor 1 is restored. Without a
    descriptor 1 (or on a system without ``dup``) it does nothing.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no standard output to protect
        yield
        return
    try:
        libc: Any = ctypes.CDLL(None)
    except OSError:  # no C library to flush (not a POSIX system)
        libc = None
    if libc is not None:
        libc.fflush(None)  # what C buffered before belongs to standard output
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        if libc is not None:
            libc.fflush(None)  # whatever native code left in C's stdout buffer goes to the null device
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def new_highs() -> Any:
    """A new ``highspy.Highs`` instance; its start-up banner never reaches standard output.

    The first instance of a process is created with file descriptor 1 sent to the null
    device (:func:`native_stdout_silenced`): HiGHS prints its banner then, whatever its
    options say. Later instances print nothing and are created as they are. Set
    ``output_flag`` on the instance for HiGHS's solver log.
    """
    global _banner_printed
    with _BANNER_LOCK:
        if _banner_printed:
            return highspy.Highs()
        with native_stdout_silenced():
            h = highspy.Highs()
        _banner_printed = True
        return h


class HighsSession:
    """One HiGHS instance reused across solves of models of the same shape."""

    def __init__(self, *, time_limit_s: float | None = None, threads: int | None = None,
                 log: bool = False) -> None:
        self._hs = highspy
        self.h = new_highs()
        self.h.setOptionValue("output_flag", bool(log))
        if time_limit_s is not None:
            self.h.setOptionValue("time_limit", float(time_limit_s))
        if threads is not None:
            self.h.setOptionValue("threads", int(threads))
        self._loaded: LPArrays | None = None
        self._warm = False
        self._from_basis = False
        self._devex = False
        self._last_x: np.ndarray | None = None
        self._stopping = False
        self._worker: _Worker | None = None

    @property
    def loaded(self) -> LPArrays | None:
        """The arrays HiGHS holds (None before the first :meth:`load`)."""
        return self._loaded

    def same_structure(self, arrays: LPArrays) -> bool:
        """Whether :meth:`load` would pass ``arrays`` as an in-place data update."""
        return self._loaded is not None and _same_structure(self._loaded, arrays)

    def load(self, arrays: LPArrays, program: LinearProgram | None = None) -> bool:
        """Give the model to HiGHS; return True if it was an in-place data update.

        Every number is checked first (:func:`optev.lp.check.check_lp`, which names the
        variable or constraint when ``program`` is given): a model HiGHS would reject or
        misread is a :class:`~optev.errors.DataError`, never passed on.
        """
        check_lp(arrays, program)
        prev = self._loaded
        if prev is not None and _same_structure(prev, arrays):
            self._update(prev, arrays)
            self._loaded = arrays
            self._warm = True
            self._from_basis = False
            return True
        m = arrays.matrix
        # the array form of passModel copies each array once (a HighsLp's members are copied
        # on assignment and again when passed): about 5x faster for a window of the ux37 day
        integrality = (np.zeros(arrays.n_cols, np.int32) if arrays.integer is None
                       else np.where(arrays.integer, int(self._hs.HighsVarType.kInteger),
                                     int(self._hs.HighsVarType.kContinuous)).astype(np.int32))

        def f64(v: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(v, dtype=float)

        status = self.h.passModel(arrays.n_cols, arrays.n_rows, int(m.nnz), int(self._hs.MatrixFormat.kColwise),
                                  int(self._hs.ObjSense.kMinimize), float(arrays.offset), f64(arrays.cost),
                                  f64(arrays.col_lower), f64(arrays.col_upper), f64(arrays.row_lower),
                                  f64(arrays.row_upper), m.indptr[:-1].astype(np.int32), m.indices.astype(np.int32),
                                  f64(m.data), integrality)
        if status == self._hs.HighsStatus.kError:
            raise SolverError("HiGHS rejected the model (passModel returned an error) although every number "
                              "passed optev's checks; please report this with the model (--export-mps)")
        self._loaded = arrays
        self._warm = False
        if self._devex:  # a new model from scratch: HiGHS's own choice again
            self.h.setOptionValue("simplex_dual_edge_weight_strategy", CHOOSE)
            self._devex = False
        self._from_basis = False
        self._last_x = None
        return False

    def basis(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Column and row status of HiGHS's current basis (:data:`BASIS_CODES`), or None.

        Read after an optimal solve to start a later model of another structure from it
        (:meth:`start_from`); None otherwise (no optimal solution, or a MIP).
        """
        a = self._loaded
        x = self._last_x
        if a is None or a.integer is not None or x is None or x.size != a.n_cols or not np.isfinite(x).all():
            return None
        # which variables are basic comes from HiGHS as one integer array (its HighsBasis holds a
        # list of enum objects, about 20 ms to read for a 30 000-row window); the bound a
        # nonbasic column or row sits at follows from the solution
        status, basic = self.h.getBasicVariables()
        if status == self._hs.HighsStatus.kError or basic.size != a.n_rows:
            return None
        act = a.matrix @ x
        cols = _side(x, a.col_lower, a.col_upper)
        rows = _side(act, a.row_lower, a.row_upper)
        cols[basic[basic >= 0]] = BASIC
        rows[-1 - basic[basic < 0]] = BASIC
        return cols, rows

    def start_from(self, col_status: np.ndarray, row_status: np.ndarray) -> bool:
        """Make the next :meth:`solve` of the loaded model start from the given basis.

        The statuses — typically mapped from an earlier model's basis
        (:mod:`optev.compose.basis`) — are first made consistent with the loaded model:
        a nonbasic status at an infinite bound moves to the finite one (free columns:
        ``ZERO``), and the number of basic columns and rows is brought to the number of
        rows (missing ones: row slacks made basic, from the last row up; extra ones:
        structural columns made nonbasic, from the last column down). HiGHS repairs a
        singular basis by slacks itself. An LP that starts from a basis is solved without
        presolve.

        Parameters
        ----------
        col_status, row_status : ndarray of int
            :data:`BASIS_CODES` per column and row of the loaded model.

        Returns
        -------
        bool
            True when HiGHS accepted the basis.
        """
        a = self._loaded
        if a is None or a.integer is not None:
            return False
        cols = _consistent(np.asarray(col_status, np.int8).copy(), a.col_lower, a.col_upper)
        rows = _consistent(np.asarray(row_status, np.int8).copy(), a.row_lower, a.row_upper)
        if cols.size != a.n_cols or rows.size != a.n_rows:
            return False
        n_basic = int((cols == BASIC).sum() + (rows == BASIC).sum())
        if n_basic < a.n_rows:
            idx = np.flatnonzero(rows != BASIC)[::-1][:a.n_rows - n_basic]
            rows[idx] = BASIC
        elif n_basic > a.n_rows:
            idx = np.flatnonzero(cols == BASIC)[::-1][:n_basic - a.n_rows]
            cols[idx] = _consistent(np.full(idx.size, LOWER, np.int8), a.col_lower[idx], a.col_upper[idx])
        table = np.array([self._hs.HighsBasisStatus(int(c)) for c in range(len(BASIS_CODES))], dtype=object)
        hb = self._hs.HighsBasis()
        hb.col_status = table[cols].tolist()
        hb.row_status = table[rows].tolist()
        hb.valid = True
        self._from_basis = self.h.setBasis(hb) != self._hs.HighsStatus.kError
        if self._from_basis and not self._devex:
            # Devex pricing: steepest-edge weights would first be computed afresh for the given
            # basis, which costs about a third of a warm-started window solve
            self.h.setOptionValue("simplex_dual_edge_weight_strategy", DEVEX)
            self._devex = True
        return self._from_basis

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
        if _CANCEL_ALL.is_set():
            raise SolveInterrupted("solve cancelled")
        t0 = time.perf_counter()
        run_status = self._run()
        solve_s = time.perf_counter() - t0
        if _CANCEL_ALL.is_set():
            raise SolveInterrupted("solve cancelled")
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
        self._last_x = x if optimal else None
        return SolveOutcome(status, optimal, objective, x, solve_s, iterations, self._warm,
                            n_rows=self._loaded.n_rows, solution=sol, from_basis=self._from_basis)

    def stop_message(self, outcome: SolveOutcome) -> str:
        """Why a solve ended without an optimal solution, in words (for a :class:`SolverError`)."""
        if "time limit" in outcome.status.lower():
            limit = self.h.getOptionValue("time_limit")
            limit = limit[-1] if isinstance(limit, tuple) else limit
            return (f"HiGHS reached its time limit of {float(limit):g} s without an optimal solution "
                    f"(solver time_limit_s of the formulation; {outcome.iterations} iterations)")
        return f"HiGHS stopped with status {outcome.status!r}"

    def _run(self) -> Any:
        """``Highs.run``; from the main thread in the worker thread, stopped by an exception meanwhile."""
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        try:
            if threading.current_thread() is not threading.main_thread():
                return self.h.run()  # signals reach the main thread only; cancel_solves() stops this one
            if self._worker is None:
                self._worker = _Worker()
            future = self._worker.submit(self.h.run)
            try:
                return future.result()
            except BaseException:
                self._interrupt()
                with contextlib.suppress(BaseException):  # a second Ctrl-C: leave HiGHS behind
                    future.result(timeout=STOP_WAIT_S)
                if not future.done():
                    self._stopping = False  # still told to stop: keep the callbacks
                raise
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(self)
            if self._stopping:
                self._stopping = False
                for callback in self._interrupt_callbacks():
                    callback.unsubscribe(_stop_now)

    def _interrupt(self) -> None:
        """Make a running solve stop at its next iteration (from any thread)."""
        if not self._stopping:
            self._stopping = True
            for callback in self._interrupt_callbacks():
                callback.subscribe(_stop_now)

    def _interrupt_callbacks(self) -> tuple[Any, ...]:
        return self.h.cbSimplexInterrupt, self.h.cbIpmInterrupt, self.h.cbMipInterrupt

    def write_mps(self, path: str | Path) -> Path:
        """Write the loaded model as MPS (for solver benchmarking)."""
        p = Path(path)
        if self.h.writeModel(str(p)) == self._hs.HighsStatus.kError:
            raise SolverError(f"HiGHS could not write {p}")
        return p


def _stop_now(event: Any) -> None:
    event.interrupt()


BASIS_CODES = ("lower", "basic", "upper", "zero", "nonbasic")
"""HiGHS basis status codes (``HighsBasisStatus``): nonbasic at the lower bound, basic,
nonbasic at the upper bound, nonbasic free at zero, nonbasic."""
LOWER, BASIC, UPPER, ZERO = 0, 1, 2, 3
CHOOSE, DEVEX = -1, 1
"""Values of HiGHS's ``simplex_dual_edge_weight_strategy`` (its default, and Devex)."""


def _side(value: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Nonbasic status of values: the nearer finite bound (``ZERO`` for free ones)."""
    lo, hi = np.isfinite(lower), np.isfinite(upper)
    nearer_upper = hi & (~lo | (np.abs(value - upper) < np.abs(value - lower)))
    return np.where(nearer_upper, UPPER, np.where(lo, LOWER, ZERO)).astype(np.int8)


def _consistent(status: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Nonbasic statuses moved to a finite bound (``ZERO`` when both are infinite)."""
    lo, hi = np.isfinite(lower), np.isfinite(upper)
    at_bound = np.where(lo, LOWER, np.where(hi, UPPER, ZERO)).astype(np.int8)
    nonbasic = status != BASIC
    bad = nonbasic & (((status == LOWER) & ~lo) | ((status == UPPER) & ~hi) | ((status == ZERO) & (lo | hi))
                      | (status > ZERO))
    status[bad] = at_bound[bad]
    return status


def _same_structure(a: LPArrays, b: LPArrays) -> bool:
    ma, mb = a.matrix, b.matrix
    if ma is mb and a.integer is b.integer:  # LinearProgram.compile_data: the matrix was reused
        return True
    same_int = (a.integer is None and b.integer is None) or (
        a.integer is not None and b.integer is not None and np.array_equal(a.integer, b.integer))
    return (same_int and ma.shape == mb.shape and ma.nnz == mb.nnz and np.array_equal(ma.indptr, mb.indptr)
            and np.array_equal(ma.indices, mb.indices) and np.array_equal(ma.data, mb.data))

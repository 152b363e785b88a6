"""Solve strategies of the controller (:mod:`optev.mpc.controller`, "Solve strategies"): the
protocol a strategy follows and the default, :class:`MonolithicStrategy` (the whole window as one
LP in one HiGHS model kept across calls)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from optev.blocks.window import Window
from optev.compose.formulation import Formulation
from optev.compose.solve import WindowResult, WindowSolver
from optev.solvers.highs import HighsSession, SolveOutcome


@runtime_checkable
class WindowStrategy(Protocol):
    """Solves one window (see the module docstring, "Solve strategies")."""

    def solve(self, window: Window, *, soft_limits: bool | None = None, ac_check: bool = True) -> WindowResult:
        ...


class _RecordingSession(HighsSession):
    """A :class:`HighsSession` that remembers the outcome of every run."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.runs: list[SolveOutcome] = []

    def solve(self) -> SolveOutcome:
        out = super().solve()
        self.runs.append(out)
        return out


class MonolithicStrategy(WindowSolver):
    """The whole window as one LP in one HiGHS model, kept across calls (default strategy).

    Adds to each result's summary ``warm`` (the first HiGHS run of the call was an in-place
    data update), ``mapped_basis`` (it started from the previous window's basis translated
    to a new structure, :mod:`optev.compose.basis`), ``iterations`` and ``highs_runs``
    (loss-correction rounds included). Consecutive calls also carry LinDistFlow's loss
    correction over (:class:`~optev.compose.solve.WindowSolver`).
    """

    def __init__(self, formulation: Formulation, *, log: bool = False) -> None:
        super().__init__(formulation, log=log, drop_redundant_rows=True)  # nobody reads its row duals
        self.session: _RecordingSession = _RecordingSession(time_limit_s=formulation.solver.get("time_limit_s"),
                                         threads=formulation.solver.get("threads"), log=log)

    def solve(self, window: Window, *, soft_limits: bool | None = None, ac_check: bool = True) -> WindowResult:
        self.session.runs = []
        result = super().solve(window, soft_limits=soft_limits, ac_check=ac_check)
        runs = self.session.runs
        result.summary["warm"] = bool(runs[0].warm) if runs else False
        result.summary["mapped_basis"] = bool(runs[0].from_basis) if runs else False
        result.summary["iterations"] = int(sum(r.iterations for r in runs))
        result.summary["highs_runs"] = len(runs)
        return result

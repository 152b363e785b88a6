"""Solvers: HiGHS sessions (persistent, warm re-solves)."""

from optev.solvers.highs import HighsSession, SolveOutcome

__all__ = ["HighsSession", "SolveOutcome"]

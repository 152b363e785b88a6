"""Error hierarchy of optev.

Every error a user can cause derives from :class:`OptevError`; the CLI turns these
into one line on stderr and exit code 2. Anything else is a bug in optev.
"""

from __future__ import annotations


class OptevError(Exception):
    """Base class of every error optev raises on purpose."""


class DataError(OptevError, ValueError):
    """Input data is missing, malformed, inconsistent or in the wrong units.

    The message names the table, the row and the column where possible.
    """

    def __init__(self, message: str, *, table: str | None = None, row: object = None,
                 column: str | None = None) -> None:
        where = []
        if table is not None:
            where.append(f"table '{table}'")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)
        self.table = table
        self.row = row
        self.column = column


class OptionError(DataError):
    """An option of the CLI or the Python API is invalid (:mod:`optev.options`).

    The message starts with the option as the caller spelled it (``--start`` on the
    command line, ``start`` in the Python API).
    """


class FormatError(DataError):
    """A file cannot be read: unknown format, syntax error, unsupported statement."""


class PowerFlowError(OptevError, RuntimeError):
    """The AC power flow did not converge or the network is not solvable by it."""


class InfeasibleError(OptevError, RuntimeError):
    """An optimisation problem has no feasible solution; the message names the likely cause."""


class SolverError(OptevError, RuntimeError):
    """The solver failed for a reason other than infeasibility."""

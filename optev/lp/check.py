"""Last line of defence before the solver: every number of a compiled LP must be usable.

Input values are checked when they are read (the table schemas, :mod:`optev.data.validate`);
this check catches what slips through anyway — a value derived from several inputs that
overflows, a division by a zero that no single column rule forbids — before HiGHS sees it.
HiGHS rejects a model with a NaN anywhere, a matrix coefficient of magnitude
:data:`MAX_COEFFICIENT` or more, or a cost of :data:`INFINITE_VALUE` or more; it reads a
finite bound of that magnitude as infinite, which would silently drop a limit. Such a model
is an input error, reported as :class:`~optev.errors.DataError` naming the variable or
constraint (and its block) where the program is known.
"""

from __future__ import annotations

import numpy as np

from optev.errors import DataError
from optev.lp.program import LinearProgram, LPArrays

MAX_COEFFICIENT = 1e15
"""Largest accepted magnitude of a constraint coefficient (HiGHS's ``large_matrix_value``)."""

INFINITE_VALUE = 1e20
"""HiGHS's infinity: finite bounds and costs must stay below it in magnitude."""


def check_lp(arrays: LPArrays, program: LinearProgram | None = None) -> None:
    """Raise :class:`DataError` unless every cost, bound and coefficient of ``arrays`` is usable.

    Rules: costs and the offset finite with magnitude below :data:`INFINITE_VALUE`;
    column and row bounds not NaN, a lower bound never ``+inf`` and an upper bound never
    ``-inf``, finite bounds below :data:`INFINITE_VALUE` in magnitude; matrix coefficients
    finite with magnitude below :data:`MAX_COEFFICIENT`.

    Parameters
    ----------
    arrays : LPArrays
        The compiled model.
    program : LinearProgram, optional
        The program the arrays come from, to name the family of a bad column or row.
    """
    if not np.isfinite(arrays.offset) or abs(arrays.offset) >= INFINITE_VALUE:
        raise DataError(f"the objective's constant term is {arrays.offset!r}; {_HINT}")
    cost = arrays.cost
    _raise_at(~np.isfinite(cost) | (np.abs(cost) >= INFINITE_VALUE), cost, "cost of variable", "col", program)
    for name, values, bad_inf in (("lower bound of variable", arrays.col_lower, np.inf),
                                  ("upper bound of variable", arrays.col_upper, -np.inf),
                                  ("lower bound of constraint", arrays.row_lower, np.inf),
                                  ("upper bound of constraint", arrays.row_upper, -np.inf)):
        with np.errstate(invalid="ignore"):
            bad = np.isnan(values) | (values == bad_inf) | (np.isfinite(values) & (np.abs(values) >= INFINITE_VALUE))
        kind = "col" if "variable" in name else "row"
        _raise_at(bad, values, name, kind, program, arrays.row_index)
    data = arrays.matrix.data
    bad = ~np.isfinite(data) | (np.abs(data) >= MAX_COEFFICIENT)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        col = int(np.searchsorted(arrays.matrix.indptr, k, side="right") - 1)
        row = int(arrays.matrix.indices[k])
        raise DataError(f"coefficient {float(data[k])!r} of {_name('col', col, program)} in "
                        f"{_name('row', row, program, arrays.row_index)}; {_HINT}")


_HINT = "an input value is missing, not finite or implausibly large (check the instance's tables)"


def _raise_at(bad: np.ndarray, values: np.ndarray, what: str, kind: str, program: LinearProgram | None,
              row_index: np.ndarray | None = None) -> None:
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what} {_name(kind, pos, program, row_index)} is {float(values[pos])!r}; {_HINT}")


def _name(kind: str, pos: int, program: LinearProgram | None, row_index: np.ndarray | None = None) -> str:
    """``family[index] (block b)`` of a column or row, or its position without the program."""
    if program is None:
        return f"{'column' if kind == 'col' else 'row'} {pos}"
    if kind == "row" and row_index is not None:
        pos = int(row_index[pos])
    families = program.variables if kind == "col" else program.constraints
    for fam in families.values():
        if fam.start <= pos < fam.start + fam.size:
            idx = np.unravel_index(pos - fam.start, fam.shape)
            return f"{fam.name}[{','.join(str(int(i)) for i in idx)}] (block {fam.block})"
    return f"{'column' if kind == 'col' else 'row'} {pos}"

"""Vectorised LP algebra: variable and constraint families declared once, compiled to
solver arrays or rendered as Pyomo blocks."""

from optev.lp.expr import LinExpr, VarArray, as_expr, group_sum, scatter, stack
from optev.lp.program import INF, ConFamily, LinearProgram, LPArrays, ObjectiveTerm, VarFamily

__all__ = ["INF", "ConFamily", "LPArrays", "LinExpr", "LinearProgram", "ObjectiveTerm", "VarArray", "VarFamily",
           "as_expr", "group_sum", "scatter", "stack"]

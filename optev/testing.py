"""Helpers of optev's tests: the named tolerances and the invariants of a solved window.

The tolerances live in :mod:`optev.tolerances` (every accepted numerical error of optev, with
its unit and reason); the ones the tests compare with are re-exported here, so a test imports
them from ``optev.testing``. :func:`check_invariants` asserts the invariants of
:func:`optev.compose.invariants.check_window`. Production code does not import this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optev.compose.invariants import InvariantViolation, check_window
from optev.tolerances import (  # re-exported for the tests
    ABS_TOL_KW as ABS_TOL_KW, ABS_TOL_PRICE as ABS_TOL_PRICE, COST_ATOL as COST_ATOL,
    DAY_ENERGY_ATOL_KWH as DAY_ENERGY_ATOL_KWH, ENERGY_BALANCE_ATOL_KWH as ENERGY_BALANCE_ATOL_KWH,
    LDF_AC_VM_ATOL_PU as LDF_AC_VM_ATOL_PU, LIMIT_ATOL_KW as LIMIT_ATOL_KW, LOSS_RTOL as LOSS_RTOL,
    LP_ATOL as LP_ATOL, LP_FEAS_ATOL_KW as LP_FEAS_ATOL_KW,
    MPC_SHORTFALL_QUANTUM_STEPS as MPC_SHORTFALL_QUANTUM_STEPS, OBJECTIVE_RTOL as OBJECTIVE_RTOL,
    POWER_BALANCE_ATOL_KW as POWER_BALANCE_ATOL_KW, ROUTE_LENGTH_ATOL_M as ROUTE_LENGTH_ATOL_M,
    ROUTE_TIME_RTOL as ROUTE_TIME_RTOL, RTOL_EXACT as RTOL_EXACT, SAMPLE_SHARE_ATOL as SAMPLE_SHARE_ATOL,
    SERIES_ENERGY_RTOL as SERIES_ENERGY_RTOL, SERIES_MEAN_ATOL as SERIES_MEAN_ATOL,
    SETPOINT_GRID_ATOL as SETPOINT_GRID_ATOL, SETPOINT_TRACKING_QUANTA as SETPOINT_TRACKING_QUANTA,
    SHORTFALL_ATOL_KWH as SHORTFALL_ATOL_KWH, SIM_ENERGY_ATOL_KWH as SIM_ENERGY_ATOL_KWH,
    SIM_TIME_ATOL_S as SIM_TIME_ATOL_S, SOC_ATOL as SOC_ATOL, SUM_ATOL_KW as SUM_ATOL_KW, VM_ATOL_PU as VM_ATOL_PU,
    VM_EXACT_ATOL_PU as VM_EXACT_ATOL_PU,
)

if TYPE_CHECKING:
    from optev.compose.solve import WindowResult


def check_invariants(result: WindowResult) -> None:
    """Assert the invariants every solved window must satisfy (design.md, "Testing").

    The checks are :func:`optev.compose.invariants.check_window` (see there for the list).

    Raises
    ------
    AssertionError
        Naming the invariant, how many items violate it, and the first few (session or
        station id, time, value, limit).
    """
    try:
        check_window(result)
    except InvariantViolation as exc:
        raise AssertionError(str(exc)) from None

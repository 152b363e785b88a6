"""Checks layer: power-flow results + feeder limits → a tidy violations table (R7.1.3).

Kinds of violation and their units:

=======================  ==========================================  =======
kind                     condition                                   unit
=======================  ==========================================  =======
``bus_voltage_low``      ``vm_pu < v_min_pu − tol_v``                p.u.
``bus_voltage_high``     ``vm_pu > v_max_pu + tol_v``                p.u.
``line_current``         ``current_a > ampacity_a · (1 + tol_i)``    A
``transformer_loading``  ``|S_hv| > sn_kva · (1 + tol_i)``           p.u. of sn_kva
``not_converged``        the step's power flow did not converge      —
=======================  ==========================================  =======
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from optev.data.feeder import Feeder
from optev.powerflow.result import PowerFlowResult
from optev.tolerances import LOADING_TOL as LOADING_TOL
from optev.tolerances import VOLTAGE_TOL_PU as VOLTAGE_TOL_PU

VIOLATION_COLUMNS = ("time", "kind", "element_id", "value", "limit", "excess", "unit")


def violations(result: PowerFlowResult, feeder: Feeder, *, tol_v: float = VOLTAGE_TOL_PU,
               tol_i: float = LOADING_TOL) -> pd.DataFrame:
    """List every limit violation of a power-flow result.

    Parameters
    ----------
    result : PowerFlowResult
        Output of :func:`optev.powerflow.run_powerflow` on ``feeder``.
    feeder : Feeder
        Supplies the limits (bus v_min/v_max, line ampacity, transformer rating).
    tol_v, tol_i : float
        Margins on voltage (p.u.) and on current/loading (relative).

    Returns
    -------
    DataFrame
        Columns ``time, kind, element_id, value, limit, excess, unit``; one row per
        violated limit and step, empty (with these columns) when all limits are met.
    """
    times = np.asarray(result.index) if result.index is not None else np.arange(result.steps)
    parts: list[pd.DataFrame] = []

    def collect(kind: str, mask: np.ndarray, values: np.ndarray, limits: np.ndarray, ids: list[str],
                unit: str, sign: float) -> None:
        step, col = np.nonzero(mask)
        if step.size:
            val = values[step, col]
            lim = np.broadcast_to(limits, values.shape)[step, col]
            parts.append(pd.DataFrame({
                "time": times[step], "kind": kind, "element_id": np.asarray(ids, dtype=object)[col],
                "value": val, "limit": lim, "excess": sign * (val - lim), "unit": unit}))

    ok = result.converged
    vm = np.where(ok[:, None], result.vm_pu, np.nan)
    vmin = feeder.buses["v_min_pu"].to_numpy(float)[None, :]
    vmax = feeder.buses["v_max_pu"].to_numpy(float)[None, :]
    with np.errstate(invalid="ignore"):
        collect("bus_voltage_low", vm < vmin - tol_v, vm, vmin, result.bus_ids, "p.u.", -1.0)
        collect("bus_voltage_high", vm > vmax + tol_v, vm, vmax, result.bus_ids, "p.u.", 1.0)
        amp = feeder.lines["ampacity_a"].to_numpy(float)[None, :]
        cur = np.where(ok[:, None], result.line_current_a, np.nan)
        collect("line_current", cur > amp * (1 + tol_i), cur, amp, result.line_ids, "A", 1.0)
        load = np.where(ok[:, None], result.trafo_loading, np.nan)
        collect("transformer_loading", load > 1 + tol_i, load, np.ones((1, load.shape[1])),
                result.transformer_ids, "p.u.", 1.0)
    bad = np.flatnonzero(~ok)
    if bad.size:
        parts.append(pd.DataFrame({"time": times[bad], "kind": "not_converged", "element_id": "",
                                   "value": np.nan, "limit": np.nan, "excess": np.nan, "unit": ""}))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("kind", "element_id", "unit") else float)
                             for c in VIOLATION_COLUMNS})
    return pd.concat(parts, ignore_index=True)[list(VIOLATION_COLUMNS)]


def count_by_kind(table: pd.DataFrame) -> dict[str, int]:
    """Number of violations per kind (for summaries)."""
    return {str(k): int(v) for k, v in table["kind"].value_counts().sort_index().items()}

"""Batched AC power flow on radial feeders: backward/forward sweep over many time steps.

Constant-PQ loads, shunt admittances, slack voltage set points; every time step of a
batch is solved at once (see :mod:`optev.powerflow.network` for the equations). The
sweep is a fixed-point iteration on the bus voltages; a step has converged when the
largest voltage change of an iteration is below ``tol`` (p.u.). Non-convergence raises
:class:`~optev.errors.PowerFlowError` unless ``raise_on_failure=False``, in which case
the result carries ``converged = False`` for those steps — never a silent wrong answer.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pandas as pd

from optev.data.feeder import Feeder
from optev.errors import DataError, PowerFlowError
from optev.powerflow.kernels import sweep_batch
from optev.powerflow.network import RadialNetwork, compile_network
from optev.powerflow.result import PowerFlowResult
from optev.tolerances import POWERFLOW_TOL_PU

DEFAULT_TOL_PU = POWERFLOW_TOL_PU
"""Convergence tolerance on the voltage update, p.u. (:data:`optev.tolerances.POWERFLOW_TOL_PU`)."""

DEFAULT_MAX_ITER = 100
COLLAPSE_VM_PU = 0.2
"""A voltage below this magnitude means the sweep is diverging (voltage collapse)."""


def _as_matrix(values: Any, feeder: Feeder, name: str) -> tuple[np.ndarray, pd.Index | None]:
    """(steps × buses) float array in the feeder's bus order, plus the time index if given."""
    bus_ids = feeder.bus_ids
    if isinstance(values, pd.Series):
        values = values.to_frame().T
    if isinstance(values, pd.DataFrame):
        cols = [str(c) for c in values.columns]
        unknown = [c for c in cols if c not in set(bus_ids)]
        if unknown:
            raise DataError(f"unknown bus {unknown[0]!r}", table=name, column=unknown[0])
        missing = [b for b in bus_ids if b not in set(cols)]
        if missing:
            raise DataError(f"no column for bus(es) {missing[:5]}; give every bus of the feeder "
                            "(0 where there is no load)", table=name)
        frame = values.copy()
        frame.columns = cols
        arr = frame[bus_ids].to_numpy(dtype=float)
        index: pd.Index | None = values.index
    else:
        arr = np.asarray(values, dtype=float)
        index = None
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != len(bus_ids):
            raise DataError(f"shape {np.shape(values)} does not match (steps × {len(bus_ids)} buses)",
                            table=name)
    if not np.isfinite(arr).all():
        step, col = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(f"non-finite value at step {step}", table=name, column=bus_ids[col])
    return arr, index


def run_powerflow(feeder: Feeder, p_kw: Any = None, q_kvar: Any = None, *, load_scale: float = 1.0,
                  tol: float = DEFAULT_TOL_PU, max_iter: int = DEFAULT_MAX_ITER,
                  raise_on_failure: bool = True, network: RadialNetwork | None = None,
                  method: str = "auto") -> PowerFlowResult:
    """Solve the AC power flow of a radial feeder for one or many time steps.

    Parameters
    ----------
    feeder : Feeder
        The network; must be radial with one substation per connected component.
    p_kw, q_kvar : array (steps × buses) or DataFrame, optional
        Net active and reactive load at each bus (consumption positive, generation
        negative), kW and kvar. Arrays are in the feeder's bus order; DataFrame columns
        are bus ids (every bus) and their index becomes the result's time index. When
        both are omitted, the feeder's own nominal loads are used (one step); when only
        ``p_kw`` is given, ``q_kvar`` is zero.
    load_scale : float
        Factor applied to all loads.
    tol : float
        Convergence tolerance on the voltage update, p.u.
    max_iter : int
        Maximum number of sweeps.
    raise_on_failure : bool
        Raise :class:`PowerFlowError` if any step does not converge (default). When False
        the result reports ``converged`` per step and non-converged steps hold NaN.
    network : RadialNetwork, optional
        A precompiled network (from :func:`compile_network`) to skip compilation.
    method : {"auto", "numba", "scipy"}
        ``numba``: compiled scalar sweep, parallel over steps (fastest; the default when
        numba is installed). ``scipy``: the same iteration as two sparse triangular solves
        per sweep for all steps at once (pure NumPy/SciPy). Both give the same answer.

    Returns
    -------
    PowerFlowResult
    """
    if p_kw is None and q_kvar is None:
        p = feeder.buses["p_load_kw"].to_numpy(float)[None, :]
        q = feeder.buses["q_load_kvar"].to_numpy(float)[None, :]
        index = None
    else:
        if p_kw is None:
            raise DataError("q_kvar given without p_kw", table="p_kw")
        p, index = _as_matrix(p_kw, feeder, "p_kw")
        if q_kvar is None:
            q = np.zeros_like(p)
        else:
            q, _ = _as_matrix(q_kvar, feeder, "q_kvar")
            if q.shape != p.shape:
                raise DataError(f"shape {q.shape} differs from p_kw's {p.shape}", table="q_kvar")
    if not np.isfinite(load_scale):
        raise DataError(f"load_scale must be finite, got {load_scale!r}")
    net = network if network is not None else compile_network(feeder)
    # steps × buses, p.u.; the same numbers as (p + 1j*q) * factor without complex temporaries
    factor = load_scale / (1e3 * net.base_mva)
    s_load = np.empty(p.shape, dtype=complex)
    np.multiply(p, factor, out=s_load.real)
    np.multiply(q, factor, out=s_load.imag)
    if method == "auto":
        method = "numba" if _numba_available() else "scipy"
    if method == "numba":
        v, i_br, iterations, converged = _sweep_numba(net, s_load, tol, max_iter)
    elif method == "scipy":
        v, i_br, iterations, converged = _sweep(net, s_load.T, tol, max_iter)
    else:
        raise DataError(f"unknown power-flow method {method!r}; valid: 'auto', 'numba', 'scipy'")
    if raise_on_failure and not converged.all():
        bad = np.flatnonzero(~converged)
        raise PowerFlowError(
            f"power flow did not converge in {max_iter} iterations at {bad.size} of {converged.size} step(s) "
            f"(first: step {int(bad[0])}); the load is probably beyond the feeder's loadability")
    return PowerFlowResult.build(feeder, net, v, i_br, s_load, iterations, converged, index)


def _numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


def _sweep_numba(net: RadialNetwork, s_load: np.ndarray, tol: float, max_iter: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_steps = s_load.shape[0]
    v_init = np.ones(net.n_bus, dtype=complex)
    v_init[net.root] = net.v_root
    v = np.empty((n_steps, net.n_bus), dtype=complex)
    i_br = np.empty((n_steps, net.n_branch), dtype=complex)
    iterations = np.zeros(n_steps, dtype=np.int64)
    converged = np.zeros(n_steps, dtype=np.bool_)
    sweep_batch(net.parent, net.child, net.tap, net.z, net.y_shunt, v_init, np.ascontiguousarray(s_load),
                float(tol), int(max_iter), COLLAPSE_VM_PU, v, i_br, iterations, converged)
    return v, i_br, iterations, converged


def _sweep(net: RadialNetwork, s_load: np.ndarray, tol: float, max_iter: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_steps = s_load.shape[1]
    v = np.ones((net.n_bus, n_steps), dtype=complex)
    v[net.root] = net.v_root[:, None]
    leaves_root = np.flatnonzero(net.root_of_branch >= 0)
    r0 = (net.v_root[net.root_of_branch[leaves_root]] / net.tap[leaves_root])[:, None]
    z = net.z[:, None]
    y_sh = net.y_shunt[:, None]
    child = net.child
    iterations = np.zeros(n_steps, dtype=np.int64)
    done = np.zeros(n_steps, dtype=bool)
    failed = np.zeros(n_steps, dtype=bool)
    i_br = np.zeros((net.n_branch, n_steps), dtype=complex)
    active = np.arange(n_steps)
    for it in range(1, max_iter + 1):
        va = v[:, active]
        i_load = np.conj(s_load[:, active] / va) + y_sh * va
        ib = _solve(net, i_load[child], trans="N")
        rhs = -z * ib
        rhs[leaves_root] += r0
        v_child = _solve(net, rhs, trans="T")
        dv = np.abs(v_child - va[child]).max(axis=0) if child.size else np.zeros(active.size)
        va[child] = v_child
        v[:, active] = va
        i_br[:, active] = ib
        bad = ~np.isfinite(dv) | (np.abs(v_child).min(axis=0, initial=np.inf) < COLLAPSE_VM_PU)
        ok = (dv < tol) & ~bad
        iterations[active[ok]] = it
        done[active[ok]] = True
        failed[active[bad]] = True
        active = active[~ok & ~bad]
        if active.size == 0:
            break
    iterations[active] = max_iter
    failed[active] = True
    v[:, failed] = np.nan
    i_br[:, failed] = np.nan
    return v.T, i_br.T, iterations, done & ~failed


def _solve(net: RadialNetwork, rhs: np.ndarray, trans: str) -> np.ndarray:
    """Solve ``(I − A) x = rhs`` (trans="N") or ``(I − A)ᵀ x = rhs`` (trans="T") for complex rhs."""
    if rhs.shape[0] == 0:
        return rhs.copy()
    k = rhs.shape[1]
    stacked = np.empty((rhs.shape[0], 2 * k), order="F")
    stacked[:, :k] = rhs.real
    stacked[:, k:] = rhs.imag
    out = net.factor.solve(stacked, trans=trans)  # type: ignore[attr-defined]
    return out[:, :k] + 1j * out[:, k:]

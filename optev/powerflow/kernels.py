"""Compiled backward/forward sweep (numba), one time step per parallel task.

The same fixed-point iteration as the SciPy path in :mod:`optev.powerflow.sweep`
(equations in :mod:`optev.powerflow.network`), written as scalar loops over branches
so that a 69-bus step costs a few microseconds and a 10,000-bus step a few
milliseconds. Branches are in breadth-first order: the reverse order visits children
before parents (backward sweep), the forward order parents before children.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange

PARALLEL_MIN_WORK = 1_000_000
"""Steps × buses below which the single-threaded kernels are used. Small batches gain
little from a second thread, and a parallel section stalls whenever another process
holds a core (a 2 ms call then takes 20–30 ms); see benchmarks/README.md."""


def _sweep_batch(parent: np.ndarray, child: np.ndarray, tap: np.ndarray, z: np.ndarray, y_shunt: np.ndarray,
                v_init: np.ndarray, s_load: np.ndarray, tol: float, max_iter: int, collapse: float,
                v_out: np.ndarray, ibr_out: np.ndarray, iterations: np.ndarray, converged: np.ndarray) -> None:
    """Solve every step of ``s_load`` (steps × buses, p.u.) in place.

    ``v_out`` (steps × buses) and ``ibr_out`` (steps × branches) receive voltages and
    series currents; ``iterations`` and ``converged`` one entry per step. ``v_init``
    holds the start voltage of every bus (the slack set points at the roots).
    """
    n_steps = s_load.shape[0]
    n_bus = v_init.size
    m = child.size
    inv_tap = 1.0 / tap
    tol2 = tol * tol
    collapse2 = collapse * collapse
    for s in prange(n_steps):
        v = v_out[s]
        ib = ibr_out[s]
        for k in range(n_bus):
            v[k] = v_init[k]
        acc = np.empty(n_bus, dtype=np.complex128)
        converged[s] = False
        iterations[s] = max_iter
        for it in range(1, max_iter + 1):
            for k in range(n_bus):
                # conj(S/V) = (p·a + q·b + j(p·b − q·a)) / |V|², with S = p + jq, V = a + jb
                a = v[k].real
                bb = v[k].imag
                p = s_load[s, k].real
                q = s_load[s, k].imag
                inv = 1.0 / (a * a + bb * bb)
                acc[k] = complex((p * a + q * bb) * inv, (p * bb - q * a) * inv) + y_shunt[k] * v[k]
            for b in range(m - 1, -1, -1):
                cur = acc[child[b]]
                ib[b] = cur
                acc[parent[b]] += cur * inv_tap[b]
            dv2 = 0.0
            vmin2 = np.inf
            for b in range(m):
                c = child[b]
                vn = v[parent[b]] * inv_tap[b] - z[b] * ib[b]
                d = vn - v[c]
                d2 = d.real * d.real + d.imag * d.imag
                if d2 > dv2 or d2 != d2:
                    dv2 = d2
                a2 = vn.real * vn.real + vn.imag * vn.imag
                if a2 < vmin2:
                    vmin2 = a2
                v[c] = vn
            if not (dv2 == dv2) or vmin2 < collapse2:
                iterations[s] = it
                break
            if dv2 < tol2:
                iterations[s] = it
                converged[s] = True
                break
        if not converged[s]:
            for k in range(n_bus):
                v[k] = np.nan
            for b in range(m):
                ib[b] = np.nan


def _branch_quantities(parent: np.ndarray, child: np.ndarray, tap: np.ndarray, y_half: np.ndarray,
                      reverse: np.ndarray, i_base_child: np.ndarray, v: np.ndarray, ibr: np.ndarray,
                      s_from: np.ndarray, i_amp: np.ndarray, loss: np.ndarray, vm: np.ndarray,
                      va_deg: np.ndarray) -> None:
    """Per step: power entering each branch at its source from-end, current (A), losses, |V|, ∠V.

    With ``y_h`` the half line-charging admittance, the power entering a branch is
    ``V_p·conj(I/tap) + conj(y_h)|V_p|²`` at the parent end and
    ``−V_c·conj(I) + conj(y_h)|V_c|²`` at the child end; losses are their sum over branches.
    """
    n_steps, n_bus = v.shape
    m = child.size
    rad2deg = 180.0 / np.pi
    for s in prange(n_steps):
        total = 0.0 + 0.0j
        for b in range(m):
            vp = v[s, parent[b]]
            vc = v[s, child[b]]
            cur = ibr[s, b]
            yh = np.conj(y_half[b])
            s_par = vp * np.conj(cur / tap[b]) + yh * (vp.real * vp.real + vp.imag * vp.imag)
            s_chi = -vc * np.conj(cur) + yh * (vc.real * vc.real + vc.imag * vc.imag)
            total += s_par + s_chi
            s_from[s, b] = s_chi if reverse[b] else s_par
            i_amp[s, b] = abs(cur) * i_base_child[b]
        loss[s] = total
        for k in range(n_bus):
            vm[s, k] = abs(v[s, k])
            va_deg[s, k] = np.arctan2(v[s, k].imag, v[s, k].real) * rad2deg


sweep_batch_parallel = njit(cache=True, parallel=True)(_sweep_batch)
sweep_batch_serial = njit(cache=True)(_sweep_batch)
branch_quantities_parallel = njit(cache=True, parallel=True)(_branch_quantities)
branch_quantities_serial = njit(cache=True)(_branch_quantities)


def sweep_batch(*args: Any) -> None:
    """:func:`_sweep_batch` compiled, parallel over steps for large batches only (the
    arguments of :func:`_sweep_batch`, passed through)."""
    s_load = args[6]
    work = s_load.shape[0] * s_load.shape[1]
    (sweep_batch_parallel if work >= PARALLEL_MIN_WORK else sweep_batch_serial)(*args)


def branch_quantities(*args: Any) -> None:
    """:func:`_branch_quantities` compiled, parallel over steps for large batches only (the
    arguments of :func:`_branch_quantities`, passed through)."""
    v = args[6]
    work = v.shape[0] * v.shape[1]
    (branch_quantities_parallel if work >= PARALLEL_MIN_WORK else branch_quantities_serial)(*args)

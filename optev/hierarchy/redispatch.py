r"""Re-dispatch of a region's grid and DER against the station level's plan.

The region LP (:func:`optev.hierarchy.worker.solve_region`, step 1) dispatches the
substation import, the generators, PV/wind curtailment and the storage together with the
stations' flexibility envelopes. The station level (step 2) then solves every station's
exact per-EV problem; where the envelope's relaxation let the region plan less power than
the EVs' own departure needs require, the stations draw more than the region planned
(they pay the formulation's ``slack_penalty`` beyond their allowance, but only hard
constraints of their own EVs can push them there). Left alone, that extra power would all
come from the substation — above its import limit if the region LP had it binding — while
the generators stay at the region LP's output.

:func:`redispatch` closes that gap: the region's formulation is solved once more on the
same window *without EVs*, the station level's net station power (and reactive power) added
to the conventional load at each station's bus. Everything else — import and export limits
and prices, generators, PV/wind, storage, the LinDistFlow network with its voltage and line
limits and the loss correction — is the region LP's own, so the grid and the DER are
dispatched optimally for the load the EVs will really draw:

.. math::
    \min_{x} \; c^\top x \quad \text{s.t. the region's constraints with}\quad
    P^{load}_{b,t} \leftarrow P^{load}_{b,t} + \sum_{s \in b} P^{st}_{s,t},\qquad
    Q^{load}_{b,t} \leftarrow Q^{load}_{b,t} - \sum_{s \in b} Q^{st}_{s,t}

(:math:`P^{st}` the station level's net station power, charge positive, kW;
:math:`Q^{st}` the stations' reactive injection, kvar). The LP has no EV or station
variables, so it is small (network and DER only).

If that LP is infeasible with hard limits (the EV load cannot be served within the import
limit and the generators' capacity), it is solved with the formulation's soft limits,
which minimise the excess at the ``slack_penalty`` price; if that fails too, the region
plan's dispatch is kept. The outcome is reported as ``status``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from optev.blocks.window import Window, take_rows
from optev.compose.formulation import Formulation
from optev.compose.solve import WindowResult, WindowSolver
from optev.errors import OptevError
from optev.hierarchy.services import grid_services

STATUSES = ("optimal", "soft_limits", "failed")
"""Outcomes of :func:`redispatch`: hard limits met, soft limits used, no dispatch found."""


def _without_evs(window: Window, station_kw: np.ndarray, station_q_kvar: np.ndarray | None) -> Window:
    """``window`` with no sessions and no stations, their power added to the bus loads."""
    none = np.zeros(0, dtype=np.int64)
    load_p = np.array(window.load_p_kw, float, copy=True)
    load_q = np.array(window.load_q_kvar, float, copy=True)
    st = window.stations
    on_bus = np.flatnonzero(st.bus >= 0)
    if on_bus.size and load_p.shape[1]:
        np.add.at(load_p.T, st.bus[on_bus], np.asarray(station_kw, float)[on_bus])
        if station_q_kvar is not None:
            np.add.at(load_q.T, st.bus[on_bus], -np.asarray(station_q_kvar, float)[on_bus])
    extra = dict(window.extra)
    if extra.get("service_limits"):  # the stations' power is fixed: only grid-side services remain
        extra["service_limits"] = grid_services(extra["service_limits"])
    return dataclasses.replace(window, evs=take_rows(window.evs, none), stations=take_rows(st, none), load_p_kw=load_p,
                               load_q_kvar=load_q, extra=extra)


def redispatch(formulation: Formulation, window: Window, station_kw: np.ndarray,
               station_q_kvar: np.ndarray | None = None, *, soft_limits: bool = False,
               ac_check: bool = True) -> tuple[WindowResult | None, str, str]:
    """Re-solve the region's grid and DER for the station level's plan (module docstring).

    Parameters
    ----------
    formulation : Formulation
        The region formulation (its EV and station blocks see an empty fleet).
    window : Window
        The region's window (stations on its buses; conventional load, DER availability,
        storage energies in ``extra``).
    station_kw : ndarray (n_st, T)
        Net station power of the station level's plan, charge positive, kW.
    station_q_kvar : ndarray (n_st, T), optional
        Reactive power the stations inject, kvar.
    soft_limits : bool
        Start with soft limits (the region LP's own mode).
    ac_check : bool
        Run the AC check of the result (:class:`~optev.compose.solve.WindowSolver`).

    Returns
    -------
    result : WindowResult or None
        The re-dispatch (its ``der``, ``storage``, ``bus`` and ``line`` tables, its
        import ``grid_import_kw``, AC check and violations); None when ``status`` is
        ``"failed"``.
    status : str
        One of :data:`STATUSES`.
    message : str
        Why hard limits were not met ("" when they were).
    """
    w = _without_evs(window, station_kw, station_q_kvar)
    solver = WindowSolver(formulation)
    first = bool(soft_limits)
    try:
        return solver.solve(w, soft_limits=first, ac_check=ac_check), ("soft_limits" if first else "optimal"), ""
    except OptevError as exc:
        if first:
            return None, "failed", str(exc)
        try:
            return solver.solve(w, soft_limits=True, ac_check=ac_check), "soft_limits", str(exc)
        except OptevError as exc2:
            return None, "failed", f"{exc}; with soft limits: {exc2}"

"""Base-load adequacy of a feeder: can it carry its conventional load without any EV?

Before any EV result on a grid means something, the grid must carry its own base load.
:func:`grid_adequacy` runs the AC power flow (:func:`optev.powerflow.run_powerflow`,
batched over all steps) of the instance's base load with its DER *as dispatched with no
EVs*, counts what breaks a limit, and finds the loadability margin.

Injections at bus ``b`` and step ``t`` (kW, kvar; consumption positive)::

    p[t, b] = λ · P_load[t, b] − P_pv,avail[t, b] − P_wind,avail[t, b] − Σ_g∈b p_min,g
    q[t, b] = λ · Q_load[t, b]

* ``P_load``, ``Q_load``: the conventional load at the step (``load_p_kw`` /
  ``load_q_kvar`` time series, the ``buses`` table's nominal load where a bus has no
  series; a MATPOWER file without series: its one snapshot), see
  :mod:`optev.data.baseload`.
* PV and wind at their available power (``availability`` × ``p_rated_kw``), no reactive
  power: free energy that nothing curtails when there is no EV.
* Dispatchable generators at their minimum output ``p_min_kw`` (must-run), no reactive
  power. They are **not** counted on beyond that: how much they produce is a decision
  of the optimiser, made together with the EV schedule. An adequacy check that let them
  run would hide a feeder that cannot carry its load from the substation — and its
  verdict would depend on a dispatch nobody has decided yet.
* Storage idle.

A (bus, step) is *beyond limits* when its voltage is outside ``[v_min_pu, v_max_pu]``,
a (line or transformer, step) when its current or apparent power is above its rating —
exactly the rows of :func:`optev.powerflow.violations` with its default tolerances, the
table every AC check of a solve or run reports. A step whose power flow does not
converge counts once (``not_converged``). The base load is *carried* when there is none
of these.

Loadability (``grid_loadability``): the largest uniform factor λ on every base load (P
and Q; DER held as above) such that every step converges with all voltages and
loadings within limits::

    λ* = max { λ ∈ [0, LOADABILITY_MAX] : violations(PF(λ)) = ∅ }

found by bisection, each evaluation one batched power flow over all steps: from λ = 1
the bracket doubles up to :data:`LOADABILITY_MAX` or halves down to
:data:`LOADABILITY_MIN`, then shrinks until ``hi − lo ≤ LOADABILITY_REL_TOL · lo``;
``lo`` is reported (within limits; ``lo · (1 + tol)`` is not, assuming limits are
breached monotonically in λ, as they are for a load-only feeder). λ* < 1 exactly when
the base load is not carried; 0 when no factor down to :data:`LOADABILITY_MIN` stays
within limits (for example a substation set point outside a bus's limits); at
:data:`LOADABILITY_MAX` it is a lower bound (``loadability_capped``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from optev.data.baseload import base_load, renewable_availability, renewables_per_bus
from optev.data.feeder import Feeder
from optev.data.instance import Instance
from optev.errors import DataError, PowerFlowError
from optev.powerflow.checks import count_by_kind, violations
from optev.powerflow.network import RadialNetwork, compile_network
from optev.powerflow.result import PowerFlowResult
from optev.powerflow.sweep import run_powerflow
from optev.tolerances import LOADABILITY_REL_TOL as LOADABILITY_REL_TOL

LOADABILITY_MAX = 10.0
"""Largest load factor tried; a feeder within limits there reports this (a lower bound)."""
LOADABILITY_MIN = 2.0 ** -10
"""Smallest load factor tried when the base load is not carried; below it the loadability is 0."""
TIMES_LISTED = 10
"""Non-converged steps listed by time (all are counted)."""

VOLTAGE_KINDS = ("bus_voltage_low", "bus_voltage_high")
BRANCH_KINDS = ("line_current", "transformer_loading")


@dataclass(frozen=True)
class GridAdequacy:
    """Base-load adequacy of a feeder (module docstring).

    Attributes
    ----------
    steps : int
        Steps checked.
    vm_min_pu, vm_max_pu : float or None
        Extreme bus voltages over the converged steps (None when none converged), p.u.;
        ``vm_min_bus``, ``vm_min_time``, ``vm_max_bus``, ``vm_max_time`` say where and when.
    loading_max : float or None
        Highest loading of a line (current / ampacity) or transformer (|S| / sn_kva) over
        the converged steps, fraction of its rating; None when no element has a finite
        rating. ``loading_element`` (line or transformer id), ``loading_time``.
    nonconverged_steps : int
        Steps whose power flow did not converge; ``nonconverged_times`` the first
        :data:`TIMES_LISTED` of them.
    bus_steps_beyond_limits : int
        (bus, step) pairs outside the bus's voltage limits, converged steps.
    line_steps_beyond_limits : int
        (line or transformer, step) pairs above the element's rating, converged steps.
    loadability : float
        Largest uniform factor on the base load within limits (module docstring).
    loadability_capped : bool
        True when within limits at :data:`LOADABILITY_MAX` (``loadability`` is then a lower bound).
    der_kw_max : float
        Largest total DER output counted on in a step (available PV and wind plus the
        generators' must-run output), kW.
    times : DatetimeIndex or None
        The steps (None: the snapshot of a feeder without time series).
    """

    steps: int
    vm_min_pu: float | None
    vm_min_bus: str | None
    vm_min_time: pd.Timestamp | None
    vm_max_pu: float | None
    vm_max_bus: str | None
    vm_max_time: pd.Timestamp | None
    loading_max: float | None
    loading_element: str | None
    loading_time: pd.Timestamp | None
    nonconverged_steps: int
    nonconverged_times: list[pd.Timestamp]
    bus_steps_beyond_limits: int
    line_steps_beyond_limits: int
    loadability: float
    loadability_capped: bool
    der_kw_max: float
    times: pd.DatetimeIndex | None = field(default=None, repr=False)

    @property
    def grid_base_violations(self) -> dict[str, int]:
        """``bus_steps``, ``line_steps``, ``nonconverged_steps`` and their ``total``."""
        out = {"bus_steps": self.bus_steps_beyond_limits, "line_steps": self.line_steps_beyond_limits,
               "nonconverged_steps": self.nonconverged_steps}
        return {**out, "total": sum(out.values())}

    @property
    def carried(self) -> bool:
        """True when every step converges within all limits."""
        return self.grid_base_violations["total"] == 0

    def _when(self, t: pd.Timestamp | None) -> str:
        if t is None:
            return ""
        one_day = self.times is not None and len(self.times) and self.times[-1].date() == self.times[0].date()
        return " " + t.strftime("%H:%M" if one_day else "%Y-%m-%d %H:%M")

    def text(self) -> str:
        """The verdict in one line, without the ``grid:`` label (see :meth:`message`)."""
        vmin = ("min n/a" if self.vm_min_pu is None
                else f"min {self.vm_min_pu:.3f} p.u. at bus {self.vm_min_bus}{self._when(self.vm_min_time)}")
        lam = f"loadability {'≥ ' if self.loadability_capped else ''}{self.loadability:.2f}"
        if self.carried:
            load = "" if self.loading_max is None else f"; max loading {self.loading_max:.2f}"
            return f"base load carried within limits ({vmin}{load}; {lam})"
        snapshot = self.times is None
        parts = []
        if self.bus_steps_beyond_limits:
            parts.append(f"{self.bus_steps_beyond_limits:,} {'buses' if snapshot else 'bus-steps'} outside "
                         "voltage limits")
        if self.line_steps_beyond_limits:
            parts.append(f"{self.line_steps_beyond_limits:,} {'branches' if snapshot else 'line-steps'} above rating")
        if self.nonconverged_steps:
            parts.append("the power flow does not converge" if snapshot
                         else f"{self.nonconverged_steps:,} of {self.steps:,} steps do not converge")
        return (f"BASE LOAD NOT CARRIED — {', '.join(parts)} ({vmin}); {lam}: "
                "EV results on this grid are not meaningful")

    def message(self) -> str:
        """One line such as ``grid: base load carried within limits (min 0.913 p.u. at bus
        b0_18 19:00; loadability 1.14)``."""
        return f"grid: {self.text()}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (times as ISO strings, NaN as None) plus ``carried``,
        ``grid_base_violations`` and the one-line ``text``."""
        def iso(t: pd.Timestamp | None) -> str | None:
            return None if t is None else t.isoformat()

        def num(x: float | None) -> float | None:
            return None if x is None or not np.isfinite(x) else float(x)

        return {
            "carried": self.carried, "steps": self.steps,
            "vm_min_pu": num(self.vm_min_pu), "vm_min_bus": self.vm_min_bus, "vm_min_time": iso(self.vm_min_time),
            "vm_max_pu": num(self.vm_max_pu), "vm_max_bus": self.vm_max_bus, "vm_max_time": iso(self.vm_max_time),
            "loading_max": num(self.loading_max), "loading_element": self.loading_element,
            "loading_time": iso(self.loading_time),
            "nonconverged_steps": self.nonconverged_steps,
            "nonconverged_times": [iso(t) for t in self.nonconverged_times],
            "bus_steps_beyond_limits": self.bus_steps_beyond_limits,
            "line_steps_beyond_limits": self.line_steps_beyond_limits,
            "grid_base_violations": self.grid_base_violations,
            "loadability": num(self.loadability), "loadability_capped": self.loadability_capped,
            "der_kw_max": num(self.der_kw_max), "text": self.text(),
        }


def has_feeder(instance: Instance) -> bool:
    """True when the instance has buses and at least one substation (something to check)."""
    return len(instance.feeder.buses) > 0 and len(instance.feeder.substations) > 0


def adequacy_summary(adequacy: GridAdequacy | None) -> dict[str, Any]:
    """The summary keys ``grid_adequacy`` (:meth:`GridAdequacy.to_dict`),
    ``grid_base_violations`` and ``grid_loadability``; all None without a feeder."""
    if adequacy is None:
        return {"grid_adequacy": None, "grid_base_violations": None, "grid_loadability": None}
    d = adequacy.to_dict()
    return {"grid_adequacy": d, "grid_base_violations": d["grid_base_violations"],
            "grid_loadability": d["loadability"]}


def grid_verdict(instance: Instance, *, times: Sequence[Any] | pd.DatetimeIndex | None = None
                 ) -> tuple[GridAdequacy | None, str | None]:
    """:func:`grid_adequacy` where there is something to check, and its one-line message.

    Returns
    -------
    (GridAdequacy or None, str or None)
        ``(None, None)`` without a feeder; ``(None, "grid: base load not checked (...)")``
        for a feeder the radial power flow cannot solve (not radial, zero impedance), so
        that reports of such inputs still work; else the adequacy and :meth:`GridAdequacy.message`.
    """
    if not has_feeder(instance):
        return None, None
    try:
        network = compile_network(instance.feeder)
    except (DataError, PowerFlowError) as exc:
        return None, f"grid: base load not checked ({' '.join(str(exc).split())})"
    adequacy = grid_adequacy(instance, times=times, network=network)
    return adequacy, adequacy.message()


def dispatched_der(instance: Instance, times: pd.DatetimeIndex | None) -> np.ndarray:
    """DER output counted on with no EVs (module docstring), steps × buses, kW: available
    PV and wind plus every dispatchable generator at ``p_min_kw``."""
    feeder = instance.feeder
    out = renewables_per_bus(feeder, *renewable_availability(instance, times))
    gens = feeder.generators
    if len(gens):
        b = gens["bus_id"].astype(str).map(feeder.bus_index()).fillna(-1).to_numpy(np.int64)
        ok = b >= 0
        out += np.bincount(b[ok], weights=gens["p_min_kw"].to_numpy(float)[ok], minlength=out.shape[1])
    return out


def grid_adequacy(instance: Instance, *, times: Sequence[Any] | pd.DatetimeIndex | None = None,
                  network: RadialNetwork | None = None, max_factor: float = LOADABILITY_MAX,
                  rel_tol: float = LOADABILITY_REL_TOL) -> GridAdequacy:
    """Check whether the instance's feeder carries its base load (module docstring).

    Parameters
    ----------
    instance : Instance
        Needs a feeder with buses and a substation.
    times : sequence of timestamps, optional
        Steps to check (for example a window's or a run's); default every step of the
        instance's time series, or the one snapshot of the bus loads when it has none.
        Naive timestamps are in the instance's time zone.
    network : RadialNetwork, optional
        The feeder compiled by :func:`optev.powerflow.compile_network`.
    max_factor : float
        Largest load factor tried (default :data:`LOADABILITY_MAX`).
    rel_tol : float
        Relative precision of the loadability (default :data:`LOADABILITY_REL_TOL`).

    Returns
    -------
    GridAdequacy

    Raises
    ------
    DataError
        No feeder, no steps, a window outside a series that does not wrap, or a feeder
        that is not radial.
    PowerFlowError
        A branch without impedance (see :func:`grid_verdict` for reports that go on).
    """
    if not has_feeder(instance):
        raise DataError("has no feeder (buses and a substation) whose base load could be checked", table="buses")
    if not (np.isfinite(max_factor) and max_factor >= 1.0 and 0.0 < rel_tol < 1.0):
        raise DataError(f"need max_factor ≥ 1 and 0 < rel_tol < 1, got {max_factor!r}, {rel_tol!r}")
    idx = _steps(instance, times)
    feeder = instance.feeder
    net = network if network is not None else compile_network(feeder)
    load_p, load_q = base_load(instance, idx)
    der_p = dispatched_der(instance, idx)

    def flow(factor: float) -> PowerFlowResult:
        return run_powerflow(feeder, factor * load_p - der_p, factor * load_q, network=net, raise_on_failure=False)

    def within(factor: float) -> bool:
        return violations(flow(factor), feeder).empty

    res = flow(1.0)
    kinds = count_by_kind(violations(res, feeder))
    lam, capped = _loadability(within, kinds == {}, max_factor, rel_tol)
    labels: list[pd.Timestamp | None] = [None] if idx is None else list(idx)
    vmin = _extreme(res.vm_pu, np.nanargmin, feeder.bus_ids, labels)
    vmax = _extreme(res.vm_pu, np.nanargmax, feeder.bus_ids, labels)
    load = _max_loading(res, feeder, labels)
    bad = np.flatnonzero(~res.converged)
    return GridAdequacy(
        steps=res.steps, vm_min_pu=vmin[0], vm_min_bus=vmin[1], vm_min_time=vmin[2],
        vm_max_pu=vmax[0], vm_max_bus=vmax[1], vm_max_time=vmax[2],
        loading_max=load[0], loading_element=load[1], loading_time=load[2],
        nonconverged_steps=int(bad.size), nonconverged_times=[labels[i] for i in bad[:TIMES_LISTED]],
        bus_steps_beyond_limits=sum(kinds.get(k, 0) for k in VOLTAGE_KINDS),
        line_steps_beyond_limits=sum(kinds.get(k, 0) for k in BRANCH_KINDS),
        loadability=lam, loadability_capped=capped, der_kw_max=float(der_p.sum(axis=1).max(initial=0.0)),
        times=idx)


def _steps(instance: Instance, times: Sequence[Any] | pd.DatetimeIndex | None) -> pd.DatetimeIndex | None:
    """The steps to check: ``times``, else the series' index, else None (snapshot)."""
    if times is None:
        index = instance.timeseries.index
        return index if len(index) else None
    idx = times if isinstance(times, pd.DatetimeIndex) else pd.DatetimeIndex(list(times))
    if not len(idx):
        raise DataError("no time steps to check the base load at")
    return idx.tz_localize(instance.metadata.timezone) if idx.tz is None else idx


def _loadability(within: Callable[[float], bool], ok_at_one: bool, max_factor: float, rel_tol: float
                 ) -> tuple[float, bool]:
    """Bisection for the largest factor with ``within(factor)`` (module docstring):
    ``(factor, capped)``."""
    lo, hi = (1.0, max_factor) if ok_at_one else (0.0, 1.0)
    if ok_at_one:
        while lo < max_factor:
            trial = min(2.0 * lo, max_factor)
            if not within(trial):
                hi = trial
                break
            lo = trial
        else:
            return lo, True
    else:
        trial = 0.5
        while trial >= LOADABILITY_MIN and not within(trial):
            hi, trial = trial, 0.5 * trial
        if trial < LOADABILITY_MIN:
            return 0.0, False
        lo = trial
    while hi - lo > rel_tol * lo:
        mid = 0.5 * (lo + hi)
        if within(mid):
            lo = mid
        else:
            hi = mid
    return lo, False


def _extreme(values: np.ndarray, arg: Callable[[np.ndarray], Any], ids: list[str],
             labels: list[pd.Timestamp | None]) -> tuple[float | None, str | None, pd.Timestamp | None]:
    """Value, column id and step label of the extreme of ``values`` (steps × columns),
    ignoring NaN (non-converged steps); all None when there is no finite value."""
    if not values.size or np.isnan(values).all():
        return None, None, None
    step, col = np.unravel_index(int(arg(values)), values.shape)
    return float(values[step, col]), str(ids[col]), labels[step]


def _max_loading(res: PowerFlowResult, feeder: Feeder, labels: list[pd.Timestamp | None]
                 ) -> tuple[float | None, str | None, pd.Timestamp | None]:
    """Highest loading of a rated line or transformer (None when nothing is rated)."""
    amp = feeder.lines["ampacity_a"].to_numpy(float)
    sn = feeder.transformers["sn_kva"].to_numpy(float)
    rated_l = np.isfinite(amp) & (amp > 0)
    rated_t = np.isfinite(sn) & (sn > 0)
    values = np.concatenate([res.line_loading[:, rated_l], res.trafo_loading[:, rated_t]], axis=1)
    ids = [str(x) for x in np.asarray(res.line_ids, dtype=object)[rated_l]] + \
          [str(x) for x in np.asarray(res.transformer_ids, dtype=object)[rated_t]]
    return _extreme(values, np.nanargmax, ids, labels)

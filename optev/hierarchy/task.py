"""What a worker gets and gives back for one region of a hierarchical solve.

:class:`RegionTask` (the region, its part of the instance or its window, the city's cap
and price adder, and the options) goes to a worker, which solves it
(:func:`optev.hierarchy.worker.solve_region`) and sends back a :class:`RegionSolution`;
both pickle. The pipeline is described in :mod:`optev.hierarchy.solve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from optev.compose.formulation import Formulation, parse_formulation
from optev.data.instance import Instance
from optev.errors import DataError
from optev.hierarchy.regions import Region
from optev.hierarchy.station import BATCH_EVS, TRACKING

VIOLATION_COLUMNS = ["time", "kind", "element_id", "value", "limit", "excess", "unit"]
REFINE_SCOPES = ("all", "first_step")
"""Values of :attr:`RegionTask.refine_scope`."""
AGGREGATES = ("station", "bus")
"""Values of :attr:`RegionTask.aggregate`."""
NETWORK_TERMS = ("network_losses", "voltage_deviation")


@dataclass(frozen=True)
class RegionTask:
    """Everything a worker needs to solve one region (picklable)."""

    formulation: Formulation
    instance: Instance
    region: Region
    start: Any
    steps: int
    step: str
    ev_energy_kwh: dict[str, float] | None = None
    import_cap_kw: np.ndarray | None = None
    price_adder: np.ndarray | None = None
    refine: bool = True
    ac_check: bool = True
    soft_limits: bool | None = None
    check: bool = True
    tables: bool = True
    tracking: float = TRACKING
    batch_evs: int = BATCH_EVS
    window: Any = None
    """A region window already built (without its compiled network, which does not
    pickle: the worker compiles it); then ``instance``, ``start``, ``steps``, ``step`` and
    ``ev_energy_kwh`` are not used (:func:`region_window`)."""
    refine_scope: str = "all"
    """What the station level solves (``refine = True``): ``"all"`` (every session of every
    station) or ``"first_step"`` (only the sessions plugged in the window's first step —
    all an MPC step applies; forecast arrivals keep the region plan shared with the
    envelope's guide, :mod:`optev.hierarchy.station`)."""
    redispatch: bool = True
    """After the station level, re-solve the region's grid and DER for the load its plan
    really draws (:mod:`optev.hierarchy.redispatch`); only for regions with generators,
    PV/wind or storage to re-dispatch."""
    aggregate: str = "station"
    """Granularity of the region LP with an aggregate station variant: ``"station"`` (one
    envelope per station) or ``"bus"`` (one per bus, :func:`~optev.hierarchy.station.bus_aggregates`;
    the station level then restores each station)."""


@dataclass
class RegionSolution:
    """What a worker sends back for one region (plain arrays and frames, picklable).

    Attributes
    ----------
    region_id : str
    termination : str
        HiGHS status of the region LP.
    objective : float
        Region LP objective (with the city price adder, if any).
    objective_terms : dict
    times : pandas.DatetimeIndex
    dt_h : float
    import_kw : ndarray (T,)
        Region import with the applied (1 kW) setpoints: the LP's import plus the applied
        minus the LP's station power, kW.
    import_ac_kw : ndarray (T,) or None
        Substation power of the AC power flow of the applied setpoints, kW.
    flex_down_kw, flex_up_kw : ndarray (T,)
        How far the region's EVs could lower / raise its import in each step (city
        allocation), kW.
    active_stations : ndarray (T,)
        Stations with at least one plugged EV in each step.
    v2g_reservation_cost : float
        :math:`\\sum r_e p^{dis}_{e,t}\\Delta t` of the applied setpoints, currency.
    tables : dict of DataFrame
    violations : DataFrame
    summary : dict
    invariant_violations : list of str
    detail : object
        With ``keep=True`` (in-process only): ``{"region": WindowResult, "stations":
        StationRefinement or None}``.
    """

    region_id: str
    termination: str
    objective: float
    objective_terms: dict[str, float]
    times: pd.DatetimeIndex
    dt_h: float
    import_kw: np.ndarray
    import_ac_kw: np.ndarray | None
    flex_down_kw: np.ndarray
    flex_up_kw: np.ndarray
    active_stations: np.ndarray
    v2g_reservation_cost: float
    tables: dict[str, pd.DataFrame]
    violations: pd.DataFrame
    summary: dict[str, Any]
    invariant_violations: list[str] = field(default_factory=list)
    detail: Any = field(default=None, repr=False)
    ev_net_kw: np.ndarray | None = None
    """Net power of the region's EVs with the applied setpoints, kW (T,)."""
    envelope: Any = None
    """Flexibility envelope of all the region's sessions as one group
    (:class:`~optev.blocks.envelope.Envelope`, G = 1), for the city's allocation."""
    reservation_per_kwh: np.ndarray | None = None
    """Mean V2G reservation price of the region's plugged V2G sessions per step, currency/kWh."""
    plan: Any = None
    """The region's :class:`~optev.blocks.disaggregate.Disaggregation` (its window's session
    and station order)."""
    station_q_kvar: np.ndarray | None = None
    """Reactive power of the region's stations in its LP, kvar (n_st × T)."""


def copperplate_formulation(formulation: Formulation) -> Formulation:
    """The formulation with a copper-plate network (for regions without a feeder)."""
    if formulation.blocks["network"][0] == "copperplate":
        return formulation
    data = formulation.to_dict()
    data["blocks"]["network"] = {"variant": "copperplate"}
    data["objective"] = {k: v for k, v in data["objective"].items() if k not in NETWORK_TERMS}
    data["name"] = f"{formulation.name}+copperplate"
    return parse_formulation(data, formulation.source or formulation.name)


def check_options(refine_scope: str, aggregate: str) -> None:
    """Refuse a :attr:`RegionTask.refine_scope` or :attr:`RegionTask.aggregate` that is not one
    of :data:`REFINE_SCOPES` / :data:`AGGREGATES` (:class:`~optev.errors.DataError`)."""
    if refine_scope not in REFINE_SCOPES:
        raise DataError(f"refine_scope must be one of {REFINE_SCOPES}, got {refine_scope!r}")
    if aggregate not in AGGREGATES:
        raise DataError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")

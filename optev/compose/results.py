"""Tidy result tables of a solved window.

=========  ====================================================================================
table      columns
=========  ====================================================================================
``ev``       ev_id, session_id, station_id, time, p_kw (charge +, discharge −, 1 kW grid), soc
``station``  station_id, time, p_ch_kw, p_dis_kw, q_kvar (sums of the EV setpoints)
``bus``      bus_id, time, vm_pu_lindistflow (NaN without LinDistFlow), vm_pu_ac_model (AC power flow
             of the LP's injections, comparable with LinDistFlow), vm_pu_ac (AC power flow of the
             applied setpoints on the grid)
``line``     line_id, time, p_kw, q_kvar, current_a, loading (AC power flow of the applied setpoints)
``der``      unit_id, kind, bus_id, time, p_kw, q_kvar, p_avail_kw, p_curtailed_kw (with a der block)
``storage``  storage_id, bus_id, time, p_ch_kw, p_dis_kw, q_kvar, e_kwh (with a storage block)
=========  ====================================================================================

The ``ev`` table lists only the steps in which a session is plugged in.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from optev.blocks.context import ModelContext
from optev.blocks.disaggregate import Disaggregation, disaggregate
from optev.blocks.envelope import disaggregation_guide
from optev.blocks.ev import simultaneous_use
from optev.compose.formulation import BLOCKS
from optev.lp.expr import as_expr
from optev.powerflow import PowerFlowResult


def station_setpoints(ctx: ModelContext, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Station charge and discharge power (n_st × T, kW) of a solution."""
    lp = ctx.lp
    p_ch = lp.evaluate(as_expr(ctx.handles["station_p_ch"]), x)
    p_dis = lp.evaluate(as_expr(ctx.handles["station_p_dis"]), x)
    return p_ch, p_dis


LINE_COLUMNS = ["line_id", "time", "p_kw", "q_kvar", "current_a", "loading"]
"""Columns of the ``line`` table."""


def plan_tables(w: Any, evs: Any, plan: Disaggregation, q_kvar: np.ndarray) -> dict[str, pd.DataFrame]:
    """The ``ev`` and ``station`` tables of an EV plan.

    ``evs`` are the plan's sessions (their ``station`` indexes ``w.stations``), ``w`` the
    window they belong to and ``q_kvar`` the stations' reactive power (n_st × T, kvar).
    """
    st = w.stations
    times = w.times
    T = w.steps
    ei, ti = np.nonzero(evs.plugged > 0)
    ev_table = pd.DataFrame({
        "ev_id": evs.ev_id[ei], "session_id": evs.session_id[ei], "station_id": st.station_id[evs.station[ei]],
        "time": times[ti], "p_kw": plan.ev_p_kw[ei, ti], "soc": plan.ev_e_kwh[ei, ti] / evs.capacity_kwh[ei],
    })
    ev_p = plan.ev_p_kw
    st_ch = np.zeros((st.n, T))
    st_dis = np.zeros((st.n, T))
    np.add.at(st_ch, evs.station, np.maximum(ev_p, 0.0))
    np.add.at(st_dis, evs.station, np.maximum(-ev_p, 0.0))
    station_table = pd.DataFrame({
        "station_id": np.repeat(st.station_id, T), "time": times[np.tile(np.arange(T), st.n)],  # stays datetime64
        "p_ch_kw": st_ch.ravel(), "p_dis_kw": st_dis.ravel(), "q_kvar": np.asarray(q_kvar).ravel(),
    })
    return {"ev": ev_table, "station": station_table}


def applied_ac_tables(bus: pd.DataFrame, ac: PowerFlowResult, times: pd.DatetimeIndex) -> dict[str, pd.DataFrame]:
    """The ``bus`` table with the voltages of the applied AC power flow ``ac`` (``vm_pu_ac``)
    and the ``line`` table of its flows."""
    bus = bus.copy()
    bus["vm_pu_ac"] = ac.vm_pu.ravel()
    frame = ac.line_frame()
    frame["time"] = np.repeat(times, len(ac.line_ids))
    return {"bus": bus, "line": frame[LINE_COLUMNS]}


def result_tables(ctx: ModelContext, x: np.ndarray, ac_model: PowerFlowResult | None,
                  applied_ac: Callable[[Disaggregation], PowerFlowResult | None] | None = None
                  ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Build the ``ev``, ``station``, ``bus`` and ``line`` tables and summary figures.

    ``ac_model`` is the AC power flow of the LP's own injections (its voltages are compared
    with LinDistFlow's: ``max_abs_dv_pu``). ``applied_ac``, given the EV plan on the setpoint
    grid, returns the AC power flow of what would actually be applied; its voltages, line
    flows and violations fill the ``bus`` and ``line`` tables (``ac_model`` when omitted).
    Under ``extra["ac_applied"]`` the applied power flow is returned to the caller.
    """
    w = ctx.window
    lp = ctx.lp
    evs = ctx.handles.get("ev_arrays", w.evs)
    st = w.stations
    times = w.times
    T = w.steps
    extra: dict[str, Any] = {}
    p_ch, p_dis = station_setpoints(ctx, x)
    guide = None
    enforce = None
    rounding = "per_ev"  # the per-EV optimum is a plan each EV rounds (optev.blocks.disaggregate)
    if "ev_p_ch" in ctx.handles:
        ev_ch = lp.evaluate(ctx.handles["ev_p_ch"], x)
        ev_dis = lp.evaluate(ctx.handles["ev_p_dis"], x)
        guide = ev_ch - ev_dis
        extra["simultaneous_charge_discharge"] = simultaneous_use(ev_ch, ev_dis)
    else:
        # no per-EV variables (station variant "aggregate"): departure needs are a hard floor
        # unless departures are soft, and the station's envelope trajectory, split in
        # proportion to each EV's own envelope, guides the allocation when it exists
        enforce = ctx.options.get("ev", {}).get("departure", "hard") == "hard"
        rounding = "station"  # the envelope split is a preference: the station setpoint comes first
        if "station_e" in ctx.handles:
            guide = disaggregation_guide(evs, w.dt_h, lp.values(ctx.handles["station_e"].name, x),
                                         departed_at_need=ctx.handles["station_envelope"].departed_at_need)
    plan = disaggregate(evs, w.dt_h, p_ch - p_dis, guide_kw=guide, enforce_departure=enforce,
                        site_max_kw=st.p_site_max_kw, site_dis_max_kw=st.p_site_dis_max_kw, rounding=rounding)
    extra["energy_delivered_kwh"] = float(np.maximum(plan.ev_p_kw, 0).sum() * w.dt_h)
    extra["energy_discharged_kwh"] = float(np.maximum(-plan.ev_p_kw, 0).sum() * w.dt_h)
    extra["shortfall_kwh"] = float(plan.shortfall_kwh.sum())
    extra["evs_with_shortfall"] = int((plan.shortfall_kwh > 0).sum())
    extra["max_station_setpoint_gap_kw"] = float(np.abs(plan.station_p_kw - (p_ch - p_dis)).max()) if st.n else 0.0
    ac = applied_ac(plan) if applied_ac is not None else ac_model
    extra["ac_applied"] = ac

    q = lp.evaluate(as_expr(ctx.handles["station_q"]), x) if "station_q" in ctx.handles else np.zeros((st.n, T))
    tables = plan_tables(w, evs, plan, q)
    bus_ids = np.asarray(w.instance.feeder.bus_ids, dtype=object)
    if w.n_bus:
        vm_lin = np.full((T, w.n_bus), np.nan)
        if "bus_v2" in ctx.handles:
            vm_lin = np.sqrt(np.maximum(lp.evaluate(as_expr(ctx.handles["bus_v2"]), x), 0.0)).T
        tables["bus"] = pd.DataFrame({
            "bus_id": np.tile(bus_ids, T), "time": np.repeat(times, w.n_bus),
            "vm_pu_lindistflow": vm_lin.ravel(),
            "vm_pu_ac_model": (ac_model.vm_pu if ac_model is not None else np.full((T, w.n_bus), np.nan)).ravel(),
            "vm_pu_ac": np.full(T * w.n_bus, np.nan),
        })
        if "bus_v2" in ctx.handles and ac_model is not None:
            extra["max_abs_dv_pu"] = float(np.nanmax(np.abs(vm_lin - ac_model.vm_pu)))
        if ac is not None:
            tables.update(applied_ac_tables(tables["bus"], ac, times))
            extra["ac_converged_steps"] = int(ac.converged.sum())
            extra["loss_kw_max"] = float(np.nanmax(ac.loss_kw))
            extra["peak_import_kw"] = float(np.nanmax(ac.substation_p_kw.sum(axis=1)))
    if "bus" not in tables:
        tables["bus"] = pd.DataFrame(columns=["bus_id", "time", "vm_pu_lindistflow", "vm_pu_ac_model", "vm_pu_ac"])
    if "line" not in tables:
        tables["line"] = pd.DataFrame(columns=LINE_COLUMNS)
    if "grid_import_kw" in ctx.handles:
        imp = lp.evaluate(as_expr(ctx.handles["grid_import_kw"]), x)
        extra.setdefault("peak_import_kw", float(imp.max()))
        extra["peak_import_lp_kw"] = float(imp.max())
    for block in ("der", "storage"):
        if block in ctx.options:
            module = BLOCKS[block].load()
            block_tables, figures = module.report(ctx, x)
            tables.update(block_tables)
            extra.update(figures)
    extra["plan"] = plan
    return tables, {k: v for k, v in extra.items()}

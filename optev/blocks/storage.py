r"""Stationary battery storage (R6.3.1, R7.1.1, R7.1.2, R7.2.3).

Sets
    :math:`b \in \mathcal{B}` storage units (``feeder.storage``), :math:`t \in \{0..T-1\}`
    steps of :math:`\Delta t` h.

Parameters
    :math:`\bar P^{ch}_b, \bar P^{dis}_b` kW power limits (grid side);
    :math:`\underline E_b \le E^0_b \le \bar E_b` kWh energy limits and energy at the window
    start (``e_min_kwh``, ``e_init_kwh``, ``e_max_kwh``; the order is checked by
    :func:`optev.data.validate`); :math:`\eta^{ch}_b, \eta^{dis}_b \in (0, 1]`;
    :math:`S_b` kVA inverter rating (``s_rated_kva``, NaN →
    :math:`\max(\bar P^{ch}_b, \bar P^{dis}_b)`).

    MPC state: ``window.extra["storage_e_kwh"]`` (a mapping storage_id → kWh measured at
    the window start) overrides :math:`E^0_b` for the units it names.

Variables
    ``storage_p_ch[b,t]`` :math:`p^{ch}_{b,t} \in [0, \bar P^{ch}_b]` kW,
    ``storage_p_dis[b,t]`` :math:`p^{dis}_{b,t} \in [0, \bar P^{dis}_b]` kW,
    ``storage_e[b,t]`` :math:`E_{b,t} \in [\underline E_b, \bar E_b]` kWh at the end of step t,
    ``storage_q[b,t]`` :math:`q_{b,t} \in [-S_b, S_b]` kvar (option ``reactive``).

Constraints
    ``storage_energy_balance`` (``_first`` for t = 0):
    :math:`E_{b,t} = E_{b,t-1} + \Delta t\,(\eta^{ch}_b p^{ch}_{b,t} - p^{dis}_{b,t}/\eta^{dis}_b)`,
    :math:`E_{b,-1} = E^0_b`.

    ``storage_terminal`` (option ``terminal = "initial"``, the default):
    :math:`E_{b,T-1} \ge E^0_b`. A finite window gives stored energy no value after its
    end, so without this condition the optimiser empties every battery by the last step
    (the end-of-horizon effect) and a rolling horizon starts each window with less
    energy than the plan assumed was worth keeping. Ending at least as full as it started
    makes each window energy-neutral: the storage only shifts energy *within* the
    window, and any round trip must pay for its losses inside it. ``terminal = "free"``
    drops the condition (for a last window, or when the caller prices the final energy).

    ``storage_apparent_power`` (option ``reactive``): the K-gon inscribed in
    :math:`(p^{dis} - p^{ch})^2 + q^2 \le S_b^2` with vertices at :math:`(\pm S_b, 0)`
    (:mod:`optev.blocks.polygon`).

The plant applies the same equation to the realised power
(:func:`optev.data.battery.battery_step`, used by :class:`optev.mpc.injections.StorageBank`).

Injection at the unit's bus (R7.1.1 discharge, R7.1.2 charging)
    :math:`p^{dis}_{b,t} - p^{ch}_{b,t}` kW and :math:`q_{b,t}` kvar.

No charge/discharge binaries: with :math:`\eta^{ch}\eta^{dis} < 1` charging and
discharging at once only burns energy, so an optimal LP solution does it only when
burning energy is worth money (negative prices, export limits with curtailment cost);
:func:`report` counts such steps (``storage_simultaneous_charge_discharge``), as
:func:`optev.blocks.ev.simultaneous_use` does for EVs.

Sources
    The usual storage model of, e.g., PyPSA's ``StorageUnit`` (state-of-charge equation with
    charge and discharge efficiencies; no standing losses here); terminal condition as in
    Calliope's ``operate`` mode and in MPC practice (Parisio et al., "A model predictive
    control approach to microgrid operation optimization", IEEE TCST 22(5), 2014).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.context import ModelContext
from optev.blocks.der import declare_reactive, reactive_options, unit_buses
from optev.blocks.ev import simultaneous_use
from optev.errors import DataError

OPTIONS: dict[str, tuple[Any, str]] = {
    "terminal": ("initial", "`initial`: energy at the window end ≥ energy at its start (no end-of-window "
                            "draining); `free`: no terminal condition"),
    "reactive": (False, "storage inverters may inject or absorb reactive power within s_rated_kva"),
    "polygon_sides": (12, "sides K of the polygon that linearises P² + Q² ≤ S² (at least 4)"),
}

TERMINALS = ("initial", "free")


def initial_energy(ctx: ModelContext) -> np.ndarray:
    """Energy of each unit at the window start, kWh (table value or ``window.extra["storage_e_kwh"]``)."""
    w = ctx.window
    table = w.instance.feeder.storage
    e0 = table["e_init_kwh"].to_numpy(float).copy()
    measured = w.extra.get("storage_e_kwh")
    if measured:
        override = table["storage_id"].map(dict(measured)).to_numpy(float)
        e0 = np.where(np.isnan(override), e0, override)
    return e0


def build(ctx: ModelContext, options: dict[str, Any], variant: str = "default") -> None:
    """Declare the storage block (see module docstring)."""
    if variant != "default":
        raise ValueError(f"unknown storage variant {variant!r}")
    terminal = options.get("terminal", OPTIONS["terminal"][0])
    if terminal not in TERMINALS:
        raise DataError(f"storage option terminal must be one of {', '.join(TERMINALS)}, got {terminal!r}")
    reactive, sides = reactive_options("storage", options)
    w = ctx.window
    lp = ctx.lp
    table = w.instance.feeder.storage
    n, T, dt = len(table), w.steps, w.dt_h
    eff_ch = table["eff_ch"].to_numpy(float)
    eff_dis = table["eff_dis"].to_numpy(float)
    for col, eff in (("eff_ch", eff_ch), ("eff_dis", eff_dis)):
        bad = np.flatnonzero(~(eff > 0.0))
        if bad.size:
            raise DataError(f"efficiency must be in (0, 1], got {eff[bad[0]]!r}", table="storage",
                            row=f"{bad[0]} (storage_id={table['storage_id'].iloc[bad[0]]!r})", column=col)
    bus = unit_buses(ctx, table, "storage", "storage_id")
    e0 = initial_energy(ctx)
    p_ch_max = table["p_ch_max_kw"].to_numpy(float)
    p_dis_max = table["p_dis_max_kw"].to_numpy(float)
    p_ch = lp.add_variables("storage_p_ch", (n, T), 0.0, p_ch_max[:, None], description="charging power, kW")
    p_dis = lp.add_variables("storage_p_dis", (n, T), 0.0, p_dis_max[:, None],
                             description="discharging power, kW")
    e = lp.add_variables("storage_e", (n, T), table["e_min_kwh"].to_numpy(float)[:, None],
                         table["e_max_kwh"].to_numpy(float)[:, None],
                         description="stored energy at the end of each step, kWh")
    delta = p_ch * (dt * eff_ch)[:, None] - p_dis * (dt / eff_dis)[:, None]
    lp.add_constraints("storage_energy_balance_first", e[:, 0] - delta[:, 0], "==", e0)
    if T > 1:
        lp.add_constraints("storage_energy_balance", e[:, 1:] - e[:, :-1] - delta[:, 1:], "==", 0.0)
    if terminal == "initial" and n:
        lp.add_constraints("storage_terminal", e[:, T - 1], ">=", e0,
                           description="energy at the window end ≥ energy at its start")
    net = p_dis - p_ch
    q = None
    if reactive and n:
        s_max = table["s_rated_kva"].to_numpy(float)
        s_max = np.where(np.isnan(s_max), np.maximum(p_ch_max, p_dis_max), s_max)
        q = declare_reactive(ctx, "storage", net, s_max, sides)
        ctx.handles["storage_q"] = q
    ctx.handles.update(storage_p_ch=p_ch, storage_p_dis=p_dis, storage_e=e)
    ctx.inject("storage", bus, net, q)
    ctx.diagnostics.append(diagnose)


def diagnose(ctx: ModelContext) -> list[str]:
    """Likely causes of infeasibility in the storage block: a start energy outside the limits."""
    table = ctx.window.instance.feeder.storage
    e0 = initial_energy(ctx)
    lo = table["e_min_kwh"].to_numpy(float)
    hi = table["e_max_kwh"].to_numpy(float)
    return [f"storage {sid!r} starts the window with {e:g} kWh, outside its limits [{a:g}, {b:g}] kWh"
            for sid, e, a, b in zip(table["storage_id"], e0, lo, hi) if not (a - 1e-9 <= e <= b + 1e-9)]


def report(ctx: ModelContext, x: np.ndarray, tol_kw: float = 1e-6
           ) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The ``storage`` table (storage_id, bus_id, time, p_ch_kw, p_dis_kw, q_kvar, e_kwh) and
    summary figures: throughput (kWh, grid side), losses (kWh) and the number of (unit, step)
    pairs that charge and discharge at once (above ``tol_kw``)."""
    w = ctx.window
    lp = ctx.lp
    table = w.instance.feeder.storage
    T = w.steps
    p_ch = lp.values("storage_p_ch", x)
    p_dis = lp.values("storage_p_dis", x)
    e = lp.values("storage_e", x)
    q = lp.values("storage_q", x) if "storage_q" in lp.variables else np.zeros_like(p_ch)
    frame = pd.DataFrame({
        "storage_id": np.repeat(table["storage_id"].to_numpy(object), T),
        "bus_id": np.repeat(table["bus_id"].to_numpy(object), T), "time": np.tile(w.times, len(table)),
        "p_ch_kw": p_ch.ravel(), "p_dis_kw": p_dis.ravel(), "q_kvar": q.ravel(), "e_kwh": e.ravel(),
    })
    charged = float(p_ch.sum() * w.dt_h)
    discharged = float(p_dis.sum() * w.dt_h)
    stored = float((e[:, -1] - initial_energy(ctx)).sum()) if e.size else 0.0
    summary = {
        "storage_charged_kwh": charged, "storage_discharged_kwh": discharged,
        "storage_losses_kwh": charged - discharged - stored,
        "storage_simultaneous_charge_discharge": simultaneous_use(p_ch, p_dis, tol_kw),
    }
    return {"storage": frame}, summary

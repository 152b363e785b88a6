r"""Distributed energy resources: PV, wind and dispatchable generators (R6.3.1, R7.1.1, R7.2.3).

Sets
    :math:`u \in \mathcal{U}^{pv}` PV plants (``feeder.pv``), :math:`u \in \mathcal{U}^{wind}`
    wind plants (``feeder.wind``), :math:`g \in \mathcal{G}` dispatchable generators
    (``feeder.generators``), :math:`t \in \{0..T-1\}` steps of :math:`\Delta t` h.

Parameters
    :math:`A_{u,t}` kW available power of a PV or wind plant: the ``availability`` time
    series (p.u.) times ``p_rated_kw`` (:attr:`Window.pv_avail_kw`,
    :attr:`Window.wind_avail_kw`). **Without an availability series** (or without one for
    the whole instance) the window uses the rated power, :math:`A_{u,t} = P^{rated}_u`:
    the plant is then modelled as always able to produce its rating, which suits
    "what if" studies and dispatchable renewables but overstates real PV at night.
    :math:`c^{curt}_u` currency/kWh curtailment cost (``curtailment_cost_per_kwh``);
    :math:`S_u` kVA inverter rating (``s_rated_kva``, NaN → ``p_rated_kw``);
    :math:`\underline P_g, \bar P_g` kW, :math:`\underline Q_g, \bar Q_g` kvar;
    generator cost :math:`a_g p^2 + b_g p + c_g` per hour (``cost_a_per_kw2h`` currency/(kW²·h),
    ``cost_b_per_kwh`` currency/kWh, ``cost_c_per_h`` currency/h).

Variables
    ``pv_p[u,t]``, ``wind_p[u,t]`` :math:`p_{u,t} \in [0, A_{u,t}]` kW (curtailable);
    ``pv_q[u,t]``, ``wind_q[u,t]`` :math:`q_{u,t} \in [-S_u, S_u]` kvar (option ``reactive``);
    ``gen_p[g,t]`` :math:`p_{g,t} \in [\underline P_g, \bar P_g]` kW;
    ``gen_q[g,t]`` :math:`q_{g,t} \in [\underline Q_g, \bar Q_g]` kvar;
    ``gen_q_abs[g,t]`` :math:`\ge |q_{g,t}|` kvar (``gen_q_abs_upper``/``_lower``), priced at
    ``reactive_cost_per_kvarh`` (objective ``gen_reactive_cost``, always on when the price
    is non-zero): without a price the reactive dispatch of generators is arbitrary, and the
    loss correction of LinDistFlow chases it from one solve to the next;
    ``gen_cost_quad[g,t]`` :math:`z_{g,t} \ge 0` currency/h, the epigraph of
    :math:`a_g p_{g,t}^2` (only for generators with :math:`a_g > 0`, only when the term
    ``generation_cost`` is selected).

    **No unit commitment**: :math:`\underline P_g` is a bound, so every generator is on
    during the whole window and produces at least :math:`\underline P_g` (a must-run
    unit); its fixed cost :math:`c_g` is paid in every step. Start-up decisions would need
    binaries and are left to a MIP variant.

Constraints
    ``pv_apparent_power``, ``wind_apparent_power`` (option ``reactive``): for
    :math:`k = 0..K-1`,
    :math:`\cos\phi_k\,p + \sin\phi_k\,q \le S\cos(\pi/K)`, :math:`\phi_k = (2k+1)\pi/K`
    — a regular K-gon inscribed in :math:`p^2 + q^2 \le S^2` (the polygon of
    :mod:`optev.blocks.polygon`) whose vertices include :math:`(S, 0)`: a plant may still
    produce its full rating with :math:`q = 0`, and every feasible point respects the rating.

    ``gen_cost_tangent`` (term ``generation_cost``, :math:`a_g > 0`): for :math:`k = 0..K-1`,
    :math:`z_{g,t} \ge a_g (2 p_k p_{g,t} - p_k^2)`, the tangents of :math:`a_g p^2` at
    :math:`p_k = \underline P_g + (k + \tfrac12) h_g`, :math:`h_g = (\bar P_g - \underline P_g)/K`
    (``pwl_segments`` = K). The tangents lie below the parabola (outer approximation of
    the convex epigraph), so the approximated cost never exceeds the true one, and

    .. math:: 0 \le a_g p^2 - \max\big(0, \max_k a_g(2p_kp - p_k^2)\big) \le a_g \left(\frac{h_g}{2}\right)^2
              = a_g\left(\frac{\bar P_g - \underline P_g}{2K}\right)^2

    for every :math:`p \in [\underline P_g, \bar P_g]` (the gap between two neighbouring
    tangents peaks at their midpoint, and the outer tangents are :math:`h/2` from the
    ends; :func:`pwl_max_error`). :math:`z \ge 0` is the tangent at :math:`p = 0`.

Injections at the units' buses (generation positive, R7.1.1)
    :math:`p_{u,t}, q_{u,t}` of PV and wind; :math:`p_{g,t}, q_{g,t}` of generators.

Objective contributions
    ``pv_curtailment_cost``, ``wind_curtailment_cost`` (always, when some
    :math:`c^{curt}_u \ne 0`, weight 1):
    :math:`\sum_{u,t} c^{curt}_u (A_{u,t} - p_{u,t})\Delta t` currency — curtailed energy
    is priced where the data says so, whatever the formulation's weights.

    Objective term ``generation_cost`` (registered here, selected and weighted in the
    formulation, R7.2.3):
    :math:`\sum_{g,t}\Delta t\,(b_g p_{g,t} + z_{g,t} + c_g)` currency. Generators whose
    cost is not selected produce free energy (within their limits).

Handles
    ``pv_p``, ``wind_p``, ``gen_p``, ``gen_q`` (and ``pv_q``, ``wind_q`` with ``reactive``);
    :func:`report` turns a solution into a ``der`` table and summary figures.

Sources
    Piecewise-linear outer approximation of convex costs: Wood, Wollenberg & Sheblé,
    *Power Generation, Operation and Control* (3rd ed., 2014), ch. 3; inverter capability
    polygon: Ahmadi & Martí, "Linear current flow equations with application to
    distribution systems reconfiguration", IEEE Trans. Power Syst. 30(4), 2015.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.context import ModelContext
from optev.blocks.objectives import term
from optev.blocks.polygon import apparent_power_rows
from optev.errors import DataError
from optev.lp.expr import as_expr

OPTIONS: dict[str, tuple[Any, str]] = {
    "reactive": (False, "PV and wind inverters may inject or absorb reactive power within s_rated_kva"),
    "polygon_sides": (12, "sides K of the polygon that linearises P² + Q² ≤ S² (at least 4)"),
    "pwl_segments": (4, "tangent cuts K of each generator's quadratic cost a·p² (term generation_cost, "
                        "error ≤ a·((p_max − p_min)/(2K))² per hour)"),
    "reactive_cost_per_kvarh": (1e-3, "small price of generator reactive power |q|, currency/kvarh: makes the "
                                      "reactive dispatch unique (no more than needed), which keeps the "
                                      "LinDistFlow loss correction from oscillating; 0 disables it"),
}


# -- shared helpers (also used by the storage block) -----------------------------------------
def declare_reactive(ctx: ModelContext, name: str, p: Any, s_max: np.ndarray, sides: int, *,
                     block: str | None = None) -> Any:
    """Variables ``<name>_q`` in ``[−S, S]`` and constraints ``<name>_apparent_power`` for units
    with active power ``p`` (units × T) and inverter ratings ``s_max`` (units,)."""
    n, T = as_expr(p).shape
    q = ctx.lp.add_variables(f"{name}_q", (n, T), -s_max[:, None], s_max[:, None], block=block,
                             description="reactive power injected, kvar")
    lhs, bound = apparent_power_rows(p, q, s_max[:, None], sides)
    ctx.lp.add_constraints(f"{name}_apparent_power", lhs, "<=", bound[None], block=block,
                           description="P² + Q² ≤ S², inscribed polygon")
    return q


def unit_buses(ctx: ModelContext, table: pd.DataFrame, name: str, key: str) -> np.ndarray:
    """Bus positions (feeder order) of the units of ``table``; unknown buses are an error."""
    pos = pd.Index(ctx.window.instance.feeder.bus_ids).get_indexer(pd.Index(table["bus_id"]))
    bad = np.flatnonzero(pos < 0)
    if bad.size:
        raise DataError(f"unknown bus {table['bus_id'].iloc[bad[0]]!r}", table=name,
                        row=f"{bad[0]} ({key}={table[key].iloc[bad[0]]!r})", column="bus_id")
    return pos.astype(np.int64)


def tangent_points(p_min: np.ndarray, p_max: np.ndarray, segments: int) -> np.ndarray:
    """Tangent points ``p_k = p_min + (k + ½)(p_max − p_min)/K`` (units × K) of the cost cuts."""
    p_min, p_max = np.asarray(p_min, float), np.asarray(p_max, float)
    h = (p_max - p_min) / segments
    return p_min[:, None] + (np.arange(segments) + 0.5)[None, :] * h[:, None]


def pwl_max_error(a: np.ndarray, p_min: np.ndarray, p_max: np.ndarray, segments: int) -> np.ndarray:
    """Largest gap ``a·p² − max_k tangent_k(p)`` over ``[p_min, p_max]``: ``a·((p_max − p_min)/(2K))²``
    currency per hour of operation."""
    return np.asarray(a, float) * ((np.asarray(p_max, float) - np.asarray(p_min, float)) / (2.0 * segments)) ** 2


def reactive_options(block: str, options: dict[str, Any]) -> tuple[bool, int]:
    """The checked ``reactive`` and ``polygon_sides`` options of ``block`` (DER or storage)."""
    reactive = options.get("reactive", False)
    if not isinstance(reactive, bool):
        raise DataError(f"{block} option reactive must be true or false, got {reactive!r}")
    sides = options.get("polygon_sides", OPTIONS["polygon_sides"][0])
    if isinstance(sides, bool) or not isinstance(sides, int) or sides < 4:
        raise DataError(f"{block} option polygon_sides must be an integer ≥ 4, got {sides!r}")
    return reactive, sides


def _check_options(options: dict[str, Any]) -> tuple[bool, int, int]:
    reactive, sides = reactive_options("der", options)
    segments = options.get("pwl_segments", OPTIONS["pwl_segments"][0])
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise DataError(f"der option pwl_segments must be an integer ≥ 1, got {segments!r}")
    return reactive, sides, segments


# -- block -------------------------------------------------------------------------------------
def build(ctx: ModelContext, options: dict[str, Any], variant: str = "default") -> None:
    """Declare PV, wind and generators and inject them at their buses (see module docstring)."""
    if variant != "default":
        raise ValueError(f"unknown der variant {variant!r}")
    reactive, sides, segments = _check_options(options)
    w = ctx.window
    feeder = w.instance.feeder
    for name, table, key, avail in (("pv", feeder.pv, "pv_id", w.pv_avail_kw),
                                    ("wind", feeder.wind, "wind_id", w.wind_avail_kw)):
        _renewables(ctx, name, table, key, avail, reactive, sides)
    _generators(ctx, float(options.get("reactive_cost_per_kvarh", OPTIONS["reactive_cost_per_kvarh"][0])))
    ctx.handles["der_pwl_segments"] = segments
    ctx.diagnostics.append(diagnose)


def _renewables(ctx: ModelContext, name: str, table: pd.DataFrame, key: str, avail: np.ndarray,
                reactive: bool, sides: int) -> None:
    """Curtailable units of one technology: ``<name>_p`` in [0, A], curtailment cost, optional Q."""
    w = ctx.window
    lp = ctx.lp
    n, T = len(table), w.steps
    avail = np.asarray(avail, float).reshape(n, T)
    bad = np.argwhere(~(avail >= 0.0))
    if bad.size:
        u, t = bad[0]
        raise DataError(f"available power {avail[u, t]!r} kW at {w.times[t]} is negative or missing",
                        table=name, row=f"{u} ({key}={table[key].iloc[u]!r})", column="profile")
    bus = unit_buses(ctx, table, name, key)
    p = lp.add_variables(f"{name}_p", (n, T), 0.0, avail, block="der",
                         description=f"{name} active power (curtailable to 0), kW")
    cost = table["curtailment_cost_per_kwh"].to_numpy(float)
    if np.any(cost != 0.0):
        price = (cost * w.dt_h)[:, None]
        lp.add_objective(f"{name}_curtailment_cost", (-p) * price + avail * price, block="der",
                         description=f"cost of curtailed {name} energy, currency")
    q = None
    if reactive and n:
        rated = table["p_rated_kw"].to_numpy(float)
        s_max = table["s_rated_kva"].to_numpy(float)
        s_max = np.where(np.isnan(s_max), rated, s_max)
        q = declare_reactive(ctx, name, p, s_max, sides, block="der")
        ctx.handles[f"{name}_q"] = q
    ctx.handles[f"{name}_p"] = p
    ctx.inject(name, bus, p, q)


def _generators(ctx: ModelContext, reactive_cost: float) -> None:
    """Dispatchable generators within their limits (always on; see module docstring)."""
    w = ctx.window
    gens = w.instance.feeder.generators
    n, T = len(gens), w.steps
    bus = unit_buses(ctx, gens, "generators", "gen_id")
    p_min = gens["p_min_kw"].to_numpy(float)
    p_max = gens["p_max_kw"].to_numpy(float)
    q_min = gens["q_min_kvar"].to_numpy(float)
    q_max = gens["q_max_kvar"].to_numpy(float)
    a = gens["cost_a_per_kw2h"].to_numpy(float)
    bad = np.flatnonzero(a < 0)
    if bad.size:
        raise DataError("a negative quadratic cost makes the dispatch non-convex; it must be ≥ 0",
                        table="generators", row=f"{bad[0]} (gen_id={gens['gen_id'].iloc[bad[0]]!r})",
                        column="cost_a_per_kw2h")
    p = ctx.lp.add_variables("gen_p", (n, T), p_min[:, None], p_max[:, None], block="der",
                             description="generator active power (p_min is always produced), kW")
    q = ctx.lp.add_variables("gen_q", (n, T), q_min[:, None], q_max[:, None], block="der",
                             description="generator reactive power, kvar")
    ctx.handles.update(gen_p=p, gen_q=q)
    ctx.inject("generators", bus, p, q)
    cost = reactive_cost
    if cost < 0:
        raise DataError(f"der option reactive_cost_per_kvarh must be ≥ 0, got {cost!r}")
    # the network block's reactive_cost_per_kvarh leaves generators to this block's price
    ctx.handles.setdefault("reactive_priced", set()).add("generators")
    if cost > 0 and n:
        q_abs = ctx.lp.add_variables("gen_q_abs", (n, T), 0.0, np.inf, block="der",
                                     description="|generator reactive power|, kvar")
        ctx.lp.add_constraints("gen_q_abs_upper", q - q_abs, "<=", 0.0, block="der")
        ctx.lp.add_constraints("gen_q_abs_lower", q + q_abs, ">=", 0.0, block="der")
        ctx.lp.add_objective("gen_reactive_cost", q_abs, cost * w.dt_h, block="der",
                             description="regularising price of generator reactive power")


@term("generation_cost", "cost of dispatchable generators: b·p + a·p² (tangent cuts) + fixed c, currency")
def generation_cost_term(ctx: ModelContext, weight: float) -> None:
    """Generator cost :math:`\\sum_{g,t}\\Delta t (b_g p + z + c_g)` (see module docstring)."""
    w = ctx.window
    lp = ctx.lp
    p = ctx.require("gen_p", "generation_cost")
    gens = w.instance.feeder.generators
    T, dt = w.steps, w.dt_h
    a = gens["cost_a_per_kw2h"].to_numpy(float)
    b = gens["cost_b_per_kwh"].to_numpy(float)
    c = gens["cost_c_per_h"].to_numpy(float)
    total = (p * (b * dt)[:, None]).sum() + float(c.sum() * dt * T)
    quad = np.flatnonzero(a > 0)
    if quad.size:
        segments = int(ctx.handles.get("der_pwl_segments", OPTIONS["pwl_segments"][0]))
        p_min = gens["p_min_kw"].to_numpy(float)[quad]
        p_max = gens["p_max_kw"].to_numpy(float)[quad]
        pts = tangent_points(p_min, p_max, segments)                      # (nq, K)
        aq = a[quad][:, None]
        z = lp.add_variables("gen_cost_quad", (quad.size, T), 0.0, np.inf, block="der",
                             description="epigraph of a·p², currency/h")
        # z ≥ a (2 p_k p − p_k²)  ⇔  z − 2 a p_k p ≥ −a p_k²     rows (nq, K, T)
        lhs = z[:, None, :] - p[quad][:, None, :] * (2.0 * aq * pts)[:, :, None]
        lp.add_constraints("gen_cost_tangent", lhs, ">=", (-aq * pts ** 2)[:, :, None], block="der",
                           description="tangent cuts of the quadratic generator cost")
        total = total + (z * dt).sum()
        ctx.handles["gen_cost_quad"] = z
    lp.add_objective("generation_cost", total, weight, block="objective",
                     description="generator cost, currency")


def generation_cost(generators: Any, p_kw: Any, dt_h: float) -> np.ndarray:
    r"""Cost of generator outputs, :math:`(a_g p^2 + b_g p + c_g)\,\Delta t` currency, element-wise.

    The cost function of the term ``generation_cost`` with the exact quadratic (the LP's
    tangent cuts are at most :func:`pwl_max_error` per hour below it) — use it on realised
    outputs. As in the model there is no unit commitment: the fixed cost :math:`c_g` is
    paid in every step, whatever the output.

    Parameters
    ----------
    generators : Instance, Feeder or DataFrame
        Whose ``generators`` table (or the table itself: ``cost_a_per_kw2h``
        currency/(kW²·h), ``cost_b_per_kwh`` currency/kWh, ``cost_c_per_h`` currency/h)
        gives the cost coefficients, in row order.
    p_kw : array_like
        Output of each generator, kW, shape ``(n_gen,)`` or ``(n_gen, T)`` in the table's
        row order (for example the ``p_kw`` of the ``der`` table's ``generator`` rows of
        one step, ordered like ``feeder.generators``).
    dt_h : float
        Length of the step(s), h.

    Returns
    -------
    ndarray
        Cost of each generator (and step), currency; ``.sum()`` for the total.

    Raises
    ------
    DataError
        ``p_kw`` has a first dimension other than the number of generators.
    """
    gens = getattr(generators, "generators", None)
    if gens is None:
        feeder = getattr(generators, "feeder", None)
        gens = feeder.generators if feeder is not None else generators
    p = np.asarray(p_kw, float)
    if p.ndim == 0 or p.shape[0] != len(gens):
        raise DataError(f"generation_cost needs one output per generator ({len(gens)}), got shape {p.shape}",
                        table="generators")
    shape = (len(gens),) + (1,) * (p.ndim - 1)
    a, b, c = (gens[col].to_numpy(float).reshape(shape)
               for col in ("cost_a_per_kw2h", "cost_b_per_kwh", "cost_c_per_h"))
    return (a * p * p + b * p + c) * float(dt_h)


# -- diagnostics and results -------------------------------------------------------------------
def diagnose(ctx: ModelContext) -> list[str]:
    """Likely causes of infeasibility in the DER block: inverted generator limits, or must-run
    generation that loads, storage, stations and export cannot absorb."""
    w = ctx.window
    feeder = w.instance.feeder
    gens = feeder.generators
    out = [f"generator {g!r}: {lo} = {low:g} exceeds the maximum {high:g} (run optev.data.validate)"
           for lo, hi in (("p_min_kw", "p_max_kw"), ("q_min_kvar", "q_max_kvar"))
           for g, low, high in zip(gens["gen_id"], gens[lo], gens[hi]) if low > high]
    must_run = float(gens["p_min_kw"].sum())
    if out or must_run <= 0:
        return out
    export = float(feeder.substations["p_export_max_kw"].sum()) if len(feeder.substations) else np.inf
    absorb = (w.load_p_kw.sum(axis=1) + export + float(feeder.storage["p_ch_max_kw"].sum())
              + float(w.stations.p_site_max_kw.sum()))
    bad = np.flatnonzero(absorb < must_run - 1e-6)
    if not bad.size:
        return []
    t = bad[0]
    return [f"generators must produce at least Σ p_min = {must_run:g} kW (no unit commitment: p_min is "
            f"always on), but at {w.times[t]} loads, storage, stations and export can absorb at most "
            f"{absorb[t]:.1f} kW"]


def report(ctx: ModelContext, x: np.ndarray) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The ``der`` table (unit_id, kind, bus_id, time, p_kw, q_kvar, p_avail_kw, p_curtailed_kw;
    availability and curtailment are NaN for generators) and summary figures (energy produced
    and curtailed per technology, kWh; ``generation_cost`` and ``generation_cost_first_step``,
    the planned generators' cost over the window and in its first step by
    :func:`generation_cost`, exact quadratic, currency)."""
    w = ctx.window
    lp = ctx.lp
    feeder = w.instance.feeder
    T = w.steps
    frames = []
    summary: dict[str, Any] = {}
    for kind, table, key, avail in (("pv", feeder.pv, "pv_id", w.pv_avail_kw),
                                    ("wind", feeder.wind, "wind_id", w.wind_avail_kw),
                                    ("generator", feeder.generators, "gen_id", None)):
        name = "gen" if kind == "generator" else kind
        if f"{name}_p" not in ctx.handles or not len(table):
            continue
        p = lp.values(f"{name}_p", x)
        q = lp.values(f"{name}_q", x) if f"{name}_q" in lp.variables else np.zeros_like(p)
        # generators are dispatched, not curtailed: no availability
        a = np.asarray(avail, float) if avail is not None else np.full_like(p, np.nan)
        frames.append(pd.DataFrame({
            "unit_id": np.repeat(table[key].to_numpy(object), T), "kind": kind,
            "bus_id": np.repeat(table["bus_id"].to_numpy(object), T),
            "time": w.times[np.tile(np.arange(T), len(table))],  # np.tile would make Timestamp objects
            "p_kw": p.ravel(), "q_kvar": q.ravel(), "p_avail_kw": a.ravel(), "p_curtailed_kw": (a - p).ravel(),
        }))
        summary[f"{kind}_energy_kwh"] = float(p.sum() * w.dt_h)
        if kind == "generator":
            cost = generation_cost(table, p, w.dt_h)
            summary["generation_cost"] = float(cost.sum())
            summary["generation_cost_first_step"] = float(cost[:, 0].sum()) if T else 0.0
        if avail is not None:
            summary[f"{kind}_curtailed_kwh"] = float((a - p).sum() * w.dt_h)
    columns = ["unit_id", "kind", "bus_id", "time", "p_kw", "q_kvar", "p_avail_kw", "p_curtailed_kw"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return {"der": table}, summary

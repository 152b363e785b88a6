r"""LinDistFlow network: line flows, squared voltages, voltage and thermal limits, loss correction.

Selected by ``[blocks.network] variant = "lindistflow"`` (R7.1.1–R7.1.4, R6.5.1.2).
Every injection registered by the other blocks (stations, PV, wind, storage, generators)
enters one active and one reactive balance per bus; the substation connection comes from
:func:`optev.blocks.grid.declare_grid`.

Sets
    :math:`k \in \mathcal{N}` buses (feeder order), :math:`\mathcal{R}\subset\mathcal{N}`
    substation (root) buses, :math:`b \in \mathcal{B}` in-service lines and transformers,
    each oriented away from its substation, parent :math:`i(b)` → child :math:`j(b)`, in
    breadth-first order (:class:`~optev.powerflow.network.RadialNetwork`); every non-root
    bus is the child of exactly one branch. :math:`\mathcal{U}_k` units injecting at bus k,
    :math:`t \in \{0..T-1\}` steps of :math:`\Delta t` h, :math:`\kappa = 0..K-1` sides of
    the polygon of the thermal limit.

Parameters
    :math:`S_B = 1000\cdot` ``base_mva`` kW per p.u.; :math:`r_b + \mathrm{j}x_b` series
    impedance of branch b, p.u. on the system base; :math:`\tau_b` turns ratio (1 for lines;
    an ideal transformer :math:`\tau_b:1` at the parent side, MATPOWER convention);
    :math:`g_k + \mathrm{j}\beta_k` shunt admittance of bus k including half of the line
    charging of every branch at k, p.u.; :math:`P^L_{k,t}, Q^L_{k,t}` conventional load,
    kW/kvar; :math:`\underline v_k, \overline v_k` voltage limits (``v_min_pu``,
    ``v_max_pu``), p.u.; :math:`V^0_r` substation set point, p.u.; :math:`\bar S_b` branch
    rating in kVA: :math:`\sqrt3\,U^{base}_{i(b)}\,I^{max}_b` for a line (kV·A; the apparent
    power that carries the ampacity at nominal voltage) and ``sn_kva`` for a transformer;
    :math:`\ell_{b,t}` squared series current of the last AC power flow, p.u. (0 before the
    first loss correction); :math:`\nu_{b,t}` voltage factor of the thermal limit (1 before
    the first loss correction).

Variables
    ``line_p[b,t]`` :math:`P_{b,t}`, ``line_q[b,t]`` :math:`Q_{b,t}` — kW and kvar entering
    the series impedance of branch b at its parent end (after the ideal transformer),
    positive parent → child, free; ``bus_v2[k,t]`` :math:`v_{k,t} = |V_{k,t}|^2`, p.u.²,
    fixed to :math:`|V^0_r|^2` at roots; ``grid_p_buy[r,t]``, ``grid_p_sell[r,t]`` kW
    (substation import/export within its limits, :mod:`optev.blocks.network`);
    ``grid_q[r,t]`` kvar reactive import at each substation, free.

Constraints
    ``bus_p_balance[k,t]`` (R7.1.1–R7.1.3):

    .. math::
        \sum_{u\in\mathcal{U}_k} p_{u,t} + [k\in\mathcal{R}](p^{buy}_{k,t} - p^{sell}_{k,t})
        + \sum_{b:\,j(b)=k} P_{b,t} - \sum_{b:\,i(b)=k} P_{b,t} - S_B\,g_k\,v_{k,t}
        = P^L_{k,t} + \sum_{b:\,j(b)=k} S_B\,r_b\,\ell_{b,t}

    ``bus_q_balance[k,t]``: the same with :math:`q_{u,t}`, ``grid_q``, :math:`Q_{b,t}`,
    :math:`+S_B\,\beta_k v_{k,t}` (a shunt susceptance injects :math:`\beta v`),
    :math:`Q^L_{k,t}` and :math:`S_B\,x_b\,\ell_{b,t}`. The shunt terms are exact: a shunt
    y draws :math:`v\,\bar y`.

    ``line_voltage_drop[b,t]`` (Baran & Wu 1989):

    .. math::
        v_{j(b),t} = v_{i(b),t}/\tau_b^2 - 2\,(r_b P_{b,t} + x_b Q_{b,t})/S_B
        + (r_b^2 + x_b^2)\,\ell_{b,t}

    Voltage limits (option ``voltage_limits``) at non-root buses:
    :math:`\underline v_k^2 \le v_{k,t} \le \overline v_k^2` as bounds of ``bus_v2``; with
    ``soft_limits`` the families ``bus_voltage_min``/``bus_voltage_max`` with slacks in
    p.u.², priced at ``slack_penalty`` per 0.001 p.u.² (about 0.05 % of voltage), so that a
    violation costs more than the energy it would let through.

    ``line_apparent_power[κ,b,t]`` (option ``line_limits``, branches with a finite
    rating): :math:`\cos\theta_\kappa P_{b,t} + \sin\theta_\kappa Q_{b,t} \le
    \nu_{b,t}\,\bar S_b\cos(\pi/K)`, :math:`\theta_\kappa = (2\kappa+1)\pi/K` — the regular
    K-gon inscribed in the circle :math:`P^2+Q^2 \le (\nu\bar S)^2`
    (:func:`optev.blocks.polygon.apparent_power_rows`; feasible points respect the rating). With
    ``soft_limits`` one slack per branch and step, kVA, priced at ``slack_penalty``.

Loss correction (option ``loss_correction``)
    LinDistFlow is DistFlow with the terms in :math:`\ell = (P^2+Q^2)/(v_i/\tau^2)`
    dropped. After each solve the pipeline runs the AC power flow on the solution's
    injections; :func:`refine` takes the series current of every branch,
    :math:`I_b = (V_{i(b)}/\tau_b - V_{j(b)})/z_b`, sets :math:`\ell_{b,t} = |I_b|^2` (the
    branch's active and reactive loss :math:`r\ell, x\ell` become load of the balance row
    where the branch's flow arrives, its :math:`|z|^2\ell` re-enters the voltage drop) and,
    for lines, :math:`\nu_{b,t} = |V_{i(b),t}|` so that the polygon bounds the current,
    :math:`|S| = |V|\,|I|`, rather than the power at nominal voltage. Only right-hand
    sides (``ConFamily.lower``/``upper``) change, so HiGHS re-solves warm. With
    :math:`\ell` of the AC solution at the LP's own operating point the equations above are
    the exact branch-flow equations, so at a fixed point the LinDistFlow voltages equal
    the AC voltages; iteration stops when they agree within ``loss_tolerance_pu`` (max
    over buses and steps of :math:`|\sqrt{v} - |V^{AC}||`) or after ``max_corrections``.

Objective terms (registered in :mod:`optev.blocks.objectives`)
    ``network_losses`` (kWh over the window):
    :math:`\sum_t \Delta t \sum_b L_b(P_{b,t}, Q_{b,t}, w_{b,t})` with
    :math:`w = v_{i(b)}/\tau_b^2` and :math:`L_b` the first-order Taylor expansion of the
    series loss :math:`r_b (P^2+Q^2)/(S_B w)` kW at an operating point
    :math:`(P^0, Q^0, w^0)`:
    :math:`L = \frac{2 r P^0}{S_B w^0} P + \frac{2 r Q^0}{S_B w^0} Q - \frac{L^0}{w^0} w`.
    The loss is homogeneous of degree one in (P, Q, w), so the expansion has no constant
    term; it is exact at the operating point and, the loss being convex, below it
    elsewhere. The operating point is the lossless LinDistFlow flow of the conventional
    load alone when the model is built, then the AC flow of the first solution at the
    first loss correction; it is then held so that the loss-correction iteration (which
    changes only right-hand sides) converges. Energy cost already pays for losses once
    they are corrected; a weight on this term prices them on top.

    ``voltage_deviation`` (p.u.², summed over non-root buses and steps):
    :math:`\sum_{k,t} d_{k,t}` with ``bus_v2_dev`` :math:`d \ge 0`,
    ``bus_v2_dev_above``: :math:`v - d \le 1` and ``bus_v2_dev_below``: :math:`v + d \ge 1`,
    i.e. :math:`d = |v_{k,t} - 1|` at the optimum.

Handles
    ``bus_v2`` (n_bus × T), ``line_p``, ``line_q`` (n_branch × T, branch order of the
    RadialNetwork), ``grid_q``, ``lindistflow`` (the :class:`LinDistFlowModel`),
    ``refine`` (loss correction, when enabled).

Sources
    M. E. Baran and F. F. Wu, "Optimal capacitor placement on radial distribution
    systems", IEEE Trans. Power Delivery 4(1):725–734, 1989 (DistFlow and its simplified,
    linear form); M. E. Baran and F. F. Wu, "Network reconfiguration in distribution
    systems for loss reduction and load balancing", IEEE Trans. Power Delivery
    4(2):1401–1407, 1989; M. Farivar and S. H. Low, "Branch flow model: relaxations and
    convexification", IEEE Trans. Power Systems 28(3):2554–2564, 2013 (the branch-flow
    equations with :math:`\ell`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve_triangular

from optev.blocks.context import ModelContext
from optev.blocks.grid import declare_grid
from optev.blocks.objectives import term
from optev.blocks.polygon import apparent_power_rows
from optev.errors import DataError
from optev.lp.expr import LinExpr, VarArray, group_sum, total
from optev.powerflow.network import RadialNetwork

OPTIONS: dict[str, tuple[Any, str]] = {
    "voltage_limits": (True, "keep bus voltages within the feeder's v_min_pu..v_max_pu"),
    "line_limits": (True, "keep line and transformer flows within ampacity / sn_kva (linearised |S| limit)"),
    "polygon_sides": (12, "sides K of the polygon that linearises the branch limit P² + Q² ≤ S²"),
    "loss_correction": (True, "re-linearise around the AC power flow of the previous solution (losses)"),
    "loss_tolerance_pu": (1e-4, "stop correcting when LinDistFlow and AC voltages agree within this, p.u."),
    "max_corrections": (10, "most loss-correction re-solves per window"),
    "voltage_margin_pu": (0.0, "planning margin inside the voltage limits, p.u.: plans keep v_min + m ≤ |V| ≤ "
                               "v_max − m (the operator's allowance for forecast and rounding error: setpoints "
                               "rounded to the 1 kW grid, EVs arriving during the interval)"),
    "reactive_cost_per_kvarh": (0.0, "price of |q| of every reactive injection its own block leaves unpriced "
                                     "(V2G stations, PV, wind and storage inverters), currency/kvarh: without "
                                     "one the reactive dispatch is arbitrary and may circulate reactive power "
                                     "whose losses the LP does not see; generators are priced by the DER block"),
}

REACTIVE_PRICED = "reactive_priced"
"""Handle: names of the injections whose reactive power their own block prices (the DER
block adds ``"generators"``); the network block's ``reactive_cost_per_kvarh`` skips them."""

VOLTAGE_SLACK_UNIT_PU2 = 1e-3
"""A voltage slack of this many p.u.² costs ``slack_penalty`` (soft limits)."""


@dataclass
class LinDistFlowModel:
    """What the loss correction and the objective terms need of a built LinDistFlow block."""

    net: RadialNetwork
    s_base_kw: float
    dt_h: float
    line_p: VarArray
    line_q: VarArray
    bus_v2: VarArray
    p_bound: np.ndarray
    """Right-hand side of ``bus_p_balance`` without losses (n_bus × T)."""
    q_bound: np.ndarray
    drop_bound: np.ndarray
    """Right-hand side of ``line_voltage_drop`` without the |z|²ℓ term (n_branch × T)."""
    limit_branch: np.ndarray
    """Branches with a thermal limit (rows of ``line_apparent_power``)."""
    limit_bound: np.ndarray
    """``S̄ cos(π/K)`` of each limited branch, kVA."""
    tolerance_pu: float = 1e-4
    max_corrections: int = 10
    corrections: int = 0
    ell: np.ndarray | None = None
    """Squared series currents used in the constraints (n_branch × T), p.u."""
    losses_point: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """(P0 kW, Q0 kvar, w0 p.u.²) of the ``network_losses`` expansion, each n_branch × T."""
    losses_relinearised: bool = False
    history: list[float] = field(default_factory=list)
    nu: np.ndarray | None = None
    """Voltage factors of the thermal limits (limit_branch × T), 1 until an AC point is known."""
    seeded: bool = False
    """True when the first solve started from a known AC operating point (:func:`seed`)."""
    converged: bool | None = None
    """Whether the last :func:`refine` found LinDistFlow and AC within the tolerance (None before)."""

    def current_ell(self) -> np.ndarray:
        """``ell``, which the block's build sets; an error if it is missing."""
        if self.ell is None:
            raise RuntimeError("LinDistFlowModel.ell is not set: the LinDistFlow block was not built")
        return self.ell

    def current_losses_point(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``losses_point``, which the ``network_losses`` term sets; an error if it is missing."""
        if self.losses_point is None:
            raise RuntimeError("LinDistFlowModel.losses_point is not set: the network_losses term was not built")
        return self.losses_point


# -- tree helpers (lossless LinDistFlow of given bus loads) -------------------------------------
def _parent_branch(net: RadialNetwork) -> np.ndarray:
    """Branch whose child is each branch's parent bus (−1 for branches leaving a root)."""
    of_bus = np.full(net.n_bus, -1, dtype=np.int64)
    of_bus[net.child] = np.arange(net.n_branch)
    return of_bus[net.parent]


def subtree_sums(net: RadialNetwork, bus_values: np.ndarray) -> np.ndarray:
    """For each branch, the sum of ``bus_values`` (n_bus × T) over the subtree below it.

    Solves ``(I − U) F = bus_values[child]`` with ``U[b, d] = 1`` when branch b feeds
    branch d (upper triangular in breadth-first order).
    """
    pb = _parent_branch(net)
    k = np.flatnonzero(pb >= 0)
    m = net.n_branch
    mat = sp.identity(m, format="csr") - sp.csr_matrix((np.ones(k.size), (pb[k], k)), shape=(m, m))
    rhs = np.asarray(bus_values, float)[net.child]
    return spsolve_triangular(mat, rhs, lower=False) if m else rhs


def tree_voltages(net: RadialNetwork, p_kw: np.ndarray, q_kvar: np.ndarray) -> np.ndarray:
    """Lossless LinDistFlow squared voltages (n_bus × T, p.u.²) of branch flows (n_branch × T).

    Shunts and losses are ignored; roots at their set point.
    """
    pb = _parent_branch(net)
    m = net.n_branch
    T = p_kw.shape[1]
    s = 1e3 * net.base_mva
    drop = 2.0 * (net.z.real[:, None] * p_kw + net.z.imag[:, None] * q_kvar) / s
    inv_tau2 = 1.0 / net.tap ** 2
    rhs = -drop
    root_b = np.flatnonzero(net.root_of_branch >= 0)
    rhs[root_b] += (np.abs(net.v_root[net.root_of_branch[root_b]]) ** 2 * inv_tau2[root_b])[:, None]
    k = np.flatnonzero(pb >= 0)
    mat = sp.identity(m, format="csr") - sp.csr_matrix((inv_tau2[k], (k, pb[k])), shape=(m, m))
    v_child = spsolve_triangular(mat, rhs, lower=True) if m else rhs
    v2 = np.empty((net.n_bus, T))
    v2[net.root] = (np.abs(net.v_root) ** 2)[:, None]
    v2[net.child] = v_child
    return v2


# -- the block ------------------------------------------------------------------------------------
def _check_injections(ctx: ModelContext) -> None:
    st = ctx.window.stations
    for inj in ctx.injections:
        bad = np.flatnonzero(inj.bus < 0)
        if not bad.size:
            continue
        if inj.name == "stations":
            names = ", ".join(repr(s) for s in st.station_id[bad[:5]])
            more = f" and {bad.size - 5} more" if bad.size > 5 else ""
            raise DataError(f"the LinDistFlow network needs the feeder bus of every station; station(s) {names}"
                            f"{more} have no bus of the feeder (bus_id empty or unknown)", table="stations",
                            column="bus_id")
        raise DataError(f"the LinDistFlow network needs the bus of every injection; {bad.size} unit(s) of "
                        f"{inj.name!r} (positions {bad[:5].tolist()}) have no bus of the feeder")


def _branch_ratings(ctx: ModelContext, net: RadialNetwork) -> np.ndarray:
    """Rating of each branch in kVA at nominal voltage (inf when unknown)."""
    feeder = ctx.window.instance.feeder
    rating = np.full(net.n_branch, np.inf)
    is_line = net.kind == "line"
    if is_line.any():
        amp = feeder.lines["ampacity_a"].to_numpy(float)[net.source_pos[is_line]]
        base_kv = feeder.buses["base_kv"].to_numpy(float)[net.parent[is_line]]
        rating[is_line] = np.where(np.isfinite(amp) & (amp > 0), np.sqrt(3.0) * base_kv * amp, np.inf)
    if (~is_line).any():
        sn = feeder.transformers["sn_kva"].to_numpy(float)[net.source_pos[~is_line]]
        rating[~is_line] = np.where(np.isfinite(sn) & (sn > 0), sn, np.inf)
    return rating


def planning_voltage_limits(feeder: Any, margin_pu: float, roots: np.ndarray | None = None
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Voltage limits the plan keeps at each bus: ``v_min_pu + m`` and ``v_max_pu − m``, p.u.

    Parameters
    ----------
    feeder : Feeder
        Its ``buses`` table gives ``v_min_pu`` and ``v_max_pu``.
    margin_pu : float
        The option ``voltage_margin_pu`` (≥ 0), p.u.
    roots : ndarray of int, optional
        Substation buses (their voltage is a set point, not a limit): they keep the
        feeder's values.

    Returns
    -------
    vmin, vmax : ndarray
        Per bus (feeder order), p.u.

    Raises
    ------
    DataError
        A negative or non-finite margin, or one that leaves a (non-root) bus no voltage band.
    """
    m = float(margin_pu)
    if not (np.isfinite(m) and m >= 0.0):
        raise DataError(f"network option voltage_margin_pu must be a finite number ≥ 0, got {margin_pu!r}")
    buses = feeder.buses
    shift = np.full(len(buses), m)
    if roots is not None:
        shift[np.asarray(roots, np.int64)] = 0.0
    vmin = buses["v_min_pu"].to_numpy(float) + shift
    vmax = buses["v_max_pu"].to_numpy(float) - shift
    bad = np.flatnonzero((vmin > vmax) & (shift > 0))
    if bad.size:
        k = bad[0]
        raise DataError(f"voltage_margin_pu = {m:g} leaves bus {buses['bus_id'].iloc[k]!r} no voltage band "
                        f"({buses['v_min_pu'].iloc[k]:g}..{buses['v_max_pu'].iloc[k]:g} p.u. narrowed by {m:g} "
                        f"at each end)", table="buses", row=f"{k}")
    return vmin, vmax


def build(ctx: ModelContext, options: dict[str, Any], variant: str = "lindistflow") -> None:
    """Declare the LinDistFlow network (see module docstring)."""
    opts = {k: d for k, (d, _) in OPTIONS.items()}
    opts.update(options)
    w = ctx.window
    net = w.network
    if net is None:
        raise DataError("the LinDistFlow network needs a feeder (buses, lines, a substation); this window has "
                        "none — use [blocks.network] variant = \"copperplate\" for instances without a feeder")
    _check_injections(ctx)
    lp = ctx.lp
    buy, sell, grid_q = _declare_substations(ctx, net)
    v2, vmin2, vmax2 = _declare_voltages(ctx, net, opts)
    line_p = lp.add_variables("line_p", (net.n_branch, w.steps), -np.inf, np.inf, block="line",
                              description="active power entering each branch at its parent end, kW")
    line_q = lp.add_variables("line_q", (net.n_branch, w.steps), -np.inf, np.inf, block="line",
                              description="reactive power entering each branch at its parent end, kvar")
    _bus_balances(ctx, net, buy, sell, grid_q, v2, line_p, line_q)
    price_reactive(ctx, float(opts["reactive_cost_per_kvarh"]))
    _voltage_drops(ctx, net, v2, line_p, line_q)
    if opts["voltage_limits"] and ctx.soft_limits:
        _soft_voltage_limits(ctx, net, v2, vmin2, vmax2)
    limited, limit_bound = _thermal_limits(ctx, net, line_p, line_q, opts)
    model = LinDistFlowModel(
        net=net, s_base_kw=1e3 * net.base_mva, dt_h=w.dt_h, line_p=line_p, line_q=line_q, bus_v2=v2,
        p_bound=lp.constraints["bus_p_balance"].lower.copy(), q_bound=lp.constraints["bus_q_balance"].lower.copy(),
        drop_bound=lp.constraints["line_voltage_drop"].lower.copy(), limit_branch=limited,
        limit_bound=np.asarray(limit_bound, float), tolerance_pu=float(opts["loss_tolerance_pu"]),
        max_corrections=int(opts["max_corrections"]), ell=np.zeros((net.n_branch, w.steps)),
    )
    ctx.handles.update(bus_v2=v2, line_p=line_p, line_q=line_q, grid_q=grid_q, lindistflow=model)
    if opts["loss_correction"]:
        ctx.handles["refine"] = refine
    ctx.diagnostics.append(diagnose)


def _declare_substations(ctx: ModelContext, net: RadialNetwork) -> tuple[Any, Any, VarArray]:
    """The grid connection at each root: import and export (:func:`declare_grid`) and reactive import."""
    buy, sell = declare_grid(ctx)
    roots = net.root
    if buy.shape[0] != roots.size:
        raise DataError(f"the LinDistFlow network needs one substation per feeder root; found {buy.shape[0]} "
                        f"substation rows for {roots.size} roots", table="substations")
    grid_q = ctx.lp.add_variables("grid_q", (roots.size, ctx.window.steps), -np.inf, np.inf, block="grid",
                                  description="reactive power imported at each substation, kvar")
    return buy, sell, grid_q


def _declare_voltages(ctx: ModelContext, net: RadialNetwork, opts: dict[str, Any]
                      ) -> tuple[VarArray, np.ndarray, np.ndarray]:
    """Squared voltages ``bus_v2`` and the squared planning limits (vmin², vmax²) of every bus.

    Roots are fixed at their set point; the other buses are within the limits when these are
    hard, free when they are soft (:func:`_soft_voltage_limits`) or off.
    """
    roots = net.root
    vmin, vmax = planning_voltage_limits(ctx.window.instance.feeder, float(opts["voltage_margin_pu"]), roots)
    vmin2, vmax2 = vmin ** 2, vmax ** 2
    hard_v = bool(opts["voltage_limits"]) and not ctx.soft_limits
    lo = np.where(hard_v, vmin2, 0.0)
    hi = np.where(hard_v, vmax2, np.inf)
    v_root2 = np.abs(net.v_root) ** 2
    lo[roots] = v_root2
    hi[roots] = v_root2
    v2 = ctx.lp.add_variables("bus_v2", (net.n_bus, ctx.window.steps), lo[:, None], hi[:, None], block="bus",
                              description="squared voltage magnitude, p.u.²")
    return v2, vmin2, vmax2


def _bus_balances(ctx: ModelContext, net: RadialNetwork, buy: Any, sell: Any, grid_q: VarArray, v2: VarArray,
                  line_p: VarArray, line_q: VarArray) -> None:
    """``bus_p_balance`` and ``bus_q_balance``: every injection, the substations, branch flows and shunts."""
    w = ctx.window
    n_bus, roots = net.n_bus, net.root
    s_base = 1e3 * net.base_mva
    g_kw = net.y_shunt.real * s_base
    b_kvar = net.y_shunt.imag * s_base
    p_terms = [group_sum(inj.p_kw, inj.bus, n_bus) for inj in ctx.injections]
    q_terms = [group_sum(inj.q_kvar, inj.bus, n_bus) for inj in ctx.injections if inj.q_kvar is not None]
    p_terms += [group_sum(buy - sell, roots, n_bus), group_sum(line_p, net.child, n_bus),
                -group_sum(line_p, net.parent, n_bus)]
    q_terms += [group_sum(grid_q, roots, n_bus), group_sum(line_q, net.child, n_bus),
                -group_sum(line_q, net.parent, n_bus)]
    if np.any(g_kw):
        p_terms.append(v2 * -g_kw[:, None])
    if np.any(b_kvar):
        q_terms.append(v2 * b_kvar[:, None])
    # terms concatenated once (lp.expr.total), not summed pairwise
    p_lhs = total([LinExpr.constant(np.zeros((n_bus, w.steps)))] + p_terms)
    q_lhs = total([LinExpr.constant(np.zeros((n_bus, w.steps)))] + q_terms)
    ctx.lp.add_constraints("bus_p_balance", p_lhs, "==", w.load_p_kw.T, block="bus",
                           description="active power balance at every bus, kW")
    ctx.lp.add_constraints("bus_q_balance", q_lhs, "==", w.load_q_kvar.T, block="bus",
                           description="reactive power balance at every bus, kvar")


def _voltage_drops(ctx: ModelContext, net: RadialNetwork, v2: VarArray, line_p: VarArray, line_q: VarArray) -> None:
    """``line_voltage_drop``: the squared-voltage drop along every branch, without losses."""
    s_base = 1e3 * net.base_mva
    r, x = net.z.real, net.z.imag
    drop = (v2[net.child] - v2[net.parent] * (1.0 / net.tap ** 2)[:, None]
            + line_p * (2.0 * r / s_base)[:, None] + line_q * (2.0 * x / s_base)[:, None])
    ctx.lp.add_constraints("line_voltage_drop", drop, "==", 0.0, block="line",
                           description="squared-voltage drop along each branch (LinDistFlow), p.u.²")


def _soft_voltage_limits(ctx: ModelContext, net: RadialNetwork, v2: VarArray, vmin2: np.ndarray,
                         vmax2: np.ndarray) -> None:
    """``bus_voltage_min`` and ``bus_voltage_max`` at the non-root buses, with priced slacks."""
    is_root = np.zeros(net.n_bus, dtype=bool)
    is_root[net.root] = True
    nr = np.flatnonzero(~is_root)
    penalty = ctx.slack_penalty / VOLTAGE_SLACK_UNIT_PU2
    s_lo = ctx.slack("bus_voltage_min", (nr.size, ctx.window.steps), penalty)
    s_hi = ctx.slack("bus_voltage_max", (nr.size, ctx.window.steps), penalty)
    ctx.lp.add_constraints("bus_voltage_min", v2[nr] + s_lo, ">=", vmin2[nr, None], block="bus")
    ctx.lp.add_constraints("bus_voltage_max", v2[nr] - s_hi, "<=", vmax2[nr, None], block="bus")


def _thermal_limits(ctx: ModelContext, net: RadialNetwork, line_p: VarArray, line_q: VarArray,
                    opts: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``line_apparent_power``: the inscribed polygon of |S| ≤ S̄ of every rated branch.

    Returns the limited branches and ``S̄ cos(π/K)`` of each (both empty without line limits).
    """
    sides = int(opts["polygon_sides"])
    limited = np.zeros(0, dtype=np.int64)
    limit_bound = np.zeros(0)
    if not opts["line_limits"]:
        return limited, limit_bound
    rating = _branch_ratings(ctx, net)
    limited = np.flatnonzero(np.isfinite(rating))
    if limited.size:
        lhs, limit_bound = apparent_power_rows(line_p[limited], line_q[limited], rating[limited], sides)
        T = ctx.window.steps
        slack = ctx.slack("line_apparent_power", (limited.size, T))
        if slack is not None:
            lhs = lhs - slack
        ctx.lp.add_constraints("line_apparent_power", lhs, "<=",
                               np.broadcast_to(limit_bound[None, :, None], (sides, limited.size, T)), block="line",
                               description="linearised apparent-power (thermal) limit of lines and transformers")
    return limited, limit_bound


_UNIT_PREFIX = {"stations": "station", "generators": "gen"}
"""Family prefix of the units of an injection (``<unit>_q_abs``) where it differs from its name."""


def price_reactive(ctx: ModelContext, price_per_kvarh: float) -> None:
    r"""Price :math:`|q|` of the reactive injections that their own block leaves unpriced.

    For every injection not in the handle :data:`REACTIVE_PRICED` and every unit whose
    reactive power can move (some variable of its :math:`q_{u,t}` has a non-empty range),
    ``<unit>_q_abs[u,t]`` :math:`a_{u,t} \ge 0` kvar with ``<unit>_q_abs_upper``
    :math:`q - a \le 0` and ``<unit>_q_abs_lower`` :math:`q + a \ge 0`, so
    :math:`a = |q|` at the optimum; the objective contribution ``reactive_cost`` is
    :math:`c^q \Delta t \sum_{u,t} a_{u,t}` currency (weight 1, like the DER block's
    ``gen_reactive_cost``).

    Parameters
    ----------
    ctx : ModelContext
        After every injecting block was built.
    price_per_kvarh : float
        :math:`c^q`, currency/kvarh (option ``reactive_cost_per_kvarh``); 0 declares nothing.

    Raises
    ------
    DataError
        A negative or non-finite price.
    """
    c = float(price_per_kvarh)
    if not (np.isfinite(c) and c >= 0.0):
        raise DataError(f"network option reactive_cost_per_kvarh must be a finite number ≥ 0, "
                        f"got {price_per_kvarh!r}")
    if c == 0.0:
        return
    lp = ctx.lp
    T = ctx.window.steps
    skip = set(ctx.handles.get(REACTIVE_PRICED, ()))
    col_lo, col_hi = lp.column_bounds()
    total: LinExpr | None = None
    for inj in ctx.injections:
        if inj.q_kvar is None or inj.name in skip or not inj.bus.size:
            continue
        q = inj.q_kvar
        safe = np.where(q.ids >= 0, q.ids, 0)
        movable = (q.ids >= 0) & (q.coeffs != 0) & (col_hi[safe] > col_lo[safe])
        units = np.flatnonzero(movable.reshape(inj.bus.size, -1).any(axis=1))
        if not units.size:
            continue
        name = f"{_UNIT_PREFIX.get(inj.name, inj.name)}_q_abs"
        a = lp.add_variables(name, (units.size, T), 0.0, np.inf,
                             description=f"|reactive power| of {inj.name} (priced by the network block), kvar")
        lp.add_constraints(f"{name}_upper", q[units] - a, "<=", 0.0)
        lp.add_constraints(f"{name}_lower", q[units] + a, ">=", 0.0)
        total = a.sum() if total is None else total + a.sum()
    if total is not None:
        lp.add_objective("reactive_cost", total, c * ctx.window.dt_h, block="objective",
                         description="regularising price of reactive power of stations and inverters, currency")


# -- loss correction ------------------------------------------------------------------------------
def branch_currents(net: RadialNetwork, vm_pu: np.ndarray, va_deg: np.ndarray) -> np.ndarray:
    """Series current of every branch (T × n_branch, p.u.) from AC bus voltages (T × n_bus)."""
    v = vm_pu * np.exp(1j * np.deg2rad(va_deg))
    return (v[:, net.parent] / net.tap - v[:, net.child]) / net.z


def relinearise(ctx: ModelContext, vm_pu: np.ndarray, va_deg: np.ndarray, ok: np.ndarray) -> None:
    """Move the loss terms to an AC operating point (see module docstring, "Loss correction").

    Sets :math:`\\ell_{b,t} = |I_{b,t}|^2` in the right-hand sides of ``bus_p_balance``,
    ``bus_q_balance`` and ``line_voltage_drop``, the voltage factors :math:`\\nu_{b,t}` of
    ``line_apparent_power`` and, the first time, the operating point of the
    ``network_losses`` expansion, at the steps ``ok``; other steps keep theirs. Only
    right-hand sides and the objective change, never the matrix.

    Parameters
    ----------
    ctx : ModelContext
        The context the block was built in.
    vm_pu, va_deg : ndarray
        AC bus voltage magnitudes (p.u.) and angles (degrees), T × n_bus.
    ok : ndarray of bool
        Steps (T,) whose voltages are used (the AC power flow converged there).
    """
    m: LinDistFlowModel = ctx.handles["lindistflow"]
    lp = ctx.lp
    net = m.net
    cur = branch_currents(net, vm_pu[ok], va_deg[ok])      # steps × branches
    ell = m.current_ell().copy()
    ell[:, ok] = (np.abs(cur) ** 2).T
    m.ell = ell
    r, x_, z2 = net.z.real, net.z.imag, np.abs(net.z) ** 2
    loss_p = np.zeros_like(m.p_bound)
    loss_q = np.zeros_like(m.q_bound)
    loss_p[net.child] = m.s_base_kw * r[:, None] * ell
    loss_q[net.child] = m.s_base_kw * x_[:, None] * ell
    for name, base, extra in (("bus_p_balance", m.p_bound, loss_p), ("bus_q_balance", m.q_bound, loss_q),
                              ("line_voltage_drop", m.drop_bound, z2[:, None] * ell)):
        fam = lp.constraints[name]
        fam.lower[...] = base + extra
        fam.upper[...] = base + extra
    if m.limit_branch.size:
        # a line's limit is on its current: |S| = |V_parent|·|I| ≤ |V_parent|·S̄ (S̄ at 1 p.u.)
        is_line = net.kind[m.limit_branch] == "line"
        if m.nu is None:
            m.nu = np.ones((m.limit_branch.size, ell.shape[1]))
        m.nu[np.ix_(is_line, ok)] = vm_pu[ok][:, net.parent[m.limit_branch[is_line]]].T
        fam = lp.constraints["line_apparent_power"]
        fam.upper[...] = (m.limit_bound[:, None] * m.nu)[None, :, :]
    if "network_losses" in lp.objective and not m.losses_relinearised:
        vp = (vm_pu[ok] * np.exp(1j * np.deg2rad(va_deg[ok])))[:, net.parent] / net.tap
        s_send = (vp * np.conj(cur)).T * m.s_base_kw                  # branches × steps, kVA
        p0, q0, w0 = m.current_losses_point()
        p0, q0, w0 = p0.copy(), q0.copy(), w0.copy()
        p0[:, ok], q0[:, ok] = s_send.real, s_send.imag
        w0[:, ok] = (np.abs(vp) ** 2).T
        m.losses_point = (p0, q0, w0)
        term_ = lp.objective["network_losses"]
        lp.objective["network_losses"] = replace(term_, expr=_losses_expr(m).sum())
        m.losses_relinearised = True


def seed(ctx: ModelContext, vm_pu: np.ndarray, va_deg: np.ndarray, ok: np.ndarray) -> bool:
    """Start the loss correction at a known AC operating point instead of :math:`\\ell = 0`.

    A rolling horizon calls it before the first solve of a window with the AC voltages of
    the previous window's last loss-correction round, shifted to this window's steps, so
    that the first solve already carries (nearly) the right losses and typically one
    solve and one AC power flow suffice (:class:`~optev.compose.solve.WindowSolver`).
    Does not count as a correction.

    Parameters
    ----------
    ctx : ModelContext
        Built, not solved yet.
    vm_pu, va_deg : ndarray
        AC bus voltages for this window's steps, T × n_bus (p.u., degrees).
    ok : ndarray of bool
        Steps (T,) whose voltages are known.

    Returns
    -------
    bool
        True when the block uses loss correction and the operating point was applied.
    """
    m: LinDistFlowModel | None = ctx.handles.get("lindistflow")
    if m is None or "refine" not in ctx.handles:
        return False
    vm_pu = np.asarray(vm_pu, float)
    va_deg = np.asarray(va_deg, float)
    T = m.current_ell().shape[1]
    if vm_pu.shape != (T, m.net.n_bus) or va_deg.shape != vm_pu.shape:
        return False
    ok = np.asarray(ok, bool) & np.isfinite(vm_pu).all(axis=1) & np.isfinite(va_deg).all(axis=1)
    if not ok.any():
        return False
    relinearise(ctx, vm_pu, va_deg, ok)
    m.seeded = True
    return True


def refine(ctx: ModelContext, x: np.ndarray, ac: Any) -> tuple[bool, float]:
    """One loss-correction step (see module docstring).

    Parameters
    ----------
    ctx : ModelContext
        The context the block was built in.
    x : ndarray
        The last LP solution.
    ac : PowerFlowResult
        AC power flow of that solution's injections.

    Returns
    -------
    changed : bool
        True when the constraints were updated and the LP must be solved again.
    max_abs_dv_pu : float
        Largest |LinDistFlow − AC| voltage magnitude of ``x`` over buses and converged
        steps, p.u. (NaN when the AC power flow converged in no step).

    Notes
    -----
    Sets ``m.converged`` (:class:`LinDistFlowModel`): True when the error is within
    ``loss_tolerance_pu`` and the AC power flow converged in every step.
    """
    m: LinDistFlowModel = ctx.handles["lindistflow"]
    ok = np.asarray(ac.converged, bool) & np.isfinite(ac.vm_pu).all(axis=1)
    if not ok.any():
        m.converged = False
        return False, float("nan")
    vm_lin = np.sqrt(np.maximum(ctx.lp.values(m.bus_v2.name, x), 0.0)).T  # T × n_bus
    err = float(np.max(np.abs(vm_lin[ok] - ac.vm_pu[ok])))
    m.history.append(err)
    m.converged = bool(err <= m.tolerance_pu and ok.all())
    if err <= m.tolerance_pu or m.corrections >= m.max_corrections:
        return False, err
    relinearise(ctx, ac.vm_pu, ac.va_deg, ok)
    m.corrections += 1
    return True, err


# -- objective terms ------------------------------------------------------------------------------
def _model(ctx: ModelContext, term_name: str) -> LinDistFlowModel:
    try:
        return ctx.require("lindistflow", f"objective term {term_name!r}")
    except DataError as exc:
        raise DataError(f"{exc}: it needs the LinDistFlow network's line flows and voltages — set "
                        f"[blocks.network] variant = \"lindistflow\"") from None


def _losses_expr(m: LinDistFlowModel) -> LinExpr:
    """First-order expansion of the series losses, kWh per branch and step (see module docstring)."""
    net = m.net
    p0, q0, w0 = m.current_losses_point()
    r = net.z.real[:, None]
    s = m.s_base_kw
    loss0 = r * (p0 ** 2 + q0 ** 2) / (s * w0)
    a_p = 2.0 * r * p0 / (s * w0)
    a_q = 2.0 * r * q0 / (s * w0)
    a_v = -loss0 / w0 / (net.tap ** 2)[:, None]
    return (m.line_p * (m.dt_h * a_p) + m.line_q * (m.dt_h * a_q) + m.bus_v2[net.parent] * (m.dt_h * a_v))


@term("network_losses", "series losses of the LinDistFlow network, linearised around the operating point, kWh")
def network_losses(ctx: ModelContext, weight: float) -> None:
    """Objective term ``network_losses`` (see module docstring)."""
    m = _model(ctx, "network_losses")
    w = ctx.window
    net = m.net
    p0 = subtree_sums(net, w.load_p_kw.T)
    q0 = subtree_sums(net, w.load_q_kvar.T)
    v2 = tree_voltages(net, p0, q0)
    w0 = np.maximum(v2[net.parent], 1e-6) / (net.tap ** 2)[:, None]
    m.losses_point = (p0, q0, w0)
    ctx.lp.add_objective("network_losses", _losses_expr(m), weight, block="objective",
                         description="network losses (first-order expansion), kWh")


@term("voltage_deviation", "sum over buses and steps of |v² − 1| (squared voltage vs 1 p.u.), p.u.²")
def voltage_deviation(ctx: ModelContext, weight: float) -> None:
    """Objective term ``voltage_deviation`` (see module docstring)."""
    m = _model(ctx, "voltage_deviation")
    lp = ctx.lp
    net = m.net
    nr = np.setdiff1d(np.arange(net.n_bus), net.root)
    T = ctx.window.steps
    v = m.bus_v2[nr]
    dev = lp.add_variables("bus_v2_dev", (nr.size, T), 0.0, np.inf, block="objective",
                           description="|v² − 1| at non-root buses, p.u.²")
    lp.add_constraints("bus_v2_dev_above", v - dev, "<=", 1.0, block="objective")
    lp.add_constraints("bus_v2_dev_below", v + dev, ">=", 1.0, block="objective")
    lp.add_objective("voltage_deviation", dev, weight, block="objective",
                     description="voltage deviation Σ|v² − 1|, p.u.²")


# -- diagnostics ----------------------------------------------------------------------------------
def diagnose(ctx: ModelContext) -> list[str]:
    """Likely causes of infeasibility in the network: limits the conventional load alone breaks."""
    m: LinDistFlowModel | None = ctx.handles.get("lindistflow")
    if m is None:
        return []
    w = ctx.window
    net = m.net
    opts = {k: d for k, (d, _) in OPTIONS.items()}
    opts.update(ctx.options.get("network", {}))
    feeder = w.instance.feeder
    bus_ids = np.asarray(feeder.bus_ids, dtype=object)
    p0 = subtree_sums(net, w.load_p_kw.T)
    q0 = subtree_sums(net, w.load_q_kvar.T)
    out: list[str] = []
    if opts["voltage_limits"]:
        vm = np.sqrt(np.maximum(tree_voltages(net, p0, q0), 0.0))
        margin = float(opts["voltage_margin_pu"])
        vmin, vmax = planning_voltage_limits(feeder, margin, net.root)
        nonroot = np.ones(net.n_bus, dtype=bool)
        nonroot[net.root] = False
        lo_name, hi_name = (("v_min + voltage_margin_pu", "v_max − voltage_margin_pu") if margin
                            else ("v_min", "v_max"))
        for label, bad, lim in ((f"below {lo_name}", (vm < vmin[:, None] - 1e-9) & nonroot[:, None], vmin),
                                (f"above {hi_name}", (vm > vmax[:, None] + 1e-9) & nonroot[:, None], vmax)):
            k, t = np.nonzero(bad)
            if k.size:
                j = int(np.argmax(np.abs(vm[k, t] - lim[k])))
                out.append(f"the conventional load alone puts bus {bus_ids[k[j]]} at {vm[k[j], t[j]]:.4f} p.u. "
                           f"({label} {lim[k[j]]:.4f}) at {w.times[t[j]]} in the lossless LinDistFlow; "
                           f"{np.unique(k).size} bus(es) affected")
    if opts["line_limits"] and m.limit_branch.size:
        s = np.hypot(p0[m.limit_branch], q0[m.limit_branch])
        bad = s > m.limit_bound[:, None] + 1e-9
        if bad.any():
            b, t = np.nonzero(bad)
            j = int(np.argmax(s[b, t] - m.limit_bound[b]))
            br = m.limit_branch[b[j]]
            table = feeder.lines if net.kind[br] == "line" else feeder.transformers
            ident = table.iloc[net.source_pos[br], 0]
            out.append(f"the conventional load alone loads {net.kind[br]} {ident} with {s[b[j], t[j]]:.1f} kVA at "
                       f"{w.times[t[j]]}, above its linearised limit {m.limit_bound[b[j]]:.1f} kVA")
    if not out and (opts["voltage_limits"] or (opts["line_limits"] and m.limit_branch.size)):
        out.append("LinDistFlow voltage or thermal limits may leave too little capacity for the EVs' departure "
                   "energy; soft_limits = true shows which limits need slack")
    return out


__all__ = ["OPTIONS", "LinDistFlowModel", "build", "refine", "relinearise", "seed", "price_reactive",
           "planning_voltage_limits", "branch_currents", "subtree_sums", "tree_voltages", "network_losses",
           "voltage_deviation", "diagnose"]

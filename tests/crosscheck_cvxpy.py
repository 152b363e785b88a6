r"""An independent cvxpy formulation of ordered charging + station V2G + LinDistFlow (tests only).

Issue 3 asks for "a second, independent cvxpy formulation of ordered charging + V2G +
LinDistFlow for small windows: both give the same optimum". This module is that second
formulation. It does **not** import :mod:`optev.lp` or :mod:`optev.blocks`; it reads only
data — the arrays of a :class:`~optev.blocks.window.Window` (built by the test and passed
in, duck-typed) and the feeder tables of the window's instance — and writes the
mathematics again from scratch in cvxpy's own algebra, deliberately in a different shape
where that is natural:

* battery energy is not a variable but the cumulative sum of the charge flows
  (``cp.cumsum``), with the energy bounds as constraints;
* station sums are an incidence-matrix product instead of grouped sums;
* the peak is ``cp.max`` instead of an epigraph variable.

Problem (copper plate), per window of ``T`` steps of :math:`\Delta t` hours
---------------------------------------------------------------------------
.. math::

    \min\; w_{cost}\,\Delta t\sum_t(\pi^{buy}_t B_t - \pi^{sell}_t S_t)
        + w_{peak}\max_t(B_t - S_t) + \Delta t\sum_{e,t} r_e\,p^{dis}_{e,t}

    E_{e,t} = E^0_e + \Delta t\sum_{\tau\le t}(\eta^{ch}_e p^{ch}_{e,\tau}
              - p^{dis}_{e,\tau}/\eta^{dis}_e),\qquad
    \underline E_e \le E_{e,t} \le C_e,\qquad E_{e,\tau_e} \ge E^{req}_e

    0 \le p^{ch}_{e,t} \le a_{e,t}\bar P^{ch}_e,\qquad
    0 \le p^{dis}_{e,t} \le a_{e,t}\bar P^{dis}_e

    \textstyle\sum_{e\in s}(p^{ch}_{e,t} - p^{dis}_{e,t}) \le \bar P^{site}_s,\qquad
    \sum_{e\in s} p^{dis}_{e,t} \le \bar P^{site,dis}_s
    \ \text{(where tighter than the chargers' total discharge rating)}

    B_t - S_t = \textstyle\sum_b P^{load}_{b,t} + \sum_e(p^{ch}_{e,t} - p^{dis}_{e,t}),\quad
    0 \le B \le \bar B,\ 0 \le S \le \bar S \ \text{(per substation)}

with :math:`B, S` summed over substations; :math:`E^{req}_e` is the window's planned
energy at the EV's last plugged step (departure need, terminal condition and the
one-quantum rounding margin, all computed by the window from the data);
:math:`\underline E_e` is the SOC floor for EVs that may discharge and
:math:`\min(E^0_e, C_e)` for the others; without V2G no EV discharges and the
reservation term vanishes.

Options mirror optev's blocks: station reactive power within the inverter rating (the
same inscribed K-gon, which also caps the stations' active power), and
``network="lindistflow"`` (:func:`_lindistflow`: Baran & Wu 1989 branch flows and squared
voltages with voltage limits, written per line in the orientation of the line table,
without loss correction and without line limits) with the ``network_losses``
(:func:`_losses`) and ``voltage_deviation`` terms. Features the cross-check does not model
(transformers, shunts, line limits, loss correction) raise ``NotImplementedError`` or are
switched off by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cvxpy as cp
import numpy as np


@dataclass
class CrossCheckResult:
    """Optimum of the cvxpy formulation.

    Attributes
    ----------
    status : str
        cvxpy status (``"optimal"`` when solved).
    objective : float
        Optimal objective value (same units and weights as optev's weighted objective).
    solver : str
        The cvxpy solver used.
    values : dict of ndarray
        ``p_ch``, ``p_dis``, ``e`` (EV × T), ``station_net`` (station × T), ``buy``,
        ``sell`` (substation × T) and, for LinDistFlow, ``line_p``, ``line_q`` (branch × T)
        and ``bus_v2`` (bus × T).
    """

    status: str
    objective: float
    solver: str
    values: dict[str, np.ndarray] = field(default_factory=dict)


def default_solver() -> str:
    """HiGHS through cvxpy when installed, CLARABEL otherwise."""
    return cp.HIGHS if cp.HIGHS in cp.installed_solvers() else cp.CLARABEL


@dataclass(frozen=True)
class FeederArrays:
    """The feeder's lines in per unit, read from the feeder tables (lines only, no shunts).

    Every line keeps the orientation of its table row (``from_bus`` → ``to_bus``);
    LinDistFlow does not depend on it. ``sign`` is +1 where ``from_bus`` is the end nearer
    the substation and −1 otherwise (only the ``network_losses`` expansion needs it).
    """

    n_bus: int
    frm: np.ndarray
    to: np.ndarray
    r: np.ndarray
    x: np.ndarray
    s_base_kw: float
    roots: np.ndarray
    v_root2: np.ndarray
    vmin2: np.ndarray
    vmax2: np.ndarray
    sign: np.ndarray
    ancestors: np.ndarray
    """``ancestors[k, j] = 1`` when bus j is on the path from a root to bus k (k included)."""
    child: np.ndarray
    """The end of each line away from the substation."""


def feeder_arrays(feeder: Any) -> FeederArrays:
    """Per-unit line data and the tree structure of ``feeder`` (an optev ``Feeder``)."""
    buses, lines, subs = feeder.buses, feeder.lines, feeder.substations
    if len(feeder.transformers) and feeder.transformers["in_service"].any():
        raise NotImplementedError("the cvxpy cross-check models lines only (no transformers)")
    if (buses["g_shunt_kw"].abs().sum() + buses["b_shunt_kvar"].abs().sum() + lines["b_us"].abs().sum()) > 0:
        raise NotImplementedError("the cvxpy cross-check models feeders without shunts and line charging")
    lines = lines[lines["in_service"].to_numpy(bool)]
    pos = {b: i for i, b in enumerate(buses["bus_id"])}
    n_bus = len(buses)
    frm = np.array([pos[b] for b in lines["from_bus"]], dtype=np.int64)
    to = np.array([pos[b] for b in lines["to_bus"]], dtype=np.int64)
    z_base = buses["base_kv"].to_numpy(float)[frm] ** 2 / feeder.base_mva   # Ω
    roots = np.array([pos[b] for b in subs["bus_id"]], dtype=np.int64)
    # parent of every bus by breadth-first search from the substations
    parent = np.full(n_bus, -1, dtype=np.int64)
    seen = np.zeros(n_bus, dtype=bool)
    seen[roots] = True
    frontier = list(roots)
    while frontier:
        nxt = []
        for k in frontier:
            for a, b in ((frm, to), (to, frm)):
                for j in b[a == k]:
                    if not seen[j]:
                        seen[j], parent[j] = True, k
                        nxt.append(j)
        frontier = nxt
    sign = np.where(parent[to] == frm, 1.0, -1.0)
    child = np.where(sign > 0, to, frm)
    ancestors = np.eye(n_bus)
    for k in range(n_bus):
        j = parent[k]
        while j >= 0:
            ancestors[k, j] = 1.0
            j = parent[j]
    return FeederArrays(n_bus, frm, to, lines["r_ohm"].to_numpy(float) / z_base,
                        lines["x_ohm"].to_numpy(float) / z_base, 1e3 * float(feeder.base_mva), roots,
                        subs["vm_pu"].to_numpy(float) ** 2, buses["v_min_pu"].to_numpy(float) ** 2,
                        buses["v_max_pu"].to_numpy(float) ** 2, sign, ancestors, child)


def solve_charging(window: Any, *, v2g: bool = True, energy_cost: float = 1.0, peak: float = 0.0,
                   reactive: bool = False, polygon_sides: int = 12, network: str = "copperplate",
                   voltage_limits: bool = True, network_losses: float = 0.0, voltage_deviation: float = 0.0,
                   solver: str | None = None) -> CrossCheckResult:
    """Formulate and solve ordered charging (+ V2G) on ``window`` with cvxpy.

    Parameters
    ----------
    window : Window
        The arrays of one control window (only its data is read).
    v2g : bool
        Let EVs that are eligible in the window discharge (the ``v2g`` EV option).
    energy_cost, peak : float
        Weights of the energy-cost and peak objective terms (0 drops a term).
    reactive, polygon_sides : bool, int
        Stations with V2G chargers may inject reactive power ``q`` within their inverter
        rating ``S`` (chargers × per-charger kVA); ``P² + q² ≤ S²`` is replaced by the
        regular ``polygon_sides``-gon inscribed in the circle, edges
        ``cos θ_k P + sin θ_k q ≤ S cos(π/K)``. Stations without V2G chargers draw no
        reactive power and are not limited by the polygon.
    network : {"copperplate", "lindistflow"}
        One balance for the whole feeder, or LinDistFlow (see :func:`_lindistflow`).
    voltage_limits : bool
        LinDistFlow only: keep non-root squared voltages within ``[v_min², v_max²]``.
    network_losses, voltage_deviation : float
        LinDistFlow only: weights of the linearised-loss and voltage-deviation terms.
    solver : str, optional
        cvxpy solver name (default :func:`default_solver`).
    """
    cons: list[Any] = []
    evs = _ev_energy(window, v2g, cons)
    stations = _station_power(window, evs, reactive, polygon_sides, cons)
    buy, sell = _grid_connection(window, cons)
    net_import = cp.sum(buy - sell, axis=0)
    terms, extra = _network(window, network, stations, buy, sell, net_import, cons, voltage_limits=voltage_limits,
                            network_losses=network_losses, voltage_deviation=voltage_deviation)
    terms += _cost_terms(window, evs, buy, sell, net_import, energy_cost=energy_cost, peak=peak)
    prob = cp.Problem(cp.Minimize(cp.sum(cp.hstack(terms)) if terms else cp.Constant(0.0)), cons)
    name = solver or default_solver()
    prob.solve(solver=name)
    values: dict[str, np.ndarray] = {}
    if prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        values = {"p_ch": np.asarray(evs.p_ch.value), "p_dis": np.asarray(evs.p_dis.value),
                  "e": np.asarray(evs.energy.value), "station_net": np.asarray(stations.net.value),
                  "buy": np.asarray(buy.value), "sell": np.asarray(sell.value)}
        if reactive:
            values["station_q"] = stations.q.value
        values.update({k: np.asarray(var.value) for k, var in extra.items()})
    return CrossCheckResult(prob.status, float(prob.value) if values else float("nan"), name, values)


@dataclass
class _EVEnergy:
    """The EVs' charge and discharge power (EV × T, kW) and the battery energy they give, kWh."""

    p_ch: cp.Variable
    p_dis: cp.Variable
    energy: cp.Expression
    can_dis: np.ndarray
    """Discharge rating of each EV, kW (0 for EVs that may not discharge)."""


@dataclass
class _StationPower:
    """Net active power of each station (station × T, kW) and its reactive injection, kvar."""

    net: cp.Expression
    q: Any
    """A variable with ``reactive``, zeros otherwise."""


def _ev_energy(window: Any, v2g: bool, cons: list[Any]) -> _EVEnergy:
    """EV power within the plugged ratings; energy within floor and capacity, the need met at departure."""
    ev = window.evs
    n, T = int(ev.session_id.size), int(window.times.size)
    dt = float(window.dt_h)
    ub_ch = ev.plugged * ev.p_ch_max_kw[:, None]
    can_dis = np.asarray(ev.p_dis_max_kw, float) if v2g else np.zeros(n)
    ub_dis = ev.plugged * can_dis[:, None]
    p_ch = cp.Variable((n, T), name="p_ch")
    p_dis = cp.Variable((n, T), name="p_dis")
    cons += [p_ch >= 0, p_ch <= ub_ch, p_dis >= 0, p_dis <= ub_dis]
    flow = dt * (cp.multiply(np.broadcast_to(ev.eff_ch[:, None], (n, T)), p_ch)
                 - cp.multiply(np.broadcast_to(1.0 / ev.eff_dis[:, None], (n, T)), p_dis))
    energy = np.broadcast_to(ev.e_init_kwh[:, None], (n, T)) + cp.cumsum(flow, axis=1)
    floor = np.where(can_dis > 0, ev.e_min_kwh, np.minimum(ev.e_init_kwh, ev.capacity_kwh))
    cons += [energy >= np.broadcast_to(floor[:, None], (n, T)),
             energy <= np.broadcast_to(ev.capacity_kwh[:, None], (n, T))]
    at_departure = np.zeros((n, T))
    at_departure[np.arange(n), ev.departure_step] = 1.0
    cons.append(cp.sum(cp.multiply(at_departure, energy), axis=1) >= ev.e_req_kwh)
    return _EVEnergy(p_ch, p_dis, energy, can_dis)


def _station_power(window: Any, evs: _EVEnergy, reactive: bool, polygon_sides: int, cons: list[Any]
                   ) -> _StationPower:
    """Station sums of the EVs within the site caps and, with ``reactive``, the inverters' polygon."""
    ev, st = window.evs, window.stations
    n, T = int(ev.session_id.size), int(window.times.size)
    n_st = int(st.station_id.size)
    incidence = np.zeros((n_st, n))
    incidence[ev.station, np.arange(n)] = 1.0
    station_net = incidence @ (evs.p_ch - evs.p_dis)
    cap = np.asarray(st.p_site_max_kw, float)
    rows = np.flatnonzero(np.isfinite(cap))
    if rows.size:
        cons.append(station_net[rows, :] <= np.broadcast_to(cap[rows, None], (rows.size, T)))
    dis_cap = np.asarray(st.p_site_dis_max_kw, float)
    rows = np.flatnonzero(np.isfinite(dis_cap) & (dis_cap < st.n_chargers * st.p_dis_max_kw))
    if rows.size:
        cons.append((incidence @ evs.p_dis)[rows, :] <= np.broadcast_to(dis_cap[rows, None], (rows.size, T)))
    station_q: Any = np.zeros((n_st, T))
    if reactive:
        s_max = np.where(st.p_dis_max_kw > 0, st.n_chargers * st.s_max_kva, 0.0)
        station_q = cp.Variable((n_st, T), name="station_q")
        cons += [station_q <= np.broadcast_to(s_max[:, None], (n_st, T)),
                 station_q >= -np.broadcast_to(s_max[:, None], (n_st, T))]
        v2g_st = np.flatnonzero(s_max > 0)
        edge = np.broadcast_to((s_max[v2g_st] * np.cos(np.pi / polygon_sides))[:, None], (v2g_st.size, T))
        for theta in (2.0 * np.arange(polygon_sides) + 1.0) * np.pi / polygon_sides:
            cons.append(np.cos(theta) * station_net[v2g_st, :] + np.sin(theta) * station_q[v2g_st, :] <= edge)
    return _StationPower(station_net, station_q)


def _grid_connection(window: Any, cons: list[Any]) -> tuple[cp.Variable, cp.Variable]:
    """Import ``buy`` and export ``sell`` of each substation (substation × T, kW) within its limits."""
    subs = window.instance.feeder.substations
    T = int(window.times.size)
    n_sub = max(len(subs), 1)
    imp = subs["p_import_max_kw"].to_numpy(float) if len(subs) else np.array([np.inf])
    exp = subs["p_export_max_kw"].to_numpy(float) if len(subs) else np.array([np.inf])
    buy = cp.Variable((n_sub, T), name="buy")
    sell = cp.Variable((n_sub, T), name="sell")
    cons += [buy >= 0, sell >= 0]
    for bound, var in ((imp, buy), (exp, sell)):
        rows = np.flatnonzero(np.isfinite(bound))
        if rows.size:
            cons.append(var[rows, :] <= np.broadcast_to(bound[rows, None], (rows.size, T)))
    return buy, sell


def _network(window: Any, network: str, stations: _StationPower, buy: cp.Variable, sell: cp.Variable,
             net_import: cp.Expression, cons: list[Any], *, voltage_limits: bool, network_losses: float,
             voltage_deviation: float) -> tuple[list[Any], dict[str, Any]]:
    """The network's constraints; its objective terms and its variables to report (LinDistFlow)."""
    terms: list[Any] = []
    extra: dict[str, Any] = {}
    if network == "copperplate":
        cons.append(net_import == window.load_p_kw.sum(axis=1) + cp.sum(stations.net, axis=0))
    elif network == "lindistflow":
        extra = _lindistflow(window, stations.net, stations.q, buy, sell, cons, voltage_limits)
        fa, line_p, line_q, v = extra.pop("_feeder"), extra["line_p"], extra["line_q"], extra["bus_v2"]
        if network_losses:
            terms.append(network_losses * _losses(window, fa, line_p, line_q, v))
        if voltage_deviation:
            nonroot = np.setdiff1d(np.arange(fa.n_bus), fa.roots)
            terms.append(voltage_deviation * cp.sum(cp.abs(v[nonroot, :] - 1.0)))
    else:
        raise ValueError(f"unknown network {network!r}")
    if network != "lindistflow" and (network_losses or voltage_deviation):
        raise ValueError("network_losses and voltage_deviation need network='lindistflow'")
    return terms, extra


def _cost_terms(window: Any, evs: _EVEnergy, buy: cp.Variable, sell: cp.Variable, net_import: cp.Expression, *,
                energy_cost: float, peak: float) -> list[Any]:
    """Energy cost, peak import and the reservation price of V2G discharge."""
    dt = float(window.dt_h)
    terms: list[Any] = []
    if energy_cost:
        terms.append(energy_cost * dt * (window.price_buy @ cp.sum(buy, axis=0)
                                         - window.price_sell @ cp.sum(sell, axis=0)))
    if peak:
        terms.append(peak * cp.max(net_import))
    if (evs.can_dis > 0).any():
        n, T = evs.p_dis.shape
        terms.append(dt * cp.sum(cp.multiply(np.broadcast_to(window.evs.reservation_price[:, None], (n, T)),
                                             evs.p_dis)))
    return terms


def _lindistflow(window: Any, station_net: Any, station_q: Any, buy: Any, sell: Any, cons: list[Any],
                 voltage_limits: bool) -> dict[str, Any]:
    r"""LinDistFlow (Baran & Wu 1989) without losses and line limits.

    For every line ``l`` from bus ``f`` to bus ``g`` (table orientation) with flows
    :math:`P_l, Q_l` (kW, kvar, positive f → g) and squared voltages :math:`v` (p.u.²):

    .. math::
        v_g = v_f - 2\,(r_l P_l + x_l Q_l)/S_B

        \sum_{s@k}(-P^{net}_s) + [k\,\text{root}](B - S) + \sum_{l:\,g(l)=k}P_l
        - \sum_{l:\,f(l)=k}P_l = P^{load}_k

    and the same for reactive power with the stations' :math:`q` and a free reactive
    import at the roots; roots at their set point :math:`|V^0|^2`, other buses within
    :math:`[\underline v^2, \overline v^2]` when ``voltage_limits``.
    """
    fa = feeder_arrays(window.instance.feeder)
    T = int(window.times.size)
    st = window.stations
    if (st.bus < 0).any():
        raise ValueError("every station needs a feeder bus for LinDistFlow")
    n_line = fa.frm.size
    at_from = np.zeros((fa.n_bus, n_line))
    at_from[fa.frm, np.arange(n_line)] = 1.0
    at_to = np.zeros((fa.n_bus, n_line))
    at_to[fa.to, np.arange(n_line)] = 1.0
    st_at = np.zeros((fa.n_bus, st.bus.size))
    st_at[st.bus, np.arange(st.bus.size)] = 1.0
    sub_at = np.zeros((fa.n_bus, fa.roots.size))
    sub_at[fa.roots, np.arange(fa.roots.size)] = 1.0

    line_p = cp.Variable((n_line, T), name="line_p")
    line_q = cp.Variable((n_line, T), name="line_q")
    v = cp.Variable((fa.n_bus, T), name="bus_v2")
    grid_q = cp.Variable((fa.roots.size, T), name="grid_q")
    cons.append(-(st_at @ station_net) + sub_at @ (buy - sell) + (at_to - at_from) @ line_p
                == window.load_p_kw.T)
    cons.append(st_at @ station_q + sub_at @ grid_q + (at_to - at_from) @ line_q == window.load_q_kvar.T)
    cons.append(at_to.T @ v == at_from.T @ v - 2.0 * (cp.multiply(np.broadcast_to(fa.r[:, None], (n_line, T)),
                                                                   line_p)
                                                       + cp.multiply(np.broadcast_to(fa.x[:, None], (n_line, T)),
                                                                     line_q)) / fa.s_base_kw)
    cons.append(v[fa.roots, :] == np.broadcast_to(fa.v_root2[:, None], (fa.roots.size, T)))
    if voltage_limits:
        nonroot = np.setdiff1d(np.arange(fa.n_bus), fa.roots)
        cons += [v[nonroot, :] >= np.broadcast_to(fa.vmin2[nonroot, None], (nonroot.size, T)),
                 v[nonroot, :] <= np.broadcast_to(fa.vmax2[nonroot, None], (nonroot.size, T))]
    return {"_feeder": fa, "line_p": line_p, "line_q": line_q, "bus_v2": v, "grid_q": grid_q}


def _losses(window: Any, fa: FeederArrays, line_p: Any, line_q: Any, v: Any) -> Any:
    r"""Series losses linearised at the lossless flow of the conventional load, kWh.

    With flows oriented away from the substation (``P = sign · line_p``), sending-end
    squared voltage ``w`` and the operating point :math:`(P^0, Q^0, w^0)` of the
    conventional load alone (lossless LinDistFlow, EVs idle), the first-order expansion of
    :math:`r(P^2+Q^2)/(S_B w)` is
    :math:`\frac{2rP^0}{S_B w^0}P + \frac{2rQ^0}{S_B w^0}Q - \frac{r(P_0^2+Q_0^2)}{S_B w_0^2}w`,
    summed over lines and steps and multiplied by :math:`\Delta t`.
    """
    load_p, load_q = window.load_p_kw.T, window.load_q_kvar.T                # bus × T
    below = fa.ancestors.T[fa.child]                                         # line × bus: bus in subtree
    p0, q0 = below @ load_p, below @ load_q                                  # line × T, away from the root
    drop_at = np.zeros((fa.n_bus, p0.shape[1]))
    drop_at[fa.child] = 2.0 * (fa.r[:, None] * p0 + fa.x[:, None] * q0) / fa.s_base_kw
    root_v2 = np.zeros(fa.n_bus)
    root_v2[fa.roots] = fa.v_root2
    v0 = fa.ancestors @ root_v2[:, None] - fa.ancestors @ drop_at             # bus × T
    sending = np.where(fa.sign > 0, fa.frm, fa.to)
    w0 = np.maximum(v0[sending], 1e-6)
    r = fa.r[:, None]
    s = fa.s_base_kw
    a_p = 2.0 * r * p0 / (s * w0) * fa.sign[:, None]
    a_q = 2.0 * r * q0 / (s * w0) * fa.sign[:, None]
    a_v = -r * (p0 ** 2 + q0 ** 2) / (s * w0 ** 2)
    return float(window.dt_h) * (cp.sum(cp.multiply(a_p, line_p)) + cp.sum(cp.multiply(a_q, line_q))
                                 + cp.sum(cp.multiply(a_v, v[sending, :])))

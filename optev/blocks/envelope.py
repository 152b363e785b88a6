r"""Station flexibility envelope: the ``aggregate`` station variant (R6.2.1, R6.2.3.3).

Instead of one set of variables per EV session, each station (or any group of sessions,
for the city → region → station hierarchy) is modelled as one *virtual battery* whose
power and cumulative-energy bounds over the window are the sums of its sessions' bounds
— the generalized battery model of aggregate flexibility (Hao, Sanandaji, Poolla and
Vincent, "Aggregate flexibility of thermostatically controlled loads", IEEE Trans. Power
Syst. 30(1), 2015) in the form used for plug-in EV fleets with arrivals and departures
(H. Zhang, Z. Hu, Z. Xu and Y. Song, "Evaluation of achievable vehicle-to-grid capacity
using aggregate PEV model", IEEE Trans. Power Syst. 32(1), 2017; see also Müller,
Szabó, Sundström and Lygeros, "Aggregation and disaggregation of energetic flexibility
from distributed energy resources", IEEE Trans. Smart Grid 10(2), 2019).

Sets
    :math:`g \in \mathcal{G}` groups (stations), :math:`e \in \mathcal{E}_g` EV sessions
    of group g, :math:`t \in \{0..T-1\}` steps of :math:`\Delta t` h.

Per-session parameters (:class:`~optev.blocks.window.EVArrays`)
    :math:`a_{e,t}` plugged fraction, :math:`\bar P^{ch}_e, \bar P^{dis}_e` kW (grid side),
    :math:`\eta^{ch}_e, \eta^{dis}_e`, :math:`E^0_e, \underline E_e, C_e, E^{req}_e` kWh.
    Battery-side energy of a full step: :math:`U_e = \eta^{ch}_e\bar P^{ch}_e\Delta t`
    (charging), :math:`D_e = \bar P^{dis}_e\Delta t/\eta^{dis}_e` (discharging).
    Plugged steps up to and including t: :math:`n^{\le}_{e,t} = \sum_{\tau\le t} a_{e,\tau}`;
    after t: :math:`n^{>}_{e,t} = \sum_{\tau>t} a_{e,\tau}` (0 from the last plugged step on).

Per-session cumulative-energy bounds (kWh charged into the battery since window start,
at the end of step t; exactly the projection of one session's feasible set on step t)
    .. math::

        \underline x_{e,t} = \max\bigl(\underline E_e - E^0_e,\; -D_e n^{\le}_{e,t},\;
                                       E^{req}_e - E^0_e - U_e n^{>}_{e,t}\bigr),\qquad
        \bar x_{e,t} = \min\bigl(C_e - E^0_e,\; U_e n^{\le}_{e,t}\bigr)

    The lower bound is the latest-charging trajectory: the SOC floor, the most the EV can
    have discharged so far, and what it must already hold to still reach its departure
    energy charging at full power in every later plugged step. The upper bound is the
    earliest-charging trajectory. Before arrival both are 0; after departure both are
    frozen (the session's energy has left with the EV but stays in the cumulative sum).

Envelope of group g (:func:`envelope`)
    :math:`\bar P^{ch}_{g,t} = \sum_{e\in\mathcal{E}_g} a_{e,t}\bar P^{ch}_e`,
    :math:`\bar P^{dis}_{g,t} = \sum_{e} a_{e,t}\bar P^{dis}_e` (kW, V2G sessions only have
    :math:`\bar P^{dis}>0`), :math:`\underline X_{g,t} = \sum_e \underline x_{e,t}`,
    :math:`\bar X_{g,t} = \sum_e \bar x_{e,t}` (kWh), efficiencies
    :math:`\bar\eta^{ch}_g` (mean of :math:`\eta^{ch}_e` weighted by :math:`\bar P^{ch}_e`),
    :math:`\bar\eta^{dis}_g` (weighted by :math:`\bar P^{dis}_e`), and the V2G reservation
    price :math:`\bar r_{g,t}` (mean of :math:`r_e` weighted by :math:`a_{e,t}\bar P^{dis}_e`,
    option ``reservation = "mean"``, or the lowest :math:`r_e` of a plugged V2G session,
    ``"min"``).

Variables
    ``station_p_ch[g,t]`` :math:`P^{ch}_{g,t}\in[0,\bar P^{ch}_{g,t}]` kW,
    ``station_p_dis[g,t]`` :math:`P^{dis}_{g,t}\in[0,\bar P^{dis}_{g,t}]` kW,
    ``station_e[g,t]`` :math:`X_{g,t}\in[\underline X_{g,t},\bar X_{g,t}]` kWh,
    ``station_shortfall[g]`` :math:`\sigma_g\ge 0` kWh (soft departure only).

Interval bounds (option ``intervals``)
    The per-step bounds let one session's spare power combine with another's spare energy
    room; bounds on the change over k steps remove much of that looseness while keeping
    the relaxation valid. For a session, :math:`x_{e,t}-x_{e,s}` lies in
    :math:`[\underline\Delta_{e,s,t},\bar\Delta_{e,s,t}]` with
    :math:`\bar\Delta = \min(U_e n_{e,(s,t]},\ \bar x_{e,t}-\underline x_{e,s})` and
    :math:`\underline\Delta = \max(-D_e n_{e,(s,t]},\ \underline x_{e,t}-\bar x_{e,s})`
    (:math:`n_{e,(s,t]}` plugged steps in between); their group sums bound
    :math:`X_{g,t}-X_{g,s}` for the lags :math:`k = t-s` of :func:`auto_lags` (1, 2, 3, 4, 6,
    8, 12, …, about :math:`2\log_2 T` lags, so :math:`O(G\,T\log T)` rows). They also stop
    the group from using the energy room of sessions that have already left.

Option ``departed``
    ``free`` (default) keeps the above. ``need`` pins a session that leaves in the window to
    its required energy from its last plugged step on (:math:`\bar x = \underline x` there),
    the usual assumption of aggregate EV models that EVs leave with their required energy:
    tighter, but no longer a relaxation (it excludes schedules that leave an EV fuller than
    it needs). Without the interval bounds it removes much of the looseness; with them it
    adds little.

Constraints
    ``station_energy_balance``: :math:`X_{g,t} = X_{g,t-1} + \Delta t\,(\bar\eta^{ch}_g
    P^{ch}_{g,t} - P^{dis}_{g,t}/\bar\eta^{dis}_g)`, :math:`X_{g,-1} = 0`;
    ``station_energy_interval_up`` / ``station_energy_interval_down``:
    :math:`\sum_{e}\underline\Delta_{e,s,t} - \sigma_g \le X_{g,t}-X_{g,s} \le
    \sum_e\bar\Delta_{e,s,t} + \sigma_g` (:math:`\sigma_g = 0` with hard departures; both
    sides depend on the departure needs through :math:`\underline x`);
    ``station_energy_lower`` (soft departure, or hard with ``soft_limits``):
    :math:`X_{g,t} + \sigma_g \ge \underline X_{g,t}` instead of the bound — one shortfall
    per station relaxes every step's floor, as the sum of the sessions' shortfalls does in
    the per-EV model; plus the site caps, reactive power and bus injection of
    :func:`optev.blocks.station_limits.declare_station_limits` (shared with the per-EV variant).

Objective contributions
    ``station_v2g_reservation`` :math:`\sum_{g,t}\bar r_{g,t}P^{dis}_{g,t}\Delta t`;
    ``station_shortfall_penalty`` :math:`\pi^{short}\sum_g\sigma_g` (soft departure; the
    EV block's ``shortfall_penalty_per_kwh``).

Approximation
    The envelope is an *outer* approximation (a relaxation): the set of aggregate
    trajectories that the EVs can realise together (the Minkowski sum of the sessions'
    feasible sets) is contained in the set the summed bounds describe, usually strictly —
    the summed bounds allow, for example, one session's spare power to be combined with
    another session's spare energy room. A station schedule feasible for the envelope is
    therefore not always realisable by the EVs; the disaggregation
    (:mod:`optev.blocks.disaggregate`) then clips it to what the EVs can do, protecting
    departure needs first, and the shortfall or setpoint gap is reported. With the
    ``mean`` efficiencies the model is exact in energy only when a station's sessions share
    their efficiencies (otherwise a further approximation); with equal efficiencies and
    ``reservation = "min"`` the aggregate optimum is a lower bound on the per-EV optimum.
    Simultaneous :math:`P^{ch}` and :math:`P^{dis}` at one station only dissipate energy; the
    LP does it only when that pays, and the disaggregation allocates the net power. With
    V2G the envelope also lets energy move between a station's EVs without the round-trip
    losses a real transfer (one EV discharging while another charges) would incur.

Disaggregation
    :func:`disaggregation_guide` splits the station's optimal energy trajectory among its
    EVs in proportion to each EV's own envelope; :mod:`optev.compose.results` passes it as
    the guide of :func:`~optev.blocks.disaggregate.disaggregate`, with departure needs
    enforced (hard departures).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from optev.blocks.context import ModelContext
from optev.blocks.station_limits import declare_station_limits
from optev.blocks.window import EVArrays
from optev.errors import DataError
from optev.tolerances import ENVELOPE_ENERGY_ATOL_KWH

OPTIONS: dict[str, tuple[Any, str]] = {
    "departed": ("free", "energy of EVs that left in the window: `free` (anywhere in their bounds: the envelope is a "
                         "relaxation) or `need` (exactly their required energy, the usual assumption of aggregate EV "
                         "models: tighter, but no longer a relaxation)"),
    "intervals": ("auto", "lags k of the interval constraints on X[t] − X[t−k] (sums of what each session can gain "
                          "or lose over k steps): `auto` (1, 2, 3, 4, 6, 8, 12, 16, … below T), a list of lags, or "
                          "`none`"),
    "reservation": ("mean", "V2G reservation price of a station's discharge: `mean` (of the plugged V2G sessions, "
                            "weighted by their discharge limits) or `min` (cheapest plugged V2G session: the "
                            "aggregate cost is then a lower bound of the per-EV cost)"),
}

ENERGY_ATOL_KWH = ENVELOPE_ENERGY_ATOL_KWH
"""Energy below which an envelope's width, or its floor's excess over what can be reached
(diagnostics), counts as zero, kWh (:data:`optev.tolerances.ENVELOPE_ENERGY_ATOL_KWH`)."""


@dataclass(frozen=True)
class Envelope:
    """Flexibility envelope of groups of EV sessions (see module docstring).

    Attributes
    ----------
    p_ch_max_kw, p_dis_max_kw : ndarray (G, T)
        Grid-side charge and discharge power limits, kW.
    e_lower_kwh, e_upper_kwh : ndarray (G, T)
        Bounds of the cumulative battery-side energy charged since the window start, at
        the end of each step, kWh.
    eff_ch, eff_dis : ndarray (G,)
        Group charge and discharge efficiencies (power-weighted means; 1 for empty groups).
    reservation_mean, reservation_min : ndarray (G, T)
        Weighted-mean and lowest V2G reservation price of the plugged V2G sessions,
        currency/kWh (0 where none is plugged).
    n_sessions : ndarray (G,)
        Sessions per group.
    departed_at_need : bool
        Whether sessions that left are pinned to their required energy (option ``departed``).
    interval_lags : tuple of int
        Lags k of the interval bounds.
    interval_start, interval_end : ndarray (m,)
        Step pairs (s, t = s + k) of the interval bounds, all lags concatenated.
    interval_up_kwh, interval_down_kwh : ndarray (G, m)
        Most and least cumulative energy the group can gain from the end of step s to the
        end of step t, kWh.
    """

    p_ch_max_kw: np.ndarray
    p_dis_max_kw: np.ndarray
    e_lower_kwh: np.ndarray
    e_upper_kwh: np.ndarray
    eff_ch: np.ndarray
    eff_dis: np.ndarray
    reservation_mean: np.ndarray
    reservation_min: np.ndarray
    n_sessions: np.ndarray
    departed_at_need: bool = False
    interval_lags: tuple[int, ...] = ()
    interval_start: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    interval_end: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    interval_up_kwh: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    interval_down_kwh: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))


def auto_lags(steps: int) -> tuple[int, ...]:
    """Default interval lags: 1, 2, 3, 4, 6, 8, 12, 16, 24, … (powers of two and 1.5 times
    them) below ``steps`` — about 2·log2(T) lags."""
    lags = {1, 2, 3}
    k = 4
    while k < steps:
        lags.update((k, k * 3 // 2))
        k *= 2
    return tuple(sorted(x for x in lags if x < steps))


def session_energy_bounds(evs: EVArrays, dt_h: float, departed_at_need: bool = False
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Per-session bounds of the cumulative battery-side energy (kWh), shape (n, T) each.

    Returns ``(lower, upper)``: the latest- and earliest-charging trajectories of the
    module docstring, relative to each session's energy at the window start. With
    ``departed_at_need`` a session that leaves in the window is pinned to its required
    energy from its last plugged step on (upper = lower there).
    """
    a = np.asarray(evs.plugged, float)
    n_le = np.cumsum(a, axis=1)
    n_gt = n_le[:, -1:] - n_le if a.shape[1] else n_le
    u = (evs.eff_ch * evs.p_ch_max_kw * dt_h)[:, None]
    d = (evs.p_dis_max_kw * dt_h / evs.eff_dis)[:, None]
    e0 = evs.e_init_kwh[:, None]
    lower = np.maximum(np.maximum(evs.e_min_kwh[:, None] - e0, -d * n_le), evs.e_req_kwh[:, None] - e0 - u * n_gt)
    upper = np.minimum(evs.capacity_kwh[:, None] - e0, u * n_le)
    if departed_at_need:
        gone = (np.arange(a.shape[1])[None, :] >= evs.departure_step[:, None]) & evs.departs_in_window[:, None]
        upper = np.where(gone, np.minimum(lower, upper), upper)
    return lower, upper


def _indicator(groups: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """Sparse (G × n) matrix with a 1 where session e belongs to group g (−1: in none)."""
    groups = np.asarray(groups, dtype=np.int64)
    keep = np.flatnonzero(groups >= 0)
    return sp.csr_matrix((np.ones(keep.size), (groups[keep], keep)), shape=(n_groups, groups.size))


def envelope(evs: EVArrays, dt_h: float, n_stations: int, groups: np.ndarray | None = None, *,
             departed_at_need: bool = False, lags: tuple[int, ...] | str | None = "auto") -> Envelope:
    """Flexibility envelope of each station (or of any grouping of the sessions).

    Parameters
    ----------
    evs : EVArrays
        The window's EV sessions.
    dt_h : float
        Step length, h.
    n_stations : int
        Number of groups G (rows of the result).
    groups : ndarray of int, optional
        Group of each session in ``[0, G)`` (−1 leaves a session out); default
        ``evs.station``. A region passes the region of each session's station.
    departed_at_need : bool
        Pin sessions that leave in the window to their required energy (see
        :func:`session_energy_bounds`); False keeps the envelope a relaxation.
    lags : tuple of int, "auto" or None
        Lags of the interval bounds (None or ``()``: none; ``"auto"``: :func:`auto_lags`).

    Returns
    -------
    Envelope
        Sums over each group's sessions, computed with one sparse group-sum per quantity
        (no loop over sessions or steps).
    """
    g = evs.station if groups is None else np.asarray(groups, dtype=np.int64)
    if g.shape != (evs.n,):
        raise DataError(f"envelope: groups has shape {g.shape}, expected ({evs.n},)")
    if evs.n and (g.max() >= n_stations or g.min() < -1):
        raise DataError(f"envelope: group indices must lie in [-1, {n_stations}), got {g.min()}..{g.max()}")
    S = _indicator(g, n_stations)
    a = np.asarray(evs.plugged, float)
    lower, upper = session_energy_bounds(evs, dt_h, departed_at_need)
    p_dis_plugged = a * evs.p_dis_max_kw[:, None]
    p_dis_max = np.asarray(S @ p_dis_plugged)
    w_ch = S @ evs.p_ch_max_kw
    w_dis = S @ evs.p_dis_max_kw
    eff_ch = np.where(w_ch > 0, (S @ (evs.p_ch_max_kw * evs.eff_ch)) / np.where(w_ch > 0, w_ch, 1.0), 1.0)
    eff_dis = np.where(w_dis > 0, (S @ (evs.p_dis_max_kw * evs.eff_dis)) / np.where(w_dis > 0, w_dis, 1.0), 1.0)
    res_mean = np.where(p_dis_max > 0, np.asarray(S @ (p_dis_plugged * evs.reservation_price[:, None]))
                        / np.where(p_dis_max > 0, p_dis_max, 1.0), 0.0)
    # lowest reservation price among plugged V2G sessions: a grouped minimum over sessions
    T = a.shape[1]
    res_min = np.full((n_stations, T), np.inf)
    v2g_steps = (p_dis_plugged > 0) & (g[:, None] >= 0)
    ei, ti = np.nonzero(v2g_steps)
    np.minimum.at(res_min, (g[ei], ti), evs.reservation_price[ei])
    res_min[~np.isfinite(res_min)] = 0.0
    # interval bounds: per session, x[t] − x[s] ∈ [max(−D·n(s,t], x_lo[t] − x_hi[s]), min(U·n(s,t], x_hi[t] − x_lo[s])]
    if isinstance(lags, str):
        if lags != "auto":
            raise DataError(f"envelope: lags must be 'auto', a list of positive integers or none, got {lags!r}")
        lags = auto_lags(T)
    lag_tuple = tuple(sorted({int(k) for k in (lags or ()) if 0 < int(k) < T}))
    n_le = np.cumsum(a, axis=1)
    u = (evs.eff_ch * evs.p_ch_max_kw * dt_h)[:, None]
    d = (evs.p_dis_max_kw * dt_h / evs.eff_dis)[:, None]
    starts, ends, ups, downs = [], [], [], []
    for k in lag_tuple:  # a handful of lags (≈ 2·log2 T); each is vectorised over sessions and steps
        count = n_le[:, k:] - n_le[:, :-k]
        ups.append(np.asarray(S @ np.minimum(u * count, upper[:, k:] - lower[:, :-k])))
        downs.append(np.asarray(S @ np.maximum(-d * count, lower[:, k:] - upper[:, :-k])))
        starts.append(np.arange(T - k))
        ends.append(np.arange(k, T))
    cat = (lambda xs, empty: np.concatenate(xs, axis=-1) if xs else empty)
    return Envelope(
        p_ch_max_kw=np.asarray(S @ (a * evs.p_ch_max_kw[:, None])), p_dis_max_kw=p_dis_max,
        e_lower_kwh=np.asarray(S @ lower), e_upper_kwh=np.asarray(S @ upper),
        eff_ch=np.asarray(eff_ch, float), eff_dis=np.asarray(eff_dis, float),
        reservation_mean=res_mean, reservation_min=res_min,
        n_sessions=np.bincount(g[g >= 0], minlength=n_stations), departed_at_need=departed_at_need,
        interval_lags=lag_tuple, interval_start=cat(starts, np.zeros(0, dtype=np.int64)),
        interval_end=cat(ends, np.zeros(0, dtype=np.int64)), interval_up_kwh=cat(ups, np.zeros((n_stations, 0))),
        interval_down_kwh=cat(downs, np.zeros((n_stations, 0))),
    )


def disaggregation_guide(evs: EVArrays, dt_h: float, station_e_kwh: np.ndarray,
                         groups: np.ndarray | None = None, *, departed_at_need: bool = False) -> np.ndarray:
    r"""Per-EV guide (n × T, kW, charge positive) that splits a station's energy trajectory.

    Each group's cumulative energy :math:`X_{g,t}` (``station_e``) sits at the fraction
    :math:`\theta_{g,t} = (X_{g,t}-\underline X_{g,t})/(\bar X_{g,t}-\underline X_{g,t})\in[0,1]`
    of its envelope; each session gets the same fraction of its own bounds,
    :math:`x_{e,t} = \underline x_{e,t} + \theta_{g,t}(\bar x_{e,t}-\underline x_{e,t})`, so the
    sessions' energies sum to :math:`X_{g,t}` exactly, every session stays within its own
    energy bounds — above its latest-charging trajectory, hence on course for its departure
    energy — and urgent sessions get energy first. The guide is the grid-side power of the
    increments (:math:`\Delta x/(\eta^{ch}\Delta t)` when charging,
    :math:`\Delta x\,\eta^{dis}/\Delta t` when discharging); it may exceed a session's power
    limit when :math:`\theta` moves fast, which :func:`~optev.blocks.disaggregate.disaggregate`
    then clips, giving the quanta to other sessions and catching up later.
    """
    g = evs.station if groups is None else np.asarray(groups, dtype=np.int64)
    n_groups = station_e_kwh.shape[0]
    S = _indicator(g, n_groups)
    lower, upper = session_energy_bounds(evs, dt_h, departed_at_need)
    lo_g, hi_g = np.asarray(S @ lower), np.asarray(S @ upper)
    width = hi_g - lo_g
    theta = np.where(width > ENERGY_ATOL_KWH, (station_e_kwh - lo_g) / np.where(width > 0, width, 1.0), 0.0)
    theta = np.clip(theta, 0.0, 1.0)
    x = lower + np.where(g[:, None] >= 0, theta[np.maximum(g, 0)], 0.0) * (upper - lower)
    dx = np.diff(x, axis=1, prepend=0.0)
    return np.where(dx > 0, dx / (evs.eff_ch[:, None] * dt_h), dx * evs.eff_dis[:, None] / dt_h) * (evs.plugged > 0)


def build(ctx: ModelContext, options: dict[str, Any], variant: str = "aggregate") -> None:
    """Declare the aggregate station block (see module docstring)."""
    if "ev_arrays" not in ctx.handles or "ev_p_ch" in ctx.handles:
        raise DataError("station variant 'aggregate' needs the ev block (variant 'per_ev') built before it, "
                        "without per-EV variables")
    reservation = options.get("reservation", "mean")
    if reservation not in ("mean", "min"):
        raise DataError(f"station option reservation must be 'mean' or 'min', got {reservation!r}")
    departed = options.get("departed", "free")
    if departed not in ("free", "need"):
        raise DataError(f"station option departed must be 'free' or 'need', got {departed!r}")
    lags = options.get("intervals", "auto")
    if lags in ("none", None, False):
        lags = ()
    elif not (lags == "auto" or (isinstance(lags, (list, tuple)) and all(isinstance(k, int) and k > 0 for k in lags))):
        raise DataError(f"station option intervals must be 'auto', 'none' or a list of positive integers, got {lags!r}")
    w = ctx.window
    lp = ctx.lp
    evs: EVArrays = ctx.handles["ev_arrays"]
    n_st, T, dt = w.stations.n, w.steps, w.dt_h
    env = envelope(evs, dt, n_st, departed_at_need=departed == "need", lags=lags)
    ev_options = ctx.options.get("ev", {})
    soft = ev_options.get("departure", "hard") == "soft"
    p_ch = lp.add_variables("station_p_ch", (n_st, T), 0.0, env.p_ch_max_kw,
                            description="station charging power (envelope), grid side, kW")
    p_dis = lp.add_variables("station_p_dis", (n_st, T), 0.0, env.p_dis_max_kw,
                             description="station discharging power (envelope), grid side, kW")
    short = None
    if soft:
        short = lp.add_variables("station_shortfall", n_st, 0.0, np.inf,
                                 description="energy missing against the envelope floor, kWh")
        lp.add_objective("station_shortfall_penalty", short, float(ev_options["shortfall_penalty_per_kwh"]))
        ctx.handles["station_shortfall"] = short
    else:
        short = ctx.slack("station_energy_lower", (n_st,))
    e_lo = env.e_lower_kwh if short is None else np.full((n_st, T), -np.inf)
    e = lp.add_variables("station_e", (n_st, T), e_lo, env.e_upper_kwh,
                         description="cumulative battery-side energy charged since window start, kWh")
    if short is not None:
        lp.add_constraints("station_energy_lower", e + short[:, None], ">=", env.e_lower_kwh)
    if env.interval_start.size:
        gain = e[:, env.interval_end] - e[:, env.interval_start]
        lp.add_constraints("station_energy_interval_up", gain if short is None else gain - short[:, None], "<=",
                           env.interval_up_kwh)
        lp.add_constraints("station_energy_interval_down", gain if short is None else gain + short[:, None], ">=",
                           env.interval_down_kwh)
    delta = dt * (p_ch * env.eff_ch[:, None] - p_dis * (1.0 / env.eff_dis)[:, None])
    lp.add_constraints("station_energy_balance_first", e[:, 0] - delta[:, 0], "==", 0.0)
    if T > 1:
        lp.add_constraints("station_energy_balance", e[:, 1:] - e[:, :-1] - delta[:, 1:], "==", 0.0)
    price = env.reservation_mean if reservation == "mean" else env.reservation_min
    if (env.p_dis_max_kw > 0).any():
        lp.add_objective("station_v2g_reservation", p_dis * (dt * price))
    declare_station_limits(ctx, p_ch, p_dis, options)
    ctx.handles.update(station_e=e, station_envelope=env)
    ctx.diagnostics.append(diagnose)


def diagnose(ctx: ModelContext) -> list[str]:
    """Stations whose envelope floor cannot be reached even charging at the envelope's (and
    the site cap's) full power from the window start."""
    env: Envelope | None = ctx.handles.get("station_envelope")
    if env is None:
        return []
    w = ctx.window
    st = w.stations
    cap = np.where(np.isfinite(st.p_site_max_kw), st.p_site_max_kw, np.inf)[:, None]
    reach = np.minimum(np.cumsum(w.dt_h * env.eff_ch[:, None] * np.minimum(env.p_ch_max_kw, cap), axis=1),
                       env.e_upper_kwh)
    gap = env.e_lower_kwh - reach
    bad_st = np.flatnonzero((gap > ENERGY_ATOL_KWH).any(axis=1))
    out = []
    for s in bad_st[:5]:
        t = int(np.argmax(gap[s] > ENERGY_ATOL_KWH))
        out.append(f"station {st.station_id[s]}: its EVs need at least {env.e_lower_kwh[s, t]:.1f} kWh charged by "
                   f"step {t} ({w.times[t]}) for their departures, but at most {reach[s, t]:.1f} kWh can be "
                   f"charged by then (charger and site limits)")
    if bad_st.size > 5:
        out.append(f"... and {bad_st.size - 5} more stations")
    return out

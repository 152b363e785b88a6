r"""Adjustable-capacity curves: how far each station, region and the city can move its charging (R6.2.1).

For a decision time :math:`t_0` (``at``) and the steps of the next ``horizon`` (24 h of 15 min by
default), :func:`flex_curves` publishes, per scope (``station``, ``region``, ``city``), scope id
and step, the bounds of the aggregate charging power and of the cumulative energy, the energy
still needed, an uncontrolled reference, and how much charging can be shed or added and for how
long — from the EVs plugged in now plus the forecast arrivals, with the arrivals' uncertainty.

One implementation
------------------
The curves are the optimiser's own station envelopes, not a second model of them:

1. **The window.** The EV sessions are those of the rolling-horizon controller's window for the
   same state and forecast: :func:`controller_window` asks
   :meth:`optev.mpc.Controller.window` (what :meth:`~optev.mpc.Controller.step` builds before it
   solves), so the plugged EVs (with their measured energy, expected departure and need), the
   forecast arrivals (:mod:`optev.mpc.forecast`, default the seasonal profile), the arrival
   reserve of the first interval and the lowering of needs that full power can no longer reach
   are exactly those the optimiser sees. The formulation's options that change the per-EV data
   are applied as its blocks apply them (``[blocks.ev] v2g = false`` removes discharge,
   :mod:`optev.blocks.ev`; ``[blocks.station] departed`` of the ``aggregate`` variant).
2. **The bounds.** The expected power and energy bounds of every scope are
   :func:`optev.blocks.envelope.envelope` of the window's sessions grouped by station, region or
   city (for stations: exactly the ``station_envelope`` the ``aggregate`` station block builds
   its LP from). Parts and scenarios are the same per-session bounds
   (:func:`~optev.blocks.envelope.session_energy_bounds`) summed with other weights.

The state "now" is a :class:`~optev.mpc.state.ControlState` (a dispatch service's measured
state) or, by default, :func:`uncontrolled_state`: the sessions of the instance's ``sessions``
table plugged in at :math:`t_0`, with the energy the uncontrolled baseline has given them by
then (:func:`optev.blocks.window.baseline_energy`: full power from arrival to the target). An
instance without sessions has no default state: pass one (an empty state is valid: the curves
then come from the forecast arrivals alone).

Notation
--------
Session :math:`e` of the window (plugged now or forecast), step :math:`t = 0..T-1` of length
:math:`\Delta t` h; :math:`a_{e,t}` plugged for the whole step, :math:`\bar P^{ch}_e,
\bar P^{dis}_e` kW (grid side), :math:`\eta^{ch}_e, \eta^{dis}_e`, :math:`E^0_e` kWh at the
window start (or arrival), :math:`E^{req}_e` the energy planned at its last plugged step,
:math:`E^{need}_e \le E^{req}_e` the need without the setpoint-rounding margin
(:mod:`optev.blocks.window`), :math:`U_e = \eta^{ch}_e\bar P^{ch}_e\Delta t`,
:math:`n^{\le}_{e,t} = \sum_{\tau\le t}a_{e,\tau}`, and :math:`[\underline x_{e,t},\bar x_{e,t}]`
the session's cumulative-energy bounds (:mod:`optev.blocks.envelope`). Sums over the sessions
of a scope group :math:`g` with weights :math:`w_e` (below) are written :math:`\sum_e`.

*Reference (uncontrolled) trajectory*: each EV charges at full power from arrival until its
planned energy, :math:`x^{ref}_{e,t} = \mathrm{clip}(\min(\max(E^{req}_e - E^0_e, 0),
U_e n^{\le}_{e,t}),\ \underline x_{e,t},\ \bar x_{e,t})` (the clip only matters with
``departed = "need"``), whose grid power is :math:`p^{ref}_{e,t} = \Delta x^{ref}_{e,t}/
(\eta^{ch}_e\Delta t)` (``Δx < 0``: :math:`\Delta x\,\eta^{dis}_e/\Delta t`).

Columns (one row per ``scope`` × ``id`` × ``case`` × ``time``; :data:`COLUMNS`)
-------------------------------------------------------------------------------
``scope``
    ``city``, ``region`` (:func:`optev.hierarchy.regions.split_regions`, one per radial feeder
    by default; stations without a bus form the ``copperplate`` region) or ``station``.
``id``
    ``city``, the region id or the station id.
``case``
    Which EVs are counted (:data:`CASES`): ``expected`` — plugged now plus every forecast
    arrival (the optimiser's envelope); ``plugged`` — the EVs plugged in now only; ``arrivals``
    — the forecast arrivals only (``expected = plugged + arrivals`` for the additive columns
    below); ``low`` / ``high`` — plugged now plus the forecast arrivals scaled to the lower /
    upper quantile of their count (below). Do not sum over cases.
``time``
    Start of the step (time-zone aware, the instance's zone).
``p_ch_max_kw``
    Upper bound of the aggregate charging power, kW (grid side): :math:`\sum_e w_e a_{e,t}
    \bar P^{ch}_e`. The lower bound of charging is 0.
``p_dis_max_kw``
    Upper bound of the aggregate discharging power of the V2G opt-ins, kW (grid side):
    :math:`\sum_e w_e a_{e,t}\bar P^{dis}_e`; the lowest net power is :math:`-` this.
``p_uncontrolled_kw``
    Grid power of the reference trajectory, kW: :math:`\sum_e w_e p^{ref}_{e,t}`.
``raise_kw``
    Charging that can be added above the reference in step t, kW:
    :math:`\min(\bar P^{ch}_{g,t} - P^{ref}_{g,t},\ (\bar X_{g,t} - X^{ref}_{g,t})/(\bar\eta_g\Delta t))^+`
    — the power headroom, limited by the energy room left above the reference at the end of the
    step (:math:`\bar\eta_g` the group's envelope efficiency, :attr:`Envelope.eff_ch`).
``shed_kw``
    Charging that can be dropped below the reference in step t, kW: the reference power scaled
    by the share of the step's reference energy that may be withheld without crossing the
    envelope floor, :math:`P^{ref}_{g,t}\,\mathrm{clip}((X^{ref}_{g,t} - \underline X_{g,t})/
    (X^{ref}_{g,t} - X^{ref}_{g,t-1}),\,0,\,1)`. It is the whole reference power exactly when
    ``shed_duration_h`` is at least one step.
``shed_duration_h``
    How long all charging can be held at 0 from the start of step t, h: with the group's
    energy frozen at the reference's :math:`X^{ref}_{g,t-1}` (:math:`X^{ref}_{g,-1} = 0`), the
    number of steps :math:`\tau \ge t` before the first with :math:`\underline X_{g,\tau} >
    X^{ref}_{g,t-1}` (the latest-charging floor binds), times :math:`\Delta t`; censored at the
    horizon end; 0 where there is nothing to shed (``shed_kw`` 0). Computed with one sort per scope (the
    floor's running maximum is searched, which is exact because the reference is
    non-decreasing and above the floor; with ``departed = "need"`` and V2G EVs above their
    need the reference can step down, and the duration is then a lower bound).
``e_min_kwh``, ``e_max_kwh``
    The energy window: lower and upper bound of the cumulative battery-side energy charged
    from :math:`t_0` to the end of step t, kWh — the envelope's :math:`\underline X_{g,t} =
    \sum_e w_e\underline x_{e,t}` (latest charging that still meets every need) and
    :math:`\bar X_{g,t}` (earliest charging, to the batteries' capacity). Negative
    :math:`\underline X` means V2G EVs may give energy back.
``e_need_kwh``
    Energy the EVs plugged in during step t must still receive, battery side, kWh: their need
    less what the reference has charged before the step,
    :math:`\sum_e w_e a_{e,t}\max(\max(E^{need}_e - E^0_e, 0) - x^{ref}_{e,t-1}, 0)`; for an EV
    leaving after the horizon its need is the window's terminal requirement (what cannot be
    made up after the horizon).

Arrival uncertainty
-------------------
Weights :math:`w_e` are 1 for the cases ``expected``, ``plugged`` (0 for forecast sessions)
and ``arrivals`` (0 for plugged ones). For ``low`` / ``high``, plugged EVs keep 1 and each
forecast session gets :math:`w_e = F^{-1}_{\lambda_{g,b}}(q)/\lambda_{g,b}`, where
:math:`\lambda_{g,b}` is the number of forecast sessions of the scope group :math:`g` whose
first plugged step falls in the arrival bin :math:`b` (``arrival_bin``, 1 h by default),
:math:`F^{-1}_\lambda` the quantile function of the Poisson distribution of mean
:math:`\lambda` (:func:`optev.mpc.forecast.count_quantile_factor`) and :math:`q` the lower or upper
``arrival_quantiles`` (5 % and 95 % by default). The arrival count of each group and bin is
thus taken as Poisson with the forecast mean (the forecaster gives whole sessions, so the mean
is their count), and each of its arrivals as an average one (the forecast sessions of the bin
scaled alike). ``low`` counts in every bin only what the lower quantile guarantees; with one
quantile per bin it is conservative over several bins. More arrivals raise every additive
column, so ``low`` gives the guaranteed power limits, uncontrolled load, shed and raise and
the upper edge of the energy window, while the obligations — ``e_min_kwh``, ``e_need_kwh`` —
and the hold time ``shed_duration_h`` (new EVs' floors end a hold sooner) are the more
demanding in ``high``: a conservative reading takes, per column, the worse of the two. Quantiles of a sum are not sums of
quantiles: the ``low``/``high`` rows of a region or the city use the region's or the city's
own counts (more sessions, relatively narrower bands) and are **not** the sums of their
stations' rows; the ``expected``, ``plugged`` and ``arrivals`` rows are additive (city = Σ
regions = Σ stations), except ``raise_kw``, ``shed_kw`` and ``shed_duration_h``, which are
group quantities. Without forecast arrivals ``low`` = ``high`` = ``plugged`` = ``expected``.
The departures, energies and needs of the plugged EVs are taken as known.

Relaxation
----------
The scope's bounds are the envelope's, an outer approximation of what the EVs can do together
(:mod:`optev.blocks.envelope`, "Approximation"): ``shed_kw``, ``shed_duration_h`` and
``raise_kw`` are what the optimiser may plan on the envelope, where one EV's spare energy room
can cover another EV's urgency; the per-EV disaggregation may then deliver less. The interval
bounds of the envelope are not used here.

Scale
-----
Everything is vectorised over sessions and steps: the per-session bounds are computed in chunks
of :data:`CHUNK_SESSIONS` sessions and summed per scope with sparse group-indicator matrices (as
:func:`~optev.blocks.envelope.envelope` does); nothing loops over EVs or steps, except building
the default state's :class:`~optev.mobility.state.EVState` records (the controller's interface).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from optev.blocks.ev import without_discharge
from optev.blocks.envelope import ENERGY_ATOL_KWH, Envelope, envelope, session_energy_bounds
from optev.blocks.window import EVArrays, Window, build_window, instance_origin, instant, take_rows
from optev.compose.formulation import Formulation, load_formulation
from optev.data.instance import Instance
from optev.errors import DataError, OptionError
from optev.hierarchy.regions import SPLITS, split_regions
from optev.mobility.state import EVState
from optev.mpc.controller import Controller
from optev.mpc.forecast import count_quantile_factor
from optev.mpc.state import ControlState
from optev.options import duration_option, start_option

__all__ = ["ADDITIVE", "CASES", "COLUMNS", "DEFAULT_FORMULATION", "HEADLINE", "METRICS", "SCOPES", "arrival_weights",
           "controller_window", "curve_rows", "flex_curves", "flex_headline", "flex_headlines", "hold_steps",
           "session_rows", "uncontrolled_state"]

SCOPES = ("city", "region", "station")
"""Scopes of the curves, from the top of the hierarchy down (the table's row order)."""

CASES = ("expected", "plugged", "arrivals", "low", "high")
"""Which EVs a row counts (module docstring, ``case``)."""

METRICS = ("p_ch_max_kw", "p_dis_max_kw", "p_uncontrolled_kw", "raise_kw", "shed_kw", "shed_duration_h",
           "e_min_kwh", "e_max_kwh", "e_need_kwh")
"""Value columns of the table (module docstring)."""

COLUMNS = ("scope", "id", "case", "time", *METRICS)
"""Columns of :func:`flex_curves`, in order."""

ADDITIVE = ("p_ch_max_kw", "p_dis_max_kw", "p_uncontrolled_kw", "e_min_kwh", "e_max_kwh", "e_need_kwh")
"""Columns whose ``expected``/``plugged``/``arrivals`` rows add up across scopes and cases."""

DEFAULT_FORMULATION = "station_v2g_aggregate"
"""Formulation whose EV and station options the curves follow by default (the shipped station
formulation on envelopes)."""

CHUNK_SESSIONS = 8192
"""Sessions per chunk of the per-session bounds (memory: about 8 arrays of chunk × T floats)."""

POWER_ATOL_KW = 1e-6
"""Shed power below which there is nothing to shed (``shed_duration_h`` is then 0), kW."""

PROBE_STEP = pd.Timedelta(seconds=1)
"""Length of the one-step window :func:`uncontrolled_state` reads the plugged EVs from: a session
counts as plugged in at ``at`` when it arrived by then and leaves at least this much later."""

_SESSION_ROWS = ("p_ch_max_kw", "p_dis_max_kw", "p_uncontrolled_kw", "e_min_kwh", "e_max_kwh", "e_need_kwh",
                 "x_ref_kwh")
"""Per-session quantities summed per scope and case (``x_ref_kwh``: the reference's cumulative energy)."""


# ----------------------------------------------------------------------------- the state and the window

def uncontrolled_state(instance: Instance, at: Any = None) -> ControlState:
    """The EVs of the instance's ``sessions`` table plugged in at ``at``, as a controller state.

    Each session plugged in at ``at`` (arrived by then, leaving at least :data:`PROBE_STEP`
    later) gets the energy the uncontrolled baseline has given it by then — full power from
    its arrival up to its target — exactly as :func:`optev.blocks.window.build_window` starts a
    mid-day window (:func:`~optev.blocks.window.baseline_energy`).

    Parameters
    ----------
    instance : Instance
    at : str, Timestamp or None
        ``"HH:MM"`` on the instance's first day, an ISO timestamp or a Timestamp
        (:func:`optev.options.start_option`); None: the instance start.

    Returns
    -------
    ControlState
        Empty when the instance has no sessions.
    """
    t0 = instant(instance, start_option(at, "at"), "at")
    time_s = float((t0 - instance_origin(instance)).total_seconds())
    ses = instance.sessions
    if not len(ses):
        return ControlState(time_s=time_s)
    probe = build_window(instance, start=t0, steps=1, step=PROBE_STEP, with_network=False, quantum_kw=None)
    ev = probe.evs
    if not ev.n:
        return ControlState(time_s=time_s)
    rows = ses.drop_duplicates("session_id").set_index("session_id").reindex(ev.session_id)
    cap = np.where(ev.capacity_kwh > 0, ev.capacity_kwh, 1.0)
    soc = np.clip(ev.e_init_kwh / cap, 0.0, 1.0)
    columns = zip(ev.ev_id, ev.session_id, probe.stations.station_id[ev.station], ev.e_init_kwh, soc,
                  rows["arrival_s"].to_numpy(float), rows["departure_s"].to_numpy(float),
                  rows["soc_target"].to_numpy(float), rows["soc_arrival"].to_numpy(float))
    evs = [EVState(ev_id=str(e), session_id=str(s), station_id=str(st), energy_kwh=float(en), soc=float(so),
                   arrival_s=float(a), departure_s=float(d), soc_target=float(tg), soc_arrival=float(sa))
           for e, s, st, en, so, a, d, tg, sa in columns]
    return ControlState(time_s=time_s, evs=evs)


def _formulation(formulation: Formulation | str | None) -> Formulation:
    if isinstance(formulation, Formulation):
        return formulation
    return load_formulation(DEFAULT_FORMULATION if formulation is None else formulation)


def controller_window(instance: Instance, state: ControlState, *, step: str | pd.Timedelta = "15min",
                      horizon: str | pd.Timedelta | int = "24h", forecaster: Any = None,
                      formulation: Formulation | str | None = None) -> tuple[Window, np.ndarray, Any]:
    """The window the rolling-horizon controller would optimise for ``state`` (module docstring).

    :meth:`optev.mpc.Controller.window` builds it — plugged EVs from the state, forecast arrivals,
    arrival reserve, needs lowered to what full power reaches — unsolved.

    Returns
    -------
    window : Window
        With the formulation's EV options applied to ``window.evs`` (``v2g = false``: no discharge).
    plugged : ndarray of bool
        Per session of the window: plugged in now (True) or forecast (False).
    forecast : Forecast
        The forecast the window was built with.
    """
    form = _formulation(formulation)
    ctl = Controller(form, instance, step=step, horizon=horizon, forecaster=forecaster, ac_check=False)
    prepared = ctl.window(state)
    window, plugged = prepared.window, prepared.plugged
    if not form.block_options("ev").get("v2g", True):
        window.evs = without_discharge(window.evs)
    return window, plugged, ctl.last_forecast


# ----------------------------------------------------------------------------- scopes and weights

@dataclass(frozen=True)
class _Scope:
    """One scope: its group ids and the group of every station of the window (−1: none)."""

    name: str
    ids: np.ndarray
    of_station: np.ndarray

    @property
    def n(self) -> int:
        return int(self.ids.size)


def _scopes(instance: Instance, station_ids: np.ndarray, regions_by: str) -> list[_Scope]:
    n_st = station_ids.size
    regions = split_regions(instance, by=regions_by)
    where = {str(s): k for k, r in enumerate(regions) for s in r.station_ids}
    of_region = np.array([where.get(str(s), -1) for s in station_ids], dtype=np.int64)
    return [_Scope("city", np.array(["city"], dtype=object), np.zeros(n_st, dtype=np.int64)),
            _Scope("region", np.array([r.region_id for r in regions], dtype=object), of_region),
            _Scope("station", np.asarray(station_ids, dtype=object), np.arange(n_st, dtype=np.int64))]


def arrival_weights(evs: EVArrays, plugged: np.ndarray, groups: np.ndarray, n_groups: int, dt_h: float,
                    bin_h: float, quantiles: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    r"""Weights of the ``low`` and ``high`` cases per session (module docstring, "Arrival uncertainty").

    Plugged sessions get 1; a forecast session of group ``g`` whose first plugged step lies in
    arrival bin ``b`` gets :math:`F^{-1}_{\lambda_{g,b}}(q)/\lambda_{g,b}` for the lower and the
    upper quantile ``q``, :math:`\lambda_{g,b}` the number of forecast sessions of the group in
    the bin; sessions in no group (−1) get 0.
    """
    forecast = ~np.asarray(plugged, bool) & (groups >= 0)
    n_bins = int(np.floor(evs.plugged.shape[1] * dt_h / bin_h + 1e-9)) + 1
    b = np.floor(evs.arrival_step * dt_h / bin_h + 1e-9).astype(np.int64)
    key = np.where(forecast, np.maximum(groups, 0) * n_bins + b, 0)
    counts = np.bincount(key[forecast], minlength=max(n_groups, 1) * n_bins)
    weights = []
    for q in quantiles:
        ratio = count_quantile_factor(counts, q)
        weights.append(np.where(forecast, ratio[key], np.where(groups >= 0, 1.0, 0.0)))
    return weights[0], weights[1]


def _case_weights(evs: EVArrays, plugged: np.ndarray, scope: _Scope, dt_h: float, bin_h: float,
                  quantiles: tuple[float, float]) -> dict[str, np.ndarray]:
    """Weights of the cases ``plugged``, ``arrivals``, ``low`` and ``high`` for one scope."""
    groups = scope.of_station[evs.station] if evs.n else np.zeros(0, dtype=np.int64)
    inside = (groups >= 0).astype(float)
    low, high = arrival_weights(evs, plugged, groups, scope.n, dt_h, bin_h, quantiles)
    return {"plugged": inside * plugged, "arrivals": inside * ~plugged, "low": low, "high": high}


def _indicator(weights: np.ndarray, groups: np.ndarray, n_groups: int) -> sp.csc_matrix:
    """Sparse (G × n) matrix with ``weights[e]`` where session e belongs to group g (CSC: chunks of columns)."""
    keep = np.flatnonzero((groups >= 0) & (weights != 0))
    return sp.csc_matrix((weights[keep], (groups[keep], keep)), shape=(n_groups, groups.size))


# ----------------------------------------------------------------------------- per-session sums

def session_rows(evs: EVArrays, dt_h: float, departed_at_need: bool) -> dict[str, np.ndarray]:
    """Per-session (n × T) quantities of the module docstring: power limits, reference power and
    cumulative energy, envelope bounds (:func:`~optev.blocks.envelope.session_energy_bounds`) and
    the need left at the start of each plugged step."""
    a = np.asarray(evs.plugged, float)
    lower, upper = session_energy_bounds(evs, dt_h, departed_at_need)
    e0 = evs.e_init_kwh
    full = np.cumsum(a, axis=1) * (evs.eff_ch * evs.p_ch_max_kw * dt_h)[:, None]
    x_ref = np.minimum(np.maximum(evs.e_req_kwh - e0, 0.0)[:, None], full)
    x_ref = np.minimum(np.maximum(x_ref, lower), upper)
    before = np.concatenate([np.zeros((evs.n, 1)), x_ref[:, :-1]], axis=1)
    dx = x_ref - before
    eff_ch = np.where(evs.eff_ch > 0, evs.eff_ch, 1.0)[:, None]
    p_ref = np.where(dx >= 0, dx / (eff_ch * dt_h), dx * evs.eff_dis[:, None] / dt_h)
    need = np.maximum(evs.e_need_kwh - e0, 0.0)[:, None]
    return {"p_ch_max_kw": a * evs.p_ch_max_kw[:, None], "p_dis_max_kw": a * evs.p_dis_max_kw[:, None],
            "p_uncontrolled_kw": p_ref, "e_min_kwh": lower, "e_max_kwh": upper,
            "e_need_kwh": a * np.maximum(need - before, 0.0), "x_ref_kwh": x_ref}


def _chunks(n: int, size: int) -> Iterator[np.ndarray]:
    """Session indices in consecutive chunks of at most ``size``."""
    for lo in range(0, n, size):
        yield np.arange(lo, min(lo + size, n))


def _group_sums(evs: EVArrays, dt_h: float, departed_at_need: bool,
                indicators: dict[tuple[str, str], sp.csc_matrix]) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """``indicator @ rows`` of every (scope, case) indicator and every :data:`_SESSION_ROWS`
    quantity, over chunks of sessions; result arrays (G × T)."""
    T = evs.plugged.shape[1]
    k = len(_SESSION_ROWS)
    acc = {key: np.zeros((S.shape[0], k * T)) for key, S in indicators.items()}
    for part in _chunks(evs.n, CHUNK_SESSIONS):
        rows = session_rows(take_rows(evs, part), dt_h, departed_at_need)
        stacked = np.concatenate([rows[name] for name in _SESSION_ROWS], axis=1)  # (chunk, k·T)
        for key, S in indicators.items():
            acc[key] += np.asarray(S[:, part[0]:part[-1] + 1] @ stacked)
    return {key: {name: a[:, j * T:(j + 1) * T] for j, name in enumerate(_SESSION_ROWS)} for key, a in acc.items()}


# ----------------------------------------------------------------------------- derived group quantities

def hold_steps(x_ref: np.ndarray, x_lower: np.ndarray, atol: float = ENERGY_ATOL_KWH) -> np.ndarray:
    r"""Steps all charging can be held at 0 from each step (``shed_duration_h`` / Δt), (G × T) ints.

    For row g and step t: the number of steps :math:`\tau \ge t` before the first with
    ``x_lower[g, τ] > x_ref[g, t-1] + atol`` (``x_ref[g, -1] = 0``), or up to the end. Since
    ``x_ref`` is non-decreasing and above ``x_lower``, the floor's running maximum
    :math:`R_{g,\tau}` (non-decreasing) exceeds the held energy first at the same step, so the
    answer is the count of :math:`R_{g,\cdot}` not above the held energy, minus t — one sort of
    the merged rows (no loop over rows or steps).
    """
    G, T = x_lower.shape
    if not G or not T:
        return np.zeros((G, T), dtype=np.int64)
    held = np.concatenate([np.zeros((G, 1)), x_ref[:, :-1]], axis=1) + atol
    values = np.concatenate([np.maximum.accumulate(x_lower, axis=1), held], axis=1)   # (G, 2T)
    kind = np.broadcast_to(np.r_[np.zeros(T), np.ones(T)], values.shape)              # 0: floor, 1: query
    order = np.lexsort((kind, values), axis=-1)                                       # ties: floor first
    is_query = np.take_along_axis(kind, order, axis=1) == 1
    floors_before = np.cumsum(~is_query, axis=1)
    rows, pos = np.nonzero(is_query)
    count = np.empty((G, T), dtype=np.int64)
    count[rows, order[rows, pos] - T] = floors_before[rows, pos]
    return np.maximum(count - np.arange(T)[None, :], 0)


def _derived(q: dict[str, np.ndarray], eff_ch: np.ndarray, dt_h: float) -> dict[str, np.ndarray]:
    """``raise_kw``, ``shed_kw`` and ``shed_duration_h`` of one (scope, case) from its sums."""
    x_ref, lower = q["x_ref_kwh"], q["e_min_kwh"]
    before = np.concatenate([np.zeros((x_ref.shape[0], 1)), x_ref[:, :-1]], axis=1)
    step_kwh = x_ref - before
    share = np.clip(np.divide(x_ref - lower, step_kwh, out=np.ones_like(step_kwh),
                              where=step_kwh > ENERGY_ATOL_KWH), 0.0, 1.0)
    eff = np.where(eff_ch > 0, eff_ch, 1.0)[:, None]
    room_kw = np.maximum(q["e_max_kwh"] - x_ref, 0.0) / (eff * dt_h)
    shed = np.maximum(q["p_uncontrolled_kw"], 0.0) * share
    return {"raise_kw": np.maximum(np.minimum(q["p_ch_max_kw"] - q["p_uncontrolled_kw"], room_kw), 0.0),
            "shed_kw": shed, "shed_duration_h": np.where(shed > POWER_ATOL_KW, hold_steps(x_ref, lower) * dt_h, 0.0)}


def _scope_cases(env: Envelope, sums: dict[str, dict[str, np.ndarray]], dt_h: float
                 ) -> dict[str, dict[str, np.ndarray]]:
    """Every case's metrics of one scope: ``expected`` takes the envelope's bounds and the
    parts' sums of the rest; the others their own sums."""
    out: dict[str, dict[str, np.ndarray]] = {}
    expected = {name: sums["plugged"][name] + sums["arrivals"][name] for name in _SESSION_ROWS}
    expected.update(p_ch_max_kw=env.p_ch_max_kw, p_dis_max_kw=env.p_dis_max_kw, e_min_kwh=env.e_lower_kwh,
                    e_max_kwh=env.e_upper_kwh)
    for case in CASES:
        q = expected if case == "expected" else sums[case]
        out[case] = {**q, **_derived(q, env.eff_ch, dt_h)}
    return out


# ----------------------------------------------------------------------------- the table

def _frame(scope: _Scope, cases: dict[str, dict[str, np.ndarray]], times: pd.DatetimeIndex) -> pd.DataFrame:
    G, T = scope.n, times.size
    parts = []
    for case in CASES:
        q = cases[case]
        parts.append(pd.DataFrame({"scope": scope.name, "id": np.repeat(scope.ids, T), "case": case,
                                   "time": times[np.tile(np.arange(T), G)],
                                   **{m: np.asarray(q[m], float).reshape(G * T) for m in METRICS}}))
    return pd.concat(parts, ignore_index=True)


def _check_options(quantiles: Sequence[float], arrival_bin: Any, regions_by: str) -> tuple[tuple[float, float], float]:
    qs = tuple(float(q) for q in quantiles)
    if len(qs) != 2 or not (0.0 < qs[0] <= 0.5 <= qs[1] < 1.0):
        raise OptionError(f"arrival_quantiles must be two probabilities (lower ≤ 0.5 ≤ upper, both in (0, 1)), "
                          f"got {tuple(quantiles)!r}")
    if regions_by not in SPLITS:
        raise OptionError(f"regions_by must be one of {', '.join(SPLITS)}, got {regions_by!r}")
    bin_h = duration_option(arrival_bin, "arrival_bin", "1h, 30min").total_seconds() / 3600.0
    return (qs[0], qs[1]), bin_h


def _check_at(instance: Instance, at: Any, state: ControlState | None) -> ControlState:
    """The state: ``state`` (its time must be ``at`` when both are given) or :func:`uncontrolled_state`."""
    if state is None:
        if not len(instance.sessions):
            raise DataError("the instance has no sessions table to take the EVs plugged in now from; pass a "
                            "ControlState (state=..., an empty one for the forecast arrivals only)",
                            table="sessions")
        state = uncontrolled_state(instance, at)
    elif at is not None:
        t_at = (instant(instance, start_option(at, "at"), "at") - instance_origin(instance)).total_seconds()
        if abs(t_at - float(state.time_s)) > 1e-6:
            raise OptionError(f"at ({at!r}, {t_at:g} s) differs from the state's time ({state.time_s:g} s)")
    index = instance.timeseries.index
    if len(index):
        t0 = instance_origin(instance) + pd.Timedelta(seconds=float(state.time_s))
        end = index[-1] + (index[1] - index[0] if len(index) > 1 else pd.Timedelta(0))
        if not index[0] <= t0 < end:
            raise OptionError(f"at: {t0} lies outside the instance's data ({index[0]} – {end})")
    return state


def flex_curves(instance: Instance, at: Any = None, *, horizon: str | pd.Timedelta | int = "24h",
                step: str | pd.Timedelta = "15min", state: ControlState | None = None, forecaster: Any = None,
                arrival_quantiles: Sequence[float] = (0.05, 0.95), arrival_bin: str | pd.Timedelta = "1h",
                formulation: Formulation | str | None = None, regions_by: str = "feeder") -> pd.DataFrame:
    """Adjustable-capacity curves of every station, region and the city (module docstring).

    Parameters
    ----------
    instance : Instance
    at : str, Timestamp or None
        Decision time: ``"HH:MM"`` on the instance's first day or an ISO timestamp; None: the
        state's time (or the instance start). Must lie inside the instance's time series.
    horizon : str, Timedelta or int
        Length of the curves: a duration rounded up to whole steps, or a number of steps.
    step : str or Timedelta
        Step, 1 to 15 minutes (the controller's interval).
    state : ControlState, optional
        The EVs plugged in now; default :func:`uncontrolled_state` (needs a sessions table).
    forecaster : optional
        Forecaster of the arrivals (:mod:`optev.mpc.forecast` protocol, or ``"seasonal"``,
        ``"persistence"``); default the seasonal profile of the instance's sessions.
    arrival_quantiles : (float, float)
        Lower and upper quantile of the arrival counts (cases ``low`` and ``high``).
    arrival_bin : str or Timedelta
        Time bin of the arrival counts (module docstring, "Arrival uncertainty").
    formulation : Formulation or str, optional
        Whose ``ev``/``station`` options apply (default :data:`DEFAULT_FORMULATION`).
    regions_by : {"feeder", "subtree"}
        How the regions are cut (:func:`optev.hierarchy.regions.split_regions`).

    Returns
    -------
    DataFrame
        :data:`COLUMNS`, one row per scope × id × case × step, ordered that way; ``attrs`` hold
        the decision time, the counts of plugged and forecast sessions and the options used.

    Raises
    ------
    DataError
        No stations; no sessions table and no ``state``; an option out of range (an
        :class:`~optev.errors.OptionError`); a state naming unknown stations.
    """
    quantiles, bin_h = _check_options(arrival_quantiles, arrival_bin, regions_by)
    if not len(instance.stations):
        raise DataError("the instance has no stations", table="stations")
    form = _formulation(formulation)
    state = _check_at(instance, at, state)
    w, plugged, fc = controller_window(instance, state, step=step, horizon=horizon, forecaster=forecaster,
                                       formulation=form)
    evs, dt_h = w.evs, w.dt_h
    departed = form.block_options("station").get("departed", "free") == "need"
    scopes = _scopes(instance, w.stations.station_id, regions_by)
    indicators = {}
    for scope in scopes:
        groups = scope.of_station[evs.station] if evs.n else np.zeros(0, dtype=np.int64)
        for case, weight in _case_weights(evs, plugged, scope, dt_h, bin_h, quantiles).items():
            indicators[(scope.name, case)] = _indicator(weight, groups, scope.n)
    sums = _group_sums(evs, dt_h, departed, indicators)
    frames = []
    for scope in scopes:
        groups = scope.of_station[evs.station] if evs.n else np.zeros(0, dtype=np.int64)
        env = envelope(evs, dt_h, scope.n, groups, departed_at_need=departed, lags=())
        per_case = {case: sums[(scope.name, case)] for case in CASES if case != "expected"}
        frames.append(_frame(scope, _scope_cases(env, per_case, dt_h), w.times))
    table = pd.concat(frames, ignore_index=True)
    table.attrs.update(at=w.times[0].isoformat(), time_s=float(state.time_s), step_minutes=dt_h * 60.0,
                       steps=int(w.steps), plugged_sessions=int(plugged.sum()),
                       forecast_sessions=int((~plugged).sum()), forecaster=str(getattr(fc, "source", "")),
                       formulation=form.name, arrival_quantiles=list(quantiles), arrival_bin_h=bin_h,
                       regions_by=regions_by)
    return table


HEADLINE = ("shed_kw", "shed_duration_h", "raise_kw", "p_ch_max_kw", "p_dis_max_kw", "p_uncontrolled_kw",
            "e_need_kwh")
"""Columns of the first step that :func:`flex_headlines` reports per case."""


def flex_headlines(table: pd.DataFrame, scope: str = "city") -> list[dict[str, Any]]:
    """The first step of every curve of a scope: what can be shed, for how long, how far charging can rise.

    Parameters
    ----------
    table : DataFrame
        A :func:`flex_curves` table.
    scope : {"city", "region", "station"}

    Returns
    -------
    list of dict
        One per id, the largest expected shed first: ``scope``, ``id``, ``time`` (ISO, the
        first step) and, for the cases ``expected``/``low``/``high`` (suffix ``""``, ``_low``,
        ``_high``), the first step's :data:`HEADLINE` columns; plus ``peak_shed_time``,
        ``peak_shed_kw`` and ``peak_shed_duration_h``: the step of the largest expected shed in
        the horizon (the first such step). Grouped computations, no loop over ids.
    """
    if scope not in SCOPES:
        raise OptionError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    rows = table[table["scope"] == scope]
    if not len(rows):
        return []
    first = rows["time"].min()
    now = rows[rows["time"] == first].pivot(index="id", columns="case", values=list(HEADLINE))
    out = pd.DataFrame(index=now.index)
    for case, suffix in (("expected", ""), ("low", "_low"), ("high", "_high")):
        for key in HEADLINE:
            out[f"{key}{suffix}"] = now[(key, case)].to_numpy(float)
    expected = rows[rows["case"] == "expected"].sort_values(["id", "time"], kind="stable")
    peak = expected.loc[expected.groupby("id", sort=False)["shed_kw"].idxmax()].set_index("id")
    out["peak_shed_time"] = [t.isoformat() for t in pd.DatetimeIndex(peak["time"].reindex(out.index))]
    out["peak_shed_kw"] = peak["shed_kw"].reindex(out.index).to_numpy(float)
    out["peak_shed_duration_h"] = peak["shed_duration_h"].reindex(out.index).to_numpy(float)
    out = out.sort_values("shed_kw", ascending=False, kind="stable")
    head = {"scope": scope, "time": pd.Timestamp(first).isoformat()}
    return [{**head, "id": str(i), **{str(k): (v if isinstance(v, str) else float(v)) for k, v in r.items()}}
            for i, r in zip(out.index, out.to_dict("records"))]


def flex_headline(table: pd.DataFrame, scope: str = "city", id: str | None = None) -> dict[str, Any]:
    """:func:`flex_headlines` of one curve (``id`` as in :func:`curve_rows`)."""
    rows = curve_rows(table, scope, id)
    return flex_headlines(rows, scope)[0]


def curve_rows(table: pd.DataFrame, scope: str = "city", id: str | None = None) -> pd.DataFrame:
    """The rows of one curve (every case and step) of a :func:`flex_curves` table.

    ``id`` may be omitted when the scope has one id (the city); an unknown scope or id is an
    :class:`~optev.errors.OptionError` naming the valid ones.
    """
    if scope not in SCOPES:
        raise OptionError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    rows = table[table["scope"] == scope]
    ids = pd.unique(rows["id"])
    if id is None:
        if len(ids) != 1:
            raise OptionError(f"scope {scope!r} has {len(ids)} ids; name one (for example {', '.join(map(str, ids[:5]))})")
        id = str(ids[0])
    rows = rows[rows["id"] == id]
    if not len(rows):
        raise OptionError(f"no {scope} {id!r}; known: {', '.join(map(str, ids[:8]))}{' …' if len(ids) > 8 else ''}")
    return rows

r"""City level of the hierarchy: citywide targets shared out to regions (R6.2.3.2, R6.3.2).

A :class:`CityTarget` is a cap on the city's total grid import per step,
:math:`C_t` kW (``inf`` where there is none), given either directly (a citywide peak
limit, ``import_max_kw``) or as a demand-response reduction against the uncoordinated
baseline in given hours (``reduction_kw`` or ``reduction_fraction`` between ``start``
and ``end``): :math:`C_t = B_t - \Delta` (or :math:`(1-f)B_t`) in the hours, where
:math:`B_t = \sum_r B_{r,t}` is the total import of the regions solved without the target.
Regions share nothing else, so the city problem is

.. math::
    \min \sum_r f_r(P_r) \quad\text{s.t.}\quad \sum_r P_{r,t} \le C_t \;\forall t,

with :math:`f_r` region r's optimal cost for an import profile :math:`P_r`. It is solved by
**price coordination followed by a proportional allocation** (``rule = "price"``, the
default), or by the allocation alone (``rule = "proportional"``):

1. *Baseline.* Every region solves its own problem (in parallel):
   :math:`P^{(0)}_{r,t}`; the cap :math:`C_t` is fixed from it.
2. *Price iteration* (``rule = "price"``, at most ``iterations`` rounds, stopping as soon
   as :math:`\sum_r P_{r,t} \le C_t` everywhere). The city raises a price adder on import
   where the cap is exceeded (projected subgradient step of the dual of the coupling
   constraint):

   .. math::
       \lambda^{(k)}_t = \max\Bigl(0,\ \lambda^{(k-1)}_t + \frac{s\,\bar\pi}{\sqrt{k}}\,
       \frac{\sum_r P^{(k-1)}_{r,t} - C_t}{E^{(0)}}\Bigr)

   with :math:`\bar\pi` the highest grid price of the window, :math:`E^{(0)}` the largest
   excess of the baseline (kW) and :math:`s` = ``step_size``; every region re-solves with
   its import (and export) price raised by :math:`\lambda_t`, so flexibility is moved out
   of the capped hours by the regions where it is cheapest. When the price alone meets the
   cap, every region's plan is optimal for the priced problem (a Lagrangian solution)
   and no caps are imposed.
3. *Allocation* (both rules). From the last iterate :math:`P_{r,t}` (the baseline for
   ``"proportional"``), every region gets its share of the cap as a hard limit on its
   import (:func:`share_cap`):

   .. math::
       U_{r,t} = \begin{cases}
         P_{r,t} - (\sum_q P_{q,t} - C_t)\,\dfrac{D_{r,t}}{\sum_q D_{q,t}} & \sum_q P_{q,t} > C_t
         \text{ (excess shared by downward flexibility)}\\[2ex]
         P_{r,t} + (C_t - \sum_q P_{q,t})\,\dfrac{G_{r,t}}{\sum_q G_{q,t}} & \text{otherwise
         (headroom shared by upward flexibility)}
       \end{cases}

   where, from the region's station envelopes (R6.2.1), :math:`D_{r,t}` = its EVs' net
   charging power plus the discharge power its plugged V2G EVs could give
   (how far its import can drop at t) and :math:`G_{r,t}` = the charging power its plugged
   EVs could still add (how far it can rise); equal shares where a sum is 0. Then
   :math:`\sum_r U_{r,t} = C_t` exactly. A *rounding reserve* of one setpoint quantum per
   station with plugged EVs is taken off each region's share (the 1 kW setpoints may
   exceed a station's planned power by up to one quantum), and every region re-solves
   with :math:`U_{r,t}` as a time-varying bound on its substation import
   (``window.extra["grid_import_max_kw"]``, :mod:`optev.blocks.network`).

The flexibility measures are instantaneous power bounds, not energy-feasible profiles,
so a share can still be infeasible for a region that has no energy left to shift; that
is reported as an :class:`~optev.errors.InfeasibleError` naming the region and the target.
Load, DER and storage are not counted as flexible in the allocation (they still are in the
regions' own optimisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optev.errors import DataError, InfeasibleError, SolverError
from optev.lp.expr import LinExpr
from optev.lp.program import LinearProgram
from optev.solvers.highs import HighsSession
from optev.tolerances import IMPORT_CAP_ATOL_KW

RULES = ("price", "proportional")
"""Ways of sharing a city target (see module docstring)."""

CAP_ATOL_KW = IMPORT_CAP_ATOL_KW
"""Excess over a cap below which the cap counts as met, kW
(:data:`optev.tolerances.IMPORT_CAP_ATOL_KW`)."""


@dataclass(frozen=True)
class CityTarget:
    """A citywide target on total grid import (see module docstring).

    Parameters
    ----------
    import_max_kw : float or array (T,), optional
        Cap on the city's total import in every step (a citywide peak limit), kW.
    reduction_kw : float
        Demand response: reduce total import by this much against the baseline within
        ``start``–``end``, kW.
    reduction_fraction : float
        Demand response as a fraction of the baseline (0..1) within ``start``–``end``.
    start, end : str, optional
        Demand-response hours, ``"HH:MM"`` local time (end exclusive; ``start > end``
        wraps past midnight). Both None: the whole window.
    rule : {"price", "proportional"}
        Sharing rule.
    iterations : int
        Price-iteration rounds at most (``rule = "price"``).
    step_size : float
        :math:`s` of the price update.
    """

    import_max_kw: Any = None
    reduction_kw: float = 0.0
    reduction_fraction: float = 0.0
    start: str | None = None
    end: str | None = None
    rule: str = "price"
    iterations: int = 6
    step_size: float = 1.0

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise DataError(f"city target rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.reduction_kw < 0 or not 0.0 <= self.reduction_fraction < 1.0:
            raise DataError("city target: reduction_kw must be ≥ 0 and reduction_fraction in [0, 1)")
        if self.iterations < 0 or self.step_size <= 0:
            raise DataError("city target: iterations must be ≥ 0 and step_size > 0")
        if self.import_max_kw is None and not (self.reduction_kw or self.reduction_fraction):
            raise DataError("city target: give import_max_kw, reduction_kw or reduction_fraction")

    @classmethod
    def peak_limit(cls, kw: float, **kwargs: Any) -> "CityTarget":
        """A citywide cap on total import in every step, kW."""
        return cls(import_max_kw=float(kw), **kwargs)

    @classmethod
    def demand_response(cls, *, reduction_kw: float = 0.0, reduction_fraction: float = 0.0, start: str | None = None,
                        end: str | None = None, **kwargs: Any) -> "CityTarget":
        """A reduction of total import against the baseline in the hours ``start``–``end``."""
        return cls(reduction_kw=float(reduction_kw), reduction_fraction=float(reduction_fraction), start=start,
                   end=end, **kwargs)

    @property
    def needs_baseline(self) -> bool:
        return bool(self.reduction_kw or self.reduction_fraction)

    def in_hours(self, times: pd.DatetimeIndex) -> np.ndarray:
        """Steps within the demand-response hours, bool (T,)."""
        if self.start is None and self.end is None:
            return np.ones(len(times), bool)
        minutes = (times - times.normalize()).total_seconds().to_numpy() / 60.0

        def hm(text: str | None, default: float) -> float:
            if text is None:
                return default
            try:
                h, m = text.split(":")
                return int(h) * 60.0 + int(m)
            except ValueError:
                raise DataError(f"city target hours must be 'HH:MM', got {text!r}") from None

        a, b = hm(self.start, 0.0), hm(self.end, 24 * 60.0)
        return (minutes >= a) & (minutes < b) if a <= b else (minutes >= a) | (minutes < b)

    def cap(self, times: pd.DatetimeIndex, baseline_kw: np.ndarray | None = None) -> np.ndarray:
        """The cap :math:`C_t` on total import, kW (T,), ``inf`` where there is none.

        ``baseline_kw`` (total import of the uncoordinated regions, T) is needed for a
        demand-response target.
        """
        T = len(times)
        cap = np.full(T, np.inf)
        if self.import_max_kw is not None:
            given = np.broadcast_to(np.asarray(self.import_max_kw, float), (T,))
            cap = np.minimum(cap, given)
        if self.needs_baseline:
            if baseline_kw is None:
                raise DataError("a demand-response city target needs the baseline import")
            base = np.asarray(baseline_kw, float)
            hours = self.in_hours(times)
            dr = np.where(hours, base * (1.0 - self.reduction_fraction) - self.reduction_kw, np.inf)
            cap = np.minimum(cap, dr)
        return cap


def price_update(lam: np.ndarray, total_kw: np.ndarray, cap_kw: np.ndarray, *, k: int, price_max: float,
                 first_excess_kw: float, step_size: float = 1.0) -> np.ndarray:
    """One projected-subgradient step of the import price adder (currency/kWh, T) — step 2
    of the module docstring; steps without a cap keep a zero adder."""
    finite = np.isfinite(cap_kw)
    excess = np.where(finite, total_kw - np.where(finite, cap_kw, 0.0), 0.0)
    scale = step_size * max(price_max, 1e-9) / (max(first_excess_kw, 1e-9) * np.sqrt(k))
    return np.where(finite, np.maximum(0.0, lam + scale * excess), 0.0)


def share_cap(cap_kw: np.ndarray, import_kw: np.ndarray, down_kw: np.ndarray, up_kw: np.ndarray) -> np.ndarray:
    """Each region's share :math:`U_{r,t}` of the city cap (step 3 of the module docstring).

    Parameters
    ----------
    cap_kw : ndarray (T,)
        City cap, ``inf`` where there is none.
    import_kw : ndarray (R, T)
        Regions' imports in the last iterate.
    down_kw, up_kw : ndarray (R, T)
        How far each region's import can drop / rise in each step (≥ 0).

    Returns
    -------
    ndarray (R, T)
        Caps summing to ``cap_kw`` in every capped step, ``inf`` elsewhere.
    """
    cap_kw = np.asarray(cap_kw, float)
    R = import_kw.shape[0]
    finite = np.isfinite(cap_kw)
    total = import_kw.sum(axis=0)
    gap = np.where(finite, np.where(finite, cap_kw, 0.0) - total, 0.0)   # < 0: excess, > 0: headroom
    down = np.clip(down_kw, 0.0, None)
    up = np.clip(up_kw, 0.0, None)
    weight = np.where(gap < 0, down, up)
    wsum = weight.sum(axis=0)
    share = np.where(wsum > 0, weight / np.where(wsum > 0, wsum, 1.0), 1.0 / max(R, 1))
    out = import_kw + gap[None, :] * share
    return np.where(finite[None, :], out, np.inf)


def check_feasible_shares(cap_kw: np.ndarray, import_kw: np.ndarray, down_kw: np.ndarray,
                          times: pd.DatetimeIndex) -> None:
    """Raise :class:`~optev.errors.InfeasibleError` when the city cap asks more of some step
    than all regions together could shed in that step."""
    finite = np.isfinite(cap_kw)
    lowest = import_kw.sum(axis=0) - np.clip(down_kw, 0.0, None).sum(axis=0)
    bad = finite & (lowest > np.where(finite, cap_kw, 0.0) + CAP_ATOL_KW)
    if bad.any():
        t = int(np.flatnonzero(bad)[0])
        raise InfeasibleError(f"city target cannot be met: at {times[t]} the cap is {cap_kw[t]:.1f} kW but the "
                              f"regions' import cannot drop below {lowest[t]:.1f} kW in that step (conventional load "
                              f"and EVs that must charge); {int(bad.sum())} step(s) affected")


def envelope_allocation(cap_kw: np.ndarray, regions: list[Any], prices: tuple[np.ndarray, np.ndarray],
                        up_kw: np.ndarray, *, tracking: float = 1e-3) -> np.ndarray:
    r"""Each region's share of the city cap from a city LP over the regions' envelopes
    (step 3 of the module docstring, ``rule = "price"``).

    Every region r is one flexibility envelope of all its sessions
    (:func:`optev.blocks.envelope.envelope` with one group; power, cumulative-energy and
    interval bounds) on top of its other import :math:`B_{r,t}` = its import minus its
    EVs' net power in the last iterate. The city LP

    .. math::
        \min \sum_{r,t}\Delta t\bigl[\pi_t(P^{ch}_{r,t}-P^{dis}_{r,t}) + \bar r_{r,t}P^{dis}_{r,t}
        + w\,|P^{ch}_{r,t}-P^{dis}_{r,t}-\hat P_{r,t}|\bigr]
        \quad\text{s.t.}\quad \sum_r (B_{r,t}+P^{ch}_{r,t}-P^{dis}_{r,t}) \le C_t

    (:math:`\hat P` the EVs' net power of the last iterate, :math:`w` = ``tracking`` × the
    highest price, a tie-breaker that keeps regions near their own plans) finds import
    profiles every region's EVs can follow in energy; each region's cap is its profile
    plus a share of the remaining headroom in proportion to its upward flexibility
    ``up_kw``, so the caps sum to :math:`C_t`. The region envelope ignores station site caps
    (the stations' own envelopes in the region LP do not), so a share can still, rarely, be
    infeasible for a region.

    Parameters
    ----------
    cap_kw : ndarray (T,)
        City cap (after the rounding reserve), ``inf`` where none.
    regions : list of RegionSolution
        Last iterate (``import_kw``, ``ev_net_kw``, ``envelope``, ``reservation_per_kwh``).
    prices : (ndarray, ndarray)
        Grid import and export prices (T,), currency/kWh.
    up_kw : ndarray (R, T)
        Upward flexibility of each region.

    Raises
    ------
    InfeasibleError
        When no import profiles within the regions' envelopes meet the cap.
    """
    price_buy, _ = prices
    R = len(regions)
    T = cap_kw.size
    dt = float(regions[0].dt_h)
    lp = LinearProgram(name="city_allocation")
    flat_price = float(np.abs(price_buy).max(initial=0.0)) or 1.0
    w = tracking * flat_price
    net_exprs = []
    fixed = np.zeros((R, T))
    for r, sol in enumerate(regions):
        env = sol.envelope
        ev_net = sol.ev_net_kw if sol.ev_net_kw is not None else np.zeros(T)
        fixed[r] = sol.import_kw - ev_net
        if env is None:
            net_exprs.append(LinExpr.constant(np.zeros(T)))
            continue
        pc = lp.add_variables(f"region{r}_p_ch", T, 0.0, env.p_ch_max_kw[0], block="region")
        pd_ = lp.add_variables(f"region{r}_p_dis", T, 0.0, env.p_dis_max_kw[0], block="region")
        x = lp.add_variables(f"region{r}_e", T, env.e_lower_kwh[0], env.e_upper_kwh[0], block="region")
        delta = pc * (dt * env.eff_ch[0]) - pd_ * (dt / env.eff_dis[0])
        lp.add_constraints(f"region{r}_energy_balance_first", x[0:1] - delta[0:1], "==", 0.0, block="region")
        if T > 1:
            lp.add_constraints(f"region{r}_energy_balance", x[1:] - x[:-1] - delta[1:], "==", 0.0, block="region")
        if env.interval_start.size:
            gain = x[env.interval_end] - x[env.interval_start]
            lp.add_constraints(f"region{r}_interval_up", gain, "<=", env.interval_up_kwh[0], block="region")
            lp.add_constraints(f"region{r}_interval_down", gain, ">=", env.interval_down_kwh[0], block="region")
        net = pc - pd_
        over = lp.add_variables(f"region{r}_over", T, 0.0, np.inf, block="region")
        under = lp.add_variables(f"region{r}_under", T, 0.0, np.inf, block="region")
        lp.add_constraints(f"region{r}_tracking", net - over + under, "==", ev_net, block="region")
        lp.add_objective(f"region{r}_energy", net * (dt * price_buy), block="objective")
        res = sol.reservation_per_kwh if sol.reservation_per_kwh is not None else np.zeros(T)
        lp.add_objective(f"region{r}_reservation", pd_ * (dt * res), block="objective")
        lp.add_objective(f"region{r}_tracking", (over + under) * (dt * w), block="objective")
        net_exprs.append(net)
    finite = np.flatnonzero(np.isfinite(cap_kw))
    total = net_exprs[0]
    for e in net_exprs[1:]:
        total = total + e
    if finite.size:
        lp.add_constraints("city_import_cap", total[finite], "<=", (cap_kw - fixed.sum(axis=0))[finite],
                           block="city")
    session = HighsSession()
    session.load(lp.compile(), lp)
    out = session.solve()
    if not out.optimal:
        if "infeasible" in out.status.lower():
            raise InfeasibleError("city target cannot be met: no import profiles within the regions' flexibility "
                                  "envelopes keep the city's import under the cap")
        raise SolverError(f"HiGHS stopped with status {out.status!r} on the city allocation")
    profile = fixed + np.array([lp.evaluate(e, out.x) if e.ids.size else np.zeros(T) for e in net_exprs])
    return share_cap(cap_kw, profile, np.zeros((R, T)), up_kw)

r"""The service metrics of T/JES 012-2026 Appendix A (A.2–A.6), exactly, and their edge cases.

One function per metric, vectorised with numpy. Symbols as in A.1: step index
:math:`k = 1..N`, step length :math:`\Delta t` in hours, powers in kW (positive = load
drawn from the grid, as optev's fleet import), reactive power in kvar, voltages in p.u.

A.2 peak regulation / load shifting
    :math:`\Delta P_{peak} = \max_k P_{base}[k] - \max_k P_{act}[k]` (kW, :func:`delta_p_peak_kw`),
    :math:`E_{adj} = \sum_k \max(0, P_{base}[k] - P_{act}[k])\,\Delta t` (kWh, :func:`e_adj_kwh`).
A.3 reactive support and voltage
    :math:`\bar Q_{EV} = \frac1N \sum_k Q_{EV}[k]` (kvar, :func:`q_ev_mean_kvar`),
    :math:`I_{V,i} = 1 - \sum_k |V^{act}_i[k] - V^*| \,/\, \sum_k |V^{base}_i[k] - V^*|`
    per bus :math:`i` (:func:`i_v`; :func:`i_v_total` pools all buses).
A.4 frequency regulation
    :math:`MAE = \frac1N \sum_k |P_{act}[k] - P_{cmd}[k]|` (kW, :func:`mae_kw`),
    :math:`\eta = \#\{k : |P_{act}[k] - P_{cmd}[k]| \le \delta\} / N \times 100\,\%` (:func:`eta_pct`).
A.5 renewable smoothing
    :math:`\bar S(X) = \frac{1}{N-1} \sum_{k \ge 2} |X[k] - X[k-1]|` (kW per step, :func:`s_bar_kw`),
    :math:`S_{impr} = 1 - \bar S(P_{RES+EV}) / \bar S(P_{RES})` (:func:`s_impr`).
A.6 demand response
    :math:`E_{DR} = \sum_k \max(0, P_{base}[k] - P_{act}[k])\,\Delta t` (kWh, :func:`e_dr_kwh`,
    the same sum as :math:`E_{adj}`), :math:`Pay = \pi E_{DR}` (:func:`pay_energy`); the
    capacity form used by Jiangsu's DR rules, :math:`Pay = \pi_{kW} \bar P_{resp}` with
    :math:`\bar P_{resp} = E_{DR} / h` (``../shared/services/china_rules.md`` §2.1,
    :func:`pay_capacity`).

Edge cases the standard leaves open (defined here, tested in ``tests/test_appendix_a.py``)
    * **Missing telemetry.** A step where any series of a metric is NaN is left out of that
      metric (so :math:`N` counts valid steps); :func:`valid_steps` reports how many were
      used. Infinite values are errors: they are never measurements.
    * **Empty window** (no valid step): every metric is NaN — "not measured", written as
      null — never 0, which would read as "no effect".
    * **Zero denominators.** When the baseline voltage sits exactly on the target
      (:math:`\sum|V^{base} - V^*| = 0`) or the renewable output is flat
      (:math:`\bar S(P_{RES}) = 0`), there is nothing to improve: the improvement is 0 if
      the controlled run is also exact/flat, and NaN (undefined) otherwise — a worsening
      from a perfect baseline has no finite ratio; the absolute deviation is reported
      beside it.
    * :math:`\bar S` needs two consecutive valid steps; with NaN in the middle, only
      differences of two valid neighbours count and the mean is over those.
    * The tolerance test of η is :math:`|P_{act} - P_{cmd}| \le \delta` with the float
      guard :data:`~optev.tolerances.METRIC_ATOL_KW`, so that an error equal to δ passes
      despite rounding.

Market quantities (``china_rules.md`` §0.3, §5): the regulation mileage
:math:`D = \sum_k |P_{cmd}[k] - P_{cmd}[k-1]|` (kW, :func:`mileage_kw`) and the
valley-filling energy :math:`E_{fill} = \sum_k \max(0, P_{act}[k] - P_{base}[k])\,\Delta t`
(kWh, :func:`e_fill_kwh`).
"""

from __future__ import annotations

import numpy as np

from optev.errors import DataError
from optev.tolerances import METRIC_ATOL_KW

__all__ = ["delta_p_peak_kw", "e_adj_kwh", "e_dr_kwh", "e_fill_kwh", "eta_pct", "i_v", "i_v_total", "improvement",
           "mae_kw", "mileage_kw", "pay_capacity", "pay_energy", "q_ev_mean_kvar", "s_bar_kw", "s_impr",
           "valid_steps"]


def _series(name: str, values: object) -> np.ndarray:
    """A float array of a metric input; infinite values are refused (NaN means missing)."""
    arr = np.asarray(values, dtype=float)
    if np.isinf(arr).any():
        k = int(np.flatnonzero(np.isinf(arr).ravel())[0])
        raise DataError(f"{name} is infinite at position {k}; use NaN for missing telemetry")
    return arr


def _step_h(dt_h: float) -> float:
    if not (np.isfinite(dt_h) and dt_h > 0):
        raise DataError(f"step length dt_h must be a positive number of hours, got {dt_h!r}")
    return float(dt_h)


def _pair(a_name: str, a: object, b_name: str, b: object) -> tuple[np.ndarray, np.ndarray]:
    """Two series of one shape with the steps where either is missing removed (along axis 0)."""
    x, y = _series(a_name, a), _series(b_name, b)
    if x.shape != y.shape:
        raise DataError(f"{a_name} and {b_name} differ in shape: {x.shape} vs {y.shape}")
    ok = ~(np.isnan(x) | np.isnan(y))
    if x.ndim > 1:
        ok = ok.reshape(ok.shape[0], -1).all(axis=1) if ok.size else np.zeros(ok.shape[0], bool)
    return x[ok], y[ok]


def valid_steps(*series: object) -> int:
    """Number of steps at which every one of ``series`` (same length) has a value."""
    arrays = [np.asarray(s, dtype=float) for s in series]
    if not arrays:
        return 0
    ok = np.ones(arrays[0].shape[0], bool)
    for a in arrays:
        missing = np.isnan(a)
        ok &= ~(missing.reshape(a.shape[0], -1).any(axis=1) if a.ndim > 1 else missing)
    return int(ok.sum())


# -- A.2 peak regulation and load shifting ---------------------------------------------------------

def delta_p_peak_kw(p_base_kw: object, p_act_kw: object) -> float:
    """A.2 (1): peak reduction ``max P_base − max P_act``, kW (NaN for an empty window)."""
    base, act = _pair("P_base", p_base_kw, "P_act", p_act_kw)
    if base.size == 0:
        return float("nan")
    return float(base.max() - act.max())


def _shortfall_kwh(p_base_kw: object, p_act_kw: object, dt_h: float) -> float:
    """``Σ max(0, P_base − P_act) Δt``, kWh: the sum of A.2 (2) and A.6 (9)."""
    dt = _step_h(dt_h)
    base, act = _pair("P_base", p_base_kw, "P_act", p_act_kw)
    if base.size == 0:
        return float("nan")
    return float(np.maximum(base - act, 0.0).sum() * dt)


def e_adj_kwh(p_base_kw: object, p_act_kw: object, dt_h: float) -> float:
    """A.2 (2): energy shaved or shifted below the baseline, kWh."""
    return _shortfall_kwh(p_base_kw, p_act_kw, dt_h)


def e_fill_kwh(p_base_kw: object, p_act_kw: object, dt_h: float) -> float:
    """Valley-filling energy ``Σ max(0, P_act − P_base) Δt``, kWh (``china_rules.md`` §5, js_dr_2018_fill)."""
    return _shortfall_kwh(p_act_kw, p_base_kw, dt_h)


# -- A.3 reactive support and voltage --------------------------------------------------------------

def q_ev_mean_kvar(q_ev_kvar: object) -> float:
    """A.3 (3): mean reactive power of the EVs over the valid steps, kvar."""
    q = _series("Q_EV", q_ev_kvar)
    q = q[~np.isnan(q)]
    return float(q.mean()) if q.size else float("nan")


def improvement(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``1 − num/den`` with the zero-denominator rule of the module docstring (I_V, S_impr)."""
    out = np.full(np.shape(num), np.nan)
    pos = den > 0
    out[pos] = 1.0 - num[pos] / den[pos]
    out[(den == 0) & (num == 0)] = 0.0
    return out


def _voltage_sums(v_act_pu: object, v_base_pu: object, v_target_pu: object) -> tuple[np.ndarray, np.ndarray]:
    act = _series("V_act", v_act_pu)
    base = _series("V_base", v_base_pu)
    if act.ndim == 1:
        act, base = act[:, None], base[:, None]
    act, base = _pair("V_act", act, "V_base", base)
    target = np.broadcast_to(_series("V*", v_target_pu), act.shape[1:]) if act.size else np.zeros(act.shape[1:])
    return np.abs(act - target).sum(axis=0), np.abs(base - target).sum(axis=0)


def i_v(v_act_pu: object, v_base_pu: object, v_target_pu: object = 1.0) -> np.ndarray:
    """A.3 (4): voltage-deviation improvement of each bus (columns; a 1-D input is one bus).

    Parameters
    ----------
    v_act_pu, v_base_pu : array (N,) or (N, n_bus)
        Voltage magnitudes with control and in the baseline, p.u.
    v_target_pu : float or array (n_bus,)
        Target voltage :math:`V^*`, p.u.

    Returns
    -------
    ndarray (n_bus,)
        ``1 − Σ|V_act − V*| / Σ|V_base − V*|`` per bus; NaN for an empty window and for a
        bus whose baseline was exact but the controlled run is not.
    """
    num, den = _voltage_sums(v_act_pu, v_base_pu, v_target_pu)
    if num.size and not valid_steps(v_act_pu, v_base_pu):
        return np.full(num.shape, np.nan)
    return improvement(num, den)


def i_v_total(v_act_pu: object, v_base_pu: object, v_target_pu: object = 1.0) -> float:
    """A.3 (4) pooled over all buses (sums over buses and steps): one figure for a feeder."""
    num, den = _voltage_sums(v_act_pu, v_base_pu, v_target_pu)
    if not valid_steps(v_act_pu, v_base_pu):
        return float("nan")
    return float(improvement(np.array(num.sum()), np.array(den.sum())))


# -- A.4 frequency regulation ----------------------------------------------------------------------

def mae_kw(p_act_kw: object, p_cmd_kw: object) -> float:
    """A.4 (5): mean absolute tracking error, kW."""
    act, cmd = _pair("P_act", p_act_kw, "P_cmd", p_cmd_kw)
    return float(np.abs(act - cmd).mean()) if act.size else float("nan")


def eta_pct(p_act_kw: object, p_cmd_kw: object, delta_kw: float) -> float:
    """A.4 (6): share of steps tracked within ``delta_kw``, percent (0–100)."""
    if not (np.isfinite(delta_kw) and delta_kw >= 0):
        raise DataError(f"tracking tolerance delta must be a non-negative number of kW, got {delta_kw!r}")
    act, cmd = _pair("P_act", p_act_kw, "P_cmd", p_cmd_kw)
    if act.size == 0:
        return float("nan")
    return float(100.0 * np.mean(np.abs(act - cmd) <= delta_kw + METRIC_ATOL_KW))


def mileage_kw(p_cmd_kw: object) -> float:
    """Regulation mileage ``D = Σ_k |P_cmd[k] − P_cmd[k−1]|``, kW (over valid neighbours; NaN if empty)."""
    if not valid_steps(p_cmd_kw):
        return float("nan")
    return float(_abs_differences("P_cmd", p_cmd_kw).sum())


# -- A.5 renewable smoothing -----------------------------------------------------------------------

def _abs_differences(name: str, values: object) -> np.ndarray:
    x = _series(name, values)
    if x.ndim != 1:
        raise DataError(f"{name} must be one series, got shape {x.shape}")
    d = np.abs(np.diff(x))
    return d[~np.isnan(d)]


def s_bar_kw(x_kw: object) -> float:
    """A.5 (7): mean absolute step-to-step change of a series, kW (NaN with fewer than two valid neighbours)."""
    d = _abs_differences("X", x_kw)
    return float(d.mean()) if d.size else float("nan")


def s_impr(p_res_ev_kw: object, p_res_kw: object) -> float:
    """A.5 (8): smoothing improvement ``1 − S̄(P_RES+EV) / S̄(P_RES)``, over the neighbours valid in both."""
    combined, res = _series("P_RES+EV", p_res_ev_kw), _series("P_RES", p_res_kw)
    if combined.shape != res.shape or combined.ndim != 1:
        raise DataError(f"P_RES+EV and P_RES must be series of one length, got {combined.shape} and {res.shape}")
    ok = ~(np.isnan(combined) | np.isnan(res))
    pairs = ok[1:] & ok[:-1]
    if not pairs.any():
        return float("nan")
    num = np.abs(np.diff(combined))[pairs].mean()
    den = np.abs(np.diff(res))[pairs].mean()
    return float(improvement(np.array(num), np.array(den)))


# -- A.6 demand response ---------------------------------------------------------------------------

def e_dr_kwh(p_base_kw: object, p_act_kw: object, dt_h: float) -> float:
    """A.6 (9): demand-response energy below the baseline, kWh (the sum of A.2 (2))."""
    return _shortfall_kwh(p_base_kw, p_act_kw, dt_h)


def pay_energy(price_per_kwh: float, e_dr: float) -> float:
    """A.6 (10): ``Pay = π · E_DR`` (currency; π per kWh)."""
    return float(price_per_kwh) * float(e_dr)


def pay_capacity(price_per_kw: float, e_dr: float, duration_h: float) -> float:
    """Capacity-type DR payment ``π_kW · E_DR / h`` (currency; π per kW and event)."""
    return float(price_per_kw) * float(e_dr) / _step_h(duration_h)

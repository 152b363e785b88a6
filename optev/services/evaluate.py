"""What a service delivered: Appendix A metrics, payment and response records of a run (R6.5.1, R6.5.3).

The measured quantity is the participants' realised net EV power per step (the plant's
``station`` table), against the request's baseline per step (:mod:`optev.services.baseline`)
— both realised, never the plan. Per family:

=======================  ==========================================================================
product                  Appendix A metrics (others null)
=======================  ==========================================================================
peak_regulation          ΔP_peak, E_adj (A.2)
valley_filling           E_adj as the filled energy Σ max(0, P_act − P_base)·Δt (A.2 mirrored)
demand_response          E_DR, Pay (A.6)
renewable_smoothing      S̄ of P_RES+EV = PV + wind − EV, S_impr against PV + wind alone (A.5)
voltage_support          Q̄_EV of the participants' stations, I_V pooled over the buses (A.3)
=======================  ==========================================================================

Payment (``pay``, currency) by the rule's basis: ``energy`` — price × billable energy;
``capacity_event`` — price × mean response (energy / window hours) per occurrence. A band
(``band_low``, ``band_high``) pays energy above ``band_high`` × requested at
``over_performance_factor`` and charges ``penalty_factor`` × price per kWh by which the
billable energy falls short of ``band_low`` × requested; without a band, a
``penalty_factor`` charges the shortfall below the requested energy. The price is capped
at ``price_max``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optev.services import appendix_a as A
from optev.services.presets import RULES_VERSION, ServiceRule
from optev.services.request import ServiceRequest

APPENDIX_A_KEYS = ("delta_p_peak_kw", "e_adj_kwh", "q_ev_mean_kvar", "i_v", "mae_kw", "eta", "s_bar_kw", "s_impr",
                   "e_dr_kwh", "pay")
"""Keys of ``summary["appendix_a"]`` (the issue's interface; null where a service does not define one)."""

RECORD_COLUMNS = ("service_id", "product", "participant_kind", "participant_id", "start", "end", "requested_kw",
                  "requested_kwh", "delivered_kwh", "delivered_kw", "delivered_kvar", "accuracy", "delay_s",
                  "baseline_rule", "baseline_kwh", "data_quality", "rule", "rule_version")
"""Columns of the ``service_records`` table (R6.5.3): energies at 0.1 kWh, powers at 1 kW."""

ENERGY_RESOLUTION_KWH = 0.1
POWER_RESOLUTION_KW = 1.0


def net_power(station_table: pd.DataFrame, stations: tuple[str, ...], times: pd.DatetimeIndex) -> pd.DataFrame:
    """Net EV power (charge − discharge) of ``stations`` per step: times × stations, kW."""
    tab = station_table[station_table["station_id"].astype(str).isin(stations)]
    wide = (tab.assign(p=tab["p_ch_kw"].to_numpy(float) - tab["p_dis_kw"].to_numpy(float))
            .pivot_table(index="time", columns="station_id", values="p", aggfunc="sum"))
    wide.columns = wide.columns.astype(str)
    return wide.reindex(index=times, columns=list(stations)).fillna(0.0)


def round_conserving(values: np.ndarray, resolution: float) -> np.ndarray:
    """Round to multiples of ``resolution`` so that the rounded values sum to the rounded total
    (largest remainder: the units the floors lose go to the largest remainders, ties by position)."""
    v = np.asarray(values, float)
    if not v.size:
        return v.copy()
    units = v / resolution
    total = int(np.round(units.sum()))
    base = np.floor(units)
    left = total - int(base.sum())
    order = np.argsort(-(units - base), kind="stable")
    base[order[:max(left, 0)]] += 1.0
    if left < 0:
        base[order[::-1][:(-left)]] -= 1.0
    return base * resolution


@dataclass(frozen=True)
class ServiceOutcome:
    """What a service delivered in a run.

    Attributes
    ----------
    metrics : dict
        ``appendix_a``: :data:`APPENDIX_A_KEYS` (None where not defined).
    records : DataFrame
        :data:`RECORD_COLUMNS`, one row per window occurrence for the participants and
        one per participating station.
    series : DataFrame
        Per step: ``time``, ``p_base_kw``, ``p_act_kw``, ``p_limit_kw`` (NaN outside the window);
        frequency products per signal sample, with ``p_base_kw`` the command and
        ``p_tolerance_kw`` A.4's δ (a sample within ``p_base_kw`` ± δ passes).
    """

    metrics: dict[str, Any]
    records: pd.DataFrame
    series: pd.DataFrame


def nothing_delivered() -> ServiceOutcome:
    """The outcome of a refused request: no metric, no record, no series (the day ran without it)."""
    return ServiceOutcome({key: None for key in APPENDIX_A_KEYS}, pd.DataFrame(columns=list(RECORD_COLUMNS)),
                          pd.DataFrame(columns=["time", "p_base_kw", "p_act_kw", "p_limit_kw"]))


def _billable(product: str, base: np.ndarray, act: np.ndarray, dt_h: float) -> float:
    if product == "valley_filling":
        return A.e_fill_kwh(base, act, dt_h)
    return A.e_dr_kwh(base, act, dt_h)


def payment(rule: ServiceRule, billable_kwh: float, requested_kwh: float, hours: float) -> float:
    """What the rule pays for one occurrence (module docstring), currency."""
    if not np.isfinite(billable_kwh):
        return float("nan")
    price = float(rule.price or 0.0)
    if rule.price_max is not None:
        price = min(price, rule.price_max)
    paid = billable_kwh
    if rule.band_high is not None and requested_kwh > 0:
        top = rule.band_high * requested_kwh
        paid = min(billable_kwh, top) + float(rule.over_performance_factor or 0.0) * max(billable_kwh - top, 0.0)
    floor = (rule.band_low if rule.band_low is not None else 1.0) * requested_kwh
    penalty = float(rule.penalty_factor or 0.0) * price * max(floor - paid, 0.0) if requested_kwh > 0 else 0.0
    if rule.payment_basis == "capacity_event":
        return price * paid / max(hours, 1e-9) - penalty / max(hours, 1e-9)
    return price * paid - penalty


def _occurrences(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) step of each run of True."""
    starts = np.flatnonzero(mask & ~np.r_[False, mask[:-1]])
    ends = np.flatnonzero(mask & ~np.r_[mask[1:], False])
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def _requested_kw(request: ServiceRequest, base: np.ndarray, limit: np.ndarray) -> float:
    """The mean power the request asks to move in one occurrence, kW (from a limit: the mean gap)."""
    q = request.quantity
    for key in ("reduction_kw", "increase_kw"):
        if key in q:
            return float(q[key])
    gap = np.abs(base - limit)
    return float(np.nanmean(gap)) if np.isfinite(gap).any() else float("nan")


def _delay_s(request: ServiceRequest, base: np.ndarray, act: np.ndarray, requested_kw: float,
             step_s: float) -> float:
    """Time from the window start to the first step delivering the requested power (within the
    1 kW setpoint grid), s; NaN if none does."""
    moved = act - base if request.product == "valley_filling" else base - act
    hit = np.flatnonzero(moved >= requested_kw - POWER_RESOLUTION_KW)
    return float(hit[0] * step_s) if hit.size else float("nan")


def _quality(base: np.ndarray, act: np.ndarray, request: ServiceRequest, steps_missing: int) -> str:
    flags = []
    if steps_missing:
        flags.append(f"missing_steps={steps_missing}")
    if np.isnan(base).any():
        flags.append("baseline_missing")
    if request.baseline == "uncontrolled":
        flags.append("baseline_simulated")
    return ";".join(flags) or "ok"


def evaluate_limit_service(request: ServiceRequest, times: pd.DatetimeIndex, dt_h: float, p_act: pd.DataFrame,
                           p_base: pd.Series, p_limit: pd.Series,
                           base_stations: pd.DataFrame | None = None) -> ServiceOutcome:
    """Metrics, payment and records of a peak-regulation, valley-filling or demand-response run.

    Parameters
    ----------
    request : ServiceRequest
    times : DatetimeIndex
        Step start times of the run.
    dt_h : float
        Step, h.
    p_act : DataFrame
        Realised net EV power per step and participating station (:func:`net_power`), kW.
    p_base : Series
        The participants' baseline per step (NaN outside the window), kW.
    p_limit : Series
        The limit the controller was given per step (NaN where none), kW.
    base_stations : DataFrame, optional
        Per-station baselines (times × stations, kW), for the station records.

    Returns
    -------
    ServiceOutcome
    """
    inside = request.window.mask(times).to_numpy(bool)
    act = p_act.sum(axis=1).to_numpy(float)
    base = p_base.reindex(times).to_numpy(float)
    limit = p_limit.reindex(times).to_numpy(float)
    rows: list[dict[str, Any]] = []
    billable_total = pay_total = 0.0
    for a, b in _occurrences(inside):
        sl = slice(a, b + 1)
        hours = (b + 1 - a) * dt_h
        requested = _requested_kw(request, base[sl], limit[sl])
        billable = _billable(request.product, base[sl], act[sl], dt_h)
        billable_total += billable
        pay_total += payment(request.rule, billable, requested * hours, hours)
        rows += _records(request, times, dt_h, a, b, p_act, base, requested, billable, base_stations)
    win = inside
    metrics: dict[str, Any] = {k: None for k in APPENDIX_A_KEYS}
    if request.product == "peak_regulation":
        metrics["delta_p_peak_kw"] = A.delta_p_peak_kw(base[win], act[win])
        metrics["e_adj_kwh"] = billable_total
    elif request.product == "valley_filling":
        metrics["e_adj_kwh"] = billable_total
    else:
        metrics["e_dr_kwh"] = billable_total
    metrics["pay"] = pay_total
    metrics = {k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in metrics.items()}
    series = pd.DataFrame({"time": times, "p_base_kw": np.where(inside, base, np.nan), "p_act_kw": act,
                           "p_limit_kw": limit})
    return ServiceOutcome(metrics, pd.DataFrame(rows, columns=list(RECORD_COLUMNS)), series)


def _records(request: ServiceRequest, times: pd.DatetimeIndex, dt_h: float, a: int, b: int, p_act: pd.DataFrame,
             base: np.ndarray, requested_kw: float, billable_kwh: float,
             base_stations: pd.DataFrame | None) -> list[dict[str, Any]]:
    """One record for the participants and, with per-station baselines, one per station: its share
    of the group's delivered energy by its own move against its own baseline (rounded to sum exactly)."""
    sl = slice(a, b + 1)
    hours = (b + 1 - a) * dt_h
    start, end = times[a], times[b] + pd.Timedelta(hours=dt_h)
    act_total = p_act.to_numpy(float)[sl].sum(axis=1)
    group_kwh = float(np.round(billable_kwh / ENERGY_RESOLUTION_KWH) * ENERGY_RESOLUTION_KWH)
    common = {"service_id": request.id, "product": request.product, "start": start, "end": end,
              "baseline_rule": request.baseline, "rule": request.rule.key, "rule_version": RULES_VERSION}
    quality = _quality(base[sl], act_total, request, 0)
    group = {**common, "participant_kind": request.participants.scope,
             "participant_id": ",".join(request.participants.ids) or "city",
             "requested_kw": float(np.round(requested_kw)), "requested_kwh": round(requested_kw * hours, 1),
             "delivered_kwh": group_kwh, "delivered_kw": float(np.round(billable_kwh / hours)),
             "accuracy": billable_kwh / (requested_kw * hours) if requested_kw > 0 else float("nan"),
             "delay_s": _delay_s(request, base[sl], act_total, requested_kw, dt_h * 3600.0),
             "baseline_kwh": round(float(np.nansum(base[sl]) * dt_h), 1), "data_quality": quality}
    if base_stations is None:
        return [group]  # no per-station baseline (a metered group history): the group record only
    # station shares of the group's energy: each station's own move against its own baseline
    sign = 1.0 if request.product == "valley_filling" else -1.0
    own = base_stations.reindex(index=times, columns=p_act.columns).to_numpy(float)[sl]
    moved = np.maximum(sign * (p_act.to_numpy(float)[sl] - own), 0.0).sum(axis=0) * dt_h
    total = float(np.nansum(moved))
    share = np.nan_to_num(moved) / total if total > 0 else np.zeros(moved.size)
    per_station = round_conserving(share * group_kwh, ENERGY_RESOLUTION_KWH) if total > 0 else share
    rows = [group]
    for sid, kwh in zip(p_act.columns, per_station):
        rows.append({**common, "participant_kind": "station", "participant_id": str(sid), "requested_kw": np.nan,
                     "requested_kwh": np.nan, "delivered_kwh": float(kwh),
                     "delivered_kw": float(np.round(kwh / hours)), "accuracy": np.nan, "delay_s": np.nan,
                     "baseline_kwh": round(float(np.nansum(own[:, list(p_act.columns).index(sid)]) * dt_h), 1),
                     "data_quality": "share_of_group"})
    return rows


def renewable_power(der: pd.DataFrame | None, times: pd.DatetimeIndex, column: str = "p_kw") -> pd.Series:
    """PV + wind power per step from the ``der`` table, kW (0 without any): ``p_kw`` realised
    (after curtailment), ``p_avail_kw`` available."""
    if der is None or not len(der):
        return pd.Series(0.0, index=times)
    res = der[der["kind"].astype(str).isin(("pv", "wind"))]
    return res.groupby("time")[column].sum().reindex(times).fillna(0.0)


def evaluate_smoothing(request: ServiceRequest, times: pd.DatetimeIndex, p_act: pd.DataFrame,
                       p_res: pd.Series, p_res_used: pd.Series | None = None) -> ServiceOutcome:
    """A.5 of a renewable-smoothing run: S̄ of PV + wind − EV power and S_impr against PV + wind.

    ``P_RES`` is the renewables' *available* output (``p_res``): curtailing them is one way to
    smooth the combined output (priced by the curtailment cost), and measuring against the
    curtailed output would credit the ramps it creates. ``P_RES+EV`` is the realised output
    (``p_res_used``, default ``p_res``) less the participants' EV power.

    Parameters
    ----------
    request : ServiceRequest
    times : DatetimeIndex
    p_act : DataFrame
        Realised net EV power per step and participating station, kW.
    p_res : Series
        Available PV + wind power per step, kW.
    p_res_used : Series, optional
        Realised (dispatched) PV + wind power per step, kW.

    Returns
    -------
    ServiceOutcome
        ``s_bar_kw`` and ``s_impr`` (per occurrence in the records; over all occurrences
        pooled in the metrics: the mean of the step changes inside the windows).
    """
    inside = request.window.mask(times).to_numpy(bool)
    res = p_res.reindex(times).to_numpy(float)
    used = res if p_res_used is None else p_res_used.reindex(times).to_numpy(float)
    combined = used - p_act.sum(axis=1).to_numpy(float)
    rows = []
    changes_c: list[np.ndarray] = []
    changes_r: list[np.ndarray] = []
    for a, b in _occurrences(inside):
        sl = slice(a, b + 1)
        changes_c.append(np.abs(np.diff(combined[sl])))
        changes_r.append(np.abs(np.diff(res[sl])))
        s_c, impr = A.s_bar_kw(combined[sl]), A.s_impr(combined[sl], res[sl])
        rows.append({"service_id": request.id, "product": request.product,
                     "participant_kind": request.participants.scope,
                     "participant_id": ",".join(request.participants.ids) or "city", "start": times[a],
                     "end": times[b] + (times[1] - times[0] if len(times) > 1 else pd.Timedelta(0)),
                     "requested_kw": np.nan, "requested_kwh": np.nan, "delivered_kwh": np.nan,
                     "delivered_kw": float(np.round(A.s_bar_kw(res[sl]) - s_c)) if np.isfinite(s_c) else np.nan,
                     "accuracy": impr, "delay_s": np.nan, "baseline_rule": request.baseline, "baseline_kwh": np.nan,
                     "data_quality": "ok" if np.isfinite(impr) else "flat_renewables", "rule": request.rule.key,
                     "rule_version": RULES_VERSION})
    metrics: dict[str, Any] = {k: None for k in APPENDIX_A_KEYS}
    if changes_c:
        c, r = np.concatenate(changes_c), np.concatenate(changes_r)
        if c.size:
            metrics["s_bar_kw"] = float(c.mean())
            impr = float(A.improvement(np.array(c.mean()), np.array(r.mean()))) if r.size else float("nan")
            metrics["s_impr"] = impr if np.isfinite(impr) else None
    metrics["pay"] = 0.0  # a KPI: the request parser refuses a price
    series = pd.DataFrame({"time": times, "p_base_kw": np.where(inside, res, np.nan), "p_act_kw": combined,
                           "p_limit_kw": np.nan})
    return ServiceOutcome(metrics, pd.DataFrame(rows, columns=list(RECORD_COLUMNS)), series)


def _wide_voltages(bus: pd.DataFrame, times: pd.DatetimeIndex, buses: list[str]) -> np.ndarray:
    """AC voltages (times × buses), p.u.; NaN where the check did not run or converge."""
    wide = bus.pivot_table(index="time", columns="bus_id", values="vm_pu_ac", aggfunc="first", dropna=False)
    wide.columns = wide.columns.astype(str)
    return wide.reindex(index=times, columns=buses).to_numpy(float)


def evaluate_voltage(request: ServiceRequest, times: pd.DatetimeIndex, dt_h: float, station: pd.DataFrame,
                     stations: tuple[str, ...], bus: pd.DataFrame, baseline_bus: pd.DataFrame,
                     buses: list[str]) -> ServiceOutcome:
    """A.3 of a voltage-support run: Q̄_EV of the participants and I_V of the supported buses.

    Parameters
    ----------
    request : ServiceRequest
    times : DatetimeIndex
    dt_h : float
    station : DataFrame
        The realised ``station`` table (``q_kvar``: reactive injection of the chargers).
    stations : tuple of str
        The participating stations.
    bus, baseline_bus : DataFrame
        AC voltages of the controlled and the uncontrolled day (``bus_id``, ``time``, ``vm_pu_ac``).
    buses : list of str
        The supported buses.

    Returns
    -------
    ServiceOutcome
        ``q_ev_mean_kvar``, ``i_v`` (pooled) and ``pay`` (contract price × Σ|Q|·Δt); one
        record per occurrence and one per bus (its own I_V as ``accuracy``).
    """
    inside = request.window.mask(times).to_numpy(bool)
    tab = station[station["station_id"].astype(str).isin(stations)]
    q = tab.groupby("time")["q_kvar"].sum().reindex(times).fillna(0.0).to_numpy(float)
    v_act, v_base = _wide_voltages(bus, times, buses), _wide_voltages(baseline_bus, times, buses)
    target = float(request.quantity.get("v_target_pu", 1.0))
    rows: list[dict[str, Any]] = []
    for a, b in _occurrences(inside):
        sl = slice(a, b + 1)
        common = {"service_id": request.id, "product": request.product, "start": times[a],
                  "end": times[b] + pd.Timedelta(hours=dt_h), "baseline_rule": request.baseline,
                  "rule": request.rule.key, "rule_version": RULES_VERSION}
        missing = int((~np.isfinite(v_act[sl]).all(axis=1) | ~np.isfinite(v_base[sl]).all(axis=1)).sum())
        rows.append({**common, "participant_kind": request.participants.scope,
                     "participant_id": ",".join(request.participants.ids) or "city",
                     "delivered_kvar": float(np.round(A.q_ev_mean_kvar(q[sl]))),
                     "accuracy": A.i_v_total(v_act[sl], v_base[sl], target),
                     "data_quality": f"missing_steps={missing}" if missing else "ok"})
        per_bus = A.i_v(v_act[sl], v_base[sl], target)
        rows += [{**common, "participant_kind": "bus", "participant_id": bid, "accuracy": float(iv),
                  "data_quality": "baseline_exact" if not np.isfinite(iv) else "ok"}
                 for bid, iv in zip(buses, per_bus)]
    metrics: dict[str, Any] = {k: None for k in APPENDIX_A_KEYS}
    metrics["q_ev_mean_kvar"] = A.q_ev_mean_kvar(q[inside]) if inside.any() else None
    metrics["i_v"] = A.i_v_total(v_act[inside], v_base[inside], target) if inside.any() else None
    metrics["pay"] = float(request.rule.price or 0.0) * float(np.abs(q[inside]).sum() * dt_h)
    metrics = {k: (None if v is None or not np.isfinite(v) else float(v)) for k, v in metrics.items()}
    series = pd.DataFrame({"time": times, "p_base_kw": np.where(inside, 0.0, np.nan), "p_act_kw": q,
                           "p_limit_kw": np.nan})
    return ServiceOutcome(metrics, pd.DataFrame(rows, columns=list(RECORD_COLUMNS)), series)

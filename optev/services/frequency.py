"""Frequency regulation of a run: the fleet of each control step follows the signal; A.4 and the market.

For each control step inside the service window, the participants' EVs plugged in for the
whole step (the ``ev`` table of the run, its ``plugged_s``) start from the plant's state at
the step start and follow the request's signal every ``interval_s`` seconds around their
realised power (:func:`optev.services.follow.follow`). The samples of all steps give A.4's
MAE and η (δ = the rule's error band E0 × the offered reserve; each command judged on the
fleet's power the rule's response time T0 after it is issued, at the latest at the end of
its sample) and the market's mileage,
K1–K3, K and payment (:mod:`optev.services.market`; a ``capacity_time`` rule pays the
offered MW × hours × its price instead).

Charger dynamics (``PlantConfig``-like, documented defaults): a ramp of
:data:`RAMP_KW_PER_S` per charger and a communication delay of :data:`DELAY_S`; a request may
not change them (they belong to the chargers, not the service).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.window import instance_origin
from optev.data.battery import pair_limits
from optev.data.instance import Instance
from optev.mpc.result import MPCRun
from optev.services import appendix_a as A
from optev.services.evaluate import APPENDIX_A_KEYS, RECORD_COLUMNS, ServiceOutcome
from optev.services.follow import FleetState, follow
from optev.services.market import performance
from optev.services.presets import RULES_VERSION
from optev.services.request import ServiceRequest
from optev.services.signals import droop_signal, make_frequency, make_signal

RAMP_KW_PER_S = 1.0
"""Ramp rate of a charger, kW/s (an EV charger reaches a 7 kW setpoint in seconds)."""
DELAY_S = 2.0
"""Communication delay from the AGC command to the chargers, s."""
DEFAULT_T0_S = 5.0
"""Response time a command is judged after when the rule names none, s (``china_rules.md``: T0 = 5 s)."""


def fleet_at_step(instance: Instance, run: MPCRun, stations: tuple[str, ...], time: pd.Timestamp,
                  step_s: float) -> tuple[FleetState, np.ndarray]:
    """The participants' EVs plugged in for the whole step starting at ``time``: their state at
    the step start (energy from the step-end SOC less the step's stored energy) and their
    realised power; also their station ids."""
    ev = run.tables["ev"]
    rows = ev[(ev["time"] == time) & ev["station_id"].astype(str).isin(stations)
              & (ev["plugged_s"].to_numpy(float) >= step_s - 1e-6)]
    evs = instance.evs.set_index("ev_id").reindex(rows["ev_id"])
    vt = instance.vehicle_types.set_index("vtype_id").reindex(evs["vtype_id"])
    power = instance.station_power().set_index("station_id").reindex(rows["station_id"])
    lim = pair_limits(vt, power, evs["v2g_opt_in"].to_numpy(bool))
    cap = vt["battery_kwh"].to_numpy(float)
    p = rows["p_kw"].to_numpy(float)
    tau_h = step_s / 3600.0
    stored = np.where(p > 0, lim.eff_ch * p * tau_h, p * tau_h / lim.eff_dis)
    e0 = np.clip(rows["soc"].to_numpy(float) * cap - stored, 0.0, cap)
    ses = run.sessions.set_index("session_id").reindex(rows["session_id"])
    due = ses["due_s"].to_numpy(float)
    departure = np.where(np.isfinite(due), due, ses["departure_s"].to_numpy(float))
    fleet = FleetState(e_kwh=e0, capacity_kwh=cap, floor_kwh=evs["soc_min"].to_numpy(float) * cap,
                       need_kwh=ses["need_kwh"].to_numpy(float), departure_s=np.nan_to_num(departure, nan=np.inf),
                       p_ch_max_kw=lim.p_ch_max_kw, p_dis_max_kw=lim.p_dis_max_kw, eff_ch=lim.eff_ch,
                       eff_dis=lim.eff_dis, p0_kw=p)
    return fleet, rows["station_id"].astype(str).to_numpy(object)


def evaluate_frequency(instance: Instance, request: ServiceRequest, run: MPCRun, stations: tuple[str, ...],
                       up_kw: float, down_kw: float) -> ServiceOutcome:
    """Follow the request's signal in every control step of its window (module docstring)."""
    times = pd.DatetimeIndex(run.tables["steps"]["time"])
    step_s = (times[1] - times[0]).total_seconds() if len(times) > 1 else 900.0
    q = request.quantity
    interval_s = float(q.get("interval_s", 4.0))
    inside = request.window.mask(times).to_numpy(bool)
    n_per_step = int(round(step_s / interval_s))
    signal = _signal(request, inside.sum() * step_s, interval_s)
    origin = instance_origin(instance)
    cmd, act, planned, margins, rows, stamps = [], [], [], [], [], []
    plugged: list[int] = []
    offered = max(up_kw, down_kw)
    judge_s = float(request.rule.t0_s or DEFAULT_T0_S)
    for j, k in enumerate(np.flatnonzero(inside).tolist()):
        fleet, _ = fleet_at_step(instance, run, stations, times[k], step_s)
        part = signal[j * n_per_step:(j + 1) * n_per_step]
        t0 = (times[k] - origin).total_seconds()
        out = follow(fleet, part, up_kw, down_kw, t0_s=t0, interval_s=interval_s, delay_s=DELAY_S,
                     ramp_kw_per_s=RAMP_KW_PER_S, judge_s=judge_s)
        plugged.append(fleet.e_kwh.size)
        cmd.append(out.p_cmd_kw)
        act.append(out.p_act_kw)
        planned.append(np.full(part.size, float(fleet.p0_kw.sum())))
        stamps.append(times[k] + pd.to_timedelta(np.arange(part.size) * interval_s, unit="s"))
        margins.append(out.min_floor_margin_kwh)
    p_cmd = np.concatenate(cmd) if cmd else np.zeros(0)
    p_act = np.concatenate(act) if act else np.zeros(0)
    p_plan = np.concatenate(planned) if planned else np.zeros(0)
    delta = (request.rule.error_band_pct or 2.0) / 100.0 * offered
    mae, eta = A.mae_kw(p_act, p_cmd), A.eta_pct(p_act, p_cmd, delta)
    chargers = min(plugged, default=0)  # ramp capability: every charger in use moves, in the thinnest step
    perf = performance(request.rule, offered_kw=offered, ramp_kw_per_min=RAMP_KW_PER_S * 60.0 * chargers,
                       response_s=DELAY_S + interval_s, mae_kw=mae, mileage_kw=_signal_mileage(signal, up_kw, down_kw))
    metrics: dict[str, Any] = {key: None for key in APPENDIX_A_KEYS}
    hours = float(inside.sum()) * step_s / 3600.0
    pay = perf.pay if request.rule.payment_basis == "mileage" else \
        float(request.rule.price or 0.0) * offered / 1000.0 * hours  # capacity × time, price per MW·h
    metrics.update(mae_kw=mae, eta=eta, pay=pay)
    metrics = {key: (None if v is None or not np.isfinite(v) else float(v)) for key, v in metrics.items()}
    floor_margin = float(min(margins)) if margins else float("nan")
    if inside.any():
        first, last = int(np.flatnonzero(inside)[0]), int(np.flatnonzero(inside)[-1])
        rows.append({"service_id": request.id, "product": request.product,
                     "participant_kind": request.participants.scope,
                     "participant_id": ",".join(request.participants.ids) or "city", "start": times[first],
                     "end": times[last] + pd.Timedelta(seconds=step_s), "requested_kw": offered,
                     "delivered_kw": float(np.round(np.mean(np.abs(p_act - p_plan)))) if p_act.size else np.nan,
                     "accuracy": eta / 100.0 if np.isfinite(eta) else np.nan, "delay_s": DELAY_S,
                     "baseline_rule": request.baseline,
                     "data_quality": f"K1={perf.k1:.2f};K2={perf.k2:.2f};K3={perf.k3:.2f};K={perf.k:.2f};"
                                     f"mileage_mw={perf.mileage_mw:.3f};soc_floor_margin_kwh={floor_margin:.3f}",
                     "rule": request.rule.key, "rule_version": RULES_VERSION})
    sample_times = stamps[0].append(stamps[1:]) if stamps else pd.DatetimeIndex([])
    series = pd.DataFrame({"time": sample_times, "p_base_kw": p_cmd, "p_act_kw": p_act, "p_limit_kw": np.nan,
                           "p_tolerance_kw": delta})
    return ServiceOutcome(metrics, pd.DataFrame(rows, columns=list(RECORD_COLUMNS)), series)


def _signal_mileage(signal: np.ndarray, up_kw: float, down_kw: float) -> float:
    """Mileage of the command the signal asks for, kW: Σ|ΔP_cmd| over the samples."""
    dev = np.where(signal > 0, signal * up_kw, signal * down_kw)
    return A.mileage_kw(dev) if dev.size else float("nan")


def _signal(request: ServiceRequest, duration_s: float, interval_s: float) -> np.ndarray:
    """The normalised command of a request: its AGC signal (secondary), or the droop response to
    its frequency trace (primary: ``full_response_hz``, ``deadband_hz``)."""
    q = request.quantity
    seed = int(q.get("seed", 0))
    if request.product == "frequency_primary":
        hz = make_frequency(str(q.get("signal", "random")), duration_s, interval_s, seed, request.source or None)
        return droop_signal(hz, float(q.get("full_response_hz", 0.2)), float(q.get("deadband_hz", 0.033)))
    return make_signal(str(q.get("signal", "regulation_test")), duration_s, interval_s, seed, request.source or None)

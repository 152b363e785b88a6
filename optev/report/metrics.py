"""Figures derived from a closed-loop run: the EV share of the energy cost and the headline
scalars of a summary (one flat row: what ``optev.sweep`` tabulates and the text report shows).

The closed-loop summary (:func:`optev.mpc.simulate`) prices the whole substation import —
on a city feeder the conventional load dominates it, so a controller's effect on the EV
load hardly shows there. :func:`ev_energy_cost` prices the EV load alone at the realised
grid prices, for the controlled run and for the uncontrolled baseline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from optev.data.battery import charger_discharge_kw
from optev.data.instance import Instance
from optev.mpc.forecast import actual_series
from optev.summaries import RunSummary

HEADLINE = (
    ("cost", "cost", "grid import + generation + curtailment cost of the compared steps, realised, currency"),
    ("baseline_cost", "baseline_cost", "the same for the uncontrolled baseline (same DER rule), currency"),
    ("ev_energy_cost", "ev_energy_cost", "realised EV load priced at the grid price (V2G export at the sell price), "
                                         "currency"),
    ("baseline_ev_energy_cost", "baseline_ev_energy_cost", "the same for the uncontrolled baseline, currency"),
    ("peak_import_kw", "peak_import_kw", "highest substation import (AC) of a compared step, kW"),
    ("baseline_peak_import_kw", "baseline_peak_import_kw", "the same for the uncontrolled baseline, kW"),
    ("peak_reduction_kw", "peak_reduction_kw", "baseline peak minus controlled peak, kW"),
    ("peak_ev_kw", "peak_ev_kw", "highest realised EV power of a step, kW"),
    ("baseline_peak_ev_kw", "baseline_peak_ev_kw", "the same for the uncontrolled baseline, kW"),
    ("energy_delivered_kwh", "energy_delivered_kwh", "realised EV charging energy, grid side, kWh"),
    ("energy_local_kwh", "energy_local_kwh", "of which drawn by EVs arriving during a step (local rule), kWh"),
    ("energy_discharged_kwh", "energy_discharged_kwh", "realised V2G energy, grid side, kWh"),
    ("energy_unmet_kwh", "energy_unmet_kwh", "departure needs not met, sessions that left, kWh"),
    ("baseline_energy_unmet_kwh", "baseline_energy_unmet_kwh", "the same for the uncontrolled baseline, kWh"),
    ("energy_deferred_kwh", "energy_deferred_kwh", "need still owed to sessions plugged in at the end, kWh"),
    ("sessions_with_shortfall", "sessions_with_shortfall", "sessions that left short of their need"),
    ("sessions_departed", "sessions_departed", "sessions that left during the run"),
    ("sessions_worse_than_uncontrolled", "sessions_worse_than_uncontrolled",
     "departed sessions left with less than uncontrolled charging gave them (beyond one quantum-step, V2G opt-ins "
     "paid excepted)"),
    ("soc_floor_violations", "soc_floor_violations", "EV-steps discharged below the SOC floor (must be 0)"),
    ("limit_violations", "limit_violations_total", "setpoint grid, charger, station and plant limit breaches "
                                                   "(must be 0)"),
    ("identities_ok", "identities_ok", "the accounting identities hold (station = Σ EVs, battery energy, import)"),
    ("ac_violations", None, "AC power-flow check violations of the applied steps (all kinds)"),
    ("ac_violation_steps", "ac_violation_steps", "steps with at least one AC-check violation"),
    ("baseline_ac_violations", None, "AC-check violations of the uncontrolled baseline"),
    ("excluded_steps", None, "steps left out of costs and peaks: their AC power flow did not converge in either day"),
    ("grid_loadability", "grid_loadability", "largest uniform factor on the base load that the grid carries within "
                                             "limits (no EVs)"),
    ("lindistflow_error_pu", "lindistflow_error_pu", "max |LinDistFlow − AC| voltage of the plans, p.u. "
                                                     "(None without LinDistFlow)"),
    ("solve_s_median", None, "median HiGHS time per step, s"),
    ("solve_s_max", None, "longest HiGHS time of a step, s"),
    ("failed_steps", "failed_steps", "steps whose solve failed (safe local policy applied)"),
    ("soft_limit_steps", "soft_limit_steps", "steps solved with soft limits"),
    ("wall_s", "wall_s", "wall time of the closed loop, s"),
)
"""Headline figures: (column, summary key or None when computed, description with unit)."""


def ev_energy_cost(ev_kw: np.ndarray | pd.Series, price_buy: np.ndarray, price_sell: np.ndarray, dt_h: float) -> float:
    """Cost of an EV load series at grid prices, currency.

    ``Σ_t dt · (buy_t · max(p_t, 0) − sell_t · max(−p_t, 0))`` with ``p_t`` the net EV
    power of step ``t`` (kW, charging positive) and prices in currency/kWh.
    """
    p = np.asarray(ev_kw, float)
    return float(dt_h * np.sum(np.asarray(price_buy, float) * np.maximum(p, 0.0)
                               - np.asarray(price_sell, float) * np.maximum(-p, 0.0)))


def derived_figures(instance: Instance, steps: pd.DataFrame, baseline_steps: pd.DataFrame,
                    step_minutes: float) -> dict[str, Any]:
    """EV energy cost of the run and of the baseline, and the voltage limits of the feeder.

    Parameters
    ----------
    instance : Instance
        The simulated instance (its realised prices are read with
        :func:`optev.mpc.forecast.actual_series`).
    steps, baseline_steps : DataFrame
        ``MPCRun.tables["steps"]`` and ``MPCRun.baseline["steps"]`` (columns ``time``, ``ev_kw``).
    step_minutes : float
        Control interval, minutes.

    Returns
    -------
    dict
        ``ev_energy_cost``, ``baseline_ev_energy_cost`` (currency), ``ev_cost_saving``
        (baseline minus controlled), ``currency`` (the instance's ``metadata.currency``:
        the unit of these and of the summary's ``cost`` and ``baseline_cost``),
        ``voltage_limits_pu`` ([lowest v_min, highest v_max]
        of the feeder's buses, or None without buses), ``v2g_stations`` (ids of the
        stations whose charger model allows discharge, with a discharge cap above 0).
    """
    times = pd.DatetimeIndex(steps["time"])
    dt_h = step_minutes / 60.0
    out: dict[str, Any] = {"ev_energy_cost": None, "baseline_ev_energy_cost": None, "ev_cost_saving": None,
                           "currency": instance.metadata.currency}
    if len(times):
        actual = actual_series(instance, times)
        buy, sell = actual.price_buy, actual.price_sell
        if buy is None or sell is None:  # actual_series gives every series
            raise RuntimeError("actual_series returned no prices")
        out["ev_energy_cost"] = ev_energy_cost(steps["ev_kw"], buy, sell, dt_h)
        out["baseline_ev_energy_cost"] = ev_energy_cost(baseline_steps["ev_kw"], buy, sell, dt_h)
        out["ev_cost_saving"] = out["baseline_ev_energy_cost"] - out["ev_energy_cost"]
    buses = instance.feeder.buses
    out["voltage_limits_pu"] = ([float(buses["v_min_pu"].min()), float(buses["v_max_pu"].max())]
                                if len(buses) else None)
    power = instance.station_power()
    v2g = charger_discharge_kw(power["v2g"].to_numpy(object), power["p_dis_max_kw"].fillna(0.0).to_numpy(float)) > 0
    out["v2g_stations"] = power.loc[v2g, "station_id"].astype(str).tolist()
    return out


def headline(summary: RunSummary) -> dict[str, Any]:
    """The scalar figures of a run summary (:data:`HEADLINE`), in that order.

    Counts by kind (``ac_violations``) are summed; ``solve_s`` is split into median and
    maximum; a figure the summary lacks is None.
    """
    row: dict[str, Any] = {}
    for column, key, _ in HEADLINE:
        if key is not None:
            row[column] = summary.get(key)
    row["ac_violations"] = int(sum((summary.get("ac_violations") or {}).values()))
    row["excluded_steps"] = len(summary.get("excluded_steps") or [])
    row["baseline_ac_violations"] = int(sum((summary.get("baseline_ac_violations") or {}).values()))
    solve = summary.get("solve_s") or {}
    row["solve_s_median"] = solve.get("median")
    row["solve_s_max"] = solve.get("max")
    return {column: row.get(column) for column, _, _ in HEADLINE}

"""Tables and summary of a closed-loop day (:func:`optev.mpc.simulate`), from realised records.

Every figure describes what the plant did (:mod:`optev.mpc.accounting`) and what the AC
power flow found (:mod:`optev.mpc.gridcheck`); plans appear only in columns and keys that
say so (``p_set_kw``, ``ev_set_kw``, ``energy_setpoint_kwh``). Comparisons with the
uncontrolled day use the same steps, the same DER rule and the same cost accounting: steps
whose power flow did not converge in either day are excluded and named
(``excluded_steps``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from optev.blocks.disaggregate import on_setpoint_grid
from optev.compose.formulation import Formulation
from optev.data.battery import charger_discharge_kw, energy_after_step
from optev.data.instance import Instance
from optev.mpc.accounting import (compare_sessions, ev_table, identities, identities_ok, station_table)
from optev.mpc.controller import Controller
from optev.mpc.edge import OutageSchedule, ev_station_params
from optev.mpc.forecast import actual_series
from optev.mpc.gridcheck import comparable, import_cost, per_step_counts
from optev.mpc.loop import LoopRecord
from optev.mpc.result import BASELINE_STEP_COLUMNS, MODE_COLUMNS, STEP_COLUMNS, MPCRun
from optev.powerflow.checks import count_by_kind
from optev.summaries import CostParts, DaySummary, SessionComparison
from optev.tolerances import LIMIT_ATOL_KW, SETPOINT_GRID_ATOL, SOC_ATOL, VOLTAGE_BINDING_ATOL_PU


def _row_min(a: np.ndarray) -> np.ndarray:
    """Minimum of each row ignoring NaN (NaN for an all-NaN or empty row), without warnings."""
    if a.ndim != 2 or a.shape[1] == 0:
        return np.full(a.shape[0], np.nan)
    filled = np.where(np.isnan(a), np.inf, a).min(axis=1)
    return np.where(np.isfinite(filled), filled, np.nan)


def _site_caps(instance: Instance, station_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    st = instance.station_power().set_index("station_id").reindex(station_ids)
    n = st["n_chargers"].to_numpy(float)
    ch = np.minimum(st["p_site_max_kw"].to_numpy(float), n * st["p_ch_max_kw"].to_numpy(float))
    dis = charger_discharge_kw(st["v2g"].to_numpy(object), st["p_dis_max_kw"].to_numpy(float))
    return ch, np.minimum(st["p_site_dis_max_kw"].to_numpy(float), n * dis)


def setpoint_checks(records: pd.DataFrame, instance: Instance, quantum_kw: float, step_s: float) -> dict[str, Any]:
    """Limit, SOC-floor and energy-continuity checks of the applied setpoints and realised SOC.

    ``setpoint_grid`` (setpoints neither on the quantum grid nor at the EV's own limit,
    :func:`optev.blocks.disaggregate.on_setpoint_grid`), ``ev_charge_limit`` /
    ``ev_discharge_limit`` (setpoints beyond the EV's limits at its charger) count
    commanded EV-steps; ``soc_floor`` counts EV-steps that discharged and ended below the
    SOC floor; ``continuity`` is the largest |measured − expected| battery energy at the end
    of a commanded step in which the EV stayed plugged in, the expected energy being the
    start energy plus the setpoint's energy (a battery stops charging when full).
    """
    none = {"limits": {"setpoint_grid": 0, "ev_charge_limit": 0, "ev_discharge_limit": 0}, "soc_floor": 0,
            "continuity": 0.0}
    if not len(records):
        return none
    dt_h = step_s / 3600.0
    floor = records["ev_id"].map(instance.evs.set_index("ev_id")["soc_min"]).to_numpy(float)
    soc = records["soc"].to_numpy(float)
    below = (records["export_kwh"].to_numpy(float) > 0) & (soc < floor - SOC_ATOL)
    cmd = records[records["p_set_kw"].notna()]
    if not len(cmd):
        return {**none, "soc_floor": int(below.sum())}
    p = cmd["p_set_kw"].to_numpy(float)
    cap, p_ch, eff_ch, eff_dis = ev_station_params(instance, cmd["ev_id"].tolist(), cmd["station_id"].tolist())
    pch = np.where(cmd["p_ch_max_kw"].notna(), cmd["p_ch_max_kw"].to_numpy(float), p_ch)
    pdis = cmd["p_dis_max_kw"].fillna(0.0).to_numpy(float)
    pdis_known = np.where(cmd["p_dis_max_kw"].notna(), pdis, np.nan)
    grid = ~on_setpoint_grid(p, pch, pdis_known, quantum_kw, SETPOINT_GRID_ATOL)
    e0 = cmd["e_start_kwh"].to_numpy(float)
    expected = energy_after_step(e0, p, dt_h, cap, eff_ch, eff_dis)
    whole = ~cmd["departed"].to_numpy(bool) & (cmd["plugged_s"].to_numpy(float) >= step_s - 1e-6)
    err = np.where(whole, np.abs(cmd["e_kwh"].to_numpy(float) - expected), 0.0)
    return {"limits": {"setpoint_grid": int(grid.sum()), "ev_charge_limit": int((p > pch + LIMIT_ATOL_KW).sum()),
                       "ev_discharge_limit": int((p < -pdis - LIMIT_ATOL_KW).sum())},
            "soc_floor": int(below.sum()), "continuity": float(np.nanmax(err, initial=0.0))}


def _grid_tables(day: Any, times: pd.DatetimeIndex, bus_ids: list[str], vm_lin: np.ndarray,
                 vm_model: np.ndarray) -> dict[str, pd.DataFrame]:
    steps, n_bus = len(times), len(bus_ids)
    vm_ac = day.grid.vm_pu if n_bus else np.zeros((steps, 0))
    out = {"bus": pd.DataFrame({
        "bus_id": np.tile(np.asarray(bus_ids, dtype=object), steps), "time": np.repeat(times, n_bus),
        "vm_pu_lindistflow": vm_lin.ravel(), "vm_pu_ac_model": vm_model.ravel(), "vm_pu_ac": vm_ac.ravel()})}
    cols = ["line_id", "time", "p_kw", "q_kvar", "current_a", "loading"]
    if day.grid.ac is not None:
        frame = day.grid.ac.line_frame()[cols].reset_index(drop=True)
        bad = ~pd.DatetimeIndex(frame["time"]).isin(times[day.grid.converged])
        frame.loc[bad, ["p_kw", "q_kvar", "current_a", "loading"]] = np.nan  # no figure without convergence
        out["line"] = frame
    else:
        out["line"] = pd.DataFrame(columns=cols)
    return out


def _steps_frame(loop_rows: list[dict[str, Any]] | None, day: Any, times: pd.DatetimeIndex, actual: Any,
                 dt_h: float) -> pd.DataFrame:
    rec = day.records
    local = np.zeros(len(times))
    if len(rec):
        is_local = rec["mode"].to_numpy(object) == "local"
        net = (rec["import_kwh"].to_numpy(float) - rec["export_kwh"].to_numpy(float)) / dt_h
        np.add.at(local, rec["k"].to_numpy(np.int64)[is_local], net[is_local])
    df = pd.DataFrame(loop_rows) if loop_rows is not None else pd.DataFrame({"time": times})
    df["ev_kw"] = (day.arrays["ch"] - day.arrays["dis"]).sum(axis=1)
    df["ev_local_kw"] = local
    df["storage_kw"] = day.storage.p.sum(axis=0)
    df["der_kw"] = day.der.p.sum(axis=0)
    df["import_kw"] = day.grid.import_kw
    df["loss_kw"] = day.grid.loss_kw
    df["converged"] = day.grid.converged if day.grid.checked else np.full(len(times), None, dtype=object)
    vm = day.grid.vm_pu
    df["vm_min_pu"] = _row_min(vm)
    df["vm_max_pu"] = -_row_min(-vm)
    df["ac_violations"] = per_step_counts(day.grid.violations, times)
    df["price_buy_per_kwh"] = actual.price_buy
    df["price_sell_per_kwh"] = actual.price_sell
    return df


def _energy(day: Any, dt_h: float) -> dict[str, float]:
    rec = day.records
    local = rec["mode"].to_numpy(object) == "local" if len(rec) else np.zeros(0, bool)
    set_kw = rec["p_set_kw"].to_numpy(float) if len(rec) else np.zeros(0)
    return {"delivered": float(rec["import_kwh"].sum()) if len(rec) else 0.0,
            "discharged": float(rec["export_kwh"].sum()) if len(rec) else 0.0,
            "local": float((rec["import_kwh"].to_numpy(float)[local]).sum()) if len(rec) else 0.0,
            "setpoint": float(np.nansum(np.maximum(set_kw, 0.0)) * dt_h)}


def _sessions_figures(sessions: pd.DataFrame) -> dict[str, Any]:
    """The per-day session keys of :class:`~optev.summaries.DaySummary` (``energy_unmet_kwh`` ...)."""
    settled = sessions[sessions["settled"].to_numpy(bool)]
    open_ = sessions[~sessions["settled"].to_numpy(bool)]
    left = sessions[~sessions["censored"].to_numpy(bool)]
    return {"energy_unmet_kwh": float(settled["shortfall_kwh"].sum()),
            "sessions_with_shortfall": int((settled["shortfall_kwh"] > 0).sum()),
            "sessions_departed": int(len(left)),
            "sessions_due_at_end": int(len(settled) - len(left)),
            "energy_by_departure_kwh": float((left["charged_kwh"] - left["discharged_kwh"]).sum()),
            "energy_deferred_kwh": float(np.maximum(open_["need_kwh"] - open_["e_departure_kwh"], 0.0).sum()),
            "sessions_open_at_end": int(len(open_))}


PEAK_QUANTILE = 0.9
"""Steps whose realised import is at or above this quantile of the day are "peak steps"."""


def v2g_figures(records: pd.DataFrame, instance: Instance, price_buy: np.ndarray, price_sell: np.ndarray,
                vm_plan: np.ndarray, margin_pu: float, import_kw: np.ndarray) -> dict[str, Any]:
    """Why the EVs discharged (R6.2.3.1, R6.5.1.1): how much, at what price, against what the
    same sessions paid to charge and the users' reservation prices, and how much of it fell in
    steps where the plan's voltage limit bound (lowest planned voltage within
    :data:`VOLTAGE_BINDING_ATOL_PU` of ``v_min`` plus the formulation's margin) or in the day's
    peak-import steps (:data:`PEAK_QUANTILE`). Energies grid side, kWh; prices currency/kWh."""
    out: dict[str, Any] = {"energy_kwh": 0.0, "sessions": 0, "evs": 0}
    if not len(records) or not (records["export_kwh"] > 0).any():
        return out
    k = records["k"].to_numpy(np.int64)
    exp = records["export_kwh"].to_numpy(float)
    imp = records["import_kwh"].to_numpy(float)
    dis = exp > 0
    sessions = set(records.loc[dis, "session_id"])
    same = records["session_id"].isin(sessions).to_numpy(bool)
    res = instance.evs.set_index("ev_id")["v2g_reservation_price_per_kwh"].reindex(
        records.loc[dis, "ev_id"].unique()).to_numpy(float)
    vmin = instance.feeder.buses["v_min_pu"].to_numpy(float) if len(instance.feeder.buses) else np.zeros(0)
    gap = _row_min(vm_plan - (vmin + margin_pu)[None, :]) if vm_plan.size and vmin.size \
        else np.full(len(price_buy), np.nan)
    with np.errstate(invalid="ignore"):
        binding = gap <= VOLTAGE_BINDING_ATOL_PU
    finite = import_kw[np.isfinite(import_kw)]
    peak = import_kw >= np.quantile(finite, PEAK_QUANTILE) if finite.size else np.zeros(len(price_buy), bool)
    total = float(exp.sum())
    charged = float(imp[same].sum())
    out.update({
        "energy_kwh": total, "sessions": len(sessions), "evs": int(records.loc[dis, "ev_id"].nunique()),
        "mean_price_at_discharge": float(np.sum(exp * price_sell[k]) / total),
        "mean_price_at_charge": float(np.sum(imp[same] * price_buy[k[same]]) / charged) if charged else None,
        "reservation_price": {"min": float(res.min()), "median": float(np.median(res)), "max": float(res.max())},
        "share_at_voltage_limit": float(exp[binding[k]].sum() / total),
        "share_at_peak_import": float(exp[peak[k]].sum() / total)})
    return out


def _peak(x: np.ndarray | pd.Series, mask: np.ndarray) -> float | None:
    v = np.asarray(x, float)[mask]
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else None


def summarise(instance: Instance, ctl: Controller, form: Formulation, times: pd.DatetimeIndex, step_s: float,
              day: Any, base: Any, loop: LoopRecord, schedule: OutageSchedule, dispatch_stats: dict[str, Any] | None,
              *, t_wall: float, keep_decisions: bool) -> MPCRun:
    """Build the :class:`~optev.mpc.simulate.MPCRun` of a day (module docstring).

    Its summary is a :class:`optev.summaries.DaySummary`, where every key is documented
    with its unit.
    """
    run = _Run(instance, ctl, times, step_s, day, base, loop,
               instance.stations["station_id"].astype(str).to_numpy(object), actual_series(instance, times))
    steps_df = _steps_frame(loop.step_rows, day, times, run.actual, run.dt_h)
    base_steps = _steps_frame(None, base, times, run.actual, run.dt_h)
    steps_df["baseline_ev_kw"] = base_steps["ev_kw"].to_numpy(float)
    steps_df["baseline_import_kw"] = base_steps["import_kw"].to_numpy(float)
    tables = _day_tables(run, steps_df)
    baseline = _baseline_tables(run, base_steps)
    comparison, compared = compare_sessions(day.sessions, base.sessions, instance, ctl.quantum_kw, run.dt_h,
                                            by_id=not len(instance.trips))
    s = _day_summary(run, _figures(run), steps_df, base_steps, compared, schedule, dispatch_stats, t_wall)
    return MPCRun(tables=tables, violations=day.grid.violations, baseline=baseline, sessions=day.sessions,
                  baseline_sessions=base.sessions, summary=s, decisions=loop.decisions if keep_decisions else [],
                  controller=ctl, session_comparison=comparison)


@dataclass(frozen=True)
class _Run:
    """The controlled and the uncontrolled day of a run, and what every step of :func:`summarise` reads."""

    instance: Instance
    ctl: Controller
    times: pd.DatetimeIndex
    step_s: float
    day: Any                 # the controlled day (optev.mpc.simulate)
    base: Any                # the uncontrolled day over the same steps
    loop: LoopRecord
    station_ids: np.ndarray
    actual: Any              # the instance's own series at the steps (optev.mpc.forecast.actual_series)

    @property
    def dt_h(self) -> float:
        """Step length, h."""
        return self.step_s / 3600.0


@dataclass(frozen=True)
class _Figures:
    """The figures of both days that the summary compares, over the same steps (``mask``)."""

    mask: np.ndarray
    checks: dict[str, Any]
    limit: dict[str, int]
    identity_errors: dict[str, float | None]
    cost: CostParts
    base_cost: CostParts
    imp: np.ndarray
    peak: float | None
    base_peak: float | None
    energy: dict[str, float]
    base_energy: dict[str, float]
    sessions: dict[str, Any]
    base_sessions: dict[str, Any]


def _der_tables(d: Any) -> dict[str, pd.DataFrame]:
    """The ``der`` and ``storage`` tables of a day, where it has such units."""
    out: dict[str, pd.DataFrame] = {}
    if len(d.der.units):
        out["der"] = d.der.table()
    if len(d.storage.bank.ids):
        out["storage"] = d.storage.table()
    return out


def _day_tables(run: _Run, steps_df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The realised tables of the controlled day: ``ev``, ``station``, ``bus``, ``line``, ``der``,
    ``storage``, ``mode`` and ``steps``."""
    day, loop, times = run.day, run.loop, run.times
    tables: dict[str, pd.DataFrame] = {"ev": ev_table(day.records, times, run.dt_h),
                                       "station": station_table(run.station_ids, times, day.arrays, loop.station_q)}
    tables.update(_grid_tables(day, times, run.instance.feeder.bus_ids, loop.vm_lin, loop.vm_model))
    tables.update(_der_tables(day))
    tables["mode"] = pd.DataFrame(loop.mode_rows, columns=list(MODE_COLUMNS))
    tables["steps"] = steps_df[list(STEP_COLUMNS)]
    return tables


def _baseline_tables(run: _Run, base_steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The tables of the uncontrolled day: ``station``, ``steps``, ``ev``, ``bus`` (the AC check's
    voltages, NaN where it did not run or converge), ``der`` and ``storage``."""
    base, times, ids = run.base, run.times, run.station_ids
    bus_ids = run.instance.feeder.bus_ids
    vm = base.grid.vm_pu if len(bus_ids) else np.zeros((len(times), 0))
    baseline = {"station": station_table(ids, times, base.arrays, np.zeros((len(times), ids.size))),
                "steps": base_steps[list(BASELINE_STEP_COLUMNS)], "ev": ev_table(base.records, times, run.dt_h),
                "bus": pd.DataFrame({"bus_id": np.tile(np.asarray(bus_ids, dtype=object), len(times)),
                                     "time": np.repeat(times, len(bus_ids)), "vm_pu_ac": vm.ravel()})}
    baseline.update(_der_tables(base))
    return baseline


def _realised_import(d: Any, actual: Any) -> np.ndarray:
    """Substation import of a day per step, kW: the AC check's, else the lossless sum (:func:`_copper`)."""
    return d.grid.import_kw if d.grid.checked else _copper(d, actual)


def _cost_parts(run: _Run, d: Any, mask: np.ndarray) -> CostParts:
    """Import, generation and curtailment cost of a day over the steps of ``mask``, currency."""
    actual, dt_h = run.actual, run.dt_h
    parts = {"import": import_cost(_realised_import(d, actual), np.asarray(actual.price_buy, float),
                                   np.asarray(actual.price_sell, float), dt_h, mask), **d.der.cost(dt_h, mask)}
    return {"import": parts["import"], "generation": parts["generation_cost"],
            "curtailment": parts["curtailment_cost"]}


def _limit_violations(run: _Run, checks: dict[str, Any]) -> dict[str, int]:
    """Limit violations of the controlled day by limit: the setpoint checks', the plant's clipping and
    the station site caps."""
    day = run.day
    limit = dict(checks["limits"])
    limit["plant_clipped"] = int(day.clipped)
    site_ch, site_dis = _site_caps(run.instance, run.station_ids)
    limit["station_site_cap"] = int(((day.arrays["ch"] - day.arrays["dis"]) > site_ch[None, :] + LIMIT_ATOL_KW).sum())
    limit["station_discharge_cap"] = int((day.arrays["dis"] > site_dis[None, :] + LIMIT_ATOL_KW).sum())
    return limit


def _identity_errors(run: _Run) -> dict[str, float | None]:
    """Largest error of each accounting identity of both days (the uncontrolled day's with a
    ``baseline_`` prefix), with the AC check's ``import_kw``."""
    def one(d: Any) -> dict[str, float | None]:
        return {**identities(d.records, d.metered_kwh, d.arrays, run.instance, run.dt_h),
                "import_kw": d.grid.import_identity_kw()}

    ident, base_ident = one(run.day), one(run.base)
    return {**ident, **{f"baseline_{k}": v for k, v in base_ident.items()}}


def _figures(run: _Run) -> _Figures:
    """The checks of the controlled day and the figures of both days over the steps they can be compared in."""
    day, base, actual, dt_h = run.day, run.base, run.actual, run.dt_h
    mask = comparable(day.grid, base.grid)
    checks = setpoint_checks(day.records, run.instance, run.ctl.quantum_kw, run.step_s)
    imp = _realised_import(day, actual)
    return _Figures(mask=mask, checks=checks, limit=_limit_violations(run, checks),
                    identity_errors=_identity_errors(run), cost=_cost_parts(run, day, mask),
                    base_cost=_cost_parts(run, base, mask), imp=imp, peak=_peak(imp, mask),
                    base_peak=_peak(_realised_import(base, actual), mask), energy=_energy(day, dt_h),
                    base_energy=_energy(base, dt_h), sessions=_sessions_figures(day.sessions),
                    base_sessions=_sessions_figures(base.sessions))


def _finite_max(a: np.ndarray) -> float | None:
    """Largest entry of ``a`` ignoring NaN (None when no entry is finite)."""
    return float(np.nanmax(a)) if np.isfinite(a).any() else None


def _day_summary(run: _Run, f: _Figures, steps_df: pd.DataFrame, base_steps: pd.DataFrame,
                 compared: SessionComparison, schedule: OutageSchedule, dispatch_stats: dict[str, Any] | None,
                 t_wall: float) -> DaySummary:
    """The :class:`~optev.summaries.DaySummary` of the run, in its key order (the JSON's)."""
    instance, ctl, times, day, base, loop = run.instance, run.ctl, run.times, run.day, run.base, run.loop
    steps, dt_h, figs, base_figs = len(times), run.dt_h, f.sessions, f.base_sessions
    solve = steps_df["solve_s"].to_numpy(float)
    lin_app = _finite_max(np.abs(loop.vm_lin - day.grid.vm_pu)) if len(instance.feeder.bus_ids) else None
    loss_ok = steps_df["loss_converged"]
    return {
        "instance": instance.metadata.name, "formulation": ctl.formulation.name,
        "plant": "event" if len(instance.trips) else "replay",
        "trip_days_repeated": 0,  # set by optev.mpc.simulate, which repeats the trips
        "forecaster": getattr(ctl.forecaster, "name", type(ctl.forecaster).__name__),
        "start": times[0].isoformat(), "steps": int(steps), "step_minutes": run.step_s / 60.0,
        "horizon_steps": int(ctl.steps), "evs": int(len(instance.evs)),
        "currency": getattr(instance.metadata, "currency", None), "grid_checked": bool(day.grid.checked),
        "ev_off_feeder_kwh": float(day.off_feeder_kw.sum() * dt_h),
        "cost": _total(f.cost) if f.mask.any() else None,
        "baseline_cost": _total(f.base_cost) if f.mask.any() else None,
        "cost_parts": f.cost, "baseline_cost_parts": f.base_cost,
        "peak_import_kw": f.peak, "baseline_peak_import_kw": f.base_peak,
        "peak_reduction_kw": None if f.peak is None or f.base_peak is None else f.base_peak - f.peak,
        "peak_ev_kw": _peak(steps_df["ev_kw"], np.ones(steps, bool)),
        "baseline_peak_ev_kw": _peak(base_steps["ev_kw"], np.ones(steps, bool)),
        "compared_steps": int(f.mask.sum()), "excluded_steps": [t.isoformat() for t in times[~f.mask]],
        "nonconverged_steps": day.grid.nonconverged_times(times),
        "baseline_nonconverged_steps": base.grid.nonconverged_times(times),
        "energy_delivered_kwh": f.energy["delivered"], "energy_discharged_kwh": f.energy["discharged"],
        "energy_local_kwh": f.energy["local"], "energy_setpoint_kwh": f.energy["setpoint"],
        "baseline_energy_kwh": f.base_energy["delivered"],
        "energy_unmet_kwh": figs["energy_unmet_kwh"], "sessions_with_shortfall": figs["sessions_with_shortfall"],
        "sessions_departed": figs["sessions_departed"], "sessions_due_at_end": figs["sessions_due_at_end"],
        "energy_by_departure_kwh": figs["energy_by_departure_kwh"],
        "energy_deferred_kwh": figs["energy_deferred_kwh"], "sessions_open_at_end": figs["sessions_open_at_end"],
        "baseline_energy_unmet_kwh": base_figs["energy_unmet_kwh"],
        "baseline_sessions_with_shortfall": base_figs["sessions_with_shortfall"],
        "baseline_sessions_departed": base_figs["sessions_departed"],
        "baseline_sessions_due_at_end": base_figs["sessions_due_at_end"],
        "baseline_energy_by_departure_kwh": base_figs["energy_by_departure_kwh"],
        "baseline_energy_deferred_kwh": base_figs["energy_deferred_kwh"],
        "baseline_sessions_open_at_end": base_figs["sessions_open_at_end"],
        **compared,
        "identities": f.identity_errors, "identities_ok": identities_ok(f.identity_errors),
        "soc_floor_violations": int(f.checks["soc_floor"]),
        "limit_violations": f.limit, "limit_violations_total": int(sum(f.limit.values())),
        "ignored_setpoints": int(day.ignored),
        "energy_continuity_max_err_kwh": float(f.checks["continuity"]),
        "ac_violations": count_by_kind(day.grid.violations) if len(day.grid.violations) else {},
        "ac_violation_steps": int((steps_df["ac_violations"] > 0).sum()),
        "baseline_ac_violations": count_by_kind(base.grid.violations) if len(base.grid.violations) else {},
        "baseline_ac_violation_steps": int((base_steps["ac_violations"] > 0).sum()),
        "lindistflow_error_pu": _finite_max(np.abs(loop.vm_lin - loop.vm_model)),
        "lindistflow_vs_applied_pu": lin_app,
        "loss_correction_unconverged_steps": int((loss_ok == False).sum()),  # noqa: E712 (None: no LinDistFlow)
        "v2g": v2g_figures(day.records, instance, np.asarray(run.actual.price_buy, float),
                           np.asarray(run.actual.price_sell, float), loop.vm_lin, _voltage_margin(ctl.formulation),
                           f.imp),
        "der": {**day.der.energy(dt_h), "storage_kwh_end": dict(day.storage.bank.e_kwh)},
        "baseline_der": {**base.der.energy(dt_h), "storage_kwh_end": dict(base.storage.bank.e_kwh)},
        "solve_s": {"median": float(np.median(solve)), "mean": float(solve.mean()), "max": float(solve.max()),
                    "total": float(solve.sum())},
        "solve_s_per_step": [float(v) for v in solve],
        "wall_s_per_step": [float(v) for v in steps_df["wall_s"]],
        "warm_steps": int(steps_df["warm"].sum()),
        "soft_limit_steps": int((steps_df["status"] == "soft_limits").sum()),
        "failed_steps": int((steps_df["status"] == "failed").sum()),
        "needs_clipped": int(steps_df["needs_clipped"].sum()),
        "modes": loop.mode_count, "outages": [dataclasses.asdict(o) for o in schedule.outages],
        "baseline_dispatch": dispatch_stats,
        "wall_s": time.perf_counter() - t_wall,
    }


def _total(parts: CostParts) -> float:
    """Sum of the cost parts (in their order), currency."""
    return float(parts["import"] + parts["generation"] + parts["curtailment"])


def _voltage_margin(formulation: Formulation) -> float:
    variant, options = formulation.blocks.get("network", ("copperplate", {}))
    return float(options.get("voltage_margin_pu", 0.0)) if variant == "lindistflow" else 0.0


def _copper(day: Any, actual: Any) -> np.ndarray:
    """Import of a day without an AC check (no feeder, or the check switched off): the
    lossless sum of its net loads, EVs at stations off the feeder included (labelled in the
    summary by ``grid_checked: false``)."""
    return day.grid.net_p_kw.sum(axis=1) + day.off_feeder_kw

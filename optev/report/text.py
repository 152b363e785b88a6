"""The short text report of a run (printed by ``optev run``), from its JSON-ready summary.

Example (the embedded default, abridged)::

    instance     ux37_fleet (instances/ux37_fleet): 300 EVs, event plant, forecaster seasonal
    control      city_dispatch, 96 steps of 15 min from 2026-01-01T00:00:00+08:00, horizon 32 steps
    grid         base load carried within limits (min 0.936 p.u. at bus b0_18 19:00; loadability 1.09)
    cost         70,292.4 CNY (uncontrolled 70,519.2 CNY): grid import 66,004.0 CNY vs 66,549.2 CNY, ...
    peak import  5,480.0 kW (uncontrolled 5,687.7 kW, -207.7 kW); EV peak 1,559.3 kW (uncontrolled 1,342.7 kW)
    ...

Every figure comes from the summary (:meth:`optev.report.run.RunResult.summary`); a figure
the summary lacks is shown as ``n/a``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from optev.summaries import RunSummary


def _num(value: Any, fmt: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{fmt}}{unit}"


def _kinds(counts: Mapping[str, int] | None) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def _cost_line(s: RunSummary, money: str) -> str:
    """Total cost (grid import + generation + curtailment) of both days, its parts, and the
    EV load's energy cost."""
    parts = s.get("cost_parts") or {}
    base = s.get("baseline_cost_parts") or {}
    text = f"{_num(s.get('cost'), ',.1f', money)} (uncontrolled {_num(s.get('baseline_cost'), ',.1f', money)})"
    shown = [k for k in ("import", "generation", "curtailment") if parts.get(k) or base.get(k)]
    if shown:
        text += ": " + ", ".join(f"{'grid import' if k == 'import' else k} {_num(parts.get(k), ',.1f', money)} vs "
                                 f"{_num(base.get(k), ',.1f', money)}" for k in shown)
    if s.get("ev_energy_cost") is not None:
        text += (f"; EV load {_num(s.get('ev_energy_cost'), ',.1f', money)} (uncontrolled "
                 f"{_num(s.get('baseline_ev_energy_cost'), ',.1f', money)})")
    return text


def format_report(s: RunSummary, out: str | Path | None = None) -> str:
    """The report as text (lines without trailing spaces, ending without a newline).

    Parameters
    ----------
    s : mapping
        The run summary.
    out : path, optional
        Results folder, shown on the last line.
    """
    inputs = s.get("inputs") or {}
    lines = []
    lines.append(f"instance     {s.get('instance')} ({inputs.get('instance', 'in memory')}): {s.get('evs', 0):,} EVs, "
                 f"{s.get('plant')} plant, forecaster {s.get('forecaster')}")
    lines.append(f"control      {s.get('formulation')}, {s.get('steps')} steps of {s.get('step_minutes', 0):g} min from "
                 f"{s.get('start')}, horizon {s.get('horizon_steps')} steps")
    lines.append(f"grid         {(s.get('grid_adequacy') or {}).get('text', 'n/a (no feeder)')}")
    money = f" {s['currency']}" if s.get("currency") else ""  # the unit after every money figure
    lines.append(f"cost         {_cost_line(s, money)}")
    red = s.get("peak_reduction_kw")
    lines.append(f"peak import  {_num(s.get('peak_import_kw'), ',.1f', ' kW')} (uncontrolled "
                 f"{_num(s.get('baseline_peak_import_kw'), ',.1f', ' kW')}"
                 + (f", {-red:+,.1f} kW)" if red is not None else ")")
                 + f"; EV peak {_num(s.get('peak_ev_kw'), ',.1f', ' kW')} (uncontrolled "
                   f"{_num(s.get('baseline_peak_ev_kw'), ',.1f', ' kW')})")
    excluded = s.get("excluded_steps") or []
    if excluded:
        lines.append(f"EXCLUDED     {len(excluded)} step(s) whose AC power flow did not converge (controlled or "
                     f"uncontrolled) are left out of costs and peaks: {', '.join(str(t)[11:16] for t in excluded[:6])}"
                     + (" ..." if len(excluded) > 6 else ""))
    lines.append(f"energy       {_num(s.get('energy_delivered_kwh'), ',.1f')} kWh charged (of which "
                 f"{_num(s.get('energy_local_kwh'), ',.1f')} kWh by EVs arriving during a step, local rule; "
                 f"planned, not realised: the setpoints asked for {_num(s.get('energy_setpoint_kwh'), ',.1f')} kWh), "
                 f"{_num(s.get('energy_discharged_kwh'), ',.1f')} kWh V2G (grid side; uncontrolled "
                 f"{_num(s.get('baseline_energy_kwh'), ',.1f')} kWh charged)")
    lines.append(f"unmet        {_num(s.get('energy_unmet_kwh'), ',.1f')} kWh in {s.get('sessions_with_shortfall', 0):,} "
                 f"of {s.get('sessions_departed', 0):,} departed sessions (uncontrolled "
                 f"{_num(s.get('baseline_energy_unmet_kwh'), ',.1f')} kWh in "
                 f"{s.get('baseline_sessions_with_shortfall', 0):,}); still owed at the end "
                 f"{_num(s.get('energy_deferred_kwh'), ',.1f')} kWh (uncontrolled "
                 f"{_num(s.get('baseline_energy_deferred_kwh'), ',.1f')} kWh)")
    v2g = s.get("v2g") or {}
    if v2g.get("energy_kwh"):
        res = v2g.get("reservation_price") or {}
        lines.append(f"V2G          {v2g['energy_kwh']:,.1f} kWh from {v2g.get('evs', 0)} EVs at a mean "
                     f"{_num(v2g.get('mean_price_at_discharge'), '.2f', money)}/kWh (their charging: "
                     f"{_num(v2g.get('mean_price_at_charge'), '.2f', money)}/kWh; reservation prices "
                     f"{_num(res.get('min'), '.2f')}–{_num(res.get('max'), '.2f', money)}/kWh); "
                     f"{100 * v2g.get('share_at_voltage_limit', 0.0):.0f} % in steps where the plan's voltage limit "
                     f"binds, {100 * v2g.get('share_at_peak_import', 0.0):.0f} % in the day's peak-import steps")
    worse = s.get("worse_than_uncontrolled_kwh") or {}
    lines.append(f"drivers      {s.get('sessions_worse_than_uncontrolled', 'n/a')} of {s.get('sessions_compared', 0):,} "
                 f"sessions worse off than uncontrolled (beyond one setpoint quantum-step; V2G opt-ins paid: "
                 f"{s.get('sessions_v2g_exempt', 0)}); lowest difference {_num(worse.get('min'), '+,.2f', ' kWh')}")
    limits = s.get("limit_violations") or {}
    breached = {k: v for k, v in limits.items() if v}
    lines.append(f"invariants   SOC floor {s.get('soc_floor_violations', 0)}, limits "
                 f"{s.get('limit_violations_total', 0)}" + (f" ({_kinds(breached)})" if breached else "")
                 + f"; energy continuity max error {_num(s.get('energy_continuity_max_err_kwh'), '.1e', ' kWh')}")
    ident = s.get("identities") or {}
    lines.append("identities   " + ("hold" if s.get("identities_ok") else "BROKEN") + " (station = Σ EVs "
                 f"{_num(ident.get('station_kwh'), '.1e', ' kWh')}, battery energy {_num(ident.get('battery_kwh'), '.1e', ' kWh')}"
                 f", import = load + EV + storage − DER + losses {_num(ident.get('import_kw'), '.1e', ' kW')})")
    ac = s.get("ac_violations") or {}
    lines.append(f"AC check     {sum(ac.values()):,} violation(s) in {s.get('ac_violation_steps', 0)} of {s.get('steps')} "
                 f"steps: {_kinds(ac)} (uncontrolled: {_kinds(s.get('baseline_ac_violations'))} in "
                 f"{s.get('baseline_ac_violation_steps', 0)} steps)" if s.get("grid_checked", True)
                 else "AC check     n/a (no feeder checked: import is the lossless sum of the loads)")
    lin = s.get("lindistflow_error_pu")
    unconverged = s.get("loss_correction_unconverged_steps") or 0
    lines.append("LinDistFlow  " + (f"max |V_lin - V_ac| = {lin:.2e} p.u." if lin is not None
                                    else "n/a (no LinDistFlow network in this formulation)")
                 + (f"; LOSS CORRECTION DID NOT CONVERGE in {unconverged} step(s)" if unconverged else ""))
    solve = s.get("solve_s") or {}
    lines.append(f"solve        median {_num(solve.get('median'), '.3f', ' s')}, max {_num(solve.get('max'), '.3f', ' s')}, "
                 f"total {_num(solve.get('total'), '.1f', ' s')}; {s.get('warm_steps', 0)} warm, "
                 f"{s.get('soft_limit_steps', 0)} soft-limit, {s.get('failed_steps', 0)} failed step(s)")
    lines += _service_lines(s, money)
    modes = s.get("modes") or {}
    if modes.get("hold") or modes.get("fallback") or s.get("outages"):
        lines.append(f"modes        {_kinds(modes)} station-steps; {len(s.get('outages') or [])} outage(s)")
    t = s.get("timings_s") or {}
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in t.items() if v is not None)
    lines.append(f"time         {sum(v for v in t.values() if v is not None):.1f} s ({parts})")
    if out is not None:
        tables = s.get("tables") or {}
        fmt = {Path(str(v.get("file", ""))).suffix.lstrip(".") for v in tables.values()} or {"csv"}
        plots = s.get("plots") or []
        lines.append(f"results      {out}: {len(tables)} tables ({', '.join(sorted(fmt))}), summary.json"
                     + (f", {len(plots)} plots in plots/" if plots else ""))
    return "\n".join(line.rstrip() for line in lines)


def _service_lines(s: RunSummary, money: str) -> list[str]:
    """The grid service of the run (nothing without one): the answer to the request and Appendix A."""
    service = s.get("service")
    if not service:
        return []
    answer = f"{service.get('status')} {_num(service.get('accepted_kw'), ',.0f', ' kW')} of " \
             f"{_num(service.get('requested_kw'), ',.0f', ' kW')}"
    if service.get("reason"):
        answer += f" ({service['reason']})"
    metrics = {k: v for k, v in (s.get("appendix_a") or {}).items() if v is not None}
    shown = ", ".join(f"{k} {v:,.2f}" + (money if k == "pay" else "") for k, v in metrics.items())
    losses = ""
    if service.get("window_loss_kwh") is not None:
        losses = (f"; feeder losses in the window {_num(service.get('window_loss_kwh'), ',.1f', ' kWh')} "
                  f"(uncontrolled {_num(service.get('baseline_window_loss_kwh'), ',.1f', ' kWh')})")
    return [f"service      {service.get('id')} ({service.get('product')}, rule {service.get('rule')}, baseline "
            f"{service.get('baseline')}): {answer}{losses}",
            f"Appendix A   {shown or 'nothing measured'} (realised against the baseline)"]

"""The result of a closed-loop day (:func:`optev.mpc.simulate`): :class:`MPCRun`, the
realised records of one day (:class:`DayRecord`) and the columns of its tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from optev.io.results import write_results
from optev.mpc.controller import Controller
from optev.mpc.gridcheck import GridDay
from optev.mpc.injections import DerRecord, StorageRecord
from optev.mpc.plantrun import SESSION_RESULT_COLUMNS
from optev.mpc.state import ControlDecision
from optev.summaries import DaySummary

STEP_COLUMNS = ("time", "step", "status", "termination", "objective", "warm", "iterations", "build_s", "solve_s",
                "check_s", "wall_s", "evs", "forecast_arrivals", "arrivals", "departures", "needs_clipped",
                "stations_hold", "stations_fallback", "plant_clipped", "ignored_setpoints", "ev_kw", "ev_set_kw",
                "ev_local_kw", "storage_kw", "der_kw", "import_kw", "loss_kw", "converged", "baseline_ev_kw",
                "baseline_import_kw", "vm_min_pu", "vm_max_pu", "ac_violations", "loss_converged", "loss_error_pu",
                "price_buy_per_kwh", "price_sell_per_kwh")
"""Columns of ``MPCRun.tables["steps"]``: one row per applied step (times in the instance's
time zone; powers kW, realised means over the step; durations s). ``ev_kw`` is the EVs' net
realised power, ``ev_set_kw`` the sum of the setpoints (the plan), ``ev_local_kw`` the part
drawn by EVs that arrived during the step (local rule); ``der_kw`` generation of
generators, PV and wind; ``import_kw``/``loss_kw`` the substation import and losses of the
AC check — NaN when the step's power flow did not converge (``converged`` False) or no
feeder was checked; ``vm_min_pu``/``vm_max_pu`` of the AC check; ``ac_violations`` the
number of AC-check violations of the step; ``loss_converged``/``loss_error_pu`` of the
plan's LinDistFlow loss correction (None without LinDistFlow)."""

MODE_COLUMNS = ("station_id", "time", "mode", "request_kw", "applied_kw")
"""Columns of ``MPCRun.tables["mode"]``: the mode of every station in every step
(``central``/``hold``/``fallback``), the power it was asked for (the central setpoint,
the held schedule's value or the fallback total, kW) and the net power its EVs were
commanded (kW, setpoints)."""

BASELINE_STEP_COLUMNS = ("time", "ev_kw", "storage_kw", "der_kw", "import_kw", "loss_kw", "converged", "vm_min_pu",
                         "vm_max_pu", "ac_violations")
"""Columns of ``MPCRun.baseline["steps"]`` (as :data:`STEP_COLUMNS`)."""



@dataclass
class MPCRun:
    """Result of :func:`simulate` (stable: ``optev run`` and studies build on it).

    Attributes
    ----------
    tables : dict of DataFrame
        The applied steps, realised (:mod:`optev.mpc.accounting`): ``ev`` (ev_id,
        session_id, station_id, time, p_kw, soc, p_set_kw, mode, plugged_s — the
        ``optev solve`` schema plus the plan), ``station`` (station_id, time, p_ch_kw,
        p_dis_kw, q_kvar, p_set_kw), ``bus`` (bus_id, time, vm_pu_lindistflow,
        vm_pu_ac_model — both of the plan's first step, NaN without LinDistFlow / AC check
        — and vm_pu_ac of the applied step), ``line`` (line_id, time, p_kw, q_kvar,
        current_a, loading of the applied step), ``der`` (:data:`optev.mpc.injections.DER_COLUMNS`,
        when the feeder has DER), ``storage`` (with storage), ``mode``
        (:data:`MODE_COLUMNS`) and ``steps`` (:data:`STEP_COLUMNS`).
    violations : DataFrame
        AC-check violations of the applied steps (time, kind, element_id, value, limit,
        excess, unit).
    baseline : dict of DataFrame
        The uncontrolled day over the same steps: ``station``, ``steps``
        (:data:`BASELINE_STEP_COLUMNS`), ``ev``, ``bus`` (bus_id, time, vm_pu_ac of its AC
        check), ``der``/``storage`` when present.
    sessions, baseline_sessions : DataFrame
        Sessions of the controlled and of the baseline day (:data:`SESSION_RESULT_COLUMNS`).
    summary : DaySummary
        JSON-ready figures (:func:`optev.mpc.summary.summarise`; every key documented in
        :class:`optev.summaries.DaySummary`).
    decisions : list of ControlDecision
        Every decision, when ``keep_decisions=True``.
    session_comparison : DataFrame
        Departed sessions against the uncontrolled day
        (:func:`optev.mpc.accounting.compare_sessions`).
    """

    tables: dict[str, pd.DataFrame]
    violations: pd.DataFrame
    baseline: dict[str, pd.DataFrame]
    sessions: pd.DataFrame
    baseline_sessions: pd.DataFrame
    summary: DaySummary
    decisions: list[ControlDecision] = field(default_factory=list, repr=False)
    controller: Controller | None = field(default=None, repr=False)
    session_comparison: pd.DataFrame | None = field(default=None, repr=False)

    def write(self, out_dir: str | Path, table_format: str = "csv") -> Path:
        """Write the tables and ``summary.json`` (:func:`optev.io.results.write_results`)."""
        return write_results(self, out_dir, table_format)


@dataclass
class DayRecord:
    """One day (controlled or baseline), realised: what :mod:`optev.mpc.summary` reads."""

    records: pd.DataFrame
    arrays: dict[str, np.ndarray]
    metered_kwh: np.ndarray
    der: DerRecord
    storage: StorageRecord
    grid: GridDay
    sessions: pd.DataFrame
    off_feeder_kw: np.ndarray
    clipped: int = 0
    ignored: int = 0


__all__ = ["MPCRun", "DayRecord", "STEP_COLUMNS", "MODE_COLUMNS", "BASELINE_STEP_COLUMNS", "SESSION_RESULT_COLUMNS"]

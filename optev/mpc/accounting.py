r"""Realised accounting of a closed-loop day: what every charging session drew in every step,
with the plan beside it, and the identities that tie the tables together (design.md,
"Plan vs realised").

Every plant interval reports, for each session plugged in at some time during it, the
grid-side energy it imported and exported and the battery-side energy it charged and
discharged (:data:`optev.mobility.state.SESSION_STEP_COLUMNS`) — also the EVs that
arrived during the interval and charged under the local rule before the controller knew
them, and those that left during it. :class:`SessionSteps` collects them; the tables are
built from them:

``ev`` (:data:`EV_COLUMNS`)
    one row per session and step it was plugged in: ``p_kw`` the realised mean grid-side
    power over the step, :math:`(E^{imp} - E^{exp})/\Delta t` (kW, charge positive),
    ``soc`` at the end of the step (at departure for a session that left), the plan —
    ``p_set_kw``, the setpoint the EV was given (NaN for an EV that arrived during the
    step: it had none) — and ``mode``: ``central``, ``hold`` or ``fallback`` (its
    station's mode) or ``local`` (arrived during the step, charged by the plant's rule),
    and ``plugged_s``, seconds plugged in during the step.
``station`` (:data:`STATION_COLUMNS`)
    per station and step the sums of the ``ev`` rows: ``p_ch_kw`` :math:`\sum E^{imp}/\Delta t`,
    ``p_dis_kw`` :math:`\sum E^{exp}/\Delta t`, the plan's ``q_kvar`` and ``p_set_kw``
    (the sum of the setpoints).

Identities (:func:`identities`, each the largest absolute error; tolerances
:data:`IDENTITY_ATOL`):

``station_kwh``
    per station and step, the station's energy as the plant metered it (its own
    accumulators) equals :math:`\sum_{EV} p\,\Delta t` of the ``ev`` rows;
``battery_kwh``
    per session, the battery energy at its last step minus the energy at its first step's
    start equals :math:`\sum (\eta^{ch} E^{imp} - E^{exp}/\eta^{dis})` of its rows, with
    :math:`\eta` the vehicle × charger efficiencies of the instance data: the energy into
    the batteries is the ``ev`` energy times the charging efficiency minus V2G.

Session comparison (:func:`compare_sessions`) — users are never worse off for being
controlled: for a session *settled* in the uncontrolled day (it left, or was due by the end
of the run: :data:`optev.mpc.plantrun.SESSION_RESULT_COLUMNS`) and its counterpart in the
controlled day (settled too, or still plugged in at the end: a driver kept waiting, compared
with its energy then), with :math:`E^{dep}` its energy at
departure, :math:`E^{arr}` at arrival, :math:`E^{need}` its target energy and
:math:`\Delta^{base} = E^{dep,base} - E^{arr,base}` what the uncontrolled day delivered
to the same session, the controlled day owes it

.. math:: E^{owed} = \min\bigl(E^{need},\; E^{arr} + \max(\Delta^{base}, 0)\bigr),

and the session is *worse than uncontrolled* when
:math:`E^{dep} < E^{owed} - q\,\Delta t\,\eta^{ch}` (one setpoint quantum-step), unless
its EV opted into V2G and discharged in the session (it was paid at least its
reservation price: the optimiser discharges only when the price beats it; R6.2.3.1).
Sessions are matched by id (sessions replay) or by (EV, trip, station, occurrence)
(event plant, where session ids are assigned in event order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.mobility.state import SESSION_STEP_COLUMNS, StepReport
from optev.mpc.edge import ev_station_params
from optev.summaries import SessionComparison
from optev.tolerances import ACCOUNTING_IDENTITY_ATOL

EV_COLUMNS = ("ev_id", "session_id", "station_id", "time", "p_kw", "soc", "p_set_kw", "mode", "plugged_s")
"""Columns of the realised ``ev`` table (module docstring)."""

STATION_COLUMNS = ("station_id", "time", "p_ch_kw", "p_dis_kw", "q_kvar", "p_set_kw")
"""Columns of the realised ``station`` table (module docstring)."""

IDENTITY_ATOL = ACCOUNTING_IDENTITY_ATOL
"""Tolerances of the accounting identities (kWh per station-step, kWh per session, kW per
step: the AC power flow's own mismatch tolerance dominates the last one;
:data:`optev.tolerances.ACCOUNTING_IDENTITY_ATOL`)."""

LOCAL_MODE = "local"
"""``mode`` of an EV that arrived during a step and charged under the plant's local rule."""


@dataclass
class SessionSteps:
    """Session-step records of one day, collected interval by interval (module docstring)."""

    chunks: list[pd.DataFrame] = field(default_factory=list)

    def add(self, k: int, report: StepReport, setpoints: Mapping[str, float], modes: Mapping[str, str],
            e_start: Mapping[str, float], limits: Mapping[str, tuple[float, float]] | None = None) -> pd.DataFrame:
        """Record interval ``k`` from the plant's report.

        Parameters
        ----------
        k : int
            Step index.
        report : StepReport
            What the plant realised (its ``sessions`` columns).
        setpoints : mapping of session id to kW
            The setpoint each commanded session was given (absent: none).
        modes : mapping of session id to str
            Mode of each commanded session (absent: ``local``).
        e_start : mapping of session id to kWh
            Battery energy of each session at the start of its part of the interval (the
            state's measurement, or the arrival energy).
        limits : mapping of session id to (kW, kW), optional
            Charge and discharge limits of each commanded session, as measured in the state.
        """
        chunk = pd.DataFrame({c: report.sessions.get(c, []) for c in SESSION_STEP_COLUMNS})
        ids = chunk["session_id"]
        chunk["k"] = k
        chunk["p_set_kw"] = ids.map(setpoints).astype(float)
        chunk["mode"] = ids.map(modes).astype(object).fillna(LOCAL_MODE)
        chunk["e_start_kwh"] = ids.map(e_start).astype(float)
        lim = limits or {}
        chunk["p_ch_max_kw"] = ids.map({k_: v[0] for k_, v in lim.items()}).astype(float)
        chunk["p_dis_max_kw"] = ids.map({k_: v[1] for k_, v in lim.items()}).astype(float)
        self.chunks.append(chunk)
        return chunk

    def frame(self) -> pd.DataFrame:
        """Every record (columns of :data:`SESSION_STEP_COLUMNS` plus ``k``, ``p_set_kw``,
        ``mode``, ``e_start_kwh``, ``p_ch_max_kw``, ``p_dis_max_kw``), in step order."""
        if not self.chunks:
            cols = list(SESSION_STEP_COLUMNS) + ["k", "p_set_kw", "mode", "e_start_kwh", "p_ch_max_kw",
                                                 "p_dis_max_kw"]
            return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
        return pd.concat(self.chunks, ignore_index=True)


def ev_table(records: pd.DataFrame, times: pd.DatetimeIndex, dt_h: float) -> pd.DataFrame:
    """The realised ``ev`` table (:data:`EV_COLUMNS`) from the session-step records."""
    k = records["k"].to_numpy(np.int64)
    net = records["import_kwh"].to_numpy(float) - records["export_kwh"].to_numpy(float)
    return pd.DataFrame({
        "ev_id": records["ev_id"].to_numpy(object), "session_id": records["session_id"].to_numpy(object),
        "station_id": records["station_id"].to_numpy(object), "time": times[k], "p_kw": net / dt_h,
        "soc": records["soc"].to_numpy(float), "p_set_kw": records["p_set_kw"].to_numpy(float),
        "mode": records["mode"].to_numpy(object), "plugged_s": records["plugged_s"].to_numpy(float)})


def station_arrays(records: pd.DataFrame, station_ids: Sequence[str] | np.ndarray, steps: int,
                   dt_h: float) -> dict[str, np.ndarray]:
    """Per station and step (steps × stations): ``ch``/``dis`` realised grid-side power
    (kW) and ``set`` the sum of the setpoints (kW)."""
    n = len(station_ids)
    out = {name: np.zeros((steps, n)) for name in ("ch", "dis", "set")}
    if not len(records):
        return out
    s = pd.Index(station_ids).get_indexer(pd.Index(records["station_id"].to_numpy(object)))
    k = records["k"].to_numpy(np.int64)
    ok = s >= 0
    for name, values in (("ch", records["import_kwh"].to_numpy(float) / dt_h),
                         ("dis", records["export_kwh"].to_numpy(float) / dt_h),
                         ("set", np.nan_to_num(records["p_set_kw"].to_numpy(float)))):
        np.add.at(out[name], (k[ok], s[ok]), values[ok])
    return out


def station_table(station_ids: Sequence[str] | np.ndarray, times: pd.DatetimeIndex, arrays: Mapping[str, np.ndarray],
                  q_kvar: np.ndarray) -> pd.DataFrame:
    """The realised ``station`` table (:data:`STATION_COLUMNS`), one row per station and step."""
    T, n = arrays["ch"].shape
    return pd.DataFrame({"station_id": np.repeat(np.asarray(station_ids, dtype=object), T),
                         "time": np.tile(times, n), "p_ch_kw": arrays["ch"].T.ravel(),
                         "p_dis_kw": arrays["dis"].T.ravel(), "q_kvar": q_kvar.T.ravel(),
                         "p_set_kw": arrays["set"].T.ravel()})


def identities(records: pd.DataFrame, metered_kwh: np.ndarray, arrays: Mapping[str, np.ndarray],
               instance: Instance, dt_h: float) -> dict[str, float]:
    """Largest error of the ``station_kwh`` and ``battery_kwh`` identities (module docstring).

    Parameters
    ----------
    records : DataFrame
        :meth:`SessionSteps.frame`.
    metered_kwh : ndarray (steps × stations)
        Net grid-side energy of each station as the plant metered it.
    arrays : mapping
        :func:`station_arrays` of the same records.
    """
    out = {"station_kwh": float(np.max(np.abs((arrays["ch"] - arrays["dis"]) * dt_h - metered_kwh),
                                       initial=0.0))}
    if not len(records):
        out["battery_kwh"] = 0.0
        return out
    _, _, eff_ch, eff_dis = ev_station_params(instance, records["ev_id"].tolist(), records["station_id"].tolist())
    into = eff_ch * records["import_kwh"].to_numpy(float) - records["export_kwh"].to_numpy(float) / eff_dis
    frame = pd.DataFrame({"session_id": records["session_id"].to_numpy(object), "into": into,
                          "e_start": records["e_start_kwh"].to_numpy(float), "e_end": records["e_kwh"].to_numpy(float)})
    g = frame.groupby("session_id", sort=False)
    change = g["e_end"].last() - g["e_start"].first()
    out["battery_kwh"] = float(np.nanmax((change - g["into"].sum()).abs().to_numpy(float), initial=0.0))
    return out


def identities_ok(errors: Mapping[str, float | None]) -> bool:
    """Every identity holds within :data:`IDENTITY_ATOL` (a missing one, None, is not checked;
    a ``baseline_`` prefix names the same identity of the uncontrolled day)."""
    return all(v is None or v <= IDENTITY_ATOL[k.removeprefix("baseline_")] for k, v in errors.items())


# ---------------------------------------------------------------------------------------------- sessions

def _match_keys(sessions: pd.DataFrame, by_id: bool) -> pd.Series:
    if by_id:
        return sessions["session_id"].astype(str)
    trip = sessions["trip_index"] if "trip_index" in sessions else pd.Series(-1, index=sessions.index)
    base = sessions["ev_id"].astype(str) + "|" + trip.astype(str) + "|" + sessions["station_id"].astype(str)
    occurrence = base.groupby(base).cumcount().astype(str)
    return base + "|" + occurrence


def compare_sessions(sessions: pd.DataFrame, baseline: pd.DataFrame, instance: Instance, quantum_kw: float,
                     dt_h: float, *, by_id: bool) -> tuple[pd.DataFrame, SessionComparison]:
    """Each departed session against the uncontrolled day (module docstring, "Session comparison").

    Parameters
    ----------
    sessions, baseline : DataFrame
        Session results of the controlled and the uncontrolled day
        (:data:`optev.mpc.simulate.SESSION_RESULT_COLUMNS`, with ``e_arrival_kwh`` and
        ``discharged_kwh``; ``trip_index`` for event-plant sessions).
    quantum_kw, dt_h : float
        Setpoint quantum (kW) and step (h): the tolerance is one quantum-step of energy.
    by_id : bool
        Match sessions by id (sessions replay) or by EV, trip, station and occurrence.

    Returns
    -------
    table : DataFrame
        One row per compared session: ``session_id``, ``ev_id``,
        ``e_departure_kwh``, ``e_owed_kwh``, ``difference_kwh`` (departure − owed),
        ``v2g_paid`` and ``worse``.
    summary : SessionComparison
        Counts and the distribution of the difference (keys documented in
        :class:`optev.summaries.SessionComparison`).
    """
    # every controlled session is compared with a settled baseline session: one still plugged in
    # at the end of the controlled day (a driver still waiting) is compared with its energy then
    ctl = sessions.copy()
    base = baseline[baseline["settled"].to_numpy(bool)].copy()
    ctl["key"] = _match_keys(ctl, by_id).to_numpy(object)
    base["key"] = _match_keys(base, by_id).to_numpy(object)
    merged = ctl.merge(base[["key", "e_arrival_kwh", "e_departure_kwh"]], on="key", how="inner",
                       suffixes=("", "_base"))
    delivered = np.maximum(merged["e_departure_kwh_base"] - merged["e_arrival_kwh_base"], 0.0)
    owed = np.minimum(merged["need_kwh"].to_numpy(float), merged["e_arrival_kwh"].to_numpy(float) + delivered)
    _, _, eff_ch, _ = ev_station_params(instance, merged["ev_id"].tolist(), merged["station_id"].tolist())
    tol = quantum_kw * dt_h * eff_ch
    diff = merged["e_departure_kwh"].to_numpy(float) - owed
    opted = instance.evs.set_index("ev_id")["v2g_opt_in"].reindex(merged["ev_id"]).fillna(False).to_numpy(bool)
    paid = opted & (merged["discharged_kwh"].to_numpy(float) > 0)
    worse = (diff < -tol) & ~paid
    table = pd.DataFrame({"session_id": merged["session_id"].to_numpy(object),
                          "ev_id": merged["ev_id"].to_numpy(object),
                          "e_departure_kwh": merged["e_departure_kwh"].to_numpy(float), "e_owed_kwh": owed,
                          "difference_kwh": diff, "v2g_paid": paid, "worse": worse})
    q = np.percentile(diff, [1, 5, 50]) if diff.size else [None, None, None]
    waiting = ~merged["settled"].to_numpy(bool)
    summary: SessionComparison = {
        "sessions_compared": int(len(merged)),
        "sessions_unmatched": int(ctl["settled"].to_numpy(bool).sum() - (~waiting).sum()),
        "sessions_still_plugged_in": int(waiting.sum()),
        "sessions_worse_than_uncontrolled": int(worse.sum()), "sessions_v2g_exempt": int((paid & (diff < -tol)).sum()),
        "worse_than_uncontrolled_kwh": {
            "min": float(diff.min()) if diff.size else None, "p1": _f(q[0]), "p5": _f(q[1]), "median": _f(q[2]),
            "sum_worse": float(np.sum(-diff[worse])) + 0.0}}
    return table, summary


def _f(v: Any) -> float | None:
    return None if v is None else float(v)

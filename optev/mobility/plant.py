"""The charging plant: the event simulation advanced interval by interval under setpoints.

:class:`Plant` is what a rolling-horizon controller drives (design.md, "mobility/ ... This
is the MPC's plant")::

    plant = Plant(instance)
    while plant.time_s < plant.config.horizon_s:
        report = plant.advance(900.0, Setpoints(ev_kw={...}, station_kw={...}))
        ...  # report.soc(), report.arrivals, report.queues, ...

Each call advances by an interval of 1 to 15 minutes with constant setpoints (per EV
and/or per station, kW at the grid side, charge positive, discharge negative) and returns
a :class:`~optev.mobility.state.StepReport` of what was realised. Without setpoints
every EV charges at full power up to its session target: the uncontrolled baseline,
which is exactly what :func:`optev.mobility.simulate.simulate_day` runs. How setpoints
are honoured is documented in :mod:`optev.mobility.core` ("Setpoints").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.errors import DataError
from optev.mobility.core import PLUGGED, STRANDED, EventCore, PlantConfig
from optev.mobility.series import StationSeries, bin_averages
from optev.mobility.state import EVState, PlantEvent, Setpoints, StationState, StepReport
from optev.mobility.telemetry import TELEMETRY_PERIOD_S, TelemetryWriter
from optev.mobility.travel import RouterLike
from optev.tolerances import TIME_ATOL_S

MIN_INTERVAL_S = 60.0
"""Shortest plant interval, s (1 minute)."""

MAX_INTERVAL_S = 900.0
"""Longest plant interval, s (15 minutes)."""

SESSION_COLUMNS = ("session_id", "ev_id", "station_id", "arrival_s", "departure_s", "soc_arrival", "soc_target",
                   "arrival", "plug_in", "departure", "energy_needed_kwh", "energy_delivered_kwh", "wait_min",
                   "rejected", "station_kind", "soc_departure", "energy_discharged_kwh", "grid_import_kwh",
                   "grid_export_kwh", "expected_departure", "trip_index", "censored")
"""Columns of :meth:`Plant.sessions`. The first seven are :data:`optev.data.SESSIONS`."""


class Plant:
    """The charging simulation as a steppable plant.

    Parameters
    ----------
    instance : Instance
        Stations, charger models, tariffs, vehicle types, EVs and routed (or routable)
        trips; the road nodes give coordinates to the default router.
    config : PlantConfig, optional
        Behaviour parameters (defaults documented on :class:`PlantConfig`).
    router : router, optional
        Travel distance/time between road nodes (protocol in
        :mod:`optev.mobility.travel`); default: straight line × detour factor.
    telemetry : str or Path, optional
        Write 5-s telemetry of every charger (R6.1.4) to this Parquet file while running.
    telemetry_stations : sequence of str, optional
        Restrict telemetry to these stations (all when None).
    telemetry_period_s : float
        Telemetry sampling period, s (default 5).

    Notes
    -----
    With telemetry, call :meth:`close` at the end (or use the plant as a context manager)
    to finish the Parquet file.
    """

    def __init__(self, instance: Instance, config: PlantConfig | None = None, *, router: RouterLike | None = None,
                 telemetry: str | Path | None = None, telemetry_stations: list[str] | None = None,
                 telemetry_period_s: float = TELEMETRY_PERIOD_S) -> None:
        self.config = config or PlantConfig()
        mask = None
        if telemetry is not None:
            ids = instance.stations["station_id"].astype(str).to_numpy(object)
            if telemetry_stations is None:
                mask = np.ones(ids.size, dtype=bool)
            else:
                unknown = sorted(set(telemetry_stations) - set(ids))
                if unknown:
                    raise DataError(f"telemetry requested for unknown station(s) {unknown[:5]}", table="stations",
                                    column="station_id")
                mask = np.isin(ids, list(telemetry_stations))
        self.core = EventCore(instance, self.config, router, mask)
        self.telemetry: TelemetryWriter | None = None
        if telemetry is not None and mask is not None:  # (a telemetry path always sets the mask above)
            core = self.core
            st = np.flatnonzero(mask)
            counts = core.st_n_chargers[st]
            charger_station = np.repeat(st, counts)
            slot = np.concatenate([np.arange(c) for c in counts]) if counts.size else np.zeros(0, np.int64)
            charger_ids = np.array([f"{core.st_ids[s]}#{k}" for s, k in zip(charger_station, slot)], dtype=object)
            # telemetry index of every global charger index
            self._tele_index = np.full(int(core.st_charger_offset[-1]), -1, dtype=np.int64)
            self._tele_index[core.st_charger_offset[charger_station] + slot] = np.arange(charger_ids.size)
            self.telemetry = TelemetryWriter(telemetry, charger_station, charger_ids, core.st_ids, core.ev_ids,
                                             period_s=telemetry_period_s)

    # ------------------------------------------------------------------ time
    @property
    def time_s(self) -> float:
        """Current plant time, s after the instance start."""
        return self.core.now

    def _ids_to_index(self, setpoints: Setpoints) -> tuple[dict[int, float], dict[int, float]]:
        core = self.core
        ev_sp: dict[int, float] = {}
        for ev, v in setpoints.ev_kw.items():
            i = core.ev_index.get(str(ev))
            if i is None:
                raise DataError(f"setpoint for unknown EV {ev!r}", table="evs", column="ev_id")
            if not np.isfinite(v):
                raise DataError(f"setpoint of EV {ev!r} is not finite: {v}")
            ev_sp[i] = float(v)
        st_sp: dict[int, float] = {}
        for sid, v in setpoints.station_kw.items():
            s = core.st_index.get(str(sid))
            if s is None:
                raise DataError(f"setpoint for unknown station {sid!r}", table="stations", column="station_id")
            if not np.isfinite(v):
                raise DataError(f"setpoint of station {sid!r} is not finite: {v}")
            st_sp[s] = float(v)
        return ev_sp, st_sp

    def advance(self, duration_s: float, setpoints: Setpoints | None = None, *, report: bool = True) -> StepReport:
        """Advance by ``duration_s`` (60–900 s) under ``setpoints`` and report what happened.

        Parameters
        ----------
        duration_s : float
            Interval length, s, from 1 to 15 minutes.
        setpoints : Setpoints, optional
            Powers for the interval; None or empty: uncontrolled charging at full power.
        report : bool
            Build the per-EV and per-event lists of the report (False: only ``counts`` and
            the times, for speed in whole-day runs).

        Raises
        ------
        DataError
            For an interval outside 1–15 minutes, or a setpoint naming an unknown EV or
            station, or a non-finite setpoint.
        """
        if not (MIN_INTERVAL_S - TIME_ATOL_S <= duration_s <= MAX_INTERVAL_S + TIME_ATOL_S):
            raise DataError(f"plant interval must be 1 to 15 minutes, got {duration_s} s")
        core = self.core
        t0 = core.now
        t1 = t0 + float(duration_s)
        ev_sp, st_sp = self._ids_to_index(setpoints or Setpoints())
        core.record_events = True
        core.events = []
        ignored: list[int] = []
        clipped: dict[int, float] = {}
        if ev_sp or st_sp or core.controlled or core.station_setpoint_kw:
            ignored, clipped = core.apply_setpoints(ev_sp, st_sp, t0)
        if report:
            core.settle_all(t0)
            open_sessions = [core.ev_session[i] for i in core.plugged_all]
            # by session
            e_start = {k: core.ses_grid_import_kwh[k] - core.ses_grid_export_kwh[k] for k in open_sessions}
            st_start = np.asarray(core.st_grid_import_kwh) - np.asarray(core.st_grid_export_kwh)
            ses_start = _SessionMark(core, sorted(open_sessions))
        core.run_until(t1)
        self._flush_telemetry(t0, t1)
        events = core.events
        counts = {k: 0 for k in ("arrival", "plug_in", "departure", "rejection", "stranded")}
        for ev in events:
            counts[ev[0]] += 1
        rep = StepReport(t_start_s=t0, t_end_s=t1,
                         counts={"arrivals": counts["arrival"], "plug_ins": counts["plug_in"],
                                 "departures": counts["departure"], "rejections": counts["rejection"],
                                 "stranded": counts["stranded"], "plugged": len(core.plugged_all),
                                 "queued": sum(len(q) for q in core.fcs_queue.values())})
        if report:
            self._fill_report(rep, events, e_start, st_start, ignored, clipped, t1)
            rep.sessions = ses_start.realised(core, t0, t1)
        core.events = []
        core.record_events = False
        return rep

    def _fill_report(self, rep: StepReport, events: list, e_start: dict[int, float], st_start: np.ndarray,
                     ignored: list[int], clipped: dict[int, float], t1: float) -> None:
        core = self.core
        core.settle_all(t1)
        ids, sids = core.ev_ids, core.st_ids
        lists = {"arrival": rep.arrivals, "plug_in": rep.plug_ins, "departure": rep.departures,
                 "rejection": rep.rejections, "stranded": rep.stranded}
        for kind, t, i, s, ses, soc in events:
            lists[kind].append(PlantEvent(kind=kind, time_s=float(t), ev_id=str(ids[i]),
                                          station_id=str(sids[s]) if s >= 0 else None,
                                          session_id=core.ses_id[ses] if ses >= 0 else None, soc=float(soc)))
        for i in sorted(core.plugged_all):
            ses = core.ev_session[i]
            exp = core.ses_expected_departure_s[ses]
            cap = core.battery_kwh[i]
            rep.plugged.append(EVState(
                ev_id=str(ids[i]), session_id=core.ses_id[ses], station_id=str(sids[core.ev_station[i]]),
                energy_kwh=float(core.energy_kwh[i]), soc=float(core.energy_kwh[i] / cap),
                arrival_s=float(core.ses_plug_in_s[ses]), departure_s=None if np.isnan(exp) else float(exp),
                soc_target=float(core.ses_soc_target[ses]), soc_arrival=float(core.ses_e_arrival_kwh[ses] / cap),
                soc_min=float(core.soc_min[i]), p_kw=float(core.p_kw[i]),
                interval_grid_kwh=float(core.ses_grid_import_kwh[ses] - core.ses_grid_export_kwh[ses]
                                        - e_start.get(ses, 0.0)),
                p_ch_max_kw=float(core.p_ch_max_kw[i]), p_dis_max_kw=float(core.p_dis_max_kw[i])))
        for s in core.fcs_choosable:
            rep.queues[str(sids[s])] = len(core.fcs_queue.get(int(s), ()))
        energy = np.asarray(core.st_grid_import_kwh) - np.asarray(core.st_grid_export_kwh) - st_start
        plugged = np.asarray(core.n_busy)
        queued = np.zeros(len(sids), dtype=np.int64)
        for s, q in core.fcs_queue.items():
            queued[s] = len(q)
        p_now = np.asarray(core.st_p_kw)
        dt_h = (rep.t_end_s - rep.t_start_s) / 3600.0
        for s in np.flatnonzero((plugged > 0) | (queued > 0) | (energy != 0.0)):
            rep.stations.append(StationState(station_id=str(sids[s]), plugged=int(plugged[s]), queue=int(queued[s]),
                                             energy_kwh=float(energy[s]), mean_kw=float(energy[s] / dt_h),
                                             p_kw=float(p_now[s])))
        rep.ignored_ev_setpoints = [str(ids[i]) for i in ignored]
        rep.clipped_ev_setpoints = {str(ids[i]): float(v) for i, v in sorted(clipped.items())}

    def _flush_telemetry(self, t0: float, t1: float) -> None:
        if self.telemetry is None:
            return
        core = self.core
        c = np.array(core.charger_log_charger, dtype=np.int64)
        self.telemetry.write_interval(t0, t1, np.array(core.charger_log_t_s, dtype=float), self._tele_index[c],
                                      np.array(core.charger_log_p_kw, dtype=float),
                                      np.array(core.charger_log_ev, dtype=np.int64))
        core.clear_charger_log()

    def close(self) -> None:
        """Finish the telemetry file (if any). Further :meth:`advance` calls write no telemetry."""
        if self.telemetry is not None:
            self.telemetry.close()
            self.telemetry = None
            self.core.telemetry_mask = None
            self.core.clear_charger_log()

    def __enter__(self) -> "Plant":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ results
    def sessions(self) -> pd.DataFrame:
        """All charging sessions so far (see :data:`SESSION_COLUMNS`).

        Times are seconds after the instance start: ``arrival`` at the station, ``plug_in``
        (NaN if never plugged in: turned away, or still queued), ``departure`` (unplugged,
        turned away, or — for a session still open — the current time, with ``censored``
        true). ``arrival_s``/``departure_s`` are the plugged-in interval, as
        :data:`optev.data.SESSIONS` defines them (for a rejected or never-plugged session
        both are the arrival time). Energies are kWh: ``energy_needed_kwh`` and
        ``energy_delivered_kwh`` at the battery (target minus arrival energy; energy
        charged into the battery), ``grid_import_kwh``/``grid_export_kwh`` at the grid side
        of the charger. ``wait_min`` is the FCS queueing time (plug-in − arrival), minutes.
        """
        core = self.core
        core.settle_all(core.now)
        n = len(core.ses_ev)
        ev = np.asarray(core.ses_ev, dtype=np.int64)
        st = np.asarray(core.ses_station, dtype=np.int64)
        cap = np.asarray(core.battery_kwh)[ev] if n else np.zeros(0)
        arr = np.asarray(core.ses_arrival_s, dtype=float)
        plug = np.asarray(core.ses_plug_in_s, dtype=float)
        dep = np.asarray(core.ses_departure_s, dtype=float)
        e_arr = np.asarray(core.ses_e_arrival_kwh, dtype=float)
        e_dep = np.asarray(core.ses_e_departure_kwh, dtype=float)
        rej = np.asarray(core.ses_rejected, dtype=bool)
        open_ = np.isnan(dep)
        if open_.any():  # still plugged or queued: report up to now
            dep = np.where(open_, core.now, dep)
            e_now = np.asarray(core.energy_kwh)[ev]
            e_dep = np.where(open_, e_now, e_dep)
        plugged = ~np.isnan(plug)
        tgt = np.asarray(core.ses_soc_target, dtype=float)
        wait = np.where(plugged, plug - arr, np.where(rej, 0.0, dep - arr)) / 60.0
        df = pd.DataFrame({
            "session_id": list(core.ses_id),
            "ev_id": core.ev_ids[ev] if n else np.zeros(0, dtype=object),
            "station_id": core.st_ids[st] if n else np.zeros(0, dtype=object),
            "arrival_s": np.where(plugged, plug, arr),
            "departure_s": np.where(plugged, dep, arr),
            "soc_arrival": np.clip(e_arr / np.where(cap > 0, cap, 1.0), 0.0, 1.0),
            "soc_target": tgt,
            "arrival": arr, "plug_in": plug, "departure": dep,
            "energy_needed_kwh": np.maximum(tgt * cap - e_arr, 0.0),
            "energy_delivered_kwh": np.asarray(core.ses_charged_kwh, dtype=float),
            "wait_min": wait,
            "rejected": rej,
            "station_kind": core.st_kind_name[st] if n else np.zeros(0, dtype=object),
            "soc_departure": np.clip(e_dep / np.where(cap > 0, cap, 1.0), 0.0, 1.0),
            "energy_discharged_kwh": np.asarray(core.ses_discharged_kwh, dtype=float),
            "grid_import_kwh": np.asarray(core.ses_grid_import_kwh, dtype=float),
            "grid_export_kwh": np.asarray(core.ses_grid_export_kwh, dtype=float),
            "expected_departure": np.asarray(core.ses_expected_departure_s, dtype=float),
            "trip_index": _trip_index(core, np.asarray(core.ses_trip, dtype=np.int64)),
            "censored": open_,
        })
        return df

    def ev_summary(self) -> pd.DataFrame:
        """Energy account of every EV so far (kWh at the battery unless named grid).

        ``soc_end · capacity − soc_init · capacity = charged_kwh − discharged_kwh − driving_kwh``
        holds for every EV (up to rounding).
        """
        core = self.core
        core.settle_all(core.now)
        cap = np.asarray(core.battery_kwh)
        n_ses = np.bincount(np.asarray(core.ses_ev, dtype=np.int64), minlength=core.n_ev) if core.ses_ev else \
            np.zeros(core.n_ev, np.int64)
        n_rej = np.bincount(np.asarray(core.ses_ev, dtype=np.int64), weights=np.asarray(core.ses_rejected, dtype=float),
                            minlength=core.n_ev) if core.ses_ev else np.zeros(core.n_ev)
        status = np.asarray(core.status)
        return pd.DataFrame({
            "ev_id": core.ev_ids, "battery_kwh": cap, "soc_init": np.asarray(core.energy_init_kwh) / cap,
            "soc_end": np.asarray(core.energy_kwh) / cap, "e_init_kwh": np.asarray(core.energy_init_kwh),
            "e_end_kwh": np.asarray(core.energy_kwh), "driving_kwh": np.asarray(core.driven_kwh),
            "driven_km": np.asarray(core.driven_m) / 1000.0, "charged_kwh": np.asarray(core.charged_kwh),
            "discharged_kwh": np.asarray(core.discharged_kwh), "grid_import_kwh": np.asarray(core.grid_import_kwh),
            "grid_export_kwh": np.asarray(core.grid_export_kwh), "sessions": n_ses - n_rej.astype(np.int64),
            "rejections": n_rej.astype(np.int64), "stranded": status == STRANDED,
            "stranded_s": np.asarray(core.stranded_s, dtype=float),
            "plugged": status == PLUGGED,
        })

    def station_series(self, resolution_s: float = 60.0, t_end_s: float | None = None) -> StationSeries:
        """Occupancy, queue length and load of every station on bins of ``resolution_s``.

        Bins run from 0 to ``t_end_s`` (default: the current time, rounded up to a bin);
        values are time averages over each bin (see :class:`StationSeries`).
        """
        if not resolution_s > 0:
            raise DataError(f"resolution_s must be positive, got {resolution_s}")
        core = self.core
        end = core.now if t_end_s is None else float(t_end_s)
        n_bins = max(1, int(np.ceil(end / resolution_s - 1e-9)))
        edges = np.arange(n_bins + 1) * float(resolution_s)
        t = np.array(core.log_t_s, dtype=float)
        s = np.array(core.log_station, dtype=np.int64)
        n_st = len(core.st_ids)
        out = {}
        logs = (("load_kw", core.log_dp_kw), ("occupancy", core.log_d_occupancy), ("queue", core.log_d_queue))
        for name, buf in logs:
            d = np.array(buf, dtype=float)
            keep = d != 0.0
            out[name] = bin_averages(s[keep], t[keep], d[keep], n_st, edges)
        return StationSeries(station_id=core.st_ids.copy(), t_s=edges[:-1], resolution_s=float(resolution_s),
                             **out)

    def queues(self) -> dict[str, int]:
        """Current queue length of every FCS."""
        core = self.core
        return {str(core.st_ids[s]): len(core.fcs_queue.get(int(s), ())) for s in core.fcs_choosable}

    def plugged_evs(self) -> dict[str, float]:
        """Current SOC of every plugged EV, by EV id."""
        core = self.core
        core.settle_all(core.now)
        return {str(core.ev_ids[i]): core.energy_kwh[i] / core.battery_kwh[i] for i in sorted(core.plugged_all)}


_SESSION_ENERGIES = ("ses_grid_import_kwh", "ses_grid_export_kwh", "ses_charged_kwh", "ses_discharged_kwh")
"""Cumulative session energies of :class:`~optev.mobility.core.EventCore` marked at an interval start."""


class _SessionMark:
    """Cumulative energies of the open sessions at an interval start, to report what every
    session plugged in during the interval realised in it (:data:`SESSION_STEP_COLUMNS`)."""

    def __init__(self, core: EventCore, open_sessions: list[int]) -> None:
        self.open = np.asarray(open_sessions, dtype=np.int64)
        self.start = {name: np.asarray(getattr(core, name), dtype=float)[self.open] for name in _SESSION_ENERGIES}

    def realised(self, core: EventCore, t0: float, t1: float) -> dict[str, list]:
        """Columns of the sessions plugged in at ``t0`` or plugged in during the interval
        (new arrivals, and EVs that waited in an FCS queue)."""
        plug = np.asarray(core.ses_plug_in_s, dtype=float)
        with np.errstate(invalid="ignore"):
            new = np.flatnonzero(plug >= t0)  # NaN (queued, turned away) compares False
        new = np.setdiff1d(new, self.open, assume_unique=True)
        k = np.concatenate([self.open, new])
        delta = {}
        for name in _SESSION_ENERGIES:
            now = np.asarray(getattr(core, name), dtype=float)[k]
            delta[name] = now - np.concatenate([self.start[name], np.zeros(new.size)])
        dep = np.asarray(core.ses_departure_s, dtype=float)[k]
        ev = np.asarray(core.ses_ev, dtype=np.int64)[k]
        left = ~np.isnan(dep)
        e_now = np.asarray(core.energy_kwh, dtype=float)[ev]
        e_end = np.where(left, np.asarray(core.ses_e_departure_kwh, dtype=float)[k], e_now)
        cap = np.asarray(core.battery_kwh, dtype=float)[ev]
        plugged_s = np.minimum(np.where(left, dep, t1), t1) - np.maximum(plug[k], t0)
        return {"session_id": [core.ses_id[j] for j in k.tolist()], "ev_id": core.ev_ids[ev].tolist(),
                "station_id": core.st_ids[np.asarray(core.ses_station, dtype=np.int64)[k]].tolist(),
                "import_kwh": delta["ses_grid_import_kwh"].tolist(),
                "export_kwh": delta["ses_grid_export_kwh"].tolist(),
                "charged_kwh": delta["ses_charged_kwh"].tolist(),
                "discharged_kwh": delta["ses_discharged_kwh"].tolist(),
                "e_kwh": e_end.tolist(), "soc": (e_end / np.where(cap > 0, cap, 1.0)).tolist(),
                "plugged_s": np.maximum(plugged_s, 0.0).tolist(), "departed": left.tolist()}


def _trip_index(core: EventCore, trip: np.ndarray) -> np.ndarray:
    """``trips.trip_index`` of each session's trip (-1: the stop at the start of the day)."""
    if core.trip_index.size == 0:
        return np.full(trip.size, -1, dtype=np.int64)
    return np.where(trip >= 0, core.trip_index[np.maximum(trip, 0)], -1)

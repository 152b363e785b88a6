"""A sessions-replay plant: the instance's charging sessions, advanced under setpoints.

For an instance without trips (only a ``sessions`` table, like
:func:`optev.data.synthetic.synthetic_charging_instance`) there is nothing for the
event simulation of :mod:`optev.mobility` to drive; :class:`ReplayPlant` plays the
sessions back instead, with the same interface as :class:`optev.mobility.Plant`
(``time_s``, ``advance(duration_s, setpoints, report=True) -> StepReport``,
``sessions()``), so :func:`optev.mpc.simulate` runs both kinds of instance.

Rules
-----
* **Presence.** A session's EV is plugged in from ``arrival_s`` to ``departure_s``
  (seconds after the instance start) at its station, whatever the setpoints: the
  sessions are realised data. An interval ``(t0, t1]`` reports the arrivals (plug-ins)
  and departures with times in it; the report's ``plugged`` list holds the EVs with
  ``arrival_s ≤ t1 < departure_s``, so an EV arriving exactly at the end of an interval is
  part of the next state. Sessions plugged in when the plant starts arrive with their
  ``soc_arrival`` (no charging before the start is replayed). Each session starts from
  its own ``soc_arrival`` (sessions of one EV are not chained).
* **Power.** Constant over the interval per EV, at the grid side (charge positive):

  - an EV setpoint applies to an EV plugged in at the interval start; it is clipped to
    ``[−p_dis, p_ch]`` (discharge only if the user opted in and vehicle and charger can
    do V2G, and not at or below the SOC floor; no charge of a full battery) — clipped
    setpoints are reported like the plant does;
  - a station setpoint is shared by the station's other EVs — those plugged in at the
    interval start without an EV setpoint and those arriving during the interval — in
    proportion to their charge (or discharge) limits, within the site caps left by the EV
    setpoints. An arriving EV holds its share (constant) over the part of the interval it
    is plugged in, so the station's mean power stays within its setpoint (the event plant
    re-shares at every arrival; both keep the setpoint as the station's limit);
  - an EV with neither charges at full power up to its session target (the uncontrolled
    baseline), also from a mid-interval arrival; the station's uncontrolled EVs share
    the site cap in proportion to their limits.
* **Energy** integrates the power over the part of the interval the EV is plugged in,
  ``E += η_ch·p·τ`` (charge) or ``E += p·τ/η_dis`` (discharge), stopping exactly at the
  battery's capacity (at its session target when uncontrolled) or at its SOC floor;
  ``η`` = vehicle × charger efficiency, limits as in :mod:`optev.blocks.window`
  (vehicle DC rate at a fast charger, AC rate otherwise, and the charger's rating).

Everything is vectorised over sessions (numpy); only the report's lists are built per EV.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from optev.data.instance import Instance
from optev.data.battery import BatteryStep, battery_step, charger_discharge_kw, pair_limits, top_off_kwh
from optev.errors import DataError
from optev.mobility.plant import MAX_INTERVAL_S, MIN_INTERVAL_S
from optev.mobility.state import EVState, PlantEvent, Setpoints, StationState, StepReport
from optev.mpc.state import ControlState
from optev.tolerances import SNAP_KWH, TIME_ATOL_S

WAITING, PLUGGED, GONE = 0, 1, 2

REPLAY_SESSION_COLUMNS = ("session_id", "ev_id", "station_id", "arrival_s", "departure_s", "soc_arrival",
                          "soc_target", "soc_departure", "energy_needed_kwh", "energy_delivered_kwh",
                          "energy_discharged_kwh", "grid_import_kwh", "grid_export_kwh", "censored")
"""Columns of :meth:`ReplayPlant.sessions` (a subset of :data:`optev.mobility.SESSION_COLUMNS`)."""


class ReplayPlant:
    """The sessions of ``instance`` replayed interval by interval (module docstring).

    Parameters
    ----------
    instance : Instance
        Sessions, EVs, vehicle types, stations and charger models.
    start_s : float
        Plant time at construction, s after the instance start.
    """

    def __init__(self, instance: Instance, *, start_s: float = 0.0) -> None:
        ses = instance.sessions.sort_values(["arrival_s", "session_id"], kind="stable").reset_index(drop=True)
        self.session_ids = ses["session_id"].astype(str).to_numpy(object)
        self.ev_ids = ses["ev_id"].astype(str).to_numpy(object)
        evs = instance.evs.set_index("ev_id").reindex(self.ev_ids)
        if evs["vtype_id"].isna().any():
            bad = self.ev_ids[evs["vtype_id"].isna().to_numpy()][:5].tolist()
            raise DataError(f"sessions of unknown EV(s) {bad}", table="sessions", column="ev_id")
        vt = instance.vehicle_types.set_index("vtype_id").reindex(evs["vtype_id"])
        st_tab = instance.station_power()
        self.station_ids = st_tab["station_id"].astype(str).to_numpy(object)
        st_pos = pd.Index(self.station_ids).get_indexer(ses["station_id"].astype(str))
        if (st_pos < 0).any():
            bad = ses["station_id"].to_numpy(object)[st_pos < 0][:5].tolist()
            raise DataError(f"sessions at unknown station(s) {bad}", table="sessions", column="station_id")
        self.st = st_pos.astype(np.int64)
        n_st = self.station_ids.size
        limits = pair_limits(vt, st_tab.iloc[self.st], evs["v2g_opt_in"].to_numpy(bool))
        self.pch = limits.p_ch_max_kw
        self.pdis = limits.p_dis_max_kw
        self.eta_ch = limits.eff_ch
        self.eta_dis = limits.eff_dis
        charger_ch = st_tab["p_ch_max_kw"].to_numpy(float)
        charger_dis = charger_discharge_kw(st_tab["v2g"].to_numpy(object), st_tab["p_dis_max_kw"].to_numpy(float))
        self.cap = vt["battery_kwh"].to_numpy(float)
        self.soc_min = evs["soc_min"].to_numpy(float)
        self.floor = self.soc_min * self.cap
        self.soc_arr = ses["soc_arrival"].to_numpy(float)
        self.soc_tgt = ses["soc_target"].to_numpy(float)
        self.arr = ses["arrival_s"].to_numpy(float)
        self.dep = ses["departure_s"].to_numpy(float)
        self.e = self.soc_arr * self.cap
        self.e_dep = np.full(self.e.size, np.nan)
        self.p_end = np.zeros(self.e.size)
        self.ch = np.zeros(self.e.size)       # battery-side energy charged, kWh
        self.dis = np.zeros(self.e.size)      # battery-side energy discharged, kWh
        self.gin = np.zeros(self.e.size)      # grid-side import, kWh
        self.gout = np.zeros(self.e.size)     # grid-side export, kWh
        site = st_tab["p_site_max_kw"].to_numpy(float)
        n_ch = st_tab["n_chargers"].to_numpy(float)
        self.site_ch = np.minimum(site, n_ch * charger_ch)
        self.site_dis = np.minimum(st_tab["p_site_dis_max_kw"].to_numpy(float), n_ch * charger_dis)
        self.n_st = n_st
        self.now = float(start_s)
        self.status = np.where(self.arr <= self.now + TIME_ATOL_S,
                               np.where(self.dep > self.now + TIME_ATOL_S, PLUGGED, GONE), WAITING).astype(np.int8)
        gone0 = self.status == GONE
        self.e_dep[gone0] = self.e[gone0]

    @property
    def time_s(self) -> float:
        """Current plant time, s after the instance start."""
        return self.now

    # ------------------------------------------------------------------ stepping
    def _shares(self, mask: np.ndarray, weights: np.ndarray, total: np.ndarray) -> np.ndarray:
        """Share per-station ``total`` among ``mask`` sessions in proportion to ``weights``."""
        w = np.where(mask, weights, 0.0)
        s = np.bincount(self.st, weights=w, minlength=self.n_st)
        frac = np.divide(w, s[self.st], out=np.zeros_like(w), where=s[self.st] > 0)
        return frac * total[self.st]

    def advance(self, duration_s: float, setpoints: Setpoints | None = None, *, report: bool = True) -> StepReport:
        """Advance by ``duration_s`` (60–900 s) under ``setpoints`` (module docstring, "Rules")."""
        if not (MIN_INTERVAL_S - TIME_ATOL_S <= duration_s <= MAX_INTERVAL_S + TIME_ATOL_S):
            raise DataError(f"plant interval must be 1 to 15 minutes, got {duration_s} s")
        sp = setpoints or Setpoints()
        t0, t1 = self.now, self.now + float(duration_s)
        at_start = self.status == PLUGGED
        e0 = self.e.copy()
        ev_sp, ignored = self._ev_setpoints(sp, at_start)
        st_sp = self._station_setpoints(sp)
        arriving = (self.status == WAITING) & (self.arr < t1 - TIME_ATOL_S)
        active = at_start | arriving
        p, clipped_mask, free = self._powers(e0, ev_sp, st_sp, at_start, active)
        # energy over the plugged part of the interval
        tau_h = np.where(active, np.maximum(np.minimum(self.dep, t1) - np.maximum(self.arr, t0), 0.0), 0.0) / 3600.0
        e_up = top_off_kwh(free, self.soc_tgt, self.cap, e0)
        energy = battery_step(e0, p, tau_h, self.floor, e_up, self.eta_ch, self.eta_dis)
        self.e = e0 + energy.stored_kwh
        self.ch += energy.charged_kwh
        self.dis += energy.discharged_kwh
        self.gin += energy.grid_import_kwh
        self.gout += energy.grid_export_kwh
        arrived, leaving = self._status_changes(arriving, active, p, e_up, t1)
        plugged_end = self.status == PLUGGED
        rep = StepReport(t_start_s=t0, t_end_s=t1, counts={
            "arrivals": int(arrived.sum()), "plug_ins": int(arrived.sum()), "departures": int(leaving.sum()),
            "rejections": 0, "stranded": 0, "plugged": int(plugged_end.sum()), "queued": 0})
        if report:
            g_net = energy.grid_import_kwh - energy.grid_export_kwh
            self._fill(rep, arrived, leaving, plugged_end, g_net, ignored, clipped_mask, p, duration_s)
            rep.sessions = self._session_rows(np.flatnonzero(active), energy, tau_h, leaving)
        return rep

    def _ev_setpoints(self, sp: Setpoints, at_start: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Per-session EV setpoints (NaN: none) by EV id → its session plugged in at t0; ids not plugged."""
        ev_sp = np.full(self.e.size, np.nan)
        ignored: list[str] = []
        if sp.ev_kw:
            keys = list(sp.ev_kw)
            vals = np.array([float(sp.ev_kw[k]) for k in keys], float)
            if not np.isfinite(vals).all():
                raise DataError(f"setpoint of EV {keys[int(np.flatnonzero(~np.isfinite(vals))[0])]!r} is not finite")
            idx_at = np.flatnonzero(at_start)
            pos = pd.Index(self.ev_ids[idx_at]).get_indexer(keys) if idx_at.size else np.full(len(keys), -1)
            ok = pos >= 0
            ignored = [k for k, o in zip(keys, ok) if not o]
            ev_sp[idx_at[pos[ok]]] = vals[ok]
        return ev_sp, ignored

    def _station_setpoints(self, sp: Setpoints) -> np.ndarray:
        """Per-station setpoints (NaN: none); unknown stations and non-finite values are errors."""
        st_sp = np.full(self.n_st, np.nan)
        if sp.station_kw:
            keys = list(sp.station_kw)
            pos = pd.Index(self.station_ids).get_indexer(keys)
            if (pos < 0).any():
                raise DataError(f"setpoint for unknown station {keys[int(np.flatnonzero(pos < 0)[0])]!r}",
                                table="stations", column="station_id")
            vals = np.array([float(sp.station_kw[k]) for k in keys], float)
            if not np.isfinite(vals).all():
                raise DataError("a station setpoint is not finite")
            st_sp[pos] = vals
        return st_sp

    def _powers(self, e0: np.ndarray, ev_sp: np.ndarray, st_sp: np.ndarray, at_start: np.ndarray,
                active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid-side power of each session over the interval, the clipped EV setpoints and the
        sessions charging uncontrolled (EV setpoints, then shared station setpoints, then free)."""
        can_ch = np.where(e0 < self.cap - SNAP_KWH, self.pch, 0.0)
        can_dis = np.where(e0 > self.floor + SNAP_KWH, self.pdis, 0.0)
        has_ev = at_start & ~np.isnan(ev_sp)
        has_st = ~np.isnan(st_sp)
        # EV setpoints, clipped at the start of the interval
        p_ev = np.clip(np.nan_to_num(ev_sp), -can_dis, can_ch)
        p = np.where(has_ev, p_ev, 0.0)
        clipped_mask = has_ev & (np.abs(p_ev - np.nan_to_num(ev_sp)) > 1e-9)
        fixed_ch = np.bincount(self.st, weights=np.where(has_ev, np.maximum(p_ev, 0.0), 0.0), minlength=self.n_st)
        fixed_dis = np.bincount(self.st, weights=np.where(has_ev, np.maximum(-p_ev, 0.0), 0.0), minlength=self.n_st)
        # station setpoints shared by the other EVs: plugged in at t0 or arriving during the interval
        shared = active & ~has_ev & has_st[self.st]
        sum_c = np.bincount(self.st, weights=np.where(shared, can_ch, 0.0), minlength=self.n_st)
        sum_d = np.bincount(self.st, weights=np.where(shared, can_dis, 0.0), minlength=self.n_st)
        total = np.clip(np.nan_to_num(st_sp), -sum_d, sum_c)
        total = np.minimum(total, np.maximum(self.site_ch - fixed_ch, 0.0))
        total = np.maximum(total, -np.maximum(self.site_dis - fixed_dis, 0.0))
        p = np.where(shared & (total[self.st] > 0), self._shares(shared, can_ch, np.maximum(total, 0.0)), p)
        p = np.where(shared & (total[self.st] < 0), -self._shares(shared, can_dis, np.maximum(-total, 0.0)), p)
        # uncontrolled: full power up to the session target, within the site cap
        free = active & ~has_ev & ~has_st[self.st]
        want = np.where(free & (e0 < self.soc_tgt * self.cap - SNAP_KWH), self.pch, 0.0)
        sum_free = np.bincount(self.st, weights=want, minlength=self.n_st)
        room = np.maximum(self.site_ch - fixed_ch, 0.0)
        scale = np.divide(room, sum_free, out=np.ones(self.n_st), where=sum_free > room)
        p = np.where(free, want * np.minimum(scale, 1.0)[self.st], p)
        return p, clipped_mask, free

    def _status_changes(self, arriving: np.ndarray, active: np.ndarray, p: np.ndarray, e_up: np.ndarray,
                        t1: float) -> tuple[np.ndarray, np.ndarray]:
        """Plug-ins and departures at the end of the interval; the power each session keeps."""
        leaving = active & (self.dep <= t1 + TIME_ATOL_S)
        self.status[arriving] = PLUGGED
        self.status[leaving] = GONE
        # an EV arriving exactly at t1 is plugged in at the end of this interval
        edge_arr = (self.status == WAITING) & (self.arr <= t1 + TIME_ATOL_S)
        self.status[edge_arr] = PLUGGED
        self.e_dep[leaving] = self.e[leaving]
        limited = np.where(p > 0, self.e >= e_up - SNAP_KWH, np.where(p < 0, self.e <= self.floor + SNAP_KWH, True))
        self.p_end = np.where((self.status == PLUGGED) & ~limited & ~edge_arr, p, 0.0)
        self.now = t1
        return arriving | edge_arr, leaving

    def _session_rows(self, i: np.ndarray, energy: BatteryStep, tau_h: np.ndarray,
                      leaving: np.ndarray) -> dict[str, list[Any]]:
        """The interval's per-session energies of the sessions ``i`` (columns of ``StepReport.sessions``)."""
        cap = np.where(self.cap > 0, self.cap, 1.0)
        return {
            "session_id": self.session_ids[i].tolist(), "ev_id": self.ev_ids[i].tolist(),
            "station_id": self.station_ids[self.st[i]].tolist(), "import_kwh": energy.grid_import_kwh[i].tolist(),
            "export_kwh": energy.grid_export_kwh[i].tolist(), "charged_kwh": energy.charged_kwh[i].tolist(),
            "discharged_kwh": energy.discharged_kwh[i].tolist(), "e_kwh": self.e[i].tolist(),
            "soc": (self.e / cap)[i].tolist(), "plugged_s": (tau_h[i] * 3600.0).tolist(),
            "departed": leaving[i].tolist()}

    def _fill(self, rep: StepReport, arrived: np.ndarray, leaving: np.ndarray, plugged_end: np.ndarray,
              g_net: np.ndarray, ignored: list[str], clipped: np.ndarray, p: np.ndarray, duration_s: float) -> None:
        soc = self.e / np.where(self.cap > 0, self.cap, 1.0)
        soc_arr = self.soc_arr
        for i in np.flatnonzero(arrived):
            ev = PlantEvent(kind="arrival", time_s=float(self.arr[i]), ev_id=str(self.ev_ids[i]),
                            station_id=str(self.station_ids[self.st[i]]), session_id=str(self.session_ids[i]),
                            soc=float(soc_arr[i]))
            rep.arrivals.append(ev)
            rep.plug_ins.append(PlantEvent(**{**ev.__dict__, "kind": "plug_in"}))
        for i in np.flatnonzero(leaving):
            rep.departures.append(PlantEvent(kind="departure", time_s=float(self.dep[i]), ev_id=str(self.ev_ids[i]),
                                             station_id=str(self.station_ids[self.st[i]]),
                                             session_id=str(self.session_ids[i]), soc=float(soc[i])))
        rep.plugged = self._ev_states(np.flatnonzero(plugged_end), g_net)
        energy = np.bincount(self.st, weights=g_net, minlength=self.n_st)
        n_plugged = np.bincount(self.st, weights=plugged_end.astype(float), minlength=self.n_st)
        p_now = np.bincount(self.st, weights=self.p_end, minlength=self.n_st)
        dt_h = duration_s / 3600.0
        for s in np.flatnonzero((n_plugged > 0) | (energy != 0.0)):
            rep.stations.append(StationState(station_id=str(self.station_ids[s]), plugged=int(n_plugged[s]), queue=0,
                                             energy_kwh=float(energy[s]), mean_kw=float(energy[s] / dt_h),
                                             p_kw=float(p_now[s])))
        rep.ignored_ev_setpoints = ignored
        rep.clipped_ev_setpoints = {str(self.ev_ids[i]): float(p[i]) for i in np.flatnonzero(clipped)}

    # ------------------------------------------------------------------ results
    def report_now(self) -> StepReport:
        """A report of the current state only (``t_start_s = t_end_s = now``): the EVs plugged in now."""
        rep = StepReport(t_start_s=self.now, t_end_s=self.now)
        plugged = np.flatnonzero(self.status == PLUGGED)
        rep.plugged = self._ev_states(plugged, np.zeros(self.e.size))
        rep.counts = {"plugged": int(plugged.size)}
        return rep

    def _ev_states(self, rows: np.ndarray, grid_kwh: np.ndarray) -> list[EVState]:
        """The plugged sessions ``rows`` now, with the net grid-side energy of the interval
        ``grid_kwh`` (kWh, per session)."""
        soc = self.e / np.where(self.cap > 0, self.cap, 1.0)
        return [EVState(ev_id=str(self.ev_ids[i]), session_id=str(self.session_ids[i]),
                        station_id=str(self.station_ids[self.st[i]]), energy_kwh=float(self.e[i]), soc=float(soc[i]),
                        arrival_s=float(self.arr[i]), departure_s=float(self.dep[i]),
                        soc_target=float(self.soc_tgt[i]), soc_arrival=float(self.soc_arr[i]),
                        soc_min=float(self.soc_min[i]), p_kw=float(self.p_end[i]), interval_grid_kwh=float(grid_kwh[i]),
                        p_ch_max_kw=float(self.pch[i]), p_dis_max_kw=float(self.pdis[i])) for i in rows]

    def control_state(self) -> ControlState:
        """The controller's input at the current time: every EV plugged in now with its
        energy, session times and limits (what a dispatch service would send to
        :meth:`optev.mpc.Controller.step`), as :meth:`report_now` reports them."""
        return ControlState(time_s=self.now, evs=self.report_now().plugged)

    def sessions(self) -> pd.DataFrame:
        """Every session so far (:data:`REPLAY_SESSION_COLUMNS`); energies in kWh (battery side
        unless named grid), ``censored`` for sessions still plugged in (reported up to now).
        Sessions that have not arrived yet are left out."""
        seen = self.status != WAITING
        open_ = self.status == PLUGGED
        e_end = np.where(open_, self.e, self.e_dep)
        cap = np.where(self.cap > 0, self.cap, 1.0)
        df = pd.DataFrame({
            "session_id": self.session_ids, "ev_id": self.ev_ids, "station_id": self.station_ids[self.st],
            "arrival_s": self.arr, "departure_s": np.where(open_, self.now, self.dep),
            "soc_arrival": self.soc_arr, "soc_target": self.soc_tgt, "soc_departure": e_end / cap,
            "energy_needed_kwh": np.maximum(self.soc_tgt - self.soc_arr, 0.0) * self.cap,
            "energy_delivered_kwh": self.ch, "energy_discharged_kwh": self.dis,
            "grid_import_kwh": self.gin, "grid_export_kwh": self.gout, "censored": open_})
        return df.loc[seen].reset_index(drop=True)

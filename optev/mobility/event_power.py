"""Charging power and energy of plugged EVs (:class:`ChargingPower`).

Between events a plugged EV charges at a constant power, so its energy is integrated
exactly and lazily (:meth:`ChargingPower.settle`, only when something happens to the EV),
and the instant it reaches its limit is known in closed form and scheduled as an event
(:meth:`ChargingPower.set_power`). Station setpoints and site caps are shared among a
station's EVs in proportion to their limits (:meth:`ChargingPower.realloc`).
"""

from __future__ import annotations

from optev.mobility.event_codes import EV_SET, FCS, FREE, K_LIMIT
from optev.mobility.event_state import EventState
from optev.tolerances import SNAP_KWH


class ChargingPower(EventState):
    """Power setting, energy integration and power sharing at a station."""

    def shares_power(self, s: int) -> bool:
        """Whether the powers of station ``s``'s EVs are shared (a site cap or a station setpoint)."""
        return self.site_capped[s] or s in self.station_setpoint_kw

    def settle(self, i: int, t: float) -> None:
        """Integrate EV ``i``'s energy up to ``t`` at its current power."""
        dt = t - self.settled_s[i]
        pi = self.p_kw[i]
        if dt > 0.0 and pi != 0.0:
            e = self.energy_kwh[i]
            ses = self.ev_session[i]
            s = self.ev_station[i]
            if pi > 0.0:
                ech = self.eff_ch[i]
                de = pi * ech * dt / 3600.0
                room = self.energy_upper_kwh[i] - e
                if de > room - SNAP_KWH:
                    de = room if room > 0.0 else 0.0
                g = de / ech
                self.charged_kwh[i] += de
                self.grid_import_kwh[i] += g
                self.ses_charged_kwh[ses] += de
                self.ses_grid_import_kwh[ses] += g
                self.st_grid_import_kwh[s] += g
            else:
                edis = self.eff_dis[i]
                de = pi * dt / 3600.0 / edis
                room = self.energy_floor_kwh[i] - e
                if de < room + SNAP_KWH:
                    de = room if room < 0.0 else 0.0
                g = -de * edis
                self.discharged_kwh[i] -= de
                self.grid_export_kwh[i] += g
                self.ses_discharged_kwh[ses] -= de
                self.ses_grid_export_kwh[ses] += g
                self.st_grid_export_kwh[s] += g
            self.energy_kwh[i] = e + de
        self.settled_s[i] = t

    def set_power(self, i: int, pnew: float, t: float, force: bool = False) -> None:
        """Set the power of plugged EV ``i`` (settled at ``t``) and schedule its limit."""
        old = self.p_kw[i]
        if pnew == old and not force:
            return
        s = self.ev_station[i]
        if pnew != old:
            self.st_p_kw[s] += pnew - old
            self._log_station(t, s, pnew - old, 0, 0)
            self.p_kw[i] = pnew
            self._log_charger(t, i, s, i)
        self.limit_version[i] += 1
        if pnew > 0.0:
            room = self.energy_upper_kwh[i] - self.energy_kwh[i]
            self._push(t + room / (pnew * self.eff_ch[i]) * 3600.0, K_LIMIT, i, self.limit_version[i])
        elif pnew < 0.0:
            room = self.energy_kwh[i] - self.energy_floor_kwh[i]
            self._push(t + room * self.eff_dis[i] / (-pnew) * 3600.0, K_LIMIT, i, self.limit_version[i])

    def power_limits(self, i: int) -> tuple[float, float]:
        """Charge and discharge limits of plugged EV ``i`` now (0 at the target / floor), kW."""
        e = self.energy_kwh[i]
        c = self.p_ch_max_kw[i] if self.energy_upper_kwh[i] - e > SNAP_KWH else 0.0
        d = self.p_dis_max_kw[i] if e - self.energy_floor_kwh[i] > SNAP_KWH else 0.0
        return c, d

    def _energy_upper(self, i: int) -> float:
        """Upper energy limit of plugged EV ``i`` in its mode."""
        s = self.ev_station[i]
        if self.station_kind[s] == FCS or self.control_mode[i] == FREE:
            return self.ses_soc_target[self.ev_session[i]] * self.battery_kwh[i]
        return self.battery_kwh[i]

    def _own_power(self, i: int) -> float:
        """Power of plugged EV ``i`` on its own: its setpoint within its limits, else full charging."""
        c, d = self.power_limits(i)
        if self.control_mode[i] == EV_SET:
            return min(max(self.ev_setpoint_kw[i], -d), c)
        return c

    def share_station_power(self, s: int, t: float) -> None:
        """Recompute the powers of all EVs at station ``s`` (setpoint sharing, site caps)."""
        members = sorted(self.plugged_at[s] or ())
        if not members:
            return
        fixed_ch = fixed_dis = 0.0
        shared = []
        new = {}
        for i in members:
            self.settle(i, t)
            c, d = self.power_limits(i)
            if self.control_mode[i] == EV_SET:
                q = min(max(self.ev_setpoint_kw[i], -d), c)
                new[i] = q
                if q > 0:
                    fixed_ch += q
                else:
                    fixed_dis -= q
            else:
                shared.append((i, c, d))
        if shared:
            sum_c = sum(c for _, c, _ in shared)
            sum_d = sum(d for _, _, d in shared)
            target = self.station_setpoint_kw.get(s)
            total = sum_c if target is None else min(max(target, -sum_d), sum_c)
            if total > 0.0:
                total = min(total, max(float(self.st_site_ch_max_kw[s]) - fixed_ch, 0.0))
                for i, c, _ in shared:
                    new[i] = c if total >= sum_c else total * c / sum_c
            elif total < 0.0:
                total = max(total, -max(float(self.st_site_dis_max_kw[s]) - fixed_dis, 0.0))
                for i, _, d in shared:
                    new[i] = -d if -total >= sum_d else total * d / sum_d
            else:
                for i, _, _ in shared:
                    new[i] = 0.0
        for i in members:
            self.set_power(i, new[i], t, force=True)

    def _update_power(self, i: int, t: float, force: bool = False) -> None:
        """After a change to EV ``i`` at its station: re-share or set its own power."""
        s = self.ev_station[i]
        if self.shares_power(s):
            self.share_station_power(s, t)
        else:
            self.settle(i, t)
            self.set_power(i, self._own_power(i), t, force=force)

    def settle_all(self, t: float) -> None:
        """Integrate every plugged EV up to ``t`` (no change of state)."""
        for i in sorted(self.plugged_all):
            self.settle(i, t)

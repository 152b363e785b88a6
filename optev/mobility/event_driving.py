"""Driving of the event core (:class:`Driving`): energy of a leg, stranding, the choice of a fast station."""

from __future__ import annotations

import numpy as np

from optev.data.battery import charge_limit_kw
from optev.mobility.choice import expected_wait_s, fcs_scores, nearest_detour
from optev.mobility.event_codes import DRIVING, K_ARR_DEST, K_STRAND, STRANDED
from optev.mobility.event_power import ChargingPower


class Driving(ChargingPower):
    """Legs of a trip: battery use, stranding, the en-route fast station."""

    # ------------------------------------------------------------------ driving
    def _drive(self, i: int, t: float, dist_m: float, time_s: float) -> bool:
        """Use the energy of a leg; False (and a stranding event) if the battery empties."""
        need = dist_m * self.kwh_per_m[i]
        e = self.energy_kwh[i]
        self.status[i] = DRIVING
        if need <= e:
            self.energy_kwh[i] = e - need
            self.driven_kwh[i] += need
            self.driven_m[i] += dist_m
            return True
        frac = e / need
        self.driven_kwh[i] += e
        self.driven_m[i] += dist_m * frac
        self.energy_kwh[i] = 0.0
        self.status[i] = STRANDED
        self.stranded_s[i] = t + frac * time_s
        self._push(t + frac * time_s, K_STRAND, i, self.current_trip[i])
        return False

    def _choose_fcs(self, i: int, k: int, t: float) -> tuple[int, float, float, float, float] | None:
        """The fast station for an en-route stop on trip ``k``: (station, d1, t1, d2, t2)."""
        cfg = self.config
        o, d = self.trip_origin[k], self.trip_dest[k]
        fcs = self.fcs_choosable
        if self.fcs_have_xy and np.isfinite(self.node_x[o] + self.node_y[o] + self.node_x[d] + self.node_y[d]):
            cand = nearest_detour(self.node_x[o], self.node_y[o], self.node_x[d], self.node_y[d],
                                  self.st_x[fcs], self.st_y[fcs], cfg.fcs_candidates)
        else:
            cand = np.arange(fcs.size)  # no coordinates to pre-select with: route them all
        st = fcs[cand]
        nodes = self.node_ids[self.st_node[st]]
        d1, t1 = self.travel(np.full(st.size, self.node_ids[o], dtype=object), nodes)
        d2, t2 = self.travel(nodes, np.full(st.size, self.node_ids[d], dtype=object))
        kpm, cap, e = self.kwh_per_m[i], self.battery_kwh[i], self.energy_kwh[i]
        e_at = e - d1 * kpm
        ok = np.isfinite(d1) & np.isfinite(d2) & (e_at > 0.0)
        if not ok.any():
            return None
        st, d1, t1, d2, t2, e_at = st[ok], d1[ok], t1[ok], d2[ok], t2[ok], e_at[ok]
        target = np.minimum(1.0, np.maximum(cfg.fcs_soc_target, d2 * kpm / cap + self.soc_charge_threshold[i]))
        p = charge_limit_kw(self.st_fast[st], self.veh_p_ch_dc_kw[i], self.veh_p_ch_ac_kw[i], self.st_p_ch_max_kw[st])
        eff = self.veh_eff_ch[i] * self.st_eff_ch[st]
        e_buy = np.maximum(target * cap - e_at, 0.0) / eff
        charge_s = np.where(p > 0, e_buy / np.where(p > 0, p, 1.0) * 3600.0, np.inf)
        queued = np.array([len(self.fcs_queue.get(int(s), ())) for s in st], dtype=float)
        busy = np.array([self.n_busy[int(s)] for s in st], dtype=float)
        wait = expected_wait_s(busy, queued, self.st_n_chargers[st], cfg.fcs_service_s)
        price = np.array([self.tariff_buy.price(int(s), t + float(tt)) for s, tt in zip(st, t1)])
        score = fcs_scores(price_weight=self.price_weight[i], value_of_time_per_h=cfg.value_of_time_per_h,
                           price=price, energy_kwh=e_buy, detour_s=t1 + t2 - self.trip_time_s[k], wait_s=wait,
                           charge_s=charge_s)
        j = int(np.argmin(score))
        self.fcs_soc_target[i] = float(target[j])
        return int(st[j]), float(d1[j]), float(t1[j]), float(d2[j]), float(t2[j])

    def _continue_trip(self, i: int, t: float) -> None:
        """Drive the second leg (FCS → destination) of the current trip."""
        k = self.current_trip[i]
        d2, t2 = self.second_leg[i]
        if self._drive(i, t, d2, t2):
            self._push(t + t2, K_ARR_DEST, i, k)

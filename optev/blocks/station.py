r"""Charging station, the smallest V2G control unit (R6.2.3.3, R7.2.2, R6.5.1.2).

Sets
    :math:`s \in \mathcal{S}` stations, :math:`\mathcal{E}_s` EV sessions at station s.

Expressions (variant ``per_ev``)
    :math:`P^{ch}_{s,t} = \sum_{e\in\mathcal{E}_s} p^{ch}_{e,t}`,
    :math:`P^{dis}_{s,t} = \sum_{e\in\mathcal{E}_s} p^{dis}_{e,t}` (kW).

Variables
    ``station_q[s,t]`` :math:`Q_{s,t}` kvar injected by the station's V2G inverters
    (option ``reactive``; 0 otherwise).

Constraints
    ``station_site_cap``: :math:`P^{ch}_{s,t} - P^{dis}_{s,t} \le \bar P^{site}_s`, the site
    cap from transformer or cable limits, never above
    :math:`n^{chargers}_s \bar P^{charger}_s` (R7.2.2);
    ``station_discharge_cap``: :math:`P^{dis}_{s,t} \le \bar P^{site,dis}_s`;
    ``station_apparent_power`` (reactive only, stations with V2G chargers):
    :math:`(P^{ch}-P^{dis})^2 + Q^2 \le S_s^2` as the inscribed K-gon of
    :mod:`optev.blocks.polygon`, :math:`S_s = n^{chargers}_s \bar S^{charger}_s`;
    stations without V2G chargers have :math:`Q_s = 0`.

Injection at the station's bus
    :math:`-(P^{ch}_{s,t} - P^{dis}_{s,t})` kW and :math:`Q_{s,t}` kvar.

The constraints, the reactive power and the injection are declared by
:func:`optev.blocks.station_limits.declare_station_limits` (importable from here too), shared
with the aggregate variant.

Variant ``aggregate`` (flexibility envelope instead of per-EV variables) is declared in
:mod:`optev.blocks.envelope`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optev.blocks import envelope
from optev.blocks.context import ModelContext
from optev.blocks.station_limits import declare_station_limits as declare_station_limits
from optev.lp.expr import group_sum

OPTIONS: dict[str, tuple[Any, str]] = {
    "reactive": (False, "stations with V2G chargers may inject or absorb reactive power (R6.5.1.2)"),
    "polygon_sides": (12, "sides K of the polygon that linearises P² + Q² ≤ S²"),
}


def build(ctx: ModelContext, options: dict[str, Any], variant: str = "per_ev") -> None:
    """Declare the station block on top of the EV block (see module docstring)."""
    if variant == "aggregate":
        envelope.build(ctx, options)
        return
    if variant != "per_ev":
        raise ValueError(f"unknown station variant {variant!r}")
    w = ctx.window
    st = w.stations
    p_ch = group_sum(ctx.require("ev_p_ch", "station block"), w.evs.station, st.n)
    p_dis = group_sum(ctx.require("ev_p_dis", "station block"), w.evs.station, st.n)
    declare_station_limits(ctx, p_ch, p_dis, options)
    ctx.diagnostics.append(diagnose)


def diagnose(ctx: ModelContext) -> list[str]:
    """Stations whose site cap cannot let their EVs store what they need in the window.

    The bound is generous (every plugged EV at full power, limited only by the site cap at
    the best efficiency of its EVs), so a station named here is a cause, not a suspect.
    """
    w = ctx.window
    ev, st = w.evs, w.stations
    if not ev.n:
        return []
    need = np.bincount(ev.station, weights=np.maximum(ev.e_req_kwh - ev.e_init_kwh, 0.0), minlength=st.n)
    rate = np.zeros((st.n, w.steps))
    np.add.at(rate, ev.station, ev.eff_ch[:, None] * ev.p_ch_max_kw[:, None] * ev.plugged)
    best_eff = np.zeros(st.n)
    np.maximum.at(best_eff, ev.station, ev.eff_ch)
    cap = np.maximum(st.p_site_max_kw, 0.0)
    most = w.dt_h * np.minimum(rate, (cap * best_eff)[:, None]).sum(axis=1)
    short = np.flatnonzero(need > most + 1e-6)
    if not short.size:
        return []
    n_ses = np.bincount(ev.station, minlength=st.n)
    if (cap[need > 1e-6] == 0).all():
        return [f"every station whose EVs need energy has a site cap of 0 kW (p_site_max_kw, or no chargers): "
                f"{int(n_ses[short].sum())} EV sessions at {short.size} station(s) need {need[short].sum():.1f} kWh "
                f"in the window (for example station {st.station_id[short[0]]})"]
    out = [f"station {st.station_id[s]}: its site cap of {cap[s]:g} kW (p_site_max_kw, at most its chargers' "
           f"total) lets its {int(n_ses[s])} EV sessions store at most {most[s]:.1f} kWh in the window, but they "
           f"need {need[s]:.1f} kWh" for s in short[:5]]
    if short.size > 5:
        out.append(f"... and {short.size - 5} more stations")
    return out

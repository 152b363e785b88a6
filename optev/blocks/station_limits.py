r"""Site caps, reactive power and bus injection of stations, shared by both station variants.

The per-EV variant (:mod:`optev.blocks.station`, station powers summed from the EVs'
variables) and the aggregate variant (:mod:`optev.blocks.envelope`, station powers as the
variables of a flexibility envelope) declare the same limits on the station powers they
obtain; :func:`declare_station_limits` is that one place. It lives below both variant
modules, so neither imports the other for it.

Constraints
    ``station_site_cap``: :math:`P^{ch}_{s,t} - P^{dis}_{s,t} \le \bar P^{site}_s`, the site
    cap from transformer or cable limits, never above
    :math:`n^{chargers}_s \bar P^{charger}_s` (R7.2.2), with a slack in soft-limit mode;
    ``station_discharge_cap``: :math:`P^{dis}_{s,t} \le \bar P^{site,dis}_s` where it is
    below the chargers' total;
    ``station_apparent_power`` (option ``reactive``, stations with V2G chargers):
    :math:`(P^{ch}-P^{dis})^2 + Q^2 \le S_s^2` as the inscribed K-gon of
    :mod:`optev.blocks.polygon`, :math:`S_s = n^{chargers}_s \bar S^{charger}_s`.

Variables
    ``station_q[s,t]`` :math:`Q_{s,t}` kvar (option ``reactive``; stations without V2G
    chargers have :math:`Q_s = 0`).

Handles
    ``station_p_ch``, ``station_p_dis`` (the given powers), ``station_q`` (option
    ``reactive``); the injection ``stations`` at the station buses:
    :math:`-(P^{ch}_{s,t} - P^{dis}_{s,t})` kW and :math:`Q_{s,t}` kvar.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optev.blocks.context import ModelContext
from optev.blocks.polygon import apparent_power_rows


def declare_station_limits(ctx: ModelContext, p_ch: Any, p_dis: Any, options: dict[str, Any]) -> None:
    """Site caps, optional reactive power and the bus injection of stations with the given powers."""
    w = ctx.window
    st = w.stations
    lp = ctx.lp
    T = w.steps
    net = p_ch - p_dis
    finite = np.isfinite(st.p_site_max_kw)
    if finite.any():
        idx = np.flatnonzero(finite)
        slack = ctx.slack("station_site_cap", (idx.size, T))
        lhs = net[idx] if slack is None else net[idx] - slack
        lp.add_constraints("station_site_cap", lhs, "<=", st.p_site_max_kw[idx, None])
    finite = np.isfinite(st.p_site_dis_max_kw) & (st.p_site_dis_max_kw < st.n_chargers * st.p_dis_max_kw)
    if finite.any():
        idx = np.flatnonzero(finite)
        lp.add_constraints("station_discharge_cap", p_dis[idx], "<=", st.p_site_dis_max_kw[idx, None])
    q = None
    if options.get("reactive"):
        s_max = np.where(st.p_dis_max_kw > 0, st.n_chargers * st.s_max_kva, 0.0)
        q = lp.add_variables("station_q", (st.n, T), -s_max[:, None], s_max[:, None],
                             description="reactive power injected by V2G inverters, kvar")
        idx = np.flatnonzero(s_max > 0)  # stations without V2G inverters keep Q = 0 and plain caps
        if idx.size:
            rows, bound = apparent_power_rows(net[idx], q[idx], s_max[idx, None], int(options["polygon_sides"]))
            lp.add_constraints("station_apparent_power", rows, "<=", bound[None])
        ctx.handles["station_q"] = q
    ctx.handles.update(station_p_ch=p_ch, station_p_dis=p_dis)
    ctx.inject("stations", st.bus, -net, q)

"""Plot of one adjustable-capacity curve (:mod:`optev.forecast.flex`): matplotlib, no pyplot state.

:func:`flex_figure` draws, for one scope and id of a :func:`~optev.forecast.flex.flex_curves`
table, three panels over the horizon:

1. **Power bounds** — the charging limit (expected, with the band between the ``low`` and
   ``high`` arrival cases, and the part of the EVs plugged in now), the discharging limit of the
   V2G opt-ins drawn below zero, and the uncontrolled reference with its band;
2. **Shed and raise** — the charging that can be dropped below the reference (with its band)
   and added above it, kW; on the right axis how long all charging can be held at zero from
   each step, h (expected, and the ``low`` case: what the lower arrival quantile guarantees);
3. **Energy window** — the cumulative energy the EVs can take from now on between its latest-
   and earliest-charging bounds, and the energy still needed by the EVs plugged in, kWh.

Powers switch to MW and energies to MWh above :data:`optev.report.plots.MW_ABOVE_KW`; times are in
the instance's zone. :func:`flex_png` returns the PNG bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from optev.forecast.flex import curve_rows, flex_headline
from optev.report.plots import BASELINE, CONTROLLED, _figure, _png, _power_scale, _step, _time_axis

CHARGE = CONTROLLED
DISCHARGE = "#ff7f0e"
SHED = "#d62728"
RAISE = "#2ca02c"
HOLD = "#000000"
ENERGY = "#9467bd"


def _stepped(times: pd.DatetimeIndex, values: np.ndarray) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """``times`` and ``values`` extended by one step, so that the last value holds for its step."""
    step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(minutes=15)
    return pd.DatetimeIndex(times.append(pd.DatetimeIndex([times[-1] + step]))), np.r_[values, values[-1:]]


def _band(ax: Any, times: pd.DatetimeIndex, low: np.ndarray, high: np.ndarray, color: str, label: str) -> None:
    """A piecewise-constant band between ``low`` and ``high``."""
    x, lo = _stepped(times, np.minimum(low, high))
    _, hi = _stepped(times, np.maximum(low, high))
    ax.fill_between(x, lo, hi, step="post", color=color, alpha=0.18, lw=0, label=label)


def _cases(rows: pd.DataFrame) -> tuple[pd.DatetimeIndex, dict[str, pd.DataFrame]]:
    by_case = {str(case): part.sort_values("time") for case, part in rows.groupby("case", sort=False)}
    return pd.DatetimeIndex(by_case["expected"]["time"]), by_case


def _band_text(table: pd.DataFrame) -> str:
    """``arrivals 5–95 %`` from the table's quantiles (``low–high`` when unknown)."""
    q = table.attrs.get("arrival_quantiles")
    if not q or len(q) != 2:
        return "arrivals low–high"
    return f"arrivals {100 * float(q[0]):g}–{100 * float(q[1]):g} %"


def _power_panel(ax: Any, times: pd.DatetimeIndex, c: dict[str, pd.DataFrame], k: float, unit: str,
                 band: str) -> None:
    def col(case: str, name: str, sign: float = 1.0) -> np.ndarray:
        return sign * c[case][name].to_numpy(float) / k

    _band(ax, times, col("low", "p_ch_max_kw"), col("high", "p_ch_max_kw"), CHARGE, f"charging limit, {band}")
    _step(ax, times, col("expected", "p_ch_max_kw"), color=CHARGE, lw=1.8, label="charging limit (expected)")
    _step(ax, times, col("plugged", "p_ch_max_kw"), color=CHARGE, lw=1.1, ls="--",
          label="charging limit, EVs plugged in now")
    _band(ax, times, col("low", "p_uncontrolled_kw"), col("high", "p_uncontrolled_kw"), BASELINE, "")
    _step(ax, times, col("expected", "p_uncontrolled_kw"), color=BASELINE, lw=1.6,
          label="uncontrolled reference (expected)")
    if (c["high"]["p_dis_max_kw"].to_numpy(float) > 0).any():
        _band(ax, times, col("low", "p_dis_max_kw", -1.0), col("high", "p_dis_max_kw", -1.0), DISCHARGE, "")
        _step(ax, times, col("expected", "p_dis_max_kw", -1.0), color=DISCHARGE, lw=1.6,
              label="V2G discharge limit (below 0)")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_ylabel(f"power ({unit})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=2)


def _shed_panel(ax: Any, times: pd.DatetimeIndex, c: dict[str, pd.DataFrame], k: float, unit: str,
                band: str) -> None:
    def col(case: str, name: str, scale: float = k) -> np.ndarray:
        return c[case][name].to_numpy(float) / scale

    _band(ax, times, col("low", "shed_kw"), col("high", "shed_kw"), SHED, f"shed, {band}")
    _step(ax, times, col("expected", "shed_kw"), color=SHED, lw=1.8, label="charging that can be shed (expected)")
    _step(ax, times, col("expected", "raise_kw"), color=RAISE, lw=1.4, label="charging that can be added (expected)")
    ax.set_ylabel(f"shed / raise ({unit})")
    ax.set_ylim(bottom=0.0)
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    held = _step(twin, times, col("expected", "shed_duration_h", 1.0), color=HOLD, lw=1.2, ls=":",
                 label="how long it can be shed (h, right axis)")
    held_low = _step(twin, times, col("low", "shed_duration_h", 1.0), color=HOLD, lw=0.8, ls="-.", alpha=0.6,
                     label="how long, low arrivals (h, right axis)")
    twin.set_ylabel("shed duration (h)")
    twin.set_ylim(bottom=0.0, top=max(float(c["high"]["shed_duration_h"].max()), 0.25) * 1.15)
    handles, labels = ax.get_legend_handles_labels()
    extra = [h for h in (held, held_low) if h is not None]
    ax.legend(handles + extra, labels + [h.get_label() for h in extra], loc="upper left", fontsize=8, ncol=2)


def _energy_panel(ax: Any, times: pd.DatetimeIndex, c: dict[str, pd.DataFrame]) -> None:
    lo = c["expected"]["e_min_kwh"].to_numpy(float)
    hi = c["expected"]["e_max_kwh"].to_numpy(float)
    need = c["expected"]["e_need_kwh"].to_numpy(float)
    k, unit = _power_scale(lo, hi, need)
    unit = "MWh" if unit == "MW" else "kWh"
    _band(ax, times, lo / k, hi / k, ENERGY, "energy window (expected): latest to earliest charging")
    _step(ax, times, lo / k, color=ENERGY, lw=1.2)
    _step(ax, times, hi / k, color=ENERGY, lw=1.2)
    _step(ax, times, c["low"]["e_max_kwh"].to_numpy(float) / k, color=ENERGY, lw=0.9, ls="--",
          label="earliest charging, low arrivals")
    _step(ax, times, need / k, color="black", lw=1.2, ls="-.", label="energy still needed by the EVs plugged in")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_ylabel(f"energy from now ({unit})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def flex_figure(table: pd.DataFrame, scope: str = "city", id: str | None = None) -> Figure:
    """The three-panel figure of one curve (module docstring).

    Parameters
    ----------
    table : DataFrame
        A :func:`optev.forecast.flex.flex_curves` table.
    scope : {"city", "region", "station"}
    id : str, optional
        Region or station id (default: the only id of the scope, the city).

    Raises
    ------
    OptionError
        Unknown scope or id (:func:`optev.forecast.flex.curve_rows`).
    """
    rows = curve_rows(table, scope, id)
    name = str(rows["id"].iloc[0])
    times, c = _cases(rows)
    k, unit = _power_scale(*(c[case][col].to_numpy(float) for case in ("high",)
                             for col in ("p_ch_max_kw", "p_dis_max_kw", "shed_kw")))
    fig, (ax1, ax2, ax3) = _figure(3, 10.5)
    head = flex_headline(table, scope, name)
    label = "city" if scope == "city" else f"{scope} {name}"
    at = times[0].strftime("%Y-%m-%d %H:%M") if len(times) else "?"
    band = _band_text(table)
    _power_panel(ax1, times, c, k, unit, band)
    ax1.set_title(f"Adjustable capacity of the {label} from {at} — power bounds")
    _shed_panel(ax2, times, c, k, unit, band)
    ax2.set_title(f"Shed potential: {head['shed_kw'] / k:,.2f} {unit} at {at[-5:]} for "
                  f"{head['shed_duration_h']:g} h (low arrivals: {head['shed_kw_low'] / k:,.2f} {unit} for "
                  f"{head['shed_duration_h_low']:g} h); largest {head['peak_shed_kw'] / k:,.2f} {unit} at "
                  f"{pd.Timestamp(head['peak_shed_time']).strftime('%H:%M')}")
    _energy_panel(ax3, times, c)
    ax3.set_title("Energy window of the cumulative charging from now")
    if len(times):
        _time_axis(ax3, times)
    return fig


def flex_png(table: pd.DataFrame, scope: str = "city", id: str | None = None) -> bytes:
    """:func:`flex_figure` as PNG bytes."""
    return _png(flex_figure(table, scope, id))

"""PNG plots of a closed-loop run (matplotlib, Agg; no pyplot global state).

:func:`render` draws, from the frames of a :class:`~optev.report.run.RunResult` and its
summary:

=====================  ===========================================================================
``feeder_load.png``    substation import (AC power flow of the applied steps) and EV load,
                       controlled vs the uncontrolled baseline, with the grid price
``voltage.png``        lowest and highest bus voltage of every step (AC), controlled vs
                       uncontrolled, with the feeder's voltage limits
``v2g_power.png``      stations with V2G chargers: net power, controlled vs uncontrolled, with
                       the grid price; V2G discharge power by station (the largest stacked)
``soc_departure.png``  distribution of the SOC at departure of the sessions that left,
                       controlled vs uncontrolled, and their targets
=====================  ===========================================================================

Times are shown in the instance's time zone; powers in kW (MW when above
:data:`MW_ABOVE_KW`). A step whose AC power flow did not converge has no voltage: it shows
as a gap, and the plot says how many there are. :func:`save` writes the rendered bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from optev.summaries import RunSummary

PLOTS = ("feeder_load.png", "voltage.png", "v2g_power.png", "soc_departure.png")
"""File names, in the order they are drawn."""

MW_ABOVE_KW = 5000.0
"""Power axes switch to MW when the largest value exceeds this, kW."""

TOP_STATIONS = 6
"""Stations shown individually in the V2G plot (the others are summed)."""

DPI = 110
CONTROLLED = "#1f77b4"
BASELINE = "#7f7f7f"
PRICE = "#d62728"


def _figure(rows: int = 1, height: float = 4.2) -> tuple[Any, Any]:
    fig = Figure(figsize=(10, height), layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    return fig, axes


def _times(frame: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(frame["time"])


def _time_axis(ax: Any, times: pd.DatetimeIndex) -> None:
    tz = times.tz
    span_h = (times[-1] - times[0]).total_seconds() / 3600.0 if len(times) > 1 else 1.0
    if span_h <= 2:
        ax.xaxis.set_major_locator(mdates.MinuteLocator(byminute=range(0, 60, 15 if span_h > 1 else 10), tz=tz))
    else:
        hours = 1 if span_h <= 6 else (2 if span_h <= 12 else 3)
        ax.xaxis.set_major_locator(mdates.HourLocator(byhour=range(0, 24, hours), tz=tz))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=tz))
    ax.set_xlabel(f"time ({tz})" if tz is not None else "time")


def _power_scale(*series: np.ndarray) -> tuple[float, str]:
    finite = [np.nanmax(np.abs(s)) for s in series if np.size(s) and np.isfinite(s).any()]
    top = max(finite) if finite else 0.0
    return (1000.0, "MW") if top > MW_ABOVE_KW else (1.0, "kW")


def _stepped(times: pd.DatetimeIndex, values: np.ndarray) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """``times`` and ``values`` extended by one step, so that the last value holds for its step."""
    step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(minutes=15)
    return pd.DatetimeIndex(times.append(pd.DatetimeIndex([times[-1] + step]))), np.r_[values, values[-1:]]


def _step(ax: Any, times: pd.DatetimeIndex, values: np.ndarray, **kw: Any) -> Any:
    """A piecewise-constant series: each value holds for its step."""
    if len(times) == 0:
        return None
    x, y = _stepped(times, values)
    return ax.step(x, y, where="post", **kw)[0]


def _price_axis(ax: Any, times: pd.DatetimeIndex, price: np.ndarray | None) -> Any:
    if price is None or not np.isfinite(price).any():
        return None
    twin = ax.twinx()
    line = _step(twin, times, price, color=PRICE, lw=1.0, ls=":", label="grid price (right)")
    twin.set_ylabel("grid price (currency/kWh)", color=PRICE)
    twin.tick_params(axis="y", colors=PRICE)
    twin.set_ylim(bottom=0.0, top=float(np.nanmax(price)) * 1.25 or 1.0)
    return line


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _title(summary: RunSummary) -> str:
    return f"{summary.get('instance')} — {summary.get('formulation')}"


def feeder_load(tables: Mapping[str, pd.DataFrame], summary: RunSummary) -> Any:
    """Substation import and EV load, controlled vs uncontrolled (a matplotlib Figure)."""
    steps, base = tables["steps"], tables["baseline_steps"]
    times = _times(steps)
    imp, b_imp = steps["import_kw"].to_numpy(float), base["import_kw"].to_numpy(float)
    ev, b_ev = steps["ev_kw"].to_numpy(float), base["ev_kw"].to_numpy(float)
    fig, (ax1, ax2) = _figure(2, 6.5)
    k, unit = _power_scale(imp, b_imp)
    _step(ax1, times, b_imp / k, color=BASELINE, lw=1.4, ls="--", label="uncontrolled")
    _step(ax1, times, imp / k, color=CONTROLLED, lw=1.8, label=f"controlled ({summary.get('formulation')})")
    for values, color, name in ((b_imp, BASELINE, "uncontrolled"), (imp, CONTROLLED, "controlled")):
        if np.isfinite(values).any():
            i = int(np.nanargmax(values))
            ax1.plot(times[i], values[i] / k, "o", color=color, ms=6,
                     label=f"{name} peak {values[i] / k:,.2f} {unit} at {times[i].strftime('%H:%M')}")
    ax1.set_ylabel(f"substation import ({unit})")
    ax1.set_title(f"Feeder load vs uncontrolled charging — {_title(summary)}")
    ax1.grid(alpha=0.3)
    ax1.legend(loc="upper left", fontsize=8)
    k2, unit2 = _power_scale(ev, b_ev)
    _step(ax2, times, b_ev / k2, color=BASELINE, lw=1.4, ls="--", label="uncontrolled EV load")
    _step(ax2, times, ev / k2, color=CONTROLLED, lw=1.8, label="controlled EV load (charging +, V2G −)")
    ax2.axhline(0.0, color="black", lw=0.6)
    ax2.set_ylabel(f"EV load ({unit2})")
    ax2.set_title("EV charging load of all stations")
    ax2.grid(alpha=0.3)
    price = steps["price_buy_per_kwh"].to_numpy(float) if "price_buy_per_kwh" in steps else None
    pl = _price_axis(ax2, times, price)
    handles, labels = ax2.get_legend_handles_labels()
    if pl is not None:
        handles, labels = handles + [pl], labels + [pl.get_label()]
    ax2.legend(handles, labels, loc="upper left", fontsize=8)
    _time_axis(ax2, times)
    return fig


def voltage(tables: Mapping[str, pd.DataFrame], summary: RunSummary) -> Any:
    """Lowest and highest bus voltage per step (AC check), controlled vs uncontrolled."""
    steps, base = tables["steps"], tables["baseline_steps"]
    times = _times(steps)
    fig, (ax,) = _figure(1, 4.6)
    _step(ax, times, base["vm_min_pu"].to_numpy(float), color=BASELINE, lw=1.3, ls="--", label="uncontrolled min")
    _step(ax, times, base["vm_max_pu"].to_numpy(float), color=BASELINE, lw=1.3, ls="-.", label="uncontrolled max")
    _step(ax, times, steps["vm_min_pu"].to_numpy(float), color=CONTROLLED, lw=1.8, label="controlled min")
    _step(ax, times, steps["vm_max_pu"].to_numpy(float), color="#2ca02c", lw=1.8, label="controlled max")
    limits = summary.get("voltage_limits_pu")
    if limits:
        for v, name in zip(limits, ("lower limit", "upper limit")):
            ax.axhline(v, color="black", lw=0.9, ls=":", label=f"{name} {v:g} p.u.")
    ax.set_ylabel("bus voltage magnitude (p.u.)")
    gaps = int(steps["vm_min_pu"].isna().sum())
    b_gaps = int(base["vm_min_pu"].isna().sum())
    title = f"Lowest and highest bus voltage (AC power flow) — {_title(summary)}"
    ax.set_title(title)
    if gaps or b_gaps:
        ax.text(0.99, 0.02, f"AC power flow did not converge: {gaps} controlled, {b_gaps} uncontrolled step(s) "
                            "(gaps)", transform=ax.transAxes, ha="right", va="bottom", fontsize=8)
    if not np.isfinite(steps["vm_min_pu"].to_numpy(float)).any():
        ax.text(0.5, 0.5, "no AC check in this run", transform=ax.transAxes, ha="center", va="center")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8, ncol=2)
    _time_axis(ax, times)
    return fig


def v2g_power(tables: Mapping[str, pd.DataFrame], summary: RunSummary) -> Any:
    """Stations with V2G chargers: their net power (controlled vs uncontrolled) and the V2G
    discharge power of each (stacked, largest first)."""
    steps, st, base = tables["steps"], tables["station"], tables["baseline_station"]
    times = _times(steps)
    listed = summary.get("v2g_stations")
    v2g = set(st["station_id"]) if listed is None else set(listed)
    fig, (ax1, ax2) = _figure(2, 6.5)
    dt_h = float(summary.get("step_minutes") or 15.0) / 60.0

    def net(frame: pd.DataFrame) -> np.ndarray:
        sel = frame[frame["station_id"].isin(v2g)]
        by_t = (sel["p_ch_kw"] - sel["p_dis_kw"]).groupby(sel["time"]).sum()
        return by_t.reindex(times, fill_value=0.0).to_numpy(float)

    ctl, unc = net(st), net(base)
    k, unit = _power_scale(ctl, unc)
    _step(ax1, times, unc / k, color=BASELINE, lw=1.4, ls="--", label="uncontrolled")
    _step(ax1, times, ctl / k, color=CONTROLLED, lw=1.8, label="controlled")
    ax1.axhline(0.0, color="black", lw=0.6)
    ax1.set_ylabel(f"net power ({unit})")
    ax1.set_title(f"Stations with V2G chargers ({len(v2g)}): net power, charging + / V2G − — {_title(summary)}")
    ax1.grid(alpha=0.3)
    price = steps["price_buy_per_kwh"].to_numpy(float) if "price_buy_per_kwh" in steps else None
    pl = _price_axis(ax1, times, price)
    handles, labels_ = ax1.get_legend_handles_labels()
    if pl is not None:
        handles, labels_ = handles + [pl], labels_ + [pl.get_label()]
    ax1.legend(handles, labels_, loc="upper left", fontsize=8)

    wide = st.pivot_table(index="time", columns="station_id", values="p_dis_kw", aggfunc="sum", fill_value=0.0)
    wide = wide.reindex(times, fill_value=0.0)
    energy = wide.sum(axis=0).sort_values(ascending=False)
    energy = energy[energy > 0]
    total_kwh = float(energy.sum() * dt_h)
    if len(energy):
        top = list(energy.index[:TOP_STATIONS])
        cols = [wide[s].to_numpy(float) for s in top]
        labels = [f"{s} ({energy[s] * dt_h:,.1f} kWh)" for s in top]
        rest = energy.index[TOP_STATIONS:]
        if len(rest):
            cols.append(wide[list(rest)].sum(axis=1).to_numpy(float))
            labels.append(f"{len(rest)} other station(s) ({energy[rest].sum() * dt_h:,.1f} kWh)")
        k2, unit2 = _power_scale(np.sum(cols, axis=0))
        step = times[1] - times[0] if len(times) > 1 else pd.Timedelta(minutes=15)
        x = times.append(pd.DatetimeIndex([times[-1] + step]))
        ys = [np.r_[c, c[-1:]] / k2 for c in cols]
        ax2.stackplot(x, *ys, labels=labels, step="post", alpha=0.85)
        ax2.legend(loc="upper left", fontsize=8)
    else:
        unit2 = "kW"
        ax2.text(0.5, 0.5, "no V2G discharge in this run", transform=ax2.transAxes, ha="center", va="center")
        ax2.set_ylim(0.0, 1.0)
    ax2.set_ylabel(f"V2G discharge ({unit2})")
    ax2.set_title(f"V2G discharge power by station: {total_kwh:,.1f} kWh in total")
    ax2.grid(alpha=0.3)
    _time_axis(ax2, times)
    return fig


def soc_departure(tables: Mapping[str, pd.DataFrame], summary: RunSummary) -> Any:
    """Distribution of the SOC at departure, controlled vs uncontrolled, with the targets."""
    fig, (ax,) = _figure(1, 4.6)
    bins = np.linspace(0.0, 1.0, 21)
    shown = False
    for name, frame, color, style in (("uncontrolled", tables["baseline_sessions"], BASELINE, "--"),
                                      ("controlled", tables["sessions"], CONTROLLED, "-")):
        left = frame[~frame["censored"].astype(bool)]
        soc = left["soc_departure"].to_numpy(float)
        soc = soc[np.isfinite(soc)]
        if not soc.size:
            continue
        short = int((left["shortfall_kwh"] > 0).sum())
        ax.hist(np.clip(soc, 0.0, 1.0), bins=bins, histtype="step", lw=1.8, ls=style, color=color,
                label=f"{name}: {soc.size} sessions, median {np.median(soc):.2f}, {short} short of target")
        shown = True
    controlled = tables["sessions"]
    targets = controlled[~controlled["censored"].astype(bool)]["soc_target"].to_numpy(float)
    if targets.size:
        ax.hist(np.clip(targets, 0.0, 1.0), bins=bins, histtype="stepfilled", alpha=0.15, color="#ff7f0e",
                label="targets of the controlled sessions")
    if not shown:
        ax.text(0.5, 0.5, "no session left during the run", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("state of charge at departure (fraction of battery capacity)")
    ax.set_ylabel("sessions")
    ax.set_title(f"SOC at departure — {_title(summary)}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def service_response(tables: Mapping[str, pd.DataFrame], summary: RunSummary) -> Any:
    """A grid service: the participants' realised power against the baseline and the limit the
    controller was given, over the day with the service window shaded (runs with a service).

    A frequency product (a ``p_tolerance_kw`` column) gets the command and the response with the
    tolerance band ±δ around the command, and a second panel with the tracking error
    :math:`P_{act} - P_{cmd}` against ±δ, where A.4's η counts the samples inside the band.
    """
    series = tables["service_series"]
    times = _times(series)
    base = series["p_base_kw"].to_numpy(float)
    act = series["p_act_kw"].to_numpy(float)
    limit = series["p_limit_kw"].to_numpy(float)
    service = summary.get("service", {})
    metrics = summary.get("appendix_a", {})
    tracking = "p_tolerance_kw" in series and len(times) > 0
    fig, axes = _figure(2, 6.4) if tracking else _figure(1, 4.6)
    ax = axes[0]
    k, unit = _power_scale(act, base)
    inside = np.isfinite(base)
    if inside.any() and not tracking:
        ax.fill_between(times, 0, 1, where=inside, step="post", color="0.92", transform=ax.get_xaxis_transform(),
                        label="service window")
    act_label, base_label, axis = _SERIES_LABELS.get(str(service.get("product")), _SERIES_LABELS["default"])
    if tracking:
        _tolerance_band(ax, times, base / k, series["p_tolerance_kw"].to_numpy(float) / k, unit)
    _step(ax, times, act / k, color=CONTROLLED, lw=1.8, label=act_label)
    _step(ax, times, base / k, color=BASELINE, lw=1.4, ls="--",
          label=base_label.format(baseline=service.get("baseline")))
    if np.isfinite(limit).any():
        _step(ax, times, limit / k, color="#d62728", lw=1.0, ls=":", label="limit given to the controller")
    shown = {k2: v for k2, v in metrics.items() if v is not None}
    text = ", ".join(f"{name} {value:,.1f}" for name, value in shown.items())
    ax.set_title(f"{service.get('product', 'service')} {service.get('id', '')}: {service.get('status', '')} — {text}",
                 fontsize=9)
    ax.set_ylabel(f"{axis} ({unit})" if axis != "reactive power" else f"{axis} ({unit.replace('W', 'var')})")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    if tracking:
        _tracking_error(axes[1], times, act - base, series["p_tolerance_kw"].to_numpy(float))
    _time_axis(axes[-1], times)
    return fig


def _tolerance_band(ax: Any, times: pd.DatetimeIndex, centre: np.ndarray, delta: np.ndarray, unit: str) -> None:
    """Shade ``centre`` ± ``delta`` (same unit) as A.4's tolerance band."""
    (x, lo), (_, hi) = _stepped(times, centre - delta), _stepped(times, centre + delta)
    ax.fill_between(x, lo, hi, step="post", color=BASELINE, alpha=0.3, lw=0,
                    label=f"tolerance ±δ = ±{np.nanmax(delta):,.3g} {unit} (A.4)")


def _tracking_error(ax: Any, times: pd.DatetimeIndex, error_kw: np.ndarray, delta_kw: np.ndarray) -> None:
    """Tracking error per sample against the band ±δ, kW; samples outside the band marked."""
    _tolerance_band(ax, times, np.zeros_like(error_kw), delta_kw, "kW")
    _step(ax, times, error_kw, color=CONTROLLED, lw=1.0, label="response − command")
    out = np.abs(error_kw) > delta_kw
    if out.any():
        ax.plot(times[out], error_kw[out], "o", ms=3, color="#d62728",
                label=f"outside the band: {int(out.sum())} of {out.size} samples")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_ylabel("tracking error (kW)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


_SERIES_LABELS = {
    "default": ("participants' power (realised)", "baseline ({baseline})", "net EV power"),
    "frequency_primary": ("fleet power (realised, 4-s samples)", "command", "net EV power"),
    "frequency_secondary": ("fleet power (realised, 4-s samples)", "command", "net EV power"),
    "renewable_smoothing": ("PV + wind − EV (realised)", "PV + wind available", "power"),
    "voltage_support": ("EV chargers' reactive power (injection +)", "service window", "reactive power"),
}
"""(realised series, reference series, axis) labels of :func:`service_response` by product."""


_DRAW = {"feeder_load.png": feeder_load, "voltage.png": voltage, "v2g_power.png": v2g_power,
         "soc_departure.png": soc_departure, "service_response.png": service_response}


def render(tables: Mapping[str, pd.DataFrame], summary: RunSummary) -> dict[str, bytes]:
    """Every plot of :data:`PLOTS` as PNG bytes, by file name.

    Parameters
    ----------
    tables : mapping of DataFrame
        ``steps``, ``baseline_steps``, ``station``, ``baseline_station``, ``sessions``, ``baseline_sessions``
        (:data:`optev.report.run.RUN_TABLES`).
    summary : mapping
        The run summary (``instance``, ``formulation``, ``step_minutes``, ``voltage_limits_pu``,
        ``v2g_stations``; ``service`` and ``appendix_a`` with a service).

    A run with a grid service (a ``service_series`` table) also gets ``service_response.png``.
    """
    served = "service_series" in tables and len(tables["service_series"])  # a refused service has no series
    names = [*PLOTS, *(["service_response.png"] if served else [])]
    return {name: _png(_DRAW[name](tables, summary)) for name in names}


def save(rendered: Mapping[str, bytes], out_dir: str | Path) -> list[Path]:
    """Write rendered PNG bytes into ``out_dir`` (created); returns the paths written."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in rendered.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths

r"""Metering from 5-s charger telemetry (R6.5.2, R6.1.4) instead of a run's per-step mean power.

Input
    A table of charger samples as :mod:`optev.mobility.telemetry` writes them (Parquet, or CSV):
    ``charger_id, station_id, power_kw`` (grid side, charging positive), ``ev_id`` (the EV plugged
    in, empty when none) and the sample instant, either ``time`` (an ISO timestamp with its UTC
    offset) or ``time_s`` (seconds after an origin the caller gives: for ``optev simulate
    --telemetry``, the instance start). Every value is validated with the table, row and column
    named.

Energy of a sample
    A sample holds for its period :math:`\tau` (5 s unless told): import
    :math:`\max(p, 0)\,\tau/3600` and export :math:`\max(-p, 0)\,\tau/3600` kWh, kept apart as the
    meter's two registers (:mod:`optev.settle.meter`).

Sessions and steps
    Each sample belongs to the run's session of the same EV at the same station whose steps
    cover its instant (first step start ≤ t < last step end); its energy is summed into that
    session's run step, and the per-step energies are metered exactly as a run's
    (:func:`optev.settle.meter.meter_energy`: carry-forward whole Wh, tariff periods split in
    proportion to time). A sample with power flowing that no session of the run covers — an EV
    the run does not know, a charger without an EV, an instant outside the EV's sessions — is an
    error: energy nobody can be billed for is never dropped silently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.mobility.telemetry import TELEMETRY_PERIOD_S
from optev.settle.meter import Readings, meter_energy
from optev.settle.run import RunTables

REQUIRED = ("charger_id", "station_id", "power_kw", "ev_id")
"""Columns a telemetry table must have (besides ``time`` or ``time_s``)."""


def read_telemetry(path: str | Path, origin: pd.Timestamp | None = None) -> pd.DataFrame:
    """The samples of a telemetry file (Parquet or CSV; module docstring) with a tz-aware ``time``,
    validated; ``origin`` dates a ``time_s`` column."""
    p = Path(path)
    try:
        frame = pd.read_parquet(p) if p.suffix.lower() == ".parquet" else pd.read_csv(p)
    except FileNotFoundError:
        raise DataError(f"{p}: no such telemetry file") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot be read as telemetry ({exc})") from None
    return validated(frame, str(p), origin)


def validated(frame: pd.DataFrame, table: str, origin: pd.Timestamp | None = None) -> pd.DataFrame:
    """Telemetry samples checked (columns, finite power, instants) with a tz-aware ``time``."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}", table=table)
    power = pd.to_numeric(frame["power_kw"], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(power))
    if bad.size:
        raise DataError("not a finite power", table=table, row=int(bad[0]), column="power_kw")
    if "time" in frame.columns:
        time = pd.to_datetime(frame["time"].astype(str), errors="coerce", format="ISO8601")
        column = "time"
        if time.notna().all() and time.dt.tz is None:
            raise DataError("sample times need a UTC offset", table=table, row=0, column="time")
    elif "time_s" in frame.columns:
        if origin is None:
            raise DataError("time_s counts from an origin: give it (optev settle --telemetry-origin)", table=table)
        secs = pd.to_numeric(frame["time_s"], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~np.isfinite(secs) | (secs < 0))
        if bad.size:
            raise DataError("not a time in seconds >= 0", table=table, row=int(bad[0]), column="time_s")
        time = pd.Series(origin + pd.to_timedelta(secs, unit="s"))
        column = "time_s"
    else:
        raise DataError("missing column time (or time_s)", table=table)
    bad = np.flatnonzero(time.isna().to_numpy())
    if bad.size:
        raise DataError("not a timestamp", table=table, row=int(bad[0]), column=column)
    ev = frame["ev_id"].astype("string").to_numpy(object)
    return pd.DataFrame({"charger_id": frame["charger_id"].astype(str).to_numpy(object),
                         "station_id": frame["station_id"].astype(str).to_numpy(object),
                         "time": pd.DatetimeIndex(time), "power_kw": power,
                         "ev_id": np.where(pd.isna(ev), "", ev).astype(object)})


def telemetry_readings(samples: pd.DataFrame, tables: RunTables,
                       period_s: float = TELEMETRY_PERIOD_S) -> tuple[Readings, int]:
    """Meter readings of the run's sessions from telemetry ``samples`` (:func:`validated`; module
    docstring) and the number of samples used."""
    if not 0 < period_s <= 60:
        raise DataError(f"a telemetry period is in (0, 60] s, got {period_s!r}")
    flowing = samples[samples["power_kw"] != 0.0].reset_index(drop=True)
    session = _sessions_at(flowing, tables)
    step_start = _step_of(flowing["time"], tables)
    hours = period_s / 3600.0
    p = flowing["power_kw"].to_numpy(float)
    frame = pd.DataFrame({"session_id": session, "time": step_start,
                          "import_kwh": np.maximum(p, 0.0) * hours, "export_kwh": np.maximum(-p, 0.0) * hours})
    per_step = frame.groupby(["session_id", "time"], sort=True, observed=True)[["import_kwh", "export_kwh"]].sum()
    per_step = per_step.reset_index()
    who = tables.ev.drop_duplicates("session_id").set_index("session_id")[["ev_id", "station_id"]]
    per_step[["ev_id", "station_id"]] = who.reindex(per_step["session_id"]).to_numpy(object)
    readings = meter_energy(per_step, tables.step, per_step["import_kwh"].to_numpy(float),
                            per_step["export_kwh"].to_numpy(float))
    return readings, int(len(flowing))


def _sessions_at(samples: pd.DataFrame, tables: RunTables) -> np.ndarray:
    """The run session of each sample (module docstring), or a :class:`DataError` naming the first
    sample no session covers."""
    ev = tables.ev
    spans = (ev.assign(time=pd.DatetimeIndex(ev["time"]))
             .groupby("session_id", sort=False).agg(ev_id=("ev_id", "first"), station_id=("station_id", "first"),
                                                     t0=("time", "min"), t1=("time", "max")))
    spans["t1"] = spans["t1"] + tables.step
    spans = spans.reset_index().astype({"ev_id": str, "station_id": str})
    left = samples.assign(row=np.arange(len(samples)), t=samples["time"].dt.tz_convert("UTC"))
    right = spans.assign(t=spans["t0"].dt.tz_convert("UTC"), t1=spans["t1"].dt.tz_convert("UTC"))
    found = pd.merge_asof(left.sort_values("t"), right.sort_values("t")[["t", "t1", "ev_id", "station_id", "session_id"]],
                          on="t", by=["ev_id", "station_id"], direction="backward").sort_values("row")
    ok = found["session_id"].notna().to_numpy() & (found["t"] < found["t1"]).to_numpy()
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        s = samples.iloc[i]
        who = f"EV {s['ev_id']}" if s["ev_id"] else "no EV"
        raise DataError(f"telemetry: charger {s['charger_id']} at station {s['station_id']} drew "
                        f"{s['power_kw']:g} kW with {who} at {s['time'].isoformat()}, in no session of the run")
    return found["session_id"].to_numpy(object)


def _step_of(times: pd.Series, tables: RunTables) -> pd.DatetimeIndex:
    """The start of the run step holding each instant (the run's steps, ``steps.csv``)."""
    grid = pd.DatetimeIndex(tables.steps["time"]).sort_values()
    at = pd.DatetimeIndex(times)
    k = grid.searchsorted(at, side="right") - 1
    outside = (k < 0) | (at >= grid[-1] + tables.step)
    if outside.any():
        raise DataError(f"telemetry: a sample at {at[np.flatnonzero(outside)[0]].isoformat()} lies outside the run's "
                        "steps")
    return grid[k]

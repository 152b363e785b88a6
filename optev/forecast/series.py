r"""Charging sessions → aggregate series per time bin: the targets of the forecasters (R6.2.1).

Sessions
    :func:`read_sessions` reads either a session table in the format of ACN-Data
    (``../shared/acn/sessions/*.csv.gz``: ``arrival``, ``departure``, ``delivered_energy (kWh)``,
    ``station_id``; timestamps with UTC offsets) or any input :func:`optev.io.read` reads that
    holds a ``sessions`` table (an optev instance folder, a V2Sim case). Either becomes a
    :class:`Sessions` table: ``arrival`` and ``departure`` on the site's local wall clock
    (naive timestamps: behaviour follows the local clock, daylight saving included), the
    energy the session drew from the grid ``energy_kwh`` and its charging power limit
    ``p_max_kw``.

    * ACN: the energy is ``delivered_energy``; the power limit is ``power_kw`` (default
      6.6 kW, the garages' 208 V × 32 A chargers), or the session's mean power over its stay
      where that is higher (the sessions of a DC fast charger). The local clock is each row's
      own UTC offset unless a time zone is given.
    * optev: the energy is the battery energy from ``soc_arrival`` to ``soc_target`` over the
      on-board charging efficiency, :math:`E = (s^{tgt} - s^{arr}) C / \eta^{ch}` (kWh), and
      the limit is the smaller of the EV's and the station's charger power (AC chargers use
      the EV's AC limit).

Aggregate uncontrolled load (:func:`aggregate_load`)
    Every session charges at its limit from arrival until its energy is in or it leaves:
    :math:`p_s(t) = \bar P_s` for :math:`a_s \le t < e_s`,
    :math:`e_s = \min(d_s,\ a_s + E_s/\bar P_s)`. The mean power of bin
    :math:`[b, b + \Delta)` is :math:`(G(b + \Delta) - G(b))/\Delta` with the energy drawn by
    time t, :math:`G(t) = \sum_s \bar P_s\,(\min(\max(t, a_s), e_s) - a_s)`, evaluated for
    all bin edges at once from sorted start and end times and cumulative sums
    (:math:`O((S + B)\log S)`). The ACN garages ran adaptive scheduling, so this is the load the
    same sessions would have drawn uncontrolled, not the metered load.

Arrivals (:func:`arrival_series`)
    The number of sessions arriving in each bin (``arrivals``) and the energy they need
    (``arrival_energy``, kWh).

Coverage
    A bin is *observed* when it lies in a day covered by the data: from the day of the first
    arrival to the day of the last arrival of each input file. Bins between files (the gaps
    of the ACN windows) are NaN, never zero: nobody knows what happened there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from optev.blocks.window import instance_origin
from optev.data.battery import pair_limits
from optev.data.instance import Instance
from optev.errors import DataError
from optev.hierarchy.regions import split_regions
from optev.io import read

ACN_COLUMNS = ("arrival", "departure", "delivered_energy (kWh)", "station_id")
"""Columns an ACN-Data session table must have."""

ACN_POWER_KW = 6.6
"""Charging power limit of an ACN session, kW (208 V × 32 A; ``../shared/acn/README.md``)."""

TARGETS = ("load", "arrivals", "arrival_energy")
"""Series :func:`target_series` builds: mean uncontrolled charging power (kW), arrivals per bin,
energy needed by the arrivals of a bin (kWh)."""

MAX_SESSION_DAYS = 7.0
"""A session longer than this is a unit or data mistake (ACN sessions last hours)."""


@dataclass
class Sessions:
    """Sessions on the local wall clock.

    Attributes
    ----------
    table : DataFrame
        ``arrival``, ``departure`` (naive local timestamps), ``energy_kwh``, ``p_max_kw``,
        ``station_id``.
    covered : list of (Timestamp, Timestamp)
        Local days the data covers, [start, end) per input file.
    country : str or None
        Holiday calendar of the site (``"US"``, ``"CN"``; None: none known).
    source : str
        What was read.
    """

    table: pd.DataFrame
    covered: list[tuple[pd.Timestamp, pd.Timestamp]]
    country: str | None
    source: str


def read_sessions(paths: Sequence[str | Path], *, power_kw: float = ACN_POWER_KW, timezone: str | None = None,
                  country: str | None = "auto") -> Sessions:
    """Read one or more session tables (module docstring) into one :class:`Sessions`.

    ``country="auto"`` takes the US calendar for ACN tables and the Chinese one for optev
    instances whose time zone is in China; None or ``"none"``: no holidays.
    """
    if not paths:
        raise DataError("no session table given")
    if not (np.isfinite(power_kw) and power_kw > 0):
        raise DataError(f"charging power must be a positive number of kW, got {power_kw!r}")
    parts, covered, kinds = [], [], set()
    for path in paths:
        p = Path(path)
        zone_kind: str | None
        if p.is_file() and (p.name.endswith(".csv") or p.name.endswith(".csv.gz")):
            frame, zone_kind = _read_acn(p, power_kw, timezone), "US"
        else:
            frame, zone_kind = _read_optev(p, timezone)
        if not len(frame):
            raise DataError("no sessions", table=str(p))
        parts.append(frame)
        kinds.add(zone_kind)
        covered.append((frame["arrival"].min().normalize(), frame["arrival"].max().normalize() + pd.Timedelta(days=1)))
    table = pd.concat(parts, ignore_index=True).sort_values("arrival", kind="stable").reset_index(drop=True)
    if country == "auto":
        country = kinds.pop() if len(kinds) == 1 else None
    elif country in (None, "none"):
        country = None
    return Sessions(table, _merge(covered), country, ", ".join(str(p) for p in paths))


def select_stations(sessions: Sessions, stations: Sequence[str]) -> Sessions:
    """The sessions of ``stations`` only (a station or region target); the covered days stay the
    data's (a station with no session on a covered day drew nothing that day)."""
    wanted = {str(s) for s in stations}
    present = set(sessions.table["station_id"].astype(str))
    unknown = sorted(wanted - present)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise DataError(f"no session at station(s) {shown} in {sessions.source}")
    keep = sessions.table["station_id"].astype(str).isin(wanted).to_numpy()
    return Sessions(sessions.table.loc[keep].reset_index(drop=True), sessions.covered, sessions.country,
                    f"{sessions.source} (stations {', '.join(sorted(wanted)[:5])}{' ...' if len(wanted) > 5 else ''})")


def region_station_ids(path: str | Path, region: str) -> list[str]:
    """Stations of region ``region`` of an optev input (:func:`optev.hierarchy.regions.split_regions`,
    one region per radial feeder)."""
    regions = split_regions(read(str(path)))
    for r in regions:
        if r.region_id == region:
            return [str(s) for s in r.station_ids]
    raise DataError(f"unknown region {region!r}; regions: {', '.join(r.region_id for r in regions)}")


def _merge(spans: list[tuple[pd.Timestamp, pd.Timestamp]]) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    out: list[tuple[pd.Timestamp, pd.Timestamp]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _local_clock(text: pd.Series, timezone: str | None, table: str, column: str) -> pd.Series:
    """Naive local timestamps of ISO strings: each row's own UTC offset, or ``timezone``."""
    raw = text.astype(str).str.strip()
    stamps = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    bad = np.flatnonzero(stamps.isna().to_numpy())
    if bad.size:
        raise DataError("not a timestamp", table=table, row=int(bad[0]), column=column)
    if timezone is not None:
        try:
            return stamps.dt.tz_convert(timezone).dt.tz_localize(None)
        except Exception as exc:  # unknown zone names raise several types
            raise DataError(f"unknown time zone {timezone!r} ({exc})") from None
    offset = raw.str.extract(r"([+-]\d\d):?(\d\d)$")
    has = offset[0].notna().to_numpy()
    minutes = np.zeros(len(raw))
    sign = np.where(offset[0].fillna("+00").str[0].to_numpy(object) == "-", -1.0, 1.0)
    minutes[has] = sign[has] * (np.abs(offset[0][has].astype(float).to_numpy()) * 60.0
                                + offset[1][has].astype(float).to_numpy())
    local = stamps.dt.tz_localize(None) + pd.to_timedelta(minutes, unit="min")
    return local


def _read_acn(path: Path, power_kw: float, timezone: str | None) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, dtype={"station_id": str})
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    missing = [c for c in ACN_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)} (an ACN-Data session table has "
                        f"{', '.join(ACN_COLUMNS)})", table=str(path))
    arrival = _local_clock(raw["arrival"], timezone, str(path), "arrival")
    departure = _local_clock(raw["departure"], timezone, str(path), "departure")
    energy = pd.to_numeric(raw["delivered_energy (kWh)"], errors="coerce").to_numpy(float)
    stay_h = (departure - arrival).dt.total_seconds().to_numpy(float) / 3600.0
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = np.where(stay_h > 0, energy / stay_h, 0.0)  # a DC charger's session: faster than power_kw
    frame = pd.DataFrame({"arrival": arrival, "departure": departure, "energy_kwh": energy,
                          "p_max_kw": np.fmax(power_kw, needed), "station_id": raw["station_id"].astype(str)})
    _validate(frame, str(path), "delivered_energy (kWh)")
    return frame


def _read_optev(path: Path, timezone: str | None) -> tuple[pd.DataFrame, str | None]:
    inst = read(str(path))
    if not len(inst.sessions):
        raise DataError("the input has no sessions table (run `optev generate` or give ACN sessions)",
                        table=str(path))
    origin = instance_origin(inst)
    start = origin.tz_convert(timezone) if timezone is not None and origin.tz is not None else origin
    frame = instance_frame(inst, inst.sessions, start.tz_localize(None) if start.tz is not None else start)
    _validate(frame, str(path), "soc_target")
    return frame, instance_country(inst)


def instance_country(inst: Instance) -> str | None:
    """``"CN"`` for an instance whose time zone is in China, else None (no holiday calendar)."""
    zone = instance_origin(inst).tz
    name = str(zone) if zone is not None else ""
    return "CN" if name.startswith("Asia/") and name.split("/")[1] in CHINA_ZONES else None


CHINA_ZONES = ("Shanghai", "Chongqing", "Chungking", "Harbin", "Urumqi", "Kashgar")
"""IANA zones of mainland China (``Asia/...``)."""


def instance_frame(inst: Instance, sessions: pd.DataFrame, base: pd.Timestamp,
                   energy_kwh: np.ndarray | None = None) -> pd.DataFrame:
    """Sessions of an optev instance on the local clock from ``base`` (naive): times from
    ``arrival_s``/``departure_s``, the power limit of each EV–charger pair
    (:func:`optev.data.battery.pair_limits`) and the energy ``energy_kwh`` (default: the battery
    energy from arrival to target SOC over the pair's charging efficiency, module docstring)."""
    vt = inst.vehicle_types.set_index("vtype_id")
    ev_type = inst.evs.set_index("ev_id")["vtype_id"].reindex(sessions["ev_id"].astype(str).to_numpy())
    vehicles = vt.reindex(ev_type.to_numpy(object)).reset_index(drop=True)
    st = sessions["station_id"].astype(str).to_numpy(object)
    chargers = inst.station_power().set_index("station_id").reindex(st).reset_index(drop=True)
    limits = pair_limits(vehicles, chargers)
    if energy_kwh is None:
        gain = np.maximum(sessions["soc_target"].to_numpy(float) - sessions["soc_arrival"].to_numpy(float), 0.0)
        energy_kwh = gain * vehicles["battery_kwh"].to_numpy(float) / limits.eff_ch
    return pd.DataFrame({"arrival": base + pd.to_timedelta(sessions["arrival_s"].to_numpy(float), unit="s"),
                         "departure": base + pd.to_timedelta(sessions["departure_s"].to_numpy(float), unit="s"),
                         "energy_kwh": np.asarray(energy_kwh, float), "p_max_kw": limits.p_ch_max_kw,
                         "station_id": st})


def _validate(frame: pd.DataFrame, table: str, energy_column: str) -> None:
    """Energies finite and non-negative, limits positive, departure after arrival, sessions shorter
    than :data:`MAX_SESSION_DAYS` (each a one-line error naming the row)."""
    energy = frame["energy_kwh"].to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(energy) | (energy < 0))
    if bad.size:
        raise DataError("not a non-negative finite energy (kWh)", table=table, row=int(bad[0]), column=energy_column)
    power = frame["p_max_kw"].to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(power) | (power <= 0))
    if bad.size:
        raise DataError("charging power limit not a positive number of kW", table=table, row=int(bad[0]))
    span = (frame["departure"] - frame["arrival"]).dt.total_seconds().to_numpy(float)
    bad = np.flatnonzero(span < 0)
    if bad.size:
        raise DataError("departure before arrival", table=table, row=int(bad[0]), column="departure")
    bad = np.flatnonzero(span > MAX_SESSION_DAYS * 86400.0)
    if bad.size:
        raise DataError(f"session longer than {MAX_SESSION_DAYS:g} days", table=table, row=int(bad[0]),
                        column="departure")


def bins(sessions: Sessions, step: pd.Timedelta) -> pd.DatetimeIndex:
    """Regular bins of ``step`` from the first covered day to the end of the last."""
    day = pd.Timedelta(days=1)
    if step <= pd.Timedelta(0) or day % step != pd.Timedelta(0):
        raise DataError(f"forecast step must divide a day, got {step}")
    start, end = sessions.covered[0][0], sessions.covered[-1][1]
    return pd.date_range(start, end - step, freq=step)


def _mask_uncovered(values: np.ndarray, times: pd.DatetimeIndex, sessions: Sessions) -> np.ndarray:
    inside = np.zeros(len(times), bool)
    for a, b in sessions.covered:
        inside |= (times >= a) & (times < b)
    return np.where(inside, values, np.nan)


def aggregate_load(sessions: Sessions, step: str | pd.Timedelta = "15min") -> pd.Series:
    """Mean uncontrolled charging power of all sessions per bin, kW (module docstring)."""
    step = pd.Timedelta(step)
    times = bins(sessions, step)
    t = sessions.table
    origin = times[0]
    a = (t["arrival"] - origin).dt.total_seconds().to_numpy(float)
    d = (t["departure"] - origin).dt.total_seconds().to_numpy(float)
    p = t["p_max_kw"].to_numpy(float)
    e = np.minimum(d, a + t["energy_kwh"].to_numpy(float) / p * 3600.0)
    edges = np.arange(len(times) + 1) * step.total_seconds()
    energy = _drawn_kwh(edges, a, p) - _drawn_kwh(edges, e, p)
    # the cumulative sums reach 10^9 kWh over months: round off their cancellation error (< 1 W)
    mean_kw = np.round(np.diff(energy) / (step.total_seconds() / 3600.0), 3)
    return pd.Series(_mask_uncovered(np.maximum(mean_kw, 0.0), times, sessions), index=times, name="load_kw")


def _drawn_kwh(edges: np.ndarray, starts: np.ndarray, p_kw: np.ndarray) -> np.ndarray:
    r""":math:`\sum_s \bar P_s \max(t - t_s, 0)` at every edge t, kWh (times in s)."""
    order = np.argsort(starts, kind="stable")
    ts, ps = starts[order], p_kw[order]
    cum_p = np.r_[0.0, np.cumsum(ps)]
    cum_pt = np.r_[0.0, np.cumsum(ps * ts)]
    k = np.searchsorted(ts, edges, side="right")
    return (edges * cum_p[k] - cum_pt[k]) / 3600.0


def arrival_series(sessions: Sessions, step: str | pd.Timedelta = "15min", *, energy: bool = False) -> pd.Series:
    """Arrivals per bin (count), or the energy they need (kWh) with ``energy``."""
    step = pd.Timedelta(step)
    times = bins(sessions, step)
    t = sessions.table
    pos = ((t["arrival"] - times[0]) // step).to_numpy(np.int64)
    weights = t["energy_kwh"].to_numpy(float) if energy else np.ones(len(t))
    ok = (pos >= 0) & (pos < len(times))
    values = np.bincount(pos[ok], weights=weights[ok], minlength=len(times)).astype(float)
    name = "arrival_energy_kwh" if energy else "arrivals"
    return pd.Series(_mask_uncovered(values, times, sessions), index=times, name=name)


def target_series(sessions: Sessions, target: str = "load", step: str | pd.Timedelta = "15min") -> pd.Series:
    """The series of :data:`TARGETS` named ``target``."""
    if target == "load":
        return aggregate_load(sessions, step)
    if target in ("arrivals", "arrival_energy"):
        return arrival_series(sessions, step, energy=target == "arrival_energy")
    raise DataError(f"unknown forecast target {target!r}; known: {', '.join(TARGETS)}")

"""Plain, JSON-serialisable records exchanged with the charging plant.

A controller drives :class:`optev.mobility.plant.Plant` with :class:`Setpoints` for the
next interval and gets a :class:`StepReport` back. Every record here holds only ``str``,
``int``, ``float``, ``bool``, ``None``, lists and dicts of them, so that
``json.dumps(report.to_dict())`` works (and ``StepReport.from_dict`` reverses it); no
numpy scalars, no NaN or infinity (an unknown time is ``None``).

Units: times in seconds after the instance start, powers in kW at the grid side of the
charger (charging positive, discharging negative), energies in kWh, SOC as a fraction of
the usable battery capacity.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any


def _num(v: Any) -> float | None:
    """A finite float, or None for None/NaN/±inf."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _clean(value: Any) -> Any:
    """``value`` as plain JSON data (numpy scalars → Python numbers, NaN/inf → None)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if hasattr(value, "item") and not isinstance(value, (list, dict)):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


@dataclass
class Setpoints:
    """Power setpoints for one plant interval.

    Attributes
    ----------
    ev_kw : dict of str to float
        Grid-side power per EV id, kW; positive charges, negative discharges (V2G). Applies
        to an EV plugged in at the start of the interval, for the whole interval; a
        setpoint for an EV that is not plugged in then is ignored and reported in
        :attr:`StepReport.ignored_ev_setpoints`.
    station_kw : dict of str to float
        Net grid-side power per station id, kW, shared by the station's EVs that have no
        EV setpoint (including EVs that arrive during the interval), in proportion to their
        power limits (see :mod:`optev.mobility.core`, "Setpoints").
    """

    ev_kw: dict[str, float] = field(default_factory=dict)
    station_kw: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"ev_kw": {str(k): float(v) for k, v in self.ev_kw.items()},
                "station_kw": {str(k): float(v) for k, v in self.station_kw.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Setpoints":
        return cls(ev_kw={str(k): float(v) for k, v in (data.get("ev_kw") or {}).items()},
                   station_kw={str(k): float(v) for k, v in (data.get("station_kw") or {}).items()})


@dataclass
class EVState:
    """A plugged-in EV now: the plant's report at the end of an interval
    (:attr:`StepReport.plugged`) and the controller's measured state at a decision time
    (:attr:`optev.mpc.ControlState.evs`) are the same record.

    The first eight fields are what a controller needs (a dispatch service may pass them
    positionally); the others are optional (None: unknown or not measured). A plant fills
    every field.

    Attributes
    ----------
    ev_id : str
        The EV.
    session_id : str
        Its charging session (one plug-in at one station).
    station_id : str
        The station it is plugged in at.
    energy_kwh : float
        Battery energy now, kWh.
    soc : float
        State of charge now, fraction of the usable battery capacity
        (``energy_kwh / capacity``).
    arrival_s : float
        Plug-in time, s after the instance start.
    departure_s : float or None
        Expected departure, s after the instance start (the EV's next trip; at its last stop
        of the day, the end of the simulated day; a replayed session's departure). None when
        unknown: at a fast station the EV leaves when charged, so the time depends on the
        power it gets (the controller then assumes it charges at full power to its target).
    soc_target : float
        SOC the user needs at departure, fraction (R6.2.2.3).
    soc_arrival : float or None
        SOC at plug-in, fraction (used by forecasters that learn from observed sessions).
    soc_min : float or None
        SOC floor of discharging, fraction (R6.1.5).
    p_kw : float or None
        Grid-side power now, kW (charge positive, discharge negative).
    interval_grid_kwh : float or None
        Net grid-side energy of this EV during the plant interval that ends now (since its
        plug-in when it arrived during the interval), kWh (charge positive); 0 in a report of
        the current state only (``t_start_s == t_end_s``).
    p_ch_max_kw : float or None
        Grid-side charging limit of this EV at this charger (vehicle and charger), kW. None:
        derived from the instance's vehicle type and charger model.
    p_dis_max_kw : float or None
        Grid-side discharging limit of this EV at this charger, kW (a magnitude, ≥ 0); 0
        unless the EV, its user and the charger can do V2G. None: derived from the instance.
    """

    ev_id: str
    session_id: str
    station_id: str
    energy_kwh: float
    soc: float
    arrival_s: float
    departure_s: float | None
    soc_target: float
    soc_arrival: float | None = None
    soc_min: float | None = None
    p_kw: float | None = None
    interval_grid_kwh: float | None = None
    p_ch_max_kw: float | None = None
    p_dis_max_kw: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EVState":
        """Inverse of :meth:`to_dict` (optional fields may be missing)."""
        return cls(ev_id=str(data["ev_id"]), session_id=str(data["session_id"]), station_id=str(data["station_id"]),
                   energy_kwh=float(data["energy_kwh"]), soc=float(data["soc"]), arrival_s=float(data["arrival_s"]),
                   departure_s=_num(data.get("departure_s")), soc_target=float(data["soc_target"]),
                   **{k: _num(data.get(k)) for k in _EV_OPTIONAL})


_EV_OPTIONAL = ("soc_arrival", "soc_min", "p_kw", "interval_grid_kwh", "p_ch_max_kw", "p_dis_max_kw")
"""The optional fields of :class:`EVState` (each a float or None)."""


@dataclass
class PlantEvent:
    """Something that happened at a station or on the road during an interval.

    ``kind`` is one of ``arrival`` (an EV reached a station; at a full FCS it joins the
    queue), ``plug_in``, ``departure`` (unplugged and left), ``rejection`` (turned away from
    a full SCS or private charger) and ``stranded`` (ran out of energy on the road;
    ``station_id`` is then None).
    """

    kind: str
    time_s: float
    ev_id: str
    station_id: str | None
    session_id: str | None
    soc: float


@dataclass
class StationState:
    """A station at the end of an interval (only stations with any activity are reported).

    Attributes
    ----------
    station_id : str
    plugged : int
        EVs plugged in at the end of the interval.
    queue : int
        EVs waiting (FCS only) at the end of the interval.
    energy_kwh : float
        Net grid-side energy during the interval, kWh.
    mean_kw : float
        ``energy_kwh`` divided by the interval length, kW.
    p_kw : float
        Grid-side power at the end of the interval, kW.
    """

    station_id: str
    plugged: int
    queue: int
    energy_kwh: float
    mean_kw: float
    p_kw: float


SESSION_STEP_COLUMNS = ("session_id", "ev_id", "station_id", "import_kwh", "export_kwh", "charged_kwh",
                       "discharged_kwh", "e_kwh", "soc", "plugged_s", "departed")
"""Keys of :attr:`StepReport.sessions`: every session plugged in at some time during the
interval, with what it realised in it — grid-side energy imported and exported (kWh),
battery-side energy charged and discharged (kWh), battery energy (kWh) and SOC at the end
of the interval (at departure for a session that left during it), seconds plugged in during
the interval and whether it left."""


@dataclass
class StepReport:
    """What the plant realised during one interval ``[t_start_s, t_end_s)``.

    Attributes
    ----------
    t_start_s, t_end_s : float
        The interval, seconds after the instance start.
    plugged : list of EVState
        Every EV plugged in at ``t_end_s``: its battery energy, SOC and power then, its
        session and limits, and its net grid-side energy of the interval
        (``interval_grid_kwh``); the controller's measured state as it is (empty when the
        step was run with ``report=False``).
    arrivals, plug_ins, departures, rejections, stranded : list of PlantEvent
        Events of the interval in time order.
    queues : dict of str to int
        Queue length of every FCS at ``t_end_s``.
    stations : list of StationState
        Stations with plugged EVs, a queue or energy in the interval.
    ignored_ev_setpoints : list of str
        EV ids whose setpoint was ignored because the EV was not plugged in at ``t_start_s``.
    clipped_ev_setpoints : dict of str to float
        EV setpoints that could not be honoured at the start of the interval, with the power
        applied instead (kW): outside the EV's or charger's limits, discharge without V2G
        ability or at the SOC floor, or charge of a full battery.
    counts : dict of str to int
        Numbers of arrivals, plug-ins, departures, rejections, stranded EVs in the interval
        and of EVs plugged in / queued at the end; filled also when ``report=False``.
    sessions : dict of str to list
        Realised energy of every session plugged in during the interval, column-wise
        (:data:`SESSION_STEP_COLUMNS`): also the EVs that arrived during the interval and
        charged under the local rule, and those that left during it. Their grid-side sums
        per station equal :attr:`stations`' ``energy_kwh``.
    """

    t_start_s: float
    t_end_s: float
    plugged: list[EVState] = field(default_factory=list)
    arrivals: list[PlantEvent] = field(default_factory=list)
    plug_ins: list[PlantEvent] = field(default_factory=list)
    departures: list[PlantEvent] = field(default_factory=list)
    rejections: list[PlantEvent] = field(default_factory=list)
    stranded: list[PlantEvent] = field(default_factory=list)
    queues: dict[str, int] = field(default_factory=dict)
    stations: list[StationState] = field(default_factory=list)
    ignored_ev_setpoints: list[str] = field(default_factory=list)
    clipped_ev_setpoints: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, list] = field(default_factory=dict)

    def soc(self) -> dict[str, float]:
        """SOC per plugged EV id at the end of the interval."""
        return {p.ev_id: p.soc for p in self.plugged}

    def to_dict(self) -> dict[str, Any]:
        """A dict of plain Python values (``json.dumps`` works on it)."""
        return asdict(self)

    def to_json(self) -> str:
        """The report as a JSON string (no NaN/infinity)."""
        return json.dumps(self.to_dict(), allow_nan=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StepReport":
        """Inverse of :meth:`to_dict`."""
        events = {k: [PlantEvent(**e) for e in data.get(k, [])]
                  for k in ("arrivals", "plug_ins", "departures", "rejections", "stranded")}
        return cls(t_start_s=float(data["t_start_s"]), t_end_s=float(data["t_end_s"]),
                   plugged=[EVState.from_dict(p) for p in data.get("plugged", [])],
                   queues={str(k): int(v) for k, v in data.get("queues", {}).items()},
                   stations=[StationState(**s) for s in data.get("stations", [])],
                   ignored_ev_setpoints=list(data.get("ignored_ev_setpoints", [])),
                   clipped_ev_setpoints={str(k): float(v) for k, v in data.get("clipped_ev_setpoints", {}).items()},
                   counts={str(k): int(v) for k, v in data.get("counts", {}).items()},
                   sessions={str(k): list(v) for k, v in (data.get("sessions") or {}).items()}, **events)

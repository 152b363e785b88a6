r"""OCPP smart-charging payloads from controller decisions, and optev telemetry from OCPP messages.

Pure functions (no I/O) between optev's records (:class:`~optev.mpc.state.ControlDecision`,
:class:`~optev.mpc.state.EVState`) and the JSON payloads of OCPP 2.1, 2.0.1 and 1.6 on the wire
(camelCase keys), which validate against the JSON schemas shipped in the ``ocpp`` package;
:mod:`optev.server.ocpp_csms` sends and receives them (issue 15).

Units: optev — kW at the grid side of the charger (charging positive), kWh, SOC as a fraction,
seconds after the instance origin (its ``metadata.start``); OCPP — W (``chargingRateUnit = W``,
all phases), Wh, percent, ISO 8601 instants with a UTC offset. Powers are written in W rounded
to 0.1 W (1.6's precision); a setpoint on optev's 1 kW grid is an exact multiple of 1000 W.

Decision → SetChargingProfile
-----------------------------
* **TxProfile per EVSE** (:func:`tx_profile`): the session's planned power over the horizon
  (``decision.ev_plan_kw[session_id]``; first period = the interval's setpoint), or only the
  interval's setpoint (``setpoints.ev_kw``) for an EV that leaves during the interval (it has
  no plan); ``transactionId`` = the station's own id (1.6: an integer).
* **ChargingStationMaxProfile per station** (:func:`station_profile`; ``evseId = 0``, 1.6:
  ``ChargePointMaxProfile`` on connector 0): the station's planned net power
  (``decision.station_plan_kw``) as a cap on its import, ``limit = max(P, 0)``, the first
  period raised by the station's ``arrival_allowance_kw``. Only ``ChargingOnly`` is allowed in
  this purpose (OCPP 2.1 part 2, "operationMode for charging profile purposes"); discharge is
  commanded per EVSE. The cap also holds back EVs arriving during the interval: it fits the
  controller's ``limit_arrivals=True``.
* Schedule: ``chargingProfileKind = Absolute``, ``startSchedule = validFrom`` = the plan start,
  a period per plan step at ``startPeriod = k · plan_step_s`` (consecutive equal periods
  merged), ``duration = validTo − validFrom`` = the horizon. ``max_periods`` (the station's
  ``ChargingScheduleMaxPeriods``) cuts the schedule after that many periods and shortens
  ``duration`` to match. Profile ids are fixed per target (:data:`STATION_PROFILE_ID`,
  :data:`TX_PROFILE_ID_BASE` + EVSE id): the next decision replaces the previous profile.
* **OCPP 2.1 periods** (OCPP 2.1 part 2, "Limits and setpoints per operation mode"): P ≥ 0 →
  ``ChargingOnly``, ``limit = P``; P < 0 (V2G) → with ``v2g_mode = "central_setpoint"``
  ``CentralSetpoint``, ``setpoint = dischargeLimit = P``, ``limit = 0`` (the EV follows P,
  within ``[dischargeLimit, limit]``); with ``"external_setpoint"`` ``ExternalSetpoint``,
  ``dischargeLimit = P``, ``limit = 0`` (a local controller discharges at most |P|).
  ``max_offline_s`` sets ``maxOfflineDuration``: that long without the CSMS, the station drops
  the profile for its lower-stack ones (R6.3.3).
* **OCPP 2.0.1 and 1.6 fallback** (charge only): ``limit = max(P, 0)``; a planned discharge is
  clipped to 0, :attr:`ProfileMessage.discharge_clipped` says so and ``clipped_kwh`` is the
  planned discharge energy left out.

OCPP messages → telemetry
-------------------------
:func:`parse_message` reads ``MeterValues``, ``TransactionEvent`` and
``NotifyEVChargingNeeds`` (2.x) and ``MeterValues``, ``StartTransaction`` and
``StopTransaction`` (1.6) into a :class:`Telemetry` record per EVSE (W → kW, Wh → kWh, % → fraction):
``Power.Active.Import`` − ``Power.Active.Export`` → ``power_kw`` (per-phase values summed);
``Energy.Active.Import/Export.Register`` (1.6: also ``meterStart``/``meterStop``) →
``energy_import_kwh``/``energy_export_kwh``; ``SoC``, ``stateOfCharge`` → ``soc``;
``Display.TargetSOC``, ``targetSoC`` → ``target_soc``; ``EnergyRequest.Target``,
``energyAmount``, ``evTargetEnergyRequest`` → ``energy_need_kwh`` (a negative request, an EV
above its target, is 0); ``EnergyRequest.Minimum.V2X``, ``evMinV2XEnergyRequest`` →
``v2x_min_energy_kwh`` (signed); ``Display.BatteryEnergyCapacity``, ``evEnergyCapacity`` →
``capacity_kwh``; ``departureTime`` → ``departure``; ``maxChargePower``, ``evMaxPower`` →
``p_ch_max_kw``; ``maxDischargePower`` → ``p_dis_max_kw``; ``idToken.idToken``, ``idTag`` →
``ev_id`` (through ``pseudonymise``); ``transactionId`` → ``transaction_id`` and
``session_id`` (:func:`session_key`).

A value that is not a finite number, a unit that is not one of W/kW, Wh/kWh or Percent, a
negative energy register, export power, capacity or power limit, a SOC above 100 % or a time
without a UTC offset raises :class:`~optev.errors.DataError` naming the message and the field
(for example ``meterValue[0].sampledValue[2].value``). :func:`ev_states` turns the latest
record of every session into the :class:`~optev.mpc.state.EVState` the controller reads
(``energy_kwh = soc × capacity``, ``soc_target`` = the target SOC or ``soc + need /
capacity``) and lists the sessions it cannot use, with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from ocpp.v21.enums import (ChargingProfileKindEnumType, ChargingProfilePurposeEnumType, ChargingRateUnitEnumType,
                            OperationModeEnumType)

from optev.data.instance import Instance
from optev.errors import DataError
from optev.mpc.state import ControlDecision, EVState

__all__ = ["SUBPROTOCOLS", "V2G_MODES", "VERSIONS", "EvseSession", "ProfileMessage", "Telemetry", "capacities",
           "decision_profiles", "ev_states", "iso_utc", "merge_telemetry", "parse_message", "session_key",
           "station_profile", "tx_profile", "utc_instant"]

VERSIONS = ("2.1", "2.0.1", "1.6")
"""OCPP versions optev speaks; only 2.1 carries discharge (V2G)."""

SUBPROTOCOLS = {"ocpp2.1": "2.1", "ocpp2.0.1": "2.0.1", "ocpp1.6": "1.6"}
"""Websocket subprotocol → OCPP version, in the order the CSMS prefers them."""

V2G_MODES = ("central_setpoint", "external_setpoint")
"""How a planned discharge is written in OCPP 2.1 (module docstring)."""

STATION_PROFILE_ID = 1
"""Profile id of the station-wide profile (the next decision replaces it)."""

TX_PROFILE_ID_BASE = 100
"""A TxProfile's id is this plus the EVSE (1.6: connector) id."""

DEFAULT_STACK_LEVEL = 1
"""Stack level of optev's profiles: above a station operator's own level-0 defaults."""

_TX = ChargingProfilePurposeEnumType.tx_profile.value
_STATION_MAX = ChargingProfilePurposeEnumType.charging_station_max_profile.value
_STATION_MAX_16 = "ChargePointMaxProfile"
_ABSOLUTE = ChargingProfileKindEnumType.absolute.value
_WATT = ChargingRateUnitEnumType.w.value
_MODE = {"charge": OperationModeEnumType.charging_only.value,
         "central_setpoint": OperationModeEnumType.central_setpoint.value,
         "external_setpoint": OperationModeEnumType.external_setpoint.value}

Pseudonymise = Callable[[str], str]


def _same(raw_id: str) -> str:
    return raw_id


# ---------------------------------------------------------------------------------------------- records

@dataclass(frozen=True)
class EvseSession:
    """An active charging session at one EVSE (1.6: connector, ≥ 1) of a connected station.

    ``station_id`` is optev's (pseudonymised) station id, ``session_id`` and ``ev_id`` the keys
    of ``decision.ev_plan_kw`` and ``decision.setpoints.ev_kw`` (:func:`session_key`; ``ev_id``
    None when the station sent no idToken), ``transaction_id`` the station's own id of the
    transaction (1.6: the integer the CSMS assigned, as text).
    """

    station_id: str
    evse_id: int
    session_id: str
    ev_id: str | None
    transaction_id: str


@dataclass(frozen=True)
class ProfileMessage:
    """One ``SetChargingProfile`` request for one station.

    Attributes
    ----------
    station_id, version : str
        Target station and its OCPP version (:data:`VERSIONS`).
    evse_id, purpose : int, str
        EVSE (1.6: connector; 0 = the whole station) and ``TxProfile`` or
        ``ChargingStationMaxProfile`` (1.6: ``ChargePointMaxProfile``).
    session_id : str or None
        The session of a TxProfile.
    payload : dict
        The request payload as sent on the wire (camelCase, W).
    discharge_clipped, clipped_kwh : bool, float
        The plan discharges but the version cannot (2.0.1, 1.6): those periods carry limit 0;
        the planned discharge energy left out, kWh.
    """

    station_id: str
    version: str
    evse_id: int
    purpose: str
    session_id: str | None
    payload: dict[str, Any]
    discharge_clipped: bool = False
    clipped_kwh: float = 0.0


@dataclass(frozen=True)
class Telemetry:
    """What one OCPP message said about one EVSE (a field is None when not reported).

    Attributes
    ----------
    station_id : str
        optev's station id (pseudonymised at the edge).
    evse_id : int or None
        EVSE (1.6: connector); None in a message that names only the transaction.
    time : datetime
        Time of the latest value in the message (UTC).
    source, event : str
        The OCPP action it came from; ``Started``, ``Updated`` or ``Ended`` (transactions).
    transaction_id : str or None
        The station's own transaction id, as parsed (needed to address a TxProfile; the CSMS
        keeps it at the edge and stores records without it).
    session_id, ev_id : str or None
        optev's session and EV ids (:func:`session_key`; the pseudonymised idToken).
    started, departure : datetime or None
        Start of the transaction; the departure time the EV (driver) announced.
    power_kw, energy_import_kwh, energy_export_kwh : float or None
        Grid-side power (charging positive), kW; meter registers, kWh.
    soc, target_soc : float or None
        State of charge now and the EV's target, fractions.
    energy_need_kwh, v2x_min_energy_kwh, capacity_kwh : float or None
        Energy still requested to reach the target (≥ 0), to reach the minimum SOC for V2X
        (negative: it may discharge that much), usable battery capacity, kWh.
    p_ch_max_kw, p_dis_max_kw : float or None
        The EV's charging and discharging power limits, kW (magnitudes).
    """

    station_id: str
    evse_id: int | None
    time: datetime
    source: str
    event: str | None = None
    transaction_id: str | None = None
    session_id: str | None = None
    ev_id: str | None = None
    started: datetime | None = None
    power_kw: float | None = None
    energy_import_kwh: float | None = None
    energy_export_kwh: float | None = None
    soc: float | None = None
    target_soc: float | None = None
    departure: datetime | None = None
    energy_need_kwh: float | None = None
    v2x_min_energy_kwh: float | None = None
    capacity_kwh: float | None = None
    p_ch_max_kw: float | None = None
    p_dis_max_kw: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (times as ISO 8601 UTC strings)."""
        return {f.name: (iso_utc(v) if isinstance(v, datetime) else v) for f in fields(self)
                for v in [getattr(self, f.name)]}


def merge_telemetry(old: Telemetry | None, new: Telemetry) -> Telemetry:
    """The latest state of an EVSE: ``new``'s reported fields over ``old``'s (time: the later)."""
    if old is None:
        return new
    values = {f.name: getattr(new, f.name) for f in fields(new) if getattr(new, f.name) is not None}
    values["time"] = max(old.time, new.time)
    return replace(old, **values)


def session_key(station_id: str, transaction_id: str, pseudonymise: Pseudonymise = _same) -> str:
    """optev's session id of a transaction: ``pseudonymise("<station_id>/<transaction_id>")``."""
    return pseudonymise(f"{station_id}/{transaction_id}")


# ---------------------------------------------------------------------------------------------- export

def iso_utc(t: datetime) -> str:
    """An aware instant as ISO 8601 in UTC with a ``Z`` (milliseconds only when not whole seconds)."""
    t = t.astimezone(timezone.utc)
    spec = "seconds" if t.microsecond == 0 else "milliseconds"
    return t.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def utc_instant(t: datetime, name: str = "time") -> datetime:
    """``t`` as a plain :class:`datetime` in UTC (a pandas Timestamp is converted).

    Raises
    ------
    DataError
        ``t`` has no UTC offset (naming it ``name``): OCPP times are absolute instants.
    """
    if t.tzinfo is None or t.utcoffset() is None:
        raise DataError(f"{name} {t.isoformat()} has no UTC offset (OCPP times are absolute instants)")
    to_py = getattr(t, "to_pydatetime", None)
    plain = to_py() if callable(to_py) else t
    return plain.astimezone(timezone.utc)


def _watts(kw: float, where: str) -> float:
    value = float(kw)
    if not math.isfinite(value):
        raise DataError(f"{where} is {value}, not a finite power")
    return round(value * 1000.0, 1) + 0.0  # + 0.0: no -0.0 on the wire


def _period(w: float, version: str, v2g_mode: str, station_wide: bool) -> dict[str, Any]:
    """The limit/setpoint fields of one period of ``w`` W (module docstring)."""
    if version != "2.1":
        return {"limit": max(w, 0.0)}
    if w >= 0 or station_wide:
        return {"limit": max(w, 0.0), "operationMode": _MODE["charge"]}
    if v2g_mode == "central_setpoint":
        return {"limit": 0.0, "dischargeLimit": w, "setpoint": w, "operationMode": _MODE["central_setpoint"]}
    return {"limit": 0.0, "dischargeLimit": w, "operationMode": _MODE["external_setpoint"]}


def _schedule(plan_kw: Sequence[float], step_s: float, version: str, v2g_mode: str, station_wide: bool,
              max_periods: int | None, where: str) -> tuple[list[dict[str, Any]], int, float]:
    """Merged periods of a plan, the schedule's duration in s and the discharge energy the
    version cannot carry (kWh)."""
    step = int(round(step_s))
    if step <= 0 or abs(step - step_s) > 1e-6:
        raise DataError(f"{where}: plan step {step_s} s is not a positive whole number of seconds")
    if not plan_kw:
        raise DataError(f"{where}: the plan is empty")
    periods: list[dict[str, Any]] = []
    clipped_kwh = 0.0
    for k, kw in enumerate(plan_kw):
        w = _watts(kw, f"{where}[{k}]")
        if w < 0 and version != "2.1" and not station_wide:
            clipped_kwh += -w / 1000.0 * step / 3600.0
        fields_k = _period(w, version, v2g_mode, station_wide)
        if periods and {k_: v for k_, v in periods[-1].items() if k_ != "startPeriod"} == fields_k:
            continue
        periods.append({"startPeriod": k * step, **fields_k})
    duration = len(plan_kw) * step
    if max_periods is not None:
        if max_periods < 1:
            raise DataError(f"max_periods must be at least 1, got {max_periods}")
        if len(periods) > max_periods:
            duration = int(periods[max_periods]["startPeriod"])
            periods = periods[:max_periods]
    return periods, duration, clipped_kwh


def _payload(version: str, evse_id: int, profile_id: int, purpose: str, stack_level: int, start: datetime,
             duration_s: int, periods: list[dict[str, Any]], transaction_id: str | None,
             max_offline_s: int | None) -> dict[str, Any]:
    """A ``SetChargingProfile`` request of ``version``."""
    valid = {"validFrom": iso_utc(start), "validTo": iso_utc(start + timedelta(seconds=duration_s))}
    if version == "1.6":
        schedule16 = {"duration": duration_s, "startSchedule": iso_utc(start), "chargingRateUnit": _WATT,
                      "chargingSchedulePeriod": periods}
        profile16: dict[str, Any] = {"chargingProfileId": profile_id, "stackLevel": stack_level,
                                     "chargingProfilePurpose": purpose, "chargingProfileKind": _ABSOLUTE, **valid,
                                     "chargingSchedule": schedule16}
        if transaction_id is not None:
            profile16["transactionId"] = _int_transaction(transaction_id)
        return {"connectorId": evse_id, "csChargingProfiles": profile16}
    schedule = {"id": profile_id, "startSchedule": iso_utc(start), "duration": duration_s, "chargingRateUnit": _WATT,
                "chargingSchedulePeriod": periods}
    profile: dict[str, Any] = {"id": profile_id, "stackLevel": stack_level, "chargingProfilePurpose": purpose,
                               "chargingProfileKind": _ABSOLUTE, **valid}
    if transaction_id is not None:
        if len(transaction_id) > 36:
            raise DataError(f"transactionId {transaction_id[:40]!r} is longer than 36 characters")
        profile["transactionId"] = transaction_id
    if max_offline_s is not None and version == "2.1":
        profile["maxOfflineDuration"] = int(max_offline_s)
    profile["chargingSchedule"] = [schedule]
    return {"evseId": evse_id, "chargingProfile": profile}


def _int_transaction(transaction_id: str) -> int:
    try:
        return int(transaction_id)
    except ValueError:
        raise DataError(f"OCPP 1.6 transactionId {transaction_id!r} is not an integer") from None


def _check_version(version: str, v2g_mode: str = "central_setpoint") -> None:
    if version not in VERSIONS:
        raise DataError(f"OCPP version {version!r} is not one of {', '.join(VERSIONS)}")
    if v2g_mode not in V2G_MODES:
        raise DataError(f"v2g_mode {v2g_mode!r} is not one of {', '.join(V2G_MODES)}")


def _plan(decision: ControlDecision, origin: datetime, plans: Mapping[str, list[float]], key: str, plans_name: str,
          setpoints: Mapping[str, float], setpoint_key: str | None,
          setpoints_name: str) -> tuple[list[float], datetime, float, str] | None:
    """A target's plan in a decision, its absolute start, step (s) and name for messages: the
    planned horizon, else the interval's setpoint alone, else None."""
    origin = utc_instant(origin, "origin")
    if key in plans:
        step = decision.plan_step_s if decision.plan_step_s > 0 else decision.step_s
        start = origin + timedelta(seconds=float(decision.plan_start_s))
        return list(plans[key]), start, float(step), f"{plans_name}[{key!r}]"
    if setpoint_key is None or setpoint_key not in setpoints:
        return None
    start = origin + timedelta(seconds=float(decision.time_s))
    return [setpoints[setpoint_key]], start, float(decision.step_s), f"{setpoints_name}[{setpoint_key!r}]"


def tx_profile(decision: ControlDecision, session: EvseSession, version: str, origin: datetime, *,
               v2g_mode: str = "central_setpoint", stack_level: int = DEFAULT_STACK_LEVEL,
               max_offline_s: int | None = None, max_periods: int | None = None) -> ProfileMessage | None:
    """The TxProfile of a session: its planned power over the horizon (module docstring).

    Parameters
    ----------
    decision : ControlDecision
    session : EvseSession
        Where the session is plugged in and its transaction.
    version : str
        OCPP version of the station (:data:`VERSIONS`).
    origin : datetime
        The instant optev's times count from (the instance's ``metadata.start``), aware.
    v2g_mode : str
        :data:`V2G_MODES` (2.1 only).
    stack_level, max_offline_s, max_periods : int
        Profile stack level; ``maxOfflineDuration`` (2.1); most periods the station accepts.

    Returns
    -------
    ProfileMessage or None
        None when the decision has neither a plan nor a setpoint for the session.
    """
    _check_version(version, v2g_mode)
    found = _plan(decision, origin, decision.ev_plan_kw, session.session_id, "ev_plan_kw", decision.setpoints.ev_kw,
                  session.ev_id, "setpoints.ev_kw")
    if found is None:
        return None
    plan, start, step, where = found
    periods, duration, clipped = _schedule(plan, step, version, v2g_mode, False, max_periods, where)
    payload = _payload(version, session.evse_id, TX_PROFILE_ID_BASE + session.evse_id, _TX, stack_level, start,
                       duration, periods, session.transaction_id, max_offline_s)
    return ProfileMessage(station_id=session.station_id, version=version, evse_id=session.evse_id, purpose=_TX,
                          session_id=session.session_id, payload=payload, discharge_clipped=clipped > 0,
                          clipped_kwh=clipped)


def station_profile(decision: ControlDecision, station_id: str, version: str, origin: datetime, *,
                    stack_level: int = DEFAULT_STACK_LEVEL, max_periods: int | None = None) -> ProfileMessage | None:
    """The station-wide cap: its planned net import over the horizon (module docstring).

    The first period is raised by the station's ``arrival_allowance_kw`` (the power the plan
    reserved for EVs arriving during the interval). None when the decision has no plan and no
    setpoint for the station.
    """
    _check_version(version)
    found = _plan(decision, origin, decision.station_plan_kw, station_id, "station_plan_kw",
                  decision.setpoints.station_kw, station_id, "setpoints.station_kw")
    if found is None:
        return None
    plan, start, step, where = found
    plan[0] = float(plan[0]) + float(decision.arrival_allowance_kw.get(station_id, 0.0))
    periods, duration, _ = _schedule(plan, step, version, "central_setpoint", True, max_periods, where)
    purpose = _STATION_MAX_16 if version == "1.6" else _STATION_MAX
    payload = _payload(version, 0, STATION_PROFILE_ID, purpose, stack_level, start, duration, periods, None, None)
    return ProfileMessage(station_id=station_id, version=version, evse_id=0, purpose=purpose, session_id=None,
                          payload=payload)


def decision_profiles(decision: ControlDecision, sessions: Iterable[EvseSession], versions: Mapping[str, str],
                      origin: datetime, *, station_profiles: bool = False, v2g_mode: str = "central_setpoint",
                      stack_level: int = DEFAULT_STACK_LEVEL, max_offline_s: int | None = None,
                      max_periods: int | None = None) -> list[ProfileMessage]:
    """Every profile a decision implies for the stations of ``versions`` (station id → OCPP
    version) and their active ``sessions``: station by station, the station-wide cap first when
    ``station_profiles`` (:func:`station_profile`), then a TxProfile per session with a plan
    (:func:`tx_profile`, same keyword arguments)."""
    by_station: dict[str, list[EvseSession]] = {s: [] for s in versions}
    for s in sessions:
        if s.station_id not in versions:
            raise DataError(f"session {s.session_id!r} is at station {s.station_id!r}, whose OCPP version is not given")
        by_station[s.station_id].append(s)
    out: list[ProfileMessage] = []
    for station_id, version in versions.items():
        if station_profiles:
            msg = station_profile(decision, station_id, version, origin, stack_level=stack_level,
                                  max_periods=max_periods)
            if msg is not None:
                out.append(msg)
        for s in sorted(by_station[station_id], key=lambda x: x.evse_id):
            tx = tx_profile(decision, s, version, origin, v2g_mode=v2g_mode, stack_level=stack_level,
                            max_offline_s=max_offline_s, max_periods=max_periods)
            if tx is not None:
                out.append(tx)
    return out


# ---------------------------------------------------------------------------------------------- telemetry

_POWER_UNITS = {"W": 1e-3, "kW": 1.0}
_ENERGY_UNITS = {"Wh": 1e-3, "kWh": 1.0}
_MEASURANDS = {  # measurand → (Telemetry field, units to kW/kWh/fraction, default unit, may be negative)
    "Power.Active.Import": ("power_import", _POWER_UNITS, "W", True),
    "Power.Active.Export": ("power_export", _POWER_UNITS, "W", False),
    "Energy.Active.Import.Register": ("energy_import_kwh", _ENERGY_UNITS, "Wh", False),
    "Energy.Active.Export.Register": ("energy_export_kwh", _ENERGY_UNITS, "Wh", False),
    "SoC": ("soc", {"Percent": 0.01}, "Percent", False),
    "Display.TargetSOC": ("target_soc", {"Percent": 0.01}, "Percent", False),
    "EnergyRequest.Target": ("energy_need_kwh", _ENERGY_UNITS, "Wh", True),
    "EnergyRequest.Minimum.V2X": ("v2x_min_energy_kwh", _ENERGY_UNITS, "Wh", True),
    "Display.BatteryEnergyCapacity": ("capacity_kwh", _ENERGY_UNITS, "Wh", False),
}
"""Measurands optev reads (a signed ``Power.Active.Import`` is taken as net power)."""


class _Reader:
    """Field access into one message's payload, raising DataError that names the field."""

    def __init__(self, action: str, payload: Mapping[str, Any]) -> None:
        if not isinstance(payload, Mapping):
            raise DataError(f"payload is a {type(payload).__name__}, not an object", table=f"OCPP {action}")
        self.action = action
        self.payload = payload

    def fail(self, path: str, message: str) -> DataError:
        return DataError(message, table=f"OCPP {self.action}", column=path)

    def get(self, obj: Mapping[str, Any], key: str, path: str, kind: type | tuple[type, ...],
            required: bool = False) -> Any:
        value = obj.get(key) if isinstance(obj, Mapping) else None
        full = f"{path}.{key}" if path else key
        if value is None:
            if required:
                raise self.fail(full, "missing")
            return None
        if not isinstance(value, kind) or isinstance(value, bool):  # JSON true is not a number
            raise self.fail(full, f"{value!r} is not of the expected type")
        return value

    def number(self, obj: Mapping[str, Any], key: str, path: str, *, scale: float = 1.0, negative: bool = False,
               required: bool = False) -> float | None:
        raw = self.get(obj, key, path, (int, float, str), required)
        if raw is None:
            return None
        full = f"{path}.{key}" if path else key
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(full, f"{raw!r} is not a number") from None
        if not math.isfinite(value):
            raise self.fail(full, f"{raw!r} is not a finite number")
        if value < 0 and not negative:
            raise self.fail(full, f"{raw!r} is negative")
        return value * scale

    def percent(self, obj: Mapping[str, Any], key: str, path: str) -> float | None:
        """A percentage as a fraction (0–100 %)."""
        value = self.number(obj, key, path, scale=0.01)
        if value is not None and value > 1.0 + 1e-9:
            raise self.fail(f"{path}.{key}", f"{value * 100:g} % is above 100 %")
        return value

    def time(self, obj: Mapping[str, Any], key: str, path: str, required: bool = False) -> datetime | None:
        raw = self.get(obj, key, path, str, required)
        if raw is None:
            return None
        full = f"{path}.{key}" if path else key
        try:
            t = datetime.fromisoformat(raw)
        except ValueError:
            raise self.fail(full, f"{raw!r} is not an ISO 8601 time") from None
        if t.tzinfo is None or t.utcoffset() is None:
            raise self.fail(full, f"{raw!r} has no UTC offset")
        return t.astimezone(timezone.utc)


def _sample(r: _Reader, sv: Mapping[str, Any], path: str, version: str) -> tuple[str, str | None, float] | None:
    """(field, phase, value in optev units) of one sampled value optev reads, or None."""
    measurand = r.get(sv, "measurand", path, str) or "Energy.Active.Import.Register"
    if measurand not in _MEASURANDS:
        return None
    name, units, default, negative = _MEASURANDS[measurand]
    if version == "1.6":
        unit, multiplier = r.get(sv, "unit", path, str) or default, 0
    else:
        uom = r.get(sv, "unitOfMeasure", path, Mapping) or {}
        unit = r.get(uom, "unit", f"{path}.unitOfMeasure", str) or default
        multiplier = r.get(uom, "multiplier", f"{path}.unitOfMeasure", int) or 0
    if unit not in units:
        raise r.fail(f"{path}.unit", f"{measurand} in {unit!r}; expected {' or '.join(units)}")
    value = r.number(sv, "value", path, scale=units[unit] * 10.0 ** multiplier, negative=negative, required=True)
    assert value is not None
    if name in ("soc", "target_soc") and value > 1.0 + 1e-9:
        raise r.fail(f"{path}.value", f"{measurand} {value * 100:g} % is above 100 %")
    phase = r.get(sv, "phase", path, str)
    return name, phase, value


def _meter_values(r: _Reader, values: Any, path: str, version: str) -> tuple[datetime | None, dict[str, Any]]:
    """Latest time and the Telemetry fields of a ``meterValue`` list (later samples win;
    per-phase values of one sample are summed where no total is given)."""
    if values is None:
        return None, {}
    if not isinstance(values, list):
        raise r.fail(path, "is not a list")
    latest: datetime | None = None
    out: dict[str, Any] = {}
    order = []
    for i, mv in enumerate(values):
        t = r.time(mv, "timestamp", f"{path}[{i}]", required=True)
        assert t is not None
        order.append((t, i, mv))
    for t, i, mv in sorted(order, key=lambda x: (x[0], x[1])):
        totals: dict[str, float] = {}
        phases: dict[str, float] = {}
        samples = r.get(mv, "sampledValue", f"{path}[{i}]", list, required=True)
        for j, sv in enumerate(samples):
            got = _sample(r, sv, f"{path}[{i}].sampledValue[{j}]", version)
            if got is not None and got[1] is None:
                totals[got[0]] = got[2]
            elif got is not None and got[1] in ("L1", "L2", "L3", "L1-N", "L2-N", "L3-N"):
                phases[got[0]] = phases.get(got[0], 0.0) + got[2]
        out.update(_quantities({**phases, **totals}))
        latest = t if latest is None or t > latest else latest
    return latest, out


def _quantities(q: Mapping[str, float]) -> dict[str, Any]:
    """Telemetry fields of the meter quantities of one sample time (net power from its import
    and export)."""
    out = {k: v for k, v in q.items() if k not in ("power_import", "power_export")}
    if "power_import" in q or "power_export" in q:
        out["power_kw"] = q.get("power_import", 0.0) - q.get("power_export", 0.0)
    if "energy_need_kwh" in out:
        out["energy_need_kwh"] = max(out["energy_need_kwh"], 0.0)
    return out


def _meter_values_message(r: _Reader, version: str, station_id: str, received: datetime,
                          pseudonymise: Pseudonymise) -> Telemetry:
    key = "connectorId" if version == "1.6" else "evseId"
    evse = r.get(r.payload, key, "", int, required=True)
    t, q = _meter_values(r, r.payload.get("meterValue"), "meterValue", version)
    tx = r.get(r.payload, "transactionId", "", int) if version == "1.6" else None
    tx_id = None if tx is None else str(tx)
    return Telemetry(station_id=station_id, evse_id=evse, time=t or received, source="MeterValues",
                     transaction_id=tx_id, session_id=None if tx_id is None else session_key(station_id, tx_id,
                                                                                              pseudonymise),
                     **q)


def _transaction_event(r: _Reader, version: str, station_id: str, pseudonymise: Pseudonymise) -> Telemetry:
    p = r.payload
    event = r.get(p, "eventType", "", str, required=True)
    t = r.time(p, "timestamp", "", required=True)
    assert t is not None
    info = r.get(p, "transactionInfo", "", Mapping, required=True)
    tx = r.get(info, "transactionId", "transactionInfo", str, required=True)
    evse = r.get(r.get(p, "evse", "", Mapping) or {}, "id", "evse", int)
    token = r.get(p, "idToken", "", Mapping)
    raw_token = r.get(token, "idToken", "idToken", str) if token else None
    ev_id = pseudonymise(raw_token) if raw_token else None
    mt, q = _meter_values(r, p.get("meterValue"), "meterValue", version)
    return Telemetry(station_id=station_id, evse_id=evse, time=max(t, mt) if mt else t, source="TransactionEvent",
                     event=event, transaction_id=tx, session_id=session_key(station_id, tx, pseudonymise),
                     ev_id=ev_id, started=t if event == "Started" else None, **q)


def _charging_needs(r: _Reader, station_id: str, received: datetime) -> Telemetry:
    p = r.payload
    evse = r.get(p, "evseId", "", int, required=True)
    needs = r.get(p, "chargingNeeds", "", Mapping, required=True)
    t = r.time(p, "timestamp", "") or received
    out: dict[str, Any] = {"departure": r.time(needs, "departureTime", "chargingNeeds")}
    kwh, kw = 1e-3, 1e-3
    ac = r.get(needs, "acChargingParameters", "chargingNeeds", Mapping)
    if ac:
        out["energy_need_kwh"] = r.number(ac, "energyAmount", "chargingNeeds.acChargingParameters", scale=kwh)
    dc = r.get(needs, "dcChargingParameters", "chargingNeeds", Mapping)
    if dc:
        path = "chargingNeeds.dcChargingParameters"
        out["energy_need_kwh"] = r.number(dc, "energyAmount", path, scale=kwh)
        out["p_ch_max_kw"] = r.number(dc, "evMaxPower", path, scale=kw)
        out["capacity_kwh"] = r.number(dc, "evEnergyCapacity", path, scale=kwh)
        out["soc"] = r.percent(dc, "stateOfCharge", path)
    v2x = r.get(needs, "v2xChargingParameters", "chargingNeeds", Mapping)
    if v2x:
        path = "chargingNeeds.v2xChargingParameters"
        need = r.number(v2x, "evTargetEnergyRequest", path, scale=kwh, negative=True)
        out["energy_need_kwh"] = None if need is None else max(need, 0.0)
        out["v2x_min_energy_kwh"] = r.number(v2x, "evMinV2XEnergyRequest", path, scale=kwh, negative=True)
        out["p_ch_max_kw"] = r.number(v2x, "maxChargePower", path, scale=kw)
        out["p_dis_max_kw"] = r.number(v2x, "maxDischargePower", path, scale=kw)
        out["target_soc"] = r.percent(v2x, "targetSoC", path)
    return Telemetry(station_id=station_id, evse_id=evse, time=t, source="NotifyEVChargingNeeds",
                     **{k: v for k, v in out.items() if v is not None})


def _transaction_16(r: _Reader, action: str, station_id: str, transaction_id: str | None,
                    pseudonymise: Pseudonymise) -> Telemetry:
    p = r.payload
    t = r.time(p, "timestamp", "", required=True)
    assert t is not None
    started = action == "StartTransaction"
    if started:
        if transaction_id is None:
            raise DataError("StartTransaction needs the transaction id the CSMS assigns", table="OCPP StartTransaction")
        evse = r.get(p, "connectorId", "", int, required=True)
        tag = r.get(p, "idTag", "", str, required=True)
        meter = r.number(p, "meterStart", "", scale=1e-3, required=True)
        tx = transaction_id
        q: dict[str, Any] = {}
    else:
        evse, tag = None, r.get(p, "idTag", "", str)
        meter = r.number(p, "meterStop", "", scale=1e-3, required=True)
        tx = str(r.get(p, "transactionId", "", int, required=True))
        mt, q = _meter_values(r, p.get("transactionData"), "transactionData", "1.6")
        t = max(t, mt) if mt else t
    q = {**q, "energy_import_kwh": meter}  # the register at the start or the end of the transaction
    return Telemetry(station_id=station_id, evse_id=evse, time=t, source=action,
                     event="Started" if started else "Ended", transaction_id=tx,
                     session_id=session_key(station_id, tx, pseudonymise), ev_id=pseudonymise(tag) if tag else None,
                     started=t if started else None, **q)


def parse_message(action: str, payload: Mapping[str, Any], version: str, station_id: str, *, received: datetime,
                  pseudonymise: Pseudonymise = _same, transaction_id: str | None = None) -> Telemetry | None:
    """The telemetry in one OCPP request a station sent (module docstring), or None for an
    action without any (``MeterValues``, ``TransactionEvent``, ``NotifyEVChargingNeeds``; 1.6:
    ``MeterValues``, ``StartTransaction``, ``StopTransaction``).

    ``payload`` is the request as received (camelCase), ``version`` the station's OCPP version,
    ``station_id`` its optev (pseudonymised) id, ``received`` the arrival time (aware; the time
    of a message that carries none), ``pseudonymise`` maps raw ids to the ids optev keeps
    (idTokens, sessions; default: unchanged), ``transaction_id`` is the id the CSMS assigns to
    a 1.6 ``StartTransaction``.

    Raises
    ------
    DataError
        A value is missing, not finite, in an unknown unit or out of range (message, field).
    """
    _check_version(version)
    r = _Reader(action, payload)
    received = utc_instant(received, "received")
    if action == "MeterValues":
        return _meter_values_message(r, version, station_id, received, pseudonymise)
    if version == "1.6":
        if action in ("StartTransaction", "StopTransaction"):
            return _transaction_16(r, action, station_id, transaction_id, pseudonymise)
        return None
    if action == "TransactionEvent":
        return _transaction_event(r, version, station_id, pseudonymise)
    if action == "NotifyEVChargingNeeds":
        return _charging_needs(r, station_id, received)
    return None


# ---------------------------------------------------------------------------------------------- controller state

def capacities(instance: Instance) -> dict[str, float]:
    """Usable battery capacity of every EV of an instance, kWh (its vehicle type's ``battery_kwh``)."""
    kwh = instance.vehicle_types.set_index("vtype_id")["battery_kwh"]
    evs = instance.evs
    return {str(e): float(kwh[v]) for e, v in zip(evs["ev_id"], evs["vtype_id"]) if v in kwh.index}


def _ev_state(rec: Telemetry, origin: datetime, capacity_kwh: Mapping[str, float],
              default_soc_target: float | None, charge_only: bool) -> EVState | str:
    """The EVState of one session's latest record, or why there is none."""
    if rec.ev_id is None:
        return "no EV id (the station sent no idToken)"
    if rec.soc is None:
        return "no SOC reported yet"
    cap = rec.capacity_kwh if rec.capacity_kwh else capacity_kwh.get(rec.ev_id)
    if not cap or cap <= 0:
        return f"battery capacity of EV {rec.ev_id!r} unknown"
    if rec.target_soc is not None:
        target = rec.target_soc
    elif rec.energy_need_kwh is not None:
        target = min(1.0, rec.soc + rec.energy_need_kwh / cap)
    elif default_soc_target is not None:
        target = float(default_soc_target)
    else:
        return "no target SOC or energy need reported"

    def seconds(t: datetime) -> float:
        return (t - origin).total_seconds()

    soc_min = None if rec.v2x_min_energy_kwh is None else min(1.0, max(0.0, rec.soc + rec.v2x_min_energy_kwh / cap))
    assert rec.session_id is not None
    return EVState(ev_id=rec.ev_id, session_id=rec.session_id, station_id=rec.station_id, energy_kwh=rec.soc * cap,
                   soc=rec.soc, arrival_s=seconds(rec.started or rec.time),
                   departure_s=None if rec.departure is None else seconds(rec.departure), soc_target=target,
                   soc_min=soc_min, p_kw=rec.power_kw, p_ch_max_kw=rec.p_ch_max_kw,
                   p_dis_max_kw=0.0 if charge_only else rec.p_dis_max_kw)


def ev_states(records: Iterable[Telemetry], origin: datetime, *, capacity_kwh: Mapping[str, float],
              default_soc_target: float | None = None,
              charge_only: Collection[str] = ()) -> tuple[list[EVState], dict[str, str]]:
    """The plugged EVs of a controller state from the latest telemetry of every session.

    ``records`` holds the latest merged record per EVSE (:func:`merge_telemetry`; records
    without a session are ignored), ``origin`` is the instant optev's times count from (aware),
    ``capacity_kwh`` the battery capacity per EV id where the EV reports none
    (:func:`capacities`), ``default_soc_target`` the target SOC of a session that reported
    neither a target nor a need (OCPP 1.6 has no such message; without it such sessions are
    left out), ``charge_only`` the stations whose protocol cannot discharge (2.0.1, 1.6: their
    EVs get ``p_dis_max_kw = 0``).

    Returns
    -------
    (list of EVState, dict of str to str)
        The EV states (by station and session) and the sessions left out, with why.
    """
    origin = utc_instant(origin, "origin")
    evs: list[EVState] = []
    skipped: dict[str, str] = {}
    only = set(charge_only)
    for rec in sorted(records, key=lambda x: (x.station_id, x.session_id or "")):
        if rec.session_id is None:
            continue
        got = _ev_state(rec, origin, capacity_kwh, default_soc_target, rec.station_id in only)
        if isinstance(got, str):
            skipped[rec.session_id] = got
        else:
            evs.append(got)
    return evs, skipped

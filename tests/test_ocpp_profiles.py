"""OCPP payloads of optev's dispatch service (issue 15, deliverable 3), without any network:
decisions → ``SetChargingProfile`` for OCPP 2.1 (V2G setpoints), 2.0.1 and 1.6 (charge-only
fallback), every payload checked against the JSON schemas shipped in the ``ocpp`` package; and
``MeterValues``, ``TransactionEvent``, ``NotifyEVChargingNeeds`` (1.6: Start/StopTransaction)
→ optev telemetry → the controller's EV states, with bad values refused naming the field."""

from __future__ import annotations

import decimal
import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import ocpp
import pytest

from optev.errors import DataError
from optev.mobility.state import Setpoints
from optev.mpc.state import ControlDecision
from optev.server.profiles import (VERSIONS, EvseSession, Telemetry, decision_profiles, ev_states, merge_telemetry,
                                   parse_message, session_key, station_profile, tx_profile, utc_instant)

SCHEMAS = Path(ocpp.__file__).parent
ORIGIN = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=8)))   # an instance's metadata.start (Asia/Shanghai)
T0 = 8 * 3600.0
STEP = 900.0
RECEIVED = ORIGIN + timedelta(seconds=T0)


def schema_errors(version: str, action: str, payload: dict[str, Any]) -> list[str]:
    """Errors of ``payload`` against the ``ocpp`` package's JSON schema of the request ``action``.

    OCPP 1.6 schedules are parsed with decimals, as the package itself does: their
    ``multipleOf: 0.1`` is not exact in binary floating point."""
    folder = {"2.1": "v21", "2.0.1": "v201", "1.6": "v16"}[version]
    name = action if version == "1.6" else action + "Request"
    text = (SCHEMAS / folder / "schemas" / f"{name}.json").read_text(encoding="utf-8-sig")
    parse = decimal.Decimal if version == "1.6" else float
    schema = json.loads(text, parse_float=parse)
    data = json.loads(json.dumps(payload), parse_float=parse)
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


def iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def decision(ev_plan: dict[str, list[float]], station_plan: dict[str, list[float]] | None = None,
             ev_kw: dict[str, float] | None = None, allowance: dict[str, float] | None = None) -> ControlDecision:
    """A decision at 08:00 with 15-min steps (first plan entries = setpoints)."""
    station_plan = station_plan or {}
    return ControlDecision(time_s=T0, step_s=STEP, setpoints=Setpoints(
        ev_kw=ev_kw if ev_kw is not None else {f"ev-{s}": plan[0] for s, plan in ev_plan.items()},
        station_kw={s: plan[0] for s, plan in station_plan.items()}),
        plan_start_s=T0, plan_step_s=STEP, station_plan_kw=station_plan, ev_plan_kw=ev_plan,
        arrival_allowance_kw=allowance or {})


def session(sid: str = "s1", evse: int = 2, tx: str = "41") -> EvseSession:
    return EvseSession(station_id="st1", evse_id=evse, session_id=sid, ev_id=f"ev-{sid}", transaction_id=tx)


def periods(payload: dict[str, Any], version: str) -> list[dict[str, Any]]:
    if version == "1.6":
        return payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]
    return payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]


def commanded_w(payload: dict[str, Any], version: str, steps: int) -> list[float]:
    """Power per step a profile commands: the setpoint where there is one, else the limit."""
    ps = periods(payload, version)
    return [float([p for p in ps if p["startPeriod"] <= k * STEP][-1].get("setpoint",
                  [p for p in ps if p["startPeriod"] <= k * STEP][-1]["limit"])) for k in range(steps)]


V2G_PLAN = [-20.0, -20.0, -13.0, 0.0, 7.0, 7.0, 7.0, 3.0]


# ---------------------------------------------------------------------------------------------- export

def test_v2g_profile_in_ocpp_21_uses_negative_setpoints() -> None:
    d = decision({"s1": V2G_PLAN})
    msg = tx_profile(d, session(), "2.1", ORIGIN, max_offline_s=1800)
    assert msg is not None and not msg.discharge_clipped and msg.clipped_kwh == 0.0
    assert schema_errors("2.1", "SetChargingProfile", msg.payload) == []
    profile = msg.payload["chargingProfile"]
    assert msg.payload["evseId"] == 2 and profile["transactionId"] == "41" and profile["id"] == 102
    assert profile["chargingProfilePurpose"] == "TxProfile" and profile["chargingProfileKind"] == "Absolute"
    assert profile["maxOfflineDuration"] == 1800
    schedule = profile["chargingSchedule"][0]
    assert schedule["startSchedule"] == profile["validFrom"] == "2026-01-01T00:00:00Z"     # 08:00 +08:00
    assert profile["validTo"] == "2026-01-01T02:00:00Z" and schedule["duration"] == 8 * 900
    assert schedule["chargingRateUnit"] == "W"
    assert periods(msg.payload, "2.1") == [
        {"startPeriod": 0, "limit": 0.0, "dischargeLimit": -20000.0, "setpoint": -20000.0,
         "operationMode": "CentralSetpoint"},
        {"startPeriod": 1800, "limit": 0.0, "dischargeLimit": -13000.0, "setpoint": -13000.0,
         "operationMode": "CentralSetpoint"},
        {"startPeriod": 2700, "limit": 0.0, "operationMode": "ChargingOnly"},
        {"startPeriod": 3600, "limit": 7000.0, "operationMode": "ChargingOnly"},
        {"startPeriod": 6300, "limit": 3000.0, "operationMode": "ChargingOnly"}]
    assert commanded_w(msg.payload, "2.1", len(V2G_PLAN)) == [kw * 1000 for kw in V2G_PLAN]


def test_v2g_as_discharge_limits_with_external_setpoint() -> None:
    msg = tx_profile(decision({"s1": V2G_PLAN}), session(), "2.1", ORIGIN, v2g_mode="external_setpoint")
    assert msg is not None and schema_errors("2.1", "SetChargingProfile", msg.payload) == []
    first = periods(msg.payload, "2.1")[0]
    assert first == {"startPeriod": 0, "limit": 0.0, "dischargeLimit": -20000.0, "operationMode": "ExternalSetpoint"}


@pytest.mark.parametrize("version", ["2.0.1", "1.6"])
def test_fallback_versions_are_charge_only_and_flag_the_clipping(version: str) -> None:
    msg = tx_profile(decision({"s1": V2G_PLAN}), session(), version, ORIGIN, max_offline_s=1800)
    assert msg is not None and msg.discharge_clipped
    assert msg.clipped_kwh == pytest.approx((20 + 20 + 13) * 0.25)
    assert schema_errors(version, "SetChargingProfile", msg.payload) == []
    assert commanded_w(msg.payload, version, len(V2G_PLAN)) == [max(kw, 0) * 1000 for kw in V2G_PLAN]
    assert all(set(p) == {"startPeriod", "limit"} for p in periods(msg.payload, version))
    if version == "1.6":
        profile = msg.payload["csChargingProfiles"]
        assert msg.payload["connectorId"] == 2 and profile["transactionId"] == 41 and profile["chargingProfileId"] == 102
        assert profile["chargingSchedule"]["duration"] == 7200
    else:
        assert "maxOfflineDuration" not in msg.payload["chargingProfile"]     # OCPP 2.1 only
    charging = tx_profile(decision({"s1": [7.0, 3.0]}), session(), version, ORIGIN)
    assert charging is not None and not charging.discharge_clipped and charging.clipped_kwh == 0.0


@pytest.mark.parametrize("version", VERSIONS)
def test_station_wide_cap_is_the_planned_net_import(version: str) -> None:
    d = decision({}, {"st1": [5.0, -13.0, 21.0, 21.0]}, allowance={"st1": 4.0})
    msg = station_profile(d, "st1", version, ORIGIN)
    assert msg is not None and msg.evse_id == 0 and msg.session_id is None
    assert schema_errors(version, "SetChargingProfile", msg.payload) == []
    assert commanded_w(msg.payload, version, 4) == [9000.0, 0.0, 21000.0, 21000.0]   # + arrival allowance at first
    assert msg.purpose == ("ChargePointMaxProfile" if version == "1.6" else "ChargingStationMaxProfile")
    if version == "2.1":
        assert {p["operationMode"] for p in periods(msg.payload, version)} == {"ChargingOnly"}
    assert station_profile(d, "elsewhere", version, ORIGIN) is None


@pytest.mark.parametrize("version", VERSIONS)
def test_every_profile_validates_against_the_package_schemas(version: str) -> None:
    plans = {"a": [-20.0] * 4 + [7.0] * 28, "b": [0.0] * 32, "c": [11.0, 3.5, 22.0, -1.0], "d": [0.5]}
    d = decision(plans, {"st1": [sum(p[k] if k < len(p) else 0.0 for p in plans.values()) for k in range(32)]})
    sessions = [session(s, evse=i + 1, tx=str(100 + i)) for i, s in enumerate(plans)]
    messages = decision_profiles(d, sessions, {"st1": version}, ORIGIN, station_profiles=True, max_offline_s=600)
    assert [m.evse_id for m in messages] == [0, 1, 2, 3, 4]
    for m in messages:
        assert schema_errors(version, "SetChargingProfile", m.payload) == [], m.payload
        assert m.version == version and m.station_id == "st1"
    for m, (sid, plan) in zip(messages[1:], plans.items()):
        assert m.session_id == sid
        expected = [kw * 1000 if version == "2.1" else max(kw, 0) * 1000 for kw in plan]
        assert commanded_w(m.payload, version, len(plan)) == expected
    assert decision_profiles(d, sessions, {"st1": version}, ORIGIN)[0].evse_id == 1   # no station cap unasked


def test_an_ev_leaving_during_the_interval_gets_its_setpoint_for_the_interval() -> None:
    d = decision({}, ev_kw={"ev-s1": 11.0})
    msg = tx_profile(d, session(), "2.1", ORIGIN)
    assert msg is not None
    schedule = msg.payload["chargingProfile"]["chargingSchedule"][0]
    assert schedule["duration"] == 900 and periods(msg.payload, "2.1") == [
        {"startPeriod": 0, "limit": 11000.0, "operationMode": "ChargingOnly"}]
    assert tx_profile(decision({}), session(), "2.1", ORIGIN) is None    # not in the decision


def test_max_periods_cuts_the_schedule_and_its_duration() -> None:
    plan = [float(k % 5) for k in range(32)]
    msg = tx_profile(decision({"s1": plan}), session(), "2.1", ORIGIN, max_periods=24)
    assert msg is not None
    schedule = msg.payload["chargingProfile"]["chargingSchedule"][0]
    assert len(schedule["chargingSchedulePeriod"]) == 24 and schedule["duration"] == 24 * 900
    assert commanded_w(msg.payload, "2.1", 24) == [kw * 1000 for kw in plan[:24]]


def test_bad_decisions_name_the_field() -> None:
    with pytest.raises(DataError, match=r"ev_plan_kw\['s1'\]\[1\] is nan"):
        tx_profile(decision({"s1": [1.0, math.nan]}), session(), "2.1", ORIGIN)
    with pytest.raises(DataError, match="transactionId 'tx-7' is not an integer"):
        tx_profile(decision({"s1": [1.0]}), session(tx="tx-7"), "1.6", ORIGIN)
    with pytest.raises(DataError, match="OCPP version '2.0'"):
        tx_profile(decision({"s1": [1.0]}), session(), "2.0", ORIGIN)
    with pytest.raises(DataError, match="v2g_mode"):
        tx_profile(decision({"s1": [1.0]}), session(), "2.1", ORIGIN, v2g_mode="frequency")
    with pytest.raises(DataError, match="origin .* no UTC offset"):
        tx_profile(decision({"s1": [1.0]}), session(), "2.1", datetime(2026, 1, 1))
    odd = decision({"s1": [1.0]})
    odd.plan_step_s = 90.5
    with pytest.raises(DataError, match="90.5 s is not a positive whole number"):
        tx_profile(odd, session(), "2.1", ORIGIN)
    with pytest.raises(DataError, match="longer than 36"):
        tx_profile(decision({"s1": [1.0]}), session(tx="x" * 37), "2.1", ORIGIN)


# ---------------------------------------------------------------------------------------------- telemetry

def meter_values_21() -> dict[str, Any]:
    t1, t2 = iso(RECEIVED - timedelta(minutes=1)), iso(RECEIVED)
    return {"evseId": 1, "meterValue": [
        {"timestamp": t2, "sampledValue": [
            {"value": 54.5, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}},
            {"value": 2.0, "measurand": "Power.Active.Import", "phase": "L1", "unitOfMeasure": {"unit": "kW"}},
            {"value": 2.5, "measurand": "Power.Active.Import", "phase": "L2", "unitOfMeasure": {"unit": "kW"}},
            {"value": 2.5, "measurand": "Power.Active.Import", "phase": "L3", "unitOfMeasure": {"unit": "kW"}},
            {"value": 12.5, "unitOfMeasure": {"unit": "kWh"}},
            {"value": 230.0, "measurand": "Voltage", "unitOfMeasure": {"unit": "V"}},
            {"value": 55.9, "measurand": "Display.BatteryEnergyCapacity", "unitOfMeasure": {"unit": "Wh",
                                                                                          "multiplier": 3}}]},
        {"timestamp": t1, "sampledValue": [{"value": 50.0, "measurand": "SoC"},
                                           {"value": 3000.0, "measurand": "Power.Active.Export"}]}]}


def test_meter_values_in_optev_units() -> None:
    payload = meter_values_21()
    assert schema_errors("2.1", "MeterValues", payload) == []
    rec = parse_message("MeterValues", payload, "2.1", "st1", received=RECEIVED)
    assert rec is not None and rec.evse_id == 1 and rec.time == RECEIVED and rec.source == "MeterValues"
    assert rec.soc == pytest.approx(0.545)                 # the later sample wins
    assert rec.power_kw == pytest.approx(7.0)              # phases summed; the earlier export superseded
    assert rec.energy_import_kwh == 12.5 and rec.capacity_kwh == pytest.approx(55.9)
    assert rec.session_id is None and rec.transaction_id is None


def test_transaction_event_pseudonymises_the_id_token() -> None:
    payload = {"eventType": "Started", "timestamp": iso(RECEIVED), "triggerReason": "CablePluggedIn", "seqNo": 0,
               "transactionInfo": {"transactionId": "tx-9"}, "evse": {"id": 2, "connectorId": 1},
               "idToken": {"idToken": "RFID-1", "type": "ISO14443"},
               "meterValue": [{"timestamp": iso(RECEIVED), "sampledValue": [{"value": 1500.0}]}]}
    for version in ("2.1", "2.0.1"):
        assert schema_errors(version, "TransactionEvent", payload) == []
        rec = parse_message("TransactionEvent", payload, version, "st1", received=RECEIVED,
                            pseudonymise=lambda raw: "p:" + raw)
        assert rec is not None
        assert (rec.event, rec.evse_id, rec.transaction_id) == ("Started", 2, "tx-9")
        assert rec.ev_id == "p:RFID-1" and rec.session_id == "p:st1/tx-9" == session_key("st1", "tx-9", "p:".__add__)
        assert rec.started == RECEIVED and rec.energy_import_kwh == 1.5
        assert "RFID-1" not in json.dumps(rec.to_dict()).replace("p:RFID-1", "")


def test_ev_charging_needs_of_21_and_201() -> None:
    departure = RECEIVED + timedelta(hours=8)
    v21 = {"evseId": 1, "timestamp": iso(RECEIVED), "chargingNeeds": {
        "requestedEnergyTransfer": "DC_BPT", "departureTime": iso(departure),
        "dcChargingParameters": {"evMaxCurrent": 200, "evMaxVoltage": 400, "evEnergyCapacity": 60000,
                                 "stateOfCharge": 40},
        "v2xChargingParameters": {"maxChargePower": 50000, "maxDischargePower": 20000, "evTargetEnergyRequest": 24000,
                                  "evMinV2XEnergyRequest": -12000, "targetSoC": 80}}}
    assert schema_errors("2.1", "NotifyEVChargingNeeds", v21) == []
    rec = parse_message("NotifyEVChargingNeeds", v21, "2.1", "st1", received=RECEIVED - timedelta(hours=1))
    assert rec is not None and rec.time == RECEIVED and rec.departure == departure
    assert (rec.soc, rec.target_soc, rec.capacity_kwh) == (0.4, 0.8, 60.0)
    assert (rec.energy_need_kwh, rec.v2x_min_energy_kwh, rec.p_ch_max_kw, rec.p_dis_max_kw) == (24.0, -12.0, 50.0, 20.0)
    v201 = {"evseId": 3, "chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase", "departureTime": iso(departure),
                                           "acChargingParameters": {"energyAmount": 15000, "evMinCurrent": 6,
                                                                    "evMaxCurrent": 16, "evMaxVoltage": 400}}}
    assert schema_errors("2.0.1", "NotifyEVChargingNeeds", v201) == []
    rec = parse_message("NotifyEVChargingNeeds", v201, "2.0.1", "st1", received=RECEIVED)
    assert rec is not None and rec.time == RECEIVED and rec.energy_need_kwh == 15.0 and rec.evse_id == 3


def test_ocpp_16_transactions_and_meter_values() -> None:
    start = {"connectorId": 1, "idTag": "TAG1", "meterStart": 2000, "timestamp": iso(RECEIVED)}
    mv = {"connectorId": 1, "transactionId": 7, "meterValue": [{"timestamp": iso(RECEIVED), "sampledValue": [
        {"value": "61.5", "measurand": "SoC", "unit": "Percent"}, {"value": "7.2", "measurand": "Power.Active.Import",
                                                                   "unit": "kW"}]}]}
    stop = {"meterStop": 9000, "timestamp": iso(RECEIVED + timedelta(hours=1)), "transactionId": 7}
    for action, payload in (("StartTransaction", start), ("MeterValues", mv), ("StopTransaction", stop)):
        assert schema_errors("1.6", action, payload) == []
    rec = parse_message("StartTransaction", start, "1.6", "st1", received=RECEIVED, transaction_id="7")
    assert rec is not None and (rec.event, rec.evse_id, rec.ev_id, rec.session_id) == ("Started", 1, "TAG1", "st1/7")
    assert rec.energy_import_kwh == 2.0 and rec.started == RECEIVED
    rec = parse_message("MeterValues", mv, "1.6", "st1", received=RECEIVED)
    assert rec is not None and rec.soc == 0.615 and rec.power_kw == 7.2 and rec.session_id == "st1/7"
    rec = parse_message("StopTransaction", stop, "1.6", "st1", received=RECEIVED)
    assert rec is not None and (rec.event, rec.evse_id, rec.transaction_id) == ("Ended", None, "7")
    assert rec.energy_import_kwh == 9.0
    assert parse_message("Heartbeat", {}, "1.6", "st1", received=RECEIVED) is None


@pytest.mark.parametrize(("sample", "match"), [
    ({"value": math.nan, "measurand": "SoC"}, r"meterValue\[0\]\.sampledValue\[0\]\.value.*not a finite number"),
    ({"value": 5.0, "unitOfMeasure": {"unit": "A"}}, r"sampledValue\[0\]\.unit.*'A'; expected Wh or kWh"),
    ({"value": -1.0}, r"sampledValue\[0\]\.value.*negative"),
    ({"value": -1.0, "measurand": "Power.Active.Export"}, r"sampledValue\[0\]\.value.*negative"),
    ({"value": 120.0, "measurand": "SoC"}, r"sampledValue\[0\]\.value.*above 100 %"),
])
def test_bad_meter_values_are_refused_naming_the_field(sample: dict[str, Any], match: str) -> None:
    payload = {"evseId": 1, "meterValue": [{"timestamp": iso(RECEIVED), "sampledValue": [sample]}]}
    with pytest.raises(DataError, match=match) as err:
        parse_message("MeterValues", payload, "2.1", "st1", received=RECEIVED)
    assert "OCPP MeterValues" in str(err.value) and "\n" not in str(err.value)


def test_bad_times_and_needs_are_refused() -> None:
    naive = {"evseId": 1, "meterValue": [{"timestamp": "2026-01-01T08:00:00", "sampledValue": [{"value": 1.0}]}]}
    with pytest.raises(DataError, match=r"meterValue\[0\]\.timestamp.*no UTC offset"):
        parse_message("MeterValues", naive, "2.1", "st1", received=RECEIVED)
    needs = {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "DC", "dcChargingParameters": {
        "evMaxCurrent": 100, "evMaxVoltage": 400, "evEnergyCapacity": -5}}}
    with pytest.raises(DataError, match=r"dcChargingParameters\.evEnergyCapacity.*negative"):
        parse_message("NotifyEVChargingNeeds", needs, "2.0.1", "st1", received=RECEIVED)
    with pytest.raises(DataError, match="evseId.*missing"):
        parse_message("MeterValues", {"meterValue": []}, "2.1", "st1", received=RECEIVED)
    with pytest.raises(DataError, match="received .* no UTC offset"):
        parse_message("MeterValues", naive, "2.1", "st1", received=datetime(2026, 1, 1))


# ---------------------------------------------------------------------------------------------- controller state

def test_latest_telemetry_becomes_the_controllers_ev_states() -> None:
    base = Telemetry(station_id="st1", evse_id=1, time=RECEIVED - timedelta(hours=1), source="TransactionEvent",
                     event="Started", session_id="s1", ev_id="ev1", started=RECEIVED - timedelta(hours=1),
                     soc=0.3, power_kw=0.0)
    later = Telemetry(station_id="st1", evse_id=1, time=RECEIVED, source="NotifyEVChargingNeeds",
                      departure=RECEIVED + timedelta(hours=4), energy_need_kwh=20.0, p_dis_max_kw=11.0)
    rec = merge_telemetry(merge_telemetry(None, base), later)
    assert rec.time == RECEIVED and rec.soc == 0.3 and rec.session_id == "s1" and rec.energy_need_kwh == 20.0
    evs, skipped = ev_states([rec], ORIGIN, capacity_kwh={"ev1": 50.0})
    assert skipped == {}
    (e,) = evs
    assert (e.ev_id, e.session_id, e.station_id) == ("ev1", "s1", "st1")
    assert e.energy_kwh == pytest.approx(15.0) and e.soc == 0.3 and e.soc_target == pytest.approx(0.7)
    assert e.arrival_s == T0 - 3600 and e.departure_s == T0 + 4 * 3600 and e.p_dis_max_kw == 11.0
    assert ev_states([rec], ORIGIN, capacity_kwh={"ev1": 50.0}, charge_only={"st1"})[0][0].p_dis_max_kw == 0.0
    assert utc_instant(ORIGIN).tzinfo == timezone.utc


def test_sessions_the_controller_cannot_use_are_listed_with_the_reason() -> None:
    def rec(sid: str, **kw: Any) -> Telemetry:
        return Telemetry(**{"station_id": "st1", "evse_id": 1, "time": RECEIVED, "source": "MeterValues",
                            "session_id": sid, "ev_id": "ev1", "soc": 0.5, **kw})

    records = [rec("a", ev_id=None), rec("b", soc=None), rec("c", ev_id="unknown", energy_need_kwh=1.0),
               rec("d"), rec("e", target_soc=0.9), Telemetry("st1", 2, RECEIVED, "MeterValues", soc=0.5)]
    evs, skipped = ev_states(records, ORIGIN, capacity_kwh={"ev1": 40.0})
    assert [e.session_id for e in evs] == ["e"] and evs[0].soc_target == 0.9
    assert skipped == {"a": "no EV id (the station sent no idToken)", "b": "no SOC reported yet",
                       "c": "battery capacity of EV 'unknown' unknown",
                       "d": "no target SOC or energy need reported"}
    evs, skipped = ev_states(records, ORIGIN, capacity_kwh={"ev1": 40.0}, default_soc_target=0.8)
    assert [e.session_id for e in evs] == ["d", "e"] and evs[0].soc_target == 0.8 and "d" not in skipped

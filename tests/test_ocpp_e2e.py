"""OCPP smart charging end to end (issue 15, deliverable 3): optev's CSMS on localhost, simulated
charge points of the ``ocpp`` package (OCPP 2.1, 2.0.1 and 1.6) that boot and report their
sessions, and three control steps of the real controller on the embedded default instance —
the profiles every charge point receives are the decision's plans, in W, at the right offsets,
and validate against the package's JSON schemas, with V2G setpoints on the 2.1 station and a
charge-only profile on the fallback stations.

Async code runs through :func:`asyncio.run` inside plain test functions, under a timeout, so
that a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import websockets
from ocpp.charge_point import camel_to_snake_case
from ocpp.exceptions import OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v21 import ChargePoint as ChargePoint21
from websockets.typing import Subprotocol

from optev.blocks.window import instance_origin
from optev.io import read
from optev.io.embedded import default_instance
from optev.mpc import Controller
from optev.mpc.state import ControlDecision
from optev.server.ocpp_csms import OcppCsms
from optev.server.profiles import capacities, session_key

from test_ocpp_profiles import iso, schema_errors

TIMEOUT_S = 60.0
"""Whole-test timeout: a hang fails instead of blocking."""

STEP_S = 900
T0_S = 8 * 3600.0
"""First decision at 08:00 (instance time): the morning price peak, when V2G pays."""

CLIENTS = {"2.1": ChargePoint21, "2.0.1": ChargePoint201, "1.6": ChargePoint16}


def run(coro_fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), TIMEOUT_S))


# ---------------------------------------------------------------------------------------------- simulated stations

@dataclass
class SimEV:
    ev_id: str
    evse: int
    soc: float
    capacity_kwh: float
    departure: datetime | None = None
    target_soc: float = 0.8
    p_kw: float = 0.0
    transaction_id: str | None = None


class _Received:
    """Records every SetChargingProfile payload as it arrived on the wire (camelCase)."""

    received: list[dict[str, Any]]
    answer: str
    delay_s: float

    async def route_message(self, raw_msg: str | bytes) -> None:
        msg = json.loads(raw_msg)
        if msg[0] == 2 and msg[2] == "SetChargingProfile":
            self.received.append(msg[3])
        await super().route_message(raw_msg)  # type: ignore[misc]

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, **_: Any) -> Any:
        await asyncio.sleep(self.delay_s)
        return self._call_result.SetChargingProfile(status=self.answer)  # type: ignore[attr-defined]


def _client_class(version: str) -> type:
    return type(f"SimCp{version.replace('.', '')}", (_Received, CLIENTS[version]), {})


@dataclass
class SimStation:
    """A charge point of the ``ocpp`` package's client side with its plugged EVs."""

    station_id: str
    version: str
    evs: list[SimEV]
    answer: str = "Accepted"
    delay_s: float = 0.0
    cp: Any = None
    ws: Any = None
    task: Any = None
    seq: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] | None = None
    """Extra headers of the websocket upgrade (``Authorization: Basic ...``)."""

    async def connect(self, url: str) -> None:
        self.ws = await websockets.connect(url + self.station_id, subprotocols=[Subprotocol(f"ocpp{self.version}")],
                                           additional_headers=self.headers)
        self.cp = _client_class(self.version)(self.station_id, self.ws, response_timeout=10)
        self.cp.received, self.cp.answer, self.cp.delay_s = self.received, self.answer, self.delay_s
        self.task = asyncio.create_task(self.cp.start())

    async def close(self) -> None:
        if self.ws is None:
            return
        await self.ws.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.ws = None

    async def send(self, action: str, payload: dict[str, Any]) -> Any:
        request = getattr(self.cp._call, action)(**camel_to_snake_case(payload))
        return await self.cp.call(request, suppress=False)

    async def boot(self) -> None:
        if self.version == "1.6":
            await self.send("BootNotification", {"chargePointVendor": "SimVendor", "chargePointModel": "Sim16"})
        else:
            await self.send("BootNotification", {"chargingStation": {"vendorName": "SimVendor", "model": "Sim2x"},
                                                 "reason": "PowerUp"})
        for ev in self.evs:
            if self.version == "1.6":
                await self.send("StatusNotification", {"connectorId": ev.evse, "errorCode": "NoError",
                                                       "status": "Charging"})
            else:
                await self.send("StatusNotification", {"timestamp": iso(datetime.now(timezone.utc)),
                                                       "connectorStatus": "Occupied", "evseId": ev.evse,
                                                       "connectorId": 1})

    def samples(self, ev: SimEV) -> list[dict[str, Any]]:
        imp, exp = max(ev.p_kw, 0.0) * 1000.0, max(-ev.p_kw, 0.0) * 1000.0
        if self.version == "1.6":
            return [{"value": f"{ev.soc * 100:.1f}", "measurand": "SoC", "unit": "Percent"},
                    {"value": f"{imp:.0f}", "measurand": "Power.Active.Import", "unit": "W"}]
        return [{"value": round(ev.soc * 100, 2), "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}},
                {"value": imp / 1000.0, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}},
                {"value": exp, "measurand": "Power.Active.Export"}]

    async def plug_in(self, at: datetime) -> None:
        """Start a transaction per EV and report its needs."""
        for ev in self.evs:
            if self.version == "1.6":
                answer = await self.send("StartTransaction", {"connectorId": ev.evse, "idTag": ev.ev_id,
                                                              "meterStart": 1000, "timestamp": iso(at)})
                ev.transaction_id = str(answer.transaction_id)
                continue
            ev.transaction_id = f"{self.station_id}-tx{ev.evse}"
            await self.send("TransactionEvent", {
                "eventType": "Started", "timestamp": iso(at), "triggerReason": "CablePluggedIn", "seqNo": self.seq,
                "transactionInfo": {"transactionId": ev.transaction_id}, "evse": {"id": ev.evse, "connectorId": 1},
                "idToken": {"idToken": ev.ev_id, "type": "Central"},
                "meterValue": [{"timestamp": iso(at), "sampledValue": self.samples(ev)}]})
            self.seq += 1
            await self.send("NotifyEVChargingNeeds", self.needs(ev, at))

    def needs(self, ev: SimEV, at: datetime) -> dict[str, Any]:
        need_wh = max(ev.target_soc - ev.soc, 0.0) * ev.capacity_kwh * 1000.0
        assert ev.departure is not None
        if self.version == "2.1":
            return {"evseId": ev.evse, "timestamp": iso(at), "chargingNeeds": {
                "requestedEnergyTransfer": "AC_BPT", "departureTime": iso(ev.departure),
                "v2xChargingParameters": {"maxChargePower": 7000.0, "maxDischargePower": 20000.0,
                                          "evTargetEnergyRequest": round(need_wh)}}}
        return {"evseId": ev.evse, "chargingNeeds": {
            "requestedEnergyTransfer": "AC_three_phase", "departureTime": iso(ev.departure),
            "acChargingParameters": {"energyAmount": round(need_wh), "evMinCurrent": 6, "evMaxCurrent": 32,
                                     "evMaxVoltage": 400}}}

    async def report(self, at: datetime) -> None:
        """Meter values of every EV at ``at``."""
        for ev in self.evs:
            sample = {"timestamp": iso(at), "sampledValue": self.samples(ev)}
            if self.version == "1.6":
                await self.send("MeterValues", {"connectorId": ev.evse, "transactionId": int(ev.transaction_id or 0),
                                                "meterValue": [sample]})
            else:
                await self.send("MeterValues", {"evseId": ev.evse, "meterValue": [sample]})

    def apply(self, dt_s: float) -> None:
        """Follow the latest TxProfile of every EV for ``dt_s``: its first period."""
        for ev in self.evs:
            profile = _profile_of(self.version, [p for p in self.received if _evse_of(self.version, p) == ev.evse])
            if profile is not None:
                ev.p_kw = _expand(self.version, profile, 1, STEP_S)[0] / 1000.0
            eff = 0.9 if ev.p_kw >= 0 else 1 / 0.9
            ev.soc = min(1.0, max(0.0, ev.soc + ev.p_kw * eff * dt_s / 3600.0 / ev.capacity_kwh))


@contextlib.asynccontextmanager
async def closing(stations: list[SimStation]) -> AsyncIterator[None]:
    """Close the stations' connections however the block ends."""
    try:
        yield
    finally:
        for st in stations:
            await st.close()


def _evse_of(version: str, payload: dict[str, Any]) -> int:
    return int(payload["connectorId"] if version == "1.6" else payload["evseId"])


def _profile_of(version: str, payloads: list[dict[str, Any]]) -> dict[str, Any] | None:
    return (payloads[-1]["csChargingProfiles"] if version == "1.6" else payloads[-1]["chargingProfile"]) \
        if payloads else None


def _schedule(version: str, profile: dict[str, Any]) -> dict[str, Any]:
    return profile["chargingSchedule"] if version == "1.6" else profile["chargingSchedule"][0]


def _expand(version: str, profile: dict[str, Any], steps: int, step_s: int) -> list[float]:
    """The power (W) a received profile commands at each of ``steps`` offsets of ``step_s``:
    the setpoint where there is one, else the limit (the expected power of a charge-only period)."""
    periods = _schedule(version, profile)["chargingSchedulePeriod"]
    out = []
    for k in range(steps):
        current = [p for p in periods if p["startPeriod"] <= k * step_s][-1]
        out.append(float(current.get("setpoint", current["limit"])))
    return out


# ---------------------------------------------------------------------------------------------- the end-to-end run

@pytest.fixture(scope="module")
def inst():
    return read(default_instance())


def _fleet(origin: datetime) -> list[SimStation]:
    """Three stations of the default instance, one per OCPP version; V2G EVs at the V2G chargers."""
    def at(**kw: float) -> datetime:
        return origin + timedelta(**kw)

    return [
        SimStation("scs_N8", "2.1", [SimEV("car00004", 1, 0.9, 55.9, departure=at(hours=16)),
                                     SimEV("car00001", 2, 0.5, 55.9, departure=at(hours=12), target_soc=0.9)]),
        SimStation("scs_N10", "2.0.1", [SimEV("car00007", 1, 0.6, 55.9, departure=at(hours=17))]),
        SimStation("fcs_CS1", "1.6", [SimEV("car00000", 3, 0.3, 76.8)]),
    ]


def planned(decision: ControlDecision, session_id: str, ev_id: str) -> tuple[list[float], float]:
    """The plan of a session and its start (s): over the horizon, or only the interval's
    setpoint for an EV that leaves during the interval (it has no plan)."""
    if session_id in decision.ev_plan_kw:
        assert decision.plan_step_s == STEP_S
        return decision.ev_plan_kw[session_id], decision.plan_start_s
    return [decision.setpoints.ev_kw[ev_id]], decision.time_s


def _check_profiles(decision: ControlDecision, station: SimStation, payloads: list[dict[str, Any]],
                    origin: datetime) -> None:
    """Every received TxProfile is the decision's plan of its session: W = kW × 1000 at
    k · plan_step_s after the plan start; charge only (discharge clipped to 0) below 2.1."""
    assert len(payloads) == len(station.evs)
    for payload in payloads:
        assert schema_errors(station.version, "SetChargingProfile", payload) == []
        ev = next(e for e in station.evs if e.evse == _evse_of(station.version, payload))
        profile = _profile_of(station.version, [payload])
        assert profile is not None and profile["chargingProfilePurpose"] == "TxProfile"
        assert str(profile["transactionId"]) == ev.transaction_id
        plan, start_s = planned(decision, session_key(station.station_id, str(ev.transaction_id)), ev.ev_id)
        schedule = _schedule(station.version, profile)
        assert schedule["startSchedule"] == profile["validFrom"] == iso(origin + timedelta(seconds=start_s))
        assert schedule["duration"] == len(plan) * STEP_S
        assert profile["validTo"] == iso(origin + timedelta(seconds=start_s + len(plan) * STEP_S))
        assert schedule["chargingRateUnit"] == "W"
        got = _expand(station.version, profile, len(plan), STEP_S)
        expected = [kw * 1000.0 if station.version == "2.1" else max(kw, 0.0) * 1000.0 for kw in plan]
        assert got == expected
        assert got[0] == (decision.setpoints.ev_kw[ev.ev_id] * 1000.0 if station.version == "2.1"
                          else max(decision.setpoints.ev_kw[ev.ev_id], 0.0) * 1000.0)
        for period in schedule["chargingSchedulePeriod"]:
            assert period["startPeriod"] % STEP_S == 0
            if station.version != "2.1":
                assert set(period) == {"startPeriod", "limit"} and period["limit"] >= 0
            elif period.get("setpoint", 0) < 0:
                assert period["operationMode"] == "CentralSetpoint"
                assert period["dischargeLimit"] == period["setpoint"] and period["limit"] == 0
            else:
                assert period["operationMode"] == "ChargingOnly" and "setpoint" not in period


def test_three_control_steps_end_to_end(inst) -> None:
    origin = instance_origin(inst).to_pydatetime()
    ctl = Controller("station_v2g", inst, step="15min", horizon="4h")
    fleet = _fleet(origin)
    clock = [origin + timedelta(seconds=T0_S)]
    seen: dict[str, list[float]] = {}

    async def main() -> None:
        async with OcppCsms(origin, port=0, clock=lambda: clock[0]) as csms, closing(fleet):
            assert csms.port > 0
            for st in fleet:
                await st.connect(csms.url)
                await st.boot()
                await st.plug_in(origin + timedelta(hours=7))
            assert {s: i.version for s, i in csms.stations().items()} == {"scs_N8": "2.1", "scs_N10": "2.0.1",
                                                                           "fcs_CS1": "1.6"}
            assert csms.stations()["scs_N8"].vendor == "SimVendor"
            assert csms.stations()["fcs_CS1"].evse_status == {3: "Charging"}
            for k in range(3):
                t_s = T0_S + k * STEP_S
                clock[0] = origin + timedelta(seconds=t_s)
                for st in fleet:
                    await st.report(clock[0])
                state, skipped = csms.control_state(t_s, capacity_kwh=capacities(inst), default_soc_target=0.8,
                                                    stations=ctl.station_ids)
                assert skipped == {}
                assert sorted(e.ev_id for e in state.evs) == ["car00000", "car00001", "car00004", "car00007"]
                decision = ctl.step(state)
                assert decision.stats.status == "optimal"
                before = {st.station_id: len(st.received) for st in fleet}
                answers = await csms.dispatch(decision)
                assert {s: a.status for s, a in answers.items()} == {"fcs_CS1": "Accepted", "scs_N10": "Accepted",
                                                                     "scs_N8": "Accepted"}
                for st in fleet:
                    _check_profiles(decision, st, st.received[before[st.station_id]:], origin)
                    for p in answers[st.station_id].profiles:
                        ev_id = next(e.ev_id for e in state.evs if e.session_id == p.session_id)
                        plan = planned(decision, str(p.session_id), ev_id)[0]
                        assert p.discharge_clipped == (st.version != "2.1" and min(plan) < 0)
                    st.apply(STEP_S)
                for e in state.evs:
                    seen.setdefault(e.ev_id, []).extend(planned(decision, e.session_id, e.ev_id)[0])

    run(main)
    # V2G: the 2.1 station received negative setpoints; the 2.0.1 station's V2G EV was planned to
    # discharge too, and got a charge-only profile (checked above, flagged as clipped)
    assert min(seen["car00004"]) < 0
    assert min(seen["car00007"]) < 0


def test_measured_state_follows_the_telemetry(inst) -> None:
    """What the charge points reported is what the controller's state holds."""
    origin = instance_origin(inst).to_pydatetime()
    fleet = _fleet(origin)
    now = origin + timedelta(seconds=T0_S)

    async def main() -> None:
        async with OcppCsms(origin, clock=lambda: now) as csms, closing(fleet):
            for st in fleet:
                await st.connect(csms.url)
                await st.boot()
                await st.plug_in(origin + timedelta(hours=7))
                await st.report(now)
            state, skipped = csms.control_state(T0_S, capacity_kwh=capacities(inst))
            assert skipped == {session_key("fcs_CS1", "1"): "no target SOC or energy need reported"}
            evs = {e.ev_id: e for e in state.evs}
            v2g = evs["car00004"]
            assert v2g.station_id == "scs_N8" and v2g.session_id == "scs_N8/scs_N8-tx1"
            assert v2g.soc == pytest.approx(0.9) and v2g.energy_kwh == pytest.approx(0.9 * 55.9)
            assert v2g.arrival_s == 7 * 3600.0 and v2g.departure_s == 16 * 3600.0
            assert v2g.p_ch_max_kw == 7.0 and v2g.p_dis_max_kw == 20.0
            assert v2g.soc_target == pytest.approx(0.9)      # no need above the target: its SOC
            assert evs["car00007"].p_dis_max_kw == 0.0        # OCPP 2.0.1: charge only
            assert evs["car00007"].soc_target == pytest.approx(0.8, abs=1e-4)
            # OCPP 1.6: the transaction stops, the session leaves the state
            fast = fleet[2]
            await fast.send("StopTransaction", {"meterStop": 40000, "timestamp": iso(now),
                                                "transactionId": int(fast.evs[0].transaction_id or 0)})
            state, skipped = csms.control_state(T0_S, capacity_kwh=capacities(inst))
            assert skipped == {} and "car00000" not in {e.ev_id for e in state.evs}
            for st in fleet:
                await st.close()
            await asyncio.sleep(0.05)
            state, _ = csms.control_state(T0_S, capacity_kwh=capacities(inst), default_soc_target=0.8)
            assert state.offline_stations == {"fcs_CS1": T0_S, "scs_N10": T0_S, "scs_N8": T0_S}
            assert len(state.evs) == 3                         # still plugged in as far as anyone knows

    run(main)


def test_unreachable_rejected_and_transaction_end(inst) -> None:
    origin = instance_origin(inst).to_pydatetime()
    ctl = Controller("station_v2g", inst, step="15min", horizon="2h")
    now = origin + timedelta(seconds=T0_S)

    def at(**kw: float) -> datetime:
        return origin + timedelta(**kw)

    refusing = SimStation("scs_N12", "2.1", [SimEV("car00011", 1, 0.5, 100.0, departure=at(hours=15))],
                          answer="Rejected")
    leaving = SimStation("scs_N13", "2.1", [SimEV("car00013", 1, 0.5, 84.0, departure=at(hours=15))])
    slow = SimStation("scs_N32", "2.1", [SimEV("car00014", 1, 0.5, 100.0, departure=at(hours=15))], delay_s=2.0)

    async def main() -> None:
        async with OcppCsms(origin, clock=lambda: now, response_timeout_s=0.5) as csms, \
                closing([refusing, leaving, slow]):
            for st in (refusing, leaving, slow):
                await st.connect(csms.url)
                await st.boot()
                await st.plug_in(at(hours=7))
                await st.report(now)
            state, _ = csms.control_state(T0_S, capacity_kwh=capacities(inst))
            decision = ctl.step(state)
            await leaving.close()
            await asyncio.sleep(0.05)
            answers = await csms.dispatch(decision)
            assert answers["scs_N12"].status == "Rejected" and answers["scs_N12"].profiles[0].status == "Rejected"
            assert answers["scs_N13"].status == "unreachable" and answers["scs_N13"].reason == "not connected"
            assert answers["scs_N32"].status == "unreachable"
            assert answers["scs_N32"].profiles[0].reason == "no answer within 0.5 s"
            # the transaction ends: nothing left to address at the station
            await refusing.send("TransactionEvent", {
                "eventType": "Ended", "timestamp": iso(now), "triggerReason": "EVDeparted", "seqNo": 9,
                "transactionInfo": {"transactionId": refusing.evs[0].transaction_id, "stoppedReason": "EVDisconnected"}})
            assert [s.station_id for s in csms.sessions()] == ["scs_N13", "scs_N32"]
            assert (await csms.dispatch(decision))["scs_N12"].status == "nothing_to_send"

    run(main)


def test_station_wide_profile_and_pseudonymised_ids(inst) -> None:
    """Raw station ids and idTokens stop at the edge; the station-wide cap on request."""
    origin = instance_origin(inst).to_pydatetime()
    ctl = Controller("station_v2g", inst, step="15min", horizon="2h")
    now = origin + timedelta(seconds=T0_S)
    raw = SimStation("CP-0042", "2.1", [SimEV("RFID-9F3A", 1, 0.9, 55.9,
                                              departure=origin + timedelta(hours=16))])
    alias = {"CP-0042": "scs_N8", "RFID-9F3A": "car00004"}
    stored: list[Any] = []

    def pseudonymise(raw_id: str) -> str:
        return alias.get(raw_id, "h-" + str(len(raw_id)))

    async def main() -> None:
        async with OcppCsms(origin, clock=lambda: now, pseudonymise=pseudonymise,
                            on_telemetry=stored.append) as csms, closing([raw]):
            await raw.connect(csms.url)
            await raw.boot()
            await raw.plug_in(origin + timedelta(hours=7))
            await raw.report(now)
            assert list(csms.stations()) == ["scs_N8"]
            state, _ = csms.control_state(T0_S, capacity_kwh=capacities(inst))
            assert [(e.ev_id, e.station_id) for e in state.evs] == [("car00004", "scs_N8")]
            text = json.dumps([r.to_dict() for r in stored + csms.telemetry()])
            assert "CP-0042" not in text and "RFID-9F3A" not in text
            assert state.evs[0].session_id == "h-18"            # pseudonymise("scs_N8/CP-0042-tx1")
            decision = ctl.step(state)
            answers = await csms.dispatch(decision, station_profiles=True)
            assert [p.purpose for p in answers["scs_N8"].profiles] == ["ChargingStationMaxProfile", "TxProfile"]
            cap = raw.received[0]["chargingProfile"]
            assert raw.received[0]["evseId"] == 0 and schema_errors("2.1", "SetChargingProfile", raw.received[0]) == []
            plan = decision.station_plan_kw["scs_N8"]
            assert _expand("2.1", cap, len(plan), STEP_S) == [max(kw, 0.0) * 1000.0 for kw in plan]

    run(main)


def test_bad_telemetry_is_refused_and_not_stored(inst) -> None:
    origin = instance_origin(inst).to_pydatetime()
    now = origin + timedelta(seconds=T0_S)
    st = SimStation("scs_N8", "2.1", [SimEV("car00004", 1, 0.9, 55.9, departure=origin + timedelta(hours=16))])

    async def main() -> None:
        async with OcppCsms(origin, clock=lambda: now) as csms, closing([st]):
            await st.connect(csms.url)
            await st.boot()
            with pytest.raises(OCPPError, match=r"sampledValue\[0\]\.unit.*Wh"):
                await st.send("MeterValues", {"evseId": 1, "meterValue": [{"timestamp": iso(now), "sampledValue": [
                    {"value": 5.0, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "A"}}]}]})
            assert csms.telemetry() == []

    run(main)


def test_connections_without_station_id_or_subprotocol_are_refused(inst) -> None:
    origin = instance_origin(inst).to_pydatetime()

    async def main() -> None:
        async with OcppCsms(origin) as csms:
            with pytest.raises(websockets.exceptions.InvalidStatus, match="404"):
                await websockets.connect(csms.url, subprotocols=[Subprotocol("ocpp2.1")])
            with pytest.raises(websockets.exceptions.InvalidStatus, match="400"):
                await websockets.connect(csms.url + "CP1")
            assert csms.stations() == {}

    run(main)

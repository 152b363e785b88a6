"""OCPP inside the dispatch service (issue 15): ``optev serve``'s CSMS, its control cycle and its ids.

The service runs on uvicorn in the test's event loop (127.0.0.1, a free port) with the CSMS of
its lifespan on another free port. Simulated charge points of the ``ocpp`` package
(:mod:`test_ocpp_e2e`) connect under raw identities and idTokens enrolled by pseudonym; the
operator ticks three control intervals and every charge point must receive the stored decision
as profiles (W = kW × 1000, valid against the package's JSON schemas): V2G setpoints on the 2.1
station, and on the 2.0.1 and 1.6 stations charge-only profiles of a decision that planned no
discharge there (still none after the 2.0.1 station disconnects, a fourth tick). The ticks and
the sending are in the audit log, and no raw id reaches the database, the audit log, the logs or
an answer; the service's shutdown closes the charge points' connections. Every asyncio run is
under a timeout (:func:`test_ocpp_e2e.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import uvicorn
import websockets
from fastapi.testclient import TestClient
from websockets.typing import Subprotocol

from optev.blocks.window import instance_origin
from optev.cli import main as cli_main
from optev.cli_serve import listen
from optev.errors import OptionError
from optev.io import read
from optev.io.embedded import default_instance
from optev.mpc import Controller
from optev.mpc.state import ControlDecision, EVState
from optev.privacy.pseudonym import Keyring, create_keyfile, is_pseudonym
from optev.server.app import create_app
from optev.server.auth import parse_env_keys
from optev.server.config import ServeConfig, load_config
from optev.server.ocpp_bridge import AUTODISPATCH_PRINCIPAL, CSMS_PRINCIPAL, EdgeIds, cannot_discharge

from test_cli_serve import Server
from test_ocpp_e2e import STEP_S, T0_S, SimEV, SimStation, _evse_of, _expand, _profile_of, _schedule, closing, run
from test_ocpp_profiles import iso, schema_errors

OPERATOR, AUDITOR, STATION_KEY = "op-key-0000000000000001", "au-key-0000000000000001", "st-key-0000000000000001"
AS_OPERATOR = {"Authorization": f"Bearer {OPERATOR}"}
AS_AUDITOR = {"Authorization": f"Bearer {AUDITOR}"}
STATIONS = {"CP-0008": "scs_N8", "CP-0010": "scs_N10", "CP-FAST-1": "fcs_CS1"}
TOKENS = {"RFID-A4": "car00004", "RFID-A1": "car00001", "RFID-A7": "car00007", "RFID-A0": "car00000"}
RAW_MARKS = ("CP-", "RFID")
"""Every raw identity and idToken of the test contains one of these; no stored or answered text may."""
TOKENS_AT_N8 = ("RFID-A4", "RFID-A1")
"""The enrolled EVs of the 2.1 charge point (one TxProfile each per tick)."""


@pytest.fixture(scope="module")
def inst() -> Any:
    return read(default_instance())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keyring]:
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    return path, create_keyfile(path)


def _config(folder: Path, keys: tuple[Path, Keyring], **fields: Any) -> ServeConfig:
    path, ring = keys
    enrolled = tuple([(ring.pseudonym(raw, kind="cs"), sid) for raw, sid in STATIONS.items()]
                     + [(ring.pseudonym(raw, kind="ev"), ev) for raw, ev in TOKENS.items()])
    base = load_config(None, database=folder / "serve.db", formulation="station_v2g", horizon="2h")
    api_keys = parse_env_keys(f"{OPERATOR}:operator,{AUDITOR}:auditor,{STATION_KEY}:station=scs_N8")
    return dataclasses.replace(base, keys=tuple(api_keys),
                               pseudonym_keys=path, ocpp_port=0, ocpp_ids=enrolled, ocpp_default_soc_target=0.8,
                               **fields).checked()


def _fleet(origin: datetime) -> list[SimStation]:
    """One charge point per OCPP version under raw ids, a guest with an unknown token, a stranger."""
    def at(hours: float) -> datetime:
        return origin + timedelta(hours=hours)

    return [SimStation("CP-0008", "2.1", [SimEV("RFID-A4", 1, 0.9, 55.9, departure=at(16)),
                                          SimEV("RFID-A1", 2, 0.5, 55.9, departure=at(12), target_soc=0.9),
                                          SimEV("RFID-GUEST", 3, 0.5, 60.0, departure=at(12))]),
            SimStation("CP-0010", "2.0.1", [SimEV("RFID-A7", 1, 0.6, 55.9, departure=at(17))]),
            SimStation("CP-FAST-1", "1.6", [SimEV("RFID-A0", 3, 0.3, 76.8)]),
            SimStation("CP-STRANGER", "2.1", [SimEV("RFID-ZZ", 1, 0.5, 60.0, departure=at(12))])]


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The application on uvicorn in this event loop (its lifespan starts the CSMS); a client of it."""
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_config=None, access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=30.0) as client:
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _connect(url: str, fleet: list[SimStation], origin: datetime) -> None:
    for st in fleet:
        await st.connect(url)
        await st.boot()
        await st.plug_in(origin + timedelta(hours=7))


def _planned(decision: ControlDecision, session: str, ev_of: dict[str, str]) -> tuple[list[float], float]:
    """A session's plan and its start (s): the horizon, or the interval's setpoint alone."""
    if session in decision.ev_plan_kw:
        return decision.ev_plan_kw[session], decision.plan_start_s
    return [decision.setpoints.ev_kw[ev_of[session]]], decision.time_s


def _check_station(decision: ControlDecision, ev_of: dict[str, str], st: SimStation, payloads: list[dict[str, Any]],
                   answered: dict[str, Any], origin: datetime) -> list[float]:
    """The TxProfiles a charge point received are the decision's plans of their sessions (W);
    the powers (W) it received."""
    assert answered["status"] == "Accepted" and len(payloads) == len(answered["profiles"])
    sent: list[float] = []
    for payload, profile in zip(payloads, answered["profiles"]):
        assert schema_errors(st.version, "SetChargingProfile", payload) == []
        assert _evse_of(st.version, payload) == profile["evse_id"] and profile["status"] == "Accepted"
        session = profile["session_id"]
        assert is_pseudonym(session) and session.startswith("tx-")
        plan, start_s = _planned(decision, session, ev_of)
        got = _profile_of(st.version, [payload])
        assert got is not None and got["chargingProfilePurpose"] == "TxProfile"
        schedule = _schedule(st.version, got)
        assert schedule["chargingRateUnit"] == "W" and schedule["startSchedule"] == iso(origin + timedelta(
            seconds=start_s))
        watts = _expand(st.version, got, len(plan), STEP_S)
        assert watts == [kw * 1000.0 for kw in plan]
        if st.version != "2.1":
            assert min(plan) >= 0 and profile["discharge_clipped"] is False
        sent.extend(watts)
    return sent


async def _listed(client: httpx.AsyncClient) -> str:
    """``GET /v1/ocpp/stations`` lists the four charge points by optev's ids (for the operator and the
    auditor only); the stranger's pseudonym."""
    assert (await client.get("/v1/ocpp/stations")).status_code == 401
    station = await client.get("/v1/ocpp/stations", headers={"Authorization": f"Bearer {STATION_KEY}"})
    assert station.status_code == 403
    listed = (await client.get("/v1/ocpp/stations", headers=AS_AUDITOR)).json()
    assert listed["url"].startswith("ws://127.0.0.1:")
    versions = {s["station_id"]: (s["version"], s["planned"], s["connected"]) for s in listed["stations"]}
    stranger = next(s for s in versions if s not in STATIONS.values())
    assert stranger.startswith("cs-k1-") and versions.pop(stranger) == ("2.1", False, True)
    assert versions == {"scs_N8": ("2.1", True, True), "scs_N10": ("2.0.1", True, True),
                        "fcs_CS1": ("1.6", True, True)}
    return stranger


async def _tick(client: httpx.AsyncClient, app: Any, t_s: float, fleet: list[SimStation], stranger: str,
                v2g_w: list[float]) -> dict[str, Any]:
    """Report, tick at ``t_s``, check what every charge point received against the stored
    decision, let the EVs follow it for an interval; the answer."""
    origin = app.state.ocpp.origin
    by_station = dict(zip(STATIONS.values(), fleet))
    for st in fleet:
        await st.report(origin + timedelta(seconds=t_s))
    before = {sid: len(st.received) for sid, st in by_station.items()}
    r = await client.post("/v1/tick", json={"time_s": t_s}, headers=AS_OPERATOR)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    assert answer["source"] == "controller" and answer["time_s"] == t_s
    stored = app.state.dispatcher.store.latest_decision()
    assert stored.id == answer["decision_id"]
    assert json.loads(json.dumps(stored.decision.to_dict())) == answer["decision"]
    decision = stored.decision
    ev_of = {e.session_id: e.ev_id for e in app.state.dispatcher.latest.state.evs}
    ocpp = answer["ocpp"]
    assert sorted(ocpp["dispatch"]) == sorted(by_station)
    assert ocpp["no_discharge"] == ["car00000", "car00007"] and ocpp["unplanned_stations"] == [stranger]
    [(guest, why)] = ocpp["left_out"].items()  # the unknown token at CP-0008: its pseudonyms only
    assert guest.startswith("tx-k1-") and why.startswith("battery capacity of EV 'ev-k1-")
    for sid, st in by_station.items():
        sent = _check_station(decision, ev_of, st, st.received[before[sid]:], ocpp["dispatch"][sid], origin)
        if st.version == "2.1":
            v2g_w.extend(sent)
        st.apply(STEP_S)
    for ev in ("car00000", "car00007"):  # no discharge planned where none can be commanded
        assert decision.setpoints.ev_kw[ev] >= 0
    return answer


async def _tick_without(client: httpx.AsyncClient, app: Any, lost: SimStation) -> dict[str, Any]:
    """The 2.0.1 charge point disconnects: its EV stays planned from its last report, still
    without discharge, and the station is unreachable; the answer."""
    await lost.close()
    await asyncio.sleep(0.05)
    r = await client.post("/v1/tick", json={"time_s": T0_S + 3 * STEP_S}, headers=AS_OPERATOR)
    assert r.status_code == 200, r.text
    ocpp = r.json()["ocpp"]
    assert ocpp["dispatch"]["scs_N10"]["status"] == "unreachable" and "car00007" in ocpp["no_discharge"]
    decision = app.state.dispatcher.latest.decision
    assert decision.setpoints.ev_kw["car00007"] >= 0 and min(decision.ev_plan_kw[_session_of(
        app.state.dispatcher.latest.state.evs, "car00007")]) >= 0
    return dict(r.json())


def _raw_free(text: str, where: str) -> None:
    for mark in RAW_MARKS:
        assert mark not in text, f"a raw id ({mark}...) in {where}"


def test_ticks_send_the_stored_decision_to_every_charge_point(inst: Any, keys: Any, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="optev")
    config = _config(tmp_path, keys)
    app = create_app(config, instance=inst)
    origin = instance_origin(inst).to_pydatetime()
    fleet = _fleet(origin)
    answers: list[dict[str, Any]] = []
    v2g_w: list[float] = []

    async def main() -> None:
        async with closing(fleet):
            async with serving(app) as client:
                await _connect(app.state.ocpp.csms.url, fleet, origin)
                stranger = await _listed(client)
                for k in range(3):
                    answers.append(await _tick(client, app, T0_S + k * STEP_S, fleet, stranger, v2g_w))
                assert fleet[3].received == []  # the stranger is not planned
                answers.append(await _tick_without(client, app, fleet[1]))
                audit = (await client.get("/v1/audit", params={"limit": 1000}, headers=AS_AUDITOR)).json()["entries"]
                stations_text = (await client.get("/v1/ocpp/stations", headers=AS_OPERATOR)).text
            # the service stopped: the CSMS closed every charge point's connection and no longer listens
            await asyncio.wait_for(asyncio.gather(*(st.task for st in fleet), return_exceptions=True), 10)
            with pytest.raises(OSError):
                await websockets.connect(app.state.ocpp.csms.url + "CP-0008", subprotocols=[Subprotocol("ocpp2.1")])
        ticks = [e for e in audit if e["action"] == "POST /v1/tick"]
        assert [e["object"] for e in ticks] == [f"/v1/tick decision:{a['decision_id']}" for a in answers]
        assert all(e["outcome"] == "ok" and e["principal"].startswith("operator#") for e in ticks), ticks
        sends = [e for e in audit if e["principal"] == CSMS_PRINCIPAL]
        assert [(e["object"], e["outcome"]) for e in sends] == [
            (f"decision:{a['decision_id']} stations:3", "ok" if k < 3 else "failed:unreachable=1")
            for k, a in enumerate(answers)]
        _raw_free(stations_text + json.dumps(answers) + json.dumps(audit), "an answer")

    run(main)
    assert min(v2g_w) < 0  # the 2.1 station received V2G setpoints
    with contextlib.closing(sqlite3.connect(tmp_path / "serve.db")) as db:
        _raw_free("\n".join(db.iterdump()), "the database")
    _raw_free(config.audit_path.read_text(encoding="utf-8"), "the audit log")
    _raw_free("\n".join(r.getMessage() for r in caplog.records), "the log")
    # without the stations' capability the same state plans discharge at the 2.0.1 station
    state = app.state.dispatcher.newest_state()[1]
    free = Controller("station_v2g", inst, step="15min", horizon="2h").step(state)
    assert min(free.ev_plan_kw[_session_of(state.evs, "car00007")]) < 0


def _session_of(evs: list[EVState], ev_id: str) -> str:
    return next(e.session_id for e in evs if e.ev_id == ev_id)


def test_autodispatch_ticks_every_interval(inst: Any, keys: Any, tmp_path: Path) -> None:
    app = create_app(_config(tmp_path, keys, ocpp_autodispatch=True), instance=inst)
    app.state.ocpp.interval_s = 0.3
    origin = instance_origin(inst).to_pydatetime()
    station = _fleet(origin)[0]

    async def main() -> None:
        async with serving(app) as client, closing([station]):
            await _connect(app.state.ocpp.csms.url, [station], origin)
            await station.report(origin + timedelta(seconds=T0_S))
            assert (await client.post("/v1/tick", json={"time_s": T0_S}, headers=AS_OPERATOR)).status_code == 200
            while len(station.received) < 3 * len(TOKENS_AT_N8):
                await asyncio.sleep(0.05)
            audit = (await client.get("/v1/audit", params={"limit": 1000}, headers=AS_AUDITOR)).json()["entries"]
        autos = [(e["object"].split(":")[0], e["outcome"]) for e in audit if e["principal"] == AUTODISPATCH_PRINCIPAL]
        assert ("decision", "ok") in autos
        assert set(autos) <= {("decision", "ok"), ("", "invalid")}  # "invalid": before the first time (state clock)
        times = [d.time_s for d in app.state.dispatcher.store.decisions(10)]
        assert sorted(times)[:2] == [T0_S, T0_S + STEP_S]  # the state clock advances one interval a tick

    run(main)


def test_without_ocpp_port(inst: Any, tmp_path: Path) -> None:
    """OCPP is off by default: no CSMS, the station list is 404 naming the option."""
    config = dataclasses.replace(load_config(None, database=tmp_path / "serve.db", horizon="2h"),
                                 keys=tuple(parse_env_keys(f"{OPERATOR}:operator")))
    app = create_app(config, instance=inst)
    assert app.state.ocpp is None
    with TestClient(app) as client:
        r = client.get("/v1/ocpp/stations", headers=AS_OPERATOR)
    assert r.status_code == 404 and r.json()["field"] == "ocpp_port"


def test_edge_ids_rule() -> None:
    ring = Keyring.new()
    enrolled = [(ring.pseudonym("CP-9", kind="cs"), "scs_N8"), (ring.pseudonym("TAG-1", kind="ev"), "car00004")]
    ids = EdgeIds(ring, ["scs_N8", "scs_N10"], ["car00004", "car00007"], enrolled)
    assert ids.station("scs_N10") == "scs_N10" and ids.station("CP-9") == "scs_N8"
    assert ids.token("car00007") == "car00007" and ids.token(" TAG-1 ") == "car00004"
    assert ids.station("CP-10") == ring.pseudonym("CP-10", kind="cs")
    assert ids.token("TAG-2") == ring.pseudonym("TAG-2", kind="ev")
    assert ids.session("scs_N8/tx1") == ring.pseudonym("scs_N8/tx1", kind="tx")
    shaped = ring.pseudonym("x", kind="ev")  # a raw id that looks like a pseudonym is still replaced
    assert ids.token(shaped) not in (shaped, "car00004") and is_pseudonym(ids.token(shaped))
    # enrolments made under a retired key still map after a rotation
    rotated = ring.rotate()
    assert EdgeIds(rotated, ["scs_N8"], ["car00004"], enrolled).token("TAG-1") == "car00004"
    with pytest.raises(OptionError, match="not a station of the instance"):
        EdgeIds(ring, ["scs_N8"], [], [(ring.pseudonym("CP-9", kind="cs"), "scs_N99")])
    with pytest.raises(OptionError, match="key version 'k9'"):
        EdgeIds(ring, ["scs_N8"], [], [("cs-k9-0123456789abcdef", "scs_N8")])


def test_cannot_discharge() -> None:
    def ev(ev_id: str, station: str, p_dis: float | None) -> EVState:
        return EVState(ev_id=ev_id, session_id=ev_id, station_id=station, energy_kwh=10.0, soc=0.5, arrival_s=0.0,
                       departure_s=3600.0, soc_target=0.8, p_dis_max_kw=p_dis)

    evs = [ev("a", "s21", 7.0), ev("b", "s21", None), ev("c", "s21", 0.0), ev("d", "s201", 7.0), ev("e", "s16", 7.0),
           ev("f", "unknown", 7.0)]
    assert cannot_discharge(evs, {"s21": "2.1", "s201": "2.0.1", "s16": "1.6"}) == {"b", "c", "d", "e", "f"}


@pytest.mark.parametrize("text,words", [
    ("ocpp_port = 70000\n", "ocpp_port must be a whole number from 0 to 65535"),
    ("ocpp_autodispatch = true\n", "ocpp_autodispatch needs the OCPP endpoint"),
    ('ocpp_port = 0\nocpp_host = "0.0.0.0"\n', "ocpp_host 0.0.0.0 is not a loopback address"),
    ("ocpp_default_soc_target = 1.5\n", "ocpp_default_soc_target must be a fraction"),
    ("ocpp_max_periods = 0\n", "ocpp_max_periods must be a whole number of at least 1"),
    ('[ocpp_ids]\n"CP-0042" = "scs_N8"\n', "'CP-0042' is not a pseudonym of kind cs or ev"),
    ('[ocpp_ids]\n"cs-k1-0123456789abcdef" = 8\n', "must name an instance station id"),
])
def test_config_errors(text: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "serve.toml").write_text(text, encoding="utf-8")
    assert cli_main(["serve", "--config", "serve.toml"]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err


def test_cli_ocpp_port_and_clean_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--ocpp-port", "65536"]) == 2
    assert "--ocpp-port must be from 0 to 65535" in capsys.readouterr().err
    (tmp_path / "serve.toml").write_text('database = "state.db"\nhorizon = "2h"\n', encoding="utf-8")
    server = Server(tmp_path, "--ocpp-port", "0")
    station = SimStation("CP-X", "2.1", [])
    stopped: list[tuple[int, str]] = []

    async def main() -> None:
        line = next(x for x in server.err if "listening on" in x)
        url = line.split("OCPP on ", 1)[1].split("<station id>", 1)[0]
        assert url.startswith("ws://127.0.0.1:")
        async with closing([station]):
            await station.connect(url)
            await station.boot()
            async with httpx.AsyncClient(timeout=10.0) as client:
                listed = (await client.get(f"{server.url}/v1/ocpp/stations", headers=AS_OPERATOR)).json()
            assert [(s["version"], s["connected"], s["planned"]) for s in listed["stations"]] == [("2.1", True, False)]
            stopped.append(await asyncio.to_thread(server.stop, signal.SIGTERM))
            await asyncio.wait_for(asyncio.gather(station.task, return_exceptions=True), 10)  # closed by the server

    try:
        run(main)
    finally:
        if not stopped:
            stopped.append(server.stop(signal.SIGTERM))
    code, err = stopped[0]
    assert code == 143 and "optev: terminated" in err and "Traceback" not in err and "CP-X" not in err, err

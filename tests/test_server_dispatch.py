"""The dispatch service's decisions (issue 15, deliverable 1): the warm controller, the edge policy, restarts.

The states of a few control steps of the embedded default instance (a sessions replay driven by
the service's own setpoints) are posted to ``POST /v1/step``; the decisions must equal
:meth:`Controller.step` called directly with the same states. A late or missing state is
answered by the edge policy of :mod:`optev.mpc.edge`; a new service on the same database resumes
with the last state and decision.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from optev.blocks.window import instance_origin
from optev.errors import DataError
from optev.io import read
from optev.io.embedded import default_instance
from optev.mpc import Controller, ControlDecision, ControlState, EdgePolicy, ReplayPlant
from optev.mpc.edge import local_setpoints
from optev.server.app import close_app, create_app
from optev.server.auth import parse_env_keys
from optev.server.config import ServeConfig, load_config
from optev.server.dispatch import EDGE_STATUS, held_schedules
from optev.server.hooks import CONTROLLED_CHARGING, Hooks

OPERATOR = "op-key-0000000000000001"
STATION_KEY = "st-key-0000000000000001"
HEADERS = {"Authorization": f"Bearer {OPERATOR}"}
FORMULATION, HORIZON = "station_v2g", "2h"
START_S, STEP_S, STEPS = 9 * 3600.0, 900.0, 3
TIMING = ("build_s", "solve_s", "check_s", "wall_s")
"""Solve statistics that are wall-clock times (the only fields allowed to differ)."""


@pytest.fixture(scope="module")
def instance() -> Any:
    return read(default_instance())


def config(folder: Path, **fields: Any) -> ServeConfig:
    base = load_config(None, database=folder / "serve.db", formulation=FORMULATION, horizon=HORIZON)
    keys = tuple(parse_env_keys(f"{OPERATOR}:operator,{STATION_KEY}:station=scs_N10"))
    return dataclasses.replace(base, keys=keys, **fields)


def reference(instance: Any, **options: Any) -> Controller:
    return Controller(FORMULATION, instance, step="15min", horizon=HORIZON, **options)


def comparable(decision: dict[str, Any]) -> dict[str, Any]:
    """A decision without its wall-clock timings."""
    out = json.loads(json.dumps(decision))
    for key in TIMING:
        out["stats"].pop(key, None)
    return out


@pytest.fixture(scope="module")
def run(instance: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(folder, states, answers): STEPS states posted to one service, the plant following its setpoints."""
    folder = tmp_path_factory.mktemp("serve_dispatch")
    app = create_app(config(folder), instance=instance)
    client = TestClient(app)
    plant = ReplayPlant(instance, start_s=START_S)
    states, answers = [], []
    for _ in range(STEPS):
        state = plant.control_state()
        r = client.post("/v1/step", content=state.to_json(), headers=HEADERS)
        assert r.status_code == 200, r.text
        states.append(state)
        answers.append(r.json())
        plant.advance(STEP_S, ControlDecision.from_dict(r.json()["decision"]).plant_setpoints())
    close_app(app)
    return folder, states, answers


def test_decisions_equal_the_controller(instance: Any, run: Any) -> None:
    _, states, answers = run
    ctl = reference(instance)
    for state, answer in zip(states, answers):
        assert answer["source"] == "controller" and answer["reason"] == ""
        assert comparable(answer["decision"]) == comparable(ctl.step(state).to_dict())
    assert answers[-1]["decision"]["stats"]["warm"] or answers[-1]["decision"]["stats"]["mapped_basis"] \
        or len(states) == 1  # the controller was kept between calls
    assert [a["decision_id"] for a in answers] == [1, 2, 3]
    for a in answers:
        assert set(a["timing"]) == {"wait_s", "decide_s", "store_s", "total_s"}
        assert a["timing"]["total_s"] >= a["timing"]["decide_s"] > 0


def test_restart_resumes(instance: Any, run: Any) -> None:
    folder, states, answers = run
    app = create_app(config(folder), instance=instance)
    client = TestClient(app)
    latest = client.get("/v1/decision/latest", headers=HEADERS).json()
    assert latest["decision_id"] == answers[-1]["decision_id"]
    assert comparable(latest["decision"]) == comparable(answers[-1]["decision"])
    assert latest["state_time_s"] == states[-1].time_s
    # the held schedule survives: a missing state is answered from the last decision's plan
    edge = client.post("/v1/tick", headers=HEADERS).json()
    assert edge["source"] == "edge" and edge["time_s"] == states[-1].time_s + STEP_S
    assert set(edge["decision"]["modes"].values()) == {"hold"}
    # the next state: the restarted (cold) controller decides as a fresh one does
    nxt = dataclasses.replace(states[-1], time_s=states[-1].time_s + STEP_S)
    answer = client.post("/v1/step", content=nxt.to_json(), headers=HEADERS).json()
    assert answer["source"] == "controller" and answer["decision_id"] == latest["decision_id"] + 2
    assert comparable(answer["decision"]) == comparable(reference(instance).step(nxt).to_dict())
    close_app(app)


def _edge_reference(instance: Any, basis: ControlState, last: dict[str, Any], now: float) -> dict[str, float]:
    """The edge policy of optev.mpc.edge for the stations after ``basis``, straight from the library."""
    policy = EdgePolicy()
    held = held_schedules(ControlDecision.from_dict(last), basis)
    ids = instance.stations["station_id"].astype(str).tolist()
    modes = {s: policy.mode(now - basis.time_s, s in held and held[s].index(now) is not None) for s in ids}
    evs = [e for e in basis.evs if e.departure_s is None or e.departure_s > now]
    ev_kw, _ = local_setpoints(instance, evs, now, STEP_S, modes, held, policy)
    return {e.ev_id: float(ev_kw.get(e.ev_id, 0.0)) for e in evs}


def test_late_state_is_answered_by_the_edge_policy(instance: Any, run: Any, tmp_path: Path) -> None:
    _, states, answers = run
    app = create_app(config(tmp_path), instance=instance)
    client = TestClient(app)
    client.post("/v1/step", content=states[0].to_json(), headers=HEADERS)
    first = client.post("/v1/step", content=states[1].to_json(), headers=HEADERS).json()
    late = dataclasses.replace(states[0], time_s=states[1].time_s - 2 * STEP_S)  # 30 min old > 15 min
    answer = client.post("/v1/step", content=late.to_json(), headers=HEADERS).json()
    assert answer["source"] == "edge" and answer["reason"].startswith("late state")
    d = answer["decision"]
    assert d["stats"]["status"] == EDGE_STATUS and d["time_s"] == states[1].time_s
    assert set(d["modes"].values()) == {"hold"}
    # the newest measurement (states[1], not the late one) and the last controller decision's schedule
    assert d["setpoints"]["ev_kw"] == _edge_reference(instance, states[1], first["decision"], states[1].time_s)
    assert answer["state_time_s"] == states[1].time_s
    overtaken = client.post("/v1/step", content=states[0].to_json(), headers=HEADERS).json()  # 15 min old
    assert overtaken["source"] == "edge" and "before the latest decision" in overtaken["reason"]
    assert overtaken["decision"]["setpoints"] == d["setpoints"]
    close_app(app)


def test_missing_state_holds_then_falls_back(instance: Any, run: Any, tmp_path: Path) -> None:
    _, states, _ = run
    app = create_app(config(tmp_path), instance=instance)
    client = TestClient(app)
    first = client.post("/v1/step", content=states[0].to_json(), headers=HEADERS).json()
    hold = client.post("/v1/tick", headers=HEADERS).json()  # the next interval, no state
    assert hold["source"] == "edge" and hold["reason"].startswith("missing state")
    now = states[0].time_s + STEP_S
    assert hold["time_s"] == now and set(hold["decision"]["modes"].values()) == {"hold"}
    assert hold["decision"]["setpoints"]["ev_kw"] == _edge_reference(instance, states[0], first["decision"], now)
    late = client.post("/v1/tick", content=json.dumps({"time_s": states[0].time_s + 3 * 3600}), headers=HEADERS).json()
    assert set(late["decision"]["modes"].values()) == {"fallback"}
    assert min(late["decision"]["setpoints"]["ev_kw"].values(), default=0.0) >= 0.0  # the fallback never discharges
    sums = {}
    for ev in states[0].evs:
        sums[ev.station_id] = sums.get(ev.station_id, 0.0) + late["decision"]["setpoints"]["ev_kw"].get(ev.ev_id, 0.0)
    for station, kw in late["decision"]["setpoints"]["station_kw"].items():
        assert kw == pytest.approx(sums.get(station, 0.0))
    close_app(app)


def test_tick_composes_the_state_from_station_telemetry(instance: Any, run: Any, tmp_path: Path) -> None:
    _, states, _ = run
    app = create_app(config(tmp_path), instance=instance)
    client = TestClient(app)
    state = states[1]
    at_n10 = [e for e in state.evs if e.station_id == "scs_N10"]
    body = json.dumps({"time_s": state.time_s, "evs": [e.to_dict() for e in at_n10]})
    r = client.post("/v1/stations/scs_N10/telemetry", content=body,
                    headers={"Authorization": f"Bearer {STATION_KEY}"})
    assert r.status_code == 200 and r.json()["evs"] == len(at_n10)
    answer = client.post("/v1/tick", content=json.dumps({"time_s": state.time_s}), headers=HEADERS).json()
    assert answer["source"] == "controller"
    composed = app.state.dispatcher.latest.state
    assert [e.ev_id for e in composed.evs] == [e.ev_id for e in at_n10]
    assert "scs_N10" not in composed.offline_stations and len(composed.offline_stations) == len(instance.stations) - 1
    assert answer["decision"]["modes"]["scs_N10"] == "central" and answer["decision"]["modes"]["scs_N7"] == "hold"
    assert comparable(answer["decision"]) == comparable(reference(instance).step(composed).to_dict())
    close_app(app)


def test_consent_is_applied(instance: Any, run: Any, tmp_path: Path) -> None:
    _, states, _ = run
    state = states[0]
    v2g = instance.evs.loc[instance.evs["v2g_opt_in"].astype(bool), "ev_id"].astype(str)
    present = [e.ev_id for e in state.evs if e.ev_id in set(v2g)]
    assert present, "the default instance has V2G EVs plugged in at 09:00"
    app = create_app(config(tmp_path), instance=instance)
    hooks: Hooks = app.state.hooks
    hooks.consent = lambda ids: {e: frozenset({CONTROLLED_CHARGING}) for e in ids}  # nobody allows V2G
    app.state.dispatcher.consent = hooks.consent
    answer = TestClient(app).post("/v1/step", content=state.to_json(), headers=HEADERS).json()
    plugged = instance.evs["ev_id"].astype(str).isin([e.ev_id for e in state.evs])
    no_v2g = dataclasses.replace(instance, evs=instance.evs.assign(
        v2g_opt_in=instance.evs["v2g_opt_in"].astype(bool) & ~plugged))  # the EVs the service asked about
    assert comparable(answer["decision"]) == comparable(reference(no_v2g).step(state).to_dict())
    assert min(answer["decision"]["setpoints"]["ev_kw"].values()) >= 0.0
    close_app(app)


def test_concurrent_steps_serialise(instance: Any, run: Any, tmp_path: Path) -> None:
    _, states, _ = run
    app = create_app(config(tmp_path), instance=instance)
    client = TestClient(app)
    out: list[Any] = []
    threads = [threading.Thread(target=lambda s=s: out.append(
        client.post("/v1/step", content=s.to_json(), headers=HEADERS).json())) for s in (states[0], states[0])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a["decision_id"] for a in out) == [1, 2]
    assert all(a["source"] == "controller" for a in out)
    close_app(app)


def test_bad_states_are_422_and_change_nothing(instance: Any, run: Any, tmp_path: Path) -> None:
    _, states, _ = run
    app = create_app(config(tmp_path), instance=instance)
    client = TestClient(app)
    ev = states[0].evs[0]
    cases = {"evs[0].station_id": dataclasses.replace(states[0], evs=[dataclasses.replace(ev, station_id="nowhere")]),
             "evs[1].ev_id": dataclasses.replace(states[0], evs=[ev, ev]),
             "evs[0].ev_id": dataclasses.replace(states[0], evs=[dataclasses.replace(ev, ev_id="nobody")]),
             "offline_stations": dataclasses.replace(states[0], offline_stations={"nowhere": 0.0})}
    for field, bad in cases.items():
        r = client.post("/v1/step", content=bad.to_json(), headers=HEADERS)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    r = client.post("/v1/step", content=states[0].to_json().replace('"soc": ', '"soc": 7'), headers=HEADERS)
    assert r.status_code == 422 and r.json()["field"].endswith(".soc")
    assert client.get("/v1/decision/latest", headers=HEADERS).status_code == 404
    close_app(app)


def test_a_database_belongs_to_one_instance(instance: Any, run: Any) -> None:
    folder, _, _ = run
    with pytest.raises(DataError, match="belongs to another instance"):
        create_app(dataclasses.replace(config(folder), formulation="ordered_charging"), instance=instance)
    (folder / "not_sqlite.db").write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match="not an SQLite database file"):
        create_app(dataclasses.replace(config(folder), database=folder / "not_sqlite.db"), instance=instance)


def test_flexibility_of_the_current_fleet(instance: Any, run: Any, tmp_path: Path) -> None:
    _, states, _ = run
    app = create_app(config(tmp_path), instance=instance)
    client = TestClient(app)
    assert client.get("/v1/flexibility", headers=HEADERS).status_code == 404  # no state yet
    client.post("/v1/step", content=states[-1].to_json(), headers=HEADERS)
    city = client.get("/v1/flexibility?horizon=2h", headers=HEADERS).json()
    assert city["time_s"] == states[-1].time_s and city["steps"] == 8
    assert {row["case"] for row in city["curve"]} == set(city["cases"])
    assert 0 < city["plugged_sessions"] <= len(states[-1].evs)  # those leaving in the first interval are not
    stations = client.get("/v1/flexibility?scope=station&horizon=2h", headers=HEADERS).json()
    assert len(stations["headlines"]) == len(instance.stations)
    one = client.get("/v1/flexibility?scope=station&id=scs_N10&case=expected", headers=HEADERS).json()
    assert {row["case"] for row in one["curve"]} == {"expected"}
    for bad in ("horizon=9d", "horizon=soon", "scope=planet", "case=maybe"):
        r = client.get(f"/v1/flexibility?{bad}", headers=HEADERS)
        assert r.status_code == 422 and r.json()["error"], bad
    close_app(app)


def test_service_records(instance: Any, run: Any, tmp_path: Path) -> None:
    folder, _, _ = run
    records = tmp_path / "service_records.csv"
    records.write_text("service_id,product,participant_kind,participant_id,delivered_kwh\n"
                       "dr1,demand_response,station,scs_N10,12.5\ndr1,demand_response,station,scs_N7,3.0\n"
                       "pk1,peak_regulation,station,scs_N10,\n", encoding="utf-8")
    app = create_app(dataclasses.replace(config(folder), service_records=tmp_path), instance=instance)
    client = TestClient(app)
    everything = client.get("/v1/service-records", headers=HEADERS).json()
    assert everything["total"] == 3 and everything["records"][2]["delivered_kwh"] is None
    dr = client.get("/v1/service-records?service_id=dr1&participant_id=scs_N7", headers=HEADERS).json()
    assert dr["total"] == 1 and dr["records"][0]["delivered_kwh"] == 3.0
    close_app(app)


def test_wall_clock(instance: Any, run: Any, tmp_path: Path) -> None:
    _, states, _ = run
    origin = instance_origin(instance).timestamp()
    now = {"t": origin + states[1].time_s + 60.0}  # a minute into the interval of states[1]
    app = create_app(config(tmp_path, clock="wall"), instance=instance, wall=lambda: now["t"])
    client = TestClient(app)
    fresh = client.post("/v1/step", content=states[1].to_json(), headers=HEADERS).json()
    assert fresh["source"] == "controller" and fresh["time_s"] == states[1].time_s
    late = client.post("/v1/step", content=states[0].to_json(), headers=HEADERS).json()  # 16 min old
    assert late["source"] == "edge" and late["time_s"] == pytest.approx(states[1].time_s + 60.0)
    future = dataclasses.replace(states[1], time_s=states[1].time_s + 3600.0)
    r = client.post("/v1/step", content=future.to_json(), headers=HEADERS)
    assert r.status_code == 422 and r.json()["field"] == "time_s"
    now["t"] += 3 * 3600.0
    tick = client.post("/v1/tick", headers=HEADERS).json()  # no body: the wall clock's time
    assert tick["time_s"] == pytest.approx(states[1].time_s + 60.0 + 3 * 3600.0)
    assert set(tick["decision"]["modes"].values()) == {"fallback"}
    close_app(app)


class _Recorder:
    """Hooks of one's own: everything they are told is kept."""

    def __init__(self) -> None:
        self.records: list[tuple[str, ...]] = []
        self.alarms: list[str] = []
        self.asked: list[list[str]] = []

    def record(self, principal: str, action: str, object: str, outcome: str, request_sha256: str | None) -> None:
        self.records.append((principal, action, outcome))

    def entries(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return [{"seq": k + 1, "principal": p} for k, (p, _, _) in enumerate(self.records)][after:after + limit]

    def close(self) -> None:
        pass

    def __call__(self, ev_id: str) -> str:
        return "user-" + ev_id[::-1]

    def matches(self, ev_id: str, pseudonym: str) -> bool:
        return self(ev_id) == pseudonym

    def consent(self, ev_ids: Any) -> dict[str, frozenset[str]]:
        self.asked.append(list(ev_ids))
        return {e: frozenset({CONTROLLED_CHARGING, "v2g"}) for e in ev_ids}

    def alarm(self, kind: str, detail: Any) -> None:
        self.alarms.append(kind)

    def admit(self, principal: str) -> bool:
        return True

    def telemetry(self, station_id: str, time_s: float, evs: Any) -> None:
        self.alarms.append(f"report:{station_id}")


def test_hooks_plug_in(instance: Any, run: Any, tmp_path: Path) -> None:
    _, states, _ = run
    rec = _Recorder()
    alarm = type("Alarm", (), {"__call__": lambda self, k, d: rec.alarm(k, d), "admit": lambda self, p: True,
                               "telemetry": lambda self, s, t, e: rec.telemetry(s, t, e)})()
    hooks = Hooks(audit=rec, pseudonyms=rec, consent=rec.consent, alarm=alarm)
    app = create_app(config(tmp_path), instance=instance, hooks=hooks)
    client = TestClient(app)
    client.post("/v1/step", content=states[0].to_json(), headers=HEADERS)
    client.post("/v1/step", content=b"[]", headers=HEADERS)
    client.get("/v1/me")
    client.post("/v1/tick", headers=HEADERS)
    assert rec.asked == [[e.ev_id for e in states[0].evs]]
    assert [r[2] for r in rec.records] == ["ok", "invalid:422", "unauthenticated:401", "ok"]
    assert rec.alarms == ["malformed", "unauthenticated", "edge_policy"]
    close_app(app)

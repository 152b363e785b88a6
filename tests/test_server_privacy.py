"""Consent over HTTP and publishable aggregates of the dispatch service (issue 15, deliverable 4, R6.4.1).

A service on the embedded default instance with a consent registry (``consent_db``) and a key of
every role (those of :mod:`test_server_auth`, plus a user whose V2G EV is plugged in at 09:00):
every role × endpoint of :mod:`optev.server.privacy_api` (allowed 200, refused 403, no key 401),
the consent flows (give, change, withdraw — and the next ``POST /v1/step`` honouring them), 409
without a registry, bad input naming the field, the audit trail, and the station and city
aggregates with small-cell suppression.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import pytest
import test_server_auth
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import NoMatchFound
from test_server_auth import ENV, KEYS, ROLES, START_S, _call, _pseudonym, assert_role_answer, auth

from optev.mpc import ReplayPlant
from optev.privacy.consent import PURPOSES
from optev.server.app import close_app, create_app
from optev.server.auth import parse_env_keys
from optev.server.config import ServeConfig, load_config
from optev.server.privacy_api import Purpose, city_cell, ev_records, router, station_cells

instance = test_server_auth.instance
"""The embedded default instance (the fixture of :mod:`test_server_auth`)."""

DRIVER, DRIVER_KEY = "car00086", "us-key-0000000000000086"
"""A user whose V2G EV is plugged in at 09:00 and is planned to discharge when allowed."""
NOTICE = "2026-03"


def _with_router(app: FastAPI) -> FastAPI:
    """``app`` with the privacy router (once: ``create_app`` may include it already)."""
    try:
        app.url_path_for("get_city_aggregate")
    except NoMatchFound:
        app.include_router(router)
    return app


def _app(instance: Any, folder: Path, *, consent: bool = True, **fields: Any) -> FastAPI:
    base = load_config(None, database=folder / "serve.db", horizon="2h", formulation="station_v2g",
                       consent_db=folder / "consent.db" if consent else None)
    keys = tuple(parse_env_keys(f"{ENV},{DRIVER_KEY}:user={DRIVER}"))
    return _with_router(create_app(dataclasses.replace(base, keys=keys, **fields), instance=instance))


def driver() -> dict[str, str]:
    return {"Authorization": f"Bearer {DRIVER_KEY}"}


@pytest.fixture(scope="module")
def state(instance: Any) -> Any:
    return ReplayPlant(instance, start_s=START_S).control_state()


@pytest.fixture(scope="module")
def service(instance: Any, state: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(client, app): a service with a consent registry, every role's key and one decision made."""
    app = _app(instance, tmp_path_factory.mktemp("serve_privacy"))
    client = TestClient(app)
    assert client.post("/v1/step", content=state.to_json(), headers=auth("operator")).status_code == 200
    yield client, app
    close_app(app)


def _consent(client: TestClient, role: str = "user") -> str:
    return f"/v1/users/{_pseudonym(client, role)}/consent"


GRANT = json.dumps({"purposes": {"data_sharing": True}, "notice_version": NOTICE})
ENDPOINTS: dict[str, tuple[frozenset[str], Any]] = {
    "GET /v1/users/{p}/consent": (frozenset({"user", "auditor"}), lambda c: ("GET", _consent(c), None)),
    "PUT /v1/users/{p}/consent": (frozenset({"user"}), lambda c: ("PUT", _consent(c), GRANT)),
    "DELETE /v1/users/{p}/consent": (frozenset({"user"}),
                                     lambda c: ("DELETE", _consent(c) + "?purpose=data_sharing", None)),
    "GET /v1/aggregates/stations": (frozenset({"operator", "auditor"}),
                                    lambda c: ("GET", "/v1/aggregates/stations", None)),
    "GET /v1/aggregates/city": (frozenset({"operator", "auditor"}), lambda c: ("GET", "/v1/aggregates/city", None)),
}
"""The privacy endpoints: the roles allowed, and the request (the user's own pseudonym)."""


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_role_endpoint(service: Any, endpoint: str, role: str) -> None:
    client, _ = service
    allowed, make = ENDPOINTS[endpoint]
    method, path, body = make(client)
    assert_role_answer(_call(client, method, path, body, auth(role)), role in allowed, endpoint, role)


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_without_a_valid_key_is_401(service: Any, endpoint: str) -> None:
    client, _ = service
    method, path, body = ENDPOINTS[endpoint][1](client)
    for headers in ({}, {"Authorization": "Bearer not-a-key-of-this-service"}):
        r = _call(client, method, path, body, headers)
        assert r.status_code == 401 and r.json()["field"] == "Authorization", (endpoint, r.text)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_user_reaches_their_own_consent_only(service: Any, method: str) -> None:
    client, _ = service
    body = GRANT if method == "PUT" else None
    theirs = _consent(client, "user2")
    assert client.request(method, _consent(client), content=body, headers=auth("user")).status_code == 200
    for path in (theirs, f"/v1/users/{KEYS['user']}/consent", "/v1/users/car00001/consent"):
        r = client.request(method, path, content=body, headers=auth("user"))
        assert r.status_code == 403, (path, r.text)
    if method == "GET":  # the auditor reads anybody's; a path that is no pseudonym is named
        assert client.get(theirs, headers=auth("auditor")).status_code == 200
        r = client.get("/v1/users/car00001/consent", headers=auth("auditor"))
        assert r.status_code == 422 and r.json()["field"] == "pseudonym"
    else:  # refused before the body is read
        assert client.request(method, _consent(client), content=b"{not json", headers=auth("auditor")
                              ).status_code == 403


def test_give_change_withdraw(service: Any) -> None:
    client, _ = service
    path, me = _consent(client, "user2"), _pseudonym(client, "user2")
    body = json.dumps({"purposes": {"controlled_charging": True, "v2g": True}, "notice_version": NOTICE})
    put = client.put(path, content=body, headers=auth("user2")).json()
    assert [(e["purpose"], e["action"]) for e in put["recorded"]] == [("controlled_charging", "granted"),
                                                                       ("v2g", "granted")]
    assert put["user"] == me and put["effect"] == {"controlled": True, "may_discharge": True}
    assert all(e["evidence"] == hashlib.sha256(body.encode()).hexdigest() for e in put["recorded"])
    assert client.put(path, content=body, headers=auth("user2")).json()["recorded"] == []  # nothing changed
    newer = json.dumps({"purposes": {"v2g": True, "data_sharing": False}, "notice_version": "2026-04"})
    assert [(e["purpose"], e["action"]) for e in client.put(path, content=newer, headers=auth("user2")).json()
            ["recorded"]] == [("v2g", "modified")]  # data_sharing was never given: nothing to withdraw
    gone = client.delete(path + "?purpose=v2g", headers=auth("user2")).json()
    assert [(e["purpose"], e["action"], e["notice_version"]) for e in gone["recorded"]] == [
        ("v2g", "withdrawn", "2026-04")]
    assert gone["effect"] == {"controlled": True, "may_discharge": False}
    now = client.get(path, headers=auth("user2")).json()
    assert set(now["purposes"]) == set(PURPOSES)
    assert now["purposes"]["controlled_charging"] | {"at": None, "event_id": None} == {
        "allowed": True, "action": "granted", "notice_version": NOTICE, "at": None, "event_id": None}
    assert now["purposes"]["v2g"]["allowed"] is False and now["purposes"]["v2g"]["action"] == "withdrawn"
    assert now["purposes"]["data_sharing"] == {"allowed": False, "action": None, "notice_version": None, "at": None,
                                               "event_id": None}
    assert [e["action"] for e in now["history"]] == ["granted", "granted", "modified", "withdrawn"]
    everything = client.delete(path, headers=auth("user2")).json()
    assert [e["purpose"] for e in everything["recorded"]] == ["controlled_charging"]
    assert everything["effect"] == {"controlled": False, "may_discharge": False}
    assert client.get(path, headers=auth("auditor")).json()["history"] == \
        client.get(path, headers=auth("user2")).json()["history"]
    status = client.get(path.replace("/consent", "/status"), headers=auth("user2")).json()
    assert status["consent"] == {"controlled_charging": False, "v2g": False}


@pytest.mark.parametrize("body,status,field", [
    (b"{not json", 400, "body"),
    (b"", 400, "body"),
    (json.dumps({"purposes": {"v2g": "yes"}, "notice_version": NOTICE}), 422, "purposes.v2g"),
    (json.dumps({"purposes": {"marketing": True}, "notice_version": NOTICE}), 422, "purposes.marketing (a key)"),
    (json.dumps({"purposes": {}, "notice_version": NOTICE}), 422, "purposes"),
    (json.dumps({"purposes": {"v2g": True}}), 422, "notice_version"),
    (json.dumps({"purposes": {"v2g": True}, "notice_version": "   "}), 422, "notice_version"),
    (json.dumps({"purposes": {"v2g": True}, "notice_version": "x" * 65}), 422, "notice_version"),
    (json.dumps({"purposes": {"v2g": True}, "notice_version": NOTICE, "evidence": "abc"}), 422, "evidence"),
    (json.dumps({"purposes": {"v2g": True}, "notice_version": NOTICE, "at": "2020-01-01T00:00:00Z"}), 422, "at"),
    (json.dumps([]), 422, "body"),
    (b"{" + b" " * 20_000 + b"}", 413, "body"),
])
def test_bad_consent_bodies_name_the_field(service: Any, body: Any, status: int, field: str) -> None:
    client, _ = service
    before = client.get(_consent(client), headers=auth("user")).json()["history"]
    r = client.put(_consent(client), content=body, headers=auth("user"))
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.json()["error"]
    assert client.get(_consent(client), headers=auth("user")).json()["history"] == before


def test_bad_purpose_to_withdraw(service: Any) -> None:
    client, _ = service
    r = client.delete(_consent(client) + "?purpose=marketing", headers=auth("user"))
    assert r.status_code == 422 and r.json()["field"] == "purpose"
    assert set(get_args(Purpose)) == set(PURPOSES)


def test_consent_changes_are_audited(service: Any) -> None:
    client, _ = service
    path = _consent(client)
    body = json.dumps({"purposes": {"data_sharing": True}, "notice_version": "2026-05"})
    recorded = client.put(path, content=body, headers=auth("user")).json()["recorded"]
    client.delete(path, headers=auth("user"))
    entries = client.get("/v1/audit?limit=1000", headers=auth("auditor")).json()["entries"]
    me = _pseudonym(client, "user")
    puts = [e for e in entries if e["action"] == "PUT /v1/users/{pseudonym}/consent" and e["outcome"] == "ok"]
    assert puts and puts[-1]["principal"] == me and puts[-1]["object"] == path
    assert puts[-1]["request_hash"] == hashlib.sha256(body.encode()).hexdigest() == recorded[0]["evidence"]
    assert any(e["action"] == "DELETE /v1/users/{pseudonym}/consent" and e["outcome"] == "ok" for e in entries)
    assert any(e["action"] == "PUT /v1/users/{pseudonym}/consent" and e["outcome"] == "denied:403" for e in entries)
    assert all(e["principal"] != "car00001" for e in entries)


def test_without_a_registry_is_409(instance: Any, tmp_path: Path) -> None:
    app = _app(instance, tmp_path, consent=False)
    client = TestClient(app)
    for method, role in (("GET", "user"), ("GET", "auditor"), ("PUT", "user"), ("DELETE", "user")):
        r = client.request(method, _consent(client), content=GRANT if method == "PUT" else None, headers=auth(role))
        assert r.status_code == 409, (method, role, r.text)
        assert "not managed by this service" in r.json()["error"] and r.json()["field"] is None
    assert client.put(_consent(client), content=GRANT, headers=auth("operator")).status_code == 403
    assert client.get("/v1/aggregates/city", headers=auth("operator")).status_code == 404  # no decision yet
    close_app(app)


def _driver_plan(answer: dict[str, Any], session: str) -> tuple[float, list[float]]:
    d = answer["decision"]
    return d["setpoints"]["ev_kw"][DRIVER], d["ev_plan_kw"][session]


def test_consent_takes_effect_at_the_next_step(instance: Any, state: Any, tmp_path: Path) -> None:
    ev = next(e for e in state.evs if e.ev_id == DRIVER)
    app = _app(instance, tmp_path)
    client = TestClient(app)
    registry, names = app.state.hooks.consent.registry, app.state.hooks.pseudonyms
    for e in state.evs:  # the rest of the fleet consents; the driver decides over HTTP
        if e.ev_id != DRIVER:
            registry.grant(names(e.ev_id), ["controlled_charging", "v2g"], NOTICE)
    path = f"/v1/users/{client.get('/v1/me', headers=driver()).json()['user']}/consent"

    def step() -> tuple[float, list[float]]:
        r = client.post("/v1/step", content=state.to_json(), headers=auth("operator"))
        assert r.status_code == 200 and r.json()["source"] == "controller", r.text
        return _driver_plan(r.json(), ev.session_id)

    kw, plan = step()  # no consent recorded: uncontrolled, full power, no discharge
    assert kw == ev.p_ch_max_kw and min(plan) >= 0.0
    grant = {"purposes": {"controlled_charging": True, "v2g": True}, "notice_version": NOTICE}
    assert client.put(path, content=json.dumps(grant), headers=driver()).status_code == 200
    kw, plan = step()
    assert min(plan) < 0.0, "with consent the driver's EV is planned to discharge"
    assert kw < ev.p_ch_max_kw
    assert client.delete(path + "?purpose=v2g", headers=driver()).json()["effect"]["may_discharge"] is False
    kw, plan = step()
    assert kw >= 0.0 and min(plan) >= 0.0
    assert client.delete(path + "?purpose=controlled_charging", headers=driver()).status_code == 200
    kw, plan = step()
    assert kw == ev.p_ch_max_kw and min(plan) >= 0.0
    close_app(app)


# ---------------------------------------------------------------------------------------------- aggregates
def _station_counts(state: Any) -> pd.Series:
    return pd.Series([e.station_id for e in state.evs]).value_counts()


def test_station_aggregates_suppress_small_cells(service: Any, instance: Any, state: Any) -> None:
    client, _ = service
    answer = client.get("/v1/aggregates/stations", headers=auth("auditor")).json()
    latest = client.get("/v1/decision/latest", headers=auth("operator")).json()
    assert answer["k"] == 5 and answer["decision_id"] == latest["decision_id"]
    rows = {r["station_id"]: r for r in answer["stations"]}
    assert set(rows) == set(instance.stations["station_id"].astype(str))  # stations without EVs too
    counts = _station_counts(state)
    big, small = counts[counts >= 5], counts[(counts > 0) & (counts < 5)]
    assert len(big) and len(small)
    setpoints = latest["decision"]["setpoints"]["ev_kw"]
    for sid, n in big.items():
        evs = [e for e in state.evs if e.station_id == sid]
        assert rows[sid]["suppressed"] is False and rows[sid]["n_evs"] == n
        assert rows[sid]["energy_kwh"] == pytest.approx(sum(e.energy_kwh for e in evs))
        assert rows[sid]["p_setpoint_kw"] == pytest.approx(sum(setpoints[e.ev_id] for e in evs))
        assert rows[sid]["p_ch_max_kw"] == pytest.approx(sum(e.p_ch_max_kw for e in evs))
    for sid in set(rows) - set(big.index):
        assert rows[sid]["suppressed"] is True
        assert all(rows[sid][c] is None for c in answer["units"]), rows[sid]
    assert answer["suppressed"] == len(rows) - len(big)
    assert not {"ev_id", "session_id"} & set(answer["stations"][0])
    city = client.get("/v1/aggregates/city", headers=auth("operator")).json()["city"]
    assert city["n_evs"] == len(state.evs) and city["suppressed"] is False
    assert city["energy_kwh"] == pytest.approx(sum(e.energy_kwh for e in state.evs))
    assert city["p_setpoint_kw"] == pytest.approx(sum(setpoints.values()))
    remainder = city["n_evs"] - sum(r["n_evs"] for r in rows.values() if not r["suppressed"])
    assert remainder >= 5


def test_k_comes_from_the_config(service: Any, state: Any) -> None:
    client, app = service

    @dataclasses.dataclass(frozen=True)
    class KConfig(ServeConfig):
        k_anonymity: int = 5

    counts = _station_counts(state)
    k = int(counts.max())  # only the biggest station(s) stay published
    config = app.state.config
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    try:
        app.state.config = KConfig(**{**values, "k_anonymity": k})
        answer = client.get("/v1/aggregates/stations", headers=auth("operator")).json()
        assert answer["k"] == k
        assert {r["station_id"] for r in answer["stations"] if not r["suppressed"]} == set(counts[counts >= k].index)
        app.state.config = KConfig(**{**values, "k_anonymity": len(state.evs) + 1})
        city = client.get("/v1/aggregates/city", headers=auth("auditor")).json()["city"]
        assert city["suppressed"] is True and city["n_evs"] is None and city["energy_kwh"] is None
    finally:
        app.state.config = config


def _records(cells: dict[str, int], p_kw: float | None = 1.0) -> pd.DataFrame:
    """EV-level rows: ``cells`` = station → number of EVs (each 10 kWh, 1 kW measured, 2 kW set)."""
    ids = [(s, f"ev-k1-{n:016x}") for n, s in enumerate(s for s, m in cells.items() for _ in range(m))]
    return pd.DataFrame({"ev_id": [i for _, i in ids], "station_id": [s for s, _ in ids],
                         "energy_kwh": 10.0, "p_measured_kw": np.nan if p_kw is None else p_kw,
                         "p_setpoint_kw": 2.0, "p_ch_max_kw": 7.0, "p_dis_max_kw": 0.0})


@pytest.mark.parametrize("cells,published", [
    ({"A": 6, "B": 5, "C": 1}, {"A"}),  # C alone would be recovered from the city total: B goes too
    ({"A": 6, "B": 1}, set()),  # the remainder is B's single EV until A is suppressed as well
    ({"A": 6, "B": 5, "C": 3, "D": 2}, {"A", "B"}),  # C and D together count 5: enough
    ({"A": 5, "B": 5}, {"A", "B"}),
])
def test_suppressed_cells_never_sum_below_k(cells: dict[str, int], published: set[str]) -> None:
    records = _records(cells)
    table = station_cells(records, ["A", "B", "C", "D", "E"], k=5)
    assert list(table["station_id"]) == ["A", "B", "C", "D", "E"]
    assert set(table.loc[~table["suppressed"], "station_id"]) == published
    open_ = table[~table["suppressed"]]
    assert list(open_["n_evs"]) == [cells[s] for s in open_["station_id"]]
    assert list(open_["energy_kwh"]) == [10.0 * cells[s] for s in open_["station_id"]]
    assert table.loc[table["suppressed"], ["n_evs", "energy_kwh", "p_setpoint_kw"]].isna().all().all()
    city = city_cell(records, "X", k=5).iloc[0]
    remainder = int(city["n_evs"]) - int(open_["n_evs"].sum())
    assert remainder == 0 or remainder >= 5
    assert city["energy_kwh"] == pytest.approx(10.0 * sum(cells.values()))


def test_a_missing_reading_is_never_a_partial_sum() -> None:
    records = _records({"A": 5})
    records.loc[0, "p_measured_kw"] = np.nan
    row = station_cells(records, ["A"], k=5).iloc[0]
    assert not row["suppressed"] and row["n_evs"] == 5 and np.isnan(row["p_measured_kw"])
    assert row["p_setpoint_kw"] == 10.0
    assert station_cells(_records({}), ["A"], k=5)["suppressed"].all()


def test_ev_records_follow_the_decision(service: Any, state: Any) -> None:
    _, app = service
    records = ev_records(app.state.dispatcher.latest)
    assert sorted(records["ev_id"]) == sorted(e.ev_id for e in state.evs)
    assert records["p_setpoint_kw"].notna().all()


def test_published_in_the_schema(service: Any) -> None:
    client, _ = service
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/users/{pseudonym}/consent", "/v1/aggregates/stations", "/v1/aggregates/city"} <= set(paths)
    body = paths["/v1/users/{pseudonym}/consent"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"purposes", "notice_version", "evidence"}
    assert set(paths["/v1/users/{pseudonym}/consent"]) == {"get", "put", "delete"}


def test_a_raw_id_in_a_user_path_is_not_written_to_the_audit_log(service: Any) -> None:
    client, _ = service
    raw = "car00086"
    answer = client.get(f"/v1/users/{raw}/status", headers=auth("user"))
    assert answer.status_code == 403  # a raw id is no user's own pseudonym
    entries = client.get("/v1/audit?limit=1000", headers=auth("auditor")).json()["entries"]
    objects = [e["object"] for e in entries]
    assert not [o for o in objects if raw in o] and any(o.startswith("/v1/users/raw:ev-") for o in objects)

"""Authentication and roles of the dispatch service (issue 15, deliverable 2): every role × endpoint.

One service on the embedded default instance (a short horizon, so the controller's steps are quick)
with a key of every role; each endpoint is called by each role and without a key, and must answer
200 where the role allows it, 403 where it does not, 401 without a (valid) key. Then the subjects:
a station key reaches its own station only, a user key their own data only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import pytest
from fastapi.testclient import TestClient

from optev.audit.alarms import RateLimiter
from optev.errors import OptionError
from optev.io import read
from optev.io.embedded import default_instance
from optev.mpc import ReplayPlant
from optev.server.app import close_app, create_app
from optev.server.auth import MIN_KEY_LENGTH, KeyRing, key_spec, parse_env_keys
from optev.server.config import load_config

KEYS = {"operator": "op-key-0000000000000001", "station": "st-key-0000000000000001",
        "station2": "st-key-0000000000000002", "auditor": "au-key-0000000000000001",
        "user": "us-key-0000000000000001", "user2": "us-key-0000000000000002"}
STATION, OTHER_STATION = "scs_N10", "scs_N7"
USER, OTHER_USER = "car00001", "car00002"
ENV = (f"{KEYS['operator']}:operator,{KEYS['station']}:station={STATION},"
       f"{KEYS['station2']}:station={OTHER_STATION},{KEYS['auditor']}:auditor,"
       f"{KEYS['user']}:user={USER},{KEYS['user2']}:user={OTHER_USER}")
START_S = 9 * 3600.0
ROLES = ("operator", "station", "auditor", "user")


def auth(role: str | None) -> dict[str, str]:
    return {} if role is None else {"Authorization": f"Bearer {KEYS[role]}"}


@pytest.fixture(scope="module")
def instance() -> Any:
    return read(default_instance())


@pytest.fixture(scope="module")
def service(instance: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(client, app, state): a service with a key of every role and one decision made."""
    folder = tmp_path_factory.mktemp("serve_auth")
    config = load_config(None, database=folder / "serve.db", horizon="2h", formulation="station_v2g")
    config = dataclasses.replace(config, keys=tuple(parse_env_keys(ENV)))
    app = create_app(config, instance=instance)
    client = TestClient(app)
    state = ReplayPlant(instance, start_s=START_S).control_state()
    assert client.post("/v1/step", content=state.to_json(), headers=auth("operator")).status_code == 200
    for key, station in (("station", STATION), ("station2", OTHER_STATION)):
        assert client.post(f"/v1/stations/{station}/telemetry", content=_telemetry(state, station),
                           headers=auth(key)).status_code == 200
    yield client, app, state
    close_app(app)


def _pseudonym(client: TestClient, role: str) -> str:
    return str(client.get("/v1/me", headers=auth(role)).json()["user"])


def _telemetry(state: Any, station: str, evs: list[Any] | None = None) -> str:
    """A station report: the state's EVs at ``station`` (or ``evs``)."""
    chosen = [e for e in state.evs if e.station_id == station] if evs is None else evs
    return json.dumps({"time_s": state.time_s, "evs": [e.to_dict() for e in chosen]})


Call = Callable[[TestClient, Any], Any]

ENDPOINTS: dict[str, tuple[frozenset[str], Call]] = {
    "GET /v1/me": (frozenset(ROLES), lambda c, s: ("GET", "/v1/me", None)),
    "POST /v1/step": (frozenset({"operator"}), lambda c, s: ("POST", "/v1/step", s.to_json())),
    "POST /v1/tick": (frozenset({"operator"}), lambda c, s: ("POST", "/v1/tick", "{}")),
    "GET /v1/decision/latest": (frozenset({"operator"}), lambda c, s: ("GET", "/v1/decision/latest", None)),
    "GET /v1/stations/{id}/setpoints": (frozenset({"operator", "station"}),
                                        lambda c, s: ("GET", f"/v1/stations/{STATION}/setpoints", None)),
    "POST /v1/stations/{id}/telemetry": (frozenset({"operator", "station"}),
                                         lambda c, s: ("POST", f"/v1/stations/{STATION}/telemetry",
                                                       _telemetry(s, STATION))),
    "GET /v1/stations/{id}/telemetry": (frozenset({"operator", "station"}),
                                        lambda c, s: ("GET", f"/v1/stations/{STATION}/telemetry", None)),
    "GET /v1/flexibility": (frozenset({"operator"}), lambda c, s: ("GET", "/v1/flexibility", None)),
    "GET /v1/service-records": (frozenset({"operator", "auditor"}),
                                lambda c, s: ("GET", "/v1/service-records", None)),
    "GET /v1/users/{p}/status": (frozenset({"user"}),
                                 lambda c, s: ("GET", f"/v1/users/{_pseudonym(c, 'user')}/status", None)),
    "GET /v1/users/{p}/history": (frozenset({"user"}),
                                  lambda c, s: ("GET", f"/v1/users/{_pseudonym(c, 'user')}/history", None)),
    "GET /v1/audit": (frozenset({"auditor"}), lambda c, s: ("GET", "/v1/audit", None)),
    "GET /v1/alarms": (frozenset({"auditor"}), lambda c, s: ("GET", "/v1/alarms", None)),
}
"""Every endpoint that needs a key: the roles allowed, and the request (method, path, body)."""


def _call(client: TestClient, method: str, path: str, body: str | None, headers: dict[str, str]) -> Any:
    return client.request(method, path, content=body, headers=headers)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_role_endpoint(service: Any, endpoint: str, role: str) -> None:
    client, _, state = service
    allowed, make = ENDPOINTS[endpoint]
    method, path, body = make(client, state)  # the user endpoints: the user's own pseudonym
    assert_role_answer(_call(client, method, path, body, auth(role)), role in allowed, endpoint, role)


def assert_role_answer(r: Any, allowed: bool, endpoint: str, role: str) -> None:
    """An allowed call answers 200 with a JSON object, a refused one 403 with an error."""
    if allowed:
        assert r.status_code == 200, (endpoint, role, r.text)
        assert isinstance(r.json(), dict)
    else:
        assert r.status_code == 403, (endpoint, role, r.text)
        assert r.json()["error"]


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-key-of-this-service"},
                                     {"Authorization": f"Basic {KEYS['operator']}"},
                                     {"Authorization": "Bearer"}], ids=["none", "unknown", "basic", "empty"])
def test_without_a_valid_key_is_401(service: Any, endpoint: str, headers: dict[str, str]) -> None:
    client, _, state = service
    method, path, body = ENDPOINTS[endpoint][1](client, state)
    r = _call(client, method, path, body, headers)
    assert r.status_code == 401, (endpoint, r.text)
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert r.json()["field"] == "Authorization"


def test_public_endpoints(service: Any) -> None:
    client, _, _ = service
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    assert "ControlStateIn" in schema["components"]["schemas"]
    assert set(schema["paths"]) >= {"/v1/step", "/v1/tick", "/v1/flexibility", "/v1/audit"}
    assert schema["paths"]["/v1/step"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"] \
        .endswith("/ControlStateIn")


def test_roles_are_checked_before_the_body(service: Any) -> None:
    client, _, _ = service
    assert client.post("/v1/step", content=b"{not json", headers=auth("station")).status_code == 403
    assert client.post("/v1/step", content=b"{not json").status_code == 401
    assert client.post("/v1/step", content=b"{not json", headers=auth("operator")).status_code == 400


@pytest.mark.parametrize("method,suffix", [("GET", "setpoints"), ("GET", "telemetry"), ("POST", "telemetry")])
def test_station_reaches_its_own_station_only(service: Any, method: str, suffix: str) -> None:
    client, _, state = service
    body = _telemetry(state, OTHER_STATION) if method == "POST" else None
    mine = client.request(method, f"/v1/stations/{STATION}/{suffix}", headers=auth("station"),
                          content=_telemetry(state, STATION) if method == "POST" else None)
    other = client.request(method, f"/v1/stations/{OTHER_STATION}/{suffix}", headers=auth("station"), content=body)
    unknown = client.request(method, f"/v1/stations/nowhere/{suffix}", headers=auth("station"), content=body)
    assert mine.status_code == 200
    assert other.status_code == 403 and unknown.status_code == 403
    assert client.request(method, f"/v1/stations/{OTHER_STATION}/{suffix}", headers=auth("station2"),
                          content=body).status_code == 200
    assert client.request(method, f"/v1/stations/nowhere/{suffix}", headers=auth("operator"),
                          content=body).status_code == 404


def test_station_reports_its_own_evs_only(service: Any) -> None:
    client, _, state = service
    ev = next(e for e in state.evs if e.station_id != STATION)
    r = client.post(f"/v1/stations/{STATION}/telemetry", content=_telemetry(state, STATION, [ev]),
                    headers=auth("station"))
    assert r.status_code == 422
    assert r.json()["field"] == "evs[0].station_id"


def test_station_sees_only_its_own_evs(service: Any) -> None:
    client, _, state = service
    ids = {e.ev_id for e in state.evs if e.station_id == STATION}
    answer = client.get(f"/v1/stations/{STATION}/setpoints", headers=auth("station")).json()
    assert set(answer["ev_kw"]) == ids
    assert set(answer) >= {"station_kw", "plan_kw", "mode", "time_s"}


def test_user_reads_own_data_only(service: Any) -> None:
    client, app, _ = service
    mine, theirs = _pseudonym(client, "user"), _pseudonym(client, "user2")
    assert mine != theirs and USER not in mine
    for suffix in ("status", "history"):
        assert client.get(f"/v1/users/{mine}/{suffix}", headers=auth("user")).status_code == 200
        assert client.get(f"/v1/users/{theirs}/{suffix}", headers=auth("user")).status_code == 403
        assert client.get(f"/v1/users/{USER}/{suffix}", headers=auth("user")).status_code == 403  # the raw id
        assert client.get(f"/v1/users/{mine}/{suffix}", headers=auth("operator")).status_code == 403
    status = client.get(f"/v1/users/{mine}/status", headers=auth("user")).json()
    assert status["user"] == mine and "ev_id" not in status and USER not in str(status)
    assert set(status["consent"]) == {"controlled_charging", "v2g"}


def test_every_call_is_audited_without_keys(service: Any) -> None:
    client, app, _ = service
    client.get("/v1/decision/latest", headers=auth("auditor"))
    entries = client.get("/v1/audit?limit=1000", headers=auth("auditor")).json()["entries"]
    assert entries and [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert any(e["outcome"] == "denied:403" and e["action"] == "GET /v1/decision/latest" for e in entries)
    assert any(e["outcome"].startswith("unauthenticated") for e in entries)
    assert all(e["principal"] != USER for e in entries)
    text = Path(app.state.config.audit_path).read_text(encoding="utf-8")
    assert not any(key in text for key in KEYS.values())
    alarms = client.get("/v1/alarms?limit=1000", headers=auth("auditor")).json()["alarms"]
    assert {"unauthorised", "malformed_message"} <= {a["kind"] for a in alarms}


def test_keys_from_the_environment() -> None:
    specs = parse_env_keys(f" {KEYS['operator']}:operator , {KEYS['station']}:station=ST1,{KEYS['user']}:user=E1,")
    assert [(s.role, s.station, s.user) for s in specs] == [("operator", None, None), ("station", "ST1", None),
                                                            ("user", None, "E1")]
    ring = KeyRing(specs)
    principal = ring.authenticate(KEYS["station"])
    assert principal is not None and principal.station_id == "ST1" and principal.role == "station"
    assert ring.authenticate(KEYS["station"] + "x") is None and ring.authenticate("") is None
    assert KEYS["operator"] not in repr(specs)


@pytest.mark.parametrize("text,words", [
    ("short:operator", f"at least {MIN_KEY_LENGTH}"),
    (f"{KEYS['operator']}:admin", "unknown role 'admin'"),
    (f"{KEYS['operator']}:station", "needs its station"),
    (f"{KEYS['operator']}:operator=ST1", "takes no subject"),
    (KEYS["operator"], "expected KEY:ROLE"),
])
def test_bad_environment_keys(text: str, words: str) -> None:
    with pytest.raises(OptionError, match=words) as err:
        parse_env_keys(text)
    assert KEYS["operator"] not in str(err.value)


def test_config_keys_and_duplicates(tmp_path: Path) -> None:
    digest = hashlib.sha256(KEYS["auditor"].encode()).hexdigest()
    spec = key_spec({"key_sha256": digest, "role": "auditor", "name": "audit office"}, "serve.toml: keys[0]")
    assert KeyRing([spec]).authenticate(KEYS["auditor"]) is not None
    with pytest.raises(OptionError, match="configured twice"):
        KeyRing([spec, key_spec({"key": KEYS["auditor"], "role": "auditor"}, "k")])
    with pytest.raises(OptionError, match="exactly one of key and key_sha256"):
        key_spec({"role": "operator"}, "k")
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f'[[keys]]\nkey_sha256 = "{digest}"\nrole = "auditor"\n\n[[keys]]\nkey = "{KEYS["station"]}"\n'
                   f'role = "station"\nstation = "{STATION}"\n', encoding="utf-8")
    assert [k.role for k in load_config(cfg).keys] == ["auditor", "station"]


def test_keys_must_name_known_subjects(instance: Any, tmp_path: Path) -> None:
    config = dataclasses.replace(load_config(None, database=tmp_path / "s.db"),
                                 keys=tuple(parse_env_keys(f"{KEYS['station']}:station=no_such_station")))
    with pytest.raises(OptionError, match="not a station of the instance"):
        create_app(config, instance=instance)


def test_rate_limit_refuses_a_flood(instance: Any, tmp_path: Path) -> None:
    config = dataclasses.replace(load_config(None, database=tmp_path / "s.db"), rate_limit=True,
                                 keys=tuple(parse_env_keys(f"{KEYS['auditor']}:auditor")))
    app = create_app(config, instance=instance)
    app.state.hooks.alarm.rates = RateLimiter(rate_per_s=0.01, burst=5)  # a small bucket: a quick test
    client = TestClient(app)
    codes = [client.get("/v1/me", headers=auth("auditor")).status_code for _ in range(8)]
    assert codes[0] == 200 and codes[-1] == 429
    assert "rate_limited" in {a.kind for a in app.state.alarm_store.list()}
    close_app(app)

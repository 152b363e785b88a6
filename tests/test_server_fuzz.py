"""Malformed requests against every endpoint of the dispatch service: a 4xx naming the problem, never a 5xx.

Hypothesis generates bodies that are not JSON (random bytes, cut-off and garbled JSON text), JSON
of every shape, and states, reports and ticks with one field broken (a wrong type, an extreme or
non-finite number, a missing or extra key, an unknown id); and query strings, path parameters and
authorisation headers of any text. Every answer must be 200 (a body that happens to be valid) or a
4xx with a JSON ``error``; the service must keep answering afterwards.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optev.io import read
from optev.io.embedded import default_instance
from optev.mpc import ReplayPlant
from optev.server.app import close_app, create_app
from optev.server.auth import parse_env_keys
from optev.server.config import load_config

KEYS = {"operator": "op-key-0000000000000001", "station": "st-key-0000000000000001",
        "auditor": "au-key-0000000000000001", "user": "us-key-0000000000000001"}
STATION = "scs_N10"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(client, valid state dict, valid report dict, user pseudonym) of a service with a decision made."""
    instance = read(default_instance())
    folder = tmp_path_factory.mktemp("serve_fuzz")
    config = load_config(None, database=folder / "serve.db", formulation="station_v2g", horizon="1h")
    env = (f"{KEYS['operator']}:operator,{KEYS['station']}:station={STATION},{KEYS['auditor']}:auditor,"
           f"{KEYS['user']}:user=car00001")
    app = create_app(dataclasses.replace(config, keys=tuple(parse_env_keys(env))), instance=instance)
    client = TestClient(app)
    state = ReplayPlant(instance, start_s=9 * 3600.0).control_state()
    assert client.post("/v1/step", content=state.to_json(), headers=auth("operator")).status_code == 200
    report = {"time_s": state.time_s, "evs": [e.to_dict() for e in state.evs if e.station_id == STATION]}
    pseudonym = client.get("/v1/me", headers=auth("user")).json()["user"]
    yield client, json.loads(state.to_json()), report, pseudonym
    close_app(app)


def check(response: Any) -> None:
    """200, or a 4xx with a JSON error; never a 5xx."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error"], str) and body["error"]
        assert "Traceback" not in response.text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
"""Any JSON value (NaN and infinity too, as Python's json writes them)."""

odd_numbers = st.sampled_from([-1.0, -1e308, 1e308, 1e12, float("nan"), float("inf"), 0.5, 2.0, 1e9 + 1])
field_values = json_values | odd_numbers | st.sampled_from(["", "nowhere", "car99999", "x" * 300])


def garbled_text(valid: str) -> Any:
    """Valid JSON text cut, spliced or with bytes flipped."""
    n = len(valid)
    return st.one_of(
        st.integers(0, n).map(lambda k: valid[:k]),
        st.tuples(st.integers(0, n), st.text(max_size=5)).map(lambda t: valid[:t[0]] + t[1] + valid[t[0]:]),
        st.integers(0, max(n - 1, 0)).map(lambda k: valid[:k] + "\x00" + valid[k + 1:]))


def broken(document: dict[str, Any]) -> Any:
    """``document`` with one field (top level or of its first EV) replaced, removed or added."""
    def mutate(doc: dict[str, Any], key: str, value: Any, how: str) -> dict[str, Any]:
        out = json.loads(json.dumps(doc))
        target = out["evs"][0] if key.startswith("ev.") and out.get("evs") else out
        name = key.removeprefix("ev.")
        if how == "drop":
            target.pop(name, None)
        else:
            target[name if how == "set" else f"{name}_extra"] = value
        return out

    keys = [*document, *(f"ev.{k}" for k in (document.get("evs") or [{}])[0])]
    return st.builds(mutate, st.just(document), st.sampled_from(keys), field_values,
                     st.sampled_from(["set", "drop", "add"]))


def bodies(document: dict[str, Any]) -> Any:
    """Bodies of every kind for an endpoint whose valid body is ``document``."""
    text = json.dumps(document)
    return st.one_of(
        st.binary(max_size=200),
        garbled_text(text).map(lambda t: t.encode("utf-8", "surrogatepass")),
        json_values.map(lambda v: json.dumps(v).encode()),
        broken(document).map(lambda d: json.dumps(d).encode()))


@FUZZ
@given(data=st.data())
def test_fuzz_step(service: Any, data: Any) -> None:
    client, state, _, _ = service
    check(client.post("/v1/step", content=data.draw(bodies(state)), headers=auth("operator")))


@FUZZ
@given(data=st.data())
def test_fuzz_telemetry(service: Any, data: Any) -> None:
    client, _, report, _ = service
    check(client.post(f"/v1/stations/{STATION}/telemetry", content=data.draw(bodies(report)),
                      headers=auth("station")))


@FUZZ
@given(body=st.one_of(st.binary(max_size=50), json_values.map(lambda v: json.dumps(v).encode()),
                      field_values.map(lambda v: json.dumps({"time_s": v}).encode())))
def test_fuzz_tick(service: Any, body: bytes) -> None:
    client, _, _, _ = service
    check(client.post("/v1/tick", content=body, headers=auth("operator")))


GETS = [("operator", "/v1/decision/latest"), ("operator", "/v1/flexibility"), ("auditor", "/v1/service-records"),
        ("auditor", "/v1/audit"), ("auditor", "/v1/alarms"), ("station", f"/v1/stations/{STATION}/setpoints"),
        ("station", f"/v1/stations/{STATION}/telemetry"), ("user", "/v1/me")]
PARAMS = ["scope", "id", "case", "horizon", "limit", "after", "offset", "service_id", "participant_id", "kind"]


@FUZZ
@given(which=st.sampled_from(GETS), params=st.dictionaries(st.sampled_from(PARAMS),
                                                           st.text(max_size=12) | field_values.map(str), max_size=3))
def test_fuzz_query_strings(service: Any, which: tuple[str, str], params: dict[str, str]) -> None:
    client, _, _, _ = service
    role, path = which
    query = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params.items())
    check(client.get(f"{path}?{query}", headers=auth(role)))


@FUZZ
@given(role=st.sampled_from(sorted(KEYS)), segment=st.text(min_size=1, max_size=40),
       suffix=st.sampled_from(["stations/{}/setpoints", "stations/{}/telemetry", "users/{}/status",
                               "users/{}/history"]))
def test_fuzz_path_parameters(service: Any, role: str, segment: str, suffix: str) -> None:
    client, _, _, _ = service
    path = "/v1/" + suffix.format(quote(segment, safe=""))
    check(client.get(path, headers=auth(role)))


@FUZZ
@given(header=st.text(max_size=60).filter(lambda h: h.isprintable() and h.isascii()),
       path=st.sampled_from(["/v1/step", "/v1/me", "/v1/audit", f"/v1/stations/{STATION}/setpoints"]))
def test_fuzz_authorization(service: Any, header: str, path: str) -> None:
    client, _, _, _ = service
    r = client.request("POST" if path == "/v1/step" else "GET", path, headers={"Authorization": header})
    assert r.status_code == 401, (header, r.text)
    check(r)


@FUZZ
@given(method=st.sampled_from(["PUT", "DELETE", "PATCH"]), path=st.sampled_from(["/v1/step", "/v1/me", "/health",
                                                                               "/v1/nothing", "/"]))
def test_fuzz_methods_and_routes(service: Any, method: str, path: str) -> None:
    client, _, _, _ = service
    check(client.request(method, path, headers=auth("operator")))


def test_still_serving_after_the_fuzz(service: Any) -> None:
    client, state, _, pseudonym = service
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/v1/step", content=json.dumps(state), headers=auth("operator")).status_code == 200
    assert client.get(f"/v1/users/{pseudonym}/status", headers=auth("user")).status_code == 200
    over = b'{"time_s": 1' + b" " * (33 * 1024 * 1024) + b"}"
    r = client.post("/v1/step", content=over, headers=auth("operator"))
    assert r.status_code == 413 and r.json()["field"] == "body"

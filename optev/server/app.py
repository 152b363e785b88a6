"""The dispatch service's HTTP API (issue 15): :func:`create_app` builds the FastAPI application.

=======================================  =========================  ==========================================
endpoint                                 roles                      answers
=======================================  =========================  ==========================================
``GET /health``                          anyone (no key)            ``status``, ``version``, database reachable
``GET /v1/me``                           every role                 the caller's role, name, station, pseudonym
``POST /v1/step``                        operator                   decision for a posted ControlState
``POST /v1/tick``                        operator                   decision without a state (telemetry/edge);
                                                                    with OCPP: sent to the stations, their answers
``GET /v1/ocpp/stations``                operator, auditor          OCPP stations seen (pseudonymised ids)
``GET /v1/decision/latest``              operator                   the latest decision
``GET /v1/stations/{id}/setpoints``      operator, station (own)    one station's setpoints, plan and mode
``POST /v1/stations/{id}/telemetry``     operator, station (own)    store the station's plugged EVs
``GET /v1/stations/{id}/telemetry``      operator, station (own)    the station's last report
``GET /v1/flexibility``                  operator                   adjustable-capacity curves of the fleet
``GET /v1/service-records``              operator, auditor          grid-service response records
``GET /v1/users/{pseudonym}/status``     user (own)                 the user's EV now, setpoint, plan, consent
``GET /v1/users/{pseudonym}/history``    user (own)                 the user's past setpoints
``GET /v1/audit``                        auditor                    audit log entries
``GET /v1/alarms``                       auditor                    security alarms
``GET /v1/users/{pseudonym}/consent``    user (own), auditor        consent now per purpose, and its history
``PUT /v1/users/{pseudonym}/consent``    user (own)                 records the user's choices
``DELETE /v1/users/{pseudonym}/consent`` user (own)                 withdraws consent (``?purpose=``: one)
``GET /v1/aggregates/stations``          operator, auditor          per-station sums, cells under k suppressed
``GET /v1/aggregates/city``              operator, auditor          the city total (suppressed below k EVs)
``GET /openapi.json``, ``GET /docs``     anyone                     the API's schema
=======================================  =========================  ==========================================

Every call but ``/health`` is recorded in the audit log (:mod:`optev.server.hooks`). A call
without a valid key is 401 (``WWW-Authenticate: Bearer``), with a key whose role or subject does
not allow it 403 — checked before the body is read. Errors are JSON ``{"error": ..., "field": ...}``
naming the field: 400 (a body that is not JSON), 413 (a body over ``max_body_mb``), 422 (a value
that does not fit, an unknown station or EV), 404 (nothing yet, an unknown station), never a
traceback. Roles and keys: :mod:`optev.server.auth`; decisions: :mod:`optev.server.dispatch`.

With ``ocpp_port`` configured, the application's lifespan also runs the OCPP CSMS on the same event
loop (:mod:`optev.server.ocpp_bridge`: ids pseudonymised at the edge, ``POST /v1/tick`` and the
optional ``ocpp_autodispatch`` loop decide from the stations' telemetry and send the decision as
charging profiles); without it ``GET /v1/ocpp/stations`` is 404 and ticks decide only.
"""

from __future__ import annotations

import logging
import socket
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from optev import package_version
from optev.audit.alarms import AlarmStore
from optev.blocks.window import instance_origin
from optev.data.instance import Instance
from optev.errors import DataError, OptevError
from optev.io import read
from optev.io.embedded import default_instance
from optev.server.auth import ROLES, AuthError, KeyRing, Principal, require
from optev.server.config import ServeConfig
from optev.server.dispatch import Dispatcher, InputError, Outcome
from optev.privacy.pseudonym import Keyring, is_pseudonym
from optev.server.hooks import PURPOSES, Hooks, default_hooks, service_keyring
from optev.server.ocpp_bridge import OcppBridge
from optev.server.privacy_api import router as privacy_router
from optev.server.schemas import BODY_MODELS, BodyError, ControlStateIn, TelemetryIn, TickIn, field_path, \
    limited_body, parse, to_evs, to_state
from optev.server.store import Store
from optev.server.views import FlexCache, NoData, ServiceRecords, flexibility, recent_alarms, station_reports, \
    station_setpoints, user_history, user_status

__all__ = ["close_app", "create_app"]

LOG = logging.getLogger("optev.server")

DESCRIPTION = ("The rolling-horizon controller of optev (T/JES 012-2026) as a service: post the measured state, "
               "get the setpoints (per EV and station, on the 1 kW grid) and the planned horizon. Every call but "
               "`/health` needs `Authorization: Bearer KEY`; roles `operator`, `station` (own station), `auditor`, "
               "`user` (own data). Errors are JSON `{\"error\", \"field\"}`.")
"""The OpenAPI schema's description."""

UNAUDITED = ("/health",)
"""Paths not written to the audit log (load balancers poll them)."""

router = APIRouter()
operator = require("operator")
station_or_operator = require("operator", "station")
anyone = require(*ROLES)


class ApiError(Exception):
    """An answer other than 200: ``status``, a message and the field it is about."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _body_schema(model: type) -> dict[str, Any]:
    return {"requestBody": {"required": model is not TickIn, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


async def _body(request: Request) -> bytes:
    """The request body, at most ``max_body_mb`` (413 beyond)."""
    return await limited_body(request, request.app.state.config.max_body_bytes)


def _dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


def _own_station(principal: Principal, station_id: str) -> None:
    if principal.role == "station" and principal.station_id != station_id:
        raise AuthError(403, f"a station key reads and writes its own station ({principal.station_id}) only")


def _known_station(request: Request, station_id: str) -> None:
    if station_id not in _dispatcher(request).stations:
        raise ApiError(404, f"no station {station_id!r}", "station_id")


def _own_user(request: Request, principal: Principal, pseudonym: str) -> str:
    """The EV id of a user principal whose pseudonym is ``pseudonym`` (403 otherwise)."""
    if principal.user_id is None or not request.app.state.hooks.pseudonyms.matches(principal.user_id, pseudonym):
        raise AuthError(403, "a user key reads its own data only (GET /v1/me shows your pseudonym)")
    return principal.user_id


# ---------------------------------------------------------------------------------------------- service
@router.get("/health", tags=["service"], summary="Liveness and database (no key needed)")
def health(request: Request) -> JSONResponse:
    ok = _dispatcher(request).store.ping()
    return JSONResponse({"status": "ok" if ok else "degraded", "version": package_version(),
                         "database": "ok" if ok else "unreachable"}, status_code=200 if ok else 503)


@router.get("/v1/me", tags=["service"], summary="Who the key belongs to")
def me(request: Request, principal: Principal = Depends(anyone)) -> dict[str, Any]:
    user = request.app.state.hooks.pseudonyms(principal.user_id) if principal.user_id is not None else None
    return {"role": principal.role, "name": principal.name, "key_id": principal.key_id,
            "station_id": principal.station_id, "user": user}


# ---------------------------------------------------------------------------------------------- dispatch
@router.post("/v1/step", tags=["dispatch"], openapi_extra=_body_schema(ControlStateIn),
             summary="Post the measured state, get the decision")
async def step(request: Request, principal: Principal = Depends(operator)) -> dict[str, Any]:
    state = to_state(parse(ControlStateIn, await _body(request)))
    out = await _dispatcher(request).run(_dispatcher(request).step, state)
    return _answered(request, out)


@router.post("/v1/tick", tags=["dispatch"], openapi_extra=_body_schema(TickIn),
             summary="No state this interval: decide from the stations' telemetry, or by the edge policy")
async def tick(request: Request, principal: Principal = Depends(operator)) -> dict[str, Any]:
    body = await _body(request)
    time_s = parse(TickIn, body).time_s if body.strip() else None
    bridge: OcppBridge | None = request.app.state.ocpp
    if bridge is not None:
        done, ocpp = await bridge.tick(time_s)
        return _answered(request, done, {"ocpp": ocpp})
    out = await _dispatcher(request).run(_dispatcher(request).tick, time_s)
    return _answered(request, out)


def _answered(request: Request, outcome: Outcome, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The answer of a decision; the audit detail, the edge alarm and the profiles sent (hooks)."""
    out = {**outcome.to_dict(), **(extra or {})}
    request.app.state.hooks.decision_sent(outcome)
    request.state.audit_detail = {"decision_id": out["decision_id"], "source": out["source"]}
    if out["source"] == "edge":
        request.app.state.hooks.alarm("edge_policy", {"decision_id": out["decision_id"], "reason": out["reason"]})
    return out


@router.get("/v1/decision/latest", tags=["dispatch"], summary="The latest decision")
def latest_decision(request: Request, principal: Principal = Depends(operator)) -> dict[str, Any]:
    latest = _dispatcher(request).latest
    if latest is None:
        raise NoData("no decision yet: post a state to /v1/step or call /v1/tick")
    return latest.to_dict()


# ---------------------------------------------------------------------------------------------- stations
@router.get("/v1/stations/{station_id}/setpoints", tags=["stations"], summary="One station's setpoints and plan")
def get_setpoints(request: Request, station_id: str, principal: Principal = Depends(station_or_operator)
                  ) -> dict[str, Any]:
    _own_station(principal, station_id)
    _known_station(request, station_id)
    return station_setpoints(_dispatcher(request), station_id)


@router.post("/v1/stations/{station_id}/telemetry", tags=["stations"], openapi_extra=_body_schema(TelemetryIn),
             summary="A station reports its plugged EVs")
async def post_telemetry(request: Request, station_id: str, principal: Principal = Depends(station_or_operator)
                         ) -> dict[str, Any]:
    _own_station(principal, station_id)
    _known_station(request, station_id)
    report = parse(TelemetryIn, await _body(request))
    evs = to_evs(report.evs)
    report_id = await run_in_threadpool(_dispatcher(request).report, station_id, float(report.time_s), evs)
    request.app.state.hooks.alarm.telemetry(station_id, float(report.time_s), evs)
    return {"report_id": report_id, "station_id": station_id, "time_s": float(report.time_s), "evs": len(evs)}


@router.get("/v1/stations/{station_id}/telemetry", tags=["stations"], summary="A station's last report")
def get_telemetry(request: Request, station_id: str, principal: Principal = Depends(station_or_operator)
                  ) -> dict[str, Any]:
    _own_station(principal, station_id)
    _known_station(request, station_id)
    return station_reports(_dispatcher(request), station_id)


@router.get("/v1/ocpp/stations", tags=["stations"], summary="The OCPP stations seen (pseudonymised ids)")
def get_ocpp_stations(request: Request, principal: Principal = Depends(require("operator", "auditor"))
                      ) -> dict[str, Any]:
    bridge: OcppBridge | None = request.app.state.ocpp
    if bridge is None:
        raise ApiError(404, "the OCPP endpoint is off: set ocpp_port in the config (or optev serve --ocpp-port N)",
                       "ocpp_port")
    return bridge.stations()


# ---------------------------------------------------------------------------------------------- fleet
@router.get("/v1/flexibility", tags=["fleet"], summary="Adjustable-capacity curves of the current fleet")
def get_flexibility(request: Request, scope: Literal["city", "region", "station"] = "city",
                    id: str | None = Query(None, max_length=200, description="region or station id"),
                    case: Literal["expected", "plugged", "arrivals", "low", "high"] | None = None,
                    horizon: str | None = Query(None, max_length=40, description="e.g. 8h (default: the service's)"),
                    principal: Principal = Depends(operator)) -> dict[str, Any]:
    return flexibility(_dispatcher(request), request.app.state.flex_cache, scope, id, case, horizon)


@router.get("/v1/service-records", tags=["fleet"], summary="Response records of grid services (R6.5.3)")
def get_service_records(request: Request, service_id: str | None = Query(None, max_length=200),
                        participant_id: str | None = Query(None, max_length=200),
                        offset: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=10_000),
                        principal: Principal = Depends(require("operator", "auditor"))) -> dict[str, Any]:
    records: ServiceRecords = request.app.state.records
    return records.query(service_id, participant_id, offset, limit)


# ---------------------------------------------------------------------------------------------- users
@router.get("/v1/users/{pseudonym}/status", tags=["users"], summary="The user's EV now")
def get_user_status(request: Request, pseudonym: str, principal: Principal = Depends(require("user"))
                    ) -> dict[str, Any]:
    ev_id = _own_user(request, principal, pseudonym)
    allowed = request.app.state.hooks.consent([ev_id]).get(ev_id, frozenset())
    consent = {p: p in allowed for p in PURPOSES}
    return user_status(_dispatcher(request), ev_id, pseudonym, consent)


@router.get("/v1/users/{pseudonym}/history", tags=["users"], summary="The user's past setpoints")
def get_user_history(request: Request, pseudonym: str, limit: int = Query(96, ge=1, le=1000),
                     principal: Principal = Depends(require("user"))) -> dict[str, Any]:
    ev_id = _own_user(request, principal, pseudonym)
    return user_history(_dispatcher(request), ev_id, pseudonym, limit)


# ---------------------------------------------------------------------------------------------- audit
@router.get("/v1/audit", tags=["audit"], summary="Audit log entries after seq `after`")
def get_audit(request: Request, after: int = Query(0, ge=0), limit: int = Query(100, ge=1, le=1000),
              principal: Principal = Depends(require("auditor"))) -> dict[str, Any]:
    return {"entries": request.app.state.hooks.audit.entries(after=after, limit=limit)}


@router.get("/v1/alarms", tags=["audit"], summary="Security alarms, newest last")
def get_alarms(request: Request, limit: int = Query(100, ge=1, le=1000), kind: str | None = Query(None, max_length=60),
               principal: Principal = Depends(require("auditor"))) -> dict[str, Any]:
    return recent_alarms(request.app.state.alarm_store, kind, limit)


# ---------------------------------------------------------------------------------------------- errors
def _label(request: Request, p: Principal | None) -> str | None:
    """How a principal is named in the audit log and alarms: a user by their pseudonym, a key by its name."""
    if p is None:
        return None
    return request.app.state.hooks.pseudonyms(p.user_id) if p.user_id is not None else p.name


def _who(request: Request) -> dict[str, Any]:
    p: Principal | None = getattr(request.state, "principal", None)
    return {"principal": _label(request, p), "role": p.role if p else None, "key_id": p.key_id if p else None,
            "method": request.method, "path": _audited_path(request),
            "client": request.client.host if request.client else None}


_OUTCOMES = {401: "unauthenticated", 403: "denied", 404: "not_found", 409: "replayed", 429: "rate_limited"}


def _error(request: Request, status: int, message: str, field: str | None, alarm: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    if alarm is not None:
        # the alarm keeps the status and the field, not the message: a message can quote a raw EV id
        request.app.state.hooks.alarm(alarm, {**_who(request), "status": status,
                                              "error": f"{status} {field or 'request'}"})
    request.state.audit_detail = {"error": message, "field": field}
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    async def auth(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AuthError)
        if exc.status == 401:
            return _error(request, 401, exc.message, "Authorization", "unauthenticated",
                          {"WWW-Authenticate": "Bearer"})
        return _error(request, exc.status, exc.message, None, "forbidden" if exc.status == 403 else None)

    async def body(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, (BodyError, ApiError))
        alarm = "malformed" if exc.status in (400, 413, 422) else None
        return _error(request, exc.status, exc.message, exc.field, alarm)

    async def invalid(request: Request, exc: Exception) -> Response:
        field = exc.field if isinstance(exc, InputError) else None
        return _error(request, 422, " ".join(str(exc).split()), field, "malformed")

    async def params(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = (list(exc.errors()) or [{"loc": (), "msg": "invalid request"}])[0]
        loc = [p for p in first.get("loc", ()) if p not in ("query", "path", "header")]
        return _error(request, 422, str(first.get("msg")), field_path(loc, "request"), "malformed")

    async def nodata(request: Request, exc: Exception) -> Response:
        return _error(request, 404, str(exc), None)

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return _error(request, exc.status_code, str(exc.detail), None, "malformed" if exc.status_code < 500 else None)

    async def internal(request: Request, exc: Exception) -> Response:
        LOG.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(request, 500, "internal error (logged by the service)", None, "internal_error")

    for kind, handler in ((AuthError, auth), (BodyError, body), (ApiError, body), (OptevError, invalid),
                          (RequestValidationError, params), (NoData, nodata), (StarletteHTTPException, http),
                          (Exception, internal)):
        app.add_exception_handler(kind, handler)


def _install_audit(app: FastAPI) -> None:
    @app.middleware("http")
    async def audit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            if request.url.path not in UNAUDITED:
                who = _who(request)
                route = getattr(request.scope.get("route"), "path", None)
                outcome = "ok" if status < 400 else "error" if status >= 500 else _OUTCOMES.get(status, "invalid")
                detail = getattr(request.state, "audit_detail", {})
                obj = _audited_path(request) + (f" decision:{detail['decision_id']}" if "decision_id" in detail else "")
                principal = who["principal"] or f"anonymous@{who['client']}"
                await run_in_threadpool(  # the chained log fsyncs: off the event loop
                    request.app.state.hooks.audit.record, principal, f"{request.method} {route or '(no route)'}",
                    obj, outcome if status < 400 else f"{outcome}:{status}", getattr(request.state, "body_sha256", None))


def _audited_path(request: Request) -> str:
    """The path as the audit log keeps it: a user's path segment that is not a pseudonym (a caller
    who sent a raw EV id) is logged as that id's pseudonym, marked ``raw:`` — raw ids stay at the edge."""
    parts = request.url.path.split("/")
    if len(parts) > 3 and parts[1:3] == ["v1", "users"] and parts[3] and not is_pseudonym(parts[3]):
        try:
            parts[3] = "raw:" + request.app.state.hooks.pseudonyms(parts[3])
        except DataError:
            parts[3] = "raw:(not an id)"
    return "/".join(parts)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The schema, with the request bodies' models (read by hand, after authentication) as components."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                             tags=app.openapi_tags)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in BODY_MODELS:
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(js.pop("$defs", {}))
            components[model.__name__] = js
        app.openapi_schema = schema
    return app.openapi_schema


def _keyring(config: ServeConfig, store: Store, hooks: Hooks | None) -> Keyring:
    """The service's pseudonym keys: those of the hooks' pseudonyms when they have a keyring,
    else the config's key file, ``OPTEV_PSEUDONYM_KEYS`` or the trial key in the database."""
    given = getattr(hooks.pseudonyms, "keyring", None) if hooks is not None else None
    if isinstance(given, Keyring):
        return given
    data = [p.parent for p in (config.database, config.audit_path) if "://" not in str(p)]
    return service_keyring(config.pseudonym_keys, data, store.secret())


def _default_hooks(config: ServeConfig, keyring: Keyring, alarm_store: AlarmStore, instance: Instance) -> Hooks:
    return default_hooks(audit_path=config.audit_path, keyring=keyring, consent_db=config.consent_db,
                         alarm_store=alarm_store, origin_s=instance_origin(instance).timestamp(),
                         enforce_rate=config.rate_limit, require_nonce=config.require_nonce)


def close_app(app: FastAPI) -> None:
    """Close the database and the audit log of an application made by :func:`create_app` (its
    lifespan does this when the server stops)."""
    app.state.dispatcher.close()
    app.state.hooks.audit.close()


def create_app(config: ServeConfig, *, hooks: Hooks | None = None, instance: Instance | None = None,
               wall: Callable[[], float] = time.time, ocpp_socket: socket.socket | None = None) -> FastAPI:
    """The dispatch service as an ASGI application (module docstring).

    Parameters
    ----------
    config : ServeConfig
        Instance, controller options, database, keys (:mod:`optev.server.config`).
    hooks : Hooks, optional
        Audit log, pseudonyms, consent and alarms (:mod:`optev.server.hooks`); default
        :func:`~optev.server.hooks.default_hooks` (a JSON-lines audit log at ``config.audit_path``).
    instance : Instance, optional
        The instance already read (default: read ``config.instance``, or the embedded default).
    wall : callable
        The wall clock (``clock = "wall"``), s since the epoch.
    ocpp_socket : socket.socket, optional
        A listening socket for the OCPP CSMS (with ``ocpp_port``; default: bind
        ``ocpp_host``:``ocpp_port`` when the application starts).

    Raises
    ------
    OptevError
        A bad instance, database, key or ``[ocpp_ids]`` enrolment (one line for the command line).
    """
    inst = instance if instance is not None else read(config.instance or default_instance())
    keyring = KeyRing(config.keys)
    keyring.check_subjects(inst.stations["station_id"].astype(str).tolist(), inst.evs["ev_id"].astype(str))
    identity = {"instance": inst.metadata.name, "formulation": config.formulation, "step_s": config.step_s}
    store = Store(config.database, identity)
    records = ServiceRecords(config.service_records)
    alarm_store = AlarmStore(store.engine)
    used = hooks if hooks is not None else _default_hooks(config, _keyring(config, store, None), alarm_store, inst)
    dispatcher = Dispatcher(inst, store, config, consent=used.consent, wall=wall)
    bridge = OcppBridge(dispatcher, used, config, _keyring(config, store, used), sock=ocpp_socket) \
        if config.ocpp else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if bridge is not None:
            await bridge.start()
        try:
            yield
        finally:
            if bridge is not None:
                await bridge.stop()
            close_app(_app)

    app = FastAPI(title="optev dispatch service", version=package_version(), lifespan=lifespan, redoc_url=None,
                  description=DESCRIPTION)
    app.state.config, app.state.keyring, app.state.hooks, app.state.admit = config, keyring, used, used.alarm.admit
    app.state.dispatcher, app.state.records, app.state.flex_cache = dispatcher, records, FlexCache()
    app.state.alarm_store, app.state.ocpp = alarm_store, bridge
    app.state.fresh = used.fresh
    _install_errors(app)
    _install_audit(app)
    app.include_router(router)
    app.include_router(privacy_router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app

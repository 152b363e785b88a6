"""The CSMS endpoint of optev's dispatch service: OCPP 2.1, 2.0.1 and 1.6 over websockets (issue 15).

optev acts as the charging-station management system (CSMS) for smart charging. Charge points
connect to ``ws://<host>:<port>/<station id>`` with the websocket subprotocol ``ocpp2.1``,
``ocpp2.0.1`` or ``ocpp1.6`` (the first the station offers, in that order of preference; a
connection without one is refused with HTTP 400, a path without a station id with 404). The
``ocpp`` package does the OCPP-J framing and checks every message in both directions against
the official JSON schemas.

Received (:mod:`optev.server.profiles` maps them): ``BootNotification`` (accepted),
``Heartbeat``, ``StatusNotification`` (connector status per EVSE), ``MeterValues``,
``TransactionEvent`` and ``NotifyEVChargingNeeds`` (2.x), ``StartTransaction`` and
``StopTransaction`` (1.6; the CSMS assigns the integer transaction ids). The latest telemetry
of every EVSE and the active session at it are kept for the controller's next state
(:meth:`OcppCsms.control_state`). A payload with a non-finite number, an unknown unit or an
impossible value is answered with a ``PropertyConstraintViolation`` CallError and stored
nowhere. Every idToken is accepted: authorisation belongs to the station operator.

Sent: :meth:`OcppCsms.dispatch` turns a :class:`~optev.mpc.state.ControlDecision` into
``SetChargingProfile`` requests — a TxProfile per active session (V2G discharge as OCPP 2.1
setpoints; charge only, flagged, for 2.0.1 and 1.6) and, on request, the station-wide cap — and
returns what every station answered (``Accepted``, ``Rejected``, ``unreachable``, or
``nothing_to_send`` when the decision covers the station but it has no session to address).

Privacy: station ids arrive raw in the URL path and idTokens raw in the messages. Both pass
through the ``pseudonymise`` callable at once (default: unchanged) and only its results are
stored, returned, logged or used as optev ids; a session's id is
``pseudonymise("<station id>/<transaction id>")`` (``<station id>`` already optev's). Separate
callables may be given for station ids (``station_ids``) and session ids (``session_ids``: the
``"<station id>/"`` keys of the station's own messages go there, its idTokens to
``pseudonymise``); the dispatch service's rule per kind of id is in
:mod:`optev.server.ocpp_bridge`. The stations' own transaction ids are kept
only to address their TxProfiles, never returned. The ``ocpp`` package's own logging (every
frame at INFO, with raw idTokens) is not passed on: its warnings and errors reach the
``optev.server.ocpp`` logger without the frames.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import ssl as ssl_lib
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from ocpp.charge_point import camel_to_snake_case
from ocpp.exceptions import OCPPError, PropertyConstraintViolationError
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v21 import ChargePoint as ChargePoint21
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.headers import build_www_authenticate_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from optev.errors import DataError
from optev.mpc.state import ControlDecision, ControlState
from optev.server.profiles import (DEFAULT_STACK_LEVEL, SUBPROTOCOLS, EvseSession, ProfileMessage, Telemetry,
                                   decision_profiles, ev_states, iso_utc, merge_telemetry, parse_message,
                                   utc_instant)

__all__ = ["OcppCsms", "ProfileResult", "StationDispatch", "StationInfo"]

LOG = logging.getLogger("optev.server.ocpp")

ACCEPTED, REJECTED, UNREACHABLE, NOTHING = "Accepted", "Rejected", "unreachable", "nothing_to_send"
"""Dispatch outcomes of a station."""

AUTH_REALM = "optev OCPP"
"""The realm of the HTTP Basic challenge (``WWW-Authenticate``) to a refused charge point."""


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class StationInfo:
    """A station the CSMS has seen (the registry entry; ids are pseudonymised).

    Attributes
    ----------
    station_id : str
    version : str
        OCPP version of its latest connection.
    connected : bool
    connected_at, last_seen : datetime
        Latest connection and latest message (the CSMS clock).
    disconnected_at : datetime or None
        When its latest connection closed (None while connected).
    vendor, model : str or None
        From its BootNotification.
    evse_status : dict of int to str
        Latest connector status per EVSE (1.6: connector), from StatusNotification.
    """

    station_id: str
    version: str
    connected: bool
    connected_at: datetime
    last_seen: datetime
    disconnected_at: datetime | None = None
    vendor: str | None = None
    model: str | None = None
    evse_status: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileResult:
    """What a station answered to one ``SetChargingProfile``."""

    evse_id: int
    purpose: str
    session_id: str | None
    status: str
    reason: str = ""
    discharge_clipped: bool = False


@dataclass(frozen=True)
class StationDispatch:
    """The outcome of a dispatch at one station.

    ``status``: ``Accepted`` (every profile), ``Rejected`` (at least one; see ``profiles``),
    ``unreachable`` (not connected, connection lost or no answer in time) or
    ``nothing_to_send``.
    """

    station_id: str
    version: str
    status: str
    profiles: tuple[ProfileResult, ...] = ()
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"station_id": self.station_id, "version": self.version, "status": self.status,
                "reason": self.reason,
                "profiles": [{"evse_id": p.evse_id, "purpose": p.purpose, "session_id": p.session_id,
                              "status": p.status, "reason": p.reason, "discharge_clipped": p.discharge_clipped}
                             for p in self.profiles]}


class _WireLog:
    """The logger handed to the ``ocpp`` package for one station: its INFO dumps of every
    frame (raw idTokens) are dropped; warnings and errors keep their text, not the frames."""

    def __init__(self, station_id: str) -> None:
        self.station_id = station_id

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        return None

    info = debug

    def warning(self, msg: object, *args: object, **kwargs: object) -> None:
        LOG.warning("station %s: ocpp: %s", self.station_id, _head(msg))

    def error(self, msg: object, *args: object, **kwargs: object) -> None:
        LOG.error("station %s: ocpp: %s", self.station_id, _head(msg))

    def exception(self, msg: object, *args: object, **kwargs: object) -> None:
        LOG.error("station %s: ocpp: %s", self.station_id, _head(msg), exc_info=True)


def _head(msg: object) -> str:
    """A log format string without its placeholders (the frames they would show)."""
    return str(msg).split("%", 1)[0].strip(" :'\"")


def _stash_call(raw_msg: str | bytes, into: dict[str, dict[str, Any]]) -> str | None:
    """Keep the camelCase payload of an incoming CALL under its unique id (the package hands
    handlers snake_case keyword arguments, which do not round-trip every OCPP name)."""
    try:
        msg = json.loads(raw_msg)
    except ValueError:
        return None  # not JSON: the ocpp package answers it with a FormatViolation CallError
    if isinstance(msg, list) and len(msg) == 4 and msg[0] == 2 and isinstance(msg[1], str) \
            and isinstance(msg[3], dict):
        into[msg[1]] = msg[3]
        return msg[1]
    return None


class _Point:
    """Handlers of every OCPP version, mixed into the ``ocpp`` package's ChargePoint class of
    the version (which supplies ``call``, ``start``, ``_call`` and ``_call_result``)."""

    _call: Any
    _call_result: Any

    def __init__(self, station_id: str, connection: ServerConnection, csms: OcppCsms, version: str) -> None:
        super().__init__(station_id, connection, response_timeout=csms.response_timeout_s,  # type: ignore[call-arg]
                         logger=_WireLog(station_id))
        self.station_id = station_id
        self.version = version
        self.connection = connection
        self._csms = csms
        self._raw: dict[str, dict[str, Any]] = {}

    async def route_message(self, raw_msg: str | bytes) -> None:
        unique_id = _stash_call(raw_msg, self._raw)
        self._csms._seen(self.station_id)
        try:
            await super().route_message(raw_msg)  # type: ignore[misc]
        finally:
            if unique_id is not None:
                self._raw.pop(unique_id, None)

    def _ids(self, raw_id: str) -> str:
        """This station's session keys (``"<station id>/<transaction id>"``) through the CSMS's
        ``session_ids``, everything else (idTokens) through its ``pseudonymise``."""
        csms = self._csms
        if csms.session_ids is not None and raw_id.startswith(self.station_id + "/"):
            return csms.session_ids(raw_id)
        return csms.pseudonymise(raw_id)

    def _telemetry(self, action: str, unique_id: str, transaction_id: str | None = None) -> Telemetry | None:
        """Parse and store the telemetry of the CALL ``unique_id``; bad values → CallError."""
        try:
            rec = parse_message(action, self._raw.get(unique_id, {}), self.version, self.station_id,
                                received=self._csms.clock(), pseudonymise=self._ids,
                                transaction_id=transaction_id)
        except DataError as err:
            LOG.warning("station %s: %s refused: %s", self.station_id, action, err)
            raise PropertyConstraintViolationError(description=str(err)) from err
        if rec is not None:
            self._csms._ingest(rec)
        return rec

    @on("BootNotification")
    async def on_boot_notification(self, call_unique_id: str, **_: Any) -> Any:
        self._csms._boot(self.station_id, self.version, self._raw.get(call_unique_id, {}))
        return self._call_result.BootNotification(current_time=iso_utc(self._csms.clock()),
                                                  interval=self._csms.heartbeat_s, status="Accepted")

    @on("Heartbeat")
    async def on_heartbeat(self, **_: Any) -> Any:
        return self._call_result.Heartbeat(current_time=iso_utc(self._csms.clock()))

    @on("StatusNotification")
    async def on_status_notification(self, call_unique_id: str, **_: Any) -> Any:
        p = self._raw.get(call_unique_id, {})
        evse, status = (p.get("connectorId"), p.get("status")) if self.version == "1.6" else \
            (p.get("evseId"), p.get("connectorStatus"))
        self._csms._status(self.station_id, evse, status)
        return self._call_result.StatusNotification()

    @on("MeterValues")
    async def on_meter_values(self, call_unique_id: str, **_: Any) -> Any:
        self._telemetry("MeterValues", call_unique_id)
        return self._call_result.MeterValues()

    async def send_profiles(self, messages: list[ProfileMessage]) -> tuple[ProfileResult, ...]:
        """Send ``SetChargingProfile`` requests one after the other; stop at a lost station."""
        out: list[ProfileResult] = []
        lost = ""
        for msg in messages:
            status, reason = (UNREACHABLE, lost) if lost else await self._set_profile(msg)
            if status == UNREACHABLE:
                lost = reason
            out.append(ProfileResult(evse_id=msg.evse_id, purpose=msg.purpose, session_id=msg.session_id,
                                     status=status, reason=reason, discharge_clipped=msg.discharge_clipped))
        return tuple(out)

    async def _set_profile(self, msg: ProfileMessage) -> tuple[str, str]:
        request = self._call.SetChargingProfile(**camel_to_snake_case(msg.payload))
        try:
            answer = await self.call(request, suppress=False)  # type: ignore[attr-defined]
        except TimeoutError:
            return UNREACHABLE, f"no answer within {self._csms.response_timeout_s:g} s"
        except ConnectionClosed:
            return UNREACHABLE, "connection lost"
        except OCPPError as err:
            return REJECTED, f"CallError {getattr(err, 'code', type(err).__name__)}: {err.description}"
        info = getattr(answer, "status_info", None)
        reason = str(info.get("reason_code", "")) if isinstance(info, dict) else ""
        return str(answer.status), reason


class _Point2x(_Point):
    """The 2.0.1 and 2.1 transaction messages."""

    @on("TransactionEvent")
    async def on_transaction_event(self, call_unique_id: str, **_: Any) -> Any:
        self._telemetry("TransactionEvent", call_unique_id)
        token = self._raw.get(call_unique_id, {}).get("idToken")
        return self._call_result.TransactionEvent(id_token_info={"status": "Accepted"} if token else None)

    @on("NotifyEVChargingNeeds")
    async def on_notify_ev_charging_needs(self, call_unique_id: str, **_: Any) -> Any:
        self._telemetry("NotifyEVChargingNeeds", call_unique_id)
        return self._call_result.NotifyEVChargingNeeds(status="Accepted")


class _Point21(_Point2x, ChargePoint21):
    pass


class _Point201(_Point2x, ChargePoint201):
    pass


class _Point16(_Point, ChargePoint16):
    """The 1.6 transaction messages."""

    @on("StartTransaction")
    async def on_start_transaction(self, call_unique_id: str, **_: Any) -> Any:
        transaction_id = self._csms._next_transaction()
        self._telemetry("StartTransaction", call_unique_id, transaction_id=str(transaction_id))
        return self._call_result.StartTransaction(transaction_id=transaction_id, id_tag_info={"status": "Accepted"})

    @on("StopTransaction")
    async def on_stop_transaction(self, call_unique_id: str, **_: Any) -> Any:
        self._telemetry("StopTransaction", call_unique_id)
        tag = self._raw.get(call_unique_id, {}).get("idTag")
        return self._call_result.StopTransaction(id_tag_info={"status": "Accepted"} if tag else None)


_POINTS: dict[str, type[_Point]] = {"2.1": _Point21, "2.0.1": _Point201, "1.6": _Point16}


def station_from_path(path: str) -> str:
    """The raw station id of a connection: the last segment of the URL path (percent-decoded)."""
    segments = [s for s in urlsplit(path).path.split("/") if s]
    return unquote(segments[-1]) if segments else ""


class OcppCsms:
    """optev's OCPP endpoint for smart charging (module docstring).

    Parameters
    ----------
    origin : datetime
        The instant optev's times count from (the instance's ``metadata.start``; for an
        instance, :func:`optev.blocks.window.instance_origin`), aware.
    host : str
        Interface to listen on.
    port : int
        Port; 0 picks a free one (:attr:`port` holds the bound port after :meth:`start`).
    pseudonymise : callable, optional
        Raw station id or idToken → the id optev keeps (default: unchanged).
    station_ids, session_ids : callable, optional
        Raw station id → optev's, and ``"<optev station id>/<transaction id>"`` → optev's
        session id (default: ``pseudonymise`` for both).
    ssl : ssl.SSLContext, optional
        Serve ``wss://`` (TLS) with this server context (default: plain ``ws://``).
    sock : socket.socket, optional
        A socket already bound and listening (``host`` and ``port`` are then only for
        :attr:`url`; the port is the socket's).
    authenticate : callable, optional
        Awaited with a connecting station's raw id, its ``Authorization`` header (or None) and
        its address before the upgrade; False answers HTTP 401 and the connection never reaches
        the handlers (:mod:`optev.server.ocpp_auth`). Default: every station is let in.
    heartbeat_s : int
        Heartbeat interval given to booting stations, s.
    response_timeout_s : float
        How long a station may take to answer a request before it counts as unreachable, s.
    clock : callable, optional
        Current time (aware; default: the system clock in UTC) for message times, boots,
        heartbeats and messages without a timestamp.
    on_telemetry : callable, optional
        Called with every telemetry record stored (after pseudonymisation).
    max_periods : int, optional
        Most periods per schedule the stations accept (``ChargingScheduleMaxPeriods``).
    max_offline_s : int, optional
        ``maxOfflineDuration`` of OCPP 2.1 TxProfiles, s.

    Examples
    --------
    ::

        async with OcppCsms(instance_origin(inst), port=9000) as csms:
            ...                                   # stations connect to ws://host:9000/<id>
            state, skipped = csms.control_state(t, capacity_kwh=capacities(inst))
            answers = await csms.dispatch(controller.step(state))
    """

    def __init__(self, origin: datetime, *, host: str = "127.0.0.1", port: int = 0,
                 pseudonymise: Callable[[str], str] | None = None, heartbeat_s: int = 300,
                 response_timeout_s: float = 10.0, clock: Callable[[], datetime] | None = None,
                 on_telemetry: Callable[[Telemetry], None] | None = None, max_periods: int | None = None,
                 max_offline_s: int | None = None, station_ids: Callable[[str], str] | None = None,
                 session_ids: Callable[[str], str] | None = None, ssl: ssl_lib.SSLContext | None = None,
                 sock: socket.socket | None = None,
                 authenticate: Callable[[str, str | None, str | None], Awaitable[bool]] | None = None) -> None:
        if not response_timeout_s > 0:
            raise DataError(f"response_timeout_s must be positive, got {response_timeout_s}")
        self.origin = utc_instant(origin, "origin")
        self.host = host
        self.port = int(port)
        self.pseudonymise: Callable[[str], str] = pseudonymise or (lambda raw_id: raw_id)
        self.station_ids: Callable[[str], str] = station_ids or self.pseudonymise
        self.session_ids = session_ids
        self.ssl = ssl
        self._sock = sock
        self.authenticate = authenticate
        self.heartbeat_s = int(heartbeat_s)
        self.response_timeout_s = float(response_timeout_s)
        self.clock: Callable[[], datetime] = clock or _utc_now
        self.on_telemetry = on_telemetry
        self.max_periods = max_periods
        self.max_offline_s = max_offline_s
        self._server: Server | None = None
        self._info: dict[str, StationInfo] = {}
        self._points: dict[str, _Point] = {}
        self._sessions: dict[tuple[str, int], EvseSession] = {}
        self._latest: dict[tuple[str, int], Telemetry] = {}
        self._transactions = itertools.count(1)

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """``ws://host:port/`` (``wss://`` with TLS): a station appends its id."""
        return f"{'wss' if self.ssl is not None else 'ws'}://{self.host}:{self.port}/"

    async def start(self) -> None:
        """Listen for charge points (:attr:`port` is then the bound port)."""
        if self._server is not None:
            return
        where: dict[str, Any] = {"sock": self._sock} if self._sock is not None else {"host": self.host,
                                                                                   "port": self.port}
        self._server = await serve(self._serve, subprotocols=[Subprotocol(s) for s in SUBPROTOCOLS],
                                   process_request=self._check_request, ssl=self.ssl, **where)
        self.port = int(self._server.sockets[0].getsockname()[1])
        LOG.info("OCPP CSMS listening on %s", self.url)

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        LOG.info("OCPP CSMS on port %d stopped", self.port)

    async def __aenter__(self) -> OcppCsms:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        raw_id = station_from_path(request.path)
        if not raw_id:
            return connection.respond(HTTPStatus.NOT_FOUND, "connect to ws://host:port/<station id>\n")
        if self.authenticate is None:
            return None
        address = connection.remote_address
        client = str(address[0]) if isinstance(address, tuple) and address else None
        if await self.authenticate(raw_id, request.headers.get("Authorization"), client):
            return None
        response = connection.respond(HTTPStatus.UNAUTHORIZED, "HTTP Basic credentials of this charge point "
                                                               "required (OCPP Security Profile 1)\n")
        response.headers["WWW-Authenticate"] = build_www_authenticate_basic(AUTH_REALM)
        return response

    async def _serve(self, ws: ServerConnection) -> None:
        version = SUBPROTOCOLS.get(str(ws.subprotocol))
        if ws.request is None or version is None:
            await ws.close(CloseCode.PROTOCOL_ERROR, "no OCPP subprotocol")
            return
        station_id = self.station_ids(station_from_path(ws.request.path))
        point = _POINTS[version](station_id, ws, self, version)
        self._connect(station_id, version, point)
        try:
            await point.start()  # type: ignore[attr-defined]
        except ConnectionClosed as closed:
            LOG.info("station %s disconnected (%s)", station_id, closed.rcvd.code if closed.rcvd else "no close frame")
        finally:
            self._disconnect(station_id, point)

    def _connect(self, station_id: str, version: str, point: _Point) -> None:
        now = self.clock()
        old = self._info.get(station_id)
        self._info[station_id] = StationInfo(station_id=station_id, version=version, connected=True,
                                             connected_at=now, last_seen=now,
                                             vendor=old.vendor if old else None, model=old.model if old else None,
                                             evse_status=dict(old.evse_status) if old else {})
        self._points[station_id] = point
        LOG.info("station %s connected (OCPP %s)", station_id, version)

    def _disconnect(self, station_id: str, point: _Point) -> None:
        if self._points.get(station_id) is not point:
            return  # a newer connection of the same station replaced this one
        del self._points[station_id]
        info = self._info[station_id]
        info.connected, info.disconnected_at = False, self.clock()

    # ------------------------------------------------------------------ received
    def _seen(self, station_id: str) -> None:
        if station_id in self._info:
            self._info[station_id].last_seen = self.clock()

    def _boot(self, station_id: str, version: str, payload: Mapping[str, Any]) -> None:
        info = self._info[station_id]
        if version == "1.6":
            info.vendor, info.model = payload.get("chargePointVendor"), payload.get("chargePointModel")
        else:
            station = payload.get("chargingStation") or {}
            info.vendor, info.model = station.get("vendorName"), station.get("model")

    def _status(self, station_id: str, evse: Any, status: Any) -> None:
        if isinstance(evse, int) and isinstance(status, str):
            self._info[station_id].evse_status[evse] = status

    def _next_transaction(self) -> int:
        return next(self._transactions)

    def _ingest(self, rec: Telemetry) -> None:
        """Store a telemetry record: open or close the EVSE's session, merge the latest state."""
        if rec.evse_id is None:
            key = next((k for k, s in self._sessions.items()
                        if k[0] == rec.station_id and s.transaction_id == rec.transaction_id), None)
            if key is None:
                LOG.warning("station %s: %s for a transaction it never started; ignored", rec.station_id, rec.source)
                return
            rec = replace(rec, evse_id=key[1])
        assert rec.evse_id is not None
        key = (rec.station_id, rec.evse_id)
        session = self._sessions.get(key)
        if rec.transaction_id is not None and rec.session_id is not None and rec.event != "Ended":
            if session is None or session.transaction_id != rec.transaction_id:
                session = EvseSession(rec.station_id, rec.evse_id, rec.session_id, rec.ev_id, rec.transaction_id)
                previous = self._latest.get(key)
                if previous is not None and previous.session_id is not None:
                    del self._latest[key]  # the previous session's values are not this EV's
            elif rec.ev_id is not None and rec.ev_id != session.ev_id:
                session = replace(session, ev_id=rec.ev_id)
            self._sessions[key] = session
        if session is not None and rec.session_id is None:
            rec = replace(rec, session_id=session.session_id, ev_id=rec.ev_id or session.ev_id)
        rec = replace(rec, transaction_id=None)  # the station's own id stays at the edge (privacy)
        if rec.event == "Ended":
            self._sessions.pop(key, None)
            self._latest.pop(key, None)
        else:
            self._latest[key] = merge_telemetry(self._latest.get(key), rec)
        if self.on_telemetry is not None:
            self.on_telemetry(rec)

    # ------------------------------------------------------------------ queries
    def stations(self) -> dict[str, StationInfo]:
        """Every station seen (connected or not), by pseudonymised id (copies)."""
        return {s: replace(i, evse_status=dict(i.evse_status)) for s, i in self._info.items()}

    def sessions(self) -> list[EvseSession]:
        """The active sessions, by station and EVSE (``transaction_id`` withheld: the station's
        own id is used on the wire only)."""
        return [replace(self._sessions[k], transaction_id="") for k in sorted(self._sessions)]

    def telemetry(self) -> list[Telemetry]:
        """The latest merged telemetry of every EVSE, by station and EVSE."""
        return [self._latest[k] for k in sorted(self._latest)]

    def control_state(self, time_s: float, *, capacity_kwh: Mapping[str, float],
                      default_soc_target: float | None = None,
                      stations: Collection[str] | None = None) -> tuple[ControlState, dict[str, str]]:
        """The controller's state at ``time_s`` from the telemetry received.

        Parameters
        ----------
        time_s : float
            Decision time, s after :attr:`origin`.
        capacity_kwh : mapping of str to float
            Battery capacity per EV id, kWh (:func:`optev.server.profiles.capacities`).
        default_soc_target : float, optional
            Target SOC of sessions that reported no need (1.6 stations).
        stations : collection of str, optional
            Only these stations (for example the instance's); default every station seen.

        Returns
        -------
        (ControlState, dict of str to str)
            The state — every usable active session as an EV (EVs at 2.0.1 and 1.6 stations
            with ``p_dis_max_kw = 0``), the stations seen but disconnected as
            ``offline_stations`` since their disconnection — and the sessions left out, with why.
        """
        only = None if stations is None else set(stations)

        def keep(station_id: str) -> bool:
            return only is None or station_id in only

        records = [r for r in self._latest.values() if r.session_id is not None and keep(r.station_id)]
        charge_only = {s for s, i in self._info.items() if i.version != "2.1"}
        evs, skipped = ev_states(records, self.origin, capacity_kwh=capacity_kwh,
                                 default_soc_target=default_soc_target, charge_only=charge_only)
        offline = {s: (i.disconnected_at - self.origin).total_seconds() for s, i in sorted(self._info.items())
                   if not i.connected and i.disconnected_at is not None and keep(s)}
        return ControlState(time_s=float(time_s), evs=evs, offline_stations=offline), skipped

    # ------------------------------------------------------------------ dispatch
    def _covered(self, decision: ControlDecision, station_id: str) -> bool:
        if station_id in decision.station_plan_kw or station_id in decision.setpoints.station_kw:
            return True
        return any(s.session_id in decision.ev_plan_kw or s.ev_id in decision.setpoints.ev_kw
                   for k, s in self._sessions.items() if k[0] == station_id)

    async def dispatch(self, decision: ControlDecision, *, station_profiles: bool = False,
                       v2g_mode: str = "central_setpoint",
                       stack_level: int = DEFAULT_STACK_LEVEL) -> dict[str, StationDispatch]:
        """Send a decision to every connected station it covers, all stations at once.

        Parameters
        ----------
        decision : ControlDecision
        station_profiles : bool
            Also send each station's planned net import as its ChargingStationMaxProfile
            (:func:`optev.server.profiles.station_profile`; meant for ``limit_arrivals=True``).
        v2g_mode : str
            ``central_setpoint`` or ``external_setpoint`` (OCPP 2.1 discharge periods).
        stack_level : int
            Stack level of the profiles.

        Returns
        -------
        dict of str to StationDispatch
            Per station the decision covers that the CSMS has seen (stations never connected
            are not listed): its answer per profile and overall.
        """
        results: dict[str, StationDispatch] = {}
        pending: dict[str, tuple[_Point, list[ProfileMessage]]] = {}
        for station_id, info in sorted(self._info.items()):
            if not self._covered(decision, station_id):
                continue
            point = self._points.get(station_id)
            if point is None:
                results[station_id] = StationDispatch(station_id, info.version, UNREACHABLE, reason="not connected")
                continue
            messages = decision_profiles(decision, [s for k, s in self._sessions.items() if k[0] == station_id],
                                         {station_id: info.version}, self.origin, station_profiles=station_profiles,
                                         v2g_mode=v2g_mode, stack_level=stack_level,
                                         max_offline_s=self.max_offline_s, max_periods=self.max_periods)
            if messages:
                pending[station_id] = (point, messages)
            else:
                results[station_id] = StationDispatch(station_id, info.version, NOTHING)
        answers = await asyncio.gather(*(point.send_profiles(messages) for point, messages in pending.values()))
        for station_id, profiles in zip(pending, answers):
            statuses = {p.status for p in profiles}
            status = UNREACHABLE if UNREACHABLE in statuses else ACCEPTED if statuses == {ACCEPTED} else REJECTED
            results[station_id] = StationDispatch(station_id, self._info[station_id].version, status, profiles)
            if status != ACCEPTED:
                LOG.warning("station %s: dispatch %s (%s)", station_id, status,
                            "; ".join(f"evse {p.evse_id} {p.status} {p.reason}".strip() for p in profiles
                                      if p.status != ACCEPTED))
        return dict(sorted(results.items()))

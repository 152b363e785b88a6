"""The OCPP endpoint inside the dispatch service (issue 15): ids at the edge, the control cycle, the stations.

With ``ocpp_port`` set (config, or ``optev serve --ocpp-port N``), :func:`optev.server.app.create_app`
builds an :class:`OcppBridge`: the CSMS of :mod:`optev.server.ocpp_csms` starts in the
application's lifespan, on the same event loop as the HTTP API, and stops with it (its
connections closed, a running control cycle finished first). It serves ``ws://`` on
``ocpp_host`` (default: the HTTP ``host``), ``wss://`` with the service's certificate when TLS is
configured; off loopback it needs TLS or ``insecure_http`` like the HTTP API.

Charge point authentication
---------------------------
With ``[ocpp_passwords]`` (``ocpp_auth = "basic"``) a charge point must open its connection with
HTTP Basic credentials: its identity and its password (OCPP Security Profile 1; 2 with TLS;
:mod:`optev.server.ocpp_auth`). Missing or wrong credentials are answered HTTP 401 on the upgrade,
before any OCPP message: the refusal is logged and written to the audit log under the charge
point's optev id (instance station id or ``cs`` pseudonym, never the raw identity) and reported to
the alarm hook as ``unauthenticated`` (``principal`` that id, ``client`` the address: bursts raise
``auth_failure_burst``). Off loopback, ``ocpp_auth = "none"`` needs ``insecure_http = true``.

Ids at the edge
---------------
Charge points send three kinds of raw id. Each is replaced as the message arrives, before anything
is kept, stored, logged or answered (:class:`EdgeIds`), under the service's pseudonym keyring (the
one of :mod:`optev.server.hooks`):

charge point identity — the last segment of ``ws://host:port/<identity>``
    → the instance's station id when the identity *is* one, or when its pseudonym
    ``cs-<key>-<hex>`` (:meth:`~optev.privacy.pseudonym.Keyring.pseudonym`, kind ``cs``, under any
    key version kept) is enrolled in the config's ``[ocpp_ids]``; otherwise that pseudonym (the
    station is listed by ``GET /v1/ocpp/stations`` but not planned).
idToken — ``idToken.idToken`` (2.x), ``idTag`` (1.6)
    → the instance's EV id when the token *is* one — the rule of the user endpoints and the
    consent registry, which name an EV by the ``ev`` pseudonym of its id: the token's pseudonym
    is then that EV user's pseudonym — or when its pseudonym ``ev-<key>-<hex>`` is enrolled in
    ``[ocpp_ids]``; otherwise that pseudonym (the session is left out of the state, with why).
session — ``"<optev station id>/<station's transaction id>"``
    → always its pseudonym ``tx-<key>-<hex>``.

So the database and the audit log hold the instance's own ids and pseudonyms only; an
identity or token that is neither an instance id nor enrolled never leaves the edge. Enrol
with the key file: ``load_keyring(PATH).pseudonym("CP-0042", kind="cs")`` (``kind="ev"`` for a
token). A raw id that already looks like a pseudonym is pseudonymised with the prefix ``raw:``.

A control cycle — :meth:`OcppBridge.tick`
-----------------------------------------
``POST /v1/tick`` and, with ``ocpp_autodispatch = true``, a loop every control interval:

1. the CSMS's telemetry at the tick time (:meth:`OcppCsms.control_state`, sessions without a
   target SOC get ``ocpp_default_soc_target``) becomes one report per *connected* instance
   station, stored like ``POST /v1/stations/{id}/telemetry`` (and seen by the alarm hook); a
   disconnected station's last report ages, so it counts as offline from then on;
2. :meth:`Dispatcher.tick` composes the state from every station's latest report (OCPP and
   HTTP merged: the newest wins an EV) and decides; the EVs where discharge cannot be
   commanded (:func:`cannot_discharge`) are planned without V2G;
3. the decision is stored, sent with :meth:`OcppCsms.dispatch` (TxProfiles; 2.1 profiles carry
   ``maxOfflineDuration`` = ``edge.hold``, the time the edge policy assumes a station holds its
   schedule) and the sending is written to the audit log (principal :data:`CSMS_PRINCIPAL`).

The answer adds ``ocpp``: ``dispatch`` (per station ``Accepted``, ``Rejected``,
``unreachable`` or ``nothing_to_send``, per profile), ``left_out`` (sessions not in the state,
by session pseudonym, with why), ``no_discharge`` (EVs planned without V2G for their charger)
and ``unplanned_stations`` (connected stations that are not the instance's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import ssl
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from optev.blocks.window import instance_origin
from optev.errors import OptevError, OptionError
from optev.mpc.state import EVState
from optev.privacy.pseudonym import Keyring, is_pseudonym, parse_pseudonym
from optev.server.config import OCPP_ID_KINDS, ServeConfig
from optev.server.dispatch import Dispatcher, InputError, Outcome
from optev.server.hooks import Hooks
from optev.server.ocpp_auth import ChargePointPasswords
from optev.server.ocpp_csms import ACCEPTED, NOTHING, OcppCsms, StationDispatch, StationInfo
from optev.server.profiles import capacities, iso_utc

__all__ = ["AUTODISPATCH_PRINCIPAL", "CSMS_PRINCIPAL", "SESSION_KIND", "STATION_KIND", "TOKEN_KIND", "V2X_VERSION",
           "EdgeIds", "OcppBridge", "cannot_discharge", "station_entry"]

LOG = logging.getLogger("optev.server.ocpp")

STATION_KIND, TOKEN_KIND, SESSION_KIND = "cs", "ev", "tx"
"""Pseudonym kinds of charge point identities, idTokens (the kind of the hooks' EV pseudonyms) and sessions."""

V2X_VERSION = "2.1"
"""The OCPP version that can command discharge."""

CSMS_PRINCIPAL = "optev-csms"
"""Who sends profiles to the stations, in the audit log."""

AUTODISPATCH_PRINCIPAL = "optev-autodispatch"
"""Who ticks every control interval (``ocpp_autodispatch``), in the audit log."""


def _canonical(raw_id: str) -> str:
    return unicodedata.normalize("NFC", str(raw_id)).strip()


class EdgeIds:
    """Raw ids of charge points → the ids optev keeps (module docstring, "Ids at the edge").

    Parameters
    ----------
    keyring : Keyring
        The service's pseudonym keys.
    station_ids, ev_ids : iterable of str
        The instance's stations and EVs.
    enrolled : iterable of (str, str)
        ``[ocpp_ids]``: pseudonym (kind ``cs`` or ``ev``) → instance station or EV id.

    Raises
    ------
    OptionError
        An enrolment whose target is not an instance station (``cs``) or EV (``ev``), or whose
        key version is not in the keyring.
    """

    def __init__(self, keyring: Keyring, station_ids: Iterable[str], ev_ids: Iterable[str],
                 enrolled: Iterable[tuple[str, str]] = ()) -> None:
        self.keyring = keyring
        self._known = {STATION_KIND: frozenset(map(str, station_ids)), TOKEN_KIND: frozenset(map(str, ev_ids))}
        self._enrolled: dict[str, str] = {}
        for pseudonym, target in enrolled:
            kind, version, _ = parse_pseudonym(pseudonym)
            what = OCPP_ID_KINDS.get(kind, kind)
            if target not in self._known.get(kind, frozenset()):
                raise OptionError(f"ocpp_ids: {pseudonym}: {target!r} is not a {what} of the instance")
            if version not in keyring.versions:
                raise OptionError(f"ocpp_ids: {pseudonym}: key version {version!r} is not among the pseudonym "
                                  f"keys ({', '.join(keyring.versions)})")
            self._enrolled[pseudonym] = target

    @staticmethod
    def _hashed(text: str) -> str:
        """The text whose pseudonym names a raw id (``raw:`` before one that looks like a pseudonym)."""
        return "raw:" + text if not text or is_pseudonym(text) else text

    def _map(self, raw_id: str, kind: str) -> str:
        text = _canonical(raw_id)
        if text in self._known[kind]:
            return text
        text = self._hashed(text)
        found = (self._enrolled.get(p) for p in self.keyring.pseudonyms(text, kind=kind).values())
        return next((t for t in found if t is not None), None) or self.keyring.pseudonym(text, kind=kind)

    def station_pseudonyms(self, raw_id: str) -> tuple[str, ...]:
        """A charge point identity's pseudonyms (kind ``cs``) under every key version kept."""
        return tuple(self.keyring.pseudonyms(self._hashed(_canonical(raw_id)), kind=STATION_KIND).values())

    def station(self, raw_id: str) -> str:
        """A charge point's identity → optev's station id."""
        return self._map(raw_id, STATION_KIND)

    def token(self, raw_id: str) -> str:
        """An idToken → optev's EV id."""
        return self._map(raw_id, TOKEN_KIND)

    def session(self, raw_id: str) -> str:
        """``"<optev station id>/<transaction id>"`` → optev's session id (always a pseudonym)."""
        return self.keyring.pseudonym(_canonical(raw_id) or "raw:", kind=SESSION_KIND)


def cannot_discharge(evs: Iterable[EVState], versions: Mapping[str, str]) -> frozenset[str]:
    """The EVs no discharge can be commanded to: at a station whose OCPP version is not
    :data:`V2X_VERSION` (``versions``: station → version; unknown: not 2.1), or whose session
    reported no discharge power (no ``v2xChargingParameters.maxDischargePower`` > 0: the EV
    or the EVSE did not offer V2X, which OCPP 2.1 negotiates per session)."""
    return frozenset(e.ev_id for e in evs
                     if versions.get(e.station_id) != V2X_VERSION or not (e.p_dis_max_kw or 0.0) > 0.0)


def _ssl_context(config: ServeConfig) -> ssl.SSLContext | None:
    if not config.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(config.tls_certfile), str(config.tls_keyfile))
    return context


def station_entry(info: StationInfo, planned: bool) -> dict[str, Any]:
    """One station of ``GET /v1/ocpp/stations`` (ids pseudonymised; times ISO 8601 UTC)."""
    return {"station_id": info.station_id, "version": info.version, "connected": info.connected,
            "connected_at": iso_utc(info.connected_at), "last_seen": iso_utc(info.last_seen),
            "disconnected_at": iso_utc(info.disconnected_at) if info.disconnected_at is not None else None,
            "vendor": info.vendor, "model": info.model, "planned": planned,
            "can_discharge": info.version == V2X_VERSION,
            "evse_status": {str(k): v for k, v in sorted(info.evse_status.items())}}


def _outcome(sent: Mapping[str, StationDispatch]) -> str:
    """The audit outcome of a dispatch: ``ok``, or the count of every other station status."""
    counts: dict[str, int] = {}
    for d in sent.values():
        counts[d.status] = counts.get(d.status, 0) + 1
    bad = {s: n for s, n in sorted(counts.items()) if s not in (ACCEPTED, NOTHING)}
    return "ok" if not bad else "failed:" + ",".join(f"{s}={n}" for s, n in bad.items())


class OcppBridge:
    """The CSMS wired to the dispatcher (module docstring).

    Parameters
    ----------
    dispatcher : Dispatcher
    hooks : Hooks
        Audit log (every dispatch, every automatic tick) and alarms (telemetry, edge policy).
    config : ServeConfig
        ``ocpp_*`` fields, ``edge.hold``, TLS.
    keyring : Keyring
        The pseudonym keys (:class:`EdgeIds`).
    sock : socket.socket, optional
        A listening socket for the CSMS (``optev serve`` binds it before it starts).
    """

    def __init__(self, dispatcher: Dispatcher, hooks: Hooks, config: ServeConfig, keyring: Keyring, *,
                 sock: socket.socket | None = None) -> None:
        inst = dispatcher.instance
        self.dispatcher, self.hooks, self.config = dispatcher, hooks, config
        self.ids = EdgeIds(keyring, dispatcher.station_ids, inst.evs["ev_id"].astype(str), config.ocpp_ids)
        self.passwords = ChargePointPasswords(config.ocpp_passwords, keyring, frozenset(dispatcher.station_ids),
                                              self.ids.station, self.ids.station_pseudonyms) \
            if config.ocpp_auth_mode == "basic" else None
        self.capacity_kwh = capacities(inst)
        self._evs = frozenset(inst.evs["ev_id"].astype(str))
        self.origin: datetime = instance_origin(inst).to_pydatetime()
        hold_s = int(config.edge_policy().hold_s)
        self.csms = OcppCsms(self.origin, host=config.ocpp_bind_host, port=config.ocpp_port or 0,
                             pseudonymise=self.ids.token, station_ids=self.ids.station,
                             session_ids=self.ids.session, clock=self.clock, max_periods=config.ocpp_max_periods,
                             max_offline_s=hold_s if hold_s > 0 else None, ssl=_ssl_context(config), sock=sock,
                             authenticate=self.authenticate if self.passwords is not None else None)
        self.interval_s = float(dispatcher.step_s)
        """Seconds between automatic ticks (``ocpp_autodispatch``; tests shorten it)."""
        self._lock = asyncio.Lock()  # one control cycle at a time (POST /v1/tick, the automatic ticks)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def clock(self) -> datetime:
        """The CSMS's clock: the service's time (instance origin + :meth:`Dispatcher.now`; with
        ``clock = "wall"`` the wall clock), the wall clock before the service has any time."""
        now = self.dispatcher.now()
        return datetime.now(timezone.utc) if now is None else self.origin + timedelta(seconds=now)

    async def start(self) -> None:
        """Listen for charge points; start the automatic ticks (``ocpp_autodispatch``)."""
        self._lock, self._stopping = asyncio.Lock(), asyncio.Event()  # of this event loop (a restarted app)
        await self.csms.start()
        if self.config.ocpp_autodispatch and self._task is None:
            self._task = asyncio.create_task(self._autodispatch(), name="optev-ocpp-autodispatch")

    async def stop(self) -> None:
        """Let a running tick finish, stop the automatic ticks, close every connection."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.csms.stop()

    # ------------------------------------------------------------------ authentication
    async def authenticate(self, raw_id: str, authorization: str | None, client: str | None) -> bool:
        """Whether a connecting charge point's credentials are right (module docstring); a
        refusal is logged, audited and reported to the alarm hook under optev's id only."""
        why = self.passwords.check(raw_id, authorization) if self.passwords is not None else None
        if why is None:
            return True
        station = self.ids.station(raw_id)
        LOG.warning("station %s: OCPP connection refused (401): %s", station, why)
        await asyncio.to_thread(self._refused, station, why, client)
        return False

    def _refused(self, station: str, why: str, client: str | None) -> None:
        self.hooks.alarm("unauthenticated", {"principal": station, "role": "station", "key_id": None,
                                             "method": "GET", "path": f"ocpp:/{station}", "client": client,
                                             "status": 401, "error": f"401 ocpp {why}"})
        self.hooks.audit.record(station, "OCPP connect", f"station:{station}", "unauthenticated", None)

    # ------------------------------------------------------------------ views
    def stations(self) -> dict[str, Any]:
        """``GET /v1/ocpp/stations``: the CSMS's URL and every station seen."""
        known = self.dispatcher.stations
        return {"url": self.csms.url, "stations": [station_entry(i, s in known)
                                                   for s, i in sorted(self.csms.stations().items())]}

    # ------------------------------------------------------------------ the control cycle
    def reports(self, time_s: float) -> tuple[dict[str, list[EVState]], dict[str, str], frozenset[str]]:
        """The connected instance stations' plugged EVs at ``time_s`` (charge-only EVs with
        ``p_dis_max_kw = 0``), the sessions left out (with why) and the EVs that cannot discharge."""
        state, left_out = self.csms.control_state(time_s, capacity_kwh=self.capacity_kwh,
                                                  default_soc_target=self.config.ocpp_default_soc_target,
                                                  stations=self.dispatcher.stations)
        infos = self.csms.stations()
        no_discharge = cannot_discharge(state.evs, {s: i.version for s, i in infos.items()})
        reports: dict[str, list[EVState]] = {s: [] for s, i in sorted(infos.items())
                                             if i.connected and s in self.dispatcher.stations}
        placed: set[str] = set()
        offline: set[str] = set()  # EVs at disconnected stations: their last report stands, so does the rule
        for e in state.evs:
            if e.ev_id not in self._evs:
                left_out[e.session_id] = "not an EV of the instance (idToken neither an EV id nor enrolled)"
            elif e.station_id not in reports:
                offline.add(e.ev_id)
            elif e.ev_id in placed:
                left_out[e.session_id] = "the EV is in another session too"
            else:
                placed.add(e.ev_id)
                reports[e.station_id].append(dataclasses.replace(e, p_dis_max_kw=0.0) if e.ev_id in no_discharge
                                             else e)
        return reports, left_out, no_discharge & (placed | (offline - placed))

    async def tick(self, time_s: float | None = None) -> tuple[Outcome, dict[str, Any]]:
        """One control cycle (module docstring): the outcome and the ``ocpp`` part of the answer.

        Raises
        ------
        InputError
            No ``time_s`` and no service time yet (:meth:`Dispatcher.tick_time`).
        """
        async with self._lock:
            now = self.dispatcher.tick_time(time_s)
            reports, left_out, no_discharge = self.reports(now)
            for station_id, evs in reports.items():
                await asyncio.to_thread(self.dispatcher.report, station_id, now, evs)
                self.hooks.alarm.telemetry(station_id, now, evs)
            out = await self.dispatcher.run(self.dispatcher.tick, now, no_discharge=no_discharge)
            sent = await self.csms.dispatch(out.decision)
            await asyncio.to_thread(self.hooks.audit.record, CSMS_PRINCIPAL, "OCPP SetChargingProfile",
                                    f"decision:{out.decision_id} stations:{len(sent)}", _outcome(sent), None)
        unplanned = sorted(s for s, i in self.csms.stations().items()
                           if i.connected and s not in self.dispatcher.stations)
        return out, {"dispatch": {s: d.to_dict() for s, d in sent.items()}, "left_out": dict(sorted(left_out.items())),
                     "no_discharge": sorted(no_discharge), "unplanned_stations": unplanned}

    def _delay(self) -> float:
        """Until the next automatic tick: the next interval boundary of the wall clock
        (``clock = "wall"``), else one interval."""
        now = self.dispatcher.now()
        if self.config.clock != "wall" or now is None:
            return self.interval_s
        return self.interval_s - now % self.interval_s or self.interval_s

    async def _autodispatch(self) -> None:
        """Tick every control interval until :meth:`stop`; each tick in the audit log."""
        while True:
            try:
                await asyncio.wait_for(self._stopping.wait(), self._delay())
                return
            except TimeoutError:
                pass
            obj, outcome = "", "ok"
            try:
                out, _ = await self.tick()
                obj = f"decision:{out.decision_id}"
                self.hooks.decision_sent(out)
                if out.source == "edge":
                    self.hooks.alarm("edge_policy", {"principal": AUTODISPATCH_PRINCIPAL,
                                                     "decision_id": out.decision_id, "reason": out.reason})
            except InputError as err:
                LOG.warning("automatic tick refused: %s", err)
                outcome = "invalid"
            except Exception as err:  # a loop that dies silently would stop dispatch: log, record, go on
                LOG.error("automatic tick failed", exc_info=err)
                outcome = "error" if not isinstance(err, OptevError) else f"error:{type(err).__name__}"
            await asyncio.to_thread(self.hooks.audit.record, AUTODISPATCH_PRINCIPAL, "TICK ocpp_autodispatch", obj,
                                    outcome, None)

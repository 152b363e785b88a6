r"""Consent management and publishable aggregates of the dispatch service (issue 15, R6.4.1): ``router``.

========================================  ===================  ========================================
endpoint                                  roles                answers
========================================  ===================  ========================================
``GET /v1/users/{pseudonym}/consent``     user (own), auditor  consent now per purpose, and its history
``PUT /v1/users/{pseudonym}/consent``     user (own)           records the user's choices
``DELETE /v1/users/{pseudonym}/consent``  user (own)           withdraws consent (``?purpose=``: one)
``GET /v1/aggregates/stations``           operator, auditor    per-station sums, small cells suppressed
``GET /v1/aggregates/city``               operator, auditor    the city total (suppressed below k EVs)
========================================  ===================  ========================================

Other roles get 403, a user another user's data 403 (as ``GET /v1/users/{pseudonym}/status``:
the path's pseudonym must be the user's own, under any key version the keyring keeps). Errors are
the service's JSON ``{"error", "field"}``; the calls are recorded in the audit log by the
service's audit middleware (:mod:`optev.server.app`; the ``PUT`` body as its SHA-256).

Consent (:mod:`optev.privacy.consent`)
    The registry is the one the service's consent hook reads at every step
    (:class:`optev.server.hooks.RegistryConsent`, config ``consent_db``): a change takes effect
    on the next ``POST /v1/step`` or ``/v1/tick``. Without a registry (no ``consent_db``: every
    EV counts as consenting) the consent endpoints answer **409**. The registry's subject is the
    user's EV pseudonym under the current key (the ``user`` of the answers).

    * ``GET``: for each purpose of :data:`~optev.privacy.consent.PURPOSES` whether it is allowed
      now, with the event that decides it (action, notice version, time; all null when none was
      ever recorded); ``effect`` — what the next step does with the EV (``controlled``: its
      charging may be set; ``may_discharge``: also V2G); ``history`` — every event, oldest first.
    * ``PUT`` body ``{"purposes": {"controlled_charging": true, "v2g": false, ...},
      "notice_version": "2026-03", "evidence": "<sha256>"}``: the purposes given are set (those
      left out stay as they are): one turned on is ``granted`` (``modified`` when already in
      force under another notice version), one turned off ``withdrawn``; unchanged ones record
      nothing. ``evidence`` (optional, 64 lower-case hex digits: the SHA-256 of the signed form
      or receipt) defaults to the SHA-256 of the request body, which the audit log entry of the
      call carries too. Events are dated when the service receives the call (never back-dated).
    * ``DELETE`` (``?purpose=`` one purpose; default every purpose in force): ``withdrawn``
      events under the notice version in force.

    ``PUT`` and ``DELETE`` answer the events ``recorded`` (empty when nothing changed) and the
    new state as ``GET`` does (without the history).

Aggregates (:mod:`optev.privacy.aggregate`)
    From the latest decision: the EVs of its state that it sets a power for (a state posted to
    ``/v1/step`` or composed from the stations' telemetry by ``/v1/tick``). Values per cell:
    ``n_evs`` (distinct EVs plugged in), ``energy_kwh`` (Σ battery energy, measured),
    ``p_measured_kw`` (Σ grid power measured at the state's time; null when an EV of the cell
    reported none), ``p_setpoint_kw`` (Σ the decision's setpoints for the interval: the plan),
    ``p_ch_max_kw`` and ``p_dis_max_kw`` (Σ the reported charging and discharging limits: the
    physical flexibility before consent and departure needs; null when one was not reported).

    * Stations: one cell per station of the service — also those without EVs, so that a
      suppressed cell does not tell that somebody is plugged in there. A cell of fewer than
      ``k`` EVs (config ``k_anonymity``, default :data:`~optev.privacy.aggregate.DEFAULT_K`) is
      suppressed (values and ``n_evs`` null, ``suppressed`` true).
    * City: the total over every EV, suppressed cells included (so it is exact), itself
      suppressed below ``k`` EVs.
    * Totals: the city total minus the published station cells is the sum of the suppressed
      cells, which is therefore published too; :func:`station_cells` suppresses further cells,
      smallest first, until that remainder counts 0 or at least ``k`` EVs (the complementary
      suppression of a one-way total). Published cells are exact sums, so Σ published cells +
      remainder = city total.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from optev.errors import DataError
from optev.io.results import jsonable
from optev.privacy.aggregate import COUNT_COLUMN, DEFAULT_K, suppress_small_cells
from optev.privacy.consent import PURPOSES, ConsentEvent, ConsentRegistry
from optev.privacy.pseudonym import is_pseudonym
from optev.server.auth import AuthError, Principal, require
from optev.server.dispatch import Dispatcher, Outcome
from optev.server.schemas import BodyError, limited_body, parse
from optev.server.views import NoData

__all__ = ["AGGREGATE_UNITS", "CONSENT_BODY_MAX", "VALUE_COLUMNS", "ConsentError", "ConsentIn", "Purpose", "city_cell",
           "consent_state", "ev_records", "router", "station_cells"]

CONSENT_BODY_MAX = 16 * 1024
"""Largest ``PUT .../consent`` body, bytes (413 beyond)."""

AGGREGATE_UNITS = {"n_evs": "EVs", "energy_kwh": "kWh", "p_measured_kw": "kW", "p_setpoint_kw": "kW",
                   "p_ch_max_kw": "kW", "p_dis_max_kw": "kW"}
"""The values of an aggregate cell and their units (module docstring)."""

VALUE_COLUMNS = tuple(c for c in AGGREGATE_UNITS if c != COUNT_COLUMN)
"""The summed values of a cell."""

Purpose = Literal["controlled_charging", "v2g", "data_sharing"]
"""A consent purpose (:data:`optev.privacy.consent.PURPOSES`)."""

router = APIRouter()


class ConsentError(BodyError):
    """An answer of the consent endpoints other than 200: 409 (no registry, or the registry refuses the
    event) or 422 (a wrong value); ``field`` names what it is about (None: nothing in the request).
    A :class:`~optev.server.schemas.BodyError`, so that the service answers it as one."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(status, message, field or "")
        self.field = field  # type: ignore[assignment]  # None: the JSON answer's field is null


class ConsentIn(BaseModel):
    """``PUT /v1/users/{pseudonym}/consent``: the user's choices (module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    purposes: dict[Purpose, StrictBool] = Field(description="purpose → allowed; purposes left out are unchanged")
    notice_version: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="the version of the privacy notice the user was shown")
    evidence: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        None, description="SHA-256 of the signed form or receipt (default: of this request body)")


def _consent_body_schema() -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": ConsentIn.model_json_schema()}}}}


# ---------------------------------------------------------------------------------------------- consent
def _registry(request: Request) -> ConsentRegistry:
    """The registry the service's consent hook reads (409 when there is none)."""
    registry = getattr(request.app.state.hooks.consent, "registry", None)
    if not isinstance(registry, ConsentRegistry):
        raise ConsentError(409, "consent is not managed by this service: no consent registry is configured "
                                "(consent_db), so every EV counts as consenting to every purpose")
    return registry


def _subject(request: Request, principal: Principal, pseudonym: str) -> str:
    """The registry subject of a call: a user's own EV pseudonym under the current key (403 for another),
    or, for an auditor, the path's pseudonym (422 when it is not one)."""
    pseudonyms = request.app.state.hooks.pseudonyms
    if principal.role != "user":
        if not is_pseudonym(pseudonym):
            raise ConsentError(422, f"not a pseudonym (kind-version-hex, e.g. ev-k1-0123456789abcdef): "
                                    f"{pseudonym[:80]!r}", "pseudonym")
        return pseudonym
    if principal.user_id is None or not pseudonyms.matches(principal.user_id, pseudonym):
        raise AuthError(403, "a user key reads and changes its own consent only (GET /v1/me shows your pseudonym)")
    return str(pseudonyms(principal.user_id))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def consent_state(registry: ConsentRegistry, subject: str, at: dt.datetime) -> dict[str, Any]:
    """``purposes`` (per purpose: allowed and the deciding event) and ``effect`` of ``subject`` at ``at``."""
    last: dict[str, ConsentEvent] = {}
    for event in registry.history(subject):  # time order, ties by recording: the last one at or before decides
        if event.at <= at:
            last[event.purpose] = event
    purposes = {}
    for p in PURPOSES:
        e = last.get(p)
        purposes[p] = {"allowed": e is not None and e.allows, "action": None if e is None else e.action,
                       "notice_version": None if e is None else e.notice_version,
                       "at": None if e is None else e.to_dict()["at"], "event_id": None if e is None else e.id}
    controlled = purposes["controlled_charging"]["allowed"]
    return {"user": subject, "at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "purposes": purposes,
            "effect": {"controlled": controlled, "may_discharge": controlled and purposes["v2g"]["allowed"]}}


def _changed(registry: ConsentRegistry, subject: str, at: dt.datetime, events: list[ConsentEvent]) -> dict[str, Any]:
    return {**consent_state(registry, subject, at), "recorded": [e.to_dict() for e in events]}


async def _consent_body(request: Request) -> bytes:
    """The request body, at most :data:`CONSENT_BODY_MAX` bytes (413 beyond); its SHA-256 goes to the audit log."""
    return await limited_body(request, CONSENT_BODY_MAX)


def _recorded(write: Any, *args: Any, **kwargs: Any) -> list[ConsentEvent]:
    """``write(*args, **kwargs)`` of the registry; a refusal (:class:`DataError`) is a 409."""
    try:
        events: list[ConsentEvent] = write(*args, **kwargs)
    except DataError as exc:
        raise ConsentError(409, f"the consent registry refused the change: {exc}") from None
    return events


@router.get("/v1/users/{pseudonym}/consent", tags=["users"], summary="The user's consent now, and its history")
def get_consent(request: Request, pseudonym: str, principal: Principal = Depends(require("user", "auditor"))
                ) -> dict[str, Any]:
    subject = _subject(request, principal, pseudonym)
    registry = _registry(request)
    return {**consent_state(registry, subject, _now()), "history": [e.to_dict() for e in registry.history(subject)]}


@router.put("/v1/users/{pseudonym}/consent", tags=["users"], openapi_extra=_consent_body_schema(),
            summary="Give, change or withdraw consent per purpose")
async def put_consent(request: Request, pseudonym: str, principal: Principal = Depends(require("user"))
                      ) -> dict[str, Any]:
    subject = _subject(request, principal, pseudonym)
    registry = _registry(request)
    body = await _consent_body(request)
    choice = parse(ConsentIn, body)
    if not choice.purposes:
        raise ConsentError(422, f"give at least one purpose ({', '.join(PURPOSES)})", "purposes")
    if not choice.notice_version.strip():
        raise ConsentError(422, "the version of the privacy notice shown is needed", "notice_version")
    evidence = choice.evidence or hashlib.sha256(body).hexdigest()
    at = _now()
    events = await run_in_threadpool(_recorded, registry.modify, subject, dict(choice.purposes),
                                     choice.notice_version, at=at, evidence=evidence)
    return _changed(registry, subject, at, events)


@router.delete("/v1/users/{pseudonym}/consent", tags=["users"], summary="Withdraw consent (one purpose or all)")
def delete_consent(request: Request, pseudonym: str,
                   purpose: Purpose | None = Query(None, description="one purpose (default: every purpose in force)"),
                   principal: Principal = Depends(require("user"))) -> dict[str, Any]:
    subject = _subject(request, principal, pseudonym)
    registry = _registry(request)
    at = _now()
    events = _recorded(registry.revoke, subject, purpose, at=at)
    return _changed(registry, subject, at, events)


# ---------------------------------------------------------------------------------------------- aggregates
def ev_records(outcome: Outcome) -> pd.DataFrame:
    """The EV-level rows a decision's aggregates are made of (never published): ``ev_id``, ``station_id``
    and :data:`VALUE_COLUMNS` (missing readings NaN) for the EVs of its state it sets a power for."""
    setpoints = outcome.decision.setpoints.ev_kw
    evs = [e for e in (outcome.state.evs if outcome.state is not None else []) if e.ev_id in setpoints]

    def num(value: float | None) -> float:
        return np.nan if value is None else float(value)

    return pd.DataFrame({"ev_id": [e.ev_id for e in evs], "station_id": [e.station_id for e in evs],
                         "energy_kwh": [float(e.energy_kwh) for e in evs],
                         "p_measured_kw": [num(e.p_kw) for e in evs],
                         "p_setpoint_kw": [float(setpoints[e.ev_id]) for e in evs],
                         "p_ch_max_kw": [num(e.p_ch_max_kw) for e in evs],
                         "p_dis_max_kw": [num(e.p_dis_max_kw) for e in evs]},
                        columns=["ev_id", "station_id", *VALUE_COLUMNS])


def _sums(records: pd.DataFrame, key: pd.Series) -> pd.DataFrame:
    """``n_evs`` (distinct EVs) and the sums of :data:`VALUE_COLUMNS` per value of ``key`` (a sum is NaN
    when a member's value is missing: never a partial sum)."""
    grouped = records.groupby(key, sort=True)
    values = records[list(VALUE_COLUMNS)]
    sums = values.groupby(key, sort=True).sum()
    partial = values.isna().groupby(key, sort=True).any()
    out = sums.mask(partial.to_numpy(bool))
    out.insert(0, COUNT_COLUMN, grouped["ev_id"].nunique().astype(int))
    return out


def _remainder_protected(counts: np.ndarray, k: int) -> np.ndarray:
    """Cells to suppress: those below ``k`` EVs, then the smallest others until the suppressed cells
    together count 0 or at least ``k`` EVs (module docstring, "Totals")."""
    small = counts < k
    while 0 < counts[small].sum() < k and not small.all():
        open_ = np.flatnonzero(~small)
        small[open_[np.argmin(counts[open_])]] = True
    return small


def _check_k(k: object) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k_anonymity must be a whole number >= 1, got {k!r}")
    return int(k)


def station_cells(records: pd.DataFrame, station_ids: Sequence[str], k: int = DEFAULT_K) -> pd.DataFrame:
    """One publishable cell per station of ``station_ids`` (and any other station of ``records``).

    Parameters
    ----------
    records : DataFrame
        EV-level rows (:func:`ev_records`).
    station_ids : sequence of str
        Every station of the service: those without EVs get a cell of 0 EVs (suppressed).
    k : int
        Smallest publishable EV count.

    Returns
    -------
    DataFrame
        ``station_id``, ``n_evs``, :data:`VALUE_COLUMNS`, ``suppressed``; sorted by station. Cells
        of fewer than ``k`` EVs are suppressed, and more where the suppressed cells together would
        describe fewer than ``k`` EVs (module docstring, "Totals").
    """
    k = _check_k(k)
    sums = _sums(records, records["station_id"].rename("station_id"))
    every = sorted(set(map(str, station_ids)) | set(sums.index.astype(str)))
    table = sums.reindex(every, fill_value=0).rename_axis("station_id").reset_index()
    counts = table[COUNT_COLUMN].to_numpy(int)
    hidden = _remainder_protected(counts, k)
    table[COUNT_COLUMN] = np.where(hidden, 0, counts)  # forced below k: suppress_small_cells masks it
    return suppress_small_cells(table, ["station_id"], k=k)


def city_cell(records: pd.DataFrame, city: str, k: int = DEFAULT_K) -> pd.DataFrame:
    """The city total of ``records`` (:func:`ev_records`): one cell keyed ``city``, suppressed below ``k`` EVs."""
    k = _check_k(k)
    key = pd.Series(city, index=records.index, name="city", dtype=object)
    sums = _sums(records, key).reindex([city], fill_value=0).rename_axis("city").reset_index()
    return suppress_small_cells(sums, ["city"], k=k)


def _latest(request: Request) -> tuple[Dispatcher, Outcome, int]:
    """The dispatcher, its latest decision (404 without one) and the configured k."""
    dispatcher: Dispatcher = request.app.state.dispatcher
    latest = dispatcher.latest
    if latest is None or latest.state is None:
        raise NoData("no decision with a measured state yet: post a state to /v1/step or call /v1/tick")
    return dispatcher, latest, _check_k(getattr(request.app.state.config, "k_anonymity", DEFAULT_K))


def _head(latest: Outcome, k: int) -> dict[str, Any]:
    return {"decision_id": latest.decision_id, "time_s": float(latest.decision.time_s), "source": latest.source,
            "k": k, "units": dict(AGGREGATE_UNITS)}


@router.get("/v1/aggregates/stations", tags=["fleet"], summary="Per-station aggregates, cells under k EVs suppressed")
def get_station_aggregates(request: Request, principal: Principal = Depends(require("operator", "auditor"))
                           ) -> dict[str, Any]:
    dispatcher, latest, k = _latest(request)
    table = station_cells(ev_records(latest), dispatcher.station_ids, k)
    return {**_head(latest, k), "suppressed": int(table["suppressed"].sum()),
            "stations": jsonable(table.to_dict(orient="records"))}


@router.get("/v1/aggregates/city", tags=["fleet"], summary="The city total, suppressed under k EVs")
def get_city_aggregate(request: Request, principal: Principal = Depends(require("operator", "auditor"))
                       ) -> dict[str, Any]:
    dispatcher, latest, k = _latest(request)
    cell = city_cell(ev_records(latest), str(dispatcher.instance.metadata.name), k)
    return {**_head(latest, k), "n_stations": len(dispatcher.station_ids),
            "city": jsonable(cell.to_dict(orient="records"))[0]}

"""Request bodies of the dispatch service, validated field by field (published in its OpenAPI schema).

``POST /v1/step`` takes a :class:`ControlStateIn`, the JSON of
:meth:`optev.mpc.state.ControlState.to_json` (the same keys; unknown keys are refused), with
each value's type and range checked: times are seconds after the instance start in
``[0, MAX_TIME_S]``, SOCs fractions in ``[0, 1]``, energies and power limits non-negative;
no NaN or infinity. ``POST /v1/stations/{id}/telemetry`` takes a :class:`TelemetryIn` (a time and
the station's plugged EVs, each an :class:`EVStateIn`), ``POST /v1/tick`` an optional
:class:`TickIn`.

:func:`parse` turns a body into a model or raises :class:`BodyError` naming the first wrong field
as a path (``evs[3].soc``): 400 for a body that is not JSON, 422 for a value that does not fit.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.requests import Request

from optev.mpc.state import ControlState, EVState

__all__ = ["BODY_MODELS", "MAX_EVS", "MAX_TIME_S", "BodyError", "ControlStateIn", "EVStateIn", "TelemetryIn", "TickIn",
           "field_path", "parse", "to_evs", "to_state"]

MAX_TIME_S = 1e9
"""Latest accepted time, s after the instance start (about 31 years; the sessions table's limit)."""

MAX_EVS = 1_000_000
"""Most EVs in one state or report."""

MAX_POWER_KW = 1e5
MAX_ENERGY_KWH = 1e6

Id = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Seconds = Annotated[float, Field(ge=0.0, le=MAX_TIME_S)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Power = Annotated[float, Field(ge=-MAX_POWER_KW, le=MAX_POWER_KW)]
PowerLimit = Annotated[float, Field(ge=0.0, le=MAX_POWER_KW)]
Energy = Annotated[float, Field(ge=0.0, le=MAX_ENERGY_KWH)]

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class EVStateIn(_Strict):
    """A plugged-in EV (:class:`optev.mpc.state.EVState`; units there)."""

    ev_id: Id
    session_id: Id
    station_id: Id
    energy_kwh: Energy = Field(description="battery energy now, kWh")
    soc: Fraction = Field(description="state of charge now, fraction")
    arrival_s: Seconds = Field(description="plug-in time, s after the instance start")
    departure_s: Seconds | None = Field(None, description="expected departure, s; null when unknown")
    soc_target: Fraction = Field(description="SOC needed at departure")
    soc_arrival: Fraction | None = None
    soc_min: Fraction | None = None
    p_kw: Power | None = Field(None, description="grid-side power now, kW (charging positive)")
    interval_grid_kwh: Annotated[float, Field(ge=-MAX_ENERGY_KWH, le=MAX_ENERGY_KWH)] | None = None
    p_ch_max_kw: PowerLimit | None = None
    p_dis_max_kw: PowerLimit | None = None


class ControlStateIn(_Strict):
    """What the controller knows at a decision time (:class:`optev.mpc.state.ControlState`)."""

    time_s: Seconds = Field(description="decision time, s after the instance start")
    evs: list[EVStateIn] = Field(default_factory=list, max_length=MAX_EVS)
    unavailable_stations: list[Id] = Field(default_factory=list, max_length=MAX_EVS)
    offline_stations: dict[Id, Seconds] = Field(default_factory=dict,
                                                description="station → time its outage began, s")
    storage_e_kwh: dict[Id, Annotated[float, Field(ge=0.0, le=1e9)]] = Field(default_factory=dict)


class TelemetryIn(_Strict):
    """A station's report: its plugged EVs at ``time_s`` (each with ``station_id`` = the station)."""

    time_s: Seconds
    evs: list[EVStateIn] = Field(default_factory=list, max_length=MAX_EVS)


class TickIn(_Strict):
    """``POST /v1/tick``: the decision time (default: the interval after the latest decision, or the wall clock)."""

    time_s: Seconds | None = None


BODY_MODELS: tuple[type[BaseModel], ...] = (ControlStateIn, TelemetryIn, TickIn)
"""Models published in the OpenAPI schema's components."""


class BodyError(Exception):
    """A body that is not JSON (``status`` 400) or does not fit its model (422)."""

    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.message = message
        self.field = field


async def limited_body(request: Request, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (:class:`BodyError` 413 beyond, by its declared
    length or as it streams in); its SHA-256 is kept on the request for the audit log."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyError(413, f"body of {int(declared):,} bytes is over the limit of {limit:,}", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"body is over the limit of {limit:,} bytes", "body")
        chunks.append(chunk)
    body = b"".join(chunks)
    request.state.body_sha256 = hashlib.sha256(body).hexdigest()
    return body


def field_path(loc: Sequence[Any], root: str = "body") -> str:
    """``("evs", 3, "soc")`` → ``evs[3].soc``; the empty path is ``root``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "[key]":
            out += " (a key)"
        elif part == "":
            out += '[""]'
        else:
            out += f".{part}" if out else str(part)
    return out or root


def parse(model: type[M], body: bytes) -> M:
    """``body`` validated as ``model``.

    Raises
    ------
    BodyError
        400 (not JSON) or 422 (a wrong field), naming the first wrong field.
    """
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid body"}
        if first["type"] == "json_invalid":
            raise BodyError(400, f"not valid JSON ({first['msg']})", "body") from None
        raise BodyError(422, str(first["msg"]), field_path(first["loc"])) from None


def to_evs(evs: list[EVStateIn]) -> list[EVState]:
    return [EVState.from_dict(e.model_dump()) for e in evs]


def to_state(model: ControlStateIn) -> ControlState:
    """The controller's state of a validated body."""
    return ControlState(time_s=float(model.time_s), evs=to_evs(model.evs),
                        unavailable_stations=list(model.unavailable_stations),
                        offline_stations={k: float(v) for k, v in model.offline_stations.items()},
                        storage_e_kwh={k: float(v) for k, v in model.storage_e_kwh.items()})

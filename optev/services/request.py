"""Service requests as data: a TOML file names the product, participants, window, quantity,
baseline, evaluation and payment of one grid service (R6.5.1, R6.5.3).

File format (``formulations/services/*.toml`` are the shipped examples)::

    [service]
    id = "dr-evening-peak"          # names the service in every response record
    product = "demand_response"     # one of optev.services.presets.PRODUCTS
    rule = "zj_dr_energy"           # a preset of optev.services.presets
    description = "..."             # optional

    [participants]                  # optional; default: the whole city
    scope = "stations"              # city | region | stations | buses
    ids = ["st01", "st02"]          # station, bus or region ids (not for city)

    [window]
    start = "18:00"                 # local time on every simulated day ...
    end = "20:00"                   # ... (an end before the start runs past midnight)
    # or ISO date-times with the instance's zone, once: start = "2025-07-15T18:00"

    [quantity]                      # keys by product (QUANTITY_KEYS)
    reduction_kw = 300.0

    [baseline]                      # optional; default: the rule's baseline
    rule = "workdays_5"
    history = "load.csv"            # workdays_5: metered load (time, p_kw), or "run" for the
                                    # run's own earlier days without the service
    holidays = ["2026-01-01"]       # workdays_5: dates that are not normal working days

    [rule]                          # optional overrides of the preset (RULE_FIELDS)
    price = 3.5

Unknown tables and keys, values of the wrong type, NaN, infinities, negative quantities
and a product the rule does not price are errors naming the file and the key. A rule
whose price is not verified (or is a clearing price) must get one in ``[rule]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from optev.errors import DataError
from optev.io.tomlfile import read_toml
from optev.resources import formulations_dir
from optev.services.presets import (BASELINES, K_FORMS, PAYMENT_BASES, PRODUCTS, RULE_FIELDS, ServiceRule,
                                    preset)

SCOPES = ("city", "region", "stations", "buses")
SIGNALS = ("regulation_test", "random")
"""Synthetic frequency-regulation signals (:mod:`optev.services.signals`); any other string is a CSV path."""

QUANTITY_KEYS: dict[str, dict[str, str]] = {
    "peak_regulation": {"target_import_kw": "import cap of the participants in the window, kW",
                        "reduction_kw": "mean reduction below the baseline in the window, kW"},
    "valley_filling": {"increase_kw": "mean increase above the baseline in the window, kW",
                       "target_min_import_kw": "import floor of the participants in the window, kW"},
    "voltage_support": {"v_target_pu": "target voltage V*, p.u. (default 1.0)",
                        "v_deadband_pu": "no cost while |V − V*| ≤ this, p.u. (default 0)",
                        "weight_per_pu_h": "price of 1 p.u. outside the band at one bus for one hour, currency"},
    "frequency_primary": {"reserve_kw": "symmetric reserve held, kW",
                          "full_response_hz": "deviation beyond the dead band at which the whole reserve is "
                                              "deployed, Hz (default 0.2, as ENTSO-E's FCR)",
                          "deadband_hz": "no response while |f − 50| ≤ this, Hz (default 0.033)",
                          "signal": "frequency trace: a CSV path (time_s, frequency_hz) or 'random'",
                          "seed": "seed of a synthetic signal", "duration_min": "energy to hold the reserve for, min"},
    "frequency_secondary": {"reserve_up_kw": "up reserve held (less charging or more discharging), kW",
                            "reserve_down_kw": "down reserve held (more charging), kW",
                            "duration_min": "energy to sustain the reserve for, min (default 15)",
                            "signal": "AGC signal: a CSV path (time_s, signal in [-1, 1]) or "
                                      "'regulation_test' or 'random'",
                            "seed": "seed of a synthetic signal", "interval_s": "AGC update interval, s (default 4)"},
    "renewable_smoothing": {"ramp_weight": "price of 1 kW of step-to-step change of PV + wind − EV power, "
                                           "currency/kW"},
    "demand_response": {"reduction_kw": "mean reduction below the baseline in the window, kW",
                        "trigger": "price | command | event (R6.5.1.5)",
                        "notice_min": "notice given before the window, min"},
}
"""Allowed ``[quantity]`` keys of each product, with their meaning and units."""

TEXT_KEYS = {"signal", "trigger"}
HISTORY_FROM_RUN = "run"
"""``[baseline] history`` value that takes the ``workdays_5`` history from the run itself."""
MAX_POWER_KW = 1e8
"""Largest power a request may name, kW (100 GW: beyond any city; a larger figure is a unit mistake)."""
TRIGGERS = ("price", "command", "event")
REQUIRED_ONE_OF: dict[str, tuple[str, ...]] = {
    "peak_regulation": ("target_import_kw", "reduction_kw"), "valley_filling": ("increase_kw", "target_min_import_kw"),
    "frequency_primary": ("reserve_kw",), "frequency_secondary": ("reserve_up_kw", "reserve_down_kw"),
    "demand_response": ("reduction_kw",), "renewable_smoothing": ("ramp_weight",),
    "voltage_support": ("weight_per_pu_h",)}


@dataclass(frozen=True)
class ServiceWindow:
    """When a service is active: local clock times on every day, or one absolute period.

    Attributes
    ----------
    start, end : str
        ``HH:MM`` (daily; ``end`` ≤ ``start`` runs past midnight) or ISO date-times (once).
    """

    start: str
    end: str

    @property
    def daily(self) -> bool:
        return ":" in self.start and "T" not in self.start and "-" not in self.start

    def mask(self, times: pd.DatetimeIndex) -> "pd.Series[bool]":
        """True for the steps (by their start time) inside the window."""
        if self.daily:
            minutes = times.hour * 60 + times.minute
            lo, hi = _clock_minutes(self.start), _clock_minutes(self.end)
            inside = (minutes >= lo) & (minutes < hi) if lo < hi else (minutes >= lo) | (minutes < hi)
        else:
            start, end = _stamp(self.start, times), _stamp(self.end, times)
            inside = (times >= start) & (times < end)
        return pd.Series(inside, index=times)


@dataclass(frozen=True)
class Participants:
    """Who delivers the service: the city, regions, a station set or the stations on given buses."""

    scope: str = "city"
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceRequest:
    """One service request (see the module docstring for the file format).

    Attributes
    ----------
    id, product, description : str
    rule : ServiceRule
        The preset with the request's overrides applied.
    participants : Participants
    window : ServiceWindow
    quantity : dict
        The ``[quantity]`` values (floats; ``signal`` and ``trigger`` are strings).
    baseline : str
        Baseline rule, one of :data:`optev.services.presets.BASELINES`.
    baseline_history : str or None
        CSV of the participants' metered load (``time``, ``p_kw``) for ``workdays_5``,
        relative to the request file; or :data:`HISTORY_FROM_RUN` (``"run"``): the
        participants' realised load on the run's own earlier days, operated as usual (the
        same run without the service; :func:`optev.services.run.run_service`).
    holidays : tuple of str
        Dates (``YYYY-MM-DD``) that are not normal working days (``workdays_5``).
    source : str
        The file it was read from.
    """

    id: str
    product: str
    rule: ServiceRule
    participants: Participants
    window: ServiceWindow
    quantity: dict[str, Any] = field(default_factory=dict)
    baseline: str = "uncontrolled"
    baseline_history: str | None = None
    holidays: tuple[str, ...] = ()
    description: str = ""
    source: str = ""


def _clock_minutes(text: str) -> int:
    try:
        hh, mm = text.split(":")
        h, m = int(hh), int(mm)
    except ValueError:
        raise DataError(f"window time {text!r} is not HH:MM") from None
    if not (0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 1440):
        raise DataError(f"window time {text!r} is not a time of day")
    return h * 60 + m


def _stamp(text: str, times: pd.DatetimeIndex) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        raise DataError(f"window time {text!r} is neither HH:MM nor an ISO date-time") from None
    if ts.tzinfo is None and times.tz is not None:
        ts = ts.tz_localize(times.tz)
    return ts


class _Reader:
    """Checks one parsed file, naming the file and the key in every error."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self.data = data
        self.source = source

    def fail(self, key: str, message: str) -> DataError:
        return DataError(f"{self.source}: [{key}] {message}")

    def table(self, name: str, allowed: tuple[str, ...] | set[str], required: bool = False) -> dict[str, Any]:
        value = self.data.get(name)
        if value is None:
            if required:
                raise self.fail(name, "table is missing")
            return {}
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a table, got {type(value).__name__}")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise self.fail(name, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        return value

    def text(self, table: str, key: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(table, f"{key} must be a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(table, f"{key} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def number(self, table: str, key: str, value: Any, minimum: float = 0.0) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(table, f"{key} must be a number, got {value!r}")
        x = float(value)
        if not math.isfinite(x) or x < minimum:
            raise self.fail(table, f"{key} must be a finite number ≥ {minimum:g}, got {value!r}")
        return x


def parse_service(data: dict[str, Any], source: str = "<service>") -> ServiceRequest:
    """Validate a parsed service file (a dict as from :mod:`tomllib`) into a :class:`ServiceRequest`."""
    r = _Reader(data, source)
    unknown = sorted(set(data) - {"service", "participants", "window", "quantity", "baseline", "rule"})
    if unknown:
        raise DataError(f"{source}: unknown table(s) {', '.join(unknown)}")
    head = r.table("service", ("id", "product", "rule", "description"), required=True)
    for key in ("id", "product", "rule"):
        if key not in head:
            raise r.fail("service", f"{key} is missing")
    sid = r.text("service", "id", head["id"])
    product = r.text("service", "product", head["product"], PRODUCTS)
    rule = _rule(r, product, r.text("service", "rule", head["rule"]))
    if product == "renewable_smoothing" and rule.price:
        raise r.fail("rule", "renewable smoothing is measured (A.5), not paid: no market rule prices it; "
                             "leave price at 0")
    baseline, history, holidays = _baseline(r, rule)
    window = _window(r)
    if history == HISTORY_FROM_RUN and window.daily:
        raise r.fail("baseline", "history = \"run\" takes the baseline from the run's earlier days, which are "
                                 "not service days: give the window on one date (ISO start and end, e.g. "
                                 "start = \"2026-01-12T18:00\")")
    return ServiceRequest(
        id=sid, product=product, rule=rule, participants=_participants(r), window=window,
        quantity=_quantity(r, product), baseline=baseline, baseline_history=history, holidays=holidays,
        description=str(head.get("description", "")), source=source)


def _rule(r: _Reader, product: str, key: str) -> ServiceRule:
    try:
        base = preset(key)
    except DataError as exc:
        raise r.fail("service", str(exc)) from None
    if product not in base.products:
        raise r.fail("service", f"rule {key!r} prices {', '.join(base.products)}, not {product!r}")
    over = r.table("rule", RULE_FIELDS)
    values: dict[str, Any] = {}
    for k, v in over.items():
        if k == "payment_basis":
            values[k] = r.text("rule", k, v, PAYMENT_BASES)
        elif k == "baseline":
            values[k] = r.text("rule", k, v, BASELINES)
        elif k == "k_form":
            values[k] = r.text("rule", k, v, K_FORMS)
        elif k == "k_weights":
            if not isinstance(v, list) or len(v) != 3:
                raise r.fail("rule", f"k_weights must be a list of 3 numbers, got {v!r}")
            values[k] = tuple(r.number("rule", k, w) for w in v)
        else:
            values[k] = r.number("rule", k, v)
    rule = base.with_overrides(values)
    if rule.price is None:
        raise r.fail("rule", f"rule {key!r} has no verified or fixed price ({rule.source}); set price in [rule]")
    for lo, hi in (("price_min", "price"), ("price", "price_max"), ("band_low", "band_high")):
        a, b = getattr(rule, lo), getattr(rule, hi)
        if a is not None and b is not None and a > b:
            raise r.fail("rule", f"{lo} = {a:g} exceeds {hi} = {b:g}")
    return rule


def _participants(r: _Reader) -> Participants:
    t = r.table("participants", ("scope", "ids"))
    scope = r.text("participants", "scope", t.get("scope", "city"), SCOPES)
    ids = t.get("ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids):
        raise r.fail("participants", f"ids must be a list of ids, got {ids!r}")
    if scope == "city" and ids:
        raise r.fail("participants", "scope 'city' takes no ids")
    if scope != "city" and not ids:
        raise r.fail("participants", f"scope {scope!r} needs ids")
    return Participants(scope, tuple(str(i) for i in ids))


def _window(r: _Reader) -> ServiceWindow:
    t = r.table("window", ("start", "end"), required=True)
    for key in ("start", "end"):
        if key not in t:
            raise r.fail("window", f"{key} is missing")
    w = ServiceWindow(r.text("window", "start", t["start"]), r.text("window", "end", t["end"]))
    try:
        probe = pd.date_range("2025-01-01", periods=2, freq="D")
        if w.daily:
            _clock_minutes(w.start), _clock_minutes(w.end)
        elif _stamp(w.end, probe) <= _stamp(w.start, probe):
            raise DataError("end must be after start")
    except DataError as exc:
        raise r.fail("window", str(exc)) from None
    return w


def _quantity(r: _Reader, product: str) -> dict[str, Any]:
    allowed = QUANTITY_KEYS[product]
    t = r.table("quantity", set(allowed), required=product in REQUIRED_ONE_OF)
    out: dict[str, Any] = {}
    for k, v in t.items():
        if k == "trigger":
            out[k] = r.text("quantity", k, v, TRIGGERS)
        elif k in TEXT_KEYS:
            out[k] = r.text("quantity", k, v)
        elif k == "seed":
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise r.fail("quantity", f"seed must be a non-negative integer, got {v!r}")
            out[k] = v
        else:
            out[k] = r.number("quantity", k, v)
            if k.endswith(("_kw", "_kvar")) and out[k] > MAX_POWER_KW:
                raise r.fail("quantity", f"{k} = {out[k]:g} is beyond any city ({MAX_POWER_KW:g} kW); check the unit")
    needed = REQUIRED_ONE_OF.get(product, ())
    if needed and not any(k in out for k in needed):
        raise r.fail("quantity", f"a {product} request needs {' or '.join(needed)}")
    if product == "peak_regulation" and len(set(out) & set(needed)) > 1:
        raise r.fail("quantity", "give target_import_kw or reduction_kw, not both")
    return out


def _baseline(r: _Reader, rule: ServiceRule) -> tuple[str, str | None, tuple[str, ...]]:
    t = r.table("baseline", ("rule", "history", "holidays"))
    name = r.text("baseline", "rule", t["rule"], BASELINES) if "rule" in t else rule.baseline
    history = None
    if "history" in t:
        history = r.text("baseline", "history", t["history"])
        if history != HISTORY_FROM_RUN and not Path(history).is_absolute() and r.source not in ("", "<service>"):
            history = str(Path(r.source).parent / history)
    holidays = t.get("holidays", [])
    if not isinstance(holidays, list):
        raise r.fail("baseline", f"holidays must be a list of YYYY-MM-DD dates, got {holidays!r}")
    for h in holidays:
        try:
            pd.Timestamp(str(h))
        except ValueError:
            raise r.fail("baseline", f"holiday {h!r} is not a date") from None
    if name == "workdays_5" and history is None:
        raise r.fail("baseline", "the workdays_5 baseline needs the participants' metered load of earlier days: "
                                 "set history = \"load.csv\" (columns time, p_kw) or history = \"run\" (the run's "
                                 "own earlier days), or choose another rule")
    if history is not None and name != "workdays_5":
        raise r.fail("baseline", f"history is used by the workdays_5 baseline only, not {name!r}")
    return name, history, tuple(str(h) for h in holidays)


def load_service(path: str | Path) -> ServiceRequest:
    """Read and validate a service file; a bare name is looked up among the shipped examples."""
    p = Path(path)
    if not p.exists() and p.suffix == "":
        shipped = formulations_dir() / "services" / f"{p.name}.toml"
        if shipped.exists():
            p = shipped
    if not p.exists():
        raise DataError(f"no service file {str(path)!r}")
    return parse_service(read_toml(p), str(p))

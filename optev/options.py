"""Options of the command line and of the Python API: one rule per option, in one place.

``optev solve``/``optev run``/``optev generate``/``optev simulate`` and their Python
counterparts (:func:`optev.run`, :func:`optev.mpc.simulate`,
:func:`optev.compose.solve.solve_window`, :class:`optev.mpc.controller.Controller`,
:func:`optev.mobility.simulate.simulate_day`) check their options here, before anything is
read or solved. Every function takes ``name``, the option as the caller spells it
(``--start`` on the command line, ``start`` in Python), and raises
:class:`~optev.errors.OptionError` with a one-line message that starts with it.

Rules
-----
* **Times** (``start``, outage times): ``HH:MM`` from 00:00 to 23:59 on the instance's
  first day, or an ISO timestamp with a date (``2026-01-01T08:00``, optionally with a UTC
  offset); outage times may also be seconds after the instance start. A time without an
  offset is read in ``metadata.timezone`` (:mod:`optev.data.instance`, "Time zones").
* **Durations** (``step``, ``horizon``): a positive, finite duration such as ``15min``;
  the control interval of the closed loop is 1 to 15 minutes (R6.2.2.2).
* **Counts** (``steps``, ``evs``, ``seed``): whole numbers (``2.5`` is an error, not 2).
* **Size guard**: a window or run longer than :data:`LARGE_SPAN` needs ``--allow-large``
  (``allow_large=True``): 100,000 steps of 15 min would write gigabytes of tables.
* **Windows outside the data** are an error unless wrapping is asked for with ``--wrap``
  (``wrap=True``; :func:`optev.blocks.window.check_in_data`).
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from optev.data.vehicles import VEHICLE_CLASSES
from optev.errors import OptionError
from optev.tolerances import MIX_SUM_ATOL as MIX_SUM_ATOL

CLOCK_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
"""``HH:MM``: a time of day on the instance's first day (00:00 to 23:59)."""

_DATED_RE = re.compile(r"^\d{4}-\d{2}-\d{2}")

LARGE_SPAN = pd.Timedelta(days=7)
"""Size guard: windows and runs longer than this (steps × step) need ``--allow-large`` /
``allow_large=True``."""

CONTROL_STEP_MIN = pd.Timedelta(minutes=1)
CONTROL_STEP_MAX = pd.Timedelta(minutes=15)
"""Bounds of the closed loop's control interval (R6.2.2.2)."""


def clock_or_timestamp(value: Any, name: str) -> str | pd.Timestamp:
    """A time given as text or a timestamp: ``"HH:MM"`` (normalised) or a Timestamp.

    Raises
    ------
    OptionError
        Empty text, an hour above 23 or minutes above 59, text that is neither ``HH:MM``
        nor an ISO timestamp with a date, or a missing timestamp (NaT).
    """
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        if pd.isna(value):
            raise OptionError(f"{name} is a missing timestamp (NaT)")
        return pd.Timestamp(value)
    if not isinstance(value, str):
        raise OptionError(f"{name} must be HH:MM or an ISO timestamp, not {value!r}")
    text = value.strip()
    match = CLOCK_RE.match(text)
    if match:
        hours, minutes = int(match.group(1)), int(match.group(2))
        if hours > 23 or minutes > 59:
            raise OptionError(f"{name} {value!r} is not a time of day (HH:MM, 00:00 to 23:59)")
        return f"{hours:02d}:{minutes:02d}"
    bad = OptionError(f"{name} {value!r} is neither HH:MM nor an ISO timestamp (for example 2026-01-01T08:00)")
    if not _DATED_RE.match(text):  # pandas reads "8:00:00" as today's date, "" as NaT
        raise bad
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        raise bad from None
    if pd.isna(stamp):
        raise bad
    return stamp


def start_option(value: Any, name: str = "start") -> str | pd.Timestamp | None:
    """``start``: None (the instance start), ``"HH:MM"`` or a Timestamp (:func:`clock_or_timestamp`)."""
    return None if value is None else clock_or_timestamp(value, name)


def time_option(value: Any, name: str) -> str | pd.Timestamp | float:
    """An outage time: seconds after the instance start (finite, ≥ 0), ``"HH:MM"`` or a Timestamp."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise OptionError(f"{name} must be a finite, non-negative number of seconds, got {value!r}")
        return seconds
    if isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            return clock_or_timestamp(value, name)
        return time_option(seconds, name)
    return clock_or_timestamp(value, name)


def duration_option(value: Any, name: str, examples: str = "15min, 1h", *, seconds: bool = False) -> pd.Timedelta:
    """A positive, finite duration (text such as ``15min``, a Timedelta; numbers are seconds
    when ``seconds``)."""
    bad = OptionError(f"{name} {value!r} is not a duration (for example {examples})")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, numbers.Real):
        if not seconds or not math.isfinite(float(value)):
            raise bad
        value_td = pd.Timedelta(seconds=float(value))
    else:
        if isinstance(value, str) and not value.strip():
            raise bad
        if isinstance(value, str):  # "2d": pandas 4 accepts only "D" for days
            value = re.sub(r"(?<=[\d.\s])d(?=$|\s|\d)", "D", value.strip())
        try:
            value_td = pd.Timedelta(value)
        except (ValueError, TypeError, OverflowError):
            raise bad from None
    if pd.isna(value_td):
        raise bad
    if value_td <= pd.Timedelta(0):
        raise OptionError(f"{name} must be positive, got {value!r}")
    return value_td


def control_step_option(value: Any, name: str = "step") -> pd.Timedelta:
    """The closed loop's control interval: 1 to 15 minutes (R6.2.2.2); numbers are seconds."""
    step = duration_option(value, name, "15min, 5min", seconds=True)
    if not CONTROL_STEP_MIN <= step <= CONTROL_STEP_MAX:
        raise OptionError(f"{name} must be 1 to 15 minutes (R6.2.2.2), got {value!r}")
    return step


def generate_step_option(value: Any, name: str = "--step") -> float:
    """``optev generate --step``: 1 to 60 minutes of whole seconds dividing the day; seconds."""
    step = duration_option(value, name, "15min, 5min")
    sec = step.total_seconds()
    if not (60 <= sec <= 3600) or sec != int(sec) or 86400 % int(sec):
        raise OptionError(f"{name} must be 1 to 60 minutes of whole seconds dividing the day, got {value!r}")
    return float(sec)


def count_option(value: Any, name: str, *, minimum: int = 1, what: str = "") -> int:
    """A whole number of at least ``minimum`` (``2.5`` and ``True`` are errors, ``2.0`` is 2)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(f"{name} must be a whole number, not {value!r}")
    if isinstance(value, numbers.Integral):
        number = int(value)
    elif math.isfinite(float(value)) and float(value).is_integer():
        number = int(float(value))
    else:
        raise OptionError(f"{name} must be a whole number, got {value!r}")
    if number < minimum:
        kind = what or ("a non-negative integer" if minimum == 0 else f"at least {minimum}")
        raise OptionError(f"{name} must be {kind}, got {value!r}")
    return number


def steps_option(value: Any, name: str = "steps") -> int:
    """``steps``: a whole number of at least 1."""
    return count_option(value, name)


def horizon_option(value: Any, step: pd.Timedelta, window: Mapping[str, Any], name: str = "horizon") -> int:
    """Window steps of a controller horizon: a duration (rounded up to whole steps), a number
    of steps, or None for the formulation's ``window`` (its ``step`` × ``steps``)."""
    if value is None:
        duration = pd.Timedelta(window.get("step", "15min")) * int(window.get("steps", 96))
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return count_option(value, name, what="at least one step")
    else:
        duration = duration_option(value, name, "8h, 90min")
    n = int(math.ceil(duration / step - 1e-9))
    if n < 1:
        raise OptionError(f"{name} {value!r} is shorter than one step of {step}")
    return n


def size_guard(steps: int, step: pd.Timedelta, allow_large: bool, *, name: str = "steps",
               flag: str = "--allow-large (allow_large=True in Python)") -> None:
    """Refuse ``steps`` × ``step`` above :data:`LARGE_SPAN` unless ``allow_large``."""
    span = steps * step
    if span > LARGE_SPAN and not allow_large:
        raise OptionError(f"{name}: {steps:,} steps of {duration_text(step)} span {span / pd.Timedelta(days=1):,.1f} "
                          f"days, above the {LARGE_SPAN.days}-day size guard; pass {flag} to run it anyway")


def duration_text(step: pd.Timedelta) -> str:
    """``15min``, ``90s``: a short text of a duration for messages."""
    seconds = step.total_seconds()
    return f"{seconds / 60:g}min" if seconds % 60 == 0 else f"{seconds:g}s"


def window_options(start: Any, steps: Any, step: Any, window: Mapping[str, Any], *, allow_large: bool = False,
                   names: tuple[str, str, str] = ("start", "steps", "step"),
                   flag: str = "--allow-large (allow_large=True in Python)"
                   ) -> tuple[str | pd.Timestamp | None, int, pd.Timedelta]:
    """``start``, ``steps`` and ``step`` of one window (``optev solve``), the last two
    defaulting to a formulation's ``window``; the size guard applies. ``names`` spell the
    options in messages."""
    checked = start_option(start, names[0])
    n = steps_option(window["steps"] if steps is None else steps, names[1])
    step_td = duration_option(window["step"] if step is None else step, names[2])
    size_guard(n, step_td, allow_large, name=names[1], flag=flag)
    return checked, n, step_td


def outage_option(text: str, name: str = "--outage") -> tuple[str, Any, Any]:
    """``STATION,START,END``: a station (site, region, ``*``) and two times (:func:`time_option`).

    End before start is an error here when both are given the same way; the instance
    resolves the rest (:func:`optev.mpc.edge.parse_outages`).
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(parts):
        raise OptionError(f"{name} {text!r}: expected STATION,START,END (for example scs_N8,10:00,12:00)")
    start = time_option(parts[1], f"{name} {text!r}: start")
    end = time_option(parts[2], f"{name} {text!r}: end")
    if type(start) is type(end) and not _comparable_after(start, end):
        raise OptionError(f"{name} {text!r}: end must be after start")
    return parts[0], start, end


def _comparable_after(start: Any, end: Any) -> bool:
    """``end`` after ``start``, or True when they cannot be compared without the instance."""
    try:
        return bool(end > start)
    except TypeError:  # a naive and an aware timestamp
        return True


def share_option(text: Any, name: str) -> float:
    """A share in [0, 1]."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise OptionError(f"{name} {text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise OptionError(f"{name} must be between 0 and 1, got {text}")
    return value


def mix_option(text: str, name: str = "--mix") -> dict[str, float]:
    """``car=0.9,bus=0.03,logistics=0.07``: shares per vehicle class.

    Classes left out get share 0; the shares must be non-negative and sum to 1 within
    :data:`MIX_SUM_ATOL` (they are rescaled to sum to exactly 1).
    """
    mix: dict[str, float] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionError(f"{name} {text!r}: expected class=share pairs separated by commas, "
                              "for example car=0.9,bus=0.03,logistics=0.07")
        if key not in VEHICLE_CLASSES:
            raise OptionError(f"{name}: unknown vehicle class {key!r}; expected {', '.join(VEHICLE_CLASSES)}")
        if key in mix:
            raise OptionError(f"{name}: class {key!r} given twice")
        try:
            share = float(value)
        except ValueError:
            raise OptionError(f"{name}: share of {key} {value.strip()!r} is not a number") from None
        if not math.isfinite(share) or share < 0:
            raise OptionError(f"{name}: share of {key} must be a non-negative number, got {value.strip()}")
        mix[key] = share
    total = sum(mix.values())
    if abs(total - 1.0) > MIX_SUM_ATOL:
        raise OptionError(f"{name}: shares must sum to 1, got {total:g}")
    return {c: mix.get(c, 0.0) / total for c in VEHICLE_CLASSES}


def output_file_option(path: str | os.PathLike[str], name: str, suffix: str) -> Path:
    """A file optev will write: ending in ``suffix``, not a folder, in a writable folder."""
    file = Path(path)
    if file.suffix.lower() != suffix:
        raise OptionError(f"{name} needs a file name ending in {suffix}, got {str(path)!r}")
    if file.is_dir():
        raise OptionError(f"{name} {str(path)!r} is a folder; give a file name ending in {suffix}")
    if file.exists() and not os.access(file, os.W_OK):
        raise OptionError(f"{name} {str(path)!r} cannot be written (permission denied)")
    parent = file.parent if str(file.parent) else Path(".")
    if not parent.is_dir():
        raise OptionError(f"{name} {str(path)!r}: the folder {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OptionError(f"{name} {str(path)!r}: the folder {str(parent)!r} is not writable")
    return file

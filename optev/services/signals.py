"""Frequency-regulation signals: normalised AGC commands in [−1, 1] every few seconds (R6.5.1.3).

A signal value :math:`s_k` asks the fleet for :math:`s_k R^{up}` kW less consumption when
positive (regulation up) and :math:`|s_k| R^{down}` kW more when negative (regulation down),
around the power it planned (:mod:`optev.services.follow`).

``regulation_test``
    optev's qualification-style test of one hour, every ``interval_s`` (4 s by default):
    2 min at 0; a ramp to +1 at the standard rate of 100 % per minute and 5 min at +1; a ramp
    to −1 (2 min) and 5 min at −1; a ramp back to 0 and 4 min at 0; steps of ±0.5 every 2 min
    for 10 min; then a sine of amplitude 0.8 and period 10 min to the end. It exercises
    ramps at the rate standard of ``china_rules.md`` (Hunan storage: 100 %/min), steps and
    holds; it is not a published test procedure.
``random``
    A seeded first-order autoregressive signal with a 60-s correlation time and a standard
    deviation of 0.35, clipped to [−1, 1] — the texture of a real AGC signal, not its history.
A CSV file
    Columns ``time_s`` (from the window start, increasing) and ``signal`` (in [−1, 1]); it is
    sampled (step-wise, the last value before each time) at the follower's interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from optev.errors import DataError
from optev.io.csvfile import finite_column, read_columns

TEST_HOUR_S = 3600.0
RANDOM_TAU_S = 60.0
RANDOM_STD = 0.35


def regulation_test(duration_s: float, interval_s: float = 4.0) -> np.ndarray:
    """The qualification-style test signal (module docstring) over ``duration_s``, one value per interval."""
    t = np.arange(0.0, duration_s, interval_s)
    # (start, end, start value, end value) of each piece, seconds from the start
    pieces = [(0, 120, 0.0, 0.0), (120, 180, 0.0, 1.0), (180, 480, 1.0, 1.0), (480, 600, 1.0, -1.0),
              (600, 900, -1.0, -1.0), (900, 960, -1.0, 0.0), (960, 1200, 0.0, 0.0)]
    s = np.zeros(t.size)
    for a, b, va, vb in pieces:
        inside = (t >= a) & (t < b)
        s[inside] = va + (vb - va) * (t[inside] - a) / (b - a)
    steps = (t >= 1200) & (t < 1800)
    s[steps] = np.where(((t[steps] - 1200) // 120) % 2 == 0, 0.5, -0.5)
    tail = t >= 1800
    s[tail] = 0.8 * np.sin(2.0 * np.pi * (t[tail] - 1800) / 600.0)
    return s


def random_signal(duration_s: float, interval_s: float = 4.0, seed: int = 0) -> np.ndarray:
    """The seeded autoregressive signal (module docstring)."""
    n = int(np.ceil(duration_s / interval_s))
    rng = np.random.default_rng(seed)
    phi = float(np.exp(-interval_s / RANDOM_TAU_S))
    eps = rng.normal(0.0, RANDOM_STD * np.sqrt(1.0 - phi ** 2), n)
    s = np.zeros(n)
    for k in range(1, n):  # a recursion over time: one scalar update per sample
        s[k] = phi * s[k - 1] + eps[k]
    return np.clip(s, -1.0, 1.0)


def read_signal(path: str | Path, duration_s: float, interval_s: float = 4.0) -> np.ndarray:
    """A signal CSV (module docstring) sampled every ``interval_s`` over ``duration_s``."""
    frame = read_columns(path, ("time_s", "signal"))
    s = finite_column(frame, "signal", path)
    if (np.abs(s) > 1.0).any():
        row = int(np.flatnonzero(np.abs(s) > 1.0)[0])
        raise DataError("signal must lie in [-1, 1]", table=str(path), row=row, column="signal")
    return _sampled(frame, s, path, duration_s, interval_s)


def _sampled(frame: pd.DataFrame, values: np.ndarray, path: str | Path, duration_s: float,
             interval_s: float) -> np.ndarray:
    """``values`` held from each ``time_s`` to the next, sampled every ``interval_s`` over ``duration_s``."""
    t = finite_column(frame, "time_s", path)
    if not len(t) or (np.diff(t) <= 0).any() or t[0] > 0:
        raise DataError("time_s must start at 0 or before and increase", table=str(path), column="time_s")
    grid = np.arange(0.0, duration_s, interval_s)
    return values[np.searchsorted(t, grid, side="right") - 1]


def make_signal(spec: str, duration_s: float, interval_s: float = 4.0, seed: int = 0,
                relative_to: str | Path | None = None) -> np.ndarray:
    """The signal a request names: ``regulation_test``, ``random`` or a CSV path (relative to
    the request file's folder)."""
    if spec == "regulation_test":
        return regulation_test(duration_s, interval_s)
    if spec == "random":
        return random_signal(duration_s, interval_s, seed)
    path = Path(spec)
    if not path.is_absolute() and relative_to is not None:
        path = Path(relative_to).parent / path
    return read_signal(path, duration_s, interval_s)


NOMINAL_HZ = 50.0
RANDOM_FREQUENCY_SPAN_HZ = 0.05
"""A synthetic frequency trace is 50 Hz plus this times :func:`random_signal` (±0.05 Hz at one
standard deviation of the signal: the everyday band of a large synchronous grid)."""


def droop_signal(frequency_hz: np.ndarray, full_response_hz: float, deadband_hz: float) -> np.ndarray:
    r"""Primary response as a normalised command: zero inside the dead band, then proportional to
    the frequency error beyond it, the whole reserve ``full_response_hz`` beyond the band:
    :math:`s = \mathrm{clip}(\mathrm{sign}(\Delta f)(|\Delta f| - f_{db})^+ / f_{full}, -1, 1)` with
    :math:`\Delta f = f_n - f`: a low frequency asks for less consumption (regulation up,
    :math:`s > 0`), a high one for more.
    """
    if not (np.isfinite(full_response_hz) and full_response_hz > 0):
        raise DataError(f"full_response_hz must be positive, got {full_response_hz!r}")
    dev = NOMINAL_HZ - np.asarray(frequency_hz, float)
    beyond = np.sign(dev) * np.maximum(np.abs(dev) - deadband_hz, 0.0)
    return np.clip(beyond / full_response_hz, -1.0, 1.0)


def make_frequency(spec: str, duration_s: float, interval_s: float = 4.0, seed: int = 0,
                   relative_to: str | Path | None = None) -> np.ndarray:
    """A frequency trace, Hz: ``random`` (50 Hz + :data:`RANDOM_FREQUENCY_SPAN_HZ` × the random
    signal) or a CSV with columns ``time_s`` and ``frequency_hz``."""
    if spec == "random":
        return NOMINAL_HZ + RANDOM_FREQUENCY_SPAN_HZ * random_signal(duration_s, interval_s, seed)
    path = Path(spec)
    if not path.is_absolute() and relative_to is not None:
        path = Path(relative_to).parent / path
    frame = read_columns(path, ("time_s", "frequency_hz"))
    hz = finite_column(frame, "frequency_hz", path)
    bad = np.flatnonzero(~(np.abs(hz - NOMINAL_HZ) < 5.0))
    if bad.size:
        raise DataError("not a frequency near 50 Hz", table=str(path), row=int(bad[0]), column="frequency_hz")
    return _sampled(frame, hz, path, duration_s, interval_s)

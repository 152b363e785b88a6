"""A progress line on standard error for long runs (no dependency).

On a terminal it redraws one line in place::

    optev run [###########.............]  44/96 steps  10:45  elapsed 6.1 s  left ~7.2 s

Elsewhere (a log file, CI) it is off unless forced; forced, it prints a plain line about
every 5 % of the steps instead of redrawing. :func:`wanted` is the rule ``optev run``
applies: on when standard error is a terminal and the output is not ``--json``, or when
forced.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

BAR_WIDTH = 24
"""Characters of the bar."""

PLAIN_UPDATES = 20
"""Lines printed by a forced progress line that is not on a terminal (about every 5 %)."""


def wanted(stream: TextIO | None = None, *, json_mode: bool = False, force: bool = False) -> bool:
    """Whether to show progress: forced, or ``stream`` (default stderr) is a terminal and
    the output is not JSON."""
    if force:
        return True
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return (not json_mode) and bool(isatty and isatty())


class ProgressLine:
    """Progress of ``total`` steps, updated by ``update(done, total, info)``.

    Parameters
    ----------
    total : int
        Number of steps.
    label : str
        Text in front of the bar.
    stream : text stream, optional
        Where to write (default ``sys.stderr`` at construction).
    force : bool
        Show it even when ``stream`` is not a terminal (plain lines, see module docstring).
    unit : str
        What is counted (``44/96 steps``).
    every : int, optional
        Off a terminal, print a plain line every ``every`` items (default: about every 5 %,
        :data:`PLAIN_UPDATES` lines) and after the last one.
    """

    def __init__(self, total: int, *, label: str = "optev", stream: TextIO | None = None, force: bool = False,
                 unit: str = "steps", every: int | None = None) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.enabled = self.tty or force
        self.every = max(int(every), 1) if every is not None else max(self.total // PLAIN_UPDATES, 1)
        self.t0 = time.perf_counter()
        self.width = 0
        self.shown = False

    def start(self) -> None:
        """Show the line at 0 steps (the uncontrolled baseline and first solve come first)."""
        self.t0 = time.perf_counter()
        if self.enabled:
            self._write(self._text(0, "baseline and first solve"))

    def _text(self, done: int, note: str = "") -> str:
        filled = int(round(BAR_WIDTH * done / self.total))
        elapsed = time.perf_counter() - self.t0
        text = f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:>{len(str(self.total))}}/{self.total} " \
               f"{self.unit}"
        if note:
            text += f"  {note}"
        text += f"  elapsed {elapsed:.1f} s"
        if 0 < done < self.total:
            text += f"  left ~{elapsed / done * (self.total - done):.1f} s"
        return text

    def _write(self, text: str) -> None:
        if self.tty:
            pad = max(self.width - len(text), 0)
            self.stream.write("\r" + text + " " * pad)
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = True

    def update(self, done: int, total: int | None = None, info: dict[str, Any] | None = None) -> None:
        """After step ``done`` (the :func:`optev.mpc.simulate` progress callback).

        ``info`` may hold ``time`` (shown as ``HH:MM``), ``status`` (shown unless
        ``"optimal"``) and ``note`` (text shown as it is).
        """
        if not self.enabled:
            return
        if total is not None:
            self.total = max(int(total), 1)
        if not self.tty and done % self.every and done != self.total:
            return
        note = ""
        t = (info or {}).get("time")
        if t is not None and hasattr(t, "strftime"):
            note = t.strftime("%H:%M")
        if (info or {}).get("status") not in (None, "optimal"):
            note += f" ({info['status']})"  # type: ignore[index]
        if (info or {}).get("note"):
            note += f" {info['note']}"  # type: ignore[index]
        self._write(self._text(done, note.strip()))

    def close(self) -> None:
        """End the line (a newline after the in-place line, so later output starts clean)."""
        if self.enabled and self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
        self.shown = False

"""How the ``optev`` command ends: interrupts, signals, I/O errors and internal faults.

:func:`run_cleanly` wraps a command (``optev.cli.main``) so that it never ends in a
traceback:

=====================================  ==========================================  =====
what happened                          what is printed on standard error           exit
=====================================  ==========================================  =====
Ctrl-C (SIGINT)                        ``optev: interrupted``                      130
SIGTERM                                ``optev: terminated``                       143
standard output closed (``| head``)    nothing (standard output → the null device)  141
``OSError`` (full disk, permissions…)  ``optev: error: PATH: reason``              2
any other exception (a bug)            ``optev: internal error: ... please         1
                                       report``, traceback saved to a file
=====================================  ==========================================  =====

Both signals raise an exception in the main thread (SIGTERM raises :class:`Terminated`)
and stop every HiGHS solve at its next iteration (:func:`optev.solvers.highs.cancel_solves`);
the exception unwinds the command, so an output folder being written is removed and the old
one left as it was (:mod:`optev.io.outdir`, whose final swap holds both signals back until
it is done). 141 is 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from optev.io.outdir import release_claims
from optev.solvers.highs import allow_solves, cancel_solves

__all__ = ["EXIT_INTERNAL", "EXIT_IO", "EXIT_PIPE", "EXIT_SIGINT", "EXIT_SIGTERM", "Terminated", "run_cleanly"]

EXIT_INTERNAL = 1
EXIT_IO = 2
EXIT_PIPE = 128 + 13
EXIT_SIGINT = 128 + 2
EXIT_SIGTERM = 128 + 15


class Terminated(BaseException):
    """SIGTERM arrived (a :class:`BaseException`, like :class:`KeyboardInterrupt`, so that
    ``except Exception`` blocks do not swallow it)."""


def run_cleanly(command: Callable[..., int], *args: Any) -> int:
    """``command(*args)``'s exit code, with every way of ending mapped as in the module docstring."""
    stdout = sys.stdout = _Watched(sys.stdout)
    try:
        with _signals_handled():
            code = command(*args)
            stdout.flush()  # a closed or full standard output shows here, not at exit
            return code
    except KeyboardInterrupt:
        return _say("optev: interrupted", EXIT_SIGINT)
    except Terminated:
        return _say("optev: terminated", EXIT_SIGTERM)
    except OSError as exc:
        if stdout.failed:
            _stdout_to_devnull()
            if isinstance(exc, BrokenPipeError):
                return EXIT_PIPE
        return _say(f"optev: error: {_os_message(exc, stdout.failed)}", EXIT_IO)
    except Exception as exc:  # a bug: one line, the traceback in a file
        where = _save_traceback()
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        return _say(f"optev: internal error: {text}; please report this"
                    + (f" with the traceback in {where}" if where else ""), EXIT_INTERNAL)
    finally:
        sys.stdout = stdout.stream
        release_claims()
        allow_solves()


class _Watched:
    """Standard output, noting whether writing to it failed (an ``OSError`` has no path for it)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.failed = False

    def write(self, text: str) -> int:
        try:
            return int(self.stream.write(text))
        except OSError:
            self.failed = True
            raise

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError:
            self.failed = True
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def _signals_handled() -> Iterator[None]:
    """SIGINT and SIGTERM cancel the solves and raise, meanwhile (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        cancel_solves()
        raise KeyboardInterrupt

    def on_sigterm(signum: int, frame: Any) -> None:
        cancel_solves()
        raise Terminated

    wanted = {signal.SIGTERM: on_sigterm}
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # e.g. a background job: stays ignored
        wanted[signal.SIGINT] = on_sigint
    previous = {signum: signal.signal(signum, handler) for signum, handler in wanted.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _say(line: str, code: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)
    return code


def _stdout_to_devnull() -> None:
    """Point standard output at the null device, so that the interpreter's last flush of what
    could not be written does not fail again (Python's recipe for ``BrokenPipeError``)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _os_message(exc: OSError, stdout_broken: bool) -> str:
    """``PATH: reason`` (both paths of a rename) or ``standard output: reason``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    if not paths and stdout_broken:
        paths = ["standard output"]
    return ": ".join([" -> ".join(paths), reason]) if paths else reason


def _save_traceback() -> str | None:
    """Write the current exception's traceback to a temporary file; its path (None if impossible)."""
    try:
        with tempfile.NamedTemporaryFile("w", prefix="optev-traceback-", suffix=".txt", delete=False,
                                         encoding="utf-8") as fh:
            fh.write(traceback.format_exc())
            return fh.name
    except OSError:
        return None
